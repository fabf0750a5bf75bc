//! The runtime end to end: models written by the writer give, through `Model`, the logits a
//! straightforward dense reference forward pass gives; compressed encodings give exactly the
//! logits of their decoded-dense twins; bad models fail with clear errors.

mod common;
use common::FixtureWeights;

use cxrm::runtime::{InputSpec, Model, RuntimeOptions, preprocess};
use cxrm::{Cxrm, DType, Graph, Node, Value, Writer};
use ndarray::{Array3, Array4};
use serde_json::{Value as Json, json};

fn input(model: &Model<'_>) -> Array4<f32> {
    let x = preprocess::normalise(&common::runtime_input_pixels(), &model.input);
    x.insert_axis(ndarray::Axis(0))
}

fn weights(file: &Cxrm<'_>, name: &str) -> Vec<f32> {
    file.decode(name).unwrap().to_f32_vec()
}

/// How a reference layer treats its input.
#[derive(Clone, Copy)]
enum Input<'t> {
    Real,
    /// XNOR-Net: signs, each output scaled by the mean magnitude of its receptive field.
    Xnor,
    /// Spec 1.5's `sign` in front: `±1` at a threshold per channel, no scaling.
    Sign(&'t [f32]),
}

impl Input<'_> {
    fn binary(self) -> bool {
        !matches!(self, Input::Real)
    }

    /// The value the layer multiplies for input `v` of channel `c`.
    fn value(self, v: f32, c: usize) -> f32 {
        let at = match self {
            Input::Real => return v,
            Input::Xnor => 0.0,
            Input::Sign(t) => t[c],
        };
        if v >= at { 1.0 } else { -1.0 }
    }
}

/// LeNet-5 computed the obvious way, loop by loop, from the decoded weights. In the XNOR form
/// (`conv2` and `fc1` XNOR layers, no ReLU before them) those layers take the signs of their
/// input and scale each output by the mean magnitude of its receptive field; in the sign form
/// they take signs at the thresholds of the `sign` nodes in front, unscaled.
fn reference_lenet5(file: &Cxrm<'_>, x: &Array3<f32>) -> Vec<f32> {
    fn conv(
        x: &Array3<f32>,
        w: &[f32],
        b: &[f32],
        (cout, k, pad): (usize, usize, usize),
        input: Input<'_>,
    ) -> Array3<f32> {
        let (cin, h, wd) = x.dim();
        let (oh, ow) = (h + 2 * pad - k + 1, wd + 2 * pad - k + 1);
        Array3::from_shape_fn((cout, oh, ow), |(o, y, xx)| {
            let (mut acc, mut mag) = (0.0f64, 0.0f64);
            for c in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        let (iy, ix) = (
                            (y + ky) as isize - pad as isize,
                            (xx + kx) as isize - pad as isize,
                        );
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                            let v = x[[c, iy as usize, ix as usize]];
                            mag += v.abs() as f64;
                            let v = input.value(v, c);
                            acc += (w[((o * cin + c) * k + ky) * k + kx] * v) as f64;
                        }
                    }
                }
            }
            if matches!(input, Input::Xnor) {
                acc *= mag / (cin * k * k) as f64;
            }
            (acc + b[o] as f64) as f32
        })
    }
    fn pool(x: &Array3<f32>, relu: bool) -> Array3<f32> {
        let (c, h, w) = x.dim();
        Array3::from_shape_fn((c, h / 2, w / 2), |(ch, y, xx)| {
            let m = [
                x[[ch, 2 * y, 2 * xx]],
                x[[ch, 2 * y + 1, 2 * xx]],
                x[[ch, 2 * y, 2 * xx + 1]],
                x[[ch, 2 * y + 1, 2 * xx + 1]],
            ];
            let m = m.iter().fold(f32::MIN, |a, &b| a.max(b));
            if relu { m.max(0.0) } else { m }
        })
    }
    fn fc(x: &[f32], w: &[f32], b: &[f32], relu: bool, input: Input<'_>) -> Vec<f32> {
        let k = x.iter().map(|v| v.abs() as f64).sum::<f64>() / x.len() as f64;
        (0..b.len())
            .map(|o| {
                let dot = x
                    .iter()
                    .enumerate()
                    .map(|(i, &xi)| (input.value(xi, i) * w[o * x.len() + i]) as f64)
                    .sum::<f64>();
                let xnor = matches!(input, Input::Xnor);
                let v = b[o] as f64 + if xnor { dot * k } else { dot };
                if relu { (v as f32).max(0.0) } else { v as f32 }
            })
            .collect()
    }
    let nodes = file.graph().unwrap().unwrap().nodes;
    let has = |op: &str| nodes.iter().any(|n| n.op.starts_with(op));
    let w = |n: &str| weights(file, n);
    let (conv2_t, fc1_t) = if has("sign") {
        (w("conv2_sign.threshold"), w("fc1_sign.threshold"))
    } else {
        (Vec::new(), Vec::new())
    };
    let (conv2_in, fc1_in) = if has("sign") {
        (Input::Sign(&conv2_t), Input::Sign(&fc1_t))
    } else if has("xnor") {
        (Input::Xnor, Input::Xnor)
    } else {
        (Input::Real, Input::Real)
    };
    let relu = !conv2_in.binary();
    let a = pool(
        &conv(
            x,
            &w("conv1.weight"),
            &w("conv1.bias"),
            (6, 5, 2),
            Input::Real,
        ),
        relu,
    );
    let a = pool(
        &conv(
            &a,
            &w("conv2.weight"),
            &w("conv2.bias"),
            (16, 5, 0),
            conv2_in,
        ),
        relu,
    );
    let flat: Vec<f32> = a.iter().copied().collect();
    let f = fc(&flat, &w("fc1.weight"), &w("fc1.bias"), true, fc1_in);
    let f = fc(&f, &w("fc2.weight"), &w("fc2.bias"), true, Input::Real);
    fc(&f, &w("fc3.weight"), &w("fc3.bias"), false, Input::Real)
}

fn logits(bytes: &[u8], options: RuntimeOptions) -> Vec<f32> {
    let file = Cxrm::parse(bytes).unwrap();
    let model = Model::load_with(&file, options).unwrap();
    model.forward(input(&model).view()).unwrap().row(0).to_vec()
}

fn assert_close(a: &[f32], b: &[f32], rel: f32) {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= rel * scale.max(1e-6), "{a:?}\nvs\n{b:?}");
    }
}

#[test]
fn lenet5_matches_the_reference_forward_pass() {
    for (name, bytes) in common::runtime_fixtures() {
        let file = Cxrm::parse(&bytes).unwrap();
        let model = Model::load(&file).unwrap();
        let x = preprocess::normalise(&common::runtime_input_pixels(), &model.input);
        let want = reference_lenet5(&file, &x);
        let got = model
            .forward(x.insert_axis(ndarray::Axis(0)).view())
            .unwrap()
            .row(0)
            .to_vec();
        assert_close(&got, &want, 1e-5);
        // Dense-only kernels agree too.
        assert_close(
            &logits(
                &bytes,
                RuntimeOptions {
                    sparse_below_density: 0.0,
                    ..Default::default()
                },
            ),
            &want,
            1e-5,
        );
        eprintln!("{name}: ok");
    }
}

#[test]
fn compressed_encodings_give_exactly_the_logits_of_their_dense_twins() {
    let dc = common::lenet5(common::Form::Deep);
    let file = Cxrm::parse(&dc).unwrap();
    // The decoded-dense twin: same graph and metadata, every tensor stored dense.
    let w = Writer::dense_copy_of(&file).unwrap();
    let twin = w.to_bytes().unwrap();
    for options in [
        RuntimeOptions::default(),
        RuntimeOptions {
            sparse_below_density: 0.0,
            ..Default::default()
        },
    ] {
        let a = logits(&dc, options);
        let b = logits(&twin, options);
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn factored_and_binary_weights_give_the_logits_of_their_dense_twins() {
    for (form, kernels) in [
        (
            common::Form::Factored,
            ["dense", "tucker", "lowrank", "lowrank"],
        ),
        (common::Form::Xnor, ["dense", "xnor", "xnor", "dense"]),
    ] {
        let bytes = common::lenet5(form);
        let file = Cxrm::parse(&bytes).unwrap();
        let model = Model::load(&file).unwrap();
        let used: Vec<&str> = model
            .layer_info()
            .iter()
            .map(|l| l.kernel)
            .filter(|k| !k.is_empty())
            .collect();
        assert_eq!(used[..4], kernels, "{form:?} runs natively");
        let twin = Writer::dense_copy_of(&file).unwrap().to_bytes().unwrap();
        let twin_file = Cxrm::parse(&twin).unwrap();
        let twin_model = Model::load(&twin_file).unwrap();
        assert!(
            twin_model
                .layer_info()
                .iter()
                .all(|l| !matches!(l.kernel, "tucker" | "lowrank" | "xnor")),
            "the twin runs dense"
        );
        let a = logits(&bytes, RuntimeOptions::default());
        let b = logits(&twin, RuntimeOptions::default());
        assert_close(&a, &b, 1e-5);
    }
}

#[test]
fn factored_weights_outside_their_native_kernels_are_rebuilt() {
    // Grouped and depthwise convolutions and a plain dense layer over lowrank, tucker and
    // binary weights: each runs (rebuilt where no factored kernel applies) as its twin does.
    use cxrm::format::encoding::{binary, lowrank, tucker};
    let mut rng = common::Lcg(21);
    let mut w = Writer::new();
    w.set_metadata("input.shape", Value::ints([2, 6, 6]));
    let lr = lowrank::LowRank {
        rows: 4,
        cols: 9,
        rank: 2,
        u: (0..8).map(|_| rng.weight(1.0)).collect(),
        v: (0..18).map(|_| rng.weight(1.0)).collect(),
    };
    w.add_tensor(
        "grouped.w",
        DType::F32,
        &[4, 1, 3, 3],
        lowrank::encode(&lr, DType::F32),
    )
    .unwrap();
    let tk = tucker::Tucker {
        out: 4,
        inp: 1,
        spatial: 9,
        rank_out: 2,
        rank_in: 1,
        u_out: (0..8).map(|_| rng.weight(1.0)).collect(),
        core: (0..18).map(|_| rng.weight(1.0)).collect(),
        u_in: vec![1.0],
    };
    w.add_tensor(
        "depthwise.w",
        DType::F32,
        &[4, 1, 3, 3],
        tucker::encode(&tk, DType::F32),
    )
    .unwrap();
    let signs: Vec<f32> = (0..3 * 16).map(|_| rng.weight(1.0)).collect();
    let b = binary::binarize(&signs, 3, 16, DType::F32);
    w.add_tensor(
        "fc.w",
        DType::F32,
        &[3, 16],
        binary::encode(
            &b,
            binary::Params {
                scale_dtype: DType::F32,
            },
        ),
    )
    .unwrap();
    w.set_graph(Graph {
        nodes: vec![
            Node::new("g", "conv2d", &["input"], &["grouped.w"]).attr("groups", Value::Int(2)),
            Node::new("d", "conv2d", &["g"], &["depthwise.w"]).attr("groups", Value::Int(4)),
            Node::new("f", "flatten", &["d"], &[]),
            Node::new("fc", "dense", &["f"], &["fc.w"]),
        ],
    });
    let bytes = w.to_bytes().unwrap();
    let file = Cxrm::parse(&bytes).unwrap();
    let twin = Writer::dense_copy_of(&file).unwrap().to_bytes().unwrap();
    let x = Array4::from_shape_fn((2, 2, 6, 6), |(n, c, y, x)| {
        ((n * 7 + c * 5 + y * 3 + x) % 11) as f32 / 5.0 - 1.0
    });
    let run = |bytes: &[u8]| {
        let file = Cxrm::parse(bytes).unwrap();
        let model = Model::load(&file).unwrap();
        model
            .forward(x.view())
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<f32>>()
    };
    assert_close(&run(&bytes), &run(&twin), 1e-5);
}

/// `fixtures/runtime/NAME.logits.json`, and the logits it lists.
fn expected_logits(name: &str) -> (Json, Vec<f32>) {
    let path = common::fixtures_dir().join(format!("runtime/{name}.logits.json"));
    let doc: Json = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let logits = doc["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    (doc, logits)
}

#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    for (name, bytes) in common::runtime_fixtures() {
        let file = Cxrm::parse(&bytes).unwrap();
        let run = |threads: usize, batch: usize| {
            let options = RuntimeOptions {
                threads,
                ..Default::default()
            };
            let model = Model::load_with(&file, options).unwrap();
            let one = input(&model);
            let x = ndarray::concatenate(ndarray::Axis(0), &vec![one.view(); batch]).unwrap();
            let y = model.forward(x.view()).unwrap();
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let alone = run(1, 1);
        for batch in [1, 3, 8] {
            assert_eq!(run(1, batch), run(2, batch), "{name}, batch {batch}");
            assert_eq!(run(1, batch), run(3, batch), "{name}, batch {batch}");
            assert_eq!(
                run(0, batch),
                run(1, batch),
                "{name}, batch {batch}, default"
            );
            // Images run one at a time through the graph: each of a batch's rows is the
            // image's output alone, bit for bit.
            for row in run(2, batch).chunks(alone.len()) {
                assert_eq!(row, &alone[..], "{name}, batch {batch}");
            }
        }
    }
}

#[test]
fn committed_fixture_logits_still_match() {
    let dir = common::fixtures_dir().join("runtime");
    for (name, bytes) in common::runtime_fixtures() {
        let committed = std::fs::read(dir.join(format!("{name}.cxrm"))).unwrap();
        assert!(
            committed == bytes,
            "fixtures/runtime/{name}.cxrm differs from its generator"
        );
        let (_, want) = expected_logits(name);
        assert_close(&logits(&committed, RuntimeOptions::default()), &want, 1e-5);
    }
}

/// Writes fixtures/runtime/ (run with the other generators, see tests/fixtures.rs).
#[test]
#[ignore]
fn regenerate_runtime_fixtures() {
    if std::env::var_os("CXRM_REGEN").is_none() {
        return;
    }
    let dir = common::fixtures_dir().join("runtime");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in common::runtime_fixtures() {
        std::fs::write(dir.join(format!("{name}.cxrm")), &bytes).unwrap();
        let doc = json!({
            "input": "one 28x28 grey image, pixel (y, x) = (7y + 3x) mod 256, normalised as the file's metadata says",
            "logits": logits(&bytes, RuntimeOptions::default()),
        });
        std::fs::write(
            dir.join(format!("{name}.logits.json")),
            serde_json::to_string_pretty(&doc).unwrap() + "\n",
        )
        .unwrap();
    }
}

fn tiny_model(graph: Vec<Node>, extra: impl FnOnce(&mut Writer<'static>)) -> Vec<u8> {
    let mut w = Writer::new();
    w.set_metadata("input.shape", Value::ints([2, 6, 6]));
    let mut rng = common::Lcg(9);
    let conv: Vec<f32> = (0..4 * 2 * 9).map(|_| rng.weight(0.5)).collect();
    w.add_dense("c.w", DType::F32, &[4, 2, 3, 3], common::f32_bytes(&conv))
        .unwrap();
    let bn: Vec<Vec<f32>> = vec![
        vec![1.5, 0.5, 2.0, 1.0],
        vec![0.1, -0.2, 0.3, 0.0],
        vec![0.05, -0.1, 0.2, 0.0],
        vec![0.9, 1.1, 0.5, 2.0],
    ];
    for (i, v) in bn.iter().enumerate() {
        w.add_dense(&format!("bn.{i}"), DType::F32, &[4], common::f32_bytes(v))
            .unwrap();
    }
    let fc: Vec<f32> = (0..3 * 4).map(|_| rng.weight(0.5)).collect();
    w.add_dense("fc.w", DType::F32, &[3, 4], common::f32_bytes(&fc))
        .unwrap();
    extra(&mut w);
    w.set_graph(Graph { nodes: graph });
    w.to_bytes().unwrap()
}

#[test]
fn batch_norm_is_folded_and_residual_adds_work() {
    let nodes = vec![
        Node::new("c", "conv2d", &["input"], &["c.w"]).attr("padding", Value::ints([1, 1, 1, 1])),
        Node::new(
            "bn",
            "batch_norm",
            &["c"],
            &["bn.0", "bn.1", "bn.2", "bn.3"],
        )
        .attr("epsilon", Value::Float(1e-3)),
        Node::new("r", "relu6", &["bn"], &[]),
        Node::new("c2", "conv2d", &["r"], &["c2.w"])
            .attr("padding", Value::ints([1, 1, 1, 1]))
            .attr("groups", Value::Int(4)),
        Node::new("sum", "add", &["r", "c2"], &[]),
        Node::new("g", "global_avg_pool", &["sum"], &[]),
        Node::new("fc", "dense", &["g"], &["fc.w"]),
        Node::new("p", "softmax", &["fc"], &[]),
    ];
    let bytes = tiny_model(nodes, |w| {
        let dw: Vec<f32> = (0..36).map(|i| (i as f32 - 18.0) / 40.0).collect();
        w.add_dense("c2.w", DType::F32, &[4, 1, 3, 3], common::f32_bytes(&dw))
            .unwrap();
    });
    let file = Cxrm::parse(&bytes).unwrap();
    let model = Model::load(&file).unwrap();
    assert!(model.ends_in_softmax());
    assert!(
        model
            .layer_info()
            .iter()
            .any(|l| l.op == "batch_norm (folded)")
    );
    let x = Array4::from_shape_fn((2, 2, 6, 6), |(n, c, y, xx)| {
        ((n * 7 + c * 5 + y * 3 + xx) % 11) as f32 / 11.0 - 0.5
    });
    let out = model.forward(x.view()).unwrap();
    // Reference: the same ops unfused, from the ops module's tested kernels.
    use cxrm::runtime::ops::{self, Conv2dParams, Matrix};
    let w = |n: &str| weights(&file, n);
    let p = Conv2dParams {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1, 1, 1],
        dilation: [1, 1],
        groups: 1,
    };
    let mut a = ops::conv2d(
        x.view(),
        &Matrix::Dense {
            data: w("c.w").into(),
            rows: 4,
            cols: 18,
        },
        None,
        &p,
    );
    let (g, b, m, v) = (w("bn.0"), w("bn.1"), w("bn.2"), w("bn.3"));
    for mut img in a.outer_iter_mut() {
        for (c, mut ch) in img.outer_iter_mut().enumerate() {
            ch.mapv_inplace(|t| ((t - m[c]) / (v[c] + 1e-3).sqrt() * g[c] + b[c]).clamp(0.0, 6.0));
        }
    }
    let dw = ops::conv2d(
        a.view(),
        &Matrix::Dense {
            data: w("c2.w").into(),
            rows: 4,
            cols: 9,
        },
        None,
        &Conv2dParams { groups: 4, ..p },
    );
    let s = &a + &dw;
    let gp = ops::global_avg_pool(s.view());
    let mut want = ops::dense(
        gp.view(),
        &Matrix::Dense {
            data: w("fc.w").into(),
            rows: 3,
            cols: 4,
        },
        None,
    );
    ops::softmax(&mut want);
    assert_close(out.as_slice().unwrap(), want.as_slice().unwrap(), 1e-5);
}

#[test]
fn bad_models_fail_with_clear_errors() {
    let err = |nodes: Vec<Node>| {
        let bytes = tiny_model(nodes, |_| {});
        let file = Cxrm::parse(&bytes).unwrap();
        Model::load(&file).err().expect("must fail").to_string()
    };
    let msg = err(vec![Node::new("fc", "dense", &["input"], &["fc.w"])]);
    assert!(msg.contains("flat input"), "{msg}");
    let msg = err(vec![
        Node::new("f", "flatten", &["input"], &[]),
        Node::new("fc", "dense", &["f"], &["fc.w"]),
    ]);
    assert!(
        msg.contains("72 features") && msg.contains("expects 4"),
        "{msg}"
    );
    let msg = err(vec![Node::new("c", "conv2d", &["input"], &["fc.w"])]);
    assert!(msg.contains("[out, in/groups, kh, kw]"), "{msg}");
    let msg = err(vec![Node::new("x", "lstm", &["input"], &[])]);
    assert!(msg.contains("not implemented"), "{msg}");
    // A sign's thresholds: one per input channel (the input has 2; bn.0 holds 4 values).
    let msg = err(vec![Node::new("s", "sign", &["input"], &["bn.0"])]);
    assert!(
        msg.contains("threshold") && msg.contains("4 values"),
        "{msg}"
    );
    let msg = err(vec![
        Node::new("c", "conv2d", &["input"], &["c.w"]).attr("stride", Value::ints([1])),
    ]);
    assert!(msg.contains("stride needs 2 values"), "{msg}");
    let grouped = |w: &mut Writer<'static>| {
        w.add_dense(
            "g.w",
            DType::F32,
            &[4, 1, 3, 3],
            common::f32_bytes(&[0.5; 36]),
        )
        .unwrap();
    };
    let bytes = tiny_model(
        vec![Node::new("x", "xnor_conv2d", &["input"], &["g.w"]).attr("groups", Value::Int(2))],
        grouped,
    );
    let msg = Model::load(&Cxrm::parse(&bytes).unwrap())
        .err()
        .expect("must fail")
        .to_string();
    assert!(msg.contains("groups 1"), "{msg}");
    // Wrong channel count at run time.
    let bytes = tiny_model(
        vec![Node::new("g", "global_avg_pool", &["input"], &[])],
        |_| {},
    );
    let file = Cxrm::parse(&bytes).unwrap();
    let model = Model::load(&file).unwrap();
    let e = model
        .forward(Array4::zeros((1, 3, 6, 6)).view())
        .unwrap_err()
        .to_string();
    assert!(e.contains("input is 3x6x6"), "{e}");
    // No input metadata.
    let mut w = Writer::new();
    w.add_dense("t", DType::F32, &[1], vec![0u8; 4]).unwrap();
    w.set_graph(Graph {
        nodes: vec![Node::new("f", "flatten", &["input"], &[])],
    });
    let bytes = w.to_bytes().unwrap();
    let e = Model::load(&Cxrm::parse(&bytes).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("input.shape"), "{e}");
    let _ = InputSpec::from_metadata(&vec![]).unwrap_err();
    // A graph naming a tensor the file lacks (a conformance fixture).
    let bytes =
        std::fs::read(common::fixtures_dir().join("invalid/graph_missing_tensor.cxrm")).unwrap();
    let e = Model::load(&Cxrm::parse(&bytes).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bad_graph") && e.contains("fc.bais"), "{e}");
}

#[test]
fn unused_weights_are_never_decoded() {
    // A file whose graph does not use a large, corrupt tensor still loads and runs: the
    // runtime touches only what the graph needs.
    let mut bytes = tiny_model(
        vec![Node::new("g", "global_avg_pool", &["input"], &[])],
        |w| {
            w.add_dense("unused", DType::F32, &[1 << 16], vec![0u8; 1 << 18])
                .unwrap();
        },
    );
    let file = Cxrm::parse(&bytes).unwrap();
    let extent = file.tensor("unused").unwrap().extent;
    bytes[extent.offset as usize + 100] ^= 0xff; // its CRC no longer matches
    let file = Cxrm::parse(&bytes).unwrap();
    let model = Model::load(&file).unwrap();
    model.forward(Array4::zeros((1, 2, 6, 6)).view()).unwrap();
}

/// Trained fixtures: a LeNet-5-shaped network trained on the bundled MNIST subset, and its
/// Deep Compression, each with one real test digit and the logits it gives. Made by
/// tools/make_trained_fixtures.sh (`cxrm train`, `cxrm compress`, then the generator below);
/// training is not bit-reproducible across machines, so the files are committed, not rebuilt.
const TRAINED_FIXTURES: [&str; 2] = ["lenet5_trained", "lenet5_trained_dc"];

/// The bundled MNIST test split (1,000 real digits).
fn bundled_mnist_test() -> cxrm::runtime::data::Dataset {
    cxrm::runtime::data::idx_test_split(
        &common::fixtures_dir().join("data/mnist"),
        cxrm::runtime::data::class_names("mnist"),
    )
    .unwrap()
}

fn trained_logits(model: &Model<'_>, pixels: &[u8]) -> Vec<f32> {
    let x = preprocess::normalise(pixels, &model.input);
    model
        .forward(x.insert_axis(ndarray::Axis(0)).view())
        .unwrap()
        .row(0)
        .to_vec()
}

#[cfg(feature = "cli")]
#[test]
fn trained_fixtures_classify_real_digits() {
    let dir = common::fixtures_dir().join("runtime");
    let test = bundled_mnist_test();
    for name in TRAINED_FIXTURES {
        let bytes = std::fs::read(dir.join(format!("{name}.cxrm"))).unwrap();
        let file = Cxrm::parse(&bytes).unwrap();
        let model = Model::load(&file).unwrap();
        let (expected, want) = expected_logits(name);
        let pixels: Vec<u8> = expected["pixels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        let got = trained_logits(&model, &pixels);
        assert_close(&got, &want, 1e-5);
        assert_eq!(
            cxrm::runtime::metrics::argmax(&got) as u64,
            expected["label"].as_u64().unwrap(),
            "{name}"
        );
        // The PNG beside it is the same digit, and preprocessing it gives the same logits.
        let from_png = preprocess::load(&dir.join("digit.png"), &model.input).unwrap();
        assert_close(
            &model
                .forward(from_png.insert_axis(ndarray::Axis(0)).view())
                .unwrap()
                .row(0)
                .to_vec(),
            &want,
            1e-5,
        );
        // Trained, not random: most of the bundled test digits come out right.
        let eval =
            cxrm::runtime::batch::evaluate(&model, &test, test.len(), 100, &mut |_| {}).unwrap();
        assert!(eval.accuracy > 0.95, "{name}: {}", eval.accuracy);
    }
}

/// Writes fixtures/runtime/digit.png and the trained fixtures' logits files (the .cxrm files
/// come from tools/make_trained_fixtures.sh, which runs this last).
#[cfg(feature = "cli")]
#[test]
#[ignore]
fn regenerate_trained_fixture_logits() {
    if std::env::var_os("CXRM_REGEN").is_none() {
        return;
    }
    let dir = common::fixtures_dir().join("runtime");
    let test = bundled_mnist_test();
    // The first test digit, as every MNIST walkthrough shows it (a 7).
    let (pixels, label) = (test.image(0).to_vec(), test.labels[0]);
    image::GrayImage::from_raw(test.width as u32, test.height as u32, pixels.clone())
        .unwrap()
        .save(dir.join("digit.png"))
        .unwrap();
    for name in TRAINED_FIXTURES {
        let bytes = std::fs::read(dir.join(format!("{name}.cxrm"))).unwrap();
        let file = Cxrm::parse(&bytes).unwrap();
        let model = Model::load(&file).unwrap();
        let doc = json!({
            "input": "digit.png: MNIST test image 0 (28x28 grey, `pixels` row-major), normalised as the file's metadata says",
            "label": label,
            "pixels": pixels,
            "logits": trained_logits(&model, &pixels),
        });
        std::fs::write(
            dir.join(format!("{name}.logits.json")),
            serde_json::to_string_pretty(&doc).unwrap() + "\n",
        )
        .unwrap();
    }
}

#[test]
fn a_weight_shared_by_many_nodes_is_decoded_once() {
    // One mostly-zero 8×8 weight, stored encoded (zstd), used by four dense layers in a
    // chain; a twin file gives each layer its own copy. Same outputs; one decode.
    let mut rng = common::Lcg(5);
    let w: Vec<f32> = (0..64)
        .map(|i| if i % 9 == 0 { rng.weight(1.0) } else { 0.0 })
        .collect();
    let bytes = common::f32_bytes(&w);
    let build = |shared: bool| {
        let mut writer = Writer::new();
        writer.set_metadata("input.shape", Value::ints([8, 1, 1]));
        let names: Vec<String> = (0..4)
            .map(|i| if shared { "w".into() } else { format!("w{i}") })
            .collect();
        let mut added = std::collections::HashSet::new();
        for name in &names {
            if added.insert(name.clone()) {
                let enc = cxrm::format::encoding::zstd::encode(
                    cxrm::format::encoding::dense::encode(bytes.clone().into()),
                    19,
                )
                .unwrap();
                assert_eq!(enc.stages.len(), 2, "the weight is stored encoded");
                writer.add_tensor(name, DType::F32, &[8, 8], enc).unwrap();
            }
        }
        let mut graph = vec![Node::new("flat", "flatten", &["input"], &[])];
        let mut prev = "flat".to_string();
        for (i, name) in names.iter().enumerate() {
            let node = format!("fc{i}");
            graph.push(Node::new(&node, "dense", &[&prev], &[name]));
            prev = node;
        }
        writer.set_graph(Graph { nodes: graph });
        writer.to_bytes().unwrap()
    };
    let (shared, copies) = (build(true), build(false));
    let x = Array4::from_shape_fn((1, 8, 1, 1), |(_, c, _, _)| c as f32 / 8.0 - 0.3);
    let run = |bytes: &[u8]| {
        let file = Cxrm::parse(bytes).unwrap();
        let model = Model::load(&file).unwrap();
        (model.weights_decoded, model.forward(x.view()).unwrap())
    };
    let (decoded_shared, out_shared) = run(&shared);
    let (decoded_copies, out_copies) = run(&copies);
    assert_eq!(decoded_shared, 1);
    assert_eq!(decoded_copies, 4);
    assert_eq!(out_shared, out_copies);
}

#[test]
fn a_large_pruned_weight_decoded_ahead_runs_sparse_or_dense_with_its_values() {
    // A 300×300 dense layer (large enough to be decoded ahead of the layers) with 28% of its
    // weights kept, stored encoded. Decoded ahead, it is kept as CSR rows, since a
    // convolution could take it sparse up to 40%; a threshold below 28% sends it back to
    // dense values, which must be the values stored: the same bits as a model that never
    // runs anything sparse.
    let n = 300;
    let mut rng = common::Lcg(11);
    let w: Vec<f32> = (0..n * n)
        .map(|i| {
            let v = rng.weight(1.0);
            if (i * 7919) % 100 < 28 { v } else { 0.0 }
        })
        .collect();
    let mut writer = Writer::new();
    writer.set_metadata("input.shape", Value::ints([n as i64, 1, 1]));
    let enc = cxrm::format::encoding::zstd::encode(
        cxrm::format::encoding::dense::encode(common::f32_bytes(&w).into()),
        3,
    )
    .unwrap();
    writer
        .add_tensor("w", DType::F32, &[n as u64, n as u64], enc)
        .unwrap();
    writer.set_graph(Graph {
        nodes: vec![
            Node::new("flat", "flatten", &["input"], &[]),
            Node::new("fc", "dense", &["flat"], &["w"]),
        ],
    });
    let bytes = writer.to_bytes().unwrap();
    let x = Array4::from_shape_fn((1, n, 1, 1), |(_, c, _, _)| (c as f32 * 0.37).sin());
    let run = |sparse_below_density: f64| {
        let file = Cxrm::parse(&bytes).unwrap();
        let options = RuntimeOptions {
            sparse_below_density,
            ..Default::default()
        };
        let model = Model::load_with(&file, options).unwrap();
        let out = model.forward(x.view()).unwrap();
        let owned = model.weight_bytes().owned;
        (
            owned,
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            out,
        )
    };
    let (dense_bytes, dense_bits, dense) = run(0.0);
    let (densified_bytes, densified_bits, _) = run(0.25);
    let (sparse_bytes, _, sparse) = run(0.3);
    assert_eq!(densified_bits, dense_bits);
    assert_eq!(densified_bytes, dense_bytes, "run dense");
    assert!(sparse_bytes < dense_bytes, "run as CSR rows");
    assert_close(sparse.as_slice().unwrap(), dense.as_slice().unwrap(), 1e-5);
}

/// A model of every layer kind that does not need weights of its own kind: sigmoid,
/// hard swish, a per-channel mul, concat, pad, both poolings, add, flatten, dense, softmax,
/// after a convolution with a folded batch norm and a fused relu6; some of them run in place,
/// others read a value that is still needed.
fn every_op_model() -> Vec<u8> {
    let nodes = vec![
        Node::new("c", "conv2d", &["input"], &["c.w"]).attr("padding", Value::ints([1, 1, 1, 1])),
        Node::new(
            "bn",
            "batch_norm",
            &["c"],
            &["bn.0", "bn.1", "bn.2", "bn.3"],
        ),
        Node::new("r", "relu6", &["bn"], &[]),
        Node::new("s", "sigmoid", &["r"], &[]),
        Node::new("hs", "hard_swish", &["r"], &[]),
        Node::new("g", "global_avg_pool", &["hs"], &[]),
        Node::new("m", "mul", &["s", "g"], &[]),
        Node::new("cat", "concat", &["m", "hs"], &[]),
        Node::new("pd", "pad", &["cat"], &[]).attr("padding", Value::ints([1, 0, 0, 1])),
        Node::new("mp", "max_pool2d", &["pd"], &[])
            .attr("kernel", Value::ints([3, 3]))
            .attr("stride", Value::ints([2, 2])),
        Node::new("ap", "avg_pool2d", &["pd"], &[])
            .attr("kernel", Value::ints([3, 3]))
            .attr("stride", Value::ints([2, 2])),
        Node::new("sum", "add", &["mp", "ap"], &[]),
        Node::new("sq", "mul", &["sum", "sum"], &[]),
        Node::new("f", "flatten", &["sq"], &[]),
        Node::new("fc", "dense", &["f"], &["fc8.w"]),
        Node::new("p", "softmax", &["fc"], &[]),
    ];
    tiny_model(nodes, |w| {
        let mut rng = common::Lcg(21);
        let fc: Vec<f32> = (0..3 * 72).map(|_| rng.weight(0.5)).collect();
        w.add_dense("fc8.w", DType::F32, &[3, 72], common::f32_bytes(&fc))
            .unwrap();
    })
}

/// 1×1 convolutions wide enough for the packed product (40 channels), with a bias, a fused
/// relu and a fused residual add, one whose 64 channels fill more lanes than its 36 pixels
/// (its weights packed as channel panels where the own kernels run), and a narrow one (4
/// channels) read in place: a batch's images run them together, each image's 36 pixels
/// ending inside a panel.
fn pointwise_model() -> Vec<u8> {
    let nodes = vec![
        Node::new("c", "conv2d", &["input"], &["c.w"]).attr("padding", Value::ints([1, 1, 1, 1])),
        Node::new("r", "relu", &["c"], &[]),
        Node::new("p1", "conv2d", &["r"], &["p1.w", "p1.b"]),
        Node::new("r1", "relu", &["p1"], &[]),
        Node::new("p2", "conv2d", &["r1"], &["p2.w"]),
        Node::new("sum", "add", &["p2", "r1"], &[]),
        Node::new("r2", "relu", &["sum"], &[]),
        Node::new("q", "conv2d", &["r2"], &["q.w", "q.b"]),
        Node::new("rq", "relu", &["q"], &[]),
        Node::new("p3", "conv2d", &["rq"], &["p3.w"]),
        Node::new("g", "global_avg_pool", &["p3"], &[]),
        Node::new("f", "flatten", &["g"], &[]),
        Node::new("fc", "dense", &["f"], &["fc.w"]),
        Node::new("p", "softmax", &["fc"], &[]),
    ];
    tiny_model(nodes, |w| {
        let mut rng = common::Lcg(33);
        let mut add = |name: &str, shape: &[u64]| {
            let values: Vec<f32> = (0..shape.iter().product::<u64>())
                .map(|_| rng.weight(0.5))
                .collect();
            w.add_dense(name, DType::F32, shape, common::f32_bytes(&values))
                .unwrap();
        };
        add("p1.w", &[40, 4, 1, 1]);
        add("p1.b", &[40]);
        add("p2.w", &[40, 40, 1, 1]);
        add("q.w", &[64, 40, 1, 1]);
        add("q.b", &[64]);
        add("p3.w", &[4, 64, 1, 1]);
    })
}

/// `count` different images for a `[2, 6, 6]` model.
fn distinct_images(count: usize) -> Array4<f32> {
    Array4::from_shape_fn((count, 2, 6, 6), |(n, c, y, x)| {
        ((n * 13 + c * 5 + y * 3 + x * 7) % 17) as f32 / 8.0 - 1.0
    })
}

#[test]
fn passes_reuse_their_arena_without_carrying_anything_over() {
    let models = std::iter::once(every_op_model()).chain(
        common::runtime_fixtures()
            .into_iter()
            .map(|(_, bytes)| bytes),
    );
    for bytes in models {
        let file = Cxrm::parse(&bytes).unwrap();
        let model = Model::load_with(
            &file,
            RuntimeOptions {
                threads: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(model.arena_bytes_per_image >= model.peak_bytes_per_image);
        let s = &model.input;
        let images = Array4::from_shape_fn((2, s.channels, s.height, s.width), |(n, c, y, x)| {
            ((n * 13 + c * 5 + y * 3 + x * 7) % 17) as f32 / 8.0 - 1.0
        });
        let pass = |n: usize| {
            let y = model
                .forward(images.slice(ndarray::s![n..n + 1, .., .., ..]))
                .unwrap();
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        // A, B, A, A: the arena holds B's values when A runs again.
        let first = pass(0);
        let other = pass(1);
        assert_ne!(first, other);
        assert_eq!(pass(0), first);
        assert_eq!(pass(0), first);
    }
}

#[test]
fn every_image_of_a_batch_gets_its_own_bits_on_any_thread_count() {
    for bytes in [every_op_model(), pointwise_model()] {
        each_image_of_a_batch_gets_its_own_bits(&bytes);
    }
}

fn each_image_of_a_batch_gets_its_own_bits(bytes: &[u8]) {
    let file = Cxrm::parse(bytes).unwrap();
    let model = |threads| {
        Model::load_with(
            &file,
            RuntimeOptions {
                threads,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let bits = |a: ndarray::ArrayView1<'_, f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let single = model(1);
    let images = distinct_images(7);
    let alone: Vec<Vec<u32>> = (0..7)
        .map(|i| {
            bits(
                single
                    .forward(images.slice(ndarray::s![i..i + 1, .., .., ..]))
                    .unwrap()
                    .row(0),
            )
        })
        .collect();
    for threads in [1, 2, 3, 0] {
        let m = model(threads);
        for batch in [1, 2, 5, 7] {
            for _ in 0..2 {
                let y = m
                    .forward(images.slice(ndarray::s![..batch, .., .., ..]))
                    .unwrap();
                for (i, row) in y.rows().into_iter().enumerate() {
                    assert_eq!(
                        bits(row),
                        alone[i],
                        "threads {threads}, batch {batch}, image {i}"
                    );
                }
            }
        }
    }
}

/// A `sign` in front of a binary `conv2d` or `dense` runs fused into the popcount kernel; a
/// binary dense weight without one (BWN) runs on the add-only kernel (a convolution's is
/// decoded for the blocked products, which measured faster), and gives its dense twin's
/// logits.
#[test]
fn binary_layers_take_their_kernels() {
    let kernels = |bytes: &[u8]| {
        let file = Cxrm::parse(bytes).unwrap();
        let info = Model::load(&file).unwrap().layer_info();
        let get = |name: &str| {
            let l = info.iter().find(|l| l.name == name).unwrap();
            (l.op, l.kernel)
        };
        (
            get("conv2"),
            get("fc1"),
            info.iter().map(|l| l.op).collect::<Vec<_>>(),
        )
    };
    let (conv2, fc1, ops) = kernels(&common::lenet5(common::Form::Sign));
    assert_eq!((conv2, fc1), (("conv2d", "xnor"), ("dense", "xnor")));
    assert_eq!(ops.iter().filter(|op| **op == "sign (fused)").count(), 2);
    let bwn = common::lenet5(common::Form::Bwn);
    let (conv2, fc1, _) = kernels(&bwn);
    assert_eq!((conv2, fc1), (("conv2d", "dense"), ("dense", "binary")));
    let twin = Writer::dense_copy_of(&Cxrm::parse(&bwn).unwrap())
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_close(
        &logits(&bwn, RuntimeOptions::default()),
        &logits(&twin, RuntimeOptions::default()),
        1e-5,
    );
}

#[test]
fn a_contiguous_image_is_read_where_it_lies_and_gives_the_bits_of_a_copy() {
    // A relu on the input runs in place, over the pass's copy of it; in the other model the
    // first layer reads the caller's image itself.
    let relu_first = vec![
        Node::new("r", "relu", &["input"], &[]),
        Node::new("c", "conv2d", &["r"], &["c.w"]).attr("padding", Value::ints([1, 1, 1, 1])),
        Node::new("g", "global_avg_pool", &["c"], &[]),
        Node::new("fc", "dense", &["g"], &["fc.w"]),
    ];
    for bytes in [tiny_model(relu_first, |_| {}), every_op_model()] {
        let file = Cxrm::parse(&bytes).unwrap();
        let model = Model::load(&file).unwrap();
        let image = distinct_images(1);
        let kept = image.clone();
        let read_in_place = model.forward(image.view()).unwrap();
        assert_eq!(image, kept, "the caller's image is never written");
        // The same values every other column of a wider array: not contiguous, so copied.
        let wide = Array4::from_shape_fn((1, 2, 6, 12), |(n, c, y, x)| {
            if x % 2 == 0 {
                image[[n, c, y, x / 2]]
            } else {
                f32::NAN
            }
        });
        let strided = wide.slice(ndarray::s![.., .., .., ..;2]);
        let copied = model.forward(strided).unwrap();
        let bits = |a: &ndarray::Array2<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&read_in_place), bits(&copied));
    }
}

/// A model of 1×1 convolutions whose residual adds fuse into them: at 32×32 (a product split
/// by columns), 16×16 (by rows) and 7×7 (channel panels, on AVX-512), each large enough to
/// split over two threads. With `keep_apart`, a global pool also reads each projection, so
/// that no add fuses.
fn residual_model(keep_apart: bool) -> Vec<u8> {
    let conv = |name: &str, input: &str| {
        Node::new(
            name,
            "conv2d",
            &[input],
            &[&format!("{name}.w"), &format!("{name}.b")],
        )
    };
    let pool = |name: &str, input: &str, k: i64| {
        Node::new(name, "max_pool2d", &[input], &[])
            .attr("kernel", Value::ints([k, k]))
            .attr("stride", Value::ints([2, 2]))
    };
    let mut nodes = vec![
        conv("e1", "input"),
        Node::new("e1r", "relu6", &["e1"], &[]),
        conv("p1", "e1r"),
        Node::new("sum1", "add", &["input", "p1"], &[]),
        pool("m1", "sum1", 2),
        conv("e2", "m1"),
        Node::new("e2r", "relu", &["e2"], &[]),
        conv("p2", "e2r"),
        // The other order: the convolution's output first.
        Node::new("sum2", "add", &["p2", "e2r"], &[]),
        pool("m2", "sum2", 3),
        conv("p3", "m2"),
        Node::new("sum3", "add", &["m2", "p3"], &[]),
        // A 3×3 convolution's add stays a layer of its own.
        Node::new("c4", "conv2d", &["sum3"], &["c4.w"]).attr("padding", Value::ints([1, 1, 1, 1])),
        Node::new("sum4", "add", &["c4", "sum3"], &[]),
        Node::new("g", "global_avg_pool", &["sum4"], &[]),
        Node::new("fc", "dense", &["g"], &["fc.w"]),
    ];
    if keep_apart {
        for p in ["p1", "p2", "p3"] {
            let after = nodes.iter().position(|n| n.name == p).unwrap() + 1;
            let kept = Node::new(format!("{p}_kept"), "global_avg_pool", &[p], &[]);
            nodes.insert(after, kept);
        }
    }
    let mut w = Writer::new();
    w.set_metadata("input.shape", Value::ints([16, 32, 32]));
    let mut rng = common::Lcg(5);
    let mut add = |name: &str, shape: &[u64]| {
        let len = shape.iter().product::<u64>() as usize;
        let values: Vec<f32> = (0..len).map(|_| rng.weight(0.3)).collect();
        w.add_dense(name, DType::F32, shape, common::f32_bytes(&values))
            .unwrap();
    };
    for (name, cout, cin) in [
        ("e1", 64, 16),
        ("p1", 16, 64),
        ("e2", 128, 16),
        ("p2", 128, 128),
        ("p3", 128, 128),
    ] {
        add(&format!("{name}.w"), &[cout, cin, 1, 1]);
        add(&format!("{name}.b"), &[cout]);
    }
    add("c4.w", &[128, 128, 3, 3]);
    add("fc.w", &[3, 128]);
    w.set_graph(Graph { nodes });
    w.to_bytes().unwrap()
}

#[test]
fn residual_adds_fused_into_pointwise_convolutions_give_the_bits_of_the_add() {
    let bits = |bytes: &[u8], threads: usize| {
        let file = Cxrm::parse(bytes).unwrap();
        let options = RuntimeOptions {
            threads,
            ..RuntimeOptions::default()
        };
        let model = Model::load_with(&file, options).unwrap();
        let fused: Vec<String> = model
            .layer_info()
            .into_iter()
            .filter(|l| l.op == "add (fused)")
            .map(|l| l.name)
            .collect();
        let x = Array4::from_shape_fn((1, 16, 32, 32), |(_, c, y, x)| {
            ((c * 5 + y * 3 + x * 7) % 17) as f32 / 8.0 - 1.0
        });
        let out = model.forward(x.view()).unwrap();
        (fused, out.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
    };
    let (fused_model, apart_model) = (residual_model(false), residual_model(true));
    let (fused, want) = bits(&apart_model, 1);
    assert!(fused.is_empty(), "{fused:?}");
    for threads in [1, 2] {
        let (fused, got) = bits(&fused_model, threads);
        assert_eq!(fused, ["sum1", "sum2", "sum3"], "threads {threads}");
        assert_eq!(got, want, "threads {threads}");
        assert_eq!(bits(&apart_model, threads).1, want, "threads {threads}");
    }
}
