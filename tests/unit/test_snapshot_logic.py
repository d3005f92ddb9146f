"""sock_diag decoding and socket classification, without the kernel."""

import socket
import struct

from socktrace.advice import advise
from socktrace.filters import Filter
from socktrace.kernel.sockdiag import DiagSocket, _MSG, _NLMSGHDR, _RTA, parse
from socktrace.output import snapshot_text
from socktrace.output.snapshot_text import explain
from socktrace.records import socket_record
from socktrace.snapshot import Owner, Snapshot, classify

V6, V4 = socket.AF_INET6, socket.AF_INET
JAVA = (Owner(100, "java", "java -jar backup.jar"),)


def diag_message(family, state, src, sport, dst, dport, inode, v6only=None):
    pack = (lambda a: socket.inet_pton(family, a).ljust(16, b"\0"))
    body = _MSG.pack(family, state, 0, 0, sport.to_bytes(2, "big"), dport.to_bytes(2, "big"),
                     pack(src), pack(dst), 0, b"\0" * 8, 0, 0, 0, 0, inode)
    if v6only is not None:
        body += _RTA.pack(5, 11) + bytes([v6only]) + b"\0" * 3
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), 20, 2, 1, 0) + body


def test_parse_sock_diag_dump():
    data = (diag_message(V6, 10, "::", 4243, "::", 0, 77, v6only=0)
            + diag_message(V6, 1, "::ffff:10.0.0.12", 4243, "::ffff:10.0.0.20", 64702, 78, v6only=0)
            + diag_message(V4, 1, "127.0.0.1", 5000, "127.0.0.1", 6000, 79)
            + _NLMSGHDR.pack(20, 3, 2, 1, 0) + b"\0\0\0\0")
    socks, done = parse(data)
    assert done
    assert socks[0] == DiagSocket(V6, 10, "::", 4243, "::", 0, 0, 0, 0, 77, False, False, False)
    # mapped addresses in dotted form, flagged (classify.address)
    assert (socks[1].src, socks[1].dst, socks[1].dport, socks[1].src_mapped, socks[1].dst_mapped) == \
        ("10.0.0.12", "10.0.0.20", 64702, True, True)
    assert (socks[2].src, socks[2].sport, socks[2].v6only) == ("127.0.0.1", 5000, None)


def test_parse_error_message():
    data = _NLMSGHDR.pack(36, 2, 0, 1, 0) + struct.pack("=i", -13) + b"\0" * 16
    try:
        parse(data)
    except OSError as exc:
        assert exc.errno == 13
    else:
        raise AssertionError("no error")


RAW = [
    DiagSocket(V6, 10, "::", 4243, "::", 0, 1, 50, 0, 10, False, False, False),  # dual-stack listener
    DiagSocket(V6, 1, "10.0.0.12", 4243, "10.0.0.20", 5000, 0, 0, 0, 11, False, True, True),
    DiagSocket(V6, 1, "10.0.0.12", 4243, "10.0.0.21", 5001, 0, 0, 0, 0, False, True, True),  # queued
    DiagSocket(V6, 5, "10.0.0.12", 4243, "10.0.0.22", 5002, 0, 0, 0, 0, False, True, True),  # orphan
    DiagSocket(V6, 1, "2001:db8::1", 4243, "2001:db8::2", 5003, 0, 0, 0, 12, False, False, False),
    DiagSocket(V4, 1, "10.0.0.12", 40000, "10.0.0.30", 22, 0, 0, 0, 13, None, False, False),  # a client
]


def classified():
    return classify(RAW, {10: JAVA, 11: JAVA, 12: JAVA, 13: (Owner(7, "ssh", "ssh db"),)}, 4026531840)


def test_classify():
    lst, mapped, queued, orphan, native, client = classified()
    assert lst.dual_stack and lst.owners == JAVA
    assert (mapped.mapped, mapped.laddr, mapped.raddr, mapped.listener.v6only, mapped.queued) == \
        (True, "10.0.0.12", "10.0.0.20", False, False)
    assert (queued.queued, queued.owners, queued.listener.owners) == (True, (), JAVA)
    assert (orphan.queued, orphan.state) == (False, "FIN_WAIT2")
    assert (native.mapped, native.sock_family) == (False, "AF_INET6")
    assert client.listener is None and client.sock_family == "AF_INET"


def test_filters_on_sockets():
    socks = classified()
    assert [s.rport for s in socks if Filter(mapped_only=True).matches_socket(s)] == [5000, 5001, 5002]
    assert [s.rport for s in socks if Filter(comm="ss").matches_socket(s)] == [22]
    assert [s.rport for s in socks if Filter(pid=100, peer="6").matches_socket(s)] == [0, 5003]


def format_row(sock):
    return snapshot_text.format_row(socket_record(sock, None))


def test_rows():
    lst, mapped, queued, orphan, *_ = classified()
    assert format_row(lst).split() == ["tcp6", "[::]:4243", "[::]:*", "LISTEN", "100/java",
                                       "dual-stack:", "takes", "IPv4", "too", "(v6only=0)"]
    assert "tcp6 MAPPED 10.0.0.12:4243" in format_row(mapped) and "via [::]:4243 v6only=0" in format_row(mapped)
    assert "queued, not accepted (listener 100/java)" in format_row(queued)
    assert "orphan" in format_row(orphan)


def test_explain():
    socks = classified()
    records = [socket_record(s, None) for s in socks]
    for s, r in zip(socks, records):
        if s.dual_stack:
            r["advice"] = advise(s.owners[0].comm, s.owners[0].cmdline, s.lport)
    text = explain(Snapshot(socks, 0), socks, records)
    assert text.startswith("100/java listens on [::]:4243 with a dual-stack AF_INET6 socket")
    assert "It carries 3 IPv4 and 1 IPv6 connections now (1 not yet accepted)." in text
    assert "-Djava.net.preferIPv4Stack=true" in text and "net.ipv6.bindv6only = 0 on this system" in text
