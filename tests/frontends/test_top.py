"""`socktrace top` and the streaming table in a real terminal (tmux),
under a known load from tests/frontends/load.py: the rows and their
rates, a sort key, a view, a resize, q; the table's counted lines under a
burst and its rows again after it; -o keeps every record meanwhile."""

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SOCKTRACE
from tmux import Tmux

LOAD = str(Path(__file__).parent / "load.py")
UNITS = {"k": 1e3, "M": 1e6, "G": 1e9}


class Load:
    def __init__(self, rate_dual: float, rate_v4: float, seconds: float, burst: int = 0):
        self.proc = subprocess.Popen([sys.executable, LOAD, str(rate_dual), str(rate_v4),
                                      str(seconds), str(burst)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ports = json.loads(self.proc.stdout.readline())
        self.dual, self.v4 = ports["dual"], ports["v4"]

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def done(self) -> list[int]:
        return json.loads(self.proc.stdout.readline())["done"]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def terminal(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.close()


def number(text: str) -> float:
    """A number as top_text.number writes it: 35.0k -> 35000.0."""
    return float(text[:-1]) * UNITS[text[-1]] if text[-1] in UNITS else float(text)


def rows(screen: list[str]) -> dict[str, dict]:
    """The rows under the column titles: key -> {"ds": bool, COLUMN: number}."""
    at = next(i for i, line in enumerate(screen) if " DS CONN/s " in line)
    titles = screen[at].split()[screen[at].split().index("DS") + 1:]
    out = {}
    for line in screen[at + 1:]:
        words = line.split()
        if len(words) < len(titles) + 1:
            continue
        nums, rest = words[-len(titles):], words[:-len(titles)]
        ds = rest[-1] == "DS"
        key = " ".join(rest[:-1] if ds else rest)
        out[key] = {"ds": ds, **{t: n if t == "BYTES/s" else number(n)
                                 for t, n in zip(titles, nums)}}
    return out


def test_top_shows_each_listener_rate_sorts_resizes_and_quits(terminal, tmp_path):
    log, err = tmp_path / "top.log", tmp_path / "top.err"
    load = Load(rate_dual=40, rate_v4=15, seconds=14)
    try:
        terminal.run(f"{SOCKTRACE} top -i 1 -o {log} 2>{err}")
        terminal.wait(lambda s: any(" DS CONN/s " in line for line in s), timeout=120,
                      what="top's column titles")
        load.go()
        dual, v4, out_dual = f"{load.dual}/tcp6 python3", f"{load.v4}/tcp python3", \
            f">{load.dual}/tcp python3"

        def steady(screen):
            r = rows(screen)
            return dual in r and v4 in r and 34 <= r[dual]["MAPPED"] <= 46 and \
                12 <= r[v4]["IPv4"] <= 18
        screen = terminal.wait(steady, timeout=20, what="the load's rates")
        r = rows(screen)
        assert screen[0].startswith("socktrace top - ") and "every 1s" in screen[0]
        assert (r[dual]["ds"], r[dual]["IPv4"], r[dual]["IPv6"]) == (True, 0, 0)
        assert (r[v4]["ds"], r[v4]["MAPPED"]) == (False, 0)
        # the client's side: IPv4 sockets connecting to the dual-stack port
        assert r[out_dual]["ds"] is False and 34 <= r[out_dual]["IPv4"] <= 46
        assert all(len(line) <= 80 for line in screen) and len(screen) <= 24
        order = [k for k in r if k in (dual, v4, out_dual)]
        assert order.index(v4) > order.index(dual)          # CONN/s, the busiest first

        terminal.keys(">")                                  # sort by the next column: IPv4
        screen = terminal.wait(lambda s: "sort: IPv4 " in s[3], what="the sort by IPv4")
        order = [k for k in rows(screen) if k in (dual, v4, out_dual)]
        assert order.index(out_dual) < order.index(v4) < order.index(dual), screen

        terminal.keys("p")                                  # one row per process
        screen = terminal.wait(lambda s: s[3].startswith("View: process") and
                               any(f"{load.proc.pid}/python3" in line for line in s[6:]),
                               what="the process view")

        terminal.resize(60, 15)                             # a smaller terminal
        # redrawn whole: no line of the old screen left among the new ones
        screen = terminal.wait(lambda s: len(s) <= 15 and s[0].startswith("socktrace top") and
                               s[1].startswith("Events: ") and s[2].startswith("Connections: ") and
                               s[5].startswith("PID/PROCESS@CONTAINER") and
                               any(f"{load.proc.pid}/python3" in line for line in s[6:]),
                               what="the screen redrawn at 60x15")
        assert all(len(line) <= 60 for line in screen), screen

        made = load.done()
        terminal.keys("q")
        terminal.wait(lambda s: any(line.rstrip().endswith("EXIT=0") for line in s), what="exit 0 after q")
    finally:
        load.close()
    summary = err.read_text()
    assert re.search(rf"served \d+ IPv4 connections? on port {load.dual} through a dual-stack", summary)
    # the log has every connection once, whatever the screen showed
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    accepts = {p: sum(1 for x in recs if x["type"] == "accept" and x["lport"] == p)
               for p in (load.dual, load.v4)}
    assert accepts == {load.dual: made[0], load.v4: made[1]}
    assert recs[-1]["type"] == "summary" and recs[-1]["lost"] == 0


def test_table_counts_a_burst_then_shows_rows_again(terminal, tmp_path):
    log, err = tmp_path / "table.log", tmp_path / "table.err"
    load = Load(rate_dual=4, rate_v4=0, seconds=5, burst=3000)
    try:
        terminal.run(f"{SOCKTRACE} --no-snapshot -P {load.dual} -o {log} 2>{err}")
        terminal.wait(lambda s: any(line.startswith("TIME ") for line in s), timeout=120,
                      what="the table's header")
        load.go()
        made = load.done()
        terminal.wait(lambda s: len(re.findall(rf"accept .*:{load.dual} +127\.0\.0\.1:\d+$",
                                               "\n".join(s), re.M)) >= 3, what="rows after the burst")
        terminal.keys("C-c")
        terminal.wait(lambda s: any(line.rstrip().endswith("EXIT=0") for line in s), what="exit 0")
    finally:
        load.close()
    written = terminal.written().replace("\r", "")
    counted = [int(n) for n in re.findall(rf"accept .*127\.0\.0\.1:{load.dual} +(\d+) conns, 1 addr ",
                                          written)]
    single = re.findall(rf"accept .*127\.0\.0\.1:{load.dual} +127\.0\.0\.1:\d+ ", written)
    # every accept is on the terminal once: in a row or in a count
    assert counted and sum(counted) + len(single) == 3000 + made[0]
    # the rows after the burst: the last accept lines are single rows again
    accept_lines = [line for line in written.splitlines() if " accept " in line]
    assert all(" conns, " not in line for line in accept_lines[-3:])
    assert err.read_text().count("more than 50 rows a second") == 1
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(1 for x in recs if x["type"] == "accept") == 3000 + made[0]


def test_top_without_a_terminal_refuses_in_one_line_and_batch_prints_blocks(tmp_path):
    p = subprocess.run([SOCKTRACE, "top"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines()[-1] == ("Error: socktrace top needs a terminal: add "
                                                 "--batch (-b) for plain text blocks")
    load = Load(rate_dual=20, rate_v4=0, seconds=3)
    try:
        top = subprocess.Popen([SOCKTRACE, "top", "--batch", "-i", "1", "-n", "4"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        load.go()
        out, errs = top.communicate(timeout=120)
    finally:
        load.close()
    assert top.returncode == 0, errs
    blocks = [b for b in re.split(r"(?m)^(?=socktrace top - )", out) if b]
    assert len(blocks) == 5          # the first at ready, then -n 4 refreshes
    assert any(re.search(rf"^{load.dual}/tcp6 python3 +DS ", b, re.M) for b in blocks), out
    assert "\x1b" not in out         # plain text: no terminal escapes
    assert "served" in errs          # the summary at exit


def test_top_shows_the_connections_waiting_in_an_accept_queue():
    """QUEUED is now, not a rate: a listener that never accepts, three
    connections in its accept queue (reported `unaccepted` after 1 s)."""
    owner = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys; s = socket.create_server(('::', 0), "
         "family=socket.AF_INET6, dualstack_ipv6=True, backlog=16); "
         "print(s.getsockname()[1], flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(owner.stdout.readline())
    top = subprocess.Popen([SOCKTRACE, "top", "--batch", "-i", "1", "-n", "5", "-P", str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert top.stdout.readline().startswith("socktrace top - ")   # ready: tracing
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        out, errs = top.communicate(timeout=120)
    finally:
        owner.kill()
        owner.wait()
    assert top.returncode == 0, errs
    last = re.split(r"(?m)^(?=socktrace top - )", out)[-1].splitlines()
    r = rows(last)
    assert r[f"{port}/tcp6 python3"]["QUEUED"] == 3 and r[f"{port}/tcp6 python3"]["ds"], last
    assert len(clients) == 3
