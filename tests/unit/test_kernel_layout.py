"""BTF reading (of images made here), the synthetic header tree and probe
settings: no root, no kernel.  The running kernel's BTF: tests/kernel/test_kernel_btf.py."""

import pytest

from socktrace.bcc_import import BccMissing, find_bcc_dir, import_bcc
from socktrace.kernel import headers
from socktrace.kernel.btf import BTF, BTFError
from socktrace.probes import Mode, _bcc_error, kernel_version, why_unavailable


def test_synthetic_tree(tmp_path):
    usr = tmp_path / "usr"
    (usr / "linux").mkdir(parents=True)
    (usr / "linux" / "types.h").write_text("")
    (usr / "linux" / "bpf.h").write_text("distro")
    (usr / "asm-generic").mkdir()
    tree = headers.write_synthetic_tree(tmp_path / "tree", usr_include=usr)
    assert (tree / "include/uapi/linux/types.h").resolve() == (usr / "linux/types.h").resolve()
    assert (tree / "include/uapi/linux/bpf.h").read_text() == ""  # bcc brings its own
    assert "LINUX_VERSION_CODE" in (tree / "include/linux/version.h").read_text()
    assert "typedef __u64 u64;" in (tree / "include/linux/types.h").read_text()


def test_synthetic_tree_needs_libc_headers(tmp_path):
    with pytest.raises(FileNotFoundError, match="install linux-libc-dev"):
        headers.write_synthetic_tree(tmp_path / "t", usr_include=tmp_path)


def test_version_h():
    assert "KERNEL_VERSION(6,18,44)" in headers._version_h("6.18.44-fc-v445")
    assert "KERNEL_VERSION(6,1,0)" in headers._version_h("6.1-rc1")


def test_real_header_tree(tmp_path, monkeypatch):
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    assert headers.real_header_tree("1.2.3", modules=str(tmp_path)) is None
    (tmp_path / "1.2.3/build/include/net").mkdir(parents=True)
    assert headers.real_header_tree("1.2.3", modules=str(tmp_path)) is None  # not a kernel tree
    (tmp_path / "1.2.3/build/include/net/sock.h").write_text("")
    assert headers.real_header_tree("1.2.3", modules=str(tmp_path)) == tmp_path / "1.2.3/build"
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path / "synthetic"))   # no struct sock there
    assert headers.real_header_tree("1.2.3", modules=str(tmp_path)) == tmp_path / "1.2.3/build"


def test_kernel_version():
    assert kernel_version("6.18.44-fc-v445") == (6, 18)
    assert kernel_version("5.4.0-150-generic") == (5, 4)


def test_why_unavailable(tmp_path):
    refused = lambda: "the kernel refused to load an fexit program (EPERM)"
    assert why_unavailable(Mode.KFUNC, str(tmp_path), refused) == refused()
    assert why_unavailable(Mode.KFUNC, str(tmp_path), lambda: None) is None
    assert "no kprobes" in why_unavailable(Mode.KPROBE, str(tmp_path))
    (tmp_path / "kprobe_events").write_text("")
    assert why_unavailable(Mode.KPROBE, str(tmp_path)) is None
    assert why_unavailable(Mode.TRACEPOINT, str(tmp_path)) is None


def test_bcc_error_one_line():
    assert _bcc_error(Exception("Need super-user privileges to run")) == \
        "the kernel refused to load the program (EPERM)"
    msg = _bcc_error(Exception("Failed to load BPF program b'kretfunc__inet_csk_accept': \nInvalid argument"))
    assert msg == "load of kretfunc__inet_csk_accept failed: Invalid argument"


def test_find_bcc_dir(tmp_path):
    assert find_bcc_dir((str(tmp_path / "none*"),)) is None
    pkg = tmp_path / "python3.12" / "site-packages" / "bcc"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    assert find_bcc_dir((str(tmp_path / "python3*" / "site-packages"),)) == pkg


def test_import_bcc_missing_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "bcc", None)  # hide any bcc
    with pytest.raises(BccMissing, match="python3-bpfcc"):
        import_bcc((str(tmp_path),))


def test_import_bcc_too_old_names_the_upgrade(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "bcc", None)  # hide any bcc
    pkg = tmp_path / "bcc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("__version__ = '0.12.0'\n")
    with pytest.raises(BccMissing, match=r"bcc 0.12.0 is too old: socktrace needs bcc 0.18 or later "
                                         r"\(upgrade python3-bpfcc\)"):
        import_bcc((str(tmp_path),))


def btf_blob(types: bytes, strings: bytes) -> bytes:
    """A BTF image: header, type section, string section."""
    import struct
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings)) \
        + types + strings


def test_btf_reader_on_a_small_image(tmp_path):
    """struct s { int a; unsigned x:3, y:5; } by hand, as pahole would
    describe it: no gcc needed, so this runs in every userland too."""
    import struct
    strings = b"\0int\0s\0a\0x\0y\0"
    types = struct.pack("<III", 1, 1 << 24, 4) + struct.pack("<I", 32)          # [1] INT int, 4 bytes
    types += struct.pack("<III", 5, (4 << 24) | (1 << 31) | 3, 8)               # [2] STRUCT s, kind_flag
    types += struct.pack("<III", 7, 1, 0) + struct.pack("<III", 9, 1, (3 << 24) | 32) \
        + struct.pack("<III", 11, 1, (5 << 24) | 35)
    path = tmp_path / "btf"
    path.write_bytes(btf_blob(types, strings))
    with BTF(str(path)) as btf:
        assert btf.field("s", "a").bit_offset == 0
        y = btf.int_field("s", "y")
        assert (y.offset, y.shift, y.mask) == (4, 3, 0x1F)
        assert btf.int_field("s", "a").mask == 0xFFFFFFFF


def test_btf_kind_newer_than_known(tmp_path):
    import struct
    path = tmp_path / "btf"
    path.write_bytes(btf_blob(struct.pack("<III", 0, 25 << 24, 0), b"\0"))
    with pytest.raises(BTFError, match="kind 25, newer than this socktrace knows"):
        BTF(str(path))
    path.write_bytes(b"not btf at all")
    with pytest.raises(BTFError, match="is not BTF"):
        BTF(str(path))
