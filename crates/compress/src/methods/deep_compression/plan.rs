//! Deep Compression over a whole model: which tensors to prune and quantize, with what
//! settings, pruned per layer or against one global threshold.

use super::prune;
use super::store::{self as deep, DeepPlan, Quantize, SparsePlan, TensorPlan};
use crate::rules::PerLayer;
use cxrm_format::dtype::DType;
use cxrm_format::encoding::Encoded;
use cxrm_format::encoding::codebook::Init;
use cxrm_format::error::Result;

/// A rule's error, naming the option it came from and what it allows.
pub(crate) fn in_rule(option: &str, allowed: &str, e: cxrm_format::Error) -> cxrm_format::Error {
    cxrm_format::Error::Usage(format!("{option} {e} (allowed: {allowed})"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Each tensor pruned to its own sparsity.
    Layer,
    /// One magnitude threshold for all pruned tensors, chosen to reach the (default) sparsity
    /// over all of them together, as in Deep Compression's released models.
    Global,
}

#[derive(Debug, Clone)]
pub struct ModelPlan {
    pub prune: PerLayer<f64>,
    pub scope: Scope,
    pub bits: PerLayer<u8>,
    pub index_bits: PerLayer<u8>,
    pub huffman: bool,
    pub init: Init,
    pub centroid_dtype: DType,
    pub zstd_level: Option<i32>,
}

impl Default for ModelPlan {
    fn default() -> Self {
        ModelPlan {
            prune: PerLayer::default(),
            scope: Scope::Layer,
            bits: PerLayer::default(),
            // Unset: the encoder picks each tensor's smallest gap width (the paper fixed 8 bits
            // for conv layers, 5 for fully connected ones).
            index_bits: PerLayer::default(),
            huffman: false,
            init: Init::Linear,
            centroid_dtype: DType::F32,
            zstd_level: None,
        }
    }
}

/// A tensor on its way through the plan.
pub struct ModelTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Dense little-endian bytes.
    pub bytes: Vec<u8>,
}

impl ModelPlan {
    /// Add the per-layer rules `cxrm pack` takes as text (a bare value, `conv=8,fc=5` by
    /// rank, or a tensor's name), each checked against its range: sparsity 0–1, codebook
    /// bits 1–8, gap widths 2–16 (`None` leaves each to the encoder).
    pub fn with_rules(
        mut self,
        prune: Option<&str>,
        bits: Option<&str>,
        index_bits: Option<&str>,
    ) -> Result<Self> {
        if let Some(p) = prune {
            self.prune = PerLayer::parse(p, |s: f64| (0.0..=1.0).contains(&s))
                .map_err(|e| in_rule("--prune", "a sparsity from 0 to 1", e))?;
        }
        if let Some(b) = bits {
            self.bits = PerLayer::parse(b, |b: u8| (1..=8).contains(&b))
                .map_err(|e| in_rule("--bits", "1 to 8", e))?;
        }
        if let Some(b) = index_bits {
            self.index_bits = PerLayer::parse(b, |b: u8| (2..=16).contains(&b))
                .map_err(|e| in_rule("--index-bits", "2 to 16", e))?;
        }
        Ok(self)
    }

    /// Prune against one threshold for all layers, which needs one bare sparsity to aim at.
    pub fn global(mut self) -> Result<Self> {
        if self.prune.default.is_none() {
            return Err(cxrm_format::Error::Usage(
                "--prune-scope global needs a bare --prune SPARSITY for the pooled target".into(),
            ));
        }
        self.scope = Scope::Global;
        Ok(self)
    }

    /// Only f32 weights (rank 2 or more) are pruned or quantized; biases and the rest stay as
    /// they are, as in the paper.
    fn applies(&self, t: &ModelTensor) -> bool {
        t.dtype == DType::F32 && t.shape.len() >= 2
    }

    fn tensor_plan(&self, t: &ModelTensor) -> Option<TensorPlan> {
        if !self.applies(t) {
            return None;
        }
        let sparsity = self.prune.get(&t.name, &t.shape).filter(|&s| s > 0.0);
        let bits = self.bits.get(&t.name, &t.shape);
        if sparsity.is_none() && bits.is_none() && !self.huffman {
            return None;
        }
        Some(TensorPlan::Deep(DeepPlan {
            sparse: sparsity.map(|_| SparsePlan {
                index_bits: self.index_bits.get(&t.name, &t.shape),
            }),
            quantize: bits.map(|bits| Quantize {
                bits,
                init: self.init,
                centroid_dtype: self.centroid_dtype,
            }),
            huffman: self.huffman,
            zstd_level: self.zstd_level,
        }))
    }

    /// Encode every tensor. Returns, per tensor, its encoded form (dense tensors unchanged,
    /// with a zstd stage when that is asked for and smaller).
    pub fn encode(&self, tensors: &[ModelTensor]) -> Result<Vec<Encoded<'static>>> {
        let mut values: Vec<Option<Vec<f32>>> = tensors
            .iter()
            .map(|t| {
                self.tensor_plan(t).map(|_| {
                    t.bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect()
                })
            })
            .collect();
        let sparsity = |t: &ModelTensor| self.prune.get(&t.name, &t.shape).filter(|&s| s > 0.0);
        match self.scope {
            Scope::Layer => {
                for (t, v) in tensors.iter().zip(values.iter_mut()) {
                    if let (Some(v), Some(s)) = (v.as_mut(), sparsity(t)) {
                        prune::prune_layer(v, s);
                    }
                }
            }
            Scope::Global => {
                let target = self.prune.default.unwrap_or(0.0);
                let pooled: Vec<&[f32]> = tensors
                    .iter()
                    .zip(&values)
                    .filter(|(t, _)| sparsity(t).is_some())
                    .filter_map(|(_, v)| v.as_deref())
                    .collect();
                let threshold = prune::global_threshold(pooled, target);
                for (t, v) in tensors.iter().zip(values.iter_mut()) {
                    if let (Some(v), Some(_)) = (v.as_mut(), sparsity(t)) {
                        prune::prune_below(v, threshold);
                    }
                }
            }
        }
        tensors
            .iter()
            .zip(values)
            .map(|(t, v)| match (self.tensor_plan(t), v) {
                (Some(plan), Some(v)) => deep::encode(&v, &t.shape, &plan).map_err(|e| match e {
                    cxrm_format::Error::Usage(m) => cxrm_format::Error::Usage(format!(
                        "tensor {:?}: {m}",
                        cxrm_format::text::escape(&t.name)
                    )),
                    other => other,
                }),
                _ => {
                    let dense = cxrm_format::encoding::dense::encode(std::borrow::Cow::Owned(
                        t.bytes.clone(),
                    ));
                    cxrm_format::encoding::zstd::encode_if(dense, self.zstd_level)
                }
            })
            .collect()
    }
}
