"""Kernel struct layout from BTF, the type information the kernel carries.

bcc compiles against a kernel header tree, which most production servers do
not have; BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF=y) describes the
running kernel's structs exactly.

Read here in Python (include/uapi/linux/btf.h; Documentation/bpf/btf.rst),
not through libbpf: an old libbpf cannot parse a newer kernel's BTF
(Debian 11's libbpf 0.3 answers -EINVAL for Linux 6.18's, which has kinds
added since: DECL_TAG, TYPE_TAG, ENUM64; and as an error pointer, which
crashed its caller), and a reader that only indexes what it needs takes
about 55 ms for vmlinux, as long as libbpf's parse.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F

# enum btf_kind, include/uapi/linux/btf.h
_KIND_INT, _KIND_PTR, _KIND_ARRAY, _KIND_STRUCT, _KIND_UNION = 1, 2, 3, 4, 5
_KIND_TYPEDEF, _KIND_VOLATILE, _KIND_CONST, _KIND_RESTRICT = 8, 9, 10, 11
_KIND_FUNC, _KIND_FUNC_PROTO, _KIND_TYPE_TAG = 12, 13, 18
_MODIFIERS = {_KIND_TYPEDEF, _KIND_VOLATILE, _KIND_CONST, _KIND_RESTRICT, _KIND_TYPE_TAG}
_KINDS_KNOWN = 19  # up to BTF_KIND_ENUM64 (Linux 6.0)
# bytes that follow the 12-byte struct btf_type, by kind: a fixed part and
# a part per member (vlen): INT 4; ARRAY 12; STRUCT, UNION 12 per member;
# ENUM 8 per value; FUNC_PROTO 8 per parameter; VAR 4; DATASEC 12 per
# variable; DECL_TAG 4; ENUM64 12 per value
_FIXED = [0] * 32
_PER_MEMBER = [0] * 32
for _k, _n in ((1, 4), (3, 12), (14, 4), (17, 4)):
    _FIXED[_k] = _n
for _k, _n in ((4, 12), (5, 12), (6, 8), (13, 8), (15, 12), (19, 12)):
    _PER_MEMBER[_k] = _n

_HEADER = struct.Struct("<HBBIIIII")   # magic, version, flags, hdr_len, type/str off/len
_TYPE = struct.Struct("<III")           # name_off, info, size or type
_MEMBER = struct.Struct("<III")         # name_off, type, offset


class BTFError(Exception):
    """BTF is missing or does not describe what socktrace needs."""


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


@dataclass(frozen=True)
class IntField:
    """How the BPF program reads an integer field, bit-field or not, with
    one load: the u32 at byte `offset`, shifted right by `shift`, masked
    with `mask` (kernel_read.h: read_int).  Little-endian bit numbering,
    as BTF gives it on x86-64 and arm64.

    >>> IntField.of(Field(40, 8))        # Linux < 5.6: sk_protocol:8 at bit 40
    IntField(offset=5, shift=0, mask=255)
    >>> IntField.of(Field(157, 1))       # skc_ipv6only:1
    IntField(offset=19, shift=5, mask=1)
    >>> IntField.of(Field(4128, 0), 2)   # Linux >= 5.6: u16 sk_protocol
    IntField(offset=516, shift=0, mask=65535)
    """
    offset: int
    shift: int
    mask: int

    @classmethod
    def of(cls, f: Field, type_size: int = 4) -> "IntField":
        bits = f.bit_size or 8 * type_size
        if f.bit_offset % 8 + bits > 32:
            raise BTFError(f"a field of {bits} bits at bit {f.bit_offset} does not fit one u32 load")
        return cls(f.bit_offset // 8, f.bit_offset % 8, (1 << bits) - 1)


class BTF:
    """The BTF of one kernel image, indexed by struct and function name.

    On Linux 6.18, BTF().field("sock", "__sk_common.skc_ipv6only") gives
    Field(bit_offset=157, bit_size=1): byte 19, bit 5.
    """

    def __init__(self, path: str = VMLINUX_BTF):
        try:
            with open(path, "rb") as f:
                self._data = data = f.read()
        except OSError as exc:
            raise BTFError(f"cannot read kernel BTF at {path} ({exc.strerror}; "
                           "kernel built without CONFIG_DEBUG_INFO_BTF?)") from None
        if len(data) < _HEADER.size or _HEADER.unpack_from(data)[0] != BTF_MAGIC:
            raise BTFError(f"{path} is not BTF (or not in this machine's byte order)")
        _, _, _, hdr_len, type_off, type_len, str_off, _ = _HEADER.unpack_from(data)
        self._strings = hdr_len + str_off
        self._offsets, self._named = self._index(hdr_len + type_off, hdr_len + type_off + type_len)

    def _index(self, pos: int, end: int) -> tuple[list[int], dict[tuple[int, int], int]]:
        """Where each type starts (type ids count from 1) and the ids of the
        named structs and functions, in one pass over the type section."""
        data, unpack = self._data, _TYPE.unpack_from
        fixed, per_member = _FIXED, _PER_MEMBER
        offsets = [0]
        named: dict[tuple[int, int], int] = {}
        while pos < end:
            offsets.append(pos)
            name_off, info, _ = unpack(data, pos)
            kind = (info >> 24) & 0x1F
            if kind > _KINDS_KNOWN:
                raise BTFError(f"kernel BTF has types of kind {kind}, newer than this socktrace knows")
            if name_off and (kind == _KIND_STRUCT or kind == _KIND_FUNC):
                named.setdefault((name_off, kind), len(offsets) - 1)
            pos += _TYPE.size + fixed[kind] + per_member[kind] * (info & 0xFFFF)
        return offsets, named

    def close(self) -> None:
        self._data = b""

    def __enter__(self) -> BTF:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _type(self, type_id: int) -> tuple[int, int, int]:
        """(name_off, info, size or type) of a type."""
        return _TYPE.unpack_from(self._data, self._offsets[type_id])

    def _name(self, name_off: int) -> str:
        at = self._strings + name_off
        return self._data[at:self._data.index(b"\0", at)].decode()

    def _find(self, name: str, kind: int) -> int:
        needle = b"\0" + name.encode() + b"\0"
        at = self._data.find(needle, self._strings)
        while at >= 0:
            type_id = self._named.get((at + 1 - self._strings, kind))
            if type_id:
                return type_id
            at = self._data.find(needle, at + 1)
        raise BTFError(f"kernel BTF has no {name}")

    def _strip(self, type_id: int) -> int:
        """Follow typedefs and qualifiers to the real type."""
        while (self._type(type_id)[1] >> 24) & 0x1F in _MODIFIERS:
            type_id = self._type(type_id)[2]
        return type_id

    def _members(self, type_id: int):
        _, info, _ = self._type(type_id)
        kind_flag = info >> 31
        base = self._offsets[type_id] + _TYPE.size
        for i in range(info & 0xFFFF):
            name_off, mtype, offset = _MEMBER.unpack_from(self._data, base + i * _MEMBER.size)
            # kind_flag: bit size in the top 8 bits, bit offset in the low 24
            if kind_flag:
                yield self._name(name_off), mtype, offset & 0xFFFFFF, offset >> 24
            else:
                yield self._name(name_off), mtype, offset, 0

    def _search(self, type_id: int, name: str) -> tuple[int, Field] | None:
        """Find `name` among the members of a struct/union, looking inside
        anonymous members (the kernel nests many fields in unnamed unions)."""
        for mname, mtype, bit_off, bit_size in self._members(type_id):
            if mname == name:
                return mtype, Field(bit_off, bit_size)
            if not mname:
                inner = self._strip(mtype)
                if (self._type(inner)[1] >> 24) & 0x1F in (_KIND_STRUCT, _KIND_UNION):
                    found = self._search(inner, name)
                    if found:
                        ftype, f = found
                        return ftype, Field(bit_off + f.bit_offset, f.bit_size)
        return None

    def _resolve(self, struct: str, path: str) -> tuple[int, Field]:
        """(type id, position) of `path` (e.g. "ns.inum") inside `struct`."""
        type_id = self._find(struct, _KIND_STRUCT)
        total = 0
        field = Field(0)
        for part in path.split("."):
            found = self._search(self._strip(type_id), part)
            if found is None:
                raise BTFError(f"kernel BTF: struct {struct} has no field {path}")
            type_id, field = found
            total += field.bit_offset
        return type_id, Field(total, field.bit_size)

    def field(self, struct: str, path: str) -> Field:
        """The position of `path` (e.g. "ns.inum") inside `struct`."""
        return self._resolve(struct, path)[1]

    def int_field(self, struct: str, path: str) -> IntField:
        """How to read the integer field `path` of `struct`, whatever its
        width and whether or not it is a bit-field (sk_protocol is both,
        depending on the kernel: see probes.btf_defines)."""
        type_id, field = self._resolve(struct, path)
        return IntField.of(field, self._type(self._strip(type_id))[2])

    def func_id(self, func: str) -> int:
        """The BTF type id of kernel function `func` (what fentry/fexit
        programs name as their attach point)."""
        return self._find(func, _KIND_FUNC)

    def func_param_count(self, func: str) -> int:
        """How many parameters kernel function `func` takes."""
        proto = self._type(self._find(func, _KIND_FUNC))[2]
        return self._type(proto)[1] & 0xFFFF
