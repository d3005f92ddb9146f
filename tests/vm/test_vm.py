"""The tracer on Debian's own kernels (5.10, 6.1, 6.12, 7.x: kprobes and
fentry available, unlike this machine's), each booted in a qemu VM with its
release's userland, in every probe mode, from the kernel's headers and from
its BTF alone; and the Vagrant definition itself (tests/vagrant brings
the Vagrant demo up for real).

Images are built from Debian's packages once and cached
(tests/distros/build.py); tests/distros/jobs.py boots the VMs in the
background while the rest of the suite runs.  One VM per kernel runs every
configuration of tests/distros/matrix.py, one socktrace process each
(tests/vm/vm_suite.py), then the host's own tests/kernel/test_live.py.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from matrix import vm_runs

TOP = Path(__file__).parent.parent.parent

CASES = [pytest.param(rel, kernel, config,
                      id=f"{rel.name}-{kernel.series}-{config.mode}-{config.offsets}"
                         + ("-perf" if config.buffer == "perf" else ""),
                      marks=pytest.mark.matrix("vm", rel.name, kernel.series))
         for rel, kernel in vm_runs() for config in kernel.configs]


def booted(matrix, rel, kernel):
    r = matrix.result(("vm", rel.name, kernel.series))
    assert "SOCKTRACE-VM-DONE" in r.output, r.output[-4000:]
    booted = re.search(r"SOCKTRACE-VM kernel (\S+)", r.output).group(1)
    assert booted.startswith(kernel.prefix), booted
    userland = re.search(r"SOCKTRACE-VM userland (\S+) python (\S+) bcc (\S+)", r.output)
    assert userland.group(1) == rel.name and userland.group(2).startswith(rel.python + "."), \
        userland.group(0)
    return r


def assert_all_passed(output: str) -> None:
    """pytest's last summary line says only "N passed".  Only that line:
    the section also holds the VM's console, where the kernel may say
    "clocksource: ... test skipped!" under emulation (seen once)."""
    summaries = re.findall(r"^=*\s*(\d+ passed.*?)\s*=*$", output, re.M)
    assert summaries, output[-4000:]
    assert not re.search(r"skipped|failed|error|xfail", summaries[-1]), summaries[-1]


@pytest.mark.parametrize("rel, kernel, config", CASES)
def test_tracer_suite_in_vm(matrix, rel, kernel, config):
    r = booted(matrix, rel, kernel)
    assert config.name in r.sections, f"no result for {config.name}:\n{r.output[-4000:]}"
    rc, output, seconds = r.sections[config.name]
    print(f"{rel.name} {kernel.series} {config.name}: {seconds} s")
    assert rc == 0, output[-4000:]
    assert_all_passed(output)
    mode = re.search(rf"SOCKTRACE-VM-MODE {config.name}: probe=(\S+) offsets=(.+?) buffer=", output)
    assert mode.group(1) == config.mode, mode.group(0)


@pytest.mark.parametrize("rel, kernel", [pytest.param(
    rel, kernel, id=f"{rel.name}-{kernel.series}", marks=pytest.mark.matrix("vm", rel.name, kernel.series))
    for rel, kernel in vm_runs()])
def test_live_suite_in_vm(matrix, rel, kernel):
    """The host's live tests (tests/kernel: all of them on the oldest and the
    newest kernel, test_live and test_modes on 6.12, none on the Vagrant
    box's 6.1, which tests/vagrant traces; matrix.Kernel.live), as on this
    machine, on the VM's kernel: the suite holds on a kernel with kprobes,
    fexit and headers too; and the cgroup parsing on every VM."""
    r = booted(matrix, rel, kernel)
    assert kernel.live in r.sections, r.output[-4000:]
    rc, output, seconds = r.sections[kernel.live]
    print(f"{rel.name} {kernel.series} {kernel.live}: {seconds} s")
    assert rc == 0, output[-6000:]
    assert_all_passed(output)


def test_vagrantfile_validates(tmp_path):
    """Every provider block, VirtualBox's included (VirtualBox itself is not
    in Debian: --ignore-provider checks the rest without it); the libvirt
    provider's settings by vagrant-libvirt itself (tests/vagrant runs it)."""
    r = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=TOP / "vagrant",
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "validated successfully" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(["vagrant", "validate"], cwd=TOP / "vagrant", capture_output=True, text=True,
                       timeout=300, env={**os.environ, "VAGRANT_DEFAULT_PROVIDER": "libvirt",
                                         "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot-vagrant")})
    assert r.returncode == 0 and "validated successfully" in r.stdout, r.stdout + r.stderr
    # and it is no rubber stamp: a wrong setting is named
    broken = tmp_path / "Vagrantfile"
    broken.write_text((TOP / "vagrant" / "Vagrantfile").read_text().replace(
        'config.vm.hostname', 'config.vm.hostnme'))
    shutil.copy(TOP / "vagrant" / "provision.sh", tmp_path)
    r = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "hostnme" in r.stdout + r.stderr
