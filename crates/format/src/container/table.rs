//! The table (spec §3): section entries and tensor records, parsed and checked field by field,
//! each extent checked against the layout rule (§3.3) as soon as it is read.

use crate::cursor::{Cursor, f};
use crate::dtype::DType;
use crate::encoding::{Stage, StageId, stage_name};
use crate::error::{Error, ErrorCode, Result};
use crate::limits::{Limits, align64};

pub const SECTION_ENTRY_LEN: usize = 32;
pub const SECTION_METADATA: u32 = 1;
pub const SECTION_GRAPH: u32 = 2;
pub const SECTION_REQUIRED: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub crc32: u32,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionEntry {
    pub kind: u32,
    pub flags: u32,
    pub extent: Extent,
    /// File offset of this entry in the table.
    pub entry_offset: u64,
}

impl SectionEntry {
    pub fn required(&self) -> bool {
        self.flags & SECTION_REQUIRED != 0
    }
    pub fn known(&self) -> bool {
        matches!(self.kind, SECTION_METADATA | SECTION_GRAPH)
    }
    pub fn kind_name(&self) -> String {
        match self.kind {
            SECTION_METADATA => "metadata".into(),
            SECTION_GRAPH => "graph".into(),
            k => format!("section#{k}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRecord<'a> {
    pub index: usize,
    pub name: &'a str,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Encoding order: `stages[0]` is the tensor stage.
    pub stages: Vec<Stage<'a>>,
    pub extent: Extent,
    /// File offset of the record in the table.
    pub record_offset: u64,
    /// Product of `shape`, checked against the limits.
    pub elements: u64,
}

impl TensorRecord<'_> {
    /// Bytes of the decoded tensor.
    pub fn dense_len(&self) -> u64 {
        self.elements * self.dtype.size() as u64
    }
    /// Chain in encoding order, e.g. `dense+zstd`.
    pub fn chain_name(&self) -> String {
        self.stages
            .iter()
            .map(|s| stage_name(s.code))
            .collect::<Vec<_>>()
            .join("+")
    }
    /// Stored bits per element; `None` for a tensor with no elements.
    pub fn bits_per_weight(&self) -> Option<f64> {
        (self.elements > 0).then(|| self.extent.length as f64 * 8.0 / self.elements as f64)
    }
    /// How many times smaller than the same tensor in f32; `None` when nothing is stored.
    pub fn ratio_vs_f32(&self) -> Option<f64> {
        (self.extent.length > 0).then(|| self.elements as f64 * 4.0 / self.extent.length as f64)
    }
    /// Whether the stored bytes are the dense tensor itself (usable in place).
    pub fn is_plain_dense(&self) -> bool {
        self.stages.len() == 1 && self.stages[0].code == StageId::Dense as u8
    }
}

pub struct Table<'a> {
    pub sections: Vec<SectionEntry>,
    pub tensors: Vec<TensorRecord<'a>>,
}

/// Tracks where the next extent must start (§3.3).
struct LayoutCursor {
    next: u64,
    file_size: u64,
}

impl LayoutCursor {
    fn accept(&mut self, extent: &Extent, field: &str, field_offset: u64) -> Result<()> {
        let expected = align64(self.next).expect("cursor never exceeds file size");
        if extent.offset != expected {
            return Err(Error::format(
                ErrorCode::BadLayout,
                format!("{field}.offset"),
                field_offset,
                format!(
                    "extent must start at {expected} (the previous extent ends at {}), found {}",
                    self.next, extent.offset
                ),
            ));
        }
        match extent.offset.checked_add(extent.length) {
            Some(end) if end <= self.file_size => {
                self.next = end;
                Ok(())
            }
            _ => Err(Error::format(
                ErrorCode::OutOfBounds,
                format!("{field}.length"),
                field_offset + 8,
                format!(
                    "extent [{}, +{}) runs past the end of the {}-byte file",
                    extent.offset, extent.length, self.file_size
                ),
            )),
        }
    }
}

pub fn parse<'a>(
    table: &'a [u8],
    data_offset: u64,
    file_size: u64,
    limits: &Limits,
) -> Result<Table<'a>> {
    let mut c = Cursor::new(table, 64);
    let section_count = c.u32(f("table.section_count"))?;
    if section_count > limits.sections {
        return Err(Error::format(
            ErrorCode::LimitExceeded,
            "table.section_count",
            64,
            format!(
                "{section_count} sections exceed the limit of {}",
                limits.sections
            ),
        ));
    }
    let tensor_count = c.u32(f("table.tensor_count"))?;
    if tensor_count > limits.tensors {
        return Err(Error::format(
            ErrorCode::LimitExceeded,
            "table.tensor_count",
            68,
            format!(
                "{tensor_count} tensors exceed the limit of {}",
                limits.tensors
            ),
        ));
    }
    let mut layout = LayoutCursor {
        next: data_offset,
        file_size,
    };

    let mut sections =
        Vec::with_capacity((section_count as usize).min(c.remaining() / SECTION_ENTRY_LEN));
    for i in 0..section_count {
        let entry_offset = c.offset();
        let field = |name: &'static str| move || format!("section[{i}].{name}");
        let kind = c.u32(field("kind"))?;
        let flags = c.u32(field("flags"))?;
        let offset = c.u64(field("offset"))?;
        let length = c.u64(field("length"))?;
        let crc32 = c.u32(field("crc32"))?;
        let reserved = c.u32(field("reserved"))?;
        if flags & !SECTION_REQUIRED != 0 || reserved != 0 {
            let (name, at) = if reserved != 0 {
                ("reserved", 28)
            } else {
                ("flags", 4)
            };
            return Err(Error::format(
                ErrorCode::ReservedNonzero,
                format!("section[{i}].{name}"),
                entry_offset + at,
                "reserved bits must be 0",
            ));
        }
        let extent = Extent {
            offset,
            length,
            crc32,
        };
        layout.accept(&extent, &format!("section[{i}]"), entry_offset + 8)?;
        sections.push(SectionEntry {
            kind,
            flags,
            extent,
            entry_offset,
        });
    }

    // Smallest record: name_len(2) + name(1) + dtype + rank + stage_count + stage(4) + extent(20).
    const MIN_RECORD: usize = 30;
    let mut tensors = Vec::with_capacity((tensor_count as usize).min(c.remaining() / MIN_RECORD));
    for index in 0..tensor_count as usize {
        tensors.push(parse_record(&mut c, index, limits, &mut layout)?);
    }
    if !c.is_empty() {
        return Err(Error::format(
            ErrorCode::BadLayout,
            "table",
            c.offset(),
            format!(
                "{} bytes left over after the last tensor record",
                c.remaining()
            ),
        ));
    }
    if layout.next != file_size {
        return Err(Error::format(
            ErrorCode::BadLayout,
            "header.file_size",
            48,
            format!(
                "the last extent ends at {}, but the file is {file_size} bytes",
                layout.next
            ),
        ));
    }
    Ok(Table { sections, tensors })
}

fn parse_record<'a>(
    c: &mut Cursor<'a>,
    index: usize,
    limits: &Limits,
    layout: &mut LayoutCursor,
) -> Result<TensorRecord<'a>> {
    let record_offset = c.offset();
    let what = format!("tensor[{index}]");
    let field = |name: &str| {
        let s = format!("{what}.{name}");
        move || s.clone()
    };
    let err = |code, name: &str, at: u64, detail: String| {
        Error::format(code, format!("{what}.{name}"), at, detail)
    };

    let name_len = c.u16(field("name_len"))? as usize;
    if name_len == 0 || name_len > limits.name_len {
        return Err(err(
            ErrorCode::LimitExceeded,
            "name_len",
            record_offset,
            format!("name length {name_len} outside 1..={}", limits.name_len),
        ));
    }
    let name_at = c.offset();
    let name = c.str(name_len, field("name"))?;
    if name.contains('\0') {
        return Err(err(
            ErrorCode::BadUtf8,
            "name",
            name_at,
            "names must not contain NUL".into(),
        ));
    }
    let dtype_at = c.offset();
    let code = c.u8(field("dtype"))?;
    let dtype = DType::from_code(code).ok_or_else(|| {
        err(
            ErrorCode::BadDtype,
            "dtype",
            dtype_at,
            format!("unknown dtype code {code}"),
        )
    })?;
    let rank_at = c.offset();
    let rank = c.u8(field("rank"))? as usize;
    if rank > limits.rank {
        return Err(err(
            ErrorCode::LimitExceeded,
            "rank",
            rank_at,
            format!("rank {rank} exceeds the limit of {}", limits.rank),
        ));
    }
    let mut shape = Vec::with_capacity(rank);
    let mut elements: u64 = 1;
    for d in 0..rank {
        let dim_at = c.offset();
        let dim = c.u64(field(&format!("dims[{d}]")))?;
        // Each dimension is bounded on its own too, so that the outcome does not depend on
        // where a zero dimension stands ([0, 2^50] and [2^50, 0] are both rejected).
        elements = Some(dim)
            .filter(|&d| d <= limits.elements)
            .and_then(|d| elements.checked_mul(d))
            .filter(|&n| n <= limits.elements)
            .ok_or_else(|| {
                err(
                    ErrorCode::LimitExceeded,
                    &format!("dims[{d}]"),
                    dim_at,
                    format!("element count exceeds the limit of {}", limits.elements),
                )
            })?;
        shape.push(dim);
    }
    if elements * dtype.size() as u64 > limits.decoded_bytes {
        return Err(err(
            ErrorCode::LimitExceeded,
            "dims",
            rank_at + 1,
            format!(
                "decoded size exceeds the limit of {} bytes",
                limits.decoded_bytes
            ),
        ));
    }
    let count_at = c.offset();
    let stage_count = c.u8(field("stage_count"))? as usize;
    if stage_count == 0 || stage_count > limits.stages {
        return Err(err(
            ErrorCode::LimitExceeded,
            "stage_count",
            count_at,
            format!("{stage_count} stages outside 1..={}", limits.stages),
        ));
    }
    let mut stages = Vec::with_capacity(stage_count);
    for s in 0..stage_count {
        let stage_at = c.offset();
        let code = c.u8(field(&format!("stage[{s}].id")))?;
        let flags = c.u8(field(&format!("stage[{s}].flags")))?;
        let param_len = c.u16(field(&format!("stage[{s}].param_len")))? as usize;
        if flags != 0 {
            return Err(err(
                ErrorCode::ReservedNonzero,
                &format!("stage[{s}].flags"),
                stage_at + 1,
                "must be 0".into(),
            ));
        }
        if param_len > limits.stage_params {
            return Err(err(
                ErrorCode::LimitExceeded,
                &format!("stage[{s}].param_len"),
                stage_at + 2,
                format!(
                    "{param_len} bytes exceed the limit of {}",
                    limits.stage_params
                ),
            ));
        }
        let params = c.bytes(param_len, field(&format!("stage[{s}].params")))?;
        if code >= 64 {
            return Err(err(
                ErrorCode::UnknownEncoding,
                &format!("stage[{s}].id"),
                stage_at,
                format!("stage id {code} is outside 0..64"),
            ));
        }
        stages.push(Stage {
            code,
            params,
            offset: stage_at,
        });
    }
    crate::encoding::check_chain(&stages, &what)?;
    let extent_at = c.offset();
    let offset = c.u64(field("offset"))?;
    let length = c.u64(field("length"))?;
    let crc32 = c.u32(field("crc32"))?;
    let extent = Extent {
        offset,
        length,
        crc32,
    };
    layout.accept(&extent, &what, extent_at)?;
    Ok(TensorRecord {
        index,
        name,
        dtype,
        shape,
        stages,
        extent,
        record_offset,
        elements,
    })
}
