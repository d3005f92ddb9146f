"""What to change so that a dual-stack listener's IPv4 connections become
plain tcp: the advice `socktrace report` and `socktrace snapshot --explain`
give, written once for both.
"""

from __future__ import annotations


def is_java(comm: str | None, cmdline: str | None) -> bool:
    return comm == "java" or (cmdline or "").split(" ", 1)[0].endswith("java")


def fixes_for(comm: str | None, cmdline: str | None, port: int) -> list[str]:
    """The changes that make a dual-stack listener's IPv4 connections plain tcp."""
    fixes = []
    if is_java(comm, cmdline):
        fixes.append("start the JVM with -Djava.net.preferIPv4Stack=true "
                     "(it then opens AF_INET sockets only; no IPv6)")
    if comm == "nginx":
        fixes.append(f"in nginx: 'listen {port};' plus 'listen [::]:{port} ipv6only=on;'")
    fixes += [
        f"set IPV6_V6ONLY=1 on the listener of port {port} and listen on a separate "
        "AF_INET socket for IPv4",
        "or, if it need not serve IPv6, bind it to 0.0.0.0 (an AF_INET socket)",
        "net.ipv6.bindv6only=1 (sysctl) makes IPV6_V6ONLY the default for sockets "
        "created afterwards: restart the service; programs that set the option keep their choice",
    ]
    return fixes
