//! A tensor's chain (spec §5) read into what it says: the representation with its parameters,
//! whether its symbol streams are Huffman-coded, and the byte stages over its payload. A
//! reader parses the stage bytes once into a [`Chain`]; decoding, inspection and the runtime
//! then match on [`Repr`] instead of re-reading stage ids and parameter bytes.

use super::{
    DecodeContext, Decoded, Factored, Stage, StageId, StageKind, StageSpec, binary, check_chain,
    codebook, dense, floats, hashed, lowrank, miracle, sparse, tensor, tucker, unimplemented, zstd,
};
use crate::cursor::Cursor;
use crate::error::{Error, ErrorCode, Result};
use std::borrow::Cow;

/// What a tensor is stored as, with the representation's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Repr {
    /// Little-endian values (§5.1).
    Dense,
    /// Survivors of pruning: positions, then values, raw or through a codebook (§5.7).
    Sparse {
        positions: sparse::Params,
        values: Option<codebook::Params>,
    },
    /// Every value an index into a codebook (§5.6).
    Codebook(codebook::Params),
    /// Two SVD factors (§5.9).
    LowRank(lowrank::Params),
    /// Tucker-2 core and factors (§5.10).
    Tucker(tucker::Params),
    /// XNOR-Net signs with a scale per row (§5.11).
    Binary(binary::Params),
    /// MIRACLE: a seed and a sample index per block (§5.12).
    Miracle(miracle::Params),
    /// Elements sharing fewer values with hashed signs (§5.13), the values MIRACLE-coded.
    Hashed {
        shared: hashed::Params,
        values: miracle::Params,
    },
}

impl Repr {
    /// Whether the runtime can execute the stored form without rebuilding the dense tensor.
    pub fn is_factored(&self) -> bool {
        matches!(self, Repr::LowRank(_) | Repr::Tucker(_) | Repr::Binary(_))
    }

    /// The stages a writer records for this representation, with `huffman` when its symbol
    /// streams are Huffman-coded: the inverse of [`Chain::parse`] (byte stages are appended by
    /// their encoders, e.g. [`super::zstd::encode`]).
    pub fn stages(&self, huffman: bool) -> Vec<StageSpec> {
        let stage = |id, params| StageSpec { id, params };
        let mut stages = match *self {
            Repr::Dense => vec![stage(StageId::Dense, Vec::new())],
            Repr::Sparse { positions, values } => {
                let mut v = vec![stage(StageId::Sparse, positions.to_bytes())];
                v.extend(values.map(|cb| stage(StageId::Codebook, cb.to_bytes())));
                v
            }
            Repr::Codebook(p) => vec![stage(StageId::Codebook, p.to_bytes())],
            Repr::LowRank(p) => vec![stage(StageId::LowRank, p.to_bytes())],
            Repr::Tucker(p) => vec![stage(StageId::Tucker, p.to_bytes())],
            Repr::Binary(p) => vec![stage(StageId::Binary, p.to_bytes())],
            Repr::Miracle(p) => vec![stage(StageId::Miracle, p.to_bytes())],
            Repr::Hashed { shared, values } => vec![
                stage(StageId::Hashed, shared.to_bytes()),
                stage(StageId::Miracle, values.to_bytes()),
            ],
        };
        if huffman {
            stages.push(stage(StageId::Huffman, Vec::new()));
        }
        stages
    }
}

/// A parsed chain: the representation, its entropy stage, and its byte stages.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain<'a> {
    pub repr: Repr,
    /// The symbol streams are Huffman-coded (stage `huffman`, §5.3).
    pub huffman: bool,
    /// The representation's stage, for the offsets errors name.
    first: Stage<'a>,
    /// Byte stages (zstd) in encoding order; decoding undoes them last to first.
    bytes: Vec<(usize, Stage<'a>)>,
}

impl<'a> Chain<'a> {
    /// Read a tensor's stages: every stage implemented, the grammar, then each stage's
    /// parameters in chain order (spec §10's order within a tensor).
    pub fn parse(stages: &[Stage<'a>], ctx: &DecodeContext<'_>) -> Result<Chain<'a>> {
        let Some(&first) = stages.first() else {
            return Err(Error::format(
                ErrorCode::BadChain,
                format!("{}.stages", ctx.what),
                0,
                "empty chain",
            ));
        };
        for (i, s) in stages.iter().enumerate() {
            if !s.id().is_some_and(StageId::implemented) {
                return Err(unimplemented(s, &format!("{}.stage[{i}]", ctx.what)));
            }
        }
        check_chain(stages, ctx.what)?;
        let ids: Vec<StageId> = stages.iter().map(|s| s.id().expect("checked")).collect();
        let tensor_end = ids
            .iter()
            .position(|id| id.kind() == StageKind::Byte)
            .unwrap_or(ids.len());
        let field = |i: usize| format!("{}.stage[{i}]", ctx.what);
        let mut huffman = false;
        let mut sparse_params = None;
        let mut codebook_params = None;
        for (i, s) in stages[..tensor_end].iter().enumerate() {
            match ids[i] {
                StageId::Sparse => {
                    sparse_params = Some(sparse::Params::parse(
                        s.params,
                        ctx.elements,
                        &field(i),
                        s.params_offset(),
                    )?)
                }
                StageId::Codebook => {
                    codebook_params = Some(codebook::Params::parse(
                        s.params,
                        &field(i),
                        s.params_offset(),
                    )?);
                    floats::require_float(s, ctx, &field(i))?;
                }
                StageId::Huffman if !s.params.is_empty() => {
                    return Err(Error::format(
                        ErrorCode::BadChain,
                        format!("{}.param_len", field(i)),
                        s.offset + 2,
                        "huffman takes no parameters",
                    ));
                }
                StageId::Huffman => huffman = true,
                _ => {}
            }
        }
        let repr = match ids[0] {
            StageId::Dense => Repr::Dense,
            StageId::Sparse => Repr::Sparse {
                positions: sparse_params.expect("parsed above"),
                values: codebook_params,
            },
            StageId::Codebook => Repr::Codebook(codebook_params.expect("parsed above")),
            StageId::LowRank => Repr::LowRank(lowrank::Params::parse(&first, ctx, &field(0))?),
            StageId::Tucker => Repr::Tucker(tucker::Params::parse(&first, ctx, &field(0))?),
            StageId::Binary => {
                let p = binary::Params::parse(first.params, &field(0), first.params_offset())?;
                floats::require_float(&first, ctx, &field(0))?;
                Repr::Binary(p)
            }
            StageId::Miracle => Repr::Miracle(miracle::Params::parse(&first, ctx, &field(0))?),
            StageId::Hashed => {
                let shared = hashed::Params::parse(&first, ctx, &field(0))?;
                let shape = [shared.values as u64];
                let inner = hashed::values_context(ctx, &shared, &shape);
                let values = miracle::Params::parse(&stages[1], &inner, &field(1))?;
                Repr::Hashed { shared, values }
            }
            _ => return Err(unimplemented(&first, &field(0))),
        };
        Ok(Chain {
            repr,
            huffman,
            first,
            bytes: stages[tensor_end.max(1)..]
                .iter()
                .enumerate()
                .map(|(k, s)| (tensor_end.max(1) + k, *s))
                .collect(),
        })
    }

    /// Run the byte stages backwards: the representation's payload, and the file offset of its
    /// first byte (0 when a byte stage produced it).
    fn undo_byte_stages<'d>(
        &self,
        stored: &'d [u8],
        ctx: &DecodeContext<'_>,
    ) -> Result<(Cow<'d, [u8]>, u64)> {
        let mut bytes: Cow<'d, [u8]> = Cow::Borrowed(stored);
        for (i, stage) in self.bytes.iter().rev() {
            let field = format!("{}.stage[{i}]", ctx.what);
            bytes = Cow::Owned(zstd::decode(stage, &bytes, ctx, &field)?);
        }
        let base = if self.bytes.is_empty() {
            ctx.payload_offset
        } else {
            0
        };
        Ok((bytes, base))
    }

    /// An upper bound of the bytes decoding allocates: the output (unless it is borrowed),
    /// each byte stage's output, and the representation's working buffers. All of it is known
    /// from the parameters, so an oversized tensor is refused before anything is allocated.
    pub fn memory_needed(&self, ctx: &DecodeContext<'_>) -> u64 {
        let zstd: u64 = self
            .bytes
            .iter()
            .map(|(_, s)| s.params.try_into().map(u64::from_le_bytes).unwrap_or(0))
            .fold(0, u64::saturating_add);
        let size = ctx.dtype.size() as u64;
        let working = match self.repr {
            Repr::Dense if self.bytes.is_empty() => return 0,
            Repr::Dense => 0,
            // Positions (u64), their symbols and the values' indices (u16 each), the values.
            Repr::Sparse { positions, .. } => positions.nnz.saturating_mul(8 + 2 + 2 + size),
            Repr::Codebook(_) => ctx.elements.saturating_mul(2),
            // Rebuilt in binary64 before the one rounding to the dtype.
            Repr::LowRank(_) | Repr::Tucker(_) | Repr::Binary(_) => ctx.elements.saturating_mul(8),
            // The indices, and every element in binary64 before the rounding.
            Repr::Miracle(p) => {
                (p.blocks as u64 * 4).saturating_add(ctx.elements.saturating_mul(8))
            }
            // The same for the shared values, then every element in binary64.
            Repr::Hashed { shared, values } => (values.blocks as u64 * 4)
                .saturating_add((shared.values as u64).saturating_mul(8))
                .saturating_add(ctx.elements.saturating_mul(8)),
        };
        ctx.dense_len.saturating_add(zstd).saturating_add(working)
    }

    fn check_budget(&self, ctx: &DecodeContext<'_>) -> Result<()> {
        ctx.budget
            .check(|| format!("decoding {}", ctx.what), self.memory_needed(ctx))
    }

    /// Undo the chain: stored bytes in, the tensor's dense little-endian bytes out, with what
    /// the encoding looked like inside. Dense with no byte stage stays borrowed (zero copy).
    pub fn decode<'d>(&self, stored: &'d [u8], ctx: &DecodeContext<'_>) -> Result<Decoded<'d>> {
        self.check_budget(ctx)?;
        if let Some(factored) = self.read_factored(stored, ctx)? {
            return Ok(Decoded {
                bytes: Cow::Owned(factored.to_dtype(ctx.dtype)),
                nnz: None,
                codebook: None,
                streams: Vec::new(),
            });
        }
        let (bytes, base) = self.undo_byte_stages(stored, ctx)?;
        match self.repr {
            Repr::Dense => {
                dense::decode(&self.first, &bytes, ctx, &format!("{}.stage[0]", ctx.what))?;
                Ok(Decoded {
                    bytes,
                    nnz: None,
                    codebook: None,
                    streams: Vec::new(),
                })
            }
            Repr::Sparse { positions, values } => {
                tensor::decode_sparse(&positions, values.as_ref(), self.huffman, &bytes, base, ctx)
            }
            Repr::Codebook(cb) => tensor::decode_codebook(&cb, self.huffman, &bytes, base, ctx),
            Repr::Miracle(p) => {
                let mut c = Cursor::new(&bytes, base);
                let coded = miracle::read_payload(&mut c, &p, ctx.what)?;
                tensor::finish(&c, ctx)?;
                Ok(Decoded {
                    bytes: Cow::Owned(coded.to_dtype(ctx.elements, ctx.dtype)),
                    nnz: None,
                    codebook: None,
                    streams: Vec::new(),
                })
            }
            Repr::Hashed { shared, values } => {
                let mut c = Cursor::new(&bytes, base);
                let coded = miracle::read_payload(&mut c, &values, ctx.what)?;
                tensor::finish(&c, ctx)?;
                let expanded = shared.expand(&coded.to_f64(shared.values as u64), ctx.elements);
                Ok(Decoded {
                    bytes: Cow::Owned(floats::f64_to_dtype(&expanded, ctx.dtype)),
                    nnz: None,
                    codebook: None,
                    streams: Vec::new(),
                })
            }
            Repr::LowRank(_) | Repr::Tucker(_) | Repr::Binary(_) => {
                unreachable!("read_factored returned them")
            }
        }
    }

    /// The factors of a factored representation, as stored (after its byte stages); `None`
    /// for the others. The payload must be consumed exactly.
    pub fn read_factored(
        &self,
        stored: &[u8],
        ctx: &DecodeContext<'_>,
    ) -> Result<Option<Factored>> {
        if !self.repr.is_factored() {
            return Ok(None);
        }
        self.check_budget(ctx)?;
        let (bytes, base) = self.undo_byte_stages(stored, ctx)?;
        let mut c = Cursor::new(&bytes, base);
        let factored = match self.repr {
            Repr::LowRank(p) => Factored::LowRank(lowrank::read_payload(&mut c, &p, ctx)?),
            Repr::Tucker(p) => Factored::Tucker(tucker::read_payload(&mut c, &p, ctx)?),
            Repr::Binary(p) => {
                let (rows, cols) = sparse::csr_shape(ctx.shape, ctx.elements);
                Factored::Binary(binary::read_payload(&mut c, &p, rows, cols, ctx.what)?)
            }
            _ => return Ok(None),
        };
        tensor::finish(&c, ctx)?;
        Ok(Some(factored))
    }
}
