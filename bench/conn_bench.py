"""Benchmark: socktrace's overhead and capacity against the alternatives.

A real dual-stack server (nginx, `listen [::]:PORT ipv6only=off`) and a real
client opening a new IPv4 connection per request (ab, no keep-alive), so
every connection is IPv4-mapped on the server.  In alternating rounds:
  - no tracer (the baseline),
  - socktrace in each probe mode that runs here, logging with -o FILE,
  - bpftrace with an equivalent script on the same hooks as socktrace's
    tracepoint mode (sock:inet_sock_set_state and the accept/connect
    syscall exits), printing one line per accept and connect (the tool a
    user would otherwise reach for).  bcc's own tools need kprobes, which
    this kernel lacks.
Connections made are counted by nginx itself (stub_status).
For each: connections/s, records reported vs connections made, tracer CPU
seconds per 1000 connections, start -> ready, steady-state RSS.

Writes bench/results/conn.json and conn.md.  Run as root: make bench.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N = int(os.environ.get("N", "40000"))
CONCURRENCY = 32
ROUNDS = int(os.environ.get("ROUNDS", "3"))
PORT = 18080
STATUS_PORT = 18090
HERE = Path(__file__).parent
SOCKTRACE = str(Path(sys.executable).parent / "socktrace")
TICK = os.sysconf("SC_CLK_TCK")

BPFTRACE_SCRIPT = r"""
tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->newstate == 2/
{
    @connecting[tid] = args->skaddr;
}
tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->oldstate == 3 && args->newstate == 1/
{
    @established[args->skaddr] = 1;
}
tracepoint:syscalls:sys_exit_connect /@connecting[tid]/
{
    printf("connect %d %s ret=%d\n", pid, comm, args->ret);
    delete(@connecting[tid]);
}
tracepoint:syscalls:sys_exit_accept4, tracepoint:syscalls:sys_exit_accept /args->ret >= 0/
{
    printf("accept %d %s fd=%d\n", pid, comm, args->ret);
}
END { clear(@connecting); clear(@established); }
"""

NGINX_CONF = """
worker_processes 1;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server {{ listen [::]:{port} ipv6only=off reuseport backlog=4096; return 204; }}
    server {{ listen 127.0.0.1:{status_port}; location / {{ stub_status; }} }}
}}
"""


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for(path: Path, text: str, proc, timeout=60) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"tracer did not get ready: {proc.args}")
        time.sleep(0.005)


def accepted_by_nginx() -> int:
    """nginx's own count of accepted connections (each call adds one)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{STATUS_PORT}/").read().decode()
    return int(text.splitlines()[2].split()[0])


def ab() -> dict:
    before = accepted_by_nginx()
    out = subprocess.run(["ab", "-q", "-n", str(N), "-c", str(CONCURRENCY), "-r",
                          f"http://127.0.0.1:{PORT}/"], capture_output=True, text=True).stdout
    made = accepted_by_nginx() - before - 1
    rps = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    return {"rps": rps, "connections": made, "failed": failed}


class Tracer:
    def __init__(self, name: str, workdir: Path):
        self.name = name
        self.workdir = workdir
        self.log = workdir / f"{name}.log"

    def start(self) -> float:
        self.log.unlink(missing_ok=True)
        t = time.monotonic()
        if self.name.startswith("socktrace"):
            mode = self.name.split("-", 1)[1]
            self.proc = subprocess.Popen([SOCKTRACE, "--probe", mode, "-q", "--no-snapshot",
                                          "-o", str(self.log)], stderr=subprocess.DEVNULL)
            wait_for(self.log, '"type":"ready"', self.proc)
        else:
            script = self.workdir / "established.bt"
            script.write_text(BPFTRACE_SCRIPT)
            self.proc = subprocess.Popen(["bpftrace", "-o", str(self.log), str(script)],
                                         stderr=subprocess.DEVNULL)
            wait_for(self.log, "Attaching", self.proc)
        return time.monotonic() - t

    def stop(self) -> int:
        """Stop; return the records of accepted connections on PORT."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        text = self.log.read_text(errors="replace")
        if self.name.startswith("socktrace"):
            return sum(1 for line in text.splitlines()
                       if '"type":"accept"' in line and f'"lport":{PORT},' in line)
        return len(re.findall(r"^accept \d+ nginx ", text, re.M))


def modes_that_run() -> list[str]:
    ready = subprocess.run([SOCKTRACE, "--json", "--no-snapshot", "--duration", "0.1"],
                           capture_output=True, text=True).stdout.splitlines()[0]
    info = json.loads(ready)
    return [info["probe"]]  # auto picked the cheapest that works; the others were refused


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="socktrace-bench-"))
    (workdir / "nginx.conf").write_text(NGINX_CONF.format(dir=workdir, port=PORT,
                                                          status_port=STATUS_PORT))
    subprocess.run(["nginx", "-c", str(workdir / "nginx.conf")], check=True)
    time.sleep(0.5)
    kinds = ["baseline"] + [f"socktrace-{m}" for m in modes_that_run()] + ["bpftrace"]
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    try:
        ab()  # warm-up
        for r in range(ROUNDS):
            for kind in kinds:
                row: dict = {}
                tracer = None
                if kind != "baseline":
                    tracer = Tracer(kind, workdir)
                    row["start_to_ready_s"] = tracer.start()
                    cpu0 = cpu_seconds(tracer.proc.pid)
                row.update(ab())
                if tracer:
                    time.sleep(1.0)  # let it drain
                    row["rss_mb"] = rss_mb(tracer.proc.pid)
                    row["cpu_s_per_1000"] = (cpu_seconds(tracer.proc.pid) - cpu0) / row["connections"] * 1000
                    row["reported"] = tracer.stop()
                results[kind].append(row)
                print(f"round {r + 1} {kind}: {row}", flush=True)
    finally:
        subprocess.run(["nginx", "-c", str(workdir / "nginx.conf"), "-s", "quit"])
    base = statistics.median(r["rps"] for r in results["baseline"])
    summary = {}
    for kind, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        med["ratio_to_baseline"] = med["rps"] / base
        summary[kind] = med
    doc = {"machine": f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} CPUs",
           "requests_per_round": N, "concurrency": CONCURRENCY, "rounds": ROUNDS,
           "summary_medians": summary, "rounds_raw": results}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "conn.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"Machine: {doc['machine']}; nginx + ab, {N} new IPv4 connections a round to a "
             f"dual-stack listener, concurrency {CONCURRENCY}, medians of {ROUNDS} alternating rounds.",
             "",
             "| tracer | connections/s | vs baseline | accepts reported / made | CPU s per 1000 conn | start -> ready | RSS |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for kind, m in summary.items():
        if kind == "baseline":
            lines.append(f"| none | {m['rps']:.0f} | 1.00 | - | - | - | - |")
        else:
            lines.append(f"| {kind} | {m['rps']:.0f} | {m['ratio_to_baseline']:.2f} | "
                         f"{m['reported']:.0f} / {m['connections']:.0f} | {m['cpu_s_per_1000']:.3f} | "
                         f"{m['start_to_ready_s']:.2f} s | {m['rss_mb']:.0f} MB |")
    (HERE / "results" / "conn.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
