//! Runtime benchmarks (quote them as ratios from one run):
//!
//! * `open_to_first_prediction/lenet5` vs `/lenet5_plus_unused_256MB`: map, check, load and
//!   classify one image, from the LeNet-5 fixture and from the same model with 256 MB of
//!   extra tensors (dense and Deep-Compression-encoded) its graph never uses. Lazy decoding
//!   keeps the ratio near 1.
//! * `forward_batch1/*`: LeNet-5 with dense weights, and pruned 80% + 5-bit + Huffman run with
//!   sparse kernels and with dense kernels (the pruned path must beat the dense one).
//! * `factored_batch1/*`: a small VGG (3 convolutions of 32, 64, 128 channels, two dense
//!   layers) whose conv2, conv3 and fc1 are stored factored (low-rank at a quarter of full rank,
//!   Tucker-2 at ranks out/4 and in/4) or binary in XNOR layers, each against its decoded-dense
//!   twin: the same graph with every tensor stored dense (the native paths must beat them).
//!
//! onnxruntime is the outside baseline: `python3 tools/onnx_bench.py MODEL.cxrm`.

use criterion::{Criterion, criterion_group, criterion_main};
use cxrm::format::encoding::{self, binary, lowrank, tucker};
use cxrm::runtime::{Model, RuntimeOptions, preprocess};
use cxrm::{Cxrm, DType, Graph, Mapped, Node, Value, Writer};
use ndarray::Array4;
use std::hint::black_box;
use std::path::{Path, PathBuf};

/// Kernel comparisons run on one thread, so that a ratio compares kernels, not how well each
/// splits over the cores; the `threads` group measures that.
fn one_thread() -> RuntimeOptions {
    RuntimeOptions {
        threads: 1,
        ..Default::default()
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn input(model: &Model<'_>) -> Array4<f32> {
    let pixels: Vec<u8> = (0..28)
        .flat_map(|y| (0..28).map(move |x| ((7 * y + 3 * x) % 256) as u8))
        .collect();
    preprocess::normalise(&pixels, &model.input).insert_axis(ndarray::Axis(0))
}

/// The LeNet-5 fixture plus 256 MB of tensors the graph does not use.
fn padded_model() -> PathBuf {
    let path = root().join("target/cxrm-bench/lenet5_unused.cxrm");
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let bytes = std::fs::read(root().join("fixtures/runtime/lenet5.cxrm")).unwrap();
    let file = Cxrm::parse(&bytes).unwrap();
    let mut w = Writer::dense_copy_of(&file).unwrap();
    let big = vec![0u8; 128 << 20];
    w.add_dense("unused.dense", DType::F32, &[32 << 20], &big[..])
        .unwrap();
    let mut values: Vec<f32> = (0..(32 << 20))
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    cxrm::compress::methods::deep_compression::prune::prune_layer(&mut values, 0.5);
    let plan = cxrm::compress::methods::deep_compression::store::DeepPlan::pruned()
        .gaps(Some(5))
        .bits(5);
    let enc = cxrm::compress::methods::deep_compression::store::encode(
        &values,
        &[32 << 20],
        &plan.into(),
    )
    .unwrap();
    w.add_tensor("unused.encoded", DType::F32, &[32 << 20], enc)
        .unwrap();
    w.write(&path).unwrap();
    path
}

fn first_prediction(path: &Path) -> f32 {
    let mapped = Mapped::open(path).unwrap();
    let file = mapped.parse().unwrap();
    let model = Model::load(&file).unwrap();
    model.forward(input(&model).view()).unwrap()[[0, 0]]
}

fn open_to_first_prediction(c: &mut Criterion) {
    let small = root().join("fixtures/runtime/lenet5.cxrm");
    let padded = padded_model();
    let mut g = c.benchmark_group("open_to_first_prediction");
    g.bench_function("lenet5", |b| b.iter(|| black_box(first_prediction(&small))));
    g.bench_function("lenet5_plus_unused_256MB", |b| {
        b.iter(|| black_box(first_prediction(&padded)))
    });
    g.finish();
}

fn forward(c: &mut Criterion) {
    let dense = std::fs::read(root().join("fixtures/runtime/lenet5.cxrm")).unwrap();
    let dc = std::fs::read(root().join("fixtures/runtime/lenet5_dc.cxrm")).unwrap();
    let dense_file = Cxrm::parse(&dense).unwrap();
    let dc_file = Cxrm::parse(&dc).unwrap();
    let dense_kernels = RuntimeOptions {
        sparse_below_density: 0.0,
        ..one_thread()
    };
    let models = [
        (
            "lenet5_dense",
            Model::load_with(&dense_file, one_thread()).unwrap(),
        ),
        (
            "lenet5_pruned_sparse_kernels",
            Model::load_with(&dc_file, one_thread()).unwrap(),
        ),
        (
            "lenet5_pruned_dense_kernels",
            Model::load_with(&dc_file, dense_kernels).unwrap(),
        ),
    ];
    let mut g = c.benchmark_group("forward_batch1");
    for (name, model) in &models {
        let x = input(model);
        g.bench_function(*name, |b| {
            b.iter(|| black_box(model.forward(x.view()).unwrap()))
        });
    }
    g.finish();
}

/// How `vgg` stores its middle layers.
#[derive(Clone, Copy)]
enum Form {
    LowRank,
    Tucker,
    Xnor,
}

/// Uniform in [-scale, scale) from a 64-bit LCG (deterministic, no RNG crate).
fn uniform(state: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    let mut rng = cxrm::format::lcg::Lcg(*state);
    let values = (0..n).map(|_| (rng.unit() * 2.0 - 1.0) * scale).collect();
    *state = rng.0;
    values
}

/// A small VGG on 1×28×28 inputs with random weights; conv2, conv3 and fc1 in `form`.
fn vgg(form: Form) -> Vec<u8> {
    let mut rng = 42u64;
    let mut w = Writer::new();
    w.set_metadata("input.shape", Value::ints([1, 28, 28]));
    let layers: [(&str, Vec<u64>); 5] = [
        ("conv1", vec![32, 1, 3, 3]),
        ("conv2", vec![64, 32, 3, 3]),
        ("conv3", vec![128, 64, 3, 3]),
        ("fc1", vec![256, 128 * 3 * 3]),
        ("fc2", vec![10, 256]),
    ];
    let mut nodes = Vec::new();
    let mut prev = cxrm::format::container::graph::INPUT.to_string();
    for (name, shape) in &layers {
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let (rows, cols) = (dims[0], dims[1..].iter().product::<usize>());
        let scale = (3.0 / cols as f32).sqrt();
        let middle = matches!(*name, "conv2" | "conv3" | "fc1");
        let enc = match form {
            Form::LowRank if middle => {
                let r = rows.min(cols) / 4;
                let f = (scale / (r as f32).sqrt()).sqrt();
                lowrank::encode(
                    &lowrank::LowRank {
                        rows,
                        cols,
                        rank: r,
                        u: uniform(&mut rng, rows * r, f),
                        v: uniform(&mut rng, r * cols, f),
                    },
                    DType::F32,
                )
            }
            Form::Tucker if middle && dims.len() == 4 => {
                let (ro, ri, sp) = (dims[0] / 4, dims[1] / 4, dims[2] * dims[3]);
                tucker::encode(
                    &tucker::Tucker {
                        out: dims[0],
                        inp: dims[1],
                        spatial: sp,
                        rank_out: ro,
                        rank_in: ri,
                        u_out: uniform(&mut rng, dims[0] * ro, 0.5),
                        core: uniform(&mut rng, ro * ri * sp, scale),
                        u_in: uniform(&mut rng, dims[1] * ri, 0.5),
                    },
                    DType::F32,
                )
            }
            Form::Xnor if middle => {
                let b = binary::binarize(
                    &uniform(&mut rng, rows * cols, scale),
                    rows,
                    cols,
                    DType::F32,
                );
                binary::encode(
                    &b,
                    binary::Params {
                        scale_dtype: DType::F32,
                    },
                )
            }
            _ => {
                let v = uniform(&mut rng, rows * cols, scale);
                encoding::dense::encode(bytemuck::cast_slice::<f32, u8>(&v).to_vec().into())
            }
        };
        w.add_tensor(&format!("{name}.weight"), DType::F32, shape, enc)
            .unwrap();
        let xnor = matches!(form, Form::Xnor) && middle;
        let weights = [format!("{name}.weight")];
        let weights: Vec<&str> = weights.iter().map(String::as_str).collect();
        if dims.len() == 4 {
            let op = if xnor { "xnor_conv2d" } else { "conv2d" };
            nodes.push(
                Node::new(*name, op, &[&prev], &weights).attr("padding", Value::ints([1, 1, 1, 1])),
            );
            // XNOR layers binarize their input: no ReLU in front of them.
            let act = if matches!(form, Form::Xnor) {
                name.to_string()
            } else {
                nodes.push(Node::new(format!("{name}.relu"), "relu", &[name], &[]));
                format!("{name}.relu")
            };
            nodes.push(
                Node::new(format!("{name}.pool"), "max_pool2d", &[&act], &[])
                    .attr("kernel", Value::ints([2, 2])),
            );
            prev = format!("{name}.pool");
            if *name == "conv3" {
                nodes.push(Node::new("flatten", "flatten", &[&prev], &[]));
                prev = "flatten".into();
            }
        } else {
            let op = if xnor { "xnor_dense" } else { "dense" };
            nodes.push(Node::new(*name, op, &[&prev], &weights));
            prev = name.to_string();
            if *name == "fc1" {
                nodes.push(Node::new("fc1.relu", "relu", &["fc1"], &[]));
                prev = "fc1.relu".into();
            }
        }
    }
    w.set_graph(Graph { nodes });
    w.to_bytes().unwrap()
}

fn factored(c: &mut Criterion) {
    let mut g = c.benchmark_group("factored_batch1");
    for (name, form) in [
        ("lowrank", Form::LowRank),
        ("tucker", Form::Tucker),
        ("xnor", Form::Xnor),
    ] {
        let bytes = vgg(form);
        let file = Cxrm::parse(&bytes).unwrap();
        let twin = Writer::dense_copy_of(&file).unwrap().to_bytes().unwrap();
        let twin_file = Cxrm::parse(&twin).unwrap();
        for (label, f) in [
            (name.to_string(), &file),
            (format!("{name}_dense_twin"), &twin_file),
        ] {
            let model = Model::load_with(f, one_thread()).unwrap();
            let x = input(&model);
            g.bench_function(&label, |b| {
                b.iter(|| black_box(model.forward(x.view()).unwrap()))
            });
        }
    }
    g.finish();
}

/// The small VGG stored dense, on one thread and on all, at batch 1 (latency: each layer's
/// rows split over the cores) and batch 32.
fn threads(c: &mut Criterion) {
    let factored = vgg(Form::LowRank);
    let dense = Writer::dense_copy_of(&Cxrm::parse(&factored).unwrap())
        .unwrap()
        .to_bytes()
        .unwrap();
    let file = Cxrm::parse(&dense).unwrap();
    let mut g = c.benchmark_group("threads");
    for batch in [1, 32] {
        for (label, threads) in [("1_thread", 1), ("all_threads", 0)] {
            let options = RuntimeOptions {
                threads,
                ..one_thread()
            };
            let model = Model::load_with(&file, options).unwrap();
            let one = input(&model);
            let x = ndarray::concatenate(ndarray::Axis(0), &vec![one.view(); batch]).unwrap();
            g.bench_function(format!("vgg_dense_batch{batch}_{label}"), |b| {
                b.iter(|| black_box(model.forward(x.view()).unwrap()))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = open_to_first_prediction, forward, factored, threads
}
criterion_main!(benches);
