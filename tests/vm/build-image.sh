#!/usr/bin/env bash
# Make a matrix userland (tests/distros/build-rootfs.sh: OUT/rootfs) into
# the test VM's disk image, and take out the kernels it carries for qemu's
# -kernel/-initrd.  Cached: redone only when the tree's key changes.
#
#   tests/vm/build-image.sh OUT   -> OUT/root.img, OUT/boot/{vmlinuz,initrd.img}-VERSION
set -euo pipefail
OUT=$(realpath "$1")
[ -f "$OUT/key" ] || { echo "no userland in $OUT: run build-rootfs.sh first" >&2; exit 1; }
if [ -f "$OUT/root.img" ] && cmp -s "$OUT/key" "$OUT/image.key"; then
    echo "vm image $(basename "$OUT"): cached"
    exit 0
fi
t0=$(date +%s)
rm -rf "$OUT/root.img" "$OUT/image.key" "$OUT/boot"
mkdir -p "$OUT/boot"
cp "$OUT"/rootfs/boot/vmlinuz-* "$OUT"/rootfs/boot/initrd.img-* "$OUT/boot/"
size=$(( $(du -sm "$OUT/rootfs" | cut -f1) * 13 / 10 + 1024 ))
mkfs.ext4 -q -F -L root -d "$OUT/rootfs" "$OUT/root.img" "${size}M"
cp "$OUT/key" "$OUT/image.key"
echo "vm image $(basename "$OUT"): built in $(($(date +%s) - t0)) s (${size} MB)"
