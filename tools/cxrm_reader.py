"""An independent reader for the `.cxrm` file format, version 1.x.

Written from `spec/cxrm.md` alone (no Rust source consulted), as a second
implementation that proves the spec is complete.  Section references (§N) point
into that document.

Dependencies: Python 3.11, numpy and the standard library.  CRC-32 is
`zlib.crc32`.  The zstd stage (§5.2) uses the `zstandard` PyPI package when it
is importable; otherwise it falls back to the `zstd` command-line tool run as
`zstd -d -c` through subprocess (see `_zstd_decode`).

Usage:

    f = open_cxrm(data)          # header + table checks (§2, §3), raises CxrmError
    f.verify()                   # full verification (§10): padding, CRCs,
                                 # metadata, graph, decode every tensor
    f.metadata()                 # dict (arrays are lists, see MetaArray)
    f.graph()                    # list of node dicts, or None without a graph
    f.tensors                    # list of TensorRecord, in table order
    f.decode("w")                # numpy array of the right dtype and shape

Where the spec leaves a choice open, the choice made here is marked
"SPEC GAP" in a comment, with the reasoning.
"""

from __future__ import annotations

import struct
import subprocess
import threading
import zlib
from dataclasses import dataclass, field as dc_field

import numpy as np

try:  # zstd backend: the `zstandard` package if present, else the zstd CLI.
    import zstandard as _zstandard
except ImportError:  # pragma: no cover - exercised only without the package
    _zstandard = None

__all__ = [
    "CxrmError", "CxrmFile", "Section", "Stage", "TensorRecord", "MetaArray",
    "open_cxrm", "open_path", "ZSTD_BACKEND",
]

ZSTD_BACKEND = "zstandard" if _zstandard is not None else "zstd-cli"

# ---------------------------------------------------------------------------
# Constants from the spec
# ---------------------------------------------------------------------------

MAGIC = b"CXRM"                       # §2
BYTE_ORDER_LE = bytes([4, 3, 2, 1])   # 0x01020304 stored little-endian
BYTE_ORDER_BE = bytes([1, 2, 3, 4])   # a big-endian writer (byte_swapped)
HEADER_SIZE = 64
SUPPORTED_MAJOR = 1

# §8 limits
MAX_TABLE_SIZE = 64 * 1024 * 1024
MAX_SECTIONS = 64
MAX_TENSORS = 1_048_576
MAX_NAME_LEN = 1024
MAX_RANK = 8
MAX_ELEMENTS = 1 << 40
MAX_DECODED_BYTES = 1 << 36
MAX_STAGES = 8
MAX_PARAM_LEN = 4096
MAX_MAP_ENTRIES = 65_536
MAX_KEY_LEN = 256
MAX_STRING_LEN = 16 * 1024 * 1024
MAX_ARRAY_LEN = 16_777_216
MAX_ARRAY_DEPTH = 4                   # an array value at level 5 fails (§6)
MAX_GRAPH_NODES = 65_536
MAX_DIM = 1 << 40                     # one dimension (§3.2)

# §3.1 section kinds this reader knows
SECTION_METADATA = 1
SECTION_GRAPH = 2
KNOWN_SECTION_KINDS = {SECTION_METADATA: "metadata", SECTION_GRAPH: "graph"}
SECTION_FLAG_REQUIRED = 1

# §4 element types: code -> (name, size, numpy dtype of the *stored* elements)
DTYPES = {
    1: ("f32", 4, np.dtype("<f4")),
    2: ("f16", 2, np.dtype("<f2")),
    3: ("bf16", 2, np.dtype("<u2")),   # widened to float32 on decode
    4: ("i8", 1, np.dtype("i1")),
    5: ("u8", 1, np.dtype("u1")),
    6: ("i32", 4, np.dtype("<i4")),
    7: ("i64", 8, np.dtype("<i8")),
    8: ("f64", 8, np.dtype("<f8")),
}

# §5 stage ids: id -> (name, kind).  Every id 0..=8 is *assigned*: its name and
# kind are fixed by the spec, but only 0 and 1 have a byte layout in 1.0.
STAGE_TABLE = {
    0: ("dense", "tensor"), 1: ("zstd", "byte"), 2: ("sparse", "tensor"),
    3: ("codebook", "tensor"), 4: ("huffman", "byte"), 5: ("lowrank", "tensor"),
    6: ("tucker", "tensor"), 7: ("binary", "tensor"), 8: ("miracle", "tensor"),
}
STAGE_DENSE = 0
STAGE_ZSTD = 1
# The position rule (stage 0 a tensor stage, later stages byte stages) applies
# at open to every assigned id in STAGE_TABLE, implemented here or not (§3.2):
# a chain [huffman] is bad_chain, not unknown_encoding.  Unassigned ids 9..=63
# have no known kind and are left to must_understand (§5).
IMPLEMENTED_STAGES = {STAGE_DENSE, STAGE_ZSTD}
# Parameter bytes each implemented stage's layout takes; a mismatch is
# bad_chain, judged when the tensor is decoded, not at open (§5).
STAGE_PARAM_LEN = {STAGE_DENSE: 0, STAGE_ZSTD: 8}
MAX_STAGE_ID = 63   # ids >= 64 are unknown_encoding immediately

# §6 metadata value types
T_STRING, T_INT, T_FLOAT, T_BOOL, T_ARRAY = 1, 2, 3, 4, 5

# Every structure lives in a bounded region (the header, the table, one
# section's extent); a field that would extend past the end of its region is
# `truncated` (spec preamble).  Bytes *left over* in a region are bad_layout.
OVERRUN_CODE = "truncated"


def align64(x: int) -> int:
    """`x` rounded up to a multiple of 64 (§1)."""
    return (x + 63) & ~63


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

class CxrmError(Exception):
    """A conformance error: `code` is one of the §10 error codes, `field` and
    `offset` (absolute byte offset in the file) say where."""

    def __init__(self, code: str, field: str, offset: int, message: str):
        super().__init__(f"{code} at {field} (offset {offset}): {message}")
        self.code = code
        self.field = field
        self.offset = offset
        self.message = message


# ---------------------------------------------------------------------------
# A bounded little-endian cursor
# ---------------------------------------------------------------------------

class _Reader:
    """Reads little-endian values from `buf[start:end]`, tracking the absolute
    offset.  A read past `end` raises OVERRUN_CODE (`truncated`); nothing is
    ever allocated from a count before the bytes it implies are known to be
    present."""

    def __init__(self, buf: memoryview, start: int, end: int, region: str):
        self.buf, self.pos, self.end, self.region = buf, start, end, region

    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int, field: str) -> memoryview:
        if n > self.end - self.pos:
            raise CxrmError(OVERRUN_CODE, field, self.pos,
                            f"needs {n} bytes but only {self.end - self.pos} "
                            f"remain in the {self.region}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "little")

    def u64(self, field: str) -> int:
        return int.from_bytes(self.take(8, field), "little")

    def i64(self, field: str) -> int:
        return int.from_bytes(self.take(8, field), "little", signed=True)

    def f64(self, field: str) -> float:
        return struct.unpack("<d", self.take(8, field))[0]


def _utf8(raw: memoryview, field: str, offset: int, allow_nul: bool = True) -> str:
    try:
        text = bytes(raw).decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise CxrmError("bad_utf8", field, offset + e.start, "not valid UTF-8") from None
    if not allow_nul and "\x00" in text:
        raise CxrmError("bad_utf8", field, offset + bytes(raw).index(0), "contains NUL")
    return text


# ---------------------------------------------------------------------------
# Table records
# ---------------------------------------------------------------------------

@dataclass
class Section:
    index: int
    kind: int
    flags: int
    offset: int
    length: int
    crc32: int
    entry_offset: int           # where the 32-byte entry sits in the file

    @property
    def required(self) -> bool:
        return bool(self.flags & SECTION_FLAG_REQUIRED)

    @property
    def field(self) -> str:
        return f"section[{self.index}]"


@dataclass
class Stage:
    id: int
    flags: int
    params: bytes
    offset: int                 # where the stage record starts in the file

    @property
    def name(self) -> str:
        return STAGE_TABLE.get(self.id, (f"stage{self.id}", None))[0]


@dataclass
class TensorRecord:
    index: int
    name: str
    dtype_code: int
    shape: tuple
    stages: list
    offset: int                 # extent offset
    length: int                 # extent length = stored bytes
    crc32: int
    record_offset: int
    name_offset: int
    element_count: int
    field_offsets: dict = dc_field(default_factory=dict, repr=False)

    @property
    def dtype(self) -> str:
        return DTYPES[self.dtype_code][0]

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype_code][1]

    @property
    def encoding(self) -> list:
        """Stage names in encoding order, e.g. ['dense', 'zstd']."""
        return [s.name for s in self.stages]

    @property
    def stored_bytes(self) -> int:
        return self.length

    @property
    def field(self) -> str:
        return f"tensor[{self.index}]"


class MetaArray(list):
    """A metadata array (§6): a plain list that also remembers its declared
    element type, which an empty array's values cannot show (the graph needs
    it to tell an "array of string" from an array of something else)."""

    def __init__(self, element_type: int, items=()):
        super().__init__(items)
        self.element_type = element_type


# ---------------------------------------------------------------------------
# Opening: header (§2) and table (§3)
# ---------------------------------------------------------------------------

def open_path(path) -> "CxrmFile":
    with open(path, "rb") as fh:
        return open_cxrm(fh.read())


def open_cxrm(data) -> "CxrmFile":
    """Check the header and the table in the order §2/§3/§10 fix, and return a
    CxrmFile.  No payload byte is read here."""
    buf = memoryview(data).cast("B")
    actual = len(buf)

    # --- §2 header, in the mandated order -----------------------------------
    if actual < HEADER_SIZE:
        raise CxrmError("truncated", "header", actual,
                        f"file has {actual} bytes, the header needs 64")
    h = _Reader(buf, 0, HEADER_SIZE, "header")
    magic = bytes(h.take(4, "header.magic"))
    byte_order = bytes(h.take(4, "header.byte_order"))
    version_major = h.u16("header.version_major")
    version_minor = h.u16("header.version_minor")
    flags = h.u32("header.flags")
    must_understand = h.u64("header.must_understand")
    table_offset = h.u64("header.table_offset")
    table_size = h.u64("header.table_size")
    data_offset = h.u64("header.data_offset")
    file_size = h.u64("header.file_size")
    reserved = h.u32("header.reserved")
    header_crc = h.u32("header.header_crc")

    if magic != MAGIC:
        raise CxrmError("bad_magic", "header.magic", 0, f"magic is {magic!r}")
    if byte_order != BYTE_ORDER_LE:
        if byte_order == BYTE_ORDER_BE:
            raise CxrmError("byte_swapped", "header.byte_order", 4,
                            "byte-order mark written big-endian")
        raise CxrmError("bad_magic", "header.byte_order", 4,
                        f"byte-order mark is {byte_order.hex()}")
    if version_major != SUPPORTED_MAJOR:
        raise CxrmError("unsupported_version", "header.version_major", 8,
                        f"version {version_major}.{version_minor}; this reader reads 1.x")
    if flags != 0:
        raise CxrmError("reserved_nonzero", "header.flags", 12, f"flags = {flags:#x}")
    if reserved != 0:
        raise CxrmError("reserved_nonzero", "header.reserved", 56, f"reserved = {reserved:#x}")
    if file_size > actual:
        raise CxrmError("truncated", "header.file_size", 48,
                        f"header says {file_size} bytes, file has {actual}")
    if file_size < actual:
        raise CxrmError("size_mismatch", "header.file_size", 48,
                        f"header says {file_size} bytes, file has {actual}")
    # §2, in this order: table_offset (out_of_bounds), table_size limit
    # (limit_exceeded), table end within the file (out_of_bounds).
    if table_offset != HEADER_SIZE:
        raise CxrmError("out_of_bounds", "header.table_offset", 24,
                        f"table_offset = {table_offset}, must be 64")
    if table_size > MAX_TABLE_SIZE:
        raise CxrmError("limit_exceeded", "header.table_size", 32,
                        f"table_size = {table_size} > 64 MiB")
    if HEADER_SIZE + table_size > file_size:
        raise CxrmError("out_of_bounds", "header.table_size", 32,
                        f"table ends at {HEADER_SIZE + table_size}, past file_size {file_size}")
    if data_offset != align64(HEADER_SIZE + table_size):
        raise CxrmError("bad_layout", "header.data_offset", 40,
                        f"data_offset = {data_offset}, must be "
                        f"{align64(HEADER_SIZE + table_size)}")
    if data_offset > file_size:
        raise CxrmError("out_of_bounds", "header.data_offset", 40,
                        f"data_offset {data_offset} past file_size {file_size}")
    table_end = HEADER_SIZE + table_size
    crc = zlib.crc32(buf[HEADER_SIZE:table_end], zlib.crc32(buf[0:60]))
    if crc != header_crc:
        raise CxrmError("crc_mismatch", "header.header_crc", 60,
                        f"header_crc {header_crc:#010x}, computed {crc:#010x}")
    pad = bytes(buf[table_end:data_offset])
    if pad.count(0) != len(pad):
        first = len(pad) - len(pad.lstrip(b"\x00"))
        raise CxrmError("nonzero_padding", "table.padding", table_end + first,
                        "nonzero byte between the table and data_offset")

    # --- §3 table --------------------------------------------------------------
    t = _Reader(buf, HEADER_SIZE, table_end, "table")
    # Each count is checked as soon as it is read, before any entry (§3.2).
    section_count = t.u32("table.section_count")
    if section_count > MAX_SECTIONS:
        raise CxrmError("limit_exceeded", "table.section_count", 64,
                        f"section_count = {section_count} > {MAX_SECTIONS}")
    tensor_count = t.u32("table.tensor_count")
    if tensor_count > MAX_TENSORS:
        raise CxrmError("limit_exceeded", "table.tensor_count", 68,
                        f"tensor_count = {tensor_count} > {MAX_TENSORS}")

    cursor = data_offset  # §3.3 extent walk, advanced as each record is read

    def check_extent(field: str, off_pos: int, offset: int, length: int) -> None:
        # §3.3.  Python ints do not overflow: an `offset + length` beyond
        # 2^64 - 1 is also beyond file_size, hence out_of_bounds, as the spec
        # requires of an overflowing sum.
        nonlocal cursor
        if offset != align64(cursor):
            raise CxrmError("bad_layout", f"{field}.offset", off_pos,
                            f"extent offset {offset}, expected align64({cursor}) = "
                            f"{align64(cursor)}")
        if offset + length > file_size:
            raise CxrmError("out_of_bounds", f"{field}.length", off_pos + 8,
                            f"extent {offset}+{length} runs past file_size {file_size}")
        cursor = offset + length

    sections: list[Section] = []
    for i in range(section_count):           # bounded by MAX_SECTIONS
        base = t.pos
        f = f"section[{i}]"
        kind = t.u32(f"{f}.kind")
        sflags = t.u32(f"{f}.flags")
        offset = t.u64(f"{f}.offset")
        length = t.u64(f"{f}.length")
        scrc = t.u32(f"{f}.crc32")
        sres = t.u32(f"{f}.reserved")
        if sflags & ~SECTION_FLAG_REQUIRED:
            raise CxrmError("reserved_nonzero", f"{f}.flags", base + 4,
                            f"section flags {sflags:#x}: only bit 0 is defined")
        if sres != 0:
            raise CxrmError("reserved_nonzero", f"{f}.reserved", base + 28,
                            f"reserved = {sres:#x}")
        check_extent(f, base + 8, offset, length)
        sections.append(Section(i, kind, sflags, offset, length, scrc, base))

    tensors: list[TensorRecord] = []
    for i in range(tensor_count):            # bounded by MAX_TENSORS and table bytes
        tensors.append(_read_tensor_record(t, i, check_extent))

    # Bytes left in the table after the last record (§3).
    if t.remaining() != 0:
        raise CxrmError("bad_layout", "table", t.pos,
                        f"{t.remaining()} bytes left in the table after the last record")
    # §3.3: the last extent must end exactly at file_size.
    if cursor != file_size:
        raise CxrmError("bad_layout", "header.file_size", 48,
                        f"last extent ends at {cursor}, file_size is {file_size}")

    # --- after the table (§10 order) ------------------------------------------
    seen: set[str] = set()
    for rec in tensors:
        if rec.name in seen:
            raise CxrmError("duplicate_name", f"{rec.field}.name", rec.name_offset,
                            f"two tensors named {rec.name!r}")
        seen.add(rec.name)
    seen_kinds: set[int] = set()
    for s in sections:
        if s.kind in KNOWN_SECTION_KINDS:
            if s.kind in seen_kinds:
                raise CxrmError("duplicate_section", f"{s.field}.kind", s.entry_offset,
                                f"second {KNOWN_SECTION_KINDS[s.kind]} section")
            seen_kinds.add(s.kind)
    for s in sections:
        if s.kind not in KNOWN_SECTION_KINDS and s.required:
            raise CxrmError("unknown_section", f"{s.field}.kind", s.entry_offset,
                            f"section kind {s.kind} is marked required and this "
                            f"reader does not know it")
    # §5 must_understand: consistency first (bad_chain), then support.
    used = 0
    for rec in tensors:
        for st in rec.stages:
            used |= 1 << st.id
    if used != must_understand:
        missing = used & ~must_understand
        extra = must_understand & ~used
        parts = []
        if missing:
            parts.append("omits " + _stage_names(missing))
        if extra:
            parts.append("lists unused " + _stage_names(extra))
        raise CxrmError("bad_chain", "header.must_understand", 16,
                        "must_understand " + " and ".join(parts))
    unsupported = used & ~sum(1 << s for s in IMPLEMENTED_STAGES)
    if unsupported:
        raise CxrmError("unknown_encoding", "header.must_understand", 16,
                        f"this file needs encodings {_stage_names(unsupported)}; "
                        f"this reader implements "
                        f"{', '.join(STAGE_TABLE[s][0] for s in sorted(IMPLEMENTED_STAGES))}")

    return CxrmFile(buf, (version_major, version_minor), must_understand,
                    data_offset, file_size, sections, tensors)


def _stage_names(bits: int) -> str:
    return ", ".join(STAGE_TABLE.get(i, (f"stage{i}",))[0]
                     for i in range(64) if bits >> i & 1)


def _read_tensor_record(t: _Reader, i: int, check_extent) -> TensorRecord:
    """One §3.2 record, each field checked as it is read, in stored order."""
    f = f"tensor[{i}]"
    record_offset = t.pos
    pos = t.pos
    name_len = t.u16(f"{f}.name_len")
    if not 1 <= name_len <= MAX_NAME_LEN:
        raise CxrmError("limit_exceeded", f"{f}.name_len", pos,
                        f"name_len = {name_len}, must be 1..=1024")
    name_offset = t.pos
    name = _utf8(t.take(name_len, f"{f}.name"), f"{f}.name", name_offset, allow_nul=False)

    pos = t.pos
    dtype = t.u8(f"{f}.dtype")
    if dtype not in DTYPES:
        raise CxrmError("bad_dtype", f"{f}.dtype", pos, f"dtype code {dtype}")

    pos = t.pos
    rank = t.u8(f"{f}.rank")
    if rank > MAX_RANK:
        raise CxrmError("limit_exceeded", f"{f}.rank", pos, f"rank {rank} > 8")
    dims = []
    count = 1
    for j in range(rank):
        # §3.2: each dimension <= 2^40, then the running product <= 2^40, so a
        # zero dimension anywhere does not excuse a huge one ([0, 2^50] and
        # [2^50, 0] both fail).  Python ints cannot overflow, and a u64
        # overflow of the product would also exceed 2^40: both limit_exceeded.
        pos = t.pos
        d = t.u64(f"{f}.dims[{j}]")
        if d > MAX_DIM:
            raise CxrmError("limit_exceeded", f"{f}.dims[{j}]", pos,
                            f"dims[{j}] = {d} > 2^40")
        count *= d
        if count > MAX_ELEMENTS:
            raise CxrmError("limit_exceeded", f"{f}.dims[{j}]", pos,
                            f"element count exceeds 2^40 at dims[{j}]")
        dims.append(d)
    if count * DTYPES[dtype][1] > MAX_DECODED_BYTES:
        raise CxrmError("limit_exceeded", f"{f}.dims", record_offset,
                        f"decoded size {count * DTYPES[dtype][1]} bytes > 2^36")

    pos = t.pos
    stage_count = t.u8(f"{f}.stage_count")
    if not 1 <= stage_count <= MAX_STAGES:
        raise CxrmError("limit_exceeded", f"{f}.stage_count", pos,
                        f"stage_count = {stage_count}, must be 1..=8")
    stages = []
    for k in range(stage_count):
        sf = f"{f}.stage[{k}]"
        spos = t.pos
        sid = t.u8(f"{sf}.id")
        sflags = t.u8(f"{sf}.flags")
        param_len = t.u16(f"{sf}.param_len")
        # §3.2 order, once id, flags and param_len are read: flags,
        # param_len, params present in the table (truncated), id >= 64,
        # position of an assigned id.  Whether the params fit the stage's
        # layout is a decode-time check (§5), see CxrmFile.decode.
        if sflags != 0:
            raise CxrmError("reserved_nonzero", f"{sf}.flags", spos + 1,
                            f"stage flags {sflags:#x}")
        if param_len > MAX_PARAM_LEN:
            raise CxrmError("limit_exceeded", f"{sf}.param_len", spos + 2,
                            f"param_len {param_len} > 4096")
        params = bytes(t.take(param_len, f"{sf}.params"))
        if sid > MAX_STAGE_ID:
            raise CxrmError("unknown_encoding", f"{sf}.id", spos,
                            f"stage id {sid} >= 64")
        if sid in STAGE_TABLE:               # assigned ids 0..=8 (§5)
            kind = STAGE_TABLE[sid][1]
            if (k == 0) != (kind == "tensor"):
                where = "first" if k == 0 else f"at position {k}"
                raise CxrmError("bad_chain", f"{sf}.id", spos,
                                f"{STAGE_TABLE[sid][0]} is a {kind} stage and stands {where}")
        stages.append(Stage(sid, sflags, params, spos))

    off_pos = t.pos
    offset = t.u64(f"{f}.offset")
    length = t.u64(f"{f}.length")
    crc = t.u32(f"{f}.crc32")
    check_extent(f, off_pos, offset, length)
    return TensorRecord(i, name, dtype, tuple(dims), stages, offset, length, crc,
                        record_offset, name_offset, count,
                        {"offset": off_pos, "crc32": off_pos + 16})


# ---------------------------------------------------------------------------
# Metadata maps (§6), shared by the graph (§7)
# ---------------------------------------------------------------------------

def _read_map(r: _Reader, prefix: str) -> dict:
    pos = r.pos
    count = r.u32(f"{prefix}.count")
    if count > MAX_MAP_ENTRIES:
        raise CxrmError("limit_exceeded", f"{prefix}.count", pos,
                        f"map of {count} entries > 65,536")
    out: dict = {}
    for _ in range(count):          # each entry consumes >= 4 bytes: bounded
        kpos = r.pos
        key_len = r.u16(f"{prefix}.key_len")
        if not 1 <= key_len <= MAX_KEY_LEN:          # §6: limit_exceeded
            raise CxrmError("limit_exceeded", f"{prefix}.key_len", kpos,
                            f"key_len {key_len}, must be 1..=256")
        # Keys are UTF-8 (bad_utf8) and may contain any character, NUL
        # included (§6).  duplicate_key is judged as soon as the key is read,
        # before its value.
        key = _utf8(r.take(key_len, f"{prefix}.key"), f"{prefix}.key", kpos + 2)
        if key in out:
            raise CxrmError("duplicate_key", f"{prefix}.{key}", kpos,
                            f"key {key!r} appears twice")
        tpos = r.pos
        vtype = r.u8(f"{prefix}.{key}")
        out[key] = _read_value(r, vtype, f"{prefix}.{key}", tpos, depth=0)
    return out


def _read_value(r: _Reader, vtype: int, field: str, type_pos: int, depth: int):
    """One §6 value of type `vtype`; `depth` is the number of arrays around it,
    so an array value read here is at level `depth + 1`."""
    if vtype == T_STRING:
        pos = r.pos
        n = r.u32(field)
        if n > MAX_STRING_LEN:
            raise CxrmError("limit_exceeded", field, pos, f"string of {n} bytes > 16 MiB")
        return _utf8(r.take(n, field), field, pos + 4)
    if vtype == T_INT:
        return r.i64(field)
    if vtype == T_FLOAT:
        return r.f64(field)
    if vtype == T_BOOL:
        pos = r.pos
        b = r.u8(field)
        if b > 1:
            raise CxrmError("bad_value", field, pos, f"bool stored as {b}")
        return b == 1
    if vtype == T_ARRAY:
        # §6: a top-level array value is at level 1 and an array value at
        # level 5 is limit_exceeded.  Only an array *value* counts: an empty
        # level-4 array whose element type is `array` is valid.
        # The level is judged before the element type is read (§6).
        if depth + 1 > MAX_ARRAY_DEPTH:
            raise CxrmError("limit_exceeded", field, type_pos,
                            f"arrays nested deeper than {MAX_ARRAY_DEPTH}")
        epos = r.pos
        etype = r.u8(field)
        if not T_STRING <= etype <= T_ARRAY:
            raise CxrmError("bad_value", field, epos, f"array element type {etype}")
        cpos = r.pos
        count = r.u32(field)
        if count > MAX_ARRAY_LEN:
            raise CxrmError("limit_exceeded", field, cpos,
                            f"array of {count} elements > 16,777,216")
        # Never pre-allocate `count` slots: each element consumes >= 1 byte,
        # so the loop is bounded by the section's length.
        arr = MetaArray(etype)
        for _ in range(count):
            arr.append(_read_value(r, etype, field, epos, depth + 1))
        return arr
    raise CxrmError("bad_value", field, type_pos, f"value type {vtype}")


# ---------------------------------------------------------------------------
# zstd (§5.2)
# ---------------------------------------------------------------------------

# Compressed bytes fed to the decompressor per step.  A zstd block yields at
# most 128 KiB (RFC 8878 Block_Maximum_Size) from at least 4 input bytes (an
# RLE block), so n fed bytes produce at most about n * 32 KiB + 128 KiB.
# Feeding max(_ZSTD_MIN_FEED, budget // 32 KiB) bytes, where `budget` is what
# may still be produced, therefore stops within about 2 MiB of passing
# decoded_len, whatever the input (§5.2 "MUST stop as soon as the output
# passes decoded_len"), while large tensors are still fed in big steps.
_ZSTD_MIN_FEED = 64
_ZSTD_MAX_FEED = 1 << 20
_ZSTD_BYTES_PER_INPUT_BYTE = 32 * 1024


def _zstd_decode(data: memoryview, decoded_len: int, field: str, offset: int) -> bytes:
    """Decode one or more concatenated zstd frames to exactly `decoded_len`
    bytes (§5.2).  RFC 8878 skippable frames are allowed and produce nothing.
    An empty input (zero frames, even with decoded_len = 0), a corrupt or
    truncated frame, or frames producing more or fewer than `decoded_len`
    bytes are decode_error; decoding stops soon after the output passes
    `decoded_len`, and the buffer grows only with output actually produced.
    The caller has already checked `decoded_len <= 2^36`.

    Windows up to 2^27 bytes (libzstd's default limit) are accepted, as §5.2
    requires; frames that need a dictionary are decode_error.
    """
    def fail(msg: str):
        raise CxrmError("decode_error", field, offset, msg)

    if len(data) == 0:
        fail("zstd input holds no frame")
    if _zstandard is not None:
        # Frame by frame with a streaming decompressor (one decompressobj per
        # frame; libzstd skips skippable frames), feeding a bounded amount of
        # input at a time.  The stream_reader and read_to_iter APIs silently
        # accept a truncated final frame, so they are not used.
        dctx = _zstandard.ZstdDecompressor()
        out = bytearray()
        pos, n = 0, len(data)
        try:
            while pos < n:
                dobj = dctx.decompressobj()
                while not dobj.eof:
                    if pos >= n:
                        fail("zstd input ends inside a frame")
                    budget = decoded_len - len(out)
                    step = min(_ZSTD_MAX_FEED, max(_ZSTD_MIN_FEED,
                                                   budget // _ZSTD_BYTES_PER_INPUT_BYTE))
                    chunk = bytes(data[pos:pos + step])
                    out += dobj.decompress(chunk)
                    if len(out) > decoded_len:
                        fail(f"zstd frames produce more than decoded_len = {decoded_len} bytes")
                    # At a frame's end, the bytes past it were not consumed.
                    pos += len(chunk) - (len(dobj.unused_data) if dobj.eof else 0)
        except _zstandard.ZstdError as e:
            fail(f"zstd: {e}")
        if len(out) != decoded_len:
            fail(f"zstd frames produce {len(out)} bytes, decoded_len = {decoded_len}")
        return bytes(out)

    # Fallback: the zstd CLI.  `zstd -d -c` decodes concatenated frames and
    # fails on truncated or trailing garbage input; we stop reading (and kill
    # it) as soon as its output passes decoded_len.
    try:
        proc = subprocess.Popen(["zstd", "-d", "-c", "-q"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        fail(f"no zstd backend: install the zstandard package or the zstd tool ({e})")

    def feed():
        try:
            proc.stdin.write(bytes(data))
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = bytearray()
    too_long = False
    while True:
        chunk = proc.stdout.read1(1 << 16)
        if not chunk:
            break
        out += chunk
        if len(out) > decoded_len:
            too_long = True
            proc.kill()
            break
    proc.stdout.close()
    rc = proc.wait()
    writer.join()
    proc.stderr.close()
    if too_long:
        fail(f"zstd frames produce more than decoded_len = {decoded_len} bytes")
    if rc != 0:
        fail("zstd reported a malformed stream")
    if len(out) != decoded_len:
        fail(f"zstd frames produce {len(out)} bytes, decoded_len = {decoded_len}")
    return bytes(out)


# ---------------------------------------------------------------------------
# The opened file
# ---------------------------------------------------------------------------

class CxrmFile:
    """An opened (header- and table-checked) file.  `verify()` does the rest."""

    def __init__(self, buf, version, must_understand, data_offset, file_size,
                 sections, tensors):
        self.buf = buf
        self.version = version                  # (major, minor)
        self.must_understand = must_understand
        self.data_offset = data_offset
        self.file_size = file_size
        self.sections: list[Section] = sections
        self.tensors: list[TensorRecord] = tensors
        self._by_name = {t.name: t for t in tensors}

    # -- lookup --------------------------------------------------------------
    def tensor(self, name: str) -> TensorRecord:
        return self._by_name[name]

    def _section(self, kind: int):
        for s in self.sections:
            if s.kind == kind:
                return s
        return None

    def _extents(self):
        """(field, record, offset, length, crc) in §3.3 order."""
        for s in self.sections:
            yield s.field, s, s.offset, s.length, s.crc32
        for t in self.tensors:
            yield t.field, t, t.offset, t.length, t.crc32

    # -- full verification (§10) -------------------------------------------
    def verify(self) -> None:
        """Full verification, in the §10 order: all padding between extents
        (file order, which is table order), then every extent's CRC-32
        (sections, then tensors), then the metadata, then the graph, then
        every tensor decoded in table order."""
        # 1. padding between extents
        cursor = self.data_offset
        for _, _, offset, length, _ in self._extents():
            gap = bytes(self.buf[cursor:offset])
            if gap.count(0) != len(gap):
                first = len(gap) - len(gap.lstrip(b"\x00"))
                raise CxrmError("nonzero_padding", "padding", cursor + first,
                                "nonzero byte in the padding between extents")
            cursor = offset + length
        # 2. every extent's CRC-32, sections first, then tensors
        for field, rec, offset, length, crc in self._extents():
            self._check_crc(field, rec, offset, length, crc)
        # 3. metadata, then graph
        self.metadata()
        self.graph()
        # 4. decode every tensor
        for t in self.tensors:
            self.decode(t.name, check_crc=False)

    def _check_crc(self, field, rec, offset, length, crc) -> None:
        got = zlib.crc32(self.buf[offset:offset + length])
        if got != crc:
            pos = (rec.entry_offset + 24 if isinstance(rec, Section)
                   else rec.field_offsets["crc32"])
            raise CxrmError("crc_mismatch", f"{field}.crc32", pos,
                            f"extent CRC {got:#010x}, table says {crc:#010x}")

    # -- metadata (§6) ---------------------------------------------------------
    def metadata(self) -> dict:
        """The metadata map; {} when the file has no metadata section."""
        s = self._section(SECTION_METADATA)
        if s is None:
            return {}       # §10: a file without one has "metadata": {}
        r = _Reader(self.buf, s.offset, s.offset + s.length, "metadata section")
        out = _read_map(r, "metadata")
        if r.remaining():
            raise CxrmError("bad_layout", "metadata", r.pos,
                            f"{r.remaining()} bytes after the metadata map")
        return out

    # -- graph (§7) --------------------------------------------------------------
    def graph(self):
        """The graph as a list of node dicts (weights defaulting to []), or
        None when the file has no graph section."""
        s = self._section(SECTION_GRAPH)
        if s is None:
            return None
        r = _Reader(self.buf, s.offset, s.offset + s.length, "graph section")
        pos = r.pos
        node_count = r.u32("graph.node_count")
        if node_count > MAX_GRAPH_NODES:
            raise CxrmError("limit_exceeded", "graph.node_count", pos,
                            f"{node_count} nodes > 65,536")
        # §7: parse every node map and the trailing bytes first; only then
        # judge the nodes.
        def is_string_array(v):
            # `inputs` and `weights` have element type string even when
            # empty (§7), so the declared element type is what is checked.
            return isinstance(v, MetaArray) and v.element_type == T_STRING

        raw = []
        for i in range(node_count):      # each map consumes >= 4 bytes: bounded
            pos = r.pos
            m = _read_map(r, f"graph.node[{i}]")

            def bad(msg):
                raise CxrmError("bad_graph", f"graph.node[{i}]", pos, msg)
            # §7: each node's four standard keys are checked as it is parsed.
            if not isinstance(m.get("name"), str):
                bad("node without a string `name`")
            if not isinstance(m.get("op"), str):
                bad(f"node {m['name']!r} without a string `op`")
            if not is_string_array(m.get("inputs")):
                bad(f"node {m['name']!r} without an array-of-string `inputs`")
            if "weights" in m and not is_string_array(m["weights"]):
                bad(f"node {m['name']!r}: `weights` is not an array of string")
            raw.append((pos, m))
        if r.remaining():
            raise CxrmError("bad_layout", "graph", r.pos,
                            f"{r.remaining()} bytes after the last node")

        nodes, names = [], set()
        for i, (pos, m) in enumerate(raw):
            f = f"graph.node[{i}]"

            def bad(msg):
                raise CxrmError("bad_graph", f, pos, msg)
            # Then, in §7's order: the name `input`, the inputs, the weights,
            # and last the name against earlier nodes.
            name = m["name"]
            if name == "input":
                bad("a node may not be called `input`")
            for inp in m["inputs"]:
                if inp != "input" and inp not in names:
                    bad(f"node {name!r} reads {inp!r}, which is not an earlier node")
            for w in m.get("weights", ()):
                if w not in self._by_name:
                    bad(f"node {name!r} names tensor {w!r}, which the file lacks")
            if name in names:
                raise CxrmError("duplicate_name", f"{f}.name", pos,
                                f"two nodes named {name!r}")
            names.add(name)
            node = dict(m)
            node.setdefault("weights", MetaArray(T_STRING))  # §10: always listed
            nodes.append(node)
        return nodes

    # -- tensors (§5) ---------------------------------------------------------
    def decode(self, name: str, check_crc: bool = True) -> np.ndarray:
        """Decode tensor `name` to a numpy array of its dtype and shape
        (bf16 is widened to float32).  Dense tensors are views of the file
        buffer, not copies."""
        t = self._by_name[name]
        if check_crc:
            self._check_crc(t.field, t, t.offset, t.length, t.crc32)
        data = self.buf[t.offset:t.offset + t.length]
        # Apply the chain from last to first (§5).  open_cxrm has already
        # guaranteed its shape: stage 0 is dense (the only implemented tensor
        # stage), every later stage zstd (the only implemented byte stage).
        # Each stage first checks its parameter layout (bad_chain, §5), then
        # runs.
        # §5: each stage checks its parameters as it runs, last to first;
        # within zstd: parameter length, decoded_len's limit, then the frames.
        for k in range(len(t.stages) - 1, -1, -1):
            st = t.stages[k]
            sf = f"{t.field}.stage[{k}]"
            want_params = STAGE_PARAM_LEN.get(st.id)
            if want_params is not None and len(st.params) != want_params:
                raise CxrmError("bad_chain", f"{sf}.param_len", st.offset + 2,
                                f"{st.name} takes {want_params} parameter bytes, "
                                f"param_len is {len(st.params)}")
            if st.id == STAGE_ZSTD:
                decoded_len = int.from_bytes(st.params, "little")
                if decoded_len > MAX_DECODED_BYTES:            # §5.2
                    raise CxrmError("limit_exceeded", f"{sf}.params", st.offset + 4,
                                    f"zstd decoded_len {decoded_len} > 2^36")
                data = memoryview(_zstd_decode(data, decoded_len, sf, st.offset))
            elif st.id == STAGE_DENSE:
                # §5.1: the input must be exactly element count x dtype size
                # bytes; otherwise size_mismatch, reported here (at decode)
                # even where the table alone would show it.
                want = t.element_count * t.itemsize
                if len(data) != want:
                    raise CxrmError("size_mismatch", sf, st.offset,
                                    f"dense input is {len(data)} bytes, "
                                    f"{t.element_count} x {t.itemsize} = {want} expected")
                return _dense_array(data, t)
            else:  # unreachable after open_cxrm's must_understand check
                raise CxrmError("unknown_encoding", sf, st.offset,
                                f"stage {st.name} is not implemented")
        # Unreachable too: open_cxrm requires stage 0 to be a tensor stage.
        raise CxrmError("bad_chain", t.field, t.record_offset, "chain has no tensor stage")


def _dense_array(data: memoryview, t: TensorRecord) -> np.ndarray:
    """Row-major little-endian elements -> numpy array of shape `t.shape`."""
    stored = DTYPES[t.dtype_code][2]
    arr = np.frombuffer(data, dtype=stored, count=t.element_count)
    if t.dtype == "bf16":
        # bf16 is the upper 16 bits of an f32 (§4).
        arr = (arr.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return arr.reshape(t.shape)


# ---------------------------------------------------------------------------
# A tiny command line: python3 cxrm_reader.py FILE...
# ---------------------------------------------------------------------------

def _main(argv) -> int:
    rc = 0
    for path in argv:
        try:
            f = open_path(path)
            f.verify()
        except CxrmError as e:
            print(f"{path}: {e}")
            rc = 1
            continue
        print(f"{path}: cxrm {f.version[0]}.{f.version[1]}, "
              f"{len(f.sections)} sections, {len(f.tensors)} tensors (zstd via {ZSTD_BACKEND})")
        for t in f.tensors:
            print(f"  {t.name}: {t.dtype}{list(t.shape)} {'+'.join(t.encoding)} "
                  f"{t.stored_bytes} bytes")
    return rc


if __name__ == "__main__":
    import sys
    raise SystemExit(_main(sys.argv[1:]))
