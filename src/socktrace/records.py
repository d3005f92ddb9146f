"""The records every output receives: the JSON Lines contract.

Records are dicts, typed as TypedDicts: a sink writes them as they are
(orjson serializes a dict at 1 us; a dataclass would need a conversion per
event) and a type checker knows every field.  Field names are a contract
(README, "JSON Lines"): later consumers rely on them.  Add fields freely;
never rename.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Dict, List, Optional, TypedDict, Union

from .advice import Advice
from .containers import ContainerRecord
from .events import Connection
from .procinfo import ProcessInfo
from .snapshot import Owner, Sock
from .vocabulary import CLOSE, CONNECT, CONNECT_FAILED, CONNECTION_TYPES, TCP_PROTOCOL, UDP, \
    UDP_PROTOCOL, Drops, DualStackListener, RecordType


class OwnerRecord(TypedDict):
    """A process holding a socket."""
    pid: int
    comm: Optional[str]
    cmdline: Optional[str]
    container: Optional[ContainerRecord]


class _Endpoints(TypedDict):
    """What a connection and a socket record share: the classification
    (classify.py) and the addresses."""
    sock_family: str           # AF_INET or AF_INET6
    mapped: bool               # AF_INET6 socket, IPv4-mapped peer
    laddr: str                 # dotted IPv4 for mapped connections, as netstat
    lport: int
    raddr: str
    rport: int


class _Connection(_Endpoints):
    type: str                  # vocabulary.CONNECTION_TYPES
    protocol: str              # tcp, udp
    time: str                  # iso_time()
    pid: Optional[int]
    tid: Optional[int]
    comm: Optional[str]        # the thread's name, as the kernel saw it
    process: Optional[str]     # the process's name (its thread group leader's), as netstat shows it
    uid: int
    user: Optional[str]
    cmdline: Optional[str]
    cgroup: Optional[str]
    cgroup_id: Optional[int]
    container: Optional[ContainerRecord]   # containers.py; None: a host process
    unit: Optional[str]        # a host process's systemd unit (nginx.service)
    netns: int


class ConnectionRecord(_Connection, total=False):
    v6only: Optional[bool]     # accept, unaccepted, and udp `in` only
    direction: str             # udp only: in (its first datagram was received), out
    reason: str                # connect_failed only: refused, timeout, unreachable, reset, closed, or an errno name
    processes: List[OwnerRecord]   # unaccepted only: every owner of the listener
    duration: Optional[float]  # close only (--lifetime): seconds since its accept/connect; None:
                               # it was open before tracing began
    bytes_sent: Optional[int]  # close only: TCP: acknowledged by the peer; UDP: None where the
    bytes_received: Optional[int]  # kernel has no sock_*_length tracepoints (Linux < 6.3)
    retransmits: int           # close only: segments retransmitted
    closed_by: str             # close only: local, peer (who sent the first FIN), reset; a UDP
                               # flow's: local (its socket was closed) or idle (--udp-idle)
    opened_by: str             # close only: accept, connect or udp, the record that began it
    datagrams_sent: int        # a UDP flow's close only
    datagrams_received: int


class _SocketListener(TypedDict):
    laddr: str
    lport: int
    v6only: Optional[bool]
    pid: Optional[int]
    comm: Optional[str]
    processes: List[OwnerRecord]


class _Socket(_Endpoints):
    type: str                  # socket (snapshot), existing (the tracer's first lines)
    protocol: str              # tcp, udp
    state: str                 # TCP's states; UDP: UNCONN, or ESTABLISHED once connect()ed
    pid: Optional[int]
    comm: Optional[str]
    cmdline: Optional[str]
    container: Optional[ContainerRecord]   # the first owner's
    unit: Optional[str]
    uid: int
    user: Optional[str]
    netns: int
    inode: Optional[int]
    processes: List[OwnerRecord]


class SocketRecord(_Socket, total=False):
    v6only: Optional[bool]             # listeners
    advice: Advice                     # dual-stack listeners
    listener: _SocketListener          # accepted or queued connections
    queued: bool


class ReadyRecord(TypedDict):
    type: str
    probe: str
    skipped: Dict[str, str]
    offsets: str
    buffer: str


class LostRecord(TypedDict):
    type: str
    lost: int
    unaccepted_untracked: int
    missed_runs: int


class DualStackRecord(TypedDict):
    """A dual-stack listener that served IPv4 peers while socktrace ran,
    as the summary names it (vocabulary.DualStackListener): its process
    (None: not known), every pid that took its connections, its port and
    the advice."""
    protocol: str
    pid: Optional[int]
    pids: List[int]
    process: Optional[str]
    cmdline: Optional[str]
    container: Optional[ContainerRecord]
    unit: Optional[str]
    port: int
    mapped: int
    advice: Advice


class SummaryRecord(TypedDict):
    type: str
    events: int
    mapped: int
    lost: int
    unaccepted_untracked: int
    missed_runs: int
    by_type: Dict[str, int]
    dual_stack: List[DualStackRecord]


Record = Union[ConnectionRecord, SocketRecord, ReadyRecord, LostRecord, SummaryRecord]


@lru_cache(maxsize=4)
def _second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def iso_time(time_ns: int) -> str:
    """ISO 8601 UTC with microseconds: 1700000001123456000 ->
    '2023-11-14T22:13:21.123456Z' (the seconds part cached: events come in
    bursts within the same second)."""
    sec, ns = divmod(time_ns, 1_000_000_000)
    return "%s.%06dZ" % (_second(sec), ns // 1000)  # faster than an f-string with a format spec


def connection_record(c: Connection, proc: ProcessInfo, user: str | None) -> ConnectionRecord:
    """The record of one connection.

    For an unaccepted connection `c.pid`/`c.comm` are the listener
    owner's (or 0/"" when no listener owner was found).  The process name
    is `proc`'s, which the kernel read at the process's first connection
    (a Java server accepts on a thread named like "http-nio-8080-Acceptor"
    of a process named "java"), else the thread's when it is the main
    thread.
    """
    rec: ConnectionRecord = {
        "type": c.kind.value,
        "protocol": c.protocol,
        "time": iso_time(c.time_ns),
        "pid": c.pid or None,
        "tid": c.tid or None,
        "comm": c.comm or None,
        "process": proc.comm or (c.comm if c.tid == c.pid else None) or None,
        "uid": c.uid,
        "user": user,
        "cmdline": proc.cmdline,
        "cgroup": proc.cgroup,
        "cgroup_id": c.cgroup_id or None,
        "container": proc.container,
        "unit": proc.unit,
        "netns": c.netns,
        "sock_family": c.sock_family,
        "mapped": c.mapped,
        "laddr": c.laddr,
        "lport": c.lport,
        "raddr": c.raddr,
        "rport": c.rport,
    }
    if c.kind == CONNECT_FAILED:
        rec["reason"] = c.reason
    elif c.kind == UDP:
        rec["direction"] = c.direction
        rec["v6only"] = c.v6only
    elif c.kind == CLOSE:
        rec["duration"] = None if c.duration is None else round(c.duration, 6)
        rec["bytes_sent"] = c.bytes_sent
        rec["bytes_received"] = c.bytes_received
        rec["closed_by"] = c.closed_by
        rec["opened_by"] = c.opened_by
        rec["v6only"] = c.v6only   # an accepted one's listener's; None for a connect
        if c.direction:   # a UDP flow's: no retransmits, but datagrams
            rec["direction"] = c.direction
            rec["datagrams_sent"] = c.datagrams_sent
            rec["datagrams_received"] = c.datagrams_received
        else:
            rec["retransmits"] = c.retransmits
    elif c.kind != CONNECT:
        rec["v6only"] = c.v6only
    return rec


def record_like(template: ConnectionRecord, time_ns: int, lport: int, rport: int) -> ConnectionRecord:
    """The record of a connection that differs from the one of `template`
    only in its time and ports (see events.origin): a copy, not a rebuild.

    >>> record_like({"type": "accept", "time": "", "lport": 80, "rport": 1}, 0, 80, 2)
    {'type': 'accept', 'time': '1970-01-01T00:00:00.000000Z', 'lport': 80, 'rport': 2}
    """
    rec = template.copy()
    rec["time"] = iso_time(time_ns)
    rec["lport"] = lport
    rec["rport"] = rport
    return rec


def ready_record(probe: str, skipped: list[tuple[str, str]], offsets_from: str,
                 buffer: str) -> ReadyRecord:
    return {"type": RecordType.READY.value, "probe": probe,
            "skipped": {mode: reason for mode, reason in skipped},
            "offsets": offsets_from, "buffer": buffer}


def lost_record(drops: Drops) -> LostRecord:
    return {"type": RecordType.LOST.value, "lost": drops.lost,
            "unaccepted_untracked": drops.unaccepted_untracked, "missed_runs": drops.missed_runs}


def summary_record(by_type: dict[str, int], mapped: int, drops: Drops,
                   dual_stack: list[DualStackRecord] | None = None) -> SummaryRecord:
    """The totals at exit: `events` counts every connection record
    (vocabulary.CONNECTION_TYPES), `mapped` those with a mapped peer."""
    return {"type": RecordType.SUMMARY.value,
            "events": sum(n for t, n in by_type.items() if t in CONNECTION_TYPES), "mapped": mapped,
            "lost": drops.lost, "unaccepted_untracked": drops.unaccepted_untracked,
            "missed_runs": drops.missed_runs, "by_type": by_type, "dual_stack": dual_stack or []}


def dual_stack_record(d: DualStackListener, advice: Advice) -> DualStackRecord:
    return {"protocol": d.protocol, "pid": d.pid, "pids": d.pids, "process": d.process,
            "cmdline": d.cmdline, "container": d.container, "unit": d.unit, "port": d.port,
            "mapped": d.mapped, "advice": advice}


def socket_record(s: Sock, user: str | None, type: str = RecordType.SOCKET.value) -> SocketRecord:
    """One socket of `socktrace snapshot` (or, `type` "existing", one the
    tracer found at its start) with the tracer's field names."""
    first = s.first_owner
    rec: SocketRecord = {
        "type": type, "protocol": s.protocol, "state": s.state,
        "pid": first.pid if first else None, "comm": first.comm if first else None,
        "cmdline": first.cmdline if first else None,
        "container": first.container if first else None, "unit": first.unit if first else None,
        "uid": s.uid, "user": user, "netns": s.netns, "inode": s.inode or None,
        "sock_family": s.sock_family, "mapped": s.mapped,
        "laddr": s.laddr, "lport": s.lport, "raddr": s.raddr, "rport": s.rport,
        "processes": _owners(s.owners),
    }
    if s.state in ("LISTEN", "UNCONN"):
        rec["v6only"] = s.v6only
    if s.listener:
        lo = s.listener.first_owner
        rec["listener"] = {"laddr": s.listener.laddr, "lport": s.listener.lport,
                           "v6only": s.listener.v6only,
                           "pid": lo.pid if lo else None, "comm": lo.comm if lo else None,
                           "processes": _owners(s.listener.owners)}
        rec["queued"] = s.queued
    return rec


def _owners(owners: tuple[Owner, ...]) -> list[OwnerRecord]:
    return [{"pid": o.pid, "comm": o.comm, "cmdline": o.cmdline, "container": o.container}
            for o in owners]


def owner(pid: int, proc: ProcessInfo) -> OwnerRecord:
    """One process holding a socket, as records list them.

    >>> owner(500, ProcessInfo("nginx", "nginx: master process", None))
    {'pid': 500, 'comm': 'nginx', 'cmdline': 'nginx: master process', 'container': None}
    """
    return {"pid": pid, "comm": proc.comm, "cmdline": proc.cmdline, "container": proc.container}
