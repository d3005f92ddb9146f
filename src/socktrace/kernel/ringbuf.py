"""The consumer side of a BPF ring buffer, read through mmap in batches.

bcc's ring_buffer_consume() calls back into Python through ctypes once per
record, which cost more than decoding the record itself at 30,000 events a
second.  This reads every committed record between the consumer and the
producer position straight from the shared pages, then moves the consumer
position once: the same protocol as libbpf's ringbuf_process_ring()
(https://github.com/libbpf/libbpf/blob/master/src/ringbuf.c), and the
layout of kernel/bpf/ringbuf.c:

    offset 0           consumer position (u64), the only page we write
    offset PAGE        producer position (u64)
    offset 2 * PAGE    data, `size` bytes, mapped twice in a row so that a
                       record wrapping past the end reads contiguously

Each record starts with an 8-byte header: u32 length, whose top bit says
the producer is still writing it (busy) and the next one that the producer
discarded it, then u32 page offset (kernel use); records are 8-byte aligned.
x86 and arm64 load ordering make the plain loads below sufficient:
the kernel publishes the busy bit and positions with release stores.
"""

from __future__ import annotations

import mmap
import struct

BUSY = 1 << 31
DISCARD = 1 << 30
HEADER = 8
# native formats: one aligned 8/4-byte load each (struct's standard-size
# formats assemble the value byte by byte and could see a torn write)
_U64 = struct.Struct("@Q")
_U32 = struct.Struct("@I")


class RingReader:
    """Records of one BPF_MAP_TYPE_RINGBUF, oldest first.

    `consumer` is a writable buffer holding the consumer position;
    `producer` holds the producer position at offset 0 and the data, mapped
    twice, from `data_at` on (see the module docstring).  open() maps a
    real ring buffer; tests pass bytearrays.
    """

    def __init__(self, consumer, producer, size: int, data_at: int):
        if size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of 2")
        self._consumer = consumer
        self._producer = producer
        self._mask = size - 1
        self._data_at = data_at

    @classmethod
    def open(cls, map_fd: int, size: int) -> "RingReader":
        page = mmap.PAGESIZE
        consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                             offset=page)
        return cls(consumer, producer, size, data_at=page)

    def read(self) -> list[bytes]:
        """Copy out every committed record and release its space.

        >>> data = (struct.pack("@II", 3, 0) + b"abc" + bytes(5)
        ...         + struct.pack("@II", BUSY | 3, 0) + bytes(8))
        >>> producer = bytearray(struct.pack("@Q", 32) + data * 2)
        >>> ring = RingReader(bytearray(8), producer, size=32, data_at=8)
        >>> ring.read()   # the second record is still being written
        [b'abc']
        """
        cons = _U64.unpack_from(self._consumer)[0]
        data = self._producer
        prod = _U64.unpack_from(data)[0]
        mask, base = self._mask, self._data_at
        records = []
        while cons < prod:
            at = base + (cons & mask)
            length = _U32.unpack_from(data, at)[0]
            if length & BUSY:
                break  # committed in order: nothing after it is readable yet
            size = length & ~DISCARD
            if not length & DISCARD:
                records.append(bytes(data[at + HEADER:at + HEADER + size]))
            cons += (size + HEADER + 7) & ~7
        _U64.pack_into(self._consumer, 0, cons)
        return records

    def close(self) -> None:
        for m in (self._consumer, self._producer):
            if isinstance(m, mmap.mmap):
                m.close()
