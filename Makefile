# socktrace: `make run` and `make test` set up everything they need, as root,
# on a fresh Debian/Ubuntu machine: system packages, a virtualenv, tracefs.

PYTHON      ?= python3
VENV        ?= .venv
PREFIX      ?= /usr/local
INSTALL_DIR ?= /opt/socktrace
ARGS        ?=
# What socktrace needs at run time, under the same names on every Debian
# (11-14) and Ubuntu release: python3-bpfcc (bcc's Python module and libbcc;
# it pulls in the release's libbpf: libbpf0 on Debian 11, libbpf1 later),
# linux-libc-dev (the userspace kernel headers bcc compiles against when the
# kernel's own headers are absent), python3-venv (the venv of make install).
RUNTIME_PACKAGES := python3-bpfcc linux-libc-dev python3-venv
# What the tests add: bpftool (no BPF program is left behind; BTF offsets
# cross-checked); qemu-system-x86, debootstrap, e2fsprogs: the distribution
# and kernel matrix (tests/distros, tests/vm); vagrant, vagrant-libvirt: `vagrant
# validate` and `vagrant up` (tests/vagrant);
# strace: that glibc's address probe really connect()s (tests/kernel/test_udp.py);
# podman, runc: real containers (tests/kernel/test_containers.py; crun, podman's
# default runtime, refuses a hybrid cgroup layout); tmux and chromium: the front
# ends as people use them (tests/frontends: `top` and the table in a terminal,
# report --html in a browser).
TEST_PACKAGES := bpftool qemu-system-x86 debootstrap e2fsprogs vagrant strace podman runc \
                 tmux chromium vagrant-libvirt dnsmasq-base qemu-utils fdisk
# docker.io: docker's daemon, the other real runtime of those tests; installed
# with its start blocked (policy-rc.d): the tests start it (tests/containers/dockerd.py).
# libvirt-daemon-system: `vagrant up` with vagrant-libvirt (tests/vagrant, with
# dnsmasq-base for its NAT network, qemu-utils and fdisk for the box it builds):
# tests/vagrant/vagrant_up.py starts libvirtd and stops it again
DAEMON_PACKAGES := docker.io libvirt-daemon-system
SOURCES     := pyproject.toml $(shell find src bpf -type f -not -name '*.pyc')

.PHONY: setup runtime system run test test-vm unit bench bench-host bench-vm bench-snapshot install uninstall clean

setup: system $(VENV)/.installed

# $(call apt_install,PACKAGES): apt-get install those not installed yet
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

runtime:
	$(call apt_install,$(RUNTIME_PACKAGES))

system: runtime
	$(call apt_install,$(TEST_PACKAGES))
	@missing=$$(for p in $(DAEMON_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		rc=$$?; rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi
	@mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug
	@mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing

# A virtualenv on purpose: socktrace must find the distro's bcc from any Python.
$(VENV)/.installed: $(SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q ".[test,html]"
	touch $@

run: setup
	$(VENV)/bin/socktrace $(ARGS)

test: setup
	$(VENV)/bin/pytest tests --pyargs socktrace

# only the VMs of the distribution matrix: Debian's kernels 5.10-7.x, each
# probe mode, from headers and from BTF (tests/distros/matrix.py)
test-vm: setup
	$(VENV)/bin/pytest tests/vm

unit: $(VENV)/.installed
	$(VENV)/bin/pytest tests/unit --pyargs socktrace

# socktrace against no tracer, bpftrace and bcc's tools under nginx + ab,
# what it costs an unrelated system call, per probe mode, what its BPF
# programs cost the kernel per connection, and UDP: a dual-stack DNS server
# under dnsperf, new flows at the client's highest rate: on this machine
# (bench/results/conn.md, syscall.md, kernel-side.md, dns.md) and in the test VM, where
# every probe mode and bcc's tools run (conn-vm.md, syscall-vm.md, dns-vm.md)
bench: bench-host bench-vm

bench-host: setup
	@command -v nginx >/dev/null && command -v ab >/dev/null && command -v bpftrace >/dev/null || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light apache2-utils bpftrace >/dev/null
	@# unbound and dnsperf for the UDP bench; a policy-rc.d keeps unbound's
	@# package from starting a resolver on port 53
	@command -v unbound >/dev/null && command -v dnsperf >/dev/null || { \
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends unbound dnsperf >/dev/null; \
		rc=$$?; rm -f /usr/sbin/policy-rc.d; exit $$rc; }
	$(VENV)/bin/python bench/conn_bench.py
	$(VENV)/bin/python bench/syscall_bench.py
	$(VENV)/bin/python bench/kernel_side.py
	$(VENV)/bin/python bench/dns_bench.py

bench-vm: setup
	bench/vm_bench.sh

# 10,000 established connections: socktrace snapshot against ss -tanp
bench-snapshot: setup
	$(VENV)/bin/python bench/snapshot_bench.py

install: runtime
	$(PYTHON) -m venv $(INSTALL_DIR)
	$(INSTALL_DIR)/bin/pip install -q .
	ln -sf $(INSTALL_DIR)/bin/socktrace $(PREFIX)/bin/socktrace
	@echo "installed: $(PREFIX)/bin/socktrace"

uninstall:
	rm -f $(PREFIX)/bin/socktrace
	rm -rf $(INSTALL_DIR)

clean:
	rm -rf $(VENV) build dist .pytest_cache
