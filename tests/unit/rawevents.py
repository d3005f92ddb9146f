"""Build raw kernel events for unit tests."""

import ipaddress
import socket

from socktrace.events import RawEvent, _C

TYPES = {"accept": _C["EVENT_ACCEPT"], "connect": _C["EVENT_CONNECT"],
         "unaccepted": _C["EVENT_UNACCEPTED"], "connect_failed": _C["EVENT_CONNECT_FAILED"],
         "exec": _C["EVENT_EXEC"]}


def raw(kind="accept", family=socket.AF_INET6, saddr="::ffff:10.0.0.12", sport=4243,
        daddr="::ffff:10.0.0.20", dport=64702, pid=31307, tid=31308, uid=0,
        comm=b"java", process=None, v6only=0, ts_ns=1_000_000_000, sk=0xffff888012345678) -> bytes:
    e = RawEvent()
    e.type = TYPES[kind]
    e.family = family
    for field, addr in (("saddr", saddr), ("daddr", daddr)):
        packed = ipaddress.ip_address(addr).packed
        getattr(e, field)[:len(packed)] = list(packed)
    e.sport, e.dport = sport, dport
    e.pid, e.tid, e.uid = pid, tid, uid
    e.comm = comm
    e.process = comm if process is None else process   # the main thread's name, by default
    e.v6only = v6only
    e.ts_ns = ts_ns
    e.sk = sk
    e.netns = 4026531840
    return bytes(e)
