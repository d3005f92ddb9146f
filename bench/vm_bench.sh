#!/usr/bin/env bash
# bench/conn_bench.py and dns_bench.py in the Debian VM of tests/vm (Linux 6.1
# with kprobes and fentry), where every socktrace probe mode and bcc's own
# tools run.  qemu
# emulates the CPU (TCG), so absolute rates are far below the host's; the
# ratios within the run are what compare.
#
# Writes bench/results/conn-vm.{json,md}, syscall-vm.{json,md} (what an
# unrelated system call costs with each probe mode) and dns-vm.{json,md}
# (UDP: dnsperf through a dual-stack unbound, new flows).  Run as root:
# make bench; bench/vm_bench.sh bench-dns runs the DNS bench alone.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
# the bookworm image of the test matrix (tests/distros/matrix.py), Linux 6.1
IMAGE=$(python3 "$TOP/tests/distros/build.py" bookworm --image)
console=$(mktemp)
trap 'rm -f "$console"' EXIT
# CONFIG: bench (everything), or bench-dns (bench/dns_bench.py alone)
CONFIG=${1:-bench}
VM_TCG_THREAD=multi VM_TIMEOUT=${VM_TIMEOUT:-3600} "$TOP/tests/vm/run-vm.sh" "$IMAGE" 6.1. "$CONFIG" | tr -d '\r' > "$console"
cp "$console" "$IMAGE/bench-console.log"   # the rounds, for a look afterwards
grep -q "SOCKTRACE-VM-END $CONFIG rc=0" "$console" || { tail -40 "$console"; echo "vm bench failed" >&2; exit 1; }
mkdir -p "$HERE/results"
for f in conn-vm.json conn-vm.md syscall-vm.json syscall-vm.md dns-vm.json dns-vm.md; do
    grep -q "^SOCKTRACE-VM-FILE $f\$" "$console" || continue
    awk -v f="$f" '$0 == "SOCKTRACE-VM-FILE " f {on=1; next} /^SOCKTRACE-VM-FILE-END/ {on=0} on' \
        "$console" > "$HERE/results/$f"
done
for f in conn-vm.md syscall-vm.md dns-vm.md; do
    if grep -q "^SOCKTRACE-VM-FILE $f\$" "$console"; then cat "$HERE/results/$f"; fi
done
