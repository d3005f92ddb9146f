#!/usr/bin/env bash
# Boot the test VM built by build-image.sh with the project on a second disk;
# the VM runs tests/vm/in-vm.sh and powers off.  The serial console goes to
# stdout.
#
#   tests/vm/run-vm.sh IMAGE_DIR
set -euo pipefail
OUT=$(realpath "$1")
TOP=$(cd "$(dirname "$0")/../.." && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage" "$OUT/project.img"' EXIT
mkdir "$stage/tests"
cp -r "$TOP/src" "$TOP/bpf" "$TOP/bench" "$stage/"
cp -r "$TOP/tests/kernel" "$TOP/tests/vm" "$stage/tests/"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
mkfs.ext4 -q -F -L socktrace -d "$stage" "$OUT/project.img" 64M
# TCG: /dev/kvm exists here but qemu with KVM hangs (shared/notes/kernel-facts.md)
exec timeout "${VM_TIMEOUT:-1500}" qemu-system-x86_64 \
    -accel tcg -cpu max -m 2048 -smp 2 -nographic -no-reboot -nic none \
    -kernel "$OUT/vmlinuz" -initrd "$OUT/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 panic=1 init=/sbin/socktrace-vm-init ${VM_CONFIGS:+socktrace_configs=$VM_CONFIGS}" \
    -drive "file=$OUT/root.img,format=raw,if=virtio,snapshot=on" \
    -drive "file=$OUT/project.img,format=raw,if=virtio,readonly=on"
