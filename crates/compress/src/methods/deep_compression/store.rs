//! Deep Compression as storage (Han, Mao & Dally, arXiv 1510.00149): a pruned tensor's
//! survivors in a sparse layout, their values shared through a k-means codebook, and the
//! index streams Huffman-coded. Any prefix of prune → quantize → Huffman works; the encoder
//! builds every layout and coding the options allow and keeps the smallest.

use cxrm_format::dtype::DType;
use cxrm_format::encoding::codebook::{self, Init};
use cxrm_format::encoding::stream::{self, Coding};
use cxrm_format::encoding::{Encoded, Repr, sparse};
use cxrm_format::error::Result;
use std::borrow::Cow;
use std::fmt;

/// How to store one tensor: what it becomes, so that only forms the format has can be asked
/// for (binary weights are never also sparse or quantized, gap widths exist only for a sparse
/// layout, k-means settings only for a codebook).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TensorPlan {
    /// Stored as it is (f32), with a zstd stage at this level when that is smaller.
    Dense { zstd_level: Option<i32> },
    /// Deep Compression's storage: any prefix of prune → quantize → Huffman.
    Deep(DeepPlan),
    /// XNOR-Net binary weights: a scale per row (the mean magnitude) and one sign bit per
    /// weight, with a zstd stage at this level when that is smaller. Exact for values that are
    /// already `±α` per row, as XNOR training leaves them.
    Binary { zstd_level: Option<i32> },
}

impl Default for TensorPlan {
    fn default() -> Self {
        TensorPlan::Dense { zstd_level: None }
    }
}

impl From<DeepPlan> for TensorPlan {
    fn from(plan: DeepPlan) -> Self {
        TensorPlan::Deep(plan)
    }
}

impl TensorPlan {
    /// XNOR-Net binary weights, without zstd.
    pub fn binary() -> TensorPlan {
        TensorPlan::Binary { zstd_level: None }
    }

    /// What the tensor will be, in words: "sparse (gaps 5 bits) + 4-bit codebook (linear,
    /// f32) + huffman".
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TensorPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorPlan::Dense { zstd_level } => {
                f.write_str("dense")?;
                write_zstd(f, *zstd_level)
            }
            TensorPlan::Deep(d) => d.fmt(f),
            TensorPlan::Binary { zstd_level } => {
                f.write_str("binary (signs, f32 scale per row)")?;
                write_zstd(f, *zstd_level)
            }
        }
    }
}

fn write_zstd(f: &mut fmt::Formatter<'_>, level: Option<i32>) -> fmt::Result {
    match level {
        Some(level) => write!(f, " + zstd {level}"),
        None => Ok(()),
    }
}

/// Deep Compression's steps for one tensor. With neither `sparse` nor `quantize` the tensor
/// stays dense: Huffman has no symbol streams to code there.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DeepPlan {
    /// Store only nonzero weights (the tensor is expected to be pruned already).
    pub sparse: Option<SparsePlan>,
    /// Share the values (the survivors, when sparse) through a k-means codebook.
    pub quantize: Option<Quantize>,
    /// Entropy-code the symbol streams; the encoder may choose zstd instead when smaller.
    pub huffman: bool,
    /// Also consider a zstd stage at this level.
    pub zstd_level: Option<i32>,
}

/// The sparse layout of a pruned tensor's survivors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SparsePlan {
    /// Relative-index gap width (the paper: 8 for conv, 5 for fc). `None` tries every width
    /// in [`GAP_WIDTHS`] and keeps the one whose positions take the fewest bytes: the best
    /// width trades escapes (too narrow) against a larger code-length table (too wide), and
    /// depends on the layer's sparsity.
    pub index_bits: Option<u8>,
}

/// A k-means codebook of 2^`bits` centroids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantize {
    pub bits: u8,
    pub init: Init,
    pub centroid_dtype: DType,
}

impl Quantize {
    /// `bits`-bit indices, linear initialisation (the paper's best), f32 centroids.
    pub fn bits(bits: u8) -> Quantize {
        Quantize {
            bits,
            init: Init::Linear,
            centroid_dtype: DType::F32,
        }
    }
}

impl DeepPlan {
    /// Sparse storage of a pruned tensor, the gap width left to the encoder.
    pub fn pruned() -> DeepPlan {
        DeepPlan {
            sparse: Some(SparsePlan::default()),
            ..DeepPlan::default()
        }
    }

    /// A `bits`-bit codebook over every value, dense layout.
    pub fn quantized(bits: u8) -> DeepPlan {
        DeepPlan::default().quantize(Quantize::bits(bits))
    }

    /// Sparse storage with gaps of `index_bits` (or, with `None`, the smallest width).
    pub fn gaps(self, index_bits: Option<u8>) -> DeepPlan {
        DeepPlan {
            sparse: Some(SparsePlan { index_bits }),
            ..self
        }
    }

    /// Quantize the values as `q` says.
    pub fn quantize(self, q: Quantize) -> DeepPlan {
        DeepPlan {
            quantize: Some(q),
            ..self
        }
    }

    /// Quantize the values to `bits` bits, keeping any k-means settings already chosen.
    pub fn bits(self, bits: u8) -> DeepPlan {
        let q = self.quantize.unwrap_or(Quantize::bits(bits));
        self.quantize(Quantize { bits, ..q })
    }

    /// Huffman-code the symbol streams.
    pub fn huffman(self) -> DeepPlan {
        DeepPlan {
            huffman: true,
            ..self
        }
    }

    /// Also consider a zstd stage at `level`.
    pub fn zstd(self, level: i32) -> DeepPlan {
        DeepPlan {
            zstd_level: Some(level),
            ..self
        }
    }
}

impl fmt::Display for DeepPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(s) = self.sparse {
            parts.push(match s.index_bits {
                Some(b) => format!("sparse (gaps {b} bits)"),
                None => "sparse (gaps of the smallest width)".to_string(),
            });
        }
        if let Some(q) = self.quantize {
            let init = match q.init {
                Init::Linear => "linear".to_string(),
                Init::Density => "density".to_string(),
                Init::Random(seed) => format!("random, seed {seed}"),
            };
            parts.push(format!(
                "{}-bit codebook ({init}, {})",
                q.bits, q.centroid_dtype
            ));
        }
        if parts.is_empty() {
            // Nothing to prune or quantize: no streams for Huffman to code.
            parts.push("dense".to_string());
        } else if self.huffman {
            parts.push("huffman".to_string());
        }
        f.write_str(&parts.join(" + "))?;
        write_zstd(f, self.zstd_level)
    }
}

/// How the symbol streams of one candidate are coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// Fixed-width bit packing.
    Packed,
    /// Each stream in its smallest coding, Huffman included (the chain gets the huffman stage).
    Entropy,
    /// One byte per symbol, for a zstd stage over the whole payload.
    Bytes,
    /// Every stream Huffman-coded, even where another coding is smaller (conformance fixtures
    /// and benchmarks use it to exercise the Huffman path).
    HuffmanOnly,
}

/// Gap widths the encoder tries when a plan leaves the width open. Wider gaps than 12 bits
/// only grow the code-length table: a gap of 4,095 zeros is already rare in a pruned layer.
pub const GAP_WIDTHS: std::ops::RangeInclusive<u8> = 2..=12;

impl StreamMode {
    /// The codings a stream may take in this mode (each stream takes its smallest).
    fn codings(self) -> &'static [Coding] {
        match self {
            StreamMode::Packed => &[Coding::Packed],
            StreamMode::Entropy => &[Coding::Packed, Coding::Bytes, Coding::Huffman],
            StreamMode::Bytes => &[Coding::Bytes],
            StreamMode::HuffmanOnly => &[Coding::Huffman],
        }
    }
}

/// A tensor ready to be laid out: its survivors and their (possibly quantized) values.
pub struct Prepared {
    pub shape: Vec<u64>,
    pub elements: u64,
    /// Survivor positions when stored sparse.
    pub positions: Option<Vec<u64>>,
    /// Survivor values (all values when not sparse).
    pub kept: Vec<f32>,
    /// Codebook over `kept`: (bits, centroid dtype, codebook).
    pub codebook: Option<(u8, DType, codebook::Codebook)>,
}

impl Prepared {
    pub fn new(values: &[f32], shape: &[u64], plan: &DeepPlan) -> Prepared {
        let elements = values.len() as u64;
        let positions: Option<Vec<u64>> = plan.sparse.map(|_| {
            (0..elements)
                .filter(|&i| values[i as usize] != 0.0)
                .collect()
        });
        let kept: Vec<f32> = match &positions {
            Some(p) => p.iter().map(|&i| values[i as usize]).collect(),
            None => values.to_vec(),
        };
        let codebook = plan.quantize.map(|q| {
            (
                q.bits,
                q.centroid_dtype,
                codebook::kmeans(&kept, q.bits, q.init, q.centroid_dtype),
            )
        });
        Prepared {
            shape: shape.to_vec(),
            elements,
            positions,
            kept,
            codebook,
        }
    }

    /// The relative-layout gap width whose position streams take the fewest bytes in `mode`.
    /// The value part does not depend on the width, so comparing the position part alone is
    /// exact for packed and Huffman coding.
    pub fn smallest_gap_width(&self, mode: StreamMode) -> u8 {
        let mut scratch = Vec::new();
        GAP_WIDTHS
            .min_by_key(|&width| {
                scratch.clear();
                self.write_positions(
                    sparse::Layout::Relative { index_bits: width },
                    mode,
                    &mut scratch,
                );
                scratch.len()
            })
            .expect("GAP_WIDTHS is not empty")
    }

    /// Append the position streams in `layout` to `out`; false (nothing written) when the
    /// tensor is not stored sparse.
    fn write_positions(&self, layout: sparse::Layout, mode: StreamMode, out: &mut Vec<u8>) -> bool {
        let Some(positions) = &self.positions else {
            return false;
        };
        let choose =
            |symbols: &[u16], width: u8| stream::best_coding(symbols, width, mode.codings());
        sparse::write_positions(positions, &self.shape, self.elements, layout, &choose, out);
        true
    }

    /// Lay the tensor out in one form: a sparse layout (when sparse), one stream mode, and an
    /// optional zstd stage over the result.
    pub fn build(
        &self,
        layout: Option<sparse::Layout>,
        mode: StreamMode,
        zstd_level: Option<i32>,
    ) -> Result<Encoded<'static>> {
        let choose =
            |symbols: &[u16], width: u8| stream::best_coding(symbols, width, mode.codings());
        let mut payload = Vec::new();
        let positions = match layout {
            Some(layout) if self.write_positions(layout, mode, &mut payload) => {
                Some(sparse::Params {
                    layout,
                    nnz: self.kept.len() as u64,
                })
            }
            _ => None,
        };
        let values = match &self.codebook {
            Some((bits, centroid_dtype, cb)) => {
                let params = codebook::Params {
                    bits: *bits,
                    centroid_dtype: *centroid_dtype,
                    k: cb.centroids.len() as u16,
                };
                codebook::write_payload(cb, &params, choose(&cb.indices, *bits), &mut payload);
                Some(params)
            }
            None => {
                payload.extend(self.kept.iter().flat_map(|v| v.to_le_bytes()));
                None
            }
        };
        let repr = match (positions, values) {
            (Some(positions), values) => Repr::Sparse { positions, values },
            (None, Some(cb)) => Repr::Codebook(cb),
            // Neither pruned nor quantized: plain dense, which has no streams to entropy-code.
            (None, None) => {
                let dense = cxrm_format::encoding::dense::encode(Cow::Owned(payload));
                return cxrm_format::encoding::zstd::encode_if(dense, zstd_level);
            }
        };
        let huffman = matches!(mode, StreamMode::Entropy | StreamMode::HuffmanOnly);
        let encoded = Encoded::new(repr, huffman, payload);
        cxrm_format::encoding::zstd::encode_if(encoded, zstd_level)
    }
}

/// Encode an f32 tensor (already pruned if the plan stores it sparse) as `plan` says, trying
/// every layout and stream coding allowed and returning the smallest. Dense f32 is returned
/// when no compression step is asked for.
pub fn encode(values: &[f32], shape: &[u64], plan: &TensorPlan) -> Result<Encoded<'static>> {
    match plan {
        TensorPlan::Dense { zstd_level } => encode_dense(values, *zstd_level),
        TensorPlan::Deep(deep) => encode_deep(values, shape, deep),
        TensorPlan::Binary { zstd_level } => {
            let (rows, cols) = sparse::csr_shape(shape, values.len() as u64);
            let b = cxrm_format::encoding::binary::binarize(
                values,
                rows as usize,
                cols as usize,
                DType::F32,
            );
            let enc = cxrm_format::encoding::binary::encode(
                &b,
                cxrm_format::encoding::binary::Params {
                    scale_dtype: DType::F32,
                },
            );
            cxrm_format::encoding::zstd::encode_if(enc, *zstd_level)
        }
    }
}

fn encode_dense(values: &[f32], zstd_level: Option<i32>) -> Result<Encoded<'static>> {
    let dense = cxrm_format::encoding::dense::encode(Cow::Owned(
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    ));
    cxrm_format::encoding::zstd::encode_if(dense, zstd_level)
}

fn encode_deep(values: &[f32], shape: &[u64], plan: &DeepPlan) -> Result<Encoded<'static>> {
    if plan.quantize.is_some() {
        // k-means would turn NaN and ±Inf into finite weights without a word; refuse instead.
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(cxrm_format::Error::Usage(format!(
                "{bad} of {} weights are NaN or infinite; quantizing would hide them",
                values.len()
            )));
        }
    }
    if plan.sparse.is_none() && plan.quantize.is_none() {
        return encode_dense(values, plan.zstd_level);
    }
    let prepared = Prepared::new(values, shape, plan);
    let mut layouts = Vec::new();
    if let Some(sparse_plan) = plan.sparse {
        let index_bits = sparse_plan.index_bits.unwrap_or_else(|| {
            prepared.smallest_gap_width(if plan.huffman {
                StreamMode::Entropy
            } else {
                StreamMode::Packed
            })
        });
        layouts.push(Some(sparse::Layout::Relative { index_bits }));
        let (rows, cols) = sparse::csr_shape(shape, prepared.elements);
        if sparse::csr_fits(rows, cols) {
            layouts.push(Some(sparse::Layout::Csr));
        }
    } else {
        layouts.push(None);
    }
    // (stream mode, zstd level) pairs worth trying.
    let zstd_level = plan.zstd_level.unwrap_or(19);
    let mut forms = vec![(StreamMode::Packed, None)];
    if plan.huffman {
        forms.push((StreamMode::Entropy, None));
        // "Streams may also go through zstd instead": the encoder keeps whichever is smaller.
        forms.push((StreamMode::Bytes, Some(zstd_level)));
    }
    if plan.zstd_level.is_some() {
        forms.push((StreamMode::Packed, Some(zstd_level)));
        forms.push((StreamMode::Bytes, Some(zstd_level)));
    }
    let mut best: Option<Encoded<'static>> = None;
    for layout in &layouts {
        for &(mode, zstd) in &forms {
            let candidate = prepared.build(*layout, mode, zstd)?;
            if best
                .as_ref()
                .is_none_or(|b| candidate.payload.len() < b.payload.len())
            {
                best = Some(candidate);
            }
        }
    }
    Ok(best.expect("at least one candidate"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxrm_format::{Cxrm, Writer};

    fn weights(n: usize, seed: u64) -> Vec<f32> {
        cxrm_format::testing::uniform(n, seed)
            .into_iter()
            .map(|v| v * 0.2)
            .collect()
    }

    fn decode(values: &[f32], shape: &[u64], plan: &TensorPlan) -> (Vec<f32>, usize, String) {
        let enc = encode(values, shape, plan).unwrap();
        let stored = enc.payload.len();
        let mut w = Writer::new();
        w.add_tensor("t", DType::F32, shape, enc).unwrap();
        let bytes = w.to_bytes().unwrap();
        let file = Cxrm::parse(&bytes).unwrap();
        file.verify().unwrap();
        let chain = file.tensor("t").unwrap().chain_name();
        (file.decode("t").unwrap().to_f32_vec(), stored, chain)
    }

    #[test]
    fn an_open_gap_width_is_the_smallest_of_every_width_tried() {
        // Survivors clustered like a pruned fc layer's: dense runs, then long empty stretches
        // that a narrow width must escape many times.
        let mut w = weights(300 * 100, 3);
        for (i, v) in w.iter_mut().enumerate() {
            if (i / 700) % 3 != 0 {
                *v = 0.0;
            }
        }
        crate::methods::deep_compression::prune::prune_layer(&mut w, 0.9);
        let shape = [300, 100];
        let plan =
            |index_bits| TensorPlan::from(DeepPlan::pruned().gaps(index_bits).bits(4).huffman());
        let (open, open_len, _) = decode(&w, &shape, &plan(None));
        let fixed: Vec<usize> = GAP_WIDTHS
            .map(|b| encode(&w, &shape, &plan(Some(b))).unwrap().payload.len())
            .collect();
        assert_eq!(open_len, *fixed.iter().min().unwrap(), "{fixed:?}");
        // The same values come back whichever width stores the positions.
        let (five, _, _) = decode(&w, &shape, &plan(Some(5)));
        assert!(open == five, "the chosen width decodes to other values");
        assert!(
            open_len < fixed[3],
            "5-bit gaps should not be the best here: {fixed:?}"
        );
    }

    #[test]
    fn every_prefix_of_the_pipeline_round_trips() {
        let mut w = weights(20 * 50, 1);
        crate::methods::deep_compression::prune::prune_layer(&mut w, 0.9);
        let shape = [20, 50];
        // Prune only: exact.
        let (out, _, chain) = decode(&w, &shape, &DeepPlan::pruned().into());
        assert_eq!(out, w);
        assert!(chain.starts_with("sparse"), "{chain}");
        // Prune + quantize: every survivor becomes its centroid, zeros stay zero.
        let plan = DeepPlan::pruned().bits(4);
        let (out, _, chain) = decode(&w, &shape, &plan.into());
        assert_eq!(chain, "sparse+codebook");
        let survivors: Vec<f32> = w.iter().copied().filter(|v| *v != 0.0).collect();
        let cb = codebook::kmeans(&survivors, 4, Init::Linear, DType::F32);
        let mut k = 0;
        for (o, v) in out.iter().zip(&w) {
            if *v == 0.0 {
                assert_eq!(*o, 0.0);
            } else {
                assert_eq!(*o, cb.centroids[cb.indices[k] as usize]);
                k += 1;
            }
        }
        // + Huffman: identical values, fewer bytes.
        let (out_h, stored_h, chain_h) = decode(&w, &shape, &plan.huffman().into());
        let (_, stored_q, _) = decode(&w, &shape, &plan.into());
        assert_eq!(out_h, out);
        assert!(stored_h <= stored_q, "{stored_h} > {stored_q}");
        assert!(
            chain_h == "sparse+codebook+huffman" || chain_h.ends_with("zstd"),
            "{chain_h}"
        );
        // Quantize only.
        let (out, _, chain) = decode(&w, &shape, &DeepPlan::quantized(2).into());
        assert_eq!(chain, "codebook");
        let mut distinct: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() <= 4,
            "2-bit codebook gave {} values",
            distinct.len()
        );
    }

    #[test]
    fn edge_cases_all_pruned_none_pruned_one_bit_empty() {
        let shape = [4, 8];
        let zeros = vec![0.0f32; 32];
        let full = weights(32, 2);
        for values in [&zeros, &full] {
            for bits in [None, Some(1), Some(8)] {
                for huffman in [false, true] {
                    let plan = DeepPlan {
                        sparse: Some(SparsePlan::default()),
                        quantize: bits.map(Quantize::bits),
                        huffman,
                        zstd_level: None,
                    };
                    let (out, _, _) = decode(values, &shape, &plan.into());
                    if bits.is_none() {
                        assert_eq!(&out, values);
                    }
                    assert_eq!(out.len(), 32);
                }
            }
        }
        let (out, _, _) = decode(&[], &[0, 5], &DeepPlan::pruned().bits(3).huffman().into());
        assert!(out.is_empty());
    }

    #[test]
    fn a_plan_describes_itself() {
        let deep = DeepPlan::pruned().gaps(Some(5)).bits(4).huffman();
        assert_eq!(
            TensorPlan::from(deep).describe(),
            "sparse (gaps 5 bits) + 4-bit codebook (linear, f32) + huffman"
        );
        let q = Quantize {
            bits: 2,
            init: Init::Random(7),
            centroid_dtype: DType::F16,
        };
        assert_eq!(
            DeepPlan::default().quantize(q).zstd(3).to_string(),
            "2-bit codebook (random, seed 7, f16) + zstd 3"
        );
        assert_eq!(
            DeepPlan::pruned().to_string(),
            "sparse (gaps of the smallest width)"
        );
        // Huffman has nothing to code in a dense tensor, and the plan says so.
        assert_eq!(DeepPlan::default().huffman().to_string(), "dense");
        assert_eq!(TensorPlan::default().describe(), "dense");
        assert_eq!(
            TensorPlan::Dense {
                zstd_level: Some(19)
            }
            .describe(),
            "dense + zstd 19"
        );
        assert_eq!(
            TensorPlan::binary().describe(),
            "binary (signs, f32 scale per row)"
        );
    }

    #[test]
    fn a_deep_plan_with_no_step_is_stored_as_the_dense_plan() {
        let w = weights(6 * 7, 4);
        for zstd_level in [None, Some(3)] {
            let dense = encode(&w, &[6, 7], &TensorPlan::Dense { zstd_level }).unwrap();
            let deep = DeepPlan {
                huffman: true,
                zstd_level,
                ..DeepPlan::default()
            };
            let deep = encode(&w, &[6, 7], &deep.into()).unwrap();
            assert_eq!(deep.stages, dense.stages);
            assert_eq!(deep.payload, dense.payload);
        }
    }

    #[test]
    fn bits_keeps_the_k_means_settings_already_chosen() {
        let q = Quantize {
            bits: 4,
            init: Init::Density,
            centroid_dtype: DType::F16,
        };
        let plan = DeepPlan::default().quantize(q).bits(6);
        assert_eq!(plan.quantize, Some(Quantize { bits: 6, ..q }));
    }
}
