"""The kernel header tree bcc compiles against.

bcc insists on a header tree: $BCC_KERNEL_SOURCE, else
/lib/modules/$(uname -r)/build, else the kheaders module.  Production
servers rarely have one.  Wherever the kernel has BTF (whether or not
headers are installed) socktrace builds a small synthetic tree from the
distro's userspace kernel headers (/usr/include/linux, package
linux-libc-dev) plus the kernel-internal typedefs bcc's helpers need; the
BPF program then reads kernel structs at offsets taken from BTF
(kernel_read.h), not from headers.  The kernel's own headers are used only
without usable BTF (probes.Loader).
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

# Kernel-internal names that bcc's helpers.h uses and the uapi headers lack.
_TYPES_H = """\
#ifndef _SOCKTRACE_LINUX_TYPES_H
#define _SOCKTRACE_LINUX_TYPES_H
#include <uapi/linux/types.h>
typedef __u8 u8;   typedef __s8 s8;
typedef __u16 u16; typedef __s16 s16;
typedef __u32 u32; typedef __s32 s32;
typedef __u64 u64; typedef __s64 s64;
typedef _Bool bool;
enum { false = 0, true = 1 };
typedef unsigned long uintptr_t;
typedef unsigned long size_t;
typedef long ssize_t;
typedef unsigned int gfp_t;
typedef long long loff_t;
typedef int pid_t;
#endif
"""

# x86-64 syscall/interrupt frame (arch/x86/include/asm/ptrace.h): bcc's
# PT_REGS_PARM1/PT_REGS_RC name its fields in kprobe programs.
_PTRACE_H = """\
#ifndef _SOCKTRACE_ASM_PTRACE_H
#define _SOCKTRACE_ASM_PTRACE_H
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};
#endif
"""


def _version_h(release: str) -> str:
    """include/linux/version.h for a release such as "6.18.44-fc-v445"."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    major, minor, patch = (int(g or 0) for g in m.groups()) if m else (0, 0, 0)
    return (
        "#define KERNEL_VERSION(a,b,c) (((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))\n"
        f"#define LINUX_VERSION_CODE KERNEL_VERSION({major},{minor},{patch})\n")


def real_header_tree(release: str | None = None, modules: str = "/lib/modules") -> Path | None:
    """The kernel's own header tree, when it is installed: $BCC_KERNEL_SOURCE
    or /lib/modules/RELEASE/build, if it has the kernel's struct sock.

    Debian splits a tree in two, build/ (generated, per flavour) and source/
    (linux-headers-*-common); bcc reads both, so either may hold it."""
    env = os.environ.get("BCC_KERNEL_SOURCE")
    kdir = Path(modules) / (release or platform.release())
    candidates = ([[Path(env)]] if env else []) + [[kdir / "build", kdir / "source"]]
    for tree, *others in candidates:
        if any((d / "include/net/sock.h").is_file() for d in (tree, *others)):
            return tree
    return None


def scratch_dir() -> str | None:
    """Where to build the tree: a tmpfs when there is one.  ~570 symlinks
    take 7 ms on tmpfs and 270 ms on this machine's /tmp (ext4)."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def write_synthetic_tree(root: Path, usr_include: Path = Path("/usr/include")) -> Path:
    """Create a minimal header tree for bcc in `root` and return it.

    Needs the distro's userspace kernel headers (linux-libc-dev).
    """
    if not (usr_include / "linux" / "types.h").exists():
        raise FileNotFoundError(
            f"{usr_include}/linux/types.h missing: install linux-libc-dev "
            "(Debian/Ubuntu) or kernel-headers (Fedora)")
    arch = platform.machine()
    multiarch = usr_include / f"{arch}-linux-gnu"
    files = {
        "include/linux/kconfig.h": "#define CONFIG_BPF_SYSCALL 1\n",
        "include/linux/types.h": _TYPES_H,
        "include/linux/version.h": _version_h(platform.release()),
        "include/linux/log2.h": "",
        "arch/x86/include/asm/page.h": "#define PAGE_SIZE 4096UL\n",
        "arch/x86/include/asm/ptrace.h": _PTRACE_H,
        # bcc brings its own bpf.h; the distro's copy conflicts with it
        "include/uapi/linux/bpf.h": "",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    uapi = root / "include/uapi/linux"
    for entry in os.scandir(usr_include / "linux"):
        if entry.name not in ("bpf.h",):
            os.symlink(entry.path, uapi / entry.name)
    (root / "include/uapi/asm-generic").symlink_to(usr_include / "asm-generic")
    (root / "arch/x86/include/uapi").symlink_to(multiarch if multiarch.is_dir() else usr_include)
    return root
