"""`socktrace snapshot` for a person: netstat -tuapn with the classification,
and --explain."""

from __future__ import annotations

from ..classify import endpoint, label
from ..records import SocketRecord
from ..snapshot import Snapshot, Sock
from .advice_text import advice_lines
from .escape import escape
from .names import container_words, who

_ROW = "{:<11} {:<22} {:<22} {:<11} {:<20} {}"
# a TCP listener, and an unconnected UDP socket (ss's UNCONN): any peer
LISTENING = ("LISTEN", "UNCONN")
HEADER = _ROW.format("Proto", "Local Address", "Foreign Address", "State", "PID/Program", "Note")


def proto(rec: SocketRecord) -> str:
    return label(rec["sock_family"], rec["mapped"], rec.get("protocol") or "tcp")


def owners(processes: list, width: int = 0) -> str:
    """The processes holding a socket, and the first one's container.

    >>> owners([{"pid": 500, "comm": "nginx"}, {"pid": 501, "comm": "nginx",
    ...          "container": {"name": "web", "id": "ab"}}])
    '500/nginx,501/nginx'
    >>> owners([{"pid": 700, "comm": "squid", "container": {"name": "proxy", "id": "ab"}}], 20)
    '700/squid@proxy'
    """
    if not processes:
        return ""
    first = processes[0]
    rest = "".join(f",{o['pid']}/{escape(o['comm'] or '?')}" for o in processes[1:])
    return who(str(first["pid"]), first["comm"], first.get("container"),
               max(width - len(rest), 12) if width else 10**6) + rest


def note(rec: SocketRecord) -> str:
    if rec["state"] in LISTENING:
        if rec["sock_family"] == "AF_INET":
            return ""
        if rec.get("v6only") is False:
            return "dual-stack: takes IPv4 too (v6only=0)" if rec["laddr"] == "::" else "v6only=0"
        return "v6only=1"
    listener = rec.get("listener")
    if rec.get("queued"):
        return f"queued, not accepted (listener {owners(listener['processes']) or '?'})"
    if not rec["inode"]:
        return "orphan: closed by its process"
    if listener:
        v6 = "" if listener["v6only"] is None else f" v6only={int(listener['v6only'])}"
        return f"via {endpoint(listener['laddr'], listener['lport'])}{v6}"
    return ""


def format_row(rec: SocketRecord) -> str:
    """One socket as netstat -tupn shows it, with its classification.

    >>> print(format_row({"state": "ESTABLISHED", "sock_family": "AF_INET6", "mapped": True,
    ...     "laddr": "10.0.0.12", "lport": 3128, "raddr": "10.0.0.20", "rport": 50312,
    ...     "inode": 1, "processes": [{"pid": 700, "comm": "squid", "cmdline": None}],
    ...     "listener": {"laddr": "::", "lport": 3128, "v6only": False}}))
    tcp6 MAPPED 10.0.0.12:3128         10.0.0.20:50312        ESTABLISHED 700/squid            via [::]:3128 v6only=0
    """
    peer = "*" if rec["state"] in LISTENING else str(rec["rport"])
    return _ROW.format(proto(rec), endpoint(rec["laddr"], rec["lport"]), endpoint(rec["raddr"], peer),
                       rec["state"], owners(rec["processes"], 20) or "-", note(rec)).rstrip()


def format_table(snap: Snapshot, records: list[SocketRecord]) -> str:
    lines = [f"net.ipv6.bindv6only = {snap.bindv6only if snap.bindv6only is not None else '?'}"
             + (" (new AF_INET6 sockets are dual-stack unless they set IPV6_V6ONLY)"
                if snap.bindv6only == 0 else ""), HEADER]
    lines += [format_row(r) for r in records]
    mapped = sum(1 for r in records if r["mapped"] and r["state"] != "LISTEN")
    lines.append(f"{len(records)} sockets; {mapped} IPv4 connections over AF_INET6 sockets (MAPPED)")
    lines += _unseen(snap)
    return "\n".join(lines) + "\n"


def _unseen(snap: Snapshot) -> list[str]:
    if not snap.hidden_sockets:
        return []
    why = (f"; {snap.hidden_processes} processes could not be looked into (run as root)"
           if snap.hidden_processes else " (processes in another PID namespace?)")
    return [f"owners of {snap.hidden_sockets} sockets not visible{why}"]


def explain(snap: Snapshot, socks: list[Sock], records: list[SocketRecord]) -> str:
    """For each dual-stack listener, in terms of its process: the advice
    its record carries (session.take_snapshot)."""
    out = []
    for lst, rec in [(s, r) for s, r in zip(socks, records) if s.dual_stack]:
        first = lst.first_owner
        who = f"{first.pid}/{escape(first.comm or '?')}" if first else "an unknown process"
        udp = lst.protocol == "udp"
        out.append(f"{who} {'receives UDP' if udp else 'listens'} on {endpoint(lst.laddr, lst.lport)} "
                   f"with a dual-stack AF_INET6 socket (IPV6_V6ONLY=0).")
        if first and first.container:
            out.append(f"  in {container_words(first.container)}, network namespace {lst.netns}")
        elif first and first.unit:
            out.append(f"  in systemd unit {escape(first.unit)}")
        if first and first.cmdline:
            out.append(f"  command: {escape(first.cmdline)}")
        if udp:
            out.append(f"  A UDP socket keeps no connections: `socktrace -u -P {lst.lport}` shows its "
                       "peers as their datagrams come (udp6 MAPPED: IPv4).")
        else:
            carried = snap.carried_by(lst)
            ipv4 = sum(1 for s in carried if s.mapped)
            out.append(f"  It carries {ipv4} IPv4 and {len(carried) - ipv4} IPv6 connections now "
                       f"({sum(1 for s in carried if s.queued)} not yet accepted).")
        out.append(f"  Why IPv4 shows as {lst.protocol}6: an AF_INET6 socket without IPV6_V6ONLY also "
                   f"{'receives datagrams from' if udp else 'accepts'} IPv4 peers, as IPv4-mapped "
                   "addresses (::ffff:a.b.c.d, RFC 3493 section 3.7); netstat and ss list every "
                   f"{'datagram socket' if udp else 'connection'} of an AF_INET6 socket as "
                   f"{lst.protocol}6.")
        if snap.bindv6only == 0:
            out.append("  net.ipv6.bindv6only = 0 on this system: that is the default for every "
                       "new AF_INET6 socket that does not set IPV6_V6ONLY itself.")
        out.append(f"  To make its IPv4 {'flows' if udp else 'connections'} plain {lst.protocol}:")
        out += advice_lines(rec["advice"], "    ")
        out.append("")
    if not out:
        out.append("No dual-stack (IPV6_V6ONLY=0) listener or UDP socket here.")
    return "\n".join(out).rstrip("\n") + "\n"
