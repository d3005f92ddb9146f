"""Sockets as snapshot.take lists them, for unit tests."""

from socktrace.snapshot import Owner, Snapshot, Sock

NETNS = 4026531840   # rawevents.raw's


def sock(laddr, lport, pids, family="AF_INET6", state="LISTEN", raddr="::", rport=0, inode=1,
         mapped=False, comm=None, listener=None, protocol=None, container=None, netns=NETNS):
    """A socket of socktrace's network namespace, held by `pids`; state
    UNCONN makes it a UDP one (pass protocol="udp" for a connected one)."""
    return Sock(state=state, sock_family=family, mapped=mapped, laddr=laddr, lport=lport,
                raddr=raddr, rport=rport, uid=0, inode=inode, netns=netns,
                owners=tuple(Owner(p, comm, None, container) for p in pids),
                v6only=False if family == "AF_INET6" else None, listener=listener,
                protocol=protocol or ("udp" if state == "UNCONN" else "tcp"))


def sockets(*socks):
    return Snapshot(list(socks), bindv6only=0)
