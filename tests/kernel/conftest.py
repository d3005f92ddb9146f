"""Real BPF, real sockets: socktrace runs as a subprocess against this kernel.

These tests need root (CI runs as root); they fail, never skip, without it.
"""

import os

import pytest

import capabilities
from helpers import Peer, Socktrace


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/kernel" in str(item.fspath):
            item.add_marker(pytest.mark.root)


@pytest.fixture(autouse=True)
def _needs_root():
    assert os.geteuid() == 0, "the kernel tests load BPF programs: run them as root (make test)"


@pytest.fixture(autouse=True, scope="session")
def _capabilities_first():
    """What the kernel offers is asked before any socktrace runs
    (capabilities.fexit_errno says why)."""
    if os.geteuid() == 0:
        capabilities.fexit()


@pytest.fixture
def socktrace():
    started = []

    def start(*args, **kwargs):
        st = Socktrace(*args, **kwargs)
        started.append(st)
        return st
    yield start
    for st in started:
        if st.proc.poll() is None:
            st.proc.kill()
            st.proc.wait()


@pytest.fixture
def peer():
    peers = []

    def start(*args):
        p = Peer(*args)
        peers.append(p)
        return p
    yield start
    for p in peers:
        p.close()
