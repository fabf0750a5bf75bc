//! The input metadata of spec §6: what one image must look like for the model, and every step
//! that turns a decoded image into it (colour, channel order, resize filter, centre crop, pixel
//! arithmetic). Parsed here, in the format crate, so that the runtime, the trainer, the
//! importers and any other reader agree on the schema. Files written before these keys existed
//! read with their defaults, which are what those files always meant.

use super::value::{self, Map, Value};
use crate::error::{Error, Result};

/// How an image is resized to the model's input size (`input.resize`, spec §6.1). Each filter
/// is Pillow's, pixel for pixel, because the frameworks' image loaders resize through Pillow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeFilter {
    /// `Image.NEAREST`: each output pixel copies one source pixel.
    Nearest,
    /// `Image.BILINEAR`: a triangle filter, widened when shrinking (antialiased).
    #[default]
    Bilinear,
    /// `Image.BOX`: the mean of the source pixels each output pixel covers.
    Box,
}

impl ResizeFilter {
    pub const ALL: [ResizeFilter; 3] = [Self::Nearest, Self::Bilinear, Self::Box];

    pub fn name(self) -> &'static str {
        match self {
            Self::Nearest => "nearest",
            Self::Bilinear => "bilinear",
            Self::Box => "box",
        }
    }

    pub fn from_name(name: &str) -> Option<ResizeFilter> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Which Pillow releases' order of the two bilinear/box passes to follow
/// (`input.resize_version`, spec §6.2). Each pass rounds to 8 bits, so the order shows in the
/// pixels; releases agree on everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassOrder {
    /// Pillow 10.0 to 12.1: the horizontal pass first, always.
    Pillow10,
    /// Pillow 12.2 and 12.3: vertical first when `h > 100 w` and the height shrinks.
    Pillow12_2,
    /// Pillow 13.0 and later: vertical first when `h − H > 0` and `h − H > 2 (w − W)`.
    #[default]
    Pillow13,
}

impl PassOrder {
    pub const ALL: [PassOrder; 3] = [Self::Pillow10, Self::Pillow12_2, Self::Pillow13];

    pub fn name(self) -> &'static str {
        match self {
            Self::Pillow10 => "10",
            Self::Pillow12_2 => "12.2",
            Self::Pillow13 => "13",
        }
    }

    pub fn from_name(name: &str) -> Option<PassOrder> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// The order of a 3-channel model's input planes (`input.channel_order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelOrder {
    #[default]
    Rgb,
    /// Caffe- and OpenCV-trained models.
    Bgr,
}

impl ChannelOrder {
    pub fn name(self) -> &'static str {
        match self {
            Self::Rgb => "rgb",
            Self::Bgr => "bgr",
        }
    }

    pub fn from_name(name: &str) -> Option<ChannelOrder> {
        [Self::Rgb, Self::Bgr]
            .into_iter()
            .find(|o| o.name() == name)
    }
}

/// What one input image must look like, from the file's metadata (spec §6).
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `input.resize`.
    pub resize: ResizeFilter,
    /// `input.resize_version`.
    pub pass_order: PassOrder,
    /// `input.channel_order` (3-channel models only).
    pub channel_order: ChannelOrder,
    /// `input.crop_from`: resize to this `[H', W']` first, then keep the centre `[H, W]`.
    pub crop_from: Option<[usize; 2]>,
    /// `input.resize_shorter`: resize so that the shorter side is this long, keeping the
    /// aspect ratio (torchvision's `Resize(S)`), then keep the centre `[H, W]`.
    pub resize_shorter: Option<usize>,
    /// `input.scale`, per channel: a pixel is multiplied by it. `None` divides by 255, the
    /// meaning of files written before the key existed.
    pub scale: Option<Vec<f32>>,
    /// `input.offset`, per channel: added after the scale.
    pub offset: Vec<f32>,
    /// `input.mean`, per channel: subtracted after the offset.
    pub mean: Vec<f32>,
    /// `input.std`, per channel: divided by last.
    pub std: Vec<f32>,
}

/// The preprocessing keys that format 1.3 added; a file using any is written as 1.3.
pub const KEYS_SINCE_1_3: [&str; 7] = [
    "input.resize",
    "input.resize_shorter",
    "input.resize_version",
    "input.crop_from",
    "input.channel_order",
    "input.scale",
    "input.offset",
];

/// The largest input side, and the largest `crop_from` side.
const MAX_SIDE: i64 = 1 << 16;

impl InputSpec {
    /// A `[channels, height, width]` input with every preprocessing key at its default:
    /// bilinear resize, RGB, no crop, pixels divided by 255.
    pub fn new(channels: usize, height: usize, width: usize) -> InputSpec {
        InputSpec {
            channels,
            height,
            width,
            resize: ResizeFilter::default(),
            pass_order: PassOrder::default(),
            channel_order: ChannelOrder::default(),
            crop_from: None,
            resize_shorter: None,
            scale: None,
            offset: vec![0.0; channels],
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// The same input with the pixel arithmetic removed (scale 1, no offset, mean 0, std 1):
    /// what a loader uses to keep 8-bit pixels.
    pub fn pixels_only(&self) -> InputSpec {
        InputSpec {
            scale: Some(vec![1.0; self.channels]),
            offset: vec![0.0; self.channels],
            mean: vec![0.0; self.channels],
            std: vec![1.0; self.channels],
            ..self.clone()
        }
    }

    /// The size `[H', W']` a `width` × `height` image is resized to before the crop (spec
    /// §6.1 step 2). With `input.resize_shorter` S the shorter side becomes S and the longer
    /// `trunc(S × long / short)`, the quotient rounded once from the exact product (as
    /// torchvision's `Resize(S)` computes it in Python).
    pub fn resized_size_for(&self, width: usize, height: usize) -> [usize; 2] {
        match self.resize_shorter {
            Some(s) => {
                let (short, long) = (width.min(height).max(1), width.max(height));
                let long_side = ((s as u64 * long as u64) as f64 / short as f64) as usize;
                if width <= height {
                    [long_side, s]
                } else {
                    [s, long_side]
                }
            }
            None => self.crop_from.unwrap_or([self.height, self.width]),
        }
    }

    /// The resize size when it does not depend on the image (no `input.resize_shorter`).
    pub fn fixed_resized_size(&self) -> Option<[usize; 2]> {
        self.resize_shorter
            .is_none()
            .then(|| self.crop_from.unwrap_or([self.height, self.width]))
    }

    /// One 8-bit pixel value `p` of channel `c`, as the model sees it (spec §7, "Input
    /// scaling"): every step rounded to binary32, in this order, with no fused multiply–add.
    #[inline]
    pub fn scale_pixel(&self, c: usize, p: u8) -> f32 {
        let p = p as f32;
        let a = match &self.scale {
            None => p / 255.0,
            Some(s) => p * s[c],
        };
        (a + self.offset[c] - self.mean[c]) / self.std[c]
    }

    pub fn from_metadata(meta: &Map) -> Result<InputSpec> {
        let shape = value::get(meta, "input.shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("input.shape ([C, H, W]) is missing".into()))?;
        let [channels, height, width] = sizes("input.shape", shape, 3)?[..] else {
            unreachable!("sizes checks the count")
        };
        let mut spec = InputSpec::new(channels, height, width);
        if let Some(v) = value::get(meta, "input.resize") {
            let name = v
                .as_str()
                .ok_or_else(|| bad("input.resize must be a string".into()))?;
            spec.resize = ResizeFilter::from_name(name).ok_or_else(|| {
                bad(format!(
                    "input.resize {}: expected nearest, bilinear or box",
                    crate::text::escape(name)
                ))
            })?;
        }
        if let Some(v) = value::get(meta, "input.resize_version") {
            let name = v
                .as_str()
                .ok_or_else(|| bad("input.resize_version must be a string".into()))?;
            spec.pass_order = PassOrder::from_name(name).ok_or_else(|| {
                bad(format!(
                    "input.resize_version {}: expected \"10\", \"12.2\" or \"13\"",
                    crate::text::escape(name)
                ))
            })?;
        }
        if let Some(v) = value::get(meta, "input.channel_order") {
            let name = v
                .as_str()
                .ok_or_else(|| bad("input.channel_order must be a string".into()))?;
            spec.channel_order = ChannelOrder::from_name(name).ok_or_else(|| {
                bad(format!(
                    "input.channel_order {}: expected rgb or bgr",
                    crate::text::escape(name)
                ))
            })?;
            if channels != 3 {
                return Err(bad(format!(
                    "input.channel_order is for 3-channel inputs; this one has {channels}"
                )));
            }
        }
        if let Some(v) = value::get(meta, "input.crop_from") {
            let dims = v
                .as_array()
                .ok_or_else(|| bad("input.crop_from must be an array".into()))?;
            let [h, w] = sizes("input.crop_from", dims, 2)?[..] else {
                unreachable!("sizes checks the count")
            };
            if h < height || w < width {
                return Err(bad(format!(
                    "input.crop_from [{h}, {w}] is smaller than the input [{height}, {width}]"
                )));
            }
            spec.crop_from = Some([h, w]);
        }
        if let Some(v) = value::get(meta, "input.resize_shorter") {
            let side = v
                .as_int()
                .filter(|&d| (1..=MAX_SIDE).contains(&d))
                .ok_or_else(|| {
                    bad(format!(
                        "input.resize_shorter must be an int from 1 to {MAX_SIDE}"
                    ))
                })? as usize;
            if side < height.max(width) {
                return Err(bad(format!(
                    "input.resize_shorter {side} is smaller than the input [{height}, {width}]"
                )));
            }
            if spec.crop_from.is_some() {
                return Err(bad(
                    "input.resize_shorter and input.crop_from both say how to resize; give one"
                        .into(),
                ));
            }
            spec.resize_shorter = Some(side);
        }
        let floats = |key: &str| per_channel(meta, key, channels);
        if let Some(scale) = floats("input.scale")? {
            spec.scale = Some(scale);
        }
        if let Some(offset) = floats("input.offset")? {
            spec.offset = offset;
        }
        if let Some(mean) = floats("input.mean")? {
            spec.mean = mean;
        }
        if let Some(std) = floats("input.std")? {
            spec.std = std;
        }
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !finite(&spec.offset) || !finite(&spec.mean) || !spec.scale.as_deref().is_none_or(finite)
        {
            return Err(bad(
                "input.scale, input.offset and input.mean must be finite".into(),
            ));
        }
        if spec.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return Err(bad("input.std must be finite and nonzero".into()));
        }
        Ok(spec)
    }

    /// The metadata entries that describe this input. Keys at their default are left out, so a
    /// file that needs none of the newer keys stays readable as before.
    pub fn to_metadata(&self) -> Map {
        let floats = |v: &[f32]| Value::floats(v.iter().map(|&x| x as f64));
        let mut map: Map = vec![(
            "input.shape".into(),
            Value::ints([self.channels as i64, self.height as i64, self.width as i64]),
        )];
        if self.resize != ResizeFilter::default() {
            map.push((
                "input.resize".into(),
                Value::String(self.resize.name().into()),
            ));
        }
        if self.pass_order != PassOrder::default() {
            map.push((
                "input.resize_version".into(),
                Value::String(self.pass_order.name().into()),
            ));
        }
        if self.channel_order != ChannelOrder::default() {
            map.push((
                "input.channel_order".into(),
                Value::String(self.channel_order.name().into()),
            ));
        }
        if let Some([h, w]) = self.crop_from {
            map.push(("input.crop_from".into(), Value::ints([h as i64, w as i64])));
        }
        if let Some(side) = self.resize_shorter {
            map.push(("input.resize_shorter".into(), Value::Int(side as i64)));
        }
        if let Some(scale) = &self.scale {
            map.push(("input.scale".into(), floats(scale)));
        }
        if self.offset.iter().any(|&x| x != 0.0) {
            map.push(("input.offset".into(), floats(&self.offset)));
        }
        map.push(("input.mean".into(), floats(&self.mean)));
        map.push(("input.std".into(), floats(&self.std)));
        map
    }
}

fn bad(what: String) -> Error {
    Error::Model(format!("metadata: {what}"))
}

/// `count` sizes from 1 to 2^16.
fn sizes(key: &str, values: &[Value], count: usize) -> Result<Vec<usize>> {
    let dims: Vec<usize> = values
        .iter()
        .map(|v| {
            v.as_int()
                .filter(|&d| d > 0 && d <= MAX_SIDE)
                .map(|d| d as usize)
        })
        .collect::<Option<_>>()
        .ok_or_else(|| bad(format!("{key} must hold ints from 1 to {MAX_SIDE}")))?;
    if dims.len() != count {
        return Err(bad(format!(
            "{key} must hold {count} values, found {}",
            dims.len()
        )));
    }
    Ok(dims)
}

/// A per-channel float key: one value for every channel, or one per channel.
fn per_channel(meta: &Map, key: &str, channels: usize) -> Result<Option<Vec<f32>>> {
    let Some(v) = value::get(meta, key) else {
        return Ok(None);
    };
    let vals: Vec<f32> = v
        .as_array()
        .ok_or_else(|| bad(format!("{key} must be an array")))?
        .iter()
        .map(|x| x.as_float().map(|f| f as f32))
        .collect::<Option<_>>()
        .ok_or_else(|| bad(format!("{key} must hold numbers")))?;
    match vals.len() {
        1 => Ok(Some(vec![vals[0]; channels])),
        n if n == channels => Ok(Some(vals)),
        n => Err(bad(format!("{key} has {n} values for {channels} channels"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(entries: &[(&str, Value)]) -> Map {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn files_without_the_new_keys_keep_their_meaning() {
        let m = meta(&[
            ("input.shape", Value::ints([1, 28, 28])),
            ("input.mean", Value::floats([0.1307])),
            ("input.std", Value::floats([0.3081])),
        ]);
        let s = InputSpec::from_metadata(&m).unwrap();
        assert_eq!(s.resize, ResizeFilter::Bilinear);
        assert_eq!(s.scale, None);
        assert_eq!(s.resized_size_for(100, 50), [28, 28]);
        let p = 200u8;
        assert_eq!(
            s.scale_pixel(0, p),
            (p as f32 / 255.0 - 0.1307f32) / 0.3081f32
        );
        assert_eq!(InputSpec::from_metadata(&s.to_metadata()).unwrap(), s);
    }

    #[test]
    fn keras_style_rescaling_round_trips() {
        let m = meta(&[
            ("input.shape", Value::ints([3, 150, 150])),
            ("input.resize", Value::String("nearest".into())),
            ("input.channel_order", Value::String("bgr".into())),
            ("input.resize_version", Value::String("10".into())),
            ("input.crop_from", Value::ints([160, 170])),
            ("input.scale", Value::floats([1.0 / 127.5])),
            ("input.offset", Value::floats([-1.0])),
        ]);
        let s = InputSpec::from_metadata(&m).unwrap();
        assert_eq!(s.resize, ResizeFilter::Nearest);
        assert_eq!(s.channel_order, ChannelOrder::Bgr);
        assert_eq!(s.pass_order, PassOrder::Pillow10);
        assert_eq!(s.resized_size_for(1000, 900), [160, 170]);
        assert_eq!(
            s.scale_pixel(2, 255),
            255.0f32 * (1.0 / 127.5f64) as f32 - 1.0
        );
        assert_eq!(s.scale_pixel(0, 0), -1.0);
        assert_eq!(InputSpec::from_metadata(&s.to_metadata()).unwrap(), s);
    }

    #[test]
    fn resize_shorter_keeps_the_aspect_ratio_as_torchvision_does() {
        let m = meta(&[
            ("input.shape", Value::ints([3, 224, 224])),
            ("input.resize_shorter", Value::Int(256)),
        ]);
        let s = InputSpec::from_metadata(&m).unwrap();
        // torchvision: int(256 * 1500 / 1000) = 384; the shorter side is the width here.
        assert_eq!(s.resized_size_for(1000, 1500), [384, 256]);
        assert_eq!(s.resized_size_for(1857, 1317), [256, 360]);
        assert_eq!(s.resized_size_for(300, 300), [256, 256]);
        assert_eq!(s.fixed_resized_size(), None);
        assert_eq!(InputSpec::from_metadata(&s.to_metadata()).unwrap(), s);
    }

    #[test]
    fn bad_preprocessing_keys_are_named() {
        let with = |k: &str, v: Value| {
            let m = meta(&[("input.shape", Value::ints([1, 8, 8])), (k, v)]);
            InputSpec::from_metadata(&m).unwrap_err().to_string()
        };
        assert!(with("input.resize", Value::String("lanczos".into())).contains("lanczos"));
        assert!(with("input.resize_version", Value::String("9".into())).contains("\"13\""));
        assert!(with("input.channel_order", Value::String("bgr".into())).contains("3-channel"));
        assert!(with("input.crop_from", Value::ints([4, 8])).contains("smaller"));
        assert!(with("input.crop_from", Value::ints([8])).contains("2 values"));
        assert!(with("input.scale", Value::floats([f64::NAN])).contains("finite"));
        assert!(with("input.std", Value::floats([0.0])).contains("nonzero"));
        assert!(with("input.offset", Value::floats([1.0, 2.0])).contains("2 values"));
        assert!(with("input.resize_shorter", Value::Int(4)).contains("smaller"));
        let m = meta(&[("input.shape", Value::ints([1, 0, 8]))]);
        assert!(InputSpec::from_metadata(&m).is_err());
    }
}
