"""`socktrace snapshot`: the TCP and UDP sockets that exist now, classified.

Needs no BPF: the kernel's sock_diag interface lists the sockets with their
state and IPV6_V6ONLY flag (kernel/sockdiag.py); /proc/PID/fd links name the
processes holding each socket inode.  Collecting (I/O) is kept apart from
classifying (a pure function) and from formatting (output/snapshot_text.py).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from .classify import came_through, peer_is_ipv4
from .kernel import netns
from .kernel.sockdiag import LISTEN, TCP_STATES, UDP_STATES, DiagSocket, dump
from .containers import ContainerRecord
from .procinfo import ProcessCache, ProcessInfo, socket_owners

# states in which a socket without a file (inode 0) is still in its listener's
# accept queue; in the others it is an orphan its process already closed
QUEUED_STATES = ("ESTABLISHED", "CLOSE_WAIT", "SYN_RECV")


@dataclass(frozen=True)
class Owner:
    pid: int
    comm: str | None
    cmdline: str | None
    container: ContainerRecord | None = None
    unit: str | None = None


@dataclass(frozen=True)
class Listener:
    laddr: str
    lport: int
    v6only: bool | None
    owners: tuple[Owner, ...]

    @property
    def first_owner(self) -> Owner | None:
        return self.owners[0] if self.owners else None


class Sock(NamedTuple):
    """One socket, classified (a NamedTuple: 20,000 of them build in half
    the time of a frozen dataclass)."""
    state: str
    sock_family: str           # AF_INET or AF_INET6
    mapped: bool               # AF_INET6 with an IPv4-mapped peer (or, listening, address)
    laddr: str                 # dotted IPv4 for mapped sockets, as netstat shows them
    lport: int
    raddr: str
    rport: int
    uid: int
    inode: int
    netns: int
    owners: tuple[Owner, ...]  # every process holding it (shared across fork)
    v6only: bool | None        # the socket's own IPV6_V6ONLY (AF_INET6 only)
    listener: Listener | None = None   # for an accepted connection: its listener
    queued: bool = False       # handshake done, still in the listener's queue
    protocol: str = "tcp"      # tcp or udp
    cookie: int = 0            # the kernel's socket cookie (sock_diag)

    @property
    def dual_stack(self) -> bool:
        """A socket that takes IPv4 peers through an AF_INET6 socket: a TCP
        listener, or an unconnected UDP socket bound to ::, without
        IPV6_V6ONLY."""
        if self.sock_family != "AF_INET6" or self.v6only is not False:
            return False
        if self.protocol == "udp":
            return self.state == "UNCONN" and self.laddr == "::"
        return self.state == "LISTEN"

    @property
    def peer_is_ipv4(self) -> bool:
        return peer_is_ipv4(self.sock_family, self.mapped)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(o.pid for o in self.owners)

    @property
    def first_owner(self) -> Owner | None:
        """The process a one-process view names (netstat's PID/Program)."""
        return self.owners[0] if self.owners else None


@dataclass
class Snapshot:
    sockets: list[Sock]
    bindv6only: int | None
    hidden_processes: int = 0          # /proc/PID/fd unreadable (not root)
    hidden_sockets: int = 0            # sockets whose owner could not be seen

    def carried_by(self, lst: Sock) -> list[Sock]:
        """The connections (accepted or queued) that came through the
        AF_INET6 listener `lst`: what --explain and the metrics' gauges count."""
        return [s for s in self.sockets if s.listener and s.netns == lst.netns
                and (s.listener.laddr, s.listener.lport) == (lst.laddr, lst.lport)
                and s.sock_family == "AF_INET6"]


def classify(raw: Iterable[DiagSocket], owners: dict[int, tuple[Owner, ...]], ns: int,
             protocol: str = "tcp") -> list[Sock]:
    """Turn sock_diag records of one namespace and protocol into classified
    sockets.

    A TCP connection whose local port is a listener's (same family, the
    listener's address a wildcard or the same) was accepted from it; one
    with no socket inode yet is still queued there.  UDP has no listeners:
    an unconnected socket (UNCONN) takes datagrams from any peer.
    """
    states = UDP_STATES if protocol == "udp" else TCP_STATES
    raw = list(raw)
    listeners: dict[int, list[tuple[DiagSocket, Listener]]] = {}
    for d in raw:
        if d.state == LISTEN:
            listeners.setdefault(d.sport, []).append(
                (d, Listener(d.src, d.sport, d.v6only, owners.get(d.inode, ()))))
    out = []
    for d in raw:
        family = "AF_INET6" if d.family == socket.AF_INET6 else "AF_INET"
        listener = None
        if d.state != LISTEN:
            for ld, lst in listeners.get(d.sport, ()):
                if came_through(ld.family, ld.src, d.family, d.src):
                    listener = lst
                    break
        out.append(Sock(
            state=states.get(d.state, str(d.state)), sock_family=family,
            mapped=d.dst_mapped if d.state != LISTEN else d.src_mapped,
            laddr=d.src, lport=d.sport, raddr=d.dst, rport=d.dport, uid=d.uid, inode=d.inode,
            netns=ns, owners=owners.get(d.inode, ()),
            v6only=d.v6only if family == "AF_INET6" else None,
            listener=listener,
            queued=listener is not None and d.inode == 0 and TCP_STATES.get(d.state) in QUEUED_STATES,
            protocol=protocol, cookie=d.cookie))
    return out


def read_bindv6only(procfs: str = "/proc") -> int | None:
    try:
        with open(f"{procfs}/sys/net/ipv6/bindv6only") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


def owner(pid: int, p: ProcessInfo) -> Owner:
    return Owner(pid, p.comm, p.cmdline, p.container, p.unit)


def take(namespaces: list[str | None], cache: ProcessCache | None = None,
         procfs: str = "/proc", protocols: tuple[str, ...] = ("tcp", "udp"),
         gone_ok: bool = False) -> Snapshot:
    """Collect the sockets of the given namespaces (None: our own), of
    `protocols`; `gone_ok`: skip a namespace whose process exited since it
    was listed (netns.all_namespaces)."""
    cache = cache or ProcessCache(procfs)
    by_inode, hidden = socket_owners(procfs)

    by_pid: dict[tuple[int, ...], tuple[Owner, ...]] = {}

    def owners_of(pids: list[int]) -> tuple[Owner, ...]:
        key = tuple(sorted(set(pids)))
        found = by_pid.get(key)
        if found is None:
            found = by_pid[key] = tuple(owner(p, cache.process(p)) for p in key)
        return found

    owners = {ino: owners_of(pids) for ino, pids in by_inode.items()}
    sockets: list[Sock] = []
    def dumped():
        return {p: dump(socket.AF_INET6, PROTOCOLS[p]) + dump(socket.AF_INET, PROTOCOLS[p])
                for p in protocols}

    for ns, raw in in_each(namespaces, dumped, gone_ok):
        for p in protocols:
            sockets += classify(raw[p], owners, ns, p)
    hidden_sockets = sum(1 for s in sockets if s.inode and not s.owners)
    return Snapshot(sockets, read_bindv6only(procfs), hidden, hidden_sockets)


def in_each(namespaces: list[str | None], read, gone_ok: bool = False):
    """(namespace inode, read()) for each of `namespaces`, read() run inside
    it; `gone_ok`: a namespace whose process exited since it was listed
    (netns.all_namespaces) is skipped."""
    for path in namespaces:
        try:
            with netns.entered(path) as ns:
                result = read()
        except OSError as exc:
            if gone_ok and exc.errno in (errno.ENOENT, errno.ESRCH):
                continue
            raise
        yield ns, result


def accept_queues(namespaces: list[str | None]) -> dict[tuple[int, int], int]:
    """The connections waiting in each TCP listener's accept queue now (ss's
    Recv-Q of a LISTEN socket), by (network namespace, port), in
    `namespaces` (a vanished one is skipped); `top`'s QUEUED."""
    queues: dict[tuple[int, int], int] = {}
    listening = lambda: dump(socket.AF_INET6, states=1 << LISTEN) + \
        dump(socket.AF_INET, states=1 << LISTEN)  # noqa: E731
    for ns, listeners in in_each(namespaces, listening, gone_ok=True):
        for s in listeners:
            queues[ns, s.sport] = queues.get((ns, s.sport), 0) + s.rqueue
    return queues
