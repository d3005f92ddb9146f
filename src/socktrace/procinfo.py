"""Process attribution: command line, user and cgroup of a pid, cached;
which processes hold which socket.

The kernel gives pid, tid, the thread's name and uid with each event, and
the process's name and command line with the first event of each process
(read by the kernel, from the process's memory, so they are right even for
a process that exits or execs at once).  The cgroup comes from /proc once
per process.  Everything stays cached until the kernel reports that the
process exec'd or exited (EVENT_EXEC), so a busy server costs one lookup,
not one per connection.  /proc is read directly rather than through
psutil: it is three small files, psutil has no cgroup accessor and no
public map from socket inode to process, and its /proc root is a
process-wide global where this takes a parameter.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .containers import ContainerRecord, Containers
from .runtimes import Runtimes, host_root


@dataclass(frozen=True)
class ProcessInfo:
    comm: str | None      # None: the process was gone before we looked
    cmdline: str | None
    cgroup: str | None
    container: ContainerRecord | None = None   # containers.py: None on the host
    unit: str | None = None                    # a host process's systemd unit
    container_v2: bool = False   # the kernel's cgroup id (v2) for it is its container's


NO_PROCESS = ProcessInfo(None, None, None)


def read_cmdline(raw: bytes) -> str:
    """/proc/PID/cmdline to one line.

    >>> read_cmdline(b"java\\0-jar\\0app.jar\\0")
    'java -jar app.jar'
    """
    return " ".join(a.decode("utf-8", errors="replace") for a in raw.rstrip(b"\0").split(b"\0"))


def read_cgroup(text: str) -> str | None:
    """The cgroup v2 path from /proc/PID/cgroup, else the first v1 path.

    >>> read_cgroup("0::/system.slice/nginx.service\\n")
    '/system.slice/nginx.service'
    """
    paths = [line.split(":", 2) for line in text.splitlines() if line.count(":") >= 2]
    for hier, _, path in paths:
        if hier == "0":
            return path
    return paths[0][2] if paths else None


def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def elf_section_names(f) -> set[str]:
    """The section names of a 64-bit little-endian ELF file (x86-64,
    arm64), read from its section header table; empty for anything else.
    Two seeks and two reads: a one-section question needs no ELF library.

    >>> import io
    >>> elf_section_names(io.BytesIO(b"#!/bin/sh\\n"))
    set()
    """
    head = f.read(64)
    if len(head) < 64 or head[:6] != b"\x7fELF\x02\x01":
        return set()
    shoff, = struct.unpack_from("<Q", head, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
    if not shoff or shentsize < 64 or shstrndx >= shnum:
        return set()
    f.seek(shoff)
    table = f.read(shentsize * shnum)
    if len(table) < shentsize * shnum:
        return set()
    headers = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
    _, _, _, _, stroff, strsize = headers[shstrndx]
    f.seek(stroff)
    strings = f.read(strsize)
    return {strings[h[0]:strings.find(b"\0", h[0])].decode("latin-1") for h in headers}


def is_go_program(pid: int, procfs: str = "/proc") -> bool:
    """Whether the process runs a Go executable: Go's linker writes its
    build information in a section of its own (`go version -m` reads it),
    present in stripped binaries too.  https://pkg.go.dev/debug/buildinfo"""
    try:
        with open(f"{procfs}/{pid}/exe", "rb") as f:
            return ".go.buildinfo" in elf_section_names(f)
    except (OSError, struct.error):
        return False


class ProcessCache:
    """pid -> ProcessInfo, and uid -> user name, looked up once each; a
    process's container once per cgroup (`containers`: by default asked of
    the runtimes of the host whose /proc is `procfs`)."""

    def __init__(self, procfs: str = "/proc",
                 users: Callable[[int], str | None] = user_name,
                 containers: Containers | None = None):
        self.procfs = Path(procfs)
        self._users = users
        self.containers = containers or Containers(Runtimes(host_root(procfs)))
        self._procs: dict[int, ProcessInfo] = {}
        self._names: dict[int, str | None] = {}
        self.lookups = 0

    def process(self, pid: int) -> ProcessInfo:
        info = self._procs.get(pid)
        if info is None:
            info = self._procs[pid] = self._read(pid)
        return info

    def user(self, uid: int) -> str | None:
        if uid not in self._names:
            self._names[uid] = self._users(uid)
        return self._names[uid]

    def forget(self, pid: int) -> None:
        self._procs.pop(pid, None)

    def is_go(self, pid: int) -> bool:
        """Whether `pid` runs a Go program (not cached: asked once per
        dual-stack listener, at the summary)."""
        return is_go_program(pid, str(self.procfs))

    def introduce(self, pid: int, args: bytes, truncated: bool, process: str = "") -> None:
        """Cache the name (`process`) and command line the kernel read for
        `pid`; /proc gives the cgroup, and what the kernel could not read."""
        info = self._read(pid)
        cmdline = info.cmdline
        if args:
            kernel = read_cmdline(args)
            # /proc has the whole of a long command line; trust it only
            # while it still starts with what the kernel saw
            if not (truncated and cmdline and cmdline.startswith(kernel)):
                cmdline = kernel
        self._procs[pid] = dataclasses.replace(info, comm=process or info.comm, cmdline=cmdline)

    def _read(self, pid: int) -> ProcessInfo:
        self.lookups += 1
        base = self.procfs / str(pid)
        try:
            comm = (base / "comm").read_text().rstrip("\n")
            cmdline = read_cmdline((base / "cmdline").read_bytes())
            cgroups = (base / "cgroup").read_text()
        except OSError:
            return NO_PROCESS
        placed = self.containers.lookup(cgroups)
        return ProcessInfo(comm, cmdline or None, read_cgroup(cgroups), *placed)


def socket_owners(procfs: str = "/proc") -> tuple[dict[int, list[int]], int]:
    """socket inode -> pids holding it, and how many processes could not be
    looked into.  psutil has no public inode -> process map (its
    net_connections re-reads /proc/net per call), so this reads the fd links."""
    owners: dict[int, list[int]] = {}
    hidden = 0
    for entry in os.scandir(procfs):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            fds = os.scandir(f"{procfs}/{pid}/fd")
        except PermissionError:
            hidden += 1
            continue
        except FileNotFoundError:
            continue
        with fds:
            for fd in fds:
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    owners.setdefault(int(target[8:-1]), []).append(pid)
    return owners, hidden
