"""An independent reader for the `.cxrm` file format, version 1.x.

Written from `spec/cxrm.md` alone (no Rust source consulted), as a second
implementation that proves the spec is complete.  Section references (§N) point
into that document.

Implements every stage with a layout: dense (0), zstd (1), sparse (2),
codebook (3), huffman (4), lowrank (5), tucker (6), binary (7), miracle (8,
format 1.4: `miracle_normal` is its generator) and hashed (9, format 1.6:
`hashed_negated` is its sign); an unassigned stage is refused
through must_understand (§5), naming what is missing.  Also the image
preprocessing of §6.1/§6.2 (format 1.3): `preprocess` and `resize_plane`.

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
    preprocess(f.metadata(), "RGB", w, h, pixels)   # §6.1: image -> (u8 planes, f32 input)

Where the spec leaves a choice open, the choice made here is marked
"SPEC GAP" in a comment, with the reasoning.
"""

from __future__ import annotations

import math
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
    "open_cxrm", "open_path", "ZSTD_BACKEND", "preprocess", "resize_plane",
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
# kind are fixed by the spec; 0..=4 have a layout in 1.1, 5..=7 in 1.2, and 8
# is reserved.
STAGE_TABLE = {
    0: ("dense", "representation"), 1: ("zstd", "byte"),
    2: ("sparse", "representation"), 3: ("codebook", "representation"),
    4: ("huffman", "entropy"), 5: ("lowrank", "representation"),
    6: ("tucker", "representation"), 7: ("binary", "representation"),
    8: ("miracle", "representation"),
    9: ("hashed", "representation"),
}
STAGE_DENSE = 0
STAGE_ZSTD = 1
STAGE_SPARSE = 2
STAGE_CODEBOOK = 3
STAGE_HUFFMAN = 4
STAGE_LOWRANK = 5
STAGE_TUCKER = 6
STAGE_BINARY = 7
STAGE_MIRACLE = 8
STAGE_HASHED = 9
FACTORED_STAGES = {STAGE_LOWRANK, STAGE_TUCKER, STAGE_BINARY}
IMPLEMENTED_STAGES = {STAGE_DENSE, STAGE_ZSTD, STAGE_SPARSE, STAGE_CODEBOOK, STAGE_HUFFMAN,
                      STAGE_LOWRANK, STAGE_TUCKER, STAGE_BINARY, STAGE_MIRACLE,
                      STAGE_HASHED}
# Parameter bytes each implemented stage's layout takes; a mismatch is
# bad_chain, judged when the tensor is decoded, not at open (§5 "Decoding
# order").
STAGE_PARAM_LEN = {STAGE_DENSE: 0, STAGE_ZSTD: 8, STAGE_SPARSE: 12,
                   STAGE_CODEBOOK: 4, STAGE_HUFFMAN: 0,
                   STAGE_LOWRANK: 8, STAGE_TUCKER: 12, STAGE_BINARY: 4,
                   STAGE_MIRACLE: 20, STAGE_HASHED: 16}
MAX_STAGE_ID = 63   # ids >= 64 are unknown_encoding immediately

# §5.4 symbol stream codings
CODING_PACKED, CODING_BYTES, CODING_HUFFMAN = 0, 1, 2
MAX_ULEB128_BYTES = 10          # a uleb128 holds at most 64 bits (§5.4)
MAX_LEN_BITS = 5                # bits per stored Huffman code length (§5.4)
# §5.5 canonical Huffman code
MAX_CODE_LEN = 24
# §5.7 sparse layouts
SPARSE_RELATIVE, SPARSE_CSR = 0, 1
MAX_CSR_COLS = 65_535
MAX_CSR_ROWS = (1 << 32) - 1
# §4 floating types (bf16 included: "Floating types are IEEE 754 (bf16: ...)")
FLOAT_DTYPES = {1, 2, 3, 8}
# §5.6 centroid dtypes: code -> numpy dtype of the stored centroids
CENTROID_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f2")}

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
    `offset` say where.  `offset` is an absolute byte offset in the file,
    except for errors inside a tensor's payload (§5.4 to §5.7: fields named
    `tensor[i].positions`, `.indices`, `.centroids`, `.values`, `.payload`)
    when a byte stage (zstd) produced that payload: it is then the offset
    into the decoded payload, which has no file offset of its own.  When the
    payload is the stored bytes (no byte stage), payload errors carry file
    offsets like every other error (§5 "Decoding order")."""

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

    def uleb128(self, field: str) -> int:
        """An unsigned LEB128 integer (§5.4): 7 bits per byte, least
        significant group first, high bit set when another byte follows; at
        most 10 bytes, the value within 64 bits, shortest form (no final 0x00
        byte after the first), otherwise decode_error.  A byte missing from
        the region is `truncated` (§5.4).  The 10th byte is judged as soon as
        it is read ("at the tenth byte at the latest": a continuation bit or
        a value past 64 bits there is decode_error), so an over-long encoding
        never reads an 11th byte."""
        start = self.pos
        value = 0
        for i in range(MAX_ULEB128_BYTES):
            byte = self.u8(field)
            if i == MAX_ULEB128_BYTES - 1 and byte > 1:
                # bits 63.. come from the 10th byte: only bit 0 fits in 64
                # bits, and a continuation bit would need an 11th byte.
                raise CxrmError("decode_error", field, start,
                                "uleb128 longer than 10 bytes or past 64 bits")
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise CxrmError("decode_error", field, start,
                                    "uleb128 not in its shortest form (final 0x00 byte)")
                return value
        raise AssertionError("unreachable: the 10th byte ends the loop")


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


# §5 chain grammar, for chains of implemented stages only:
#
#     chain := dense                         zstd*
#            | sparse [codebook] [huffman]   zstd*
#            | codebook          [huffman]   zstd*
#            | lowrank | tucker | binary    zstd*     (1.2)
#            | miracle                      zstd*     (1.4)
#            | hashed miracle               zstd*     (1.6)
#
# as a state machine: state -> {stage id: next state}.  Every state but the
# initial one accepts (a chain has at least one stage, §3.2).
_GRAMMAR = {
    "start":    {STAGE_DENSE: "dense", STAGE_SPARSE: "sparse",
                 STAGE_CODEBOOK: "codebook", STAGE_LOWRANK: "dense",
                 STAGE_TUCKER: "dense", STAGE_BINARY: "dense",
                 STAGE_MIRACLE: "dense", STAGE_HASHED: "hashed"},
    "dense":    {STAGE_ZSTD: "zstd"},
    "hashed":   {STAGE_MIRACLE: "dense"},     # the only state that does not accept
    "sparse":   {STAGE_CODEBOOK: "quantized", STAGE_HUFFMAN: "huffman",
                 STAGE_ZSTD: "zstd"},
    "quantized": {STAGE_HUFFMAN: "huffman", STAGE_ZSTD: "zstd"},   # sparse+codebook
    "codebook": {STAGE_HUFFMAN: "huffman", STAGE_ZSTD: "zstd"},
    "huffman":  {STAGE_ZSTD: "zstd"},
    "zstd":     {STAGE_ZSTD: "zstd"},
}


def _grammar_break(ids: list) -> int | None:
    """Index of the first stage that breaks §5's chain grammar, or None: the
    stage at which no chain of the grammar can continue the prefix read so
    far (§5 "Grammar checks": reported at the id of the first stage that
    breaks the grammar)."""
    state = "start"
    for k, sid in enumerate(ids):
        state = _GRAMMAR[state].get(sid)
        if state is None:
            return k
    if state == "hashed":              # nothing codes the shared values
        return len(ids) - 1
    return None


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
        # param_len, params present in the table (truncated), id >= 64.
        # Whether the params fit the stage's layout is a decode-time check
        # (§5), see CxrmFile.decode.
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
        stages.append(Stage(sid, sflags, params, spos))

    # §3.2/§5: once all stages are read, the chain grammar, but only when this
    # reader implements every stage in it; a chain with a stage it lacks
    # (reserved 5..=8, unassigned 9..=63) is left to must_understand, so it
    # fails with unknown_encoding rather than bad_chain.
    if all(st.id in IMPLEMENTED_STAGES for st in stages):
        k = _grammar_break([st.id for st in stages])
        if k is not None:
            st = stages[k]
            raise CxrmError("bad_chain", f"{f}.stage[{k}].id", st.offset,
                            f"chain {'+'.join(s.name for s in stages)} breaks the "
                            f"grammar at {st.name} (stage {k})")

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


ZSTD_MAX_WINDOW = 1 << 27


def _zstd_oversized_window(data: bytes) -> str | None:
    """Why some frame declares a Window_Size above 2^27 (§5.2; RFC 8878
    3.1.1.1.2: a single-segment frame's Window_Size is its Frame_Content_Size),
    found by walking the frame and block headers without decoding.  libzstd
    skips its own window check when it decodes a whole frame in one pass, so
    the check cannot be left to it.  A header the walk cannot follow (bad
    magic, cut short, reserved block type) ends the walk: the decoder then
    reports it."""
    def le(at: int, n: int) -> int | None:
        if at + n > len(data):
            return None
        return int.from_bytes(data[at:at + n], "little")

    pos, frame = 0, 0
    while pos < len(data):
        magic = le(pos, 4)
        if magic is None:
            return None
        if magic & 0xFFFFFFF0 == 0x184D2A50:          # skippable frame
            size = le(pos + 4, 4)
            if size is None:
                return None
            pos += 8 + size
            frame += 1
            continue
        if magic != 0xFD2FB528:
            return None
        fhd = le(pos + 4, 1)
        if fhd is None:
            return None
        single = bool(fhd & 0x20)
        at = pos + 5
        window = 0
        if not single:
            wd = le(at, 1)
            if wd is None:
                return None
            at += 1
            base = 1 << (10 + (wd >> 3))
            window = base + base // 8 * (wd & 7)
        at += (0, 1, 2, 4)[fhd & 3]
        fcs_len = (int(single), 2, 4, 8)[fhd >> 6]
        if single:
            fcs = le(at, fcs_len)
            if fcs is None:
                return None
            window = fcs + (256 if fcs_len == 2 else 0)
        if window > ZSTD_MAX_WINDOW:
            return (f"zstd frame {frame} declares a window of {window} bytes, "
                    f"above the limit of {ZSTD_MAX_WINDOW}")
        at += fcs_len
        while True:
            header = le(at, 3)
            if header is None:
                return None
            btype, size = (header >> 1) & 3, header >> 3
            if btype == 3:
                return None
            at += 3 + (1 if btype == 1 else size)
            if header & 1:
                break
        if fhd & 4:
            at += 4
        pos = at
        frame += 1
    return None


def _zstd_decode(data: memoryview, decoded_len: int, field: str, offset: int) -> bytes:
    """Decode one or more concatenated zstd frames to exactly `decoded_len`
    bytes (§5.2).  RFC 8878 skippable frames are allowed and produce nothing.
    An empty input (zero frames, even with decoded_len = 0), a corrupt or
    truncated frame, or frames producing more or fewer than `decoded_len`
    bytes are decode_error; decoding stops soon after the output passes
    `decoded_len`, and the buffer grows only with output actually produced.
    The caller has already checked `decoded_len <= 2^36`.

    Windows up to 2^27 bytes are accepted and larger ones refused
    (_zstd_oversized_window), as §5.2 requires; the frames' content sizes and
    checksums are verified (libzstd does both); frames that need a dictionary
    are decode_error.
    """
    def fail(msg: str):
        raise CxrmError("decode_error", field, offset, msg)

    if len(data) == 0:
        fail("zstd input holds no frame")
    oversized = _zstd_oversized_window(bytes(data))
    if oversized is not None:
        fail(oversized)
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
# Stage parameters (§5.6, §5.7), checked when the tensor is decoded
# ---------------------------------------------------------------------------
#
# §5 "Decoding order": first the byte stages run, last to first, each
# checking its own parameters as it starts; then the other stages check
# their parameters in chain order (sparse, codebook, huffman): a parameter
# length other than the stage's is bad_chain, then the fields in stored
# order with the codes their tables give.  Only then is the payload read.
#
# Offsets of parameter errors are absolute file offsets (the parameters live
# in the table).  Offsets of errors *inside a payload* (§5.4 to §5.7) are
# file offsets when the payload is the stored bytes, and offsets into the
# decoded payload when a byte stage (zstd) produced it.

@dataclass
class _SparseParams:
    layout: int         # SPARSE_RELATIVE or SPARSE_CSR
    index_bits: int     # relative: gap width b, 2..=16; CSR: 0
    nnz: int            # survivors, <= element count


@dataclass
class _CodebookParams:
    bits: int           # index width, 1..=8
    centroid_dtype: int # 1 f32, 2 f16
    k: int              # centroids, 1..=2^bits


def _check_param_len(st: Stage, sf: str) -> None:
    """§5 "Decoding order": a stage first checks that its parameters have its
    layout's length (bad_chain)."""
    want = STAGE_PARAM_LEN[st.id]
    if len(st.params) != want:
        raise CxrmError("bad_chain", f"{sf}.param_len", st.offset + 2,
                        f"{st.name} takes {want} parameter bytes, "
                        f"param_len is {len(st.params)}")


def _sparse_params(st: Stage, sf: str, t: TensorRecord) -> _SparseParams:
    """§5.7 parameters: param_len 12 (bad_chain), then the fields in stored
    order: layout and index_bits (bad_chain), reserved (reserved_nonzero),
    nnz <= element count (decode_error)."""
    _check_param_len(st, sf)
    p = st.params
    base = st.offset + 4                        # first parameter byte in the file
    layout, index_bits = p[0], p[1]
    reserved = int.from_bytes(p[2:4], "little")
    nnz = int.from_bytes(p[4:12], "little")
    if layout not in (SPARSE_RELATIVE, SPARSE_CSR):
        raise CxrmError("bad_chain", f"{sf}.params.layout", base,
                        f"sparse layout {layout}: only 0 (relative) and 1 (CSR) exist")
    if layout == SPARSE_RELATIVE and not 2 <= index_bits <= 16:
        raise CxrmError("bad_chain", f"{sf}.params.index_bits", base + 1,
                        f"relative layout with gap width {index_bits}, must be 2..=16")
    if layout == SPARSE_CSR and index_bits != 0:
        raise CxrmError("bad_chain", f"{sf}.params.index_bits", base + 1,
                        f"CSR layout with index_bits {index_bits}, must be 0")
    if reserved != 0:
        raise CxrmError("reserved_nonzero", f"{sf}.params.reserved", base + 2,
                        f"sparse reserved = {reserved:#x}")
    if nnz > t.element_count:
        raise CxrmError("decode_error", f"{sf}.params.nnz", base + 4,
                        f"nnz {nnz} > element count {t.element_count}")
    return _SparseParams(layout, index_bits, nnz)


def _codebook_params(st: Stage, sf: str, t: TensorRecord) -> _CodebookParams:
    """§5.6 parameters: param_len 4, then the fields in stored order (bits
    1..=8, centroid_dtype f32/f16, k 1..=2^bits), and then the tensor's
    dtype a float type (f32, f16, bf16, f64); all bad_chain."""
    _check_param_len(st, sf)
    p = st.params
    base = st.offset + 4
    bits, cdtype = p[0], p[1]
    k = int.from_bytes(p[2:4], "little")
    if not 1 <= bits <= 8:
        raise CxrmError("bad_chain", f"{sf}.params.bits", base,
                        f"codebook index width {bits}, must be 1..=8")
    if cdtype not in CENTROID_DTYPES:
        raise CxrmError("bad_chain", f"{sf}.params.centroid_dtype", base + 1,
                        f"centroid dtype {cdtype}, must be 1 (f32) or 2 (f16)")
    if not 1 <= k <= 1 << bits:
        raise CxrmError("bad_chain", f"{sf}.params.k", base + 2,
                        f"{k} centroids for {bits}-bit indices, must be 1..={1 << bits}")
    if t.dtype_code not in FLOAT_DTYPES:
        raise CxrmError("bad_chain", sf, st.offset,
                        f"a codebook on a {t.dtype} tensor: only float types may be quantized")
    return _CodebookParams(bits, cdtype, k)


# ---------------------------------------------------------------------------
# Symbol streams (§5.4)
# ---------------------------------------------------------------------------

def _bits_needed(x: int) -> int:
    """§5.7 `bits(x)`: the number of bits needed to write x >= 0, at least 1."""
    assert x >= 0
    return max(1, x.bit_length())


def _read_stream(r: _Reader, field: str, width: int, count: int | None = None,
                 max_count: int | None = None, huffman_ok: bool = False) -> np.ndarray:
    """Read one symbol stream (§5.4) from the payload reader `r` and return its
    symbols as an int64 array.

    `width` is the width the stage defines; the stage defines either the exact
    `count` or, for relative sparse positions, only an upper bound
    `max_count` (§5.7).  `huffman_ok` is whether the chain has a `huffman`
    stage (§5.3).

    Header fields (u8 coding, u8 width, uleb128 count, uleb128 data_len) are
    checked as they are read, in stored order: coding (bad_value; then coding
    2 without a huffman stage, bad_chain), width (decode_error), count
    (malformed uleb128 or not what the stage defines: decode_error),
    data_len (malformed: decode_error; past the payload: truncated).  Then
    the data, by coding.  Whether a stream may be Huffman-coded is judged at
    its coding byte, before its other fields (§5.3); a uleb128 cut off by the
    end of the payload is truncated (§5.4).

    Nothing is allocated from `count` before it has been checked against
    what the stage defines and before the bytes it implies are known
    present, except for a Huffman stream of one symbol, which stores no bits
    (§8): that one comes back as a zero-stride numpy view of its symbol
    (see _huffman_decode), so it costs no memory either."""
    pos = r.pos
    coding = r.u8(f"{field}.coding")
    if coding not in (CODING_PACKED, CODING_BYTES, CODING_HUFFMAN):
        raise CxrmError("bad_value", f"{field}.coding", pos,
                        f"stream coding {coding}: only 0 (packed), 1 (bytes), 2 (Huffman)")
    if coding == CODING_HUFFMAN and not huffman_ok:
        raise CxrmError("bad_chain", f"{field}.coding", pos,
                        "a Huffman-coded stream in a chain without the huffman stage")
    wpos = r.pos
    got_width = r.u8(f"{field}.width")
    # Stage-defined widths are all within 1..=16, so equality also enforces
    # the 1..=16 range (both decode_error).
    if got_width != width:
        raise CxrmError("decode_error", f"{field}.width", wpos,
                        f"stream width {got_width}, the stage defines {width}")
    cpos = r.pos
    n_sym = r.uleb128(f"{field}.count")
    if count is not None and n_sym != count:
        raise CxrmError("decode_error", f"{field}.count", cpos,
                        f"stream count {n_sym}, the stage defines {count}")
    if max_count is not None and n_sym > max_count:
        raise CxrmError("decode_error", f"{field}.count", cpos,
                        f"stream count {n_sym} > the bound {max_count}")
    dpos = r.pos
    data_len = r.uleb128(f"{field}.data_len")
    if data_len > r.remaining():
        raise CxrmError("truncated", f"{field}.data_len", dpos,
                        f"data_len {data_len} runs past the payload "
                        f"({r.remaining()} bytes remain)")
    start = r.pos
    data = r.take(data_len, f"{field}.data")

    if coding == CODING_PACKED:
        return _unpack_packed(data, n_sym, width, f"{field}.data", start)
    if coding == CODING_BYTES:
        return _unpack_bytes(data, n_sym, width, f"{field}.data", start)
    return _huffman_decode(r.buf, start, start + data_len, n_sym, width,
                           f"{field}.huffman")


# Symbols unpacked per step of a packed stream: a multiple of 8, so that every
# step starts on a byte boundary (8 x width bits is a whole number of bytes);
# bounds the temporary bit arrays to a few MiB.
_PACKED_CHUNK_SYMBOLS = 1 << 18


def _unpack_packed(data: memoryview, n_sym: int, width: int, field: str,
                   start: int) -> np.ndarray:
    """Coding 0: `width` bits per symbol, MSB first, back to back; data_len
    exactly ceil(count x width / 8) and the padding bits zero (decode_error).

    numpy.unpackbits reads the bit order directly; each symbol's `width` bits
    are then right-aligned in 16 bits and packed again, giving big-endian
    u16 symbols without an int64 copy of every bit."""
    total_bits = n_sym * width
    want = (total_bits + 7) // 8
    if len(data) != want:
        raise CxrmError("decode_error", field, start,
                        f"packed data_len {len(data)}, ceil({n_sym} x {width} / 8) = {want}")
    raw = np.frombuffer(data, dtype=np.uint8)
    if total_bits % 8 and raw[-1] & ((1 << (8 - total_bits % 8)) - 1):
        raise CxrmError("decode_error", field, start + want - 1,
                        "nonzero padding bit after the last packed symbol")
    if width == 8:
        return raw.astype(np.int64)
    out = np.empty(n_sym, dtype=np.int64)
    step = _PACKED_CHUNK_SYMBOLS
    for j in range(0, n_sym, step):
        m = min(step, n_sym - j)
        lo = j * width // 8                        # byte-aligned: j % 8 == 0
        bits = np.unpackbits(raw[lo:lo + (m * width + 7) // 8], count=m * width)
        padded = np.zeros((m, 16), dtype=np.uint8)
        padded[:, 16 - width:] = bits.reshape(m, width)
        out[j:j + m] = np.packbits(padded, axis=1).view(">u2").reshape(m)
    return out


def _unpack_bytes(data: memoryview, n_sym: int, width: int, field: str,
                  start: int) -> np.ndarray:
    """Coding 1: one u8 per symbol (width <= 8) or one little-endian u16;
    data_len exactly count x (1 or 2), every symbol below 2^width
    (decode_error)."""
    size = 1 if width <= 8 else 2
    if len(data) != n_sym * size:
        raise CxrmError("decode_error", field, start,
                        f"bytes data_len {len(data)}, count x {size} = {n_sym * size}")
    syms = np.frombuffer(data, dtype=np.uint8 if size == 1 else np.dtype("<u2"))
    bad = np.flatnonzero(syms >> width)
    if bad.size:
        j = int(bad[0])
        raise CxrmError("decode_error", field, start + j * size,
                        f"symbol {int(syms[j])} at index {j} is not below 2^{width}")
    return syms.astype(np.int64)


# ---------------------------------------------------------------------------
# Canonical Huffman code (§5.5)
# ---------------------------------------------------------------------------

# Bits resolved by the primary lookup table; longer codes (up to 24 bits) fall
# back to the canonical per-length search.
_HUFF_TABLE_BITS = 10
# Bit positions examined per chunk of the bit stream (bounds temporary memory
# to a few MiB whatever the stream's length).
_HUFF_CHUNK_BITS = 1 << 16


def _huffman_decode(buf: memoryview, start: int, end: int, n_sym: int, width: int,
                    field: str) -> np.ndarray:
    """Coding 2 (§5.4): uleb128 `n`, u8 `len_bits`, `n` code lengths of
    `len_bits` bits each (MSB first, zero-padded to a whole byte), then the
    §5.5 bit stream, all within the stream's `data_len` bytes
    `buf[start:end]`.

    Checks, in order: n <= 2^width; len_bits <= 5; the ceil(n x len_bits / 8)
    length bytes present, their padding bits zero; each length <= 24; then by
    the number of used symbols: none -> count 0; one -> its length is 1 (and
    every symbol is it, and the bit stream MUST be empty); two or more ->
    the code is complete (Kraft sum exactly 1).  Then the bit stream:
    decoding `count` codes must not run out of bits; the stream must be
    exactly ceil(total code bits / 8) bytes with zero padding bits (all
    decode_error).  A field of the data (`n`, `len_bits`, the lengths) that
    data_len cannot hold is `truncated` (§5.4).

    A stream of one symbol stores no bits, so its `count` is bounded only by
    the stage (§8's exception): it is returned as a zero-stride view of that
    symbol, which allocates nothing.

    SPEC GAP: with no used symbol §5.5 requires only `count` = 0; it does
    not say outright that the bit stream must then be empty (the paragraph
    on the bit stream begins "Otherwise", after the one-symbol case).  The
    codes of zero symbols are zero bits, so ceil(0 / 8) = 0 bytes: a
    non-empty stream is decode_error here."""
    r = _Reader(buf, start, end, "Huffman stream data")
    npos = r.pos
    n = r.uleb128(f"{field}.n")
    if n > 1 << width:
        raise CxrmError("decode_error", f"{field}.n", npos,
                        f"{n} code lengths for {width}-bit symbols (at most {1 << width})")
    bpos = r.pos
    len_bits = r.u8(f"{field}.len_bits")
    if len_bits > MAX_LEN_BITS:
        raise CxrmError("decode_error", f"{field}.len_bits", bpos,
                        f"len_bits {len_bits}, must be 0..={MAX_LEN_BITS}")
    lpos = r.pos
    # n <= 2^16 and len_bits <= 5: at most 40,960 bytes, checked present.
    raw = r.take((n * len_bits + 7) // 8, f"{field}.lengths")
    if len_bits == 0:
        lengths = np.zeros(n, dtype=np.uint8)       # "every length is 0"
    else:
        # Same bit layout as a packed stream; its checks (length, zero
        # padding) are the ones §5.4 asks of the lengths.
        lengths = _unpack_packed(raw, n, len_bits, f"{field}.lengths",
                                 lpos).astype(np.uint8)
    too_long = np.flatnonzero(lengths > MAX_CODE_LEN)
    if too_long.size:
        s = int(too_long[0])
        raise CxrmError("decode_error", f"{field}.lengths", lpos + s * len_bits // 8,
                        f"symbol {s} has code length {int(lengths[s])} > {MAX_CODE_LEN}")
    stream_pos = r.pos
    stream = r.take(r.remaining(), f"{field}.bits")
    used = np.flatnonzero(lengths)

    def fail(msg, at=stream_pos):
        raise CxrmError("decode_error", field, at, msg)

    if used.size == 0:
        if n_sym != 0:
            fail(f"no symbol has a code but count is {n_sym}", lpos)
        if len(stream):
            fail(f"{len(stream)} bit-stream bytes for zero code bits")
        return np.zeros(0, dtype=np.int64)
    if used.size == 1:
        s = int(used[0])
        if lengths[s] != 1:
            fail(f"the only symbol, {s}, has code length {int(lengths[s])}, must be 1",
                 lpos)
        if len(stream):
            fail(f"{len(stream)} bit-stream bytes: a one-symbol code has an empty stream")
        return np.broadcast_to(np.int64(s), (n_sym,))

    # Kraft sum in units of 2^-24: exactly 2^24 for a complete code.
    kraft = int(np.sum(np.left_shift(1, MAX_CODE_LEN - lengths[used].astype(np.int64))))
    if kraft != 1 << MAX_CODE_LEN:
        fail("over-subscribed code lengths" if kraft > 1 << MAX_CODE_LEN
             else "incomplete code lengths", lpos)

    # Every symbol costs at least one bit: a cheap bound before allocating.
    if n_sym > 8 * len(stream):
        fail(f"{len(stream)} bytes cannot hold {n_sym} codes (ran out of bits)")

    dec = _CanonicalDecoder(lengths)
    syms, total_bits = dec.decode(np.frombuffer(stream, dtype=np.uint8), n_sym)
    if total_bits < 0:
        fail(f"ran out of bits before {n_sym} codes were decoded")
    want = (total_bits + 7) // 8
    if len(stream) != want:
        fail(f"bit stream is {len(stream)} bytes, ceil({total_bits} / 8) = {want}")
    if total_bits % 8 and stream[-1] & ((1 << (8 - total_bits % 8)) - 1):
        fail("nonzero padding bit after the last code", stream_pos + want - 1)
    return syms


class _CanonicalDecoder:
    """Table-driven decoder of a complete canonical code (§5.5).

    The codes follow the spec's construction (DEFLATE's):

        count[l] = number of symbols of length l;  code = 0
        for l in 1..=max: code = (code + count[l-1]) << 1;  first[l] = code
        for s in 0..n, if lengths[s] > 0: code[s] = first[lengths[s]]++

    Let L be the longest length and W the next L bits of the stream (zero
    bits past its end).  Left-justified to L bits, the codes of length l are
    the interval [first[l] << (L-l), limit[l]) with
    limit[l] = (first[l] + count[l]) << (L-l), and limit[] is nondecreasing;
    so the length of the code at W is the least l with W < limit[l] (the
    canonical per-length search, a binary search over limit[]), and its
    symbol is sorted_symbols[offset[l] + (W >> (L-l)) - first[l]].  A
    complete code leaves no W undecodable: "bits that match no code" can only
    mean running out of bits.

    The primary table maps the next K = min(L, 10) bits to (symbol, length)
    for every code of length <= K (length 0 marks a longer code, resolved by
    the per-length search on the full L bits).

    Decoding is vectorized: every bit position of the stream is decoded as if
    a code started there (one table lookup each), and the chain of actual
    code starts p[j+1] = p[j] + length(p[j]) from p[0] = 0 is then followed
    by pointer doubling, chunk by chunk.  Nothing walks a tree bit by bit."""

    def __init__(self, lengths: np.ndarray):
        lengths = lengths.astype(np.int64)
        self.max_len = L = int(lengths.max())
        count = np.bincount(lengths, minlength=L + 1)
        count[0] = 0
        first = np.zeros(L + 2, dtype=np.int64)
        code = 0
        for l in range(1, L + 1):
            code = (code + int(count[l - 1])) << 1
            first[l] = code
        # Symbols sorted by (length, symbol): a stable sort on length keeps
        # increasing symbol order within one length.
        used = np.flatnonzero(lengths)
        self.sorted_symbols = used[np.argsort(lengths[used], kind="stable")]
        offset = np.zeros(L + 2, dtype=np.int64)
        offset[1:L + 2] = np.cumsum(count[:L + 1])        # symbols shorter than l
        self.first, self.offset = first, offset
        ls = np.arange(1, L + 1)
        self.limit = (first[1:L + 1] + count[1:L + 1]) << (L - ls)   # limit[l-1]
        # Primary table on the first K bits.
        self.K = K = min(L, _HUFF_TABLE_BITS)
        sym, ln = self._search(np.arange(1 << K, dtype=np.int64) << (L - K))
        short = ln <= K
        self.table_sym = np.where(short, sym, 0)
        self.table_len = np.where(short, ln, 0)

    def _search(self, w: np.ndarray):
        """Canonical per-length search for left-justified L-bit windows w."""
        L = self.max_len
        ln = np.searchsorted(self.limit, w, side="right") + 1   # least l: w < limit[l]
        idx = self.offset[ln] + (w >> (L - ln)) - self.first[ln]
        return self.sorted_symbols[idx], ln

    def _decode_at(self, padded: np.ndarray, positions: np.ndarray):
        """(symbol, length) of the code starting at each bit position."""
        L, K = self.max_len, self.K
        byte = positions >> 3
        # 32 bits from the position's byte, big-endian, shifted so the
        # position's bit is the top one: at least 25 >= L valid bits.
        word = ((padded[byte].astype(np.uint64) << np.uint64(24))
                | (padded[byte + 1].astype(np.uint64) << np.uint64(16))
                | (padded[byte + 2].astype(np.uint64) << np.uint64(8))
                | padded[byte + 3].astype(np.uint64))
        word = (word << (positions & 7).astype(np.uint64)) & np.uint64(0xFFFFFFFF)
        w = (word >> np.uint64(32 - L)).astype(np.int64)
        prefix = w >> (L - K)
        sym = self.table_sym[prefix]
        ln = self.table_len[prefix]
        long_ = np.flatnonzero(ln == 0)
        if long_.size:                                   # codes longer than K
            sym[long_], ln[long_] = self._search(w[long_])
        return sym, ln

    def decode(self, stream: np.ndarray, n_sym: int):
        """Decode `n_sym` codes from `stream` (bytes).  Returns (symbols,
        total code bits), or (None, -1) when the stream runs out of bits."""
        n_bits = 8 * len(stream)
        padded = np.concatenate([stream, np.zeros(4, dtype=np.uint8)])
        out = np.empty(n_sym, dtype=np.int64)
        done, pos = 0, 0
        while done < n_sym:
            if pos >= n_bits:
                return None, -1
            # Decode every position of this chunk; a code starting in the
            # chunk may end past it (at most 24 bits later).
            hi = min(pos + _HUFF_CHUNK_BITS, n_bits)
            sym, ln = self._decode_at(padded, np.arange(pos, hi, dtype=np.int64))
            m = hi - pos
            # nxt[j]: the next code start after one starting at pos + j,
            # relative to pos; m is the sentinel "left the chunk".
            nxt = np.arange(m, dtype=np.int64) + ln
            nxt = np.append(np.minimum(nxt, m), m)
            starts = _chain(nxt, n_sym - done)
            last = int(starts[-1])
            end_bit = pos + last + int(ln[last])
            if end_bit > n_bits:        # the last code needs bits past the end
                return None, -1
            out[done:done + starts.size] = sym[starts]
            done += starts.size
            pos = end_bit
        return out, pos


def _chain(nxt: np.ndarray, limit: int) -> np.ndarray:
    """The first `limit` (or fewer) elements of 0, nxt[0], nxt[nxt[0]], ...
    before the sentinel len(nxt) - 1 (which maps to itself), by pointer
    doubling: `reach` holds the chain's first 2^i elements and `jump` is nxt
    applied 2^i times.  The chain strictly increases, so sorted order is
    chain order."""
    sentinel = len(nxt) - 1
    reach = np.zeros(1, dtype=np.int64)
    jump = nxt
    while reach.size < limit + 1:
        more = jump[reach]
        if (more == sentinel).all():
            break
        reach = np.union1d(reach, more)
        jump = jump[jump]
    reach = reach[reach != sentinel]
    return reach[:limit]


# ---------------------------------------------------------------------------
# Representations with symbol streams (§5.6, §5.7)
# ---------------------------------------------------------------------------

def _round_f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """f32 -> bf16 bit patterns (uint16), round to nearest even (§5.6); a NaN
    stays a NaN (upper 16 bits, quiet bit forced, never rounding into an
    infinity) and an infinity stays infinite (rounding leaves 0x7F800000
    unchanged)."""
    u = x.astype("<f4").view(np.uint32).astype(np.uint64)
    rounded = (u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    nan = np.isnan(x)
    quiet = (u >> np.uint64(16)) | np.uint64(0x0040)
    return np.where(nan, quiet, rounded).astype(np.uint16)


def _read_codebook_part(r: _Reader, t: TensorRecord, cb: _CodebookParams,
                        count: int, huffman_ok: bool) -> np.ndarray:
    """§5.6 payload part: k centroids, then the index stream (width = bits,
    `count` indices).  Returns the `count` values in the tensor's stored
    numpy dtype (bf16 as uint16 bit patterns)."""
    cdt = CENTROID_DTYPES[cb.centroid_dtype]
    raw = r.take(cb.k * cdt.itemsize, f"{t.field}.centroids")
    centroids = np.frombuffer(raw, dtype=cdt)
    istart = r.pos
    idx = _read_stream(r, f"{t.field}.indices", cb.bits, count=count,
                       huffman_ok=huffman_ok)
    # A one-symbol Huffman stream is a zero-stride view: one probe suffices.
    bad = np.flatnonzero((idx[:1] if _is_constant(idx) else idx) >= cb.k)
    if bad.size:
        j = int(bad[0])
        raise CxrmError("decode_error", f"{t.field}.indices", istart,
                        f"index {int(idx[j])} at position {j}, only {cb.k} centroids")
    # Convert the centroids to the tensor's dtype (round to nearest even;
    # f16 -> f32/f64 and f32 -> f64 are exact), then gather.
    # A finite f32 beyond f16's range rounds to an infinity, as round to
    # nearest even does; numpy's overflow warning for that is silenced.
    if t.dtype == "bf16":
        table = _round_f32_to_bf16(centroids.astype(np.float32))
    else:
        with np.errstate(over="ignore"):
            table = centroids.astype(DTYPES[t.dtype_code][2])
    return table[idx]


def _is_constant(a: np.ndarray) -> bool:
    """A zero-stride view: the symbols of a one-symbol Huffman stream."""
    return a.ndim == 1 and a.size > 1 and a.strides[0] == 0


def _read_positions(r: _Reader, t: TensorRecord, sp: _SparseParams,
                    huffman_ok: bool) -> np.ndarray:
    """§5.7 position part: the survivors' flat row-major positions, strictly
    increasing, all below the element count, exactly nnz of them."""
    n = t.element_count
    field = f"{t.field}.positions"
    start = r.pos

    def fail(msg):
        raise CxrmError("decode_error", field, start, msg)

    if sp.layout == SPARSE_RELATIVE:
        b = sp.index_bits
        escape = (1 << b) - 1
        # count includes escapes; bounded by nnz + n / (2^b - 1) + 1.  (With
        # an integer count, real and floor division give the same bound.)
        syms = _read_stream(r, field, b, max_count=sp.nnz + n // escape + 1,
                            huffman_ok=huffman_ok)
        # A symbol s < escape places a survivor at next + s and moves next
        # past it (+ s + 1); an escape only moves next by 2^b - 1.  Escapes
        # after the last survivor are allowed and place nothing (§5.7).
        if _is_constant(syms):                  # one-symbol Huffman stream
            s = int(syms[0])
            positions = (np.zeros(0, dtype=np.int64) if s == escape else
                         np.arange(1, syms.size + 1, dtype=np.int64) * (s + 1) - 1)
        else:
            is_escape = syms == escape
            after = np.cumsum(np.where(is_escape, escape, syms + 1))
            positions = after[~is_escape] - 1
        if positions.size and positions[-1] >= n:
            j = int(np.flatnonzero(positions >= n)[0])
            fail(f"survivor {j} at position {int(positions[j])} >= element count {n}")
        if positions.size != sp.nnz:
            fail(f"the gap stream places {positions.size} survivors, nnz is {sp.nnz}")
        return positions

    # CSR: rows = first dimension, cols = n / rows (a scalar is 1 x 1; a tensor
    # with no elements, [0, r] or [r, 0], is 0 x 0).  Both bounds are checked
    # before any stream is read.
    rows = 0 if n == 0 else (t.shape[0] if t.shape else 1)
    cols = n // rows if rows else 0
    if cols > MAX_CSR_COLS:
        fail(f"CSR with {cols} columns > {MAX_CSR_COLS}")
    if rows > MAX_CSR_ROWS:
        fail(f"CSR with {rows} rows > {MAX_CSR_ROWS}")
    per_row = _read_stream(r, f"{field}.rows", _bits_needed(cols), count=rows,
                           huffman_ok=huffman_ok)
    # The row counts must add up to nnz, checked right after their stream.
    total = (int(per_row[0]) * per_row.size if _is_constant(per_row)
             else int(per_row.sum()))
    if total != sp.nnz:
        fail(f"CSR row counts add up to {total}, nnz is {sp.nnz}")
    col = _read_stream(r, f"{field}.columns", _bits_needed(max(cols, 1) - 1),
                       count=sp.nnz, huffman_ok=huffman_ok)
    if not col.size:
        return np.zeros(0, dtype=np.int64)
    # nnz > 0 here, so rows <= nnz <= n even for a constant row-count stream.
    per_row = np.ascontiguousarray(per_row)
    if int(col.max()) >= cols:
        j = int(np.flatnonzero(col >= cols)[0])
        fail(f"survivor {j} in column {int(col[j])} >= cols {cols}")
    row_of = np.repeat(np.arange(rows, dtype=np.int64), per_row)
    # Within one row the columns must strictly increase.
    same_row = row_of[1:] == row_of[:-1]
    bad = np.flatnonzero(same_row & (col[1:] <= col[:-1]))
    if bad.size:
        j = int(bad[0]) + 1
        fail(f"row {int(row_of[j])}: column {int(col[j])} after {int(col[j - 1])}, "
             f"not strictly increasing")
    return row_of * cols + col


def _decode_stream_repr(r: _Reader, t: TensorRecord, rep: list,
                        field_of) -> np.ndarray:
    """Decode a `sparse [codebook] [huffman]` or `codebook [huffman]` payload
    from `r`, which spans exactly the payload (over the file buffer when the
    payload is the stored bytes, so errors carry file offsets; over the
    decoded bytes when a zstd stage produced it).

    `rep` is the chain without its byte stages (the grammar was checked at
    open).  The stages check their parameters in chain order (sparse,
    codebook, huffman), all before the first payload byte is read (§5
    "Decoding order"); then the payload is read part by part, each part's
    checks as it is read, and it must be consumed exactly."""
    sp = cb = None
    huffman_ok = False
    for k, st in enumerate(rep):
        sf = field_of(k)
        if st.id == STAGE_SPARSE:
            sp = _sparse_params(st, sf, t)
        elif st.id == STAGE_CODEBOOK:
            cb = _codebook_params(st, sf, t)
        else:                                   # huffman: no parameters
            _check_param_len(st, sf)
            huffman_ok = True

    stored = DTYPES[t.dtype_code][2]
    if sp is None:                              # codebook representation
        out = _read_codebook_part(r, t, cb, t.element_count, huffman_ok)
    else:
        positions = _read_positions(r, t, sp, huffman_ok)
        if cb is not None:                      # quantized survivors
            values = _read_codebook_part(r, t, cb, sp.nnz, huffman_ok)
        else:                                   # nnz raw values in the dtype
            raw = r.take(sp.nnz * t.itemsize, f"{t.field}.values")
            values = np.frombuffer(raw, dtype=stored)
        # Non-survivors are all zero bytes (a survivor may hold zero too).
        # The zero fill is bounded by the decoded-size limit (§8's exception).
        out = np.zeros(t.element_count, dtype=stored)
        out[positions] = values
    if r.remaining():
        raise CxrmError("decode_error", f"{t.field}.payload", r.pos,
                        f"{r.remaining()} bytes left over after the last part of the payload")
    return out


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
        # §5 "Decoding order": first the byte stages, last to first, each
        # checking its own parameters as it starts; then the other stages'
        # parameters in chain order; only then the payload.  open_cxrm has
        # already checked the chain against the grammar (every stage is
        # implemented, or must_understand would have failed), so it is
        # `dense zstd*`, `sparse [codebook] [huffman] zstd*` or
        # `codebook [huffman] zstd*`.
        stages = t.stages

        def field_of(k):
            return f"{t.field}.stage[{k}]"

        k = len(stages) - 1
        while stages[k].id == STAGE_ZSTD:      # stage 0 is never zstd
            st, sf = stages[k], field_of(k)
            # Within zstd: parameter length, decoded_len's limit, the frames.
            _check_param_len(st, sf)
            decoded_len = int.from_bytes(st.params, "little")
            if decoded_len > MAX_DECODED_BYTES:                # §5.2
                raise CxrmError("limit_exceeded", f"{sf}.params", st.offset + 4,
                                f"zstd decoded_len {decoded_len} > 2^36")
            data = memoryview(_zstd_decode(data, decoded_len, sf, st.offset))
            k -= 1
        rep = stages[:k + 1]
        # Offsets of errors inside the payload: file offsets when it is the
        # stored bytes, offsets into the decoded payload when zstd made it.
        if k == len(stages) - 1:
            r = _Reader(self.buf, t.offset, t.offset + t.length, "payload")
        else:
            r = _Reader(data, 0, len(data), "payload")
        if rep[0].id == STAGE_DENSE:           # grammar: dense stands alone
            st, sf = rep[0], field_of(0)
            _check_param_len(st, sf)
            # §5.1: the payload must be exactly element count x dtype size
            # bytes; otherwise size_mismatch, reported here (at decode) even
            # where the table alone would show it.
            want = t.element_count * t.itemsize
            if len(data) != want:
                raise CxrmError("size_mismatch", sf, st.offset,
                                f"dense payload is {len(data)} bytes, "
                                f"{t.element_count} x {t.itemsize} = {want} expected")
            return _dense_array(data, t)
        if rep[0].id in FACTORED_STAGES:       # grammar: stands alone
            return _decode_factored(r, t, rep[0], field_of(0))
        if rep[0].id == STAGE_MIRACLE:         # grammar: stands alone
            return _decode_miracle(r, t, rep[0], field_of(0))
        if rep[0].id == STAGE_HASHED:          # grammar: hashed miracle
            return _decode_hashed(r, t, rep, field_of)
        # sparse [codebook] [huffman] or codebook [huffman] (§5.6, §5.7)
        flat = _decode_stream_repr(r, t, rep, field_of)
        return _widen(flat, t).reshape(t.shape)


# ---------------------------------------------------------------------------
# Factored representations (§5.8; §5.9 lowrank, §5.10 tucker, §5.11 binary)
# ---------------------------------------------------------------------------

def _store_dtype(code: int, field: str, offset: int) -> np.dtype:
    """The stored number type of factors and scales: 1 (f32) or 2 (f16)."""
    if code not in CENTROID_DTYPES:
        raise CxrmError("bad_chain", field, offset,
                        f"stored dtype {code}, must be 1 (f32) or 2 (f16)")
    return CENTROID_DTYPES[code]


def _reserved(raw: bytes, field: str, offset: int) -> None:
    if any(raw):
        raise CxrmError("reserved_nonzero", field, offset, f"reserved bytes {bytes(raw).hex()}")


def _floats(r: _Reader, n: int, dt: np.dtype, field: str) -> np.ndarray:
    """n stored numbers, exactly as float64 (f32 and f16 widen exactly)."""
    raw = r.take(n * dt.itemsize, field)
    return np.frombuffer(raw, dtype=dt).astype(np.float64)


def _round_from_f64(x: np.ndarray, t: TensorRecord) -> np.ndarray:
    """Reconstructed float64 values rounded once, to nearest even, into the
    tensor's stored numpy dtype (bf16 as uint16 bit patterns).  numpy converts
    float64 to float32 and float16 directly; for bf16 the value is first
    rounded to odd in float32, which a second rounding to the 8-bit
    significand then cannot distort."""
    if t.dtype == "bf16":
        with np.errstate(over="ignore", invalid="ignore"):
            f = x.astype(np.float32)
            inexact = np.isfinite(f) & (f.astype(np.float64) != x)
            too_far = np.abs(f.astype(np.float64)) > np.abs(x)
        bits = f.view(np.uint32).copy()
        bits -= (inexact & too_far).astype(np.uint32)
        bits |= inexact.astype(np.uint32)
        return _round_f32_to_bf16(bits.view(np.float32))
    with np.errstate(over="ignore"):
        return x.astype(DTYPES[t.dtype_code][2])


def _decode_factored(r: _Reader, t: TensorRecord, st: Stage, sf: str) -> np.ndarray:
    """§5.8-§5.11: parameters in stored order (param_len, then each field),
    then whether they fit the tensor, then the payload, consumed exactly."""
    _check_param_len(st, sf)
    p, base = st.params, st.offset + 4
    if st.id == STAGE_BINARY:
        dt = _store_dtype(p[0], f"{sf}.params.scale_dtype", base)
        _reserved(p[1:4], f"{sf}.params.reserved", base + 1)
    elif st.id == STAGE_LOWRANK:
        rank = int.from_bytes(p[0:4], "little")
        if rank == 0:
            raise CxrmError("bad_chain", f"{sf}.params.rank", base, "rank 0")
        dt = _store_dtype(p[4], f"{sf}.params.factor_dtype", base + 4)
        _reserved(p[5:8], f"{sf}.params.reserved", base + 5)
    else:
        r_out = int.from_bytes(p[0:4], "little")
        r_in = int.from_bytes(p[4:8], "little")
        if r_out == 0 or r_in == 0:
            raise CxrmError("bad_chain", f"{sf}.params", base, "a Tucker rank of 0")
        dt = _store_dtype(p[8], f"{sf}.params.factor_dtype", base + 8)
        _reserved(p[9:12], f"{sf}.params.reserved", base + 9)
    if t.dtype_code not in FLOAT_DTYPES:
        raise CxrmError("bad_chain", sf, st.offset,
                        f"{st.name} on a {t.dtype} tensor: its values are real")
    n = t.element_count
    if st.id == STAGE_BINARY:
        # The view of §5.7's CSR layout: first dimension by the rest.
        rows = 0 if n == 0 else (t.shape[0] if t.shape else 1)
        cols = n // rows if rows else 0
        scales = _floats(r, rows, dt, f"{t.field}.scales")
        row_bytes = (cols + 7) // 8
        pos = r.pos
        raw = np.frombuffer(r.take(rows * row_bytes, f"{t.field}.signs"), dtype=np.uint8)
        bits = np.unpackbits(raw.reshape(rows, row_bytes), axis=1)   # MSB first
        pad = bits[:, cols:]
        if pad.any():
            row = int(np.flatnonzero(pad.any(axis=1))[0])
            raise CxrmError("decode_error", f"{t.field}.signs", pos + (row + 1) * row_bytes - 1,
                            f"nonzero padding bits after row {row}")
        # Each scale rounded to the dtype first, then signed: -x is exact.
        mag = _round_from_f64(scales, t)
        if t.dtype == "bf16":
            neg = mag ^ np.uint16(0x8000)
        else:
            neg = -mag
        flat = np.where(bits[:, :cols].astype(bool), mag[:, None], neg[:, None]).reshape(-1)
    elif st.id == STAGE_LOWRANK:
        if len(t.shape) < 2:
            raise CxrmError("bad_chain", f"{sf}.params", st.offset,
                            "lowrank needs a tensor of rank 2 or more")
        rows = t.shape[0]
        cols = n // rows if rows else 0
        if rank > min(rows, cols):
            raise CxrmError("bad_chain", f"{sf}.params", base,
                            f"rank {rank} > min({rows}, {cols})")
        u = _floats(r, rows * rank, dt, f"{t.field}.u").reshape(rows, rank)
        v = _floats(r, rank * cols, dt, f"{t.field}.v").reshape(rank, cols)
        # Sum in float64 in increasing k, as §5.8 fixes.
        acc = np.zeros((rows, cols))
        for k in range(rank):
            acc += np.outer(u[:, k], v[k, :])
        flat = _round_from_f64(acc.reshape(-1), t)
    else:
        if len(t.shape) < 2:
            raise CxrmError("bad_chain", f"{sf}.params", st.offset,
                            "tucker needs a tensor of rank 2 or more")
        o, i = t.shape[0], t.shape[1]
        s = n // (o * i) if o * i else 0
        if r_out > min(o, i * s):
            raise CxrmError("bad_chain", f"{sf}.params", base,
                            f"rank_out {r_out} > min({o}, {i * s})")
        if r_in > min(i, o * s):
            raise CxrmError("bad_chain", f"{sf}.params", base + 4,
                            f"rank_in {r_in} > min({i}, {o * s})")
        u_out = _floats(r, o * r_out, dt, f"{t.field}.u_out").reshape(o, r_out)
        core = _floats(r, r_out * r_in * s, dt, f"{t.field}.core").reshape(r_out, r_in, s)
        u_in = _floats(r, i * r_in, dt, f"{t.field}.u_in").reshape(i, r_in)
        # T[a, i, s] = sum_b core[a, b, s] U_in[i, b], then
        # W[o, i, s] = sum_a U_out[o, a] T[a, i, s], each in increasing index.
        tt = np.zeros((r_out, i, s))
        for b in range(r_in):
            tt += core[:, b, None, :] * u_in[None, :, b, None]
        w = np.zeros((o, i, s))
        for a in range(r_out):
            w += u_out[:, a, None, None] * tt[None, a]
        flat = _round_from_f64(w.reshape(-1), t)
    if r.remaining():
        raise CxrmError("decode_error", f"{t.field}.payload", r.pos,
                        f"{r.remaining()} bytes left over after the last part of the payload")
    return _widen(flat, t).reshape(t.shape)


# ---------------------------------------------------------------------------
# §5.12 miracle: a seed and a sample index per block
# ---------------------------------------------------------------------------

_M64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_SQRT2 = struct.unpack("<d", (0x3FF6A09E667F3BCD).to_bytes(8, "little"))[0]
_LN2 = struct.unpack("<d", (0x3FE62E42FEFA39EF).to_bytes(8, "little"))[0]


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _spec_ln(s: float) -> float:
    """§5.12's logarithm: only correctly rounded + - * / (Python floats are
    binary64 and never fuse a multiply-add)."""
    fm, fe = math.frexp(s)             # s = fm * 2^fe, fm in [0.5, 1): exact
    m, e = fm * 2.0, fe - 1            # m in [1, 2)
    if m > _SQRT2:
        m, e = m * 0.5, e + 1
    t = (m - 1.0) / (m + 1.0)
    u = t * t
    acc = 1.0 / 23.0
    for k in range(10, -1, -1):
        acc = acc * u + 1.0 / (2 * k + 1)
    return float(e) * _LN2 + (t + t) * acc


def _uniform(w: int) -> float:
    return float(2 * (w >> 11) + 1 - (1 << 53)) * 2.0 ** -53


def miracle_base(seed: int, block: int, index: int) -> int:
    h = _mix((_mix(seed) + _GAMMA * (block + 1)) & _M64)
    return _mix((h + _GAMMA * (index + 1)) & _M64)


def miracle_normal(base: int, position: int) -> float:
    """The standard normal number at `position` of the block whose
    base(seed, b, i) is `base` (§5.12: the polar method, 64 attempts)."""
    for a in range(64):
        c = 128 * position + 2 * a
        v1 = _uniform(_mix((base + _GAMMA * (c + 1)) & _M64))
        v2 = _uniform(_mix((base + _GAMMA * (c + 2)) & _M64))
        s = v1 * v1 + v2 * v2
        if s < 1.0:
            return v1 * math.sqrt((-2.0 * _spec_ln(s)) / s)
    return 0.0


def _decode_miracle(r: _Reader, t: TensorRecord, st: Stage, sf: str) -> np.ndarray:
    """§5.12: parameters in stored order, the block count against the tensor
    last; then the indices, their padding, and nothing left over."""
    values = _miracle_values(r, t, st, sf, t.element_count)
    return _widen(_round_from_f64(values, t), t).reshape(t.shape)


def hashed_negated(seed: int, element: int) -> bool:
    """§5.13's sign: element `e` is negated when the top bit of
    mix(mix(seed) + γ(e + 1)) is set."""
    return _mix((_mix(seed) + _GAMMA * (element + 1)) & _M64) >> 63 == 1


def _decode_hashed(r: _Reader, t: TensorRecord, rep: list, field_of) -> np.ndarray:
    """§5.13: the hashed parameters in stored order (the shared values against
    the tensor last), then the miracle stage as a tensor of shape [M]; element
    e is v[e mod M], negated where the hash says."""
    st, sf = rep[0], field_of(0)
    _check_param_len(st, sf)
    p, base = st.params, st.offset + 4
    seed = int.from_bytes(p[0:8], "little")
    m = int.from_bytes(p[8:12], "little")
    _reserved(p[12:16], f"{sf}.params.reserved", base + 12)
    if t.dtype_code not in FLOAT_DTYPES:
        raise CxrmError("bad_chain", sf, st.offset,
                        f"hashed on a {t.dtype} tensor: its values are real")
    n = t.element_count
    if not (m == 0 if n == 0 else 1 <= m <= n):
        raise CxrmError("bad_chain", f"{sf}.params.values", base + 8,
                        f"{m} shared values for {n} elements")
    shared = _miracle_values(r, t, rep[1], field_of(1), m)
    values = np.array([-shared[e % m] if hashed_negated(seed, e) else shared[e % m]
                       for e in range(n)], dtype=np.float64)
    return _widen(_round_from_f64(values, t), t).reshape(t.shape)


def _miracle_values(r: _Reader, t: TensorRecord, st: Stage, sf: str, n: int) -> np.ndarray:
    """§5.12's `n` values in binary64, before the rounding to the dtype."""
    _check_param_len(st, sf)
    p, base = st.params, st.offset + 4
    seed = int.from_bytes(p[0:8], "little")
    blocks = int.from_bytes(p[8:12], "little")
    bits = p[12]
    if not 1 <= bits <= 32:
        raise CxrmError("bad_chain", f"{sf}.params.index_bits", base + 12,
                        f"index_bits {bits}, must be 1..=32")
    _reserved(p[13:16], f"{sf}.params.reserved", base + 13)
    sigma = struct.unpack("<f", bytes(p[16:20]))[0]
    if not (math.isfinite(sigma) and sigma > 0.0):
        raise CxrmError("bad_chain", f"{sf}.params.prior_sigma", base + 16,
                        f"prior sigma {sigma}, must be finite and positive")
    if t.dtype_code not in FLOAT_DTYPES:
        raise CxrmError("bad_chain", sf, st.offset,
                        f"miracle on a {t.dtype} tensor: its values are real")
    if not (blocks == 0 if n == 0 else 1 <= blocks <= n):
        raise CxrmError("bad_chain", f"{sf}.params.blocks", base + 8,
                        f"{blocks} blocks for {n} elements")
    coded = blocks * bits
    pos = r.pos
    raw = bytes(r.take((coded + 7) // 8, f"{t.field}.indices"))
    word = int.from_bytes(raw, "big")
    pad = len(raw) * 8 - coded
    if pad and word & ((1 << pad) - 1):
        raise CxrmError("decode_error", f"{t.field}.indices", pos + len(raw) - 1,
                        "nonzero padding bits after the last index")
    if r.remaining():
        raise CxrmError("decode_error", f"{t.field}.payload", r.pos,
                        f"{r.remaining()} bytes left over after the indices")
    word >>= pad
    indices = [(word >> (bits * (blocks - 1 - b))) & ((1 << bits) - 1) for b in range(blocks)]
    bases = [miracle_base(seed, b, i) for b, i in enumerate(indices)]
    return np.array([sigma * miracle_normal(bases[e % blocks], e // blocks)
                     for e in range(n)], dtype=np.float64)


def _dense_array(data: memoryview, t: TensorRecord) -> np.ndarray:
    """Row-major little-endian elements -> numpy array of shape `t.shape`."""
    stored = DTYPES[t.dtype_code][2]
    arr = np.frombuffer(data, dtype=stored, count=t.element_count)
    return _widen(arr, t).reshape(t.shape)


def _widen(arr: np.ndarray, t: TensorRecord) -> np.ndarray:
    """Stored elements -> the decoded numpy dtype: bf16 bit patterns widen to
    float32 (bf16 is the upper 16 bits of an f32, §4); others unchanged."""
    if t.dtype == "bf16":
        return (arr.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return arr


# ---------------------------------------------------------------------------
# §6.1 / §6.2: turning an image into the model input
# ---------------------------------------------------------------------------

def _f32(x: float) -> float:
    """x rounded to binary32 (round half to even), returned as a Python float."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _resize_nearest(plane: list, w: int, h: int, W: int, H: int) -> list:
    """§6.2 NEAREST: indices from a running sum of the step, not (i + 0.5) * step."""
    def indices(n: int, N: int) -> list:
        s = _f32(float(n)) / N
        pos = s * 0.5
        out = []
        for _ in range(N):
            i = int(pos)                      # trunc; pos >= 0
            out.append(i if i < n else None)
            pos = pos + s
        return out
    xs, ys = indices(w, W), indices(h, H)
    return [0 if (x is None or y is None) else plane[y * w + x] for y in ys for x in xs]


def _coefficients(n: int, N: int, kernel: str) -> list:
    """§6.2: per output position (lo, [fixed-point weights]) for one axis."""
    support_k = 1.0 if kernel == "bilinear" else 0.5

    def f(x: float) -> float:
        if kernel == "bilinear":
            x = abs(x)
            return 1.0 - x if x < 1.0 else 0.0
        return 1.0 if -0.5 < x <= 0.5 else 0.0
    scale = _f32(float(n)) / N
    fscale = max(scale, 1.0)
    support = support_k * fscale
    inv = 1.0 / fscale
    out = []
    for o in range(N):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n)
        ws = []
        total = 0.0
        for j in range(lo, hi):
            v = f(((j - center) + 0.5) * inv)
            ws.append(v)
            total = total + v
        if total != 0.0:
            ws = [v / total for v in ws]
        out.append((lo, [int(v * (1 << 22) + 0.5) for v in ws]))
    return out


def _pass(plane: list, w: int, h: int, coeffs: list, horizontal: bool) -> list:
    """One fixed-point pass along an axis, rounded and clamped to 8 bits (§6.2)."""
    if horizontal:
        out = []
        for y in range(h):
            row = plane[y * w:(y + 1) * w]
            for lo, ks in coeffs:
                acc = 1 << 21
                for k, c in enumerate(ks):
                    acc += row[lo + k] * c
                out.append(min(max(acc >> 22, 0), 255))
        return out
    N = len(coeffs)
    out = [0] * (N * w)
    for o, (lo, ks) in enumerate(coeffs):
        for x in range(w):
            acc = 1 << 21
            for k, c in enumerate(ks):
                acc += plane[(lo + k) * w + x] * c
            out[o * w + x] = min(max(acc >> 22, 0), 255)
    return out


def _resize_filtered(plane: list, w: int, h: int, W: int, H: int, kernel: str,
                     version: str) -> list:
    """§6.2 BILINEAR / BOX, with the pass order of the Pillow release `version`."""
    cx = _coefficients(w, W, kernel) if W != w else None
    cy = _coefficients(h, H, kernel) if H != h else None
    if version == "13":
        vertical_first = h - H > 0 and h - H > 2 * (w - W)
    elif version == "12.2":
        vertical_first = h > 100 * w and H < h
    else:
        vertical_first = False
    if vertical_first:
        if cy:
            plane, h = _pass(plane, w, h, cy, False), H
        if cx:
            plane, w = _pass(plane, w, h, cx, True), W
        return plane
    # Horizontal first; which rows it covers has no effect on the result.
    if cx:
        plane, w = _pass(plane, w, h, cx, True), W
    if cy:
        plane, h = _pass(plane, w, h, cy, False), H
    return plane


def resize_plane(plane: list, w: int, h: int, W: int, H: int, filt: str = "bilinear",
                 version: str = "13") -> list:
    """Resize one 8-bit plane (row-major list) as §6.2 defines."""
    if (W, H) == (w, h):
        return list(plane)
    if filt == "nearest":
        return _resize_nearest(plane, w, h, W, H)
    return _resize_filtered(plane, w, h, W, H, filt, version)


def preprocess(metadata: dict, mode: str, width: int, height: int, pixels: list):
    """§6.1: an image (interleaved 8-bit `pixels`, `mode` "L" or "RGB") through a model's
    `input.*` metadata. Returns (planar u8 pixels [C, H, W], binary32 inputs as floats)."""
    C, H, W = (int(v) for v in metadata["input.shape"])
    filt = metadata.get("input.resize", "bilinear")
    version = metadata.get("input.resize_version", "13")
    if "input.resize_shorter" in metadata:
        side = int(metadata["input.resize_shorter"])
        short, long_ = min(width, height), max(width, height)
        long_side = int(side * long_ / short)      # exact product, one rounding (§6.1)
        RH, RW = (long_side, side) if width <= height else (side, long_side)
    else:
        RH, RW = (int(v) for v in metadata.get("input.crop_from", [H, W]))
    src_c = 1 if mode == "L" else 3
    plane_px = width * height
    if C == 1:
        if src_c == 1:
            planes = [list(pixels)]
        else:
            planes = [[(pixels[3 * i] * 19595 + pixels[3 * i + 1] * 38470
                        + pixels[3 * i + 2] * 7471 + 32768) >> 16 for i in range(plane_px)]]
    else:
        planes = [list(pixels)] * 3 if src_c == 1 else \
            [[pixels[3 * i + c] for i in range(plane_px)] for c in range(3)]
    if metadata.get("input.channel_order", "rgb") == "bgr":
        planes = planes[::-1]

    def half_even(d: int) -> int:                 # round(d / 2), ties to even
        q, r = divmod(d, 2)
        return q + 1 if r and q % 2 else q
    top, left = half_even(RH - H), half_even(RW - W)
    out = []
    for p in planes:
        r = resize_plane(p, width, height, RW, RH, filt, version)
        for y in range(top, top + H):
            out.extend(r[y * RW + left:y * RW + left + W])

    def per_channel(key: str, default):
        v = metadata.get(key)
        if v is None:
            return None if default is None else [default] * C
        v = [float(x) for x in v]
        return v * C if len(v) == 1 else v
    scale = per_channel("input.scale", None)
    offset, mean, std = (per_channel("input.offset", 0.0), per_channel("input.mean", 0.0),
                         per_channel("input.std", 1.0))
    inputs = []
    n = H * W
    for c in range(C):
        sc = None if scale is None else _f32(scale[c])
        of, me, sd = _f32(offset[c]), _f32(mean[c]), _f32(std[c])
        for p in out[c * n:(c + 1) * n]:
            a = _f32(p / 255.0) if sc is None else _f32(p * sc)
            inputs.append(_f32(_f32(_f32(a + of) - me) / sd))
    return out, inputs


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
