"""What every output writes besides connections: the `existing`, `lost` and
`summary` records in JSON on stdout, in the table (stdout rows, stderr
lines) and in the log file (-o), alone and several at once; and an accept()
made with the plain accept system call."""

import json
import os
import platform
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime, timezone

import pytest

from helpers import SOCKTRACE, Socktrace, burst, listener, me, one
from test_logging import log_records, wait_ready

# the system call numbers of accept and accept4 in /proc/PID/syscall
ACCEPT_NR = {"x86_64": ("43", "288"), "aarch64": ("202", "242")}[platform.machine()]


@pytest.mark.parametrize("tracer_first", [True, False], ids=["traced-before-accept",
                                                              "accept-blocked-before-tracing"])
def test_plain_accept_syscall_on_a_dual_stack_listener(peer, tracer_first):
    """The accept system call, not accept4: the tracepoint mode hooks the
    exits of the two separately (and every mode falls back on them for an
    accept() blocked before the probes were attached).  That the peer
    really calls accept is checked here, not trusted to glibc: it is
    blocked in that system call (/proc/PID/syscall, no strace needed;
    strace showed `accept(3, NULL, NULL) = 4` for it with glibc 2.36)."""
    server = peer("plain-accept")
    info = server.read()
    port = info["port"]
    assert info["pid"] == server.pid

    def blocked_in_accept():
        server.proc.stdin.write("go\n")
        server.proc.stdin.flush()
        deadline = time.monotonic() + 10
        while True:
            nr = open(f"/proc/{server.pid}/syscall").read().split()[0]
            if nr in ACCEPT_NR:
                break
            assert time.monotonic() < deadline, "peer never blocked in accept()"
            time.sleep(0.02)
        assert nr == ACCEPT_NR[0], f"blocked in system call {nr}, not accept ({ACCEPT_NR[0]})"

    if tracer_first:
        st = Socktrace("-P", str(port))
        blocked_in_accept()
    else:
        blocked_in_accept()
        st = Socktrace("-P", str(port))
    try:
        client = socket.create_connection(("127.0.0.1", port))
        cport = client.getsockname()[1]
        accepted = server.read()
        assert accepted == {"pid": server.pid, "lport": port, "rport": cport, "raddr": "::ffff:127.0.0.1"}
        rec = one(st, "accept", lport=port, rport=cport)
        one(st, "connect", lport=cport, rport=port)
        assert st.stop() == 0
    finally:
        if st.proc.poll() is None:
            st.proc.kill()
            st.proc.wait()
    assert {k: rec[k] for k in ("pid", "lport", "rport", "laddr", "raddr", "mapped", "sock_family",
                                "v6only")} == {
        "pid": server.pid, "lport": port, "rport": cport, "laddr": "127.0.0.1", "raddr": "127.0.0.1",
        "mapped": True, "sock_family": "AF_INET6", "v6only": False}
    assert rec["cmdline"].endswith("peer.py plain-accept")
    recs = st.records
    # exactly one accept: neither missed nor reported by two hooks
    assert [r["type"] for r in recs if r.get("lport") == port] == ["accept"]
    assert [r["type"] for r in recs if r.get("rport") == port] == ["connect"]
    s = recs[-1]
    assert s["type"] == "summary"
    assert (s["events"], s["mapped"], s["by_type"]) == (2, 1, {"accept": 1, "connect": 1})


# -- the outputs ----------------------------------------------------------

OUTPUTS = ["json", "table", "log", "table+log", "json+log"]

# the table's stderr lines (output/table.py)
SUMMARY_LINE = re.compile(r"^socktrace: (\d+) events? \((.*)\), (\d+) IPv4 over AF_INET6 \(MAPPED\), "
                          r"(\d+) lost$")
WARNING_LINE = re.compile(r"^socktrace: WARNING: (\d+) events lost so far \(buffer full\), "
                          r"(\d+) queued connections untracked$")
EXISTING_HEADER = "Existing IPv4 connections over AF_INET6 sockets ({}):"
TABLE_HEADER = ["TIME", "EVENT", "PID/COMM@CONTAINER", "LOCAL", "PEER", "SOCKET", "V6ONLY"]


class Run:
    """socktrace with the outputs of `mode` ("json", "table", "log" (-q -o),
    or two at once: "table+log", "json+log"), its stdout and stderr read
    as they come (the table of a burst would fill a pipe)."""

    def __init__(self, mode, tmp_path, *args, ready_timeout=60):
        self.mode = mode
        self.log = tmp_path / "log" if "log" in mode else None
        argv = [SOCKTRACE, *args]
        if mode.startswith("json"):
            argv.append("--json")
        if self.log:
            argv += ["-o", str(self.log)] + (["-q"] if mode == "log" else [])
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list = []
        self.err: list = []
        self._readers = [threading.Thread(target=self._read, args=(f, lines), daemon=True)
                         for f, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()
        if mode == "log":
            wait_ready(self.log, self.proc, ready_timeout)
        elif mode.startswith("json"):
            self.wait(lambda: any(json.loads(l)["type"] == "ready" for l in self.out), ready_timeout)
        else:
            self.wait(lambda: any(l.split() == TABLE_HEADER for l in self.out), ready_timeout)

    @staticmethod
    def _read(f, lines):
        for line in f:
            lines.append(line)

    def wait(self, cond, timeout=30):
        deadline = time.monotonic() + timeout
        while not cond():
            assert self.proc.poll() is None or cond(), \
                f"socktrace exited {self.proc.returncode}: {''.join(self.err)}"
            assert time.monotonic() < deadline, f"timed out; stderr: {''.join(self.err)}"
            time.sleep(0.05)

    def stop(self, sig=signal.SIGINT):
        self.proc.send_signal(sig)
        rc = self.proc.wait(120)
        for t in self._readers:
            t.join(120)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # -- what it wrote, once stopped
    def json_outputs(self):
        """The record lists of the JSON Lines outputs: stdout, the log."""
        outs = {}
        if self.mode.startswith("json"):
            outs["stdout"] = [json.loads(l) for l in self.out]
        if self.log:
            outs["log"] = log_records(self.log.parent)
        return outs

    def table(self):
        """stdout of the table: (the lines before the header, the rows after it)."""
        lines = [l.rstrip("\n") for l in self.out]
        head = next(i for i, l in enumerate(lines) if l.split() == TABLE_HEADER)
        return lines[:head], lines[head + 1:]


@pytest.fixture
def run(tmp_path):
    runs = []

    def start(mode, *args, **kw):
        r = Run(mode, tmp_path, *args, **kw)
        runs.append(r)
        return r
    yield start
    for r in runs:
        r.kill()


def endpoint(addr, port):
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def row_of(rec):
    """A connection record as the table shows it, split into its columns."""
    when = datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    socket_ = {"AF_INET": "tcp", "AF_INET6": "tcp6 MAPPED" if rec["mapped"] else "tcp6"}
    v6only = rec.get("v6only")
    return (when.astimezone().strftime("%H:%M:%S"),
            {"unaccepted": "queued"}.get(rec["type"], rec["type"]),
            f"{rec['pid'] or '-'}/{rec['comm']}", endpoint(rec["laddr"], rec["lport"]),
            endpoint(rec["raddr"], rec["rport"]), socket_[rec["sock_family"]],
            "-" if v6only is None else str(int(v6only)))


def split_row(line):
    """A table row, split into its columns (no column but SOCKET has a space
    in it here: our processes are python)."""
    f = line.split()
    return tuple(f[:5]) + (" ".join(f[5:-1]), f[-1])


def summary_line(err_lines):
    found = [SUMMARY_LINE.match(l.rstrip("\n")) for l in err_lines]
    found = [m for m in found if m]
    assert len(found) == 1, err_lines
    m = found[0]
    by_type = {t: int(n) for n, t in (part.split(" ") for part in m.group(2).split(", "))}
    return {"events": int(m.group(1)), "by_type": by_type, "mapped": int(m.group(3)),
            "lost": int(m.group(4))}


@pytest.mark.parametrize("mode", OUTPUTS)
def test_existing_connections_and_summary(run, mode):
    """One mapped connection made before socktrace starts (`existing`),
    four during the run (three IPv4 ones, mapped on the server side, and one
    over ::1), then Ctrl-C: each output lists the old one first, has a
    summary counting exactly the new ones, and the outputs agree."""
    ls = listener(v6only=0)
    port = ls.getsockname()[1]
    old = socket.create_connection(("127.0.0.1", port))
    old_server, _ = ls.accept()
    oport = old.getsockname()[1]

    r = run(mode, "-P", str(port))
    clients, servers = [], []
    for host in ("127.0.0.1", "127.0.0.1", "::1", "127.0.0.1"):
        clients.append(socket.create_connection((host, port)))
        servers.append(ls.accept()[0])
    assert r.stop(signal.SIGINT) == 0
    pid, comm = os.getpid(), me()["comm"]

    # what the table shows of each new connection (timeless)
    want_rows = Counter()
    for c in clients:
        caddr, cport = c.getsockname()[:2]
        mapped = c.family == socket.AF_INET   # an IPv4 client: mapped on the server's side
        want_rows[("accept", f"{pid}/{comm}", endpoint(caddr, port), endpoint(caddr, cport),
                   "tcp6 MAPPED" if mapped else "tcp6", "0")] += 1
        want_rows[("connect", f"{pid}/{comm}", endpoint(caddr, cport), endpoint(caddr, port),
                   "tcp" if mapped else "tcp6", "-")] += 1
    want_summary = {"events": 8, "mapped": 3, "lost": 0, "by_type": {"accept": 4, "connect": 4}}

    outs = r.json_outputs()
    for where, recs in outs.items():
        types = [x["type"] for x in recs]
        assert types[:2] == ["existing", "ready"], (where, types)
        ex = recs[0]
        assert {k: ex.get(k) for k in ("state", "pid", "sock_family", "mapped", "laddr", "lport",
                                       "raddr", "rport")} == {
            "state": "ESTABLISHED", "pid": pid, "sock_family": "AF_INET6", "mapped": True,
            "laddr": "127.0.0.1", "lport": port, "raddr": "127.0.0.1", "rport": oport}, where
        assert types.count("existing") == 1, where   # -P: the listener's connection only, mapped only
        conns = [x for x in recs if x["type"] in ("accept", "connect", "unaccepted")]
        assert Counter(row_of(x)[1:] for x in conns) == want_rows, where
        assert types[-1] == "summary" and types.count("summary") == 1, where
        s = recs[-1]
        assert {k: s[k] for k in want_summary} == want_summary, where
        # the dual-stack listener that served them, with the advice for
        # this program (a Python one)
        assert [(d["pid"], d["port"], d["mapped"], d["advice"]["app"]) for d in s["dual_stack"]] == \
            [(pid, port, 3, "python")], where
        assert s["unaccepted_untracked"] == 0 and "lost" not in types, where
    if len(outs) == 2:                     # the same records in both
        assert outs["stdout"] == outs["log"]

    if "table" in mode:
        before, rows = r.table()
        assert before[0] == EXISTING_HEADER.format(1)
        assert before[1].split()[:3] == ["Proto", "Local", "Address"]
        assert len(before) == 4 and before[3] == ""
        existing = before[2]
        assert existing.startswith("tcp6 MAPPED ")
        assert existing.split()[2:6] == [f"127.0.0.1:{port}", f"127.0.0.1:{oport}", "ESTABLISHED",
                                         f"{pid}/{comm}"]
        assert Counter(split_row(l)[1:] for l in rows) == want_rows
        err = "".join(r.err)
        assert "socktrace: tracing with probe mode " in err and "WARNING" not in err
        s = summary_line(r.err)
        assert s == {k: want_summary[k] for k in ("events", "by_type", "mapped", "lost")}
        assert f"served 3 IPv4 connections on port {port} through a dual-stack AF_INET6 socket" in err
        assert "  a Python program: socket.create_server(" in err and "  source: https://" in err
        if "log" in mode:
            # the log has the connection records the table has rows for,
            # times included, and the existing connection it lists
            logged = outs["log"]
            assert Counter(split_row(l) for l in rows) == Counter(
                row_of(x) for x in logged if x["type"] in ("accept", "connect", "unaccepted"))
            assert [(x["lport"], x["rport"]) for x in logged if x["type"] == "existing"] == [(port, oport)]
    else:
        # JSON on stdout or nothing at all on the terminal: no text on stderr
        assert r.err == []
        if mode == "log":
            assert r.out == []


@pytest.mark.parametrize("mode", OUTPUTS)
def test_lost_events_in_every_output(run, peer, mode):
    """A 1-page buffer and a consumer stopped during a burst of 500
    connections (1000 events), as in test_live: each output reports the
    loss while running (`lost` records, the table's WARNING) and in the
    summary, with the same numbers in every output."""
    r = run(mode, "--buffer-pages", "1", "--no-snapshot")
    os.kill(r.proc.pid, signal.SIGSTOP)
    try:
        server, client, port, _ = burst(peer, 500)
    finally:
        os.kill(r.proc.pid, signal.SIGCONT)
    if mode.startswith("json"):
        r.wait(lambda: any('"type":"lost"' in l for l in r.out))
    elif mode == "log":
        r.wait(lambda: b'"type":"lost"' in r.log.read_bytes())
    else:
        r.wait(lambda: any(WARNING_LINE.match(l) for l in r.err))
    assert r.stop(signal.SIGINT) == 0

    outs = r.json_outputs()
    reported = {}                        # output -> [(lost, untracked) of each report], summary
    for where, recs in outs.items():
        lost = [(x["lost"], x["unaccepted_untracked"]) for x in recs if x["type"] == "lost"]
        assert lost and all(n > 0 for n, _ in lost), where
        assert [n for n, _ in lost] == sorted(n for n, _ in lost), where  # running totals
        assert recs[-1]["type"] == "summary", where
        s = recs[-1]
        assert s["lost"] >= lost[-1][0] and s["unaccepted_untracked"] >= lost[-1][1], where
        seen = len([x for x in recs if port in (x.get("lport"), x.get("rport"))])
        assert seen < 1000 and seen + s["lost"] >= 1000, where  # every event reported or counted
        reported[where] = (lost, s["lost"])
    if "table" in mode:
        err = [l.rstrip("\n") for l in r.err]
        warnings = [(int(m.group(1)), int(m.group(2))) for m in map(WARNING_LINE.match, err) if m]
        assert warnings and all(n > 0 for n, _ in warnings)
        s = summary_line(err)
        assert s["lost"] >= warnings[-1][0]
        _, rows = r.table()
        seen = len([row for row in rows if f":{port} " in row])   # other traffic's rows too
        assert seen < 1000 and seen + s["lost"] >= 1000
        reported["table"] = (warnings, s["lost"])
    else:
        assert r.err == []
    # several outputs at once: the same reports in each
    assert len(set(map(repr, reported.values()))) == 1, reported


def test_a_process_gone_at_once_is_named_by_the_kernel(run, peer):
    """A python3 whose thread named "acceptor" accepts and which exits at
    once, before socktrace could read /proc: the table shows PID/python3,
    as netstat would have, not the thread's name; the log has both."""
    server = peer("thread-accept-exit")
    info = server.read()
    port, name = info["port"], info["process"]
    r = run("table+log", "-P", str(port), "--no-snapshot")
    client = socket.create_connection(("127.0.0.1", port))
    assert server.proc.wait(30) == 0          # gone right after its accept
    client.close()
    r.wait(lambda: any(" accept " in l for l in r.out))
    assert r.stop() == 0
    _, rows = r.table()
    [accept] = [split_row(l) for l in rows if " accept " in l]
    assert accept[2] == f"{server.pid}/{name}"[:20]
    [rec] = [x for x in r.json_outputs()["log"] if x["type"] == "accept"]
    assert (rec["pid"], rec["process"], rec["comm"]) == (server.pid, name, "acceptor")
    assert rec["tid"] != server.pid
