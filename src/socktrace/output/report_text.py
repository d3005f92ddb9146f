"""`socktrace report` as text for a person."""

from __future__ import annotations

from ..report import BadLine, Report, Traffic, advice
from ..classify import endpoint
from ..vocabulary import ACCEPT, CONNECT, CONNECTIONS, UDP, UNACCEPTED
from .advice_text import advice_lines
from .escape import escape
from ..containers import display_name
from .names import container_words, pid_list, size

PROTOCOL_NAMES = {"mapped": "IPv4 over AF_INET6 (MAPPED, netstat: tcp6)",
                  "ipv4": "plain IPv4 (tcp)", "ipv6": "native IPv6 (tcp6)"}
# report.traffic_key's keys
FAMILY_SHORT = {"mapped": "IPv4 (MAPPED)", "ipv4": "IPv4", "ipv6": "IPv6",
                "udp_mapped": "UDP IPv4 (MAPPED)", "udp_ipv4": "UDP IPv4", "udp_ipv6": "UDP IPv6"}
UDP_PROTOCOL_NAMES = {"mapped": "IPv4 over AF_INET6 (MAPPED, netstat: udp6)",
                      "ipv4": "plain IPv4 (udp)", "ipv6": "native IPv6 (udp6)"}


def _t(iso: str) -> str:
    return iso.replace("T", " ")[:19] if iso else "-"


def _who(pid, comm) -> str:
    return f"pid {pid if pid is not None else '?'} {escape(comm or '?')}"


def _port(protocol: str, port: int) -> str:
    """'port 8080' for TCP, as before UDP; 'udp port 53' for UDP."""
    return f"port {port}" if protocol == "tcp" else f"{protocol} port {port}"


def _seconds(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f}s"   # None: all open before tracing began


def _lifetimes(t: Traffic) -> str:
    j = t.to_json()
    return f"lifetime median {_seconds(j['lifetime_median'])}, p95 {_seconds(j['lifetime_p95'])}"


def _traffic(by_family: dict[str, Traffic]) -> str:
    """One listener's ended connections, most bytes first.

    >>> t = Traffic(); t.add({"bytes_sent": 1536, "bytes_received": 80, "duration": 2.5})
    >>> _traffic({"mapped": t})
    'IPv4 (MAPPED): 1 ended, 1.5K sent, 80 received, lifetime median 2.50s, p95 2.50s'
    """
    return "; ".join(
        f"{FAMILY_SHORT[p]}: {t.connections} ended, {_bytes(t.bytes_sent, t)} sent, "
        f"{_bytes(t.bytes_received, t)} received{_datagrams(t)}, {_lifetimes(t)}"
        for p, t in _most_bytes(by_family))


def _bytes(n: int, t: Traffic) -> str:
    """A byte sum; '?' when none of its UDP flows' bytes could be seen."""
    return "?" if t.unmeasured == t.connections else size(n)


def _datagrams(t: Traffic) -> str:
    """ (3/5 datagrams) for UDP flows, and how many had no byte count."""
    if not t.udp:
        return ""
    unmeasured = f", bytes of {t.unmeasured} unseen" if t.unmeasured else ""
    return f" ({t.datagrams_sent}/{t.datagrams_received} datagrams{unmeasured})"


def _most_bytes(by_family: dict[str, Traffic]) -> list[tuple[str, Traffic]]:
    return sorted(by_family.items(), key=lambda pt: -(pt[1].bytes_sent + pt[1].bytes_received))


def _who_all(pids, comm) -> str:
    return f"pid{'s' if len(pids) > 1 else ''} {pid_list(pids)} {escape(comm or '?')}"


def format_report(r: Report, bad: list[BadLine], top: int = 10) -> str:
    out: list[str] = []
    add = out.append
    flows = sum(r.udp_by_protocol.values())
    add(f"socktrace report: {r.records} connections"
        + (f", {flows} UDP flows" if flows else "") + f", {_t(r.first)} .. {_t(r.last)} UTC")
    if r.records:
        add("  " + ", ".join(f"{n} {PROTOCOL_NAMES[p]}" for p, n in r.by_protocol.most_common()))
    if flows:
        add("  UDP: " + ", ".join(f"{n} {UDP_PROTOCOL_NAMES[p]}"
                                  for p, n in r.udp_by_protocol.most_common()))
    if r.lost:
        add(f"  WARNING: the kernel could not submit {r.lost} events (buffer full)")
    if r.unwritten:
        add(f"  WARNING: {r.unwritten} records could not be written (disk full)")
    if bad:
        add(f"  WARNING: {len(bad)} lines skipped (see stderr)")
    if not r.closes:
        add("  No bytes or lifetimes: this log has no close records (socktrace --lifetime writes them).")

    add("")
    listeners = r.dual_stack.serving_ipv4()
    if listeners:
        add("Dual-stack listeners: AF_INET6 sockets serving IPv4 peers through mapped addresses")
        add("(::ffff:a.b.c.d); netstat and ss list these IPv4 connections as tcp6.")
        for l in listeners:
            v6only = "/".join(str(int(v)) for v in sorted(l.v6only)) or "?"
            add(f"  {_who_all(l.pids, l.process)}, {_port(l.protocol, l.port)}: {l.mapped} IPv4 "
                f"(MAPPED), {l.ipv6} IPv6; IPV6_V6ONLY={v6only}; {_t(l.first)} .. {_t(l.last)}")
            if l.container:
                add(f"    in {container_words(l.container)}")
            elif l.unit:
                add(f"    in systemd unit {escape(l.unit)}")
            if l.cmdline:
                add(f"    command: {escape(l.cmdline)}")
            if l.key in r.listener_traffic:
                add(f"    traffic: {_traffic(r.listener_traffic[l.key])}")
            out += advice_lines(advice(l), "    ")
    else:
        add("No dual-stack listener served IPv4 peers through mapped addresses.")

    if r.mapped_clients:
        add("")
        add("Clients connecting to IPv4 peers from AF_INET6 sockets (::ffff: destinations):")
        for c in r.mapped_clients.values():
            add(f"  {_who(c.pid, c.comm)}: {c.by_type[CONNECT]} connects; {_t(c.first)} .. {_t(c.last)}")
            if c.cmdline:
                add(f"    command: {escape(c.cmdline)}")
            add("    fix: connect IPv4 destinations with an AF_INET socket "
                "(getaddrinfo with AF_UNSPEC returns them as AF_INET)")

    if r.containers:
        add("")
        add(f"Containers ({len(r.containers)}, busiest first):")
        add(f"  {'CONTAINER':<20} {'RUNTIME':<14} {'CONNS':>7} {'UDP':>6} {'MAPPED':>7} {'IPV4':>6} "
            f"{'IPV6':>6}  IMAGE")
        for c in sorted(r.containers.values(), key=lambda c: -sum(c.by_type.values()))[:top]:
            conns = sum(n for t, n in c.by_type.items() if t in CONNECTIONS)
            add(f"  {escape(display_name(c.container))[:20]:<20} {c.container['runtime']:<14} "
                f"{conns:>7} {c.by_type[UDP]:>6} {c.by_protocol['mapped']:>7} "
                f"{c.by_protocol['ipv4']:>6} {c.by_protocol['ipv6']:>6}  "
                f"{escape(c.container.get('image') or '?')}")

    add("")
    procs = sorted(r.processes.values(), key=lambda p: -sum(p.by_type.values()))
    add(f"Processes ({len(procs)}, busiest first):")
    add(f"  {'PID':>7} {'COMM':<16} {'ACCEPT':>7} {'CONNECT':>7} {'UNACC':>6} {'UDP':>6} {'MAPPED':>7} "
        f"{'IPV4':>6} {'IPV6':>6}  FIRST .. LAST")
    for p in procs[:top]:
        add(f"  {p.pid if p.pid is not None else '?':>7} {escape(p.comm or '?'):<16} "
            f"{p.by_type[ACCEPT]:>7} {p.by_type[CONNECT]:>7} {p.by_type[UNACCEPTED]:>6} {p.by_type[UDP]:>6} "
            f"{p.by_protocol['mapped']:>7} {p.by_protocol['ipv4']:>6} {p.by_protocol['ipv6']:>6}  "
            f"{_t(p.first)} .. {_t(p.last)}")
        if p.cmdline:
            add(f"          {escape(p.cmdline)}")

    if len(procs) > top:
        add(f"  ... {len(procs) - top} more (--top)")

    if r.closes:
        busiest = sorted((p for p in procs if p.traffic), key=lambda p: -sum(
            t.bytes_sent + t.bytes_received for t in p.traffic.values()))
        add("")
        add(f"Traffic of ended connections ({r.closes}, UDP flows included), by process and peer "
            f"family, most bytes first:")
        add(f"  {'PID':>7} {'COMM':<16} {'FAMILY':<17} {'ENDED':>6} {'SENT':>7} {'RECEIVED':>8} "
            f"{'MEDIAN':>8} {'P95':>8}")
        for p in busiest[:top]:
            for proto, t in _most_bytes(p.traffic):
                j = t.to_json()
                add(f"  {p.pid if p.pid is not None else '?':>7} {escape(p.comm or '?'):<16} "
                    f"{FAMILY_SHORT[proto]:<17} {t.connections:>6} {_bytes(t.bytes_sent, t):>7} "
                    f"{_bytes(t.bytes_received, t):>8} {_seconds(j['lifetime_median']):>8} "
                    f"{_seconds(j['lifetime_p95']):>8}")

    if r.failed:
        add("")
        add(f"Failed connects ({sum(r.failed.values())}, most frequent first):")
        for (pid, comm, _, raddr, rport, proto, reason), n in r.failed.most_common(top):
            add(f"  {n:>7}  {_who(pid, comm)} to {endpoint(raddr, rport)}: {reason}"
                f" ({PROTOCOL_NAMES[proto]})")

    if r.peers:
        add("")
        add("Top peers:")
        for (addr, proto), n in r.peers.most_common(top):
            add(f"  {n:>7}  {addr}  {PROTOCOL_NAMES[proto]}")
    return "\n".join(out) + "\n"
