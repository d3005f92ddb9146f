"""`socktrace top`'s numbers: records folded into rows, rates per interval
(sans I/O: records and clock readings in, `Frame`s out; output/top_text.py
draws them, output/top_screen.py puts them on a terminal).

A row is one listener, process, container or peer address (the view); its
columns are per second over the last interval, but QUEUED, which is now:
the connections waiting in the accept queues of the listeners the row's
connections came through (read from the kernel at each refresh, as `ss`
shows a listener's Recv-Q).  A row stays while it had a record in the last
IDLE_ROUNDS intervals, or has connections queued.

>>> t = TopModel()
>>> t.add([{"type": "accept", "protocol": "tcp", "pid": 7, "process": "java", "comm": "java",
...         "sock_family": "AF_INET6", "mapped": True, "v6only": False, "container": None,
...         "unit": None, "laddr": "10.0.0.12", "lport": 4243, "raddr": "10.0.0.20",
...         "rport": 5000, "netns": 1}] * 4)
>>> f = t.frame(now=2.0, queues={(1, 4243): 3})
>>> [(r.key, r.rates[CONN], r.rates[MAPPED], r.queued, r.dual_stack) for r in f.rows]
[('4243/tcp6 java', 2.0, 2.0, 3, True)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .containers import display_name
from .vocabulary import CLOSE, CONNECT_FAILED, CONNECTIONS, THROUGH_LISTENER, UDP, came_in, \
    process_name, protocol_of

VIEWS = ("listener", "process", "container", "peer")
# the keys that choose a view, as top's single letters
VIEW_KEYS = {"l": "listener", "p": "process", "c": "container", "a": "peer"}
# the columns, in order: per second but QUEUED (now)
CONN, IPV4, MAPPED, IPV6, FAILED, QUEUED, UDP_FLOWS, BYTES = range(8)
COLUMNS = ("CONN/s", "IPv4", "MAPPED", "IPv6", "FAIL", "QUEUED", "UDP/s", "BYTES/s")
IDLE_ROUNDS = 60

Queues = Mapping[Tuple[int, int], int]   # (netns, port) -> connections in the accept queue


@dataclass
class Row:
    """One row of the view: what the current interval added, and what
    stays (its listeners, whether it is dual-stack)."""
    key: str
    counts: List[int] = field(default_factory=lambda: [0] * len(COLUMNS))
    listeners: set = field(default_factory=set)   # (netns, port) its connections came in through
    last_listener: Optional[tuple] = None
    dual_stack: bool = False
    idle: int = 0          # intervals without a record
    # filled by TopModel.frame
    rates: List[float] = field(default_factory=lambda: [0.0] * len(COLUMNS))
    queued: int = 0


@dataclass
class Frame:
    """One refresh: the header's numbers and the sorted rows."""
    interval: float
    events_per_s: float
    connections_per_s: float
    by_family: Dict[str, float]      # ipv4, mapped, ipv6: connections/s
    failed_per_s: float
    events: int                      # since tracing began
    lost: int
    view: str
    sort: int
    rows: List[Row]


def _who(rec: Mapping[str, Any]) -> Tuple[str, Any]:
    """The process part of a row's key: its name and container."""
    c = rec.get("container")
    return process_name(rec) or "?", display_name(c) if c else None


def _process_text(pid: Optional[int], name: str, container: Optional[str]) -> str:
    where = f"@{container}" if container else ""
    return f"{pid or '?'}/{name}{where}"


def view_key(view: str) -> Callable[[Mapping[str, Any]], tuple]:
    """The grouping of records into rows for `view`: a function of a record.

    >>> rec = {"type": "connect", "protocol": "tcp", "pid": 9, "process": "curl", "container": None,
    ...        "unit": "cron.service", "sock_family": "AF_INET", "mapped": False, "rport": 80,
    ...        "lport": 41000, "raddr": "192.0.2.1"}
    >>> [view_key(v)(rec) for v in VIEWS]
    [(False, 'tcp', 80, 'AF_INET', 'curl', None), (9, 'curl', None), ('cron.service',), ('192.0.2.1',)]
    """
    if view == "listener":
        def key(rec):
            inbound = came_in(rec)
            return (inbound, protocol_of(rec), rec["lport"] if inbound else rec["rport"],
                    rec["sock_family"]) + _who(rec)
    elif view == "process":     # one row per process, as top
        def key(rec):
            return (rec["pid"],) + _who(rec)
    elif view == "container":
        def key(rec):
            c = rec.get("container")
            return (f"@{display_name(c)}" if c else rec.get("unit") or "(host)",)
    elif view == "peer":
        def key(rec):
            return (rec["raddr"],)
    else:
        raise ValueError(f"no view {view!r}: one of {', '.join(VIEWS)}")
    return key


def key_text(view: str, key: tuple) -> str:
    """A row's name as the KEY column shows it.

    >>> key_text("listener", (True, "tcp", 8080, "AF_INET6", "nginx", "web"))
    '8080/tcp6 nginx@web'
    >>> key_text("listener", (False, "udp", 53, "AF_INET", "dig", None)), key_text("process", (9, "dig", None))
    ('>53/udp dig', '9/dig')
    """
    if view == "listener":
        inbound, protocol, port, family, name, container = key
        proto = protocol + ("6" if family == "AF_INET6" else "")
        # the listener's port and its program (the pids are the process view's)
        return f"{'' if inbound else '>'}{port}/{proto} {name}{f'@{container}' if container else ''}"
    if view == "process":
        pid, name, container = key
        return _process_text(pid, name, container)
    return str(key[0])


class TopModel:
    """Records in, frames out.  The view and the sort column are the
    keyboard's; changing the view starts its rows afresh."""

    def __init__(self, view: str = "listener", sort: int = CONN, clock_start: float = 0.0):
        self.view = view
        self.sort = sort
        self.reverse = False
        self.rows: Dict[tuple, Row] = {}
        self._key = view_key(view)
        self.events = 0
        self.lost = 0
        self._interval_events = 0
        self._last = clock_start

    def restart(self, now: float) -> None:
        """Tracing begins `now`: the first interval starts then."""
        self._last = now
        self._interval_events = 0

    def set_view(self, view: str) -> None:
        if view != self.view:
            self.view, self._key, self.rows = view, view_key(view), {}

    def add(self, recs: List[Mapping[str, Any]]) -> None:
        """Fold records into the current interval (the hot path: one key
        and a few increments a record)."""
        self._interval_events += len(recs)
        rows, keyf = self.rows, self._key
        for rec in recs:
            k = keyf(rec)
            row = rows.get(k)
            if row is None:
                row = rows[k] = Row("")
            counts = row.counts
            kind = rec["type"]
            if kind in CONNECTIONS:
                counts[CONN] += 1
                counts[IPV4 if rec["sock_family"] == "AF_INET" else
                       MAPPED if rec["mapped"] else IPV6] += 1
                if kind in THROUGH_LISTENER:
                    listener = rec["netns"], rec["lport"]
                    if listener != row.last_listener:
                        row.last_listener = listener
                        row.listeners.add(listener)
                    if rec["mapped"] or rec.get("v6only") is False:
                        row.dual_stack = True
            elif kind == UDP:
                counts[UDP_FLOWS] += 1
                if rec["mapped"] or (rec.get("v6only") is False and came_in(rec)):
                    row.dual_stack = True
            elif kind == CONNECT_FAILED:
                counts[FAILED] += 1
            elif kind == CLOSE:
                counts[BYTES] += (rec.get("bytes_sent") or 0) + (rec.get("bytes_received") or 0)

    def frame(self, now: float, queues: Queues) -> Frame:
        """Close the interval that ends `now`: the rates, the queues now,
        the rows sorted; the next interval starts empty."""
        seconds = max(now - self._last, 1e-3)
        self._last = now
        totals = [0] * len(COLUMNS)
        shown = []
        for k, row in list(self.rows.items()):
            row.queued = sum(queues.get(lst, 0) for lst in row.listeners)
            if any(row.counts):
                row.idle = 0
            else:
                row.idle += 1
                if row.idle > IDLE_ROUNDS and not row.queued:
                    del self.rows[k]
                    continue
            row.key = key_text(self.view, k)
            row.rates = [n / seconds for n in row.counts]
            row.rates[QUEUED] = row.queued
            totals = [t + n for t, n in zip(totals, row.counts)]
            row.counts = [0] * len(COLUMNS)
            shown.append(row)
        shown.sort(key=lambda r: r.key)   # ties by name, the busiest first
        shown.sort(key=lambda r: r.rates[self.sort], reverse=not self.reverse)
        events, self._interval_events = self._interval_events, 0
        self.events += events
        return Frame(seconds, events / seconds, totals[CONN] / seconds,
                     {"ipv4": totals[IPV4] / seconds, "mapped": totals[MAPPED] / seconds,
                      "ipv6": totals[IPV6] / seconds},
                     totals[FAILED] / seconds, self.events, self.lost, self.view, self.sort, shown)
