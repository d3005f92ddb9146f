"""The live table: one row per connection, netstat/ss-like, fits 100 columns.

    TIME     EVENT   PID/COMM             LOCAL                PEER                  SOCKET      V6ONLY
    10:42:01 accept  31307/java           10.0.0.12:4243       10.0.0.20:64702       tcp6 MAPPED 0

SOCKET is the socket's family as netstat names it (tcp, tcp6); MAPPED marks
an AF_INET6 socket whose peer is IPv4, shown in dotted form as netstat does.
"""

from __future__ import annotations

from typing import Any, TextIO

from ..classify import endpoint, label
from .escape import escape
from .records import parse_iso_time

EVENT_LABELS = {"accept": "accept", "connect": "connect", "unaccepted": "queued"}
_ROW = "{:<8} {:<7} {:<20} {:<20} {:<21} {:<11} {}"
HEADER = _ROW.format("TIME", "EVENT", "PID/COMM", "LOCAL", "PEER", "SOCKET", "V6ONLY")


def socket_label(rec: dict[str, Any]) -> str:
    """tcp, tcp6 or tcp6 MAPPED, for a record (classify.label)."""
    return label(rec["sock_family"], rec["mapped"])


def format_row(rec: dict[str, Any]) -> str:
    when = parse_iso_time(rec["time"]).astimezone()
    v6only = rec.get("v6only")
    who = f"{rec['pid'] or '-'}/{escape(rec['comm'] or '?')}"
    return _ROW.format(
        when.strftime("%H:%M:%S"),
        EVENT_LABELS.get(rec["type"], rec["type"]),
        who,
        endpoint(rec["laddr"], rec["lport"]),
        endpoint(rec["raddr"], rec["rport"]),
        socket_label(rec),
        "-" if v6only is None else str(int(v6only)),
    ).rstrip()


class TableSink:
    def __init__(self, out: TextIO, err: TextIO):
        self.out = out
        self.err = err

    def ready(self, rec: dict[str, Any]) -> None:
        for mode, reason in rec["skipped"].items():
            self.err.write(f"socktrace: {mode} skipped: {reason}\n")
        self.err.write(f"socktrace: tracing with probe mode {rec['probe']}"
                       f" (offsets from {rec['offsets']}, {rec['buffer']}). Ctrl-C to stop.\n")
        self.err.flush()
        self.out.write(HEADER + "\n")
        self.out.flush()

    def connections(self, recs: list[dict[str, Any]]) -> None:
        self.out.write("".join(format_row(rec) + "\n" for rec in recs))

    def existing(self, snap, socks, cache) -> None:
        """The mapped connections that existed before tracing began."""
        from .snapshot_text import HEADER as SNAP_HEADER, format_row as snap_row
        if not socks:
            self.err.write("socktrace: no existing IPv4 connection over an AF_INET6 socket\n")
            return
        self.out.write(f"Existing IPv4 connections over AF_INET6 sockets ({len(socks)}):\n")
        self.out.write(SNAP_HEADER + "\n")
        for s in socks:
            self.out.write(snap_row(s) + "\n")
        self.out.write("\n")

    def lost(self, rec: dict[str, Any]) -> None:
        self.flush()
        self.err.write(f"socktrace: WARNING: {rec['lost']} events lost so far (buffer full), "
                       f"{rec['unaccepted_untracked']} queued connections untracked\n")
        self.err.flush()

    def summary(self, rec: dict[str, Any]) -> None:
        self.flush()
        counts = ", ".join(f"{n} {t}" for t, n in rec["by_type"].items())
        n = rec["events"]
        self.err.write(f"socktrace: {n} event{'s' if n != 1 else ''} ({counts or 'none'}), "
                       f"{rec['mapped']} IPv4 over AF_INET6 (MAPPED), {rec['lost']} lost\n")
        self.err.flush()

    def flush(self) -> None:
        self.out.flush()
