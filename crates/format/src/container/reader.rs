//! Reading a `.cxrm` file: open (header + table only), then lazy, per-tensor access.
//!
//! [`Cxrm::parse`] works on any byte slice; [`Mapped`] supplies one from a memory map, so a
//! dense tensor's bytes are borrowed straight from the page cache. Opening validates every
//! offset, length, count and alignment in the header and table before anything is used, and
//! never touches a payload; payloads are checked (CRC, decoding) only when asked for.

use super::graph::Graph;
use super::header::{HEADER_LEN, Header, header_crc};
use super::table::{self, SECTION_GRAPH, SECTION_METADATA, SectionEntry, TensorRecord};
use super::value::{self, Map};
use crate::budget::Budget;
use crate::dtype::DType;
use crate::encoding::{self, DecodeContext, IMPLEMENTED, mask_names};
use crate::error::{Error, ErrorCode, Result};
use crate::limits::Limits;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    pub limits: Limits,
    /// Open a file that needs encodings this reader lacks, to list its tensors without decoding
    /// them (what `cxrm inspect` does). Decoding such a tensor still fails.
    pub allow_unknown_encodings: bool,
    /// The most memory decoding one tensor may take ([`Budget::machine`] by default); a
    /// tensor that needs more fails with [`Error::OverBudget`], whatever the file says.
    pub budget: Budget,
}

/// An over-budget error names the tensor, not only its index.
fn name_over_budget(e: Error, record: &TensorRecord<'_>) -> Error {
    match e {
        Error::OverBudget {
            what,
            needed,
            budget,
        } => Error::OverBudget {
            what: format!("{what} ({:?})", crate::text::escape(record.name)),
            needed,
            budget,
        },
        other => other,
    }
}

/// Files smaller than this are read into memory rather than mapped.
const READ_BELOW: u64 = 1 << 16;

/// The bytes of a file, memory-mapped when it is large enough to map.
pub struct Mapped {
    bytes: MappedBytes,
}

enum MappedBytes {
    Map(memmap2::Mmap),
    /// Small files (and empty ones, which cannot be mapped on every platform) are read.
    Owned(Vec<u8>),
}

impl Mapped {
    pub fn open(path: impl AsRef<Path>) -> Result<Mapped> {
        let path = path.as_ref();
        let ctx = || format!("cannot open {}", crate::text::escape_path(path));
        let file = super::input::open_regular(path)?;
        let len = file.metadata().map_err(|e| Error::io(ctx(), e))?.len();
        let bytes = if len < READ_BELOW {
            // Small files are read: no mapping to set up, and nothing to fault if the file is
            // truncated while in use.
            let mut bytes = Vec::with_capacity(len as usize);
            std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(|e| Error::io(ctx(), e))?;
            MappedBytes::Owned(bytes)
        } else {
            // SAFETY: the map is read-only. As with every mmap-based reader, a file truncated by
            // another process while mapped faults (SIGBUS) on the next touch of a lost page:
            // the `cxrm` binary turns that signal into an I/O error message and exit 2.
            // Writers of .cxrm never modify a file in place (they write a new one and rename
            // it), so cxrm's own writes cannot cause it.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(ctx(), e))?;
            MappedBytes::Map(map)
        };
        Ok(Mapped { bytes })
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            MappedBytes::Map(m) => m,
            MappedBytes::Owned(v) => v,
        }
    }

    pub fn parse(&self) -> Result<Cxrm<'_>> {
        self.parse_with(&ReadOptions::default())
    }

    pub fn parse_with(&self, options: &ReadOptions) -> Result<Cxrm<'_>> {
        let mut file = Cxrm::parse_with(self.bytes(), options)?;
        if let MappedBytes::Map(map) = &self.bytes {
            file.map = Some(map);
        }
        Ok(file)
    }
}

/// An opened `.cxrm` file over borrowed bytes.
pub struct Cxrm<'data> {
    data: &'data [u8],
    header: Header,
    sections: Vec<SectionEntry>,
    tensors: Vec<TensorRecord<'data>>,
    by_name: HashMap<&'data str, usize>,
    options: ReadOptions,
    /// The map `data` lies in, when it was opened through [`Mapped`]: [`Cxrm::release`] can
    /// then drop pages from memory.
    map: Option<&'data memmap2::Mmap>,
}

impl<'data> Cxrm<'data> {
    pub fn parse(data: &'data [u8]) -> Result<Self> {
        Self::parse_with(data, &ReadOptions::default())
    }

    pub fn parse_with(data: &'data [u8], options: &ReadOptions) -> Result<Self> {
        let limits = &options.limits;
        let header = Header::parse(data, limits)?;
        let table_end = HEADER_LEN + header.table_size as usize;
        let table_bytes = &data[HEADER_LEN..table_end];
        let crc = header_crc(&data[..HEADER_LEN], table_bytes);
        if crc != header.header_crc {
            return Err(Error::format(
                ErrorCode::CrcMismatch,
                "header.header_crc",
                60,
                format!(
                    "stored 0x{:08x}, computed 0x{crc:08x} over the header and table",
                    header.header_crc
                ),
            ));
        }
        if let Some(i) = data[table_end..header.data_offset as usize]
            .iter()
            .position(|&b| b != 0)
        {
            return Err(Error::format(
                ErrorCode::NonzeroPadding,
                "table.padding",
                (table_end + i) as u64,
                "padding after the table must be zero",
            ));
        }
        let table = table::parse(table_bytes, header.data_offset, header.file_size, limits)?;

        let mut by_name = HashMap::with_capacity(table.tensors.len());
        for t in &table.tensors {
            if by_name.insert(t.name, t.index).is_some() {
                return Err(Error::format(
                    ErrorCode::DuplicateName,
                    format!("tensor[{}].name", t.index),
                    t.record_offset + 2,
                    format!(
                        "tensor name {:?} appears twice",
                        crate::text::escape(t.name)
                    ),
                ));
            }
        }
        let mut kinds = HashSet::new();
        for (i, s) in table.sections.iter().enumerate() {
            if s.known() && !kinds.insert(s.kind) {
                return Err(Error::format(
                    ErrorCode::DuplicateSection,
                    format!("section[{i}].kind"),
                    s.entry_offset,
                    format!("a second {} section", s.kind_name()),
                ));
            }
        }
        for (i, s) in table.sections.iter().enumerate() {
            if !s.known() && s.required() {
                return Err(Error::format(
                    ErrorCode::UnknownSection,
                    format!("section[{i}].kind"),
                    s.entry_offset,
                    format!(
                        "required section kind {} is not known to this reader (format {}.{})",
                        s.kind, header.version_major, header.version_minor
                    ),
                ));
            }
        }
        check_must_understand(&header, &table.tensors, options)?;

        Ok(Cxrm {
            data,
            header,
            sections: table.sections,
            tensors: table.tensors,
            by_name,
            options: *options,
            map: None,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn sections(&self) -> &[SectionEntry] {
        &self.sections
    }

    pub fn tensors(&self) -> &[TensorRecord<'data>] {
        &self.tensors
    }

    pub fn file_len(&self) -> u64 {
        self.data.len() as u64
    }

    /// Encodings the file needs that this reader lacks (empty when it can decode everything).
    pub fn missing_encodings(&self) -> Vec<Cow<'static, str>> {
        mask_names(self.header.must_understand & !IMPLEMENTED)
    }

    pub fn tensor(&self, name: &str) -> Result<&TensorRecord<'data>> {
        self.by_name
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| Error::Usage(format!("no tensor named {:?}", crate::text::escape(name))))
    }

    /// The stored bytes of a tensor, borrowed from the file. Bounds were checked at open.
    pub fn stored_bytes(&self, record: &TensorRecord<'_>) -> &'data [u8] {
        let e = &record.extent;
        &self.data[e.offset as usize..e.end() as usize]
    }

    /// Drops the pages that hold `bytes` (a part of this file) from the process's resident
    /// memory, when the file is mapped; the bytes stay readable, and a later read maps them
    /// in again from the page cache. A model calls this for each weight it has copied (folded
    /// or decoded): the pages that loading read would otherwise stay resident beside the copy,
    /// counted twice in the process's memory. Pages at either end that the range only partly
    /// covers are dropped too; whoever reads them next just faults them back in.
    pub fn release(&self, bytes: &[u8]) {
        let Some(map) = self.map else { return };
        let Some(offset) = (bytes.as_ptr() as usize).checked_sub(map.as_ptr() as usize) else {
            return;
        };
        if bytes.is_empty() || offset.saturating_add(bytes.len()) > map.len() {
            return;
        }
        #[cfg(unix)]
        {
            // SAFETY: `MADV_DONTNEED` discards a private mapping's modified pages, but this map
            // is read-only and never written: every page it drops is refilled from the file
            // with the same bytes, so no borrow of the map can see a change. A failure only
            // leaves the pages resident.
            let advice = memmap2::UncheckedAdvice::DontNeed;
            let _ = unsafe { map.unchecked_advise_range(advice, offset, bytes.len()) };
        }
    }

    /// [`Cxrm::release`] for a tensor's stored bytes.
    pub fn release_tensor(&self, record: &TensorRecord<'_>) {
        self.release(self.stored_bytes(record));
    }

    fn section_bytes(&self, section: &SectionEntry) -> &'data [u8] {
        let e = &section.extent;
        &self.data[e.offset as usize..e.end() as usize]
    }

    /// Check one tensor's CRC-32.
    pub fn check_crc(&self, record: &TensorRecord<'_>) -> Result<()> {
        check_crc(
            self.stored_bytes(record),
            record.extent.crc32,
            &format!("tensor[{}].crc32", record.index),
            record_crc_offset(record),
        )
    }

    /// A dense tensor's bytes, borrowed in place from the file (no copy, no CRC pass: use
    /// [`Cxrm::check_crc`] or [`Cxrm::decode`] for that). Fails for encoded tensors.
    pub fn view(&self, name: &str) -> Result<TensorData<'data>> {
        let record = self.tensor(name)?;
        if !record.is_plain_dense() {
            return Err(Error::Usage(format!(
                "tensor {:?} is stored as {}; decode it instead of viewing it in place",
                crate::text::escape(name),
                record.chain_name()
            )));
        }
        let bytes = self.stored_bytes(record);
        let ctx = self.decode_context(record, "view");
        encoding::dense::decode(
            &record.stages[0],
            bytes,
            &ctx,
            &format!("tensor[{}].stage[0]", record.index),
        )?;
        Ok(TensorData {
            dtype: record.dtype,
            shape: record.shape.clone(),
            bytes: Cow::Borrowed(bytes),
        })
    }

    /// Check a tensor's CRC and undo its encoding chain. Dense tensors stay borrowed.
    pub fn decode(&self, name: &str) -> Result<TensorData<'data>> {
        let record = self.tensor(name)?;
        self.decode_record(record)
    }

    pub fn decode_record(&self, record: &TensorRecord<'data>) -> Result<TensorData<'data>> {
        self.check_crc(record)?;
        let what = format!("tensor[{}]", record.index);
        let ctx = self.decode_context(record, &what);
        let bytes = encoding::decode_chain(&record.stages, self.stored_bytes(record), &ctx)
            .map_err(|e| name_over_budget(e, record))?;
        Ok(TensorData {
            dtype: record.dtype,
            shape: record.shape.clone(),
            bytes,
        })
    }

    /// The factors of a tensor stored `lowrank`, `tucker` or `binary`, CRC-checked, for a
    /// runtime that executes them as they are; `None` for every other encoding.
    pub fn read_factored(
        &self,
        record: &TensorRecord<'data>,
    ) -> Result<Option<encoding::Factored>> {
        use encoding::StageId::{Binary, LowRank, Tucker};
        if !matches!(
            record.stages.first().and_then(|s| s.id()),
            Some(LowRank | Tucker | Binary)
        ) {
            return Ok(None);
        }
        self.check_crc(record)?;
        let what = format!("tensor[{}]", record.index);
        let ctx = self.decode_context(record, &what);
        encoding::read_factored(&record.stages, self.stored_bytes(record), &ctx)
            .map_err(|e| name_over_budget(e, record))
    }

    /// Decode a tensor and report what its encoding looked like inside (survivors, codebook,
    /// each symbol stream's entropy and cost), as `cxrm inspect` shows it.
    pub fn decode_detailed(
        &self,
        record: &TensorRecord<'data>,
    ) -> Result<encoding::Decoded<'data>> {
        self.check_crc(record)?;
        let what = format!("tensor[{}]", record.index);
        let ctx = self.decode_context(record, &what);
        encoding::decode_detailed(&record.stages, self.stored_bytes(record), &ctx)
            .map_err(|e| name_over_budget(e, record))
    }

    pub(crate) fn decode_context<'a>(
        &'a self,
        record: &'a TensorRecord<'_>,
        what: &'a str,
    ) -> DecodeContext<'a> {
        DecodeContext {
            what,
            dtype: record.dtype,
            shape: &record.shape,
            elements: record.elements,
            dense_len: record.dense_len(),
            payload_offset: record.extent.offset,
            limits: &self.options.limits,
            budget: self.options.budget,
        }
    }

    fn section(&self, kind: u32) -> Option<(usize, &SectionEntry)> {
        self.sections
            .iter()
            .enumerate()
            .find(|(_, s)| s.kind == kind)
    }

    fn checked_section(&self, kind: u32) -> Result<Option<(&'data [u8], u64)>> {
        let Some((i, s)) = self.section(kind) else {
            return Ok(None);
        };
        let bytes = self.section_bytes(s);
        check_crc(
            bytes,
            s.extent.crc32,
            &format!("section[{i}].crc32"),
            s.entry_offset + 24,
        )?;
        Ok(Some((bytes, s.extent.offset)))
    }

    /// The metadata map (empty when the file has no metadata section).
    pub fn metadata(&self) -> Result<Map> {
        let Some((bytes, base)) = self.checked_section(SECTION_METADATA)? else {
            return Ok(Vec::new());
        };
        let mut c = crate::cursor::Cursor::new(bytes, base);
        let map = value::read_map(&mut c, &self.options.limits, "metadata")?;
        if !c.is_empty() {
            return Err(Error::format(
                ErrorCode::BadLayout,
                "metadata",
                c.offset(),
                "bytes left over after the metadata map",
            ));
        }
        Ok(map)
    }

    /// The graph, with every reference checked against the table; `None` if the file has none.
    pub fn graph(&self) -> Result<Option<Graph>> {
        let Some((bytes, base)) = self.checked_section(SECTION_GRAPH)? else {
            return Ok(None);
        };
        let (graph, offsets) = Graph::parse(bytes, base, &self.options.limits)?;
        graph.check(&|name| self.by_name.contains_key(name), &|i| offsets[i])?;
        Ok(Some(graph))
    }

    /// Full validation (spec §10): padding, every CRC, metadata, graph, every tensor decoded.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.check_padding()?;
        for (i, s) in self.sections.iter().enumerate() {
            check_crc(
                self.section_bytes(s),
                s.extent.crc32,
                &format!("section[{i}].crc32"),
                s.entry_offset + 24,
            )?;
        }
        for t in &self.tensors {
            self.check_crc(t)?;
        }
        let metadata = self.metadata()?;
        let graph = self.graph()?;
        let mut decoded_bytes = 0u64;
        for t in &self.tensors {
            decoded_bytes += self.decode_record(t)?.bytes.len() as u64;
        }
        Ok(VerifyReport {
            tensors: self.tensors.len(),
            sections: self.sections.len(),
            metadata_entries: metadata.len(),
            graph_nodes: graph.map_or(0, |g| g.nodes.len()),
            stored_bytes: self.tensors.iter().map(|t| t.extent.length).sum(),
            decoded_bytes,
        })
    }

    fn check_padding(&self) -> Result<()> {
        let mut cursor = self.header.data_offset;
        let extents = self
            .sections
            .iter()
            .map(|s| s.extent)
            .chain(self.tensors.iter().map(|t| t.extent));
        for e in extents {
            let gap = &self.data[cursor as usize..e.offset as usize];
            if let Some(i) = gap.iter().position(|&b| b != 0) {
                return Err(Error::format(
                    ErrorCode::NonzeroPadding,
                    "padding",
                    cursor + i as u64,
                    "padding between extents must be zero",
                ));
            }
            cursor = e.end();
        }
        Ok(())
    }
}

fn record_crc_offset(record: &TensorRecord<'_>) -> u64 {
    // The CRC is the record's last field; the extent starts 20 bytes before the record ends.
    let stages_len: u64 = record
        .stages
        .iter()
        .map(|s| 4 + s.params.len() as u64)
        .sum();
    record.record_offset
        + 2
        + record.name.len() as u64
        + 2
        + 8 * record.shape.len() as u64
        + 1
        + stages_len
        + 16
}

fn check_crc(bytes: &[u8], expected: u32, field: &str, offset: u64) -> Result<()> {
    let actual = crc32fast::hash(bytes);
    if actual != expected {
        return Err(Error::format(
            ErrorCode::CrcMismatch,
            field,
            offset,
            format!("stored 0x{expected:08x}, computed 0x{actual:08x}"),
        ));
    }
    Ok(())
}

fn check_must_understand(
    header: &Header,
    tensors: &[TensorRecord<'_>],
    options: &ReadOptions,
) -> Result<()> {
    let mut used = 0u64;
    for t in tensors {
        for s in &t.stages {
            used |= 1 << s.code;
        }
    }
    if used != header.must_understand {
        let extra = header.must_understand & !used;
        let unlisted = used & !header.must_understand;
        let detail = if unlisted != 0 {
            format!(
                "tensors use {} but must_understand does not list it",
                mask_names(unlisted).join(", ")
            )
        } else {
            format!(
                "must_understand lists {} but no tensor uses it",
                mask_names(extra).join(", ")
            )
        };
        return Err(Error::format(
            ErrorCode::BadChain,
            "header.must_understand",
            16,
            detail,
        ));
    }
    let missing = header.must_understand & !IMPLEMENTED;
    if missing != 0 && !options.allow_unknown_encodings {
        return Err(Error::format(
            ErrorCode::UnknownEncoding,
            "header.must_understand",
            16,
            format!(
                "this file needs encodings {}; this reader (cxrm {}) implements {}",
                mask_names(missing).join(", "),
                env!("CARGO_PKG_VERSION"),
                mask_names(IMPLEMENTED).join(", ")
            ),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub tensors: usize,
    pub sections: usize,
    pub metadata_entries: usize,
    pub graph_nodes: usize,
    pub stored_bytes: u64,
    pub decoded_bytes: u64,
}

/// A decoded tensor: dense little-endian bytes, borrowed from the file when possible.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData<'a> {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub bytes: Cow<'a, [u8]>,
}

/// Rust element types that match a [`DType`] bit for bit.
pub trait Element: bytemuck::Pod {
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => { $(impl Element for $t { const DTYPE: DType = DType::$d; })* };
}
element!(f32 => F32, half::f16 => F16, half::bf16 => BF16, i8 => I8, u8 => U8, i32 => I32, i64 => I64, f64 => F64);

impl<'a> TensorData<'a> {
    pub fn elements(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    /// The elements as a typed slice, without copying. Fails if `T` is not this tensor's dtype,
    /// or if the bytes are not aligned for `T` (never the case for views of a mapped file,
    /// whose payloads are 64-byte aligned).
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        if T::DTYPE != self.dtype {
            return Err(Error::Usage(format!(
                "tensor is {}, not {}",
                self.dtype,
                T::DTYPE
            )));
        }
        if cfg!(target_endian = "big") {
            return Err(Error::Usage(
                "in-place views need a little-endian host".into(),
            ));
        }
        bytemuck::try_cast_slice(&self.bytes)
            .map_err(|e| Error::Usage(format!("cannot view tensor in place: {e:?}")))
    }

    /// Every element converted to f64 (exact for every dtype but i64 beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let b = &self.bytes;
        let n = self.dtype.size();
        let chunks = b.chunks_exact(n);
        match self.dtype {
            DType::F32 => chunks
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            DType::F16 => chunks
                .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f64())
                .collect(),
            DType::BF16 => chunks
                .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f64())
                .collect(),
            DType::I8 => chunks.map(|c| c[0] as i8 as f64).collect(),
            DType::U8 => chunks.map(|c| c[0] as f64).collect(),
            DType::I32 => chunks
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            DType::I64 => chunks
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            DType::F64 => chunks
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        }
    }

    /// Every element converted to f32, as a runtime wants weights.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self.as_slice::<f32>() {
            Ok(s) => s.to_vec(),
            Err(_) => self.to_f64_vec().into_iter().map(|v| v as f32).collect(),
        }
    }

    pub fn into_owned(self) -> TensorData<'static> {
        TensorData {
            dtype: self.dtype,
            shape: self.shape,
            bytes: Cow::Owned(self.bytes.into_owned()),
        }
    }
}
