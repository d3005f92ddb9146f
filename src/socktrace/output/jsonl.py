"""JSON Lines output: one record per line (README, "JSON Lines")."""

from __future__ import annotations

import json
import sys

try:
    import orjson
except ImportError:  # a distro Python without it (Debian 12 has no python3-orjson)
    orjson = None
from typing import Any, TextIO


def dumps(rec: dict[str, Any]) -> str:
    """One compact JSON object.  orjson is several times faster than
    json.dumps on the tracer's hot path; both escape control characters
    (\u001b), so comm and command lines are safe in a terminal, and both
    write non-ASCII text as UTF-8."""
    return _dumps_bytes(rec)[:-1].decode()


if orjson is not None:
    _orjson_line = orjson.dumps
    _NEWLINE = orjson.OPT_APPEND_NEWLINE


def _dumps_bytes(rec: dict[str, Any]) -> bytes:
    """The JSON line, newline included, as bytes."""
    if orjson is not None:
        return orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE)
    return (json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


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

    def connections(self, recs: list[dict[str, Any]]) -> None:
        lines = b"".join([_dumps_bytes(rec) for rec in recs] if orjson is None else
                         [_orjson_line(rec, option=_NEWLINE) for rec in recs])
        self.out.write(lines if getattr(self.out, "binary", False) else lines.decode())

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
        self.connections([rec])
