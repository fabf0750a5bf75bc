//! cxrm-runtime: run a compressed model straight from its mapped `.cxrm` file.
//!
//! [`model`] loads a file's graph and weights (keeping each tensor in the form its encoding
//! gives: CSR rows, factors, sign bits) and runs forward passes, which [`classify`] turns
//! into ranked labels; [`kernels`], [`ops`],
//! [`xnor`] and [`parallel`] are what it runs on. [`preprocess`] turns images into the input
//! the file's metadata describes (with [`resize`], Pillow's filters), and [`data`] loads labelled data sets to evaluate on.
//! This crate depends on `cxrm-format` only, never on a training framework.

pub mod arena;
pub mod batch;
pub mod classify;
pub mod cpu;
pub mod data;
mod depthwise;
pub mod fuzzing;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod parallel;
#[cfg(feature = "image")]
pub mod preprocess;
pub mod resize;
pub mod scratch;
pub mod signs;
pub mod winograd;
pub mod xnor;

pub use classify::{Classification, Ranked};
pub use cxrm_format::{Error, Result};
pub use model::{InputSpec, LayerInfo, Model, RuntimeOptions, WeightBytes};
pub use ndarray;
