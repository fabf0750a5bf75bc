//! `cxrm import MODEL.onnx`: an ONNX classifier (opsets 11–21) into a runnable `.cxrm` file.
//!
//! The protobuf types come from the official `onnx.proto3`, generated once with prost and
//! checked in ([`proto`]), so building never needs `protoc`. The graph is read node by node in
//! its (topological) order: constant subgraphs fold into values ([`constants`]), and every
//! other node becomes one `.cxrm` node through [`GraphBuilder`], which infers shapes as it
//! goes. Anything the runtime could not run is refused with the node, the op and the opset.

pub mod constants;
pub mod export;
mod nodes;
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto;

use super::Imported;
use super::builder::{Act, GraphBuilder};
use constants::Const;
use cxrm_format::container::value::{Map, Value};
use cxrm_format::error::{Error, Result};
use prost::Message;
use proto::{ModelProto, tensor_shape_proto::dimension, type_proto};
use std::collections::HashMap;

/// The opsets of the default domain this importer reads.
pub const OPSETS: std::ops::RangeInclusive<i64> = 7..=22;

/// What an ONNX value is while the graph is read.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    /// Known without an image.
    Const(Const),
    /// Computed per image: the `.cxrm` value, and its ONNX dims with the batch as 1 (a
    /// `[1, C, 1, 1]` after global pooling is the `.cxrm` vector `[C]`).
    Act { act: Act, dims: Vec<usize> },
    /// A computed value through a zero `Pad` (top, left, bottom, right) that only a following
    /// `Conv` may read: its padding absorbs the `Pad`, as TensorFlow-style "same" exports need.
    Padded {
        act: Act,
        dims: Vec<usize>,
        pad: [usize; 4],
    },
}

/// Read an ONNX model. `input` overrides the input shape `[C, H, W]` when the file leaves it
/// open.
pub fn import(bytes: &[u8], input: Option<[usize; 3]>) -> Result<Imported> {
    let model = ModelProto::decode(bytes)
        .map_err(|e| Error::Usage(format!("not an ONNX model (protobuf: {e})")))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| Error::Usage("the model imports no opset of the default domain".into()))?;
    if !OPSETS.contains(&opset) {
        return Err(Error::Usage(format!(
            "opset {opset} is not supported (this importer reads opsets {} to {})",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::Usage("the model has no graph".into()))?;
    let mut values: HashMap<String, Val> = HashMap::new();
    for t in &graph.initializer {
        values.insert(t.name.clone(), Val::Const(Const::from_proto(t)?));
    }
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !values.contains_key(&i.name))
        .collect();
    let [image] = inputs[..] else {
        return Err(Error::Usage(format!(
            "the graph must take one image input; it takes {} ({})",
            inputs.len(),
            inputs
                .iter()
                .map(|i| cxrm_format::text::escape(&i.name))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let shape = match input {
        Some(s) => s,
        None => input_shape(image)?,
    };
    let (mut builder, x) = GraphBuilder::new(shape);
    values.insert(
        image.name.clone(),
        Val::Act {
            act: x,
            dims: [1, shape[0], shape[1], shape[2]].to_vec(),
        },
    );
    let mut folded: Vec<(String, usize)> = Vec::new();
    for (k, node) in graph.node.iter().enumerate() {
        let was_folded = nodes::translate(node, k, opset, &mut values, &mut builder)?;
        if was_folded {
            match folded.iter_mut().find(|(op, _)| *op == node.op_type) {
                Some(slot) => slot.1 += 1,
                None => folded.push((node.op_type.clone(), 1)),
            }
        }
    }
    let [output] = &graph.output[..] else {
        return Err(Error::Usage(format!(
            "the graph must have one output; it has {}",
            graph.output.len()
        )));
    };
    let out = match values.get(&output.name) {
        Some(Val::Act { act, .. }) => act.clone(),
        Some(Val::Padded { .. }) => {
            return Err(Error::Usage("the graph's output is a Pad".into()));
        }
        Some(Val::Const(_)) => {
            return Err(Error::Usage(
                "the graph's output does not depend on its input".into(),
            ));
        }
        None => {
            return Err(Error::Usage(format!(
                "no node computes the graph's output {}",
                cxrm_format::text::escape(&output.name)
            )));
        }
    };
    let (graph_out, weights) = builder.finish(&out)?;
    let mut metadata: Map = Vec::new();
    let name = if graph.name.is_empty() {
        "onnx-model".to_string()
    } else {
        graph.name.clone()
    };
    metadata.push(("model.name".into(), Value::String(name)));
    metadata.push((
        "input.shape".into(),
        Value::ints(shape.iter().map(|&d| d as i64)),
    ));
    // Preprocessing that `cxrm export` wrote (or that a user added) comes back as it was.
    for prop in &model.metadata_props {
        if let Some(key) = prop.key.strip_prefix("cxrm:") {
            let value = cxrm_format::json::value_from_text(&prop.value);
            match metadata.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value,
                None => metadata.push((key.to_string(), value)),
            }
        }
    }
    metadata.push(("import.format".into(), Value::String("onnx".into())));
    metadata.push(("import.opset".into(), Value::Int(opset)));
    let producer = format!("{} {}", model.producer_name, model.producer_version);
    if !producer.trim().is_empty() {
        metadata.push((
            "import.producer".into(),
            Value::String(producer.trim().into()),
        ));
    }
    Ok(Imported {
        graph: graph_out,
        weights,
        metadata,
        folded,
    })
}

/// `[C, H, W]` from the graph input's `[N, C, H, W]`; the batch may be symbolic.
fn input_shape(image: &proto::ValueInfoProto) -> Result<[usize; 3]> {
    let open = || {
        Error::Usage(format!(
            "the input {} has no fixed [N, C, H, W] shape; give one with --input CxHxW",
            cxrm_format::text::escape(&image.name)
        ))
    };
    let Some(type_proto::Value::TensorType(t)) =
        image.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(open());
    };
    let dims: Vec<Option<usize>> = t
        .shape
        .as_ref()
        .ok_or_else(open)?
        .dim
        .iter()
        .map(|d| match d.value {
            // The spec's input.shape sizes run from 1 to 2^16 (§6).
            Some(dimension::Value::DimValue(v)) if (1..=1 << 16).contains(&v) => {
                usize::try_from(v).ok()
            }
            _ => None,
        })
        .collect();
    match dims[..] {
        [_, Some(c), Some(h), Some(w)] => Ok([c, h, w]),
        _ => Err(open()),
    }
}
