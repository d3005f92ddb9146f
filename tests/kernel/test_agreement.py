"""One session, three views: the summary at exit, `socktrace report` on the
log of the same run and /metrics count the same connections and UDP flows
the same way (vocabulary.py defines what each counts), a forking server's
workers included."""

import json
import socket
import subprocess
import time
import urllib.request
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from helpers import SOCKTRACE, listener

WORKERS, PER_WORKER = 3, 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_summary_report_and_metrics_agree(tmp_path, peer, socktrace):
    forking = peer("fork-serve", str(WORKERS), str(PER_WORKER))
    info = forking.read()
    fport, workers = info["port"], info["workers"]
    idle = listener(v6only=0)            # a dual-stack listener that never accepts
    iport = idle.getsockname()[1]
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)   # a dual-stack UDP server
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    udp.bind(("::", 0))
    uport = udp.getsockname()[1]
    with socket.socket() as s:           # a port nobody listens on: a refused connect
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    log, mport = tmp_path / "log", free_port()
    st = socktrace("-o", str(log), "--metrics", f"127.0.0.1:{mport}", "--no-snapshot",
                   "--unaccepted-after", "0.5", "-P", f"{fport},{iport},{closed},{uport}")
    clients = []
    try:
        # the forking server: IPv4 (mapped) and IPv6 peers, spread over its
        # workers (each accepts PER_WORKER, so every worker takes some)
        for host in ["127.0.0.1"] * 4 + ["::1"] * 2:
            clients.append(socket.create_connection((host, fport)))
        done = [forking.read() for _ in range(WORKERS)]
        assert sorted(d["worker"] for d in done) == sorted(workers)
        # queued and never accepted: `unaccepted`, through the idle listener
        for _ in range(2):
            clients.append(socket.create_connection(("127.0.0.1", iport)))
        # an AF_INET6 socket's refused connect to a mapped address
        c6 = socket.socket(socket.AF_INET6)
        assert c6.connect_ex(("::ffff:127.0.0.1", closed)) != 0
        c6.close()
        # UDP: two IPv4 clients (mapped on the server's side) and an IPv6 one
        for host, family in (("127.0.0.1", socket.AF_INET),) * 2 + (("::1", socket.AF_INET6),):
            c = socket.socket(family, socket.SOCK_DGRAM)
            clients.append(c)
            c.sendto(b"q", (host, uport))
            data, peer_addr = udp.recvfrom(16)
            udp.sendto(b"a", peer_addr)           # the same flow, the other way
            c.recv(16)
        st.wait_for(lambda r: r["type"] == "udp", count=6)
        st.wait_for(lambda r: r["type"] == "accept", count=6)
        st.wait_for(lambda r: r["type"] == "unaccepted", count=2)
        st.wait_for(lambda r: r["type"] == "connect_failed")
        st.wait_for(lambda r: r["type"] == "connect", count=8)
        # the metrics get each batch just after stdout does (an output
        # further down the same Tee): scrape until they have them all
        deadline = time.monotonic() + 30
        while True:
            metrics = scrape(mport)
            counted = sum(v for (n, _), v in metrics.items()
                          if n in ("socktrace_connections_total", "socktrace_udp_flows_total"))
            if counted >= 23 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert st.stop() == 0
    finally:
        for c in clients:
            c.close()
        idle.close()
        udp.close()
    summary = st.records[-1]
    assert summary["type"] == "summary"
    report = json.loads(subprocess.run([SOCKTRACE, "report", "--json", str(log)], capture_output=True,
                                       text=True, check=True).stdout)

    # what happened, as the summary counts it
    by_type = {"accept": 6, "connect": 8, "unaccepted": 2, "connect_failed": 1, "udp": 6}
    assert summary["by_type"] == by_type and summary["events"] == 23
    # mapped: 4 accepts and 2 unaccepted on the AF_INET6 listeners (their
    # clients' AF_INET sockets are plain), the failed connect, the UDP
    # server's 2 flows from IPv4 clients
    assert summary["mapped"] == 9

    # ... as the report counts it
    assert report["by_type"] == by_type
    assert report["records"] == 16      # connections; the failed connect is an attempt
    assert report["udp_flows"] == 6     # ... and UDP flows no connections
    assert report["by_protocol"]["mapped"] + report["udp_by_protocol"]["mapped"] + sum(
        f["count"] for f in report["failed_connects"] if f["protocol"] == "mapped") == 9

    # ... and as /metrics does
    def total(name, **labels):
        return sum(v for (n, ls), v in metrics.items() if n == name
                   and all(dict(ls).get(k) == v for k, v in labels.items()))
    tcp_types = {t: n for t, n in by_type.items() if t != "udp"}
    assert {e: total("socktrace_connections_total", event=e) for e in tcp_types} == tcp_types
    assert total("socktrace_udp_flows_total") == by_type["udp"]
    assert {d: total("socktrace_udp_flows_total", direction=d) for d in ("in", "out")} == \
        {d: sum(1 for r in st.records if r["type"] == "udp" and r["direction"] == d)
         for d in ("in", "out")} == {"in": 3, "out": 3}
    assert total("socktrace_connections_total", family="ipv4_mapped") + \
        total("socktrace_udp_flows_total", family="ipv4_mapped") == 9

    # the dual-stack listeners: one per (process, command line, port), the
    # forking server's three workers one listener, in all three views
    in_summary = [(d["protocol"], d["process"], d["cmdline"], d["port"], d["mapped"], sorted(d["pids"]))
                  for d in summary["dual_stack"]]
    in_report = [(l["protocol"], l["comm"], l["cmdline"], l["port"], l["ipv4_mapped"], sorted(l["pids"]))
                 for l in report["dual_stack_listeners"]]
    assert in_summary == in_report
    name = open(f"/proc/{forking.pid}/comm").read().strip()
    by_port = {port: (protocol, proc, mapped, pids) for protocol, proc, _, port, mapped, pids in in_summary}
    assert by_port[fport] == ("tcp", name, 4, sorted(workers))
    assert by_port[iport][2] == 2        # the idle listener's queued ones (its owner: this test)
    assert by_port[uport][0::2] == ("udp", 2)
    assert len(in_summary) == 3
    in_metrics = Counter({(dict(ls)["protocol"], dict(ls)["port"], dict(ls)["comm"]): v
                          for (n, ls), v in metrics.items() if n == "socktrace_dual_stack_ipv4_total"})
    assert in_metrics == Counter({(protocol, str(port), proc): mapped
                                  for protocol, proc, _, port, mapped, _ in in_summary})
    assert summary["lost"] == 0 and total("socktrace_events_lost_total") == 0
