"""The tracer's end-to-end suite, run inside the test VM (tests/vm/in-vm.sh)
on a real distro kernel, once per configuration:

  SOCKTRACE_TEST_CONFIG  kfunc | kprobe | tracepoint | headerless
  SOCKTRACE_TEST_PROBE   the --probe value (headerless: auto)

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
from helpers import Peer, Socktrace, as_seen, burst, listener, me  # noqa: E402

CONFIG = os.environ.get("SOCKTRACE_TEST_CONFIG", "tracepoint")
PROBE = os.environ.get("SOCKTRACE_TEST_PROBE", CONFIG)


@pytest.fixture(scope="module")
def run():
    """A server blocked in accept() before tracing starts, then socktrace."""
    blocked = Peer("block-accept")
    port = blocked.read()["port"]
    deadline = time.monotonic() + 60
    while open(f"/proc/{blocked.pid}/syscall").read().split()[0] not in ("43", "288"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    st = Socktrace("--probe", PROBE, ready_timeout=600)
    yield st, blocked, port
    blocked.close()
    if st.proc.poll() is None:
        st.proc.kill()


def one(st, type_, **match):
    return st.wait_for(lambda r: r["type"] == type_ and all(r.get(k) == v for k, v in match.items()),
                       timeout=60)[0]


def check(rec, sock, **extra):
    want = {**as_seen(sock), **{k: v for k, v in me().items() if k in ("pid", "tid", "uid", "comm")},
            **extra}
    assert {k: rec.get(k) for k in want} == want


def test_mode_and_offsets(run):
    st, _, _ = run
    expected = {"kfunc": "kfunc", "kprobe": "kprobe", "tracepoint": "tracepoint"}.get(CONFIG)
    if expected:
        assert st.ready["probe"] == expected
    else:  # headerless, auto: the cheapest mode that works on this kernel
        assert st.ready["probe"] == "kfunc", st.ready
    assert st.ready["offsets"] == ("BTF" if CONFIG == "headerless" else "kernel headers")
    print(f"SOCKTRACE-VM-MODE {CONFIG}: probe={st.ready['probe']} offsets={st.ready['offsets']}")


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
