"""Ask the kernel whether it takes fexit programs, before compiling one.

bcc reports fentry/fexit support by the presence of a kernel symbol, but a
kernel can still refuse such programs at load time (this project's CI
kernel answers EPERM to root).  Compiling socktrace's fexit program
to find that out costs 0.4 s of start-up; loading and attaching a
two-instruction fexit program takes about a millisecond.

The program goes through the bpf(2) system call itself, not libbpf:
libbpf's bpf_prog_load() took other arguments before libbpf 0.7 (Debian
11 ships 0.3), and calling it with the new ones would crash.
"""

from __future__ import annotations

import ctypes
import errno
import os

from .bpf_syscall import BPF_PROG_LOAD, BPF_RAW_TRACEPOINT_OPEN, bpf, supported

# include/uapi/linux/bpf.h
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_FEXIT = 25
ENOTSUPP = 524  # include/linux/errno.h: kernel-internal, not in userspace's errno.h
# r0 = 0; exit
_RETURN_0 = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
_LICENSE = b"GPL\0"


class _ProgLoadAttr(ctypes.Structure):
    """union bpf_attr for BPF_PROG_LOAD, up to attach_btf_id (Linux 5.5,
    when fexit arrived); the kernel takes the rest as zero."""
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", ctypes.c_uint32), ("expected_attach_type", ctypes.c_uint32),
                ("prog_btf_fd", ctypes.c_uint32), ("func_info_rec_size", ctypes.c_uint32),
                ("func_info", ctypes.c_uint64), ("func_info_cnt", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
                ("line_info_cnt", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32)]


class _RawTracepointAttr(ctypes.Structure):
    """union bpf_attr for BPF_RAW_TRACEPOINT_OPEN: a NULL name attaches a
    tracing program at the function it was loaded for."""
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32)]


def _error(code: int) -> str:
    if code == ENOTSUPP:
        return "ENOTSUPP: no BPF trampolines in this kernel"
    return errno.errorcode.get(code, str(code))


def fexit_refused(func_btf_id: int) -> str | None:
    """Why the kernel refuses an fexit program on the function with BTF id
    `func_btf_id`, or None when it loads and attaches."""
    if not supported():
        return None  # the compile will tell
    insns = ctypes.create_string_buffer(_RETURN_0)
    license_ = ctypes.create_string_buffer(_LICENSE)
    attr = _ProgLoadAttr(prog_type=BPF_PROG_TYPE_TRACING, insn_cnt=len(_RETURN_0) // 8,
                         insns=ctypes.addressof(insns), license=ctypes.addressof(license_),
                         prog_name=b"socktrace_chk", expected_attach_type=BPF_TRACE_FEXIT,
                         attach_btf_id=func_btf_id)
    try:
        prog = bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        return f"the kernel refused to load an fexit program ({_error(exc.errno)})"
    try:
        os.close(bpf(BPF_RAW_TRACEPOINT_OPEN, _RawTracepointAttr(name=0, prog_fd=prog)))
        return None
    except OSError as exc:
        return f"the kernel refused to attach an fexit program ({_error(exc.errno)})"
    finally:
        os.close(prog)
