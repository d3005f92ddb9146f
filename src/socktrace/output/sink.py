"""The interface every output implements: the table, JSON Lines (stdout or
a log file), the fan-out to several of them, and any output to come.

A sink receives finished records (records.py) in this order: `existing`
once (unless --no-snapshot: listed once the probes are attached, so no
connection falls between the list and the trace), `ready` once, then
`connections` and `lost` as they come, with `flush` after each read of the
kernel's buffer and `reopen` on SIGHUP; `summary` once at the end.  The
session calls `close` exactly once, on every exit path, also when the run
fails before `ready`.  A sink owns what it writes to (a log file, a
server) and releases it in `close`.
"""

from __future__ import annotations

from typing import List, Protocol, runtime_checkable

from ..records import ConnectionRecord, LostRecord, ReadyRecord, SocketRecord, SummaryRecord


@runtime_checkable
class Sink(Protocol):
    def ready(self, rec: ReadyRecord) -> None:
        """Tracing has begun (the probe mode and what was skipped)."""

    def existing(self, recs: List[SocketRecord]) -> None:
        """The mapped connections that existed before tracing began."""

    def connections(self, recs: List[ConnectionRecord]) -> None:
        """New connections, in the kernel's order; the hot path."""

    def lost(self, rec: LostRecord) -> None:
        """The drop counters changed."""

    def summary(self, rec: SummaryRecord) -> None:
        """The totals, at the end."""

    def flush(self) -> None:
        """Write out what is buffered."""

    def reopen(self) -> None:
        """Reopen files (SIGHUP, after an external rotation)."""

    def close(self) -> None:
        """Flush and release what the sink owns; nothing is written afterwards."""
