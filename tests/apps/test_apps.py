"""Each application of apps.toml, from Debian's packages, against socktrace:

1. in its stock configuration, and where that is not dual-stack in the
   dual-stack one operators meet, IPv4 and IPv6 clients connect; socktrace
   must classify each (MAPPED only through a dual-stack socket: never a
   false alarm) and name the application's fix in `snapshot --explain`,
   `snapshot --json`, `report` and the live summary;
2. the fix is applied exactly as the advice words it (its `change` in
   place of its `replaces`, or the flag), the server restarted: a new IPv4
   connection must be plain tcp, and IPv6 served or refused as the entry's
   `ipv6` says.

The servers run in their own userland (tests/distros/build.py build_apps,
built in the background with the matrix's jobs), entered as a chroot on
this kernel and in this network namespace (approot.py).  No conftest.py
here: --doctest-modules would import it under the name of tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))
from approot import AppRoot  # noqa: E402
from helpers import SOCKTRACE, Socktrace  # noqa: E402
from socktrace import __version__ as socktrace_version  # noqa: E402
from socktrace.advice import KnownApp, known_apps  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.matrix("apps", "servers")]


@pytest.fixture
def root(matrix):
    assert os.geteuid() == 0, "the application tests load BPF programs: run them as root (make test)"
    r = AppRoot(matrix.futures[("apps", "servers")].result())
    yield r
    r.close()


APPS = {a.name: a for a in known_apps()}
# the IPv4 address a fix that names one gets here (prometheus's ADDRESS)
ADDRESS = "127.0.0.1"


def fixed(app: KnownApp, text: str, port: int) -> str:
    """`text` with the entry's change made exactly as the advice words it:
    its `change` in place of its `replaces`."""
    old, new = app.replaces.format(port=port), app.change.format(port=port)
    assert text.count(old) == 1, f"{app.name}: {old!r} not once in {text!r}"
    return text.replace(old, new)


def apply_fix(root, app: KnownApp, inside: str, port: int) -> None:
    """The entry's change made in the file `inside` the servers' tree."""
    path = root.path(inside)
    path.write_text(fixed(app, path.read_text(), port))


def connect(host: str, port: int) -> int | None:
    """A client's connection: its local port, or None when refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(10)
        try:
            s.connect((host, port))
        except ConnectionRefusedError:
            return None
        return s.getsockname()[1]


def listening(port: int) -> list[str]:
    """`ss` on this host's listeners of `port` (the servers share its
    network namespace)."""
    out = subprocess.run(["ss", "-Htln", f"sport = :{port}"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def wait_listening(root, proc, port: int, sockets: int, timeout: float = 60,
                   listed: Callable[[int], list[str]] = listening) -> None:
    """Until the server has `sockets` sockets on `port`: TCP listeners, or
    with listed=udp_bound its UDP sockets."""
    deadline = time.monotonic() + timeout
    while len(listed(port)) < sockets:
        assert proc.poll() is None, f"the server exited {proc.returncode}:\n{root.log_of(proc)}"
        assert time.monotonic() < deadline, f"nothing on {port}:\n{root.log_of(proc)}"
        time.sleep(0.1)


@dataclass
class Trial:
    """What socktrace said about one run of a server."""
    accepts: dict[str, dict | None]          # "ipv4"/"ipv6" -> its accept record (None: refused)
    summary: dict
    explain: str
    listeners: list[dict]                    # snapshot --json LISTEN (UDP: UNCONN) records of the port
    report: dict
    records: list[dict] = field(default_factory=list)


def trial(root, start: Callable[[], subprocess.Popen], port: int, sockets: int = 1,
          udp_client: Callable[[str, int], int | None] | None = None) -> Trial:
    """socktrace live (-P port), the server, one IPv4 and one IPv6 client,
    snapshot --explain and --json while it runs, report on the records.
    With a `udp_client` (ask(...)), UDP: socktrace -u, the server's UDP
    sockets, and Trial.accepts holds the server's `udp in` flows."""
    if udp_client is None:
        listed, only, client, state = listening, (), connect, "LISTEN"

        def came(r, c):
            return r["type"] == "accept" and r["rport"] == c
    else:
        listed, only, client, state = udp_bound, ("-u",), udp_client, "UNCONN"

        def came(r, c):
            return r["type"] == "udp" and r["direction"] == "in" and r["lport"] == port \
                and r["rport"] == c
    assert not listed(port), f"port {port} is taken on this machine: {listed(port)}"
    st = Socktrace(*only, "-P", str(port))
    proc = start()
    try:
        wait_listening(root, proc, port, sockets, listed=listed)
        clients = {"ipv4": client("127.0.0.1", port), "ipv6": client("::1", port)}
        accepts = {}
        for family, cport in clients.items():
            accepts[family] = None if cport is None else st.wait_for(
                lambda r, c=cport: came(r, c))[0]
        explain = run_socktrace("snapshot", "--explain", *only, "-P", str(port))
        sockets_now = [json.loads(line) for line in
                       run_socktrace("snapshot", "--json", *only, "-P", str(port)).splitlines()]
        sockets_now = [r for r in sockets_now if r["state"] == state]
    finally:
        assert st.stop() == 0, st.stderr
        root.stop(proc)
    records = st.records
    log = root.scratch / "trace.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = json.loads(run_socktrace("report", "--json", str(log)))
    return Trial(accepts, next(r for r in records if r["type"] == "summary"), explain, sockets_now,
                 report, records)


def run_socktrace(*args: str) -> str:
    r = subprocess.run([SOCKTRACE, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"socktrace {' '.join(args)}: {r.returncode}\n{r.stderr}"
    return r.stdout


def assert_dual_stack(t: Trial, app: KnownApp, process: str, port: int, in_report: bool = True) -> None:
    """IPv4 came MAPPED through the AF_INET6 socket, IPv6 native; every
    output names the application's fix, worded for the port."""
    v4, v6 = t.accepts["ipv4"], t.accepts["ipv6"]
    assert v4 is not None and v6 is not None, t.accepts
    assert (v4["sock_family"], v4["mapped"], v4["v6only"], v4["laddr"], v4["process"]) == \
        ("AF_INET6", True, False, "127.0.0.1", process)
    assert (v6["sock_family"], v6["mapped"], v6["laddr"]) == ("AF_INET6", False, "::1")
    change = app.change.format(port=port)
    # each line of the change on a line of its own, as it is to be written
    shown = [line.strip() for line in t.explain.splitlines()]
    assert f"{app.title}: " in t.explain and all(line.strip() in shown for line in change.splitlines()), \
        t.explain
    assert [r["advice"]["app"] for r in t.listeners if r["sock_family"] == "AF_INET6"] == [app.name]
    assert [(d["port"], d["process"], d["mapped"], d["advice"]["app"], d["advice"]["change"])
            for d in t.summary["dual_stack"]] == [(port, process, 1, app.name, change)]
    listeners = t.report["dual_stack_listeners"]
    assert [(l["port"], l["ipv4_mapped"]) for l in listeners] == [(port, 1)]
    if in_report:   # a log does not say whether a program was a Go one
        assert listeners[0]["advice"]["app"] == app.name


def assert_plain(t: Trial, port: int, ipv6: str) -> None:
    """IPv4 on a plain AF_INET socket; IPv6 on a separate socket ("kept")
    or refused ("lost"); nothing dual-stack anywhere."""
    v4, v6 = t.accepts["ipv4"], t.accepts["ipv6"]
    assert v4 is not None and (v4["sock_family"], v4["mapped"], v4["laddr"]) == \
        ("AF_INET", False, "127.0.0.1"), v4
    if ipv6 == "kept":
        assert v6 is not None and (v6["sock_family"], v6["mapped"], v6["v6only"]) == \
            ("AF_INET6", False, True), v6
    else:
        assert v6 is None, f"IPv6 still served: {v6}"
    assert t.summary["mapped"] == 0 and t.summary["dual_stack"] == []
    assert "No dual-stack (IPV6_V6ONLY=0) listener or UDP socket here." in t.explain
    assert not any(r.get("v6only") is False for r in t.listeners), t.listeners
    assert t.report["dual_stack_listeners"] == []


def assert_separate(t: Trial, port: int) -> None:
    """An application that opens one socket per family: both served, neither MAPPED."""
    assert_plain(t, port, "kept")


# ---------------------------------------------------------------- the servers

def test_nginx(root):
    """Stock: 'listen 80' and 'listen [::]:80', two sockets.  The dual-stack
    configuration operators meet: 'listen [::]:80 ipv6only=off'."""
    app, port = APPS["nginx"], 80
    site = "/etc/nginx/sites-enabled/default"
    start = lambda: root.start("nginx", "-g", "daemon off;")   # noqa: E731
    assert_separate(trial(root, start, port, sockets=2), port)
    root.edit(site, "\tlisten 80 default_server;\n\tlisten [::]:80 default_server;\n",
              "\tlisten [::]:80 ipv6only=off;\n")
    assert_dual_stack(trial(root, start, port), app, "nginx", port)
    apply_fix(root, app, site, port)
    root.run("nginx", "-t")
    assert_plain(trial(root, start, port, sockets=2), port, app.ipv6)


def test_apache(root):
    """Stock Debian: 'Listen 80', one dual-stack socket."""
    app, port = APPS["apache"], 80
    start = lambda: root.start("sh", "-c", ". /etc/apache2/envvars && mkdir -p \"$APACHE_RUN_DIR\" "   # noqa: E731
                               "\"$APACHE_LOCK_DIR\" \"$APACHE_LOG_DIR\" && exec apache2 -DFOREGROUND")
    assert_dual_stack(trial(root, start, port), app, "apache2", port)
    conf = "/etc/apache2/ports.conf"
    apply_fix(root, app, conf, port)
    assert_plain(trial(root, start, port), port, app.ipv6)


def test_haproxy(root):
    """Debian's haproxy.cfg has no frontend: the one operators write, 'bind :::8080'."""
    app, port = APPS["haproxy"], 8080
    cfg = "/etc/haproxy/haproxy.cfg"
    with open(root.path(cfg), "a") as f:
        f.write(f"\nfrontend web\n    bind :::{port}\n    default_backend none\n\n"
                "backend none\n    server nothing 127.0.0.1:9\n")
    root.run("mkdir", "-p", "/run/haproxy")   # the unit's RuntimeDirectory, for its admin socket
    start = lambda: root.start("haproxy", "-db", "-f", cfg)   # noqa: E731
    assert_dual_stack(trial(root, start, port), app, "haproxy", port)
    apply_fix(root, app, cfg, port)
    root.run("haproxy", "-c", "-f", cfg)
    assert_plain(trial(root, start, port, sockets=2), port, app.ipv6)


def test_squid(root):
    """Stock Debian: 'http_port 3128', one dual-stack socket."""
    app, port = APPS["squid"], 3128
    conf = "/etc/squid/squid.conf"
    root.run("sh", "-c", "mkdir -p /run/squid && chown proxy:proxy /run/squid")
    start = lambda: root.start("squid", "-N", "-f", conf)   # noqa: E731
    assert_dual_stack(trial(root, start, port), app, "squid", port)
    apply_fix(root, app, conf, port)
    root.run("squid", "-k", "parse", "-f", conf)
    assert_plain(trial(root, start, port), port, app.ipv6)


def test_sshd(root):
    """Stock: no ListenAddress, AddressFamily any: 0.0.0.0 and :: apart."""
    root.run("mkdir", "-p", "/run/sshd")
    assert_separate(trial(root, lambda: root.start("/usr/sbin/sshd", "-D"), 22, sockets=2), 22)


JAVA_SERVER = """import java.net.*;
public class Server {
    public static void main(String[] args) throws Exception {
        ServerSocket server = new ServerSocket(Integer.parseInt(args[0]));
        while (true) server.accept().close();
    }
}
"""


def test_java(root):
    """A ServerSocket, as any JVM server opens it: dual-stack.  The fix as
    the drop-in gives it (JAVA_TOOL_OPTIONS); preferIPv6Addresses is no fix."""
    app, port = APPS["java"], 8080
    root.path("/srv/Server.java").write_text(JAVA_SERVER)
    root.run("javac", "-d", "/srv", "/srv/Server.java")

    def start(options: str = ""):
        return lambda: root.start("java", "-cp", "/srv", "Server", str(port),
                                  env={"JAVA_TOOL_OPTIONS": options} if options else None)
    assert_dual_stack(trial(root, start(), port), app, "java", port)
    assert_dual_stack(trial(root, start("-Djava.net.preferIPv6Addresses=true"), port), app, "java", port)
    assert_plain(trial(root, start(app.change), port), port, app.ipv6)


NODE_SERVER = """const http = require('http');
const server = http.createServer((req, res) => res.end('ok'));
server.listen({port});
"""


def prove_program(root, app: KnownApp, port: int, inside: str, source: str, *command: str) -> None:
    """A program's listening code as operators write it (dual-stack), then
    with the entry's change made in it."""
    root.path(inside).write_text(source.replace("{port}", str(port)))
    start = lambda: root.start(*command)   # noqa: E731
    assert_dual_stack(trial(root, start, port), app, command[0], port)
    apply_fix(root, app, inside, port)
    assert_plain(trial(root, start, port), port, app.ipv6)


def test_node(root):
    prove_program(root, APPS["node"], 3000, "/srv/app.js", NODE_SERVER, "node", "/srv/app.js")


WSGI_ASGI = """def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def asgi(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def test_gunicorn(root):
    app, port = APPS["gunicorn"], 8000
    root.path("/srv/web.py").write_text(WSGI_ASGI)
    command = f"gunicorn --bind [::]:{port} --chdir /srv web:app"
    start = lambda: root.start(*shlex.split(command))   # noqa: E731
    assert_dual_stack(trial(root, start, port), app, "gunicorn", port)
    command = fixed(app, command, port)
    assert_plain(trial(root, start, port), port, app.ipv6)


def test_uvicorn(root):
    """'--host ::' is IPv6 only (asyncio sets IPV6_V6ONLY): IPv4 is refused,
    nothing is MAPPED; '--host 0.0.0.0' is plain IPv4."""
    port = 8000
    root.path("/srv/web.py").write_text(WSGI_ASGI)

    def start(host: str):
        return lambda: root.start("python3", "-m", "uvicorn", "--host", host, "--port", str(port),
                                  "--app-dir", "/srv", "web:asgi")
    t = trial(root, start("::"), port)
    assert t.accepts["ipv4"] is None and t.accepts["ipv6"]["v6only"] is True
    assert t.summary["mapped"] == 0 and t.summary["dual_stack"] == []
    assert_plain(trial(root, start("0.0.0.0"), port), port, "lost")


def test_python_http_server(root):
    app, port = APPS["python-http.server"], 8000
    command = f"python3 -m http.server --bind :: {port}"
    start = lambda: root.start(*shlex.split(command))   # noqa: E731
    assert_dual_stack(trial(root, start, port), app, "python3", port)
    command = fixed(app, command, port)
    assert_plain(trial(root, start, port), port, app.ipv6)


PYTHON_SERVER = """import socket

server = socket.create_server(('', {port}), family=socket.AF_INET6, dualstack_ipv6=True)
while True:
    server.accept()[0].close()
"""


def test_python(root):
    prove_program(root, APPS["python"], 8000, "/srv/serve.py", PYTHON_SERVER, "python3", "/srv/serve.py")


def test_prometheus(root):
    """Stock ':9090' and the '0.0.0.0:9090' operators try first are both
    dual-stack (Go); one IPv4 address is the fix."""
    app, port = APPS["prometheus"], 9090

    def start(*flags: str):
        return lambda: root.start("prometheus", "--config.file=/etc/prometheus/prometheus.yml",
                                  "--storage.tsdb.path=/tmp/prometheus", *flags)
    assert_dual_stack(trial(root, start(), port), app, "prometheus", port)
    assert_dual_stack(trial(root, start(f"--web.listen-address=0.0.0.0:{port}"), port),
                      app, "prometheus", port)
    flag = app.change.format(port=port).replace("ADDRESS", ADDRESS)
    assert_plain(trial(root, start(flag), port), port, app.ipv6)


GO_SERVER = """package main

import "net"

func main() {
	server, err := net.Listen("tcp", ":{port}")
	if err != nil {
		panic(err)
	}
	for {
		if c, err := server.Accept(); err == nil {
			c.Close()
		}
	}
}
"""


def test_go(root):
    """A plain Go program, recognised as one from its executable alone."""
    app, port = APPS["go"], 8080

    def build(source: str):
        root.path("/srv/main.go").write_text(source)
        root.run("env", "GOCACHE=/tmp/go-cache", "GOPATH=/tmp/go", "go", "build", "-o", "/srv/goserver",
                 "/srv/main.go")
    build(GO_SERVER.replace("{port}", str(port)))
    start = lambda: root.start("/srv/goserver")   # noqa: E731
    assert_dual_stack(trial(root, start, port), app, "goserver", port, in_report=False)
    build(fixed(app, root.path("/srv/main.go").read_text(), port))
    assert_plain(trial(root, start, port), port, app.ipv6)


def test_docker_proxy(root):
    """A published port as dockerd starts its proxies: one per family (fd 3
    is the pipe it reports readiness on)."""
    port = 8081

    def proxy(host_ip: str):
        return root.start("sh", "-c", f"exec docker-proxy -proto tcp -host-ip {host_ip} -host-port {port} "
                          f"-container-ip 127.0.0.1 -container-port 9 3>/tmp/ready-{host_ip}")

    def start():
        first = proxy("0.0.0.0")
        wait_listening(root, first, port, 1)
        proxy("::")
        return first
    assert_separate(trial(root, start, port, sockets=2), port)


def test_postgresql(root):
    """Stock: listen_addresses 'localhost'; then '*', which operators set."""
    port = 5432
    conf = "/etc/postgresql/15/main/postgresql.conf"
    root.run("sh", "-c", "mkdir -p /run/postgresql && chown postgres:postgres /run/postgresql")

    def start():
        return root.start("su", "postgres", "-s", "/bin/sh", "-c",
                          f"exec /usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main "
                          f"-c config_file={conf}")
    assert_separate(trial(root, start, port, sockets=2), port)
    root.edit(conf, "#listen_addresses = 'localhost'", "listen_addresses = '*'")
    assert_separate(trial(root, start, port, sockets=2), port)


def test_redis(root):
    """Stock: 'bind 127.0.0.1 -::1'; then 'bind * -::*', which operators set."""
    port = 6379
    conf = "/etc/redis/redis.conf"
    start = lambda: root.start("redis-server", conf, "--daemonize", "no")   # noqa: E731
    assert_separate(trial(root, start, port, sockets=2), port)
    root.edit(conf, "\nbind 127.0.0.1 -::1\n", "\nbind * -::*\n")
    assert_separate(trial(root, start, port, sockets=2), port)


def test_samba(root):
    """Stock smb.conf: smbd on 445 (and 139) for both families, apart."""
    root.run("mkdir", "-p", "/run/samba")
    start = lambda: root.start("smbd", "--foreground", "--no-process-group")   # noqa: E731
    assert_separate(trial(root, start, 445, sockets=2), 445)


# ------------------------------------------------------------ UDP servers

def udp_bound(port: int) -> list[str]:
    """`ss` on this host's unconnected UDP sockets of `port`."""
    out = subprocess.run(["ss", "-Hulna", f"sport = :{port}"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def ask(payload: bytes) -> Callable[[str, int], int | None]:
    """A client sending `payload` from a connected UDP socket of the
    server's family: its local port, or None when refused (the kernel's
    ICMP port unreachable).  A server that does not answer (syslog) just
    lets the wait end."""
    def client(host: str, port: int) -> int | None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.connect((host, port))
            s.send(payload)
            try:
                s.recv(4096)
            except ConnectionRefusedError:
                return None
            except socket.timeout:
                pass
            return s.getsockname()[1]
    return client


def dns_query(name: str = "bench.test", qtype: int = 1) -> bytes:
    """A DNS query (RFC 1035 4.1): id 0x5354, recursion desired, one question."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return bytes.fromhex("535401000001000000000000") + labels + qtype.to_bytes(2, "big") + b"\0\1"


NTP_REQUEST = bytes([0x23]) + bytes(47)      # RFC 5905: version 4, mode 3 (client)


def assert_udp_dual_stack(t: Trial, app: KnownApp, process: str, port: int, in_report: bool = True,
                          change: str | None = None) -> None:
    """IPv4 came MAPPED into the AF_INET6 socket, IPv6 native; every output
    names the application's UDP fix, worded for the port."""
    v4, v6 = t.accepts["ipv4"], t.accepts["ipv6"]
    assert v4 is not None and v6 is not None, t.accepts
    assert (v4["protocol"], v4["sock_family"], v4["mapped"], v4["v6only"], v4["laddr"], v4["process"]) == \
        ("udp", "AF_INET6", True, False, "::", process)
    assert (v6["sock_family"], v6["mapped"], v6["raddr"]) == ("AF_INET6", False, "::1")
    change = change or app.change.format(port=port)
    shown = [line.strip() for line in t.explain.splitlines()]
    assert f"{app.title}: " in t.explain and all(line.strip() in shown for line in change.splitlines()), \
        t.explain
    assert "receives UDP on [::]:" in t.explain, t.explain
    assert [(r["protocol"], r["advice"]["app"]) for r in t.listeners if r["sock_family"] == "AF_INET6"] \
        == [("udp", app.name)]
    assert [(d["protocol"], d["port"], d["process"], d["mapped"], d["advice"]["app"], d["advice"]["change"])
            for d in t.summary["dual_stack"]] == [("udp", port, process, 1, app.name, change)]
    listeners = t.report["dual_stack_listeners"]
    assert [(l["protocol"], l["port"], l["ipv4_mapped"]) for l in listeners] == [("udp", port, 1)]
    if in_report:
        assert listeners[0]["advice"]["app"] == app.name


def assert_udp_plain(t: Trial, port: int, ipv6: str) -> None:
    """IPv4 on a plain AF_INET socket; IPv6 on a separate one ("kept") or
    refused ("lost"); nothing dual-stack anywhere."""
    v4, v6 = t.accepts["ipv4"], t.accepts["ipv6"]
    assert v4 is not None and (v4["protocol"], v4["sock_family"], v4["mapped"]) == \
        ("udp", "AF_INET", False), v4
    if ipv6 == "kept":
        assert v6 is not None and (v6["sock_family"], v6["mapped"], v6["v6only"]) == \
            ("AF_INET6", False, True), v6
    else:
        assert v6 is None, f"IPv6 still served: {v6}"
    assert t.summary["mapped"] == 0 and t.summary["dual_stack"] == []
    assert "No dual-stack (IPV6_V6ONLY=0) listener or UDP socket here." in t.explain
    assert not any(r.get("v6only") is False for r in t.listeners), t.listeners
    assert t.report["dual_stack_listeners"] == []


def test_dnsmasq(root):
    """dnsmasq answering a local name: one socket per family, never MAPPED;
    dig, its client, asks from a plain AF_INET socket for 127.0.0.1 and a
    v6only AF_INET6 one for ::1 (connected, as bind9's netmgr opens them)."""
    port = 5353
    start = lambda: root.start("dnsmasq", "-d", "-C", "/dev/null", "-p", str(port), "-R", "-h",   # noqa: E731
                               "--log-facility=-", "--address=/bench.test/127.0.0.1")
    assert_udp_plain(trial(root, start, port, sockets=2, udp_client=ask(dns_query())), port, "kept")
    st = Socktrace("-u", "-P", str(port))
    server = start()
    try:
        wait_listening(root, server, port, 2, listed=udp_bound)
        for host in ("127.0.0.1", "::1"):
            out = root.run("dig", f"@{host}", "-p", str(port), "+short", "+tries=1", "bench.test")
            assert out.strip() == "127.0.0.1", out
        outs = st.wait_for(lambda r: r["type"] == "udp" and r["direction"] == "out"
                           and r["rport"] == port and r["process"] == "dig", count=2)
    finally:
        assert st.stop() == 0, st.stderr
        root.stop(server)
    assert sorted((r["sock_family"], r["mapped"], r["raddr"]) for r in outs) == \
        [("AF_INET", False, "127.0.0.1"), ("AF_INET6", False, "::1")]


UNBOUND_CONF = """server:
    do-daemonize: no
    chroot: ""
    username: ""
    pidfile: ""
    use-syslog: no
    num-threads: 1
    port: {port}
    interface: 0.0.0.0
    interface: ::
    access-control: 127.0.0.0/8 allow
    access-control: ::1 allow
    local-zone: "bench.test." static
    local-data: "bench.test. A 127.0.0.1"
"""


def test_unbound(root):
    port = 5354
    root.path("/etc/unbound/bench.conf").write_text(UNBOUND_CONF.format(port=port))
    start = lambda: root.start("unbound", "-d", "-p", "-c", "/etc/unbound/bench.conf")   # noqa: E731
    assert_udp_plain(trial(root, start, port, sockets=2, udp_client=ask(dns_query())), port, "kept")


CHRONY_CONF = """allow all
port {port}
cmdport 0
"""


def test_chrony(root):
    """chronyd as an NTP server ('allow all'): a socket per family."""
    port = 11123
    root.path("/etc/chrony/bench.conf").write_text(CHRONY_CONF.format(port=port))
    root.run("mkdir", "-p", "/run/chrony", "/var/lib/chrony")
    start = lambda: root.start("chronyd", "-d", "-x", "-U", "-u", "root", "-f",   # noqa: E731
                               "/etc/chrony/bench.conf")
    assert_udp_plain(trial(root, start, port, sockets=2, udp_client=ask(NTP_REQUEST)), port, "kept")


RSYSLOG_CONF = """module(load="imudp")
input(type="imudp" port="{port}")
*.* /var/log/bench.log
"""


def test_rsyslog(root):
    """rsyslog's imudp on a port of its own: a socket per family; the
    syslog lines arrive (it answers nothing)."""
    port = 10514
    root.path("/etc/bench-rsyslog.conf").write_text(RSYSLOG_CONF.format(port=port))
    start = lambda: root.start("rsyslogd", "-n", "-iNONE", "-f", "/etc/bench-rsyslog.conf")   # noqa: E731
    t = trial(root, start, port, sockets=2, udp_client=ask(b"<14>socktrace: a line"))
    assert_udp_plain(t, port, "kept")
    assert "socktrace: a line" in root.path("/var/log/bench.log").read_text()


def test_snmpd(root):
    """snmpd with both families asked for ('udp:' and 'udp6:' agent
    addresses): the udp6 one is v6only; snmpget from the snmp package."""
    port = 10161
    root.path("/etc/snmp/bench.conf").write_text("rocommunity public\nrocommunity6 public\n")
    start = lambda: root.start("snmpd", "-f", "-Lo", "-C", "-c", "/etc/snmp/bench.conf",   # noqa: E731
                               f"udp:{port},udp6:{port}")

    assert_udp_plain(trial(root, start, port, sockets=2, udp_client=ask(SNMP_GET)), port, "kept")
    # the agent answers net-snmp's own client over both families
    server = start()
    try:
        wait_listening(root, server, port, 2, listed=udp_bound)
        for target in (f"udp:127.0.0.1:{port}", f"udp6:[::1]:{port}"):
            out = root.run("snmpget", "-v2c", "-c", "public", "-On", target, "1.3.6.1.2.1.1.1.0")
            assert ".1.3.6.1.2.1.1.1.0 = STRING:" in out, out
    finally:
        root.stop(server)


# SNMPv2c GetRequest for sysDescr.0 (1.3.6.1.2.1.1.1.0), community "public"
SNMP_GET = bytes.fromhex("302902010104067075626c6963a01c02045354534b020100020100300e300c06082b060102010101000500")

OPENVPN_KEY = "/srv/static.key"


def test_openvpn(root):
    """'proto udp6' (point-to-point with a static key and no tun device:
    the same socket a server opens): dual-stack; 'proto udp4' the fix."""
    app, port = APPS["openvpn"], 11194
    root.run("openvpn", "--genkey", "secret", OPENVPN_KEY)
    conf = "/srv/openvpn.conf"
    root.path(conf).write_text(f"dev null\nproto udp6\nlport {port}\nsecret {OPENVPN_KEY}\n"
                               "cipher AES-256-CBC\nauth SHA256\nverb 3\n")
    start = lambda: root.start("openvpn", "--config", conf)   # noqa: E731
    junk = ask(b"\x38" + bytes(40))     # not a valid packet: openvpn reads it and drops it
    assert_udp_dual_stack(trial(root, start, port, udp_client=junk), app, "openvpn", port)
    apply_fix(root, app, conf, port)
    assert_udp_plain(trial(root, start, port, udp_client=junk), port, app.ipv6)


JAVA_UDP_SERVER = """import java.net.*;
public class Udp {
    public static void main(String[] args) throws Exception {
        DatagramSocket socket = new DatagramSocket(Integer.parseInt(args[0]));
        byte[] buf = new byte[512];
        while (true) {
            DatagramPacket p = new DatagramPacket(buf, buf.length);
            socket.receive(p);
            socket.send(p);
        }
    }
}
"""


def test_java_udp(root):
    """A DatagramSocket: dual-stack, and the same fix as for TCP (the
    JVM's option)."""
    app, port = APPS["java"], 10053
    root.path("/srv/Udp.java").write_text(JAVA_UDP_SERVER)
    root.run("javac", "-d", "/srv", "/srv/Udp.java")

    def start(options: str = ""):
        return lambda: root.start("java", "-cp", "/srv", "Udp", str(port),
                                  env={"JAVA_TOOL_OPTIONS": options} if options else None)
    echo = ask(b"ping")
    assert_udp_dual_stack(trial(root, start(), port, udp_client=echo), app, "java", port)
    assert_udp_plain(trial(root, start(app.change), port, udp_client=echo), port, app.ipv6)


NODE_DGRAM = """const dgram = require('dgram');
const server = dgram.createSocket('udp6');
server.on('message', (msg, peer) => server.send(msg, peer.port, peer.address));
server.bind({port});
"""


def test_node_dgram(root):
    app, port = APPS["node-dgram"], 10054
    prove_udp_program(root, app, port, "/srv/dgram.js", NODE_DGRAM, "node", "/srv/dgram.js")


PYTHON_UDP = """import socket

server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
server.bind(('', {port}))
while True:
    data, peer = server.recvfrom(512)
    server.sendto(data, peer)
"""


def test_python_udp(root):
    """An AF_INET6 datagram socket bound to '' (::): dual-stack; the
    socket's family is the fix ('' is then 0.0.0.0)."""
    app, port = APPS["python-udp"], 10055
    prove_udp_program(root, app, port, "/srv/udp.py", PYTHON_UDP, "python3", "/srv/udp.py")


GO_UDP = """package main

import "net"

func main() {
	server, err := net.ListenPacket("udp", ":{port}")
	if err != nil {
		panic(err)
	}
	buf := make([]byte, 512)
	for {
		n, peer, err := server.ReadFrom(buf)
		if err == nil {
			server.WriteTo(buf[:n], peer)
		}
	}
}
"""


def test_go_udp(root):
    """A Go ListenPacket("udp"): dual-stack, recognised as Go from its
    executable; "udp4" the fix."""
    app, port = APPS["go-udp"], 10056

    def build(source: str):
        root.path("/srv/udp.go").write_text(source)
        root.run("env", "GOCACHE=/tmp/go-cache", "GOPATH=/tmp/go", "go", "build", "-o", "/srv/goudp",
                 "/srv/udp.go")
    build(GO_UDP.replace("{port}", str(port)))
    start = lambda: root.start("/srv/goudp")   # noqa: E731
    echo = ask(b"ping")
    assert_udp_dual_stack(trial(root, start, port, udp_client=echo), app, "goudp", port, in_report=False)
    build(fixed(app, root.path("/srv/udp.go").read_text(), port))
    assert_udp_plain(trial(root, start, port, udp_client=echo), port, app.ipv6)


def prove_udp_program(root, app: KnownApp, port: int, inside: str, source: str, *command: str) -> None:
    """A program's UDP socket code as operators write it (dual-stack),
    then with the entry's change made in it."""
    root.path(inside).write_text(source.replace("{port}", str(port)))
    start = lambda: root.start(*command)   # noqa: E731
    echo = ask(b"ping")
    assert_udp_dual_stack(trial(root, start, port, udp_client=echo), app, command[0], port)
    apply_fix(root, app, inside, port)
    assert_udp_plain(trial(root, start, port, udp_client=echo), port, app.ipv6)


# ------------------------------------------------- --metrics, scraped by Prometheus

SOCKTRACE_METRICS = 19465
PROMETHEUS_WEB = 19466
PROMETHEUS_YML = f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: socktrace
    static_configs:
      - targets: ['127.0.0.1:{SOCKTRACE_METRICS}']
"""
RULES = Path(__file__).resolve().parents[2] / "src/socktrace/prometheus-rules.yml"


def query(expr: str) -> dict:
    """Prometheus's HTTP API: labels (without __name__, job, instance) -> value."""
    url = f"http://127.0.0.1:{PROMETHEUS_WEB}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    skip = {"__name__", "job", "instance"}
    return {tuple(sorted((k, v) for k, v in s["metric"].items() if k not in skip)): float(s["value"][1])
            for s in body["data"]["result"]}


def until(expect: Callable[[], None], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return expect()
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def exchange(a: socket.socket, b: socket.socket, n: int) -> None:
    """`n` bytes from `a` to `b`, all received."""
    a.sendall(b"x" * n)
    got = 0
    while got < n:
        got += len(b.recv(65536))


def test_prometheus_scrapes_socktrace(root):
    """Debian's Prometheus scrapes `socktrace --metrics`: after mapped,
    native IPv6 and plain IPv4 connections its query API returns exactly
    those counts and labels, and the dual-stack listener's gauges; the
    bytes of a connection still open, exactly, growing while it carries
    more, and unchanged once it closes."""
    root.path("/etc/prometheus/socktrace.yml").write_text(PROMETHEUS_YML)
    server = root.start("prometheus", "--config.file=/etc/prometheus/socktrace.yml",
                        "--storage.tsdb.path=/tmp/prometheus",
                        f"--web.listen-address=127.0.0.1:{PROMETHEUS_WEB}")
    dual = socket.socket(socket.AF_INET6)
    dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    dual.bind(("::", 0))
    dual.listen()
    plain = socket.create_server(("127.0.0.1", 0))
    dport, pport = dual.getsockname()[1], plain.getsockname()[1]
    st = Socktrace("-P", f"{dport},{pport}", "--metrics", f"127.0.0.1:{SOCKTRACE_METRICS}")
    held = []
    try:
        wait_listening(root, server, PROMETHEUS_WEB, 1)
        for host, port in (("127.0.0.1", dport), ("127.0.0.1", dport), ("::1", dport),
                           ("127.0.0.1", pport)):
            held.append(socket.create_connection((host, port)))
            held.append((dual if port == dport else plain).accept()[0])
        for s in held[2:]:          # one mapped connection stays open: the gauge's
            s.close()
        client, accepted = held[0], held[1]    # the mapped connection that stays open
        exchange(client, accepted, 40000)
        exchange(accepted, client, 7000)
        me = st.wait_for(lambda r: r["type"] == "accept", count=4)[0]["process"]
        accepts = {(("comm", me), ("event", "accept"), ("family", f)): n
                   for f, n in (("ipv4_mapped", 2), ("ipv6", 1), ("ipv4", 1))}
        connects = {(("comm", me), ("event", "connect"), ("family", f)): n
                    for f, n in (("ipv4", 3), ("ipv6", 1))}

        def scraped():
            assert query("socktrace_connections_total") == {**accepts, **connects}
            assert query("socktrace_accepts_by_port_total") == {
                (("comm", me), ("port", str(dport)), ("v6only", "false")): 3,
                (("comm", me), ("port", str(pport)), ("v6only", "none")): 1}
            listener = (("comm", me), ("port", str(dport)))
            assert query(f'socktrace_dual_stack_listener{{port="{dport}"}}') == {listener: 1}
            assert query(f'socktrace_dual_stack_mapped_connections{{port="{dport}"}}') == {listener: 1}
            assert query("socktrace_events_lost_total") == {(): 0}
            assert query("socktrace_info") == {
                (("probe", st.ready["probe"]), ("version", socktrace_version)): 1}
        until(scraped)

        def carried(into: int, out: int) -> Callable[[], None]:
            """The open connection's payload in Prometheus, its server's end
            IPv4 through the dual-stack socket (ipv4_mapped); the IPv6 one
            carried none.  (Plain ipv4 has more: the bytes count every
            connection the kernel-side filters pass, -P is not one of them,
            and this test's queries to Prometheus are connections too.)"""
            def check():
                def labels(fam, direction):
                    return (("comm", me), ("direction", direction), ("family", fam), ("protocol", "tcp"))
                assert query(f'socktrace_bytes_total{{comm="{me}",family!="ipv4"}}') == {
                    labels("ipv4_mapped", "received"): into, labels("ipv4_mapped", "sent"): out,
                    labels("ipv6", "sent"): 0, labels("ipv6", "received"): 0}
                sent = query(f'socktrace_bytes_total{{comm="{me}",family="ipv4",direction="sent"}}')
                assert list(sent.values())[0] >= into     # the client's end among them
            return check
        until(carried(40000, 7000))
        exchange(client, accepted, 123456)  # still open: its counters grow
        until(carried(163456, 7000), timeout=10)
        client.close()
        accepted.close()
        time.sleep(3)                       # ended: counted by the kernel now, the same
        carried(163456, 7000)()
        # the fleet's question: IPv4 bytes through dual-stack sockets, per service and host
        assert query('sum by (instance, comm) (socktrace_bytes_total{family="ipv4_mapped"})') == {
            (("comm", me),): 170456}
        # the shipped rules load, and the alert's expression finds this listener
        root.path("/tmp/socktrace-rules.yml").write_text(RULES.read_text())
        assert "SUCCESS: 5 rules found" in root.run("promtool", "check", "rules", "/tmp/socktrace-rules.yml")
        alert = "max by (instance, port, comm) (socktrace_dual_stack_mapped_connections) > 0"
        assert (("comm", me), ("port", str(dport))) in query(alert)
    finally:
        for s in held:
            s.close()
        assert st.stop() == 0, st.stderr
        root.stop(server)


def test_metrics_address_in_use_is_one_line_before_any_probe():
    """A port already taken, or an address this host does not have: one
    line, exit 1, and nothing attached (it fails before the probes load)."""
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    for where, reason in ((f"127.0.0.1:{port}", "Address already in use"),
                          ("192.0.2.123:9100", "Cannot assign requested address")):
        t = time.monotonic()
        r = subprocess.run([SOCKTRACE, "--metrics", where, "-q"], capture_output=True, text=True,
                           timeout=60)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", f"Error: --metrics {where}: {reason}\n")
        assert time.monotonic() - t < 5   # a compile and attach takes longer
    taken.close()
