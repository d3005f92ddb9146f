"""socktrace on each Debian userland of the matrix, on this kernel: installed
with `make install` in a chroot built from Debian's packages, then the unit
tests and the live tracer's tests with that release's own Python, bcc and
libbpf.  The userlands are built once and cached (tests/distros/build.py).
"""

import re
from pathlib import Path

import pytest

from matrix import RELEASES, release, supported_systems

USERLANDS = [r.name for r in RELEASES]


def is_version(got: str, want: str) -> bool:
    """'0.3-2' is version 0.3, '3.9.2' is 3.9, '0.30' is not 0.3."""
    return re.match(rf"{re.escape(want)}(?!\d)", got) is not None


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.matrix("userland", n))
                                  for n in USERLANDS])
def test_live_tracer_in_userland(matrix, name):
    rel = release(name)
    r = matrix.result(("userland", name))
    print(f"{name}: {r.seconds:.0f} s")
    versions = re.search(r"SOCKTRACE-USERLAND \S+ python=(\S+) bcc=(\S+) libbpf=\S+ (?:\d+:)?(\S+)", r.output)
    assert versions, r.output[-3000:]
    # the release is what the matrix (and the README's table) says it is
    assert [is_version(got, want) for got, want in zip(versions.groups(), (rel.python, rel.bcc, rel.libbpf))] \
        == [True, True, True], versions.group(0)
    assert r.rc == 0, r.output[-6000:]
    summary = r.output.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and not re.search(r"failed|error|skipped", summary), summary


@pytest.mark.matrix("provision", "bookworm")
def test_vagrant_provisioning_without_kernel_headers_on_the_mirror(matrix):
    """The Vagrant box's provisioning for a kernel whose headers Debian's
    mirror no longer has (this machine's), then socktrace on a mapped
    connection: it must take the headerless path, not fail."""
    r = matrix.result(("provision", "bookworm"))
    assert r.rc == 0, r.output[-6000:]
    kernel = re.search(r"SOCKTRACE-PROVISION kernel (\S+)", r.output).group(1)
    assert f"linux-headers-{kernel} is not on the mirror;" in r.output
    assert "SOCKTRACE-PROVISION done" in r.output
    traced = re.search(r"SOCKTRACE-PROVISION traced: probe=(\S+) offsets=(\S+) mapped=(\S+) "
                       r"sock_family=(\S+) rport=(\d+) client_port=(\d+)", r.output)
    assert traced, r.output[-3000:]
    assert traced.group(2, 3, 4) == ("BTF", "True", "AF_INET6")
    assert traced.group(5) == traced.group(6)


def test_readme_support_table_is_the_matrix():
    readme = (Path(__file__).parent.parent.parent / "README.md").read_text()
    table = re.search(r"<!-- supported-systems:.*?-->\n(.*?)<!-- /supported-systems -->", readme, re.S)
    assert table and table.group(1) == supported_systems()
