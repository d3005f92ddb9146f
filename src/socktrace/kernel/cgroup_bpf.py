"""cgroup BPF programs, loaded and linked through bpf(2) directly.

bcc compiles socktrace's cgroup socket-address programs with the rest of
the BPF program (they see UDP datagrams: bpf/socktrace.bpf.c), but it
cannot be asked to load and attach them the way they need on every bcc
socktrace supports:
- the kernel checks a CGROUP_SOCK_ADDR program's attach type when it is
  loaded (expected_attach_type); bcc's load_func takes it only from 0.25,
  and Debian 11 has 0.18;
- bcc attaches with BPF_PROG_ATTACH, which leaves the program on the
  cgroup when socktrace is killed; a BPF link (BPF_LINK_CREATE, Linux 5.7)
  goes with its last file descriptor: with socktrace, however it ends.
  Links join a cgroup's programs as BPF_F_ALLOW_MULTI does: other programs
  there (Cilium's socket load balancer uses these hooks) keep running.

The instructions are bcc's (compiled, maps already in place); this module
only loads them (BPF_PROG_LOAD) and links them to the cgroup v2 root, which
every process of the host is in or under.  A host without a cgroup2
mount (cgroup v1 only) gets one for socktrace's use, unmounted at close.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import tempfile

from .bpf_syscall import BPF_LINK_CREATE, BPF_PROG_LOAD
from .bpf_syscall import bpf as _bpf

PROG_TYPE_CGROUP_SOCK, PROG_TYPE_CGROUP_SOCK_ADDR = 9, 18
# enum bpf_attach_type (include/uapi/linux/bpf.h)
UDP4_SENDMSG, UDP6_SENDMSG, UDP4_RECVMSG, UDP6_RECVMSG = 14, 15, 19, 20
INET_SOCK_RELEASE = 34   # Linux 5.9+
# the program type each attach type takes (the rest are socket-address ones)
_PROG_TYPES = {INET_SOCK_RELEASE: PROG_TYPE_CGROUP_SOCK}
MNT_DETACH = 2
LOG_SIZE = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)   # mount(2), umount2(2)


class CgroupError(Exception):
    """A cgroup program could not be loaded or linked; one line."""


def load(insns: int, size: int, license: bytes, attach_type: int, name: bytes) -> int:
    """A cgroup program (CGROUP_SOCK_ADDR, or CGROUP_SOCK for a socket's
    release) from `size` bytes of instructions at address `insns`, for
    `attach_type`: its fd.  The verifier's log is in the error when the
    kernel refuses it."""
    lic = ctypes.create_string_buffer(license)
    attr = ctypes.create_string_buffer(128)  # union bpf_attr, BPF_PROG_LOAD's part
    prog_type = _PROG_TYPES.get(attach_type, PROG_TYPE_CGROUP_SOCK_ADDR)
    struct.pack_into("=IIQQIIQII16sII", attr, 0, prog_type, size // 8, insns,
                     ctypes.addressof(lic), 0, 0, 0, 0, 0, name[:15], 0, attach_type)
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        if exc.errno != errno.EACCES and exc.errno != errno.EINVAL:
            raise CgroupError(f"loading {name.decode()}: {exc.strerror}") from None
    log = ctypes.create_string_buffer(LOG_SIZE)   # again, for the verifier's reason
    struct.pack_into("=IIQ", attr, 24, 1, LOG_SIZE, ctypes.addressof(log))
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        lines = [l for l in log.value.decode(errors="replace").splitlines() if l.strip()]
        raise CgroupError(f"loading {name.decode()}: {exc.strerror}"
                          + (f": {lines[-1]}" if lines else "")) from None


def link(prog_fd: int, cgroup_fd: int, attach_type: int) -> int:
    """Link a loaded program to a cgroup: the link's fd (closing it detaches)."""
    attr = ctypes.create_string_buffer(64)   # union bpf_attr, BPF_LINK_CREATE's part
    struct.pack_into("=IIII", attr, 0, prog_fd, cgroup_fd, attach_type, 0)
    try:
        return _bpf(BPF_LINK_CREATE, attr)
    except OSError as exc:
        why = exc.strerror
        if exc.errno == errno.EPERM:
            why += " (another program is attached there without BPF_F_ALLOW_MULTI)"
        raise CgroupError(f"linking to the cgroup v2 root: {why}") from None


def cgroup2_mount(mountinfo: str) -> str | None:
    r"""Where the cgroup v2 hierarchy is mounted, from the text of
    /proc/self/mountinfo: /sys/fs/cgroup on a pure v2 host,
    /sys/fs/cgroup/unified on a hybrid one, None on a v1-only one.

    >>> cgroup2_mount("41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    '/sys/fs/cgroup/unified'
    """
    for line in mountinfo.splitlines():
        mount, sep, fs = line.partition(" - ")
        if sep and fs.split(" ", 1)[0] == "cgroup2":
            # octal escapes (\040 for a space) as the kernel writes them
            return mount.split(" ")[4].encode().decode("unicode_escape")
    return None


class CgroupLinks:
    """Programs linked to the cgroup v2 root, all released by close()."""

    def __init__(self, mountinfo: str = "/proc/self/mountinfo"):
        self._mounted: str | None = None
        with open(mountinfo) as f:
            root = cgroup2_mount(f.read())
        if root is None:   # a cgroup v1 host: a cgroup2 mount of our own
            root = self._mounted = tempfile.mkdtemp(prefix="socktrace-cgroup2-")
            if _libc.mount(b"none", root.encode(), b"cgroup2", 0, None) != 0:
                err = ctypes.get_errno()
                os.rmdir(root)
                raise CgroupError(f"no cgroup v2 hierarchy, and mounting one failed: "
                                  f"{os.strerror(err)}")
        self.root = root
        self._cgroup = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._fds: list[int] = []

    def attach(self, insns: int, size: int, license: bytes, attach_type: int, name: bytes) -> None:
        prog = load(insns, size, license, attach_type, name)
        self._fds.append(prog)
        self._fds.append(link(prog, self._cgroup, attach_type))

    def close(self) -> None:
        """Detach (close the links) and release the cgroup mount, if ours."""
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        if self._cgroup >= 0:
            os.close(self._cgroup)
            self._cgroup = -1
        if self._mounted:
            _libc.umount2(self._mounted.encode(), MNT_DETACH)
            os.rmdir(self._mounted)
            self._mounted = None
