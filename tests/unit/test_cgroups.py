"""The container or unit behind a process, from /proc/PID/cgroup as real
systems write it (cgroup-lines.md: docker, containerd and CRI-O under
Kubernetes, podman, systemd-nspawn, LXC, host services; v1, hybrid and
v2), and from the system these tests run on (a host, a chroot, a VM)."""

import re
from pathlib import Path

import pytest

from socktrace.containers import HOST, Containers, Described, parse_cgroup
from socktrace.procinfo import ProcessCache

ENTRY = re.compile(r"^## (.+?)\nsource: (.+?)\nexpect: (.+?)\n.*?```\n(.*?)```", re.S | re.M)


def recorded():
    text = (Path(__file__).parent / "cgroup-lines.md").read_text()
    for title, source, expect, lines in ENTRY.findall(text):
        want = dict(field.split("=", 1) for field in expect.split())
        yield pytest.param(lines, {k: None if v == "-" else v for k, v in want.items()},
                           id=title[:60])


CASES = list(recorded())


def test_the_recorded_lines_cover_every_runtime_and_layout():
    runtimes = {c.values[1]["runtime"] for c in CASES}
    assert runtimes >= {"docker", "podman", "containerd", "cri-o", "cri", "systemd-nspawn", "lxc", None}
    assert len(CASES) >= 80
    text = "".join(c.values[0] for c in CASES)
    assert "\n0::/" in text and "name=systemd:" in text   # v2, and v1's systemd hierarchy


@pytest.mark.parametrize("lines,want", CASES)
def test_recorded_cgroup_lines(lines, want):
    got = parse_cgroup(lines)
    assert {"runtime": got.runtime, "id": got.id, "pod_uid": got.pod_uid, "unit": got.unit} == want


def test_this_systems_own_processes():
    """Wherever the tests run (a host, the matrix's chroots and VMs, none
    of them in a container), this process and pid 1 are no container's."""
    for pid in ("self", "1"):
        owner = parse_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
        assert owner.runtime is None and owner.id is None, (pid, owner)


class Asked:
    def __init__(self):
        self.calls = []

    def describe(self, runtime, id):
        self.calls.append((runtime, id))
        return Described(name="web", image="localhost/app:1")


def test_a_container_is_asked_of_its_runtime_once_per_cgroup(tmp_path):
    """Two processes of one container (a server and its worker) cost one
    question to the runtime; a host process none."""
    cid = "c" * 64
    for pid, cgroup in ((10, f"0::/libpod_parent/libpod-{cid}\n"), (11, f"0::/libpod_parent/libpod-{cid}\n"),
                        (12, "0::/system.slice/nginx.service\n")):
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "comm").write_text("python3\n")
        (d / "cmdline").write_bytes(b"python3\0app.py\0")
        (d / "cgroup").write_text(cgroup)
    runtimes = Asked()
    cache = ProcessCache(str(tmp_path), containers=Containers(runtimes))
    first, second, host = cache.process(10), cache.process(11), cache.process(12)
    assert first.container == second.container == {
        "runtime": "podman", "id": cid, "name": "web", "image": "localhost/app:1", "pod": None,
        "namespace": None, "pod_uid": None}
    assert (host.container, host.unit) == (None, "nginx.service")
    assert runtimes.calls == [("podman", cid)]


def test_a_process_gone_before_it_was_looked_at_has_no_container(tmp_path):
    cache = ProcessCache(str(tmp_path), containers=Containers(Asked()))
    assert cache.process(99).container is None


def test_nothing_in_a_cgroup_file_is_no_container():
    assert parse_cgroup("") == HOST
    assert parse_cgroup("0::/\n") == HOST
