//! The input metadata of spec §6: what one image must look like for the model (shape, and the
//! per-channel normalisation applied after pixels are scaled to [0, 1]). Parsed here, in the
//! format crate, so that the runtime, the trainer and any other reader agree on the schema.

use super::value::{self, Map, Value};
use crate::error::{Error, Result};

/// What one input image must look like, from the file's metadata (spec §6).
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Per channel, subtracted after scaling pixels to [0, 1].
    pub mean: Vec<f32>,
    /// Per channel, divided by after the mean.
    pub std: Vec<f32>,
}

impl InputSpec {
    pub fn from_metadata(meta: &Map) -> Result<InputSpec> {
        let bad = |what: String| Error::Model(format!("metadata: {what}"));
        let shape = value::get(meta, "input.shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("input.shape ([C, H, W]) is missing".into()))?;
        let dims: Vec<usize> = shape
            .iter()
            .map(|v| {
                v.as_int()
                    .filter(|&d| d > 0 && d <= 1 << 16)
                    .map(|d| d as usize)
            })
            .collect::<Option<_>>()
            .ok_or_else(|| bad("input.shape must be positive ints".into()))?;
        let [channels, height, width] = dims[..] else {
            return Err(bad(format!(
                "input.shape must be [C, H, W], found {} values",
                dims.len()
            )));
        };
        let floats = |key: &str, default: f32| -> Result<Vec<f32>> {
            match value::get(meta, key) {
                None => Ok(vec![default; channels]),
                Some(v) => {
                    let vals: Vec<f32> = v
                        .as_array()
                        .ok_or_else(|| bad(format!("{key} must be an array")))?
                        .iter()
                        .map(|x| x.as_float().map(|f| f as f32))
                        .collect::<Option<_>>()
                        .ok_or_else(|| bad(format!("{key} must hold numbers")))?;
                    match vals.len() {
                        1 => Ok(vec![vals[0]; channels]),
                        n if n == channels => Ok(vals),
                        n => Err(bad(format!("{key} has {n} values for {channels} channels"))),
                    }
                }
            }
        };
        let mean = floats("input.mean", 0.0)?;
        let std = floats("input.std", 1.0)?;
        if std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return Err(bad("input.std must be finite and nonzero".into()));
        }
        Ok(InputSpec {
            channels,
            height,
            width,
            mean,
            std,
        })
    }
}
