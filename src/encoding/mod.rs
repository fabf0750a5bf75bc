//! Encoding stages (spec §5): how a tensor's stored bytes were produced, and how to undo it.
//!
//! A chain lists stages in encoding order. Stage 0 is a *tensor stage* (it turns the tensor
//! into bytes); every later stage is a *byte stage* (bytes to bytes). Decoding walks the chain
//! backwards. Each stage has its own module with encoder, decoder and tests side by side.

pub mod dense;
pub mod zstd;

use crate::container::limits::Limits;
use crate::error::{Error, ErrorCode, Result};
use std::borrow::Cow;

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// Turns a tensor into bytes; always first in a chain.
    Tensor,
    /// Turns bytes into bytes.
    Byte,
}

impl StageId {
    pub const ALL: [StageId; 9] = [
        StageId::Dense,
        StageId::Zstd,
        StageId::Sparse,
        StageId::Codebook,
        StageId::Huffman,
        StageId::LowRank,
        StageId::Tucker,
        StageId::Binary,
        StageId::Miracle,
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
        }
    }

    pub fn kind(self) -> StageKind {
        match self {
            StageId::Zstd | StageId::Huffman => StageKind::Byte,
            _ => StageKind::Tensor,
        }
    }

    /// Whether this build can decode the stage.
    pub fn implemented(self) -> bool {
        IMPLEMENTED & (1 << self as u8) != 0
    }
}

/// Bit mask of the stage ids this reader decodes, in the layout of the header's `must_understand`.
pub const IMPLEMENTED: u64 = (1 << StageId::Dense as u8) | (1 << StageId::Zstd as u8);

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

/// Everything a stage decoder needs to know about the tensor it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext<'a> {
    /// e.g. `tensor[3]`, prefixed to field names in errors.
    pub what: &'a str,
    /// Bytes of the fully decoded tensor (`elements × dtype size`), already checked against limits.
    pub dense_len: u64,
    pub limits: &'a Limits,
}

/// Undo a whole chain: stored bytes in, the tensor's dense little-endian bytes out.
/// Dense with no byte stage stays borrowed (zero copy).
pub fn decode_chain<'a>(
    stages: &[Stage<'_>],
    stored: &'a [u8],
    ctx: &DecodeContext<'_>,
) -> Result<Cow<'a, [u8]>> {
    let (first, rest) = stages.split_first().ok_or_else(|| {
        Error::format(
            ErrorCode::BadChain,
            format!("{}.stages", ctx.what),
            0,
            "empty chain",
        )
    })?;
    let mut bytes: Cow<'a, [u8]> = Cow::Borrowed(stored);
    for (i, stage) in rest.iter().enumerate().rev() {
        let field = format!("{}.stage[{}]", ctx.what, i + 1);
        bytes = Cow::Owned(match stage.id() {
            Some(StageId::Zstd) => zstd::decode(stage, &bytes, ctx, &field)?,
            _ => return Err(unimplemented(stage, &field)),
        });
    }
    let field = format!("{}.stage[0]", ctx.what);
    match first.id() {
        Some(StageId::Dense) => {
            dense::decode(first, &bytes, ctx, &field)?;
            Ok(bytes)
        }
        _ => Err(unimplemented(first, &field)),
    }
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
