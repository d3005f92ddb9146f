import re
import gzip
import json

from socktrace.output.report_text import format_report
from socktrace.report import BadLine, read_log, summarize, to_json


def conn(type_="accept", pid=10, comm="java", cmdline="java -jar backup.jar", fam="AF_INET6",
         mapped=True, lport=4243, raddr="10.0.0.20", rport=50000, v6only=False, t="2026-11-23T10:00:00Z"):
    r = {"type": type_, "time": t, "pid": pid, "comm": comm, "cmdline": cmdline, "sock_family": fam,
         "mapped": mapped, "laddr": "10.0.0.12", "lport": lport, "raddr": raddr, "rport": rport}
    if type_ != "connect":
        r["v6only"] = v6only
    return r


RECORDS = [
    {"type": "ready", "probe": "tracepoint"},
    conn(t="2026-11-23T10:00:00Z"),
    conn(t="2026-11-23T10:05:00Z", raddr="10.0.0.21"),
    conn(mapped=False, raddr="2001:db8::5", t="2026-11-23T10:01:00Z"),
    conn("connect", pid=20, comm="curl", cmdline="curl http://x", fam="AF_INET", mapped=False,
         lport=40000, raddr="10.0.0.12", rport=4243),
    conn("connect", pid=30, comm="python3", cmdline="python3 c.py", mapped=True, lport=40001),
    conn(pid=40, comm="sshd", cmdline="sshd -D", fam="AF_INET", mapped=False, lport=22, v6only=None),
    conn("accept", pid=50, comm="nginx", cmdline="nginx: master", lport=8080, v6only=False),
    {**conn("connect_failed", pid=30, comm="python3", cmdline="python3 c.py", mapped=True,
            raddr="10.0.0.9", rport=443), "reason": "refused"},
    {**conn("connect_failed", pid=30, comm="python3", cmdline="python3 c.py", mapped=True,
            raddr="10.0.0.9", rport=443), "reason": "refused"},
    {"type": "unwritten", "records": 3, "reason": "disk full"},
    {"type": "summary", "events": 7, "lost": 2},
]


def test_summarize():
    r = summarize(RECORDS)
    assert r.records == 7
    assert dict(r.by_protocol) == {"mapped": 4, "ipv6": 1, "ipv4": 2}
    assert (r.lost, r.unwritten) == (2, 3)
    java, nginx = r.dual_stack.serving_ipv4()      # sshd is plain AF_INET
    assert (java.process, java.cmdline, java.port, java.pids) == \
        ("java", "java -jar backup.jar", 4243, [10])
    assert (java.mapped, java.ipv6, java.v6only) == (2, 1, {False})
    assert (java.first, java.last) == ("2026-11-23T10:00:00Z", "2026-11-23T10:05:00Z")
    assert (nginx.process, nginx.port, nginx.mapped) == ("nginx", 8080, 1)
    assert dict(r.by_type) == {"accept": 5, "connect": 2, "connect_failed": 2}
    assert [c.comm for c in r.mapped_clients.values()] == ["python3"]
    assert r.processes[(10, "java", "java -jar backup.jar")].by_type["accept"] == 3


def test_read_log_reports_bad_lines_and_goes_on(tmp_path):
    good = "\n".join(json.dumps(r) for r in RECORDS[:3]) + "\n"
    plain = tmp_path / "log"
    plain.write_text(good + "not json\n" + '["a list"]\n' + '{"type":"accept","time":"x"}\n'
                     + json.dumps(RECORDS[3]) + "\n" + '{"type":"conn')
    rotated = tmp_path / "log.1.gz"
    with gzip.open(rotated, "wt") as f:
        f.write(good)
    bad = []
    recs = list(read_log([str(plain), str(rotated)], bad))
    assert len(recs) == 7
    assert [str(b) for b in bad] == [
        f"{plain}:4: not valid JSON",
        f"{plain}:5: not a socktrace record",
        f"{plain}:6: accept record without pid, comm, sock_family, mapped, laddr, lport, raddr, rport",
        f"{plain}:8: truncated line"]


def test_text_report_answers_the_question():
    text = format_report(summarize(RECORDS), [BadLine("f", 3, "truncated line")])
    assert "pid 10 java, port 4243: 2 IPv4 (MAPPED), 1 IPv6; IPV6_V6ONLY=0" in text
    assert "-Djava.net.preferIPv4Stack=true" in text
    assert "pid 30 python3: 1 connects" in text
    assert "could not submit 2 events" in text and "3 records could not be written" in text
    assert "1 lines skipped" in text


def test_text_report_escapes_process_text():
    evil = [conn(comm="ev\x1b[2Jil", cmdline="x\x1b]0;t\x07")]
    text = format_report(summarize(evil), [])
    assert "\x1b" not in text and "ev\\x1b[2Jil" in text


def test_json_report():
    j = to_json(summarize(RECORDS), [BadLine("f", 3, "truncated line")])
    assert j["dual_stack_listeners"][0]["port"] == 4243
    assert j["dual_stack_listeners"][0]["v6only"] is False
    assert j["top_peers"][0] == {"addr": "10.0.0.20", "protocol": "mapped", "connections": 3}
    assert j["bad_lines"] == ["f:3: truncated line"]
    assert (j["records"], j["first"], j["last"], j["by_protocol"], j["lost"], j["unwritten"]) == \
        (7, "2026-11-23T10:00:00Z", "2026-11-23T10:05:00Z", {"mapped": 4, "ipv6": 1, "ipv4": 2}, 2, 3)
    assert j["processes"][0] == {
        "pid": 10, "comm": "java", "cmdline": "java -jar backup.jar", "container": None, "by_type": {"accept": 3},
        "by_protocol": {"mapped": 2, "ipv6": 1}, "traffic": None, "first": "2026-11-23T10:00:00Z",
        "last": "2026-11-23T10:05:00Z"}
    assert j["lifetime"] is False and j["dual_stack_listeners"][0]["traffic"] is None
    java = j["dual_stack_listeners"][0]
    assert (java["pid"], java["comm"], java["ipv4_mapped"], java["ipv6"]) == (10, "java", 2, 1)
    assert (java["advice"]["app"], java["advice"]["change"]) == ("java", "-Djava.net.preferIPv4Stack=true")
    assert "fix, in the JVM's options" in format_report(summarize(RECORDS), [])
    assert [(l["comm"], l["port"]) for l in j["dual_stack_listeners"]] == [("java", 4243), ("nginx", 8080)]
    assert j["mapped_clients"] == [{"pid": 30, "comm": "python3", "cmdline": "python3 c.py",
                                    "connects": 1, "first": "2026-11-23T10:00:00Z",
                                    "last": "2026-11-23T10:00:00Z"}]
    assert json.loads(json.dumps(j)) == j


def test_failed_connects_are_counted_apart_from_connections():
    r = summarize(RECORDS)
    assert r.records == 7 and r.by_protocol["mapped"] == 4          # the attempts are not connections
    assert dict(r.failed) == {(30, "python3", "python3 c.py", "10.0.0.9", 443, "mapped", "refused"): 2}
    text = format_report(r, [])
    assert "Failed connects (2, most frequent first):" in text
    assert "      2  pid 30 python3 to 10.0.0.9:443: refused (IPv4 over AF_INET6" in text
    assert to_json(r, [])["failed_connects"] == [
        {"pid": 30, "comm": "python3", "cmdline": "python3 c.py", "raddr": "10.0.0.9", "rport": 443,
         "protocol": "mapped", "reason": "refused", "count": 2}]


def test_a_jvms_threads_are_one_process():
    """Each accepting thread of a JVM has its own name (comm); the report
    groups by the process's name, which the records carry as `process`."""
    recs = [{**conn(comm=f"http-nio-{i}"), "process": "java"} for i in range(3)]
    r = summarize(recs)
    assert list(r.processes) == [(10, "java", "java -jar backup.jar")]
    assert [l.mapped for l in r.dual_stack.serving_ipv4()] == [3]


def test_forked_workers_are_one_listener():
    """A forking server's workers (one command line, one port) are one
    dual-stack listener, as the summary at exit groups them."""
    recs = [conn(pid=100 + i % 3, comm="python3", cmdline="python3 server.py", lport=8000,
                 rport=50000 + i) for i in range(7)]
    j = to_json(summarize(recs), [])
    [lst] = j["dual_stack_listeners"]
    assert (lst["pid"], lst["pids"], lst["comm"], lst["port"], lst["ipv4_mapped"]) == \
        (100, [100, 101, 102], "python3", 8000, 7)
    assert "pids 100,101,102 python3, port 8000: 7 IPv4 (MAPPED)" in format_report(summarize(recs), [])


def close(opened_by="accept", duration=1.0, sent=100, received=10, **kw):
    """The close record (--lifetime) of a connection conn(**kw) reported."""
    return {**conn("close", **kw), "opened_by": opened_by, "duration": duration,
            "bytes_sent": sent, "bytes_received": received, "retransmits": 0, "closed_by": "peer"}


# java's dual-stack listener: 4 IPv4 connections (mapped) and one IPv6
# that ended; curl's IPv4 connect; one java connection never ended
LIFETIME = RECORDS + [
    close(duration=d, sent=1000 * n, received=n, rport=50000 + n)
    for n, d in enumerate([0.5, 1.0, 2.0, 10.0], 1)
] + [
    close(mapped=False, raddr="2001:db8::5", duration=3.0, sent=7, received=8),
    close("connect", pid=20, comm="curl", cmdline="curl http://x", fam="AF_INET", mapped=False,
          lport=40000, raddr="10.0.0.12", rport=4243, duration=0.25, sent=80, received=1500),
]


def test_traffic_per_listener_and_process():
    r = summarize(LIFETIME)
    j = to_json(r, [])
    assert j["lifetime"] is True
    java = j["dual_stack_listeners"][0]
    # bytes each way, exactly; the lifetimes' median and 95th percentile
    # (inclusive interpolation: 2.0 + 0.85 * (10.0 - 2.0) = 8.8)
    assert java["traffic"] == {
        "mapped": {"connections": 4, "bytes_sent": 10000, "bytes_received": 10,
                   "lifetime_median": 1.5, "lifetime_p95": 8.8},
        "ipv6": {"connections": 1, "bytes_sent": 7, "bytes_received": 8,
                 "lifetime_median": 3.0, "lifetime_p95": 3.0}}
    procs = {p["comm"]: p for p in j["processes"]}
    assert procs["java"]["traffic"] == java["traffic"]
    assert procs["curl"]["traffic"] == {"ipv4": {
        "connections": 1, "bytes_sent": 80, "bytes_received": 1500,
        "lifetime_median": 0.25, "lifetime_p95": 0.25}}
    assert procs["sshd"]["traffic"] == {}     # nothing of it ended
    # a close is the end of a connection counted already
    assert (j["records"], j["by_type"]) == (7, {"accept": 5, "connect": 2, "connect_failed": 2})
    text = format_report(r, [])
    assert ("    traffic: IPv4 (MAPPED): 4 ended, 9.8K sent, 10 received, lifetime median 1.50s, "
            "p95 8.80s; IPv6: 1 ended, 7 sent, 8 received, lifetime median 3.00s, p95 3.00s") in text
    assert "Traffic of ended connections (6, UDP flows included), by process and peer family" in text
    assert "curl             IPv4                   1      80     1.5K    0.25s    0.25s" in text
    assert "no close records" not in text


def test_a_log_without_lifetime_says_what_is_missing():
    text = format_report(summarize(RECORDS), [])
    assert "No bytes or lifetimes: this log has no close records (socktrace --lifetime writes them)." \
        in text
    assert "traffic:" not in text and "Traffic of ended" not in text


def test_a_bad_close_record_is_a_bad_line(tmp_path):
    """A close record the report cannot sum is named and skipped, the rest
    reported."""
    good = close()
    log = tmp_path / "log"
    log.write_text("\n".join(json.dumps(r) for r in (
        good, {k: v for k, v in good.items() if k != "bytes_sent"}, {**good, "duration": "x"},
        {k: v for k, v in good.items() if k != "rport"})) + "\n")
    bad = []
    recs = list(read_log([str(log)], bad))
    assert recs == [good]
    assert [str(b) for b in bad] == [f"{log}:2: close record without a valid bytes_sent",
                                     f"{log}:3: close record without a valid duration",
                                     f"{log}:4: close record without rport"]
    assert to_json(summarize(recs), bad)["processes"][0]["traffic"]["mapped"]["bytes_sent"] == 100


def udp_close(sent=300, received=21, datagrams=(3, 3), closed_by="idle", **kw):
    """The close record of a UDP flow that came in (conn(**kw)'s socket)."""
    return {**conn("close", **kw), "protocol": "udp", "opened_by": "udp", "direction": "in",
            "duration": 0.5, "bytes_sent": sent, "bytes_received": received,
            "datagrams_sent": datagrams[0], "datagrams_received": datagrams[1], "closed_by": closed_by}


def test_udp_flow_traffic_apart_from_tcp():
    """A dual-stack UDP socket's ended flows count under udp_* families,
    with their datagrams; flows whose bytes their kernel could not see
    (null) are counted as such, not as 0 bytes."""
    recs = LIFETIME + [udp_close(lport=53, rport=40000 + n, comm="dnsmasq", pid=30,
                                 cmdline="dnsmasq") for n in range(2)] + [
        udp_close(lport=53, sent=None, received=None, datagrams=(1, 1), comm="dnsmasq", pid=30,
                  cmdline="dnsmasq")]
    r = summarize(recs)
    j = to_json(r, [])
    procs = {p["comm"]: p for p in j["processes"]}
    assert procs["dnsmasq"]["traffic"] == {"udp_mapped": {
        "connections": 3, "bytes_sent": 600, "bytes_received": 42,
        "lifetime_median": 0.5, "lifetime_p95": 0.5,
        "datagrams_sent": 7, "datagrams_received": 7, "bytes_unmeasured": 1}}
    assert procs["java"]["traffic"]["mapped"]["connections"] == 4   # TCP's apart
    text = format_report(r, [])
    assert "dnsmasq          UDP IPv4 (MAPPED)      3     600       42    0.50s    0.50s" in text


def test_a_udp_close_may_lack_bytes_but_not_datagrams(tmp_path):
    log = tmp_path / "log"
    log.write_text("\n".join(json.dumps(r) for r in (
        udp_close(sent=None, received=None), {**udp_close(), "datagrams_sent": None})) + "\n")
    bad = []
    recs = list(read_log([str(log)], bad))
    assert len(recs) == 1 and recs[0]["bytes_sent"] is None
    assert [b.reason for b in bad] == ["close record without a valid datagrams_sent"]


def test_report_groups_by_container():
    """A container's connections are its own group, its dual-stack
    listener is named with it, and the advice says where the change goes."""
    web = {"runtime": "podman", "id": "ab" * 32, "name": "backup", "image": "localhost/backup:1",
           "pod": None, "namespace": None, "pod_uid": None}
    recs = [dict(conn(pid=7, t=f"2026-11-23T10:0{i}:00Z"), container=web) for i in range(3)] + \
        [conn(pid=7, comm="java", lport=4243)]   # the same program on the host: another listener
    r = summarize(recs)
    assert [(l.container_id, l.mapped) for l in r.dual_stack.serving_ipv4()] == [("ab" * 32, 3), (None, 1)]
    text = format_report(r, [])
    assert "Containers (1, busiest first):" in text
    assert re.search(r"\n  backup +podman +3 +0 +3 +0 +0  localhost/backup:1\n", text)
    assert "    in podman container backup (image localhost/backup:1, id abababababab)" in text
    assert ("in podman container backup, image localhost/backup:1: make the change in the container's "
            "environment: podman run -e JAVA_TOOL_OPTIONS=-Djava.net.preferIPv4Stack=true") in text
    j = to_json(r, [])
    assert j["containers"][0]["container"] == web and j["containers"][0]["by_type"] == {"accept": 3}
    assert j["dual_stack_listeners"][0]["container"] == web
    assert j["dual_stack_listeners"][0]["advice"]["container"]["name"] == "backup"
    assert j["dual_stack_listeners"][1]["advice"]["container"] is None


def test_report_names_a_host_listeners_systemd_unit():
    recs = [dict(conn(pid=7), unit="backup.service")]
    text = format_report(summarize(recs), [])
    assert "    in systemd unit backup.service\n" in text
    assert to_json(summarize(recs), [])["dual_stack_listeners"][0]["unit"] == "backup.service"
