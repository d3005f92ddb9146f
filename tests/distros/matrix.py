"""The systems socktrace is tested on: Debian userlands (each in a chroot on
this kernel) and Debian kernels (each in the qemu VM, with its release's
userland).  One place: the tests, the image builders' arguments and the
README's "Supported systems" table (checked by tests/distros) come from here.
"""

from __future__ import annotations

from dataclasses import dataclass

# in every userland: what make install needs (the Makefile's
# RUNTIME_PACKAGES, installed beforehand so that apt needs no network inside)
# and what the tests use
BASE = ("python3", "python3-bpfcc", "python3-venv", "linux-libc-dev", "make",
        "ca-certificates", "bpftool", "iproute2", "procps", "kmod", "strace")
# a userland that boots in the VM: Debian's cloud kernel and its headers
KERNEL = ("linux-image-cloud-amd64", "linux-headers-cloud-amd64")


@dataclass(frozen=True)
class Config:
    """One socktrace process in the VM, running tests/vm/vm_suite.py.

    probe: the --probe value ("auto" must pick kfunc on these kernels);
    offsets: "btf" (headers hidden: the headerless path) or "headers" (BTF
    hidden: the kernel's own header tree); buffer: "auto" or "perf"."""
    probe: str
    offsets: str
    buffer: str = "auto"

    @property
    def name(self) -> str:
        return f"{self.probe}-{self.offsets}" + ("-perf" if self.buffer == "perf" else "")

    @property
    def mode(self) -> str:
        return "kfunc" if self.probe == "auto" else self.probe


@dataclass(frozen=True)
class Kernel:
    series: str                # "6.12", or "7.x": the newest 7 in the release
    configs: tuple[Config, ...]
    demo: bool = False         # the Vagrant box's kernel: its demo runs on it (tests/vagrant)
    backports: bool = False    # from the release's backports
    # the host's live tests in the VM: all of them ("live") on the oldest and
    # the newest kernel, which bracket every kernel-version boundary socktrace
    # has (ring buffer 5.8, sock_*_length 6.3, fexit and kprobes alike); the
    # core ("live-core": test_live, test_modes) on 6.12; on the Vagrant box's
    # kernel ("live-cgroups") only what every VM runs beside them, the cgroup
    # parsing: tests/vagrant traces live there, with the same userland, and
    # `make test` stays near its 30 minutes (5 of them the core took)
    live: str = "live"

    @property
    def prefix(self) -> str:
        """How its /boot/vmlinuz-VERSION starts: "6.12." or "7."."""
        return self.series[:-1] if self.series.endswith("x") else self.series + "."


@dataclass(frozen=True)
class Release:
    name: str                  # bullseye
    version: str               # 11
    suite: str                 # what debootstrap is given
    python: str                # what the release ships: checked in its chroot
    bcc: str
    libbpf: str
    kernels: tuple[Kernel, ...] = ()
    backports: tuple[str, ...] = ()   # from SUITE-backports (a newer kernel)
    provision: bool = False    # vagrant/provision.sh: the Vagrant box itself
    bench: tuple[str, ...] = ()  # what make bench-vm runs in its VM (bench/vm_bench.sh)
    stands_in_for: str = ""

    @property
    def packages(self) -> tuple[str, ...]:
        return BASE + (KERNEL if self.kernels else ())


# Every mode meets every kernel.  socktrace takes struct layout from the
# kernel's BTF and, only where a kernel has none, from its headers: "btf"
# configurations hide the headers (the headerless server), "headers" ones
# hide the BTF (a kernel built without it).  kfunc needs BTF itself.  The
# headers path meets kprobe and tracepoint across the matrix, on every
# kernel whose headers the release's bcc can compile (not 7.x with bcc 0.31).
def _configs(headers: str | None, perf: str = "") -> tuple[Config, ...]:
    return tuple(Config(probe, "headers" if probe == headers else "btf",
                        "perf" if probe == perf else "auto")
                 for probe in ("auto", "kprobe", "tracepoint"))


# bench/dns_bench.py's DNS server and client, and systemd-socket-activate,
# which hands unbound its dual-stack socket; installed as tests/apps' servers
# are (never started by their packages)
BENCH = ("unbound", "dnsperf", "systemd")

RELEASES = (
    Release("bullseye", "11", "bullseye", "3.9", "0.18", "0.3",
            kernels=(Kernel("5.10", _configs(headers="tracepoint", perf="tracepoint")),),
            stands_in_for="Ubuntu 22.04 (Python 3.10, bcc 0.18) and RHEL 9 (Python 3.9)"),
    Release("bookworm", "12", "bookworm", "3.11", "0.26", "1.1",
            kernels=(Kernel("6.1", _configs(headers="kprobe"), demo=True, live="live-cgroups"),),
            provision=True, bench=BENCH),
    Release("trixie", "13", "trixie", "3.13", "0.31", "1.5",
            kernels=(Kernel("6.12", _configs(headers="tracepoint", perf="kprobe"), live="live-core"),
                     Kernel("7.x", _configs(headers=None), backports=True)),
            backports=KERNEL, stands_in_for="Ubuntu 24.04 (Python 3.12, bcc 0.29)"),
    # Debian testing: debootstrap knows it as "testing"; the mirror serves
    # its Release file past Valid-Until, so everything comes in at
    # debootstrap time (../shared/notes/kernel-facts.md)
    Release("forky", "14 (testing)", "testing", "3.14", "0.35", "1.7"),
)


def release(name: str) -> Release:
    return next(r for r in RELEASES if r.name == name)


def vm_runs() -> list[tuple[Release, Kernel]]:
    return [(r, k) for r in RELEASES for k in r.kernels]


HOST_KERNEL = "6.18, chroot on the CI machine¹"


def supported_systems() -> str:
    """The README's "Supported systems" table (tests/distros checks that the
    README shows exactly this)."""
    rows = ["| Debian release | Python | bcc | libbpf | kernel | modes verified |",
            "| --- | --- | --- | --- | --- | --- |"]
    for r in RELEASES:
        name = f"{r.version} {r.name}"
        for k in r.kernels:
            modes = ", ".join(f"{c.mode} ({'headers' if c.offsets == 'headers' else 'BTF'}"
                              + (", perf buffer" if c.buffer == "perf" else "") + ")"
                              for c in k.configs)
            where = "VM, backports" if k.backports else "VM"
            rows.append(f"| {name} | {r.python} | {r.bcc} | {r.libbpf} | {k.series} ({where}) | {modes}"
                        + ("; the Vagrant demo" if k.demo else "") + " |")
        rows.append(f"| {name} | {r.python} | {r.bcc} | {r.libbpf} | {HOST_KERNEL} | "
                    "tracepoint (BTF), ring and perf buffer |")
    return "\n".join(rows) + "\n"


# The servers of tests/apps (the application knowledge, apps.toml), from
# Debian 12's packages, in one userland entered as a chroot on this kernel.
# Never started by their packages (build-rootfs.sh's APPS); the tests start
# each in the foreground.
APPS_SUITE = "bookworm"
APPS_BASE = ("iproute2", "procps", "ca-certificates")
APPS = ("nginx", "apache2", "haproxy", "squid", "openssh-server", "openjdk-17-jdk-headless",
        "nodejs", "gunicorn", "python3-uvicorn", "prometheus", "golang-go", "postgresql",
        "redis-server", "samba", "docker.io",
        # UDP: servers, and the clients that ask them
        "dnsmasq-base", "unbound", "chrony", "rsyslog", "snmpd", "snmp", "openvpn",
        "bind9-dnsutils")
