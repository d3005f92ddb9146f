"""Benchmark: `socktrace snapshot` with 10,000 established connections.

Opens N loopback connections to a dual-stack listener (N client sockets in
one process, N accepted ones in another: 2N sockets), then times, in
alternating rounds:
  - socktrace snapshot --json (the whole command, processes included),
  - ss -tanp (the baseline a user would reach for: sockets and processes).
Writes bench/results/snapshot.json and prints a markdown table.
Run as root (make bench-snapshot).
"""

import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

N = int(os.environ.get("N", "10000"))
ROUNDS = 5
SOCKTRACE = str(Path(sys.executable).parent / "socktrace")


def raise_fd_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (N + 1000, N + 1000))


def server(port_w):
    raise_fd_limit()
    ls = socket.socket(socket.AF_INET6)
    ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    ls.bind(("::", 0))
    ls.listen(4096)
    os.write(port_w, str(ls.getsockname()[1]).encode() + b"\n")
    held = [ls.accept()[0] for _ in range(N)]
    os.write(port_w, b"accepted\n")
    time.sleep(3600)
    return held


def timed(cmd):
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t, r.stdout


def main():
    raise_fd_limit()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        server(w)
        os._exit(0)
    f = os.fdopen(r)
    port = int(f.readline())
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(N)]
    assert f.readline() == "accepted\n"
    try:
        times = {"socktrace snapshot --json": [], "ss -tanp": []}
        sizes = {}
        for _ in range(ROUNDS):
            for name, cmd in (("socktrace snapshot --json", [SOCKTRACE, "snapshot", "--json"]),
                              ("ss -tanp", ["ss", "-tanp"])):
                dt, out = timed(cmd)
                times[name].append(dt)
                sizes[name] = out.count(b"\n")
        mapped = sum(1 for line in timed([SOCKTRACE, "snapshot", "--json", "--mapped-only"])[1].splitlines()
                     if json.loads(line)["pid"] == pid)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"machine": f"{platform.node()} {platform.release()} {os.cpu_count()} CPUs",
              "connections": N, "rounds": ROUNDS, "median_s": med,
              "all_s": times, "lines": sizes, "mapped_attributed_to_server": mapped,
              "ratio_to_ss": med["socktrace snapshot --json"] / med["ss -tanp"]}
    out = Path(__file__).parent / "results" / "snapshot.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| {N} connections ({2 * N} sockets) | median of {ROUNDS} | lines |")
    print("| --- | --- | --- |")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} s | {sizes[k]} |")
    print(f"\nsocktrace/ss: {result['ratio_to_ss']:.2f}; "
          f"{mapped} mapped connections attributed to the server process")
    assert mapped == N, mapped


if __name__ == "__main__":
    main()
