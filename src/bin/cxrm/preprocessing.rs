//! The preprocessing flags that `pack` and `import` share: each sets one `input.*` key of spec
//! §6, on top of whatever the model file or graph already says.

use crate::Failure;
use cxrm::format::container::input_spec::{ChannelOrder, InputSpec, PassOrder, ResizeFilter};
use cxrm::format::container::value::Map;

/// Per-channel values from one flag (a newtype, so that clap keeps the list as one value).
#[derive(Clone, Debug, PartialEq)]
pub struct PerChannel(pub Vec<f64>);

#[derive(clap::Args, Debug, Default)]
pub struct PreprocessArgs {
    /// The input image size: HxWxC (e.g. 150x150x3) or CxHxW (e.g. 3x150x150); C is 1 or 3.
    #[arg(long = "input", id = "input_shape", value_name = "SHAPE", value_parser = parse_shape)]
    pub input_shape: Option<[usize; 3]>,
    /// The resize filter, Pillow's: nearest, bilinear or box (area averaging; `area` is
    /// accepted for it and stored as box).
    #[arg(long, value_name = "FILTER", value_parser = parse_filter)]
    pub resize: Option<ResizeFilter>,
    /// Which Pillow release's order of the two bilinear/box passes to match: 13 (13.0 and
    /// later, the default), 12.2 (12.2-12.3) or 10 (10.0-12.1).
    #[arg(long, value_name = "RELEASE", value_parser = parse_pass_order)]
    pub resize_version: Option<PassOrder>,
    /// Resize so that the shorter side is S, keeping the aspect ratio (torchvision's
    /// Resize(S)), then keep the centre of the input size.
    #[arg(long, value_name = "S")]
    pub resize_shorter: Option<u32>,
    /// Resize to HxW first, then keep the centre of the input size.
    #[arg(long, value_name = "HxW", value_parser = parse_hw)]
    pub crop_from: Option<[usize; 2]>,
    /// rgb or bgr (3-channel inputs).
    #[arg(long, value_name = "ORDER", value_parser = parse_order)]
    pub channel_order: Option<ChannelOrder>,
    /// Per-channel factor for pixel values 0-255 (replaces the division by 255): one value
    /// or one per channel, comma-separated; fractions allowed (1/127.5).
    #[arg(long, value_name = "S[,S,S]", value_parser = parse_floats)]
    pub scale: Option<PerChannel>,
    /// Per-channel value added after the scale.
    #[arg(long, value_name = "O[,O,O]", value_parser = parse_floats)]
    pub offset: Option<PerChannel>,
    /// Per-channel mean subtracted after the offset.
    #[arg(long, value_name = "M[,M,M]", value_parser = parse_floats)]
    pub mean: Option<PerChannel>,
    /// Per-channel standard deviation divided by last.
    #[arg(long, value_name = "S[,S,S]", value_parser = parse_floats)]
    pub std: Option<PerChannel>,
    /// Class names in output order, comma-separated (model.classes).
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
}

impl PreprocessArgs {
    /// Apply the flags to `meta` (a model's metadata) and check that the result is a
    /// preprocessing this build can run.
    pub fn apply(&self, meta: &mut Map) -> Result<(), Failure> {
        use cxrm::format::container::value::Value;
        let mut set = |key: &str, v: Value| match meta.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => meta.push((key.to_string(), v)),
        };
        let floats = |v: &[f64]| Value::floats(v.iter().copied());
        if let Some([c, h, w]) = self.input_shape {
            set("input.shape", Value::ints([c as i64, h as i64, w as i64]));
        }
        if let Some(f) = self.resize {
            set("input.resize", Value::String(f.name().into()));
        }
        if let Some(o) = self.resize_version {
            set("input.resize_version", Value::String(o.name().into()));
        }
        if let Some(side) = self.resize_shorter {
            set("input.resize_shorter", Value::Int(side.into()));
        }
        if let Some([h, w]) = self.crop_from {
            set("input.crop_from", Value::ints([h as i64, w as i64]));
        }
        if let Some(o) = self.channel_order {
            set("input.channel_order", Value::String(o.name().into()));
        }
        for (key, v) in [
            ("input.scale", &self.scale),
            ("input.offset", &self.offset),
            ("input.mean", &self.mean),
            ("input.std", &self.std),
        ] {
            if let Some(PerChannel(v)) = v {
                set(key, floats(v));
            }
        }
        if let Some(c) = &self.classes {
            set("model.classes", Value::strings(c.iter().cloned()));
        }
        let has_input = meta.iter().any(|(k, _)| k.starts_with("input."));
        if has_input {
            InputSpec::from_metadata(meta).map_err(|e| Failure::Usage(e.to_string()))?;
        }
        Ok(())
    }
}

fn parse_shape(s: &str) -> Result<[usize; 3], String> {
    let v: Vec<usize> = s
        .split(['x', 'X'])
        .map(|d| d.trim().parse::<usize>().map_err(|e| format!("{d:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let [a, b, c] = v[..] else {
        return Err("expected three sizes, HxWxC or CxHxW".into());
    };
    if v.iter().any(|&d| !(1..=1 << 16).contains(&d)) {
        return Err("sizes run from 1 to 65536".into());
    }
    let channels = |n: usize| n == 1 || n == 3;
    match (channels(a), channels(c)) {
        (_, true) => Ok([c, a, b]),
        (true, false) => Ok([a, b, c]),
        _ => Err("one of the end sizes must be the channel count, 1 or 3".into()),
    }
}

fn parse_hw(s: &str) -> Result<[usize; 2], String> {
    let v: Vec<usize> = s
        .split(['x', 'X'])
        .map(|d| d.trim().parse::<usize>().map_err(|e| format!("{d:?}: {e}")))
        .collect::<Result<_, _>>()?;
    v.try_into().map_err(|_| "expected HxW".to_string())
}

/// A filter by its spec name, or `area`: Pillow's box filter is area averaging (each output
/// pixel the mean of the source area it covers), the name other libraries give it. The file
/// stores `box`, so the format keeps one name per filter.
fn parse_filter(s: &str) -> Result<ResizeFilter, String> {
    match s {
        "area" => Ok(ResizeFilter::Box),
        _ => ResizeFilter::from_name(s)
            .ok_or_else(|| "expected nearest, bilinear, box or area (= box)".into()),
    }
}

fn parse_pass_order(s: &str) -> Result<PassOrder, String> {
    PassOrder::from_name(s).ok_or_else(|| "expected 10, 12.2 or 13".into())
}

fn parse_order(s: &str) -> Result<ChannelOrder, String> {
    ChannelOrder::from_name(s).ok_or_else(|| "expected rgb or bgr".into())
}

/// Comma-separated numbers, each a decimal or a fraction `a/b`.
fn parse_floats(s: &str) -> Result<PerChannel, String> {
    s.split(',')
        .map(|part| {
            let part = part.trim();
            let value = match part.split_once('/') {
                Some((a, b)) => {
                    let a: f64 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
                    let b: f64 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
                    a / b
                }
                None => part.parse().map_err(|e| format!("{part:?}: {e}"))?,
            };
            if value.is_finite() {
                Ok(value)
            } else {
                Err(format!("{part:?} is not a finite number"))
            }
        })
        .collect::<Result<_, _>>()
        .map(PerChannel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_read_either_way_round() {
        assert_eq!(parse_shape("150x150x3"), Ok([3, 150, 150]));
        assert_eq!(parse_shape("3x224x224"), Ok([3, 224, 224]));
        assert_eq!(parse_shape("1x28x28"), Ok([1, 28, 28]));
        assert!(parse_shape("28x28").is_err());
        assert!(parse_shape("5x28x28").is_err());
    }

    #[test]
    fn area_is_the_box_filter() {
        assert_eq!(parse_filter("area"), Ok(ResizeFilter::Box));
        assert_eq!(parse_filter("box"), Ok(ResizeFilter::Box));
        assert_eq!(parse_filter("nearest"), Ok(ResizeFilter::Nearest));
        let err = parse_filter("lanczos").unwrap_err();
        assert!(err.contains("area"), "{err}");
    }

    #[test]
    fn fractions_and_lists() {
        assert_eq!(parse_floats("1/127.5"), Ok(PerChannel(vec![1.0 / 127.5])));
        assert_eq!(
            parse_floats("0.5, -1,2"),
            Ok(PerChannel(vec![0.5, -1.0, 2.0]))
        );
        assert!(parse_floats("1/0").is_err());
        assert!(parse_floats("x").is_err());
    }
}
