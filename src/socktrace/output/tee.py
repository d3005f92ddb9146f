"""Send every record to several outputs: the live table and the log file."""

from __future__ import annotations

import contextlib

from ..records import ConnectionRecord, LostRecord, ReadyRecord, SocketRecord, SummaryRecord
from .sink import Sink


class Tee:
    """Sinks fanned out, in order: a Sink itself."""

    def __init__(self, *sinks: Sink):
        for s in sinks:
            if not isinstance(s, Sink):
                raise TypeError(f"{type(s).__name__} does not implement output.sink.Sink")
        self.sinks = sinks

    def ready(self, rec: ReadyRecord) -> None:
        for s in self.sinks:
            s.ready(rec)

    def existing(self, recs: list[SocketRecord]) -> None:
        for s in self.sinks:
            s.existing(recs)

    def connections(self, recs: list[ConnectionRecord]) -> None:
        for s in self.sinks:
            s.connections(recs)

    def lost(self, rec: LostRecord) -> None:
        for s in self.sinks:
            s.lost(rec)

    def summary(self, rec: SummaryRecord) -> None:
        for s in self.sinks:
            s.summary(rec)

    def flush(self) -> None:
        for s in self.sinks:
            s.flush()

    def reopen(self) -> None:
        for s in self.sinks:
            s.reopen()

    def close(self) -> None:
        """Close every sink, in order, even when one of them fails."""
        with contextlib.ExitStack() as stack:
            for s in reversed(self.sinks):
                stack.callback(s.close)
