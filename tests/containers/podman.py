"""Podman as the container tests run it on this machine (measured, see
kernel-facts.md): runc, as crun refuses this host's hybrid cgroup layout;
cgroupfs, as no systemd runs here; limits within the host's hard ones.
One place for the command, the images' names and socktrace's run line."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
LIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=20000:20000"]
# no registry is reachable here: a Debian release's cached tree, imported
BASE_IMAGE = "localhost/socktrace-base:test"
# socktrace's image, built from the repository's Containerfile on BASE_IMAGE
SOCKTRACE_IMAGE = "localhost/socktrace:test"
# socktrace's run line, as README.md documents it ("socktrace in a
# container"): BPF and tracefs need --privileged; the host's processes,
# sockets and cgroup paths need its pid, network and cgroup namespaces.
# This machine's pid 1 hides its root (/proc/1/root: EACCES even to root),
# so podman's container list is mounted where socktrace looks for it.
RUN_LINE = ["--privileged", "--pid=host", "--network=host", "--cgroupns=host",
            "-v", "/var/lib/containers/storage:/var/lib/containers/storage:ro"]


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    r = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: rc {r.returncode}: {r.stderr.strip()}")
    return r.stdout.strip()


@dataclass(frozen=True)
class Container:
    name: str
    id: str
    pid: int        # its first process, in the host's pid namespace
    published: int | None = None   # the host port of its `port`, on 127.0.0.1

    @property
    def netns(self) -> int:
        return Path(f"/proc/{self.pid}/ns/net").stat().st_ino

    def listening(self, port: int) -> bool:
        """A TCP socket listens on `port` in the container's network
        namespace (its /proc/net, read from the host: no connection made)."""
        for table in ("tcp6", "tcp"):
            for line in Path(f"/proc/{self.pid}/net/{table}").read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    return True
        return False

    def wait_listening(self, port: int, logs, timeout: float = 60) -> None:
        """Until something listens on `port`; `logs()` says why not."""
        deadline = time.monotonic() + timeout
        while not self.listening(port):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: nothing listens on {port}: {logs()}")
            time.sleep(0.2)


def start(name: str, image: str, *command: str, options: tuple[str, ...] = (),
          listens: int | None = None, publish: int | None = None, timeout: float = 60) -> Container:
    """A detached container (removed first if a crashed run left one),
    once something listens on its port `listens`, published on the host's
    port `publish`."""
    podman("rm", "-f", "-t", "0", name, check=False)
    if publish:
        options += ("-p", f"127.0.0.1:{publish}:{listens}")
    cid = podman("run", "-d", "--name", name, *LIMITS, *options, image, *command)
    pid = int(podman("inspect", "-f", "{{.State.Pid}}", cid))
    c = Container(name, cid, pid, publish)
    if listens is not None:
        c.wait_listening(listens, lambda: podman("logs", cid), timeout)
    return c


def remove(c: Container) -> None:
    podman("rm", "-f", "-t", "0", c.name, check=False)
