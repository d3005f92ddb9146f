"""What one run of a command does, without the command line: the tracer's
session (outputs, probes, the existing connections, the loop, cleanup) and
the snapshot's.  Errors are `SessionError`s with a one-line reason; cli.py
turns them into its own.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional, Tuple

from . import snapshot as snapshot_mod
from .advice import AppsFileError, advise, known_apps
from .bcc_import import BccMissing, import_bcc
from .filters import Filter
from .kernel import compiler_memory
from .kernel.sources import SourcesMissing
from .kernel.tracefs import ensure_mounted, tracefs_root
from .output.jsonl import JsonSink
from .output.logfile import LogFileError, LogWriter

if TYPE_CHECKING:
    from .output.metrics import DualStackListener, MetricsServer, MetricsSink
from .output.sink import Sink
from .output.table import TableSink
from .output.tee import Tee
from .probes import AUTO_ORDER, KernelFilter, Loader, Mode, ProbeError
from .procinfo import ProcessCache
from .records import SocketRecord, socket_record
from .signals import Flag, set_on
from .tracer import Tracer


class SessionError(Exception):
    """A run cannot go on: the reason, on one line."""


@dataclass(frozen=True)
class TraceOptions:
    """The tracer's options, as the command line gave them."""
    probe: str = "auto"
    json: bool = False
    filter: Filter = Filter()
    unaccepted_after: float = 1.0
    buffer: str = "auto"
    buffer_pages: Optional[int] = None
    output: Optional[str] = None
    rotate_size: Optional[int] = None
    rotate_keep: int = 5
    rotate_gzip: bool = False
    fsync: str = "interval"
    quiet: bool = False
    duration: Optional[float] = None
    snapshot: bool = True
    failed: bool = True       # report failed connects
    metrics: Optional[Tuple[str, int]] = None   # --metrics: (address, port)


@dataclass
class App:
    """The command line's context object, one per process: the flags the
    signal handlers set (__main__ installs SIGINT/SIGTERM's at once; the
    tracer adds SIGHUP's) and, for the tracer, its options."""
    stop: Flag = field(default_factory=Flag)
    reopen: Flag = field(default_factory=Flag)
    trace: Optional[TraceOptions] = None


def trace(app: App) -> None:
    """Trace with app.trace's options until app.stop is set (Ctrl-C,
    SIGTERM, --duration)."""
    opts = app.trace or TraceOptions()
    if os.geteuid() != 0:
        raise SessionError("socktrace needs root to load BPF programs: run it with sudo")
    set_on(app.reopen, signal.SIGHUP)
    try:
        known_apps()   # read now: the summary at exit needs it, and a broken file fails first
    except AppsFileError as exc:
        raise SessionError(str(exc)) from None
    try:
        # the log file first: a path that cannot be written fails before
        # anything is loaded into the kernel
        log = LogWriter(opts.output, opts.rotate_size, opts.rotate_keep,
                        opts.rotate_gzip, opts.fsync) if opts.output else None
    except LogFileError as exc:
        raise SessionError(str(exc)) from None
    try:
        # then the metrics' port: in use or not bindable fails before any probe
        metrics = _metrics(opts.metrics) if opts.metrics else None
    except SessionError:
        if log:
            log.close()
        raise
    try:
        bcc = import_bcc()
        ensure_mounted()
        pids = opts.filter.pid
        loader = Loader(bcc, KernelFilter(opts.filter.mapped_only,
                                          next(iter(pids)) if len(pids) == 1 else None,
                                          failed=opts.failed),
                        tracefs=tracefs_root(), buffer=opts.buffer, buffer_pages=opts.buffer_pages)
    except (BccMissing, ProbeError, SourcesMissing, OSError) as exc:
        if log:
            log.close()
        if metrics:
            metrics[1].close()
        raise SessionError(str(exc)) from None
    if opts.duration:
        timer = threading.Timer(opts.duration, app.stop.set)
        timer.daemon = True
        timer.start()
    modes = AUTO_ORDER if opts.probe == "auto" else (Mode(opts.probe),)
    try:
        try:
            probes = loader.load_first(modes)
        except ProbeError as exc:
            raise SessionError(str(exc)) from None
        compiler_memory.release()  # LLVM and clang: 83 of 140 MB RSS (kernel/compiler_memory.py)
        sink = Tee(*_sinks(opts, log), *([metrics[0]] if metrics else []))
        try:
            if opts.snapshot:
                sink.existing(existing_records(opts.filter))
            Tracer(probes, sink, opts.filter, unaccepted_after=opts.unaccepted_after).run(
                app.stop, app.reopen)
        except BrokenPipeError:  # `socktrace | head`: the reader is gone
            probes.detach()
            # nothing more can reach the reader; keep Python's exit flush quiet
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        finally:
            probes.close()
    finally:
        loader.close()
        if log:
            log.close()
        if metrics:
            metrics[1].close()


def _metrics(where: Tuple[str, int]) -> Tuple["MetricsSink", "MetricsServer"]:
    """--metrics: the counters and their server, bound and serving
    (prometheus_client is imported only then: 40 ms of every start)."""
    from .output.metrics import Collector, MetricsServer, MetricsSink
    sink = MetricsSink()
    try:
        server = MetricsServer(*where, Collector(sink, dual_stack_listeners))
    except OSError as exc:
        addr, port = where
        shown = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
        raise SessionError(f"--metrics {shown}: {exc.strerror or exc}") from None
    server.start()
    return sink, server


def dual_stack_listeners() -> List["DualStackListener"]:
    """The dual-stack listeners of this network namespace now, with the
    IPv4 connections each carries (for the metrics' gauges)."""
    from .output.metrics import DualStackListener
    snap = snapshot_mod.take([None], ProcessCache())
    return [DualStackListener(s.lport, (s.owners[0].comm if s.owners else None) or "?",
                              sum(c.mapped for c in snap.carried_by(s)))
            for s in snap.sockets if s.dual_stack]


def _sinks(opts: TraceOptions, log: LogWriter | None) -> list[Sink]:
    sinks: list[Sink] = [] if opts.quiet else [
        JsonSink(sys.stdout) if opts.json else TableSink(sys.stdout, sys.stderr)]
    if log:
        sinks.append(JsonSink(log))
    return sinks


def existing_records(flt: Filter) -> list[SocketRecord]:
    """Before tracing: the mapped connections that already exist."""
    cache = ProcessCache()
    snap = snapshot_mod.take([None], cache)
    return [socket_record(s, cache.user(s.uid), "existing") for s in snap.sockets
            if s.mapped and s.state != "LISTEN" and flt.matches_socket(s)]


def take_snapshot(namespaces: list[str | None], flt: Filter
                  ) -> tuple[snapshot_mod.Snapshot, list[snapshot_mod.Sock], list[SocketRecord]]:
    """`socktrace snapshot`: the sockets of `namespaces` (None: our own),
    those `flt` selects, and their records."""
    cache = ProcessCache()
    try:
        snap = snapshot_mod.take(namespaces, cache)
    except OSError as exc:
        raise SessionError(str(exc.strerror if exc.strerror else exc)) from None
    socks = [s for s in snap.sockets if flt.matches_socket(s)]
    records = [socket_record(s, cache.user(s.uid)) for s in socks]
    for s, rec in zip(socks, records):
        if s.dual_stack:
            first = s.owners[0] if s.owners else None
            rec["advice"] = advise(first.comm if first else None, first.cmdline if first else None,
                                   s.lport, first is not None and cache.is_go(first.pid))
    return snap, socks, records
