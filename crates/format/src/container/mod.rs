//! The `.cxrm` container (spec §1–§4, §6–§10): header, table, limits, typed values, graph,
//! reader and writer. Encodings live in [`crate::encoding`], one module each.

pub mod graph;
pub mod header;
pub mod input;
pub mod input_spec;
pub mod op;
pub mod output;
pub mod reader;
pub mod summary;
pub mod summary_text;
pub mod table;
pub mod value;
pub mod writer;
