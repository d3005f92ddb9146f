#!/usr/bin/env bash
# Run a command in a matrix userland (build-rootfs.sh) on this kernel, with
# a copy of the project at /socktrace.  The cached tree is never written:
# the chroot is an overlay whose upper layer is thrown away, and every mount
# lives in a private mount namespace that ends with the command.
#
#   in-chroot.sh ROOTFS COMMAND...
set -euo pipefail
if [ "${1:-}" != --inside ]; then
    exec unshare --mount --propagation private "$0" --inside "$@"
fi
shift
LOWER=$(realpath "$1"); shift
TOP=$(cd "$(dirname "$0")/../.." && pwd)
scratch=$(mktemp -d /var/tmp/socktrace-chroot.XXXXXX)
trap 'umount -R "$scratch/root" 2>/dev/null; rm -rf "$scratch"' EXIT
mkdir -p "$scratch/upper" "$scratch/work" "$scratch/root"
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/root"
R=$scratch/root
mount -t proc proc "$R/proc"
mount -t sysfs sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/tmp"
mount -t tmpfs tmpfs "$R/dev/shm"
# the network as this host reaches it: DNS, pip's index and CA bundle
cp /etc/resolv.conf "$R/etc/resolv.conf"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$R/etc/pip.conf"
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/"
# the project, as a fresh clone would have it
mkdir "$R/socktrace"
(cd "$TOP" && tar -c --exclude=.git --exclude=.venv --exclude=__pycache__ --exclude=.pytest_cache \
    --exclude=vagrant/.vagrant .) | tar -x -C "$R/socktrace"
# not exec: the trap must remove the scratch layer afterwards
rc=0
chroot "$R" env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL} "$@" || rc=$?
exit $rc
