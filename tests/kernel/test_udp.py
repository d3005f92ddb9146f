"""UDP flows on this kernel: real sockets, each way a program sends and
receives, the dual-stack case from both ends, what must not be reported
(glibc's probe), the idle timeout, the filters.

Where a kernel lacks the sock_send_length tracepoint (before Linux 6.3),
send() on connected sockets is seen in no probe mode; the tests ask the
kernel (capabilities.py) and assert that.  recv() on a connected socket
is seen nowhere (README, Limits).
"""

import ctypes
import os
from collections import Counter
import socket
import subprocess
import sys
import threading
import time

import capabilities
from helpers import one
from test_live import bpf_prog_ids


def prog_types(pid):
    """The types of the BPF programs a process holds (bpftool's names)."""
    import json
    ids = bpf_prog_ids(pid)
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                         check=True).stdout
    return Counter(p["type"] for p in json.loads(out) if p["id"] in ids)

V6ONLY = socket.IPV6_V6ONLY


def udp_socket(family=socket.AF_INET6, v6only=0, host=None):
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, V6ONLY, v6only)
    s.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), 0))
    return s


def flows(tracer, port):
    """The udp records of one local or peer port, once the tracer stopped."""
    return [r for r in tracer.records if r["type"] == "udp" and port in (r["lport"], r["rport"])]


def test_ipv4_through_a_dual_stack_socket_both_ends(socktrace):
    """The IPv4 client's flow is out on a plain AF_INET socket; the
    server's is in, MAPPED on its AF_INET6 socket, with the socket's
    IPV6_V6ONLY; the reply and further datagrams make no new record."""
    server = udp_socket()
    port = server.getsockname()[1]
    st = socktrace("-u", "-P", str(port))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(5):
        client.sendto(b"q", ("127.0.0.1", port))
        data, peer = server.recvfrom(16)
        server.sendto(b"a", peer)
        client.recvfrom(16)
    cport = client.getsockname()[1]
    got_in = one(st, "udp", direction="in", lport=port)
    got_out = one(st, "udp", direction="out", lport=cport)
    assert st.stop() == 0
    assert {k: got_in[k] for k in ("protocol", "sock_family", "mapped", "laddr", "raddr", "rport",
                                    "v6only", "pid", "tid")} == {
        "protocol": "udp", "sock_family": "AF_INET6", "mapped": True, "laddr": "::",
        "raddr": "127.0.0.1", "rport": cport, "v6only": False, "pid": os.getpid(),
        "tid": threading.get_native_id()}
    assert {k: got_out[k] for k in ("sock_family", "mapped", "raddr", "rport", "v6only")} == {
        "sock_family": "AF_INET", "mapped": False, "raddr": "127.0.0.1", "rport": port, "v6only": None}
    assert len(flows(st, port)) == 2          # one flow each way, whatever was sent after
    summary = st.records[-1]
    assert [(d["protocol"], d["port"], d["mapped"]) for d in summary["dual_stack"]] == [("udp", port, 1)]


def test_native_ipv6_and_plain_ipv4_sockets(socktrace):
    v6, v4 = udp_socket(v6only=1), udp_socket(socket.AF_INET)
    p6, p4 = v6.getsockname()[1], v4.getsockname()[1]
    st = socktrace("-u", "-P", f"{p6},{p4}")
    c6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    c6.sendto(b"q", ("::1", p6))
    v6.recvfrom(16)
    c4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c4.sendto(b"q", ("127.0.0.1", p4))
    v4.recvfrom(16)
    r6 = one(st, "udp", direction="in", lport=p6)
    r4 = one(st, "udp", direction="in", lport=p4)
    assert st.stop() == 0
    assert (r6["sock_family"], r6["mapped"], r6["raddr"], r6["v6only"]) == ("AF_INET6", False, "::1", True)
    assert (r4["sock_family"], r4["mapped"], r4["raddr"], r4["v6only"]) == ("AF_INET", False, "127.0.0.1", None)
    assert st.records[-1]["dual_stack"] == []


def test_mapped_sendto_from_an_af_inet6_client(socktrace):
    """An AF_INET6 socket sending to ::ffff:127.0.0.1: the kernel hands it
    to udp_sendmsg (the IPv4 path), still an AF_INET6 socket: out, MAPPED."""
    server = udp_socket(socket.AF_INET)
    port = server.getsockname()[1]
    st = socktrace("-u", "-P", str(port))
    client = udp_socket()
    client.sendto(b"q", ("::ffff:127.0.0.1", port))
    server.recvfrom(16)
    rec = one(st, "udp", direction="out", rport=port)
    assert st.stop() == 0
    assert (rec["sock_family"], rec["mapped"], rec["raddr"], rec["lport"]) == \
        ("AF_INET6", True, "127.0.0.1", client.getsockname()[1])


def test_connected_clients(socktrace):
    """send() on connected sockets: an AF_INET6 socket connected to a
    mapped address is seen on every kernel; a plain AF_INET one needs the
    sock_send_length tracepoint (Linux 6.3+)."""
    server = udp_socket()
    port = server.getsockname()[1]
    st = socktrace("-u", "-P", str(port))
    mapped = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    mapped.connect(("::ffff:127.0.0.1", port))
    mapped.send(b"q")
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plain.connect(("127.0.0.1", port))
    plain.send(b"q")
    for _ in range(2):
        data, peer = server.recvfrom(16)
        server.sendto(b"a", peer)
    mapped.recv(16)
    plain.recv(16)
    m = one(st, "udp", direction="out", lport=mapped.getsockname()[1])
    assert (m["sock_family"], m["mapped"], m["raddr"]) == ("AF_INET6", True, "127.0.0.1")
    one(st, "udp", direction="in", lport=port, rport=plain.getsockname()[1])
    time.sleep(0.5)
    assert st.stop() == 0
    plain_out = [r for r in flows(st, port) if r["lport"] == plain.getsockname()[1]]
    if capabilities.sock_length_tracepoints():
        assert [(r["direction"], r["sock_family"], r["mapped"]) for r in plain_out] == \
            [("out", "AF_INET", False)]
    else:
        assert plain_out == []   # README, Limits: connected sockets before Linux 6.3


def test_a_connected_socket_that_receives_first(socktrace):
    """A connected socket whose peer speaks first: its receiving is not
    seen (no hook on every socket's receives), its flow is reported when it
    first sends (Linux 6.3+), once."""
    a, b = udp_socket(socket.AF_INET), udp_socket(socket.AF_INET)
    b.connect(("127.0.0.1", a.getsockname()[1]))
    port = b.getsockname()[1]
    st = socktrace("-u", "-P", str(port))
    a.sendto(b"hello", ("127.0.0.1", port))   # out, for a's unconnected socket
    assert b.recv(16) == b"hello"
    b.send(b"hello back")
    a.recvfrom(16)
    one(st, "udp", direction="out", rport=port)
    time.sleep(0.5)
    assert st.stop() == 0
    mine = [r for r in flows(st, port) if r["lport"] == port]
    if capabilities.sock_length_tracepoints():
        assert [(r["direction"], r["rport"]) for r in mine] == [("out", a.getsockname()[1])]
    else:
        assert mine == []


class Mmsghdr(ctypes.Structure):
    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    class Msghdr(ctypes.Structure):
        _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                    ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                    ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                    ("flags", ctypes.c_int)]

    _fields_ = [("hdr", Msghdr), ("len", ctypes.c_uint)]


def recvmmsg(sock, n):
    """recvmmsg(2) of n datagrams, each with its sender's address."""
    libc = ctypes.CDLL(None, use_errno=True)
    msgs = (Mmsghdr * n)()
    bufs = [ctypes.create_string_buffer(64) for _ in range(n)]
    names = [ctypes.create_string_buffer(28) for _ in range(n)]
    iovs = [Mmsghdr.Iovec(ctypes.addressof(b), 64) for b in bufs]
    for m, iov, name in zip(msgs, iovs, names):
        m.hdr.name, m.hdr.namelen = ctypes.addressof(name), 28
        m.hdr.iov, m.hdr.iovlen = ctypes.addressof(iov), 1
    got = libc.recvmmsg(sock.fileno(), msgs, n, 0x10000, None)   # MSG_WAITFORONE
    assert got > 0, os.strerror(ctypes.get_errno())
    return got


def test_a_recvmmsg_server_sees_each_sender(socktrace):
    server = udp_socket()
    port = server.getsockname()[1]
    st = socktrace("-u", "-P", str(port))
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    for c in clients:
        c.sendto(b"q", ("127.0.0.1", port))
    got = 0
    while got < 3:
        got += recvmmsg(server, 3)
    for c in clients:
        one(st, "udp", direction="in", lport=port, rport=c.getsockname()[1])
    assert st.stop() == 0
    ins = [r for r in flows(st, port) if r["direction"] == "in"]
    assert len(ins) == 3 and all(r["mapped"] for r in ins)


HOSTS = "127.0.0.1 localhost\n::1 localhost\n"


def test_glibcs_address_probe_is_not_a_flow(socktrace, tmp_path):
    """getaddrinfo(AF_UNSPEC) of a name with an IPv6 and an IPv4 address
    sorts them (RFC 6724) by connect()ing a UDP socket to each and sends
    nothing: no flow.  strace confirms the connects happened; a private
    mount namespace gives the name both addresses."""
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    probe = tmp_path / "probe.py"
    probe.write_text("import socket, sys\n"
                     "found = {int(a[0]) for a in socket.getaddrinfo('localhost', 9)}\n"
                     "print(sorted(found))\n")
    st = socktrace("-u")
    if not os.path.exists("/etc/hosts"):   # a minimal userland (the matrix's) has none to cover
        open("/etc/hosts", "w").close()
    r = subprocess.run(["unshare", "--mount", "sh", "-c",
                        f"mount --bind {hosts} /etc/hosts && exec strace -f -qq -e trace=connect "
                        f"-o {tmp_path}/strace {sys.executable} {probe}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[2, 10]"   # both families (AF_INET, AF_INET6)
    connects = [l for l in (tmp_path / "strace").read_text().splitlines() if "connect(" in l]
    assert any("AF_INET6" in l for l in connects) and any("AF_INET," in l for l in connects), connects
    pid = int(connects[0].split()[0])
    time.sleep(0.5)
    assert st.stop() == 0
    assert [x for x in st.records if x.get("pid") == pid] == []


def test_a_flow_is_new_again_after_udp_idle(socktrace):
    server = udp_socket()
    port = server.getsockname()[1]
    st = socktrace("-u", "-P", str(port), "--udp-idle", "1")
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def exchange():
        client.sendto(b"q", ("127.0.0.1", port))
        server.recvfrom(16)
    for _ in range(4):            # busy: one flow
        exchange()
        time.sleep(0.2)
    one(st, "udp", direction="in", lport=port)
    time.sleep(2.5)               # idle for longer than --udp-idle
    exchange()
    st.wait_for(lambda r: r["type"] == "udp" and r["direction"] == "in" and r["lport"] == port,
                count=2)
    assert st.stop() == 0
    assert [r["direction"] for r in flows(st, port) if r["lport"] == port] == ["in", "in"]


def test_tcp_and_udp_filters(socktrace):
    """-t: TCP only (no UDP hook is even attached), -u: UDP only."""
    server = udp_socket()
    uport = server.getsockname()[1]
    ls = socket.socket(socket.AF_INET6)
    ls.setsockopt(socket.IPPROTO_IPV6, V6ONLY, 0)
    ls.bind(("::", 0))
    ls.listen()
    tport = ls.getsockname()[1]
    only_tcp = socktrace("-t", "-P", f"{tport},{uport}")
    only_udp = socktrace("-u", "-P", f"{tport},{uport}")
    udp_hooks = Counter({"cgroup_sock_addr": 4})
    if capabilities.sock_length_tracepoints():
        udp_hooks["raw_tracepoint"] = 1
    assert prog_types(only_udp.proc.pid) - prog_types(only_tcp.proc.pid) == udp_hooks
    assert "cgroup_sock_addr" not in prog_types(only_tcp.proc.pid)
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"q", ("127.0.0.1", uport))
    server.recvfrom(16)
    c = socket.create_connection(("127.0.0.1", tport))
    a, _ = ls.accept()
    one(only_tcp, "accept", lport=tport)
    one(only_udp, "udp", lport=uport)
    assert only_tcp.stop() == 0 and only_udp.stop() == 0
    assert {r["protocol"] for r in only_tcp.records if "protocol" in r} == {"tcp"}
    assert {r["protocol"] for r in only_udp.records if "protocol" in r} == {"udp"}
    c.close()
    a.close()


SIZES = (100, 200, 300)   # the datagrams each client sends, in bytes
REPLY = 7                 # the server's answer to each


def ping_pong(client, dst, server, connected=False):
    """Each of SIZES from `client` to `server` at `dst`, each answered with
    REPLY bytes; the client sends and receives without an address when
    `connected`."""
    if connected:
        client.connect(dst)
    for n in SIZES:
        if connected:
            client.send(b"q" * n)
        else:
            client.sendto(b"q" * n, dst)
        _, peer = server.recvfrom(4096)
        server.sendto(b"a" * REPLY, peer)
        client.recv(4096) if connected else client.recvfrom(4096)
    return client.getsockname()[1]


def counts(rec):
    return (rec["datagrams_sent"], rec["datagrams_received"], rec["bytes_sent"],
            rec["bytes_received"], rec["closed_by"])


def test_udp_flow_close_records_count_each_datagram(socktrace):
    """--lifetime: each UDP flow's `close` record, when its socket closes
    (closed_by local: the clients) or after --udp-idle without a datagram
    (idle: the servers, which stay open), with its datagrams each way and,
    where the kernel has the sock_*_length tracepoints (Linux 6.3+), its
    exact bytes; null bytes before.  A mapped, a native IPv6 and a plain
    IPv4 flow, and a connected client (seen before 6.3 from the server's
    side only: README, Limits)."""
    exact = capabilities.sock_length_tracepoints()
    sent, back = sum(SIZES), REPLY * len(SIZES)
    dual, v6, v4 = udp_socket(), udp_socket(v6only=1), udp_socket(socket.AF_INET)
    st = socktrace("-u", "--lifetime", "--udp-idle", "1")
    pairs = {"mapped": (socket.AF_INET, ("127.0.0.1", dual.getsockname()[1]), dual),
             "ipv6": (socket.AF_INET6, ("::1", v6.getsockname()[1]), v6),
             "ipv4": (socket.AF_INET, ("127.0.0.1", v4.getsockname()[1]), v4)}
    ports = {}
    for name, (family, dst, server) in pairs.items():
        client = socket.socket(family, socket.SOCK_DGRAM)
        ports[name] = ping_pong(client, dst, server), dst[1]
        client.close()
    connected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ports["connected"] = ping_pong(connected, ("127.0.0.1", dual.getsockname()[1]), dual,
                                   connected=True), dual.getsockname()[1]
    connected.close()
    got = {}
    for name, (cport, sport) in ports.items():
        got[name, "server"] = one(st, "close", lport=sport, rport=cport)
        if exact or name != "connected":
            got[name, "client"] = one(st, "close", lport=cport, rport=sport)
    time.sleep(1.5)   # a sweep more: nothing comes twice
    assert st.stop() == 0
    for name in pairs:
        server, client = got[name, "server"], got[name, "client"]
        assert (server["protocol"], server["opened_by"], server["direction"], server["mapped"]) == \
            ("udp", "udp", "in", name == "mapped")
        assert counts(server) == (3, 3) + ((back, sent) if exact else (None, None)) + ("idle",)
        assert counts(client) == (3, 3) + ((sent, back) if exact else (None, None)) + ("local",)
        assert 0 <= client["duration"] < 5 and 0 <= server["duration"] < 5
        assert (server["pid"], client["pid"]) == (os.getpid(), os.getpid())
        assert "retransmits" not in server
    server = got["connected", "server"]
    assert counts(server) == (3, 3) + ((back, sent) if exact else (None, None)) + ("idle",)
    if exact:
        assert counts(got["connected", "client"]) == (3, 3, sent, back, "local")
    ended = [r for r in st.records if r["type"] == "close"
             and any(p in (r["lport"], r["rport"]) for p, _ in ports.values())]
    assert len(ended) == len(got)


def test_connected_clients_one_after_another_are_each_a_flow(socktrace):
    """A resolver's way (glibc's res_send): a new AF_INET socket per query,
    connected, send(), recv(), closed.  No cgroup program sees such a
    socket, so it has no cookie, and the next one often gets the same
    kernel address: each is still a flow of its own (Linux 6.3+: before,
    send() on a connected socket is not seen at all)."""
    server = udp_socket()
    port = server.getsockname()[1]
    st = socktrace("-u", "-P", str(port))
    lports = []
    for _ in range(200):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.connect(("127.0.0.1", port))
        c.send(b"q")
        _, peer = server.recvfrom(16)
        server.sendto(b"a", peer)
        c.recv(16)
        lports.append(c.getsockname()[1])
        c.close()
    if capabilities.sock_length_tracepoints():
        st.wait_for(lambda r: r["type"] == "udp" and r["direction"] == "out" and r["rport"] == port,
                    count=len(lports))
    time.sleep(0.5)
    assert st.stop() == 0
    outs = sorted(r["lport"] for r in flows(st, port) if r["direction"] == "out")
    assert outs == (sorted(lports) if capabilities.sock_length_tracepoints() else [])
