"""Which container, pod or systemd unit a process belongs to, from its
cgroup (pure), and the container's name and image from its runtime
(runtimes.py, a parameter), looked up once per cgroup.

A container runtime puts each container's processes in a cgroup named
after the container's id; systemd puts a host service's in one named
after its unit.  /proc/PID/cgroup lists the process's cgroup in every
hierarchy: `0::PATH` for cgroup v2, `N:CONTROLLERS:PATH` for each v1
hierarchy (a hybrid host has both; a container's id is in each).  The
paths each runtime makes (tests/unit/cgroup-lines.md has 90 real files):

    docker        /docker/<id> (cgroupfs driver), /system.slice/docker-<id>.scope (systemd)
    podman        /libpod_parent/libpod-<id>, /machine.slice/libpod-<id>.scope
                  (libpod-conmon-<id> is its monitor, a host process)
    containerd    /kubepods.slice/.../kubepods-<qos>-pod<uid>.slice/cri-containerd-<id>.scope
    cri-o         .../crio-<id>.scope
    (Kubernetes)  /kubepods/<qos>/pod<uid>/<id> (cgroupfs driver: the runtime is not named: "cri")
    systemd-nspawn  /machine.slice/systemd-nspawn@<name>.service[/payload],
                  /machine.slice/machine-<name>.scope (registered with machined)
    lxc           /lxc.payload.<name> (LXC 4+, LXD), /lxc/<name>

containerd 1.4 with the kubelet's systemd cgroup names but cgroupfs
handling wrote `kubepods-<qos>-pod<uid>.slice:cri-containerd:<id>` as one
path component (recorded in https://github.com/neuvector/neuvector,
share/system/cgroup_test.go, TestK8sContainerd_v1_4_4): ':' separates
components too.  systemd escapes '-' in unit
names as \x2d (machine-rkt\x2d<uuid>.scope): names are unescaped.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Dict, NamedTuple, Optional, Protocol, TypedDict


class ContainerRecord(TypedDict):
    """The `container` object of a record (null for a host process)."""
    runtime: str               # docker, podman, containerd, cri-o, cri, systemd-nspawn, lxc
    id: str                    # the runtime's id (64 hex); nspawn and lxc: the machine's name
    name: Optional[str]        # None: the runtime could not be asked
    image: Optional[str]
    pod: Optional[str]         # Kubernetes: the pod's name (from the container's labels)
    namespace: Optional[str]   # and its namespace
    pod_uid: Optional[str]     # Kubernetes: the pod's UID, from the cgroup path


@dataclass(frozen=True)
class CgroupOwner:
    """What a process's cgroup says of it: its container (`runtime` and
    `id`, None for a host process, `pod_uid` for a Kubernetes one) or the
    systemd `unit` of a host process."""
    runtime: Optional[str] = None
    id: Optional[str] = None
    pod_uid: Optional[str] = None
    unit: Optional[str] = None
    v2: bool = False     # the container is named by the cgroup v2 path (bpf_get_current_cgroup_id's)


HOST = CgroupOwner()
_HEX64 = r"([0-9a-f]{64})"
# one path component each: (runtime, pattern whose group 1 is the id)
_CONTAINER_DIRS = (
    ("docker", re.compile(rf"docker-{_HEX64}\.scope")),
    ("podman", re.compile(rf"libpod-{_HEX64}(?:\.scope)?")),
    ("containerd", re.compile(rf"cri-containerd-{_HEX64}\.scope")),
    ("cri-o", re.compile(rf"crio-{_HEX64}(?:\.scope)?")),
    ("systemd-nspawn", re.compile(r"systemd-nspawn@(.+)\.service")),
    # machined's scope of a machine it registered (not libvirt's VMs: their
    # processes are the host's qemu)
    ("systemd-nspawn", re.compile(r"machine-(?!qemu)(.+)\.scope")),
    ("lxc", re.compile(r"lxc\.payload\.(.+)")),
)
_BARE_ID = re.compile(_HEX64)
# kubepods-burstable-pod<uid, '-' written '_'>.slice (systemd), pod<uid> (cgroupfs)
# (a static pod's UID is 32 hex digits without dashes)
_POD = re.compile(r"(?:kubepods(?:-[a-z]+)?-)?pod([0-9a-f_-]{32,36})(?:\.slice)?")
_ESCAPED = re.compile(r"\\x([0-9a-f]{2})")


def unescape(name: str) -> str:
    r"""A systemd unit name's \xNN escapes undone.

    >>> unescape(r"rkt\x2dbfb7d57e")
    'rkt-bfb7d57e'
    """
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), name)


def _container_in(path: str) -> CgroupOwner | None:
    """The innermost container a cgroup path names, or None.

    >>> _container_in("/system.slice/docker-" + "ab" * 32 + ".scope").runtime
    'docker'
    >>> k8s = _container_in("/kubepods/besteffort/pod5f1e1b2c-0d3e-4f7a-8b9c-0123456789ab/" + "cd" * 32)
    >>> k8s.runtime, k8s.id[:8], k8s.pod_uid
    ('cri', 'cdcdcdcd', '5f1e1b2c-0d3e-4f7a-8b9c-0123456789ab')
    """
    parts = [p for p in path.replace(":", "/").split("/") if p]
    for i in range(len(parts) - 1, -1, -1):
        part, parent = parts[i], parts[i - 1] if i else ""
        found = None
        for runtime, pattern in _CONTAINER_DIRS:
            m = pattern.fullmatch(part)
            if m:
                found = runtime, m.group(1)
                break
        if found is None and _BARE_ID.fullmatch(part):
            # /docker/<id> (cgroupfs driver), /kubepods/<qos>/pod<uid>/<id>
            if parent in ("docker", ""):   # "": --cgroup-parent=/ (as on Google's hosts)
                found = "docker", part
            elif parent == "cri-containerd":
                found = "containerd", part
            elif _POD.fullmatch(parent):
                found = "cri", part
        if found is None and parent == "lxc" and i == 1:
            found = "lxc", part
        if found is not None:
            pod = next((m.group(1).replace("_", "-") for m in map(_POD.fullmatch, parts[:i]) if m),
                       None)
            return CgroupOwner(found[0], unescape(found[1]), pod)
    return None


def _unit_in(path: str) -> str | None:
    """The innermost systemd service or scope a cgroup path names.

    >>> _unit_in("/user.slice/user-1000.slice/session-3.scope"), _unit_in("/")
    ('session-3.scope', None)
    """
    for part in reversed(path.split("/")):
        if part.endswith((".service", ".scope")):
            return unescape(part)
    return None


def parse_cgroup(text: str) -> CgroupOwner:
    """/proc/PID/cgroup -> the process's container, or its systemd unit.
    Every hierarchy is looked at: a hybrid host's v2 path may be "/"
    while its v1 ones name the container.

    >>> parse_cgroup("0::/libpod_parent/libpod-" + "c" * 64 + "\\n").runtime
    'podman'
    >>> parse_cgroup("1:name=systemd:/system.slice/nginx.service\\n0::/\\n")
    CgroupOwner(runtime=None, id=None, pod_uid=None, unit='nginx.service', v2=False)
    """
    paths = []
    for line in text.splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        # v2 first, then systemd's own v1 hierarchy, then the others
        paths.append((0 if hier == "0" else 1 if controllers == "name=systemd" else 2, path))
    paths.sort(key=lambda p: p[0])
    for rank, path in paths:
        owner = _container_in(path)
        if owner is not None:
            return dataclasses.replace(owner, v2=rank == 0)
    for rank, path in paths:
        unit = _unit_in(path) if rank < 2 else None
        if unit is not None:
            return CgroupOwner(unit=unit)
    return HOST


@dataclass(frozen=True)
class Described:
    """What a runtime says of a container; None for what it did not say."""
    name: Optional[str] = None
    image: Optional[str] = None
    pod: Optional[str] = None
    namespace: Optional[str] = None


class Runtimes(Protocol):
    """Where container names come from (runtimes.Runtimes; a stub in tests)."""

    def describe(self, runtime: str, id: str) -> Described: ...


# nspawn machines and LXC containers are named by their cgroup: nothing to ask
_NAMED_BY_PATH = ("systemd-nspawn", "lxc")


class Placement(NamedTuple):
    """Where a process runs: its container (None on the host), a host
    process's systemd unit, and whether the kernel's cgroup id
    (bpf_get_current_cgroup_id: cgroup v2) is the container's."""
    container: Optional[ContainerRecord]
    unit: Optional[str]
    v2: bool = False


class Containers:
    """cgroup file text -> Placement (its container record), each cgroup looked up
    once and its container's runtime asked once, then cached (a cgroup
    outlives the processes in it: a server's workers share one).

    >>> class Nobody:
    ...     def describe(self, runtime, id): return Described()
    >>> c = Containers(Nobody())
    >>> c.lookup("0::/machine.slice/systemd-nspawn@web.service/payload\\n")
    Placement(container={'runtime': 'systemd-nspawn', 'id': 'web', 'name': 'web', 'image': None, \
'pod': None, 'namespace': None, 'pod_uid': None}, unit=None, v2=True)
    >>> c.lookup("0::/system.slice/squid.service\\n")
    Placement(container=None, unit='squid.service', v2=False)
    """

    def __init__(self, runtimes: Runtimes):
        self._runtimes = runtimes
        self._by_cgroup: Dict[str, Placement] = {}
        self.asked = 0

    def lookup(self, cgroup_text: str) -> Placement:
        found = self._by_cgroup.get(cgroup_text)
        if found is None:
            found = self._by_cgroup[cgroup_text] = self._describe(parse_cgroup(cgroup_text))
        return found

    def _describe(self, owner: CgroupOwner) -> Placement:
        if owner.runtime is None or owner.id is None:
            return Placement(None, owner.unit)
        if owner.runtime in _NAMED_BY_PATH:
            said = Described(name=owner.id)
        else:
            self.asked += 1
            said = self._runtimes.describe(owner.runtime, owner.id)
        return Placement({"runtime": owner.runtime, "id": owner.id, "name": said.name,
                          "image": said.image, "pod": said.pod, "namespace": said.namespace,
                          "pod_uid": owner.pod_uid}, None, owner.v2)


def display_name(container: ContainerRecord) -> str:
    """How outputs name a container: its name, else its id as docker ps
    shortens it.

    >>> display_name({"name": None, "id": "0123456789abcdef" * 4})
    '0123456789ab'
    """
    return container["name"] or container["id"][:12]


def matches(container: Optional[ContainerRecord], wanted: str) -> bool:
    """`--container NAME|ID`: the container's name, or its id or an id
    prefix of 12 or more characters (docker ps shows 12).

    >>> rec = {"id": "ab" * 32, "name": "web"}
    >>> matches(rec, "web"), matches(rec, "abababababab"), matches(rec, "abab"), matches(None, "web")
    (True, True, False, False)
    """
    if container is None:
        return False
    return wanted == container["name"] or wanted == container["id"] or (
        len(wanted) >= 12 and container["id"].startswith(wanted))
