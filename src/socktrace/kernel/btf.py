"""Kernel struct layout from BTF, the type information the kernel carries.

bcc compiles against a kernel header tree, which most production servers do
not have; BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF=y) describes the
running kernel's structs exactly.  libbpf parses it (in C, ~40 ms for
vmlinux); this module walks the parsed types through libbpf's public API with
ctypes, because no Python binding of libbpf's BTF API is packaged.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

# enum btf_kind, include/uapi/linux/btf.h
_KIND_INT, _KIND_PTR, _KIND_ARRAY, _KIND_STRUCT, _KIND_UNION = 1, 2, 3, 4, 5
_KIND_TYPEDEF, _KIND_VOLATILE, _KIND_CONST, _KIND_RESTRICT = 8, 9, 10, 11
_KIND_FUNC, _KIND_FUNC_PROTO, _KIND_TYPE_TAG = 12, 13, 18
_MODIFIERS = {_KIND_TYPEDEF, _KIND_VOLATILE, _KIND_CONST, _KIND_RESTRICT, _KIND_TYPE_TAG}


class BTFError(Exception):
    """BTF is missing or does not describe what socktrace needs."""


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32),
                ("size_or_type", ctypes.c_uint32)]


class _BtfMember(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32),
                ("offset", ctypes.c_uint32)]


@dataclass(frozen=True)
class Field:
    """Where a field lives inside its outermost struct.

    `bit_size` is 0 for ordinary fields; for bit fields `bit_offset` counts
    from the start of the struct.
    """
    bit_offset: int
    bit_size: int = 0

    @property
    def offset(self) -> int:
        return self.bit_offset // 8


def _libbpf() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise BTFError(f"libbpf not found ({exc}); install libbpf1 (Debian/Ubuntu) or libbpf (Fedora)") from None
    lib.btf__parse.restype = ctypes.c_void_p
    lib.btf__parse.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.btf__free.argtypes = [ctypes.c_void_p]
    lib.btf__find_by_name_kind.restype = ctypes.c_int32
    lib.btf__find_by_name_kind.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
    lib.btf__type_by_id.restype = ctypes.POINTER(_BtfType)
    lib.btf__type_by_id.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.btf__name_by_offset.restype = ctypes.c_char_p
    lib.btf__name_by_offset.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    return lib


class BTF:
    """The parsed BTF of one kernel image.

    On Linux 6.18, BTF().field("sock", "__sk_common.skc_ipv6only") gives
    Field(bit_offset=157, bit_size=1): byte 19, bit 5.
    """

    def __init__(self, path: str = VMLINUX_BTF):
        self._lib = _libbpf()
        self._btf = self._lib.btf__parse(path.encode(), None)
        if not self._btf:
            raise BTFError(f"cannot read kernel BTF at {path} (kernel built without CONFIG_DEBUG_INFO_BTF?)")

    def close(self) -> None:
        if self._btf:
            self._lib.btf__free(self._btf)
            self._btf = None

    def __enter__(self) -> BTF:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _type(self, type_id: int) -> _BtfType:
        return self._lib.btf__type_by_id(self._btf, type_id).contents

    def _name(self, t: _BtfType) -> str:
        return (self._lib.btf__name_by_offset(self._btf, t.name_off) or b"").decode()

    def _find(self, name: str, kind: int) -> int:
        type_id = self._lib.btf__find_by_name_kind(self._btf, name.encode(), kind)
        if type_id <= 0:
            raise BTFError(f"kernel BTF has no {name}")
        return type_id

    def _strip(self, type_id: int) -> int:
        """Follow typedefs and qualifiers to the real type."""
        while (self._type(type_id).info >> 24) & 0x1F in _MODIFIERS:
            type_id = self._type(type_id).size_or_type
        return type_id

    def _members(self, type_id: int):
        t = self._type(type_id)
        kind_flag = t.info >> 31
        vlen = t.info & 0xFFFF
        base = ctypes.addressof(t) + ctypes.sizeof(_BtfType)
        for i in range(vlen):
            m = _BtfMember.from_address(base + i * ctypes.sizeof(_BtfMember))
            # kind_flag: bit size in the top 8 bits, bit offset in the low 24
            if kind_flag:
                yield self._name(m), m.type, m.offset & 0xFFFFFF, m.offset >> 24
            else:
                yield self._name(m), m.type, m.offset, 0

    def _search(self, type_id: int, name: str) -> tuple[int, Field] | None:
        """Find `name` among the members of a struct/union, looking inside
        anonymous members (the kernel nests many fields in unnamed unions)."""
        for mname, mtype, bit_off, bit_size in self._members(type_id):
            if mname == name:
                return mtype, Field(bit_off, bit_size)
            if not mname:
                inner = self._strip(mtype)
                if (self._type(inner).info >> 24) & 0x1F in (_KIND_STRUCT, _KIND_UNION):
                    found = self._search(inner, name)
                    if found:
                        ftype, f = found
                        return ftype, Field(bit_off + f.bit_offset, f.bit_size)
        return None

    def field(self, struct: str, path: str) -> Field:
        """The position of `path` (e.g. "ns.inum") inside `struct`."""
        type_id = self._find(struct, _KIND_STRUCT)
        total = 0
        field = Field(0)
        for part in path.split("."):
            found = self._search(self._strip(type_id), part)
            if found is None:
                raise BTFError(f"kernel BTF: struct {struct} has no field {path}")
            type_id, field = found
            total += field.bit_offset
        return Field(total, field.bit_size)

    def func_id(self, func: str) -> int:
        """The BTF type id of kernel function `func` (what fentry/fexit
        programs name as their attach point)."""
        return self._find(func, _KIND_FUNC)

    def func_param_count(self, func: str) -> int:
        """How many parameters kernel function `func` takes."""
        proto = self._type(self._find(func, _KIND_FUNC)).size_or_type
        return self._type(proto).info & 0xFFFF
