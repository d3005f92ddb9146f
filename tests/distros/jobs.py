"""The matrix's long jobs, started in the background when pytest has
collected the tests that need them, so that images build and VMs boot while
this machine's own tests run.

Each release is built once (build.py); then its chroot suite, each of its
VM kernels and, for bookworm, the provisioning test and the container
images (tests/containers) run.  The Vagrant demo (tests/vagrant) builds
its own box.  Threads only start processes: two at a time, as the machine
has 2 cores (a VM under emulation keeps one busy, thread=single), the
ready job with the longest work still behind it first (COST), so that the
short chroot suites fill the end rather than one long VM running alone.
"""

from __future__ import annotations

import heapq
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from build import CACHE, HERE, TOP, build, build_apps
from matrix import Kernel, Release

WORKERS = 2


@dataclass
class Result:
    rc: int
    output: str
    seconds: float
    sections: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # VM: config -> (rc, out, s)


def _log(name: str, text: str) -> None:
    (CACHE / "logs").mkdir(parents=True, exist_ok=True)
    (CACHE / "logs" / f"{name}.log").write_text(text)


_running: set[subprocess.Popen] = set()   # killed when the session ends early


def _process(name: str, cmd: list[str], timeout: float) -> Result:
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)
    _running.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        out = proc.communicate()[0] + f"\n[timed out after {timeout} s]"
    finally:
        _running.discard(proc)
    _log(name, out)
    return Result(proc.returncode, out, time.monotonic() - t0)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def userland(rel: Release, rootfs: Path) -> Result:
    """tests/distros/userland-suite.sh in the release's chroot, on this kernel."""
    return _process(f"userland-{rel.name}", [str(HERE / "in-chroot.sh"), str(rootfs), "sh",
                                            "/socktrace/tests/distros/userland-suite.sh"], 1200)


def provision_without_headers(rel: Release, rootfs: Path) -> Result:
    """vagrant/provision.sh as `vagrant up` runs it, for this machine's kernel
    (whose headers no mirror has), then socktrace on a mapped connection."""
    return _process(f"provision-{rel.name}", [str(HERE / "in-chroot.sh"), str(rootfs), "sh",
                                             "/socktrace/tests/distros/provision-suite.sh"], 1200)


def container_images(rel: Release, rootfs: Path) -> Result:
    """tests/containers/images.py: the release's tree as a base image,
    socktrace's image from the Containerfile on it (tests/kernel/test_containers.py)."""
    return _process(f"images-{rel.name}", [sys.executable, str(TOP / "tests/containers/images.py"),
                                          str(rootfs)], 900)


def vagrant_demo() -> Result:
    """tests/vagrant/vagrant_up.py: `vagrant up` (vagrant-libvirt) from a
    box built here, vagrant/README.md's demo through `vagrant ssh`, destroy."""
    r = _process("vagrant", [sys.executable, str(TOP / "tests/vagrant/vagrant_up.py")], 3000)
    r.output = r.output.replace("\r", "")
    for m in re.finditer(r"SOCKTRACE-VAGRANT-BEGIN (\S+)\n(.*?)SOCKTRACE-VAGRANT-END \1 rc=(\d+) "
                         r"seconds=(\S+)", r.output, re.S):
        r.sections[m.group(1)] = (int(m.group(3)), m.group(2), m.group(4))
    return r


def vm(rel: Release, kernel: Kernel, image_dir: Path) -> Result:
    configs = [c.name for c in kernel.configs] + [kernel.live]
    r = _process(f"vm-{rel.name}-{kernel.series}",
                 [str(TOP / "tests/vm/run-vm.sh"), str(image_dir), kernel.prefix, ",".join(configs)],
                 2400)
    r.output = r.output.replace("\r", "")
    for m in re.finditer(r"SOCKTRACE-VM-BEGIN (\S+)\n(.*?)SOCKTRACE-VM-END \1 rc=(\d+) seconds=(\S+)",
                         r.output, re.S):
        r.sections[m.group(1)] = (int(m.group(3)), m.group(2), m.group(4))
    return r


# Seconds each job took inside a cached `make test` on this machine
# (2026-11-27, the logs in CACHE/logs): what the scheduler orders by.  A
# job's priority is its own cost plus the longest chain it starts (a
# build: its longest job), so the VMs whose full live suite runs start
# first.  The figures need only be roughly right: with them the run that
# left one worker idle for 6 minutes while the 5.10 VM ran alone packs
# the chroot suites at the end instead.
COST = {"apps": 60, "vagrant": 740, "userland": 135, "provision": 15, "images": 15, "build": 20}
VM_BOOT, VM_CONFIG, VM_LIVE = 90, 40, {"live": 650, "live-core": 330, "live-cgroups": 10}


def cost(key: tuple[str, ...], rel: Release | None = None) -> float:
    """A job's estimated seconds: ("vm", "trixie", "7.x") -> 860.

    >>> from matrix import release
    >>> cost(("vm", "trixie", "7.x"), release("trixie")), cost(("userland", "forky"))
    (860, 135)
    """
    if key[0] == "vm":
        kernel = next(k for k in rel.kernels if k.series == key[2])
        return VM_BOOT + VM_CONFIG * len(kernel.configs) + VM_LIVE[kernel.live]
    return COST[key[0]]


class _Workers:
    """WORKERS threads running submitted calls, the highest priority first
    (a ThreadPoolExecutor runs them in the order submitted)."""

    def __init__(self, workers: int):
        self._ready: list = []        # heap: (-priority, order, future, fn, args)
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        for i in range(workers):
            threading.Thread(target=self._work, name=f"matrix-{i}", daemon=True).start()

    def submit(self, priority: float, fn, *args) -> Future:
        f: Future = Future()
        with self._cv:
            if self._closed:
                f.set_exception(RuntimeError("the session ended first"))
                return f
            heapq.heappush(self._ready, (-priority, next(self._order), f, fn, args))
            self._cv.notify()
        return f

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._ready and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                _, _, f, fn, args = heapq.heappop(self._ready)
            if not f.set_running_or_notify_cancel():
                continue
            try:
                f.set_result(fn(*args))
            except BaseException as e:   # the test that waits for it reports it
                f.set_exception(e)

    def shutdown(self) -> None:
        with self._cv:
            self._closed = True
            for _, _, f, _, _ in self._ready:
                f.cancel()
            self._ready.clear()
            self._cv.notify_all()


class Matrix:
    """Futures of every job the selected tests need; started at once."""

    def __init__(self, releases: list[Release], want: set[tuple[str, ...]]):
        self._workers = _Workers(WORKERS)
        self._closed = False
        self.futures: dict[tuple[str, ...], Future] = {}
        # ("apps", "servers"): the servers' userland (tests/apps), first: a
        # minute's build that tests on this machine wait for
        for key in [k for k in want if k[0] == "apps"]:
            self.futures[key] = self._workers.submit(float("inf"), build_apps)
        # ("vagrant", "demo"): a box of its own, no build to wait for
        for key in [k for k in want if k[0] == "vagrant"]:
            self.futures[key] = self._workers.submit(cost(key), vagrant_demo)
        for rel in releases:
            jobs = [key for key in want if key[1] == rel.name]
            if not jobs:
                continue
            for key in jobs:
                self.futures[key] = Future()
            longest = max(cost(key, rel) for key in jobs)
            b = self._workers.submit(COST["build"] + longest, build, rel, bool(rel.kernels))
            b.add_done_callback(lambda b, rel=rel, jobs=jobs: self._after_build(rel, jobs, b))

    def _after_build(self, rel: Release, jobs: list[tuple[str, ...]], b: Future) -> None:
        exc = b.exception() if not b.cancelled() else RuntimeError("the session ended first")
        if self._closed:
            exc = RuntimeError("the session ended first")
        for key in jobs:
            target = self.futures[key]
            if exc is not None:
                target.set_exception(exc)
                continue
            out = b.result()[0]
            if key[0] == "userland":
                job = self._workers.submit(cost(key), userland, rel, out / "rootfs")
            elif key[0] == "provision":
                job = self._workers.submit(cost(key), provision_without_headers, rel, out / "rootfs")
            elif key[0] == "images":
                job = self._workers.submit(cost(key), container_images, rel, out / "rootfs")
            else:
                kernel = next(k for k in rel.kernels if k.series == key[2])
                job = self._workers.submit(cost(key, rel), vm, rel, kernel, out)
            job.add_done_callback(lambda j, t=target: _chain(j, t))

    def result(self, key: tuple[str, ...]) -> Result:
        return self.futures[key].result()

    def shutdown(self) -> None:
        """At the end of the session: what still runs was not waited for."""
        self._closed = True
        self._workers.shutdown()
        for proc in list(_running):
            _kill(proc)


def _chain(source: Future, target: Future) -> None:
    if source.cancelled():
        target.set_exception(RuntimeError("the session ended first"))
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())
