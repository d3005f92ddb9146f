"""The advice (advice.Advice) as text: one form for `snapshot --explain`,
`report` and the live summary."""

from __future__ import annotations

from ..advice import Advice
from .escape import escape

IPV6_AFTER = {"kept": "IPv6 clients are still served, on a separate socket",
              "lost": "the service then takes IPv4 only"}


def advice_lines(a: Advice, indent: str = "  ") -> list[str]:
    """The advice, one line per step, each starting with `indent`.

    >>> from socktrace.advice import advise
    >>> print("\\n".join(advice_lines(advise("squid", "/usr/sbin/squid -sYC", 3128))))
      Squid: Debian's 'http_port 3128' (a port without an address) opens one dual-stack socket
      fix, in /etc/squid/squid.conf: replace
          http_port 3128
        with
          http_port 0.0.0.0:3128
        then: squid -k parse && systemctl restart squid
      afterwards: the service then takes IPv4 only; squid then serves IPv4 only on 3128: it does not set IPV6_V6ONLY, so a second 'http_port [::]:3128' fails with 'Address already in use' (a specific IPv6 address, 'http_port [ADDRESS]:3128', does not collide)
      source: http://www.squid-cache.org/Doc/config/http_port/
    """
    # escaped (a process chooses its name), each line apart: a change of
    # several lines stays several lines
    lines = {k: [escape(line) for line in v.splitlines()] if isinstance(v, str) else v
             for k, v in a.items()}
    a = {k: " ".join(v) if isinstance(v, list) else v for k, v in lines.items()}
    out = [f"{a['title']}: {a['dual_stack']}"]
    if a["separate"]:
        out.append(f"socktrace expected separate IPv4 and IPv6 sockets here; {a['where']}")
    if a["replaces"]:
        out.append(f"fix, in {a['where']}: replace")
        out += [f"    {line}" for line in lines["replaces"]]
        out.append("  with")
    else:
        out.append(f"fix, in {a['where']}:")
    out += [f"    {line}" for line in lines["change"]]
    out.append(f"  then: {a['apply']}")
    c = a.get("container")   # absent in logs written before containers were named
    if c:
        image = f", image {escape(c['image'])}" if c["image"] else ""
        out.append(f"in {c['runtime']} container {escape(c['name'])}{image}: make the change in "
                   f"{escape(c['where'])}")
        out.append(f"  then: {escape(c['apply'])}")
    after = IPV6_AFTER.get(a["ipv6"] or "")
    out.append(f"afterwards: {after + '; ' if after else ''}{a['tradeoff']}")
    out.append(f"source: {a['source']}")
    return [indent + line for line in out]
