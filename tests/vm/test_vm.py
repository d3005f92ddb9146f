"""The tracer on a real distro kernel (Debian 12, kprobes and fentry
available), in a qemu VM built from Debian's packages, in every mode and in
the headerless path; and the Vagrant definition of the same VM.

The image is cached in $SOCKTRACE_VM_CACHE (default /var/cache/socktrace-vm)
and rebuilt when build-image.sh, vagrant/provision.sh or the demo change.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TOP = HERE.parent.parent
CACHE = os.environ.get("SOCKTRACE_VM_CACHE", "/var/cache/socktrace-vm")
CONFIGS = ["kfunc", "kprobe", "tracepoint", "headerless"]   # and the "demo" run


@pytest.fixture(scope="session")
def vm(pytestconfig):
    t0 = time.monotonic()
    build = subprocess.run([str(HERE / "build-image.sh"), CACHE], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    t1 = time.monotonic()
    run = subprocess.run([str(HERE / "run-vm.sh"), CACHE], capture_output=True, text=True,
                         errors="replace")
    t2 = time.monotonic()
    console = run.stdout
    Path(CACHE, "console.log").write_text(console)
    results = {}
    for m in re.finditer(r"SOCKTRACE-VM-BEGIN (\w+)\r?\n(.*?)SOCKTRACE-VM-END \1 rc=(\d+) seconds=(\S+)",
                         console, re.S):
        results[m.group(1)] = (int(m.group(3)), m.group(2), m.group(4))
    report = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    lines = [f"vm image: {build.stdout.strip()} ({t1 - t0:.0f} s)",
             f"vm run: {t2 - t1:.0f} s, exit {run.returncode}"]
    lines += [f"vm {c}: rc={r[0]} in {r[2]} s" for c, r in results.items()]
    lines += re.findall(r"SOCKTRACE-VM-MODE .*", console) + re.findall(r"SOCKTRACE-VM kernel .*", console)
    if report:
        report.write_line("\n".join(lines))
    assert "SOCKTRACE-VM-DONE" in console, console[-3000:]
    return results


@pytest.mark.parametrize("config", CONFIGS)
def test_tracer_suite_in_vm(vm, config):
    assert config in vm, f"no result for {config}"
    rc, output, _ = vm[config]
    assert rc == 0, output[-4000:]
    assert re.search(r"\d+ passed", output) and "skipped" not in output and "failed" not in output


def test_vagrantfile_validates(tmp_path):
    r = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=TOP / "vagrant",
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "validated successfully" in r.stdout, r.stdout + r.stderr
    # and it is no rubber stamp: a wrong setting is named
    broken = tmp_path / "Vagrantfile"
    broken.write_text((TOP / "vagrant" / "Vagrantfile").read_text().replace(
        'config.vm.hostname', 'config.vm.hostnme'))
    shutil.copy(TOP / "vagrant" / "provision.sh", tmp_path)
    r = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "hostnme" in r.stdout + r.stderr


def test_demo_shows_the_puzzle_and_the_answer(vm):
    """The Vagrant box's demo, run in the VM: netstat shows the Java server's
    IPv4 connection as tcp6; socktrace marks it MAPPED and names java."""
    assert "demo" in vm
    _, out, _ = vm["demo"]
    assert re.search(r"accept +\d+/java +127\.0\.0\.1:4243 +127\.0\.0\.1:\d+ +tcp6 MAPPED 0", out)
    assert re.search(r"accept +\d+/nginx +127\.0\.0\.1:8080 .* tcp6 MAPPED 0", out)
    assert re.search(r"accept +\d+/nginx +\[::1\]:8081 .* tcp6 +1", out)
    assert re.search(r"accept +\d+/sshd +127\.0\.0\.1:22 .* tcp +-", out)
    assert re.search(r"accept +\d+/dualstack-c +127\.0\.0\.1:7070 .* tcp6 MAPPED 0", out)
    assert re.search(r"tcp6 +0 +0 127\.0\.0\.1:4243 +127\.0\.0\.1:\d+ +ESTABLISHED \d+/java", out)
    assert re.search(r"tcp6 MAPPED 127\.0\.0\.1:4243 .* ESTABLISHED \d+/java +via \[::\]:4243 v6only=0", out)
    assert "-Djava.net.preferIPv4Stack=true" in out
