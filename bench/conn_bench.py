"""Benchmark: socktrace's overhead and capacity against the alternatives.

A real dual-stack server (nginx, `listen [::]:PORT ipv6only=off`) and a real
client opening a new IPv4 connection per request (ab, no keep-alive), so
every connection is IPv4-mapped on the server.  In alternating rounds:
  - no tracer (the baseline),
  - socktrace in each probe mode that runs here, logging with -o FILE (-q),
  - the same in the first mode with what a person watches meanwhile: the
    table, and `socktrace top`, each on an 80x24 pseudo-terminal,
  - bpftrace with an equivalent script on the same hooks as socktrace's
    tracepoint mode (sock:inet_sock_set_state and the accept/connect
    syscall exits), printing one line per accept and connect (the tool a
    user would otherwise reach for),
  - bcc's tcpaccept and tcpconnect together, where they run: they need
    kprobes, which this project's CI kernel lacks; bench/vm_bench.sh runs
    this benchmark in the Debian VM of tests/vm, where they work.
Connections made are counted by nginx itself (stub_status).
For each: connections/s, records reported vs connections made, tracer CPU
seconds per 1000 connections, start -> ready, steady-state RSS.

Writes bench/results/conn.json and conn.md (BENCH_RESULTS, BENCH_NAME).
Run as root: make bench.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import pty
import re
import signal
import statistics
import struct
import subprocess
import termios
import sys
import tempfile
import threading
import urllib.request
import time
from pathlib import Path

N = int(os.environ.get("N", "40000"))
CONCURRENCY = 32
ROUNDS = int(os.environ.get("ROUNDS", "5"))
PORT = 18080
STATUS_PORT = 18090
HERE = Path(__file__).parent
SOCKTRACE = os.environ.get("SOCKTRACE") or str(Path(sys.executable).parent / "socktrace")
RESULTS = Path(os.environ.get("BENCH_RESULTS") or HERE / "results")
NAME = os.environ.get("BENCH_NAME", "conn")
TICK = os.sysconf("SC_CLK_TCK")
# another socktrace command (an older version, say) run in the same
# alternating rounds as "socktrace-MODE@compare", in the first mode
COMPARE = os.environ.get("BENCH_COMPARE")
# "socktrace-MODE+metrics": the same with --metrics, scraped once a second
# as Prometheus would (BENCH_METRICS=0: not run)
METRICS = os.environ.get("BENCH_METRICS", "1") == "1"
METRICS_PORT = 19464
# "socktrace-MODE+lifetime": the same with --lifetime, a close record for
# every connection's end, both ends (BENCH_LIFETIME=0: not run)
LIFETIME = os.environ.get("BENCH_LIFETIME", "1") == "1"
# "socktrace-MODE+table" and "+top": what a person watches, the table or `top`, on a
# pseudo-terminal of 80x24 (read as fast as a terminal would), logging with -o too
# (BENCH_FRONTENDS=0: not run)
FRONTENDS = os.environ.get("BENCH_FRONTENDS", "1") == "1"
EXTRA_OPTIONS = {"": [], "metrics": ["--metrics", str(METRICS_PORT)], "lifetime": ["--lifetime"],
                 "table": [], "top": []}
# the arguments before the options: the table is the command itself, top a subcommand;
# neither is quiet
FRONT = {"table": [], "top": ["top"]}

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
            err = path.with_suffix(".err")
            why = err.read_text(errors="replace")[-2000:] if err.exists() else ""
            raise RuntimeError(f"tracer did not get ready: {proc.args}\n{why}")
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


BCC_TOOLS = {"tcpaccept": "/usr/sbin/tcpaccept-bpfcc", "tcpconnect": "/usr/sbin/tcpconnect-bpfcc"}


class Tracer:
    """One tracer under test: socktrace-MODE, bpftrace, or bcc (its
    tcpaccept and tcpconnect together: socktrace reports both)."""

    def __init__(self, name: str, workdir: Path):
        self.name = name
        self.workdir = workdir
        self.logs = {part: workdir / f"{name}-{part}.log"
                     for part in (BCC_TOOLS if name == "bcc" else ["log"])}
        self.procs: list[subprocess.Popen] = []
        self.scrapes = 0
        self.closes = 0     # close records (+lifetime), of nginx's and ab's ends

    def _spawn(self, args, log: Path, stdout_to_log: bool = False) -> subprocess.Popen:
        log.unlink(missing_ok=True)
        p = subprocess.Popen(args, stderr=open(log.with_suffix(".err"), "w"),
                             stdout=open(log, "w") if stdout_to_log else None)
        self.procs.append(p)
        return p

    def _terminal(self, args, log: Path) -> subprocess.Popen:
        """`args` on a pseudo-terminal of 80x24, its screen read and dropped
        as a terminal emulator would; stderr to a file as _spawn's."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        log.unlink(missing_ok=True)
        p = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=open(log.with_suffix(".err"), "w"),
                             env={**os.environ, "TERM": "xterm-256color"}, start_new_session=True)
        os.close(slave)

        def drain():
            while True:
                try:
                    if not os.read(master, 1 << 16):
                        break
                except OSError:    # EIO: the terminal's last writer is gone
                    break
            os.close(master)
        threading.Thread(target=drain, daemon=True).start()
        self.procs.append(p)
        return p

    def start(self) -> float:
        t = time.monotonic()
        log = self.logs.get("log")
        if self.name.startswith("socktrace"):
            mode, _, other = self.name.split("-", 1)[1].partition("@")
            mode, _, extra = mode.partition("+")
            command = [COMPARE if other else SOCKTRACE] + FRONT.get(extra, []) + \
                ["--probe", mode] + ([] if extra in FRONT else ["-q"]) + \
                ["--no-snapshot", "-o", str(log)] + EXTRA_OPTIONS[extra]
            p = self._terminal(command, log) if extra in FRONT else self._spawn(command, log)
            wait_for(log, '"type":"ready"', p, timeout=600)
            if extra == "metrics":
                self.scraper = threading.Thread(target=self._scrape, daemon=True)
                self.scraper.start()
        elif self.name == "bpftrace":
            script = self.workdir / "established.bt"
            script.write_text(BPFTRACE_SCRIPT)
            p = self._spawn(["bpftrace", "-o", str(log), str(script)], log)
            wait_for(log, "Attaching", p, timeout=600)
        else:  # one after the other: two compiles at once are too big for a small VM
            for tool, path in BCC_TOOLS.items():
                log = self.logs[tool]
                p = self._spawn(["python3", "-u", path], log, stdout_to_log=True)
                wait_for(log, "PID", p, timeout=600)  # the header comes once attached
        return time.monotonic() - t

    def _scrape(self) -> None:
        """GET /metrics once a second while the round runs, as Prometheus does."""
        while self.procs[0].poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as r:
                    r.read()
                self.scrapes += 1
            except OSError:
                pass
            time.sleep(1.0)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> tuple[int, int]:
        """Stop; return the records of nginx's accepts on PORT and of ab's
        connects."""
        for p in self.procs:
            p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(300)  # detaching is slow under emulation (the VM run)
            except subprocess.TimeoutExpired:
                # bpftrace 0.17 sometimes ignores SIGINT in the VM; what it
                # printed is in its -o file already
                print(f"{self.name}: no exit 300 s after SIGINT: killed", flush=True)
                p.kill()
                p.wait()
        if self.name == "bcc":
            accepts = self.logs["tcpaccept"].read_text(errors="replace")
            connects = self.logs["tcpconnect"].read_text(errors="replace")
            return (len(re.findall(rf"^\d+ +nginx +\d+ +\S+ +\d+ +\S+ +{PORT}\b", accepts, re.M)),
                    len(re.findall(rf"^\d+ +ab +\d+ +\S+ +\S+ +{PORT}\b", connects, re.M)))
        text = self.logs["log"].read_text(errors="replace")
        if self.name.startswith("socktrace"):
            lines = text.splitlines()
            self.closes = sum(1 for line in lines if '"type":"close"' in line and (
                f'"lport":{PORT},' in line or f'"rport":{PORT},' in line and '"comm":"ab"' in line))
            summary = json.loads(lines[-1])
            self.lost = summary["lost"] if summary.get("type") == "summary" else None
            return (sum(1 for line in lines if '"type":"accept"' in line and f'"lport":{PORT},' in line),
                    sum(1 for line in lines if '"type":"connect"' in line and f'"rport":{PORT}' in line
                        and '"comm":"ab"' in line))
        return (len(re.findall(r"^accept \d+ nginx ", text, re.M)),
                len(re.findall(r"^connect \d+ ab ", text, re.M)))


def bcc_tools_run() -> bool:
    """bcc's tcpaccept and tcpconnect need kprobes (this project's CI
    kernel has none) and the distro's bpfcc-tools."""
    return all(os.path.exists(t) for t in BCC_TOOLS.values()) and \
        os.path.exists("/sys/kernel/tracing/kprobe_events")


def modes_that_run() -> list[str]:
    """The probe modes this kernel loads (auto's order: cheapest first)."""
    if os.environ.get("BENCH_MODES"):
        return os.environ["BENCH_MODES"].split()
    ready = subprocess.run([SOCKTRACE, "--json", "--no-snapshot", "--duration", "0.1"],
                           capture_output=True, text=True).stdout.splitlines()[0]
    info = json.loads(ready)
    return [m for m in ("kfunc", "kprobe", "tracepoint") if m not in info["skipped"]]


def auto_start_to_ready(n: int = int(os.environ.get("BENCH_AUTO_STARTS", "5"))) -> list[float]:
    """What `sudo socktrace` costs before it reports: --probe auto, which
    first asks the kernel about the modes it cannot use."""
    times = []
    for _ in range(n):
        t = time.monotonic()
        p = subprocess.Popen([SOCKTRACE, "--json", "--no-snapshot"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        p.stdout.readline()
        times.append(time.monotonic() - t)
        p.send_signal(signal.SIGINT)
        p.wait(60)
    return times


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="socktrace-bench-"))
    (workdir / "nginx.conf").write_text(NGINX_CONF.format(dir=workdir, port=PORT,
                                                          status_port=STATUS_PORT))
    subprocess.run(["nginx", "-c", str(workdir / "nginx.conf")], check=True)
    time.sleep(0.5)
    modes = modes_that_run()
    kinds = ["baseline"] + [f"socktrace-{m}" for m in modes] + \
        ([f"socktrace-{modes[0]}+metrics"] if METRICS else []) + \
        ([f"socktrace-{modes[0]}+lifetime"] if LIFETIME else []) + \
        ([f"socktrace-{modes[0]}+table", f"socktrace-{modes[0]}+top"] if FRONTENDS else []) + \
        ([f"socktrace-{modes[0]}@compare"] if COMPARE else []) + \
        ([f"socktrace-{modes[0]}+metrics@compare"] if COMPARE and METRICS else []) + \
        ([f"socktrace-{modes[0]}+lifetime@compare"] if COMPARE and LIFETIME else []) + \
        ([f"socktrace-{modes[0]}+table@compare"] if COMPARE and FRONTENDS else []) + ["bpftrace"] + \
        (["bcc"] if bcc_tools_run() else [])
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
                    cpu0 = sum(map(cpu_seconds, tracer.pids))
                row.update(ab())
                if tracer:
                    time.sleep(1.0)  # let it drain
                    row["rss_mb"] = sum(map(rss_mb, tracer.pids))
                    row["cpu_s_per_1000"] = (sum(map(cpu_seconds, tracer.pids)) - cpu0) / row["connections"] * 1000
                    row["accepts_reported"], row["connects_reported"] = tracer.stop()
                    if "+metrics" in kind:
                        row["scrapes"] = tracer.scrapes
                    if "+lifetime" in kind:   # each connection's end, both sides: 2 per connection
                        row["closes_reported"] = tracer.closes
                    if kind.startswith("socktrace"):
                        row["lost"] = tracer.lost
                results[kind].append(row)
                print(f"round {r + 1} {kind}: {row}", flush=True)
    finally:
        subprocess.run(["nginx", "-c", str(workdir / "nginx.conf"), "-s", "quit"])
    auto_ready = auto_start_to_ready()
    summary = {}
    for kind, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        # each tracer round against the baseline round just before it: the
        # machine's speed drifts by more than the overhead between rounds
        ratios = [r["rps"] / b["rps"] for r, b in zip(rows, results["baseline"])]
        med["ratio_to_baseline"] = statistics.median(ratios)
        med["ratio_range"] = [min(ratios), max(ratios)]
        summary[kind] = med
    doc = {"machine": f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} CPUs"
                      + os.environ.get("BENCH_MACHINE_NOTE", ""),
           "requests_per_round": N, "concurrency": CONCURRENCY, "rounds": ROUNDS,
           "summary_medians": summary, "auto_start_to_ready_s": auto_ready,
           "rounds_raw": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"Machine: {doc['machine']}; nginx + ab, {N} new IPv4 connections a round to a "
             f"dual-stack listener, concurrency {CONCURRENCY}, medians of {ROUNDS} alternating rounds "
             "(vs baseline: median of each round's ratio to the baseline round before it, and its range).",
             "",
             "| tracer | connections/s | vs baseline | accepts / connects reported, of made | CPU s per 1000 conn | start -> ready | RSS |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for kind, m in summary.items():
        if kind == "baseline":
            lines.append(f"| none | {m['rps']:.0f} | 1.00 | - | - | - | - |")
        else:
            lo, hi = m["ratio_range"]
            label = "bcc tcpaccept + tcpconnect" if kind == "bcc" else kind
            closes = (f"; closes {m['closes_reported']:.0f} of {2 * m['connections']:.0f}"
                      if "closes_reported" in m else "")
            lines.append(f"| {label} | {m['rps']:.0f} | {m['ratio_to_baseline']:.2f} ({lo:.2f}-{hi:.2f}) | "
                         f"{m['accepts_reported']:.0f} / {m['connects_reported']:.0f}, of {m['connections']:.0f}"
                         f"{closes} | "
                         f"{m['cpu_s_per_1000']:.3f} | "
                         f"{m['start_to_ready_s']:.2f} s | {m['rss_mb']:.0f} MB |")
    lines += ["", f"Start -> ready of `sudo socktrace` (--probe auto, which first asks the kernel "
              f"about the modes it cannot use): {statistics.median(auto_ready):.2f} s, median of "
              f"{len(auto_ready)}."]
    if "bcc" not in summary:
        lines += ["", "bcc's tcpaccept and tcpconnect: not run here (they need kprobes and "
                  "bpfcc-tools); see the VM table."]
    (RESULTS / f"{NAME}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
