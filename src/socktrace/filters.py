"""Which connections to show.  Mapped-only and pid are also applied in the
kernel (probes.KernelFilter); this is the complete filter in userspace."""

from __future__ import annotations

from dataclasses import dataclass

from .events import Connection


@dataclass(frozen=True)
class Filter:
    mapped_only: bool = False
    pid: int | None = None
    port: int | None = None          # local or remote
    comm: str | None = None          # substring of the process name, as opensnoop -n
    peer: str | None = None          # "4": the peer speaks IPv4 (plain or mapped); "6": native IPv6

    def matches(self, c: Connection) -> bool:
        """A traced connection."""
        return self._matches(c.mapped, (c.pid,), (c.comm,), c.lport, c.rport, c.peer_is_ipv4)

    def matches_socket(self, s) -> bool:
        """A socket of `socktrace snapshot` (snapshot.Sock): it matches a
        pid or name when any of the processes sharing it does."""
        return self._matches(s.mapped, s.pids, tuple(o.comm or "" for o in s.owners),
                             s.lport, s.rport, s.peer_is_ipv4)

    def _matches(self, mapped, pids, comms, lport, rport, peer_is_ipv4) -> bool:
        if self.mapped_only and not mapped:
            return False
        if self.pid is not None and self.pid not in pids:
            return False
        if self.port is not None and self.port not in (lport, rport):
            return False
        if self.comm is not None and not any(self.comm in c for c in comms):
            return False
        if self.peer == "4" and not peer_is_ipv4:
            return False
        if self.peer == "6" and peer_is_ipv4:
            return False
        return True
