"""`socktrace snapshot` on real sockets of this kernel (no BPF involved)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time


from helpers import SOCKTRACE


def snapshot(*args, user=None):
    cmd = [SOCKTRACE, "snapshot", *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r


def records(*args):
    return [json.loads(l) for l in snapshot("--json", *args).stdout.splitlines()]


def find(recs, **match):
    found = [r for r in recs if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def listener(v6only=None, family=socket.AF_INET6, host=None):
    s = socket.socket(family)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((host or ("::" if family == socket.AF_INET6 else "127.0.0.1"), 0))
    s.listen(16)
    return s


ME = os.getpid()


def test_dual_stack_listener_with_ipv4_clients():
    ls = listener(v6only=0)
    port = ls.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    accepted = [ls.accept()[0] for _ in clients]
    recs = records("-P", str(port))
    lst = find(recs, state="LISTEN", lport=port)
    assert (lst["sock_family"], lst["v6only"], lst["pid"]) == ("AF_INET6", False, ME)
    for c in clients:
        cport = c.getsockname()[1]
        srv = find(recs, lport=port, rport=cport)
        assert (srv["sock_family"], srv["mapped"], srv["state"], srv["pid"]) == \
            ("AF_INET6", True, "ESTABLISHED", ME)
        assert (srv["laddr"], srv["raddr"]) == ("127.0.0.1", "127.0.0.1")
        assert srv["listener"]["v6only"] is False and srv["listener"]["pid"] == ME
        assert srv["queued"] is False
        cli = find(recs, lport=cport)
        assert (cli["sock_family"], cli["mapped"]) == ("AF_INET", False)
    assert len(accepted) == 3


def test_v6only_listener():
    ls = listener(v6only=1, host="::1")
    port = ls.getsockname()[1]
    c = socket.create_connection(("::1", port))
    ls.accept()
    recs = records("-P", str(port))
    assert find(recs, state="LISTEN", lport=port)["v6only"] is True
    srv = find(recs, lport=port, rport=c.getsockname()[1])
    assert (srv["sock_family"], srv["mapped"], srv["raddr"]) == ("AF_INET6", False, "::1")
    assert srv["listener"]["v6only"] is True


def test_af_inet_pair():
    ls = listener(family=socket.AF_INET)
    port = ls.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port))
    ls.accept()
    recs = records("-P", str(port))
    assert find(recs, state="LISTEN", lport=port)["sock_family"] == "AF_INET"
    srv = find(recs, lport=port, rport=c.getsockname()[1])
    assert (srv["sock_family"], srv["mapped"], srv["listener"]["v6only"]) == ("AF_INET", False, None)


def test_socket_shared_by_forked_children():
    ls = listener(v6only=0)
    port = ls.getsockname()[1]
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:              # child: hold the inherited listener
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            time.sleep(60)
            os._exit(0)
        children.append(pid)
    try:
        rec = find(records("-P", str(port)), state="LISTEN", lport=port)
        assert sorted(p["pid"] for p in rec["processes"]) == sorted([ME] + children)
        row = [l for l in snapshot("-P", str(port)).stdout.splitlines() if "LISTEN" in l][0]
        assert all(f"{p}/" in row for p in [ME] + children)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_connection_waiting_in_the_queue():
    ls = listener(v6only=0)
    port = ls.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port))     # never accepted
    time.sleep(0.1)
    rec = find(records("-P", str(port)), lport=port, rport=c.getsockname()[1])
    assert (rec["queued"], rec["pid"], rec["processes"]) == (True, None, [])
    assert rec["mapped"] is True and rec["listener"]["pid"] == ME
    text = snapshot("-P", str(port)).stdout
    assert re.search(rf"tcp6 MAPPED +127.0.0.1:{port} .* ESTABLISHED +- +queued, not accepted "
                     rf"\(listener {ME}/", text)


def test_socket_in_another_network_namespace():
    """A listener in a fresh namespace (unshare -n) is seen with --netns PID,
    --all-netns and, as root, by default; not with --own-netns."""
    code = ("import socket,sys,time; s=socket.socket(socket.AF_INET6); s.bind(('::',4999)); "
            "s.listen(); print('up', flush=True); time.sleep(60)")
    proc = subprocess.Popen(["unshare", "-n", sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "up\n"
        pid = proc.pid                    # unshare without --fork execs python
        ns = os.stat(f"/proc/{pid}/ns/net").st_ino
        assert ns != os.stat("/proc/self/ns/net").st_ino
        rec = find(records("--netns", str(pid), "-P", "4999"), state="LISTEN")
        assert (rec["netns"], rec["pid"], rec["v6only"]) == (ns, pid, False)
        assert find(records("--all-netns", "-P", "4999"), state="LISTEN", netns=ns)["pid"] == pid
        assert find(records("-P", "4999"), state="LISTEN", netns=ns)["pid"] == pid
        assert not [r for r in records("--own-netns", "-P", "4999") if r["netns"] == ns]
    finally:
        proc.kill()
        proc.wait()


def test_explain_names_the_process_and_the_fix():
    ls = listener(v6only=0)
    port = ls.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port))
    ls.accept()
    text = snapshot("--explain", "-P", str(port)).stdout
    assert f"{ME}/" in text and f"listens on [::]:{port} with a dual-stack AF_INET6 socket" in text
    assert "It carries 1 IPv4 and 0 IPv6 connections now" in text
    assert "RFC 3493" in text
    # this test runs in Python: that program's advice, worded for the port
    assert "    a Python program: socket.create_server(" in text
    assert f"        socket.create_server(('0.0.0.0', {port}))" in text


def test_without_root_says_what_it_could_not_see():
    ls = listener(v6only=0)
    port = ls.getsockname()[1]
    r = snapshot("-P", str(port), user=65534)
    row = [l for l in r.stdout.splitlines() if "LISTEN" in l][0]
    assert f"{ME}/" not in row                       # root's process: not visible
    assert re.search(r"owners of \d+ sockets not visible; \d+ processes could not be looked into "
                     r"\(run as root\)", r.stdout)


def test_tracer_lists_existing_mapped_connections_first():
    ls = listener(v6only=0)
    port = ls.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port))
    ls.accept()
    r = subprocess.run([SOCKTRACE, "--probe", "tracepoint", "--json", "--duration", "0.5", "-P", str(port)],
                       capture_output=True, text=True, timeout=60)
    recs = [json.loads(l) for l in r.stdout.splitlines()]
    assert recs[0]["type"] == "existing" and recs[0]["lport"] == port and recs[0]["mapped"] is True
    assert recs[1]["type"] == "ready"
    r = subprocess.run([SOCKTRACE, "--probe", "tracepoint", "--duration", "0.5", "-P", str(port)],
                       capture_output=True, text=True, timeout=60)
    head = r.stdout.splitlines()
    assert head[0] == "Existing IPv4 connections over AF_INET6 sockets (1):"
    assert f"127.0.0.1:{port}" in head[2] and "tcp6 MAPPED" in head[2]
    r = subprocess.run([SOCKTRACE, "--probe", "tracepoint", "--json", "--duration", "0.5", "--no-snapshot",
                        "-P", str(port)], capture_output=True, text=True, timeout=60)
    assert json.loads(r.stdout.splitlines()[0])["type"] == "ready"


def test_udp_sockets():
    """UDP beside TCP: an unconnected dual-stack udp6 socket is named so,
    a v6only one is not, a socket connected to a mapped address is udp6
    MAPPED; -u keeps UDP only, and --explain covers the dual-stack one."""
    def udp(v6only, host="::"):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        s.bind((host, 0))
        return s
    dual, v6 = udp(0), udp(1)
    mapped = udp(0)
    mapped.connect(("::ffff:127.0.0.1", dual.getsockname()[1]))
    tcp = listener(v6only=0)
    ports = [s.getsockname()[1] for s in (dual, v6, mapped, tcp)]
    recs = records("-P", ",".join(map(str, ports)))
    d = find(recs, protocol="udp", lport=ports[0], state="UNCONN")
    # this test is a Python program: that entry's UDP fix
    assert (d["sock_family"], d["v6only"], d["pid"], d["advice"]["app"]) == \
        ("AF_INET6", False, ME, "python-udp")
    assert "advice" not in find(recs, protocol="udp", lport=ports[1])
    m = find(recs, protocol="udp", lport=ports[2])
    assert (m["state"], m["mapped"], m["raddr"], m["rport"]) == ("ESTABLISHED", True, "127.0.0.1", ports[0])
    assert find(recs, protocol="tcp", lport=ports[3])["state"] == "LISTEN"
    assert {r["protocol"] for r in records("-u", "-P", ",".join(map(str, ports)))} == {"udp"}
    table = snapshot("-P", ",".join(map(str, ports))).stdout
    assert re.search(rf"^udp6 +\[::\]:{ports[0]} +\[::\]:\* +UNCONN +{ME}/\S+ +dual-stack: takes IPv4 too",
                     table, re.M), table
    assert re.search(rf"^udp6 MAPPED 127\.0\.0\.1:{ports[2]} +127\.0\.0\.1:{ports[0]} +ESTABLISHED", table,
                     re.M), table
    explain = snapshot("--explain", "-u", "-P", str(ports[0])).stdout
    assert f"receives UDP on [::]:{ports[0]} with a dual-stack AF_INET6 socket" in explain
    assert "To make its IPv4 flows plain udp:" in explain
