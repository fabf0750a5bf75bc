//! cxrm-format: the bytes of the `.cxrm` format, as `spec/cxrm.md` defines them.
//!
//! [`container`] holds the file's structure (header, table, limits, typed values, graph,
//! reader and atomic writer); [`encoding`] holds one module per encoding stage, each with its
//! encoder, decoder and tests side by side. Nothing here runs or trains a model: this crate
//! has no dependency on a tensor library, an image decoder or a command-line parser.
//!
//! ```no_run
//! # fn main() -> cxrm_format::Result<()> {
//! let file = cxrm_format::Mapped::open("model.cxrm")?;
//! let model = file.parse()?;                 // header + table only; no payload is read
//! for t in model.tensors() {
//!     println!("{} {:?} {}", t.name, t.shape, t.chain_name());
//! }
//! let w = model.decode("conv1.weight")?;     // CRC-checked, zero-copy when stored dense
//! let values: &[f32] = w.as_slice()?;
//! # let _ = values; Ok(()) }
//! ```

pub mod budget;
pub mod container;
pub mod cursor;
pub mod dtype;
pub mod encoding;
pub mod error;
pub mod fuzzing;
#[cfg(feature = "json")]
pub mod json;
pub mod lcg;
pub mod limits;
#[doc(hidden)]
pub mod testing;
pub mod text;

pub use container::graph::{Graph, Node};
pub use container::op::Op;
pub use container::reader::{Cxrm, Element, Mapped, ReadOptions, TensorData, VerifyReport};
pub use container::value::{Map, Value, ValueType};
pub use container::writer::Writer;
pub use dtype::DType;
pub use error::{Error, ErrorCode, FormatError, Result};
pub use limits::Limits;
