//! The `.keras` file itself: a zip holding `config.json` (the architecture) and
//! `model.weights.h5` (the variables, HDF5), read with the `zip` crate and the pure-Rust
//! `hdf5-reader`, every size bounded before it is read.
//!
//! Keras 3 does not name a layer's HDF5 group after the layer. It walks each container's
//! layers in `config.json` order and names each one `snake_case(class name)`, with a counter
//! per class from the second on (`conv2d`, `conv2d_1`, …), under `layers/`; a nested model's
//! layers sit under its own group, with counters restarting, and a `Sequential` container
//! skips its `InputLayer`. A layer's variables are the datasets `vars/0`, `vars/1`, … in the
//! order it created them. [`group_names`] computes those paths.

use cxrm_format::error::{Error, Result};
use std::io::Read;

/// The most bytes read from one zip entry: far above any CNN's weights, far below a zip
/// bomb's claims.
const MAX_ENTRY: u64 = 4 << 30;
/// The most bytes of `config.json`.
const MAX_CONFIG: u64 = 64 << 20;

/// A `.keras` file opened: its architecture and its weights.
pub struct Archive {
    pub config: serde_json::Value,
    pub weights: hdf5_reader::Hdf5File,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Usage(format!("not a Keras 3 model file: {what}"))
}

fn entry(
    zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    name: &str,
    max: u64,
) -> Result<Vec<u8>> {
    let mut file = zip
        .by_name(name)
        .map_err(|e| bad(format!("no {name} in the archive ({e})")))?;
    if file.size() > max {
        return Err(bad(format!(
            "{name} claims {} bytes, more than the {max} this importer reads",
            file.size()
        )));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(file.size() as usize)
        .map_err(|_| Error::Usage(format!("{name} does not fit in memory")))?;
    // `take` bounds the read whatever the header claimed.
    (&mut file)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("cannot read {name}: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(bad(format!("{name} is larger than {max} bytes")));
    }
    Ok(bytes)
}

impl Archive {
    pub fn open(bytes: &[u8]) -> Result<Archive> {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(bad)?;
        if zip.by_name("model.weights.json").is_ok() {
            return Err(Error::Usage(
                "sharded Keras weights (model.weights.json) are not supported; save the model \
                 without max_shard_size"
                    .into(),
            ));
        }
        let config = entry(&mut zip, "config.json", MAX_CONFIG)?;
        let config: serde_json::Value =
            serde_json::from_slice(&config).map_err(|e| bad(format!("config.json: {e}")))?;
        let h5 = entry(&mut zip, "model.weights.h5", MAX_ENTRY)?;
        // A dataset may claim any shape; what one read may allocate is bounded by the file's
        // own size (Keras stores weights uncompressed), with room for compressed chunks.
        let max_read = h5
            .len()
            .saturating_mul(64)
            .clamp(64 << 20, MAX_ENTRY as usize);
        let options = hdf5_reader::OpenOptions::default().with_max_read_bytes(max_read);
        let weights = hdf5_reader::Hdf5File::from_vec_with_options(h5, options)
            .map_err(|e| bad(format!("model.weights.h5: {e}")))?;
        Ok(Archive { config, weights })
    }

    /// The variables of the layer whose group is `path`, in order (`vars/0`, `vars/1`, …),
    /// each as its shape and row-major f32 values.
    pub fn variables(&self, path: &str, count: usize) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
        (0..count)
            .map(|i| {
                let name = format!("{path}/vars/{i}");
                let d = self
                    .weights
                    .dataset(&name)
                    .map_err(|e| bad(format!("model.weights.h5 has no variable {name} ({e})")))?;
                let shape: Vec<usize> = d.shape().iter().map(|&s| s as usize).collect();
                let values = d
                    .read_array::<f32>()
                    .map_err(|e| bad(format!("{name}: {e}")))?;
                let values: Vec<f32> = values.iter().copied().collect();
                Ok((shape, values))
            })
            .collect()
    }
}

/// Keras's `to_snake_case` for class names: `SeparableConv2D` → `separable_conv2d`,
/// `ReLU` → `re_lu`, `GlobalAveragePooling2D` → `global_average_pooling2d`.
pub fn snake_case(name: &str) -> String {
    let s: Vec<char> = name
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    // `(.)([A-Z][a-z]+)` → `\1_\2`, left to right without overlaps.
    let mut first = String::new();
    let mut i = 0;
    while i < s.len() {
        if s.get(i + 1).is_some_and(char::is_ascii_uppercase)
            && s.get(i + 2).is_some_and(char::is_ascii_lowercase)
        {
            first.push(s[i]);
            first.push('_');
            first.push(s[i + 1]);
            let mut j = i + 2;
            while s.get(j).is_some_and(char::is_ascii_lowercase) {
                first.push(s[j]);
                j += 1;
            }
            i = j;
        } else {
            first.push(s[i]);
            i += 1;
        }
    }
    // `([a-z])([A-Z])` → `\1_\2`.
    let t: Vec<char> = first.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < t.len() {
        if t[i].is_ascii_lowercase() && t.get(i + 1).is_some_and(char::is_ascii_uppercase) {
            out.push(t[i]);
            out.push('_');
            out.push(t[i + 1]);
            i += 2;
        } else {
            out.push(t[i]);
            i += 1;
        }
    }
    out.to_lowercase()
}

/// The HDF5 group of each layer of one container, in `config.json` order (`None` for a
/// `Sequential`'s `InputLayer`, which has none): `PREFIX/layers/NAME[_N]`.
pub fn group_names(prefix: &str, class_names: &[&str], sequential: bool) -> Vec<Option<String>> {
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    class_names
        .iter()
        .map(|class| {
            if sequential && *class == "InputLayer" {
                return None;
            }
            let base = snake_case(class);
            let n = seen.entry(base.clone()).or_insert(0);
            let name = if *n == 0 { base } else { format!("{base}_{n}") };
            *n += 1;
            let sep = if prefix.is_empty() { "" } else { "/" };
            Some(format!("{prefix}{sep}layers/{name}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_become_keras_group_names() {
        for (class, snake) in [
            ("SeparableConv2D", "separable_conv2d"),
            ("ReLU", "re_lu"),
            ("GlobalAveragePooling2D", "global_average_pooling2d"),
            ("BatchNormalization", "batch_normalization"),
            ("InputLayer", "input_layer"),
            ("DepthwiseConv2D", "depthwise_conv2d"),
            ("Conv2D", "conv2d"),
            ("Dense", "dense"),
            ("ZeroPadding2D", "zero_padding2d"),
            ("Functional", "functional"),
        ] {
            assert_eq!(snake_case(class), snake, "{class}");
        }
        let groups = group_names("", &["InputLayer", "Conv2D", "Conv2D", "ReLU"], false);
        assert_eq!(
            groups,
            [
                Some("layers/input_layer".to_string()),
                Some("layers/conv2d".into()),
                Some("layers/conv2d_1".into()),
                Some("layers/re_lu".into())
            ]
        );
        let nested = group_names("layers/sequential", &["InputLayer", "Conv2D"], true);
        assert_eq!(
            nested,
            [None, Some("layers/sequential/layers/conv2d".into())]
        );
    }
}
