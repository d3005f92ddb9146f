"""Benchmark: what socktrace costs a system call it has nothing to do with.

Attaching any system call tracepoint puts every system call of every task
on the kernel's slow path, whatever the BPF program does (measured here:
+31 % per getppid()).  A tight loop of getppid(), which no probe of
socktrace's looks at, in alternating rounds: no tracer (the baseline),
then socktrace in each probe mode that loads, each round compared with the
baseline round before it.

Writes bench/results/syscall.json and syscall.md (BENCH_RESULTS, BENCH_NAME).
Run as root: make bench.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

N = int(os.environ.get("SYSCALLS", "2000000"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
HERE = Path(__file__).parent
SOCKTRACE = os.environ.get("SOCKTRACE") or str(Path(sys.executable).parent / "socktrace")
RESULTS = Path(os.environ.get("BENCH_RESULTS") or HERE / "results")
NAME = os.environ.get("BENCH_NAME", "syscall")


def ns_per_syscall(n: int = N) -> float:
    """getppid() n times: ns per call (the Python loop's own ~40 ns included,
    the same in every round)."""
    getppid = os.getppid
    t = time.perf_counter_ns()
    for _ in range(n):
        getppid()
    return (time.perf_counter_ns() - t) / n


def modes_that_load() -> list[str]:
    if os.environ.get("BENCH_MODES"):
        return os.environ["BENCH_MODES"].split()
    out = subprocess.run([SOCKTRACE, "--json", "--no-snapshot", "--duration", "0.1"],
                         capture_output=True, text=True).stdout.splitlines()[0]
    return [m for m in ("kfunc", "kprobe", "tracepoint") if m not in json.loads(out)["skipped"]]


def with_socktrace(mode: str) -> float:
    p = subprocess.Popen([SOCKTRACE, "--probe", mode, "--json", "--no-snapshot", "-P", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert '"type":"ready"' in p.stdout.readline()
        return ns_per_syscall()
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(600)


def main() -> None:
    kinds = ["baseline"] + [f"socktrace-{m}" for m in modes_that_load()]
    rows: dict[str, list[float]] = {k: [] for k in kinds}
    ns_per_syscall(N // 10)  # warm-up
    for r in range(ROUNDS):
        for kind in kinds:
            ns = ns_per_syscall() if kind == "baseline" else with_socktrace(kind.split("-", 1)[1])
            rows[kind].append(ns)
            print(f"round {r + 1} {kind}: {ns:.1f} ns per getppid()", flush=True)
    summary = {}
    for kind, values in rows.items():
        ratios = [v / b for v, b in zip(values, rows["baseline"])]
        summary[kind] = {"ns": statistics.median(values), "ratio": statistics.median(ratios),
                         "ratio_range": [min(ratios), max(ratios)]}
    doc = {"machine": f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} CPUs"
                      + os.environ.get("BENCH_MACHINE_NOTE", ""),
           "syscalls_per_round": N, "rounds": ROUNDS, "summary_medians": summary, "rounds_raw": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"Machine: {doc['machine']}; a Python loop of {N} getppid() (a system call no "
             f"probe looks at), medians of {ROUNDS} alternating rounds (vs baseline: each round "
             "against the baseline round before it, and the range).", "",
             "| tracer | ns per getppid() | vs baseline |", "| --- | --- | --- |"]
    for kind, m in summary.items():
        lo, hi = m["ratio_range"]
        lines.append(f"| {'none' if kind == 'baseline' else kind} | {m['ns']:.0f} | "
                     f"{m['ratio']:.2f} ({lo:.2f}-{hi:.2f}) |")
    (RESULTS / f"{NAME}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
