"""Real BPF, real sockets: socktrace runs as a subprocess against this kernel.

These tests need root (CI runs as root); they fail, never skip, without it.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# the installed command; the test VM runs it from the project disk instead
SOCKTRACE = os.environ.get("SOCKTRACE") or str(Path(sys.executable).parent / "socktrace")
PEER = str(Path(__file__).parent / "peer.py")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/kernel" in str(item.fspath):
            item.add_marker(pytest.mark.root)


@pytest.fixture(autouse=True)
def _needs_root():
    assert os.geteuid() == 0, "the kernel tests load BPF programs: run them as root (make test)"


class Socktrace:
    """`socktrace --json ARGS` in the background, its records collected."""

    def __init__(self, *args, ready_timeout=60):
        self.proc = subprocess.Popen([SOCKTRACE, "--json", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.ready = self.wait_for(lambda r: r["type"] == "ready", timeout=ready_timeout)[0]

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def records(self):
        with self._cond:
            return [json.loads(line) for line in self.lines]

    def wait_for(self, pred, count=1, timeout=15):
        """Records matching `pred`, once there are at least `count`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in map(json.loads, self.lines) if pred(r)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"{len(found)}/{count} matching records; socktrace "
                        f"{'exited ' + str(self.proc.returncode) if self.proc.poll() is not None else 'running'}"
                        f"; stderr: {self.stderr_now()}")
                self._cond.wait(min(left, 0.2))

    def stderr_now(self):
        return "" if self.proc.poll() is None else self.proc.stderr.read()

    def stop(self, sig=signal.SIGINT, timeout=30):
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        self.stderr = self.proc.stderr.read()
        return rc


@pytest.fixture
def socktrace():
    started = []

    def start(*args):
        st = Socktrace(*args)
        started.append(st)
        return st
    yield start
    for st in started:
        if st.proc.poll() is None:
            st.proc.kill()
            st.proc.wait()


class Peer:
    """A helper process (peer.py) that prints JSON lines about what it did."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, PEER, *args], stdout=subprocess.PIPE,
                                     stdin=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def read(self):
        line = self.proc.stdout.readline()
        assert line, f"peer {self.proc.args} exited {self.proc.wait()}"
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def peer():
    peers = []

    def start(*args):
        p = Peer(*args)
        peers.append(p)
        return p
    yield start
    for p in peers:
        p.close()
