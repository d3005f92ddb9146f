"""The live table: one row per connection, netstat/ss-like, fits 100 columns.

    TIME     EVENT   PID/COMM@CONTAINER   LOCAL                 PEER                  SOCKET      V6ONLY
    10:42:01 accept  31307/java@backup    10.0.0.12:4243        10.0.0.20:64702       tcp6 MAPPED 0

PID/COMM names the process as netstat does, and after @ its container
(containers.py), when it runs in one.  SOCKET is the socket's family as netstat names it (tcp, tcp6); MAPPED marks
an AF_INET6 socket whose peer is IPv4, shown in dotted form as netstat does.
A `failed` row (a connect that never completed its handshake) has its
reason in the last column: refused, timeout, unreachable, reset, closed.

When rows come faster than anyone reads them (more than RATE_LIMIT a
second: over 2 x RATE_LIMIT within this second and the one before), the table says so once on stderr and prints,
once a second, one line per process, port, family and event with its
count, until a second passes with RATE_LIMIT rows or fewer (`Coalescer`).
--json, -o and the metrics keep every record:

    10:42:01 accept  31307/java@backup    10.0.0.12:4243        2315 conns, 41 addrs  tcp6 MAPPED 0
"""

from __future__ import annotations

import time
from calendar import timegm as calendar_timegm
from functools import lru_cache
from typing import Callable, TextIO

from ..classify import endpoint, label
from ..records import ConnectionRecord, LostRecord, ReadyRecord, SocketRecord, SummaryRecord
from ..vocabulary import ACCEPT, CLOSE, CONNECT, CONNECT_FAILED, IN, OUT, UDP, UNACCEPTED, came_in, \
    process_name
from .advice_text import advice_lines
from ..containers import display_name
from .escape import escape
from .names import pid_list, pid_name, size, who
from . import snapshot_text

EVENT_LABELS = {ACCEPT: "accept", CONNECT: "connect", UNACCEPTED: "queued", CONNECT_FAILED: "failed",
                CLOSE: "close"}
# a UDP flow's row names its direction: its first datagram received or sent
UDP_LABELS = {IN: "udp in", OUT: "udp out"}
_ROW = "{:<8} {:<7} {:<20} {:<21} {:<21} {:<11} {}"
_WHO = 20
HEADER = _ROW.format("TIME", "EVENT", "PID/COMM@CONTAINER", "LOCAL", "PEER", "SOCKET", "V6ONLY")


@lru_cache(maxsize=4)
def local_clock(utc_second: str) -> str:
    """The local HH:MM:SS of a record's time, from its first 19 characters
    (the rows of one second share them: one conversion per second).

    >>> local_clock("2026-11-23T11:02:05") == time.strftime("%H:%M:%S", time.localtime(1795431725))
    True
    """
    utc = time.strptime(utc_second, "%Y-%m-%dT%H:%M:%S")
    return time.strftime("%H:%M:%S", time.localtime(calendar_timegm(utc)))


def close_detail(rec: ConnectionRecord) -> str:
    """A close row's last column: lifetime, bytes sent/received (a UDP
    flow's datagrams too; '?' for bytes its kernel could not see), who or
    what ended it.

    >>> close_detail({"duration": 2.5, "bytes_sent": 1536, "bytes_received": 80, "closed_by": "peer"})
    '2.50s 1.5K/80 peer'
    >>> close_detail({"duration": 0.5, "bytes_sent": None, "bytes_received": None, "closed_by": "idle",
    ...               "datagrams_sent": 3, "datagrams_received": 2})
    '0.50s ?/? 3/2dg idle'
    """
    lived = "-" if rec["duration"] is None else f"{rec['duration']:.2f}s"   # open before tracing
    sent, received = rec["bytes_sent"], rec["bytes_received"]
    moved = "?/?" if sent is None else f"{size(sent)}/{size(received)}"
    if "datagrams_sent" in rec:
        moved += f" {rec['datagrams_sent']}/{rec['datagrams_received']}dg"
    return f"{lived} {moved} {rec['closed_by']}"


def format_row(rec: ConnectionRecord) -> str:
    """One connection; PID/COMM names the process as netstat does (31307/java,
    not the accepting thread's name).

    >>> print(format_row({"type": "accept", "time": "2026-11-23T11:02:05.225923Z", "pid": 31307,
    ...     "comm": "http-nio-4243-Ac", "process": "java", "sock_family": "AF_INET6", "mapped": True,
    ...     "laddr": "10.0.0.12", "lport": 4243, "raddr": "10.0.0.20", "rport": 64702, "v6only": False})[9:])
    accept  31307/java           10.0.0.12:4243        10.0.0.20:64702       tcp6 MAPPED 0
    >>> print(format_row({"type": "udp", "protocol": "udp", "direction": "in", "pid": 880,
    ...     "time": "2026-11-23T11:02:05.225923Z", "comm": "java", "process": "java",
    ...     "sock_family": "AF_INET6", "mapped": True, "laddr": "::", "lport": 5353,
    ...     "raddr": "10.0.0.20", "rport": 41000, "v6only": False})[9:])
    udp in  880/java             [::]:5353             10.0.0.20:41000       udp6 MAPPED 0
    """
    v6only = rec.get("v6only")
    return _ROW.format(
        local_clock(rec["time"][:19]),
        UDP_LABELS[rec["direction"]] if rec["type"] == UDP else EVENT_LABELS.get(rec["type"], rec["type"]),
        # cut as ps cuts a long user name (the rest is in JSON); a name with
        # control characters may still push the columns
        who(str(rec["pid"] or "-"), process_name(rec), rec.get("container"), _WHO),
        endpoint(rec["laddr"], rec["lport"]),
        endpoint(rec["raddr"], rec["rport"]),
        label(rec["sock_family"], rec["mapped"], rec.get("protocol") or "tcp"),
        close_detail(rec) if rec["type"] == CLOSE else
        rec.get("reason") or ("-" if v6only is None else str(int(v6only))),
    ).rstrip()


def summary_text(rec: SummaryRecord) -> str:
    """The totals at exit and, for each dual-stack listener that served
    IPv4 peers, who it is and its fix: what the table and `top` print on
    stderr when they stop."""
    counts = ", ".join(f"{n} {t}" for t, n in rec["by_type"].items())
    n = rec["events"]
    lines = [f"socktrace: {n} event{'s' if n != 1 else ''} ({counts or 'none'}), "
             f"{rec['mapped']} IPv4 over AF_INET6 (MAPPED), {rec['lost']} lost"
             + (f", {rec['missed_runs']} program runs skipped by the kernel"
                if rec["missed_runs"] else "")]
    for seen in rec["dual_stack"]:
        where = f"@{escape(display_name(seen['container']))}" if seen.get("container") else \
            f" ({escape(seen['unit'])})" if seen.get("unit") else ""
        m = seen["mapped"]
        lines.append(f"socktrace: {pid_name(seen['pids'], seen['process'])}{where} served "
                     f"{m} IPv4 connection{'s' if m != 1 else ''} on port {seen['port']} through a "
                     f"dual-stack AF_INET6 socket (tcp6 MAPPED)")
        lines += advice_lines(seen["advice"], "  ")
    return "".join(line + "\n" for line in lines)


RATE_LIMIT = 50     # rows a second a person can still follow
# what a coalesced line counts, by event
_COUNTED = {ACCEPT: "conns", CONNECT: "conns", UNACCEPTED: "queued", CONNECT_FAILED: "tries",
            UDP: "flows", CLOSE: "ends"}
COALESCE_NOTICE = (f"socktrace: more than {RATE_LIMIT} rows a second: the table now shows one line "
                   "per second for each process, port, family and event, with counts, until the "
                   "rate falls (--json, -o and --metrics keep every record)\n")


def group_key(rec: ConnectionRecord) -> tuple:
    """What one coalesced line stands for: the event, the process (and
    container), the service's port (the local one of what came in, the
    remote one of what went out), the socket's family and protocol."""
    c = rec.get("container")
    inbound = came_in(rec)
    return (rec["type"], rec.get("direction"), process_name(rec), c["id"] if c else None, inbound,
            rec["lport"] if inbound else rec["rport"], rec["sock_family"], rec["mapped"],
            rec.get("protocol") or "tcp")


class Group:
    """The connections of one second under one `group_key`."""
    __slots__ = ("first", "n", "pids", "here", "there", "last", "mixed")

    def __init__(self, rec: ConnectionRecord):
        self.first = rec
        self.n = 0
        self.pids: set = set()
        self.here: set = set()    # the service's side's addresses
        self.there: set = set()   # the other side's
        self.last = rec.get("reason") or rec.get("v6only")   # the last column's value
        self.mixed = False                                     # ... and whether it varies

    def add(self, rec: ConnectionRecord, inbound: bool) -> None:
        self.n += 1
        self.pids.add(rec["pid"])
        if inbound:
            self.here.add(rec["laddr"])
            self.there.add(rec["raddr"])
        else:
            self.here.add(rec["raddr"])
            self.there.add(rec["laddr"])
        if not self.mixed and (rec.get("reason") or rec.get("v6only")) != self.last:
            self.mixed = True

    def line(self, clock: str) -> str:
        """The line, at `clock` (HH:MM:SS).

        >>> g = Group({"type": "accept", "pid": 7, "process": "java", "sock_family": "AF_INET6",
        ...     "mapped": True, "laddr": "10.0.0.12", "lport": 4243, "raddr": "10.0.0.20",
        ...     "rport": 5000, "v6only": False, "container": None})
        >>> for raddr in ("10.0.0.20", "10.0.0.21", "10.0.0.21"):
        ...     g.add({**g.first, "raddr": raddr}, True)
        >>> g.line("10:42:01")
        '10:42:01 accept  7/java               10.0.0.12:4243        3 conns, 2 addrs      tcp6 MAPPED 0'
        """
        rec = self.first
        inbound = came_in(rec)
        kind = rec["type"]
        port = rec["lport"] if inbound else rec["rport"]
        service = endpoint(next(iter(self.here)) if len(self.here) == 1 else "*", port)
        k = len(self.there)
        counted = f"{self.n} {_COUNTED.get(kind, kind)}, {k} addr{'s' if k != 1 else ''}"
        value = self.last
        last = ("-" if value is None else value if isinstance(value, str) else str(int(value))) + \
            ("+" if self.mixed else "")
        return _ROW.format(
            clock, UDP_LABELS[rec["direction"]] if kind == UDP else EVENT_LABELS.get(kind, kind),
            who(pid_list(sorted(p for p in self.pids if p)), process_name(rec), rec.get("container"),
                _WHO),
            service if inbound else counted, counted if inbound else service,
            label(rec["sock_family"], rec["mapped"], rec.get("protocol") or "tcp"),
            "-" if kind == CLOSE else last).rstrip()


class Coalescer:
    """Whether rows are printed one by one or counted, second by second
    (the second a record reached the table, whose time its lines show).

    >>> c = Coalescer(limit=2)
    >>> recs = [{"type": "connect", "pid": 9, "process": "ab", "sock_family": "AF_INET",
    ...          "mapped": False, "laddr": "127.0.0.1", "lport": p, "raddr": "127.0.0.1",
    ...          "rport": 80, "container": None, "time": "2026-11-23T11:02:05.1Z"} for p in range(6)]
    >>> [len(c.rows(recs[:3], 100)), c.on], [len(c.rows(recs, 100)), c.on]
    ([3, False], [1, True])
    >>> [line[9:] for line in c.tick(101)], c.on
    (['connect 9/ab                 5 conns, 1 addr       127.0.0.1:80          tcp         -'], True)
    >>> c.tick(102), c.tick(103), c.on
    ([], [], False)
    """

    def __init__(self, limit: int = RATE_LIMIT):
        self.limit = limit
        self.on = False
        self.second = None
        self.count = 0        # records in this second
        self.previous = 0     # ... in the one before
        self.calm = 0         # seconds at or under the limit while counting
        self.groups: dict[tuple, Group] = {}

    def rows(self, recs: list[ConnectionRecord], second: int) -> list[ConnectionRecord]:
        """The records of `recs` to print as rows; the others are counted."""
        if second != self.second:
            self.tick(second)
        self.count += len(recs)
        if not self.on:
            room = 2 * self.limit - self.previous - (self.count - len(recs))
            if len(recs) <= room:
                return recs
            self.on, self.calm = True, 0
            shown, recs = recs[:max(room, 0)], recs[max(room, 0):]
        else:
            shown = []
        groups = self.groups
        for rec in recs:
            k = group_key(rec)
            g = groups.get(k)
            if g is None:
                g = groups[k] = Group(rec)
            g.add(rec, k[4])
        return shown

    def tick(self, second: int) -> list[str]:
        """The lines of the seconds that have ended before `second`; whether
        to go on counting."""
        if second == self.second:
            return []
        clock = time.strftime("%H:%M:%S", time.localtime(self.second or 0))
        lines = [g.line(clock) for g in self.groups.values()]
        self.groups = {}
        if self.on and self.second is not None:
            self.calm = self.calm + 1 if self.count <= self.limit else 0
            # a whole second under the limit (and this one, when more than a second passed)
            if self.calm >= 2 or (second - self.second > 1):
                self.on = False
        self.previous = self.count if second - (self.second or second) == 1 else 0
        self.count, self.second = 0, second
        return lines


class TableSink:
    """Rows on `out`, notices on `err` (output.sink.Sink)."""

    def __init__(self, out: TextIO, err: TextIO, clock: Callable[[], float] = time.time,
                 coalescer: Coalescer | None = None):
        self.out = out
        self.err = err
        self.clock = clock
        self.coalescer = coalescer or Coalescer()
        self._told = False

    def ready(self, rec: ReadyRecord) -> None:
        for mode, reason in rec["skipped"].items():
            self.err.write(f"socktrace: {mode} skipped: {reason}\n")
        self.err.write(f"socktrace: tracing with probe mode {rec['probe']}"
                       f" (offsets from {rec['offsets']}, {rec['buffer']}). Ctrl-C to stop.\n")
        self.err.flush()
        self.out.write(HEADER + "\n")
        self.out.flush()

    def connections(self, recs: list[ConnectionRecord]) -> None:
        c = self.coalescer
        second = int(self.clock())
        if second != c.second:
            self._write(c.tick(second))
        rows = c.rows(recs, second)
        if rows:
            self.out.write("".join(format_row(rec) + "\n" for rec in rows))
        if c.on and not self._told:
            self._told = True
            self.out.flush()
            self.err.write(COALESCE_NOTICE)
            self.err.flush()

    def _write(self, lines: list[str]) -> None:
        if lines:
            self.out.write("".join(line + "\n" for line in lines))

    def existing(self, recs: list[SocketRecord]) -> None:
        if not recs:
            self.err.write("socktrace: no existing IPv4 connection over an AF_INET6 socket\n")
            return
        self.out.write(f"Existing IPv4 connections over AF_INET6 sockets ({len(recs)}):\n")
        self.out.write(snapshot_text.HEADER + "\n")
        self.out.write("".join(snapshot_text.format_row(r) + "\n" for r in recs))
        self.out.write("\n")

    def lost(self, rec: LostRecord) -> None:
        self.flush()
        self.err.write(f"socktrace: WARNING: {rec['lost']} events lost so far (buffer full), "
                       f"{rec['unaccepted_untracked']} queued connections untracked\n")
        self.err.flush()

    def summary(self, rec: SummaryRecord) -> None:
        self.flush()
        self.err.write(summary_text(rec))
        self.err.flush()

    def flush(self) -> None:
        """Write out the rows, and the counts of a second that has ended."""
        self._write(self.coalescer.tick(int(self.clock())))
        self.out.flush()

    def reopen(self) -> None:
        """Nothing to reopen: a terminal or a pipe."""

    def close(self) -> None:
        self.flush()
