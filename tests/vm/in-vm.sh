#!/bin/sh
# PID 1 of the test VM (started by /sbin/socktrace-vm-init from the project
# disk): run the tracer's end-to-end suite in every configuration, print the
# results between markers on the serial console, power off.
export PATH=/tmp/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -o remount,rw / 2>/dev/null
ip link set lo up
echo 1 > /proc/sys/kernel/sysrq
# run-vm.sh ... auto-btf,live -> socktrace_configs=auto-btf,live on the kernel command line
for arg in $(cat /proc/cmdline); do
    case $arg in socktrace_configs=*) SOCKTRACE_VM_CONFIGS=$(echo "${arg#*=}" | tr , ' ') ;; esac
done
echo "SOCKTRACE-VM kernel $(uname -r) up $(cut -d' ' -f1 /proc/uptime) s"

# socktrace from the (read-only) project disk, run by the image's venv
# (/opt/socktrace-deps: this release's Python with the project's
# dependencies and pytest; the VM has no network for pip)
PY=/opt/socktrace-deps/bin/python
mkdir -p /tmp/bin
printf '#!/bin/sh\nexec %s -m socktrace "$@"\n' "$PY" > /tmp/bin/socktrace
chmod +x /tmp/bin/socktrace
export PYTHONPATH=/socktrace/src PYTHONDONTWRITEBYTECODE=1 SOCKTRACE=/tmp/bin/socktrace
echo "SOCKTRACE-VM userland $(. /etc/os-release; echo "$VERSION_CODENAME") python $($PY -c 'import platform; print(platform.python_version())') bcc $(dpkg-query -W -f '${Version}' python3-bpfcc)"

run() {  # run CONFIG: PROBE-OFFSETS[-perf], e.g. auto-headers, kprobe-btf-perf
    config=$1
    probe=${config%%-*}
    case $config in *-headers*) offsets=headers ;; *) offsets=btf ;; esac
    case $config in *-perf) buffer=perf ;; *) buffer=auto ;; esac
    echo "SOCKTRACE-VM-BEGIN $config"
    start=$(cut -d' ' -f1 /proc/uptime)
    if [ "$offsets" = btf ]; then   # hide the kernel headers: the BTF path must work alone
        for d in /usr/src/linux-headers-*; do mount -t tmpfs tmpfs "$d"; done
    else                            # hide the BTF: a kernel built without it, headers installed
        : > /tmp/no-btf; mount --bind /tmp/no-btf /sys/kernel/btf/vmlinux
    fi
    SOCKTRACE_TEST_PROBE=$probe SOCKTRACE_TEST_OFFSETS=$offsets SOCKTRACE_TEST_BUFFER=$buffer \
        SOCKTRACE_TEST_CONFIG=$config \
        $PY -m pytest -q -s --color=no -p no:cacheprovider -o addopts="" --rootdir=/tmp \
        /socktrace/tests/vm/vm_suite.py
    rc=$?
    if [ "$offsets" = btf ]; then
        for d in /usr/src/linux-headers-*; do umount "$d"; done
    else
        umount /sys/kernel/btf/vmlinux
    fi
    echo "SOCKTRACE-VM-END $config rc=$rc seconds=$(awk -v a="$start" '{print int($1 - a)}' /proc/uptime)"
}

# Two --lifetime tests whose kernel part (the close records' fields, the
# bytes in /metrics) the others check on every kernel; what they add is the
# table's and the report's formatting, the same on any kernel: 45 s under
# emulation, run on the host and in the chroots.
LIVE_HOST_ONLY="not test_close_records_in_the_table_and_not_in_the_connection_metrics \
and not test_report_gives_each_listeners_traffic_by_family"

live() {  # the host's live-tracer tests, unchanged, on this kernel; the cgroup
          # parsing against recorded files and this VM's own processes
          # (live-core: the core of them; live-cgroups: none; matrix.Kernel.live)
    name=$1
    case $name in
    live) tests="tests/kernel/test_live.py tests/kernel/test_modes.py tests/kernel/test_lifecycle.py
                 tests/kernel/test_udp.py tests/kernel/test_lifetime.py
                 tests/kernel/test_outputs.py::test_plain_accept_syscall_on_a_dual_stack_listener" ;;
    live-core) tests="tests/kernel/test_live.py tests/kernel/test_modes.py" ;;
    *) tests= ;;
    esac
    echo "SOCKTRACE-VM-BEGIN $name"
    start=$(cut -d' ' -f1 /proc/uptime)
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
    # shellcheck disable=SC2086  # the list of tests
    (cd /socktrace && $PY -m pytest -q --color=no -p no:cacheprovider -o addopts="" --rootdir=/tmp \
        $tests tests/unit/test_cgroups.py -k "$LIVE_HOST_ONLY" --durations=20)
    rc=$?
    echo "SOCKTRACE-VM-END $name rc=$rc seconds=$(awk -v a="$start" '{print int($1 - a)}' /proc/uptime)"
}

dnsbench() {  # bench/dns_bench.py: UDP through unbound's dual-stack socket, every probe mode
    BENCH_RESULTS=/tmp/results BENCH_NAME=dns-vm \
        BENCH_MACHINE_NOTE=" (Debian 12 in qemu, TCG software emulation)" \
        ROUNDS=${BENCH_ROUNDS:-3} FLOWS=${BENCH_FLOWS:-6000} \
        $PY /socktrace/bench/dns_bench.py
}

bench_dns() {  # the DNS bench alone (make bench-vm runs it in bench)
    echo "SOCKTRACE-VM-BEGIN bench-dns"
    start=$(cut -d' ' -f1 /proc/uptime)
    mkdir -p /tmp/results
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
    dnsbench > /tmp/results/bench.out 2>&1
    rc=$?
    cat /tmp/results/bench.out
    for f in dns-vm.json dns-vm.md; do
        echo "SOCKTRACE-VM-FILE $f"; cat "/tmp/results/$f" 2>/dev/null; echo "SOCKTRACE-VM-FILE-END"
    done
    echo "SOCKTRACE-VM-END bench-dns rc=$rc seconds=$(awk -v a="$start" '{print int($1 - a)}' /proc/uptime)"
}

bench() {  # bench/conn_bench.py on this kernel, where bcc's tools run too
    echo "SOCKTRACE-VM-BEGIN bench"
    start=$(cut -d' ' -f1 /proc/uptime)
    mkdir -p /tmp/results /var/log/nginx /var/lib/nginx
    hostname socktrace-vm
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
    mount -t debugfs nodev /sys/kernel/debug 2>/dev/null
    BENCH_RESULTS=/tmp/results BENCH_NAME=conn-vm BENCH_MODES="kfunc kprobe tracepoint" \
        BENCH_MACHINE_NOTE=" (Debian 12 in qemu, TCG software emulation)" \
        N=${BENCH_N:-3000} ROUNDS=${BENCH_ROUNDS:-3} BENCH_AUTO_STARTS=1 \
        $PY /socktrace/bench/conn_bench.py > /tmp/results/bench.out 2>&1
    rc=$?
    BENCH_RESULTS=/tmp/results BENCH_NAME=syscall-vm BENCH_MODES="kfunc kprobe tracepoint" \
        BENCH_MACHINE_NOTE=" (Debian 12 in qemu, TCG software emulation)" \
        SYSCALLS=${BENCH_SYSCALLS:-200000} ROUNDS=${BENCH_ROUNDS:-3} \
        $PY /socktrace/bench/syscall_bench.py >> /tmp/results/bench.out 2>&1 || rc=1
    dnsbench >> /tmp/results/bench.out 2>&1 || rc=1
    cat /tmp/results/bench.out
    for f in conn-vm.json conn-vm.md syscall-vm.json syscall-vm.md dns-vm.json dns-vm.md; do
        echo "SOCKTRACE-VM-FILE $f"; cat "/tmp/results/$f" 2>/dev/null; echo "SOCKTRACE-VM-FILE-END"
    done
    echo "SOCKTRACE-VM-END bench rc=$rc seconds=$(awk -v a="$start" '{print int($1 - a)}' /proc/uptime)"
}

for config in $SOCKTRACE_VM_CONFIGS; do
    case $config in
    live|live-core|live-cgroups) live "$config" ;;
    bench) bench ;;
    bench-dns) bench_dns ;;
    *)  run "$config" ;;
    esac
done
echo "SOCKTRACE-VM-DONE"
sync
echo o > /proc/sysrq-trigger
sleep 10
