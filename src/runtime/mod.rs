//! The runtime: run a compressed model straight from its mapped `.cxrm` file.

pub mod batch;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod parallel;
#[cfg(feature = "image")]
pub mod preprocess;
pub mod xnor;

pub use model::{InputSpec, LayerInfo, Model, RuntimeOptions};
