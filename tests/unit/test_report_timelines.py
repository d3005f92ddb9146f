"""`report --html` without matplotlib: the per-minute timelines (pure, in
report.py) and the CLI's answer when matplotlib is missing.  The page
itself needs matplotlib: tests/frontends/test_report_html.py (this suite
also runs in chroots of older Debian userlands, without it)."""

import json
import sys
from datetime import datetime, timedelta, timezone

from click.testing import CliRunner

from socktrace.cli import main
from socktrace.report import per_minute, pick_step, summarize, summarize_with_timelines, to_json

JAVA = ("tcp", "java", "java -jar app.jar", 8080, None)


def rec(type_="accept", t="2026-11-23T10:00:01.5Z", fam="AF_INET6", mapped=True, lport=8080,
        raddr="10.0.0.5", pid=7, comm="java", cmdline="java -jar app.jar", **extra):
    return {"type": type_, "time": t, "pid": pid, "comm": comm, "process": comm, "cmdline": cmdline,
            "sock_family": fam, "mapped": mapped, "laddr": "10.0.0.1", "lport": lport,
            "raddr": raddr, "rport": 40000, **extra}


def close(t, sent, received, **kw):
    return rec("close", t, opened_by="accept", bytes_sent=sent, bytes_received=received,
               duration=1.0, **kw)


RECORDS = [
    {"type": "ready", "probe": "tracepoint"},
    rec(t="2026-11-23T10:00:01Z"),
    rec(t="2026-11-23T10:00:59.999999Z", raddr="10.0.0.6"),
    rec(t="2026-11-23T10:00:30Z", mapped=False, raddr="2001:db8::5"),
    close("2026-11-23T10:01:10Z", 1500, 80),
    close("2026-11-23T10:01:20Z", 500, 20, mapped=False, raddr="2001:db8::5"),
    # after the fix: plain IPv4 through an AF_INET socket of the same program and port
    rec(t="2026-11-23T10:03:00Z", fam="AF_INET", mapped=False),
    # not through the listener: a connect, a failed one, a UDP flow sent
    rec("connect", t="2026-11-23T10:00:02Z", fam="AF_INET", mapped=False, lport=40000,
        raddr="10.0.0.9", pid=9, comm="curl", cmdline="curl x"),
    rec("connect_failed", t="2026-11-23T10:00:03Z", lport=40001, reason="refused"),
    rec("udp", t="2026-11-23T10:00:04Z", lport=40002, protocol="udp", direction="out"),
    # a UDP flow received on a dual-stack socket, and its end on an old kernel (no bytes)
    rec("udp", t="2026-11-23T10:00:05Z", lport=53, protocol="udp", direction="in", comm="dnsd",
        cmdline="dnsd"),
    rec("close", t="2026-11-23T10:00:50Z", lport=53, protocol="udp", direction="in", comm="dnsd",
        cmdline="dnsd", opened_by="udp", bytes_sent=None, bytes_received=None, datagrams_sent=1,
        datagrams_received=1, duration=None),
    {"type": "summary", "events": 7},
]


def minutes(timeline, step=None):
    return [(s.strftime("%H:%M"), dict(m.connections), dict(m.sent), dict(m.received))
            for s, m in timeline.buckets(step)]


def test_a_listeners_minutes_by_family_with_the_bytes_of_those_ended():
    t = per_minute(RECORDS)
    assert minutes(t.listeners[JAVA]) == [
        ("10:00", {"mapped": 2, "ipv6": 1}, {}, {}),
        ("10:01", {}, {"mapped": 1500, "ipv6": 500}, {"mapped": 80, "ipv6": 20}),
        ("10:02", {}, {}, {}),     # a minute without records is there, empty
        ("10:03", {"ipv4": 1}, {}, {})]
    assert dict(t.listeners[JAVA].peers) == {("10.0.0.5", "mapped"): 1, ("10.0.0.6", "mapped"): 1,
                                             ("2001:db8::5", "ipv6"): 1, ("10.0.0.5", "ipv4"): 1}
    assert t.listeners[JAVA].closes == 2


def test_the_overall_timeline_counts_tcp_connections_alone():
    t = per_minute(RECORDS)
    assert minutes(t.overall) == [("10:00", {"mapped": 2, "ipv6": 1, "ipv4": 1}, {}, {}),
                                  ("10:01", {}, {}, {}), ("10:02", {}, {}, {}),
                                  ("10:03", {"ipv4": 1}, {}, {})]


def test_only_what_came_in_is_a_listeners():
    t = per_minute(RECORDS)
    dns = ("udp", "dnsd", "dnsd", 53, None)
    assert set(t.listeners) == {JAVA, dns}
    # a UDP flow whose kernel could not count its bytes: ended, no bytes
    assert minutes(t.listeners[dns]) == [("10:00", {"mapped": 1}, {}, {})]
    assert t.listeners[dns].closes == 1


def test_coarser_buckets_sum_the_minutes():
    t = per_minute(RECORDS)
    assert minutes(t.listeners[JAVA], step=5) == [
        ("10:00", {"mapped": 2, "ipv6": 1, "ipv4": 1}, {"mapped": 1500, "ipv6": 500},
         {"mapped": 80, "ipv6": 20})]


def test_buckets_align_to_utc_and_skip_times_that_are_no_minute():
    t = per_minute([rec(t="2026-11-23T23:58:00Z"), rec(t="2026-11-24T00:07:00Z"), rec(t="garbage")])
    assert [(s.isoformat(), sum(m.connections.values())) for s, m in t.overall.buckets(15)] == [
        ("2026-11-23T23:45:00+00:00", 1), ("2026-11-24T00:00:00+00:00", 1)]
    assert per_minute([]).overall.buckets() == []


def test_the_step_keeps_a_chart_readable():
    t0 = datetime(2026, 11, 23, tzinfo=timezone.utc)
    assert [pick_step(t0, t0 + timedelta(minutes=m)) for m in (0, 719, 720, 3599, 3600, 10**5, 10**6)] \
        == [1, 1, 5, 5, 15, 360, 1440]
    # a long log's timeline stays within MOST_BUCKETS
    t = per_minute([rec(t="2026-11-23T00:00:00Z"), rec(t="2026-11-30T00:00:00Z")])
    buckets = t.overall.buckets()
    assert t.overall.step() == 15 and per_minute(RECORDS).overall.step() == 1
    assert len(buckets) <= 720 and (buckets[1][0] - buckets[0][0]) == timedelta(minutes=15)


def test_one_pass_gives_the_summary_and_the_timelines():
    r, t = summarize_with_timelines(iter(RECORDS))
    assert to_json(r, []) == to_json(summarize(RECORDS), [])
    assert minutes(t.listeners[JAVA]) == minutes(per_minute(RECORDS).listeners[JAVA])
    [java] = [l for l in r.dual_stack.serving_ipv4() if l.process == "java"]
    assert t.of(java) is t.listeners[JAVA]


def test_without_matplotlib_html_is_one_line_of_error(tmp_path, monkeypatch):
    log = tmp_path / "x.log"
    log.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib: ImportError
    out = tmp_path / "r.html"
    r = CliRunner().invoke(main, ["report", "--html", str(out), str(log)])
    assert r.exit_code == 1
    assert r.output == ("Error: --html needs matplotlib: pip install 'socktrace[html]' "
                        "(or apt install python3-matplotlib)\n")
    assert not out.exists()
    # the module itself imports without it (its doctests run everywhere)
    import socktrace.output.report_html as report_html
    assert report_html.h("<b>") == "&lt;b&gt;"
