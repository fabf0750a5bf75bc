//! Class-per-folder image trees: `ROOT/CLASS/*.{png,jpg,jpeg}`. The Kaggle chest X-ray layout
//! (`train/ test/ val/`, each with `NORMAL/` and `PNEUMONIA/`) is such a tree per split.

use super::Dataset;
use crate::InputSpec;
use cxrm_format::error::{Error, Result};
use std::path::{Path, PathBuf};

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// The split to evaluate on: `ROOT/test` when `ROOT` is a Kaggle-style tree, else `ROOT`.
pub fn eval_split(root: &Path) -> PathBuf {
    ["test", "val"]
        .iter()
        .map(|s| root.join(s))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| root.to_path_buf())
}

/// Image files with their labels, and the class names (folder names, sorted).
pub type Listing = (Vec<(PathBuf, usize)>, Vec<String>);

/// The image files and label of each, with class names from the folder names (sorted).
pub fn list(root: &Path) -> Result<Listing> {
    let classes: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(Error::Usage(format!(
            "{} has no class folders",
            root.display()
        )));
    }
    let mut items = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        for f in sorted_entries(dir)?.into_iter().filter(|p| is_image(p)) {
            items.push((f, label));
        }
    }
    let names = classes
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    Ok((items, names))
}

/// Load every image, converted to the model's input size and channels as 8-bit pixels.
pub fn load(root: &Path, spec: &InputSpec) -> Result<Dataset> {
    let (items, classes) = list(root)?;
    let mut pixels = Vec::with_capacity(items.len() * spec.channels * spec.height * spec.width);
    let mut labels = Vec::with_capacity(items.len());
    let raw_spec = InputSpec {
        mean: vec![0.0; spec.channels],
        std: vec![1.0; spec.channels],
        ..spec.clone()
    };
    for (path, label) in items {
        // Reuse the runtime's conversion with an identity normalisation, back to bytes.
        let x = crate::preprocess::load(&path, &raw_spec)?;
        pixels.extend(
            x.iter()
                .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8),
        );
        labels.push(label);
    }
    Ok(Dataset {
        pixels,
        labels,
        channels: spec.channels,
        height: spec.height,
        width: spec.width,
        classes,
    })
}
