"""The Vagrant demo as its users run it: `vagrant up` with vagrant-libvirt
and the project's Vagrantfile, unchanged, from a debian/bookworm64 box
built here (build-box.sh), then vagrant/README.md's commands through
`vagrant ssh -c`, then `vagrant destroy`.  A job of the matrix
(tests/distros/jobs.py); tests/vagrant/test_vagrant.py asserts on what it
prints.

Whatever happens, it leaves nothing behind: the VM, its volumes, the box's
volume, the storage pool and the network vagrant-libvirt made, the daemons
it started (libvirtd, virtlogd), and the host's network settings libvirt
changed (its iptables chains, net.ipv4.ip_forward).

Prints sections, SOCKTRACE-VAGRANT-BEGIN NAME ... SOCKTRACE-VAGRANT-END NAME
rc=RC seconds=S: box, up, demo, fix, destroy, host (a JSON line: the host
before and after).

    tests/vagrant/vagrant_up.py            (as root)
    SOCKTRACE_LIBVIRT_DRIVER: kvm where libvirt's qemu can use /dev/kvm;
    qemu (software emulation) otherwise: this job's default
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP = HERE.parent.parent
CACHE = Path(os.environ.get("SOCKTRACE_MATRIX_CACHE", "/var/cache/socktrace-matrix"))
BOX_DIR = CACHE / "vagrant-box"
BOX = "debian/bookworm64"
VIRSH = ["virsh", "-c", "qemu:///system"]
TRACE_SECONDS = 45


def section(name: str):
    """Print a section's markers around a block, with its status and time."""
    @contextlib.contextmanager
    def run():
        t0 = time.monotonic()
        print(f"SOCKTRACE-VAGRANT-BEGIN {name}", flush=True)
        rc = 1
        try:
            yield
            rc = 0
        finally:
            print(f"\nSOCKTRACE-VAGRANT-END {name} rc={rc} seconds={time.monotonic() - t0:.0f}",
                  flush=True)
    return run()


def sh(*cmd: str, check: bool = True, timeout: float = 1800, env=None, cwd=None) -> str:
    """Run `cmd`, echo it and its output as it comes (a long `vagrant up`
    shows where it is); its output."""
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         errors="replace", env=env, cwd=cwd)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    lines = []
    try:
        for line in p.stdout:
            lines.append(line)
            print(line, end="", flush=True)
        p.wait()
    finally:
        timer.cancel()
    out = "".join(lines)
    if out and not out.endswith("\n"):
        print(flush=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}")
    return out


def quiet(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace")


# --- the host: what libvirt changes, before and after ----------------------

def libvirt_rules() -> list[str]:
    """The iptables rules and chains, IPv4 and IPv6, that name libvirt's."""
    out = []
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            r = quiet(tool, "-t", table, "-S")
            out += [f"{tool} -t {table} {line}" for line in r.stdout.splitlines() if "LIBVIRT" in line]
    return out


def host_state() -> dict:
    links = quiet("ip", "-o", "link", "show").stdout
    return {
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "libvirt_rules": libvirt_rules(),
        "bridges": sorted(re.findall(r"^\d+: (virbr\d+)", links, re.M)),
        "daemons": [d for d in ("libvirtd", "virtlogd", "virtlockd")
                    if quiet("pgrep", "-x", d).returncode == 0],
        "dnsmasq_libvirt": quiet("pgrep", "-f", "dnsmasq.*libvirt").stdout.split(),
        "domains": quiet(*VIRSH, "list", "--all", "--name").stdout.split()
        if quiet("pgrep", "-x", "libvirtd").returncode == 0 else [],
    }


def remove_libvirt_rules() -> None:
    """Delete the rules that jump to libvirt's chains, then the chains: what
    libvirt adds to the host's firewall and leaves when its networks are
    gone."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = quiet(tool, "-t", table, "-S").stdout.splitlines()
            for line in rules:
                words = line.split()
                if line.startswith("-A ") and "LIBVIRT" in line and not words[1].startswith("LIBVIRT"):
                    quiet(tool, "-t", table, "-D", *words[1:])
            chains = [line.split()[1] for line in rules if line.startswith("-N LIBVIRT")]
            for chain in chains:
                quiet(tool, "-t", table, "-F", chain)
            for chain in chains:
                quiet(tool, "-t", table, "-X", chain)


# --- libvirt ----------------------------------------------------------------

class Libvirt:
    """libvirtd and virtlogd, started here when they are not running (no
    systemd as PID 1 on this machine), stopped again at the end."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.pool_existed = False

    def start(self) -> None:
        for daemon in ("virtlogd", "libvirtd"):
            if quiet("pgrep", "-x", daemon).returncode != 0:
                sh(f"/usr/sbin/{daemon}", "-d")
                self.started.append(daemon)
        for _ in range(100):
            if quiet(*VIRSH, "version").returncode == 0:
                break
            time.sleep(0.1)
        self.pool_existed = quiet(*VIRSH, "pool-info", "default").returncode == 0
        # libvirt-daemon-system's network "default" starts with libvirtd
        # (autostart): vagrant-libvirt makes its own; this one goes
        if "libvirtd" in self.started and "default" in quiet(*VIRSH, "net-list", "--name").stdout.split():
            quiet(*VIRSH, "net-destroy", "default")

    def clean(self) -> None:
        """What vagrant destroy leaves: the box's volume (and the pool, when
        vagrant-libvirt made it), then the daemons started here."""
        if quiet("pgrep", "-x", "libvirtd").returncode == 0:
            for dom in quiet(*VIRSH, "list", "--all", "--name").stdout.split():
                if dom.startswith("vagrant_"):
                    quiet(*VIRSH, "destroy", dom)
                    quiet(*VIRSH, "undefine", dom, "--remove-all-storage")
            for net in ("vagrant-libvirt",):
                quiet(*VIRSH, "net-destroy", net)
                quiet(*VIRSH, "net-undefine", net)
            vols = quiet(*VIRSH, "vol-list", "default").stdout.splitlines()[2:]
            for line in vols:
                name = line.split()[0] if line.split() else ""
                if "bookworm64" in name or name.startswith("vagrant_"):
                    quiet(*VIRSH, "vol-delete", name, "--pool", "default")
            if not self.pool_existed:
                quiet(*VIRSH, "pool-destroy", "default")
                quiet(*VIRSH, "pool-undefine", "default")
        for daemon in reversed(self.started):
            quiet("pkill", "-x", daemon)
            for _ in range(100):
                if quiet("pgrep", "-x", daemon).returncode != 0:
                    break
                time.sleep(0.1)


# --- vagrant ------------------------------------------------------------------

class Vagrant:
    """The vagrant command, run in vagrant/ as a user would, its state kept
    out of the project tree and of root's home."""

    def __init__(self, work: Path):
        self.env = {**os.environ,
                    "VAGRANT_HOME": str(CACHE / "vagrant-home"),
                    "VAGRANT_DOTFILE_PATH": str(work / "dot-vagrant"),
                    "VAGRANT_DEFAULT_PROVIDER": "libvirt",
                    "VAGRANT_CHECKPOINT_DISABLE": "1",
                    "SOCKTRACE_LIBVIRT_DRIVER": os.environ.get("SOCKTRACE_LIBVIRT_DRIVER", "qemu")}

    def __call__(self, *args: str, check: bool = True, timeout: float = 1800) -> str:
        """`vagrant ARGS` in vagrant/, as a user runs it; its output."""
        return sh("vagrant", *args, check=check, timeout=timeout, env=self.env, cwd=TOP / "vagrant")

    def background(self, command: str) -> subprocess.Popen:
        """`vagrant ssh -c COMMAND` in another terminal, as it were."""
        print(f"$ vagrant ssh -c {shlex.quote(command)}   # in another terminal", flush=True)
        return subprocess.Popen(["vagrant", "ssh", "-c", command], cwd=TOP / "vagrant", env=self.env,
                                text=True, errors="replace", stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)

    def add_box(self) -> None:
        listed = self("box", "list", check=False)
        key = (BOX_DIR / "key").read_text().strip()
        stamp = CACHE / "vagrant-home" / "socktrace-box.key"
        if BOX in listed and stamp.exists() and stamp.read_text().strip() == key:
            print(f"box {BOX}: added already")
            return
        self("box", "add", "--force", "--name", BOX, str(BOX_DIR / "bookworm64.box"))
        stamp.write_text(key + "\n")


def tracing(term: subprocess.Popen, lines: list[str], timeout: float = 600) -> None:
    """Collect terminal 1's output in `lines`; return once it says it traces."""
    said = threading.Event()

    def read():
        for line in term.stdout:
            lines.append(line)
            if "Ctrl-C to stop" in line:
                said.set()
        said.set()
    threading.Thread(target=read, daemon=True).start()
    if not said.wait(timeout) or term.poll() not in (None, 0):
        raise RuntimeError("socktrace in the VM never said it traces:\n" + "".join(lines))


def traced(vagrant: Vagrant, trace: str, then: str) -> None:
    """vagrant/README.md's two terminals: `trace` in one (socktrace for a
    while), `then` in the other once it traces; terminal 1's output after."""
    term = vagrant.background(trace)
    lines: list[str] = []
    tracing(term, lines)
    vagrant("ssh", "-c", then, timeout=600)
    term.wait(TRACE_SECONDS + 120)
    print(f"# terminal 1 ({trace}), exit {term.returncode}:")
    time.sleep(0.5)
    print("".join(lines), flush=True)
    if term.returncode != 0:
        raise RuntimeError(f"socktrace in the VM exited {term.returncode}")


def demo(vagrant: Vagrant) -> None:
    traced(vagrant, f"sudo socktrace --duration {TRACE_SECONDS}", "socktrace-demo")
    vagrant("ssh", "-c", "sudo socktrace snapshot --explain -P 4243")
    vagrant("ssh", "-c", "sudo netstat -tupn")


def fix(vagrant: Vagrant) -> None:
    """nginx's fix for 8080 as the advice words it, applied as worded: its
    `change` in place of its `replaces`; then traced again."""
    vagrant("ssh", "-c", "sudo socktrace snapshot --explain -P 8080")
    listed = vagrant("ssh", "-c", "sudo socktrace snapshot --json -P 8080")
    advice = next(r["advice"] for r in (json.loads(line) for line in listed.splitlines()
                                        if line.startswith("{")) if "advice" in r)
    conf = "/etc/nginx/sites-enabled/socktrace-demo.conf"
    edit = (f"sudo python3 -c 'import sys; p, old, new = sys.argv[1:]; t = open(p).read(); "
            f"assert t.count(old) == 1; open(p, \"w\").write(t.replace(old, new))' "
            f"{conf} {shlex.quote(advice['replaces'])} {shlex.quote(advice['change'])}")
    vagrant("ssh", "-c", edit)
    vagrant("ssh", "-c", "sudo nginx -t && sudo systemctl restart nginx")
    traced(vagrant, f"sudo socktrace -P 8080 --duration {TRACE_SECONDS}",
           "curl -s http://127.0.0.1:8080/; curl -s 'http://[::1]:8080/'")


def main() -> int:
    if os.geteuid() != 0:
        print("vagrant_up.py needs root (libvirt's system instance)", file=sys.stderr)
        return 1
    before = host_state()
    libvirt = Libvirt()
    rc = 0
    with tempfile.TemporaryDirectory(prefix="socktrace-vagrant-") as work:
        vagrant = Vagrant(Path(work))
        try:
            with section("box"):
                sh(str(HERE / "build-box.sh"), str(BOX_DIR), timeout=1200)
                vagrant.add_box()
            libvirt.start()
            with section("up"):
                vagrant("up", "--provider=libvirt", timeout=2400)
            with section("demo"):
                demo(vagrant)
            with section("fix"):
                fix(vagrant)
        except Exception as exc:   # the sections say where; cleaning up comes next
            print(f"FAILED: {exc}", flush=True)
            rc = 1
        finally:
            with section("destroy"):
                vagrant("destroy", "-f", check=False, timeout=600)
                libvirt.clean()
                remove_libvirt_rules()
                # libvirt's NAT network turned forwarding on; docker's daemon
                # (tests/containers), started meanwhile, needs it and keeps it
                if before["ip_forward"] == "0" and quiet("pgrep", "-x", "dockerd").returncode != 0:
                    Path("/proc/sys/net/ipv4/ip_forward").write_text("0\n")
    with section("host"):
        print(json.dumps({"before": before, "after": host_state(),
                          "dockerd": quiet("pgrep", "-x", "dockerd").returncode == 0}))
    return rc


if __name__ == "__main__":
    sys.exit(main())
