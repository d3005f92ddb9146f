"""The loop: read the kernel's events, have them built into records, hand
the records to the sink.  Thin: the kernel side is probes.Probes, records
are record_builder.RecordBuilder's, outputs are sinks (output/sink.py).

Runs until `stop` is set (SIGINT/SIGTERM).  Once a second it reports the
connections left unaccepted in the kernel and any events the kernel could
not submit.  At stop it detaches the probes first, then drains what is
already buffered, so nothing that reached the buffer is lost.
"""

from __future__ import annotations

import time
from typing import Callable

from .filters import Filter
from .kernel.netns import ns_inode
from .output.sink import Sink
from .probes import Drops, Probes
from .procinfo import Endpoints, Listening, ProcessCache, accepted_owners, listening_sockets
from .record_builder import RecordBuilder
from .records import lost_record, ready_record
from .signals import Flag

POLL_MS = 100
HOUSEKEEPING_S = 1.0


class Tracer:
    def __init__(self, probes: Probes, sink: Sink, flt: Filter = Filter(),
                 cache: ProcessCache | None = None,
                 unaccepted_after: float = 1.0,
                 find_listeners: Callable[[], list[Listening]] = listening_sockets,
                 find_accepted: Callable[[], dict[Endpoints, tuple[int, ...]]] = accepted_owners,
                 own_netns: int | None = None):
        self.probes = probes
        self.sink = sink
        self.builder = RecordBuilder(
            cache or ProcessCache(), flt, wall_offset_ns=time.time_ns() - time.monotonic_ns(),
            own_netns=own_netns if own_netns is not None else ns_inode("/proc/self/ns/net"))
        self.unaccepted_after_ns = int(unaccepted_after * 1e9)
        self.find_listeners = find_listeners
        self.find_accepted = find_accepted
        self._reported_drops = Drops(0, 0)

    def _connections(self, batch: list[bytes]) -> None:
        for records in self.builder.connections(batch):
            self.sink.connections(records)

    def sweep_unaccepted(self, everything: bool = False) -> None:
        """Report connections that have waited in an accept queue too long
        (or all of them, at exit), and those an accept the probes missed
        took; the sockets are listed once a sweep, when there are any."""
        taken = self.probes.take_unaccepted(0 if everything else self.unaccepted_after_ns)
        if taken:
            records = self.builder.unaccepted(taken, self.find_listeners(), self.find_accepted())
            if records:
                self.sink.connections(records)

    def check_lost(self) -> Drops:
        drops = self.probes.drops()
        if drops != self._reported_drops:
            self._reported_drops = drops
            self.sink.lost(lost_record(drops.lost, drops.unaccepted_untracked))
        return drops

    def run(self, stop: Flag, reopen: Flag | None = None) -> None:
        """Trace until `stop` is set; reopen the outputs' files when
        `reopen` is set (SIGHUP)."""
        events = self.probes.events(stop)
        p = self.probes
        self.sink.ready(ready_record(
            p.mode.value, [(m.value, r) for m, r in p.skipped], p.offsets_from,
            "ring buffer" if p.ringbuf else "perf buffer"))
        next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        while not stop.is_set():
            self._connections(events.poll(POLL_MS))
            self.sink.flush()
            if reopen is not None and reopen.is_set():
                reopen.clear()
                self.sink.reopen()
            if time.monotonic() >= next_housekeeping:
                self.sweep_unaccepted()
                self.check_lost()
                next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        self.finish(events.drain)

    def finish(self, drain: Callable[[], list[bytes]]) -> None:
        """Detach, drain what is buffered, report the rest, summarize."""
        self.probes.detach()
        self._connections(drain())
        self.sweep_unaccepted(everything=True)
        drops = self.check_lost()
        self.sink.summary(self.builder.summary(drops.lost, drops.unaccepted_untracked))
