"""The classification, written once: what netstat calls a socket (tcp,
tcp6), whether an AF_INET6 socket carries an IPv4 peer (MAPPED), addresses
and endpoints as text.  The tracer's records, the live table, the snapshot
and the report all take it from here.

An IPv4-mapped IPv6 address is ::ffff:a.b.c.d (RFC 4291 section 2.5.5.2);
an AF_INET6 socket without IPV6_V6ONLY serves IPv4 peers through such
addresses (RFC 3493 section 3.7).  Mapped addresses are shown in dotted
IPv4 form, as netstat does.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

AF_INET, AF_INET6 = 2, 10
FAMILY_NAMES = {AF_INET: "AF_INET", AF_INET6: "AF_INET6"}
MAPPED_PREFIX = bytes(10) + b"\xff\xff"


@lru_cache(maxsize=65536)  # a busy server sees the same few addresses again and again
def address(raw: bytes, family: int) -> tuple[str, bool]:
    """Text form of a raw address (network byte order) and whether it is
    IPv4-mapped.

    >>> address(bytes(10) + b"\\xff\\xff" + bytes([10, 0, 0, 20]), AF_INET6)
    ('10.0.0.20', True)
    >>> address(bytes([127, 0, 0, 1]) + bytes(12), AF_INET)
    ('127.0.0.1', False)
    >>> address(bytes(15) + b"\\x01", AF_INET6)
    ('::1', False)
    """
    if family == AF_INET:
        return str(ipaddress.IPv4Address(raw[:4])), False
    if raw[:12] == MAPPED_PREFIX:
        return str(ipaddress.IPv4Address(raw[12:16])), True
    return str(ipaddress.IPv6Address(raw[:16])), False


def raw_address(text: str, family: int) -> bytes:
    """address()'s inverse: the 16 bytes struct event holds for the text
    form of a socket's address (an AF_INET6 socket's dotted one is mapped).

    >>> raw_address("10.0.0.20", AF_INET6) == bytes(10) + b"\\xff\\xff" + bytes([10, 0, 0, 20])
    True
    >>> raw_address("127.0.0.1", AF_INET) == bytes([127, 0, 0, 1]) + bytes(12)
    True
    """
    ip = ipaddress.ip_address(text)
    if family == AF_INET:
        return ip.packed + bytes(12)
    return (MAPPED_PREFIX + ip.packed) if ip.version == 4 else ip.packed


def label(sock_family: str, mapped: bool, protocol: str = "tcp") -> str:
    """What netstat calls the socket: tcp (AF_INET), tcp6, or tcp6 MAPPED
    (an AF_INET6 socket, IPv4 peer); udp, udp6, udp6 MAPPED likewise.

    >>> label("AF_INET6", True), label("AF_INET", False, "udp")
    ('tcp6 MAPPED', 'udp')
    """
    if sock_family == "AF_INET":
        return protocol
    return f"{protocol}6 MAPPED" if mapped else f"{protocol}6"


def peer_family(sock_family: str, mapped: bool) -> str:
    """What the peer really speaks, as the report counts it: ipv4 (AF_INET),
    mapped (IPv4 over AF_INET6) or ipv6.

    >>> peer_family("AF_INET6", True), peer_family("AF_INET", False)
    ('mapped', 'ipv4')
    """
    if sock_family == "AF_INET":
        return "ipv4"
    return "mapped" if mapped else "ipv6"


def peer_is_ipv4(sock_family: str, mapped: bool) -> bool:
    """The peer's real protocol is IPv4, plain or mapped."""
    return sock_family == "AF_INET" or mapped


WILDCARDS = ("::", "0.0.0.0")


def came_through(listener_family, listener_addr: str, family, local_addr: str) -> bool:
    """Whether a connection whose local address is `local_addr` came in
    through a listener bound to `listener_addr` on the same port: the same
    socket family, and the listener bound to a wildcard or to that address.

    >>> came_through("AF_INET6", "::", "AF_INET6", "10.0.0.12")   # mapped, dual-stack listener
    True
    >>> came_through("AF_INET", "0.0.0.0", "AF_INET6", "10.0.0.12")
    False
    """
    return listener_family == family and (listener_addr in WILDCARDS or listener_addr == local_addr)


def endpoint(addr: str, port: int | str) -> str:
    """ss-style address:port; IPv6 in brackets.

    >>> endpoint("::1", 8080), endpoint("10.0.0.1", "*")
    ('[::1]:8080', '10.0.0.1:*')
    """
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
