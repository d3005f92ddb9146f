#!/usr/bin/env bash
# Build one Debian userland of the test matrix from Debian's packages
# (debootstrap), cached in OUT and rebuilt only when its inputs change.
# The same tree serves as a chroot on this kernel (tests/distros) and, made
# into a disk image, as the root of the test VM (tests/vm).
#
#   SUITE=... PACKAGES="..." [BACKPORTS="..."] [APPS="..."] [PROVISION=1] \
#       [VENV="..."] build-rootfs.sh OUT
#
# SUITE is what debootstrap is given (bullseye, bookworm, trixie, testing);
# BACKPORTS come from SUITE-backports (trixie's 7.x kernel); APPS are
# servers installed by apt (its resolver, not debootstrap's) and never
# started by their packages (tests/apps starts them); PROVISION=1
# runs vagrant/provision.sh in the tree: the Vagrant box; VENV: Python
# packages for /opt/socktrace-deps, the test VM's venv (it has no network).
# Writes OUT/rootfs and, last, OUT/key.
set -euo pipefail
OUT=$(realpath -m "$1")
: "${SUITE:?}" "${PACKAGES:?}" "${BACKPORTS:=}" "${APPS:=}" "${PROVISION:=}" "${VENV:=}"
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
MIRROR=$("$HERE/debian-mirror.sh")
KEY=$({ cat "$HERE/build-rootfs.sh" "$TOP/tests/vm/vm-init"
        echo "$SUITE|$PACKAGES|$BACKPORTS|$APPS|$PROVISION|$VENV"
        if [ -n "$PROVISION" ]; then cat "$TOP/vagrant/provision.sh" "$TOP"/vagrant/demo/*; fi
      } | sha256sum | cut -d' ' -f1)

if [ -f "$OUT/key" ] && [ "$(cat "$OUT/key")" = "$KEY" ] && [ -d "$OUT/rootfs" ]; then
    echo "rootfs $SUITE: cached"
    exit 0
fi
mkdir -p "$OUT"
ROOT="$OUT/rootfs"
mounted=()
cleanup() {
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
    mounted=()
}
trap cleanup EXIT
in_root() {  # run a command in the tree, with proc, sys and dev
    if [ ${#mounted[@]} -eq 0 ]; then
        # the network as this host reaches it: DNS, pip's settings and CAs
        cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
        if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$ROOT/etc/pip.conf"; fi
        cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/" 2>/dev/null || true
        mount -t proc proc "$ROOT/proc"; mounted+=("$ROOT/proc")
        mount -t sysfs sys "$ROOT/sys"; mounted+=("$ROOT/sys")
        mount --bind /dev "$ROOT/dev"; mounted+=("$ROOT/dev")
        mount --bind /dev/pts "$ROOT/dev/pts"; mounted+=("$ROOT/dev/pts")
    fi
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
rm -rf "$ROOT" "$OUT/key"
t0=$(date +%s)
# shellcheck disable=SC2086  # MIRROR empty: debootstrap's default mirror
debootstrap --variant=minbase --include="$(echo $PACKAGES | tr ' ' ,)" \
    "$SUITE" "$ROOT" $MIRROR > "$OUT/debootstrap.log" 2>&1 \
    || { tail -20 "$OUT/debootstrap.log"; exit 1; }
echo "rootfs $SUITE: debootstrap $(($(date +%s) - t0)) s"

if [ -n "$BACKPORTS" ]; then
    echo "deb ${MIRROR:-http://deb.debian.org/debian} $SUITE-backports main" \
        > "$ROOT/etc/apt/sources.list.d/backports.list"
    # shellcheck disable=SC2086
    { in_root apt-get update -qq && in_root apt-get install -y -qq --no-install-recommends \
        -t "$SUITE-backports" $BACKPORTS; } > "$OUT/backports.log" 2>&1 \
        || { tail -20 "$OUT/backports.log"; exit 1; }
fi
if [ -n "$APPS" ]; then
    # policy-rc.d: no package starts its service in the tree (or on this host)
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
    # shellcheck disable=SC2086
    { in_root apt-get update -qq && in_root apt-get install -y -qq --no-install-recommends $APPS; } \
        > "$OUT/apps.log" 2>&1 || { tail -20 "$OUT/apps.log"; exit 1; }
    echo "rootfs $SUITE: apps installed $(($(date +%s) - t0)) s"
fi
if [ -n "$VENV" ]; then
    # shellcheck disable=SC2086
    { in_root python3 -m venv /opt/socktrace-deps &&
      in_root /opt/socktrace-deps/bin/pip install -q $VENV; } > "$OUT/venv.log" 2>&1 \
        || { tail -20 "$OUT/venv.log"; exit 1; }
fi
if [ -n "$PROVISION" ]; then
    # the Vagrant box's provisioning, for the kernel installed in the tree
    mkdir -p "$ROOT/tmp/prov"
    cp -r "$TOP/vagrant" "$ROOT/tmp/prov/"
    kernel=$(basename "$(ls "$ROOT"/boot/vmlinuz-* | head -n1)"); kernel=${kernel#vmlinuz-}
    in_root env SOCKTRACE_IN_IMAGE=1 SOCKTRACE_KERNEL_RELEASE="$kernel" \
        sh /tmp/prov/vagrant/provision.sh /tmp/prov > "$OUT/provision.log" 2>&1 \
        || { tail -30 "$OUT/provision.log"; exit 1; }
    rm -rf "$ROOT/tmp/prov"
fi
cleanup
rm -rf "$ROOT"/var/cache/apt/archives/*.deb
# the test VM's PID 1 (tests/vm/run-vm.sh boots with init=/sbin/socktrace-vm-init)
install -m 0755 "$TOP/tests/vm/vm-init" "$ROOT/sbin/socktrace-vm-init"
echo "socktrace-vm" > "$ROOT/etc/hostname"
printf '/dev/vda / ext4 rw 0 1\n' > "$ROOT/etc/fstab"
echo "rootfs $SUITE: built in $(($(date +%s) - t0)) s, $(du -sm "$ROOT" | cut -f1) MB"
echo "$KEY" > "$OUT/key"
