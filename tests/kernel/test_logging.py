"""Logging to a file during an incident, with real traffic on this kernel."""

import gzip
import json
from collections import Counter
import os
import signal
import socket
import subprocess
import time

import pytest

from helpers import SOCKTRACE, Socktrace, burst, listener
from socktrace.vocabulary import CONNECTION_TYPES


def read_lines(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read().split(b"\n")


def log_records(directory, name="log"):
    """All records of a rotated set, every line checked to be valid JSON."""
    records = []
    for f in sorted(directory.iterdir()):
        if not f.name.startswith(name):
            continue
        lines = read_lines(f)
        assert lines[-1] == b"", f"{f} does not end with a whole line"
        records += [json.loads(line) for line in lines[:-1]]
    return records


def start(*args):
    proc = subprocess.Popen([SOCKTRACE, "--probe", "tracepoint", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc


def wait_ready(path, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while not (path.exists() and b'"type":"ready"' in path.read_bytes()):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_5000_connections_while_rotating(tmp_path, peer):
    log = tmp_path / "log"
    proc = start("-q", "-o", str(log), "--rotate-size", "64K", "--rotate-keep", "999", "--rotate-gzip")
    wait_ready(log, proc)
    server, client, port, ports = burst(peer, 5000)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert proc.stdout.read() == "" and proc.stderr.read() == ""
    files = list(tmp_path.iterdir())
    assert len(files) > 20 and all(f.name == "log" or f.name.endswith(".gz") for f in files)
    records = log_records(tmp_path)
    accepts = [r for r in records if r["type"] == "accept" and r["lport"] == port]
    assert len(accepts) == 5000 and Counter(r["rport"] for r in accepts) == ports
    assert {r["pid"] for r in accepts} == {server.pid}
    assert json.loads(read_lines(log)[-2])["type"] == "summary"


def test_sigterm_under_load_leaves_summary_last(tmp_path, peer):
    log = tmp_path / "log"
    proc = start("-q", "-o", str(log))
    wait_ready(log, proc)
    burst(peer, 20000, wait=False)
    time.sleep(1.5)                       # mid-load
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    records = log_records(tmp_path)
    summary = records[-1]
    assert summary["type"] == "summary"
    # every connection record the summary counts as an event: any other
    # program's UDP flows and failed connects meanwhile too
    connections = [r for r in records if r["type"] in CONNECTION_TYPES]
    assert 0 < len(connections) == summary["events"]
    assert summary["lost"] == 0


def test_kill_9_leaves_at_most_the_last_line_partial(tmp_path, peer):
    log = tmp_path / "log"
    proc = start("-q", "-o", str(log))
    wait_ready(log, proc)
    burst(peer, 20000, wait=False)
    time.sleep(1.5)
    proc.kill()
    proc.wait()
    lines = read_lines(log)
    assert len(lines) > 100
    for line in lines[:-1]:
        json.loads(line)


def test_disk_full_keeps_tracing_and_counts(tmp_path, peer):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    st = None
    try:
        log = mnt / "log"
        server = peer("serve", "6", "0", "300")
        port = server.read()["port"]
        # -P: the machine's other traffic (the matrix's suites run meanwhile)
        # would fill the small disk again before this test's records
        st = Socktrace("--probe", "tracepoint", "-P", str(port), "-o", str(log))   # and JSON on stdout
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as f:      # fill the file system
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass

        def ours(r):
            return port in (r.get("lport"), r.get("rport"))
        assert peer("burst", str(port), "200").read() == {"done": 200}
        st.wait_for(ours, count=400)
        time.sleep(0.5)                    # the tracer has tried to write them
        filler.unlink()                    # space returns
        assert peer("burst", str(port), "100").read() == {"done": 100}
        st.wait_for(ours, count=600)
        assert st.stop(signal.SIGTERM) == 0
        assert st.stderr.count("disk full") == 1
        logged = log_records(mnt)
        # one note per stretch of full disk (freed fragments can let a note
        # through before the disk fills again)
        unwritten = sum(r["records"] for r in logged if r["type"] == "unwritten")
        in_file = [r for r in logged if ours(r)]
        # every record is in the file or counted as unwritten
        assert unwritten > 0 and len(in_file) + unwritten >= 600
        assert 200 <= len(in_file) < 600
        assert logged[-1]["type"] == "summary"
    finally:
        if st and st.proc.poll() is None:
            st.proc.kill()
            st.proc.wait()
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("setup, message", [
    ("symlink", "is a symbolic link: refusing to follow it"),
    ("foreign", "is owned by uid 65534, not by uid 0: refusing to write to it"),
    ("missing-dir", "No such file or directory"),
])
def test_unsafe_or_unwritable_log_is_refused_before_tracing(tmp_path, setup, message):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    log = tmp_path / "log"
    if setup == "symlink":
        log.symlink_to(target)
    elif setup == "foreign":
        log = target
        os.chown(log, 65534, 65534)
    else:
        log = tmp_path / "missing" / "log"
    t = time.monotonic()
    r = subprocess.run([SOCKTRACE, "-o", str(log)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: ") and message in r.stderr
    assert time.monotonic() - t < 0.5 * 60       # and no BPF compile happened:
    assert "tracing with probe mode" not in r.stderr
    assert target.read_text() == "keep me\n"


def test_sighup_reopens_for_logrotate(tmp_path):
    log = tmp_path / "log"
    proc = start("-q", "-o", str(log))
    wait_ready(log, proc)
    ls = socket.socket(socket.AF_INET6)
    ls.bind(("::", 0))
    ls.listen(16)
    port = ls.getsockname()[1]

    def connect():
        c = socket.create_connection(("127.0.0.1", port))
        ls.accept()
        return c.getsockname()[1]

    before = connect()
    time.sleep(0.5)
    os.rename(log, tmp_path / "log.1")     # logrotate `create`: move, then HUP
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    after = connect()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    old = [json.loads(l) for l in read_lines(tmp_path / "log.1")[:-1]]
    new = [json.loads(l) for l in read_lines(log)[:-1]]
    assert any(r.get("lport") == before for r in old)
    assert any(r.get("lport") == after for r in new) and new[-1]["type"] == "summary"
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_duration_stops_cleanly(tmp_path):
    t = time.monotonic()
    r = subprocess.run([SOCKTRACE, "--probe", "tracepoint", "--json", "--duration", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    assert json.loads(r.stdout.splitlines()[-1])["type"] == "summary"
    assert time.monotonic() - t < 30


def bpf_program_loaded(pid):
    """Whether process `pid` holds a BPF program (its fdinfo says prog_type)."""
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            if "prog_type:" in open(f"/proc/{pid}/fdinfo/{fd}").read():
                return True
        except OSError:
            pass
    return False


def test_duration_counts_from_ready_however_slow_the_start():
    """--duration SECONDS is that long of tracing: counted from `ready`
    (every probe attached), not from the start of a start that can take
    seconds (a VM, a busy host).  Here the start is made slow for real: the
    process is stopped for 3 s once its BPF program is loaded, before it is
    attached.  A connection made just before the end is still reported."""
    duration = 4.0
    ls = listener(v6only=0)
    port = ls.getsockname()[1]
    proc = subprocess.Popen([SOCKTRACE, "--probe", "tracepoint", "--json", "--no-snapshot",
                             "-P", str(port), "--duration", str(duration)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not bpf_program_loaded(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.005)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(3)
        proc.send_signal(signal.SIGCONT)
        line = proc.stdout.readline()
        assert line and json.loads(line)["type"] == "ready", proc.stderr.read()
        ready = time.monotonic()
        time.sleep(duration - 0.7)
        c = socket.create_connection(("127.0.0.1", port))
        a, _ = ls.accept()
        out, err = proc.communicate(timeout=60)
        ended = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ls.close()
    assert proc.returncode == 0 and err == ""
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["type"] for r in records] == ["connect", "accept", "summary"]
    assert records[1]["rport"] == c.getsockname()[1]
    assert ended - ready >= duration - 0.1
    c.close()
    a.close()


def test_report_on_a_real_log(tmp_path, peer):
    log = tmp_path / "log"
    proc = start("-q", "-o", str(log))
    wait_ready(log, proc)
    server, _, port, _ = burst(peer, 30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    r = subprocess.run([SOCKTRACE, "report", str(log)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    comm = open(f"/proc/{server.pid}/comm").read().strip()  # python or python3: the venv's
    assert f"pid {server.pid} {comm}, port {port}: 30 IPv4 (MAPPED), 0 IPv6; IPV6_V6ONLY=0" in r.stdout
    # peer.py is a Python program: that entry's fix, worded for the port
    assert f"    a Python program: socket.create_server(" in r.stdout
    assert f"        socket.create_server(('0.0.0.0', {port}))" in r.stdout
    j = json.loads(subprocess.run([SOCKTRACE, "report", "--json", str(log)],
                                  capture_output=True, text=True).stdout)
    # other processes' traffic may be in the log too (the matrix's suites run beside this one)
    ours = [l for l in j["dual_stack_listeners"] if (l["pid"], l["port"]) == (server.pid, port)]
    assert [l["ipv4_mapped"] for l in ours] == [30]
    # the same log cut in the middle of a line, as kill -9 can leave it
    cut = tmp_path / "cut.log"
    data = log.read_bytes()
    cut.write_bytes(data[:data.rindex(b'"type":"accept"') + 20])
    r = subprocess.run([SOCKTRACE, "report", str(cut)], capture_output=True, text=True)
    assert r.returncode == 1
    n = cut.read_bytes().count(b"\n") + 1
    assert r.stderr == f"socktrace report: {cut}:{n}: truncated line (skipped)\n"
    assert f"port {port}: 29 IPv4 (MAPPED)" in r.stdout
