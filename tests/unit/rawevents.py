"""Build raw kernel events for unit tests."""

import ctypes
import ipaddress
import socket

from socktrace.events import RawCmdline, RawEvent, _C

TYPES = {"accept": _C["EVENT_ACCEPT"], "connect": _C["EVENT_CONNECT"],
         "unaccepted": _C["EVENT_UNACCEPTED"], "connect_failed": _C["EVENT_CONNECT_FAILED"],
         "udp_in": _C["EVENT_UDP_IN"], "udp_out": _C["EVENT_UDP_OUT"], "exec": _C["EVENT_EXEC"]}


def raw(kind="accept", family=socket.AF_INET6, saddr="::ffff:10.0.0.12", sport=4243,
        daddr="::ffff:10.0.0.20", dport=64702, pid=31307, tid=31308, uid=0,
        comm=b"java", v6only=0, ts_ns=1_000_000_000, sk=0xffff888012345678, cgroup_id=0) -> bytes:
    e = RawEvent()
    e.type = TYPES[kind]
    e.family = family
    for field, addr in (("saddr", saddr), ("daddr", daddr)):
        packed = ipaddress.ip_address(addr).packed
        getattr(e, field)[:len(packed)] = list(packed)
    e.sport, e.dport = sport, dport
    e.pid, e.tid, e.uid = pid, tid, uid
    e.comm = comm
    e.v6only = v6only
    e.ts_ns = ts_ns
    e.sk = sk
    e.netns = 4026531840
    e.cgroup_id = cgroup_id
    return bytes(e)


def raw_process(pid=31307, process=b"java", args=b"java\0-jar\0backup.jar\0") -> bytes:
    """The kernel's introduction of a process: its name and command line."""
    c = RawCmdline(type=_C["EVENT_CMDLINE"], truncated=0, len=len(args), pid=pid, process=process)
    ctypes.memmove(ctypes.addressof(c) + RawCmdline.args.offset, args, len(args))
    return bytes(c)
