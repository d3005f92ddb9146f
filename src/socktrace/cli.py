"""Command line: `socktrace [OPTIONS]` streams new TCP connections.

Errors become one-line ClickExceptions here, at the edge, and nowhere else.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass

import click

from . import __version__
from .bcc_import import BccMissing, import_bcc
from .filters import Filter
from .kernel.sources import SourcesMissing
from .kernel.tracefs import ensure_mounted, tracefs_root
from .output.jsonl import JsonSink
from .output.table import TableSink
from .probes import AUTO_ORDER, PERFBUF_PAGES, RINGBUF_PAGES, KernelFilter, Loader, Mode, ProbeError
from .tracer import Tracer

PROBE_CHOICES = ["auto"] + [m.value for m in Mode]


@dataclass(frozen=True)
class Settings:
    probe: str
    json: bool
    filter: Filter
    unaccepted_after: float
    buffer: str
    buffer_pages: int | None
    stop: threading.Event  # set by SIGINT/SIGTERM


def _port(ctx, param, value):
    if value is not None and not 1 <= value <= 65535:
        raise click.BadParameter(f"{value} is not a TCP port (1-65535)")
    return value


def _pages(ctx, param, value):
    if value is not None and (value < 1 or value & (value - 1)):
        raise click.BadParameter(f"{value} is not a power of 2")
    return value


def _pid(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter(f"{value} is not a process id")
    return value


@click.group(invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--probe", type=click.Choice(PROBE_CHOICES), default="auto", show_default=True,
              help="Kernel hooks: kfunc (fexit), kprobe, tracepoint; auto tries them in that order.")
@click.option("--json", "as_json", is_flag=True, help="Write JSON Lines to stdout instead of the table.")
@click.option("--mapped-only", is_flag=True,
              help="Only AF_INET6 sockets with an IPv4-mapped peer (filtered in the kernel).")
@click.option("-p", "--pid", type=int, callback=_pid, help="Only this process id.")
@click.option("-P", "--port", type=int, callback=_port, help="Only this local or remote port.")
@click.option("-c", "--comm", help="Only processes whose name contains this text.")
@click.option("-4", "ipv4", is_flag=True, help="Only IPv4 peers: AF_INET sockets and mapped peers of AF_INET6 sockets.")
@click.option("-6", "ipv6", is_flag=True, help="Only native IPv6 peers.")
@click.option("--unaccepted-after", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True,
              metavar="SECONDS", help="Report a connection nobody accepted after this long.")
@click.option("--buffer", type=click.Choice(["auto", "ring", "perf"]), default="auto", show_default=True,
              help="Event buffer: ring buffer (Linux 5.8+) or per-CPU perf buffer; auto picks by kernel version.")
@click.option("--buffer-pages", type=int, callback=_pages,
              help=f"Size of the event buffer in 4 KiB pages, a power of 2 "
                   f"[default: {RINGBUF_PAGES} for the ring buffer, {PERFBUF_PAGES} per CPU for the perf buffer].")
@click.version_option(__version__, "-V", "--version")
@click.pass_context
def main(ctx, probe, as_json, mapped_only, pid, port, comm, ipv4, ipv6, unaccepted_after, buffer, buffer_pages):
    """Stream every new TCP connection; mark IPv4 connections served by
    AF_INET6 (dual-stack) sockets as MAPPED and name their process."""
    if ipv4 and ipv6:
        raise click.UsageError("-4 and -6 exclude each other")
    stop = (ctx.obj or {}).get("stop") or threading.Event()
    ctx.obj = Settings(
        stop=stop, probe=probe, json=as_json, unaccepted_after=unaccepted_after, buffer=buffer,
        buffer_pages=buffer_pages,
        filter=Filter(mapped_only=mapped_only, pid=pid, port=port, comm=comm,
                      peer="4" if ipv4 else "6" if ipv6 else None))
    if ctx.invoked_subcommand is None:
        trace(ctx.obj)


def trace(settings: Settings) -> None:
    if os.geteuid() != 0:
        raise click.ClickException("socktrace needs root to load BPF programs: run it with sudo")
    # Ctrl-C and SIGTERM are a normal stop, whenever they come
    stop = settings.stop
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        bcc = import_bcc()
        ensure_mounted()
        loader = Loader(bcc, KernelFilter(settings.filter.mapped_only, settings.filter.pid),
                        tracefs=tracefs_root(), buffer=settings.buffer,
                        buffer_pages=settings.buffer_pages)
    except (BccMissing, ProbeError, SourcesMissing, OSError) as exc:
        raise click.ClickException(str(exc)) from None

    modes = AUTO_ORDER if settings.probe == "auto" else (Mode(settings.probe),)
    try:
        try:
            probes = loader.load_first(modes)
        except ProbeError as exc:
            raise click.ClickException(str(exc)) from None
        probes.bpf.free_bcc_memory()  # LLVM's compile-time memory (~2 MB measured)
        sink = JsonSink(sys.stdout) if settings.json else TableSink(sys.stdout, sys.stderr)
        try:
            Tracer(probes, sink, settings.filter,
                   unaccepted_after=settings.unaccepted_after).run(stop)
        except BrokenPipeError:  # `socktrace | head`: the reader is gone
            probes.detach()
            # nothing more can reach the reader; keep Python's exit flush quiet
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        finally:
            probes.close()
    finally:
        loader.close()
