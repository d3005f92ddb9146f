"""Keep the heap that every batch of records reuses.

glibc gives the top of its heap back to the kernel as soon as 128 KiB of it
are free (M_TRIM_THRESHOLD, mallopt(3)).  The tracer builds a batch's
records and JSON lines, writes them and frees them, several times a second:
each batch then page-faulted its memory in again.  orjson's output buffers
showed it most: JSON Lines cost 4.7 us a record with the default and 0.5 us
with the heap kept (tests/unit/rawevents.py events through RecordBuilder and
JsonSink, 4096 records in chunks of 64, on the CI machine, a VM whose page
faults are dear), 5.9 -> 2.8 us a record for the decoding, the record and
its line together.  The heap kept is at most TRIM_THRESHOLD bytes beyond
what is in use.

Not glibc (musl has no mallopt): nothing to do.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
TRIM_THRESHOLD = 4 << 20   # free heap kept before it is given back
TOP_PAD = 1 << 20          # grown at once when the heap grows


def keep_for_batches() -> bool:
    """Set glibc's trim threshold and top pad for the steady state (after
    compiler_memory.release has trimmed what the compiler left); whether
    this C library took them.

    >>> keep_for_batches()   # glibc, as on every Debian
    True
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_TOP_PAD, TOP_PAD))
