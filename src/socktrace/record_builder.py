"""Raw kernel events -> finished records: sans I/O, testable with bytes alone.

The tracer hands over what the kernel sent (batches of `struct event` and
`struct cmdline_event` bytes) and gets back records for the sinks; this
class decodes (events.py), attributes (a process cache given to it),
filters (filters.py), counts, and makes the records (records.py).  The speed
tricks of the hot path live here and nowhere else:

- records are built CHUNK at a time, each chunk handed on before the next
  is built: a few dozen short-lived objects at once stay in the CPU cache
  and in Python's small-object allocator (2,000 at once cost twice as much
  each);
- a server's connections share most of their record (process, family,
  often the addresses): the record of an event whose origin
  (events.origin) was seen before is copied from the last one with the new
  time and ports, at a third of the cost of decoding and building it.  A
  userspace filter, which may look at the ports, turns that off.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Iterator, Protocol

from .advice import advise
from .classify import came_through
from .events import EVENT_ACCEPT, EVENT_CONNECT, EVENT_UDP_IN, EVENT_UDP_OUT, Connection, \
    ProcessArgs, decode, origin, time_and_ports
from .filters import Filter
from .containers import matches as container_matches
from .procinfo import NO_PROCESS, ProcessInfo
from .records import ConnectionRecord, SummaryRecord, connection_record, dual_stack_record, owner, \
    record_like, summary_record
from .snapshot import Snapshot
from .vocabulary import CLOSE, UNACCEPTED, Drops, DualStackListeners, RecordType

CHUNK = 64
ORIGINS_MAX = 65536
# events whose record depends on nothing but the event and the process cache
_COPYABLE = frozenset((EVENT_ACCEPT, EVENT_CONNECT, EVENT_UDP_IN, EVENT_UDP_OUT))


class Processes(Protocol):
    """What the builder asks about processes (procinfo.ProcessCache)."""

    def process(self, pid: int) -> ProcessInfo: ...
    def user(self, uid: int) -> str | None: ...
    def introduce(self, pid: int, args: bytes, truncated: bool, process: str = "") -> None: ...
    def forget(self, pid: int) -> None: ...
    def is_go(self, pid: int) -> bool: ...


class RecordBuilder:
    """Turns raw events into records, counting what it passes on.

    >>> from socktrace.events import EVENT_STRUCT
    >>> from socktrace.procinfo import ProcessCache
    >>> b = RecordBuilder(ProcessCache("/nonexistent", users=lambda uid: "root"))
    >>> mapped = lambda ip: bytes(10) + b"\\xff\\xff" + bytes(ip)
    >>> accept = EVENT_STRUCT.pack(EVENT_ACCEPT, 0, 10, 7, 0, 7, 0, 0, 0, mapped([10, 0, 0, 12]),
    ...                            mapped([10, 0, 0, 20]), b"nginx", 80, 5000, 0, 1)
    >>> [(r["type"], r["pid"], r["process"], r["laddr"], r["lport"], r["mapped"])
    ...  for chunk in b.connections([accept]) for r in chunk]
    [('accept', 7, 'nginx', '10.0.0.12', 80, True)]
    >>> b.summary(Drops())["by_type"]
    {'accept': 1}
    """

    def __init__(self, processes: Processes, flt: Filter = Filter(), wall_offset_ns: int = 0):
        self.processes = processes
        # per event: no call at all when nothing is filtered in userspace
        self._matches = None if flt == Filter() else flt.matches
        self._containers = flt.container
        # --container: the cgroups (v2 ids) of other containers, for the
        # kernel to skip (Probes.skip_cgroups): new ones, and every one
        self._unwanted_new: list[int] = []
        self._unwanted: set[int] = set()
        self.wall_offset_ns = wall_offset_ns
        self.counts: Counter[str] = Counter()   # records passed on, by type
        self.mapped = 0
        self.dual_stack = DualStackListeners()   # for the summary's advice
        # events.origin(raw) -> the record of its last connection
        self._by_origin: dict[bytes, ConnectionRecord] = {}

    def connections(self, batch: list[bytes]) -> Iterator[list[ConnectionRecord]]:
        """The records of the connections among `batch` (raw events, in the
        kernel's order), CHUNK at a time; process notices among them update
        the process cache on the way."""
        offset = self.wall_offset_ns
        memo = self._by_origin if self._matches is None else None
        for start in range(0, len(batch), CHUNK):
            records: list[ConnectionRecord] = []
            for data in batch[start:start + CHUNK]:
                copyable = memo is not None and data[0] in _COPYABLE
                if copyable:
                    key = origin(data)
                    seen = memo.get(key)
                    if seen is not None:
                        records.append(record_like(seen, *time_and_ports(data, offset)))
                        continue
                ev = decode(data, offset)
                if type(ev) is Connection:
                    rec = self._record(ev)
                    if rec is not None:
                        records.append(rec)
                        if copyable:
                            if len(memo) >= ORIGINS_MAX:
                                memo.clear()
                            memo[key] = rec
                    continue
                if type(ev) is ProcessArgs:  # sent before its first connection
                    self.processes.introduce(ev.pid, ev.args, ev.truncated, ev.process)
                else:
                    self.processes.forget(ev.pid)
                self._by_origin.clear()  # cached records may show an old command line
            if records:
                self._count(records)
                yield records

    def unaccepted(self, batch: list[bytes], sockets: Snapshot) -> list[ConnectionRecord]:
        """The records of the children that no accept the probes saw took
        (probes' take_unaccepted), looked up among the `sockets` of their
        network namespaces (a container's too), listed after they were taken:

        - those a process holds (a socket with an inode) were taken by an
          accept the probes missed: an `accept` record naming that
          process, without a thread;
        - the others are `unaccepted`, attributed to the owners of their
          listener: `pid` the first, `processes` every one (nginx's master
          and workers share it)."""
        records = []
        held = {(s.netns, s.laddr, s.lport, s.raddr, s.rport): s.pids for s in sockets.sockets
                if s.inode and s.state != "LISTEN"}
        for data in batch:
            ev = decode(data, self.wall_offset_ns)
            if type(ev) is not Connection or ev.kind != UNACCEPTED:
                continue
            holders = held.get((ev.netns, ev.laddr, ev.lport, ev.raddr, ev.rport))
            if holders:
                rec = self._record(self._as_process(
                    dataclasses.replace(ev, kind=RecordType.ACCEPT, tid=0), holders[0]))
                if rec is not None:
                    records.append(rec)
                continue
            owners = self._listener_owners(ev, sockets)
            if owners:
                ev = self._as_process(ev, owners[0])
            rec = self._record(ev)
            if rec is not None:
                rec["processes"] = [owner(pid, self.processes.process(pid)) for pid in owners]
                records.append(rec)
        self._count(records)
        return records

    def summary(self, drops: Drops) -> SummaryRecord:
        """The counts, and the advice for each dual-stack listener that
        served IPv4 peers (asked now: whether its program is a Go one)."""
        seen = [dual_stack_record(d, advise(d.process, d.cmdline, d.port,
                                            d.pid is not None and self.processes.is_go(d.pid),
                                            protocol=d.protocol, container=d.container))
                for d in self.dual_stack.serving_ipv4()]
        return summary_record(dict(self.counts), self.mapped, drops, seen)

    def _count(self, records: list[ConnectionRecord]) -> None:
        counts = self.counts
        for r in records:
            counts[r["type"]] += 1
            if r["mapped"] and r["type"] != CLOSE:   # a close is the end of one counted already
                self.mapped += 1
        self.dual_stack.add(records)

    def _as_process(self, c: Connection, pid: int) -> Connection:
        """`c` attributed to process `pid` (for what the kernel saw in no
        process's context), its thread named as the process."""
        return dataclasses.replace(c, pid=pid, comm=self.processes.process(pid).comm or "")

    def _record(self, c: Connection) -> ConnectionRecord | None:
        """The record of `c`, or None when a userspace filter drops it."""
        proc = self.processes.process(c.pid) if c.pid else NO_PROCESS
        if self._matches is not None and not self._matches(c, proc.comm, proc.container):
            if self._containers and proc.container_v2 and c.cgroup_id:
                self._learn_unwanted(c.cgroup_id, proc.container)
            return None
        return connection_record(c, proc, self.processes.user(c.uid))

    def _learn_unwanted(self, cgroup_id: int, container) -> None:
        """`cgroup_id` is another container's when the process's cgroup v2
        path names that container (so that no host process shares it) and
        no --container value matches it."""
        if cgroup_id not in self._unwanted and \
                not any(container_matches(container, w) for w in self._containers):
            self._unwanted.add(cgroup_id)
            self._unwanted_new.append(cgroup_id)

    def take_unwanted_cgroups(self) -> list[int]:
        """The other containers' cgroups learnt since the last call."""
        new, self._unwanted_new = self._unwanted_new, []
        return new

    def _listener_owners(self, c: Connection, sockets: Snapshot) -> tuple[int, ...]:
        """The processes holding the listener `c` came through, found by
        the snapshot's rules (classify.came_through), in `c`'s network
        namespace (none when the snapshot did not look there)."""
        for lst in sockets.sockets:
            if lst.state == "LISTEN" and lst.netns == c.netns and lst.lport == c.lport and \
                    lst.owners and \
                    came_through(lst.sock_family, lst.laddr, c.sock_family, c.laddr):
                return lst.pids
        return ()
