"""The event model: raw kernel events decoded into immutable records.

`struct event` is defined once, in bpf/socktrace.h; RawEvent mirrors it and
tests/unit/test_events.py checks the layout against the C compiler's.
Decoding is a pure function of the bytes and a clock offset.
"""

from __future__ import annotations

import ctypes
import errno
import re
import struct
from functools import lru_cache
from dataclasses import dataclass
from datetime import datetime, timezone

from .classify import FAMILY_NAMES, address, peer_is_ipv4, raw_address
from .vocabulary import IN, OUT, TCP_PROTOCOL, UDP_PROTOCOL, RecordType


def parse_defines(header_text: str) -> dict[str, int]:
    """Numeric #defines of a C header.

    >>> parse_defines("#define EVENT_ACCEPT 1  /* accept() */")
    {'EVENT_ACCEPT': 1}
    """
    return {m.group(1): int(m.group(2), 0) for m in
            re.finditer(r"^#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", header_text, re.M)}


def _contract() -> dict[str, int]:
    from .kernel.sources import bpf_source_dir
    return parse_defines((bpf_source_dir() / "socktrace.h").read_text())


_C = _contract()


EVENT_CMDLINE = _C["EVENT_CMDLINE"]
EVENT_ACCEPT = _C["EVENT_ACCEPT"]
EVENT_CONNECT = _C["EVENT_CONNECT"]
EVENT_UDP_IN = _C["EVENT_UDP_IN"]
EVENT_UDP_OUT = _C["EVENT_UDP_OUT"]
EVENT_CLOSE = _C["EVENT_CLOSE"]
CLOSED_BY_LOCAL = _C["CLOSED_BY_LOCAL"]
CLOSED_BY_IDLE = _C["CLOSED_BY_IDLE"]
# the kernel's event types that are connections or flows, and their records' type
KIND_BY_TYPE = {EVENT_ACCEPT: RecordType.ACCEPT, EVENT_CONNECT: RecordType.CONNECT,
                _C["EVENT_UNACCEPTED"]: RecordType.UNACCEPTED,
                _C["EVENT_CONNECT_FAILED"]: RecordType.CONNECT_FAILED,
                EVENT_UDP_IN: RecordType.UDP, EVENT_UDP_OUT: RecordType.UDP,
                EVENT_CLOSE: RecordType.CLOSE}
# the peer family the kernel sums bytes under (struct traffic_key's family),
# named as classify.peer_family names it
TRAFFIC_FAMILIES = {_C["TRAFFIC_IPV4"]: "ipv4", _C["TRAFFIC_IPV6"]: "ipv6",
                    _C["TRAFFIC_IPV4_MAPPED"]: "mapped"}
# who ended a connection (struct close_event's closed_by)
CLOSED_BY = {CLOSED_BY_LOCAL: "local", _C["CLOSED_BY_PEER"]: "peer",
             _C["CLOSED_BY_RESET"]: "reset", CLOSED_BY_IDLE: "idle"}
# a UDP flow's direction: whether its first datagram was received or sent
DIRECTION_BY_TYPE = {EVENT_UDP_IN: IN, EVENT_UDP_OUT: OUT}
# what an operator calls the errors that end a connect's handshake
_REASONS = {errno.ECONNREFUSED: "refused", errno.ETIMEDOUT: "timeout",
            errno.EHOSTUNREACH: "unreachable", errno.ENETUNREACH: "unreachable",
            errno.ECONNRESET: "reset", 0: "closed"}


def failure_reason(err: int) -> str:
    """Why a connect failed, from its errno (the socket's sk_err, or the
    error tcp_v4/v6_connect() returned before any SYN).

    >>> failure_reason(111), failure_reason(0), failure_reason(99)
    ('refused', 'closed', 'EADDRNOTAVAIL')
    """
    return _REASONS.get(err) or errno.errorcode.get(err, str(err))

EVENT_EXEC = _C["EVENT_EXEC"]
V6ONLY_UNKNOWN = _C["V6ONLY_UNKNOWN"]


def stat_index(counter: str) -> int:
    """The index in the kernel's `stats` map of the counter a
    vocabulary.Drops field names: "lost" -> STAT_LOST's."""
    return _C[f"STAT_{counter.upper()}"]


class RawEvent(ctypes.Structure):
    """Mirror of `struct event` in bpf/socktrace.h."""
    _fields_ = [
        ("type", ctypes.c_uint8),
        ("v6only", ctypes.c_uint8),
        ("family", ctypes.c_uint16),
        ("pid", ctypes.c_uint32),
        ("cgroup_id", ctypes.c_uint64),
        ("tid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("netns", ctypes.c_uint32),
        ("err", ctypes.c_uint32),
        ("saddr", ctypes.c_uint8 * 16),
        ("daddr", ctypes.c_uint8 * 16),
        ("comm", ctypes.c_char * _C["COMM_LEN"]),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("ts_ns", ctypes.c_uint64),
        ("sk", ctypes.c_uint64),
    ]


FAMILY_NUMBERS = {name: number for number, name in FAMILY_NAMES.items()}


def existing_event(kind: RecordType, sock_family: str, laddr: str, lport: int, raddr: str,
                   rport: int, pid: int, uid: int, comm: str, netns: int,
                   v6only: bool | None) -> RawEvent:
    """The struct event of a connection found open before tracing began
    (--lifetime gives it a close record): as its accept or connect event
    would have been, with ts_ns 0 (its start is not known).

    >>> e = existing_event(RecordType.ACCEPT, "AF_INET6", "127.0.0.1", 4243, "127.0.0.1", 5000,
    ...                    7, 0, "java", 4026531840, False)
    >>> d = decode(bytes(e), 0)
    >>> (d.kind, d.mapped, d.laddr, d.rport, d.comm, d.v6only)
    (<RecordType.ACCEPT: 'accept'>, True, '127.0.0.1', 5000, 'java', False)
    """
    e = RawEvent()
    family = FAMILY_NUMBERS[sock_family]
    e.type = {RecordType.ACCEPT: EVENT_ACCEPT, RecordType.CONNECT: EVENT_CONNECT}[kind]
    e.v6only = V6ONLY_UNKNOWN if v6only is None else int(v6only)
    e.family, e.pid, e.tid, e.uid, e.netns = family, pid, pid, uid, netns
    e.saddr[:] = raw_address(laddr, family)
    e.daddr[:] = raw_address(raddr, family)
    e.comm = comm.encode()[:_C["COMM_LEN"] - 1]
    e.sport, e.dport = lport, rport
    return e


# struct event as one struct.unpack_from: several times faster per event than
# reading RawEvent's fields through ctypes (tests check both layouts agree)
EVENT_STRUCT = struct.Struct("=BBHIQIIII16s16s16sHH4xQQ")


class RawClose(ctypes.Structure):
    """Mirror of `struct close_event` in bpf/socktrace.h."""
    _fields_ = [
        ("conn", RawEvent),
        ("start_ns", ctypes.c_uint64),
        ("bytes_acked", ctypes.c_uint64),
        ("bytes_received", ctypes.c_uint64),
        ("retransmits", ctypes.c_uint32),
        ("closed_by", ctypes.c_uint8),
        ("opened_by", ctypes.c_uint8),
        ("udp_bytes", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("datagrams_sent", ctypes.c_uint64),
        ("datagrams_received", ctypes.c_uint64),
    ]


# what struct close_event adds after its struct event: start_ns,
# bytes_acked, bytes_received, retransmits, closed_by, opened_by, udp_bytes,
# datagrams_sent, datagrams_received
CLOSE_STRUCT = struct.Struct("=QQQIBBBxQQ")
_OPENED_BY, _CLOSED_BY = RawClose.opened_by.offset, RawClose.closed_by.offset


def ended_flows(keys: bytes, values: bytes, key_size: int, value_size: int,
                released: dict[int, int], now_ns: int, idle_ns: int) -> tuple[bytes, list[bytes]]:
    """The UDP flows that ended, from the packed entries of the kernel's
    `udp_flows` map (--lifetime: struct udp_flow_key -> struct udp_flow,
    whose `seen` comes first and `end` after it; each key begins with the
    socket's cookie): those idle for `idle_ns` and those whose socket was
    `released` (its cookie or address -> when).  Returns their keys, to
    delete, and the close events of the reported ones: an idle one's at
    its last datagram (closed_by CLOSED_BY_IDLE), the others' at their
    socket's release (CLOSED_BY_LOCAL).

    >>> end = RawClose(); end.opened_by = EVENT_UDP_IN; end.start_ns = 10
    >>> entry = lambda seen: struct.pack("=Q", seen) + bytes(end)
    >>> keys = struct.pack("=Q24x", 7) + struct.pack("=Q24x", 8) + struct.pack("=Q24x", 9)
    >>> values = entry(100) + entry(900) + entry(950)
    >>> gone, events = ended_flows(keys, values, 32, len(entry(0)), {9: 990}, 1000, 500)
    >>> [struct.unpack_from("=Q", k)[0] for k in (gone[:32], gone[32:])]
    [7, 9]
    >>> [(c.kind, c.closed_by, c.time_ns, c.duration) for c in (decode(e, 0) for e in events)]
    [(<RecordType.CLOSE: 'close'>, 'idle', 100, 9e-08), (<RecordType.CLOSE: 'close'>, 'local', 990, 9.8e-07)]
    """
    n = len(values) // value_size
    seen = memoryview(values).cast("Q")[::value_size // 8]
    cookies = memoryview(keys).cast("Q")[::key_size // 8]
    gone, events = [], []
    for i in range(n):
        closed = released.get(cookies[i])
        if closed is None and now_ns - seen[i] < idle_ns:
            continue
        gone.append(keys[i * key_size:(i + 1) * key_size])
        at = i * value_size + 8
        end = bytearray(values[at:at + ctypes.sizeof(RawClose)])
        if not end[_OPENED_BY]:
            continue   # never reported (a kernel-side filter): no end either
        end[0] = EVENT_CLOSE
        struct.pack_into("=Q", end, RawEvent.ts_ns.offset,
                         seen[i] if closed is None else max(closed, seen[i]))
        end[_CLOSED_BY] = CLOSED_BY_IDLE if closed is None else CLOSED_BY_LOCAL
        events.append(bytes(end))
    return b"".join(gone), events


class RawCmdline(ctypes.Structure):
    """Mirror of `struct cmdline_event` in bpf/socktrace.h."""
    _fields_ = [
        ("type", ctypes.c_uint8),
        ("truncated", ctypes.c_uint8),
        ("len", ctypes.c_uint16),
        ("pid", ctypes.c_uint32),
        ("process", ctypes.c_char * _C["COMM_LEN"]),
        ("args", ctypes.c_char * _C["CMDLINE_MAX"]),
    ]


@dataclass(frozen=True)
class Connection:
    """One new TCP connection, or UDP flow, as the kernel reported it."""
    kind: RecordType        # one of vocabulary.CONNECTION_TYPES
    time_ns: int            # Unix time, nanoseconds
    sk: int                 # kernel socket address: ties unaccepted to accept
    pid: int                # 0 when not known (unaccepted, before lookup)
    tid: int
    uid: int
    comm: str               # the thread's name
    netns: int
    cgroup_id: int
    sock_family: str        # "AF_INET" or "AF_INET6": the socket's family
    mapped: bool            # AF_INET6 socket, IPv4-mapped peer
    laddr: str              # dotted IPv4 for mapped connections, as netstat
    lport: int
    raddr: str
    rport: int
    v6only: bool | None     # the listener's IPV6_V6ONLY; None where it does not apply
    reason: str | None = None   # connect_failed only: failure_reason()
    direction: str | None = None   # udp only: in (first datagram received) or out
    # close only (--lifetime): how long it lived, what it carried, who ended it
    duration: float | None = None  # seconds since its accept/connect record (None: it was
                                   # open before tracing began)
    bytes_sent: int | None = None  # acknowledged by the peer
    bytes_received: int | None = None
    retransmits: int | None = None
    closed_by: str | None = None   # local, peer (who sent the first FIN) or reset; a UDP
                                   # flow's: local (its socket closed) or idle
    opened_by: str | None = None   # the record that began it: accept, connect or udp
    datagrams_sent: int | None = None      # a UDP flow's close only
    datagrams_received: int | None = None

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_ns / 1e9, tz=timezone.utc)

    @property
    def protocol(self) -> str:
        """tcp, or udp for a UDP flow (and its close)."""
        return UDP_PROTOCOL if self.kind is RecordType.UDP or self.direction else TCP_PROTOCOL

    @property
    def peer_is_ipv4(self) -> bool:
        """The peer's real protocol is IPv4 (plain or mapped)."""
        return peer_is_ipv4(self.sock_family, self.mapped)


@dataclass(frozen=True)
class ProcessGone:
    """A process the cache knows exec'd or exited: forget what was cached."""
    pid: int


@dataclass(frozen=True)
class ProcessArgs:
    """A process as the kernel read it at its first connection: its name
    (the thread group leader's comm) and argv.

    `args` is NUL-separated like /proc/PID/cmdline; empty when the kernel
    could not read it."""
    pid: int
    args: bytes
    truncated: bool
    process: str = ""


# sport, dport, ts_ns and sk come last in struct event
_VARYING_AT = RawEvent.sport.offset
_VARYING = struct.Struct(f"={_VARYING_AT}xHH{RawEvent.ts_ns.offset - _VARYING_AT - 4}xQ")


def origin(data: bytes) -> bytes:
    """What a connection event shares with the other connections of the
    same thread, socket family and addresses: every byte of it but the
    time, the socket address and the two ports, which struct event keeps
    at its end.  Events with the same
    origin decode to Connections that differ only in time_ns, sk, lport
    and rport, so their records can be copied from one another.

    >>> a = EVENT_STRUCT.pack(1, 0, 10, 7, 0, 7, 0, 0, 0, bytes(16), bytes(16), b"nginx",
    ...                       80, 5000, 100, 1)
    >>> b = EVENT_STRUCT.pack(1, 0, 10, 7, 0, 7, 0, 0, 0, bytes(16), bytes(16), b"nginx",
    ...                       80, 5001, 200, 2)
    >>> origin(a) == origin(b), time_and_ports(b, 0)
    (True, (200, 80, 5001))
    """
    return data[:_VARYING_AT]


def time_and_ports(data: bytes, wall_offset_ns: int) -> tuple[int, int, int]:
    """(time_ns, lport, rport) of a connection event: what origin() leaves
    out and a record shows."""
    sport, dport, ts_ns = _VARYING.unpack_from(data)
    return ts_ns + wall_offset_ns, sport, dport


def decode(data: bytes, wall_offset_ns: int) -> Connection | ProcessGone | ProcessArgs:
    """Decode one event from the kernel.

    `wall_offset_ns` turns the event's CLOCK_MONOTONIC stamp into Unix time
    (time.time_ns() - time.monotonic_ns(), taken once at start).

    A mapped accept, 10.0.0.20:64702 -> [::ffff:10.0.0.12]:4243 on a
    dual-stack listener, decodes to Connection(kind=RecordType.ACCEPT,
    sock_family='AF_INET6', mapped=True, laddr='10.0.0.12', lport=4243,
    raddr='10.0.0.20', rport=64702, v6only=False, ...).
    """
    if data[0] == EVENT_CMDLINE:
        a = RawCmdline.from_buffer_copy(data[:ctypes.sizeof(RawCmdline)])
        return ProcessArgs(a.pid, ctypes.string_at(ctypes.addressof(a) + RawCmdline.args.offset,
                                                   min(a.len, _C["CMDLINE_MAX"])), bool(a.truncated),
                           _comm(a.process))
    (type_, v6only, family, pid, cgroup_id, tid, uid, netns, err, saddr, daddr, comm,
     sport, dport, ts_ns, sk) = EVENT_STRUCT.unpack_from(data)
    if type_ == EVENT_EXEC:
        return ProcessGone(pid)
    kind = KIND_BY_TYPE.get(type_)
    if kind is None:
        raise ValueError(f"unknown event type {type_}")
    laddr, _ = address(saddr, family)
    raddr, mapped = address(daddr, family)
    fields = {
        "kind": kind, "time_ns": ts_ns + wall_offset_ns,
        "sk": sk, "pid": pid, "tid": tid, "uid": uid,
        "comm": _comm(comm),
        "netns": netns, "cgroup_id": cgroup_id,
        "sock_family": FAMILY_NAMES.get(family) or str(family),
        "mapped": mapped,
        "laddr": laddr, "lport": sport, "raddr": raddr, "rport": dport,
        "v6only": None if v6only == V6ONLY_UNKNOWN else bool(v6only),
        "reason": failure_reason(err) if kind is RecordType.CONNECT_FAILED else None,
        "direction": DIRECTION_BY_TYPE.get(type_),
    }
    if type_ == EVENT_CLOSE:
        start_ns, acked, received, retransmits, closed_by, opened_by, udp_bytes, \
            datagrams_sent, datagrams_received = CLOSE_STRUCT.unpack_from(data, EVENT_STRUCT.size)
        fields.update(duration=(ts_ns - start_ns) / 1e9 if start_ns else None,   # existing_event's
                      bytes_sent=acked,
                      bytes_received=received, retransmits=retransmits,
                      closed_by=CLOSED_BY.get(closed_by, str(closed_by)),
                      opened_by=KIND_BY_TYPE[opened_by].value)
        if opened_by in DIRECTION_BY_TYPE:   # a UDP flow's
            fields.update(direction=DIRECTION_BY_TYPE[opened_by], retransmits=None,
                          datagrams_sent=datagrams_sent, datagrams_received=datagrams_received)
            if not udp_bytes:   # no hook of this kernel saw the datagrams' lengths
                fields.update(bytes_sent=None, bytes_received=None)
    return _connection(fields)


@lru_cache(maxsize=4096)
def _comm(raw: bytes) -> str:
    """b"nginx\\0\\0..." -> 'nginx'."""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _connection(fields: dict) -> Connection:
    """Connection(**fields), at half the cost.  A frozen dataclass's
    __init__ sets its 18 fields one object.__setattr__ call at a time
    (2.3 us, the largest cost per event at 30,000 events/s); this sets the
    instance's __dict__ in one call (1.1 us) and gives an equal object
    (tests/unit/test_events.py compares them)."""
    c = _new(Connection)
    _setattr(c, "__dict__", fields)
    return c


_new = object.__new__
_setattr = object.__setattr__
