//! MIRACLE (Havasi, Peharz & Hernández-Lobato, "Minimal Random Code Learning", ICLR 2019):
//! weights stored as a seed and one sample index per block (spec §5.12). `store` chooses a
//! block's code with no training framework; `retrain` (feature `train`) learns the posterior
//! the codes are drawn against, and codes the blocks with retraining between.

#[cfg(feature = "train")]
pub mod retrain;
pub mod store;

#[cfg(feature = "train")]
pub use retrain::{CodedTensor, HashPlan, MiracleModel, MiracleOptions, MiracleReport, miracle};
