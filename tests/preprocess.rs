//! Spec §6.1/§6.2 conformance: `fixtures/preprocess/cases.json` lists small source images, the
//! `input.*` metadata of a model, and the exact 8-bit pixels and binary32 inputs the runtime
//! makes of them. The runtime must reproduce every case bit for bit, and the independent
//! Python reader (`tools/cxrm_reader.py`, written from the spec) is checked against the same
//! file by `tools/check_fixtures.py`. And on real data: decoding and resizing a radiograph
//! gives exactly Pillow's pixels.

use cxrm::format::container::input_spec::InputSpec;
use cxrm::format::container::value::{Map, Value};
use cxrm::format::lcg::Lcg;
use cxrm::runtime::preprocess::{Decoded, normalise, pixels};
use serde_json::{Value as Json, json};
use std::path::Path;

fn cases_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/preprocess/cases.json")
}

/// A source image of `mode` "L" or "RGB", its interleaved pixels from a seeded generator
/// (smooth ramps plus noise, so that filters have something to average).
fn source(mode: &str, width: usize, height: usize, seed: u64) -> (Decoded, Vec<u8>) {
    let channels = if mode == "L" { 1 } else { 3 };
    let mut rng = Lcg(seed);
    let px: Vec<u8> = (0..width * height * channels)
        .map(|i| {
            let (p, c) = (i / channels, i % channels);
            let (x, y) = (p % width, p / width);
            let ramp = (x * 255 / width.max(1) + y * 97 / height.max(1) + c * 60) as u32;
            ((ramp + rng.next_u32() % 40) % 256) as u8
        })
        .collect();
    let decoded = if channels == 1 {
        Decoded::Grey {
            width,
            height,
            pixels: px.clone(),
        }
    } else {
        let img = image::RgbImage::from_raw(width as u32, height as u32, px.clone()).unwrap();
        Decoded::Dynamic(image::DynamicImage::ImageRgb8(img))
    };
    (decoded, px)
}

fn meta_json(meta: &Map) -> Json {
    let mut m = serde_json::Map::new();
    for (k, v) in meta {
        let j = match v {
            Value::String(s) => json!(s),
            Value::Int(n) => json!(n),
            Value::Array(_, items) => Json::Array(
                items
                    .iter()
                    .map(|i| match i {
                        Value::Int(n) => json!(n),
                        Value::Float(f) => json!(f),
                        other => panic!("unexpected {other:?}"),
                    })
                    .collect(),
            ),
            other => panic!("unexpected {other:?}"),
        };
        m.insert(k.clone(), j);
    }
    Json::Object(m)
}

fn floats(v: &[f64]) -> Value {
    Value::floats(v.iter().copied())
}

/// A source image: mode, width, height, and the seed of its pixels.
type Source = (&'static str, usize, usize, u64);

/// Every case: name, source, and the model's input metadata.
fn definitions() -> Vec<(&'static str, Source, Map)> {
    let shape = |c: i64, h: i64, w: i64| ("input.shape".to_string(), Value::ints([c, h, w]));
    let s = |k: &str, v: &str| (k.to_string(), Value::String(v.into()));
    let f = |k: &str, v: &[f64]| (k.to_string(), floats(v));
    vec![
        (
            "grey_nearest_shrink_default_arithmetic",
            ("L", 13, 9, 1),
            vec![shape(1, 4, 5), s("input.resize", "nearest")],
        ),
        (
            "grey_nearest_enlarge_running_sum",
            ("L", 2, 3, 2),
            vec![shape(1, 5, 7), s("input.resize", "nearest")],
        ),
        (
            "rgb_bilinear_shrink_keras_rescaling",
            ("RGB", 17, 11, 3),
            vec![
                shape(3, 5, 6),
                f("input.scale", &[1.0 / 127.5]),
                f("input.offset", &[-1.0]),
            ],
        ),
        (
            "rgb_tall_bilinear_pillow13_pass_order",
            ("RGB", 7, 40, 4),
            vec![shape(3, 6, 5), s("input.resize_version", "13")],
        ),
        (
            "rgb_tall_bilinear_pillow10_pass_order",
            ("RGB", 7, 40, 4),
            vec![shape(3, 6, 5), s("input.resize_version", "10")],
        ),
        (
            "grey_box_mean_std",
            ("L", 12, 12, 5),
            vec![
                shape(1, 5, 5),
                s("input.resize", "box"),
                f("input.mean", &[0.1307]),
                f("input.std", &[0.3081]),
            ],
        ),
        (
            "rgb_crop_bgr_imagenet",
            ("RGB", 10, 8, 6),
            vec![
                shape(3, 4, 5),
                ("input.crop_from".to_string(), Value::ints([7, 8])),
                s("input.channel_order", "bgr"),
                f("input.mean", &[0.485, 0.456, 0.406]),
                f("input.std", &[0.229, 0.224, 0.225]),
            ],
        ),
        (
            "rgb_to_grey_luma_enlarge",
            ("RGB", 3, 2, 7),
            vec![shape(1, 4, 6), s("input.resize", "bilinear")],
        ),
        (
            "rgb_resize_shorter_torchvision",
            ("RGB", 13, 9, 9),
            vec![
                shape(3, 4, 4),
                ("input.resize_shorter".to_string(), Value::Int(5)),
                f("input.mean", &[0.485, 0.456, 0.406]),
                f("input.std", &[0.229, 0.224, 0.225]),
            ],
        ),
        (
            "grey_to_rgb_identity_size",
            ("L", 4, 3, 8),
            vec![shape(3, 3, 4)],
        ),
    ]
}

fn cases() -> Json {
    let mut out = Vec::new();
    for (name, (mode, w, h, seed), meta) in definitions() {
        let (decoded, px) = source(mode, w, h, seed);
        let spec = InputSpec::from_metadata(&meta).unwrap();
        let planar = pixels(&decoded, &spec).unwrap();
        let input = normalise(&planar, &spec);
        out.push(json!({
            "name": name,
            "source": {"mode": mode, "width": w, "height": h, "pixels": px},
            "metadata": meta_json(&meta),
            "pixels": planar,
            "input_bits": input.iter().map(|v| format!("{:08x}", v.to_bits())).collect::<Vec<_>>(),
            "input": input.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        }));
    }
    json!({
        "spec": "§6.1 and §6.2: each case's source image (interleaved, mode L or RGB) through the \
                 metadata's preprocessing gives `pixels` (planar [C, H, W] u8 after colour, \
                 resize, crop and channel order) and `input` (binary32, bit patterns in \
                 `input_bits`)",
        "cases": out,
    })
}

/// Run `CXRM_REGEN=1 cargo test --test preprocess regenerate -- --ignored` after an intended
/// change, then review the diff.
#[test]
#[ignore]
fn regenerate() {
    if std::env::var_os("CXRM_REGEN").is_none() {
        eprintln!("set CXRM_REGEN=1 to rewrite fixtures/preprocess/");
        return;
    }
    std::fs::create_dir_all(cases_path().parent().unwrap()).unwrap();
    std::fs::write(
        cases_path(),
        serde_json::to_string_pretty(&cases()).unwrap() + "\n",
    )
    .unwrap();
}

#[test]
fn the_runtime_reproduces_every_preprocessing_case_bit_for_bit() {
    let committed: Json = serde_json::from_slice(
        &std::fs::read(cases_path()).expect("fixtures/preprocess/cases.json (CXRM_REGEN=1)"),
    )
    .unwrap();
    assert_eq!(cases(), committed, "regenerate and review the diff");
}

#[test]
fn the_pass_order_cases_differ_as_pillow_12_and_13_do() {
    let c = cases();
    let by = |n: &str| {
        c["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap()["pixels"]
            .clone()
    };
    assert_ne!(
        by("rgb_tall_bilinear_pillow13_pass_order"),
        by("rgb_tall_bilinear_pillow10_pass_order"),
        "the case must tell the two pass orders apart"
    );
}

/// `fixtures/import/input.*.npy` are Pillow 13's decode and resize of the first radiograph:
/// cxrm's JPEG decoder and resize must give the same bytes.
#[test]
fn decoding_and_resizing_a_real_radiograph_gives_pillows_pixels() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = root
        .ancestors()
        .map(|a| a.join("shared/data"))
        .find(|p| p.join("chest-xray-val").is_dir())
        .expect("shared/data/chest-xray-val beside the checkout");
    for (npy, filter, size) in [
        ("input.bilinear150x150.npy", "bilinear", 150),
        ("input.bilinear224x224.npy", "bilinear", 224),
        ("input.nearest150x150.npy", "nearest", 150),
        ("input.nearest224x224.npy", "nearest", 224),
    ] {
        let bytes = std::fs::read(root.join("fixtures/import").join(npy)).unwrap();
        // .npy v1: magic, version, u16 header length, header, then the raw [H, W, 3] u8 array.
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let pillow = &bytes[10 + header_len..];
        assert_eq!(pillow.len(), size * size * 3);
        let meta: Map = vec![
            (
                "input.shape".into(),
                Value::ints([3, size as i64, size as i64]),
            ),
            ("input.resize".into(), Value::String(filter.into())),
        ];
        let spec = InputSpec::from_metadata(&meta).unwrap().pixels_only();
        let jpeg = data.join("chest-xray-val/NORMAL/NORMAL2-IM-1427-0001.jpeg");
        let planar = cxrm::runtime::preprocess::load_pixels(&jpeg, &spec).unwrap();
        let plane = size * size;
        let interleaved: Vec<u8> = (0..plane * 3)
            .map(|i| planar[(i % 3) * plane + i / 3])
            .collect();
        let differing = interleaved
            .iter()
            .zip(pillow)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differing, 0,
            "{npy}: {differing} bytes differ from Pillow's"
        );
    }
}
