"""Ask the kernel whether it takes fexit programs, before compiling one.

bcc reports fentry/fexit support by the presence of a kernel symbol, but a
kernel can still refuse such programs at load time (this project's CI
kernel answers EPERM to root).  Compiling socktrace's fexit program
to find that out costs 0.4 s of start-up; loading and attaching a
two-instruction fexit program through libbpf takes about a millisecond.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

# include/uapi/linux/bpf.h
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_FEXIT = 25
ENOTSUPP = 524  # include/linux/errno.h: kernel-internal, not in userspace's errno.h
# r0 = 0; exit
_RETURN_0 = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])


class _ProgLoadOpts(ctypes.Structure):
    """The leading fields of libbpf's struct bpf_prog_load_opts; libbpf
    reads only `sz` bytes of it and takes the rest as zero."""
    _fields_ = [("sz", ctypes.c_size_t), ("attempts", ctypes.c_int),
                ("expected_attach_type", ctypes.c_uint32), ("prog_btf_fd", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_ifindex", ctypes.c_uint32),
                ("kern_version", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32)]


def _error(ret: int) -> str:
    """libbpf returns -errno (1.0 mode) or -1 with errno set."""
    code = -ret if ret < -1 else ctypes.get_errno()
    if code == ENOTSUPP:
        return "ENOTSUPP: no BPF trampolines in this kernel"
    return errno.errorcode.get(code, str(code))


def fexit_refused(func_btf_id: int) -> str | None:
    """Why the kernel refuses an fexit program on the function with BTF id
    `func_btf_id`, or None when it loads and attaches."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
        load, attach = lib.bpf_prog_load, lib.bpf_raw_tracepoint_open
    except (OSError, AttributeError):
        return None  # libbpf older than 0.7: the compile will tell
    load.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                     ctypes.c_size_t, ctypes.POINTER(_ProgLoadOpts)]
    attach.argtypes = [ctypes.c_char_p, ctypes.c_int]
    opts = _ProgLoadOpts(sz=ctypes.sizeof(_ProgLoadOpts), expected_attach_type=BPF_TRACE_FEXIT,
                         attach_btf_id=func_btf_id)
    prog = load(BPF_PROG_TYPE_TRACING, b"socktrace_chk", b"GPL", _RETURN_0, 2, ctypes.byref(opts))
    if prog < 0:
        return f"the kernel refused to load an fexit program ({_error(prog)})"
    try:
        link = attach(None, prog)
        if link < 0:
            return f"the kernel refused to attach an fexit program ({_error(link)})"
        os.close(link)
        return None
    finally:
        os.close(prog)
