//! cxrm: a file format and toolchain for compressed convolutional networks.
//!
//! The data flows trainer → writer → file → reader → runtime. This crate's modules follow it:
//! [`container`] holds the format itself (header, table, limits, reader, writer) as the spec
//! `spec/cxrm.md` defines it, and [`encoding`] holds one module per encoding stage.
//! [`compress`] chooses how tensors are stored, [`runtime`] runs a model from its mapped file,
//! and, with the `train` feature, `train` trains and compresses models (burn stays inside it)
//! and `study` compares every method on real data.
//!
//! ```no_run
//! # fn main() -> cxrm::Result<()> {
//! let file = cxrm::Mapped::open("model.cxrm")?;
//! let model = file.parse()?;                 // header + table only; no payload is read
//! for t in model.tensors() {
//!     println!("{} {:?} {}", t.name, t.shape, t.chain_name());
//! }
//! let w = model.decode("conv1.weight")?;     // CRC-checked, zero-copy when stored dense
//! let values: &[f32] = w.as_slice()?;
//! # let _ = values; Ok(()) }
//! ```

pub mod compress;
pub mod container;
pub mod data;
pub mod dtype;
pub mod encoding;
pub mod error;
pub mod fuzzing;
#[cfg(feature = "safetensors")]
pub mod interop;
#[cfg(feature = "json")]
pub mod json;
pub mod runtime;
#[cfg(feature = "train")]
pub mod study;
#[cfg(test)]
pub(crate) mod testing;
pub mod text;
#[cfg(feature = "train")]
pub mod train;

pub use container::graph::{Graph, Node};
pub use container::limits::Limits;
pub use container::reader::{Cxrm, Element, Mapped, ReadOptions, TensorData, VerifyReport};
pub use container::value::{Map, Value, ValueType};
pub use container::writer::Writer;
pub use dtype::DType;
pub use error::{Error, ErrorCode, FormatError, Result};
