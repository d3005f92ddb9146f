"""UDP flows with bytes alone: decoding, records, the table, filters, the
summary's and report's grouping (the kernel side: tests/kernel/test_udp.py)."""

import socket

from socktrace.events import decode
from socktrace.filters import Filter
from socktrace.output.table import format_row
from socktrace.procinfo import ProcessInfo
from socktrace.records import connection_record
from socktrace.report import summarize, to_json
from socktrace.vocabulary import Drops

from rawevents import raw
from test_record_builder import make, records

PROC = ProcessInfo("java", "java Dns.java", "/")


def flow(direction="in", **kw):
    kw.setdefault("saddr", "::")
    kw.setdefault("sport", 5353)
    return raw(f"udp_{direction}", **kw)


def test_a_mapped_flow_received_by_a_dual_stack_socket():
    c = decode(flow(), 0)
    assert (c.kind, c.protocol, c.direction, c.sock_family, c.mapped, c.laddr, c.raddr, c.v6only) == \
        ("udp", "udp", "in", "AF_INET6", True, "::", "10.0.0.20", False)
    rec = connection_record(c, PROC, "root")
    assert (rec["type"], rec["protocol"], rec["direction"], rec["v6only"]) == ("udp", "udp", "in", False)
    row = format_row(rec)
    assert " udp in " in row and "[::]:5353" in row and "10.0.0.20:64702" in row
    assert row.split()[-3:] == ["udp6", "MAPPED", "0"]


def test_a_flow_sent_from_a_plain_ipv4_socket():
    c = decode(flow("out", family=socket.AF_INET, saddr="0.0.0.0", sport=40000, daddr="192.0.2.53",
                    dport=53, v6only=0xff), 0)
    rec = connection_record(c, PROC, "root")
    assert (rec["protocol"], rec["direction"], rec["v6only"], rec["mapped"]) == ("udp", "out", None, False)
    assert format_row(rec).split()[-2:] == ["udp", "-"]


def test_tcp_records_say_tcp():
    assert connection_record(decode(raw(), 0), PROC, "root")["protocol"] == "tcp"


def test_protocol_filter():
    tcp, udp = decode(raw(), 0), decode(flow(), 0)
    assert [Filter(protocol="udp").matches(c) for c in (tcp, udp)] == [False, True]
    assert [Filter(protocol="tcp").matches(c) for c in (tcp, udp)] == [True, False]
    assert [Filter().matches(c) for c in (tcp, udp)] == [True, True]


def test_summary_and_report_group_udp_sockets_apart_from_tcp_listeners(tmp_path):
    """A program serving TCP and UDP on one port has two dual-stack sockets:
    two lines, each with its protocol; sent flows are not served ones."""
    b = make(tmp_path)
    recs = records(b, [raw(), flow(dport=41000), flow(dport=41001), flow("out", dport=41002),
                       flow(saddr="::1", daddr="::1", sport=4243, dport=41003)])
    summary = b.summary(Drops())
    assert summary["by_type"] == {"accept": 1, "udp": 4}
    assert [(d["protocol"], d["port"], d["mapped"]) for d in summary["dual_stack"]] == \
        [("udp", 5353, 2), ("tcp", 4243, 1)]
    report = to_json(summarize(recs), [])
    assert [(l["protocol"], l["port"], l["ipv4_mapped"], l["ipv6"]) for l in report["dual_stack_listeners"]] == \
        [("udp", 5353, 2, 0), ("tcp", 4243, 1, 0)]
    assert report["by_type"] == summary["by_type"]
