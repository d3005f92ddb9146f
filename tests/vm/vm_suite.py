"""The tracer's end-to-end suite, run inside the test VM (tests/vm/in-vm.sh)
on a real distro kernel, once per configuration:

  SOCKTRACE_TEST_CONFIG   its name (tests/distros/matrix.py), e.g. kprobe-btf-perf
  SOCKTRACE_TEST_PROBE    the --probe value: auto | kprobe | tracepoint
  SOCKTRACE_TEST_OFFSETS  headers | btf (tests/vm/in-vm.sh hides the headers)
  SOCKTRACE_TEST_BUFFER   the --buffer value: auto | perf

One socktrace process per configuration (a bcc compile takes ~40 s under
emulation), every case of the live tracer against it.  Not collected on the
host: its name does not start with test_.
"""

import os
from collections import Counter
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "kernel"))
import capabilities  # noqa: E402
import helpers  # noqa: E402
from helpers import Peer, Socktrace, burst, listener  # noqa: E402

CONFIG = os.environ.get("SOCKTRACE_TEST_CONFIG", "tracepoint-btf")
PROBE = os.environ.get("SOCKTRACE_TEST_PROBE", "tracepoint")
OFFSETS = os.environ.get("SOCKTRACE_TEST_OFFSETS", "btf")
BUFFER = os.environ.get("SOCKTRACE_TEST_BUFFER", "auto")


@pytest.fixture(scope="module")
def run():
    """A server blocked in accept() before tracing starts, then socktrace."""
    capabilities.fexit()   # asked (and cached) while nothing traces inet_csk_accept
    blocked = Peer("block-accept")
    port = blocked.read()["port"]
    deadline = time.monotonic() + 60
    while open(f"/proc/{blocked.pid}/syscall").read().split()[0] not in ("43", "288"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    st = Socktrace("--probe", PROBE, "--buffer", BUFFER, ready_timeout=600)
    yield st, blocked, port
    blocked.close()
    if st.proc.poll() is None:
        st.proc.kill()


def one(st, type_, **match):
    return helpers.one(st, type_, timeout=60, **match)   # emulation is slow


def check(rec, sock, **extra):
    helpers.check(rec, sock, fields=("pid", "tid", "uid", "comm", "process"), **extra)


def test_mode_offsets_and_buffer(run):
    st, _, _ = run
    if PROBE == "auto":  # the cheapest mode this kernel takes, found out independently
        assert st.ready["probe"] == capabilities.expected_auto_mode(capabilities.fexit(),
                                                                    capabilities.kprobes()), \
            f"fexit errno {capabilities.fexit_errno()}, kprobes {capabilities.kprobes()}"
    else:
        assert st.ready["probe"] == PROBE
    assert st.ready["offsets"] == {"headers": "kernel headers", "btf": "BTF"}[OFFSETS]
    assert st.ready["offsets"] == capabilities.expected_offsets()
    assert st.ready["buffer"] == ("perf buffer" if BUFFER == "perf" else "ring buffer")
    print(f"SOCKTRACE-VM-MODE {CONFIG}: probe={st.ready['probe']} offsets={st.ready['offsets']} "
          f"buffer={st.ready['buffer']}")


def test_dual_stack_listener_with_ipv4_client(run):
    st, _, _ = run
    ls = listener(v6only=0)
    port = ls.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    server, _ = ls.accept()
    acc = one(st, "accept", lport=port)
    check(acc, server, v6only=False)
    assert acc["mapped"] is True
    check(one(st, "connect", lport=client.getsockname()[1]), client)


def test_v6only_listener(run):
    st, _, _ = run
    ls = listener(v6only=1, host="::1")
    client = socket.create_connection(("::1", ls.getsockname()[1]))
    server, _ = ls.accept()
    check(one(st, "accept", lport=ls.getsockname()[1]), server, v6only=True)
    check(one(st, "connect", lport=client.getsockname()[1]), client)


def test_af_inet6_connect_to_mapped_address(run):
    st, _, _ = run
    ls = listener(socket.AF_INET, host="127.0.0.1")
    client = socket.socket(socket.AF_INET6)
    client.connect(("::ffff:127.0.0.1", ls.getsockname()[1]))
    ls.accept()
    con = one(st, "connect", lport=client.getsockname()[1])
    check(con, client)
    assert con["mapped"] is True and con["sock_family"] == "AF_INET6"


def test_plain_af_inet_connect(run):
    st, _, _ = run
    ls = listener(socket.AF_INET)
    client = socket.create_connection(("127.0.0.1", ls.getsockname()[1]))
    ls.accept()
    check(one(st, "connect", lport=client.getsockname()[1]), client)


def test_accept_blocked_before_tracing(run):
    st, blocked, port = run
    client = socket.create_connection(("127.0.0.1", port))
    assert blocked.read() == {"peer_port": client.getsockname()[1]}
    rec = one(st, "accept", lport=port)
    assert (rec["pid"], rec["rport"], rec["mapped"]) == (blocked.pid, client.getsockname()[1], True)


def test_connection_never_accepted(run):
    st, _, _ = run
    owner = Peer("listen-only")
    try:
        port = owner.read()["port"]
        client = socket.create_connection(("127.0.0.1", port))
        rec = one(st, "unaccepted", lport=port)
        assert (rec["pid"], rec["mapped"], rec["rport"]) == (owner.pid, True, client.getsockname()[1])
    finally:
        owner.close()


def test_burst_each_reported_once(run):
    st, _, _ = run
    server, client, _, ports = burst(Peer, 300)
    accepts = st.wait_for(lambda r: r["type"] == "accept" and r["rport"] in ports
                          and r["pid"] == server.pid, count=300, timeout=120)
    assert Counter(r["rport"] for r in accepts) == ports
    server.close()
    client.close()


def test_udp_flows_in_this_mode(run):
    """UDP flows in this configuration: a dual-stack AF_INET6 socket's IPv4
    peer (in, MAPPED), the client's flow (out, plain), a mapped sendto from
    an AF_INET6 socket (out, MAPPED); a connected socket's send() where the
    kernel has sock_send_length (6.3+)."""
    st, _, _ = run
    server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind(("::", 0))
    port = server.getsockname()[1]
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plain.sendto(b"q", ("127.0.0.1", port))
    mapped = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    mapped.sendto(b"q", ("::ffff:127.0.0.1", port))
    connected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    connected.connect(("127.0.0.1", port))
    connected.send(b"q")
    for _ in range(3):
        server.recvfrom(16)
    got_in = one(st, "udp", direction="in", lport=port, rport=plain.getsockname()[1])
    assert (got_in["sock_family"], got_in["mapped"], got_in["v6only"], got_in["pid"]) == \
        ("AF_INET6", True, False, os.getpid())
    out = one(st, "udp", direction="out", lport=plain.getsockname()[1])
    assert (out["sock_family"], out["mapped"], out["rport"]) == ("AF_INET", False, port)
    out6 = one(st, "udp", direction="out", lport=mapped.getsockname()[1])
    assert (out6["sock_family"], out6["mapped"], out6["raddr"]) == ("AF_INET6", True, "127.0.0.1")
    # the server saw the connected client's datagram with recvfrom: in, either way
    one(st, "udp", direction="in", lport=port, rport=connected.getsockname()[1])
    if capabilities.sock_length_tracepoints():
        one(st, "udp", direction="out", lport=connected.getsockname()[1])
    else:
        time.sleep(2)
        assert not [r for r in st.records if r["type"] == "udp" and r["direction"] == "out"
                    and r["lport"] == connected.getsockname()[1]]
