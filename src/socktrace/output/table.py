"""The live table: one row per connection, netstat/ss-like, fits 100 columns.

    TIME     EVENT   PID/COMM@CONTAINER   LOCAL                 PEER                  SOCKET      V6ONLY
    10:42:01 accept  31307/java@backup    10.0.0.12:4243        10.0.0.20:64702       tcp6 MAPPED 0

PID/COMM names the process as netstat does, and after @ its container
(containers.py), when it runs in one.  SOCKET is the socket's family as netstat names it (tcp, tcp6); MAPPED marks
an AF_INET6 socket whose peer is IPv4, shown in dotted form as netstat does.
A `failed` row (a connect that never completed its handshake) has its
reason in the last column: refused, timeout, unreachable, reset, closed.
"""

from __future__ import annotations

import time
from calendar import timegm as calendar_timegm
from functools import lru_cache
from typing import TextIO

from ..classify import endpoint, label
from ..records import ConnectionRecord, LostRecord, ReadyRecord, SocketRecord, SummaryRecord
from ..vocabulary import ACCEPT, CLOSE, CONNECT, CONNECT_FAILED, IN, OUT, UDP, UNACCEPTED, process_name
from .advice_text import advice_lines
from ..containers import display_name
from .escape import escape
from .names import pid_name, size, who
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


class TableSink:
    """Rows on `out`, notices on `err` (output.sink.Sink)."""

    def __init__(self, out: TextIO, err: TextIO):
        self.out = out
        self.err = err

    def ready(self, rec: ReadyRecord) -> None:
        for mode, reason in rec["skipped"].items():
            self.err.write(f"socktrace: {mode} skipped: {reason}\n")
        self.err.write(f"socktrace: tracing with probe mode {rec['probe']}"
                       f" (offsets from {rec['offsets']}, {rec['buffer']}). Ctrl-C to stop.\n")
        self.err.flush()
        self.out.write(HEADER + "\n")
        self.out.flush()

    def connections(self, recs: list[ConnectionRecord]) -> None:
        self.out.write("".join(format_row(rec) + "\n" for rec in recs))

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
        counts = ", ".join(f"{n} {t}" for t, n in rec["by_type"].items())
        n = rec["events"]
        self.err.write(f"socktrace: {n} event{'s' if n != 1 else ''} ({counts or 'none'}), "
                       f"{rec['mapped']} IPv4 over AF_INET6 (MAPPED), {rec['lost']} lost"
                       + (f", {rec['missed_runs']} program runs skipped by the kernel"
                          if rec["missed_runs"] else "") + "\n")
        for seen in rec["dual_stack"]:
            where = f"@{escape(display_name(seen['container']))}" if seen.get("container") else \
                f" ({escape(seen['unit'])})" if seen.get("unit") else ""
            self.err.write(f"socktrace: {pid_name(seen['pids'], seen['process'])}{where} served "
                           f"{seen['mapped']} IPv4 connections on port {seen['port']} through a "
                           f"dual-stack AF_INET6 socket (tcp6 MAPPED)\n")
            self.err.write("".join(line + "\n" for line in advice_lines(seen["advice"], "  ")))
        self.err.flush()

    def flush(self) -> None:
        self.out.flush()

    def reopen(self) -> None:
        """Nothing to reopen: a terminal or a pipe."""

    def close(self) -> None:
        self.flush()
