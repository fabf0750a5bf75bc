//! Building a `.cxrm` file: tensors (already encoded), metadata and graph in; a file out, with
//! every offset, padding and CRC computed here. Files are written to a temporary file in the
//! target's directory and renamed into place, so a crash never leaves a half-written file under
//! the final name.

use super::graph::Graph;
use super::header::{HEADER_LEN, Header, VERSION_MAJOR, header_crc};
use super::output::Output;
use super::table::{SECTION_ENTRY_LEN, SECTION_GRAPH, SECTION_METADATA, SECTION_REQUIRED};
use super::value::{self, Map, Value};
use crate::dtype::DType;
use crate::encoding::Encoded;
use crate::encoding::StageId;
use crate::error::{Error, Result};
use crate::limits::{Limits, align64};
use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

struct PendingTensor<'a> {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    encoded: Encoded<'a>,
}

struct PendingSection {
    kind: u32,
    flags: u32,
    bytes: Vec<u8>,
}

#[derive(Default)]
pub struct Writer<'a> {
    metadata: Map,
    graph: Option<Graph>,
    extra_sections: Vec<PendingSection>,
    tensors: Vec<PendingTensor<'a>>,
    names: HashSet<String>,
}

/// Where every piece goes, computed once and then emitted.
struct Plan<'w> {
    header: [u8; HEADER_LEN],
    table: Vec<u8>,
    /// (offset, bytes) in file order.
    extents: Vec<(u64, &'w [u8])>,
    file_size: u64,
}

impl<'a> Writer<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The decoded-dense twin of a file: the same metadata and graph, every tensor decoded and
    /// stored dense. (What a compressed model is compared against.)
    pub fn dense_copy_of(file: &super::reader::Cxrm<'_>) -> Result<Writer<'static>> {
        let mut w = Writer::new();
        for (k, v) in file.metadata()? {
            w.set_metadata(k, v);
        }
        for t in file.tensors() {
            let d = file.decode_record(t)?;
            w.add_dense(t.name, d.dtype, &d.shape, d.bytes.into_owned())?;
        }
        if let Some(g) = file.graph()? {
            w.set_graph(g);
        }
        Ok(w)
    }

    /// The metadata set so far, in order.
    pub fn metadata(&self) -> &Map {
        &self.metadata
    }

    /// Set a metadata key, replacing any earlier value.
    pub fn set_metadata(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }

    /// Whether a tensor of this name was added (what a graph's `weights` may name).
    pub fn has_tensor(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    pub fn set_graph(&mut self, graph: Graph) -> &mut Self {
        self.graph = Some(graph);
        self
    }

    /// A section of a kind this version does not define, for forward-compatibility testing
    /// and for extensions. Known kinds go through `set_metadata` and `set_graph`.
    pub fn add_raw_section(
        &mut self,
        kind: u32,
        required: bool,
        bytes: Vec<u8>,
    ) -> Result<&mut Self> {
        if matches!(kind, SECTION_METADATA | SECTION_GRAPH) {
            return Err(Error::Usage(format!(
                "section kind {kind} is built by the writer itself"
            )));
        }
        let flags = if required { SECTION_REQUIRED } else { 0 };
        self.extra_sections
            .push(PendingSection { kind, flags, bytes });
        Ok(self)
    }

    /// Add a dense tensor stored as it is, borrowing its bytes.
    pub fn add_dense(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[u64],
        bytes: impl Into<Cow<'a, [u8]>>,
    ) -> Result<&mut Self> {
        self.add_tensor(
            name,
            dtype,
            shape,
            crate::encoding::dense::encode(bytes.into()),
        )
    }

    /// Add a tensor in an already-encoded form (see [`crate::encoding`]).
    pub fn add_tensor(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[u64],
        encoded: Encoded<'a>,
    ) -> Result<&mut Self> {
        let limits = Limits::SPEC;
        let bad =
            |what: String| Error::Usage(format!("tensor {:?}: {what}", crate::text::escape(name)));
        if name.is_empty() || name.len() > limits.name_len || name.contains('\0') {
            return Err(bad(format!(
                "names are 1..={} bytes without NUL",
                limits.name_len
            )));
        }
        if self.names.contains(name) {
            return Err(bad("a tensor of that name was already added".into()));
        }
        if self.tensors.len() >= limits.tensors as usize {
            return Err(bad(format!(
                "a file holds at most {} tensors (spec §8)",
                limits.tensors
            )));
        }
        if shape.len() > limits.rank {
            return Err(bad(format!("rank {} exceeds {}", shape.len(), limits.rank)));
        }
        // Each dimension on its own, as a reader checks it: a zero elsewhere in the shape
        // does not make a dimension of 2^50 readable.
        if let Some(d) = shape.iter().find(|&&d| d > limits.elements) {
            return Err(bad(format!(
                "dimension {d} exceeds the spec's limit of {} elements",
                limits.elements
            )));
        }
        let elements = shape
            .iter()
            .try_fold(1u64, |acc, &d| {
                acc.checked_mul(d).filter(|&n| n <= limits.elements)
            })
            .ok_or_else(|| bad("too many elements".into()))?;
        if elements * dtype.size() as u64 > limits.decoded_bytes {
            return Err(bad("decoded size exceeds the spec's limit".into()));
        }
        let stages = &encoded.stages;
        if stages.is_empty() || stages.len() > limits.stages {
            return Err(bad(format!("a chain has 1..={} stages", limits.stages)));
        }
        if let Some(s) = stages.iter().find(|s| s.params.len() > limits.stage_params) {
            return Err(bad(format!("{} has too many parameter bytes", s.id.name())));
        }
        let as_stored = encoded.stage_views();
        crate::encoding::check_chain(&as_stored, "chain").map_err(|e| bad(e.to_string()))?;
        if stages.len() == 1
            && stages[0].id == crate::encoding::StageId::Dense
            && encoded.payload.len() as u64 != elements * dtype.size() as u64
        {
            return Err(bad(format!(
                "{} bytes of data for {} {} elements",
                encoded.payload.len(),
                elements,
                dtype
            )));
        }
        self.names.insert(name.to_string());
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            encoded,
        });
        Ok(self)
    }

    fn plan<'w>(&'w self, sections: &'w [PendingSection]) -> Result<Plan<'w>> {
        let limits = Limits::SPEC;
        let mut record_bytes = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let mut r = Vec::new();
            r.extend_from_slice(&(t.name.len() as u16).to_le_bytes());
            r.extend_from_slice(t.name.as_bytes());
            r.push(t.dtype.code());
            r.push(t.shape.len() as u8);
            for d in &t.shape {
                r.extend_from_slice(&d.to_le_bytes());
            }
            r.push(t.encoded.stages.len() as u8);
            for s in &t.encoded.stages {
                r.push(s.id as u8);
                r.push(0);
                r.extend_from_slice(&(s.params.len() as u16).to_le_bytes());
                r.extend_from_slice(&s.params);
            }
            record_bytes.push(r);
        }
        let table_size = 8
            + SECTION_ENTRY_LEN * sections.len()
            + record_bytes.iter().map(|r| r.len() + 20).sum::<usize>();
        if table_size as u64 > limits.table_size {
            return Err(Error::Usage(format!(
                "table of {table_size} bytes exceeds the spec's limit"
            )));
        }
        let data_offset = align64((HEADER_LEN + table_size) as u64).expect("small");

        let mut extents: Vec<(u64, &[u8])> = Vec::new();
        let mut cursor = data_offset;
        let mut place = |bytes: &[u8]| {
            let offset = align64(cursor).expect("file sizes fit in u64");
            cursor = offset + bytes.len() as u64;
            offset
        };
        let mut table = Vec::with_capacity(table_size);
        table.extend_from_slice(&(sections.len() as u32).to_le_bytes());
        table.extend_from_slice(&(self.tensors.len() as u32).to_le_bytes());
        let mut placed = Vec::new();
        for s in sections {
            let offset = place(&s.bytes);
            table.extend_from_slice(&s.kind.to_le_bytes());
            table.extend_from_slice(&s.flags.to_le_bytes());
            table.extend_from_slice(&offset.to_le_bytes());
            table.extend_from_slice(&(s.bytes.len() as u64).to_le_bytes());
            table.extend_from_slice(&crc32fast::hash(&s.bytes).to_le_bytes());
            table.extend_from_slice(&0u32.to_le_bytes());
            placed.push((offset, s.bytes.as_slice()));
        }
        let mut must_understand = 0u64;
        for (t, r) in self.tensors.iter().zip(&record_bytes) {
            let payload: &[u8] = &t.encoded.payload;
            let offset = place(payload);
            table.extend_from_slice(r);
            table.extend_from_slice(&offset.to_le_bytes());
            table.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            table.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            placed.push((offset, payload));
            for s in &t.encoded.stages {
                must_understand |= 1 << s.id as u8;
            }
        }
        extents.extend(placed);
        debug_assert_eq!(table.len(), table_size);
        let file_size = cursor;
        let mut header = Header {
            version_major: VERSION_MAJOR,
            version_minor: minor_version_for(must_understand).max(self.metadata_minor()),
            flags: 0,
            must_understand,
            table_offset: HEADER_LEN as u64,
            table_size: table_size as u64,
            data_offset,
            file_size,
            header_crc: 0,
        };
        header.header_crc = header_crc(&header.to_bytes(), &table);
        Ok(Plan {
            header: header.to_bytes(),
            table,
            extents,
            file_size,
        })
    }

    fn sections(&self) -> Result<Vec<PendingSection>> {
        let limits = Limits::SPEC;
        let mut out = Vec::new();
        if !self.metadata.is_empty() {
            value::check_map(&self.metadata, &limits)
                .map_err(|e| Error::Usage(format!("metadata: {e}")))?;
            let mut bytes = Vec::new();
            value::write_map(&self.metadata, &mut bytes);
            out.push(PendingSection {
                kind: SECTION_METADATA,
                flags: 0,
                bytes,
            });
        }
        if let Some(graph) = &self.graph {
            graph
                .check(&|name| self.has_tensor(name), &|_| 0)
                .map_err(|e| Error::Usage(format!("graph: {}", e.without_offset())))?;
            let bytes = graph.to_bytes();
            // Round-trip the node maps through the reader's checks so that we never write a
            // graph our own reader rejects.
            super::graph::Graph::parse(&bytes, 0, &limits)
                .map_err(|e| Error::Usage(format!("graph: {e}")))?;
            out.push(PendingSection {
                kind: SECTION_GRAPH,
                flags: 0,
                bytes,
            });
        }
        for s in &self.extra_sections {
            out.push(PendingSection {
                kind: s.kind,
                flags: s.flags,
                bytes: s.bytes.clone(),
            });
        }
        Ok(out)
    }

    fn emit(plan: &Plan<'_>, out: &mut impl Write) -> std::io::Result<()> {
        const ZEROS: [u8; 64] = [0; 64];
        out.write_all(&plan.header)?;
        out.write_all(&plan.table)?;
        let mut pos = (HEADER_LEN + plan.table.len()) as u64;
        for (offset, bytes) in &plan.extents {
            out.write_all(&ZEROS[..(offset - pos) as usize])?;
            out.write_all(bytes)?;
            pos = offset + bytes.len() as u64;
        }
        // A file without extents still pads its table out to data_offset.
        out.write_all(&ZEROS[..(plan.file_size - pos) as usize])?;
        Ok(())
    }

    /// The whole file in memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let sections = self.sections()?;
        let plan = self.plan(&sections)?;
        let mut out = Vec::with_capacity(plan.file_size as usize);
        Self::emit(&plan, &mut out).expect("writing to a Vec cannot fail");
        Ok(out)
    }

    /// Write the file atomically: to a temporary file beside `path`, synced, then renamed.
    /// Returns the file's size.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<u64> {
        self.write_to(path.as_ref(), &Output::new())
    }

    /// [`Writer::write`] under `output`'s rules (its inputs are never overwritten). The
    /// written bytes must pass [`Cxrm::verify`](super::reader::Cxrm::verify) before they
    /// replace anything: a writer bug or an input past a limit can then never turn a good
    /// destination into a bad file.
    pub fn write_to(&self, path: &Path, output: &Output) -> Result<u64> {
        let sections = self.sections()?;
        let plan = self.plan(&sections)?;
        output.write(
            path,
            |out| Self::emit(&plan, out),
            |written| {
                let mapped = super::reader::Mapped::open(written)?;
                mapped.parse()?.verify().map(|_| ()).map_err(|e| {
                    Error::Usage(format!(
                        "the file written would not be valid, so it was not kept: {e}"
                    ))
                })
            },
        )?;
        Ok(plan.file_size)
    }
}

pub use super::output::write_atomically;

impl Writer<'_> {
    /// The lowest minor version whose metadata keys and graph ops the file uses: 1.3 added
    /// the preprocessing keys of spec §6.1 and the `pad` op, 1.5 the `sign` op.
    fn metadata_minor(&self) -> u16 {
        let keys = self
            .metadata
            .iter()
            .any(|(k, _)| super::input_spec::KEYS_SINCE_1_3.contains(&k.as_str()));
        let ops = self.graph.as_ref().is_some_and(|g| {
            g.nodes
                .iter()
                .any(|n| super::op::Op::SINCE_1_3.contains(&n.op.as_str()))
        });
        let uses_1_5 = self.graph.as_ref().is_some_and(|g| {
            g.nodes
                .iter()
                .any(|n| super::op::Op::SINCE_1_5.contains(&n.op.as_str()))
        });
        match (uses_1_5, keys || ops) {
            (true, _) => 5,
            (false, true) => 3,
            (false, false) => 0,
        }
    }
}

/// The lowest minor version whose features a file uses (spec §5, §9): 1.1 added the sparse,
/// codebook and Huffman stages, 1.2 the factored ones (lowrank, tucker, binary).
fn minor_version_for(must_understand: u64) -> u16 {
    StageId::ALL
        .into_iter()
        .filter(|s| must_understand & (1 << *s as u8) != 0)
        .map(StageId::since_minor)
        .max()
        .unwrap_or(0)
}
