"""Which probe mode socktrace takes, and where it takes struct layout from,
on whatever kernel runs the tests: this development machine (no kprobes,
fexit refused, no headers), each VM of the matrix, a laptop with everything.
What the kernel offers is found out without socktrace (capabilities.py).

A module of its own, each test with its own socktrace: no other tracer is
attached meanwhile, but where a test starts a second one on purpose.
"""

import re
import resource
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


def test_a_second_socktrace_under_a_locked_memory_limit_loads_the_same(socktrace):
    """Before Linux 5.11 BPF memory counts against RLIMIT_MEMLOCK, for all
    of root's processes together: beside a first socktrace, a second one
    under a 64 KiB limit (the default of many systems) once got EPERM from
    its fexit check and fell back to kprobes (Debian 11's 5.10)."""
    def low_limit():
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (64 << 10, 64 << 10))
    first = socktrace()
    second = socktrace(preexec_fn=low_limit)
    assert (second.ready["probe"], second.ready["skipped"]) == \
        (first.ready["probe"], first.ready["skipped"])
    assert second.stop() == 0 and first.stop() == 0


def attached_tracepoints(pid: int) -> set[str]:
    """The tracepoints (classic and raw) process `pid` has BPF programs on."""
    import json
    out = subprocess.run(["bpftool", "-j", "perf", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {p["tracepoint"] for p in json.loads(out or "[]")
            if p["pid"] == pid and p["fd_type"] in ("tracepoint", "raw_tracepoint")}


@pytest.mark.parametrize("mode", ["tracepoint", "kprobe", "kfunc"])
def test_only_the_tracepoint_mode_attaches_system_call_tracepoints(socktrace, mode):
    """Any system call tracepoint puts every system call of every task on
    the kernel's slow path: the function-probe modes attach none; the
    tracepoint mode only the exits of accept and accept4."""
    if mode != "tracepoint" and not (capabilities.kprobes() if mode == "kprobe" else capabilities.fexit()):
        mode = "tracepoint"   # what this kernel offers; the test above covers the refusal
    st = socktrace("--probe", mode)
    found = attached_tracepoints(st.proc.pid)
    syscalls = {t for t in found if t.startswith("sys_")}
    assert "inet_sock_set_state" in found
    assert syscalls == ({"sys_exit_accept", "sys_exit_accept4"} if mode == "tracepoint" else set())
