"""`--metrics`: Prometheus metrics, for a fleet's view of its dual-stack
services.

Collection is apart from exposition, as in client_python's own design:

- `MetricsSink` is an output like the others (the `Sink` protocol): on the
  tracer's thread it only adds each batch of records to plain counters,
  keyed by label values, so the hot path costs a dict update per record;
- `Collector` turns those counters, and the dual-stack listeners a source
  lists now (the snapshot's sock_diag code, a parameter), into metric
  families when Prometheus scrapes: prometheus_client writes the text
  format and serves it (`MetricsServer`), on its own thread.

Label values are bounded: event (4), family (3), process names (at most
`MAX_COMMS`, the rest count as "other"), listening ports (at most
`MAX_PORTS`, likewise).  Never an address, a client port or a pid.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Callable, Iterator, List

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, \
    InfoMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler

from .. import __version__
from ..classify import protocol
from ..records import ConnectionRecord, LostRecord, ReadyRecord, SocketRecord, SummaryRecord

MAX_COMMS = 100     # distinct process names with a series of their own
MAX_PORTS = 200     # distinct listening ports, likewise
OTHER = "other"
LISTENERS_MAX_AGE = 10.0   # seconds a listing of the dual-stack listeners is reused


# classify.protocol's answer as the family label (its "mapped" spelled out)
FAMILY_LABEL = {"ipv4": "ipv4", "ipv6": "ipv6", "mapped": "ipv4_mapped"}


def family(rec: ConnectionRecord) -> str:
    """The family label of a connection record.

    >>> family({"sock_family": "AF_INET6", "mapped": True})
    'ipv4_mapped'
    """
    return FAMILY_LABEL[protocol(rec["sock_family"], rec["mapped"])]


class _Capped:
    """Label values as they come, the first `limit` distinct ones kept and
    every later one counted as "other"."""

    def __init__(self, limit: int):
        self.limit = limit
        self.kept: set = set()

    def __call__(self, value: str) -> str:
        if value in self.kept:
            return value
        if len(self.kept) < self.limit:
            self.kept.add(value)
            return value
        return OTHER


class MetricsSink:
    """The counters, from the records: an output among the others.

    >>> m = MetricsSink()
    >>> m.connections([{"type": "accept", "process": "java", "comm": "java", "mapped": True,
    ...                 "sock_family": "AF_INET6", "lport": 4243, "v6only": False}])
    >>> m.connections_total, m.accepts_by_port
    ({('accept', 'ipv4_mapped', 'java'): 1}, {('4243', 'java', 'false'): 1})
    """

    def __init__(self, max_comms: int = MAX_COMMS, max_ports: int = MAX_PORTS):
        # label values -> count; read by the scrape thread (a copy: dict()
        # holds the GIL throughout), written only here
        self.connections_total: dict[tuple[str, str, str], int] = {}
        self.accepts_by_port: dict[tuple[str, str, str], int] = {}
        self.lost_total = 0
        self.unaccepted_untracked_total = 0
        self.probe = ""
        self._comm = _Capped(max_comms)
        self._port = _Capped(max_ports)

    def ready(self, rec: ReadyRecord) -> None:
        self.probe = rec["probe"]

    def existing(self, recs: List[SocketRecord]) -> None:
        """Existing connections are no events: the listener gauges show them."""

    def connections(self, recs: List[ConnectionRecord]) -> None:
        totals, ports, comm_of, port_of = self.connections_total, self.accepts_by_port, \
            self._comm, self._port
        for r in recs:
            comm = comm_of(r["process"] or r["comm"] or "?")
            key = (r["type"], family(r), comm)
            totals[key] = totals.get(key, 0) + 1
            if r["type"] == "accept":
                v6only = r.get("v6only")
                pkey = (port_of(str(r["lport"])), comm, "none" if v6only is None else str(v6only).lower())
                ports[pkey] = ports.get(pkey, 0) + 1

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
        """The server is the session's to stop (MetricsServer.close)."""


@dataclass(frozen=True)
class DualStackListener:
    """A dual-stack listener as the gauges show it."""
    port: int
    comm: str
    mapped: int          # its IPv4 connections now (tcp6 MAPPED, accepted or queued)


class Collector:
    """prometheus_client's custom collector over a MetricsSink and a
    source of the dual-stack listeners now (listed at most every
    `max_age` seconds: a scrape every second costs one listing per 10 s)."""

    def __init__(self, sink: MetricsSink, listeners: Callable[[], List[DualStackListener]],
                 max_age: float = LISTENERS_MAX_AGE, clock: Callable[[], float] = time.monotonic):
        self.sink = sink
        self._listeners = listeners
        self._max_age = max_age
        self._clock = clock
        self._listed: tuple[float, List[DualStackListener]] | None = None
        self._lock = threading.Lock()   # scrapes may come in parallel

    def describe(self) -> list:
        return []   # registering must not list the sockets

    def listeners(self) -> List[DualStackListener]:
        with self._lock:
            now = self._clock()
            if self._listed is None or now - self._listed[0] >= self._max_age:
                self._listed = (now, self._listeners())
            return self._listed[1]

    def collect(self) -> Iterator[Metric]:
        s = self.sink
        c = CounterMetricFamily("socktrace_connections", "New TCP connections seen, by event "
                                "(accept, connect, connect_failed, unaccepted), family "
                                "(ipv4, ipv6, ipv4_mapped) and process name",
                                labels=["event", "family", "comm"])
        for (event, fam, comm), n in dict(s.connections_total).items():
            c.add_metric([event, fam, comm], n)
        yield c
        p = CounterMetricFamily("socktrace_accepts_by_port", "Accepted connections by listening "
                                "port, process name and the listener's IPV6_V6ONLY",
                                labels=["port", "comm", "v6only"])
        for (port, comm, v6only), n in dict(s.accepts_by_port).items():
            p.add_metric([port, comm, v6only], n)
        yield p
        listeners = self.listeners()
        g = GaugeMetricFamily("socktrace_dual_stack_listener", "1 for each dual-stack listener "
                              "(AF_INET6 on [::] without IPV6_V6ONLY: it serves IPv4 too), now",
                              labels=["port", "comm"])
        m = GaugeMetricFamily("socktrace_dual_stack_mapped_connections", "The IPv4 connections "
                              "(tcp6 MAPPED) each dual-stack listener carries now",
                              labels=["port", "comm"])
        for lst in listeners:
            g.add_metric([str(lst.port), lst.comm], 1)
            m.add_metric([str(lst.port), lst.comm], lst.mapped)
        yield g
        yield m
        yield CounterMetricFamily("socktrace_events_lost", "Events the kernel could not submit "
                                  "(buffer full)", value=s.lost_total)
        yield CounterMetricFamily("socktrace_unaccepted_untracked", "Queued connections the "
                                  "kernel could not track", value=s.unaccepted_untracked_total)
        yield InfoMetricFamily("socktrace", "socktrace's version and probe mode",
                               value={"version": __version__, "probe": s.probe or "starting"})


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
