"""What one run of a command does, without the command line: the tracer's
session (outputs, probes, the existing connections, the loop, cleanup) and
the snapshot's.  Errors are `SessionError`s with a one-line reason; cli.py
turns them into its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterator, List, Optional, Protocol, Tuple

from . import heap
from . import snapshot as snapshot_mod
from .advice import AppsFileError, advise, known_apps
from .bcc_import import BccMissing, import_bcc
from .events import RawEvent, existing_event
from .filters import Filter
from .traffic import bytes_now
from .kernel import compiler_memory
from .kernel import netns, sockdiag
from .kernel.netns import ns_inode
from .kernel.sources import SourcesMissing
from .kernel.tracefs import ensure_mounted, tracefs_root
from .output.jsonl import JsonSink
from .output.logfile import LogFileError, LogWriter
from .output.sink import Sink
from .output.table import TableSink
from .output.tee import Tee
from .probes import AUTO_ORDER, KernelFilter, Loader, Mode, ProbeError, Probes
from .procinfo import ProcessCache
from .records import SocketRecord, socket_record
from .signals import Flag, set_on
from .tracer import Tracer
from .vocabulary import TCP_PROTOCOL, RecordType


class SessionError(Exception):
    """A run cannot go on: the reason, on one line."""


@dataclass(frozen=True)
class TopOptions:
    """`socktrace top`'s own options."""
    interval: float = 1.0
    batch: bool = False
    view: str = "listener"
    iterations: Optional[int] = None


@dataclass(frozen=True)
class TraceOptions:
    """The tracer's options, as the command line gave them."""
    probe: str = "auto"
    json: bool = False
    filter: Filter = Filter()
    unaccepted_after: float = 1.0
    udp_idle: float = 60.0    # seconds without a datagram before a UDP flow is new again
    lifetime: bool = False    # close records: each TCP connection's end (--lifetime)
    buffer: str = "auto"
    buffer_pages: Optional[int] = None
    output: Optional[str] = None
    rotate_size: Optional[int] = None
    rotate_keep: int = 5
    rotate_gzip: bool = False
    fsync: str = "interval"
    quiet: bool = False
    duration: Optional[float] = None   # seconds of tracing, from the `ready` record
    snapshot: bool = True
    failed: bool = True       # report failed connects
    metrics: Optional[Tuple[str, int]] = None   # --metrics: (address, port)
    top: Optional[TopOptions] = None   # `socktrace top` instead of the table


@dataclass
class App:
    """The command line's context object, one per process: the flags the
    signal handlers set (__main__ installs SIGINT/SIGTERM's at once; the
    tracer adds SIGHUP's) and, for the tracer, its options."""
    stop: Flag = field(default_factory=Flag)
    reopen: Flag = field(default_factory=Flag)
    trace: Optional[TraceOptions] = None


class Kernel(Protocol):
    """Where the probes come from: bcc and this kernel (BccKernel), or a
    test's stand-in."""

    def check(self) -> None:
        """Raise SessionError if tracing cannot start here at all."""

    def probes(self, opts: TraceOptions) -> ContextManager[Probes]:
        """Loaded and attached probes, closed (detached, unloaded) on exit;
        SessionError with the reason when none load."""


class BccKernel:
    """The BPF program, compiled by bcc and loaded into the running kernel."""

    def check(self) -> None:
        if os.geteuid() != 0:
            raise SessionError("socktrace needs root to load BPF programs: run it with sudo")

    @contextlib.contextmanager
    def probes(self, opts: TraceOptions) -> Iterator[Probes]:
        pids = opts.filter.pid
        try:
            bcc = import_bcc()
            ensure_mounted()
            loader = Loader(bcc, KernelFilter(opts.filter.mapped_only,
                                              next(iter(pids)) if len(pids) == 1 else None,
                                              failed=opts.failed,
                                              udp=opts.filter.protocol != "tcp",
                                              udp_idle=opts.udp_idle,
                                              lifetime=opts.lifetime,
                                              traffic=opts.metrics is not None,
                                              containers=bool(opts.filter.container)),
                            tracefs=tracefs_root(), buffer=opts.buffer,
                            buffer_pages=opts.buffer_pages)
        except (BccMissing, ProbeError, SourcesMissing, OSError) as exc:
            raise SessionError(str(exc)) from None
        with contextlib.ExitStack() as stack:
            stack.callback(loader.close)
            modes = AUTO_ORDER if opts.probe == "auto" else (Mode(opts.probe),)
            try:
                probes = loader.load_first(modes)
            except ProbeError as exc:
                raise SessionError(str(exc)) from None
            stack.callback(probes.close)
            compiler_memory.release()  # LLVM and clang: 83 of 140 MB RSS (kernel/compiler_memory.py)
            heap.keep_for_batches()    # no page faults per batch of records (heap.py)
            yield probes


def trace(app: App, kernel: Kernel = BccKernel()) -> None:
    """Trace with app.trace's options until app.stop is set (Ctrl-C,
    SIGTERM) or --duration has passed since tracing began.

    The session owns the outputs' lifetime: they are opened before the
    probes and closed after them, each exactly once, whether the run ends
    normally, by a signal or by an error."""
    opts = app.trace or TraceOptions()
    kernel.check()
    set_on(app.reopen, signal.SIGHUP)
    try:
        known_apps()   # read now: the summary at exit needs it, and a broken file fails first
    except AppsFileError as exc:
        raise SessionError(str(exc)) from None
    traffic = Later()
    with contextlib.ExitStack() as stack:
        # the outputs first: a log path that cannot be written or a metrics
        # port in use fails before anything is loaded into the kernel
        sink = open_outputs(opts, traffic, app.stop)
        stack.callback(sink.close)
        probes = stack.enter_context(kernel.probes(opts))
        if opts.metrics:
            traffic.source = lambda: traffic_now(probes)
            # unset before the probes close: a scrape at exit must not read them
            stack.callback(setattr, traffic, "source", None)
        try:
            cache = ProcessCache()
            if opts.snapshot or opts.lifetime:   # after attaching: nothing falls in between
                # every network namespace: a container's connections too
                snap = snapshot_mod.take(netns.all_namespaces(), cache, gone_ok=True)
                if opts.lifetime:
                    probes.remember_existing(existing_lives(snap))
                if opts.snapshot:
                    sink.existing(existing_records(opts.filter, snap, cache))
            # the tracer's processes start unknown; their containers are
            # known: a runtime is asked once per container in the whole run
            Tracer(probes, sink, opts.filter, ProcessCache(containers=cache.containers),
                   unaccepted_after=opts.unaccepted_after,
                   udp_idle=opts.udp_idle).run(
                app.stop, app.reopen, duration=opts.duration)
        except BrokenPipeError:  # `socktrace | head`: the reader is gone
            probes.detach()
            # nothing more can reach the reader; keep the outputs' last
            # flush and Python's at exit quiet
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class Later:
    """A source given to the outputs before what feeds it exists (the
    metrics' bytes, which the probes hold): empty until `source` is set."""

    def __init__(self) -> None:
        self.source: Optional[Callable[[], dict]] = None

    def __call__(self) -> dict:
        return self.source() if self.source else {}


def traffic_now(probes) -> dict:
    """The bytes of the reported connections (traffic.bytes_now): the
    kernel's, and sock_diag's counters of the open ones, in this network
    namespace."""
    kernel = probes.traffic()
    live = (sockdiag.dump(socket.AF_INET6, info=True) + sockdiag.dump(socket.AF_INET, info=True)
            if kernel.open else [])   # nothing open to look up: no dump
    return bytes_now(kernel, live, ns_inode("/proc/self/ns/net"))


def open_outputs(opts: TraceOptions, traffic: Callable[[], dict] = dict,
                 stop: Optional[Flag] = None) -> Tee:
    """The outputs `opts` asks for, as one sink; on an error, those opened
    already are closed again.  `traffic` gives the metrics' bytes; `top`
    sets `stop` when its q is pressed."""
    with contextlib.ExitStack() as opened:
        sinks: List[Sink] = []

        def add(sink: Sink) -> None:
            opened.callback(sink.close)
            sinks.append(sink)

        if opts.top:
            add(_top(opts.top, stop or Flag()))
        elif not opts.quiet:
            add(JsonSink(sys.stdout) if opts.json else TableSink(sys.stdout, sys.stderr))
        if opts.output:
            try:
                log = LogWriter(opts.output, opts.rotate_size, opts.rotate_keep,
                                opts.rotate_gzip, opts.fsync)
            except LogFileError as exc:
                raise SessionError(str(exc)) from None
            add(JsonSink(log, owns=True))
        if opts.metrics:
            add(_metrics(opts.metrics, traffic))
        opened.pop_all()
    return Tee(*sinks)


def _top(opts: TopOptions, stop: Flag) -> Sink:
    """`socktrace top`: the full-screen view (curses), or --batch's blocks."""
    from .output.top_screen import BatchScreen, CursesScreen, TerminalError, TopSink
    from .top import TopModel
    try:
        screen = BatchScreen(sys.stdout) if opts.batch else CursesScreen()
    except TerminalError as exc:
        raise SessionError(f"socktrace top: {exc}") from None
    return TopSink(screen, stop, TopModel(opts.view), opts.interval,
                   lambda: snapshot_mod.accept_queues(netns.all_namespaces()), opts.iterations)


def _metrics(where: Tuple[str, int], traffic: Callable[[], dict]) -> Sink:
    """--metrics: the counters, served (prometheus_client is imported only
    then: 40 ms of every start)."""
    from .output.metrics import MetricsSink
    try:
        return MetricsSink.serving(*where, lambda: snapshot_mod.take([None], ProcessCache()),
                                   traffic)
    except OSError as exc:
        addr, port = where
        shown = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
        raise SessionError(f"--metrics {shown}: {exc.strerror or exc}") from None


# a connection's states from its handshake to its CLOSE (not yet in TIME_WAIT)
OPEN_STATES = frozenset(("ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE_WAIT", "LAST_ACK",
                         "CLOSING"))


def existing_lives(snap: snapshot_mod.Snapshot) -> list[tuple[int, RawEvent, str]]:
    """The TCP connections open now, for their close records (--lifetime):
    (socket cookie, the event their accept or connect would have had, the
    process name).  An accepted one is the one that came through a
    listener; its process is its first owner."""
    out = []
    for s in snap.sockets:
        if s.protocol != TCP_PROTOCOL or s.state not in OPEN_STATES or not s.cookie \
                or not s.owners:
            continue
        owner = s.owners[0]
        accepted = s.listener is not None
        event = existing_event(RecordType.ACCEPT if accepted else RecordType.CONNECT,
                               s.sock_family, s.laddr,
                               s.lport, s.raddr, s.rport, owner.pid, s.uid, owner.comm or "",
                               s.netns, s.listener.v6only if accepted and s.sock_family == "AF_INET6"
                               else None)
        out.append((s.cookie, event, owner.comm or ""))
    return out


def existing_records(flt: Filter, snap: snapshot_mod.Snapshot, cache: ProcessCache
                     ) -> list[SocketRecord]:
    """Before tracing: the mapped connections that already exist."""
    return [socket_record(s, cache.user(s.uid), RecordType.EXISTING.value) for s in snap.sockets
            if s.mapped and s.state != "LISTEN" and flt.matches_socket(s)]


def take_snapshot(namespaces: list[str | None], flt: Filter, gone_ok: bool = False
                  ) -> tuple[snapshot_mod.Snapshot, list[snapshot_mod.Sock], list[SocketRecord]]:
    """`socktrace snapshot`: the sockets of `namespaces` (None: our own;
    `gone_ok`: a listing of them all, see snapshot.take), those `flt`
    selects, and their records."""
    cache = ProcessCache()
    try:
        snap = snapshot_mod.take(namespaces, cache, gone_ok=gone_ok)
    except OSError as exc:
        raise SessionError(str(exc.strerror if exc.strerror else exc)) from None
    socks = [s for s in snap.sockets if flt.matches_socket(s)]
    records = [socket_record(s, cache.user(s.uid)) for s in socks]
    for s, rec in zip(socks, records):
        if s.dual_stack:
            first = s.first_owner
            rec["advice"] = advise(first.comm if first else None, first.cmdline if first else None,
                                   s.lport, first is not None and cache.is_go(first.pid),
                                   protocol=s.protocol, container=first.container if first else None)
    return snap, socks, records
