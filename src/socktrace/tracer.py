"""Collect events from the loaded probes and hand records to an output.

Runs until `stop` is set (SIGINT/SIGTERM).  Once a second it reports the
connections left unaccepted in the kernel's `pending` map and any events the
kernel could not submit.  At stop it detaches the probes first, then drains
what is already buffered, so nothing that reached the buffer is lost.
"""

from __future__ import annotations

import ctypes
import dataclasses
import mmap
import time
from collections import Counter
from typing import Callable

from .events import (EVENT_ACCEPT, EVENT_CONNECT, STAT_LOST, STAT_PENDING_FULL, Connection,
                     Kind, ProcessArgs, decode, origin, time_and_ports)
from .filters import Filter
from .kernel.ringbuf import RingReader
from .output.records import (connection_record, lost_record, ready_record, record_like,
                             summary_record)
from .probes import Probes
from .signals import Flag
from .classify import came_through
from .kernel.netns import ns_inode
from .procinfo import NO_PROCESS, Listening, ProcessCache, listening_sockets

POLL_MS = 100
HOUSEKEEPING_S = 1.0
CHUNK = 64
ORIGINS_MAX = 65536
# events whose record depends on nothing but the event and the process cache
_COPYABLE = frozenset((EVENT_ACCEPT, EVENT_CONNECT))


class Tracer:
    def __init__(self, probes: Probes, sink, flt: Filter = Filter(),
                 cache: ProcessCache | None = None,
                 unaccepted_after: float = 1.0,
                 find_listeners: Callable[[], list[Listening]] = listening_sockets,
                 own_netns: int | None = None):
        self.probes = probes
        self.sink = sink
        # per event: no call at all when nothing is filtered in userspace
        self._matches = None if flt == Filter() else flt.matches
        self.cache = cache or ProcessCache()
        self.unaccepted_after_ns = int(unaccepted_after * 1e9)
        self.find_listeners = find_listeners
        self.own_netns = own_netns if own_netns is not None else ns_inode("/proc/self/ns/net")
        # the listeners, looked up once per sweep of unaccepted connections
        self._listening: list[Listening] | None = None
        self.wall_offset_ns = time.time_ns() - time.monotonic_ns()
        self.counts: Counter[Kind] = Counter()
        self.mapped = 0
        self.lost = 0
        self.pending_full = 0
        self._reported_lost = (0, 0)
        self._perf_lost = 0  # perf buffer only: samples the kernel dropped
        # events.origin(raw) -> (record, kind, mapped) of its last connection
        self._by_origin: dict[bytes, tuple[dict, Kind, bool]] = {}

    # -- events -----------------------------------------------------------
    def _on_events(self, batch: list[bytes]) -> None:
        """Decode raw events, in order, and hand the records of the
        connections among them to the output CHUNK at a time (a few dozen
        short-lived objects at once stay in the CPU cache and in Python's
        small-object allocator: 2,000 at once cost twice as much each).

        A server's connections share most of their record: the process,
        the socket family, often the addresses.  The record of an event
        whose origin (events.origin) was seen before is copied from the last
        one with the new time and ports, at a third of the cost of decoding
        and building it.  A userspace filter, which may look at the ports,
        turns that off."""
        offset = self.wall_offset_ns
        memo = self._by_origin if self._matches is None else None
        counts = self.counts
        for start in range(0, len(batch), CHUNK):
            records = []
            for data in batch[start:start + CHUNK]:
                copyable = memo is not None and data[0] in _COPYABLE
                if copyable:
                    key = origin(data)
                    seen = memo.get(key)
                    if seen is not None:
                        template, kind, mapped = seen
                        records.append(record_like(template, *time_and_ports(data, offset)))
                        counts[kind] += 1
                        self.mapped += mapped
                        continue
                ev = decode(data, offset)
                if type(ev) is Connection:
                    rec = self._record(ev)
                    if rec is not None:
                        records.append(rec)
                        if copyable:
                            if len(memo) >= ORIGINS_MAX:
                                memo.clear()
                            memo[key] = (rec, ev.kind, ev.mapped)
                    continue
                if type(ev) is ProcessArgs:  # sent before its first connection
                    self.cache.introduce(ev.pid, ev.args, ev.truncated)
                else:
                    self.cache.forget(ev.pid)
                self._by_origin.clear()  # cached records may show an old command line
            if records:
                self.sink.connections(records)

    def _on_event(self, data: bytes) -> None:
        self._on_events([data])

    def _record(self, c: Connection) -> dict | None:
        """The record of `c`, or None when a userspace filter drops it."""
        if c.kind is Kind.UNACCEPTED:
            c = self._attribute_to_listener(c)
        if self._matches is not None and not self._matches(c):
            return None
        self.counts[c.kind] += 1
        self.mapped += c.mapped
        cache = self.cache
        return connection_record(c, cache.process(c.pid) if c.pid else NO_PROCESS,
                                 cache.user(c.uid))

    def _attribute_to_listener(self, c: Connection) -> Connection:
        """Nobody accepted it: name the process owning its listener, found
        by the snapshot's rules (classify.came_through), in socktrace's own
        network namespace, the only one whose listeners it can list."""
        if c.netns != self.own_netns:
            return c
        if self._listening is None:
            self._listening = self.find_listeners()
        for lst in self._listening:
            if lst.lport == c.lport and lst.pids and \
                    came_through(lst.sock_family, lst.laddr, c.sock_family, c.laddr):
                pid = lst.pids[0]
                return dataclasses.replace(c, pid=pid, comm=self.cache.comm(pid) or "")
        return c

    # -- periodic work ----------------------------------------------------
    def sweep_unaccepted(self, everything: bool = False) -> None:
        """Report connections that have waited in an accept queue too long
        (or all of them, at exit)."""
        table = self.probes.bpf["pending"]
        now = time.monotonic_ns()
        self._listening = None   # listeners change between sweeps
        for key, value in list(table.items()):
            young = now - value.ts_ns < self.unaccepted_after_ns
            if value.type == 0:  # handshake not complete yet
                if not young and now - value.ts_ns > 60 * 10**9:
                    table.pop(key, None)   # a child that never completed it
                continue
            if not everything and young:
                continue
            try:
                del table[key]
            except KeyError:  # accept() took it meanwhile
                continue
            self._on_event(ctypes.string_at(ctypes.addressof(value), ctypes.sizeof(value)))

    def check_lost(self) -> None:
        stats = self.probes.bpf["stats"]
        self.lost = self._perf_lost + sum(stats[ctypes.c_int(STAT_LOST)])
        self.pending_full = sum(stats[ctypes.c_int(STAT_PENDING_FULL)])
        if (self.lost, self.pending_full) != self._reported_lost:
            self._reported_lost = (self.lost, self.pending_full)
            self.sink.lost(lost_record(self.lost, self.pending_full))

    def _on_perf_lost(self, count: int) -> None:
        self._perf_lost += count

    # -- main loop --------------------------------------------------------
    def _open_buffer(self, stop: Flag) -> tuple[Callable[[int], None], Callable[[], None]]:
        """Open the event buffer; return poll(timeout_ms) and drain().

        The ring buffer is written without wakeups (socktrace.bpf.c), so
        poll() waits out its interval (or a stop) and then reads everything
        committed in one batch, straight from the shared pages.

        The perf buffer (kernels before 5.8) goes through bcc, which calls
        back through ctypes and prints and swallows exceptions: the callback
        keeps the first one and poll()/drain() raise it."""
        b = self.probes.bpf
        if self.probes.ringbuf:
            ring = RingReader.open(b["events"].map_fd, self.probes.buffer_pages * mmap.PAGESIZE)
            on_events = self._on_events

            def drain() -> None:
                on_events(ring.read())

            def poll(ms: int) -> None:
                stop.wait(ms / 1000)
                drain()
            return poll, drain

        failed: list[BaseException] = []

        def on_perf(cpu, data, size):
            if failed:
                return
            try:
                self._on_event(ctypes.string_at(data, size))
            except BaseException as exc:  # re-raised by poll()
                failed.append(exc)

        def checked(read):
            def run(*args):
                read(*args)
                if failed:
                    raise failed[0]
            return run

        b["events"].open_perf_buffer(on_perf, page_cnt=self.probes.buffer_pages,
                                     lost_cb=self._on_perf_lost)
        # bcc 0.18 (Debian 11) has no perf_buffer_consume(); a poll that
        # does not wait reads what is there just the same
        consume = getattr(b, "perf_buffer_consume", None) or (lambda: b.perf_buffer_poll(0))
        return checked(b.perf_buffer_poll), checked(consume)

    def run(self, stop: Flag, reopen: Flag | None = None) -> None:
        """Trace until `stop` is set; reopen the outputs' files when
        `reopen` is set (SIGHUP)."""
        poll, drain = self._open_buffer(stop)
        p = self.probes
        self.sink.ready(ready_record(
            p.mode.value, [(m.value, r) for m, r in p.skipped], p.offsets_from,
            "ring buffer" if p.ringbuf else "perf buffer"))
        next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        while not stop.is_set():
            poll(POLL_MS)
            self.sink.flush()
            if reopen is not None and reopen.is_set():
                reopen.clear()
                self.sink.reopen()
            if time.monotonic() >= next_housekeeping:
                self.sweep_unaccepted()
                self.check_lost()
                next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        self.finish(drain)

    def finish(self, drain: Callable[[], None]) -> None:
        """Detach, drain what is buffered, report the rest, summarize."""
        self.probes.detach()
        drain()
        self.sweep_unaccepted(everything=True)
        self.check_lost()
        self.sink.summary(summary_record(sum(self.counts.values()), self.mapped, self.lost,
                                         self.pending_full,
                                         {k.value: n for k, n in self.counts.items()}))
