"""JSON Lines output: one record per line (README, "JSON Lines")."""

from __future__ import annotations

import functools
import json

try:
    import orjson
except ImportError:  # a distro Python without it (Debian 12 has no python3-orjson)
    orjson = None
from typing import Any, TextIO

from ..records import LostRecord, ReadyRecord, Record, SocketRecord, SummaryRecord


def dumps(rec: dict[str, Any]) -> str:
    """One compact JSON object.  orjson is several times faster than
    json.dumps on the tracer's hot path; both escape control characters
    (\u001b), so comm and command lines are safe in a terminal, and both
    write non-ASCII text as UTF-8."""
    return _dumps_bytes(rec)[:-1].decode()


def _stdlib_line(rec: dict[str, Any]) -> bytes:
    return (json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


# The JSON line, newline included, as bytes; chosen once: a partial of
# orjson.dumps is called without a Python frame per record
_dumps_bytes = (functools.partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)
                if orjson is not None else _stdlib_line)


class JsonSink:
    """JSON Lines to a text stream: stdout, or a LogWriter, which it then
    `owns`: it reopens it on SIGHUP and closes it (output.sink.Sink)."""

    def __init__(self, out: TextIO, owns: bool = False):
        self.out = out
        self.owns = owns

    def reopen(self) -> None:
        if self.owns:
            self.out.reopen()

    def close(self) -> None:
        if self.owns:
            self.out.close()
        else:
            self.out.flush()

    def ready(self, rec: ReadyRecord) -> None:
        self._write(rec)
        self.flush()

    def connections(self, recs: list[Record]) -> None:
        lines = b"".join([_dumps_bytes(rec) for rec in recs])
        self.out.write(lines if getattr(self.out, "binary", False) else lines.decode())

    def existing(self, recs: list[SocketRecord]) -> None:
        self.connections(recs)

    def lost(self, rec: LostRecord) -> None:
        self._write(rec)

    def summary(self, rec: SummaryRecord) -> None:
        self._write(rec)
        self.flush()

    def flush(self) -> None:
        self.out.flush()

    def _write(self, rec: Record) -> None:
        self.connections([rec])
