//! The IDX format of MNIST and Fashion-MNIST: a big-endian header (magic, dimension sizes),
//! then unsigned bytes. Files may be gzip'd.

use super::Dataset;
use cxrm_format::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// `stem` or `stem.gz` in `dir`.
pub fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(Error::Usage(format!(
        "{} has no {stem}[.gz]",
        dir.display()
    )))
}

fn read_all(path: &Path) -> Result<Vec<u8>> {
    let raw = cxrm_format::container::input::read_regular(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::io(format!("cannot gunzip {}", path.display()), e))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parse an IDX file of unsigned bytes: returns its dimensions and data.
pub fn parse(bytes: &[u8], what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let bad = |m: String| Error::Usage(format!("{what}: not an IDX file of bytes: {m}"));
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(bad("magic must be 00 00 08 NDIM".into()));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        return Err(bad("header cut short".into()));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("size overflows".into()))?;
    if bytes.len() - header != count {
        return Err(bad(format!(
            "dimensions {dims:?} need {count} bytes, found {}",
            bytes.len() - header
        )));
    }
    Ok((dims, bytes[header..].to_vec()))
}

pub fn load_pair(images: &Path, labels_path: &Path, classes: Vec<String>) -> Result<Dataset> {
    let (idims, pixels) = parse(&read_all(images)?, &images.display().to_string())?;
    let (ldims, labels_raw) = parse(&read_all(labels_path)?, &labels_path.display().to_string())?;
    let [n, h, w] = idims[..] else {
        return Err(Error::Usage(format!(
            "{}: images must be N×H×W",
            images.display()
        )));
    };
    if h == 0 || w == 0 {
        return Err(Error::Usage(format!(
            "{}: images of {h}×{w} pixels hold nothing to classify",
            images.display()
        )));
    }
    if ldims != [n] {
        return Err(Error::Usage(format!(
            "{} has {:?} labels for {n} images",
            labels_path.display(),
            ldims
        )));
    }
    let labels: Vec<usize> = labels_raw.iter().map(|&l| l as usize).collect();
    if let Some(&l) = labels.iter().find(|&&l| l >= classes.len()) {
        return Err(Error::Usage(format!(
            "{}: label {l} for {} classes",
            labels_path.display(),
            classes.len()
        )));
    }
    Ok(Dataset {
        pixels,
        labels,
        channels: 1,
        height: h,
        width: w,
        classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let mut f = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        f.extend([1, 2, 3, 4]);
        let (dims, data) = parse(&f, "t").unwrap();
        assert_eq!(dims, vec![2, 1, 2]);
        assert_eq!(data, vec![1, 2, 3, 4]);
        assert!(parse(&f[..f.len() - 1], "t").is_err());
        assert!(parse(&[0, 0, 9, 1], "t").is_err());
        let huge = [0, 0, 8, 2, 255, 255, 255, 255, 255, 255, 255, 255];
        assert!(parse(&huge, "t").is_err());
    }
}
