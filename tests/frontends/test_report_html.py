"""`socktrace report --html`: the page from a synthetic log (its figures,
its escaping, nothing loaded), the command's errors, and the page from a
real trace (--lifetime, this kernel) opened in Debian's headless Chromium
with no network: no console message, one timeline per dual-stack listener
in the DOM, a screenshot (tests/frontends/artifacts/report.png).

Needs matplotlib (pip install '.[html]'), and for the last test root (the
tracer, unshare -n) and chromium (apt-get install chromium).
"""

import json
import os
import re
import shutil
import socket
import stat
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import SOCKTRACE, Socktrace, listener, one   # tests/kernel: conftest.py puts it on the path
from socktrace.cli import main
from socktrace.output.report_html import format_html
from socktrace.report import summarize_with_timelines

HERE = Path(__file__).parent
ARTIFACTS = HERE / "artifacts"
EVIL_COMM = '<img src=x onerror="alert(1)">$x$'
EVIL_CMDLINE = 'python3 -c "</pre><script>alert(2)</script>" $x$'
EVIL_CONTAINER = "<b>web</b>&co"
# chromium --enable-logging=stderr: every console message, whatever its
# level, as "[...:INFO:CONSOLE:LINE] "text", source: URL (LINE)" (older
# releases: "CONSOLE(LINE)")
CONSOLE = re.compile(r":CONSOLE[(:]\d+")


def rec(type_="accept", t="2026-11-23T10:00:01Z", fam="AF_INET6", mapped=True, lport=8080,
        raddr="10.0.0.5", pid=7, comm="java", cmdline="java -jar app.jar", **extra):
    return {"type": type_, "protocol": "tcp", "time": t, "pid": pid, "comm": comm, "process": comm,
            "cmdline": cmdline, "sock_family": fam, "mapped": mapped, "laddr": "10.0.0.1",
            "lport": lport, "raddr": raddr, "rport": 40000, "v6only": False, **extra}


def close(t, sent, received, **kw):
    return rec("close", t, opened_by="accept", bytes_sent=sent, bytes_received=received,
               duration=0.5, closed_by="peer", **kw)


CONTAINER = {"runtime": "podman", "id": "ab" * 32, "name": EVIL_CONTAINER, "image": "x/y:1",
             "pod": None, "namespace": None, "pod_uid": None}
SYNTHETIC = [
    {"type": "ready", "probe": "tracepoint"},
    rec(t="2026-11-23T10:00:01Z"), rec(t="2026-11-23T10:00:02Z", raddr="10.0.0.6"),
    rec(t="2026-11-23T10:02:00Z", mapped=False, raddr="2001:db8::7"),
    close("2026-11-23T10:00:03Z", 12000, 300),
    rec(t="2026-11-23T10:01:00Z", lport=9000, pid=8, comm=EVIL_COMM, cmdline=EVIL_CMDLINE,
        container=CONTAINER),
    # a UDP flow received on a dual-stack socket, ended on a kernel that cannot count its bytes
    rec("udp", t="2026-11-23T10:01:30Z", lport=5353, comm="dnsd", cmdline="dnsd", protocol="udp",
        direction="in"),
    rec("close", t="2026-11-23T10:01:40Z", lport=5353, comm="dnsd", cmdline="dnsd", protocol="udp",
        direction="in", opened_by="udp", bytes_sent=None, bytes_received=None, datagrams_sent=1,
        datagrams_received=1, duration=None, closed_by="idle"),
    # an AF_INET6 listener with IPv6 peers alone (no news), a plain IPv4 one: no figure
    rec(t="2026-11-23T10:01:00Z", lport=443, mapped=False, raddr="2001:db8::8", comm="nginx",
        cmdline="nginx", v6only=True),
    rec(t="2026-11-23T10:01:00Z", lport=22, fam="AF_INET", mapped=False, comm="sshd", cmdline="sshd"),
    {"type": "summary", "events": 6},
]


class Page(HTMLParser):
    """What a test asks of a page: every tag and its attributes, the
    timeline figures with what their SVG holds, the text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.figures: list[dict] = []
        self.text: list[str] = []
        self._figure = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "figure" and "timeline" in (a.get("class") or "").split():
            self._figure = {"listener": a.get("data-listener"), "svg": 0, "paths": 0,
                            "label": None}
            self.figures.append(self._figure)
        elif self._figure is not None and tag == "svg":
            self._figure["svg"] += 1
            self._figure["label"] = a.get("aria-label")
        elif self._figure is not None and tag == "path":
            self._figure["paths"] += 1

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None

    def handle_data(self, data):
        self.text.append(data)


def assert_self_contained(page: Page) -> None:
    """No script, nothing loaded: no tag that loads, no attribute naming
    anything but a fragment of the page itself, no url() but #ids."""
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "img", "image", "base",
                       "audio", "video", "source", "frame"}, tags
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if name in ("src", "href", "xlink:href", "srcset", "action", "poster", "data",
                        "background", "formaction"):
                assert (value or "").startswith("#"), (tag, name, value)
            if name == "style":
                assert re.findall(r"url\(\s*(?!#)", value) == [], (tag, value)
    ids = [a["id"] for _, a in page.tags if "id" in a]
    assert len(ids) == len(set(ids)), "ids repeat"


def test_the_page_from_a_synthetic_log(tmp_path):
    r, timelines = summarize_with_timelines(SYNTHETIC)
    html = format_html(r, [], timelines, sources=["/var/log/socktrace.jsonl"])
    page = Page(html)
    # one timeline per dual-stack listener (serving IPv4), each an inline SVG with content
    assert [f["listener"] for f in page.figures] == ["tcp6 :8080", "tcp6 :9000", "udp6 :5353"]
    assert all(f["svg"] == 1 and f["paths"] > 10 for f in page.figures), page.figures
    assert [f["label"] for f in page.figures] == [
        "java, port 8080: connections per minute by peer family (UTC)",
        f"{EVIL_COMM}, port 9000: connections per minute by peer family (UTC)",   # unescaped by the parser
        "dnsd, udp port 5353: UDP flows per minute by peer family (UTC)"]
    assert html.count('<figure class="timeline-overall">') == 1
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    # nothing runs, nothing is loaded, not even by a process's name
    assert "<script" not in html.lower()
    assert_self_contained(page)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    # what a process controls is escaped, in the sections and in the text report
    assert EVIL_COMM not in html and EVIL_CMDLINE not in html and EVIL_CONTAINER not in html
    assert html.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;$x$") >= 4   # a $ is no math
    assert "&lt;/pre&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "&lt;b&gt;web&lt;/b&gt;&amp;co" in html
    text = "".join(page.text)
    # the text report, whole; the fix; UTC said
    assert "socktrace report: 6 connections, 1 UDP flows, 2026-11-23 10:00:01 .. 2026-11-23 10:02:00 UTC" \
        in text
    assert "-Djava.net.preferIPv4Stack=true" in text
    assert "time (UTC)" in text and "Times in UTC" in text
    assert "11.7K" in text   # the close record's bytes: the traffic table


def test_a_log_without_close_records_says_the_bytes_are_unknown():
    r, timelines = summarize_with_timelines([x for x in SYNTHETIC if x["type"] != "close"])
    html = format_html(r, [], timelines)
    assert "no close records" in html and "bytes of those ended" not in html
    assert len(Page(html).figures) == 3


def test_the_command_writes_the_page_atomically_mode_0644(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(json.dumps(x) + "\n" for x in SYNTHETIC))
    out = tmp_path / "out" / "r.html"
    out.parent.mkdir()
    out.write_text("old")
    old = os.umask(0o077)
    try:
        r = CliRunner().invoke(main, ["report", "--html", str(out), str(log)])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("socktrace report: 6 connections")   # the text, as without --html
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert os.listdir(out.parent) == ["r.html"]   # no temporary file left
    assert len(Page(out.read_text()).figures) == 3


@pytest.mark.parametrize("where, says", [("missing/dir/r.html", "No such file or directory"),
                                         (".", "Is a directory")])
def test_an_unwritable_path_is_one_line(tmp_path, where, says):
    log = tmp_path / "x.log"
    log.write_text("".join(json.dumps(x) + "\n" for x in SYNTHETIC))
    target = tmp_path / where
    r = subprocess.run([SOCKTRACE, "report", "--html", str(target), str(log)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr == f"Error: cannot write {target}: {says}\n"
    assert r.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["x.log"]


# ---- a real trace in a real browser ----

def chromium(*args, cwd):
    """Headless Chromium with no network (a namespace of its own), its
    console messages on stderr."""
    exe = shutil.which("chromium")
    assert exe, "no chromium: apt-get install chromium"
    return subprocess.run(
        ["unshare", "-n", exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={cwd / 'chromium-profile'}", *args],
        capture_output=True, text=True, timeout=180, cwd=cwd)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


def exchange(ls, host: str, out: bytes, back: bytes) -> int:
    """One connection to `ls` from `host` carrying `out` and `back`, closed
    by the client; its local port."""
    c = socket.create_connection((host, ls.getsockname()[1]))
    a, _ = ls.accept()
    c.sendall(out)
    got = 0
    while got < len(out):
        got += len(a.recv(65536))
    a.sendall(back)
    got = 0
    while got < len(back):
        got += len(c.recv(65536))
    port = c.getsockname()[1]
    c.close()
    a.close()
    return port


def test_a_real_trace_in_headless_chromium(tmp_path):
    assert os.geteuid() == 0, "tracing and unshare -n need root"
    # the browser's console is seen: a page with a bad script shows up in it
    canary = tmp_path / "canary.html"
    canary.write_text("<!DOCTYPE html><title>c</title><script>notDefinedAnywhere()</script>")
    seen = console_messages(chromium("--dump-dom", canary.as_uri(), cwd=tmp_path).stderr)
    assert any("notDefinedAnywhere is not defined" in m for m in seen), seen

    dual_a, dual_b = listener(socket.AF_INET6, 0), listener(socket.AF_INET6, 0)
    ipv4_only, ipv6_only = listener(socket.AF_INET), listener(socket.AF_INET6, 1)
    every = (dual_a, dual_b, ipv4_only, ipv6_only)
    ports = [ls.getsockname()[1] for ls in every]
    log = tmp_path / "trace.jsonl"
    st = Socktrace("--lifetime", "-P", ",".join(map(str, ports)), "-o", str(log))
    try:
        plan = [(dual_a, "127.0.0.1", 3), (dual_a, "::1", 2), (dual_b, "127.0.0.1", 2),
                (ipv4_only, "127.0.0.1", 2), (ipv6_only, "::1", 1)]
        made = [(ls, exchange(ls, host, b"o" * 30000, b"b" * 70000))
                for ls, host, n in plan for _ in range(n)]
        for ls, cport in made:   # every end on the log before it stops
            one(st, "close", lport=ls.getsockname()[1], rport=cport)
        assert st.stop() == 0
    finally:
        if st.proc.poll() is None:
            st.proc.kill()
            st.proc.wait()
        for ls in every:
            ls.close()

    html_file = tmp_path / "report.html"
    r = subprocess.run([SOCKTRACE, "report", "--html", str(html_file), str(log)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    html = html_file.read_text()
    assert "<script" not in html.lower()
    assert_self_contained(Page(html))

    dom = chromium("--dump-dom", html_file.as_uri(), cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom.stderr) == []
    page = Page(dom.stdout)
    assert sorted(f["listener"] for f in page.figures) == sorted(f"tcp6 :{p}" for p in ports[:2])
    assert all(f["svg"] == 1 and f["paths"] > 10 for f in page.figures), page.figures
    text = "".join(page.text)
    assert "2 Dual-stack listeners" not in text and "Dual-stack listeners (2)" in text
    assert "IPv4 (MAPPED)" in text and "bytes of those ended" in text

    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / "report.png"
    png.unlink(missing_ok=True)
    shot = chromium(f"--screenshot={png}", "--window-size=1280,2400", html_file.as_uri(),
                    cwd=tmp_path)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert console_messages(shot.stderr) == []
    from PIL import Image   # matplotlib's dependency
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    with Image.open(png) as im:
        assert im.size == (1280, 2400)
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colors) > 100
    # the charts were drawn: MAPPED's vermillion fills a good part of the page
    vermillion = sum(n for n, rgb in colors if rgb == (0xD5, 0x5E, 0x00))
    assert vermillion > 5_000, vermillion
