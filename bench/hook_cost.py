"""What each candidate hook for the tracepoint mode costs by itself: an
EMPTY bpftrace program on it, so that only the attachment is measured.

Two measures, alternating rounds, each against the no-hook round before it:
  - a loop of getppid(), a system call none of the hooks is about (what
    the rest of the machine pays);
  - nginx + ab as in conn_bench.py (what the connections pay).
Candidates: the accept system calls' exits (what the tracepoint mode uses
to name the accepting process), the per-send/recv socket tracepoints (the
other process-context hooks on a connection's path), inet_sock_set_state
(which every mode uses, raw).

Writes bench/results/hooks.{json,md}.  Run as root.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import conn_bench
from syscall_bench import ns_per_syscall

ROUNDS = int(os.environ.get("ROUNDS", "5"))
CANDIDATES = {
    "none": None,
    "syscalls:sys_exit_accept{,4}": "tracepoint:syscalls:sys_exit_accept, tracepoint:syscalls:sys_exit_accept4 {}",
    "sock:sock_{send,recv}_length": "tracepoint:sock:sock_send_length, tracepoint:sock:sock_recv_length {}",
    # bpftrace 0.17 (Debian 12) has no raw tracepoints; socktrace attaches
    # this one raw, which skips the classic one's trace record
    "sock:inet_sock_set_state": "tracepoint:sock:inet_sock_set_state {}",
}


def attached(program: str | None):
    """bpftrace running `program`, ready; or None."""
    if program is None:
        return None
    p = subprocess.Popen(["bpftrace", "-e", program], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    assert "Attaching" in p.stdout.readline()
    return p


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="socktrace-hooks-"))
    conf = workdir / "nginx.conf"
    conf.write_text(conn_bench.NGINX_CONF.format(dir=workdir, port=conn_bench.PORT,
                                                 status_port=conn_bench.STATUS_PORT))
    subprocess.run(["nginx", "-c", str(conf)], check=True)
    time.sleep(0.5)
    rows: dict[str, list[dict]] = {k: [] for k in CANDIDATES}
    try:
        conn_bench.ab()
        for r in range(ROUNDS):
            for name, program in CANDIDATES.items():
                p = attached(program)
                try:
                    row = {"ns_per_getppid": ns_per_syscall(), "rps": conn_bench.ab()["rps"]}
                finally:
                    if p:
                        p.terminate()
                        p.wait(60)
                rows[name].append(row)
                print(f"round {r + 1} {name}: {row}", flush=True)
    finally:
        subprocess.run(["nginx", "-c", str(conf), "-s", "quit"])
    base = rows["none"]
    summary = {}
    for name, rs in rows.items():
        syscall = [x["ns_per_getppid"] / b["ns_per_getppid"] for x, b in zip(rs, base)]
        conns = [x["rps"] / b["rps"] for x, b in zip(rs, base)]
        summary[name] = {"ns_per_getppid": statistics.median(x["ns_per_getppid"] for x in rs),
                         "getppid_ratio": statistics.median(syscall),
                         "getppid_range": [min(syscall), max(syscall)],
                         "conn_ratio": statistics.median(conns), "conn_range": [min(conns), max(conns)]}
    machine = f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} CPUs"
    results = Path(__file__).parent / "results"
    (results / "hooks.json").write_text(json.dumps(
        {"machine": machine, "rounds": ROUNDS, "summary_medians": summary, "rounds_raw": rows},
        indent=2) + "\n")
    lines = [f"Machine: {machine}; an EMPTY bpftrace program on each hook; medians of {ROUNDS} "
             "alternating rounds, each against the no-hook round before it.", "",
             "| hook | ns per getppid() | getppid() vs none | nginx + ab connections/s vs none |",
             "| --- | --- | --- | --- |"]
    for name, m in summary.items():
        lines.append(f"| {name} | {m['ns_per_getppid']:.0f} | {m['getppid_ratio']:.2f} "
                     f"({m['getppid_range'][0]:.2f}-{m['getppid_range'][1]:.2f}) | {m['conn_ratio']:.2f} "
                     f"({m['conn_range'][0]:.2f}-{m['conn_range'][1]:.2f}) |")
    (results / "hooks.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
