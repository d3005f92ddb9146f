import json

from socktrace.events import decode
from socktrace.output.escape import escape
from socktrace.output.jsonl import dumps
from socktrace.records import connection_record
from socktrace.classify import label
from socktrace.output.table import HEADER, format_row
from socktrace.procinfo import ProcessInfo

from rawevents import raw

PROC = ProcessInfo("java", "java -jar backup.jar", "/system.slice/backup.service")
CONTRACT = {"type", "time", "pid", "tid", "comm", "uid", "cmdline", "sock_family",
            "mapped", "laddr", "lport", "raddr", "rport"}


def record(proc=PROC, **kw):
    return connection_record(decode(raw(**kw), 0), proc, "root")


def test_record_carries_the_contract_fields():
    rec = record()
    assert CONTRACT <= rec.keys()
    assert rec["v6only"] is False
    assert rec["time"].endswith("Z") and rec["time"].startswith("1970-01-01T00:00:01")
    assert (rec["sock_family"], rec["mapped"], rec["laddr"], rec["raddr"]) == \
        ("AF_INET6", True, "10.0.0.12", "10.0.0.20")
    assert (rec["cmdline"], rec["user"], rec["cgroup"]) == \
        ("java -jar backup.jar", "root", "/system.slice/backup.service")


def test_connect_records_have_no_v6only():
    assert "v6only" not in record(kind="connect", v6only=0xff)


def test_json_line_escapes_control_characters():
    line = dumps(connection_record(decode(raw(comm=b"x\x1b[2J\n"), 0),
                                   ProcessInfo("x", "evil\x1b]0;pwned\x07", None), None))
    assert "\x1b" not in line and "\n" not in line and "\x07" not in line
    assert json.loads(line)["comm"] == "x\x1b[2J\n"


def test_escape():
    assert escape("java") == "java"
    assert escape("a\x1b[31mred\x7f\x9b") == "a\\x1b[31mred\\x7f\\x9b"
    assert escape("tab\there\u202egnp.exe") == "tab\\there\\u202egnp.exe"


def test_table_row_fits_100_columns_and_marks_mapped():
    row = format_row(record(comm=b"java"))
    assert len(HEADER) <= 100 and len(row) <= 100
    assert "31307/java" in row and "tcp6 MAPPED" in row
    assert "10.0.0.12:4243" in row and "10.0.0.20:64702" in row
    assert row.endswith(" 0")  # the listener's v6only


def test_table_row_worst_case_ipv4_fits():
    row = format_row(record(saddr="::ffff:255.255.255.255", sport=65535,
                            daddr="::ffff:255.255.255.254", dport=65535,
                            pid=4194304, proc=ProcessInfo("abcdefghijklmno", None, None)))
    assert len(row) <= 100 and len(HEADER) <= 100
    assert "4194304/abcdefghijk+ " in row   # cut as ps cuts, the whole name in JSON


def test_table_names_the_process_and_json_the_thread_too():
    """A JVM accepts on a thread with its own name: the table shows the
    process's, as netstat does; JSON carries both."""
    rec = record(comm=b"http-nio-4243-A", pid=4724, tid=4801)
    assert (rec["comm"], rec["process"]) == ("http-nio-4243-A", "java")
    assert " 4724/java " in format_row(rec)
    gone = record(comm=b"curl", pid=5155, tid=5155, proc=ProcessInfo(None, None, None))
    assert gone["process"] == "curl"          # exited before the lookup: its main thread's name
    assert record(comm=b"worker", tid=1, proc=ProcessInfo(None, None, None))["process"] is None


def test_table_row_escapes_comm():
    row = format_row(record(comm=b"ev\x1b[2Jil", proc=ProcessInfo("ev\x1b[2Jil", None, None)))
    assert "\x1b" not in row and "ev\\x1b[2Jil" in row
    row = format_row(record(comm=b"ev\x1b[2Jil", tid=31307, proc=ProcessInfo(None, None, None)))
    assert "\x1b" not in row and "ev\\x1b[2Jil" in row


def test_table_native_ipv6_and_plain_tcp():
    assert label(**{k: v for k, v in record(saddr="::1", daddr="::1").items() if k in ("sock_family", "mapped")}) == "tcp6"
    rec = record(kind="connect", family=2, saddr="127.0.0.1", daddr="127.0.0.1", v6only=0xff)
    assert label(rec["sock_family"], rec["mapped"]) == "tcp"
    assert format_row(rec).endswith(" -")
    assert "[::1]:4243" in format_row(record(saddr="::1", daddr="::1", v6only=1))


def test_unaccepted_label():
    assert " queued " in format_row(record(kind="unaccepted"))


def test_json_without_orjson_is_the_same(monkeypatch):
    from socktrace.output import jsonl
    rec = record(comm=b"x\x1b")
    fast = jsonl.dumps(rec)
    monkeypatch.setattr(jsonl, "_dumps_bytes", jsonl._stdlib_line)  # what it picks without orjson
    assert json.loads(jsonl.dumps(rec)) == json.loads(fast) == {**rec}


WEB = {"runtime": "podman", "id": "ab" * 32, "name": "web", "image": "localhost/app:1", "pod": None,
       "namespace": None, "pod_uid": None}


def test_a_containers_process_is_named_with_its_container():
    """JSON carries the whole container object; the table adds its name
    after @, within the 20 columns of PID/COMM@CONTAINER, and escaped (a
    container's name is its owner's choice)."""
    rec = record(pid=31307, tid=31307, proc=ProcessInfo("java", "java -jar app.jar", None, WEB))
    assert rec["container"] == WEB and rec["unit"] is None
    assert json.loads(dumps(rec))["container"]["image"] == "localhost/app:1"
    row = format_row(rec)
    assert row[17:38] == "31307/java@web       " and len(row) <= 100
    evil = dict(WEB, name="we\x1b[2Jb-and-a-long-name")
    row = format_row(record(pid=31307, tid=31307, proc=ProcessInfo("java", None, None, evil)))
    assert "\x1b" not in row and "31307/java@we\\x1b" in row


def test_a_host_service_has_its_unit_and_no_container():
    rec = record(proc=ProcessInfo("squid", None, "/system.slice/squid.service", None, "squid.service"))
    assert (rec["container"], rec["unit"]) == (None, "squid.service")


def test_the_summary_names_a_listeners_container_or_unit():
    import io
    from socktrace.advice import advise
    from socktrace.output.table import TableSink
    out, err = io.StringIO(), io.StringIO()
    seen = [{"protocol": "tcp", "pid": 7, "pids": [7], "process": "java", "cmdline": "java -jar b.jar",
             "container": container, "unit": unit, "port": 8080, "mapped": mapped,
             "advice": advise("java", "java -jar b.jar", 8080, container=container)}
            for container, unit, mapped in ((WEB, None, 2), (None, "backup.service", 1))]
    TableSink(out, err).summary({"type": "summary", "events": 3, "mapped": 3, "lost": 0,
                                 "unaccepted_untracked": 0, "missed_runs": 0, "by_type": {"accept": 3},
                                 "dual_stack": seen})
    text = err.getvalue()
    assert "socktrace: 7/java@web served 2 IPv4 connections on port 8080" in text
    assert "socktrace: 7/java (backup.service) served 1 IPv4 connection on port 8080" in text
    assert "  in podman container web, image localhost/app:1: make the change in the container's " \
           "environment: podman run -e JAVA_TOOL_OPTIONS=-Djava.net.preferIPv4Stack=true" in text
