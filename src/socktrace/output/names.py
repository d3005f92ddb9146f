"""How the text outputs name processes and sizes: one form for the table
and the report."""

from __future__ import annotations

from typing import Optional, Sequence

from ..containers import ContainerRecord, display_name
from .escape import escape

PIDS_SHOWN = 4


def pid_list(pids: Sequence[Optional[int]], most: int = PIDS_SHOWN) -> str:
    """Pids as one short word: the first `most`, then how many more.

    >>> pid_list([7]), pid_list([]), pid_list([1, 2, 3, 4, 5, 6])
    ('7', '?', '1,2,3,4,+2')
    """
    shown = ",".join(str(p) for p in pids[:most] if p is not None) or "?"
    return shown + (f",+{len(pids) - most}" if len(pids) > most else "")


def pid_name(pids: Sequence[Optional[int]], name: Optional[str]) -> str:
    """netstat's PID/Program name, for one process or forked workers.

    >>> pid_name([500, 501], "nginx"), pid_name([], None)
    ('500,501/nginx', '?/?')
    """
    return f"{pid_list(pids)}/{escape(name or '?')}"


def who(pids: str, name: Optional[str], container: Optional[ContainerRecord], width: int) -> str:
    """PID/COMM as netstat names a process, then @ and its container, in
    `width` columns: the container's name is cut first (to 8), then the
    process's ('+' marks a cut; JSON has the whole).

    >>> who("31307", "java", {"name": "backup", "id": "ab"}, 20)
    '31307/java@backup'
    >>> who("31307", "java", {"name": "backup-engine-nightly", "id": "ab"}, 20)
    '31307/java@backup-e+'
    >>> who("4194304", "http-nio-8080-Acceptor", {"name": "tomcat-prod", "id": "ab"}, 20)
    '4194304/http+@tomca+'
    """
    base = f"{pids}/{name or '?'}"
    where = "@" + display_name(container) if container else ""
    if len(base) + len(where) > width:
        room = max(width - len(base), min(len(where), 7))
        if len(where) > room:
            where = where[:room - 1] + "+"
        if len(base) + len(where) > width:
            base = base[:width - len(where) - 1] + "+"
    return escape(base) + escape(where)


def container_words(c: ContainerRecord) -> str:
    """A container as the text outputs describe it.

    >>> container_words({"runtime": "podman", "name": "backup", "id": "0123456789abcdef" * 4,
    ...                  "image": "localhost/backup:1", "pod": None, "namespace": None})
    'podman container backup (image localhost/backup:1, id 0123456789ab)'
    >>> container_words({"runtime": "containerd", "name": None, "id": "ab" * 32, "image": None,
    ...                  "pod": "web-7d9", "namespace": "shop"})
    'containerd container abababababab (id abababababab) of pod shop/web-7d9'
    """
    details = ([f"image {escape(c['image'])}"] if c.get("image") else []) + [f"id {c['id'][:12]}"]
    pod = f" of pod {escape(c.get('namespace') or 'default')}/{escape(c['pod'])}" if c.get("pod") else ""
    return f"{c['runtime']} container {escape(display_name(c))} ({', '.join(details)}){pod}"


def size(n: int) -> str:
    """Bytes as ls -h shows them.

    >>> size(512), size(1536), size(5 * 2**30)
    ('512', '1.5K', '5.0G')
    """
    for unit in ("", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n}" if not unit else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")
