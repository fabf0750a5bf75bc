//! The trainer and compressor (feature `train`): trains the architectures `--arch` names on
//! real data with burn's CPU backend, applies each compression method with the retraining its
//! paper uses, and hands plain tensors to the writer.
//!
//! burn stays inside this module (in `net` and `fit`) and the methods' `retrain` modules: everything public here is plain
//! Rust — graphs, named `f32` tensors, data sets — and models leave it as `.cxrm` files. The
//! network trained is the spec §7 graph that gets written, so what the runtime runs is what was
//! trained; every accuracy the trainer reports (validation, best epoch) is measured by the
//! runtime on the model as it will be written.

mod arch;
pub(crate) mod fit;
pub(crate) mod net;
pub(crate) mod soft_targets;
pub mod thresholds;

pub use crate::methods::deep_compression::retrain::{
    DeepOptions, LayerReport, RETRAIN_WEIGHT_DECAY, deep_compression, default_keep_fraction,
};
pub use crate::methods::distill::{DistillOptions, distill};
pub use crate::methods::factorize::retrain::{
    FactorReport, Factorization, FactorizeOptions, Factorized, factorize,
};
pub use arch::{ARCH_NAMES, Arch};

use crate::methods::deep_compression::store::TensorPlan;
use burn::tensor::Device;
use cxrm_format::container::graph::Graph;
use cxrm_format::container::reader::Cxrm;
use cxrm_format::container::value::{self, Map, Value};
use cxrm_format::container::writer::Writer;
use cxrm_format::dtype::DType;
use cxrm_format::encoding::Encoded;
use cxrm_format::error::{Error, Result};
use cxrm_runtime::data::{self, Dataset};
use cxrm_runtime::{InputSpec, Model};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::path::Path;

/// A tensor as the trainer hands it on: name, shape and row-major `f32` values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl NamedTensor {
    /// Its values as a `dense` f32 tensor.
    pub fn dense(&self) -> Encoded<'static> {
        cxrm_format::encoding::dense::encode(std::borrow::Cow::Owned(
            bytemuck::cast_slice(&self.values).to_vec(),
        ))
    }

    pub fn new(name: &str, shape: Vec<usize>, values: Vec<f32>) -> NamedTensor {
        NamedTensor {
            name: name.to_string(),
            shape,
            values,
        }
    }
}

/// Training data: the training split, a validation split held out of it (every choice the
/// trainer makes — best epoch, pruning steps — is made on it, never on the test split), and
/// the input normalisation measured on the training split.
pub struct TrainData {
    /// What `--data` was (`mnist`, `fashion-mnist`, `bundled` or a path): recorded in the
    /// model file.
    pub name: String,
    pub train: Dataset,
    pub val: Dataset,
    pub spec: InputSpec,
}

impl TrainData {
    /// Load `mnist`, `fashion-mnist`, `bundled`, a directory of IDX files (`train-*`) or a class-per-folder
    /// image tree (its `train/` split for a Kaggle-style tree; images converted to `input`'s
    /// channels and size with its resize filter, and labelled by its `classes` when given).
    /// `val_fraction` of the training images, picked by `seed`, become the validation split;
    /// `limit` keeps only the first N training images.
    pub fn load(
        spec: &str,
        val_fraction: f64,
        seed: u64,
        limit: Option<usize>,
        input: &InputSpec,
        classes: Option<&[String]>,
    ) -> Result<TrainData> {
        let source = data::Source::parse(spec)?;
        let mut all = match source.layout {
            data::Layout::Idx => source.idx_train(source.idx_classes())?,
            data::Layout::Folders => load_folder(&source.dir, input, classes)?,
        };
        if let Some(limit) = limit {
            all = all.subset(&(0..limit.min(all.len())).collect::<Vec<_>>());
        }
        Self::split(spec, all, val_fraction, seed)
    }

    /// Hold out a seeded random `val_fraction` of `all` for validation.
    pub fn split(name: &str, all: Dataset, val_fraction: f64, seed: u64) -> Result<TrainData> {
        if all.len() < 2 {
            return Err(Error::Usage("need at least two training images".into()));
        }
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        let n_val = ((all.len() as f64 * val_fraction).round() as usize).clamp(1, all.len() - 1);
        let (val_idx, train_idx) = order.split_at(n_val);
        let (mut val_idx, mut train_idx) = (val_idx.to_vec(), train_idx.to_vec());
        val_idx.sort_unstable();
        train_idx.sort_unstable();
        let train = all.subset(&train_idx);
        let spec = measure_normalisation(&train);
        Ok(TrainData {
            name: name.to_string(),
            val: all.subset(&val_idx),
            train,
            spec,
        })
    }
}

fn load_folder(dir: &Path, input: &InputSpec, classes: Option<&[String]>) -> Result<Dataset> {
    let root = if dir.join("train").is_dir() {
        dir.join("train")
    } else {
        dir.to_path_buf()
    };
    let loaded = data::folder::load(&root, input, classes, data::BadImages::Fail)?;
    Ok(loaded.data)
}

/// Per-channel mean and standard deviation of the pixels (scaled to [0, 1]).
fn measure_normalisation(d: &Dataset) -> InputSpec {
    let plane = d.height * d.width;
    let mut sums = vec![(0.0f64, 0.0f64, 0usize); d.channels];
    for (k, px) in d.pixels.chunks(plane.max(1)).enumerate() {
        let s = &mut sums[k % d.channels];
        for &p in px {
            let v = p as f64 / 255.0;
            s.0 += v;
            s.1 += v * v;
            s.2 += 1;
        }
    }
    let (mean, std): (Vec<f32>, Vec<f32>) = sums
        .iter()
        .map(|&(s, s2, n)| {
            let n = n.max(1) as f64;
            let m = s / n;
            let sd = (s2 / n - m * m).max(0.0).sqrt();
            // Round so the metadata reads well; 4 digits change no prediction.
            let r = |x: f64| ((x * 1e4).round() / 1e4) as f32;
            (r(m), if sd > 1e-6 { r(sd) } else { 1.0 })
        })
        .unzip();
    InputSpec {
        mean,
        std,
        ..InputSpec::new(d.channels, d.height, d.width)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    /// Adam's learning rate at the start of each phase (it follows a cosine to zero).
    pub lr: f64,
    pub weight_decay: f32,
    /// Random translation of each training image by up to this many pixels (0: none).
    pub shift: usize,
    pub seed: u64,
}

impl TrainOptions {
    /// A retraining phase: `epochs` of Adam from `lr`, batches of 64, random shifts of up to
    /// `shift` pixels, no weight decay (the methods add their own).
    pub fn retraining(epochs: usize, lr: f64, shift: usize, seed: u64) -> TrainOptions {
        TrainOptions {
            epochs,
            batch_size: 64,
            lr,
            weight_decay: 0.0,
            shift,
            seed,
        }
    }
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 10,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 0.0,
            shift: 0,
            seed: 1,
        }
    }
}

/// Progress the trainer reports, for a progress bar or a log.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Phase {
        name: String,
        epochs: usize,
        steps_per_epoch: usize,
    },
    Step {
        loss: f64,
        accuracy: f64,
    },
    Epoch {
        epoch: usize,
        loss: f64,
        train_accuracy: f64,
        val_accuracy: f64,
        /// The best validation accuracy so far.
        best: bool,
    },
    PhaseEnd {
        name: String,
        best_epoch: usize,
        val_accuracy: f64,
    },
    /// A line worth showing (a compression step's outcome).
    Note(String),
}

/// A model in plain form: its graph, tensors and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedModel {
    pub graph: Graph,
    pub tensors: Vec<NamedTensor>,
    pub metadata: Map,
}

impl TrainedModel {
    /// Read a model back from a file (every tensor decoded to f32).
    pub fn from_file(file: &Cxrm<'_>) -> Result<TrainedModel> {
        let graph = file
            .graph()?
            .ok_or_else(|| Error::Model("the file has no graph section".into()))?;
        let mut tensors = Vec::new();
        for record in file.tensors() {
            let data = file.decode_record(record)?;
            if record.dtype != DType::F32 {
                return Err(Error::Model(format!("tensor {:?} is not f32", record.name)));
            }
            tensors.push(NamedTensor::new(
                record.name,
                record.shape.iter().map(|&d| d as usize).collect(),
                data.to_f32_vec(),
            ));
        }
        Ok(TrainedModel {
            graph,
            tensors,
            metadata: file.metadata()?,
        })
    }

    pub fn input_spec(&self) -> Result<InputSpec> {
        InputSpec::from_metadata(&self.metadata)
    }

    pub fn set_meta(&mut self, key: &str, v: Value) {
        set_meta(&mut self.metadata, key, v);
    }

    pub fn meta(&self, key: &str) -> Option<&Value> {
        value::get(&self.metadata, key)
    }

    /// Its class names (`model.classes`), when it records them as strings.
    pub fn classes(&self) -> Option<Vec<String>> {
        self.meta("model.classes")?
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    /// The `--data` value it was trained on (`train.data`), to retrain on the same data.
    pub fn trained_on(&self) -> Option<&str> {
        self.meta("train.data").and_then(Value::as_str)
    }

    /// The random shift its training used (`train.shift`), clamped to 0..=8.
    pub fn trained_shift(&self) -> usize {
        self.meta("train.shift")
            .and_then(Value::as_int)
            .map_or(0, |s| s.clamp(0, 8) as usize)
    }

    /// The validation accuracy its training recorded (`train.val_accuracy`).
    pub fn val_accuracy(&self) -> Option<f64> {
        self.meta("train.val_accuracy").and_then(Value::as_float)
    }

    /// Parameters, as the papers count them: every tensor but batch-norm running statistics.
    pub fn params(&self) -> usize {
        let running: std::collections::HashSet<&str> = self
            .graph
            .nodes
            .iter()
            .filter(|n| n.op == "batch_norm")
            .flat_map(|n| n.weights.iter().skip(2).map(String::as_str))
            .collect();
        self.tensors
            .iter()
            .filter(|t| !running.contains(t.name.as_str()))
            .map(|t| t.values.len())
            .sum()
    }

    /// The file, with each tensor stored as `plan` says (`None`: dense f32, except the
    /// weights of binary layers, which are stored `binary`: training leaves them `±α` per
    /// row, so one bit each holds them exactly).
    pub fn to_bytes(&self, plan: &dyn Fn(&NamedTensor) -> Option<TensorPlan>) -> Result<Vec<u8>> {
        let binary: std::collections::HashSet<&str> = self
            .graph
            .binary_layers()
            .into_iter()
            .filter_map(|n| n.weights.first().map(String::as_str))
            .collect();
        let plan = |t: &NamedTensor| {
            plan(t).or_else(|| binary.contains(t.name.as_str()).then(TensorPlan::binary))
        };
        self.to_bytes_with(&|t: &NamedTensor, shape: &[u64]| match plan(t) {
            Some(p) => crate::methods::deep_compression::store::encode(&t.values, shape, &p),
            None => Ok(t.dense()),
        })
    }

    /// The file, with each tensor stored as `encode` makes it (for encodings a
    /// [`TensorPlan`] cannot describe, such as MIRACLE's, whose code is chosen in training).
    pub fn to_bytes_with(
        &self,
        encode: &dyn Fn(&NamedTensor, &[u64]) -> Result<Encoded<'static>>,
    ) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        for (k, v) in &self.metadata {
            w.set_metadata(k.clone(), v.clone());
        }
        w.set_graph(self.graph.clone());
        for t in &self.tensors {
            let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
            w.add_tensor(&t.name, DType::F32, &shape, encode(t, &shape)?)?;
        }
        w.to_bytes()
    }

    /// Write atomically (temporary file, then rename). Returns the file's size.
    pub fn write(
        &self,
        path: &Path,
        plan: &dyn Fn(&NamedTensor) -> Option<TensorPlan>,
    ) -> Result<u64> {
        let bytes = self.to_bytes(plan)?;
        cxrm_format::container::writer::write_atomically(path, |w| {
            std::io::Write::write_all(w, &bytes)
        })?;
        Ok(bytes.len() as u64)
    }

    /// Logits of the trainer's own forward pass (burn, inference mode) on `data`, one row of
    /// `classes` values per image: the reference the written file is checked against.
    pub fn trainer_logits(&self, data: &Dataset) -> Result<Vec<f32>> {
        use burn::tensor::{Tensor, TensorData};
        let spec = self.input_spec()?;
        let net = net::Net::new(self.graph.clone(), self.tensors.clone(), &device())?;
        let x = fit::normalised(data, &spec);
        let x = Tensor::<4>::from_data(
            TensorData::new(x, [data.len(), data.channels, data.height, data.width]),
            net.device(),
        );
        let (logits, _) = net.forward(x, false)?;
        let [n, k] = logits.dims();
        Ok(net::host(logits.reshape([n * k])))
    }

    /// Accuracy of this model, as written with `plan`, through the runtime on `data`.
    pub fn accuracy(
        &self,
        data: &Dataset,
        plan: &dyn Fn(&NamedTensor) -> Option<TensorPlan>,
    ) -> Result<f64> {
        let bytes = self.to_bytes(plan)?;
        runtime_accuracy(&bytes, data)
    }
}

/// Accuracy of a model file's bytes on `data`, through the runtime.
pub fn runtime_accuracy(file_bytes: &[u8], data: &Dataset) -> Result<f64> {
    let file = Cxrm::parse(file_bytes)?;
    let model = Model::load(&file)?;
    Ok(cxrm_runtime::batch::evaluate(&model, data, data.len(), 256, &mut |_| {})?.accuracy)
}

pub(crate) fn dense(_: &NamedTensor) -> Option<TensorPlan> {
    None
}

pub(crate) fn device() -> Device {
    Device::flex().autodiff()
}

/// The metadata every trained model carries (spec §6 keys, plus how it was trained).
/// The metadata a model trained from scratch records: network, classes, input and
/// normalisation, data and training settings.
pub fn training_metadata(arch: &Arch, data: &TrainData, opts: &TrainOptions) -> Map {
    let mut map: Map = vec![
        ("model.name".into(), Value::String(arch.name())),
        (
            "model.classes".into(),
            Value::strings(data.train.classes.iter().cloned()),
        ),
    ];
    map.extend(data.spec.to_metadata());
    map.extend([
        ("train.data".into(), Value::String(data.name.clone())),
        ("train.images".into(), Value::Int(data.train.len() as i64)),
        ("train.epochs".into(), Value::Int(opts.epochs as i64)),
        ("train.seed".into(), Value::Int(opts.seed as i64)),
        ("train.shift".into(), Value::Int(opts.shift as i64)),
        ("train.lr".into(), Value::Float(opts.lr)),
        (
            "train.batch_size".into(),
            Value::Int(opts.batch_size as i64),
        ),
        (
            "train.framework".into(),
            Value::String("burn 0.22 (flex)".into()),
        ),
    ]);
    map
}

/// Run `net` to the end of a training phase and return it as a plain model, as it will be
/// written: batch norms in front of binary layers folded into sign thresholds.
pub(crate) fn finish(net: &net::Net, metadata: Map) -> TrainedModel {
    let (graph, tensors) = thresholds::fold_sign_thresholds(&net.graph, &net.tensors());
    TrainedModel {
        graph,
        tensors,
        metadata,
    }
}

/// Set `key` in `meta`, replacing an earlier value in its place.
pub(crate) fn set_meta(meta: &mut Map, key: &str, v: Value) {
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = v,
        None => meta.push((key.to_string(), v)),
    }
}

/// Fine-tune a changed network on the labels (a retraining phase): its validation accuracy
/// as `plan` writes it is noted before, then `fit` runs; returns the kept epoch's accuracy,
/// also recorded as `train.val_accuracy` in `metadata`.
pub(crate) fn fine_tune(
    net: &mut net::Net,
    data: &TrainData,
    retrain: &TrainOptions,
    phase: &str,
    metadata: &mut Map,
    plan: &dyn Fn(&NamedTensor) -> Option<TensorPlan>,
    on: &mut dyn FnMut(Event),
) -> Result<f64> {
    let before = validator(metadata, &data.val, plan)(net)?;
    on(Event::Note(format!(
        "before {phase}: validation accuracy {before:.4}"
    )));
    let val = fit::fit(
        net,
        data,
        retrain,
        &fit::Targets::Labels,
        phase,
        &mut validator(metadata, &data.val, plan),
        on,
    )?;
    set_meta(metadata, "train.val_accuracy", Value::Float(val));
    Ok(val)
}

/// Validation accuracy of `net` as it would be written (dense), through the runtime.
pub(crate) fn validator<'d>(
    metadata: &'d Map,
    val: &'d Dataset,
    plan: &'d dyn Fn(&NamedTensor) -> Option<TensorPlan>,
) -> impl FnMut(&net::Net) -> Result<f64> + 'd {
    move |net: &net::Net| finish(net, metadata.clone()).accuracy(val, plan)
}

/// `arch`'s graph and freshly initialised tensors for `data`'s input and classes.
pub(crate) fn build_for(
    arch: &Arch,
    data: &TrainData,
    seed: u64,
) -> Result<(Graph, Vec<NamedTensor>)> {
    let s = &data.spec;
    arch.build(
        [s.channels, s.height, s.width],
        data.train.classes.len(),
        seed,
    )
}

/// Train `arch` from scratch (the `baseline` and `separable` methods).
pub fn train(
    arch: &Arch,
    data: &TrainData,
    opts: &TrainOptions,
    on: &mut dyn FnMut(Event),
) -> Result<TrainedModel> {
    let (graph, tensors) = build_for(arch, data, opts.seed)?;
    let mut net = net::Net::new(graph, tensors, &device())?;
    let mut metadata = training_metadata(arch, data, opts);
    let val = fit::fit(
        &mut net,
        data,
        opts,
        &fit::Targets::Labels,
        &format!("train {}", arch.name()),
        &mut validator(&metadata, &data.val, &dense),
        on,
    )?;
    metadata.push(("train.val_accuracy".into(), Value::Float(val)));
    metadata.push(("compress.method".into(), Value::String("baseline".into())));
    Ok(finish(&net, metadata))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small real training set: the first images of the bundled MNIST subset.
    pub fn mnist(n: usize) -> TrainData {
        TrainData::load("mnist", 0.2, 3, Some(n), &InputSpec::new(1, 28, 28), None).unwrap()
    }

    #[test]
    fn split_is_seeded_disjoint_and_measures_normalisation() {
        let a = mnist(200);
        let b = mnist(200);
        assert_eq!(a.val.labels, b.val.labels);
        assert_eq!((a.train.len(), a.val.len()), (160, 40));
        // MNIST's well-known statistics, measured on 160 images.
        assert!((a.spec.mean[0] - 0.13).abs() < 0.03, "{:?}", a.spec.mean);
        assert!((a.spec.std[0] - 0.31).abs() < 0.03, "{:?}", a.spec.std);
    }

    #[test]
    fn kaggle_folders_of_real_xrays_load_as_training_data() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/chest-xray-val");
        if !root.is_dir() {
            eprintln!("skipped: {} is not here", root.display());
            return;
        }
        let d = TrainData::load(
            root.to_str().unwrap(),
            0.25,
            1,
            None,
            &InputSpec::new(1, 48, 48),
            None,
        )
        .unwrap();
        assert_eq!(d.train.classes, ["NORMAL", "PNEUMONIA"]);
        assert_eq!((d.train.len(), d.val.len()), (12, 4));
        assert_eq!(
            (d.train.channels, d.train.height, d.train.width),
            (1, 48, 48)
        );
        // Radiographs are mid-grey on average, with real contrast.
        assert!(d.spec.mean[0] > 0.2 && d.spec.mean[0] < 0.8, "{:?}", d.spec);
        assert!(d.spec.std[0] > 0.1, "{:?}", d.spec);
    }

    #[test]
    fn training_learns_and_the_written_file_predicts_like_the_trainer() {
        let data = mnist(800);
        let opts = TrainOptions {
            epochs: 3,
            batch_size: 16,
            ..Default::default()
        };
        let mut events = Vec::new();
        let model = train(&Arch::parse("mlp-32").unwrap(), &data, &opts, &mut |e| {
            events.push(e)
        })
        .unwrap();
        let acc = model.accuracy(&data.val, &dense).unwrap();
        // Ten classes: chance is 10%; two epochs on 480 images get far above it.
        assert!(acc > 0.6, "validation accuracy {acc}");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Epoch { epoch: 2, .. }))
        );
        // The trainer's own forward pass and the runtime agree on the written weights.
        assert_eq!(
            trainer_predictions(&model, &data.val),
            runtime_predictions(&model, &data.val)
        );
    }

    fn argmax_rows(v: &[f32], k: usize) -> Vec<usize> {
        v.chunks(k).map(cxrm_runtime::metrics::argmax).collect()
    }

    pub fn trainer_predictions(m: &TrainedModel, d: &Dataset) -> Vec<usize> {
        argmax_rows(&m.trainer_logits(d).unwrap(), d.classes.len())
    }

    pub fn runtime_predictions(m: &TrainedModel, d: &Dataset) -> Vec<usize> {
        runtime_predictions_with(m, d, &dense)
    }

    pub fn runtime_predictions_with(
        m: &TrainedModel,
        d: &Dataset,
        plan: &dyn Fn(&NamedTensor) -> Option<TensorPlan>,
    ) -> Vec<usize> {
        let bytes = m.to_bytes(plan).unwrap();
        let file = Cxrm::parse(&bytes).unwrap();
        let model = Model::load(&file).unwrap();
        let p = cxrm_runtime::batch::predict(&model, d, d.len(), 64, &mut |_| {}).unwrap();
        argmax_rows(p.as_slice().unwrap(), d.classes.len())
    }
}
