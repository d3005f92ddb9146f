"""probes.Probes, the facade over bcc, with bcc's tables replaced by dicts."""

import ctypes
import time

from socktrace.events import RawEvent, stat_index
from socktrace.probes import Mode, Probes
from socktrace.vocabulary import Drops

from rawevents import raw


class PerCpu:
    def __init__(self):
        self.values = {stat_index("lost"): [0, 0], stat_index("unaccepted_untracked"): [0, 0]}

    def __getitem__(self, key):
        return self.values[key.value]


class FakeBPF:
    """The part of bcc.BPF that Probes uses."""

    def __init__(self):
        self.tables = {"pending": {}, "queued": {}, "stats": PerCpu()}
        self.funcs = {}   # no program loaded: none skipped

    def __getitem__(self, name):
        return self.tables[name]


def probes():
    return Probes(FakeBPF(), Mode.TRACEPOINT, True, "BTF")


def entry(**kw):
    return RawEvent.from_buffer_copy(raw("unaccepted", pid=0, tid=0, comm=b"", **kw))


def queue(p, key, ts_ns, **kw):
    """A child as the kernel tracks it: cloned (pending), then established (queued)."""
    p._bpf["pending"][key] = ctypes.c_uint64(ts_ns)
    p._bpf["queued"][key] = entry(ts_ns=ts_ns, **kw)


def test_takes_unaccepted_connections_once_old_enough():
    p = probes()
    now = time.monotonic_ns()
    queue(p, 1, now - 5 * 10**9, sport=8080)
    queue(p, 2, now, sport=8081)                      # still young
    taken = p.take_unaccepted(10**9)
    assert [RawEvent.from_buffer_copy(t).sport for t in taken] == [8080]
    assert list(p._bpf["pending"]) == list(p._bpf["queued"]) == [2]
    assert [RawEvent.from_buffer_copy(t).sport for t in p.take_unaccepted(0)] == [8081]
    assert not p._bpf["pending"] and not p._bpf["queued"]


def test_an_entry_accept_left_behind_is_dropped_not_taken():
    """accept() deletes both keys; an established child written to
    `queued` just after (another CPU) stays there alone: not a connection."""
    p = probes()
    p._bpf["queued"][1] = entry(ts_ns=0, sport=8080)
    assert p.take_unaccepted(10**9) == [] and not p._bpf["queued"]


def test_handshake_in_progress_is_not_taken_and_dropped_after_a_minute():
    """A child cloned (pending) whose handshake has not completed (nothing
    queued) waits; one that never completes it goes after a minute, silently."""
    p = probes()
    pending = p._bpf["pending"]
    now = time.monotonic_ns()
    pending[1] = ctypes.c_uint64(now - 5 * 10**9)
    pending[2] = ctypes.c_uint64(now - 120 * 10**9)
    assert p.take_unaccepted(0) == [] and list(pending) == [1]


def test_drop_counters_summed_over_cpus():
    p = probes()
    assert p.drops() == Drops(0, 0)
    p._bpf["stats"].values[stat_index("lost")] = [3, 4]
    p._bpf["stats"].values[stat_index("unaccepted_untracked")] = [0, 2]
    assert p.drops() == Drops(lost=7, unaccepted_untracked=2)
