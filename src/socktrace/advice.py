"""What to change so that a dual-stack listener's IPv4 connections become
plain tcp, in the terms of the application that owns it: the advice
`snapshot --explain`, `report` and the live summary give, decided here once.

The knowledge is data: apps.toml, one entry per application, each citing
its documentation and naming the test that applies its change to the real
application (tests/apps).  This module recognises the application from
what is known of the process and words the entry for one listener; the
text formatting lives in output/advice_text.py.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import sys
from dataclasses import dataclass, fields
from importlib import resources
from typing import Optional, TypedDict

from .containers import ContainerRecord, display_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI (a dependency on Python < 3.11 only)
    import tomli as tomllib


@dataclass(frozen=True)
class KnownApp:
    """One entry of apps.toml (its header comment documents each field)."""
    name: str
    title: str
    dual_stack: str
    where: str
    tradeoff: str
    source: str
    process: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    go: bool = False
    separate: bool = False
    change: Optional[str] = None
    replaces: Optional[str] = None
    apply: Optional[str] = None
    ipv6: Optional[str] = None
    tested_by: Optional[str] = None
    untested: Optional[str] = None
    protocol: str = "tcp"    # the sockets the entry is about: tcp, udp, or any
    env: Optional[str] = None

    def serves(self, protocol: str) -> bool:
        return self.protocol in (protocol, "any")

    def recognises(self, name: str | None, cmdline: str | None, go: bool = False) -> bool:
        """By the process's name, its executable's file name (the command
        line's first word) or a pattern of its command line.

        >>> nginx = KnownApp("nginx", "nginx", "", "", "", "", process=("nginx",))
        >>> nginx.recognises("nginx", "nginx: master process /usr/sbin/nginx")
        True
        >>> nginx.recognises("python3", "/usr/bin/python3 app.py")
        False
        """
        argv0 = (cmdline or "").split(" ", 1)[0].rsplit("/", 1)[-1]
        if any(fnmatch.fnmatchcase(n, p) for p in self.process for n in (name or "", argv0) if n):
            return True
        if cmdline and any(re.search(p, cmdline) for p in self.command):
            return True
        return self.go and go


class AppsFileError(Exception):
    pass


def load_apps(text: str) -> tuple[KnownApp, ...]:
    """The entries of an apps.toml text, checked: an unknown or missing
    field, a change without ipv6, or an entry neither tested nor saying why
    is an error (the file ships with socktrace: a test loads it)."""
    try:
        entries = tomllib.loads(text).get("app", [])
    except tomllib.TOMLDecodeError as exc:
        raise AppsFileError(f"apps.toml: {exc}") from None
    known = {f.name for f in fields(KnownApp)}
    apps = []
    for n, e in enumerate(entries, 1):
        where = f"apps.toml entry {n} ({e.get('name', '?')})"
        unknown = set(e) - known
        if unknown:
            raise AppsFileError(f"{where}: unknown fields {', '.join(sorted(unknown))}")
        try:
            app = KnownApp(**{k: tuple(v) if isinstance(v, list) else v for k, v in e.items()})
        except TypeError as exc:
            raise AppsFileError(f"{where}: {exc}") from None
        if not app.separate and (app.change is None or app.ipv6 not in ("kept", "lost")):
            raise AppsFileError(f"{where}: a change and ipv6 = \"kept\" or \"lost\" are required")
        if not (app.tested_by or app.untested):
            raise AppsFileError(f"{where}: tested_by or untested is required")
        if app.protocol not in ("tcp", "udp", "any"):
            raise AppsFileError(f"{where}: protocol is tcp, udp or any, not {app.protocol!r}")
        for pattern in app.command:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise AppsFileError(f"{where}: command {pattern!r}: {exc}") from None
        apps.append(app)
    return tuple(apps)


@functools.lru_cache(maxsize=None)
def known_apps() -> tuple[KnownApp, ...]:
    """The entries of the apps.toml shipped with socktrace."""
    path = resources.files("socktrace") / "apps.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AppsFileError(f"cannot read {path} ({exc}): reinstall socktrace") from None
    return load_apps(text)


def recognise(name: str | None, cmdline: str | None, go: bool = False,
              apps: tuple[KnownApp, ...] | None = None, protocol: str = "tcp") -> KnownApp | None:
    """The first entry about `protocol`'s sockets that recognises the
    process, or None.

    >>> recognise("java", "/usr/bin/java -jar backup.jar").name
    'java'
    >>> recognise("gunicorn", "/usr/bin/python3 /usr/bin/gunicorn --bind [::]:8000 app:app").name
    'gunicorn'
    >>> recognise("myserver", "/opt/my/server", go=True).name
    'go'
    >>> recognise("myserver", "/opt/my/server") is None
    True
    >>> recognise("myserver", "/opt/my/server", go=True, protocol="udp").name
    'go-udp'
    """
    return next((a for a in (apps if apps is not None else known_apps())
                 if a.serves(protocol) and a.recognises(name, cmdline, go)), None)


class InContainer(TypedDict):
    """Where the change goes when the program runs in a container: not in
    the running container (re-created from its image, it loses the change)
    but where the container is defined, and how to re-create it."""
    runtime: str
    name: str
    image: Optional[str]
    where: str
    apply: str


class Advice(TypedDict):
    """The advice for one dual-stack listener, worded for its port.  `app`
    is None for a program socktrace does not know: the generic advice;
    `container` None for a program on the host."""
    app: Optional[str]
    title: str
    dual_stack: str
    separate: bool
    change: str
    replaces: Optional[str]
    where: str
    apply: str
    ipv6: Optional[str]
    tradeoff: str
    source: str
    container: Optional[InContainer]


def in_container(c: ContainerRecord, env: Optional[str]) -> InContainer:
    """The container's part of the advice, in its runtime's terms; `env`:
    the change as an environment variable, when the application takes one.

    >>> a = in_container({"runtime": "podman", "name": "backup", "image": "localhost/backup:1",
    ...                   "pod": None, "id": "ab"}, "JAVA_TOOL_OPTIONS=-Djava.net.preferIPv4Stack=true")
    >>> print(a["where"])
    the container's environment: podman run -e JAVA_TOOL_OPTIONS=-Djava.net.preferIPv4Stack=true (compose: environment:)
    >>> a["apply"]
    're-create the container from its definition: podman rm -f backup, then its podman run line (or compose up -d)'
    """
    name, runtime = display_name(c), c["runtime"]
    if c.get("pod") or runtime in ("containerd", "cri-o", "cri"):
        where = (f"the pod's spec (its Deployment, StatefulSet or DaemonSet): env: {env}" if env else
                 "the pod's spec: the container's args:, a ConfigMap mounted over the file, or a new "
                 "image")
        apply = "kubectl rollout restart the workload that owns the pod" + (
            f" {c['pod']} (namespace {c.get('namespace') or 'default'})" if c.get("pod") else "")
    elif runtime in ("docker", "podman"):
        where = (f"the container's environment: {runtime} run -e {env} (compose: environment:)" if env
                 else f"the image (its Containerfile or Dockerfile), a file mounted with {runtime} run "
                      "-v, or the run line's command (compose: volumes:, command:)")
        apply = (f"re-create the container from its definition: {runtime} rm -f {name}, then its "
                 f"{runtime} run line (or compose up -d)")
    else:   # systemd-nspawn, lxc: a whole system, changed from inside as a host is
        shell = f"machinectl shell {name}" if runtime == "systemd-nspawn" else f"lxc exec {name} -- sh"
        where = f"inside the container, as on a host ({shell})"
        apply = "as the fix says, inside the container"
    return {"runtime": runtime, "name": name, "image": c.get("image"), "where": where, "apply": apply}


# Where the application is unknown, or knows no change of its own: what
# any program's socket can do (ipv6(7) IPV6_V6ONLY, RFC 3493 section 5.3).
GENERIC_SOURCE = "https://man7.org/linux/man-pages/man7/ipv6.7.html"


def _generic(who: str, port: int, protocol: str = "tcp") -> dict:
    verb = "listen on" if protocol == "tcp" else "bind"
    return {
        "change": f"{verb} 0.0.0.0:{port} (an AF_INET socket) for IPv4, and if it must serve IPv6 "
                  f"too, set IPV6_V6ONLY=1 on its [::]:{port} socket",
        "replaces": None,
        "where": f"{who}'s listen address setting, or its code",
        "apply": f"restart {who}; or, system-wide, net.ipv6.bindv6only=1 (sysctl) makes IPV6_V6ONLY "
                 "the default for sockets created afterwards (programs that set the option keep their "
                 "choice)",
        "ipv6": None,
        "tradeoff": "binding 0.0.0.0 alone ends IPv6 service on that port; the sysctl changes every "
                    "program that relies on dual-stack sockets",
    }


def advise(name: str | None, cmdline: str | None, port: int, go: bool = False,
           apps: tuple[KnownApp, ...] | None = None, protocol: str = "tcp",
           container: ContainerRecord | None = None) -> Advice:
    """The advice for the dual-stack listener (a UDP socket: `protocol`
    udp) on `port` that the process (`name`, `cmdline`, a Go program or
    not, in `container` or on the host) holds.

    >>> a = advise("squid", "/usr/sbin/squid -sYC", 3128)
    >>> a["app"], a["replaces"], a["change"], a["ipv6"]
    ('squid', 'http_port 3128', 'http_port 0.0.0.0:3128', 'lost')
    >>> advise("mysrv", "./mysrv", 8080)["change"].split(" (")[0]
    'listen on 0.0.0.0:8080'
    >>> advise("mysrv", "./mysrv", 53, protocol="udp")["change"].split(" (")[0]
    'bind 0.0.0.0:53'
    """
    app = recognise(name, cmdline, go, apps, protocol)
    who = name or "the program"
    if app is None:
        return {"app": None, "title": who, "separate": False,
                "dual_stack": f"it {'listens on' if protocol == 'tcp' else 'receives on'} an AF_INET6 "
                              "socket without IPV6_V6ONLY",
                "source": GENERIC_SOURCE, **_generic(who, port, protocol),
                "container": in_container(container, None) if container else None}
    fill = functools.partial(_fill, port=port)
    base = _generic(who, port, protocol) if app.separate else {}
    return {"app": app.name, "title": app.title, "separate": app.separate,
            "dual_stack": fill(app.dual_stack), "change": fill(app.change or base.get("change")),
            "replaces": fill(app.replaces), "where": fill(app.where),
            "apply": fill(app.apply or base.get("apply")), "ipv6": app.ipv6,
            "tradeoff": fill(app.tradeoff), "source": app.source,
            "container": in_container(container, app.env) if container else None}


def _fill(text: str | None, port: int) -> str | None:
    return text.format(port=port) if text is not None else None
