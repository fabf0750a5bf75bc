//! Interchange with other formats: safetensors both ways, and models trained elsewhere
//! imported through [`builder`] (ONNX and Keras 3; every importer ends in the same
//! [`Imported`]).

pub mod builder;
#[cfg(feature = "keras")]
pub mod keras;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "safetensors")]
pub mod safetensors;

use cxrm_format::container::graph::Graph;
use cxrm_format::container::value::Map;
use cxrm_format::container::writer::Writer;
use cxrm_format::dtype::DType;
use cxrm_format::error::Result;

/// A model read from another framework: the `.cxrm` graph, its f32 weights and metadata.
#[derive(Debug)]
pub struct Imported {
    pub graph: Graph,
    pub weights: Vec<(String, builder::Weight)>,
    pub metadata: Map,
    /// Source operators that left no node of their own (constants, identities, reshapes
    /// that were already vectors): `(op, count)`, for the user's report.
    pub folded: Vec<(String, usize)>,
}

impl Imported {
    /// The number of weight values.
    pub fn parameters(&self) -> usize {
        self.weights.iter().map(|(_, w)| w.values.len()).sum()
    }

    /// A writer holding the graph, the weights (dense f32) and the metadata.
    pub fn into_writer(self) -> Result<Writer<'static>> {
        let mut w = Writer::new();
        for (k, v) in self.metadata {
            w.set_metadata(k, v);
        }
        w.set_graph(self.graph);
        for (name, weight) in self.weights {
            let shape: Vec<u64> = weight.shape.iter().map(|&d| d as u64).collect();
            let bytes: Vec<u8> = weight.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.add_dense(&name, DType::F32, &shape, bytes)?;
        }
        Ok(w)
    }
}
