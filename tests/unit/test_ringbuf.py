"""The ring buffer reader against buffers laid out as the kernel maps them."""

import struct

import pytest

from socktrace.kernel.ringbuf import BUSY, DISCARD, RingReader

SIZE = 64


def ring(records: list[tuple[int, bytes]], start: int = 0) -> tuple[RingReader, bytearray]:
    """A ring of SIZE data bytes holding `records` ((flags, payload)) from
    position `start` on, data mapped twice as the kernel does."""
    data = bytearray(SIZE)
    pos = start
    for flags, payload in records:
        record = struct.pack("@II", flags | len(payload), 0) + payload
        for i, b in enumerate(record):
            data[(pos + i) % SIZE] = b
        pos += (len(record) + 7) & ~7
    consumer = bytearray(struct.pack("@Q", start))
    producer = bytearray(struct.pack("@Q", pos) + data + data)
    return RingReader(consumer, producer, SIZE, data_at=8), consumer


def position(consumer: bytearray) -> int:
    return struct.unpack("@Q", consumer)[0]


def test_reads_in_order_and_releases_the_space():
    r, consumer = ring([(0, b"first"), (0, b"second!!")])
    assert r.read() == [b"first", b"second!!"]
    assert position(consumer) == 16 + 16
    assert r.read() == []


def test_skips_discarded_and_stops_at_one_being_written():
    r, consumer = ring([(DISCARD, b"gone"), (0, b"kept"), (BUSY, b"half"), (0, b"later")])
    assert r.read() == [b"kept"]
    assert position(consumer) == 32   # the busy record is read next time


def test_a_record_wrapping_past_the_end_reads_whole():
    r, consumer = ring([(0, b"x" * 20)], start=SIZE - 16)
    assert r.read() == [b"x" * 20]
    assert position(consumer) == SIZE - 16 + 32


def test_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of 2"):
        RingReader(bytearray(8), bytearray(8), 48, data_at=8)
