"""Network namespaces: enter one for a moment, list all of them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from typing import Iterator

CLONE_NEWNET = 0x40000000


def ns_path(spec: str) -> str:
    """--netns PATH|PID -> the namespace file: "1234" -> /proc/1234/ns/net."""
    return f"/proc/{spec}/ns/net" if spec.isdigit() else spec


def ns_inode(path: str) -> int:
    return os.stat(path).st_ino


@contextlib.contextmanager
def entered(path: str | None) -> Iterator[int]:
    """Run the block in the network namespace at `path` (this thread only);
    yield that namespace's inode number."""
    if path is None:
        yield ns_inode("/proc/thread-self/ns/net")
        return
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        os.close(own)
        raise OSError(exc.errno, f"network namespace {path}: {exc.strerror}") from None
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot enter network namespace {path}: {os.strerror(err)}")
        try:
            yield os.fstat(target).st_ino
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - cannot happen as root
                raise OSError(ctypes.get_errno(), "cannot return to the original network namespace")
    finally:
        os.close(target)
        os.close(own)


def all_namespaces(procfs: str = "/proc", named: str = "/run/netns") -> list[str]:
    """One path per distinct network namespace: those of processes, and the
    named ones of `ip netns` (which may have no process)."""
    seen: dict[int, str] = {}
    candidates = []
    if os.path.isdir(named):
        candidates += [os.path.join(named, n) for n in sorted(os.listdir(named))]
    candidates += [f"{procfs}/{p}/ns/net" for p in sorted(os.listdir(procfs), key=lambda p: (len(p), p))
                   if re.fullmatch(r"\d+", p)]
    for path in candidates:
        try:
            ino = os.stat(path).st_ino
        except OSError:
            continue
        seen.setdefault(ino, path)
    return list(seen.values())
