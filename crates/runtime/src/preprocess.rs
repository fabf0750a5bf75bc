//! Images to model inputs, exactly as the file's metadata says (spec §6.1): decode (PNG or
//! JPEG), convert to grey or RGB as Pillow does, resize each channel with the recorded filter,
//! crop the centre, order the channels, then apply the pixel arithmetic of §7.
//!
//! The steps up to the channel order give 8-bit pixels; data sets keep those and apply the
//! arithmetic per batch ([`normalise`]).

use super::model::InputSpec;
use crate::resize::Resampler;
use cxrm_format::container::input_spec::ChannelOrder;
use cxrm_format::error::{Error, Result};
use ndarray::Array3;
use std::path::Path;

pub use super::batch::normalise;

/// Pillow's RGB to grey ("L") conversion, ITU-R 601-2 luma in 16-bit fixed point:
/// `(299 R + 587 G + 114 B) / 1000`, rounded.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// The image's channels as planes of the model's colour mode: one grey plane, or R, G, B.
fn planes(img: &Decoded, channels: usize) -> Result<Vec<Vec<u8>>> {
    let img = match (channels, img) {
        (1, Decoded::Grey { pixels, .. }) => return Ok(vec![pixels.clone()]),
        (3, Decoded::Grey { pixels, .. }) => return Ok(vec![pixels.clone(); 3]),
        (_, Decoded::Grey { .. }) => {
            return Err(Error::Model(format!(
                "images can feed 1- or 3-channel models; this one takes {channels} channels"
            )));
        }
        (_, Decoded::Dynamic(img)) => img,
    };
    match (channels, img) {
        (1, image::DynamicImage::ImageLuma8(g)) => Ok(vec![g.as_raw().clone()]),
        (1, _) => Ok(vec![
            img.to_rgb8()
                .pixels()
                .map(|p| luma(p[0], p[1], p[2]))
                .collect(),
        ]),
        (3, _) => {
            let rgb = img.to_rgb8();
            Ok((0..3)
                .map(|c| rgb.as_raw().iter().skip(c).step_by(3).copied().collect())
                .collect())
        }
        (c, _) => Err(Error::Model(format!(
            "images can feed 1- or 3-channel models; this one takes {c} channels"
        ))),
    }
}

/// The start of a centre crop of `keep` out of `from`: half the difference, rounded half to
/// even, as torchvision's `CenterCrop` does.
fn crop_start(from: usize, keep: usize) -> usize {
    let d = from - keep;
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// A decoded image as the model's 8-bit input pixels, planar `[C, H, W]`.
pub fn pixels(img: &Decoded, spec: &InputSpec) -> Result<Vec<u8>> {
    let (src_w, src_h) = img.size();
    let [rh, rw] = spec.resized_size_for(src_w, src_h);
    // With input.resize_shorter the resized size follows the image's aspect ratio, so a
    // thin enough image would resize to a huge one: it is checked like any allocation.
    cxrm_format::budget::Budget::default().check(
        || format!("the image resized to {rw}x{rh} before its crop"),
        (rh as u64).saturating_mul(rw as u64).saturating_mul(2),
    )?;
    let (top, left) = (crop_start(rh, spec.height), crop_start(rw, spec.width));
    let mut planes = planes(img, spec.channels)?;
    if spec.channel_order == ChannelOrder::Bgr {
        planes.reverse();
    }
    let resampler = Resampler::for_input(spec);
    let mut out = Vec::with_capacity(spec.channels * spec.height * spec.width);
    for plane in planes {
        let resized = resampler.resize(&plane, src_w, src_h, 1, rw, rh);
        for row in resized.chunks_exact(rw).skip(top).take(spec.height) {
            out.extend_from_slice(&row[left..left + spec.width]);
        }
    }
    Ok(out)
}

/// Convert a decoded image to the model's input.
pub fn from_image(img: image::DynamicImage, spec: &InputSpec) -> Result<Array3<f32>> {
    Ok(normalise(&pixels(&Decoded::Dynamic(img), spec)?, spec))
}

/// Whether an encoded JPEG ends its last scan with an end-of-image marker. Decoders may fill
/// a truncated scan with grey without a word, so a cut file is caught before decoding.
/// Inside scan data a 0xFF byte is always followed by 0x00 or a restart marker, so the last
/// start-of-scan marker (FF DA) really is the last scan, and FF D9 after it is the real end.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    last_scan.is_some_and(|s| bytes[s..].windows(2).any(|w| w == [0xFF, 0xD9]))
}

/// A decoded image: 8-bit grey from a JPEG, or whatever the `image` crate decoded.
#[derive(Debug)]
pub enum Decoded {
    Grey {
        width: usize,
        height: usize,
        pixels: Vec<u8>,
    },
    Dynamic(image::DynamicImage),
}

impl Decoded {
    fn size(&self) -> (usize, usize) {
        match self {
            Decoded::Grey { width, height, .. } => (*width, *height),
            Decoded::Dynamic(img) => (img.width() as usize, img.height() as usize),
        }
    }
}

/// Decode a JPEG as Pillow does (libjpeg-turbo's ISLOW IDCT and fancy upsampling, through
/// its pure-Rust port), so models trained on Pillow-decoded images see the same pixels.
fn decode_jpeg(bytes: &[u8], shown: &str) -> Result<Decoded> {
    use libjpeg_turbo_rs::PixelFormat;
    let fail =
        |e: &dyn std::fmt::Display| Error::Usage(format!("{shown}: cannot decode image: {e}"));
    let info = libjpeg_turbo_rs::probe(bytes).map_err(|e| fail(&e))?;
    let need = (info.width as u64)
        .saturating_mul(info.height as u64)
        .saturating_mul(3);
    cxrm_format::budget::Budget::default().check(
        || format!("decoding {shown} ({}x{} pixels)", info.width, info.height),
        need,
    )?;
    let img = libjpeg_turbo_rs::decompress(bytes).map_err(|e| fail(&e))?;
    let (width, height) = (img.width, img.height);
    match img.pixel_format {
        PixelFormat::Grayscale => Ok(Decoded::Grey {
            width,
            height,
            pixels: img.data,
        }),
        PixelFormat::Rgb => image::RgbImage::from_raw(width as u32, height as u32, img.data)
            .map(|rgb| Decoded::Dynamic(image::DynamicImage::ImageRgb8(rgb)))
            .ok_or_else(|| fail(&"the decoder gave a buffer of the wrong size")),
        other => Err(fail(&format!(
            "{other:?} JPEGs (e.g. CMYK) are not supported"
        ))),
    }
}

/// Decode an encoded PNG or JPEG; a truncated JPEG is an error.
pub fn decode(bytes: &[u8], shown: &str) -> Result<Decoded> {
    let format = image::guess_format(bytes).map_err(|e| {
        Error::Usage(format!(
            "{shown}: cannot decode image (not PNG or JPEG: {e})"
        ))
    })?;
    if format == image::ImageFormat::Jpeg {
        if !jpeg_is_complete(bytes) {
            return Err(Error::Usage(format!(
                "{shown}: truncated JPEG (its scan data has no end-of-image marker)"
            )));
        }
        return decode_jpeg(bytes, shown);
    }
    image::load_from_memory_with_format(bytes, format)
        .map(Decoded::Dynamic)
        .map_err(|e| Error::Usage(format!("{shown}: cannot decode image: {e}")))
}

/// Load a PNG or JPEG file as the model's 8-bit input pixels.
pub fn load_pixels(path: &Path, spec: &InputSpec) -> Result<Vec<u8>> {
    let shown = cxrm_format::text::escape_path(path);
    // Only regular files: a FIFO named like an image would block the read forever.
    let bytes = cxrm_format::container::input::read_regular(path)?;
    pixels(&decode(&bytes, &shown)?, spec)
}

/// Load a PNG or JPEG file and convert it to the model's input.
pub fn load(path: &Path, spec: &InputSpec) -> Result<Array3<f32>> {
    Ok(normalise(&load_pixels(path, spec)?, spec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxrm_format::container::input_spec::ResizeFilter;

    fn spec(channels: usize) -> InputSpec {
        InputSpec {
            mean: vec![0.5; channels],
            std: vec![0.25; channels],
            ..InputSpec::new(channels, 4, 4)
        }
    }

    #[test]
    fn grey_and_rgb_images_are_resized_and_normalised() {
        let grey =
            image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(8, 8, image::Luma([255])));
        let x = from_image(grey, &spec(1)).unwrap();
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
        let x = from_image(rgb.clone(), &spec(3)).unwrap();
        assert_eq!(x.dim(), (3, 4, 4));
        assert!((x[[0, 0, 0]] + 2.0).abs() < 1e-6 && (x[[1, 3, 3]] - 2.0).abs() < 1e-6);
        assert!(from_image(rgb, &spec(2)).is_err());
    }

    #[test]
    fn colour_to_grey_is_pillows_luma() {
        // Pillow: Image.new("RGB", (1, 1), (200, 100, 50)).convert("L").getpixel((0, 0)) == 124
        let rgb = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            1,
            1,
            image::Rgb([200, 100, 50]),
        ));
        let s = InputSpec::new(1, 1, 1).pixels_only();
        assert_eq!(pixels(&Decoded::Dynamic(rgb), &s).unwrap(), [124]);
    }

    #[test]
    fn bgr_reverses_the_planes_and_the_crop_keeps_the_centre() {
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(5, 4, |x, y| {
            image::Rgb([(10 * y + x) as u8, 100, 200])
        }));
        let s = InputSpec {
            channel_order: ChannelOrder::Bgr,
            crop_from: Some([4, 5]),
            resize: ResizeFilter::Nearest,
            ..InputSpec::new(3, 2, 2)
        };
        let px = pixels(&Decoded::Dynamic(img), &s.pixels_only()).unwrap();
        // Rows 1..3 (start 1), columns from round_half_even(1.5) = 2: 12, 13, 22, 23.
        assert_eq!(px, [200, 200, 200, 200, 100, 100, 100, 100, 12, 13, 22, 23]);
        assert_eq!(crop_start(256, 224), 16);
        assert_eq!(crop_start(5, 2), 2);
        assert_eq!(crop_start(7, 2), 2);
    }

    #[test]
    fn truncated_jpegs_are_refused_and_whole_ones_decode() {
        let img = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(32, 32, |x, y| {
            image::Luma([(x * 7 + y) as u8])
        }));
        let mut jpeg = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        assert!(decode(&jpeg, "x.jpg").is_ok());
        for cut in [jpeg.len() - 2, jpeg.len() / 2] {
            let e = decode(&jpeg[..cut], "x.jpg").unwrap_err().to_string();
            assert!(e.contains("truncated"), "{e}");
        }
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
