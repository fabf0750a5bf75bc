//! Where a `--data` value points: one resolver for every command that reads labelled data.
//!
//! A value is either a name the project knows (`mnist`, `fashion-mnist`, `bundled`) or a path.
//! Names are looked up, in order, in the directories of `$CXRM_DATA` (a path list), in
//! `shared/data/` inside the working directory or any directory above it (the full data sets
//! kept beside a checkout), and last in the project's bundled subsets, `fixtures/data/`, found
//! the same way. Models record the name they were trained on, so a name keeps files the same
//! from one checkout to another.

use super::{BadImages, Dataset, Loaded, idx};
use crate::Model;
use cxrm_format::{Error, Result};
use std::path::{Path, PathBuf};

/// The `--data` values that are names, not paths.
pub const NAMED: [&str; 3] = ["mnist", "fashion-mnist", "bundled"];

/// A resolved `--data` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The value as given: a name, or the path as written.
    pub spec: String,
    /// The directory it resolved to.
    pub dir: PathBuf,
    /// How the directory stores its images.
    pub layout: Layout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// IDX files (`train-*`, `t10k-*`, gzip'd or not), as MNIST ships.
    Idx,
    /// A class-per-folder image tree (`ROOT/CLASS/*.png|jpg`, or Kaggle's `train/`, `test/`).
    Folders,
}

impl Source {
    /// Resolve `spec`: a known name, a directory of IDX files, or an image tree.
    pub fn parse(spec: &str) -> Result<Source> {
        let dir = if is_named(spec) {
            locate(spec).ok_or_else(|| {
                Error::Usage(format!(
                    "no {spec} data found (looked in $CXRM_DATA, shared/data and fixtures/data \
                     in this directory and those above it)"
                ))
            })?
        } else {
            PathBuf::from(spec)
        };
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "--data {}: not mnist, fashion-mnist, bundled or a directory",
                cxrm_format::text::escape(spec)
            )));
        }
        let has_idx = idx::find(&dir, "t10k-labels-idx1-ubyte").is_ok()
            || idx::find(&dir, "train-labels-idx1-ubyte").is_ok();
        Ok(Source {
            spec: spec.to_string(),
            layout: if has_idx {
                Layout::Idx
            } else {
                Layout::Folders
            },
            dir,
        })
    }

    /// Whether the value was one of the [`NAMED`] data sets.
    pub fn is_named(&self) -> bool {
        is_named(&self.spec)
    }

    /// Class names for IDX data: the real ones for a named set, else the digits 0–9.
    pub fn idx_classes(&self) -> Vec<String> {
        class_names(if self.is_named() { &self.spec } else { "mnist" })
    }

    /// The IDX test split (`t10k-*`), labelled with `classes`.
    pub fn idx_test(&self, classes: Vec<String>) -> Result<Dataset> {
        idx_test_split(&self.dir, classes)
    }

    /// The split to evaluate `model` on: the IDX test split, labelled with the named set's
    /// classes or else the model's own; or an image tree's test split, converted to the
    /// model's input size.
    /// Images that cannot be decoded fail the load, or are skipped, as `bad` says.
    pub fn test_set(&self, model: &Model<'_>, bad: BadImages) -> Result<Loaded> {
        let all = |data| Loaded {
            data,
            skipped: Vec::new(),
        };
        match self.layout {
            Layout::Idx if self.is_named() => self.idx_test(self.idx_classes()).map(all),
            Layout::Idx => self.idx_test(model.class_names()).map(all),
            #[cfg(feature = "image")]
            Layout::Folders => {
                let classes = (!model.classes.is_empty()).then_some(&model.classes[..]);
                super::folder::load(
                    &super::folder::eval_split(&self.dir),
                    &model.input,
                    classes,
                    bad,
                )
            }
            #[cfg(not(feature = "image"))]
            Layout::Folders => {
                let _ = bad;
                Err(Error::Usage(format!(
                    "--data {}: image folders need the `image` feature",
                    cxrm_format::text::escape(&self.spec)
                )))
            }
        }
    }

    /// The IDX training split (`train-*`), labelled with `classes`.
    pub fn idx_train(&self, classes: Vec<String>) -> Result<Dataset> {
        idx::load_pair(
            &idx::find(&self.dir, "train-images-idx3-ubyte")?,
            &idx::find(&self.dir, "train-labels-idx1-ubyte")?,
            classes,
        )
    }
}

pub fn is_named(spec: &str) -> bool {
    NAMED.contains(&spec)
}

/// The directories searched for a named set, most specific first.
fn search_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::env::var_os("CXRM_DATA")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    if let Ok(cwd) = std::env::current_dir() {
        let ancestors: Vec<&Path> = cwd.ancestors().collect();
        roots.extend(ancestors.iter().map(|a| a.join("shared/data")));
        roots.extend(ancestors.iter().map(|a| a.join("fixtures/data")));
    }
    roots
}

/// Where a named data set lives: for `mnist` and `fashion-mnist` the full copy if one is
/// found, else the bundled subset; for `bundled`, the bundled MNIST subset only.
pub fn locate(name: &str) -> Option<PathBuf> {
    let (full, subset) = match name {
        "bundled" => (None, "mnist"),
        _ => (Some(name), name),
    };
    let has_test_split = |d: &Path| {
        d.join("t10k-labels-idx1-ubyte.gz").exists() || d.join("t10k-labels-idx1-ubyte").exists()
    };
    let roots = search_roots();
    let bundled = |r: &&PathBuf| r.ends_with("fixtures/data");
    let full_copy = full.and_then(|n| {
        roots
            .iter()
            .filter(|r| !bundled(r))
            .map(|r| r.join(n))
            .find(|d| has_test_split(d))
    });
    full_copy.or_else(|| {
        roots
            .iter()
            .filter(bundled)
            .map(|r| r.join(subset))
            .find(|d| has_test_split(d))
    })
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
pub fn idx_test_split(dir: &Path, classes: Vec<String>) -> Result<Dataset> {
    idx::load_pair(
        &idx::find(dir, "t10k-images-idx3-ubyte")?,
        &idx::find(dir, "t10k-labels-idx1-ubyte")?,
        classes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_from_inside_the_workspace_and_paths_must_exist() {
        // Unit tests run in the crate's folder; the bundled subset is two levels up.
        let s = Source::parse("bundled").unwrap();
        assert_eq!(s.layout, Layout::Idx);
        assert!(s.dir.ends_with("fixtures/data/mnist"));
        assert_eq!(s.idx_classes()[9], "9");
        let missing = Source::parse("no/such/dir").unwrap_err();
        assert!(missing.to_string().contains("not mnist"), "{missing}");
    }
}
