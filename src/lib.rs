//! cxrm: a file format and toolchain for compressed convolutional networks.
//!
//! The data flows trainer → writer → file → reader → runtime, and the workspace's crates
//! follow it: [`format`](mod@format) (`cxrm-format`) is the spec's bytes, [`runtime`]
//! (`cxrm-runtime`) runs a model from its mapped file, and [`compress`] (`cxrm-compress`)
//! produces compressed files, with the burn trainer behind its `train` feature. This crate is
//! the `cxrm` command-line tool and an umbrella over the three. A program that only reads or
//! runs `.cxrm` files depends on `cxrm-format` or `cxrm-runtime` alone.
//!
//! ```no_run
//! # fn main() -> cxrm::Result<()> {
//! let file = cxrm::Mapped::open("model.cxrm")?;
//! let parsed = file.parse()?;
//! let model = cxrm::runtime::Model::load(&parsed)?;
//! let input = &model.input;
//! let batch = cxrm::runtime::ndarray::Array4::<f32>::zeros((1, input.channels, input.height, input.width));
//! let scores = model.forward(batch.view())?;
//! # let _ = scores; Ok(()) }
//! ```

pub use cxrm_compress as compress;
pub use cxrm_format as format;
pub use cxrm_runtime as runtime;

pub use cxrm_format::{
    Cxrm, DType, Element, Error, ErrorCode, FormatError, Graph, Limits, Map, Mapped, Node,
    ReadOptions, Result, TensorData, Value, ValueType, VerifyReport, Writer,
};
