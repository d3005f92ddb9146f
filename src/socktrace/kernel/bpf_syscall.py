"""bpf(2) itself, for the few programs socktrace loads without bcc
(kernel/trampoline.py's fexit check, kernel/cgroup_bpf.py's cgroup
programs) and the map reads bcc makes one system call per entry for
(lookup_batch, delete_batch): the one place that knows the system call's number and how to
call it the way libbpf does: bpf(BPF_PROG_LOAD, attr) returns the new
program's file descriptor, or raises OSError with the kernel's errno.

    >>> import ctypes
    >>> bpf(0xFFFF, ctypes.c_uint64())    # no such command (as root; else EPERM)
    Traceback (most recent call last):
    OSError: [Errno 22] Invalid argument
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource

# arch/*/include/generated/uapi/asm/unistd_64.h
SYS_BPF = {"x86_64": 321, "aarch64": 280}
# include/uapi/linux/bpf.h, enum bpf_cmd
BPF_PROG_LOAD, BPF_OBJ_GET_INFO_BY_FD, BPF_RAW_TRACEPOINT_OPEN, BPF_LINK_CREATE = 5, 15, 17, 28
BPF_MAP_LOOKUP_BATCH, BPF_MAP_DELETE_BATCH = 24, 27
RETRIES = 5

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def supported() -> bool:
    """Whether this machine's bpf(2) number is known."""
    return platform.machine() in SYS_BPF


def bpf(cmd: int, attr: ctypes.Array | ctypes.Structure) -> int:
    """bpf(2): the new file descriptor, or OSError.

    Retried as libbpf's and bcc's loaders retry:
    - EAGAIN/EINTR: the verifier stops when a signal is pending (a
      Ctrl-Z, a SIGCHLD) (libbpf sys_bpf_prog_load);
    - EPERM with a finite RLIMIT_MEMLOCK: before Linux 5.11 BPF memory is
      charged to the user's locked-memory limit, shared by all of root's
      processes, so a second socktrace (or any BPF tool) running beside
      the first gets EPERM (seen on 5.10: the fexit check of a second
      socktrace).  bcc raises the limit to unlimited and tries again
      (bcc src/cc/libbpf.c, bcc_prog_load_xattr); so does this.  Since
      5.11 memory cgroups account BPF memory instead:
      https://lore.kernel.org/bpf/20201201215900.3569844-1-guro@fb.com
    """
    raised = False
    for _ in range(RETRIES):
        fd = _libc.syscall(SYS_BPF.get(platform.machine(), 321), cmd, ctypes.byref(attr),
                           ctypes.sizeof(attr))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err == errno.EPERM and not raised and _unlimit_memlock():
            raised = True
            continue
        if err not in (errno.EAGAIN, errno.EINTR):
            break
    raise OSError(err, os.strerror(err))


def _unlimit_memlock() -> bool:
    """Raise RLIMIT_MEMLOCK to unlimited; whether it was lower (and so
    worth another try)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY:
        return False
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):   # not allowed (no CAP_SYS_RESOURCE): the EPERM stands
        return False
    return True


class _InfoAttr(ctypes.Structure):
    """union bpf_attr for BPF_OBJ_GET_INFO_BY_FD."""
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


# struct bpf_prog_info (include/uapi/linux/bpf.h), read up to and with
# recursion_misses (Linux 5.12).  An older kernel fills what it has and
# leaves the rest zero (bpf_check_uarg_tail_zero accepts a longer struct).
_PROG_INFO_SIZE = 216
_RECURSION_MISSES = 208


def recursion_misses(prog_fd: int) -> int:
    """How many times the kernel skipped the program `prog_fd` because it
    was already running on that CPU (bpf_prog_info.recursion_misses:
    counted since Linux 5.12; 0 before, where nothing is skipped either on
    the tracepoints socktrace uses)."""
    info = ctypes.create_string_buffer(_PROG_INFO_SIZE)
    attr = _InfoAttr(bpf_fd=prog_fd, info_len=_PROG_INFO_SIZE, info=ctypes.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return int.from_bytes(info.raw[_RECURSION_MISSES:_RECURSION_MISSES + 8], "little")


class _BatchAttr(ctypes.Structure):
    """union bpf_attr for BPF_MAP_*_BATCH."""
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64),
                ("keys", ctypes.c_uint64), ("values", ctypes.c_uint64),
                ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def lookup_batch(map_fd: int, key_size: int, value_size: int, chunk: int = 4096
                 ) -> tuple[bytes, bytes]:
    """Every entry of a hash map (LRU too), `chunk` entries a system call
    (BPF_MAP_LOOKUP_BATCH, Linux 5.6+): (keys, values), the keys and the
    values packed one after the other.  bcc's items() makes two system
    calls per entry, and bcc's own batch reads are missing from Debian
    11's bcc 0.18."""
    keys = ctypes.create_string_buffer(key_size * chunk)
    values = ctypes.create_string_buffer(value_size * chunk)
    batch = ctypes.c_uint32(0)   # the hash table's bucket to go on from
    attr = _BatchAttr(out_batch=ctypes.addressof(batch), map_fd=map_fd,
                      keys=ctypes.addressof(keys), values=ctypes.addressof(values))
    got_keys, got_values = [], []
    while True:
        attr.count = chunk
        try:
            bpf(BPF_MAP_LOOKUP_BATCH, attr)
            end = False
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            end = True   # the last ones
        got_keys.append(ctypes.string_at(keys, attr.count * key_size))
        got_values.append(ctypes.string_at(values, attr.count * value_size))
        if end:
            return b"".join(got_keys), b"".join(got_values)
        attr.in_batch = ctypes.addressof(batch)


def delete_batch(map_fd: int, keys: bytes, key_size: int) -> int:
    """Delete the packed `keys` from a hash map (BPF_MAP_DELETE_BATCH,
    Linux 5.6+); those gone already are skipped.  How many were deleted."""
    buf = ctypes.create_string_buffer(keys, len(keys))
    n, done, deleted = len(keys) // key_size, 0, 0
    attr = _BatchAttr(map_fd=map_fd)
    while done < n:
        attr.keys = ctypes.addressof(buf) + done * key_size
        attr.count = n - done
        try:
            bpf(BPF_MAP_DELETE_BATCH, attr)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            deleted += attr.count   # those before the missing one
            done += attr.count + 1
            continue
        deleted += attr.count
        break
    return deleted
