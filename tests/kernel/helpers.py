"""Helpers for the tests that run socktrace against the kernel: the
socktrace process, helper peer processes, and what the socket API says
about a socket.  Shared by tests/kernel and the VM suite (tests/vm)."""

import json
import os
from collections import Counter
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

# the installed command; the test VM runs it from the project disk instead
SOCKTRACE = os.environ.get("SOCKTRACE") or str(Path(sys.executable).parent / "socktrace")
PEER = str(Path(__file__).parent / "peer.py")


class Socktrace:
    """`socktrace --json ARGS` in the background, its records collected
    (`command`: how socktrace is run, e.g. from its container image)."""

    def __init__(self, *args, ready_timeout=60, preexec_fn=None, command=(SOCKTRACE,)):
        self.proc = subprocess.Popen([*command, "--json", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
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

    def wait_for(self, pred, count=1, timeout=30):
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

    def stop(self, sig=signal.SIGINT, timeout=None):
        # generous: detaching the probes takes the kernel about 70 ms each
        # here, seconds under the test VMs' emulation.  (Stops that never
        # came were a deadlock in the signal handler: signals.py.)
        timeout = timeout or 120
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        self.stderr = self.proc.stderr.read()
        return rc


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


def burst(peer, n: int, wait: bool = True):
    """A dual-stack server (peer.py serve) and a client making `n` short
    IPv4 connections to it (peer.py burst).  With `wait`, return once both
    are done: (server, client, port, Counter of the client's ports: loopback
    reuses ports, tcp_tw_reuse=2)."""
    server = peer("serve", "6", "0", str(n))
    port = server.read()["port"]
    client = peer("burst", str(port), str(n))
    ports = None
    if wait:
        assert client.read() == {"done": n}
        ports = Counter(client.read()["ports"])
        assert server.read() == {"done": True}
    return server, client, port, ports


def listener(family=socket.AF_INET6, v6only=0, host=None, backlog=64):
    s = socket.socket(family)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((host or ("::" if family == socket.AF_INET6 else "127.0.0.1"), 0))
    s.listen(backlog)
    return s


def as_seen(sock):
    """What socktrace should report for `sock`, from the socket API itself."""
    local, peer = sock.getsockname(), sock.getpeername()
    mapped = sock.family == socket.AF_INET6 and peer[0].startswith("::ffff:")
    strip = (lambda a: a[len("::ffff:"):]) if mapped else (lambda a: a)
    return {"sock_family": sock.family.name, "mapped": mapped,
            "laddr": strip(local[0]), "lport": local[1], "raddr": strip(peer[0]), "rport": peer[1]}


def me():
    with open("/proc/self/cgroup") as f:
        v2 = re.search(r"^0::(.*)$", f.read(), re.M)
    cgroup = v2.group(1) if v2 else None
    return {"pid": os.getpid(), "tid": threading.get_native_id(), "uid": os.getuid(),
            "user": "root", "comm": open(f"/proc/self/task/{threading.get_native_id()}/comm").read().strip(),
            "process": open("/proc/self/comm").read().strip(),
            "netns": os.stat("/proc/self/ns/net").st_ino, "cgroup": cgroup}


def check(rec, sock, fields=None, **extra):
    """`rec` is what socktrace must report for `sock`, made by this process
    (only the `fields` of me(), when given)."""
    mine = me() if fields is None else {k: v for k, v in me().items() if k in fields}
    want = {**as_seen(sock), **mine, **extra}
    assert {k: rec.get(k) for k in want} == want
    if fields is None:
        assert rec["cmdline"] == " ".join(open("/proc/self/cmdline", "rb").read().decode().split("\0")).strip()


def ports(sock):
    """The ports that tell this connection from every other one on the
    machine (other suites trace it at the same time)."""
    return {"lport": sock.getsockname()[1], "rport": sock.getpeername()[1]}


def one(tracer, type_, timeout=30, **match):
    """The first record of `type_` whose fields have the values of `match`."""
    def pred(r):
        return r["type"] == type_ and all(r.get(k) == v for k, v in match.items())
    return tracer.wait_for(pred, timeout=timeout)[0]
