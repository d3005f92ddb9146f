"""The interface every output implements: the table, JSON Lines (stdout or
a log file), the fan-out to several of them, and any output to come.

A sink receives finished records (records.py) in this order: `ready` once,
`existing` once (unless --no-snapshot), then `connections` and `lost` as
they come, with `flush` after each read of the kernel's buffer and
`reopen` on SIGHUP; `summary` once at the end, then `close`.
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
        """Release files; nothing is written afterwards."""
