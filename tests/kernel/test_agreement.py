"""One session, three views: the summary at exit, `socktrace report` on the
log of the same run and /metrics count the same connections the same way
(vocabulary.py defines what each counts), a forking server's workers
included."""

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
    with socket.socket() as s:           # a port nobody listens on: a refused connect
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    log, mport = tmp_path / "log", free_port()
    st = socktrace("-o", str(log), "--metrics", f"127.0.0.1:{mport}", "--no-snapshot",
                   "--unaccepted-after", "0.5", "-P", f"{fport},{iport},{closed}")
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
        st.wait_for(lambda r: r["type"] == "accept", count=6)
        st.wait_for(lambda r: r["type"] == "unaccepted", count=2)
        st.wait_for(lambda r: r["type"] == "connect_failed")
        st.wait_for(lambda r: r["type"] == "connect", count=8)
        # the metrics get each batch just after stdout does (an output
        # further down the same Tee): scrape until they have them all
        deadline = time.monotonic() + 30
        while True:
            metrics = scrape(mport)
            counted = sum(v for (n, _), v in metrics.items() if n == "socktrace_connections_total")
            if counted >= 17 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert st.stop() == 0
    finally:
        for c in clients:
            c.close()
        idle.close()
    summary = st.records[-1]
    assert summary["type"] == "summary"
    report = json.loads(subprocess.run([SOCKTRACE, "report", "--json", str(log)], capture_output=True,
                                       text=True, check=True).stdout)

    # what happened, as the summary counts it
    by_type = {"accept": 6, "connect": 8, "unaccepted": 2, "connect_failed": 1}
    assert summary["by_type"] == by_type and summary["events"] == 17
    # mapped: 4 accepts and 2 unaccepted on the AF_INET6 listeners (their
    # clients' AF_INET sockets are plain), the failed connect
    assert summary["mapped"] == 7

    # ... as the report counts it
    assert report["by_type"] == by_type
    assert report["records"] == 16      # connections; the failed connect is an attempt
    assert report["by_protocol"]["mapped"] + sum(
        f["count"] for f in report["failed_connects"] if f["protocol"] == "mapped") == 7

    # ... and as /metrics does
    def total(name, **labels):
        return sum(v for (n, ls), v in metrics.items() if n == name
                   and all(dict(ls).get(k) == v for k, v in labels.items()))
    assert {e: total("socktrace_connections_total", event=e) for e in by_type} == by_type
    assert total("socktrace_connections_total", family="ipv4_mapped") == 7

    # the dual-stack listeners: one per (process, command line, port), the
    # forking server's three workers one listener, in all three views
    in_summary = [(d["process"], d["cmdline"], d["port"], d["mapped"], sorted(d["pids"]))
                  for d in summary["dual_stack"]]
    in_report = [(l["comm"], l["cmdline"], l["port"], l["ipv4_mapped"], sorted(l["pids"]))
                 for l in report["dual_stack_listeners"]]
    assert in_summary == in_report
    name = open(f"/proc/{forking.pid}/comm").read().strip()
    by_port = {port: (proc, mapped, pids) for proc, _, port, mapped, pids in in_summary}
    assert by_port[fport] == (name, 4, sorted(workers))
    assert by_port[iport][1] == 2        # the idle listener's queued ones (its owner: this test)
    assert len(in_summary) == 2
    in_metrics = Counter({(dict(ls)["port"], dict(ls)["comm"]): v for (n, ls), v in metrics.items()
                          if n == "socktrace_dual_stack_ipv4_connections_total"})
    assert in_metrics == Counter({(str(port), proc): mapped for proc, _, port, mapped, _ in in_summary})
    assert summary["lost"] == 0 and total("socktrace_events_lost_total") == 0
