"""Benchmark: UDP.  A DNS server from Debian's packages on a dual-stack
socket under dnsperf, with socktrace against none; and new UDP flows at
the highest rate this machine's client makes, every one reported once.

The server: unbound answering a local zone from a dual-stack [::]:PORT
socket (IPV6_V6ONLY off), as a systemd socket unit with BindIPv6Only=both
hands it over: systemd-socket-activate opens it, unbound takes it
(use-systemd: yes; unbound uses passed sockets only when systemd runs, so
a private mount namespace shows it /run/systemd/system).  Debian's DNS
servers set IPV6_V6ONLY on every socket they open themselves.

1. dnsperf (Debian's) over IPv4, few client sockets (-c 4): every query an
   IPv4 datagram through the dual-stack socket, the per-datagram cost of
   the UDP hooks.  Alternating rounds: none, socktrace in each probe mode
   that loads (and BENCH_COMPARE, another socktrace, in the first mode),
   and the same cgroup hooks with empty programs (bench/cgroup_floor.py):
   what the kernel's hook costs before any work of socktrace's.
2. New flows: clients that make each query from a new socket, so a new
   source port each time (as resolvers randomise them), as fast as they
   can; socktrace -u logs every flow: each client socket's flow must be
   reported exactly once, and the server's once per distinct peer port,
   with nothing lost.

Writes bench/results/dns.{json,md} (BENCH_RESULTS, BENCH_NAME).  Run as
root: make bench.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROUNDS = int(os.environ.get("ROUNDS", "5"))
SECONDS = int(os.environ.get("SECONDS_PER_ROUND", "10"))
FLOWS = int(os.environ.get("FLOWS", "40000"))        # new-flow workload: queries, each its own socket
CLIENTS = 2                                          # processes making them
PORT = 15353
HERE = Path(__file__).parent
SOCKTRACE = os.environ.get("SOCKTRACE") or str(Path(sys.executable).parent / "socktrace")
COMPARE = os.environ.get("BENCH_COMPARE")
RESULTS = Path(os.environ.get("BENCH_RESULTS") or HERE / "results")
NAME = os.environ.get("BENCH_NAME", "dns")

UNBOUND_CONF = """server:
    do-daemonize: no
    chroot: ""
    username: ""
    pidfile: ""
    use-syslog: no
    logfile: ""
    use-systemd: yes
    num-threads: 1
    port: {port}
    interface: ::
    do-tcp: no
    access-control: 0.0.0.0/0 allow
    access-control: ::/0 allow
    local-zone: "bench.test." static
    local-data: "bench.test. A 127.0.0.1"
remote-control:
    control-enable: no
"""
# a DNS query for bench.test A (RFC 1035 4.1)
QUERY = bytes.fromhex("535401000001000000000000") + b"\x05bench\x04test\x00\x00\x01\x00\x01"


def modes() -> list[str]:
    """The probe modes socktrace loads here, as its `auto` skips the others."""
    r = subprocess.run([SOCKTRACE, "--json", "--no-snapshot", "--duration", "0.1", "-u"],
                       capture_output=True, text=True, timeout=600)
    ready = json.loads(r.stdout.splitlines()[0])
    return [m for m in ("kfunc", "kprobe", "tracepoint") if m not in ready["skipped"]]


class Server:
    """unbound on a dual-stack UDP socket handed over by socket activation."""

    def __init__(self, workdir: Path):
        conf = workdir / "unbound.conf"
        conf.write_text(UNBOUND_CONF.format(port=PORT))
        self.log = open(workdir / "unbound.log", "w")
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             "mount -t tmpfs none /run && mkdir -p /run/systemd/system && exec systemd-socket-activate "
             f"--datagram -l '[::]:{PORT}' unbound -d -c {conf}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(0.5)
                    s.sendto(QUERY, ("127.0.0.1", PORT))
                    s.recv(512)
                break
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "unbound did not answer"
        out = subprocess.run(["ss", "-Hulne", f"sport = :{PORT}"], capture_output=True, text=True).stdout
        assert "v6only:0" in out and "*:" in out, f"not one dual-stack socket: {out}"

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()


def dnsperf(workdir: Path) -> float:
    """Queries per second, over IPv4 from 4 sockets, for SECONDS (dnsperf
    counts the few queries still in flight when time is up as lost)."""
    qfile = workdir / "queries"
    qfile.write_text("bench.test A\n")
    out = subprocess.run(["dnsperf", "-s", "127.0.0.1", "-p", str(PORT), "-d", str(qfile), "-l",
                          str(SECONDS), "-c", "4", "-q", "200"], capture_output=True, text=True).stdout
    return float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))


def floor() -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(HERE / "cgroup_floor.py")], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "ready", "bench/cgroup_floor.py did not get ready"
    return p


# --lifetime's variant: UDP flows followed to their end; the server's end
# IDLE s after their datagram (longer than a new-flows run: one flow per port)
IDLE = 5
LIFETIME = ("--lifetime", "--udp-idle", str(IDLE))


def tracer(command: str, mode: str, workdir: Path, *args: str) -> subprocess.Popen:
    log = workdir / "trace.jsonl"
    log.unlink(missing_ok=True)
    p = subprocess.Popen([command, "--probe", mode, "-q", "--no-snapshot", "-o", str(log), *args],
                         stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (log.exists() and b'"type":"ready"' in log.read_bytes()):
        assert p.poll() is None and time.monotonic() < deadline, f"{command} did not get ready"
        time.sleep(0.02)
    return p


def stop(p: subprocess.Popen, workdir: Path) -> list[dict]:
    p.send_signal(signal.SIGINT)
    p.wait(300)
    return [json.loads(line) for line in (workdir / "trace.jsonl").read_text().splitlines()]


def new_flow_client(n: int, out) -> None:
    """n queries, each from a new socket; sends back its sockets' ports."""
    ports = []
    for _ in range(n):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(QUERY, ("127.0.0.1", PORT))
            s.recv(512)
            ports.append(s.getsockname()[1])
    out.send(ports)


def new_flows(command: str, mode: str, workdir: Path, extra: tuple[str, ...] = ()) -> dict:
    p = tracer(command, mode, workdir, "-u", "-P", str(PORT), *extra)
    try:
        pipes, procs = [], []
        t = time.monotonic()
        for _ in range(CLIENTS):
            r, w = multiprocessing.Pipe(duplex=False)
            proc = multiprocessing.Process(target=new_flow_client, args=(FLOWS // CLIENTS, w))
            proc.start()
            pipes.append(r)
            procs.append(proc)
        ports: Counter[int] = Counter()
        for r in pipes:
            ports.update(r.recv())
        for proc in procs:
            proc.join()
        elapsed = time.monotonic() - t
        time.sleep(IDLE + 2 if extra else 0.5)   # --lifetime: the server's flows idle, swept
    finally:
        records = stop(p, workdir)
    outs = [r for r in records if r["type"] == "udp" and r["direction"] == "out" and r["rport"] == PORT]
    ins = [r for r in records if r["type"] == "udp" and r["direction"] == "in" and r["lport"] == PORT]
    summary = records[-1]
    result = {"flows_per_s": FLOWS / elapsed, "client_sockets": FLOWS, "distinct_ports": len(ports),
              "out_reported": len(outs), "in_reported": len(ins),
              "in_ports_once": Counter(r["rport"] for r in ins) == Counter(set(ports)),
              "lost": summary["lost"]}
    if extra:   # each flow's close record, exactly once: the clients' at their socket's close
        ends = [r for r in records if r["type"] == "close" and r.get("protocol") == "udp"]
        client_ends = [r for r in ends if r["rport"] == PORT]
        server_ends = Counter(r["rport"] for r in ends if r["lport"] == PORT)
        # a port is reused by later sockets: each flow's close, as many as its udp records
        result.update(client_closes=len(client_ends),
                      client_closes_local=sum(r["closed_by"] == "local" for r in client_ends),
                      server_closes=sum(server_ends.values()),
                      closes_once=Counter(r["lport"] for r in client_ends) == Counter(r["lport"] for r in outs)
                      and server_ends == Counter(r["rport"] for r in ins),
                      datagrams=Counter(f"{r['datagrams_sent']}/{r['datagrams_received']}" for r in ends))
    return result


def main() -> None:
    found = modes()
    tracers = [(f"socktrace-{m}", SOCKTRACE, m, ()) for m in found]
    tracers.append((f"socktrace-{found[0]}+lifetime", SOCKTRACE, found[0], LIFETIME))
    if COMPARE:
        tracers.append((f"socktrace-{found[0]}@compare", COMPARE, found[0], ()))
    rounds: dict[str, list[float]] = {"none": []}
    ratios: dict[str, list[float]] = {name: [] for name, _, _, _ in tracers}
    ratios["empty cgroup programs"] = []
    flows: dict[str, list[dict]] = {name: [] for name, _, _, _ in tracers}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = Server(work)
        try:
            dnsperf(work)   # warm up
            for r in range(ROUNDS):
                for name, command, mode, extra in tracers:
                    base = dnsperf(work)
                    rounds["none"].append(base)
                    p = tracer(command, mode, work, *extra)
                    try:
                        qps = dnsperf(work)
                    finally:
                        records = stop(p, work)
                    assert records[-1]["lost"] == 0
                    rounds.setdefault(name, []).append(qps)
                    ratios[name].append(qps / base)
                    print(f"round {r + 1}: none {base:.0f} q/s, {name} {qps:.0f} q/s "
                          f"({qps / base:.3f})", file=sys.stderr)
                base = dnsperf(work)
                rounds["none"].append(base)
                p = floor()
                try:
                    qps = dnsperf(work)
                finally:
                    p.terminate()
                    p.wait(60)
                rounds.setdefault("empty cgroup programs", []).append(qps)
                ratios["empty cgroup programs"].append(qps / base)
            for name, command, mode, extra in tracers:
                flows[name].append(new_flows(command, mode, work, extra))
                print(f"new flows, {name}: {flows[name][-1]}", file=sys.stderr)
        finally:
            server.stop()
    machine = (f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} CPUs"
               + os.environ.get("BENCH_MACHINE_NOTE", "") + "; unbound on a "
               f"dual-stack [::]:{PORT} socket (socket activation), dnsperf over IPv4 from 4 sockets, "
               f"{SECONDS} s a round, medians of {ROUNDS} alternating rounds (vs baseline: each "
               "round against the baseline round just before it, and the range)")
    if COMPARE:
        machine += f"; @compare = {COMPARE}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(
        {"machine": machine, "qps": rounds, "ratios": ratios, "new_flows": flows}, indent=1) + "\n")
    lines = [f"Machine: {machine}.", "", "| tracer | queries/s | vs baseline |", "| --- | --- | --- |",
             f"| none | {statistics.median(rounds['none']):.0f} | 1.00 |"]
    for name in ratios:
        rs = ratios[name]
        lines.append(f"| {name} | {statistics.median(rounds[name]):.0f} | {statistics.median(rs):.3f} "
                     f"({min(rs):.3f}-{max(rs):.3f}) |")
    lines += ["", f"New flows: {FLOWS} queries from {CLIENTS} clients, each query from a new socket.", "",
              "| tracer | new flows/s | client flows reported, of sockets | server flows reported, "
              "of distinct peer ports | each once | lost |", "| --- | --- | --- | --- | --- | --- |"]
    for name, runs in flows.items():
        f = runs[0]
        lines.append(f"| {name} | {f['flows_per_s']:.0f} | {f['out_reported']} of {f['client_sockets']} | "
                     f"{f['in_reported']} of {f['distinct_ports']} | {f['in_ports_once']} | {f['lost']} |")
    for name, runs in flows.items():
        f = runs[0]
        if "client_closes" in f:
            lines += ["", f"{name}: close records: {f['client_closes']} of the clients' flows "
                      f"({f['client_closes_local']} ended by their socket's close), {f['server_closes']} "
                      f"of the server's, each once: {f['closes_once']}; datagrams sent/received: "
                      + ", ".join(f"{k}: {n}" for k, n in sorted(
                          f["datagrams"].items(), key=lambda kn: tuple(map(int, kn[0].split("/")))))]
    (RESULTS / f"{NAME}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
