//! Labelled image data for evaluation (and, later, training): IDX files (MNIST, Fashion-MNIST,
//! gzip'd or not) and class-per-folder image trees (the Kaggle chest X-ray layout).

#[cfg(feature = "image")]
pub mod folder;
pub mod idx;
pub mod source;

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

/// What to do with an image that cannot be decoded, or is truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadImages {
    /// Stop with an error naming the file.
    #[default]
    Fail,
    /// Leave it out, and report it in [`Loaded::skipped`].
    Skip,
}

/// An image tree loaded as a data set, with the files that were left out and why.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub data: Dataset,
    pub skipped: Vec<(std::path::PathBuf, String)>,
}

pub use source::{Layout, NAMED, Source, class_names, idx_test_split, is_named, locate};
