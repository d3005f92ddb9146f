"""The BPF program in the kernel: the only module that uses bcc.

It compiles, loads and attaches the program (Loader), and offers the
tracer what it needs in domain terms (Probes): raw events, the connections
nobody accepted, the drop counters, detaching.

Probe strategy: which kernel hooks feed the BPF program, and falling back.

Modes, cheapest first (the order `auto` tries them):
  kfunc       fexit on inet_csk_accept, tcp_v4_connect and tcp_v6_connect
              (BPF trampolines)
  kprobe      kprobe/kretprobe on the same functions
  tracepoint  the accept system calls' exit tracepoints, for kernels with
              neither (no CONFIG_KPROBES, fentry refused)
All modes share the raw tracepoint inet_sock_set_state, which follows
connects to the end of their handshake and catches what a function probe
misses (see bpf/socktrace.bpf.c).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import enum
import mmap
import os
import platform
import re
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable
from pathlib import Path

from .kernel import headers
from .kernel.sources import bpf_source_dir
from .kernel.btf import BTF, BTFError
from .kernel.cgroup_bpf import INET_SOCK_RELEASE, UDP4_RECVMSG, UDP4_SENDMSG, UDP6_RECVMSG, \
    UDP6_SENDMSG, CgroupError, CgroupLinks
from .kernel.bpf_syscall import delete_batch, lookup_batch, recursion_misses
from .kernel.ringbuf import RingReader
from .kernel.trampoline import fexit_refused
from .events import TRAFFIC_FAMILIES, RawEvent, decode, ended_flows, stat_index
from .traffic import KernelTraffic
from .signals import Flag
from .vocabulary import Drops


class Mode(str, enum.Enum):
    KFUNC = "kfunc"
    KPROBE = "kprobe"
    TRACEPOINT = "tracepoint"


AUTO_ORDER = (Mode.KFUNC, Mode.KPROBE, Mode.TRACEPOINT)

RINGBUF_PAGES = 1024     # 4 MiB: ~32,000 events (128 bytes each with the ring's header)
PERFBUF_PAGES = 64       # per CPU: 256 KiB each
PENDING_MAX = 65536      # each map's size: children between their clone and accept(), connects in flight
LIVES_MAX = 65536        # open connections followed to their close (--lifetime, --metrics; LRU)
TRAFFIC_MAX = 4096       # (process name, peer family) sums of ended connections' bytes (--metrics)
UDP_FLOWS_MAX = 65536    # UDP flows remembered (LRU): those older than --udp-idle are forgotten first
SKIP_CGROUPS_MAX = 4096  # --container: other containers' cgroups the kernel skips (LRU)
# the cgroup programs of bpf/socktrace.bpf.c (UDP flows) and where each is attached
UDP_PROGRAMS = (("socktrace_udp4_sendmsg", UDP4_SENDMSG), ("socktrace_udp6_sendmsg", UDP6_SENDMSG),
                ("socktrace_udp4_recvmsg", UDP4_RECVMSG), ("socktrace_udp6_recvmsg", UDP6_RECVMSG))
# with --lifetime: a UDP socket's flows end when it is released
UDP_LIFETIME_PROGRAMS = (("socktrace_udp_release", INET_SOCK_RELEASE),)
FEXIT_TARGET = "inet_csk_accept"
HALF_OPEN_MAX_NS = 60 * 10**9  # a pending entry whose handshake never completed


class ProbeError(Exception):
    """No probe mode could be loaded and attached."""


@dataclass(frozen=True)
class KernelFilter:
    """Filters applied in the kernel, before an event costs anything (one
    pid there; several are filtered in userspace only)."""
    mapped_only: bool = False
    pid: int | None = None
    failed: bool = True      # report connects that fail (--no-failed: not)
    udp: bool = True         # follow UDP flows (-t: TCP only, no UDP hook attached)
    udp_idle: float = 60.0   # seconds without a datagram after which a flow is new again
    lifetime: bool = False   # close records (--lifetime): the connections reported are kept
    traffic: bool = False    # bytes by process and peer family (--metrics): kept too, summed
    containers: bool = False  # --container: skip the cgroups Python names (Probes.skip_cgroups)


class Probes:
    """A loaded and attached BPF program, in the tracer's terms: batches
    of raw events, the connections nobody accepted, the drop counters.
    The only object that holds a bcc one (made by Loader.load)."""

    def __init__(self, bpf, mode: Mode, ringbuf: bool, offsets_from: str,
                 buffer_pages: int = RINGBUF_PAGES, cgroup: CgroupLinks | None = None,
                 flow_ends: bool = False):
        self._bpf = bpf
        self._cgroup = cgroup          # the UDP flows' cgroup programs, linked
        self._flow_ends = flow_ends    # UDP flows are followed to their end (--lifetime)
        self.mode = mode
        self.ringbuf = ringbuf
        self.offsets_from = offsets_from          # "BTF" or "kernel headers"
        self.buffer_pages = buffer_pages
        self.skipped: list[tuple[Mode, str]] = []  # the modes tried first, and why not
        self._events: _RingEvents | _PerfEvents | None = None

    def events(self, stop: Flag) -> _RingEvents | _PerfEvents:
        """The event buffer, opened once: poll(ms) waits up to `ms` (or
        until `stop`) and returns the raw events that came; drain() returns
        what is buffered now."""
        if self._events is None:
            self._events = (_RingEvents(self._bpf, self.buffer_pages, stop) if self.ringbuf
                            else _PerfEvents(self._bpf, self.buffer_pages))
        return self._events

    def take_unaccepted(self, older_than_ns: int) -> list[bytes]:
        """Take out of the kernel's maps the children whose handshake
        completed at least `older_than_ns` ago and that no accept the
        probes saw took (0: all of them), as raw events: still queued, or
        taken by an accept the probes missed (record_builder tells them
        apart).
        Children whose handshake never completed go after
        HALF_OPEN_MAX_NS, silently."""
        pending, queued = self._bpf["pending"], self._bpf["queued"]
        now = time.monotonic_ns()   # the clock of bpf_ktime_get_ns()
        taken = []
        for key, value in list(queued.items()):
            if now - value.ts_ns < older_than_ns and key in pending:
                continue
            try:
                del pending[key]
            except KeyError:   # accepted meanwhile: the entry was left behind
                queued.pop(key, None)
                continue
            queued.pop(key, None)
            taken.append(ctypes.string_at(ctypes.addressof(value), ctypes.sizeof(value)))
        for key, cloned in list(pending.items()):
            if now - cloned.value > HALF_OPEN_MAX_NS and key not in queued:
                pending.pop(key, None)
        return taken

    def take_ended_flows(self, idle_ns: int) -> list[bytes]:
        """Take out of the kernel the UDP flows that ended (--lifetime):
        idle for `idle_ns`, or their socket released (events.ended_flows),
        as raw close events.  Two batch reads and two batch deletes, not a
        system call per flow: at a resolver's rate there are tens of
        thousands.  A datagram that comes in the instant its idle flow is
        taken may begin a flow whose entry goes with the old one (that one's
        close then comes twice, the new one's not at all)."""
        if not self._flow_ends:
            return []
        flows, released = self._bpf["udp_flows"], self._bpf["udp_released"]
        rkeys, rvalues = lookup_batch(released.map_fd, 8, 8)
        if rkeys:
            delete_batch(released.map_fd, rkeys, 8)
        gone = dict(zip(memoryview(rkeys).cast("Q"), memoryview(rvalues).cast("Q")))
        key_size, value_size = ctypes.sizeof(flows.Key), ctypes.sizeof(flows.Leaf)
        keys, values = lookup_batch(flows.map_fd, key_size, value_size)
        ended, events = ended_flows(keys, values, key_size, value_size, gone,
                                    time.monotonic_ns(), idle_ns)   # the clock of bpf_ktime_get_ns()
        if ended:
            delete_batch(flows.map_fd, ended, key_size)
        return events

    def skip_cgroups(self, ids: Iterable[int]) -> None:
        """--container: the kernel drops the events of these cgroups (v2
        ids: other containers', record_builder.RecordBuilder.unwanted_cgroups)."""
        table = self._bpf["skip_cgroups"]
        for cgroup_id in ids:
            table[table.Key(cgroup_id)] = table.Leaf(1)

    def drops(self) -> Drops:
        """Each counter of Drops, summed over the CPUs from its own index in
        the `stats` map (events.stat_index), the perf buffer's losses added."""
        stats = self._bpf["stats"]
        counts = {f.name: sum(stats[ctypes.c_int(stat_index(f.name))])
                  for f in dataclasses.fields(Drops) if f.name != "missed_runs"}
        if isinstance(self._events, _PerfEvents):
            counts["lost"] += self._events.lost
        return Drops(**counts, missed_runs=sum(
            recursion_misses(f.fd) for f in self._bpf.funcs.values()))

    def traffic(self) -> KernelTraffic:
        """The bytes of the reported connections as the kernel holds them
        now (--metrics): the ended ones' sums, the open ones' events.
        Sums first: one that ends meanwhile is in neither (and in the sums
        of the next reading), never in both."""
        ended = {}
        for key, value in self._bpf["traffic"].items():
            if not key.process and not (value.bytes_sent or value.bytes_received):
                continue   # reserve_overflow's, unused
            name = (key.process.decode("utf-8", errors="replace"),
                    TRAFFIC_FAMILIES[key.family])
            sent, received = ended.get(name, (0, 0))
            ended[name] = (sent + value.bytes_sent, received + value.bytes_received)
        opened = []
        for _, life in self._bpf["lives"].items():
            c = decode(ctypes.string_at(ctypes.addressof(life.conn), ctypes.sizeof(life.conn)), 0)
            opened.append((life.process.decode("utf-8", errors="replace"), c))
        return KernelTraffic(ended, opened)

    def remember_existing(self, existing: list[tuple[int, RawEvent, str]]) -> None:
        """Give the kernel the connections open before tracing began, as
        (socket cookie, existing_event, process name), for their close
        records (--lifetime)."""
        table = self._bpf["existed"]
        for cookie, event, process in existing:
            life = table.Leaf()
            ctypes.memmove(ctypes.addressof(life.conn), ctypes.addressof(event), ctypes.sizeof(event))
            life.process = process.encode()[:15]
            table[table.Key(cookie)] = life

    def detach(self) -> None:
        """Detach every probe; maps stay readable until close()."""
        if self._cgroup is not None:
            self._cgroup.close()
        b = self._bpf
        for name in list(b.tracepoint_fds):
            b.detach_tracepoint(name)
        for name in list(b.raw_tracepoint_fds):
            b.detach_raw_tracepoint(name)
        for name in list(b.kprobe_fds):
            b.detach_kprobe_event(name)
        for name in list(b.kfunc_exit_fds):
            b.detach_kretfunc(name)
        for name in list(b.kfunc_entry_fds):
            b.detach_kfunc(name)

    def close(self) -> None:
        if self._cgroup is not None:
            self._cgroup.close()
        self._bpf.cleanup()


class _RingEvents:
    """The ring buffer, written without wakeups (socktrace.bpf.c): poll()
    waits out its interval (or a stop) and then reads everything committed
    in one batch, straight from the shared pages (kernel/ringbuf.py)."""

    def __init__(self, bpf, pages: int, stop: Flag):
        self._ring = RingReader.open(bpf["events"].map_fd, pages * mmap.PAGESIZE)
        self._stop = stop

    def poll(self, ms: int) -> list[bytes]:
        self._stop.wait(ms / 1000)
        return self._ring.read()

    def drain(self) -> list[bytes]:
        return self._ring.read()


class _PerfEvents:
    """The per-CPU perf buffer (kernels before 5.8), through bcc: its
    callback only collects the bytes, so nothing can fail inside it (bcc
    prints and swallows a callback's exceptions)."""

    def __init__(self, bpf, pages: int):
        self._batch: list[bytes] = []
        self.lost = 0   # samples the kernel dropped
        bpf["events"].open_perf_buffer(self._on_event, page_cnt=pages, lost_cb=self._on_lost)
        self._poll = bpf.perf_buffer_poll
        # bcc 0.18 (Debian 11) has no perf_buffer_consume(); a poll that
        # does not wait reads what is there just the same
        self._consume = getattr(bpf, "perf_buffer_consume", None) or (lambda: bpf.perf_buffer_poll(0))

    def _on_event(self, cpu, data, size) -> None:
        self._batch.append(ctypes.string_at(data, size))

    def _on_lost(self, count: int) -> None:
        self.lost += count

    def poll(self, ms: int) -> list[bytes]:
        self._poll(ms)
        return self._take()

    def drain(self) -> list[bytes]:
        self._consume()
        return self._take()

    def _take(self) -> list[bytes]:
        batch, self._batch = self._batch, []
        return batch


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of a release string: "6.18.44-fc-v445" -> (6, 18)."""
    m = re.match(r"(\d+)\.(\d+)", release or platform.release())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@lru_cache(maxsize=1)
def kernel_fields() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """The fields bpf/kernel_fields.h lists, as (NAME, struct, field path):
    those read at an offset, and the integers read with read_int().

    >>> fields, ints = kernel_fields()
    >>> fields[0], ints[0]
    (('SKC_FAMILY', 'sock', '__sk_common.skc_family'), ('SKC_IPV6ONLY', 'sock', '__sk_common.skc_ipv6only'))
    """
    text = (bpf_source_dir() / "kernel_fields.h").read_text()
    found = re.findall(r"^KERNEL_(INT_)?FIELD\((\w+),\s*(\w+),\s*([\w.]+)\)", text, re.M)
    return ([(n, st, p) for i, n, st, p in found if not i],
            [(n, st, p) for i, n, st, p in found if i])


def btf_defines(btf: BTF) -> dict[str, int]:
    """The -D values kernel_read.h needs, read from the kernel's BTF."""
    fields, ints = kernel_fields()
    d = {f"OFF_{name}": btf.field(struct, path).offset for name, struct, path in fields}
    # integer fields read with kernel_read.h's read_int(): skc_ipv6only is a
    # bit-field; sk_protocol is a u16 since Linux 5.6 and an 8-bit bit-field
    # before (https://github.com/torvalds/linux/commit/bf9765145b85)
    for name, struct, path in ints:
        f = btf.int_field(struct, path)
        d[f"OFF_{name}"], d[f"{name}_SHIFT"], d[f"{name}_MASK"] = f.offset, f.shift, f.mask
    d["ACCEPT_NARGS"] = btf.func_param_count("inet_csk_accept")
    return d


def reserve_overflow(traffic) -> None:
    """Create the `traffic` map's keys with an empty process name, one per
    peer family, where a name that finds the map full is counted."""
    for family in TRAFFIC_FAMILIES:
        key = traffic.Key()
        key.family = family
        traffic[key] = traffic.Leaf()


def why_unavailable(mode: Mode, tracefs: str,
                    fexit_refusal: Callable[[], str | None] = lambda: None) -> str | None:
    """A one-line reason `mode` cannot work here, if one shows before
    compiling.  For kfunc the kernel is asked with a test program
    (kernel/trampoline.py), rather than through bcc's support_kfunc(),
    which reads all of /proc/kallsyms (0.1 s) and says yes where the
    kernel then refuses."""
    if mode is Mode.KFUNC:
        return fexit_refusal()
    if mode is Mode.KPROBE and not (
            os.path.exists(os.path.join(tracefs, "kprobe_events"))
            or os.path.exists("/sys/bus/event_source/devices/kprobe/type")):
        return "kernel has no kprobes (CONFIG_KPROBES is not set: no kprobe_events in tracefs)"
    return None


def _bcc_error(exc: Exception) -> str:
    """bcc's exception text reduced to its reason, on one line."""
    text = " ".join(str(exc).split())
    if "Need super-user privileges" in text:
        # bcc's wording for EPERM, which fentry/fexit also get where the
        # kernel refuses BPF trampolines to a root user
        return "the kernel refused to load the program (EPERM)"
    m = re.search(r"Failed to (load|attach) BPF program b?'([^']*)'.*?: (.+)$", text)
    if m:
        return f"{m.group(1)} of {m.group(2)} failed: {m.group(3)}"
    return text


class Loader:
    """Compiles and attaches the BPF program in a given mode.

    Data sources are parameters so that tests can point them elsewhere.
    """

    def __init__(self, bcc, kfilter: KernelFilter = KernelFilter(),
                 btf_path: str = "/sys/kernel/btf/vmlinux",
                 release: str | None = None, tracefs: str = "/sys/kernel/tracing",
                 buffer: str = "auto", buffer_pages: int | None = None):
        self.bcc = bcc
        self.kfilter = kfilter
        self.btf_path = btf_path
        self.release = release or platform.release()
        self.tracefs = tracefs
        # BPF_MAP_TYPE_RINGBUF arrived in Linux 5.8
        # (https://github.com/torvalds/linux/commit/457f44363a8894135c85b7a9afd2bd8196db24ab)
        self.ringbuf = (kernel_version(self.release) >= (5, 8)) if buffer == "auto" else buffer == "ring"
        self.buffer_pages = buffer_pages or (RINGBUF_PAGES if self.ringbuf else PERFBUF_PAGES)
        self._tmp = tempfile.TemporaryDirectory(prefix="socktrace-", dir=headers.scratch_dir())
        self._fexit_target: int | None = None   # BTF id of FEXIT_TARGET, once read
        self.header_tree, self.defines, self.offsets_from = self._kernel_layout()

    def _kernel_layout(self) -> tuple[Path | None, dict[str, int], str]:
        """(BCC_KERNEL_SOURCE for bcc, None for bcc's default
        /lib/modules/RELEASE/{build,source}; the -D offsets; their source).

        The kernel's BTF first, the kernel's own headers only without it:
        the BTF path compiles against a small synthetic tree (a VM
        configuration of the test matrix takes 12-20 s, against 37-48 s
        with headers, under emulation), and a distribution's bcc
        can be too old for its newer kernels' headers (trixie's bcc 0.31
        cannot compile Linux 7.3's: its bpf.h lacks struct bpf_task_work)."""
        try:
            with BTF(self.btf_path) as btf:
                defines = btf_defines(btf)
                self._fexit_target = btf.func_id(FEXIT_TARGET)
        except BTFError as exc:
            real = headers.real_header_tree(self.release)
            if real is None:
                raise ProbeError(f"{exc}, and no kernel headers: install "
                                 f"linux-headers-{self.release} (Debian/Ubuntu) or kernel-devel") from None
            env = os.environ.get("BCC_KERNEL_SOURCE")
            return (real if env and Path(env) == real else None), {"SOCKTRACE_KERNEL_HEADERS": 1,
                          "ACCEPT_NARGS": 2 if kernel_version(self.release) >= (6, 10) else 4}, \
                "kernel headers"
        try:
            tree = headers.write_synthetic_tree(Path(self._tmp.name))
        except FileNotFoundError as exc:
            raise ProbeError(str(exc)) from None
        return tree, defines, "BTF"

    def cflags(self, mode: Mode) -> list[str]:
        d = dict(self.defines)
        d[f"PROBE_{mode.name}"] = 1
        d["MAPPED_ONLY"] = int(self.kfilter.mapped_only)
        d["FILTER_PID"] = self.kfilter.pid or 0
        d["NO_FAILED"] = int(not self.kfilter.failed)
        if self.kfilter.containers:
            d["SKIP_CGROUPS_MAX"] = SKIP_CGROUPS_MAX
        d["PENDING_MAX"] = PENDING_MAX
        if self.kfilter.lifetime or self.kfilter.traffic:
            d["LIVES_MAX"] = LIVES_MAX
        if self.kfilter.lifetime:
            d["LIFETIME"] = 1
        if self.kfilter.traffic:
            d["TRAFFIC"] = 1
            d["TRAFFIC_MAX"] = TRAFFIC_MAX
        if self.kfilter.udp:
            d["TRACE_UDP"] = 1
            d["UDP_IDLE_NS"] = f"{int(self.kfilter.udp_idle * 1e9)}ULL"
            d["UDP_FLOWS_MAX"] = UDP_FLOWS_MAX
            if self.sock_length_tracepoints:
                d["HAVE_SOCK_LENGTH"] = 1
        if self.ringbuf:
            d["USE_RINGBUF"] = 1
            d["RINGBUF_PAGES"] = self.buffer_pages
        # -g0: bcc asks clang for debug info, to give the kernel the
        # program's BTF (line info in verifier messages); nothing here needs
        # it, and without it the compile takes 0.37 s instead of 0.45 s
        flags = [f"-D{k}={v}" for k, v in d.items()] + [f"-I{bpf_source_dir()}", "-g0"]
        if self.offsets_from == "kernel headers" and kernel_version(self.release) >= (6, 19):
            # Linux 6.19 is built with -fms-extensions: its headers embed
            # tagged structs anonymously (struct ns_common { ... struct
            # ns_tree; }), which clang otherwise drops as empty declarations
            # (https://github.com/iovisor/bcc/issues/5501)
            flags += ["-fms-extensions", "-Wno-microsoft-anon-tag"]
        return flags

    def load(self, mode: Mode) -> Probes:
        """Compile, load and attach in `mode`; raise ProbeError with a reason."""
        BPF = self.bcc.BPF
        reason = why_unavailable(mode, self.tracefs, self._fexit_refusal)
        if reason:
            raise ProbeError(reason)

        class _BPF(BPF):
            # bcc attaches while constructing; on a failure half-way it
            # leaves the probes attached so far until exit: detach them now
            def _trace_autoload(self):
                try:
                    super()._trace_autoload()
                except Exception:
                    self.cleanup()
                    raise

        src = bpf_source_dir() / "socktrace.bpf.c"
        try:
            with _quiet_stderr(), _environ("BCC_KERNEL_SOURCE", self.header_tree):
                bpf = _BPF(src_file=str(src).encode(), cflags=self.cflags(mode))
        except Exception as exc:
            raise ProbeError(_bcc_error(exc)) from None
        try:
            cgroup = self._link_udp(bpf) if self.kfilter.udp else None
        except (CgroupError, OSError) as exc:
            bpf.cleanup()
            raise ProbeError(f"UDP flows: {exc}") from None
        if self.kfilter.traffic:
            reserve_overflow(bpf["traffic"])
        return Probes(bpf, mode, self.ringbuf, self.offsets_from, self.buffer_pages, cgroup,
                      flow_ends=self.kfilter.udp and self.kfilter.lifetime)

    @property
    def sock_length_tracepoints(self) -> bool:
        """sock:sock_send_length (Linux 6.3+): what sees send() on
        connected UDP sockets."""
        return os.path.isdir(os.path.join(self.tracefs, "events/sock/sock_send_length"))

    def _link_udp(self, bpf) -> CgroupLinks:
        """The cgroup programs bcc compiled, loaded and linked to the cgroup
        v2 root (kernel/cgroup_bpf.py: bcc cannot, on every version)."""
        lib = self.bcc.libbcc.lib
        links = CgroupLinks()
        try:
            license = lib.bpf_module_license(bpf.module)
            programs = UDP_PROGRAMS + (UDP_LIFETIME_PROGRAMS if self.kfilter.lifetime else ())
            for name, attach_type in programs:
                fn = name.encode()
                links.attach(lib.bpf_function_start(bpf.module, fn),
                             lib.bpf_function_size(bpf.module, fn), license, attach_type, fn)
        except BaseException:
            links.close()
            raise
        return links

    def _fexit_refusal(self) -> str | None:
        if self._fexit_target is None:
            try:
                with BTF(self.btf_path) as btf:
                    self._fexit_target = btf.func_id(FEXIT_TARGET)
            except BTFError as exc:
                return f"no fexit without kernel BTF: {exc}"
        return fexit_refused(self._fexit_target)

    def load_first(self, modes: tuple[Mode, ...]) -> Probes:
        """Try `modes` in order; the first that loads wins.  The reasons of the
        others are kept in Probes.skipped."""
        skipped: list[tuple[Mode, str]] = []
        for mode in modes:
            try:
                probes = self.load(mode)
            except ProbeError as exc:
                skipped.append((mode, str(exc)))
                continue
            probes.skipped = skipped
            return probes
        if len(skipped) == 1:
            raise ProbeError(f"probe mode {skipped[0][0].value}: {skipped[0][1]}")
        raise ProbeError("no probe mode works here: " +
                         "; ".join(f"{m.value}: {r}" for m, r in skipped))

    def close(self) -> None:
        self._tmp.cleanup()


@contextlib.contextmanager
def _environ(name: str, value: Path | None):
    """Set (or with None, unset) an environment variable for the duration
    of a bcc call."""
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = str(value)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def _quiet_stderr():
    """libbpf and LLVM write load/verifier chatter to fd 2; the reason we
    need comes back in the exception.  Keep the text for a compile error."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except Exception as exc:
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            if "error:" in text:  # a compiler error is worth showing whole
                first = next(l for l in text.splitlines() if "error:" in l)
                exc.args = (f"compiling the BPF program failed: {first.strip()}",)
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
