"""Send every record to several outputs: the live table and the log file."""

from __future__ import annotations

from typing import Any


class Tee:
    def __init__(self, *sinks):
        self.sinks = sinks

    def __getattr__(self, name: str):
        def call(*args: Any) -> None:
            for sink in self.sinks:
                method = getattr(sink, name, None)
                if method is not None:
                    method(*args)
        return call
