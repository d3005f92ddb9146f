"""The servers' userland (tests/distros/build.py: build_apps), entered as
a chroot on this kernel and in this network namespace, so that socktrace
on this machine traces the servers exactly as it would on the host.

Each test gets its own overlay of the cached tree: what it writes (a fixed
configuration, a PID file, a database) is thrown away with the overlay.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}


class AppRoot:
    """An overlay of `lower` mounted with proc, sys, dev, tmp and run."""

    def __init__(self, lower: Path):
        self.scratch = Path(tempfile.mkdtemp(prefix="socktrace-app.", dir="/var/tmp"))
        self.root = self.scratch / "root"
        for d in ("upper", "work", "root"):
            (self.scratch / d).mkdir()
        self._mounts: list[Path] = []
        self._mount(["-t", "overlay", "overlay", "-o",
                     f"lowerdir={lower},upperdir={self.scratch}/upper,workdir={self.scratch}/work"],
                    self.root)
        self._mount(["-t", "proc", "proc"], self.root / "proc")
        self._mount(["-t", "sysfs", "sys"], self.root / "sys")
        self._mount(["--rbind", "/dev"], self.root / "dev")
        for tmp in ("tmp", "run", "dev/shm"):
            self._mount(["-t", "tmpfs", "tmpfs"], self.root / tmp)
        (self.root / "run/lock").mkdir()   # /var/lock's target, as at boot
        # squid and apache resolve this machine's name; the tree has none
        with open(self.root / "etc/hosts", "a") as f:
            f.write(f"127.0.1.1 {socket.gethostname()}\n")
        self.servers: list[subprocess.Popen] = []

    def _mount(self, args: list[str], target: Path) -> None:
        subprocess.run(["mount", *args, str(target)], check=True)
        self._mounts.append(target)

    def path(self, inside: str) -> Path:
        """A path of the tree, its symbolic links resolved inside it (an
        absolute link must not lead to this machine's own file)."""
        real = subprocess.run(["chroot", str(self.root), "readlink", "-m", inside],
                              capture_output=True, text=True, check=True).stdout.strip()
        return self.root / real.lstrip("/")

    def edit(self, inside: str, old: str, new: str) -> None:
        """Replace `old` (which must be there, once) with `new` in a file."""
        p = self.path(inside)
        text = p.read_text()
        assert text.count(old) == 1, f"{inside}: {text.count(old)} times {old!r}"
        p.write_text(text.replace(old, new))

    def run(self, *cmd: str) -> str:
        r = subprocess.run(["chroot", str(self.root), *cmd], env=ENV, capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd}: {r.returncode}\n{r.stdout}{r.stderr}"
        return r.stdout

    def start(self, *cmd: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """A server in the foreground, in a session of its own; its output
        goes to a file that assertions quote."""
        log = open(self.scratch / f"server{len(self.servers)}.log", "w+")
        proc = subprocess.Popen(["chroot", str(self.root), *cmd], env={**ENV, **(env or {})},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log = log
        self.servers.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 3) -> None:
        """SIGTERM to the server's session and to every other process in
        the tree (a second server, workers outliving their master), as
        systemd stops a unit; SIGKILL to what is left after `timeout` (squid
        waits its shutdown_lifetime, 30 s, for clients that are gone)."""
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in self._pids():
            _wait_gone(pid, timeout)

    def _pids(self) -> list[int]:
        """Every process whose root is this overlay."""
        pids = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if os.readlink(f"/proc/{entry.name}/root") == str(self.root):
                        pids.append(int(entry.name))
                except OSError:
                    pass
        return pids

    def close(self) -> None:
        for _ in range(50):
            pids = self._pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for proc in self.servers:
            proc.wait()
            proc.log.close()
        for target in reversed(self._mounts):
            subprocess.run(["umount", "-l", str(target)], check=False)
        subprocess.run(["rm", "-rf", str(self.scratch)], check=False)

    def log_of(self, proc: subprocess.Popen) -> str:
        proc.log.flush()
        proc.log.seek(0)
        return proc.log.read()[-3000:]


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
