"""The record vocabulary, written once: the record types, which of them
came through a listener and which count as connections, the kernel's
counters, and the grouping of dual-stack listeners.

The record builder (the summary at exit), `socktrace report`, the table
and the metrics all take these from here, so that the summary of a run,
the report on its log and /metrics count the same things the same way
(tests/kernel/test_agreement.py runs one session and compares the three).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Mapping, Optional


class RecordType(str, Enum):
    """The `type` of every record (README, "JSON Lines")."""
    # one connection, or one attempt (records.ConnectionRecord)
    ACCEPT = "accept"                   # accept() returned it
    CONNECT = "connect"                 # its handshake completed
    UNACCEPTED = "unaccepted"           # handshake done, nobody accepted it (yet)
    CONNECT_FAILED = "connect_failed"   # a connect whose handshake never completed
    UDP = "udp"                         # a UDP flow's first datagram (`direction`: in, out)
    CLOSE = "close"                     # a reported TCP connection ended (--lifetime)
    # one socket (records.SocketRecord)
    EXISTING = "existing"               # a mapped connection found when tracing began
    SOCKET = "socket"                   # a line of `socktrace snapshot`
    # the run
    READY = "ready"
    LOST = "lost"
    SUMMARY = "summary"
    UNWRITTEN = "unwritten"             # the log file only: records a full disk lost


# Plain strings: what a record's "type" holds, and a set lookup on the hot
# path compares them by identity.
ACCEPT, CONNECT, UNACCEPTED, CONNECT_FAILED, UDP = (
    t.value for t in (RecordType.ACCEPT, RecordType.CONNECT, RecordType.UNACCEPTED,
                      RecordType.CONNECT_FAILED, RecordType.UDP))
# records that carry the connection fields (and `protocol`)
CONNECTION_TYPES = (ACCEPT, CONNECT, UNACCEPTED, CONNECT_FAILED, UDP)
# ... of which these are TCP connections; a connect_failed is an attempt,
# a udp record a flow
CONNECTIONS = frozenset((ACCEPT, CONNECT, UNACCEPTED))
# ... and these came in through a listener
THROUGH_LISTENER = frozenset((ACCEPT, UNACCEPTED))
# a record's `protocol`; a UDP flow's `direction`: its first datagram
# received (in) or sent (out)
TCP_PROTOCOL, UDP_PROTOCOL = "tcp", "udp"
IN, OUT = "in", "out"
CLOSE = RecordType.CLOSE.value


def came_in(rec: Mapping[str, Any]) -> bool:
    """Whether a record's connection or flow came in through a socket the
    local side listens on: a TCP listener's accept (or queued connection),
    or a UDP flow whose first datagram was received; a `close` as the
    record that began it (its `opened_by`).

    >>> came_in({"type": "accept"}), came_in({"type": "udp", "direction": "out"})
    (True, False)
    >>> came_in({"type": "close", "opened_by": "udp", "direction": "in"})
    True
    """
    kind = rec["type"]
    if kind == CLOSE:
        kind = rec.get("opened_by")
    return kind in THROUGH_LISTENER or (kind == UDP and rec.get("direction") == IN)


def protocol_of(rec: Mapping[str, Any]) -> str:
    """tcp or udp; logs written before UDP flows existed carry no protocol:
    TCP."""
    return rec.get("protocol") or TCP_PROTOCOL


@dataclass(frozen=True)
class Drops:
    """The kernel's drop counters, totals since loading.  A field's name is
    the counter's everywhere: bpf/socktrace.h's index STAT_<NAME> (probes.py
    reads each field from its own index, missed_runs from the programs'
    information), the `lost` and `summary` records' fields, and the metric
    socktrace_<name>_total (but for socktrace_events_lost_total, which was
    named first, and missed_runs, which loses nothing: no `lost` record
    and no metric for it alone)."""
    lost: int = 0                   # events the buffer had no room for
    unaccepted_untracked: int = 0   # queued connections the kernel could not follow
    # runs of socktrace's programs the kernel skipped because one was
    # already running on the CPU (recursion_misses; the only counter not in
    # the `stats` map): a transition then missed is taken at the next one
    missed_runs: int = 0

    def losses(self) -> tuple[int, int]:
        """The counters of records lost, whose change a `lost` record tells.

        >>> Drops(lost=2, missed_runs=5).losses()
        (2, 0)
        """
        return (self.lost, self.unaccepted_untracked)


def process_name(rec: Mapping[str, Any]) -> Optional[str]:
    """The process a connection record names, as netstat and the table show
    it: `process`, or in logs written before it existed the thread's `comm`.

    >>> process_name({"comm": "http-nio-8080-A", "process": "java"})
    'java'
    """
    return rec.get("process") or rec.get("comm") or None


@dataclass
class DualStackListener:
    """One dual-stack listener as the summary and `report` count it: the
    connections and UDP flows that came in (came_in) through an AF_INET6
    socket, grouped by protocol, process name, command line and port (the
    metrics count the same by protocol, port and process name alone: a
    label holds no command line).  Forked workers that share a listener
    are one (nginx's, gunicorn's): `pids` lists them."""
    protocol: str
    process: Optional[str]
    cmdline: Optional[str]
    port: int
    container_id: Optional[str] = None   # the same program in two containers is two listeners
    container: Optional[dict] = None     # its records' containers.ContainerRecord
    unit: Optional[str] = None           # on the host: its process's systemd unit
    seen_pids: dict = field(default_factory=dict)   # pid -> None, in the order seen
    mapped: int = 0           # IPv4 peers, through mapped addresses
    ipv6: int = 0             # native IPv6 peers on the same port
    v6only: set = field(default_factory=set)     # the listener's IPV6_V6ONLY as seen
    first: str = ""
    last: str = ""

    @property
    def pids(self) -> list[int]:
        """The processes that accepted them (or hold the listener), first seen first."""
        return list(self.seen_pids)

    @property
    def pid(self) -> Optional[int]:
        return next(iter(self.seen_pids), None)

    @property
    def key(self) -> tuple:
        """Its DualStackListeners.key_of."""
        return (self.protocol, self.process, self.cmdline, self.port, self.container_id)


class DualStackListeners:
    """The grouping of dual-stack listeners, from connection records.

    >>> d = DualStackListeners()
    >>> d.add([{"type": "accept", "time": "t1", "pid": 7, "process": "nginx", "comm": "nginx",
    ...         "cmdline": "nginx: worker process", "sock_family": "AF_INET6", "mapped": True,
    ...         "lport": 80, "v6only": False},
    ...        {"type": "accept", "time": "t2", "pid": 8, "process": "nginx", "comm": "nginx",
    ...         "cmdline": "nginx: worker process", "sock_family": "AF_INET6", "mapped": True,
    ...         "lport": 80, "v6only": False}])
    >>> [(l.protocol, l.pids, l.process, l.port, l.mapped) for l in d.serving_ipv4()]
    [('tcp', [7, 8], 'nginx', 80, 2)]
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple, DualStackListener] = {}

    @staticmethod
    def key_of(r: Mapping[str, Any]) -> tuple:
        """The listener a record that came in through an AF_INET6 socket
        belongs to: (protocol, process name, command line, port, container id).

        >>> DualStackListeners.key_of({"protocol": "tcp", "process": "java", "comm": "http-nio",
        ...                            "cmdline": "java -jar app.jar", "lport": 8080})
        ('tcp', 'java', 'java -jar app.jar', 8080, None)
        """
        container = r.get("container")
        return (r.get("protocol") or TCP_PROTOCOL, r.get("process") or r.get("comm") or None,
                r.get("cmdline"), r["lport"], container["id"] if container else None)

    def add(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Count the records that came in (came_in) through an AF_INET6
        socket (on the tracer's hot path: one loop, locals, the common case
        first)."""
        groups, through = self._by_key, THROUGH_LISTENER
        for r in records:
            kind = r["type"]
            if kind not in through and not (kind == UDP and r.get("direction") == IN):
                continue   # came_in(), inlined
            if r["sock_family"] != "AF_INET6":
                continue
            container = r.get("container")
            key = (r.get("protocol") or TCP_PROTOCOL, r.get("process") or r.get("comm") or None,
                   r.get("cmdline"), r["lport"], container["id"] if container else None)  # key_of()
            t = r["time"]
            g = groups.get(key)
            if g is None:
                g = groups[key] = DualStackListener(*key, container=container, unit=r.get("unit"),
                                                    first=t, last=t)
            elif t > g.last:       # records come in time order, mostly
                g.last = t
            elif t < g.first:
                g.first = t
            pid = r["pid"]
            if pid is not None:
                g.seen_pids[pid] = None
            if r["mapped"]:
                g.mapped += 1
            else:
                g.ipv6 += 1
            v6only = r.get("v6only")
            if v6only is not None:
                g.v6only.add(v6only)

    def serving_ipv4(self) -> list[DualStackListener]:
        """The listeners that served IPv4 peers (through mapped addresses),
        most of them first: those with IPv6 peers alone are no news."""
        return sorted((g for g in self._by_key.values() if g.mapped), key=lambda g: -g.mapped)
