"""Command line: `socktrace [OPTIONS]` streams new TCP connections.

Errors become one-line ClickExceptions here, at the edge, and nowhere else.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys

import click

from . import __version__
from .filters import Filter
from .kernel import netns
from .output import snapshot_text
from .output.jsonl import dumps
from .output.report_text import format_report
from .probes import PERFBUF_PAGES, RINGBUF_PAGES, Mode
from .report import BadLine, read_log, summarize, to_json
from .session import App, SessionError, TopOptions, TraceOptions, take_snapshot, trace
from .top import VIEWS

PROBE_CHOICES = ["auto"] + [m.value for m in Mode]


class Size(click.ParamType):
    """A size with an optional K/M/G suffix (powers of 1024): "64K" -> 65536."""
    name = "SIZE"
    _UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        unit = text[-1:] if text[-1:] in "KMG" else ""
        try:
            n = int(text[:len(text) - len(unit)]) * self._UNITS[unit]
        except ValueError:
            self.fail(f"{value!r} is not a size like 64K, 100M or 1G", param, ctx)
        if n < 4096:
            self.fail(f"{value!r} is too small: at least 4K", param, ctx)
        return n


class ListenAddress(click.ParamType):
    """[ADDR:]PORT for --metrics: an IP address (IPv6 in brackets), loopback
    when none is given.

    >>> ListenAddress().convert("9100", None, None), ListenAddress().convert("[::]:9100", None, None)
    (('127.0.0.1', 9100), ('::', 9100))
    """
    name = "[ADDR:]PORT"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        addr, sep, port = str(value).rpartition(":")
        if not sep:
            addr = "127.0.0.1"
        elif addr.startswith("[") and addr.endswith("]"):
            addr = addr[1:-1]
        elif ":" in addr:
            self.fail(f"{value!r}: write an IPv6 address in brackets: [{addr}]:{port}", param, ctx)
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            self.fail(f"{value!r}: {addr or 'the address'!r} is not an IP address "
                      "(write an IPv6 one in brackets: [::]:9100)", param, ctx)
        if not port.isdigit() or not 0 < int(port) < 65536:
            self.fail(f"{value!r}: the port must be a number from 1 to 65535", param, ctx)
        return addr, int(port)


def _pages(ctx, param, value):
    if value is not None and (value < 1 or value & (value - 1)):
        raise click.BadParameter(f"{value} is not a power of 2")
    return value


def _numbers(low: int, high: int, what: str):
    """A callback for an option given once or more, each time one number or
    several separated by commas, as bcc's tools take them: -P 80,443 -P 8080."""
    def convert(ctx, param, values):
        out = []
        for value in values:
            for part in value.split(","):
                try:
                    n = int(part)
                except ValueError:
                    raise click.BadParameter(f"{part!r} is not {what}") from None
                if not low <= n <= high:
                    raise click.BadParameter(f"{n} is not {what}")
                out.append(n)
        return tuple(out)
    return convert


def _container_names(ctx, param, values):
    for v in values:
        if not v.strip() or any(c.isspace() for c in v):
            raise click.BadParameter(f"{v!r} is not a container name or id", ctx, param)
    return tuple(values)


def filter_options(f):
    """The filters, shared by the tracer and `snapshot`."""
    for option in reversed([
        click.option("--mapped-only", is_flag=True,
                     help="Only AF_INET6 sockets with an IPv4-mapped peer (the tracer filters in the kernel)."),
        click.option("-p", "--pid", multiple=True, metavar="PID[,PID...]",
                     callback=_numbers(1, 2**22, "a process id"),
                     help="Only these processes (repeatable; commas too)."),
        click.option("-P", "--port", multiple=True, metavar="PORT[,PORT...]",
                     callback=_numbers(1, 65535, "a TCP port (1-65535)"),
                     help="Only these local or remote ports (repeatable; commas too: -P 80,443)."),
        click.option("-c", "--comm", help="Only processes whose name, or whose thread's name, contains this text."),
        click.option("-4", "ipv4", is_flag=True,
                     help="Only IPv4 peers: AF_INET sockets and mapped peers of AF_INET6 sockets."),
        click.option("-6", "ipv6", is_flag=True, help="Only native IPv6 peers."),
        click.option("-t", "--tcp", "tcp", is_flag=True, help="Only TCP (as netstat -t)."),
        click.option("-u", "--udp", "udp", is_flag=True, help="Only UDP (as netstat -u); neither -t "
                     "nor -u: both."),
        click.option("--container", multiple=True, metavar="NAME|ID", callback=_container_names,
                     help="Only processes of this container: its name, or its id (12 or more "
                          "hex digits; repeatable)."),
    ]):
        f = option(f)
    return f


def make_filter(mapped_only, pid, port, comm, ipv4, ipv6, tcp, udp, container) -> Filter:
    if ipv4 and ipv6:
        raise click.UsageError("-4 and -6 exclude each other")
    return Filter(mapped_only=mapped_only, pid=pid, port=port, comm=comm, container=container,
                  peer="4" if ipv4 else "6" if ipv6 else None,
                  # both given is netstat's -tu: both protocols
                  protocol="tcp" if tcp and not udp else "udp" if udp and not tcp else None)


def _tracing_options(top: bool = False):
    """The tracer's options; `top` takes them all but --json and -q."""
    def decorate(f):
        for option in reversed([
            click.option("--probe", type=click.Choice(PROBE_CHOICES), default="auto", show_default=True,
                         help="Kernel hooks: kfunc (fexit), kprobe, tracepoint; auto tries them in that order."),
            None if top else click.option(
                "--json", "as_json", is_flag=True, help="Write JSON Lines to stdout instead of the table."),
            filter_options,
            click.option("--unaccepted-after", type=click.FloatRange(0.1, 3600), default=1.0,
                         show_default=True, metavar="SECONDS",
                         help="Report a connection nobody accepted after this long."),
            click.option("--udp-idle", type=click.FloatRange(1, 86400), default=60.0, show_default=True,
                         metavar="SECONDS",
                         help="Report a UDP flow again after this long without a datagram."),
            click.option("--buffer", type=click.Choice(["auto", "ring", "perf"]), default="auto",
                         show_default=True,
                         help="Event buffer: ring buffer (Linux 5.8+) or per-CPU perf buffer; auto "
                              "picks by kernel version."),
            click.option("--buffer-pages", type=int, callback=_pages,
                         help=f"Size of the event buffer in 4 KiB pages, a power of 2 "
                              f"[default: {RINGBUF_PAGES} for the ring buffer, {PERFBUF_PAGES} per "
                              f"CPU for the perf buffer]."),
            click.option("-o", "--output", metavar="PATH",
                         help="Append JSON Lines to PATH (created 0600) while the terminal shows "
                              "the table."),
            click.option("--rotate-size", type=Size(),
                         help="Rotate the log when it would pass SIZE (64K, 100M, 1G)."),
            click.option("--rotate-keep", type=click.IntRange(1, 999), default=5, show_default=True,
                         help="Rotated logs to keep: PATH.1 (newest) .. PATH.N."),
            click.option("--rotate-gzip", is_flag=True, help="Compress rotated logs (PATH.1.gz)."),
            click.option("--fsync", type=click.Choice(["interval", "always"]), default="interval",
                         show_default=True,
                         help="fsync the log once a second, or after every batch of records."),
            click.option("--metrics", type=ListenAddress(),
                         help="Serve Prometheus metrics on http://[ADDR:]PORT/metrics (ADDR: "
                              "127.0.0.1 unless given; 0.0.0.0 or [::] to be scraped from "
                              "elsewhere)."),
            None if top else click.option(
                "-q", "--quiet", is_flag=True, help="Nothing on the terminal (with -o or --metrics)."),
            click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
                         help="Trace for this long, counted from when every probe is attached, "
                              "then stop as SIGTERM would."),
            click.option("--no-snapshot", is_flag=True,
                         help="Do not list the existing mapped connections before tracing."),
            click.option("--no-failed", is_flag=True,
                         help="Do not report connects that fail (refused, timeout, unreachable, ...)."),
            click.option("--lifetime", is_flag=True,
                         help="Also report each TCP connection's end: how long it lived, the bytes "
                              "each way, retransmits, who closed it (a `close` record)."),
        ]):
            if option is not None:
                f = option(f)
        return f
    return decorate


def trace_options(probe, mapped_only, pid, port, comm, ipv4, ipv6, tcp, udp, container,
                  unaccepted_after, udp_idle, buffer, buffer_pages, output, rotate_size,
                  rotate_keep, rotate_gzip, fsync, metrics, duration, no_snapshot, no_failed,
                  lifetime, as_json=False, quiet=False, top=None) -> TraceOptions:
    """The tracer's options from the command line's values, checked."""
    flt = make_filter(mapped_only, pid, port, comm, ipv4, ipv6, tcp, udp, container)
    if quiet and not (output or metrics):
        raise click.UsageError("-q/--quiet needs -o/--output or --metrics: otherwise nothing would "
                               "be written")
    if (rotate_size or rotate_gzip) and not output:
        raise click.UsageError("--rotate-size/--rotate-gzip need -o/--output")
    return TraceOptions(
        probe=probe, json=as_json, unaccepted_after=unaccepted_after, udp_idle=udp_idle, buffer=buffer,
        buffer_pages=buffer_pages, output=output, rotate_size=rotate_size,
        rotate_keep=rotate_keep, rotate_gzip=rotate_gzip, fsync=fsync, quiet=quiet,
        duration=duration, filter=flt, snapshot=not no_snapshot, failed=not no_failed,
        metrics=metrics, lifetime=lifetime, top=top)


def _run(app: App) -> None:
    try:
        trace(app)
    except SessionError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@_tracing_options()
@click.version_option(__version__, "-V", "--version")
@click.pass_context
def main(ctx, **options):
    """Stream every new TCP connection and UDP flow; mark IPv4 peers served
    by AF_INET6 (dual-stack) sockets as MAPPED and name their process."""
    if ctx.invoked_subcommand is not None:
        _tracing_options_only(ctx)
        return
    app = ctx.ensure_object(App)
    app.trace = trace_options(**options)
    _run(app)


def _tracing_options_only(ctx: click.Context) -> None:
    """The options before a subcommand are the tracer's: one given there
    would be silently ignored (`socktrace -p 5 snapshot` used to list every
    socket), so it is an error that says where it belongs."""
    sub = main.commands[ctx.invoked_subcommand]
    theirs = {o for p in sub.params for o in p.opts}
    given = [p.opts for p in ctx.command.params
             if ctx.get_parameter_source(p.name) not in (None, click.core.ParameterSource.DEFAULT)]
    if given:
        where = [f"{'/'.join(o)} after '{ctx.invoked_subcommand}'" if set(o) & theirs else
                 f"{'/'.join(o)} not at all ('{ctx.invoked_subcommand}' does not trace)" for o in given]
        raise click.UsageError("options before a subcommand are the tracer's: put " + ", ".join(where))


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.option("--top", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How many processes and peers to list.")
@click.option("--html", "html_file", metavar="FILE",
              help="Also write the report as one self-contained HTML page (opens offline), with "
                   "a timeline per dual-stack listener; needs matplotlib (socktrace[html]).")
def report(files, as_json, top, html_file):
    """Summarize log files written with -o (a rotated set, .gz included):
    which processes serve IPv4 through dual-stack sockets, and the fix.

    Lines that are not valid records are named on stderr (FILE:LINE) and
    skipped; the exit status is then 1."""
    bad: list[BadLine] = []
    if html_file is not None:   # matplotlib is optional: imported for --html alone
        from .output import report_html
        from .report import summarize_with_timelines
        try:
            report_html.need_matplotlib()
        except report_html.NoMatplotlib as exc:
            raise click.ClickException(str(exc)) from None
    try:
        if html_file is None:
            r = summarize(read_log(files, bad))
        else:
            r, timelines = summarize_with_timelines(read_log(files, bad))
    except OSError as exc:
        raise click.ClickException(f"{exc.filename}: {exc.strerror}") from None
    except EOFError as exc:  # a gzip file cut short
        raise click.ClickException(f"a compressed log is truncated: {exc}") from None
    if html_file is not None:
        page = report_html.format_html(r, bad, timelines, top, files)
        try:
            report_html.write(html_file, page)
        except OSError as exc:
            raise click.ClickException(f"cannot write {html_file}: {exc.strerror}") from None
    if as_json:
        click.echo(json.dumps(to_json(r, bad, top), indent=2))
    else:
        click.echo(format_report(r, bad, top), nl=False)
    for b in bad:
        click.echo(f"socktrace report: {b} (skipped)", err=True)
    if bad:
        sys.exit(1)


@main.command()
@filter_options
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one record per socket.")
@click.option("--explain", is_flag=True,
              help="For each dual-stack listener: why its IPv4 connections show as tcp6, and the fix.")
@click.option("--netns", "netns_spec", metavar="PATH|PID",
              help="Look into another network namespace: a path (/run/netns/NAME) or a pid.")
@click.option("--all-netns", is_flag=True,
              help="Every network namespace of the system (the default as root).")
@click.option("--own-netns", is_flag=True,
              help="Only socktrace's own network namespace (the default without root).")
def snapshot(mapped_only, pid, port, comm, ipv4, ipv6, tcp, udp, container, as_json, explain,
             netns_spec, all_netns, own_netns):
    """List the TCP and UDP sockets that exist now, classified as tcp
    (AF_INET), tcp6 or tcp6 MAPPED (IPv4 over an AF_INET6 socket), udp,
    udp6, udp6 MAPPED, with their processes.  Needs no BPF; without root it
    sees only the current user's processes.  As root it looks into every
    network namespace: each container's sockets, named by container."""
    flt = make_filter(mapped_only, pid, port, comm, ipv4, ipv6, tcp, udp, container)
    if sum(map(bool, (netns_spec, all_netns, own_netns))) > 1:
        raise click.UsageError("--netns, --all-netns and --own-netns exclude each other")
    root = os.geteuid() == 0
    if (netns_spec or all_netns) and not root:
        raise click.ClickException("entering another network namespace needs root: run it with sudo")
    every = not netns_spec and (all_netns or (root and not own_netns))
    namespaces = ([netns.ns_path(netns_spec)] if netns_spec
                  else netns.all_namespaces() if every else [None])
    try:
        snap, socks, records = take_snapshot(namespaces, flt, gone_ok=every)
    except SessionError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        sys.stdout.write("".join(dumps(r) + "\n" for r in records))
    elif explain:
        click.echo(snapshot_text.explain(snap, socks, records), nl=False)
    else:
        click.echo(snapshot_text.format_table(snap, records), nl=False)


@main.command()
@_tracing_options(top=True)
@click.option("-i", "--interval", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True,
              metavar="SECONDS", help="Refresh the screen this often.")
@click.option("-b", "--batch", is_flag=True,
              help="No full screen: print one plain block per interval on stdout (as top -b).")
@click.option("-n", "--iterations", type=click.IntRange(min=1), metavar="N",
              help="Stop after N refreshes.")
@click.option("--by", "view", type=click.Choice(VIEWS), default="listener", show_default=True,
              help="One row per listener, process, container (or service) or peer address "
                   "(keys l, p, c, a).")
@click.pass_context
def top(ctx, interval, batch, iterations, view, **options):
    """A live view of the connections per second, one row per listener,
    process, container or peer: IPv4, IPv4 MAPPED and IPv6 apart, failed,
    queued, UDP flows, bytes.  Keys: l p c a the view, < > the sort column,
    r reverse, q quit (and print the summary, as Ctrl-C)."""
    if not batch and not (sys.stdout.isatty() and sys.stdin.isatty()):
        raise click.UsageError("socktrace top needs a terminal: add --batch (-b) for plain text "
                               "blocks")
    app = ctx.ensure_object(App)
    app.trace = trace_options(**options, top=TopOptions(interval, batch, view, iterations))
    _run(app)
