#!/bin/sh
# Inside a matrix userland (tests/distros/in-chroot.sh): install socktrace
# the documented way (make install), then run the unit tests and the live
# tracer's tests with this release's own Python, bcc and libbpf.
set -eu
cd /socktrace
py=$(python3 -c 'import platform; print(platform.python_version())')
bcc=$(dpkg-query -W -f '${Version}' python3-bpfcc)
libbpf=$(dpkg-query -W -f '${Package} ${Version}\n' 'libbpf[0-9]*' 2>/dev/null | grep -v '^$' | head -n1)
. /etc/os-release
echo "SOCKTRACE-USERLAND ${VERSION_CODENAME:-$ID} python=$py bcc=$bcc libbpf=$libbpf"
t0=$(date +%s)
make install
echo "SOCKTRACE-USERLAND make install: $(($(date +%s) - t0)) s"
# The tests run in the installed venv (this release's Python, with the
# click and orjson that make install chose) and import the installed package.
/opt/socktrace/bin/pip install -q pytest
SOCKTRACE=/usr/local/bin/socktrace PYTHONDONTWRITEBYTECODE=1 \
    /opt/socktrace/bin/python -m pytest -p no:cacheprovider --color=no -o addopts="-ra --doctest-modules" \
    -m "not host_tools" tests/unit tests/kernel/test_live.py tests/kernel/test_modes.py \
    tests/kernel/test_outputs.py tests/kernel/test_lifecycle.py tests/kernel/test_kernel_btf.py \
    tests/kernel/test_udp.py tests/kernel/test_lifetime.py \
    --pyargs socktrace
