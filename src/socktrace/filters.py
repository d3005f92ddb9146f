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

    def matches(self, c: Connection, comm: str | None = None) -> bool:
        """`comm` overrides the event's comm (unaccepted connections get
        their listener owner's)."""
        if self.mapped_only and not c.mapped:
            return False
        if self.pid is not None and c.pid != self.pid:
            return False
        if self.port is not None and self.port not in (c.lport, c.rport):
            return False
        if self.comm is not None and self.comm not in (comm if comm is not None else c.comm):
            return False
        if self.peer == "4" and not c.peer_is_ipv4:
            return False
        if self.peer == "6" and c.peer_is_ipv4:
            return False
        return True
