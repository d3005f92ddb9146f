"""Flags that signal handlers set: stop (SIGINT, SIGTERM) and reopen (SIGHUP).

A Python signal handler runs in the main thread between two of its
bytecodes.  `threading.Event.set()` takes the lock that `Event.wait()`
holds for a few bytecodes around each wait, so a Ctrl-C landing there
deadlocked socktrace for good: one stop in a few hundred under emulation
in the test VMs, and no second Ctrl-C could help.  Python's documentation
says as much ("Synchronization primitives such as threading.Lock should not
be used within signal handlers",
https://docs.python.org/3/library/signal.html#note-on-signal-handlers-and-exceptions).

A `Flag` is a plain attribute and a byte written to a pipe: nothing a
handler does can wait on the thread it interrupted.
"""

from __future__ import annotations

import os
import select
import signal


class Flag:
    """Set from a signal handler, another thread or the main thread; waited
    on by the main thread.

    >>> f = Flag()
    >>> f.wait(0.01)
    False
    >>> f.set(); f.is_set(), f.wait(10)
    (True, True)
    >>> f.clear(); f.is_set()
    False
    """

    def __init__(self) -> None:
        self._set = False
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set(self) -> None:
        # one byte per change: a storm of signals cannot fill the pipe or
        # keep clear() draining it
        was, self._set = self._set, True
        if not was:
            try:
                os.write(self._w, b"!")
            except BlockingIOError:  # the pipe is full: a waiter wakes anyway
                pass

    def is_set(self) -> bool:
        return self._set

    def clear(self) -> None:
        # the flag first: a set() in between is then seen by is_set()
        self._set = False
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float | None = None) -> bool:
        """Until the flag is set or `timeout` seconds pass; whether it is.
        A set() after the check below has written to the pipe, so select()
        returns at once."""
        if not self._set:
            select.select([self._r], [], [], timeout)
        return self._set

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


def set_on(flag: Flag, *signals: signal.Signals) -> None:
    """Make each of `signals` set `flag`."""
    for sig in signals:
        signal.signal(sig, lambda *_: flag.set())
