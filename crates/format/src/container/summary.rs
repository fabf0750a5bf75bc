//! What a file holds and what its storage costs, as one value: the header's facts, each
//! tensor's encoding, size and (for encodings worth looking inside) sparsity, codebook width,
//! symbol-stream entropy or ranks, and the totals. `cxrm inspect` renders it as text
//! ([`Summary::to_text`]) or JSON; any other tool can report the same numbers without
//! re-deriving them.

use super::graph::Graph;
use super::reader::Cxrm;
use super::table::TensorRecord;
use super::value::Map;
use crate::dtype::DType;
use crate::encoding::stream::StreamStats;
use crate::encoding::{Chain, Repr, mask_names, stage_name};
use crate::error::Result;
use std::borrow::Cow;

/// A file's report: built by [`Cxrm::summary`].
#[derive(Debug, Clone)]
pub struct Summary {
    pub file_bytes: u64,
    pub version_major: u16,
    pub version_minor: u16,
    /// The encodings the header says a reader must understand.
    pub must_understand: Vec<Cow<'static, str>>,
    /// Those of them this build cannot decode.
    pub missing_encodings: Vec<Cow<'static, str>>,
    pub sections: Vec<SectionSummary>,
    pub metadata: Map,
    pub graph: Option<Graph>,
    pub tensors: Vec<TensorSummary>,
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionSummary {
    pub kind: u32,
    /// `metadata`, `graph`, or `section#KIND` for kinds this version does not define.
    pub name: String,
    pub required: bool,
    pub bytes: u64,
}

/// One tensor's row. The fields from `sparsity` on are filled only for encodings that have
/// something inside to show (sparse, codebook, lowrank, tucker, binary) and that this build
/// decodes.
#[derive(Debug, Clone)]
pub struct TensorSummary {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Stage names in encoding order.
    pub encoding: Vec<Cow<'static, str>>,
    /// File offset of the stored bytes.
    pub offset: u64,
    pub stored_bytes: u64,
    pub elements: u64,
    /// Stored bits per element; `None` for a tensor with no elements.
    pub bits_per_weight: Option<f64>,
    /// How many times smaller than the tensor in f32; `None` when nothing is stored.
    pub ratio: Option<f64>,
    /// Fraction of elements pruned away (sparse tensors).
    pub sparsity: Option<f64>,
    /// Index width of the codebook (codebook tensors).
    pub codebook_bits: Option<u8>,
    /// Entropy and cost of each symbol stream read.
    pub streams: Vec<StreamStats>,
    /// `[r]` for lowrank, `[r_out, r_in]` for tucker; empty otherwise.
    pub ranks: Vec<usize>,
    /// Blocks and index width of a MIRACLE tensor.
    pub miracle: Option<MiracleSummary>,
    /// Why looking inside failed: the tensor is corrupt or malformed.
    pub decode_error: Option<String>,
}

impl Summary {
    /// The format version, e.g. `1.2`.
    pub fn version(&self) -> String {
        format!("{}.{}", self.version_major, self.version_minor)
    }
}

impl TensorSummary {
    /// The chain as one name, e.g. `sparse+zstd`.
    pub fn chain(&self) -> String {
        self.encoding.join("+")
    }
}

/// What a MIRACLE tensor's code costs (spec §5.12), from its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MiracleSummary {
    pub blocks: u32,
    /// Bits of each block's sample index.
    pub index_bits: u8,
    /// `blocks × index_bits`: the whole code, before the last byte's padding.
    pub coded_bits: u64,
    /// `M`, when the elements share fewer values through `hashed` (§5.13).
    pub shared_values: Option<u32>,
}

impl MiracleSummary {
    /// Coded bits per element; `None` for a tensor without elements.
    pub fn bits_per_weight(&self, elements: u64) -> Option<f64> {
        (elements > 0).then(|| self.coded_bits as f64 / elements as f64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    pub tensors: usize,
    pub params: u64,
    pub stored_bytes: u64,
    /// The weights' size in f32.
    pub f32_bytes: u64,
    /// Stored bits per parameter; `None` without parameters.
    pub bits_per_weight: Option<f64>,
    /// f32 size over stored tensor bytes; `None` when nothing is stored.
    pub ratio: Option<f64>,
    /// f32 size over the whole file (header, table, sections and alignment included).
    pub file_ratio: Option<f64>,
}

/// The details worth decoding for: what inspecting a tensor's inside showed.
#[derive(Default)]
struct Inside {
    sparsity: Option<f64>,
    codebook_bits: Option<u8>,
    streams: Vec<StreamStats>,
    ranks: Vec<usize>,
    miracle: Option<MiracleSummary>,
    decode_error: Option<String>,
}

impl Inside {
    fn failed(e: crate::error::Error) -> Inside {
        Inside {
            decode_error: Some(e.to_string()),
            ..Default::default()
        }
    }
}

fn ratio(params: u64, stored: u64) -> Option<f64> {
    (stored > 0).then(|| params as f64 * 4.0 / stored as f64)
}

impl<'data> Cxrm<'data> {
    /// Everything `cxrm inspect` shows. Reads the metadata and graph sections and the table;
    /// with `streams`, also the symbol streams or factors of sparse, codebook and factored
    /// tensors (to report each stream's entropy and check that they decode). Without it no
    /// payload is read, so memory stays proportional to the table. A tensor that fails to decode is reported in its row, not as an error; a
    /// corrupt metadata or graph section is an error.
    pub fn summary(&self, streams: bool) -> Result<Summary> {
        let metadata = self.metadata()?;
        let graph = self.graph()?;
        let h = self.header();
        let tensors: Vec<TensorSummary> = self
            .tensors()
            .iter()
            .map(|t| {
                let inside = self.look_inside(t, streams).unwrap_or_default();
                TensorSummary {
                    name: t.name.to_string(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    encoding: t.stages.iter().map(|s| stage_name(s.code)).collect(),
                    offset: t.extent.offset,
                    stored_bytes: t.extent.length,
                    elements: t.elements,
                    bits_per_weight: t.bits_per_weight(),
                    ratio: t.ratio_vs_f32(),
                    sparsity: inside.sparsity,
                    codebook_bits: inside.codebook_bits,
                    streams: inside.streams,
                    ranks: inside.ranks,
                    miracle: inside.miracle,
                    decode_error: inside.decode_error,
                }
            })
            .collect();
        let params: u64 = tensors.iter().map(|t| t.elements).sum();
        let stored: u64 = tensors.iter().map(|t| t.stored_bytes).sum();
        let totals = Totals {
            tensors: tensors.len(),
            params,
            stored_bytes: stored,
            f32_bytes: params * 4,
            bits_per_weight: (params > 0).then(|| stored as f64 * 8.0 / params as f64),
            ratio: ratio(params, stored),
            file_ratio: ratio(params, self.file_len()),
        };
        Ok(Summary {
            file_bytes: self.file_len(),
            version_major: h.version_major,
            version_minor: h.version_minor,
            must_understand: mask_names(h.must_understand),
            missing_encodings: self.missing_encodings(),
            sections: self
                .sections()
                .iter()
                .map(|s| SectionSummary {
                    kind: s.kind,
                    name: s.kind_name(),
                    required: s.required(),
                    bytes: s.extent.length,
                })
                .collect(),
            metadata,
            graph,
            tensors,
            totals,
        })
    }

    /// `None` for tensors with nothing inside to show, or whose encoding this build lacks.
    /// Sparsity, codebook bits and ranks come from the stage parameters; only `streams`
    /// (entropy and cost of each symbol stream) reads a payload.
    fn look_inside(&self, t: &TensorRecord<'data>, streams: bool) -> Option<Inside> {
        if !t.stages[0].id()?.implemented() {
            return None;
        }
        let what = format!("tensor[{}]", t.index);
        let ctx = self.decode_context(t, &what);
        let chain = match Chain::parse(&t.stages, &ctx) {
            Ok(chain) => chain,
            Err(e) => return Some(Inside::failed(e)),
        };
        let sparsity = |nnz: u64| {
            if t.elements == 0 {
                0.0
            } else {
                1.0 - nnz as f64 / t.elements as f64
            }
        };
        let mut inside = match chain.repr {
            Repr::Dense => return None,
            Repr::LowRank(p) => Inside {
                ranks: vec![p.rank as usize],
                ..Default::default()
            },
            Repr::Tucker(p) => Inside {
                ranks: vec![p.rank_out as usize, p.rank_in as usize],
                ..Default::default()
            },
            Repr::Binary(_) => Inside::default(),
            Repr::Miracle(p) => Inside {
                miracle: Some(MiracleSummary {
                    blocks: p.blocks,
                    index_bits: p.index_bits,
                    coded_bits: p.coded_bits(),
                    shared_values: None,
                }),
                ..Default::default()
            },
            Repr::Hashed { shared, values } => Inside {
                miracle: Some(MiracleSummary {
                    blocks: values.blocks,
                    index_bits: values.index_bits,
                    coded_bits: values.coded_bits(),
                    shared_values: Some(shared.values),
                }),
                ..Default::default()
            },
            Repr::Codebook(cb) => Inside {
                codebook_bits: Some(cb.bits),
                ..Default::default()
            },
            Repr::Sparse { positions, values } => Inside {
                sparsity: Some(sparsity(positions.nnz)),
                codebook_bits: values.map(|c| c.bits),
                ..Default::default()
            },
        };
        if streams {
            let checked = if chain.repr.is_factored() {
                self.read_factored(t).map(|_| Vec::new())
            } else if let Repr::Miracle(_) | Repr::Hashed { .. } = chain.repr {
                self.decode_detailed(t).map(|_| Vec::new())
            } else {
                self.decode_detailed(t).map(|d| d.stream_stats())
            };
            match checked {
                Ok(stats) => inside.streams = stats,
                Err(e) => inside.decode_error = Some(e.to_string()),
            }
        }
        Some(inside)
    }
}

#[cfg(test)]
mod tests {
    use crate::container::reader::Cxrm;
    use crate::container::value::Value;
    use crate::container::writer::Writer;
    use crate::dtype::DType;
    use crate::encoding::lowrank::{self, LowRank};

    #[test]
    fn reports_sizes_ranks_and_totals() {
        let mut w = Writer::new();
        w.set_metadata("model.name", Value::String("s".into()));
        let bias = [1f32, 2.0].map(f32::to_le_bytes).concat();
        w.add_dense("b", DType::F32, &[2], bias).unwrap();
        let lr = LowRank {
            rows: 2,
            cols: 3,
            rank: 1,
            u: vec![2.0, -0.5],
            v: vec![1.0, 0.25, -4.0],
        };
        w.add_tensor("w", DType::F32, &[2, 3], lowrank::encode(&lr, DType::F32))
            .unwrap();
        let bytes = w.to_bytes().unwrap();
        let s = Cxrm::parse(&bytes).unwrap().summary(true).unwrap();

        assert_eq!(s.file_bytes, bytes.len() as u64);
        assert_eq!(
            s.metadata,
            vec![("model.name".into(), Value::String("s".into()))]
        );
        assert!(s.graph.is_none() && s.missing_encodings.is_empty());
        let [b, w] = &s.tensors[..] else {
            panic!("two tensors")
        };
        assert_eq!(
            (b.chain(), b.stored_bytes, b.ratio),
            ("dense".into(), 8, Some(1.0))
        );
        assert!(b.ranks.is_empty() && b.streams.is_empty() && b.decode_error.is_none());
        assert_eq!((w.chain(), w.ranks.clone()), ("lowrank".into(), vec![1]));
        let t = s.totals;
        assert_eq!((t.tensors, t.params, t.f32_bytes), (2, 8, 32));
        assert_eq!(t.stored_bytes, b.stored_bytes + w.stored_bytes);
        assert_eq!(t.ratio, Some(32.0 / t.stored_bytes as f64));
        assert_eq!(t.file_ratio, Some(32.0 / s.file_bytes as f64));
    }
}
