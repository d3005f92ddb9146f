"""`socktrace top` as an output (output.sink.Sink): records go into a
top.TopModel; once an interval the screen is drawn, on a terminal through
curses or, with --batch, as plain blocks on stdout (as `top -b`).

No thread: the tracer calls `flush` after every read of the kernel's buffer
(at least every 100 ms), and that is when keys are read and the screen is
redrawn.  curses (Python's standard library, over the system's ncurses) is
all this needs: a full-screen page, keys without Enter, resizes (ncurses
turns SIGWINCH into KEY_RESIZE), any terminal terminfo knows, over ssh; no
dependency to install in a container image or on an old distribution.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, List, Optional, Protocol, TextIO, Tuple

from ..records import ConnectionRecord, LostRecord, ReadyRecord, SocketRecord, SummaryRecord
from ..signals import Flag
from ..top import COLUMNS, VIEW_KEYS, Queues, TopModel
from . import top_text
from .table import summary_text

QUIT_KEYS = ("q", "Q")


class Screen(Protocol):
    """Where the lines go: a curses screen or a stream."""

    def size(self) -> Tuple[int, int]:
        """(columns, lines); lines 0: no limit."""

    def draw(self, lines: List[str], titles_at: int) -> None: ...

    def keys(self) -> List[str]:
        """The keys pressed since the last call ("resize" for a resize)."""

    def close(self) -> None: ...


class CursesScreen:
    """The full-screen view.  Raises TerminalError when the terminal cannot
    be used (no terminfo entry for $TERM, say)."""

    def __init__(self) -> None:
        import curses
        self.curses = curses
        self.repaint = False
        try:
            self.scr = curses.initscr()
        except curses.error as exc:
            raise TerminalError(f"cannot use the terminal ({exc}): check $TERM, or use --batch") \
                from None
        curses.noecho()
        curses.cbreak()        # keys without Enter; Ctrl-C stays SIGINT: a normal stop
        self.scr.keypad(True)
        self.scr.nodelay(True)
        try:
            curses.curs_set(0)
        except curses.error:   # a terminal that cannot hide its cursor
            pass
        self.draw(["socktrace top: loading the probes ..."], -1)

    def size(self) -> Tuple[int, int]:
        """The terminal's size now.  Asked of the terminal itself: ncurses
        learns of a resize only when a SIGWINCH reaches it before getch, and
        a missed one left the old screen's remnants on the new one (seen in
        tmux); a changed size is then a full repaint."""
        known = self.scr.getmaxyx()
        try:
            cols, lines = os.get_terminal_size(sys.__stdout__.fileno())
        except (OSError, AttributeError, ValueError):
            return known[1], known[0]
        if (lines, cols) != known:
            self.curses.resizeterm(lines, cols)
            self.repaint = True
        return cols, lines

    def draw(self, lines: List[str], titles_at: int) -> None:
        c = self.curses
        cols, rows = self.size()
        if self.repaint:     # after a resize: every cell again, not the changes
            self.repaint = False
            self.scr.clear()
        else:
            self.scr.erase()
        for i, line in enumerate(lines[:rows]):
            attr = c.A_REVERSE if i == titles_at else c.A_NORMAL
            try:   # the bottom-right cell cannot be written without an error
                self.scr.addnstr(i, 0, line.ljust(cols) if i == titles_at else line, cols, attr)
            except c.error:
                pass
        self.scr.refresh()

    def keys(self) -> List[str]:
        out = []
        while True:
            k = self.scr.getch()
            if k == -1:
                return out
            if k == self.curses.KEY_RESIZE:
                self.repaint = True
                out.append("resize")
            elif 0 <= k < 256:
                out.append(chr(k))

    def close(self) -> None:
        c = self.curses
        self.scr.keypad(False)
        c.nocbreak()
        c.echo()
        c.endwin()


class BatchScreen:
    """--batch: each refresh a block of lines and a blank line, every row."""

    def __init__(self, out: TextIO, width: int = 100):
        self.out = out
        self.width = width

    def size(self) -> Tuple[int, int]:
        return self.width, 0

    def draw(self, lines: List[str], titles_at: int) -> None:
        self.out.write("".join(line.rstrip() + "\n" for line in lines) + "\n")
        self.out.flush()

    def keys(self) -> List[str]:
        return []

    def close(self) -> None:
        self.out.flush()


class TerminalError(Exception):
    """The terminal cannot show the full-screen view: the reason."""


class TopSink:
    """The model fed with records, drawn every `interval` seconds;
    `q` sets `stop`; the summary is printed on stderr once the screen is
    closed."""

    def __init__(self, screen: Screen, stop: Flag, model: TopModel, interval: float = 1.0,
                 queues: Callable[[], Queues] = dict, iterations: Optional[int] = None,
                 err: TextIO = sys.stderr, clock: Callable[[], float] = time.monotonic):
        self.screen = screen
        self.stop = stop
        self.model = model
        self.interval = interval
        self.queues = queues
        self.iterations = iterations
        self.err = err
        self.clock = clock
        self.tracing = top_text.Tracing(interval=interval)
        self.started: Optional[float] = None
        self.next_draw = float("inf")
        self.frame = None
        self._summary: Optional[SummaryRecord] = None
        self._closed = False

    def ready(self, rec: ReadyRecord) -> None:
        self.tracing = top_text.Tracing(rec["probe"], rec["buffer"], self.interval)
        self.started = self.clock()
        self.model.restart(self.started)
        self._refresh(self.started)

    def existing(self, recs: List[SocketRecord]) -> None:
        """The connections open before tracing are not new: no rate."""

    def connections(self, recs: List[ConnectionRecord]) -> None:
        self.model.add(recs)

    def lost(self, rec: LostRecord) -> None:
        self.model.lost = rec["lost"]

    def summary(self, rec: SummaryRecord) -> None:
        self._summary = rec

    def flush(self) -> None:
        if self.started is None:
            return
        now = self.clock()
        keys = self.screen.keys()
        for k in keys:
            self._key(k)
        if keys or now >= self.next_draw:
            self._refresh(now)

    def _key(self, k: str) -> None:
        m = self.model
        if k in QUIT_KEYS:
            self.stop.set()
        elif k in VIEW_KEYS:
            m.set_view(VIEW_KEYS[k])
        elif k == "<":
            m.sort = (m.sort - 1) % len(COLUMNS)
        elif k == ">":
            m.sort = (m.sort + 1) % len(COLUMNS)
        elif k == "r":
            m.reverse = not m.reverse

    def _refresh(self, now: float) -> None:
        """Close the interval, draw it, and count the iterations (-n)."""
        self.frame = self.model.frame(now, self._queues())
        self._draw()
        self.next_draw = now + self.interval
        if self.iterations is not None and now > self.started:
            self.iterations -= 1
            if self.iterations <= 0:
                self.stop.set()

    def _queues(self) -> Queues:
        try:
            return self.queues()
        except OSError:    # a namespace that vanished while it was read: next time
            return {}

    def _draw(self) -> None:
        cols, rows = self.screen.size()
        lines, at = top_text.screen(self.frame, self.tracing, time.strftime("%H:%M:%S"),
                                    self.clock() - self.started, cols, rows, self.model.reverse)
        self.screen.draw(lines, at)

    def reopen(self) -> None:
        """Nothing to reopen: a terminal."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.screen.close()
        if self._summary is not None:
            self.err.write(summary_text(self._summary))
            self.err.flush()
