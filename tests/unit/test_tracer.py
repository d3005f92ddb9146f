"""The loop (tracer.py) over probes in domain terms: no bcc here."""

from socktrace.filters import Filter
from socktrace.output.tee import Tee
from socktrace.probes import Mode
from socktrace.procinfo import ProcessCache
from socktrace.signals import Flag
from socktrace.tracer import Tracer
from socktrace.vocabulary import Drops

from rawevents import raw
from socks import NETNS, sock, sockets
from test_procinfo import fake_proc


class FakeProbes:
    """probes.Probes' interface over plain lists."""
    mode, ringbuf, offsets_from = Mode.TRACEPOINT, True, "BTF"

    def __init__(self, batches=(), stop=None):
        self.skipped = [(Mode.KFUNC, "no BTF")]
        self.batches = list(batches)      # what successive polls return
        self.stop = stop                   # set once the batches are read
        self.unaccepted: list[tuple[int, bytes]] = []   # (age_ns, raw)
        self.counters = Drops()
        self.calls: list[str] = []

    def events(self, stop):
        return self

    def poll(self, ms):
        self.calls.append("poll")
        if not self.batches:
            self.stop.set()
            return []
        return self.batches.pop(0)

    def drain(self):
        self.calls.append("drain")
        return [raw(dport=1)]

    def take_unaccepted(self, older_than_ns):
        taken = [r for age, r in self.unaccepted if age >= older_than_ns]
        self.unaccepted = [(a, r) for a, r in self.unaccepted if a < older_than_ns]
        return taken

    def take_ended_flows(self, idle_ns):
        self.calls.append(f"flows idle {idle_ns}")
        return []

    def drops(self):
        return self.counters

    def detach(self):
        self.calls.append("detach")

    def close(self):
        self.calls.append("close")


class Sink:
    """Records as they arrive, by sink method (output.sink.Sink)."""

    def __init__(self):
        self.calls = []

    def ready(self, rec):
        self.calls.append(("ready", rec))

    def existing(self, recs):
        self.calls.append(("existing", recs))

    def connections(self, recs):
        self.calls.extend(("connection", r) for r in recs)

    def lost(self, rec):
        self.calls.append(("lost", rec))

    def summary(self, rec):
        self.calls.append(("summary", rec))

    def flush(self):
        pass

    reopen = close = flush

    @property
    def records(self):
        return [r for kind, r in self.calls if kind == "connection"]


def make(tmp_path, probes, listening=(), flt=Filter()):
    lookups = []

    def listed():
        lookups.append(1)
        return sockets(*listening)
    sink = Sink()
    tracer = Tracer(probes, sink, flt, cache=ProcessCache(procfs=str(tmp_path), users=lambda uid: "root"),
                    sockets=listed)
    return tracer, sink, lookups


def unaccepted(**kw):
    return raw("unaccepted", pid=0, tid=0, comm=b"", **kw)


def test_a_run_from_ready_to_summary(tmp_path):
    """ready, the connections in order, then at stop: detach before the
    last drain, the queued connections, the summary that counts them all."""
    fake_proc(tmp_path, 31307, "java", [b"java"])
    stop = Flag()
    probes = FakeProbes([[raw(dport=10), raw(dport=11)], [raw(dport=12)]], stop)
    probes.unaccepted = [(0, unaccepted(sport=8080))]
    tracer, sink, _ = make(tmp_path, probes)
    tracer.run(stop)
    kinds = [k for k, _ in sink.calls]
    assert kinds == ["ready"] + ["connection"] * 5 + ["summary"]
    assert sink.calls[0][1] == {"type": "ready", "probe": "tracepoint", "skipped": {"kfunc": "no BTF"},
                                "offsets": "BTF", "buffer": "ring buffer"}
    assert [r["rport"] for r in sink.records] == [10, 11, 12, 1, 64702]
    assert probes.calls[-2:] == ["detach", "drain"]
    summary = sink.calls[-1][1]
    dual_stack = summary.pop("dual_stack")
    assert summary == {"type": "summary", "events": 5, "mapped": 5, "lost": 0,
                       "unaccepted_untracked": 0, "missed_runs": 0, "by_type": {"accept": 4, "unaccepted": 1}}
    # the JVM's listener with the JVM's fix (its /proc says it is no Go
    # program), and the queued connection's, whose owner is unknown
    assert [(d["pid"], d["process"], d["port"], d["mapped"], d["advice"]["app"])
            for d in dual_stack] == [(31307, "java", 4243, 4, "java"), (None, None, 8080, 1, None)]


def test_unaccepted_reported_after_grace_listeners_listed_once_per_sweep(tmp_path):
    fake_proc(tmp_path, 500, "nginx", [b"nginx: master process"])
    probes = FakeProbes()
    probes.unaccepted = [(5 * 10**9, unaccepted(sport=8080)), (5 * 10**9, unaccepted(sport=8080, dport=2)),
                         (0, unaccepted(sport=8080, dport=3))]     # still young
    tracer, sink, lookups = make(tmp_path, probes, [sock("::", 8080, (500,))])
    tracer.sweep_unaccepted()
    assert [(r["type"], r["pid"], r["comm"]) for r in sink.records] == [("unaccepted", 500, "nginx")] * 2
    assert len(lookups) == 1
    tracer.sweep_unaccepted()                    # nothing old enough: no listener lookup
    assert len(lookups) == 1
    tracer.sweep_unaccepted(everything=True)     # at exit: all of them
    assert len(sink.records) == 3 and not probes.unaccepted


def test_lost_events_reported_once_per_change(tmp_path):
    probes = FakeProbes()
    tracer, sink, _ = make(tmp_path, probes)
    tracer.check_lost()
    assert sink.calls == []
    probes.counters = Drops(lost=7)
    tracer.check_lost()
    tracer.check_lost()
    assert sink.calls == [("lost", {"type": "lost", "lost": 7, "unaccepted_untracked": 0,
                                     "missed_runs": 0})]
    probes.counters = Drops(lost=7, missed_runs=3)   # skipped runs lose nothing by themselves
    tracer.check_lost()
    assert len(sink.calls) == 1
    probes.counters = Drops(lost=8, missed_runs=3)
    tracer.check_lost()
    assert sink.calls[-1] == ("lost", {"type": "lost", "lost": 8, "unaccepted_untracked": 0,
                                       "missed_runs": 3})


def test_tee_gives_every_sink_every_record_in_order(tmp_path):
    stop = Flag()
    a, b = Sink(), Sink()
    tracer = Tracer(FakeProbes([[raw(dport=10)]], stop), Tee(a, b),
                    cache=ProcessCache(procfs=str(tmp_path), users=lambda uid: "root"),
                    sockets=sockets)
    tracer.run(stop)
    assert a.calls == b.calls and [k for k, _ in a.calls] == ["ready", "connection", "connection", "summary"]


def test_duration_counts_from_ready(tmp_path):
    """--duration: that long of tracing after `ready`, whatever came before."""
    import time

    class Quiet(FakeProbes):
        def poll(self, ms):           # waits as the ring buffer's poll does, and nothing comes
            time.sleep(ms / 1000)
            return []
    stop = Flag()
    probes = Quiet()
    tracer, sink, _ = make(tmp_path, probes)
    sink.ready = lambda rec: sink.calls.append(("ready", time.monotonic()))
    tracer.run(stop, duration=0.3)
    ended = time.monotonic()
    assert not stop.is_set()
    assert 0.3 <= ended - sink.calls[0][1] < 5
    assert [k for k, _ in sink.calls] == ["ready", "connection", "summary"]   # the drain's
