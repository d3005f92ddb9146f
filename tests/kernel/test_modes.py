"""Which probe mode socktrace takes, and where it takes struct layout from,
on whatever kernel runs the tests: this development machine (no kprobes,
fexit refused, no headers), each VM of the matrix, a laptop with everything.
What the kernel offers is found out without socktrace (capabilities.py).

A module of its own, each test with its own socktrace: no other tracer is
attached meanwhile (Linux 5.10 refuses a second fexit program on a function).
"""

import re
import subprocess

import pytest

import capabilities
from helpers import SOCKTRACE


def test_probe_tracepoint_works_on_any_kernel(socktrace):
    st = socktrace("--probe", "tracepoint")
    assert st.ready["probe"] == "tracepoint"
    assert st.ready["offsets"] == capabilities.expected_offsets()


@pytest.mark.parametrize("mode", ["kprobe", "kfunc"])
def test_function_probe_modes_load_where_the_kernel_allows(socktrace, mode):
    """Where the kernel takes such programs (found out independently:
    tests/kernel/capabilities.py), the mode loads; where not, socktrace
    says why in one line and loads nothing."""
    works = capabilities.kprobes() if mode == "kprobe" else capabilities.fexit()
    if works:
        st = socktrace("--probe", mode)
        assert st.ready["probe"] == mode and st.ready["skipped"] == {}
        return
    r = subprocess.run([SOCKTRACE, "--json", "--probe", mode], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert re.fullmatch(rf"Error: probe mode {mode}: .+\n", r.stderr), r.stderr
    if mode == "kprobe":
        assert "CONFIG_KPROBES is not set" in r.stderr
    else:  # the errno the kernel gave the same program here
        assert re.search(r"refused to (load|attach) an fexit program \(E\w+", r.stderr), r.stderr


def test_auto_picks_the_cheapest_mode_that_works(socktrace):
    st = socktrace()
    want = capabilities.expected_auto_mode(capabilities.fexit(), capabilities.kprobes())
    assert st.ready["probe"] == want
    order = ["kfunc", "kprobe", "tracepoint"]
    assert set(st.ready["skipped"]) == set(order[:order.index(want)])
    assert st.ready["offsets"] == capabilities.expected_offsets()
