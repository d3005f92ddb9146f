"""Give back the memory the BPF compiler used, once the program is loaded.

bcc compiles with clang and LLVM, whose code stays mapped and resident
afterwards: 83 MB of the tracer's 140 MB RSS on Debian 12.  bcc's own
bcc_free_memory() drops only libbcc.so's text with madvise(MADV_DONTNEED),
which covers LLVM where it is linked statically into libbcc, not Debian's
shared libLLVM and libclang-cpp
(https://github.com/iovisor/bcc/blob/master/src/cc/bcc_elf.c, bcc_free_memory).
This does the same for those libraries, and returns the compiler's freed
heap with malloc_trim(3).

Only mappings that hold nothing but clean file pages are dropped: not
writable and without private (Anonymous) pages, which excludes the
relocated RELRO data.  A later use of the code re-reads it from the file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from dataclasses import dataclass

MADV_DONTNEED = 4
COMPILER_LIBS = ("libLLVM", "libclang")

_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    path: str
    rss_kb: int
    anonymous_kb: int


def read_smaps(text: str) -> list[Mapping]:
    """/proc/PID/smaps to its mappings.

    >>> m = read_smaps("7f00-7f10 r-xp 00001000 08:01 42 /usr/lib/libLLVM-14.so.1\\n"
    ...                "Rss:                  60 kB\\nAnonymous:             0 kB\\n")
    >>> (m[0].start, m[0].perms, m[0].path, m[0].rss_kb)
    (32512, 'r-xp', '/usr/lib/libLLVM-14.so.1', 60)
    """
    maps: list[Mapping] = []
    head = None
    fields: dict[str, int] = {}

    def close() -> None:
        if head:
            maps.append(Mapping(int(head[1], 16), int(head[2], 16), head[3], head[4],
                                fields.get("Rss", 0), fields.get("Anonymous", 0)))

    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            close()
            head, fields = m, {}
        elif line.endswith(" kB"):
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0])
    close()
    return maps


def droppable(maps: list[Mapping], libs: tuple[str, ...] = COMPILER_LIBS) -> list[Mapping]:
    """The resident mappings of `libs` that hold only clean file pages."""
    return [m for m in maps
            if any(lib in m.path.rsplit("/", 1)[-1] for lib in libs)
            and "w" not in m.perms and m.anonymous_kb == 0 and m.rss_kb > 0]


def release(smaps: str = "/proc/self/smaps") -> int:
    """Drop the compiler's code from this process's memory and trim the
    heap; return the kB of mappings dropped."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    with open(smaps) as f:
        maps = droppable(read_smaps(f.read()))
    dropped = 0
    for m in maps:
        if libc.madvise(m.start, m.end - m.start, MADV_DONTNEED) == 0:
            dropped += m.rss_kb
    if hasattr(libc, "malloc_trim"):  # glibc
        libc.malloc_trim(0)
    return dropped
