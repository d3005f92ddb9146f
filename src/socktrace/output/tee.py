"""Send every record to several outputs: the live table and the log file."""

from __future__ import annotations


class Tee:
    """The output interface (ready, existing, connections, lost, summary,
    flush, reopen, close), fanned out; outputs lacking a method skip it."""

    def __init__(self, *sinks):
        self.sinks = sinks

    def connections(self, recs) -> None:
        for sink in self.sinks:
            sink.connections(recs)

    def _all(self, name: str, *args) -> None:
        for sink in self.sinks:
            method = getattr(sink, name, None)
            if method is not None:
                method(*args)

    def ready(self, rec) -> None:
        self._all("ready", rec)

    def existing(self, snap, socks, cache) -> None:
        self._all("existing", snap, socks, cache)

    def lost(self, rec) -> None:
        self._all("lost", rec)

    def summary(self, rec) -> None:
        self._all("summary", rec)

    def flush(self) -> None:
        self._all("flush")

    def reopen(self) -> None:
        self._all("reopen")

    def close(self) -> None:
        self._all("close")
