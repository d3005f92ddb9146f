"""The real servers of Debian's packages, traced by socktrace on this
kernel: every entry of apps.toml that names a test here has it.

They wait for the servers' userland (tests/distros/build.py build_apps,
started in the background with the matrix's jobs) and need root.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))

from approot import AppRoot  # noqa: E402


@pytest.fixture
def root(matrix):
    assert os.geteuid() == 0, "the application tests load BPF programs: run them as root (make test)"
    r = AppRoot(matrix.futures[("apps", "servers")].result())
    yield r
    r.close()
