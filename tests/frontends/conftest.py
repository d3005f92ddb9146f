"""The front ends, as people use them: `top` and the table in a real
terminal (tmux), the HTML report in a real browser (headless Chromium).
They run socktrace against this kernel: root, as tests/kernel."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "kernel"))


@pytest.fixture(autouse=True)
def _needs_root():
    assert os.geteuid() == 0, "the front-end tests load BPF programs: run them as root (make test)"
