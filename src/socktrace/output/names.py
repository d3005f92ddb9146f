"""How the text outputs name processes and sizes: one form for the table
and the report."""

from __future__ import annotations

from typing import Optional, Sequence

from .escape import escape

PIDS_SHOWN = 4


def pid_list(pids: Sequence[Optional[int]], most: int = PIDS_SHOWN) -> str:
    """Pids as one short word: the first `most`, then how many more.

    >>> pid_list([7]), pid_list([]), pid_list([1, 2, 3, 4, 5, 6])
    ('7', '?', '1,2,3,4,+2')
    """
    shown = ",".join(str(p) for p in pids[:most] if p is not None) or "?"
    return shown + (f",+{len(pids) - most}" if len(pids) > most else "")


def pid_name(pids: Sequence[Optional[int]], name: Optional[str]) -> str:
    """netstat's PID/Program name, for one process or forked workers.

    >>> pid_name([500, 501], "nginx"), pid_name([], None)
    ('500,501/nginx', '?/?')
    """
    return f"{pid_list(pids)}/{escape(name or '?')}"


def size(n: int) -> str:
    """Bytes as ls -h shows them.

    >>> size(512), size(1536), size(5 * 2**30)
    ('512', '1.5K', '5.0G')
    """
    for unit in ("", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n}" if not unit else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")
