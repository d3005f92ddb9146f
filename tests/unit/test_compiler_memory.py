"""Which mappings may be dropped after compiling: only clean file pages."""

from socktrace.kernel.compiler_memory import droppable, read_smaps

SMAPS = """\
7f0000000000-7f0000100000 r--p 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                1024 kB
Anonymous:             0 kB
7f0000100000-7f0003000000 r-xp 00100000 08:01 42 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:               50000 kB
Anonymous:             0 kB
7f0003000000-7f0003400000 r--p 03000000 08:01 42 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                4096 kB
Anonymous:          4096 kB
7f0003400000-7f0003500000 rw-p 03400000 08:01 42 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                 900 kB
Anonymous:           900 kB
7f0004000000-7f0005000000 r-xp 00000000 08:01 43 /usr/lib/llvm-14/lib/libclang-cpp.so.14
Rss:               28000 kB
Anonymous:             0 kB
7f0006000000-7f0006100000 r-xp 00000000 08:01 44 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1500 kB
Anonymous:             0 kB
7f0007000000-7f0007100000 r-xp 00000000 08:01 45 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                   0 kB
Anonymous:             0 kB
7f0008000000-7f0008001000 rw-p 00000000 00:00 0
Rss:                   4 kB
Anonymous:             4 kB
"""


def test_reads_every_mapping():
    maps = read_smaps(SMAPS)
    assert len(maps) == 8
    assert maps[-1].path == "" and maps[-1].anonymous_kb == 4


def test_drops_only_clean_read_only_compiler_pages():
    """Code and read-only data go; RELRO data (read-only now, but relocated:
    private pages), writable data, other libraries and untouched mappings stay."""
    kept = droppable(read_smaps(SMAPS))
    assert [(m.perms, m.path.rsplit("/", 1)[-1], m.rss_kb) for m in kept] == [
        ("r--p", "libLLVM-14.so.1", 1024),
        ("r-xp", "libLLVM-14.so.1", 50000),
        ("r-xp", "libclang-cpp.so.14", 28000),
    ]
