#!/usr/bin/env bash
# Boot the test VM (build-image.sh) on one of its kernels with the project
# on a second disk; the VM runs tests/vm/in-vm.sh for CONFIGS and powers
# off.  The serial console goes to stdout.  Several may run at once: the
# root image is opened copy-on-write (snapshot=on).
#
#   tests/vm/run-vm.sh IMAGE_DIR KERNEL_PREFIX CONFIGS     (e.g. OUT 6.12. auto-btf,live)
set -euo pipefail
OUT=$(realpath "$1"); PREFIX=$2; CONFIGS=$3
TOP=$(cd "$(dirname "$0")/../.." && pwd)
kernel=$(ls "$OUT/boot" | sed -n "s/^vmlinuz-\(${PREFIX//./\\.}.*\)/\1/p" | sort -V | tail -n1)
[ -n "$kernel" ] || { echo "no kernel $PREFIX* in $OUT/boot" >&2; exit 1; }
stage=$(mktemp -d /var/tmp/socktrace-vm.XXXXXX)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/tree/tests"
cp -r "$TOP/src" "$TOP/bpf" "$TOP/bench" "$stage/tree/"
cp -r "$TOP/tests/kernel" "$TOP/tests/vm" "$TOP/tests/unit" "$stage/tree/tests/"
find "$stage/tree" -name __pycache__ -prune -exec rm -rf {} +
mkfs.ext4 -q -F -L socktrace -d "$stage/tree" "$stage/project.img" 64M
# TCG: /dev/kvm exists here, but the CPU offers no virtualization (no vmx/svm).
# One host thread for both vCPUs (thread=single): with a thread each, Linux
# 7.3 hit an int3 Oops at boot while patching its own code (a static key)
# on one vCPU as the other ran it; two VMs run side by side anyway.  The
# benchmark wants both host cores for its one VM: VM_TCG_THREAD=multi.
timeout "${VM_TIMEOUT:-1500}" qemu-system-x86_64 \
    -accel "tcg,thread=${VM_TCG_THREAD:-single}" -cpu max -m 2048 -smp 2 -nographic -no-reboot -nic none \
    -kernel "$OUT/boot/vmlinuz-$kernel" -initrd "$OUT/boot/initrd.img-$kernel" \
    -append "root=/dev/vda rw console=ttyS0 panic=1 init=/sbin/socktrace-vm-init socktrace_configs=$CONFIGS" \
    -drive "file=$OUT/root.img,format=raw,if=virtio,snapshot=on" \
    -drive "file=$stage/project.img,format=raw,if=virtio,readonly=on"
