//! cxrm-compress: everything that produces a compressed `.cxrm` file.
//!
//! [`methods`] holds one module per compression method, its storage policy and (feature
//! `train`) its retraining side by side; [`rules`] parses per-layer settings such as
//! `conv=8,fc=5`; [`interop`] packs and unpacks safetensors and imports models from other
//! frameworks (feature `onnx`). With the `train` feature, `train`
//! trains the seed's architectures with burn's CPU backend, and `study` compares every method
//! on real data. This is the only crate that depends on burn.

pub mod interop;
pub mod methods;
pub mod rules;
#[cfg(feature = "train")]
pub mod study;
#[cfg(feature = "train")]
pub mod train;

pub use cxrm_format::{Error, Result};
