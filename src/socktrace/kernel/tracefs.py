"""Mount tracefs and debugfs when the system has not: bcc reads tracepoint
formats and attaches probes through them."""

from __future__ import annotations

import ctypes
import os

MOUNTS = (("debugfs", "/sys/kernel/debug"), ("tracefs", "/sys/kernel/tracing"))


def is_mounted(path: str, mounts_file: str = "/proc/self/mounts") -> bool:
    with open(mounts_file) as f:
        return any(line.split()[1] == path for line in f if len(line.split()) > 1)


def ensure_mounted(mounts=MOUNTS) -> list[str]:
    """Mount what is missing; return the mount points mounted."""
    libc = ctypes.CDLL(None, use_errno=True)
    done = []
    for fstype, path in mounts:
        if not os.path.isdir(path) or is_mounted(path):
            continue
        if libc.mount(b"nodev", path.encode(), fstype.encode(), 0, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot mount {fstype} on {path}: {os.strerror(err)}")
        done.append(path)
    return done


def tracefs_root() -> str:
    for path in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.isdir(os.path.join(path, "events")):
            return path
    return "/sys/kernel/tracing"
