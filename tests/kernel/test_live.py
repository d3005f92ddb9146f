"""socktrace against this kernel: every case of the issue, real sockets."""

import json
import os
from collections import Counter
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

import capabilities

from helpers import SOCKTRACE, Socktrace, burst, check, listener, one, ports
from socktrace.kernel.compiler_memory import droppable, read_smaps

IPV6_V6ONLY = socket.IPV6_V6ONLY


@pytest.fixture(scope="module")
def tracer():
    st = Socktrace()
    yield st
    assert st.stop() == 0


def test_dual_stack_listener_with_ipv4_client(tracer):
    ls = listener(v6only=0)
    port = ls.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    server, _ = ls.accept()
    acc = one(tracer, "accept", **ports(server))
    check(acc, server, v6only=bool(ls.getsockopt(socket.IPPROTO_IPV6, IPV6_V6ONLY)))
    assert acc["mapped"] is True and acc["sock_family"] == "AF_INET6" and acc["v6only"] is False
    con = one(tracer, "connect", **ports(client))
    check(con, client)
    assert con["sock_family"] == "AF_INET" and con["mapped"] is False and "v6only" not in con


def test_v6only_listener_with_ipv6_loopback_client(tracer):
    ls = listener(v6only=1, host="::1")
    port = ls.getsockname()[1]
    client = socket.create_connection(("::1", port))
    server, _ = ls.accept()
    acc = one(tracer, "accept", **ports(server))
    check(acc, server, v6only=True)
    assert acc["mapped"] is False and acc["raddr"] == "::1"
    check(one(tracer, "connect", **ports(client)), client)


def test_af_inet6_socket_connecting_to_mapped_address(tracer):
    ls = listener(socket.AF_INET, host="127.0.0.1")
    client = socket.socket(socket.AF_INET6)
    client.connect(("::ffff:127.0.0.1", ls.getsockname()[1]))
    server, _ = ls.accept()
    con = one(tracer, "connect", **ports(client))
    check(con, client)
    assert con["mapped"] is True and con["sock_family"] == "AF_INET6" and con["raddr"] == "127.0.0.1"
    acc = one(tracer, "accept", lport=ls.getsockname()[1], rport=client.getsockname()[1])
    check(acc, server, v6only=None)
    assert acc["sock_family"] == "AF_INET"


def test_plain_af_inet_connect(tracer):
    ls = listener(socket.AF_INET)
    client = socket.create_connection(("127.0.0.1", ls.getsockname()[1]))
    ls.accept()
    con = one(tracer, "connect", **ports(client))
    check(con, client)
    assert (con["sock_family"], con["mapped"]) == ("AF_INET", False)


def test_connection_never_accepted_is_attributed_to_the_listener(tracer, peer):
    owner = peer("listen-only")
    port = owner.read()["port"]
    client = socket.create_connection(("127.0.0.1", port))
    rec = one(tracer, "unaccepted", lport=port, rport=client.getsockname()[1])
    assert rec["pid"] == owner.pid
    assert rec["comm"] == open(f"/proc/{owner.pid}/comm").read().strip()
    assert "peer.py listen-only" in rec["cmdline"]
    assert [(p["pid"], p["cmdline"]) for p in rec["processes"]] == [(owner.pid, rec["cmdline"])]
    assert (rec["mapped"], rec["v6only"], rec["rport"]) == (True, False, client.getsockname()[1])
    # The tracer outlives this test: an earlier test's listener may have had the same port and
    # accepted on it, so the connection is told by both ports.
    assert not [r for r in tracer.records if r["type"] == "accept"
                and (r["lport"], r["rport"]) == (port, client.getsockname()[1])]


def test_exec_refreshes_the_cached_command_line(tracer, peer):
    ls = listener(socket.AF_INET)
    port = ls.getsockname()[1]
    p = peer("connect-exec", str(port))
    first, second = p.read()["first_port"], p.read()["first_port"]
    recs = [one(tracer, "connect", lport=lp, rport=port) for lp in (first, second)]
    assert [r["pid"] for r in recs] == [p.pid, p.pid]
    assert recs[0]["cmdline"].endswith(f"connect-exec {port}")
    assert recs[1]["cmdline"].endswith(f"connect-exec {port} again")


def test_burst_of_2000_connections_each_reported_once(socktrace, peer):
    st = socktrace("--probe", "tracepoint")
    server, client, port, ports = burst(peer, 2000)
    st.wait_for(lambda r: r["type"] == "accept" and r["lport"] == port, count=2000, timeout=30)
    assert st.stop() == 0
    recs = st.records
    summary = recs[-1]
    assert summary["type"] == "summary" and summary["lost"] == 0
    accepts = Counter(r["rport"] for r in recs if r["type"] == "accept" and r["lport"] == port)
    connects = Counter(r["lport"] for r in recs if r["type"] == "connect" and r["rport"] == port)
    unaccepted = [r for r in recs if r["type"] == "unaccepted" and r["lport"] == port]
    # Each connection once.  Since Linux 6.1 the kernel skips a program
    # already running on the CPU and counts it (missed_runs); a skipped
    # handshake transition is recovered at the socket's next one, but a
    # skipped SYN_SENT or accept exit is not (a kernel running tracepoint
    # programs preemptibly skips even in process context).  So: nothing
    # twice, nothing unknown, and a miss only where the kernel says it
    # skipped (7.x under emulation: one connection of 2,000 in about one
    # burst of nine).
    missed = summary["missed_runs"]
    for reported in (accepts, connects):
        assert not reported - ports, summary          # twice, or never made
        assert sum((ports - reported).values()) <= missed, summary
    assert len(unaccepted) <= missed, unaccepted
    if not missed:
        assert accepts == ports and connects == ports and not unaccepted
    assert {r["pid"] for r in recs if r["type"] == "accept" and r["lport"] == port} == {server.pid}
    assert {r["pid"] for r in recs if r["type"] == "connect" and r["rport"] == port} == {client.pid}
    assert all(r["mapped"] and r["v6only"] is False for r in recs
               if r["type"] == "accept" and r["lport"] == port)


@pytest.mark.parametrize("role", ["block-accept", "block-accept-close"])
def test_accept_blocked_before_tracing_starts(socktrace, peer, role):
    """The accept() already blocked when the probes were attached: a
    function probe misses its return (bcc#2165); the tracepoint mode sees
    its system call exit, the others the server's close (a short
    connection) or, later, its socket inode (a long one)."""
    server = peer(role)
    port = server.read()["port"]
    deadline = time.monotonic() + 10
    while open(f"/proc/{server.pid}/syscall").read().split()[0] not in ("43", "288"):
        assert time.monotonic() < deadline, "peer never blocked in accept()"
        time.sleep(0.05)
    st = socktrace()
    client = socket.create_connection(("127.0.0.1", port))
    assert server.read() == {"peer_port": client.getsockname()[1]}
    rec = one(st, "accept", lport=port, rport=client.getsockname()[1])
    assert (rec["pid"], rec["rport"], rec["mapped"]) == (server.pid, client.getsockname()[1], True)
    assert st.stop() == 0
    assert not [r for r in st.records if r["type"] == "unaccepted" and r["lport"] == port]
    assert len([r for r in st.records if r["type"] == "accept" and r["lport"] == port]) == 1


def test_compiler_code_is_dropped_once_loaded(tracer):
    """bcc leaves LLVM and clang resident after compiling; socktrace drops
    their clean pages (kernel/compiler_memory.py): issue 6 asks <= 100 MB."""
    with open(f"/proc/{tracer.proc.pid}/smaps") as f:
        maps = read_smaps(f.read())
    assert sum(m.rss_kb for m in maps if "libLLVM" in m.path) > 0  # it is loaded
    assert sum(m.rss_kb for m in droppable(maps)) < 1024
    assert sum(m.rss_kb for m in maps) < 100 * 1024


def test_mapped_only_filters_in_the_kernel(socktrace):
    st = socktrace("--mapped-only")
    ls = listener(v6only=0)
    port = ls.getsockname()[1]
    c6 = socket.create_connection(("::1", port)); ls.accept()
    c4 = socket.create_connection(("127.0.0.1", port)); ls.accept()
    one(st, "accept", rport=c4.getsockname()[1])
    assert st.stop() == 0
    mine = [r for r in st.records if port in (r.get("lport"), r.get("rport"))]
    assert {(r["type"], r["mapped"]) for r in mine} == {("accept", True)}


def test_perf_buffer(socktrace):
    st = socktrace("--buffer", "perf", "--probe", "tracepoint")
    assert st.ready["buffer"] == "perf buffer"
    ls = listener(v6only=0)
    c = socket.create_connection(("127.0.0.1", ls.getsockname()[1])); ls.accept()
    one(st, "connect", **ports(c))


def bpf_prog_ids(pid):
    """Ids of the BPF programs process `pid` holds open."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            ids.update(int(m) for m in re.findall(r"^prog_id:\s+(\d+)", f.read(), re.M))
    return ids


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_leaves_no_probes(socktrace, sig):
    st = socktrace("--probe", "tracepoint")
    ids = bpf_prog_ids(st.proc.pid)
    # TCP: inet_sock_set_state, the exits of accept and accept4, exec, exit;
    # UDP: four cgroup programs, and where the kernel has it (6.3+) the
    # sock_send_length tracepoint
    assert len(ids) == 5 + 4 + (1 if capabilities.sock_length_tracepoints() else 0)
    assert st.stop(sig) == 0
    assert st.records[-1]["type"] == "summary"
    # the kernel frees a program after its last reference in deferred work:
    # give it a moment
    deadline = time.monotonic() + 10
    while True:
        all_ids = {p["id"] for p in json.loads(subprocess.run(
            ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout)}
        if not ids & all_ids or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not ids & all_ids


def test_not_root_is_refused_before_loading_anything():
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        SOCKTRACE, "--json"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == "Error: socktrace needs root to load BPF programs: run it with sudo\n", \
        _as_nobody_sees_it()


def _as_nobody_sees_it() -> str:
    """Why the unprivileged user's Python might not find socktrace: seen once
    in the trixie 6.12 VM ("No module named socktrace"), not reproduced."""
    probe = ("import os, sys; print('cwd', os.getcwd(), 'sys.path', sys.path); "
             "[print(p, os.access(p, os.R_OK | os.X_OK)) for p in os.environ.get('PYTHONPATH', '').split(':')]")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    return (f"as nobody: {r.stdout}{r.stderr}; PYTHONPATH={os.environ.get('PYTHONPATH')}; "
            + subprocess.run(["ls", "-ld", "/socktrace", "/socktrace/src", "/tmp/bin"],
                             capture_output=True, text=True).stdout)


def test_table_marks_mapped_rows_and_escapes_names(peer):
    # --no-snapshot: mapped connections of other processes (the matrix's
    # suites run beside this one) would be listed before the header
    proc = subprocess.Popen([SOCKTRACE, "--probe", "tracepoint", "--no-snapshot"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().split() == ["TIME", "EVENT", "PID/COMM@CONTAINER", "LOCAL", "PEER",
                                                  "SOCKET", "V6ONLY"]
        ls = listener(v6only=0)
        port = ls.getsockname()[1]
        evil = peer("evil-connect", str(port))
        cport = evil.read()["port"]
        ls.accept()
        rows = []
        while len([r for r in rows if str(port) in r]) < 2:
            rows.append(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    accept = next(r for r in rows if f":{port} " in r and " accept " in r)
    assert f"{os.getpid()}/" in accept and "tcp6 MAPPED" in accept and accept.rstrip().endswith(" 0")
    connect = next(r for r in rows if f":{cport} " in r and " connect " in r)
    assert f"{evil.pid}/ev\\x1b[31mil\\x07" in connect
    assert "\x1b" not in "".join(rows) + out + err
    assert "socktrace: tracing with probe mode tracepoint" in err
    assert re.search(r"socktrace: \d+ events .*, [1-9]\d* IPv4 over AF_INET6 \(MAPPED\), 0 lost", err)


def test_lost_events_are_counted_and_reported(socktrace, peer):
    """A 1-page ring buffer and a consumer stopped during a burst: the
    kernel must count what it could not submit, and socktrace report it."""
    st = socktrace("--probe", "tracepoint", "--buffer-pages", "1")
    os.kill(st.proc.pid, signal.SIGSTOP)
    try:
        server, client, port, _ = burst(peer, 500)
    finally:
        os.kill(st.proc.pid, signal.SIGCONT)
    lost = st.wait_for(lambda r: r["type"] == "lost")[-1]["lost"]
    assert st.stop() == 0
    recs = st.records
    seen = len([r for r in recs if port in (r.get("lport"), r.get("rport"))])
    assert lost > 0 and seen < 1000
    assert seen + recs[-1]["lost"] >= 1000      # every event either reported or counted
    assert recs[-1]["type"] == "summary" and recs[-1]["lost"] >= lost


def test_mounts_tracefs_when_missing(tmp_path):
    """In a mount namespace without tracefs and debugfs, socktrace mounts
    them itself."""
    out = tmp_path / "out"
    # tracefs may be mounted more than once there (a mount stacked on another)
    script = ("umount -R /sys/kernel/debug 2>/dev/null; "
              "while umount /sys/kernel/tracing 2>/dev/null; do :; done; "
              "mountpoint -q /sys/kernel/tracing && exit 3; "
              f"{SOCKTRACE} --json --probe tracepoint --no-snapshot > {out} & pid=$!; "
              f"for i in $(seq 300); do grep -q ready {out} && break; sleep 0.1; done; "
              "kill -INT $pid; wait $pid")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text().splitlines()[0])["type"] == "ready"


def test_reader_gone_is_a_quiet_exit():
    """`socktrace --json | head -2`: no traceback when the pipe closes."""
    proc = subprocess.Popen([SOCKTRACE, "--json", "--probe", "tracepoint", "--no-snapshot"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert json.loads(proc.stdout.readline())["type"] == "ready"
    proc.stdout.close()
    ls = listener(v6only=0)
    for _ in range(50):  # enough output to hit the closed pipe
        socket.create_connection(("127.0.0.1", ls.getsockname()[1])).close()
        ls.accept()[0].close()
    assert proc.wait(timeout=30) == 0
    assert proc.stderr.read() == b""


def handles_sigterm(pid):
    """Python leaves SIGTERM alone; socktrace's entry point catches it
    first thing: from then on a stop is socktrace's to handle (before, the
    interpreter itself is starting, which takes seconds under the test VM's
    emulation)."""
    with open(f"/proc/{pid}/status") as f:
        caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", f.read(), re.M).group(1), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("delay", [0, 0.3])  # during the imports, during the imports or compile
def test_ctrl_c_while_starting_is_a_normal_stop(delay):
    proc = subprocess.Popen([SOCKTRACE, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while not handles_sigterm(proc.pid):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0, "")
    assert json.loads(out.splitlines()[-1])["type"] == "summary"


def test_filters_by_port_pid_and_name(socktrace, peer):
    """-P with several ports, -p (filtered in the kernel), -c: each tracer
    shows exactly the connections its filter names, and all of them."""
    listeners = [listener(v6only=0) for _ in range(3)]
    pa, pb, pc = (ls.getsockname()[1] for ls in listeners)
    by_port = socktrace("-P", f"{pa},{pb}")
    by_pid = socktrace("-p", str(os.getpid()))
    by_name = socktrace("-c", "ev\x1b")            # a name with an escape in it, as evil-connect's
    ours = [socket.create_connection(("127.0.0.1", p)) for p in (pa, pb, pc)]
    for ls in listeners:
        ls.accept()
    evil = peer("evil-connect", str(pc))
    evil_port = evil.read()["port"]
    listeners[2].accept()
    # every connection above has been through the kernel's hooks: a stop
    # drains what the buffers hold
    for st in (by_port, by_pid, by_name):
        assert st.stop() == 0
    mine = lambda st: [r for r in st.records if r["type"] in ("accept", "connect")
                       and {r["lport"], r["rport"]} & {pa, pb, pc}]
    assert {r["lport"] if r["type"] == "accept" else r["rport"] for r in mine(by_port)} == {pa, pb}
    assert len(mine(by_port)) == 4                   # an accept and a connect on each
    assert {r["pid"] for r in mine(by_pid)} == {os.getpid()} and len(mine(by_pid)) == 7
    assert [(r["type"], r["pid"], r["lport"]) for r in mine(by_name)] == [("connect", evil.pid, evil_port)]


def test_a_thread_with_its_own_name_accepts_for_its_process(tracer):
    """As in a JVM (http-nio-8080-Acceptor in process java): `comm` is the
    accepting thread's name, `process` the process's, which the table shows."""
    import ctypes
    import threading
    from socktrace.output.table import format_row
    ls = listener(v6only=0)
    accepted = []

    def acceptor():
        ctypes.CDLL(None).prctl(15, b"acceptor-7", 0, 0, 0)    # PR_SET_NAME, this thread only
        accepted.append(ls.accept()[0])
    t = threading.Thread(target=acceptor)
    t.start()
    c = socket.create_connection(("127.0.0.1", ls.getsockname()[1]))
    t.join(30)
    rec = one(tracer, "accept", **ports(accepted[0]))
    process = open("/proc/self/comm").read().strip()
    assert (rec["pid"], rec["comm"], rec["process"], rec["mapped"]) == (os.getpid(), "acceptor-7", process, True)
    assert f" {os.getpid()}/{process[:20 - len(str(os.getpid())) - 2]}" in format_row(rec)
    c.close()
