"""`socktrace report --html FILE`: the report as one self-contained page.

The text report's content (the text report itself, in a <pre>) and, for
each dual-stack listener, its processes, peers, traffic, the fix, and a
timeline of its connections per minute by peer family (and of their bytes,
from a log written with --lifetime), drawn by matplotlib as SVG inline in
the page: no script, no style sheet, font or image loaded from anywhere
(the page's Content-Security-Policy forbids it), so that it opens offline
and can be mailed as one file.

matplotlib is an optional dependency (socktrace[html]), imported only here,
only when a page is made: this module imports without it.
"""

from __future__ import annotations

import html
import importlib
import io
import os
import re
import tempfile
from datetime import timedelta
from typing import Any, Sequence

from .. import __version__
from ..report import FAMILIES, BadLine, Report, Timeline, Timelines, Traffic, advice
from ..vocabulary import UDP_PROTOCOL
from .advice_text import advice_lines
from .escape import escape
from .names import container_words, pid_list, size
from .report_text import FAMILY_SHORT, PROTOCOL_NAMES, UDP_PROTOCOL_NAMES, format_report

MISSING = "--html needs matplotlib: pip install 'socktrace[html]' (or apt install python3-matplotlib)"
# Okabe-Ito's colour-blind safe colours: MAPPED, the news, in vermillion
COLORS = {"ipv4": "#0072B2", "mapped": "#D55E00", "ipv6": "#009E73"}
# nothing is loaded, nothing runs: an inline style sheet and the SVGs' own
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; padding: 0 1em;
       color: #1a1a1a; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; margin-top: 1.8em; }
section.listener { border: 1px solid #ddd; border-left: 4px solid #D55E00; border-radius: 4px;
                   padding: 0.2em 1em 1em; margin: 1.2em 0; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: 600; } dd { margin: 0; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 0.15em 0.7em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
pre { background: #f6f6f6; padding: 0.7em; overflow-x: auto; font-size: 0.9em; }
pre.advice { border-left: 4px solid #009E73; white-space: pre-wrap; }
figure { margin: 0.8em 0; }
figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #555; }
.warning { color: #a40000; font-weight: 600; }
code, .mono { font-family: ui-monospace, monospace; }
footer { margin-top: 2em; font-size: 0.85em; color: #666; }
"""


class NoMatplotlib(RuntimeError):
    """matplotlib is not installed: MISSING says how to get it."""


def need_matplotlib() -> None:
    """Raise NoMatplotlib unless matplotlib can be imported."""
    try:
        importlib.import_module("matplotlib.figure")
    except ImportError:
        raise NoMatplotlib(MISSING) from None


def h(text: Any) -> str:
    """Process-controlled text (a name, a command line) for HTML: its
    unprintables as the text outputs show them, then HTML-escaped.

    >>> h('<script>alert("x")</script>\\x1b[2J')
    '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;\\\\x1b[2J'
    """
    return html.escape(escape(str(text)))


def _t(iso: str) -> str:
    return iso.replace("T", " ")[:19] if iso else "-"


def _seconds(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f}s"


# ---- the charts ----

def unique_ids(svg: str, prefix: str) -> str:
    """Prefix every id of an SVG and its references (url(#id), href="#id"):
    several inline SVGs share one document, whose ids must differ.

    >>> unique_ids('<clipPath id="p1"/><g clip-path="url(#p1)"/><use xlink:href="#p1"/>', "c2")
    '<clipPath id="c2-p1"/><g clip-path="url(#c2-p1)"/><use xlink:href="#c2-p1"/>'
    """
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)
    return re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', svg)


def inline_svg(svg: str, chart_id: str, label: str) -> str:
    """matplotlib's SVG document as an element of the page: no XML prolog
    or DOCTYPE, ids of its own, a role, a label and a <title>.

    >>> inline_svg('<?xml version="1.0"?>\\n<!DOCTYPE svg>\\n<svg width="1pt">\\n<g id="a"/></svg>\\n',
    ...            "c1", "A & B")
    '<svg role="img" aria-label="A &amp; B" width="1pt"><title>A &amp; B</title>\\n<g id="c1-a"/></svg>'
    """
    svg = svg[svg.index("<svg"):].strip()
    label = html.escape(label)
    svg = re.sub(r"^<svg\b([^>]*)>",
                 lambda m: f'<svg role="img" aria-label="{label}"{m.group(1)}><title>{label}</title>',
                 svg, count=1)
    return unique_ids(svg, chart_id)


def _stack(ax, xs, series: dict[str, list[float]], sign: int = 1) -> list[str]:
    """Stacked step areas (a bucket's value from its start to the next's),
    one per peer family with any; the families drawn."""
    lower = [0.0] * len(xs)
    drawn = []
    for fam in FAMILIES:
        values = series[fam]
        if not any(values):
            continue
        upper = [lo + sign * v for lo, v in zip(lower, values)]
        ax.fill_between(xs, lower, upper, step="post", color=COLORS[fam], linewidth=0,
                        label=FAMILY_SHORT[fam] if sign > 0 or not drawn else None)
        lower = upper
        drawn.append(fam)
    return drawn


def per_words(step: int) -> str:
    """A bucket's size in words: what a chart counts per.

    >>> per_words(1), per_words(15), per_words(60), per_words(360), per_words(1440)
    ('minute', '15 minutes', 'hour', '6 hours', 'day')
    """
    if step < 60:
        return "minute" if step == 1 else f"{step} minutes"
    if step < 1440:
        return "hour" if step == 60 else f"{step // 60} hours"
    return "day"


def timeline_svg(timeline: Timeline, chart_id: str, subject: str, what: str,
                 with_bytes: bool) -> str:
    """A timeline as an inline SVG, labelled "`subject`: `what` per minute
    by peer family (UTC)": `what` (connections, UDP flows) per bucket by
    peer family, stacked; with `with_bytes` the payload of those that
    ended in each bucket below it, sent up, received down."""
    from matplotlib import rc_context
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    step = timeline.step()
    buckets = timeline.buckets(step)
    xs = [start for start, _ in buckets]
    if xs:   # the last bucket's end, so that it is drawn as wide as the others
        xs.append(xs[-1] + timedelta(minutes=step))
    per = per_words(step)
    label = f"{subject + ': ' if subject else ''}{what} per {per} by peer family (UTC)"

    def series(counter_of) -> dict[str, list[float]]:
        out = {fam: [counter_of(m)[fam] for _, m in buckets] for fam in FAMILIES}
        return {fam: v + v[-1:] for fam, v in out.items()}

    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "socktrace", "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False,
                     "timezone": "UTC"}):
        fig = Figure(figsize=(10.5, 4.6 if with_bytes else 2.6), constrained_layout=True)
        axes = fig.subplots(2 if with_bytes else 1, 1, sharex=True, squeeze=False)[:, 0]
        ax = axes[0]
        drawn = _stack(ax, xs, series(lambda m: m.connections))
        ax.set_ylabel(f"{what} per {per}")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(label, loc="left", fontsize=10, parse_math=False)   # a name's $ is a $
        if drawn:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        if with_bytes:
            bx = axes[1]
            sent = _stack(bx, xs, series(lambda m: m.sent))
            received = _stack(bx, xs, series(lambda m: m.received), sign=-1)
            bx.axhline(0, color="#444", linewidth=0.6)
            bx.set_ylabel("bytes of those ended\n↑ sent   ↓ received")
            bx.yaxis.set_major_formatter(FuncFormatter(lambda v, _: size(int(abs(v)))))
            if not (sent or received):
                bx.text(0.5, 0.5, "no bytes: none of these ended in the log", ha="center",
                        va="center", transform=bx.transAxes, color="#666")
        locator = AutoDateLocator()
        axes[-1].xaxis.set_major_locator(locator)
        axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
        axes[-1].set_xlabel("time (UTC)")
        if xs:
            axes[-1].set_xlim(xs[0], xs[-1])
        out = io.StringIO()
        fig.savefig(out, format="svg",
                    metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    return inline_svg(out.getvalue(), chart_id, label)


# ---- the page ----

def _traffic_table(by_family: dict[str, Traffic]) -> str:
    rows = []
    for fam, t in sorted(by_family.items(), key=lambda kv: -(kv[1].bytes_sent + kv[1].bytes_received)):
        j = t.to_json()
        unseen = t.unmeasured == t.connections
        rows.append(f"<tr><td>{FAMILY_SHORT[fam]}</td><td>{t.connections}</td>"
                    f"<td>{'?' if unseen else size(t.bytes_sent)}</td>"
                    f"<td>{'?' if unseen else size(t.bytes_received)}</td>"
                    f"<td>{_seconds(j['lifetime_median'])}</td><td>{_seconds(j['lifetime_p95'])}</td></tr>")
    return ("<table class=\"traffic\"><tr><th>peer family</th><th>ended</th><th>sent</th>"
            "<th>received</th><th>lifetime median</th><th>p95</th></tr>" + "".join(rows) + "</table>")


def _peers_table(timeline: Timeline, top: int) -> str:
    rows = "".join(f"<tr><td class=\"mono\">{h(addr)}</td><td class=\"text\">{FAMILY_SHORT[fam]}</td>"
                   f"<td>{n}</td></tr>" for (addr, fam), n in timeline.peers.most_common(top))
    more = len(timeline.peers) - top
    return ("<table class=\"peers\"><tr><th>peer address</th><th>family</th><th>connections</th></tr>"
            + rows + "</table>" + (f"<p>… {more} more peers (--top)</p>" if more > 0 else ""))


def _listener_section(n: int, lst, r: Report, timelines: Timelines, top: int) -> str:
    udp = lst.protocol == UDP_PROTOCOL
    port = f"{'udp ' if udp else ''}port {lst.port}"
    who = f"pid{'s' if len(lst.pids) > 1 else ''} {pid_list(lst.pids)} {h(lst.process or '?')}"
    timeline = timelines.of(lst)
    what = "UDP flows" if udp else "connections"
    chart = timeline_svg(timeline, f"chart-{n}", escape(f"{lst.process or '?'}, {port}"), what,
                         with_bytes=bool(r.closes))
    per = per_words(timeline.step())
    v6only = "/".join(str(int(v)) for v in sorted(lst.v6only)) or "?"
    rows = [("processes", f"{who} ({len(lst.pids)} process{'es' if len(lst.pids) > 1 else ''})"),
            ("command", f"<code>{h(lst.cmdline)}</code>" if lst.cmdline else "?")]
    if lst.container:
        rows.append(("container", h(container_words(lst.container))))
    elif lst.unit:
        rows.append(("systemd unit", h(lst.unit)))
    rows += [("peers", f"{lst.mapped} IPv4 through mapped addresses (MAPPED), {lst.ipv6} IPv6"),
             ("IPV6_V6ONLY", v6only),
             ("seen", f"{_t(lst.first)} .. {_t(lst.last)} UTC")]
    traffic = r.listener_traffic.get(lst.key)
    fix = "\n".join(advice_lines(advice(lst), ""))
    data = f"{lst.protocol}6 :{lst.port}"   # netstat's name of the socket: tcp6, udp6
    return "\n".join([
        f'<section class="listener" id="listener-{n}" data-listener="{data}" '
        f'data-protocol="{lst.protocol}" data-port="{lst.port}" data-process="{h(lst.process or "?")}">',
        f"<h3>{who}, {port}</h3>",
        "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>",
        f'<figure class="timeline" id="timeline-{n}" data-listener="{data}">{chart}',
        f"<figcaption>{what.capitalize()} per {per} through {h(lst.process or '?')}'s sockets "
        f"on {port}, by peer family (plain IPv4 through an AF_INET socket of the same program "
        f"too: what the fix turns MAPPED into)"
        + (f"; below, the payload of those that ended in each {per}, sent up, received down"
           if r.closes else "; no bytes: the log has no close records (socktrace --lifetime)")
        + ". Times in UTC.</figcaption></figure>",
        "<h4>Traffic of its ended connections</h4>",
        _traffic_table(traffic) if traffic else
        f"<p>{'None ended in the log.' if r.closes else 'Unknown: the log has no close records.'}</p>",
        "<h4>Peers</h4>",
        _peers_table(timeline, top),
        "<h4>The fix</h4>",
        f'<pre class="advice">{html.escape(fix)}</pre>',
        "</section>"])


def format_html(r: Report, bad: Sequence[BadLine], timelines: Timelines, top: int = 10,
                sources: Sequence[str] = ()) -> str:
    """The page: a summary, every TCP connection's timeline, a section per
    dual-stack listener, and the text report."""
    flows = sum(r.udp_by_protocol.values())
    span = f"{_t(r.first)} .. {_t(r.last)} UTC"
    title = f"socktrace report: {r.records} connections" + \
        (f", {flows} UDP flows" if flows else "") + f", {span}"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style></head><body>",
           "<header><h1>socktrace report</h1>",
           f'<p class="summary">{r.records} connections' + (f", {flows} UDP flows" if flows else "")
           + f", {span}</p>", "<ul>"]
    out += [f"<li>{n} {PROTOCOL_NAMES[p]}</li>" for p, n in r.by_protocol.most_common()]
    out += [f"<li>UDP: {n} {UDP_PROTOCOL_NAMES[p]}</li>" for p, n in r.udp_by_protocol.most_common()]
    out.append("</ul>")
    warnings = ([f"the kernel could not submit {r.lost} events (buffer full)"] if r.lost else []) + \
        ([f"{r.unwritten} records could not be written (disk full)"] if r.unwritten else []) + \
        ([f"{len(bad)} lines skipped: {', '.join(h(b) for b in bad[:5])}"
          + (" …" if len(bad) > 5 else "")] if bad else [])
    out += [f'<p class="warning">WARNING: {w}</p>' for w in warnings]
    if not r.closes:
        out.append("<p>No bytes or lifetimes: this log has no close records "
                   "(<code>socktrace --lifetime</code> writes them).</p>")
    out.append("</header>")

    if r.records:
        out += ['<section id="overall"><h2>All TCP connections</h2>',
                f'<figure class="timeline-overall">'
                f'{timeline_svg(timelines.overall, "chart-0", "", "TCP connections", False)}'
                f"<figcaption>Every TCP connection accepted or connected, per "
                f"{per_words(timelines.overall.step())} by peer family. Times in UTC."
                "</figcaption></figure></section>"]

    listeners = r.dual_stack.serving_ipv4()
    out.append(f'<section id="dual-stack"><h2>Dual-stack listeners ({len(listeners)})</h2>')
    if listeners:
        out.append("<p>AF_INET6 sockets serving IPv4 peers through mapped addresses "
                   "(<code>::ffff:a.b.c.d</code>); netstat and ss list these IPv4 connections as "
                   "tcp6. Each with its timeline, its peers and the fix.</p>")
        out += [_listener_section(n, lst, r, timelines, top) for n, lst in enumerate(listeners, 1)]
    else:
        out.append("<p>No dual-stack listener served IPv4 peers through mapped addresses.</p>")
    out.append("</section>")

    out += ['<section id="text-report"><h2>The text report</h2>',
            "<p>What <code>socktrace report</code> prints for the same logs.</p>",
            f"<pre>{html.escape(format_report(r, list(bad), top))}</pre></section>",
            f"<footer>socktrace {__version__} report"
            + (f" of {', '.join(h(os.path.basename(s)) for s in sources)}" if sources else "")
            + ". No script; nothing is loaded from anywhere.</footer>",
            "</body></html>", ""]
    return "\n".join(out)


def write(path: str, page: str) -> None:
    """Write the page atomically (a temporary file beside it, renamed over
    it), mode 0644; OSError for a path that cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
