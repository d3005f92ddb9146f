# socktrace: `make run` and `make test` set up everything they need, as root,
# on a fresh Debian/Ubuntu machine: system packages, a virtualenv, tracefs.

PYTHON      ?= python3
VENV        ?= .venv
PREFIX      ?= /usr/local
INSTALL_DIR ?= /opt/socktrace
ARGS        ?=
# python3-bpfcc: bcc's Python module and libbcc; libbpf1: BTF parsing;
# linux-libc-dev: the userspace kernel headers bcc compiles against when the
# kernel's own headers are absent; bpftool: the tests check that no BPF
# program is left behind, and cross-check BTF offsets with it.
# qemu-system-x86, debootstrap, e2fsprogs: the test VM with a distro kernel
# (tests/vm); vagrant: `vagrant validate` of vagrant/Vagrantfile.
APT_PACKAGES := python3-bpfcc libbpf1 linux-libc-dev bpftool \
                qemu-system-x86 debootstrap e2fsprogs vagrant
SOURCES     := pyproject.toml $(shell find src bpf -type f -not -name '*.pyc')

.PHONY: setup system run test test-vm unit bench bench-host bench-vm bench-snapshot install uninstall clean

setup: system $(VENV)/.installed

system:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug
	@mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing

# A virtualenv on purpose: socktrace must find the distro's bcc from any Python.
$(VENV)/.installed: $(SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q ".[test]"
	touch $@

run: setup
	$(VENV)/bin/socktrace $(ARGS)

test: setup
	$(VENV)/bin/pytest tests --pyargs socktrace

# only the distro-kernel VM suite (kfunc, kprobe, tracepoint, headerless)
test-vm: setup
	$(VENV)/bin/pytest tests/vm

unit: $(VENV)/.installed
	$(VENV)/bin/pytest tests/unit --pyargs socktrace

# socktrace against no tracer, bpftrace and bcc's tools under nginx + ab:
# on this machine (bench/results/conn.md) and in the test VM, where every
# probe mode and bcc's tools run (bench/results/conn-vm.md)
bench: bench-host bench-vm

bench-host: setup
	@command -v nginx >/dev/null && command -v ab >/dev/null && command -v bpftrace >/dev/null || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light apache2-utils bpftrace >/dev/null
	$(VENV)/bin/python bench/conn_bench.py

bench-vm: setup
	bench/vm_bench.sh

# 10,000 established connections: socktrace snapshot against ss -tanp
bench-snapshot: setup
	$(VENV)/bin/python bench/snapshot_bench.py

install: system
	$(PYTHON) -m venv $(INSTALL_DIR)
	$(INSTALL_DIR)/bin/pip install -q .
	ln -sf $(INSTALL_DIR)/bin/socktrace $(PREFIX)/bin/socktrace
	@echo "installed: $(PREFIX)/bin/socktrace"

uninstall:
	rm -f $(PREFIX)/bin/socktrace
	rm -rf $(INSTALL_DIR)

clean:
	rm -rf $(VENV) build dist .pytest_cache
