#!/bin/sh
# Provision a Debian 12 machine for socktrace and its demo: bcc, kernel
# headers where the mirror still has them, the demo services (Java, nginx,
# sshd, a C program) and socktrace.  Used by the Vagrantfile, and in a
# chroot by tests/distros/build-rootfs.sh for the test VM
# (SOCKTRACE_IN_IMAGE=1: no make install, its venv comes with the image).
#
#   provision.sh [PROJECT_DIR]      (default /socktrace, the synced folder)
#   SOCKTRACE_KERNEL_RELEASE: the kernel to find headers for (uname -r)
set -eu
PROJECT=${1:-/socktrace}
DEMO="$PROJECT/vagrant/demo"
KERNEL=${SOCKTRACE_KERNEL_RELEASE:-$(uname -r)}
export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
# Debian's archive keeps the headers of its latest kernel ABIs only: a box
# whose kernel is older finds none, and socktrace then reads the kernel's
# struct layout from its BTF instead (the headerless path).
if apt-cache show "linux-headers-$KERNEL" >/dev/null 2>&1; then
    HEADERS="linux-headers-$KERNEL"
else
    HEADERS=
    echo "provision: linux-headers-$KERNEL is not on the mirror;" \
         "socktrace will take the kernel's layout from its BTF (/sys/kernel/btf/vmlinux)"
fi
apt-get install -y -qq --no-install-recommends \
    python3-bpfcc bpftool linux-libc-dev $HEADERS \
    python3 python3-venv make gcc libc6-dev curl iproute2 net-tools procps util-linux \
    default-jdk-headless nginx-light openssh-server ca-certificates
# the tools one would compare socktrace with, and ab for the benchmark
# (bench/vm_bench.sh runs bench/conn_bench.py in this VM)
apt-get install -y -qq --no-install-recommends bpfcc-tools bpftrace apache2-utils

# --- demo services --------------------------------------------------------
install -d /opt/socktrace-demo
install -m 0644 "$DEMO/DualStackServer.java" /opt/socktrace-demo/
gcc -O2 -Wall -o /usr/local/bin/dualstack-c "$DEMO/dualstack-c.c"
install -m 0755 "$DEMO/socktrace-demo" /usr/local/bin/socktrace-demo
install -m 0644 "$DEMO/nginx-demo.conf" /etc/nginx/sites-enabled/socktrace-demo.conf
rm -f /etc/nginx/sites-enabled/default
printf 'ListenAddress 0.0.0.0\n' > /etc/ssh/sshd_config.d/socktrace-demo-ipv4-only.conf

cat > /etc/systemd/system/socktrace-demo-java.service <<UNIT
[Unit]
Description=socktrace demo: a Java ServerSocket (dual-stack by default) on 4243
[Service]
ExecStart=/usr/bin/java /opt/socktrace-demo/DualStackServer.java 4243
[Install]
WantedBy=multi-user.target
UNIT
cat > /etc/systemd/system/socktrace-demo-c.service <<UNIT
[Unit]
Description=socktrace demo: an AF_INET6 dual-stack listener in C on 7070
[Service]
ExecStart=/usr/local/bin/dualstack-c 7070
[Install]
WantedBy=multi-user.target
UNIT
systemctl enable socktrace-demo-java.service socktrace-demo-c.service nginx ssh >/dev/null 2>&1 || true

# --- socktrace --------------------------------------------------------------
if [ "${SOCKTRACE_IN_IMAGE:-0}" != 1 ]; then
    make -C "$PROJECT" install
fi
if [ -d /run/systemd/system ]; then   # booted with systemd: a real box
    systemctl restart nginx ssh socktrace-demo-java socktrace-demo-c
fi
