//! Images to model inputs, exactly as the file's metadata says: decode (PNG or JPEG), convert
//! to grey or RGB for the recorded channel count, resize to the recorded size, scale to [0, 1],
//! then subtract the mean and divide by the std per channel.

use super::model::InputSpec;
use cxrm_format::error::{Error, Result};
use image::imageops::FilterType;
use ndarray::Array3;
use std::path::Path;

pub use super::batch::normalise;

/// Convert a decoded image to the model's input.
pub fn from_image(img: &image::DynamicImage, spec: &InputSpec) -> Result<Array3<f32>> {
    let (w, h) = (spec.width as u32, spec.height as u32);
    let pixels: Vec<u8> = match spec.channels {
        1 => image::imageops::resize(&img.to_luma8(), w, h, FilterType::Triangle).into_raw(),
        3 => {
            let rgb = image::imageops::resize(&img.to_rgb8(), w, h, FilterType::Triangle);
            // Interleaved RGB to planar.
            let raw = rgb.into_raw();
            (0..3)
                .flat_map(|c| raw.iter().skip(c).step_by(3).copied().collect::<Vec<_>>())
                .collect()
        }
        c => {
            return Err(Error::Model(format!(
                "images can feed 1- or 3-channel models; this one takes {c} channels"
            )));
        }
    };
    Ok(normalise(&pixels, spec))
}

/// Load a PNG or JPEG file and convert it to the model's input.
pub fn load(path: &Path, spec: &InputSpec) -> Result<Array3<f32>> {
    let shown = cxrm_format::text::escape_path(path);
    // Only regular files: a FIFO named like an image would block the read forever.
    let file = cxrm_format::container::input::open_regular(path)?;
    let img = image::ImageReader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| Error::io(format!("cannot read {shown}"), e))?
        .decode()
        .map_err(|e| Error::Usage(format!("{shown}: cannot decode image: {e}")))?;
    from_image(&img, spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(channels: usize) -> InputSpec {
        InputSpec {
            channels,
            height: 4,
            width: 4,
            mean: vec![0.5; channels],
            std: vec![0.25; channels],
        }
    }

    #[test]
    fn grey_and_rgb_images_are_resized_and_normalised() {
        let grey =
            image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(8, 8, image::Luma([255])));
        let x = from_image(&grey, &spec(1)).unwrap();
        assert_eq!(x.dim(), (1, 4, 4));
        assert!(
            x.iter().all(|&v| (v - 2.0).abs() < 1e-6),
            "(1 - 0.5) / 0.25 = 2"
        );
        let rgb = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            2,
            2,
            image::Rgb([0, 255, 0]),
        ));
        let x = from_image(&rgb, &spec(3)).unwrap();
        assert_eq!(x.dim(), (3, 4, 4));
        assert!((x[[0, 0, 0]] + 2.0).abs() < 1e-6 && (x[[1, 3, 3]] - 2.0).abs() < 1e-6);
        assert!(from_image(&rgb, &spec(2)).is_err());
    }

    #[test]
    fn undecodable_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.png");
        std::fs::write(&p, b"not an image").unwrap();
        assert!(load(&p, &spec(1)).is_err());
        assert!(load(&dir.path().join("missing.png"), &spec(1)).is_err());
    }
}
