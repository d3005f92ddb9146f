"""Connection records: the JSON Lines contract, shared by every output.

Field names are a contract (README, "JSON Lines"): later consumers rely on
them.  Add fields freely; never rename.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from ..events import Connection, Kind
from ..procinfo import ProcessInfo


@lru_cache(maxsize=4)
def _second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def iso_time(time_ns: int) -> str:
    """ISO 8601 UTC with microseconds: 1700000001123456000 ->
    '2023-11-14T22:13:21.123456Z' (the seconds part cached: events come in
    bursts within the same second)."""
    sec, ns = divmod(time_ns, 1_000_000_000)
    return "%s.%06dZ" % (_second(sec), ns // 1000)  # faster than an f-string with a format spec


def parse_iso_time(text: str) -> datetime:
    """The inverse of iso_time: '2023-11-14T22:13:21.123456Z' ->
    datetime(2023, 11, 14, 22, 13, 21, 123456, tzinfo=timezone.utc).
    datetime.fromisoformat() takes the 'Z' only from Python 3.11 on
    (https://github.com/python/cpython/issues/80010).

    >>> parse_iso_time(iso_time(1700000001123456000)) == datetime.fromtimestamp(1700000001.123456, timezone.utc)
    True
    """
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def connection_record(c: Connection, proc: ProcessInfo, user: str | None) -> dict[str, Any]:
    """The record of one connection.

    For an unaccepted connection `c.pid`/`c.comm` are the listener owner's
    (or 0/"" when no listener owner was found).
    """
    rec: dict[str, Any] = {
        "type": c.kind.value,
        "time": iso_time(c.time_ns),
        "pid": c.pid or None,
        "tid": c.tid or None,
        "comm": c.comm or None,
        "uid": c.uid,
        "user": user,
        "cmdline": proc.cmdline,
        "cgroup": proc.cgroup,
        "cgroup_id": c.cgroup_id or None,
        "netns": c.netns,
        "sock_family": c.sock_family,
        "mapped": c.mapped,
        "laddr": c.laddr,
        "lport": c.lport,
        "raddr": c.raddr,
        "rport": c.rport,
    }
    if c.kind is not Kind.CONNECT:
        rec["v6only"] = c.v6only
    return rec


def record_like(template: dict[str, Any], time_ns: int, lport: int, rport: int) -> dict[str, Any]:
    """The record of a connection that differs from the one of `template`
    only in its time and ports (see events.origin): a copy, not a rebuild.

    >>> record_like({"type": "accept", "time": "", "lport": 80, "rport": 1}, 0, 80, 2)
    {'type': 'accept', 'time': '1970-01-01T00:00:00.000000Z', 'lport': 80, 'rport': 2}
    """
    rec = template.copy()
    rec["time"] = iso_time(time_ns)
    rec["lport"] = lport
    rec["rport"] = rport
    return rec


def ready_record(probe: str, skipped: list[tuple[str, str]], offsets_from: str,
                 buffer: str) -> dict[str, Any]:
    return {"type": "ready", "probe": probe,
            "skipped": {mode: reason for mode, reason in skipped},
            "offsets": offsets_from, "buffer": buffer}


def lost_record(lost: int, pending_full: int) -> dict[str, Any]:
    return {"type": "lost", "lost": lost, "unaccepted_untracked": pending_full}


def summary_record(events: int, mapped: int, lost: int, pending_full: int,
                   by_type: dict[str, int]) -> dict[str, Any]:
    return {"type": "summary", "events": events, "mapped": mapped, "lost": lost,
            "unaccepted_untracked": pending_full, "by_type": by_type}
