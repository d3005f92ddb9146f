"""Connection records: the JSON Lines contract, shared by every output.

Field names are a contract (README, "JSON Lines"): later consumers rely on
them.  Add fields freely; never rename.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from ..events import Connection, Kind
from ..procinfo import ProcessInfo


@lru_cache(maxsize=4)
def _second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def iso_time(c: Connection) -> str:
    """ISO 8601 UTC with microseconds: 1700000001123456000 ns ->
    '2023-11-14T22:13:21.123456Z' (the seconds part cached: events come in
    bursts within the same second)."""
    sec, ns = divmod(c.time_ns, 1_000_000_000)
    return f"{_second(sec)}.{ns // 1000:06d}Z"


def connection_record(c: Connection, proc: ProcessInfo, user: str | None) -> dict[str, Any]:
    """The record of one connection.

    For an unaccepted connection `c.pid`/`c.comm` are the listener owner's
    (or 0/"" when no listener owner was found).
    """
    rec: dict[str, Any] = {
        "type": c.kind.value,
        "time": iso_time(c),
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
