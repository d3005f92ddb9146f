"""What the running kernel offers socktrace, found out without socktrace's
own detection, so that a test can say what socktrace must do on it: on this
development machine (no kprobes, fexit refused, no headers), in each VM of
the matrix, and on a laptop with everything.

    >>> expected_auto_mode(fexit=False, kprobes=True)
    'kprobe'
"""

from __future__ import annotations

import ctypes
import errno
import gzip
import os
import platform
import struct
from functools import lru_cache


@lru_cache(maxsize=None)
def kernel_config() -> dict[str, str]:
    """CONFIG_* of the running kernel: /proc/config.gz, else Debian's /boot/config-RELEASE."""
    for path, opener in (("/proc/config.gz", gzip.open),
                         (f"/boot/config-{platform.release()}", open)):
        if os.path.exists(path):
            with opener(path, "rt") as f:
                return dict(line.strip().split("=", 1) for line in f if line.startswith("CONFIG_"))
    raise AssertionError("the kernel's configuration is nowhere: no /proc/config.gz, no /boot/config-*")


def kprobes() -> bool:
    return kernel_config().get("CONFIG_KPROBES") == "y"


def sock_length_tracepoints() -> bool:
    """sock:sock_send_length (Linux 6.3+), which sees send() on connected
    sockets."""
    from socktrace.kernel.tracefs import tracefs_root
    return os.path.isdir(os.path.join(tracefs_root(), "events/sock/sock_send_length"))


def headers() -> bool:
    """The kernel's own header tree, as bcc looks for it."""
    kdir = f"/lib/modules/{platform.release()}"
    return any(os.path.exists(f"{kdir}/{d}/include/net/sock.h") for d in ("build", "source"))


def fexit() -> bool:
    return fexit_errno() == 0


@lru_cache(maxsize=None)
def fexit_errno() -> int:
    """0 when the kernel loads and attaches an fexit program (r0 = 0; exit)
    on inet_csk_accept, asked through bpf(2) directly; else its errno.
    Ask before anything else traces that function: Linux 5.10 answers
    EPERM to an fexit program on a function that already has one (seen in
    the matrix's bullseye VM), where 6.1 takes both."""
    if not btf():
        return errno.ENOENT  # fexit programs name their function by its BTF id
    from socktrace.kernel.btf import BTF  # only the function's BTF id: data, cross-checked with bpftool
    with BTF() as kernel:
        target = kernel.func_id("inet_csk_accept")
    libc = ctypes.CDLL(None, use_errno=True)
    sys_bpf = {"x86_64": 321, "aarch64": 280}[platform.machine()]
    insns = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"))
    gpl = ctypes.create_string_buffer(b"GPL")
    # union bpf_attr, BPF_PROG_LOAD: BPF_PROG_TYPE_TRACING (26), BPF_TRACE_FEXIT (25)
    attr = bytearray(128)
    struct.pack_into("=IIQQ", attr, 0, 26, 2, ctypes.addressof(insns), ctypes.addressof(gpl))
    struct.pack_into("=I", attr, 68, 25)          # expected_attach_type
    struct.pack_into("=I", attr, 108, target)     # attach_btf_id
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    prog = libc.syscall(sys_bpf, 5, buf, len(attr))
    if prog < 0:
        return ctypes.get_errno()
    try:
        link_attr = bytearray(struct.pack("=QI4x", 0, prog))   # BPF_RAW_TRACEPOINT_OPEN
        link = libc.syscall(sys_bpf, 17, (ctypes.c_char * 16).from_buffer(link_attr), 16)
        if link < 0:
            return ctypes.get_errno()
        os.close(link)
        return 0
    finally:
        os.close(prog)


def expected_auto_mode(fexit: bool, kprobes: bool) -> str:
    """The cheapest mode that works: what `--probe auto` must pick."""
    return "kfunc" if fexit else "kprobe" if kprobes else "tracepoint"


def btf() -> bool:
    """The kernel describes itself in BTF (a file of it, not an empty stand-in)."""
    try:
        return os.path.getsize("/sys/kernel/btf/vmlinux") > 0
    except OSError:
        return False


def expected_offsets() -> str:
    """Where socktrace must take struct layout from: BTF first, headers without it."""
    return "BTF" if btf() else "kernel headers" if headers() else "none"
