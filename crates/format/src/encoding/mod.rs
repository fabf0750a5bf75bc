//! Encoding stages (spec §5): how a tensor's stored bytes were produced, and how to undo it.
//!
//! A chain lists stages in encoding order: a representation (dense, sparse, codebook, ...),
//! optionally a codebook for a sparse tensor's values, optionally `huffman` for the symbol
//! streams, then byte stages (zstd). Decoding walks the chain backwards. Each stage has its own module with encoder, decoder and tests side by side.

pub mod binary;
pub mod bits;
pub mod chain;
pub mod codebook;
pub mod dense;
pub(crate) mod floats;
pub mod hashed;
pub mod huffman;
pub mod lowrank;
pub mod miracle;
pub mod sparse;
pub mod stream;
pub(crate) mod tensor;
pub mod tucker;
pub mod zstd;

use crate::error::{Error, ErrorCode, Result};
use crate::limits::Limits;
use std::borrow::Cow;

pub use chain::{Chain, Repr};

/// Stage ids fixed by the spec, including those reserved for encodings not yet implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StageId {
    Dense = 0,
    Zstd = 1,
    Sparse = 2,
    Codebook = 3,
    Huffman = 4,
    LowRank = 5,
    Tucker = 6,
    Binary = 7,
    Miracle = 8,
    Hashed = 9,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// Turns a tensor into bytes; always first in a chain.
    Tensor,
    /// Entropy-codes the symbol streams of the representation before it.
    Entropy,
    /// Turns bytes into bytes.
    Byte,
}

impl StageId {
    pub const ALL: [StageId; 10] = [
        StageId::Dense,
        StageId::Zstd,
        StageId::Sparse,
        StageId::Codebook,
        StageId::Huffman,
        StageId::LowRank,
        StageId::Tucker,
        StageId::Binary,
        StageId::Miracle,
        StageId::Hashed,
    ];

    pub fn from_code(code: u8) -> Option<StageId> {
        StageId::ALL.into_iter().find(|s| *s as u8 == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            StageId::Dense => "dense",
            StageId::Zstd => "zstd",
            StageId::Sparse => "sparse",
            StageId::Codebook => "codebook",
            StageId::Huffman => "huffman",
            StageId::LowRank => "lowrank",
            StageId::Tucker => "tucker",
            StageId::Binary => "binary",
            StageId::Miracle => "miracle",
            StageId::Hashed => "hashed",
        }
    }

    pub fn kind(self) -> StageKind {
        match self {
            StageId::Zstd => StageKind::Byte,
            StageId::Huffman => StageKind::Entropy,
            _ => StageKind::Tensor,
        }
    }

    /// The format minor version that defined the stage: a writer records the highest its
    /// file uses, so older readers see why they cannot decode it (spec §2).
    pub fn since_minor(self) -> u16 {
        match self {
            StageId::Dense | StageId::Zstd => 0,
            StageId::Sparse | StageId::Codebook | StageId::Huffman => 1,
            StageId::LowRank | StageId::Tucker | StageId::Binary => 2,
            StageId::Miracle => 4,
            StageId::Hashed => 6,
        }
    }

    /// Whether the stage is a factored representation, which a runtime executes as stored
    /// ([`read_factored`]).
    pub fn is_factored(self) -> bool {
        matches!(self, StageId::LowRank | StageId::Tucker | StageId::Binary)
    }

    /// Whether this build can decode the stage.
    pub fn implemented(self) -> bool {
        IMPLEMENTED & (1 << self as u8) != 0
    }
}

/// Bit mask of the stage ids this reader decodes, in the layout of the header's `must_understand`.
pub const IMPLEMENTED: u64 = (1 << StageId::Dense as u8)
    | (1 << StageId::Zstd as u8)
    | (1 << StageId::Sparse as u8)
    | (1 << StageId::Codebook as u8)
    | (1 << StageId::Huffman as u8)
    | (1 << StageId::LowRank as u8)
    | (1 << StageId::Tucker as u8)
    | (1 << StageId::Binary as u8)
    | (1 << StageId::Miracle as u8)
    | (1 << StageId::Hashed as u8);

/// Human-readable name of any stage code, known or not.
pub fn stage_name(code: u8) -> Cow<'static, str> {
    match StageId::from_code(code) {
        Some(id) => Cow::Borrowed(id.name()),
        None => Cow::Owned(format!("stage#{code}")),
    }
}

/// Names of the stages set in a `must_understand` mask.
pub fn mask_names(mask: u64) -> Vec<Cow<'static, str>> {
    (0..64u8)
        .filter(|i| mask & (1 << i) != 0)
        .map(stage_name)
        .collect()
}

/// One stage as stored in a tensor record, borrowing its parameters from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage<'a> {
    pub code: u8,
    pub params: &'a [u8],
    /// File offset of the stage's `id` byte, for error messages.
    pub offset: u64,
}

impl Stage<'_> {
    pub fn id(&self) -> Option<StageId> {
        StageId::from_code(self.code)
    }
    /// File offset of the first parameter byte.
    pub fn params_offset(&self) -> u64 {
        self.offset + 4
    }
}

/// A stage the writer will record: id and owned parameter bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSpec {
    pub id: StageId,
    pub params: Vec<u8>,
}

/// A tensor in stored form, ready for the writer.
#[derive(Debug, Clone)]
pub struct Encoded<'a> {
    pub stages: Vec<StageSpec>,
    pub payload: Cow<'a, [u8]>,
}

impl<'a> Encoded<'a> {
    /// A tensor stored as `repr` (its streams Huffman-coded when `huffman`): how every encoder
    /// builds its output, so the stages written are exactly those [`Chain::parse`] reads back.
    /// The fields stay public for the conformance corpus, whose invalid files need chains no
    /// encoder would write.
    pub fn new(repr: Repr, huffman: bool, payload: impl Into<Cow<'a, [u8]>>) -> Self {
        Encoded {
            stages: repr.stages(huffman),
            payload: payload.into(),
        }
    }

    /// The stages as a reader sees them (file offsets 0), to decode this tensor in memory.
    pub fn stage_views(&self) -> Vec<Stage<'_>> {
        self.stages
            .iter()
            .map(|s| Stage {
                code: s.id as u8,
                params: &s.params,
                offset: 0,
            })
            .collect()
    }
}

impl<'a> DecodeContext<'a> {
    /// A context for a tensor decoded outside any file (tests, benchmarks, fuzzing). The
    /// caller vouches that `shape` is within `limits`.
    pub fn in_memory(
        what: &'a str,
        dtype: crate::dtype::DType,
        shape: &'a [u64],
        limits: &'a Limits,
    ) -> Self {
        let elements: u64 = shape.iter().product();
        DecodeContext {
            what,
            dtype,
            shape,
            elements,
            dense_len: elements * dtype.size() as u64,
            payload_offset: 0,
            limits,
            budget: crate::budget::Budget::machine(),
        }
    }
}

/// Everything a stage decoder needs to know about the tensor it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext<'a> {
    /// e.g. `tensor[3]`, prefixed to field names in errors.
    pub what: &'a str,
    pub dtype: crate::dtype::DType,
    pub shape: &'a [u64],
    /// Product of `shape`, already checked against the limits.
    pub elements: u64,
    /// Bytes of the fully decoded tensor (`elements × dtype size`), already checked.
    pub dense_len: u64,
    /// File offset of the stored bytes, so errors inside a payload name file offsets.
    pub payload_offset: u64,
    pub limits: &'a Limits,
    /// What decoding may allocate; checked before any allocation sized from the file.
    pub budget: crate::budget::Budget,
}

/// Position classes of the chain grammar (spec §5): `repr [codebook] [huffman] zstd*`, and
/// `hashed miracle zstd*`.
fn check_grammar(codes: &[u8]) -> std::result::Result<(), (usize, String)> {
    use StageId::*;
    let id = |i: usize| StageId::from_code(codes[i]);
    let repr = id(0).filter(|s| s.kind() == StageKind::Tensor).ok_or((
        0,
        "a chain starts with a representation stage (dense, sparse, codebook, ...)".to_string(),
    ))?;
    let mut i = 1;
    if repr == Sparse && codes.get(i).map(|&c| StageId::from_code(c)) == Some(Some(Codebook)) {
        i += 1;
    }
    if repr == Hashed {
        if codes.get(i).map(|&c| StageId::from_code(c)) != Some(Some(Miracle)) {
            return Err((
                i.min(codes.len() - 1),
                "hashed shares values that a miracle stage must code next".to_string(),
            ));
        }
        i += 1;
    }
    if codes.get(i).map(|&c| StageId::from_code(c)) == Some(Some(Huffman)) {
        if !matches!(repr, Sparse | Codebook) {
            return Err((
                i,
                format!(
                    "huffman codes symbol streams, which {} does not have",
                    repr.name()
                ),
            ));
        }
        i += 1;
    }
    for (j, &c) in codes.iter().enumerate().skip(i) {
        let s = StageId::from_code(c).expect("caller checked");
        if s.kind() != StageKind::Byte {
            return Err((
                j,
                format!("{} cannot stand at position {j} of this chain", s.name()),
            ));
        }
    }
    Ok(())
}

/// Check a chain against the grammar when this reader implements every stage in it; a chain
/// with a stage it lacks is left to `must_understand` (spec §5), so that a later version can
/// extend the grammar without older readers misreporting it.
pub fn check_chain(stages: &[Stage<'_>], what: &str) -> Result<()> {
    if stages
        .iter()
        .any(|s| s.id().is_none_or(|id| !id.implemented()))
    {
        return Ok(());
    }
    let codes: Vec<u8> = stages.iter().map(|s| s.code).collect();
    check_grammar(&codes).map_err(|(i, detail)| {
        Error::format(
            ErrorCode::BadChain,
            format!("{what}.stage[{i}].id"),
            stages[i].offset,
            detail,
        )
    })
}

/// A decoded tensor and what its encoding looked like inside.
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    pub bytes: Cow<'a, [u8]>,
    /// Surviving elements, for sparse tensors.
    pub nnz: Option<u64>,
    pub codebook: Option<codebook::Params>,
    /// The symbol streams read, by name (`gaps`, `row_counts`, `columns`, `indices`).
    pub streams: Vec<(&'static str, stream::Stream)>,
}

impl Decoded<'_> {
    /// Entropy and cost of each stream, as `cxrm inspect` reports them.
    pub fn stream_stats(&self) -> Vec<stream::StreamStats> {
        self.streams.iter().map(|(name, s)| s.stats(name)).collect()
    }
}

/// Undo a whole chain: stored bytes in, the tensor's dense little-endian bytes out.
/// Dense with no byte stage stays borrowed (zero copy).
pub fn decode_chain<'a>(
    stages: &[Stage<'_>],
    stored: &'a [u8],
    ctx: &DecodeContext<'_>,
) -> Result<Cow<'a, [u8]>> {
    Ok(decode_detailed(stages, stored, ctx)?.bytes)
}

/// [`decode_chain`], with what the encoding looked like inside.
pub fn decode_detailed<'a>(
    stages: &[Stage<'_>],
    stored: &'a [u8],
    ctx: &DecodeContext<'_>,
) -> Result<Decoded<'a>> {
    Chain::parse(stages, ctx)?.decode(stored, ctx)
}

/// A tensor in one of the factored representations, as stored: what a runtime executes
/// without rebuilding the dense tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Factored {
    LowRank(lowrank::LowRank),
    Tucker(tucker::Tucker),
    Binary(binary::Binary),
}

impl Factored {
    /// The rebuilt tensor as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Factored::LowRank(f) => f.to_f32(),
            Factored::Tucker(f) => f.to_f32(),
            Factored::Binary(f) => f.to_f32(),
        }
    }

    /// The dense tensor, each element rounded once to `dtype` (spec §5.8–§5.11).
    pub fn to_dtype(&self, dtype: crate::dtype::DType) -> Vec<u8> {
        match self {
            Factored::LowRank(f) => f.to_dtype(dtype),
            Factored::Tucker(f) => f.to_dtype(dtype),
            Factored::Binary(f) => f.to_dtype(dtype),
        }
    }
}

/// The factors of a tensor stored `lowrank`, `tucker` or `binary` (after its byte stages), or
/// `None` for any other representation. Checks exactly what decoding checks.
pub fn read_factored(
    stages: &[Stage<'_>],
    stored: &[u8],
    ctx: &DecodeContext<'_>,
) -> Result<Option<Factored>> {
    let Some(first) = stages.first().and_then(Stage::id) else {
        return Ok(None);
    };
    if !first.is_factored() {
        return Ok(None);
    }
    Chain::parse(stages, ctx)?.read_factored(stored, ctx)
}

fn unimplemented(stage: &Stage<'_>, field: &str) -> Error {
    Error::format(
        ErrorCode::UnknownEncoding,
        field,
        stage.offset,
        format!(
            "encoding {} is not implemented by this reader",
            stage_name(stage.code)
        ),
    )
}

/// Read a stage's parameters, requiring exactly `N` bytes.
pub(crate) fn fixed_params<const N: usize>(stage: &Stage<'_>, field: &str) -> Result<[u8; N]> {
    stage.params.try_into().map_err(|_| {
        Error::format(
            ErrorCode::BadChain,
            format!("{field}.param_len"),
            stage.offset + 2,
            format!(
                "{} takes {N} parameter bytes, found {}",
                stage_name(stage.code),
                stage.params.len()
            ),
        )
    })
}
