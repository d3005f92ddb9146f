"""kernel/bpf_syscall.py's batch map reads and deletes against a real
BPF map of this kernel: more entries than one system call's chunk, every
one read back exactly; a delete that meets an entry gone already skips it
and goes on."""

import ctypes
import os
import struct

from socktrace.kernel.bpf_syscall import bpf, delete_batch, lookup_batch

BPF_MAP_CREATE, BPF_MAP_UPDATE_ELEM = 0, 2
BPF_MAP_TYPE_LRU_HASH = 9


class _UpdateAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def lru_map(entries):
    attr = ctypes.create_string_buffer(struct.pack("=IIIII", BPF_MAP_TYPE_LRU_HASH, 8, 24, entries, 0),
                                       64)
    return bpf(BPF_MAP_CREATE, attr)


def put(fd, key, value):
    k, v = ctypes.c_uint64(key), ctypes.create_string_buffer(value, 24)
    bpf(BPF_MAP_UPDATE_ELEM, _UpdateAttr(map_fd=fd, key=ctypes.addressof(k), value=ctypes.addressof(v)))


def test_lookup_and_delete_in_batches():
    fd = lru_map(20000)
    try:
        assert lookup_batch(fd, 8, 24) == (b"", b"")   # empty: ENOENT at once
        want = {k: struct.pack("=QQQ", k, k * 2, k * 3) for k in range(1, 9001)}
        for k, v in want.items():
            put(fd, k, v)
        keys, values = lookup_batch(fd, 8, 24, chunk=1000)
        got = {struct.unpack_from("=Q", keys, i * 8)[0]: values[i * 24:(i + 1) * 24]
               for i in range(len(keys) // 8)}
        assert got == want
        gone = [k for k in want if k % 2] + [99999]   # one that is not there
        doomed = b"".join(struct.pack("=Q", k) for k in [1, 99999] + gone[1:-1])
        assert delete_batch(fd, doomed, 8) == len(gone) - 1
        keys, _ = lookup_batch(fd, 8, 24)
        assert sorted(struct.unpack(f"={len(keys) // 8}Q", keys)) == [k for k in want if not k % 2]
    finally:
        os.close(fd)
