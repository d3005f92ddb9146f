"""Container names and images from the runtimes themselves, without new
dependencies: docker's HTTP API on its unix socket (podman serves the same
API, `podman system service`), and podman's own container list, a JSON
file of containers/storage that needs no daemon at all.

Asked once per container (containers.Containers caches), with a short
timeout: a hung daemon costs the tracer one second once, never per event.
The host's files are reached through `host_root`: "/" on the host, and
/proc/1/root when socktrace runs in a container that shares the host's pid
namespace (host_root() finds out), so the run line needs no extra mounts.

Not asked: containerd and CRI-O (their APIs are gRPC); their containers
keep the id and pod UID their cgroup path gives.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from typing import Any, Optional

from .containers import Described

DOCKER_SOCKETS = ("run/docker.sock", "var/run/docker.sock")
PODMAN_SOCKETS = ("run/podman/podman.sock",)
# containers/storage's record of podman's containers (root's storage)
PODMAN_STORAGE = "var/lib/containers/storage/overlay-containers/containers.json"
TIMEOUT = 1.0


def host_root(procfs: str = "/proc") -> str:
    """"/" when socktrace runs on the host; the host's root through pid 1
    when it runs in a container that shares the host's pid namespace
    (`--pid=host`): then /proc/1/root is not our own root."""
    try:
        if os.stat(f"{procfs}/1/root/") != os.stat("/"):
            return f"{procfs}/1/root/"
    except OSError:
        pass
    return "/"


@functools.lru_cache(maxsize=None)
def _http():
    """http.client, imported when a runtime is first asked (it imports ssl:
    20 ms of every start otherwise), and its connection over a unix socket."""
    import http.client

    class UnixHTTPConnection(http.client.HTTPConnection):
        def __init__(self, path: str, timeout: float):
            super().__init__("localhost", timeout=timeout)
            self._path = path

        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(self.timeout)
            self.sock.connect(self._path)

    return http.client, UnixHTTPConnection


def api_get(path: str, url: str, timeout: float = TIMEOUT) -> Any:
    """GET `url` from the HTTP API on the unix socket `path`: its JSON,
    or None (no such socket, no daemon, no such container)."""
    client, connection = _http()
    conn = connection(path, timeout)
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        return json.loads(resp.read()) if resp.status == 200 else None
    except (OSError, client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def from_inspect(doc: dict) -> Described:
    """docker's (and podman's) `GET /containers/ID/json` -> what socktrace
    shows; a Kubernetes container's pod from the labels its kubelet set.

    >>> from_inspect({"Name": "/web", "Config": {"Image": "nginx:1.25",
    ...     "Labels": {"io.kubernetes.pod.name": "web-7d9", "io.kubernetes.pod.namespace": "shop"}}})
    Described(name='web', image='nginx:1.25', pod='web-7d9', namespace='shop')
    """
    config = doc.get("Config") or {}
    labels = config.get("Labels") or {}
    return Described(name=(doc.get("Name") or "").lstrip("/") or None,
                     image=config.get("Image") or doc.get("ImageName") or None,
                     pod=labels.get("io.kubernetes.pod.name"),
                     namespace=labels.get("io.kubernetes.pod.namespace"))


def from_podman_storage(entries: list, id: str) -> Optional[Described]:
    """podman's containers.json -> the container `id`'s name and image.

    >>> from_podman_storage([{"id": "ab", "names": ["web"],
    ...     "metadata": '{"image-name": "localhost/app:1", "name": "web"}'}], "ab")
    Described(name='web', image='localhost/app:1', pod=None, namespace=None)
    """
    for entry in entries:
        if entry.get("id") == id:
            try:
                meta = json.loads(entry.get("metadata") or "{}")
            except ValueError:
                meta = {}
            names = entry.get("names") or [None]
            return Described(name=meta.get("name") or names[0], image=meta.get("image-name"))
    return None


class Runtimes:
    """containers.Runtimes over the host's sockets and files under `root`."""

    def __init__(self, root: str = "/", timeout: float = TIMEOUT):
        self.root = root
        self.timeout = timeout

    def describe(self, runtime: str, id: str) -> Described:
        if runtime == "podman":
            said = self._podman_storage(id)
            if said is not None:
                return said
            return self._api(PODMAN_SOCKETS, id)
        if runtime in ("docker", "cri"):   # cri: dockershim's Kubernetes containers were docker's
            return self._api(DOCKER_SOCKETS, id)
        return Described()

    def _api(self, sockets: tuple[str, ...], id: str) -> Described:
        seen = set()
        for rel in sockets:
            path = os.path.join(self.root, rel)
            real = os.path.realpath(path)
            if real in seen or not os.path.exists(path):
                continue
            seen.add(real)
            doc = api_get(path, f"/containers/{id}/json", self.timeout)
            if isinstance(doc, dict):
                return from_inspect(doc)
        return Described()

    def _podman_storage(self, id: str) -> Optional[Described]:
        try:
            with open(os.path.join(self.root, PODMAN_STORAGE), "rb") as f:
                entries = json.load(f)
        except (OSError, ValueError):
            return None
        return from_podman_storage(entries, id) if isinstance(entries, list) else None
