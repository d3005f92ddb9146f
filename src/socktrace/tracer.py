"""The loop: read the kernel's events, have them built into records, hand
the records to the sink.  Thin: the kernel side is probes.Probes, records
are record_builder.RecordBuilder's, outputs are sinks (output/sink.py).

Runs until `stop` is set (SIGINT/SIGTERM) or a duration has passed since
it said `ready`.  Once a second it reports the connections left
unaccepted in the kernel and any events the kernel could not submit.  At
stop it detaches the probes first, then drains what is already buffered,
so nothing that reached the buffer is lost.
"""

from __future__ import annotations

import time
from typing import Callable

from . import snapshot
from .filters import Filter
from .kernel.netns import all_namespaces
from .output.sink import Sink
from .probes import Probes
from .procinfo import ProcessCache
from .record_builder import RecordBuilder
from .records import lost_record, ready_record
from .signals import Flag
from .vocabulary import Drops

POLL_MS = 100
HOUSEKEEPING_S = 1.0


class Tracer:
    def __init__(self, probes: Probes, sink: Sink, flt: Filter = Filter(),
                 cache: ProcessCache | None = None,
                 unaccepted_after: float = 1.0,
                 udp_idle: float = 60.0,
                 sockets: Callable[[], snapshot.Snapshot] | None = None):
        self.probes = probes
        self.sink = sink
        cache = cache or ProcessCache()
        self.builder = RecordBuilder(
            cache, flt, wall_offset_ns=time.time_ns() - time.monotonic_ns())
        self.unaccepted_after_ns = int(unaccepted_after * 1e9)
        self.udp_idle_ns = int(udp_idle * 1e9)
        # every network namespace's TCP sockets now, with their processes:
        # looked up afresh each sweep, their containers from the tracer's
        # cache (a runtime is asked once per container, not once per sweep)
        self.sockets = sockets or (lambda: snapshot.take(
            all_namespaces(), ProcessCache(cache.procfs, containers=cache.containers),
            protocols=("tcp",), gone_ok=True))
        self._reported_drops = Drops()

    def _connections(self, batch: list[bytes]) -> None:
        for records in self.builder.connections(batch):
            self.sink.connections(records)
        unwanted = self.builder.take_unwanted_cgroups()
        if unwanted:
            self.probes.skip_cgroups(unwanted)

    def sweep_unaccepted(self, everything: bool = False) -> None:
        """Report connections that have waited in an accept queue too long
        (or all of them, at exit), and those an accept the probes missed
        took; the sockets are listed once a sweep, when there are any."""
        taken = self.probes.take_unaccepted(0 if everything else self.unaccepted_after_ns)
        if taken:
            records = self.builder.unaccepted(taken, self.sockets())
            if records:
                self.sink.connections(records)

    def check_lost(self) -> Drops:
        drops = self.probes.drops()
        if drops.losses() != self._reported_drops.losses():
            self._reported_drops = drops
            self.sink.lost(lost_record(drops))
        return drops

    def run(self, stop: Flag, reopen: Flag | None = None, duration: float | None = None) -> None:
        """Trace until `stop` is set or, given a `duration`, that many
        seconds after `ready` (every probe attached: the whole window is
        traced however long loading took); reopen the outputs' files when
        `reopen` is set (SIGHUP)."""
        events = self.probes.events(stop)
        p = self.probes
        self.sink.ready(ready_record(
            p.mode.value, [(m.value, r) for m, r in p.skipped], p.offsets_from,
            "ring buffer" if p.ringbuf else "perf buffer"))
        now = time.monotonic()
        deadline = now + duration if duration else None
        next_housekeeping = now + HOUSEKEEPING_S
        while not stop.is_set():
            wait_ms = POLL_MS
            if deadline is not None:
                left_ms = (deadline - time.monotonic()) * 1000
                if left_ms <= 0:
                    break
                wait_ms = min(POLL_MS, max(1, int(left_ms)))
            self._connections(events.poll(wait_ms))
            self.sink.flush()
            if reopen is not None and reopen.is_set():
                reopen.clear()
                self.sink.reopen()
            if time.monotonic() >= next_housekeeping:
                self.sweep_unaccepted()
                self._connections(self.probes.take_ended_flows(self.udp_idle_ns))
                self.check_lost()
                next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        self.finish(events.drain)

    def finish(self, drain: Callable[[], list[bytes]]) -> None:
        """Detach, drain what is buffered, report the rest, summarize."""
        self.probes.detach()
        self._connections(drain())
        self.sweep_unaccepted(everything=True)
        self.sink.summary(self.builder.summary(self.check_lost()))
