"""`socktrace report`: the answer from a log, after the incident.

Reading (files, gzip, bad lines) is kept apart from summarizing (a pure
function of records) and from formatting (text or JSON).
"""

from __future__ import annotations

import gzip
import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator

from .advice import advise
from .classify import peer_family
from .vocabulary import CLOSE, CONNECT, CONNECT_FAILED, CONNECTION_TYPES, CONNECTIONS, UDP, \
    UDP_PROTOCOL, DualStackListener, DualStackListeners, RecordType, came_in, process_name, \
    protocol_of

REQUIRED = ("time", "pid", "comm", "sock_family", "mapped", "laddr", "lport", "raddr", "rport")
# what a close record adds that the report sums: (field, the types it may have)
CLOSE_REQUIRED = (("bytes_sent", int), ("bytes_received", int), ("duration", (int, float, type(None))))
# a UDP flow's: its bytes are null on kernels that cannot see them
UDP_CLOSE_REQUIRED = (("bytes_sent", (int, type(None))), ("bytes_received", (int, type(None))),
                      ("datagrams_sent", int), ("datagrams_received", int),
                      ("duration", (int, float, type(None))))


def _valid(value: Any, types) -> bool:
    """A JSON value of one of `types` (true and false are no numbers)."""
    return isinstance(value, types) and not isinstance(value, bool)


@dataclass(frozen=True)
class BadLine:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


def read_log(paths: Iterable[str], bad: list[BadLine]) -> Iterator[dict[str, Any]]:
    """Records from log files (plain or .gz), in order; every line that is
    not a valid record is appended to `bad` and skipped."""
    for path in paths:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                reason = None
                try:
                    rec = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    reason = "truncated line" if not raw.endswith(b"\n") else "not valid JSON"
                else:
                    if not isinstance(rec, dict) or "type" not in rec:
                        reason = "not a socktrace record"
                    elif rec["type"] in CONNECTION_TYPES + (CLOSE,) and \
                            any(k not in rec for k in REQUIRED):
                        missing = ", ".join(k for k in REQUIRED if k not in rec)
                        reason = f"{rec['type']} record without {missing}"
                    elif rec["type"] == CLOSE:
                        required = UDP_CLOSE_REQUIRED if protocol_of(rec) == UDP_PROTOCOL \
                            else CLOSE_REQUIRED
                        wrong = ", ".join(k for k, t in required if not _valid(rec.get(k), t))
                        if wrong:
                            reason = f"close record without a valid {wrong}"
                if reason:
                    bad.append(BadLine(path, n, reason))
                else:
                    yield rec


def percentile(sorted_values: list[float], p: int) -> float:
    """The p-th percentile of ascending values, interpolated as
    statistics.quantiles(method="inclusive") does (numpy's default).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 95), percentile([7.0], 95)
    (2.5, 3.85, 7.0)
    """
    if len(sorted_values) == 1:   # quantiles() wants two before Python 3.13
        return sorted_values[0]
    if p == 50:
        return statistics.median(sorted_values)
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[p - 1]


@dataclass
class Traffic:
    """What the ended connections (or UDP flows) of one peer family
    carried, from their `close` records (socktrace --lifetime): how many,
    the payload each way, how long they lived; a UDP flow's datagrams too."""
    connections: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    durations: list = field(default_factory=list)
    udp: bool = False
    datagrams_sent: int = 0
    datagrams_received: int = 0
    unmeasured: int = 0   # UDP flows whose bytes their kernel could not see (Linux < 6.3)

    def add(self, rec: dict[str, Any]) -> None:
        self.connections += 1
        if rec["bytes_sent"] is None:
            self.unmeasured += 1
        else:
            self.bytes_sent += rec["bytes_sent"]
            self.bytes_received += rec["bytes_received"]
        if rec["duration"] is not None:   # None: open before tracing began
            self.durations.append(rec["duration"])
        if self.udp:
            self.datagrams_sent += rec["datagrams_sent"]
            self.datagrams_received += rec["datagrams_received"]

    def to_json(self) -> dict[str, Any]:
        """{"connections": 2, "bytes_sent": …, "bytes_received": …,
        "lifetime_median": seconds, "lifetime_p95": seconds}, and for UDP
        flows "datagrams_sent", "datagrams_received" and "bytes_unmeasured"
        (flows whose bytes are not in bytes_*)."""
        d = sorted(self.durations)
        j = {"connections": self.connections, "bytes_sent": self.bytes_sent,
             "bytes_received": self.bytes_received,
             "lifetime_median": round(percentile(d, 50), 6) if d else None,
             "lifetime_p95": round(percentile(d, 95), 6) if d else None}
        if self.udp:
            j.update(datagrams_sent=self.datagrams_sent, datagrams_received=self.datagrams_received,
                     bytes_unmeasured=self.unmeasured)
        return j


def traffic_key(rec: dict[str, Any]) -> str:
    """What a close record's traffic counts under: its peer family
    (classify.peer_family), prefixed udp_ for a UDP flow's.

    >>> traffic_key({"protocol": "udp", "sock_family": "AF_INET6", "mapped": True})
    'udp_mapped'
    """
    family = peer_family(rec["sock_family"], rec["mapped"])
    return f"udp_{family}" if protocol_of(rec) == UDP_PROTOCOL else family


def add_traffic(by_family: dict[str, Traffic], rec: dict[str, Any]) -> None:
    """Count a close record in its peer family's Traffic."""
    key = traffic_key(rec)
    t = by_family.get(key)
    if t is None:
        t = by_family[key] = Traffic(udp=key.startswith("udp_"))
    t.add(rec)


@dataclass
class Process:
    pid: int | None
    comm: str | None
    cmdline: str | None
    by_type: Counter = field(default_factory=Counter)
    by_protocol: Counter = field(default_factory=Counter)
    traffic: dict = field(default_factory=dict)   # peer family -> Traffic
    first: str = ""
    last: str = ""
    container: dict | None = None   # containers.ContainerRecord


@dataclass
class ContainerUse:
    """What one container's processes did (containers.ContainerRecord)."""
    container: dict
    pids: dict = field(default_factory=dict)   # pid -> None, in the order seen
    by_type: Counter = field(default_factory=Counter)
    by_protocol: Counter = field(default_factory=Counter)
    first: str = ""
    last: str = ""


@dataclass
class Report:
    records: int = 0          # TCP connections (vocabulary.CONNECTIONS)
    udp_by_protocol: Counter = field(default_factory=Counter)   # UDP flows, by peer family
    by_type: Counter = field(default_factory=Counter)   # every connection record
    processes: dict = field(default_factory=dict)
    containers: dict = field(default_factory=dict)   # container id -> ContainerUse
    dual_stack: DualStackListeners = field(default_factory=DualStackListeners)
    mapped_clients: dict = field(default_factory=dict)   # processes connecting via ::ffff:
    peers: Counter = field(default_factory=Counter)
    by_protocol: Counter = field(default_factory=Counter)
    # (pid, comm, cmdline, raddr, rport, protocol, reason) -> failed connects
    failed: Counter = field(default_factory=Counter)
    closes: int = 0     # close records: none in a log written without --lifetime
    # DualStackListeners.key_of an accepted connection -> peer family -> Traffic
    listener_traffic: dict = field(default_factory=dict)
    lost: int = 0
    unwritten: int = 0
    first: str = ""
    last: str = ""


def _seen(obj, time: str) -> None:
    if not obj.first or time < obj.first:
        obj.first = time
    if time > obj.last:
        obj.last = time


def advice(lst: DualStackListener):
    """The fix for a listener of a log, from its name and command line: a
    log does not say whether the program was a Go one."""
    return advise(lst.process, lst.cmdline, lst.port, protocol=lst.protocol, container=lst.container)


def summarize(records: Iterable[dict[str, Any]]) -> Report:
    r = Report()
    for rec in records:
        kind = rec["type"]
        if kind == RecordType.SUMMARY:
            r.lost += rec.get("lost", 0)
        elif kind == RecordType.UNWRITTEN:
            r.unwritten += rec.get("records", 0)
        if kind == CLOSE:
            _closed(r, rec)
        if kind not in CONNECTION_TYPES:
            continue
        r.by_type[kind] += 1
        r.dual_stack.add((rec,))
        proto = peer_family(rec["sock_family"], rec["mapped"])
        # the process's name (logs before it had only the thread's): one
        # JVM, not one row per thread name
        who = (rec["pid"], process_name(rec), rec.get("cmdline"))
        if kind == CONNECT_FAILED:   # an attempt, not a connection
            r.failed[who + (rec["raddr"], rec["rport"], proto, rec.get("reason"))] += 1
            continue
        if kind == UDP:   # a flow, not a connection
            r.udp_by_protocol[proto] += 1
        else:
            r.records += 1
            r.by_protocol[proto] += 1
            r.peers[(rec["raddr"], proto)] += 1
        p = r.processes.get(who)
        if p is None:
            p = r.processes[who] = Process(*who, container=rec.get("container"))
        p.by_type[kind] += 1
        p.by_protocol[proto] += 1
        _seen(p, rec["time"])
        _seen(r, rec["time"])
        container = rec.get("container")
        if container:
            c = r.containers.setdefault(container["id"], ContainerUse(container))
            c.pids[rec["pid"]] = None
            c.by_type[kind] += 1
            c.by_protocol[proto] += 1
            _seen(c, rec["time"])
        if kind == CONNECT and rec["mapped"]:
            c = r.mapped_clients.setdefault(who, Process(*who))
            c.by_type[kind] += 1
            _seen(c, rec["time"])
    return r


def _closed(r: Report, rec: dict[str, Any]) -> None:
    """A connection's end: what it carried, for its process and, if it came
    in through a dual-stack listener, for that listener."""
    r.closes += 1
    who = (rec["pid"], process_name(rec), rec.get("cmdline"))
    add_traffic(r.processes.setdefault(who, Process(*who)).traffic, rec)
    if came_in(rec) and rec["sock_family"] == "AF_INET6":
        add_traffic(r.listener_traffic.setdefault(DualStackListeners.key_of(rec), {}), rec)


def traffic_json(r: Report, by_family: dict[str, Traffic]) -> dict[str, Any] | None:
    """Traffic by peer family; None where the log has no close record at
    all (written without --lifetime): unknown, not zero."""
    if not r.closes:
        return None
    return {proto: t.to_json() for proto, t in sorted(by_family.items())}


def to_json(r: Report, bad: list[BadLine], top: int = 10) -> dict[str, Any]:
    return {
        "records": r.records, "first": r.first or None, "last": r.last or None,
        "by_type": dict(r.by_type), "by_protocol": dict(r.by_protocol),
        "udp_flows": sum(r.udp_by_protocol.values()), "udp_by_protocol": dict(r.udp_by_protocol),
        "lost": r.lost,
        "unwritten": r.unwritten,
        "lifetime": bool(r.closes),   # close records (--lifetime): traffic below
        "processes": [
            {"pid": p.pid, "comm": p.comm, "cmdline": p.cmdline, "container": p.container,
             "by_type": dict(p.by_type),
             "by_protocol": dict(p.by_protocol), "traffic": traffic_json(r, p.traffic),
             "first": p.first, "last": p.last}
            for p in sorted(r.processes.values(), key=lambda p: -sum(p.by_type.values()))],
        "dual_stack_listeners": [
            {"protocol": l.protocol, "pid": l.pid, "pids": l.pids, "comm": l.process,
             "cmdline": l.cmdline, "container": l.container, "unit": l.unit, "port": l.port,
             "ipv4_mapped": l.mapped, "ipv6": l.ipv6,
             "v6only": sorted(l.v6only)[0] if len(l.v6only) == 1 else sorted(l.v6only),
             "traffic": traffic_json(r, r.listener_traffic.get(l.key, {})),
             "first": l.first, "last": l.last, "advice": advice(l)}
            for l in r.dual_stack.serving_ipv4()],
        "containers": [
            {"container": c.container, "pids": list(c.pids), "by_type": dict(c.by_type),
             "by_protocol": dict(c.by_protocol), "first": c.first, "last": c.last}
            for c in sorted(r.containers.values(), key=lambda c: -sum(c.by_type.values()))],
        "mapped_clients": [
            {"pid": c.pid, "comm": c.comm, "cmdline": c.cmdline, "connects": c.by_type[CONNECT],
             "first": c.first, "last": c.last} for c in r.mapped_clients.values()],
        "top_peers": [{"addr": a, "protocol": p, "connections": n}
                      for (a, p), n in r.peers.most_common(top)],
        "failed_connects": [
            {"pid": pid, "comm": comm, "cmdline": cmdline, "raddr": raddr, "rport": rport,
             "protocol": proto, "reason": reason, "count": n}
            for (pid, comm, cmdline, raddr, rport, proto, reason), n in r.failed.most_common(top)],
        "bad_lines": [str(b) for b in bad],
    }


# ---- per-minute timelines (report --html's pictures) ----

FAMILIES = ("ipv4", "mapped", "ipv6")   # classify.peer_family's values, in a chart's order
# a chart's bucket sizes in minutes, the smallest that keeps it to MOST_BUCKETS
STEPS = (1, 5, 15, 60, 360, 1440)
MOST_BUCKETS = 720


@dataclass
class Minute:
    """One bucket of a timeline, counted by peer family: the connections
    (or UDP flows) that began in it, and the payload of those that ended
    in it (their `close` records: the bytes of a connection count in the
    minute it ended, the only time a log gives them)."""
    connections: Counter = field(default_factory=Counter)
    sent: Counter = field(default_factory=Counter)
    received: Counter = field(default_factory=Counter)

    def add(self, other: "Minute") -> None:
        self.connections.update(other.connections)
        self.sent.update(other.sent)
        self.received.update(other.received)


@dataclass
class Timeline:
    """Minutes ("YYYY-MM-DDTHH:MM", UTC, as the records' `time` begins)
    -> Minute, and the peers (address, peer family) -> connections."""
    minutes: dict = field(default_factory=dict)
    peers: Counter = field(default_factory=Counter)
    closes: int = 0   # close records counted: none, the bytes are unknown (not zero)

    def _minute(self, time: str) -> Minute:
        key = time[:16]
        m = self.minutes.get(key)
        if m is None:
            m = self.minutes[key] = Minute()
        return m

    def begun(self, rec: dict[str, Any], family: str) -> None:
        self._minute(rec["time"]).connections[family] += 1
        self.peers[(rec["raddr"], family)] += 1

    def ended(self, rec: dict[str, Any], family: str) -> None:
        self.closes += 1
        if rec["bytes_sent"] is None:   # a UDP flow on a kernel that cannot see its bytes
            return
        m = self._minute(rec["time"])
        m.sent[family] += rec["bytes_sent"]
        m.received[family] += rec["bytes_received"]

    def _starts(self) -> dict[datetime, Minute]:
        starts = {}
        for key, m in self.minutes.items():
            try:
                starts[datetime.strptime(key, "%Y-%m-%dT%H:%M").replace(tzinfo=timezone.utc)] = m
            except ValueError:
                continue
        return starts

    def step(self) -> int:
        """The bucket size buckets() takes by default (pick_step)."""
        starts = self._starts()
        return pick_step(min(starts), max(starts)) if starts else 1

    def buckets(self, step: int | None = None) -> list[tuple[datetime, Minute]]:
        """Every bucket of `step` minutes (STEPS: the smallest that keeps it
        to MOST_BUCKETS, unless given) from the first to the last, those
        without records too (empty): (its start, UTC, what it holds).  A
        time that is no ISO 8601 minute is left out.

        >>> t = Timeline()
        >>> t.begun({"time": "2026-11-23T10:00:59.5Z", "raddr": "10.0.0.1"}, "mapped")
        >>> t.begun({"time": "2026-11-23T10:02:00Z", "raddr": "10.0.0.1"}, "ipv6")
        >>> [(s.strftime("%H:%M"), dict(m.connections)) for s, m in t.buckets()]
        [('10:00', {'mapped': 1}), ('10:01', {}), ('10:02', {'ipv6': 1})]
        >>> [(s.strftime("%H:%M"), dict(m.connections)) for s, m in t.buckets(5)]
        [('10:00', {'mapped': 1, 'ipv6': 1})]
        """
        starts = self._starts()
        if not starts:
            return []
        first, last = min(starts), max(starts)
        if step is None:
            step = pick_step(first, last)
        epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)

        def bucket_of(t: datetime) -> datetime:
            minutes = int((t - epoch).total_seconds()) // 60
            return epoch + timedelta(minutes=minutes - minutes % step)

        start, end = bucket_of(first), bucket_of(last)
        out = {start + timedelta(minutes=step * i): Minute()
               for i in range((end - start) // timedelta(minutes=step) + 1)}
        for t, m in starts.items():
            out[bucket_of(t)].add(m)
        return sorted(out.items(), key=lambda item: item[0])


def pick_step(first: datetime, last: datetime, most: int = MOST_BUCKETS) -> int:
    """The bucket size (minutes) of a timeline from `first` to `last`:
    per minute up to `most` minutes, then coarser (the largest: a day).

    >>> t = datetime(2026, 11, 23, tzinfo=timezone.utc)
    >>> pick_step(t, t + timedelta(hours=2)), pick_step(t, t + timedelta(days=2))
    (1, 5)
    """
    span = int((last - first).total_seconds()) // 60 + 1
    return next((s for s in STEPS if span / s <= most), STEPS[-1])


@dataclass
class Timelines:
    """Per-minute timelines of a log: `overall`, every TCP connection
    (vocabulary.CONNECTIONS) by peer family; `listeners`, by
    DualStackListeners.key_of, what came in (came_in) through each
    listening socket of a program and port, plain IPv4 through an AF_INET
    one included: after the fix a dual-stack listener's IPv4 peers come in
    that way.  A pure function of records, fed one at a time (`add`) so
    that it can count the records `summarize` reads in the same pass."""
    overall: Timeline = field(default_factory=Timeline)
    listeners: dict = field(default_factory=dict)   # key_of -> Timeline

    def add(self, rec: dict[str, Any]) -> None:
        kind = rec["type"]
        if kind not in CONNECTION_TYPES and kind != CLOSE:
            return
        family = peer_family(rec["sock_family"], rec["mapped"])
        if kind == CLOSE:
            if came_in(rec):
                self._listener(rec).ended(rec, family)
            return
        if kind in CONNECTIONS:
            self.overall.begun(rec, family)
        if came_in(rec):
            self._listener(rec).begun(rec, family)

    def _listener(self, rec: dict[str, Any]) -> Timeline:
        key = DualStackListeners.key_of(rec)
        t = self.listeners.get(key)
        if t is None:
            t = self.listeners[key] = Timeline()
        return t

    def of(self, lst: DualStackListener) -> Timeline:
        """A dual-stack listener's (summarize's) timeline."""
        return self.listeners.get(lst.key) or Timeline()


def per_minute(records: Iterable[dict[str, Any]]) -> Timelines:
    """The per-minute timelines of records.

    >>> t = per_minute([
    ...     {"type": "accept", "time": "2026-11-23T10:00:01Z", "pid": 7, "comm": "java",
    ...      "cmdline": "java -jar a.jar", "sock_family": "AF_INET6", "mapped": True,
    ...      "lport": 8080, "raddr": "10.0.0.5", "rport": 40000},
    ...     {"type": "close", "opened_by": "accept", "time": "2026-11-23T10:01:30Z", "pid": 7,
    ...      "comm": "java", "cmdline": "java -jar a.jar", "sock_family": "AF_INET6",
    ...      "mapped": True, "lport": 8080, "raddr": "10.0.0.5", "rport": 40000,
    ...      "bytes_sent": 1500, "bytes_received": 80, "duration": 89.0}])
    >>> [(s.strftime("%H:%M"), dict(m.connections), dict(m.sent))
    ...  for s, m in t.listeners[("tcp", "java", "java -jar a.jar", 8080, None)].buckets()]
    [('10:00', {'mapped': 1}, {}), ('10:01', {}, {'mapped': 1500})]
    """
    t = Timelines()
    for rec in records:
        t.add(rec)
    return t


def summarize_with_timelines(records: Iterable[dict[str, Any]]) -> tuple[Report, Timelines]:
    """summarize() and per_minute() in one pass over the records (a log
    read once)."""
    timelines = Timelines()

    def counted() -> Iterator[dict[str, Any]]:
        for rec in records:
            timelines.add(rec)
            yield rec
    return summarize(counted()), timelines
