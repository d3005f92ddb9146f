"""Which connections to show.  Mapped-only and pid are also applied in the
kernel (probes.KernelFilter); this is the complete filter in userspace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Union

from .containers import ContainerRecord, matches as container_matches
from .events import Connection

Ints = Union[int, Iterable[int], None]


def _set(value: Ints) -> frozenset[int]:
    """None -> no filter (empty); 80 -> {80}; (80, 443) -> {80, 443}."""
    if value is None:
        return frozenset()
    return frozenset((value,)) if isinstance(value, int) else frozenset(value)


@dataclass(frozen=True)
class Filter:
    """Which connections to show.  `pid` and `port` take one value or
    several (any of them matches), as bcc's tools do: Filter(port=(80, 443))."""
    mapped_only: bool = False
    pid: frozenset[int] = frozenset()
    port: frozenset[int] = frozenset()   # local or remote
    comm: str | None = None          # substring of the process or thread name, as opensnoop -n
    peer: str | None = None          # "4": the peer speaks IPv4 (plain or mapped); "6": native IPv6
    protocol: str | None = None      # "tcp" or "udp" (-t, -u), None: both
    container: tuple[str, ...] = ()  # names or ids (containers.matches), any of them

    def __post_init__(self):
        object.__setattr__(self, "pid", _set(self.pid))
        object.__setattr__(self, "port", _set(self.port))
        object.__setattr__(self, "container", tuple(self.container))

    def matches(self, c: Connection, process: str | None = None,
                container: ContainerRecord | None = None) -> bool:
        """A traced connection; -c matches the name of its thread (c.comm)
        or of its process (`process`: a JVM's threads have names of their
        own); --container its process's `container`."""
        return self._matches(c.mapped, (c.pid,), (c.comm, process or ""), c.lport, c.rport,
                             c.peer_is_ipv4, c.protocol, (container,))

    def matches_socket(self, s) -> bool:
        """A socket of `socktrace snapshot` (snapshot.Sock): it matches a
        pid, name or container when any of the processes sharing it does."""
        return self._matches(s.mapped, s.pids, tuple(o.comm or "" for o in s.owners),
                             s.lport, s.rport, s.peer_is_ipv4, s.protocol,
                             tuple(o.container for o in s.owners))

    def _matches(self, mapped, pids, comms, lport, rport, peer_is_ipv4, protocol,
                 containers) -> bool:
        if self.mapped_only and not mapped:
            return False
        if self.pid and self.pid.isdisjoint(pids):
            return False
        if self.port and lport not in self.port and rport not in self.port:
            return False
        if self.comm is not None and not any(self.comm in c for c in comms):
            return False
        if self.peer == "4" and not peer_is_ipv4:
            return False
        if self.peer == "6" and peer_is_ipv4:
            return False
        if self.protocol is not None and protocol != self.protocol:
            return False
        if self.container and not any(container_matches(c, w)
                                      for c in containers for w in self.container):
            return False
        return True
