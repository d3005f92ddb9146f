"""socktrace's BTF reader on the running kernel's BTF, checked against
bpftool's reading of the same file."""

import re
import subprocess

import pytest

from socktrace.kernel.btf import BTF, BTFError
from socktrace.probes import btf_defines


def bpftool_member_offsets(struct):
    """bits_offset of the direct members of `struct`, as bpftool reads BTF."""
    raw = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"],
                         capture_output=True, text=True, check=True).stdout
    block = re.search(rf"^\[\d+\] STRUCT '{struct}' .*?\n((?:\t.*\n)+)", raw, re.M).group(1)
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"'(\w+)' type_id=\d+ bits_offset=(\d+)", block)}


@pytest.mark.host_tools
def test_btf_offsets_agree_with_bpftool():
    expected = bpftool_member_offsets("sock_common")
    with BTF() as btf:
        for name in ("skc_family", "skc_state", "skc_net", "skc_v6_daddr", "skc_v6_rcv_saddr"):
            assert btf.field("sock_common", name).bit_offset == expected[name], name
        # nested in anonymous unions, and a bit field
        assert btf.field("sock", "__sk_common.skc_family").bit_offset == expected["skc_family"]
        v6only = btf.field("sock_common", "skc_ipv6only")
        assert v6only.bit_size == 1
        assert expected["skc_state"] < v6only.bit_offset < expected["skc_net"]


def test_btf_defines_complete_and_plausible():
    with BTF() as btf:
        d = btf_defines(btf)
    assert d["ACCEPT_NARGS"] in (2, 4)
    assert 0 <= d["SKC_IPV6ONLY_SHIFT"] < 8
    assert d["OFF_SKC_V6_RCV_SADDR"] == d["OFF_SKC_V6_DADDR"] + 16


def test_btf_errors():
    with pytest.raises(BTFError, match="cannot read kernel BTF"):
        BTF("/nonexistent")
    with BTF() as btf:
        with pytest.raises(BTFError, match="struct sock has no field nope"):
            btf.field("sock", "nope")
        with pytest.raises(BTFError, match="no no_such_struct"):
            btf.field("no_such_struct", "x")
