import ctypes
import dataclasses
import socket
import subprocess
import textwrap
from datetime import datetime, timezone

import pytest

from socktrace.events import (CLOSE_STRUCT, EVENT_STRUCT, Connection, ProcessArgs, ProcessGone,
                              RawClose, RawCmdline, RawEvent, decode, parse_defines)
from socktrace.vocabulary import RecordType
from socktrace.classify import address as format_addr
from socktrace.kernel.sources import bpf_source_dir

from rawevents import _C, raw


@pytest.mark.host_tools
@pytest.mark.parametrize("mirror, struct", [(RawEvent, "event"), (RawCmdline, "cmdline_event"),
                                            (RawClose, "close_event")])
def test_python_mirrors_match_the_c_structs(tmp_path, mirror, struct):
    """RawEvent and RawCmdline mirror socktrace.h: same size and offsets, as
    the C compiler lays them out."""
    fields = [name for name, _ in mirror._fields_]
    prog = tmp_path / "layout.c"
    prog.write_text(textwrap.dedent("""\
        #include <stdio.h>
        #include <stddef.h>
        #include <linux/types.h>
        #include "socktrace.h"
        int main(void) {
            printf("size %zu\\n", sizeof(struct STRUCT));
        """).replace("STRUCT", struct)
        + "".join(f'    printf("{f} %zu\\n", offsetof(struct {struct}, {f}));\n' for f in fields)
        + "    return 0;\n}\n")
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-I", str(bpf_source_dir()), "-o", str(exe), str(prog)], check=True)
    out = dict(line.split() for line in subprocess.run([str(exe)], capture_output=True,
                                                         text=True, check=True).stdout.splitlines())
    assert int(out["size"]) == ctypes.sizeof(mirror)
    for f in fields:
        assert int(out[f]) == getattr(mirror, f).offset, f


def test_decode_mapped_accept():
    c = decode(raw(), wall_offset_ns=1_700_000_000 * 10**9)
    assert c.time == datetime(2023, 11, 14, 22, 13, 21, tzinfo=timezone.utc)
    assert c == Connection(
        kind=RecordType.ACCEPT, time_ns=1_700_000_001 * 10**9,
        sk=0xffff888012345678, pid=31307, tid=31308, uid=0, comm="java",
        netns=4026531840, cgroup_id=0, sock_family="AF_INET6", mapped=True,
        laddr="10.0.0.12", lport=4243, raddr="10.0.0.20", rport=64702, v6only=False)
    assert c.peer_is_ipv4


def test_decoded_connection_is_a_normal_frozen_dataclass():
    """decode() builds Connection without its __init__ (events._connection):
    the result must still be frozen, hash and compare like one built by it."""
    c = decode(raw(), 0)
    built = Connection(**{f.name: getattr(c, f.name) for f in dataclasses.fields(Connection)})
    assert (c, hash(c), repr(c)) == (built, hash(built), repr(built))
    assert dataclasses.replace(c, pid=1).pid == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.pid = 1


def test_decode_native_ipv6_connect_has_no_v6only():
    c = decode(raw("connect", saddr="2001:db8::1", daddr="2001:db8::2", v6only=0xff), 0)
    assert (c.kind, c.sock_family, c.mapped, c.laddr, c.raddr, c.v6only) == \
        (RecordType.CONNECT, "AF_INET6", False, "2001:db8::1", "2001:db8::2", None)
    assert not c.peer_is_ipv4


def test_decode_af_inet():
    c = decode(raw("connect", family=socket.AF_INET, saddr="127.0.0.1", daddr="192.0.2.7",
                   v6only=0xff), 0)
    assert (c.sock_family, c.mapped, c.laddr, c.raddr) == ("AF_INET", False, "127.0.0.1", "192.0.2.7")
    assert c.peer_is_ipv4


def test_decode_v6only_listener_flag():
    assert decode(raw(saddr="::1", daddr="::1", v6only=1), 0).v6only is True


def test_decode_comm_with_invalid_utf8_and_controls():
    assert decode(raw(comm=b"a\xffb\x1b"), 0).comm == "a\ufffdb\x1b"


def test_decode_exec_notice():
    assert decode(raw("exec", pid=42), 0) == ProcessGone(42)


def test_decode_unknown_type():
    data = bytearray(raw())
    data[RawEvent.type.offset] = 99
    with pytest.raises(ValueError, match="unknown event type 99"):
        decode(bytes(data), 0)


def test_format_addr_mapped_needs_exact_prefix():
    # ::ffff:0:a.b.c.d (SIIT) is not IPv4-mapped
    addr = bytes(8) + b"\xff\xff" + bytes(2) + bytes([10, 0, 0, 1])
    assert format_addr(addr, socket.AF_INET6) == ("::ffff:0:a00:1", False)


def test_parse_defines_reads_the_contract():
    d = parse_defines((bpf_source_dir() / "socktrace.h").read_text())
    assert d["COMM_LEN"] == 16
    assert len({d["EVENT_ACCEPT"], d["EVENT_CONNECT"], d["EVENT_UNACCEPTED"], d["EVENT_EXEC"]}) == 4


def test_decode_command_line():
    a = RawCmdline(type=_C["EVENT_CMDLINE"], truncated=0, len=12, pid=7, process=b"java")
    ctypes.memmove(ctypes.addressof(a) + RawCmdline.args.offset, b"java\0-jar\0x\0", 12)
    assert decode(bytes(a), 0) == ProcessArgs(7, b"java\0-jar\0x\0", False, "java")


def test_event_struct_matches_raw_event():
    from socktrace.events import EVENT_STRUCT
    assert EVENT_STRUCT.size == ctypes.sizeof(RawEvent)
    e = RawEvent.from_buffer_copy(raw(comm=b"nginx"))
    fields = EVENT_STRUCT.unpack_from(raw(comm=b"nginx"))
    scalars = [i for i, (f, t) in enumerate(RawEvent._fields_) if not hasattr(t, "_length_")]
    assert [fields[i] for i in scalars] == [getattr(e, RawEvent._fields_[i][0]) for i in scalars]
    names = [f for f, _ in RawEvent._fields_]
    assert fields[names.index("comm")].rstrip(b"\0") == b"nginx"


def test_close_struct_matches_raw_close():
    assert EVENT_STRUCT.size + CLOSE_STRUCT.size == ctypes.sizeof(RawClose)
    assert RawClose.start_ns.offset == EVENT_STRUCT.size


def test_decode_close():
    """A connection's end: its accept event, then what it carried."""
    c = RawClose()
    ctypes.memmove(ctypes.addressof(c), raw(ts_ns=3_500_000_000), ctypes.sizeof(RawEvent))
    c.conn.type = _C["EVENT_CLOSE"]
    c.start_ns, c.bytes_acked, c.bytes_received = 1_000_000_000, 12345, 54321
    c.retransmits, c.closed_by, c.opened_by = 2, _C["CLOSED_BY_PEER"], _C["EVENT_ACCEPT"]
    d = decode(bytes(c), 0)
    assert (d.kind, d.duration, d.bytes_sent, d.bytes_received, d.retransmits, d.closed_by,
            d.opened_by) == (RecordType.CLOSE, 2.5, 12345, 54321, 2, "peer", "accept")
    assert (d.pid, d.comm, d.mapped, d.lport) == (31307, "java", True, 4243)


@pytest.mark.parametrize("udp_bytes", [1, 0])
def test_decode_udp_flow_close(udp_bytes):
    """A UDP flow's end: its udp event, its datagrams, and its bytes only
    where the kernel could count them (udp_bytes: sock_*_length hooked)."""
    c = RawClose()
    ctypes.memmove(ctypes.addressof(c), raw(ts_ns=3_000_000_000), ctypes.sizeof(RawEvent))
    c.conn.type = _C["EVENT_CLOSE"]
    c.start_ns, c.bytes_acked, c.bytes_received = 1_000_000_000, 300, 21
    c.closed_by, c.opened_by, c.udp_bytes = _C["CLOSED_BY_IDLE"], _C["EVENT_UDP_IN"], udp_bytes
    c.datagrams_sent, c.datagrams_received = 3, 4
    d = decode(bytes(c), 0)
    assert (d.kind, d.protocol, d.direction, d.duration, d.closed_by, d.opened_by) == \
        (RecordType.CLOSE, "udp", "in", 2.0, "idle", "udp")
    assert (d.datagrams_sent, d.datagrams_received, d.retransmits) == (3, 4, None)
    assert (d.bytes_sent, d.bytes_received) == ((300, 21) if udp_bytes else (None, None))
