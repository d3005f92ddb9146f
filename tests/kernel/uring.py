"""A minimal io_uring through its system calls (no liburing, which the test
systems lack): one submission at a time, waited for.  Enough for the
accept and connect that the tests make through io_uring.

Layouts: include/uapi/linux/io_uring.h.  x86-64 only, like the project.
"""

import ctypes
import mmap
import os
import struct

SYS_IO_URING_SETUP, SYS_IO_URING_ENTER = 425, 426
IORING_OFF_SQ_RING, IORING_OFF_CQ_RING, IORING_OFF_SQES = 0, 0x8000000, 0x10000000
IORING_ENTER_GETEVENTS = 1
IORING_FEAT_SINGLE_MMAP = 1
IORING_OP_ACCEPT, IORING_OP_CONNECT = 13, 16

# io_uring_params: 10 u32, then io_sqring_offsets and io_cqring_offsets
# (7 u32 + u32 + u64 each)
_PARAMS = struct.Struct("=10I" + "7IIQ" + "6IIIQ")
_SQE = struct.Struct("=BBHiQQIIQHHiQQ")     # 64 bytes
_CQE = struct.Struct("=QiI")                # 16 bytes

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(*args) -> int:
    r = _libc.syscall(*args)
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return r


class Ring:
    def __init__(self, entries: int = 4):
        params = ctypes.create_string_buffer(_PARAMS.size)
        self.fd = _syscall(SYS_IO_URING_SETUP, entries, params)
        p = _PARAMS.unpack(params.raw)
        self.sq_entries, self.cq_entries, features = p[0], p[1], p[5]
        (self.sq_head, self.sq_tail, self.sq_mask, _, _, _, self.sq_array) = p[10:17]
        (self.cq_head, self.cq_tail, self.cq_mask, _, _, self.cqes) = p[19:25]
        sq_size = self.sq_array + self.sq_entries * 4
        cq_size = self.cqes + self.cq_entries * _CQE.size
        if features & IORING_FEAT_SINGLE_MMAP:
            sq_size = cq_size = max(sq_size, cq_size)
        self.sq = mmap.mmap(self.fd, sq_size, offset=IORING_OFF_SQ_RING)
        self.cq = self.sq if features & IORING_FEAT_SINGLE_MMAP else \
            mmap.mmap(self.fd, cq_size, offset=IORING_OFF_CQ_RING)
        self.sqes = mmap.mmap(self.fd, self.sq_entries * _SQE.size, offset=IORING_OFF_SQES)

    def _u32(self, buf, off, value=None):
        if value is None:
            return struct.unpack_from("=I", buf, off)[0]
        struct.pack_into("=I", buf, off, value)

    def run(self, opcode: int, fd: int, addr: int = 0, off: int = 0) -> int:
        """Submit one operation and wait for it: its result (>= 0) or OSError."""
        tail = self._u32(self.sq, self.sq_tail)
        index = tail & self._u32(self.sq, self.sq_mask)
        _SQE.pack_into(self.sqes, index * _SQE.size, opcode, 0, 0, fd, off, addr, 0, 0, 1, 0, 0, 0, 0, 0)
        self._u32(self.sq, self.sq_array + index * 4, index)
        self._u32(self.sq, self.sq_tail, tail + 1)
        _syscall(SYS_IO_URING_ENTER, self.fd, 1, 1, IORING_ENTER_GETEVENTS, None, 0)
        head = self._u32(self.cq, self.cq_head)
        _, res, _ = _CQE.unpack_from(self.cq, self.cqes + (head & self._u32(self.cq, self.cq_mask)) * _CQE.size)
        self._u32(self.cq, self.cq_head, head + 1)
        if res < 0:
            raise OSError(-res, os.strerror(-res))
        return res

    def accept(self, listen_fd: int) -> int:
        return self.run(IORING_OP_ACCEPT, listen_fd)

    def connect(self, sock_fd: int, sockaddr: bytes) -> None:
        buf = ctypes.create_string_buffer(sockaddr, len(sockaddr))
        self.run(IORING_OP_CONNECT, sock_fd, ctypes.addressof(buf), len(sockaddr))

    def close(self) -> None:
        for m in {id(x): x for x in (self.sq, self.cq, self.sqes)}.values():
            m.close()
        os.close(self.fd)


def sockaddr_in6(addr: str, port: int) -> bytes:
    """struct sockaddr_in6 for `addr` (IPv6 text, ::ffff:a.b.c.d included)."""
    import socket
    return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + \
        socket.inet_pton(socket.AF_INET6, addr) + struct.pack("=I", 0)
