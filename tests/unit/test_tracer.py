"""The collector's logic, with the kernel side replaced by plain tables."""

import socket
import time

from socktrace.events import RawEvent, STAT_LOST, decode
from socktrace.output.records import connection_record
from socktrace.filters import Filter
from socktrace.probes import Mode, Probes
from socktrace.procinfo import Listening, ProcessCache
from socktrace.tracer import Tracer

from rawevents import raw
from test_procinfo import fake_proc


class Stats:
    def __init__(self):
        self.values = {0: [0, 0], 1: [0, 0]}

    def __getitem__(self, key):
        return self.values[key.value]


class FakeBPF:
    def __init__(self):
        self.tables = {"pending": {}, "stats": Stats()}

    def __getitem__(self, name):
        return self.tables[name]


class Sink:
    def __init__(self):
        self.records = []

    def connections(self, recs):
        self.records.extend(recs)

    def lost(self, rec):
        self.records.append(rec)

    summary = ready = lost

    def flush(self):
        pass


NETNS = 4026531840   # rawevents.raw's


def make(tmp_path, flt=Filter(), listeners=(), listening=None):
    """A tracer over fake tables; `listeners`: the pids of a dual-stack
    listener on port 8080, or `listening`: the listeners themselves."""
    sink = Sink()
    if listening is None:
        listening = [Listening("AF_INET6", "::", 8080, tuple(listeners))] if listeners else []
    lookups = []

    def find_listeners():
        lookups.append(1)
        return list(listening)
    tracer = Tracer(Probes(FakeBPF(), Mode.TRACEPOINT, True, "BTF"), sink, flt,
                    cache=ProcessCache(procfs=str(tmp_path), users=lambda uid: "root"),
                    find_listeners=find_listeners, own_netns=NETNS)
    tracer.lookups = lookups
    return tracer, sink


def test_connections_become_records_with_process_data(tmp_path):
    fake_proc(tmp_path, 31307, "java", [b"java", b"-jar", b"backup.jar"])
    tracer, sink = make(tmp_path)
    tracer._on_event(raw())
    tracer._on_event(raw(dport=64703))
    assert [r["rport"] for r in sink.records] == [64702, 64703]
    assert sink.records[0]["cmdline"] == "java -jar backup.jar"
    assert tracer.cache.lookups == 1  # one lookup per process, not per event


def test_records_copied_from_an_earlier_connection_equal_built_ones(tmp_path):
    """Events of one origin (events.origin) get their record copied from
    the previous one with new time and ports: it must be the record that
    decoding and building it would give, for every kind of event."""
    fake_proc(tmp_path, 31307, "java", [b"java", b"-jar", b"app.jar"])
    fake_proc(tmp_path, 4242, "curl", [b"curl", b"http://10.0.0.12/"])
    events = []
    for i in range(50):
        events.append(raw(dport=50000 + i, ts_ns=10**9 + i * 1000))
        events.append(raw("connect", pid=4242, tid=4242, family=socket.AF_INET, saddr="10.0.0.20",
                          daddr="10.0.0.12", sport=40000 + i, dport=80, v6only=0xff, sk=i))
        events.append(raw(daddr="::ffff:10.0.0.21" if i % 2 else "2001:db8::7", dport=i))
    tracer, sink = make(tmp_path)
    tracer._on_events(events)
    cache = ProcessCache(procfs=str(tmp_path), users=lambda uid: "root")
    built = [connection_record(c, cache.process(c.pid), "root")
             for c in (decode(e, tracer.wall_offset_ns) for e in events)]
    assert sink.records == built
    assert len(tracer._by_origin) == 4   # java x 3 peers, curl x 1
    assert sum(tracer.counts.values()) == 150


def test_exec_notice_refreshes_the_command_line(tmp_path):
    fake_proc(tmp_path, 31307, "sh", [b"sh", b"-c", b"exec java"])
    tracer, sink = make(tmp_path)
    tracer._on_event(raw())
    (tmp_path / "31307" / "cmdline").write_bytes(b"java\0-jar\0app.jar\0")
    tracer._on_event(raw("exec", pid=31307))
    tracer._on_event(raw())
    assert [r["cmdline"] for r in sink.records] == ["sh -c exec java", "java -jar app.jar"]


def test_userspace_filters(tmp_path):
    tracer, sink = make(tmp_path, Filter(port=22))
    tracer._on_event(raw())
    tracer._on_event(raw(sport=22))
    assert [r["lport"] for r in sink.records] == [22]


def pending_entry(**kw):
    return RawEvent.from_buffer_copy(raw("unaccepted", pid=0, tid=0, comm=b"", **kw))


def test_unaccepted_reported_after_grace_and_attributed_to_listener(tmp_path):
    fake_proc(tmp_path, 500, "nginx", [b"nginx: master process"])
    tracer, sink = make(tmp_path, listeners=[500])
    pending = tracer.probes.bpf["pending"]
    now = time.monotonic_ns()
    pending[1] = pending_entry(ts_ns=now - 5 * 10**9, sport=8080)
    pending[2] = pending_entry(ts_ns=now, sport=8080)            # still young
    tracer.sweep_unaccepted()
    assert [(r["type"], r["pid"], r["comm"], r["cmdline"]) for r in sink.records] == \
        [("unaccepted", 500, "nginx", "nginx: master process")]
    assert list(pending) == [2]
    tracer.sweep_unaccepted(everything=True)  # at exit: all of them
    assert len(sink.records) == 2 and not pending


def test_unaccepted_matched_to_its_listener_once_per_sweep(tmp_path):
    """The snapshot's rules: same port, same family, the listener's address
    a wildcard or the connection's own; its network namespace only; the
    listeners listed once for a whole sweep."""
    fake_proc(tmp_path, 500, "nginx", [b"nginx"])
    fake_proc(tmp_path, 600, "other", [b"other"])
    tracer, sink = make(tmp_path, listening=[
        Listening("AF_INET", "0.0.0.0", 8080, (600,)),        # another family
        Listening("AF_INET6", "::1", 8080, (600,)),           # another address
        Listening("AF_INET6", "::", 8080, (500,))])
    pending = tracer.probes.bpf["pending"]
    pending[1] = pending_entry(ts_ns=0, sport=8080)
    pending[2] = pending_entry(ts_ns=0, sport=8080, dport=5001)
    tracer.sweep_unaccepted()
    assert [r["pid"] for r in sink.records] == [500, 500] and len(tracer.lookups) == 1
    foreign = RawEvent.from_buffer_copy(raw("unaccepted", pid=0, tid=0, comm=b"", ts_ns=0, sport=8080))
    foreign.netns = NETNS + 1                                 # a container's connection
    pending[3] = foreign
    tracer.sweep_unaccepted()
    assert sink.records[-1]["pid"] is None


def test_unaccepted_without_listener_owner(tmp_path):
    tracer, sink = make(tmp_path)
    tracer.probes.bpf["pending"][1] = pending_entry(ts_ns=0)
    tracer.sweep_unaccepted()
    assert (sink.records[0]["pid"], sink.records[0]["comm"]) == (None, None)


def test_lost_events_reported_once_per_change(tmp_path):
    tracer, sink = make(tmp_path)
    tracer.check_lost()
    assert sink.records == []
    tracer.probes.bpf["stats"].values[STAT_LOST] = [3, 4]
    tracer.check_lost()
    tracer.check_lost()
    assert sink.records == [{"type": "lost", "lost": 7, "unaccepted_untracked": 0}]


def test_handshake_in_progress_is_not_reported(tmp_path):
    """An entry made at the listener's clone (type 0) waits for its
    handshake; one that never completes it goes after a minute, silently."""
    tracer, sink = make(tmp_path)
    pending = tracer.probes.bpf["pending"]
    now = time.monotonic_ns()
    pending[1] = RawEvent(ts_ns=now - 5 * 10**9)
    pending[2] = RawEvent(ts_ns=now - 120 * 10**9)
    tracer.sweep_unaccepted(everything=True)
    assert sink.records == [] and list(pending) == [1]
