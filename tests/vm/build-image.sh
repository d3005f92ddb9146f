#!/usr/bin/env bash
# Build the test VM: Debian bookworm from Debian's packages (debootstrap),
# with Debian's cloud kernel and its matching headers, provisioned by the
# same vagrant/provision.sh as the Vagrant box.  Cached in OUT and rebuilt
# only when its inputs change.
#
#   tests/vm/build-image.sh OUT      -> OUT/root.img OUT/vmlinuz OUT/initrd.img
set -euo pipefail
OUT=$(realpath -m "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
INPUTS=("$HERE/build-image.sh" "$TOP/vagrant/provision.sh" "$TOP"/vagrant/demo/*)
KEY=$(cat "${INPUTS[@]}" | sha256sum | cut -d' ' -f1)

if [ -f "$OUT/key" ] && [ "$(cat "$OUT/key")" = "$KEY" ] && [ -f "$OUT/root.img" ]; then
    echo "vm image: cached ($OUT)"
    exit 0
fi
mkdir -p "$OUT"
ROOT="$OUT/rootfs"
cleanup() {
    for m in dev/pts dev proc sys; do umount "$ROOT/$m" 2>/dev/null || true; done
}
trap cleanup EXIT
rm -rf "$ROOT" "$OUT/root.img" "$OUT/key"
t0=$(date +%s)
debootstrap --variant=minbase \
    --include=linux-image-cloud-amd64,systemd-sysv,udev,kmod,ifupdown,iproute2,ca-certificates \
    bookworm "$ROOT" "$MIRROR" > "$OUT/debootstrap.log" 2>&1 || { tail -20 "$OUT/debootstrap.log"; exit 1; }
t1=$(date +%s)
echo "vm image: debootstrap $((t1 - t0)) s"

# provision in a chroot, with the project's vagrant/ folder copied in
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sys "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
mkdir -p "$ROOT/tmp/prov"
cp -r "$TOP/vagrant" "$ROOT/tmp/prov/"
chroot "$ROOT" env SOCKTRACE_IN_CHROOT=1 sh /tmp/prov/vagrant/provision.sh /tmp/prov \
    > "$OUT/provision.log" 2>&1 || { tail -30 "$OUT/provision.log"; exit 1; }
rm -rf "$ROOT/tmp/prov" "$ROOT/var/cache/apt/archives"/*.deb "$ROOT/var/lib/apt/lists"/*_Packages
cleanup
t2=$(date +%s)
echo "vm image: provision $((t2 - t1)) s"

# boot set-up: root on /dev/vda, the project on /dev/vdb, our init
echo "socktrace-vm" > "$ROOT/etc/hostname"
printf '/dev/vda / ext4 rw 0 1\n' > "$ROOT/etc/fstab"
# init: mount the project disk and run its tests/vm/in-vm.sh, so that
# changing the tests needs no new image
cat > "$ROOT/sbin/socktrace-vm-init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /socktrace
mount -o ro /dev/vdb /socktrace
exec /bin/sh /socktrace/tests/vm/in-vm.sh
INIT
chmod 0755 "$ROOT/sbin/socktrace-vm-init"
cp "$ROOT"/boot/vmlinuz-* "$OUT/vmlinuz"
cp "$ROOT"/boot/initrd.img-* "$OUT/initrd.img"
mkfs.ext4 -q -F -L root -d "$ROOT" "$OUT/root.img" 4G
rm -rf "$ROOT"
t3=$(date +%s)
echo "vm image: image $((t3 - t2)) s; total $((t3 - t0)) s"
echo "$KEY" > "$OUT/key"
