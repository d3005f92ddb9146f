"""Docker's daemon (Debian's docker.io) for the container tests: started
here when it does not answer (no systemd runs on this machine), with the
cgroupfs driver, and left running as the machine's daemon."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

DOCKER = "/usr/bin/docker"       # docker.io's client (the daemon's own version)
DOCKERD = ["/usr/sbin/dockerd", "--exec-opt", "native.cgroupdriver=cgroupfs"]
LOG = Path("/var/log/socktrace-tests-dockerd.log")


def docker(*args: str, timeout: float = 120, check: bool = True, stdin=None) -> str:
    r = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, stdin=stdin)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: rc {r.returncode}: {r.stderr.strip()}")
    return r.stdout.strip()


def answers() -> bool:
    return subprocess.run([DOCKER, "info"], capture_output=True, timeout=30).returncode == 0


def ensure_dockerd(timeout: float = 60) -> None:
    if answers():
        return
    with open(LOG, "ab") as log:
        subprocess.Popen(DOCKERD, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.monotonic() + timeout
    while not answers():
        if time.monotonic() > deadline:
            raise AssertionError(f"dockerd did not start: {LOG.read_text()[-2000:]}")
        time.sleep(0.5)
