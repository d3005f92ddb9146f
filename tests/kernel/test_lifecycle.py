"""The edges of a connection's life, against this kernel: children that
die in the accept queue, connects that fail, connects made outside
connect() (MSG_FASTOPEN), and what each probe mode attaches."""

import os
import socket
import struct
import threading
import time

import pytest

from helpers import listener, one

TCP_SYNCNT = 7


def closed_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# (socket family, address to connect to, what the record says)
TARGETS = {
    "AF_INET": (socket.AF_INET, "127.0.0.1", ("AF_INET", False)),
    "AF_INET6-mapped": (socket.AF_INET6, "::ffff:127.0.0.1", ("AF_INET6", True)),
}


def failed(st, port, timeout=30):
    return one(st, "connect_failed", rport=port, timeout=timeout)


@pytest.mark.parametrize("target", TARGETS)
def test_refused_connect_is_reported_with_its_reason(socktrace, target):
    family, addr, (sock_family, mapped) = TARGETS[target]
    port = closed_port()
    st = socktrace("-P", str(port))
    c = socket.socket(family)
    with pytest.raises(ConnectionRefusedError):
        c.connect((addr, port))
    rec = failed(st, port)
    assert (rec["reason"], rec["sock_family"], rec["mapped"], rec["raddr"], rec["pid"], rec["tid"]) == \
        ("refused", sock_family, mapped, "127.0.0.1", os.getpid(), threading.get_native_id())
    assert "v6only" not in rec and rec["lport"] == c.getsockname()[1] != 0
    assert st.stop() == 0
    assert not [r for r in st.records if r["type"] == "connect" and r["rport"] == port]
    assert st.records[-1]["by_type"].get("connect_failed") == 1


@pytest.mark.parametrize("target", TARGETS)
def test_timed_out_connect_is_reported_with_its_reason(socktrace, target):
    """A listener whose accept queue is full drops new SYNs; with one SYN
    retry (TCP_SYNCNT=1) the kernel gives up after about 3 s."""
    family, addr, (sock_family, mapped) = TARGETS[target]
    full = listener(socket.AF_INET6, v6only=0, backlog=0)
    port = full.getsockname()[1]
    queued = socket.create_connection(("127.0.0.1", port))   # fills the queue of 1
    time.sleep(0.2)
    st = socktrace("-P", str(port))
    c = socket.socket(family)
    c.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, 1)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        c.connect((addr, port))
    assert time.monotonic() - t0 < 20
    rec = failed(st, port)
    assert (rec["reason"], rec["sock_family"], rec["mapped"], rec["pid"]) == \
        ("timeout", sock_family, mapped, os.getpid())
    assert st.stop() == 0
    queued.close()


def test_no_failed_hides_failed_connects(socktrace):
    port = closed_port()
    ok = listener(socket.AF_INET)
    st = socktrace("-P", f"{port},{ok.getsockname()[1]}", "--no-failed")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port))
    c = socket.create_connection(("127.0.0.1", ok.getsockname()[1]))
    one(st, "connect", rport=ok.getsockname()[1])   # the tracer has seen what came before
    assert st.stop() == 0
    assert not [r for r in st.records if r["type"] == "connect_failed"]
    c.close()


def test_a_child_reset_in_the_accept_queue_is_not_reported_as_queued(socktrace):
    """A client that resets its connection before the server accepted it
    leaves nothing waiting: no `unaccepted` record, at the sweep or at exit.
    The connection beside it, still queued, is reported."""
    ls = listener(v6only=0)
    port = ls.getsockname()[1]
    st = socktrace("-P", str(port), "--unaccepted-after", "0.2")
    gone = socket.create_connection(("127.0.0.1", port))
    stays = socket.create_connection(("127.0.0.1", port))
    time.sleep(0.1)
    gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    gone_port = gone.getsockname()[1]
    gone.close()                                   # RST
    one(st, "unaccepted", rport=stays.getsockname()[1])
    time.sleep(1.5)                                # a sweep or more after the reset
    assert st.stop() == 0
    assert not [r for r in st.records if r.get("rport") == gone_port and r["type"] == "unaccepted"]
    stays.close()


def test_fastopen_connect_is_reported_once(socktrace):
    """sendto(MSG_FASTOPEN) connects without connect(): reported like any
    connect, and once.  (A per-thread entry it left behind used to make the
    thread's next connect(), here a UDP one, report this socket again.)"""
    ls = listener(socket.AF_INET)
    port = ls.getsockname()[1]
    st = socktrace("-P", str(port))
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.sendto(b"x", socket.MSG_FASTOPEN, ("127.0.0.1", port))
    server, _ = ls.accept()
    assert server.recv(1) == b"x"
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("127.0.0.1", port))
    rec = one(st, "connect", rport=port)
    assert (rec["pid"], rec["lport"], rec["sock_family"]) == (os.getpid(), c.getsockname()[1], "AF_INET")
    one(st, "accept", lport=port)
    assert st.stop() == 0
    assert len([r for r in st.records if r["type"] == "connect" and r["rport"] == port]) == 1
    for s in (c, server, udp):
        s.close()


def test_io_uring_connect_and_accept_are_reported(socktrace):
    """Made through io_uring, not the system calls: the connect from its
    SYN (every mode); the accept from inet_csk_accept (function probes) or,
    in the tracepoint mode, which sees no accept system call, when this
    process closes the connection."""
    from uring import Ring, sockaddr_in6
    ls = listener(v6only=0)
    port = ls.getsockname()[1]
    st = socktrace("-P", str(port))
    ring = Ring()
    c = socket.socket(socket.AF_INET6)
    ring.connect(c.fileno(), sockaddr_in6("::ffff:127.0.0.1", port))
    fd = ring.accept(ls.fileno())
    accepted = socket.socket(fileno=fd)
    want = {"lport": port, "rport": c.getsockname()[1]}
    rec = one(st, "connect", rport=port, lport=want["rport"])
    assert (rec["pid"], rec["sock_family"], rec["mapped"]) == (os.getpid(), "AF_INET6", True)
    accepted.close()
    rec = one(st, "accept", **want)
    assert (rec["pid"], rec["mapped"], rec["v6only"]) == (os.getpid(), True, False)
    assert st.stop() == 0
    assert len([r for r in st.records if r["type"] == "accept" and r["lport"] == port]) == 1
    ring.close()
    c.close()
