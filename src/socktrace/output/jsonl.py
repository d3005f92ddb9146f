"""JSON Lines output: one record per line (README, "JSON Lines")."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


def dumps(rec: dict[str, Any]) -> str:
    # json escapes control characters (\u001b), so comm/cmdline are safe
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False)


class JsonSink:
    """JSON Lines to a text stream: stdout, or a LogWriter."""

    def __init__(self, out: TextIO):
        self.out = out

    def reopen(self) -> None:
        if hasattr(self.out, "reopen"):
            self.out.reopen()

    def close(self) -> None:
        if hasattr(self.out, "close") and self.out not in (sys.stdout, sys.stderr):
            self.out.close()

    def ready(self, rec: dict[str, Any]) -> None:
        self._write(rec)
        self.flush()

    def connection(self, rec: dict[str, Any]) -> None:
        self._write(rec)

    def existing(self, snap, socks, cache) -> None:
        """The mapped connections that existed before tracing began."""
        from ..snapshot import record
        for s in socks:
            self._write({**record(s, cache.user(s.uid)), "type": "existing"})

    def lost(self, rec: dict[str, Any]) -> None:
        self._write(rec)

    def summary(self, rec: dict[str, Any]) -> None:
        self._write(rec)
        self.flush()

    def flush(self) -> None:
        self.out.flush()

    def _write(self, rec: dict[str, Any]) -> None:
        self.out.write(dumps(rec) + "\n")
