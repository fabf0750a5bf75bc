//! End to end through the trainer: train tiny networks for a few steps on real MNIST images,
//! compress them with each method, write the files, read them back through the runtime, and
//! check the runtime gives what the trainer's own forward pass gives on the same weights.
#![cfg(feature = "train")]

use cxrm::compress::methods::deep_compression::store::TensorPlan;
use cxrm::compress::train::{
    self, Arch, DeepOptions, DistillOptions, NamedTensor, TrainData, TrainOptions, TrainedModel,
};
use cxrm::runtime::Model;
use cxrm::runtime::data::Dataset;

fn data() -> TrainData {
    let input = cxrm::runtime::InputSpec::new(1, 28, 28);
    TrainData::load("mnist", 0.25, 5, Some(320), &input, None).unwrap()
}

fn quick() -> TrainOptions {
    TrainOptions {
        epochs: 1,
        batch_size: 32,
        ..Default::default()
    }
}

/// Write `m` to a real file with `plan`, map it, and return the runtime's logits on `d`.
fn runtime_logits(
    m: &TrainedModel,
    plan: &dyn Fn(&NamedTensor) -> Option<TensorPlan>,
    d: &Dataset,
) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.cxrm");
    m.write(&path, plan).unwrap();
    let mapped = cxrm::Mapped::open(&path).unwrap();
    let file = mapped.parse().unwrap();
    file.verify().unwrap();
    let model = Model::load(&file).unwrap();
    let spec = &model.input;
    let mut x = ndarray::Array4::<f32>::zeros((d.len(), spec.channels, spec.height, spec.width));
    for i in 0..d.len() {
        x.slice_mut(ndarray::s![i, .., .., ..])
            .assign(&cxrm::runtime::batch::input(d, i, spec).unwrap());
    }
    model.forward(x.view()).unwrap().into_raw_vec_and_offset().0
}

fn argmax(v: &[f32], k: usize) -> Vec<usize> {
    v.chunks(k).map(cxrm::runtime::metrics::argmax).collect()
}

/// The runtime (im2col, folded batch norm, sparse kernels) and burn sum in different orders:
/// logits agree to float rounding, predictions exactly.
fn assert_same(
    m: &TrainedModel,
    plan: &dyn Fn(&NamedTensor) -> Option<TensorPlan>,
    d: &Dataset,
    what: &str,
) {
    let ours = runtime_logits(m, plan, d);
    let theirs = m.trainer_logits(d).unwrap();
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0f32, |a, v| a.max(v.abs())).max(1.0);
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "{what}: logit {i}: runtime {a}, trainer {b}"
        );
    }
    assert_eq!(argmax(&ours, 10), argmax(&theirs, 10), "{what}");
}

#[test]
fn every_method_writes_a_file_the_runtime_runs_like_the_trainer() {
    let data = data();
    let dense = |_: &NamedTensor| None;
    for arch in ["lenet-5", "mobilenet-small"] {
        let arch = Arch::parse(arch).unwrap();
        let base = train::train(&arch, &data, &quick(), &mut |_| {}).unwrap();
        assert_same(
            &base,
            &dense,
            &data.val,
            &format!("{} baseline", arch.name()),
        );

        let opts = DeepOptions {
            prune_steps: 1,
            ..DeepOptions::paper_defaults(
                quick(),
                TrainOptions {
                    lr: 1e-4,
                    ..quick()
                },
            )
        };
        let (dc, plan, reports) =
            train::deep_compression(&base, &data, &opts, &mut |_| {}).unwrap();
        assert!(reports.iter().all(|r| r.kept < r.params || r.params <= 225));
        assert_same(
            &dc,
            &*plan,
            &data.val,
            &format!("{} deep-compression", arch.name()),
        );
        // The chains in the file are Deep Compression's own.
        let bytes = dc.to_bytes(&*plan).unwrap();
        let file = cxrm::Cxrm::parse(&bytes).unwrap();
        let chains: Vec<String> = file.tensors().iter().map(|t| t.chain_name()).collect();
        assert!(
            chains
                .iter()
                .any(|c| c.contains("sparse") && c.contains("codebook")),
            "{chains:?}"
        );
    }
    let teacher = train::train(&Arch::LeNet5, &data, &quick(), &mut |_| {}).unwrap();
    let student = train::distill(
        &teacher,
        &data,
        &DistillOptions {
            student: Arch::parse("mlp-16").unwrap(),
            temperature: 4.0,
            alpha: 0.7,
            train: quick(),
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(student.params() * 10 <= teacher.params());
    assert_same(&student, &dense, &data.val, "distill");
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let data = data();
    let a = train::train(&Arch::parse("mlp-8").unwrap(), &data, &quick(), &mut |_| {}).unwrap();
    let b = train::train(&Arch::parse("mlp-8").unwrap(), &data, &quick(), &mut |_| {}).unwrap();
    assert_eq!(a.tensors, b.tensors);
}

/// MIRACLE: every trainable tensor becomes a `miracle` tensor whose decoded values are, bit for
/// bit, the weights the coding fixed; the file's code has the blocks the target asked for; and
/// the runtime runs the file as the trainer runs those weights.
#[test]
fn miracle_codes_every_tensor_and_the_file_decodes_to_the_coded_weights() {
    use cxrm::compress::methods::miracle::{self, MiracleOptions};
    let data = data();
    let base = train::train(&Arch::parse("mlp-8").unwrap(), &data, &quick(), &mut |_| {}).unwrap();
    let opts = MiracleOptions {
        bits_per_block: 6,
        target_kb: 0.25,
        iters_between: 2,
        rounds: 3,
        ..MiracleOptions::defaults(quick())
    };
    let (coded, reports) = miracle::miracle(&base, &data, &opts, &mut |_| {}).unwrap();
    assert_eq!(reports.len(), base.tensors.len());
    let blocks: u32 = reports.iter().map(|r| r.blocks).sum();
    // Every value in a block of its own at most: the hashed layer has only 126 values.
    let values: usize = reports
        .iter()
        .map(|r| r.shared_values.map_or(r.elements, |m| m as usize))
        .sum();
    assert_eq!(
        blocks as usize,
        opts.total_blocks(reports.len()).min(values)
    );
    let bytes = coded.to_bytes().unwrap();
    let file = cxrm::Cxrm::parse(&bytes).unwrap();
    file.verify().unwrap();
    // The whole code, each tensor's indices padded to a byte, within the target.
    let code: u64 = file.tensors().iter().map(|r| r.extent.length).sum();
    assert!(code as f64 <= opts.target_kb * 1024.0, "{code} bytes");
    for t in &coded.model.tensors {
        let record = file.tensors().iter().find(|r| r.name == t.name).unwrap();
        let c = coded.coded.iter().find(|c| c.name == t.name).unwrap();
        // The hashing trick's default: the first layer holds over half the weights.
        let hashed = t.name == base.tensors[0].name;
        assert_eq!(c.shared.is_some(), hashed, "{}", t.name);
        let chain = if hashed { "hashed+miracle" } else { "miracle" };
        assert_eq!(record.chain_name(), chain, "{}", t.name);
        let decoded = file.decode_record(record).unwrap().to_f32_vec();
        assert_eq!(decoded, t.values, "{}", t.name);
        let shared = c.shared.map_or(t.values.len(), |p| p.values as usize);
        if let Some(p) = c.shared {
            assert_eq!(p.values as usize, t.values.len().div_ceil(50));
        }
        let params = &c.code.params;
        assert_eq!(
            (params.index_bits, params.blocks as usize <= shared),
            (6, true)
        );
    }
    let dense = |_: &NamedTensor| None;
    assert_same(&coded.model, &dense, &data.val, "miracle");
}

/// BWN: the hidden layers (not the first or last) are stored `binary`, exactly `±α` per row
/// in the file, the rest dense; the runtime runs the file as the trainer runs those weights.
#[test]
fn bwn_binarizes_the_hidden_layers_and_the_file_holds_them_exactly() {
    use cxrm::compress::methods::bwn::{self, BwnOptions};
    let data = data();
    let base = train::train(&Arch::LeNet5, &data, &quick(), &mut |_| {}).unwrap();
    let opts = BwnOptions { retrain: quick() };
    let (model, reports) = bwn::bwn(&base, &data, &opts, &mut |_| {}).unwrap();
    let names: Vec<&str> = reports.iter().map(|r| r.tensor.as_str()).collect();
    assert_eq!(names, ["conv2.weight", "fc1.weight"]);
    let plan = bwn::plan(&model);
    let bytes = model.to_bytes(&plan).unwrap();
    let file = cxrm::Cxrm::parse(&bytes).unwrap();
    file.verify().unwrap();
    for t in &model.tensors {
        let record = file.tensors().iter().find(|r| r.name == t.name).unwrap();
        let binary = names.contains(&t.name.as_str());
        assert_eq!(record.chain_name(), if binary { "binary" } else { "dense" });
        assert_eq!(file.decode_record(record).unwrap().to_f32_vec(), t.values);
        if binary {
            // One magnitude per row: the weights really are α · sign.
            let cols = t.values.len() / t.shape[0];
            for row in t.values.chunks(cols) {
                assert!(row.iter().all(|v| v.abs() == row[0].abs()), "{}", t.name);
            }
        }
    }
    assert_same(&model, &plan, &data.val, "bwn");
    // Far smaller than the dense base: 1 bit per binarized weight.
    let dense = |_: &NamedTensor| None;
    assert!(bytes.len() * 3 < base.to_bytes(&dense).unwrap().len());
}

/// XNOR-Net: the binary layers are written as `sign` nodes with per-channel thresholds (the
/// batch norms in front folded into them, their tensors gone) feeding `conv2d` / `dense` with
/// `binary` weights; the runtime runs the file as the trainer runs the same graph.
#[test]
fn xnor_files_fold_their_batch_norms_into_sign_thresholds() {
    let data = data();
    let model = train::train(&Arch::LeNet5Xnor, &data, &quick(), &mut |_| {}).unwrap();
    let ops: Vec<&str> = model.graph.nodes.iter().map(|n| n.op.as_str()).collect();
    assert!(!ops.contains(&"batch_norm"), "{ops:?}");
    let signs: Vec<_> = model
        .graph
        .nodes
        .iter()
        .filter(|n| n.op == "sign")
        .collect();
    assert_eq!(signs.len(), 2);
    for s in &signs {
        assert_eq!(s.weights.len(), 1, "{} has a threshold", s.name);
    }
    assert!(model.tensors.iter().all(|t| !t.name.starts_with("bn")));
    let dense = |_: &NamedTensor| None;
    let bytes = model.to_bytes(&dense).unwrap();
    let file = cxrm::Cxrm::parse(&bytes).unwrap();
    assert_eq!(file.header().version_minor, 5);
    for name in ["conv2.weight", "fc1.weight"] {
        let record = file.tensors().iter().find(|r| r.name == name).unwrap();
        assert_eq!(record.chain_name(), "binary", "{name}");
    }
    assert_same(&model, &dense, &data.val, "xnor");
}
