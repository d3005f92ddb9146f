"""The stop and reopen flags under real signals, delivered at the moments
that deadlocked threading.Event (signals.py)."""

import os
import signal
import subprocess
import sys
import threading
import time

from socktrace.signals import Flag, set_on

# The handler runs while the main thread is inside the flag's own methods:
# sys.settrace fires the signal at every line of them, so it lands in every
# gap a threading.Event would have held its lock in.
_EVERY_LINE = r"""
import os, signal, sys
from socktrace.signals import Flag, set_on
flag = Flag()
set_on(flag, signal.SIGUSR1)
kill = lambda: os.kill(os.getpid(), signal.SIGUSR1)
def tracer(frame, event, arg):
    # not in the handler and set(): that would recurse forever
    if frame.f_code.co_filename.endswith("signals.py") and \
            frame.f_code.co_name not in ("set", "<lambda>"):
        if event == "line":
            kill()
        return tracer
sys.settrace(tracer)
for _ in range(50):
    flag.wait(5); assert flag.is_set()
    flag.clear(); flag.set(); flag.wait(5)
    flag.clear()
sys.settrace(None)
print("ok")
"""


def test_a_signal_at_every_line_of_the_flags_methods_never_deadlocks():
    r = subprocess.run([sys.executable, "-c", _EVERY_LINE], capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "ok\n", "")


def test_threading_event_deadlocks_where_the_flag_does_not():
    """Why the flag exists: the same delivery deadlocks an Event."""
    code = ("import os, signal, threading\n"
            "e = threading.Event()\n"
            "signal.signal(signal.SIGUSR1, lambda *_: e.set())\n"
            "with e._cond:\n"
            "    os.kill(os.getpid(), signal.SIGUSR1)\n")
    try:
        subprocess.run([sys.executable, "-c", code], timeout=2)
        deadlocked = False
    except subprocess.TimeoutExpired:
        deadlocked = True
    assert deadlocked


def test_a_signal_wakes_a_waiter_at_once():
    flag = Flag()
    old = signal.getsignal(signal.SIGUSR1)
    try:
        set_on(flag, signal.SIGUSR1)
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        t0 = time.monotonic()
        assert flag.wait(30)
        assert time.monotonic() - t0 < 10
    finally:
        signal.signal(signal.SIGUSR1, old)
        flag.close()


def test_another_thread_wakes_a_waiter_and_clear_rearms():
    flag = Flag()
    threading.Timer(0.05, flag.set).start()
    assert flag.wait(30)
    flag.clear()
    assert not flag.wait(0.05)
    for _ in range(10000):  # more than a pipe holds
        flag.set()
    flag.clear()
    assert not flag.is_set() and not flag.wait(0)
    flag.close()
