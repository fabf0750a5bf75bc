//! `cxrm import MODEL.keras`: a Keras 3 model (the zip of `config.json` and
//! `model.weights.h5`) into a runnable `.cxrm` file.
//!
//! [`archive`] opens the zip and the HDF5 weights and maps layers to their HDF5 groups;
//! [`layers`] translates each layer through the shared graph builder. A model's leading
//! `Rescaling` and `Normalization` become the file's preprocessing; without them the model
//! takes raw pixel values 0–255 (scale 1), as Keras's image loaders give them, and images are
//! resized as `keras.utils.load_img` does by default (Pillow's nearest).

pub mod archive;
pub mod layers;

use super::Imported;
use cxrm_format::container::value::{Map, Value};
use cxrm_format::error::{Error, Result};
use serde_json::Value as Json;

/// Read a `.keras` file. `input` overrides the input shape `[C, H, W]` when the model leaves
/// it open.
pub fn import(bytes: &[u8], input: Option<[usize; 3]>) -> Result<Imported> {
    let archive = archive::Archive::open(bytes)?;
    let model = &archive.config;
    let class = model.get("class_name").and_then(Json::as_str).unwrap_or("");
    if !matches!(class, "Functional" | "Sequential" | "Model") {
        return Err(Error::Usage(format!(
            "config.json describes a {}, not a Functional or Sequential model",
            cxrm_format::text::escape(class)
        )));
    }
    let shape = match input {
        Some(s) => s,
        None => input_shape(model)?,
    };
    let mut t = layers::Translator::new(&archive, shape);
    let mut outputs = t.model(model, "", vec![layers::Translator::input_tensor()])?;
    if outputs.len() != 1 {
        return Err(Error::Usage(format!(
            "the model has {} outputs; a classifier has one",
            outputs.len()
        )));
    }
    let out = t.output_act(outputs.remove(0))?;
    let pixels = t.pixels.clone().unwrap_or_default();
    let (graph, weights) = t.builder.finish(&out)?;
    let name = model
        .get("config")
        .and_then(|c| c.get("name"))
        .and_then(Json::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("keras-model");
    let mut metadata: Map = vec![
        ("model.name".into(), Value::String(name.into())),
        (
            "input.shape".into(),
            Value::ints(shape.iter().map(|&d| d as i64)),
        ),
        ("input.resize".into(), Value::String("nearest".into())),
        (
            "input.scale".into(),
            Value::floats(pixels.scale.clone().unwrap_or_else(|| vec![1.0])),
        ),
    ];
    let mut per_channel = |key: &str, v: &Option<Vec<f64>>| {
        if let Some(v) = v {
            metadata.push((key.into(), Value::floats(v.iter().copied())));
        }
    };
    per_channel("input.offset", &pixels.offset);
    per_channel("input.mean", &pixels.mean);
    per_channel("input.std", &pixels.std);
    metadata.push(("import.format".into(), Value::String("keras".into())));
    Ok(Imported {
        graph,
        weights,
        metadata,
        folded: Vec::new(),
    })
}

/// `[C, H, W]` from the first `InputLayer`'s `batch_shape` `[N, H, W, C]`.
fn input_shape(model: &Json) -> Result<[usize; 3]> {
    let layers = model
        .get("config")
        .and_then(|c| c.get("layers"))
        .and_then(Json::as_array);
    let shape = layers
        .and_then(|l| {
            l.iter()
                .find(|l| l.get("class_name").and_then(Json::as_str) == Some("InputLayer"))
        })
        .and_then(|l| {
            let c = l.get("config")?;
            c.get("batch_shape")
                .or_else(|| c.get("batch_input_shape"))
                .and_then(Json::as_array)
                .cloned()
        });
    let dims: Option<Vec<usize>> = shape.and_then(|s| {
        s.iter()
            .skip(1)
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect()
    });
    match dims.as_deref() {
        Some(&[h, w, c])
            if (1..=1 << 16).contains(&h) && (1..=1 << 16).contains(&w) && (c == 1 || c == 3) =>
        {
            Ok([c, h, w])
        }
        _ => Err(Error::Usage(
            "the model's input has no fixed [H, W, C] image shape; give one with --input HxWxC"
                .into(),
        )),
    }
}
