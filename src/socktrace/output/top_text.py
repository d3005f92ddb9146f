"""`socktrace top`'s screen as text lines (pure): the header, the column
titles, one line per row, cut to the terminal's width and height.  The
curses screen and --batch print the same lines (output/top_screen.py).

    socktrace top - 08:04:04, up 0:00:08, probe tracepoint (ring buffer), every 1s
    Events: 14.6k/s (80267 in all), lost 0; failed connects 7.4/s
    Connections: 14.6k/s: IPv4 7.3k, IPv4 MAPPED 7.3k, IPv6 14.8
    View: listener (l p c a), sort: CONN/s (< > r), q: quit

    LISTENER                 DS CONN/s  IPv4 MAPPED  IPv6  FAIL QUEUED UDP/s BYTES/s
    18081/tcp6 nginx         DS   7.3k     0   7.3k   7.4     0      0     0       0
    >18081/tcp ab                 7.3k  7.3k      0     0     0      0     0       0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

from ..top import BYTES, COLUMNS, QUEUED, Frame
from .escape import escape
from .names import size

# what the first column is titled in each view
KEY_TITLES = {"listener": "LISTENER", "process": "PID/PROCESS@CONTAINER",
              "container": "CONTAINER/SERVICE", "peer": "PEER"}
# each number's width (6: 35.0k, 1.2M); CONN/s and MAPPED, the point, are the widest
WIDTHS = (6, 5, 6, 5, 5, 6, 5, 7)
_FIXED = 1 + 2 + sum(w + 1 for w in WIDTHS)   # right of the key: DS and the numbers
MIN_KEY = 12
HEADER_LINES = 5   # above the column titles


@dataclass(frozen=True)
class Tracing:
    """What the header says of the run: set once tracing is ready."""
    probe: str = "?"
    buffer: str = "?"
    interval: float = 1.0   # -i: the refresh asked for (a frame's own may be shorter: a key)


def number(x: float) -> str:
    """A rate in at most 5 characters, as top shrinks its numbers.

    >>> [number(v) for v in (0, 0.5, 12.34, 999.4, 35012, 1.26e6, 2.5e9)]
    ['0', '0.5', '12.3', '999', '35.0k', '1.3M', '2.5G']
    """
    if x == 0:
        return "0"
    if x < 100:
        return f"{x:.1f}".removesuffix(".0") if x != int(x) else str(int(x))
    for unit, scale in (("", 1), ("k", 1e3), ("M", 1e6)):
        if x < 1000 * scale:
            return f"{x / scale:.0f}" if not unit else f"{x / scale:.1f}{unit}"
    return f"{x / 1e9:.1f}G"


def duration(seconds: float) -> str:
    """Elapsed time as top's "up".

    >>> duration(312), duration(90061)
    ('0:05:12', '1 day, 1:01:01')
    """
    s = int(seconds)
    days, s = divmod(s, 86400)
    clock = f"{s // 3600}:{s // 60 % 60:02}:{s % 60:02}"
    return f"{days} day{'s' if days != 1 else ''}, {clock}" if days else clock


def header(f: Frame, tracing: Tracing, clock: str, up: float, reverse: bool) -> List[str]:
    fam = f.by_family
    return [
        f"socktrace top - {clock}, up {duration(up)}, probe {tracing.probe} ({tracing.buffer}), "
        f"every {tracing.interval:g}s",
        f"Events: {number(f.events_per_s)}/s ({f.events} in all), lost {f.lost}; "
        f"failed connects {number(f.failed_per_s)}/s",
        f"Connections: {number(f.connections_per_s)}/s: IPv4 {number(fam['ipv4'])}, "
        f"IPv4 MAPPED {number(fam['mapped'])}, IPv6 {number(fam['ipv6'])}",
        f"View: {f.view} (l p c a), sort: {COLUMNS[f.sort]}{' reversed' if reverse else ''} "
        f"(< > r), q: quit",
        "",
    ]


def titles(view: str, width: int) -> str:
    kw = key_width(width)
    return f"{KEY_TITLES[view][:kw]:<{kw}} DS " + " ".join(
        f"{c:>{w}}" for c, w in zip(COLUMNS, WIDTHS))


def key_width(width: int) -> int:
    return max(width - _FIXED, MIN_KEY)


def row_line(r, width: int) -> str:
    """>>> from socktrace.top import Row
    >>> r = Row("8080/tcp6 500/nginx\\x1b]0;", rates=[3.0, 0, 3.0, 0, 0, 2, 0, 1536.0], queued=2)
    >>> row_line(r, 80)
    '8080/tcp6 500/nginx\\\\x1b+         3     0      3     0     0      2     0    1.5K'
    >>> row_line(Row("x", dual_stack=True, rates=[0.0] * 8), 60)[:15]
    'x            DS'
    """
    kw = key_width(width)
    key = escape(r.key)
    if len(key) > kw:
        key = key[:kw - 1] + "+"
    nums = " ".join(f"{size(int(v)) if i == BYTES else str(r.queued) if i == QUEUED else number(v):>{w}}"
                    for i, (v, w) in enumerate(zip(r.rates, WIDTHS)))
    return f"{key:<{kw}} {'DS' if r.dual_stack else '  '} {nums}"


def screen(f: Frame, tracing: Tracing, clock: str, up: float, width: int, height: int,
           reverse: bool = False) -> Tuple[List[str], int]:
    """The lines of one refresh, cut to `width` x `height` (height 0: every
    row, as top -b), and the index of the column titles' line."""
    lines = header(f, tracing, clock, up, reverse)
    at = len(lines)
    lines.append(titles(f.view, width))
    rows = f.rows if height <= 0 else f.rows[:max(height - len(lines), 0)]
    lines += [row_line(r, width) for r in rows]
    if height > 0:
        lines = lines[:height]
    return [line[:width] for line in lines], at
