"""--metrics: the counters from records and their exposition, without a kernel."""

from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from socktrace.output.metrics import Collector, MetricsSink
from socktrace.output.sink import Sink
from socktrace.snapshot import Listener

from socks import sock, sockets


def rec(type_="accept", process="java", mapped=True, family="AF_INET6", lport=4243, v6only=False):
    return {"type": type_, "process": process, "comm": process, "mapped": mapped,
            "sock_family": family, "lport": lport, "v6only": v6only}


def scrape(collector) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_counters_labels_and_gauges():
    sink = MetricsSink()
    assert isinstance(sink, Sink)
    sink.ready({"type": "ready", "probe": "tracepoint", "skipped": {}, "offsets": "BTF", "buffer": "ring"})
    sink.connections([rec(), rec(), rec(mapped=False), rec(process="nginx", family="AF_INET", mapped=False,
                                                           lport=80, v6only=None),
                      rec("connect", "curl", False, "AF_INET", 40000, None)])
    sink.lost({"type": "lost", "lost": 3, "unaccepted_untracked": 1})
    # now: java's dual-stack listener carries two IPv4 connections and one
    # IPv6 one; an AF_INET listener and a v6only one are no dual-stack ones
    via = Listener("::", 4243, False, ())
    now = sockets(sock("::", 4243, (7,), comm="java"),
                  *[sock("10.0.0.1", 4243, (7,), state="ESTABLISHED", raddr="10.0.0.2", rport=p,
                         mapped=True, listener=via) for p in (1, 2)],
                  sock("::1", 4243, (7,), state="ESTABLISHED", raddr="::1", rport=3, listener=via),
                  sock("0.0.0.0", 80, (8,), family="AF_INET", comm="nginx"))
    got = scrape(Collector(sink, lambda: now))
    assert got[("socktrace_connections_total", (("comm", "java"), ("container", ""), ("event", "accept"),
                                                ("family", "ipv4_mapped")))] == 2
    assert got[("socktrace_connections_total", (("comm", "java"), ("container", ""), ("event", "accept"),
                                                ("family", "ipv6")))] == 1
    assert got[("socktrace_connections_total", (("comm", "curl"), ("container", ""), ("event", "connect"),
                                                ("family", "ipv4")))] == 1
    assert got[("socktrace_accepts_by_port_total", (("comm", "java"), ("port", "4243"),
                                                    ("v6only", "false")))] == 3
    assert got[("socktrace_accepts_by_port_total", (("comm", "nginx"), ("port", "80"),
                                                    ("v6only", "none")))] == 1
    # the summary's dual_stack, by protocol, port and name: IPv4 through the listener
    assert got[("socktrace_dual_stack_ipv4_total", (("comm", "java"), ("container", ""), ("port", "4243"),
                                                   ("protocol", "tcp")))] == 2
    assert not [k for k in got if k[0] == "socktrace_dual_stack_ipv4_total"
                and ("comm", "nginx") in k[1]]
    assert got[("socktrace_dual_stack_listener", (("comm", "java"), ("container", ""), ("port", "4243")))] == 1
    assert [k for k in got if k[0] == "socktrace_dual_stack_listener"] == [
        ("socktrace_dual_stack_listener", (("comm", "java"), ("container", ""), ("port", "4243")))]
    assert got[("socktrace_dual_stack_mapped_connections", (("comm", "java"), ("container", ""), ("port", "4243")))] == 2
    assert got[("socktrace_events_lost_total", ())] == 3
    assert got[("socktrace_unaccepted_untracked_total", ())] == 1
    info = [k for k in got if k[0] == "socktrace_info"]
    assert len(info) == 1 and ("probe", "tracepoint") in info[0][1]


def test_label_values_are_bounded():
    sink = MetricsSink(max_comms=3, max_ports=2)
    sink.connections([rec(process=f"p{i}", lport=1000 + i) for i in range(10)])
    comms = {k[2] for k in sink.connections_total}
    assert {k[3] for k in sink.connections_total} == {""}   # host processes: no container
    ports = {k[0] for k in sink.accepts_by_port}
    assert comms == {"p0", "p1", "p2", "other"} and ports == {"1000", "1001", "other"}
    assert sum(sink.connections_total.values()) == 10


def test_the_listeners_are_listed_at_most_every_max_age():
    calls, now = [], [0.0]

    def listeners():
        calls.append(now[0])
        return sockets()
    c = Collector(MetricsSink(), listeners, max_age=10, clock=lambda: now[0])
    for t in (0, 1, 9.9, 10, 15, 20.5):
        now[0] = t
        list(c.collect())
    assert calls == [0, 10, 20.5]


def test_udp_flows_and_dual_stack_udp_sockets():
    sink = MetricsSink()
    flow = dict(rec(type_="udp", process="dnsd", lport=5353, v6only=False), protocol="udp",
                direction="in")
    sink.connections([flow, flow, dict(flow, mapped=False), dict(flow, direction="out")])
    now = sockets(sock("::", 5353, (9,), comm="dnsd", state="UNCONN"),
                  sock("::", 5354, (9,), comm="dnsd", state="ESTABLISHED", protocol="udp"))  # connected
    got = scrape(Collector(sink, lambda: now))
    flows = {k: v for k, v in got.items() if k[0] == "socktrace_udp_flows_total"}
    assert flows == {
        ("socktrace_udp_flows_total", (("comm", "dnsd"), ("container", ""), ("direction", "in"), ("family", "ipv4_mapped"))): 2,
        ("socktrace_udp_flows_total", (("comm", "dnsd"), ("container", ""), ("direction", "in"), ("family", "ipv6"))): 1,
        ("socktrace_udp_flows_total", (("comm", "dnsd"), ("container", ""), ("direction", "out"), ("family", "ipv4_mapped"))): 1}
    assert not [k for k in got if k[0] == "socktrace_connections_total"]   # flows are no connections
    assert got[("socktrace_dual_stack_ipv4_total", (("comm", "dnsd"), ("container", ""), ("port", "5353"),
                                                   ("protocol", "udp")))] == 2
    assert [k for k in got if k[0] == "socktrace_dual_stack_udp_socket"] == [
        ("socktrace_dual_stack_udp_socket", (("comm", "dnsd"), ("container", ""), ("port", "5353")))]
    assert not [k for k in got if k[0] == "socktrace_dual_stack_listener"]


def test_bytes_by_family_direction_and_process_never_go_down():
    """socktrace_bytes_total from the kernel's reading (traffic.bytes_now):
    labelled as the other counters, process names bounded likewise, the
    map's overflow name "" as "other", and never less than last scraped."""
    readings = [
        {("mapped", "received", "java"): 40000, ("mapped", "sent", "java"): 7000,
         ("ipv4", "sent", "curl"): 10, ("ipv6", "sent", ""): 5},
        # java's open connection ended between the two halves of a reading:
        # in neither; the next reading has it again, in the kernel's sums
        {("mapped", "received", "java"): 100, ("mapped", "sent", "java"): 7000,
         ("ipv4", "sent", "curl"): 10, ("ipv6", "sent", ""): 5, ("ipv4", "sent", "p3"): 1},
        {("mapped", "received", "java"): 40001, ("mapped", "sent", "java"): 7000,
         ("ipv4", "sent", "curl"): 10, ("ipv6", "sent", ""): 5, ("ipv4", "sent", "p3"): 1},
    ]
    sink = MetricsSink(max_comms=2)
    c = Collector(sink, sockets, traffic=lambda: readings.pop(0))

    def bytes_now():
        return {labels: v for (name, labels), v in scrape(c).items() if name == "socktrace_bytes_total"}

    def key(fam, direction, comm):
        return (("comm", comm), ("direction", direction), ("family", fam), ("protocol", "tcp"))
    first = bytes_now()
    assert first == {key("ipv4_mapped", "received", "java"): 40000,
                     key("ipv4_mapped", "sent", "java"): 7000, key("ipv4", "sent", "curl"): 10,
                     key("ipv6", "sent", "other"): 5}
    second = bytes_now()
    assert second[key("ipv4_mapped", "received", "java")] == 40000     # not 100
    assert second[key("ipv4", "sent", "other")] == 1                    # a third name: capped
    assert bytes_now()[key("ipv4_mapped", "received", "java")] == 40001


def test_containers_are_a_bounded_label():
    """A container's name labels its processes' series, at most
    max_containers of them (the rest "other"); its id when it has no name."""
    sink = MetricsSink(max_containers=2)
    ctr = [{"runtime": "podman", "id": f"{i:x}" * 64, "name": f"web{i}" if i else None, "image": None,
            "pod": None, "namespace": None, "pod_uid": None} for i in range(4)]
    sink.connections([dict(rec(), container=c) for c in ctr] + [rec()])
    assert {k[3]: n for k, n in sink.connections_total.items()} == {"0" * 12: 1, "web1": 1, "other": 2, "": 1}
    now = sockets(sock("::", 4243, (7,), comm="java", container=ctr[1]))
    got = scrape(Collector(sink, lambda: now))
    assert got[("socktrace_dual_stack_listener", (("comm", "java"), ("container", "web1"), ("port", "4243")))] == 1
    assert got[("socktrace_dual_stack_ipv4_total", (("comm", "java"), ("container", "web1"), ("port", "4243"),
                                                   ("protocol", "tcp")))] == 1
