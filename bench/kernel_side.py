"""Benchmark: what socktrace's BPF programs cost the kernel per connection.

The kernel times every BPF program while kernel.bpf_stats_enabled is 1
(run_time_ns and run_cnt, per program, as `bpftool prog show` lists them).
socktrace (tracepoint mode, the one this kernel runs) traces N IPv4
connections to a dual-stack listener made by this process; the time its
programs ran, divided by N, is their cost per connection.  BENCH_COMPARE
names another socktrace command (an older version, say) measured in the
same alternating rounds.

Writes bench/results/kernel-side.{json,md} (BENCH_RESULTS, BENCH_NAME).
Run as root.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

N = int(os.environ.get("N", "5000"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
HERE = Path(__file__).parent
SOCKTRACE = os.environ.get("SOCKTRACE") or str(Path(sys.executable).parent / "socktrace")
COMPARE = os.environ.get("BENCH_COMPARE")
RESULTS = Path(os.environ.get("BENCH_RESULTS") or HERE / "results")
NAME = os.environ.get("BENCH_NAME", "kernel-side")
STATS = "/proc/sys/kernel/bpf_stats_enabled"


def programs_of(pid: int) -> dict[str, tuple[int, int]]:
    """name -> (run_time_ns, run_cnt) of the BPF programs `pid` holds,
    found by its file descriptors' fdinfo (bpftool lists pids only when
    built with BPF skeletons) and named by `bpftool prog show`."""
    found: dict[int, tuple[int, int]] = {}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if "run_time_ns" in info:   # the program's own fd (a link's names it too)
            found[int(info["prog_id"])] = (int(info["run_time_ns"]), int(info.get("run_cnt", 0)))
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True,
                         check=True).stdout
    names = {p["id"]: p.get("name", str(p["id"])) for p in json.loads(out)}
    by_name: dict[str, tuple[int, int]] = {}
    for i, (ns, runs) in found.items():   # accept and accept4's exits share a (cut) name
        name = names.get(i, str(i))
        total = by_name.get(name, (0, 0))
        by_name[name] = (total[0] + ns, total[1] + runs)
    return by_name


def connections(n: int) -> None:
    """n IPv4 connections to a dual-stack listener, each accepted and closed."""
    ls = socket.socket(socket.AF_INET6)
    ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    ls.bind(("::", 0))
    ls.listen(4096)
    port = ls.getsockname()[1]

    def accept():
        for _ in range(n):
            ls.accept()[0].close()
    t = threading.Thread(target=accept)
    t.start()
    for _ in range(n):
        socket.create_connection(("127.0.0.1", port)).close()
    t.join()
    ls.close()


# socktrace's options measured besides none: --metrics (the bytes: each
# connection kept until its end, its payload summed there) and --lifetime
VARIANTS = {"": [], "+metrics": ["--metrics", "127.0.0.1:19467"], "+lifetime": ["--lifetime"]}


def measure(command: list[str], workdir: Path) -> tuple[float, dict[str, float]]:
    """ns per connection of every program of `command`'s socktrace, and per program."""
    log = workdir / "log"
    log.unlink(missing_ok=True)
    p = subprocess.Popen([command[0], "--probe", "tracepoint", "-q", "--no-snapshot", "-o", str(log),
                          *command[1:]], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (log.exists() and b'"type":"ready"' in log.read_bytes()):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not get ready")
            time.sleep(0.01)
        before = programs_of(p.pid)
        connections(N)
        time.sleep(0.2)
        after = programs_of(p.pid)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(120)
    per = {name: (after[name][0] - before.get(name, (0, 0))[0]) / N for name in after}
    return sum(per.values()), per


def main() -> None:
    tracers = {f"socktrace{v}": [SOCKTRACE, *args] for v, args in VARIANTS.items()}
    if COMPARE:
        tracers.update({f"socktrace{v}@compare": [COMPARE, *VARIANTS[v]] for v in ("", "+metrics")})
    old = open(STATS).read().strip()
    open(STATS, "w").write("1")
    results: dict[str, list] = {name: [] for name in tracers}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            connections(500)   # warm up
            for r in range(ROUNDS):
                for name, command in tracers.items():
                    total, per = measure(command, Path(tmp))
                    results[name].append({"ns_per_connection": total, "programs": per})
                    print(f"round {r + 1}: {name} {total:.0f} ns per connection", file=sys.stderr)
    finally:
        open(STATS, "w").write(old)
    machine = (f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} CPUs; {N} IPv4 "
               f"connections to a dual-stack listener per round, tracepoint mode, medians of "
               f"{ROUNDS} alternating rounds")
    if COMPARE:
        machine += f"; socktrace@compare = {COMPARE}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps({"machine": machine, "results": results},
                                                     indent=1) + "\n")
    lines = [f"Machine: {machine}.", "",
             "| tracer | ns per connection (range) | per program (ns per connection) |",
             "| --- | --- | --- |"]
    for name, rounds in results.items():
        totals = [x["ns_per_connection"] for x in rounds]
        progs = sorted(rounds[0]["programs"])
        per = ", ".join(f"{p} {statistics.median(x['programs'].get(p, 0) for x in rounds):.0f}"
                        for p in progs)
        lines.append(f"| {name} | {statistics.median(totals):.0f} ({min(totals):.0f}-{max(totals):.0f}) "
                     f"| {per} |")
    (RESULTS / f"{NAME}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
