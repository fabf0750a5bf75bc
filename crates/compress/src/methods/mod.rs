//! The compression methods, one module each. A method's storage side (`store`: how its result
//! is encoded, with no training framework) sits beside its retraining side (`retrain`: the
//! burn fine-tuning its paper pairs with it, feature `train`).

pub mod bwn;
pub mod deep_compression;
#[cfg(feature = "train")]
pub mod distill;
pub mod factorize;
pub mod miracle;

#[cfg(feature = "train")]
pub use run::{Compressed, Method, compress};

/// The methods with retraining, one paragraph each, as command-line help shows them.
pub const HELP: &str = "Compress a trained model with retraining, and write the result.

Methods:
  bwn               binary weights (Rastegari et al. 2016): every hidden conv and dense layer's
                    weights become α·sign(w), one α per output channel, fine-tuned through the
                    straight-through estimator; first and last layers stay real; stored as
                    binary tensors, run by adding and subtracting
  deep-compression  iterative magnitude pruning with retraining under fixed masks, then k-means
                    weight sharing (linear init) with trained centroids, then Huffman coding;
                    stored as sparse + codebook + huffman chains (Han et al. 2016)
  distill           train --student from scratch on the model's softened outputs (temperature
                    --temperature) and the labels (Hinton et al. 2015)
  miracle           learn a Gaussian posterior per weight with each block's KL divergence held
                    near --bits-per-block bits, then code every block as one of 2^bits draws
                    from the prior, picked by importance weights, retraining the rest between
                    groups; stored as miracle tensors, a seed and the indices (Havasi et al. 2019)
  lowrank           split each conv and dense layer (but the output layer) into two by a
                    truncated SVD keeping --energy of the spectrum, fine-tune, and store the
                    factors as lowrank tensors (Denton et al. 2014)
  tucker            as lowrank, but convolutions by Tucker-2 (HOSVD ranks keeping --energy of
                    each channel unfolding), stored as tucker tensors (Kim et al. 2016)";

/// One entry point for every method with retraining, as `cxrm compress` calls it.
#[cfg(feature = "train")]
mod run {
    use crate::train::{
        DeepOptions, DistillOptions, Event, FactorizeOptions, TrainData, TrainedModel,
    };
    use cxrm_format::Result;
    use std::path::Path;

    /// A compression method with its settings.
    pub enum Method {
        DeepCompression(DeepOptions),
        Bwn(crate::methods::bwn::BwnOptions),
        /// Low-rank (SVD) or Tucker-2 factors, as the options say.
        Factorize(FactorizeOptions),
        Distill(DistillOptions),
        Miracle(crate::methods::miracle::MiracleOptions),
    }

    /// What compressing wrote.
    pub struct Compressed {
        /// The compressed model, as the runtime will run it.
        pub model: TrainedModel,
        /// Bytes of the file written.
        pub bytes: u64,
        /// One line per compressed layer (empty for distillation).
        pub report: Vec<String>,
    }

    /// Compress `base` with `method` (retraining on `data`, progress to `on`) and write the
    /// result to `out`.
    pub fn compress(
        base: &TrainedModel,
        data: &TrainData,
        method: &Method,
        out: &Path,
        on: &mut dyn FnMut(Event),
    ) -> Result<Compressed> {
        Ok(match method {
            Method::DeepCompression(opts) => {
                let (model, plan, reports) = crate::train::deep_compression(base, data, opts, on)?;
                let bytes = model.write(out, &*plan)?;
                let report = reports.iter().map(ToString::to_string).collect();
                Compressed {
                    model,
                    bytes,
                    report,
                }
            }
            Method::Bwn(opts) => {
                let (model, reports) = crate::methods::bwn::bwn(base, data, opts, on)?;
                let bytes = model.write(out, &crate::methods::bwn::plan(&model))?;
                Compressed {
                    model,
                    bytes,
                    report: reports.iter().map(ToString::to_string).collect(),
                }
            }
            Method::Factorize(opts) => {
                let (factorized, reports) = crate::train::factorize(base, data, opts, on)?;
                let bytes = factorized.write(out)?;
                let report = reports.iter().map(ToString::to_string).collect();
                Compressed {
                    model: factorized.expanded,
                    bytes,
                    report,
                }
            }
            Method::Miracle(opts) => {
                let (coded, reports) = crate::methods::miracle::miracle(base, data, opts, on)?;
                let bytes = coded.write(out)?;
                Compressed {
                    model: coded.model,
                    bytes,
                    report: reports.iter().map(ToString::to_string).collect(),
                }
            }
            Method::Distill(opts) => {
                let model = crate::train::distill(base, data, opts, on)?;
                let bytes = model.write(out, &|_| None)?;
                Compressed {
                    model,
                    bytes,
                    report: Vec::new(),
                }
            }
        })
    }
}
