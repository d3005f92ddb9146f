"""--lifetime: each reported TCP connection's `close` record, against real
sockets on this kernel: exact payload each way over a mapped, a native
IPv6 and a plain IPv4 connection, the lifetime, who closed it (local,
peer, reset), and the process that accepted it even when the close
happens in softirq context; a connection open before tracing began; the
report's traffic; the bytes of --metrics (exact, open and ended); each
probe mode.  Without --lifetime no close record is built.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import time

import pytest

import capabilities
from helpers import SOCKTRACE, one

OUT, BACK = 12345, 54321    # payload client -> server, server -> client
LIVED = 0.5                 # seconds between the handshake and the close


def listener(family, v6only=0):
    ls = socket.socket(family)
    if family == socket.AF_INET6:
        ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    ls.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    ls.listen()
    return ls


def exchange(ls, host, first="client"):
    """A connection to `ls` from `host` that carries OUT bytes out, BACK
    bytes back, lives LIVED seconds, and is closed by `first` (client,
    server, or reset: the client aborts with SO_LINGER 0).  Returns the
    client's local port."""
    c = socket.create_connection((host, ls.getsockname()[1]))
    a, _ = ls.accept()
    c.sendall(b"o" * OUT)
    got = 0
    while got < OUT:
        got += len(a.recv(65536))
    a.sendall(b"b" * BACK)
    got = 0
    while got < BACK:
        got += len(c.recv(65536))
    time.sleep(LIVED)
    port = c.getsockname()[1]
    if first == "reset":
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    closers = (a, c) if first == "server" else (c, a)
    closers[0].close()
    time.sleep(0.2)
    closers[1].close()
    return port


@pytest.mark.parametrize("family, host, v6only, sock", [
    (socket.AF_INET6, "127.0.0.1", 0, "MAPPED"),
    (socket.AF_INET6, "::1", 0, "AF_INET6"),
    (socket.AF_INET, "127.0.0.1", None, "AF_INET"),
])
def test_exact_payload_and_lifetime_each_family(socktrace, family, host, v6only, sock):
    ls = listener(family, v6only or 0)
    port = ls.getsockname()[1]
    st = socktrace("--lifetime", "-P", str(port))
    cport = exchange(ls, host)
    server = one(st, "close", lport=port, rport=cport)
    client = one(st, "close", lport=cport, rport=port)
    assert st.stop() == 0
    assert (server["bytes_received"], server["bytes_sent"]) == (OUT, BACK)
    assert (client["bytes_sent"], client["bytes_received"]) == (OUT, BACK)
    for r in (server, client):
        assert LIVED <= r["duration"] < LIVED + 5, r
        assert r["protocol"] == "tcp" and r["retransmits"] == 0
    assert (server["opened_by"], client["opened_by"]) == ("accept", "connect")
    assert server["mapped"] is (sock == "MAPPED")
    assert server["sock_family"] == ("AF_INET" if sock == "AF_INET" else "AF_INET6")
    # the client closed first: its FIN went first
    assert (client["closed_by"], server["closed_by"]) == ("local", "peer")
    summary = st.records[-1]
    # a close ends a connection counted already: not another event
    assert summary["events"] == 2 and summary["by_type"]["close"] == 2


@pytest.mark.parametrize("first, client_says, server_says", [
    ("server", "peer", "local"),
    ("reset", "reset", "reset"),
])
def test_who_closed(socktrace, first, client_says, server_says):
    ls = listener(socket.AF_INET6)
    port = ls.getsockname()[1]
    st = socktrace("--lifetime", "-P", str(port))
    cport = exchange(ls, "127.0.0.1", first)
    server = one(st, "close", lport=port, rport=cport)
    client = one(st, "close", lport=cport, rport=port)
    assert st.stop() == 0
    assert (client["closed_by"], server["closed_by"]) == (client_says, server_says)
    # the payload is exact however it ended
    assert (client["bytes_sent"], client["bytes_received"]) == (OUT, BACK)


def test_the_close_names_the_process_that_accepted(socktrace):
    """The server process accepts, then the peer's reset ends the
    connection in softirq context, in no process of the server's: the
    record still names the server (bcc #2304 for tcplife)."""
    server = subprocess.Popen([sys.executable, "-c", """
import socket, sys
ls = socket.socket(socket.AF_INET6)
ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
ls.bind(("::", 0)); ls.listen()
print(ls.getsockname()[1], flush=True)
sys.stdin.readline()   # accept() once socktrace runs: fexit cannot see a call already blocked
a, _ = ls.accept()
print("accepted", flush=True)
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        st = socktrace("--lifetime", "-P", str(port))
        server.stdin.write("go\n")
        server.stdin.flush()
        c = socket.create_connection(("127.0.0.1", port))
        assert server.stdout.readline().strip() == "accepted"
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()   # the server's socket dies of the reset, in softirq
        rec = one(st, "close", lport=port)
        assert st.stop() == 0
        with open(f"/proc/{server.pid}/comm") as f:
            name = f.read().strip()
        assert (rec["pid"], rec["process"], rec["closed_by"]) == (server.pid, name, "reset")
    finally:
        server.kill()
        server.wait()


def test_close_records_in_the_table_and_not_in_the_connection_metrics(socktrace):
    """The table's close row; /metrics counts the connection once, not its end."""
    import re
    from test_agreement import free_port, scrape
    ls = listener(socket.AF_INET6)
    port, mport = ls.getsockname()[1], free_port()
    st = socktrace("--lifetime", "-P", str(port), "--metrics", f"127.0.0.1:{mport}")
    table = subprocess.Popen([SOCKTRACE, "--lifetime", "-P", str(port), "--no-snapshot"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while "Ctrl-C" not in table.stderr.readline():   # the skipped modes come first
            assert table.poll() is None, table.stderr.read()
        exchange(ls, "127.0.0.1", "server")
        one(st, "close", lport=port)
        one(st, "close", rport=port)
        time.sleep(1)
    finally:
        table.send_signal(2)
        out, _ = table.communicate(timeout=120)
    rows = [line for line in out.splitlines() if line.split()[1:2] == ["close"]]
    assert len(rows) == 2, out
    assert any(re.search(rf"12\.1K/53\.0K peer$", r) for r in rows), rows
    assert any(re.search(rf"53\.0K/12\.1K local$", r) for r in rows), rows
    connections = {labels: v for (name, labels), v in scrape(mport).items()
                   if name == "socktrace_connections_total"}
    assert st.stop() == 0
    assert sorted(dict(labels)["event"] for labels in connections) == ["accept", "connect"]
    assert sum(connections.values()) == 2


def test_without_lifetime_no_close_record(socktrace):
    ls = listener(socket.AF_INET6)
    port = ls.getsockname()[1]
    st = socktrace("-P", str(port))
    cport = exchange(ls, "127.0.0.1")
    one(st, "accept", rport=cport)
    time.sleep(0.5)
    assert st.stop() == 0
    assert not [r for r in st.records if r["type"] == "close"]
    assert "close" not in st.records[-1]["by_type"]


def test_report_gives_each_listeners_traffic_by_family(socktrace, tmp_path):
    """`socktrace report` on a --lifetime log: the dual-stack listener's
    exact payload each way, per family, and its lifetimes."""
    ls = listener(socket.AF_INET6)
    port = ls.getsockname()[1]
    log = tmp_path / "trace.jsonl"
    st = socktrace("--lifetime", "-P", str(port), "-o", str(log))
    ports = [exchange(ls, host) for host in ("127.0.0.1", "127.0.0.1", "::1")]
    for p in ports:
        one(st, "close", lport=port, rport=p)
    assert st.stop() == 0
    report = json.loads(subprocess.run([SOCKTRACE, "report", "--json", str(log)], capture_output=True,
                                       text=True, check=True).stdout)
    assert report["lifetime"] is True
    [lst] = [l for l in report["dual_stack_listeners"] if l["port"] == port]
    traffic = lst["traffic"]
    assert sorted(traffic) == ["ipv6", "mapped"]
    assert {k: traffic["mapped"][k] for k in ("connections", "bytes_sent", "bytes_received")} == \
        {"connections": 2, "bytes_sent": 2 * BACK, "bytes_received": 2 * OUT}
    assert {k: traffic["ipv6"][k] for k in ("connections", "bytes_sent", "bytes_received")} == \
        {"connections": 1, "bytes_sent": BACK, "bytes_received": OUT}
    for t in traffic.values():
        assert LIVED <= t["lifetime_median"] <= t["lifetime_p95"] < LIVED + 5
    # by process: this test is both ends, its connects from AF_INET
    # sockets (ipv4) and one AF_INET6 (ipv6: both ends of that one)
    [me] = [p for p in report["processes"] if p["pid"] == os.getpid()]
    got = {f: (t["connections"], t["bytes_sent"], t["bytes_received"])
           for f, t in me["traffic"].items()}
    want = {"ipv4": (2, 2 * OUT, 2 * BACK), "mapped": (2, 2 * BACK, 2 * OUT),
            "ipv6": (2, OUT + BACK, OUT + BACK)}
    # The clients' ends are not waited for (the servers' are): one whose
    # CLOSE run the kernel skipped has no record (README, Limits; seen once
    # in a loaded chroot run: the ::1 client's).  Exact unless the summary
    # counts skipped runs, and never more missing than it counts.
    missed = json.loads(log.read_text().splitlines()[-1])["missed_runs"]
    if missed == 0 or got == want:
        assert got == want
    else:
        missing = sum(want[f][0] - got.get(f, (0,))[0] for f in want)
        assert 0 < missing <= missed and got["mapped"] == want["mapped"], (got, missed)


BYTES_PEER = f"""
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b"bytes-peer")   # PR_SET_NAME: the process name the metrics show
OUT, BACK = {OUT}, {BACK}
def listener(family):
    ls = socket.socket(family)
    if family == socket.AF_INET6:
        ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    ls.bind(("::" if family == socket.AF_INET6 else "127.0.0.1", 0))
    ls.listen()
    return ls
dual, plain = listener(socket.AF_INET6), listener(socket.AF_INET)
print(dual.getsockname()[1], plain.getsockname()[1], flush=True)
sys.stdin.readline()
held = []
for ls, host in ((dual, "127.0.0.1"), (dual, "::1"), (plain, "127.0.0.1")):
    c = socket.create_connection((host, ls.getsockname()[1]))
    a, _ = ls.accept()
    for x, y, n in ((c, a, OUT), (a, c, BACK)):
        x.sendall(b"o" * n)
        got = 0
        while got < n:
            got += len(y.recv(65536))
    held += [c, a]
print("open", flush=True)
sys.stdin.readline()
for s in held:
    s.close()
print("closed", flush=True)
sys.stdin.readline()
"""


def test_metrics_count_bytes_of_open_and_ended_connections(socktrace):
    """--metrics without --lifetime: socktrace_bytes_total, exact, by peer
    family, direction and process, for connections still open (sock_diag's
    counters now) and ended (the kernel's sums), the same before and after
    the close; and no close record is built.  The connections are a
    process of their own, named bytes-peer (this test's scrapes are
    connections too, of its own process)."""
    from test_agreement import free_port, scrape
    peer = subprocess.Popen([sys.executable, "-c", BYTES_PEER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        ports = peer.stdout.readline().split()
        mport = free_port()
        st = socktrace("-P", ",".join(ports), "--metrics", f"127.0.0.1:{mport}")

        def step(expect: str) -> None:
            peer.stdin.write("go\n")
            peer.stdin.flush()
            assert peer.stdout.readline().strip() == expect

        def carried():
            return {(dict(labels)["family"], dict(labels)["direction"]): v
                    for (name, labels), v in scrape(mport).items()
                    if name == "socktrace_bytes_total" and dict(labels)["comm"] == "bytes-peer"}
        step("open")
        st.wait_for(lambda r: r["type"] == "accept", count=3)
        # both ends are the peer's: the server's accepted end and the
        # client's connected one (an AF_INET socket to the mapped listener)
        want = {("ipv4_mapped", "received"): OUT, ("ipv4_mapped", "sent"): BACK,
                ("ipv6", "received"): OUT + BACK, ("ipv6", "sent"): OUT + BACK,
                ("ipv4", "received"): 2 * BACK + OUT, ("ipv4", "sent"): 2 * OUT + BACK}
        assert carried() == want          # all open: sock_diag's counters now
        step("closed")
        time.sleep(1)
        assert carried() == want          # all ended: the kernel's sums
        assert st.stop() == 0
        assert not [r for r in st.records if r["type"] == "close"]
    finally:
        peer.kill()
        peer.wait()


def test_a_connection_open_before_tracing_gets_its_close_record(socktrace):
    """A connection that existed before socktrace started: its close
    record, from socktrace's own sock_diag listing at start (its socket
    cookie), with duration null, its whole payload, its owner and end."""
    ls = listener(socket.AF_INET6)
    port = ls.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = ls.accept()
    c.sendall(b"o" * OUT)
    got = 0
    while got < OUT:
        got += len(a.recv(65536))
    cport = c.getsockname()[1]
    st = socktrace("--lifetime", "-P", str(port))
    a.sendall(b"b" * BACK)
    got = 0
    while got < BACK:
        got += len(c.recv(65536))
    c.close()
    time.sleep(0.2)
    a.close()
    server = one(st, "close", lport=port, rport=cport)
    client = one(st, "close", lport=cport, rport=port)
    assert st.stop() == 0
    for r in (server, client):
        assert r["duration"] is None and r["pid"] == os.getpid(), r
    assert (server["opened_by"], server["mapped"], server["v6only"]) == ("accept", True, False)
    assert (server["bytes_received"], server["bytes_sent"], server["closed_by"]) == (OUT, BACK, "peer")
    assert (client["opened_by"], client["sock_family"]) == ("connect", "AF_INET")
    assert (client["bytes_sent"], client["bytes_received"], client["closed_by"]) == (OUT, BACK, "local")
    with open("/proc/self/comm") as f:
        assert server["process"] == f.read().strip()
    # nothing else of it: no accept or connect record (it began before)
    assert not [r for r in st.records if r["type"] in ("accept", "connect")
                and cport in (r["lport"], r["rport"])]


@pytest.mark.parametrize("mode", ["tracepoint", "kprobe", "kfunc"])
def test_close_records_and_bytes_in_each_probe_mode(socktrace, mode):
    """The ends and the bytes come from the raw tracepoint every mode
    attaches, the starts from each mode's own hooks: a mapped connection's
    exact payload in its close records and in /metrics, in each mode this
    kernel loads (one it refuses is refused in one line: test_modes)."""
    from test_agreement import free_port, scrape
    works = {"tracepoint": True, "kprobe": capabilities.kprobes(), "kfunc": capabilities.fexit()}[mode]
    if not works:
        r = subprocess.run([SOCKTRACE, "--json", "--probe", mode, "--lifetime"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and r.stdout == "" and r.stderr.startswith(f"Error: probe mode {mode}: ")
        return
    ls = listener(socket.AF_INET6)
    port, mport = ls.getsockname()[1], free_port()
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)   # a UDP flow on the same port
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    udp.bind(("::", port))
    st = socktrace("--probe", mode, "--lifetime", "-P", str(port), "--metrics", f"127.0.0.1:{mport}",
                   "--udp-idle", "1")
    assert st.ready["probe"] == mode
    cport = exchange(ls, "127.0.0.1")
    server = one(st, "close", lport=port, rport=cport)
    client = one(st, "close", lport=cport, rport=port)
    udp_client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_client.sendto(b"q" * 100, ("127.0.0.1", port))
    _, peer = udp.recvfrom(4096)
    udp.sendto(b"a" * 7, peer)
    udp_client.recvfrom(4096)
    udp_client.close()
    exact = capabilities.sock_length_tracepoints()
    flow = one(st, "close", protocol="udp", lport=port, rport=peer[1])   # idle after 1 s
    assert (flow["mapped"], flow["datagrams_received"], flow["datagrams_sent"], flow["closed_by"]) \
        == (True, 1, 1, "idle")
    assert (flow["bytes_received"], flow["bytes_sent"]) == ((100, 7) if exact else (None, None))
    mapped = {dict(labels)["direction"]: v for (name, labels), v in scrape(mport).items()
              if name == "socktrace_bytes_total" and dict(labels)["family"] == "ipv4_mapped"}
    assert st.stop() == 0
    assert (server["bytes_received"], server["bytes_sent"], server["mapped"]) == (OUT, BACK, True)
    assert (client["bytes_sent"], client["bytes_received"]) == (OUT, BACK)
    assert (server["pid"], client["pid"]) == (os.getpid(), os.getpid())
    assert mapped == {"received": OUT, "sent": BACK}
