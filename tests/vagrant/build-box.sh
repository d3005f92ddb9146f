#!/usr/bin/env bash
# Build the debian/bookworm64 box for vagrant-libvirt that the Vagrantfile
# names, as Vagrant Cloud's is made (it cannot be fetched from here):
# Debian 12 from debootstrap with Debian's cloud kernel, GRUB on a disk with
# one MBR partition, eth0 by DHCP, a `vagrant` user with Vagrant's insecure
# public key and passwordless sudo, sshd, rsync (the synced folder).
# Cached: rebuilt only when this script changes.
#
#   tests/vagrant/build-box.sh OUT   -> OUT/bookworm64.box, OUT/key
#
# Like the matrix's trees (tests/distros/build-rootfs.sh) it carries this
# host's CA certificates and pip settings: HTTPS from these machines is
# re-signed by a proxy, and the VM's provisioning runs pip.
set -euo pipefail
OUT=$(realpath -m "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
MIRROR=$("$HERE/../distros/debian-mirror.sh")
PACKAGES="linux-image-cloud-amd64 grub-pc systemd systemd-sysv openssh-server sudo rsync ifupdown
          isc-dhcp-client ca-certificates iproute2 netbase"
KEY=$({ cat "$0"; cat /etc/ssl/certs/ca-certificates.crt /etc/pip.conf 2>/dev/null || true; } \
      | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/bookworm64.box" ] && [ "$(cat "$OUT/key" 2>/dev/null)" = "$KEY" ]; then
    echo "vagrant box: cached"
    exit 0
fi
VAGRANT_KEY=$(find /usr/share/rubygems-integration /usr/lib/ruby /opt/vagrant -path '*keys/vagrant.pub' \
              2>/dev/null | head -n1 || true)
[ -n "$VAGRANT_KEY" ] || { echo "vagrant's insecure public key (keys/vagrant.pub) not found" >&2; exit 1; }

t0=$(date +%s)
rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d /var/tmp/socktrace-box.XXXXXX)
ROOT="$WORK/root"
MNT="$WORK/mnt"
LOOP=
mounted=()
cleanup() {
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
    if [ -n "$LOOP" ]; then partx -d "$LOOP" 2>/dev/null || true; losetup -d "$LOOP" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck disable=SC2086  # MIRROR empty: debootstrap's default mirror
debootstrap --variant=minbase --include="$(echo $PACKAGES | tr ' ' ,)" bookworm "$ROOT" $MIRROR \
    > "$OUT/debootstrap.log" 2>&1 || { tail -20 "$OUT/debootstrap.log"; exit 1; }
echo "vagrant box: debootstrap $(($(date +%s) - t0)) s"

# --- the system as a Vagrant box has it -------------------------------------
echo socktrace-box > "$ROOT/etc/hostname"
echo "LABEL=root / ext4 errors=remount-ro 0 1" > "$ROOT/etc/fstab"
cat > "$ROOT/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback
auto eth0
iface eth0 inet dhcp
EOF
# Vagrant logs in as vagrant with its insecure key, then replaces it
chroot "$ROOT" useradd -m -s /bin/bash vagrant
install -d -m 700 -o 1000 -g 1000 "$ROOT/home/vagrant/.ssh"
install -m 600 -o 1000 -g 1000 "$VAGRANT_KEY" "$ROOT/home/vagrant/.ssh/authorized_keys"
echo "vagrant ALL=(ALL) NOPASSWD: ALL" > "$ROOT/etc/sudoers.d/vagrant"
chmod 440 "$ROOT/etc/sudoers.d/vagrant"
printf 'UseDNS no\n' > "$ROOT/etc/ssh/sshd_config.d/vagrant.conf"
rm -f "$ROOT"/etc/ssh/ssh_host_*   # each VM its own: regenerated at first boot
cat > "$ROOT/etc/systemd/system/ssh-keygen-first-boot.service" <<'EOF'
[Unit]
Description=Generate this machine's SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
EOF
chroot "$ROOT" systemctl enable ssh-keygen-first-boot.service >/dev/null 2>&1
# this host's network as the matrix's trees have it (see above)
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
for c in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$c" ] && cp "$c" "$ROOT/usr/local/share/ca-certificates/"
done
if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$ROOT/etc/pip.conf"; fi
chroot "$ROOT" apt-get clean
# names as old kernels gave them (eth0), the console on the serial port too
cat > "$ROOT/etc/default/grub" <<'EOF'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="net.ifnames=0 biosdevname=0 console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
EOF

# --- a raw disk, one MBR partition, GRUB ------------------------------------
truncate -s 20G "$WORK/disk.raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$WORK/disk.raw"
LOOP=$(losetup -f --show -P "$WORK/disk.raw")
partx -a "$LOOP" 2>/dev/null || true   # this kernel does not scan loop partitions itself
mkfs.ext4 -q -L root "${LOOP}p1"
mkdir -p "$MNT"
mount "${LOOP}p1" "$MNT"; mounted+=("$MNT")
cp -a "$ROOT/." "$MNT/"
for d in dev dev/pts proc sys; do mount --bind "/$d" "$MNT/$d"; mounted+=("$MNT/$d"); done
chroot "$MNT" grub-install --target=i386-pc --modules="part_msdos ext2" "$LOOP" \
    > "$OUT/grub.log" 2>&1 || { cat "$OUT/grub.log"; exit 1; }
# root by label: the loop device's name means nothing in the VM
chroot "$MNT" env GRUB_DISABLE_OS_PROBER=true GRUB_DEVICE=LABEL=root grub-mkconfig -o /boot/grub/grub.cfg \
    >> "$OUT/grub.log" 2>&1
sed -i "s|root=[^ ]*|root=LABEL=root|" "$MNT/boot/grub/grub.cfg"
for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[i]}"; done
mounted=()
partx -d "$LOOP" 2>/dev/null || true
losetup -d "$LOOP"
LOOP=

# --- the box: vagrant-libvirt's format --------------------------------------
qemu-img convert -O qcow2 "$WORK/disk.raw" "$WORK/box.img"
echo '{"provider": "libvirt", "format": "qcow2", "virtual_size": 20}' > "$WORK/metadata.json"
tar -C "$WORK" -cf "$OUT/bookworm64.box" metadata.json box.img
echo "$KEY" > "$OUT/key"
echo "vagrant box: built in $(($(date +%s) - t0)) s ($(du -m "$OUT/bookworm64.box" | cut -f1) MB)"
