"""Bytes by peer family, direction and process, now (--metrics).

Two halves, both read at scrape time, neither costing Python anything per
packet or per connection as it happens:
- the connections that ended: the kernel sums their payload by process
  name and peer family at their close (bpf/socktrace.bpf.c, `traffic`);
- those still open: the kernel keeps each reported one (`lives`) and
  sock_diag's tcp_info gives its counters now (tcpi_bytes_acked,
  tcpi_bytes_received), joined by the connection's addresses.
Both count what socktrace reported (its filters apply), a connection
from its accept/connect on; the join is pure (bytes_now) and testable
with records alone; probes.py and kernel/sockdiag.py read the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .classify import FAMILY_NAMES, peer_family
from .events import Connection
from .kernel.sockdiag import DiagSocket
from .vocabulary import CONNECT

SENT, RECEIVED = "sent", "received"   # the `direction` of the bytes


@dataclass(frozen=True)
class KernelTraffic:
    """What the kernel holds at one moment: `ended`: (process name, peer
    family) -> (bytes sent, bytes received) of the connections that ended,
    the family as classify.peer_family names it (ipv4, mapped, ipv6), a
    name "" for those that found the map full; `open`: each reported
    connection still open, with its process's name."""
    ended: dict
    open: list


def _payload(c: Connection, acked: int, received: int) -> tuple[int, int]:
    """An open connection's payload so far, from tcp_info's counters of
    sequence space: the connecting side's SYN is in bytes_acked, as in
    the close record's payload() (bpf/socktrace.bpf.c)."""
    return (acked - 1 if c.kind == CONNECT and acked else acked), received


def bytes_now(t: KernelTraffic, live: Iterable[DiagSocket], netns: int
              ) -> dict[tuple[str, str, str], int]:
    """(peer family, direction, process name) -> bytes: the ended
    connections' sums plus the open ones' counters.  An open connection
    sock_diag does not list (another network namespace than `netns`, or
    closing right now) counts at its end.

    >>> from socktrace.events import Connection
    >>> from socktrace.vocabulary import RecordType
    >>> c = Connection(RecordType.CONNECT, time_ns=0, sk=1, pid=7, tid=7, uid=0, comm="curl",
    ...                netns=4026531840, cgroup_id=1, sock_family="AF_INET", mapped=False,
    ...                laddr="10.0.0.1", lport=40000, raddr="10.0.0.2", rport=80, v6only=None)
    >>> s = DiagSocket(2, 1, "10.0.0.1", 40000, "10.0.0.2", 80, 0, 0, 0, 1, None, False, False,
    ...                bytes_acked=101, bytes_received=5000)
    >>> bytes_now(KernelTraffic({("curl", "ipv4"): (10, 20)}, [("curl", c)]), [s], 4026531840)
    {('ipv4', 'sent', 'curl'): 110, ('ipv4', 'received', 'curl'): 5020}
    """
    out: dict[tuple[str, str, str], int] = {}
    for (process, family), (sent, received) in t.ended.items():
        out[family, SENT, process] = out.get((family, SENT, process), 0) + sent
        out[family, RECEIVED, process] = out.get((family, RECEIVED, process), 0) + received
    if not t.open:
        return out
    counters = {(FAMILY_NAMES.get(s.family), s.src, s.sport, s.dst, s.dport): s for s in live
                if s.bytes_acked is not None}
    for process, c in t.open:
        s = counters.get((c.sock_family, c.laddr, c.lport, c.raddr, c.rport))
        if s is None or c.netns != netns:
            continue
        sent, received = _payload(c, s.bytes_acked, s.bytes_received)
        family = peer_family(c.sock_family, c.mapped)
        out[family, SENT, process] = out.get((family, SENT, process), 0) + sent
        out[family, RECEIVED, process] = out.get((family, RECEIVED, process), 0) + received
    return out
