//! Runtime benchmarks (quote them as ratios from one run):
//!
//! * `open_to_first_prediction/lenet5` vs `/lenet5_plus_unused_256MB`: map, check, load and
//!   classify one image, from the LeNet-5 fixture and from the same model with 256 MB of
//!   extra tensors (dense and Deep-Compression-encoded) its graph never uses. Lazy decoding
//!   keeps the ratio near 1.
//! * `forward_batch1/*`: LeNet-5 with dense weights, and pruned 80% + 5-bit + Huffman run with
//!   sparse kernels and with dense kernels (the pruned path must beat the dense one).
//!
//! onnxruntime is the outside baseline: `python3 tools/onnx_bench.py MODEL.cxrm`.

use criterion::{Criterion, criterion_group, criterion_main};
use cxrm::runtime::{Model, RuntimeOptions, preprocess};
use cxrm::{Cxrm, DType, Mapped, Writer};
use ndarray::Array4;
use std::hint::black_box;
use std::path::{Path, PathBuf};

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
    cxrm::compress::prune::prune_layer(&mut values, 0.5);
    let plan = cxrm::compress::deep::TensorPlan {
        sparse: true,
        bits: Some(5),
        index_bits: Some(5),
        ..Default::default()
    };
    let enc = cxrm::compress::deep::encode(&values, &[32 << 20], &plan).unwrap();
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
        ..Default::default()
    };
    let models = [
        ("lenet5_dense", Model::load(&dense_file).unwrap()),
        (
            "lenet5_pruned_sparse_kernels",
            Model::load(&dc_file).unwrap(),
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = open_to_first_prediction, forward
}
criterion_main!(benches);
