//! Labelled image data for evaluation (and, later, training): IDX files (MNIST, Fashion-MNIST,
//! gzip'd or not) and class-per-folder image trees (the Kaggle chest X-ray layout).

#[cfg(feature = "image")]
pub mod folder;
pub mod idx;

use std::path::{Path, PathBuf};

/// Images as 8-bit pixels `[n, C, H, W]` with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub pixels: Vec<u8>,
    pub labels: Vec<usize>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.channels * self.height * self.width;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset {
            pixels: indices
                .iter()
                .flat_map(|&i| self.image(i).iter().copied())
                .collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
            ..*self
        }
    }
}

/// The `--data` values that are names, not paths: `mnist` and `fashion-mnist` (the full sets
/// when present, else the bundled subsets), and `bundled`, the MNIST subset the project ships
/// in `fixtures/data/mnist`, whatever else is present. Models record the name they were trained
/// on (`train.data`), so a name keeps files the same from one checkout to another.
pub const NAMED: [&str; 3] = ["mnist", "fashion-mnist", "bundled"];

pub fn is_named(spec: &str) -> bool {
    NAMED.contains(&spec)
}

/// Where a named data set lives: for `mnist` and `fashion-mnist` the shared full copy beside
/// the project if present, else the project's bundled subset; for `bundled`, the bundled
/// MNIST subset.
pub fn locate(name: &str) -> Option<PathBuf> {
    let roots = [
        PathBuf::from("."),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    ];
    let (full, subset) = match name {
        "bundled" => (None, "mnist"),
        _ => (Some(name), name),
    };
    for root in &roots {
        let full = full.map(|n| root.join("../shared/data").join(n));
        for candidate in full
            .into_iter()
            .chain([root.join("fixtures/data").join(subset)])
        {
            if candidate.join("t10k-labels-idx1-ubyte.gz").exists()
                || candidate.join("t10k-labels-idx1-ubyte").exists()
            {
                return Some(candidate);
            }
        }
    }
    None
}

pub fn class_names(name: &str) -> Vec<String> {
    let names: &[&str] = match name {
        "fashion-mnist" => &[
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        _ => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// The test split of a directory of IDX files (`t10k-*`).
pub fn idx_test_split(dir: &Path, classes: Vec<String>) -> crate::Result<Dataset> {
    idx::load_pair(
        &idx::find(dir, "t10k-images-idx3-ubyte")?,
        &idx::find(dir, "t10k-labels-idx1-ubyte")?,
        classes,
    )
}
