//! Class-per-folder image trees: `ROOT/CLASS/*.{png,jpg,jpeg}`. The Kaggle chest X-ray layout
//! (`train/ test/ val/`, each with `NORMAL/` and `PNEUMONIA/`) is such a tree per split.
//!
//! Folders are matched to a model's classes by name (`model.classes`), ignoring case, so that
//! `normal/` and `PNEUMONIA/` label a NORMAL/PNEUMONIA model correctly whatever order the folder
//! names sort in. Without class names, the sorted folder names are the classes.

use super::{BadImages, Dataset, Loaded};
use crate::InputSpec;
use cxrm_format::error::{Error, Result};
use cxrm_format::text::escape_path;
use std::path::{Path, PathBuf};

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot list {}", escape_path(dir)), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

fn folder_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The split to evaluate on: `ROOT/test` when `ROOT` is a Kaggle-style tree, else `ROOT`.
pub fn eval_split(root: &Path) -> PathBuf {
    ["test", "val"]
        .iter()
        .map(|s| root.join(s))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| root.to_path_buf())
}

/// Image files with their labels, and the class names.
pub type Listing = (Vec<(PathBuf, usize)>, Vec<String>);

/// The image files and the label of each. With `classes` (a model's `model.classes`), each
/// folder is labelled with the class of its name, compared ignoring case, and a folder that
/// names no class is an error; without, the sorted folder names are the classes.
pub fn list(root: &Path, classes: Option<&[String]>) -> Result<Listing> {
    let folders: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if folders.is_empty() {
        return Err(Error::Usage(format!(
            "{} has no class folders",
            escape_path(root)
        )));
    }
    let names: Vec<String> = match classes {
        Some(c) => c.to_vec(),
        None => folders.iter().map(|p| folder_name(p)).collect(),
    };
    let mut items = Vec::new();
    for dir in &folders {
        let name = folder_name(dir);
        let label = names
            .iter()
            .position(|c| c.to_lowercase() == name.to_lowercase())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "folder {} matches none of the model's classes ({}); rename it, or remove it",
                    escape_path(dir),
                    names
                        .iter()
                        .map(|c| cxrm_format::text::escape(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        for f in sorted_entries(dir)?.into_iter().filter(|p| is_image(p)) {
            items.push((f, label));
        }
    }
    Ok((items, names))
}

/// Load every image as the model's 8-bit input pixels (resized, cropped and ordered as `spec`
/// says; the pixel arithmetic comes later, per batch).
pub fn load(
    root: &Path,
    spec: &InputSpec,
    classes: Option<&[String]>,
    bad: BadImages,
) -> Result<Loaded> {
    let (items, classes) = list(root, classes)?;
    let per_image = spec.channels * spec.height * spec.width;
    let mut pixels = Vec::new();
    pixels
        .try_reserve_exact(items.len().saturating_mul(per_image))
        .map_err(|_| Error::Usage(format!("{} images do not fit in memory", items.len())))?;
    let mut labels = Vec::with_capacity(items.len());
    let mut skipped = Vec::new();
    for (path, label) in items {
        match crate::preprocess::load_pixels(&path, spec) {
            Ok(px) => {
                pixels.extend_from_slice(&px);
                labels.push(label);
            }
            Err(e) if bad == BadImages::Skip => skipped.push((path, e.to_string())),
            Err(e) => return Err(e),
        }
    }
    let data = Dataset {
        pixels,
        labels,
        channels: spec.channels,
        height: spec.height,
        width: spec.width,
        classes,
    };
    Ok(Loaded { data, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(folders: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in folders {
            let d = dir.path().join(f);
            std::fs::create_dir(&d).unwrap();
            image::GrayImage::from_pixel(4, 4, image::Luma([9]))
                .save(d.join("a.png"))
                .unwrap();
        }
        dir
    }

    #[test]
    fn folders_take_the_models_class_order_ignoring_case() {
        let dir = tree(&["normal", "PNEUMONIA"]);
        let classes = ["NORMAL".to_string(), "PNEUMONIA".to_string()];
        let (items, names) = list(dir.path(), Some(&classes)).unwrap();
        let labels: Vec<usize> = items.iter().map(|(_, l)| *l).collect();
        // Sorted, `PNEUMONIA` comes before `normal`; labels follow the names, not the sort.
        assert_eq!(labels, [1, 0]);
        assert_eq!(names, classes);
        let (_, sorted) = list(dir.path(), None).unwrap();
        assert_eq!(sorted, ["PNEUMONIA", "normal"]);
    }

    #[test]
    fn a_folder_matching_no_class_is_refused() {
        let dir = tree(&["NORMAL", "covid"]);
        let classes = ["NORMAL".to_string(), "PNEUMONIA".to_string()];
        let e = list(dir.path(), Some(&classes)).unwrap_err().to_string();
        assert!(e.contains("covid") && e.contains("PNEUMONIA"), "{e}");
    }

    #[test]
    fn truncated_images_fail_or_are_skipped_as_asked() {
        let dir = tree(&["a"]);
        let mut jpeg = Vec::new();
        image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(64, 64, |x, y| {
            image::Luma([(x * 3 + y * 5) as u8])
        }))
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        let cut = dir.path().join("a").join("cut.jpg");
        std::fs::write(&cut, &jpeg[..jpeg.len() * 2 / 3]).unwrap();
        let spec = InputSpec::new(1, 4, 4);
        let e = load(dir.path(), &spec, None, BadImages::Fail)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut.jpg") && e.contains("truncated"), "{e}");
        let loaded = load(dir.path(), &spec, None, BadImages::Skip).unwrap();
        assert_eq!(loaded.data.len(), 1);
        assert_eq!(loaded.skipped.len(), 1);
        assert!(loaded.skipped[0].1.contains("truncated"));
    }
}
