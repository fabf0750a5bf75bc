//! `cxrm import` against the real frameworks: the models in `fixtures/import/` were written by
//! PyTorch's ONNX exporter (and Keras), with the outputs those frameworks computed on the 16
//! real chest X-rays of `shared/data/chest-xray-val` through their own preprocessing
//! (`tools/make_reference_models.py`). Each model is imported with the preprocessing flags its
//! JSON records and run on the original JPEGs by `cxrm run`; every output must be within 1e-4
//! of the framework's, relative to the largest, and give the same class.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cxrm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cxrm"))
        .args(args)
        .output()
        .expect("runs cxrm")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `shared/data/` beside the checkout (or above it), where the real radiographs are.
fn shared_data() -> PathBuf {
    root()
        .ancestors()
        .map(|a| a.join("shared/data"))
        .find(|p| p.join("chest-xray-val").is_dir())
        .expect("shared/data/chest-xray-val beside the checkout (every machine and CI has it)")
}

fn expected(model: &str) -> Value {
    let path = root().join(format!("fixtures/import/{model}.expected.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The `cxrm import` flags that say what the framework did to each image.
fn preprocessing_flags(exp: &Value) -> Vec<String> {
    let p = &exp["preprocessing"];
    let list = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut flags = vec![
        "--resize".to_string(),
        p["resize"].as_str().unwrap().to_string(),
    ];
    if exp["framework"] == "keras" {
        // Keras models carry their Rescaling/Normalization inside; the caller may scale too.
        let scale = p["scale"].as_f64().unwrap();
        if scale != 1.0 {
            flags.extend(["--scale".into(), scale.to_string()]);
        }
    } else {
        flags.extend(["--mean".into(), list(&p["mean"])]);
        flags.extend(["--std".into(), list(&p["std"])]);
    }
    let classes: Vec<&str> = exp["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    flags.extend(["--classes".into(), classes.join(",")]);
    flags
}

/// Import `model`, run it on every radiograph its JSON lists, and compare. Returns the worst
/// relative difference.
fn check(model: &str) -> f64 {
    let exp = expected(model);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.cxrm");
    let source = root().join("fixtures/import").join(model);
    let mut args: Vec<String> = vec![
        "import".into(),
        source.to_str().unwrap().into(),
        "-o".into(),
        out.to_str().unwrap().into(),
    ];
    args.extend(preprocessing_flags(&exp));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = cxrm(&args);
    assert!(o.status.success(), "{model}: {}", text(&o));

    let data = shared_data();
    let images: Vec<&Value> = exp["images"].as_array().unwrap().iter().collect();
    let paths: Vec<String> = images
        .iter()
        .map(|i| {
            data.join(i["path"].as_str().unwrap())
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut args = vec!["run", out.to_str().unwrap(), "--json"];
    args.extend(paths.iter().map(String::as_str));
    let o = cxrm(&args);
    assert!(o.status.success(), "{model}: {}", text(&o));
    let got: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut worst = 0.0f64;
    for (k, image) in images.iter().enumerate() {
        let key = if image.get("logits").is_some() {
            "logits"
        } else {
            "probabilities"
        };
        let want: Vec<f64> = image[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let field = if got[k]["logits"].is_null() {
            "probabilities"
        } else {
            key
        };
        let have: Vec<f64> = got[k][field]
            .as_array()
            .unwrap_or_else(|| panic!("{model}: no {field} in {}", got[k]))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
        for (h, w) in have.iter().zip(&want) {
            worst = worst.max((h - w).abs() / scale);
        }
        let argmax = |v: &[f64]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
        assert_eq!(
            argmax(&have),
            argmax(&want),
            "{model}, {}: classes differ",
            image["path"]
        );
    }
    assert!(
        worst <= 1e-4,
        "{model}: outputs differ from the framework's by {worst:e} (relative)"
    );
    // Shown with --nocapture: the agreement the closing notes quote.
    eprintln!(
        "{model}: worst relative difference {worst:.2e} over {} images",
        images.len()
    );
    worst
}

#[test]
fn onnx_xception_matches_onnxruntime_on_real_radiographs() {
    check("xception_op13.onnx");
}

#[test]
fn onnx_mobilenetv2_matches_onnxruntime_at_opsets_13_and_18() {
    check("mobilenetv2_op13.onnx");
    check("mobilenetv2_op18.onnx");
}

#[test]
fn onnx_vgg_matches_onnxruntime_on_real_radiographs() {
    check("vgg_op13.onnx");
}

#[test]
fn keras_xception_matches_keras_with_nearest_resize_on_the_original_jpegs() {
    check("xception.keras");
    check("xception_softmax.keras");
}

#[test]
fn keras_mobilenetv2_with_normalization_zero_padding_and_a_nested_model_matches_keras() {
    check("mobilenetv2.keras");
}

#[test]
fn keras_vgg_with_fused_activations_and_hwc_flatten_matches_keras() {
    check("vgg.keras");
}

#[test]
fn resnet_stems_with_a_zero_pad_before_max_pooling_match_their_frameworks() {
    check("resnet_stem.keras");
    check("resnet_stem_op13.onnx");
}

#[test]
fn squeeze_excite_swish_and_hard_swish_match_their_frameworks() {
    check("se_mix.keras");
    check("se_mix_op17.onnx");
}

#[test]
fn inception_branches_joined_by_concat_match_their_frameworks() {
    check("inception_mix.keras");
    check("inception_mix_op13.onnx");
}

/// The two ends of the opset range the importer is tested at, from PyTorch's two exporters:
/// opset 11 (TorchScript: BatchNormalization nodes, Clip bounds from Constant nodes, Flatten)
/// and opset 21 (dynamo: Clip bounds from initializers, Reshape with allowzero), each with
/// Conv, Relu, Clip(0, 6), Add, MaxPool, an AveragePool that counts its padding
/// (count_include_pad = 1, imported as `pad` + `avg_pool2d`) and one that does not,
/// GlobalAveragePool and Gemm.
#[test]
fn opsets_11_and_21_match_onnxruntime_with_both_kinds_of_average_pooling() {
    check("opset_mix_op11.onnx");
    check("opset_mix_op21.onnx");
}

#[test]
fn unsupported_onnx_is_refused_with_node_op_and_opset_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.cxrm");
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"\x08\x07garbage that is not protobuf \xff\xff").unwrap();
    let o = import(&junk, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!out.exists());
}

/// A one-node ONNX model: the image through `op`.
fn one_node_model(op: &str, opset: i64) -> Vec<u8> {
    use cxrm::compress::interop::onnx::proto::{
        GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
        ValueInfoProto, tensor_shape_proto::Dimension, tensor_shape_proto::dimension, type_proto,
    };
    use prost::Message;
    let dims = [1i64, 1, 4, 4]
        .iter()
        .map(|&d| Dimension {
            value: Some(dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    let image = ValueInfoProto {
        name: "x".into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            node: vec![NodeProto {
                name: "the_node".into(),
                op_type: op.into(),
                input: vec!["x".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            input: vec![image],
            output: vec![ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

#[test]
fn an_unsupported_operator_names_the_node_op_and_opset() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.cxrm");
    let model = dir.path().join("m.onnx");
    std::fs::write(&model, one_node_model("HardSigmoid", 17)).unwrap();
    let o = import(&model, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let msg = text(&o);
    assert!(
        msg.contains("the_node") && msg.contains("HardSigmoid") && msg.contains("opset 17"),
        "{msg}"
    );
    assert!(!out.exists());
    std::fs::write(&model, one_node_model("Relu", 3)).unwrap();
    let o = import(&model, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("opset 3 is not supported"),
        "{}",
        text(&o)
    );
}

/// `cxrm import SOURCE -o OUT FLAGS...`.
fn import(source: &Path, out: &Path, flags: &[&str]) -> Output {
    let mut args = vec![
        "import",
        source.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend(flags);
    cxrm(&args)
}

/// `cxrm import SOURCE -o OUT FLAGS...`, which must succeed.
fn import_ok(source: &Path, out: &Path, flags: &[&str]) {
    let o = import(source, out, flags);
    assert!(o.status.success(), "{}", text(&o));
}

fn run_logits(model: &Path, image: &Path) -> Vec<f64> {
    run_logits_with(model, image, &[])
}

/// [`run_logits`] with more flags for `cxrm run`.
fn run_logits_with(model: &Path, image: &Path, flags: &[&str]) -> Vec<f64> {
    let mut args = vec![
        "run",
        model.to_str().unwrap(),
        image.to_str().unwrap(),
        "--json",
    ];
    args.extend(flags);
    let o = cxrm(&args);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let key = if v[0]["logits"].is_null() {
        "probabilities"
    } else {
        "logits"
    };
    v[0][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The VGG fixture's six 3×3 stride-1 layers run by Winograd's F(4×4, 3×3) where the CPU has
/// AVX-512 (`cxrm bench` names their kernel), and give the direct product's logits within the
/// fidelity bound; `--no-winograd` runs the direct product.
#[test]
fn winograd_and_the_direct_product_agree_on_a_real_radiograph() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("vgg.cxrm");
    let exp = expected("vgg.keras");
    let flags = preprocessing_flags(&exp);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    import_ok(&root().join("fixtures/import/vgg.keras"), &model, &flags);
    let image = shared_data().join(exp["images"][0]["path"].as_str().unwrap());
    let winograd = run_logits(&model, &image);
    let direct = run_logits_with(&model, &image, &["--no-winograd"]);
    let scale = direct.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    let worst = winograd
        .iter()
        .zip(&direct)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs() / scale));
    assert!(worst <= 1e-5, "{worst:e}");
    let layers = |flags: &[&str]| {
        let mut args = vec!["bench", model.to_str().unwrap(), "--iters", "1"];
        args.extend(["--batch", "1", "--batch-iters", "1"]);
        args.extend(flags);
        let o = cxrm(&args);
        assert!(o.status.success(), "{}", text(&o));
        text(&o).matches("conv2d[winograd]").count()
    };
    if cxrm::runtime::winograd::available() {
        assert_eq!(layers(&[]), 6);
    }
    assert_eq!(layers(&["--no-winograd"]), 0);
}

/// `cxrm export` then `cxrm import` gives back a model that computes the same outputs, with
/// the same preprocessing: dense, Deep Compression, low-rank/Tucker (exported as factor
/// products) and a Keras import with its 1.3 preprocessing keys. (onnxruntime itself runs
/// every export in tools/check_export.py.)
#[test]
fn export_then_import_gives_the_same_model_back() {
    let dir = tempfile::tempdir().unwrap();
    let keras = dir.path().join("x.cxrm");
    let source = root().join("fixtures/import/xception.keras");
    import_ok(&source, &keras, &[]);
    let digit = root().join("fixtures/runtime/digit.png");
    let models = [
        ("lenet5", root().join("fixtures/runtime/lenet5.cxrm")),
        ("lenet5_dc", root().join("fixtures/runtime/lenet5_dc.cxrm")),
        (
            "lenet5_factored",
            root().join("fixtures/runtime/lenet5_factored.cxrm"),
        ),
        ("keras", keras),
    ];
    for (name, model) in models {
        let onnx = dir.path().join(format!("{name}.onnx"));
        let back = dir.path().join(format!("{name}.back.cxrm"));
        for args in [
            vec![
                "export",
                model.to_str().unwrap(),
                "-o",
                onnx.to_str().unwrap(),
            ],
            vec![
                "import",
                onnx.to_str().unwrap(),
                "-o",
                back.to_str().unwrap(),
            ],
        ] {
            let o = cxrm(&args);
            assert!(o.status.success(), "{name}: {}", text(&o));
        }
        let (a, b) = (run_logits(&model, &digit), run_logits(&back, &digit));
        let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs() / scale));
        assert!(worst <= 1e-5, "{name}: {worst:e}");
        let meta = |m: &Path| {
            let o = cxrm(&["inspect", m.to_str().unwrap(), "--json"]);
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            let all = v["metadata"].as_object().unwrap().clone();
            let mut kept: Vec<_> = all
                .into_iter()
                .filter(|(k, _)| k.starts_with("input.") || k == "model.classes")
                .collect();
            kept.sort_by(|a, b| a.0.cmp(&b.0));
            kept
        };
        assert_eq!(meta(&model), meta(&back), "{name}: preprocessing lost");
    }
}

#[test]
fn an_xnor_export_is_refused_on_import_with_the_operator_named() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("x.onnx");
    let model = root().join("fixtures/runtime/lenet5_xnor.cxrm");
    let o = cxrm(&[
        "export",
        model.to_str().unwrap(),
        "-o",
        onnx.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let back = dir.path().join("back.cxrm");
    let o = import(&onnx, &back, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("GreaterOrEqual"), "{}", text(&o));
    assert!(!back.exists());
}

/// `compress` and `train` load image folders as RGB for 3-channel models (they used to load
/// grey and panic in the first convolution).
#[cfg(feature = "train")]
#[test]
fn compress_and_train_take_rgb_image_folders() {
    let dir = tempfile::tempdir().unwrap();
    let data = shared_data().join("chest-xray-val");
    // The trainer retrains every op the importers write: separable blocks (Xception), a zero
    // pad before pooling (ResNet), sigmoid, swish, hard-swish and squeeze-excite, and concat.
    for keras in ["xception", "resnet_stem", "se_mix", "inception_mix"] {
        let model = dir.path().join(format!("{keras}.cxrm"));
        let source = root().join(format!("fixtures/import/{keras}.keras"));
        import_ok(&source, &model, &["--classes", "NORMAL,PNEUMONIA"]);
        let small = dir.path().join(format!("{keras}.dc.cxrm"));
        let o = cxrm(&[
            "compress",
            model.to_str().unwrap(),
            "--method",
            "deep-compression",
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            "1",
            "--prune-steps",
            "1",
            "--quiet",
            "-o",
            small.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{keras}: {}", text(&o));
        let o = cxrm(&["verify", "--runnable", small.to_str().unwrap()]);
        assert!(o.status.success(), "{keras}: {}", text(&o));
    }
    let trained = dir.path().join("t.cxrm");
    let o = cxrm(&[
        "train",
        "--arch",
        "lenet-5",
        "--data",
        data.to_str().unwrap(),
        "--size",
        "32",
        "--channels",
        "3",
        "--epochs",
        "1",
        "--quiet",
        "-o",
        trained.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = cxrm(&["inspect", trained.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["metadata"]["input.shape"], serde_json::json!([3, 32, 32]));
}

/// Hand-built ONNX graphs, imported and run through the library: the operator forms the
/// exporters behind the fixtures do not write.
mod hand_built {
    use cxrm::compress::interop::onnx::proto::{
        AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
        TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto::Dimension,
        tensor_shape_proto::dimension, type_proto,
    };
    use prost::Message;

    pub fn int(name: &str, i: i64) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            i,
            r#type: 2,
            ..Default::default()
        }
    }

    pub fn float(name: &str, f: f32) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            f,
            r#type: 1,
            ..Default::default()
        }
    }

    pub fn ints(name: &str, ints: &[i64]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            ints: ints.to_vec(),
            r#type: 7,
            ..Default::default()
        }
    }

    pub fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            name: output.into(),
            op_type: op.into(),
            input: inputs.iter().map(|&i| i.into()).collect(),
            output: vec![output.into()],
            attribute: attrs,
            ..Default::default()
        }
    }

    /// An f32 initializer.
    pub fn tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 1,
            float_data: values.to_vec(),
            ..Default::default()
        }
    }

    /// A model whose image input `x` is `[1, C, H, W]` and whose output is the last node's.
    pub fn model(input: [i64; 4], nodes: Vec<NodeProto>, init: Vec<TensorProto>) -> Vec<u8> {
        let dims = input
            .iter()
            .map(|&d| Dimension {
                value: Some(dimension::Value::DimValue(d)),
                ..Default::default()
            })
            .collect();
        let image = ValueInfoProto {
            name: "x".into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(TensorShapeProto { dim: dims }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let output = nodes.last().unwrap().output[0].clone();
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                name: "g".into(),
                node: nodes,
                initializer: init,
                input: vec![image],
                output: vec![ValueInfoProto {
                    name: output,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// Import `bytes` and run it on `x` (`[C, H, W]`, row-major): the output, and the `.cxrm`
    /// graph's ops; or the importer's error.
    pub fn run(
        bytes: &[u8],
        shape: [usize; 3],
        x: &[f32],
    ) -> Result<(Vec<f32>, Vec<String>), String> {
        let imported =
            cxrm::compress::interop::onnx::import(bytes, None).map_err(|e| e.to_string())?;
        let ops = imported.graph.nodes.iter().map(|n| n.op.clone()).collect();
        let file_bytes = imported.into_writer().unwrap().to_bytes().unwrap();
        let file = cxrm::format::container::reader::Cxrm::parse(&file_bytes).unwrap();
        let model = cxrm::runtime::Model::load(&file).map_err(|e| e.to_string())?;
        let [c, h, w] = shape;
        let batch = ndarray::Array4::from_shape_vec((1, c, h, w), x.to_vec()).unwrap();
        let y = model.forward(batch.view()).map_err(|e| e.to_string())?;
        Ok((y.row(0).to_vec(), ops))
    }
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{got:?}\nvs\n{want:?}"
        );
    }
}

/// ONNX AveragePool on one `h × w` plane, by its definition: `pads` (top, left, bottom, right)
/// of zeros around it; each window's sum divided by the whole window (`include_pad`) or by
/// the positions inside the plane.
fn average_pool(
    x: &[f32],
    [h, w]: [usize; 2],
    k: usize,
    s: usize,
    pads: [usize; 4],
    include_pad: bool,
) -> Vec<f32> {
    let (ph, pw) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
    let (oh, ow) = ((ph - k) / s + 1, (pw - k) / s + 1);
    let mut out = Vec::new();
    for oy in 0..oh {
        for ox in 0..ow {
            let (mut sum, mut inside) = (0.0f32, 0usize);
            for dy in 0..k {
                for dx in 0..k {
                    let (y, x_) = (oy * s + dy, ox * s + dx);
                    if (pads[0]..pads[0] + h).contains(&y) && (pads[1]..pads[1] + w).contains(&x_) {
                        sum += x[(y - pads[0]) * w + x_ - pads[1]];
                        inside += 1;
                    }
                }
            }
            out.push(
                sum / if include_pad {
                    (k * k) as f32
                } else {
                    inside as f32
                },
            );
        }
    }
    out
}

/// AveragePool with count_include_pad = 1 and padding is a `pad` of zeros then an unpadded
/// `avg_pool2d`: the border outputs are divided by the whole window, as ONNX says, not by the
/// positions inside the image (count_include_pad = 0). A zero Pad node before it joins the
/// same `pad`.
#[test]
fn average_pool_counting_its_padding_is_a_zero_pad_then_the_pooling() {
    use hand_built::*;
    let x: Vec<f32> = (0..20).map(|v| (v * 7 % 11) as f32 - 3.0).collect();
    let pool = |include: i64| {
        node(
            "AveragePool",
            &["x"],
            "pool",
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("strides", &[2, 2]),
                ints("pads", &[1, 0, 1, 2]),
                int("count_include_pad", include),
            ],
        )
    };
    let flatten = || node("Flatten", &["pool"], "y", vec![]);
    for include in [0, 1] {
        let m = model([1, 1, 4, 5], vec![pool(include), flatten()], vec![]);
        let (got, ops) = run(&m, [1, 4, 5], &x).unwrap();
        let want = average_pool(&x, [4, 5], 3, 2, [1, 0, 1, 2], include == 1);
        assert_close(&got, &want);
        let expected_ops: &[&str] = if include == 1 {
            &["pad", "avg_pool2d", "flatten"]
        } else {
            &["avg_pool2d", "flatten"]
        };
        assert_eq!(ops, expected_ops);
    }
    // A zero Pad of 1 all round, then count_include_pad = 1 with pads 1: one pad of 2.
    let mut pads = tensor("pads", &[8], &[]);
    pads.data_type = 7; // INT64
    pads.int64_data = vec![0, 0, 1, 1, 0, 0, 1, 1];
    let m = model(
        [1, 1, 4, 5],
        vec![
            node("Pad", &["x", "pads"], "padded", vec![]),
            node(
                "AveragePool",
                &["padded"],
                "pool",
                vec![
                    ints("kernel_shape", &[3, 3]),
                    ints("pads", &[1, 1, 1, 1]),
                    int("count_include_pad", 1),
                ],
            ),
            flatten(),
        ],
        vec![pads],
    );
    let (got, ops) = run(&m, [1, 4, 5], &x).unwrap();
    assert_close(&got, &average_pool(&x, [4, 5], 3, 1, [2; 4], true));
    assert_eq!(ops, ["pad", "avg_pool2d", "flatten"]);
}

/// Gemm: alpha scales the product and beta the bias, B is read either way round (transB), C
/// may be a scalar, `[N]` or `[1, N]`; transA = 1 reads a column `[K, 1]` (from a Flatten or
/// Reshape) as the row `[1, K]`, and is refused with the node named on a row.
#[test]
fn gemm_takes_alpha_beta_trans_b_and_trans_a_of_a_column() {
    use hand_built::*;
    // x: two 2×2 channels; their means are the features a = [2.5, -1].
    let x = [1.0, 2.0, 3.0, 4.0, -2.0, 0.0, -1.0, -1.0];
    let a = [2.5f32, -1.0];
    let b = [[0.5f32, -1.0, 2.0], [1.5, 0.25, -3.0]]; // [K = 2, N = 3]
    let b_flat: Vec<f32> = b.iter().flatten().copied().collect();
    let bt_flat: Vec<f32> = (0..3).flat_map(|n| (0..2).map(move |k| b[k][n])).collect();
    let c = [0.1f32, -0.2, 0.3];
    let (alpha, beta) = (0.5f32, 2.0f32);
    let want = |c: [f32; 3]| -> Vec<f32> {
        (0..3)
            .map(|n| alpha * (a[0] * b[0][n] + a[1] * b[1][n]) + beta * c[n])
            .collect()
    };
    let gemm = |trans_a: i64, trans_b: i64, with_c: bool| {
        let mut inputs = vec!["features", "B"];
        if with_c {
            inputs.push("C");
        }
        node(
            "Gemm",
            &inputs,
            "y",
            vec![
                float("alpha", alpha),
                float("beta", beta),
                int("transA", trans_a),
                int("transB", trans_b),
            ],
        )
    };
    // Flatten axis 1 gives the row [1, 2]; axis 2 the column [2, 1].
    let features = |axis: i64| {
        vec![
            node("GlobalAveragePool", &["x"], "pooled", vec![]),
            node("Flatten", &["pooled"], "features", vec![int("axis", axis)]),
        ]
    };
    let b_init = |trans_b: bool| {
        if trans_b {
            tensor("B", &[3, 2], &bt_flat)
        } else {
            tensor("B", &[2, 3], &b_flat)
        }
    };
    for (trans_a, axis) in [(0, 1), (1, 2)] {
        for trans_b in [0, 1] {
            for (c_dims, c_values, c_full) in [
                (&[3][..], &c[..], c),
                (&[1, 3][..], &c[..], c),
                (&[][..], &c[..1], [c[0]; 3]),
            ] {
                let mut nodes = features(axis);
                nodes.push(gemm(trans_a, trans_b, true));
                let init = vec![b_init(trans_b == 1), tensor("C", c_dims, c_values)];
                let (got, ops) = run(&model([1, 2, 2, 2], nodes, init), [2, 2, 2], &x)
                    .unwrap_or_else(|e| panic!("transA {trans_a} transB {trans_b}: {e}"));
                assert_close(&got, &want(c_full));
                assert_eq!(ops, ["global_avg_pool", "dense"]);
            }
            let mut nodes = features(axis);
            nodes.push(gemm(trans_a, trans_b, false));
            let (got, _) = run(
                &model([1, 2, 2, 2], nodes, vec![b_init(trans_b == 1)]),
                [2, 2, 2],
                &x,
            )
            .unwrap();
            assert_close(&got, &want([0.0; 3]));
        }
    }
    // transA = 1 on a row, and a C that does not broadcast to [1, N], are refused.
    let mut nodes = features(1);
    nodes.push(gemm(1, 0, false));
    let err = run(
        &model([1, 2, 2, 2], nodes, vec![b_init(false)]),
        [2, 2, 2],
        &x,
    )
    .unwrap_err();
    assert!(
        err.contains("node y (Gemm, opset 17)") && err.contains("column [K, 1]"),
        "{err}"
    );
    let mut nodes = features(1);
    nodes.push(gemm(0, 0, true));
    let init = vec![b_init(false), tensor("C", &[3, 1], &c)];
    let err = run(&model([1, 2, 2, 2], nodes, init), [2, 2, 2], &x).unwrap_err();
    assert!(err.contains("does not broadcast"), "{err}");
}

/// A column `[K, 1]` holds the same values as the row `[1, K]`, but only Gemm's transA reads it
/// so: Softmax, MatMul and an Add with a row refuse it instead of computing something else.
#[test]
fn a_column_is_refused_where_onnx_would_not_read_it_as_a_row() {
    use hand_built::*;
    let x = [1.0, 2.0, 3.0, 4.0, -2.0, 0.0, -1.0, -1.0];
    let column = || {
        vec![
            node("GlobalAveragePool", &["x"], "pooled", vec![]),
            node("Flatten", &["pooled"], "col", vec![int("axis", 2)]),
        ]
    };
    let mut softmax = column();
    softmax.push(node("Softmax", &["col"], "y", vec![]));
    let mut matmul = column();
    matmul.push(node("MatMul", &["col", "W"], "y", vec![]));
    let mut add = column();
    add.push(node("Flatten", &["pooled"], "row", vec![]));
    add.push(node("Add", &["col", "row"], "y", vec![]));
    for nodes in [softmax, matmul, add] {
        let init = vec![tensor("W", &[1, 2], &[1.0, 2.0])];
        let err = run(&model([1, 2, 2, 2], nodes, init), [2, 2, 2], &x).unwrap_err();
        assert!(err.contains("node y"), "{err}");
    }
}

/// `--resize area` is Pillow's box filter under the name other libraries give it: accepted by
/// `import` (and `pack`) and stored as `box`, so the file format keeps one name per filter.
#[test]
fn resize_area_is_stored_as_box() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.cxrm");
    let source = root().join("fixtures/import/opset_mix_op11.onnx");
    import_ok(&source, &out, &["--resize", "area"]);
    let o = cxrm(&["inspect", out.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["metadata"]["input.resize"], "box");
    let o = import(
        &source,
        &dir.path().join("n.cxrm"),
        &["--resize", "lanczos"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("area"), "{}", text(&o));
}
