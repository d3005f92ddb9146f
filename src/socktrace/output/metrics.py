"""`--metrics`: Prometheus metrics, for a fleet's view of its dual-stack
services.

Collection is apart from exposition, as in client_python's own design:

- `MetricsSink` is an output like the others (the `Sink` protocol): on the
  tracer's thread it only adds each batch of records to plain counters,
  keyed by label values, so the hot path costs a dict update per record;
- `Collector` turns those counters, the dual-stack listeners of a
  snapshot of the sockets now (snapshot.take, a parameter) and the bytes
  the kernel counted (traffic.bytes_now, a parameter) into metric families
  when Prometheus scrapes: prometheus_client writes the text format and
  serves it (`MetricsServer`), on its own thread.  The sink owns its
  server: its close() stops it.

Which records came through a listener and whose process a record names is
vocabulary.py's, as for the summary at exit and `socktrace report`; the
dual-stack counter is their grouping summed by port and process name.
Label values are bounded: event (4), family (3), process names (at most
`MAX_COMMS`, the rest count as "other"), containers (their names, at most
`MAX_CONTAINERS`, likewise; "" for a host process, which Prometheus
treats as no label), listening ports (at most `MAX_PORTS`, likewise).
Never an address, a client port or a pid.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Callable, Iterator, List, Optional, Tuple

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, \
    InfoMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler

from .. import __version__
from ..classify import peer_family
from ..containers import display_name
from ..records import ConnectionRecord, LostRecord, ReadyRecord, SocketRecord, SummaryRecord
from ..snapshot import Snapshot
from ..vocabulary import ACCEPT, CLOSE, IN, TCP_PROTOCOL, THROUGH_LISTENER, UDP, UDP_PROTOCOL

MAX_COMMS = 100     # distinct process names with a series of their own
MAX_PORTS = 200     # distinct listening ports, likewise
MAX_CONTAINERS = 100   # distinct container names, likewise
OTHER = "other"
LISTENERS_MAX_AGE = 10.0   # seconds a listing of the dual-stack listeners is reused


# classify.peer_family's answer as the family label (its "mapped" spelled out)
FAMILY_LABEL = {"ipv4": "ipv4", "ipv6": "ipv6", "mapped": "ipv4_mapped"}


# the family label by (sock_family, mapped), classify.peer_family's answers
# looked up once: a dict lookup per record instead of two calls
_FAMILY = {(f, m): FAMILY_LABEL[peer_family(f, m)] for f in ("AF_INET", "AF_INET6") for m in (False, True)}


def family(rec: ConnectionRecord) -> str:
    """The family label of a connection record.

    >>> family({"sock_family": "AF_INET6", "mapped": True})
    'ipv4_mapped'
    """
    return _FAMILY[rec["sock_family"], rec["mapped"]]


class _Capped(dict):
    """Label values as they come, the first `limit` distinct ones kept and
    every later one counted as "other".  The kept ones are the dict's keys
    (and values), so that the hot path finds a value seen before with one
    `.get` and calls `label` only for a new one.

    >>> c = _Capped(1)
    >>> c.label("a"), c.label("b"), c.get("a"), c.get("b")
    ('a', 'other', 'a', None)
    """

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def label(self, value: str) -> str:
        found = self.get(value)
        if found is not None:
            return found
        if len(self) < self.limit:
            self[value] = value
            return value
        return OTHER


class MetricsSink:
    """The counters, from the records: an output among the others.

    >>> m = MetricsSink()
    >>> m.connections([{"type": "accept", "process": "java", "comm": "java", "mapped": True,
    ...                 "sock_family": "AF_INET6", "lport": 4243, "v6only": False}])
    >>> m.connections_total, m.accepts_by_port, m.dual_stack_ipv4
    ({('accept', 'ipv4_mapped', 'java', ''): 1}, {('4243', 'java', 'false'): 1}, {('tcp', '4243', 'java', ''): 1})
    """

    def __init__(self, max_comms: int = MAX_COMMS, max_ports: int = MAX_PORTS,
                 max_containers: int = MAX_CONTAINERS):
        # label values -> count; read by the scrape thread (a copy: dict()
        # holds the GIL throughout), written only here
        # (event, family, comm, container) -> connections
        self.connections_total: dict[tuple[str, str, str, str], int] = {}
        self.accepts_by_port: dict[tuple[str, str, str], int] = {}
        # (direction, family, comm, container) -> UDP flows
        self.udp_flows_total: dict[tuple[str, str, str, str], int] = {}
        # (protocol, port, comm, container) -> IPv4 connections and flows
        # that came in through a dual-stack socket: the summary's dual_stack
        # (vocabulary.DualStackListeners) by protocol, port, name, container
        self.dual_stack_ipv4: dict[tuple[str, str, str, str], int] = {}
        self.lost_total = 0
        self.unaccepted_untracked_total = 0
        self.probe = ""
        self.server: Optional[MetricsServer] = None
        self._comm = _Capped(max_comms)
        self._port = _Capped(max_ports)
        self._container = _Capped(max_containers)
        self._container_by_id: dict[str, str] = {}   # its label, looked up once per container

    def container_label(self, container) -> str:
        """A record's or socket's container (containers.ContainerRecord)
        as a label value."""
        if container is None:
            return ""
        found = self._container_by_id.get(container["id"])
        if found is None:
            found = self._container_by_id[container["id"]] = \
                self._container.label(display_name(container))
        return found

    @classmethod
    def serving(cls, addr: str, port: int, snapshots: Callable[[], Snapshot],
                traffic: Callable[[], dict] = dict) -> "MetricsSink":
        """A sink whose counters are served on http://addr:port/metrics,
        bound now: a port in use fails here (OSError), before any probe."""
        sink = cls()
        sink.server = MetricsServer(addr, port, Collector(sink, snapshots, traffic))
        sink.server.start()
        return sink

    def ready(self, rec: ReadyRecord) -> None:
        self.probe = rec["probe"]

    def existing(self, recs: List[SocketRecord]) -> None:
        """Existing connections are no events: the listener gauges show them."""

    def connections(self, recs: List[ConnectionRecord]) -> None:
        totals, ports, dual, flows, comms, port_labels = self.connections_total, \
            self.accepts_by_port, self.dual_stack_ipv4, self.udp_flows_total, self._comm, self._port
        ctr_by_id = self._container_by_id
        for r in recs:
            kind = r["type"]
            name = r["process"] or r["comm"] or "?"   # vocabulary.process_name, inlined
            comm = comms.get(name) or comms.label(name)
            c = r.get("container")
            ctr = "" if c is None else ctr_by_id.get(c["id"]) or self.container_label(c)
            if kind == UDP:   # a flow, not a connection
                key = (r["direction"], _FAMILY[r["sock_family"], r["mapped"]], comm, ctr)
                flows[key] = flows.get(key, 0) + 1
                if r["mapped"] and r["direction"] == IN:    # came in: vocabulary.came_in
                    lport = str(r["lport"])
                    dkey = (UDP_PROTOCOL, port_labels.get(lport) or port_labels.label(lport), comm,
                            ctr)
                    dual[dkey] = dual.get(dkey, 0) + 1
                continue
            if kind == CLOSE:   # the end of a connection counted already (bytes: issue 20)
                continue
            key = (kind, _FAMILY[r["sock_family"], r["mapped"]], comm, ctr)
            totals[key] = totals.get(key, 0) + 1
            if kind in THROUGH_LISTENER:
                lport = str(r["lport"])
                port = port_labels.get(lport) or port_labels.label(lport)
                if kind == ACCEPT:
                    v6only = r.get("v6only")
                    pkey = (port, comm, "none" if v6only is None else "true" if v6only else "false")
                    ports[pkey] = ports.get(pkey, 0) + 1
                if r["mapped"]:
                    dkey = (TCP_PROTOCOL, port, comm, ctr)
                    dual[dkey] = dual.get(dkey, 0) + 1

    def lost(self, rec: LostRecord) -> None:
        self.lost_total = rec["lost"]
        self.unaccepted_untracked_total = rec["unaccepted_untracked"]

    def summary(self, rec: SummaryRecord) -> None:
        self.lost(rec)

    def flush(self) -> None:
        """Nothing buffered: a scrape reads the counters as they are."""

    def reopen(self) -> None:
        """No file."""

    def close(self) -> None:
        """Stop serving: a scrape afterwards finds no socktrace."""
        if self.server is not None:
            self.server.close()
            self.server = None


# a dual-stack socket as the gauges show it: (protocol, port, comm, its
# container (containers.ContainerRecord or None), the IPv4 connections a TCP
# listener carries now, accepted or queued; 0 for UDP)
Gauged = Tuple[str, int, str, Optional[dict], int]


def dual_stack_now(snap: Snapshot) -> List[Gauged]:
    """The dual-stack sockets of a snapshot (TCP listeners, UDP sockets),
    with the IPv4 connections each TCP listener carries (Snapshot.carried_by,
    as `snapshot --explain` counts them)."""
    return [(s.protocol, s.lport, (s.first_owner.comm if s.first_owner else None) or "?",
             s.first_owner.container if s.first_owner else None,
             sum(c.mapped for c in snap.carried_by(s)) if s.protocol == TCP_PROTOCOL else 0)
            for s in snap.sockets if s.dual_stack]


class Collector:
    """prometheus_client's custom collector over a MetricsSink and a
    source of snapshots of the sockets now (taken at most every `max_age`
    seconds: a scrape every second costs one snapshot per 10 s)."""

    def __init__(self, sink: MetricsSink, snapshots: Callable[[], Snapshot],
                 traffic: Callable[[], dict] = dict,
                 max_age: float = LISTENERS_MAX_AGE, clock: Callable[[], float] = time.monotonic):
        self.sink = sink
        self._snapshots = snapshots
        self._traffic = traffic
        # (protocol, family, direction, comm) -> the bytes last exposed
        self._bytes: dict[tuple[str, str, str, str], int] = {}
        self._max_age = max_age
        self._clock = clock
        self._listed: tuple[float, List[Gauged]] | None = None
        self._lock = threading.Lock()   # scrapes may come in parallel

    def describe(self) -> list:
        return []   # registering must not list the sockets

    def listeners(self) -> List[Gauged]:
        with self._lock:
            now = self._clock()
            if self._listed is None or now - self._listed[0] >= self._max_age:
                self._listed = (now, dual_stack_now(self._snapshots()))
            return self._listed[1]

    def bytes_total(self) -> dict[tuple[str, str, str, str], int]:
        """The bytes by label values now, never less than at the last
        scrape: a connection between its two halves (open, then ended) may
        be missed by one reading, and a counter must not go down."""
        now: dict[tuple[str, str, str, str], int] = {}
        comms = self.sink._comm
        for (fam, direction, process), n in self._traffic().items():
            key = (TCP_PROTOCOL, FAMILY_LABEL[fam], direction,
                   comms.label(process) if process else OTHER)
            now[key] = now.get(key, 0) + n
        with self._lock:
            shown = self._bytes
            for key, n in now.items():
                if n > shown.get(key, -1):
                    shown[key] = n
            return dict(shown)

    def collect(self) -> Iterator[Metric]:
        s = self.sink
        yield _counter("socktrace_connections", "New TCP connections seen, by event (accept, "
                       "connect, connect_failed, unaccepted), family (ipv4, ipv6, ipv4_mapped), "
                       "process name and container", ["event", "family", "comm", "container"],
                       s.connections_total)
        yield _counter("socktrace_accepts_by_port", "Accepted connections by listening port, "
                       "process name and the listener's IPV6_V6ONLY", ["port", "comm", "v6only"],
                       s.accepts_by_port)
        yield _counter("socktrace_udp_flows", "New UDP flows (socket, peer) seen, by direction "
                       "(in: first datagram received, out: sent), family (ipv4, ipv6, "
                       "ipv4_mapped), process name and container",
                       ["direction", "family", "comm", "container"], s.udp_flows_total)
        yield _counter("socktrace_dual_stack_ipv4", "IPv4 peers through a dual-stack AF_INET6 "
                       "socket (MAPPED) that came in: TCP connections accepted or left queued, "
                       "UDP flows whose first datagram was received; by protocol, port, "
                       "process name and container", ["protocol", "port", "comm", "container"],
                       s.dual_stack_ipv4)
        listeners = self.listeners()
        g = GaugeMetricFamily("socktrace_dual_stack_listener", "1 for each dual-stack listener "
                              "(AF_INET6 on [::] without IPV6_V6ONLY: it serves IPv4 too), now",
                              labels=["port", "comm", "container"])
        m = GaugeMetricFamily("socktrace_dual_stack_mapped_connections", "The IPv4 connections "
                              "(tcp6 MAPPED) each dual-stack listener carries now",
                              labels=["port", "comm", "container"])
        u = GaugeMetricFamily("socktrace_dual_stack_udp_socket", "1 for each dual-stack UDP "
                              "socket (AF_INET6 bound to [::] without IPV6_V6ONLY: it takes IPv4 "
                              "datagrams too), now", labels=["port", "comm", "container"])
        for protocol, port, comm, container, mapped in listeners:
            labels = [str(port), comm, s.container_label(container)]
            if protocol == UDP_PROTOCOL:
                u.add_metric(labels, 1)
                continue
            g.add_metric(labels, 1)
            m.add_metric(labels, mapped)
        yield g
        yield m
        yield u
        yield _counter("socktrace_bytes", "Payload of the TCP connections socktrace reported, "
                       "open and ended, by protocol, peer family (ipv4, ipv6, ipv4_mapped), "
                       "direction (sent: acknowledged by the peer, received) and process name",
                       ["protocol", "family", "direction", "comm"], self.bytes_total())
        yield CounterMetricFamily("socktrace_events_lost", "Events the kernel could not submit "
                                  "(buffer full)", value=s.lost_total)
        yield CounterMetricFamily("socktrace_unaccepted_untracked", "Queued connections the "
                                  "kernel could not track", value=s.unaccepted_untracked_total)
        yield InfoMetricFamily("socktrace", "socktrace's version and probe mode",
                               value={"version": __version__, "probe": s.probe or "starting"})


def _counter(name: str, documentation: str, labels: List[str], counts: dict) -> Metric:
    """A counter family from a dict of label values -> count (copied first:
    the tracer's thread adds to it meanwhile)."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, n in dict(counts).items():
        family.add_metric(list(values), n)
    return family


class MetricsServer:
    """/metrics over HTTP on (addr, port), served on a thread of its own
    by prometheus_client's handler.  Binding happens here, at once: a port
    in use or an address not on this host fails before anything else."""

    def __init__(self, addr: str, port: int, collector: Collector):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        server_class = type("Server", (ThreadingHTTPServer,),
                            {"address_family": family, "daemon_threads": True})
        self._httpd = server_class((addr, port), MetricsHandler.factory(registry))
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics",
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
