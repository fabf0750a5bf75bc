//! A trainable network interpreted from a cxrm graph, on burn's CPU backend.
//!
//! The trainer never has a second description of the model: it runs the spec §7 graph it will
//! write, with the same operator semantics as the runtime. Every trainable tensor is one flat
//! burn parameter, reshaped where it is used; batch-norm running statistics are kept outside
//! autodiff, as the running averages they are.
//!
//! A weight can be constrained while it trains:
//! - `Masked`: the parameter times a fixed 0/1 mask (pruned weights stay zero, and get no
//!   gradient).
//! - `Shared`: the parameter is a codebook; the weight is `codebook[index] × mask`. Autodiff of
//!   the gather sums the gradients of all weights that share a centroid into it, which is Deep
//!   Compression's "trained quantization".
//! - `Binary` (the weights of XNOR layers, always): the weight is `α · sign(w)` per row with
//!   `α = mean |w|`, and its gradient passes straight through to the real-valued `w`, as
//!   XNOR-Net trains (Rastegari et al. 2016; the straight-through estimator of Bengio et al.).
//!   XNOR layers' inputs are binarized the same way, the gradient cut where `|x| > 1`.
//! - `Gaussian` (MIRACLE, Havasi et al. 2019): the parameter is the mean `μ` of a Gaussian
//!   posterior per weight, a second parameter its `log σ`. Given noise `ε`, the weight is the
//!   reparameterised draw `μ + σ·ε`; without noise (evaluation), `μ`. Weights of blocks already
//!   coded are fixed to their chosen prior draws and get no gradient. With the hashing trick
//!   (spec §5.13) the posterior is over fewer shared values, each weight one of them times its
//!   hashed sign; autodiff of the gather sums the shared gradients.

use super::NamedTensor;
use burn::module::{Module, Param};
use burn::tensor::activation;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions, PadMode};
use burn::tensor::{Device, Int, Tensor, TensorData};
use cxrm_format::container::graph::{Graph, INPUT};
use cxrm_format::container::op::Op;
use cxrm_format::error::{Error, Result};
use std::collections::HashMap;

/// The flat trainable tensors: what the optimizer sees.
#[derive(Module, Debug, Default)]
pub(crate) struct Params {
    pub tensors: Vec<Param<Tensor<1>>>,
}

/// How a trainable tensor becomes the weight the graph uses.
#[derive(Debug, Clone)]
pub(crate) enum Form {
    Free,
    Masked(Vec<f32>),
    Shared {
        indices: Vec<u32>,
        mask: Vec<f32>,
    },
    /// `α · sign` per row of `rows`.
    Binary {
        rows: usize,
    },
    /// `keep · (μ + σ·ε) + coded`, `log σ / LOG_SIGMA_SCALE` at parameter `log_sigma`; with
    /// `hash`, over the shared values, each weight `sign · value[index]`.
    Gaussian {
        log_sigma: usize,
        keep: Vec<f32>,
        coded: Vec<f32>,
        hash: Option<Hash>,
    },
}

/// The hashing trick's map from weights to shared values: per weight, its value's index and
/// its sign (±1).
#[derive(Debug, Clone)]
pub(crate) struct Hash {
    pub indices: Vec<u32>,
    pub signs: Vec<f32>,
}

impl Hash {
    fn expand(&self, values: &[f32]) -> Vec<f32> {
        self.indices
            .iter()
            .zip(&self.signs)
            .map(|(&i, s)| values[i as usize] * s)
            .collect()
    }
}

// A few per model: the size difference between variants costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum FormTensors {
    Free,
    Masked(Tensor<1>),
    Shared {
        indices: Tensor<1, Int>,
        mask: Tensor<1>,
    },
    Binary {
        rows: usize,
    },
    Gaussian {
        log_sigma: usize,
        keep: Tensor<1>,
        coded: Tensor<1>,
        /// This step's standard normal draws; `None` evaluates at the mean.
        noise: Option<Tensor<1>>,
        hash: Option<(Tensor<1, Int>, Tensor<1>)>,
    },
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Slot {
    /// Index into `Params::tensors`.
    Trainable {
        param: usize,
        form: Form,
        tensors: FormTensors,
    },
    /// A batch norm's running mean or variance.
    Running(Vec<f32>),
}

#[derive(Debug)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    slot: Slot,
}

/// Batch statistics a training forward pass measured, to fold into the running averages.
/// Each entry: node name, mean, variance (biased) and the number of values behind them.
pub(crate) struct BatchStats(Vec<(String, Tensor<1>, Tensor<1>, usize)>);

pub(crate) struct Net {
    pub graph: Graph,
    /// Each node's op, parsed once (the same reading the runtime makes).
    ops: Vec<Op>,
    pub params: Params,
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
    device: Device,
}

#[derive(Clone)]
enum Act {
    Map(Tensor<4>),
    Flat(Tensor<2>),
}

/// A `Gaussian` tensor's `log σ` parameter holds `log σ / LOG_SIGMA_SCALE`, so that Adam moves
/// `log σ` this many times faster than the means: σ travels orders of magnitude in training
/// (from narrow around the trained weights to the prior's width), the means only a fraction.
pub(crate) const LOG_SIGMA_SCALE: f32 = 10.0;

/// Momentum of the batch-norm running averages (PyTorch's default).
const BN_MOMENTUM: f32 = 0.1;

/// Indices as burn's integer tensor, for `select`.
fn int_tensor(indices: &[u32], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(
        TensorData::new(
            indices.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [indices.len()],
        ),
        device,
    )
}

pub(crate) fn tensor1(values: &[f32], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// `+1` where `x ≥ 0`, else `−1` (XNOR-Net's sign, as spec §7 defines it).
fn signs<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.greater_equal_elem(0.0)
        .float()
        .mul_scalar(2.0)
        .sub_scalar(1.0)
}

/// XNOR-Net's input binarization: the signs forward, the gradient of `clamp(x, −1, 1)`
/// backward (straight through where `|x| ≤ 1`, cut elsewhere).
fn binarize_input<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let clipped = x.clone().clamp(-1.0, 1.0);
    clipped.clone() + (signs(x) - clipped).detach()
}

/// `α · sign(w)` per row, `α` the row's mean magnitude: the weights an XNOR layer is written
/// with (the `binary` encoder recovers `α` and the signs exactly).
fn binarized(w: &[f32], rows: usize) -> Vec<f32> {
    let cols = w.len() / rows.max(1);
    w.chunks(cols.max(1))
        .flat_map(|row| {
            let alpha = (row.iter().map(|v| v.abs() as f64).sum::<f64>() / cols as f64) as f32;
            row.iter()
                .map(move |&v| if v >= 0.0 { alpha } else { -alpha })
        })
        .collect()
}

pub(crate) fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("the trainer's tensors are f32")
}

impl Net {
    /// Build from a graph and its tensors (as written or as read back from a file).
    pub fn new(graph: Graph, tensors: Vec<NamedTensor>, device: &Device) -> Result<Net> {
        let ops = graph
            .nodes
            .iter()
            .map(Op::parse)
            .collect::<Result<Vec<_>>>()?;
        let running: std::collections::HashSet<&str> = graph
            .nodes
            .iter()
            .zip(&ops)
            .filter(|(_, op)| matches!(op, Op::BatchNorm { .. }))
            .flat_map(|(n, _)| n.weights.iter().skip(2).map(String::as_str))
            .collect();
        let mut params = Vec::new();
        let mut entries = Vec::new();
        let mut by_name = HashMap::new();
        for t in tensors {
            if t.values.len() != t.shape.iter().product::<usize>() {
                return Err(Error::Model(format!(
                    "tensor {:?}: values do not match its shape",
                    t.name
                )));
            }
            let slot = if running.contains(t.name.as_str()) {
                Slot::Running(t.values)
            } else {
                params.push(Param::from_tensor(tensor1(&t.values, device)));
                Slot::Trainable {
                    param: params.len() - 1,
                    form: Form::Free,
                    tensors: FormTensors::Free,
                }
            };
            by_name.insert(t.name.clone(), entries.len());
            entries.push(Entry {
                name: t.name,
                shape: t.shape,
                slot,
            });
        }
        for node in &graph.nodes {
            for w in &node.weights {
                if !by_name.contains_key(w) {
                    return Err(Error::Model(format!(
                        "node {:?} uses missing tensor {w:?}",
                        node.name
                    )));
                }
            }
        }
        let mut net = Net {
            graph,
            ops,
            params: Params { tensors: params },
            entries,
            by_name,
            device: device.clone(),
        };
        let binary: Vec<(String, usize)> = net
            .graph
            .binary_layers()
            .into_iter()
            .filter_map(|n| n.weights.first())
            .map(|w| (w.clone(), net.shape(w).first().copied().unwrap_or(1)))
            .collect();
        for (name, rows) in binary {
            let values = net
                .tensors()
                .into_iter()
                .find(|t| t.name == name)
                .expect("checked above")
                .values;
            net.set_form(&name, Form::Binary { rows }, &values)?;
        }
        Ok(net)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Constrain a trainable tensor; its parameter is replaced by `values` (for `Shared`, the
    /// codebook), which resets its optimizer state, as a new training phase should.
    pub fn set_form(&mut self, name: &str, form: Form, values: &[f32]) -> Result<()> {
        let &i = self
            .by_name
            .get(name)
            .ok_or_else(|| Error::Model(format!("no tensor {name:?}")))?;
        let entry = &mut self.entries[i];
        let Slot::Trainable { param, .. } = entry.slot else {
            return Err(Error::Model(format!("{name:?} is not trainable")));
        };
        let d = &self.device;
        let tensors = match &form {
            Form::Free => FormTensors::Free,
            Form::Masked(mask) => FormTensors::Masked(tensor1(mask, d)),
            Form::Shared { indices, mask } => FormTensors::Shared {
                indices: int_tensor(indices, d),
                mask: tensor1(mask, d),
            },
            Form::Binary { rows } => FormTensors::Binary { rows: *rows },
            Form::Gaussian {
                log_sigma,
                keep,
                coded,
                hash,
            } => FormTensors::Gaussian {
                log_sigma: *log_sigma,
                keep: tensor1(keep, d),
                coded: tensor1(coded, d),
                noise: None,
                hash: hash
                    .as_ref()
                    .map(|h| (int_tensor(&h.indices, d), tensor1(&h.signs, d))),
            },
        };
        self.params.tensors[param] = Param::from_tensor(tensor1(values, d));
        entry.slot = Slot::Trainable {
            param,
            form,
            tensors,
        };
        Ok(())
    }

    /// Add a trainable tensor that no node uses directly (MIRACLE's `log σ` and prior); its
    /// index into `params.tensors`.
    pub fn add_param(&mut self, values: &[f32]) -> usize {
        self.params
            .tensors
            .push(Param::from_tensor(tensor1(values, &self.device)));
        self.params.tensors.len() - 1
    }

    /// Parameter `i`'s current value, as autodiff sees it.
    pub fn param(&self, i: usize) -> Tensor<1> {
        self.params.tensors[i].val()
    }

    /// The parameter behind trainable tensor `name`.
    pub fn param_of(&self, name: &str) -> Option<usize> {
        match self.entries.get(*self.by_name.get(name)?)?.slot {
            Slot::Trainable { param, .. } => Some(param),
            Slot::Running(_) => None,
        }
    }

    /// A `Gaussian` tensor's noise for the next forward pass (`None`: its mean).
    pub fn set_noise(&mut self, name: &str, eps: Option<&[f32]>) {
        let device = self.device.clone();
        if let Some(Entry {
            slot:
                Slot::Trainable {
                    tensors: FormTensors::Gaussian { noise, .. },
                    ..
                },
            ..
        }) = self.by_name.get(name).map(|&i| &mut self.entries[i])
        {
            *noise = eps.map(|e| tensor1(e, &device));
        }
    }

    /// Fix more of a `Gaussian` tensor's weights (MIRACLE's coded blocks), keeping its
    /// parameters and so their optimizer state.
    pub fn set_coded(&mut self, name: &str, keep: Vec<f32>, coded: Vec<f32>) -> Result<()> {
        let device = self.device.clone();
        let Some(Entry {
            slot:
                Slot::Trainable {
                    form: form @ Form::Gaussian { .. },
                    tensors:
                        FormTensors::Gaussian {
                            keep: kt,
                            coded: ct,
                            ..
                        },
                    ..
                },
            ..
        }) = self.by_name.get(name).map(|&i| &mut self.entries[i])
        else {
            return Err(Error::Model(format!("{name:?} is not a Gaussian tensor")));
        };
        *kt = tensor1(&keep, &device);
        *ct = tensor1(&coded, &device);
        if let Form::Gaussian {
            keep: k, coded: c, ..
        } = form
        {
            (*k, *c) = (keep, coded);
        }
        Ok(())
    }

    /// The weight a node uses, as autodiff sees it.
    fn weight(&self, name: &str) -> Result<Tensor<1>> {
        let entry = &self.entries[self.by_name[name]];
        Ok(match &entry.slot {
            Slot::Running(v) => tensor1(v, &self.device),
            Slot::Trainable { param, tensors, .. } => {
                let p = self.params.tensors[*param].val();
                match tensors {
                    FormTensors::Free => p,
                    FormTensors::Masked(mask) => p * mask.clone(),
                    FormTensors::Shared { indices, mask } => {
                        p.select(0, indices.clone()) * mask.clone()
                    }
                    FormTensors::Binary { rows } => {
                        let n = p.dims()[0];
                        let m = p.reshape([*rows, n / rows]);
                        let alpha = m.clone().abs().mean_dim(1);
                        let b = signs(m.clone()) * alpha;
                        (m.clone() + (b - m).detach()).reshape([n])
                    }
                    FormTensors::Gaussian {
                        log_sigma,
                        keep,
                        coded,
                        noise,
                        hash,
                    } => {
                        let drawn = match noise {
                            Some(eps) => {
                                let log_sigma = self.params.tensors[*log_sigma].val();
                                p + (log_sigma * LOG_SIGMA_SCALE).exp() * eps.clone()
                            }
                            None => p,
                        };
                        let values = drawn * keep.clone() + coded.clone();
                        match hash {
                            Some((indices, signs)) => {
                                values.select(0, indices.clone()) * signs.clone()
                            }
                            None => values,
                        }
                    }
                }
            }
        })
    }

    fn shape(&self, name: &str) -> &[usize] {
        &self.entries[self.by_name[name]].shape
    }

    /// Every tensor as plain values, constraints applied: what gets written to the file.
    pub fn tensors(&self) -> Vec<NamedTensor> {
        self.entries
            .iter()
            .map(|e| {
                let values = match &e.slot {
                    Slot::Running(v) => v.clone(),
                    Slot::Trainable { param, form, .. } => {
                        let p = host(self.params.tensors[*param].val());
                        match form {
                            Form::Free => p,
                            Form::Masked(mask) => p.iter().zip(mask).map(|(v, m)| v * m).collect(),
                            Form::Shared { indices, mask } => indices
                                .iter()
                                .zip(mask)
                                .map(|(&i, m)| p[i as usize] * m)
                                .collect(),
                            Form::Binary { rows } => binarized(&p, *rows),
                            Form::Gaussian {
                                keep, coded, hash, ..
                            } => {
                                let values: Vec<f32> = p
                                    .iter()
                                    .zip(keep)
                                    .zip(coded)
                                    .map(|((v, k), c)| v * k + c)
                                    .collect();
                                match hash {
                                    Some(h) => h.expand(&values),
                                    None => values,
                                }
                            }
                        }
                    }
                };
                NamedTensor::new(&e.name, e.shape.clone(), values)
            })
            .collect()
    }

    /// Names of the tensors Deep Compression may prune and quantize: conv and dense weights.
    pub fn weight_names(&self) -> Vec<String> {
        self.graph
            .nodes
            .iter()
            .zip(&self.ops)
            .filter(|(_, op)| matches!(op, Op::Conv2d(_) | Op::Dense))
            .filter_map(|(n, _)| n.weights.first().cloned())
            .collect()
    }

    /// Run the graph on `x` (NCHW). `training`: batch norms use batch statistics (returned, to
    /// update the running averages with [`Net::absorb`]); a final softmax is skipped so the
    /// result is logits either way.
    pub fn forward(&self, x: Tensor<4>, training: bool) -> Result<(Tensor<2>, BatchStats)> {
        let mut acts: HashMap<&str, Act> = HashMap::new();
        acts.insert(INPUT, Act::Map(x));
        let mut stats = Vec::new();
        let mut last = INPUT;
        let n_nodes = self.graph.nodes.len();
        for (k, (node, op)) in self.graph.nodes.iter().zip(&self.ops).enumerate() {
            let fail =
                |what: String| Error::Model(format!("node {:?} ({}): {what}", node.name, node.op));
            let input = |i: usize| -> Result<Act> {
                node.inputs
                    .get(i)
                    .and_then(|name| acts.get(name.as_str()))
                    .cloned()
                    .ok_or_else(|| fail(format!("input {i} is missing")))
            };
            let map = |a: Act| match a {
                Act::Map(t) => Ok(t),
                Act::Flat(_) => Err(fail("needs an image input".into())),
            };
            let out = match *op {
                Op::Conv2d(conv) | Op::XnorConv2d(conv) => {
                    let x = map(input(0)?)?;
                    let [o, i, kh, kw] = self.shape(&node.weights[0])[..] else {
                        return Err(fail("weight must have rank 4".into()));
                    };
                    let w = self.weight(&node.weights[0])?.reshape([o, i, kh, kw]);
                    let b = node.weights.get(1).map(|b| self.weight(b)).transpose()?;
                    let p = conv.padding;
                    let options = ConvOptions {
                        stride: conv.stride,
                        padding: [(p[0], p[2]), (p[1], p[3])],
                        dilation: conv.dilation,
                        groups: conv.groups,
                    };
                    if matches!(op, Op::Conv2d(_)) {
                        Act::Map(conv2d(x, w, b, options))
                    } else {
                        // K: the mean |x| over each receptive field, padding counting 0.
                        let ones = Tensor::<4>::ones([1, i, kh, kw], &self.device)
                            .div_scalar((i * kh * kw) as f32);
                        let k = conv2d(x.clone().abs(), ones, None, options.clone());
                        let y = conv2d(binarize_input(x), w, None, options) * k;
                        Act::Map(match b {
                            Some(b) => y + b.reshape([1, o, 1, 1]),
                            None => y,
                        })
                    }
                }
                Op::Dense | Op::XnorDense => {
                    let Act::Flat(x) = input(0)? else {
                        return Err(fail("needs a flat input".into()));
                    };
                    let [o, i] = self.shape(&node.weights[0])[..] else {
                        return Err(fail("weight must have rank 2".into()));
                    };
                    let w = self.weight(&node.weights[0])?.reshape([o, i]);
                    let mut y = if *op == Op::Dense {
                        x.matmul(w.transpose())
                    } else {
                        let k = x.clone().abs().mean_dim(1);
                        binarize_input(x).matmul(w.transpose()) * k
                    };
                    if let Some(b) = node.weights.get(1) {
                        y = y + self.weight(b)?.reshape([1, o]);
                    }
                    Act::Flat(y)
                }
                Op::BatchNorm { epsilon: eps } => {
                    let [g, b, m, v] = &node.weights[..] else {
                        return Err(fail("needs gamma, beta, mean and var".into()));
                    };
                    let (gamma, beta) = (self.weight(g)?, self.weight(b)?);
                    let x = input(0)?;
                    let c = gamma.dims()[0];
                    let (mean, var) = if training {
                        let count = match &x {
                            Act::Map(t) => t.dims()[0] * t.dims()[2] * t.dims()[3],
                            Act::Flat(t) => t.dims()[0],
                        };
                        let (mean, var) = match &x {
                            Act::Map(t) => {
                                let mean = t.clone().mean_dims(&[0, 2, 3]);
                                let var = (t.clone() - mean.clone())
                                    .powi_scalar(2)
                                    .mean_dims(&[0, 2, 3]);
                                (mean.reshape([c]), var.reshape([c]))
                            }
                            Act::Flat(t) => {
                                let mean = t.clone().mean_dim(0);
                                let var = (t.clone() - mean.clone()).powi_scalar(2).mean_dim(0);
                                (mean.reshape([c]), var.reshape([c]))
                            }
                        };
                        stats.push((
                            node.name.clone(),
                            mean.clone().detach(),
                            var.clone().detach(),
                            count,
                        ));
                        (mean, var)
                    } else {
                        (self.weight(m)?, self.weight(v)?)
                    };
                    let scale = gamma / (var + eps).sqrt();
                    let shift = beta - mean * scale.clone();
                    match x {
                        Act::Map(t) => {
                            Act::Map(t * scale.reshape([1, c, 1, 1]) + shift.reshape([1, c, 1, 1]))
                        }
                        Act::Flat(t) => {
                            Act::Flat(t * scale.reshape([1, c]) + shift.reshape([1, c]))
                        }
                    }
                }
                Op::Relu | Op::Relu6 => {
                    let f6 = *op == Op::Relu6;
                    match input(0)? {
                        Act::Map(t) => Act::Map(if f6 {
                            activation::relu6(t)
                        } else {
                            activation::relu(t)
                        }),
                        Act::Flat(t) => Act::Flat(if f6 {
                            activation::relu6(t)
                        } else {
                            activation::relu(t)
                        }),
                    }
                }
                Op::MaxPool2d(pool) | Op::AvgPool2d(pool) => {
                    let x = map(input(0)?)?;
                    let (kernel, stride, p) = (pool.kernel, pool.stride, pool.padding);
                    let padding = [(p[0], p[2]), (p[1], p[3])];
                    Act::Map(if matches!(op, Op::MaxPool2d(_)) {
                        max_pool2d(
                            x,
                            MaxPoolOptions {
                                kernel_size: [kernel[0], kernel[1]],
                                stride: [stride[0], stride[1]],
                                padding,
                                dilation: [1, 1],
                                ceil_mode: false,
                            },
                        )
                    } else {
                        avg_pool2d(
                            x,
                            AvgPoolOptions {
                                kernel_size: [kernel[0], kernel[1]],
                                stride: [stride[0], stride[1]],
                                padding,
                                count_include_pad: false,
                                ceil_mode: false,
                            },
                        )
                    })
                }
                Op::GlobalAvgPool => {
                    let x = map(input(0)?)?;
                    let [n, c, _, _] = x.dims();
                    Act::Flat(x.mean_dims(&[2, 3]).reshape([n, c]))
                }
                Op::Flatten => match input(0)? {
                    Act::Map(t) => {
                        let [n, c, h, w] = t.dims();
                        Act::Flat(t.reshape([n, c * h * w]))
                    }
                    flat => flat,
                },
                Op::Pad {
                    padding: [t, l, b, r],
                } => {
                    let x = map(input(0)?)?;
                    Act::Map(x.pad([(t, b), (l, r)], PadMode::Constant(0.0)))
                }
                Op::Sigmoid | Op::HardSwish => {
                    let f = |t: Tensor<4>| match op {
                        Op::Sigmoid => activation::sigmoid(t),
                        _ => t.clone() * activation::relu6(t.add_scalar(3.0)).div_scalar(6.0),
                    };
                    let g = |t: Tensor<2>| match op {
                        Op::Sigmoid => activation::sigmoid(t),
                        _ => t.clone() * activation::relu6(t.add_scalar(3.0)).div_scalar(6.0),
                    };
                    match input(0)? {
                        Act::Map(t) => Act::Map(f(t)),
                        Act::Flat(t) => Act::Flat(g(t)),
                    }
                }
                Op::Sign => {
                    // `sign(x − τ)`: `x ≥ τ` exactly where `x − τ ≥ 0` (gradual underflow keeps
                    // a nonzero difference nonzero), with XNOR-Net's straight-through gradient.
                    let tau = node.weights.first().map(|t| self.weight(t)).transpose()?;
                    match (input(0)?, tau) {
                        (Act::Map(t), None) => Act::Map(binarize_input(t)),
                        (Act::Flat(t), None) => Act::Flat(binarize_input(t)),
                        (Act::Map(t), Some(tau)) => {
                            let c = tau.dims()[0];
                            Act::Map(binarize_input(t - tau.reshape([1, c, 1, 1])))
                        }
                        (Act::Flat(t), Some(tau)) => {
                            let c = tau.dims()[0];
                            Act::Flat(binarize_input(t - tau.reshape([1, c])))
                        }
                    }
                }
                Op::Concat => {
                    let parts: Vec<Act> =
                        (0..node.inputs.len()).map(&input).collect::<Result<_>>()?;
                    match &parts[0] {
                        Act::Map(_) => Act::Map(Tensor::cat(
                            parts.into_iter().map(map).collect::<Result<Vec<_>>>()?,
                            1,
                        )),
                        Act::Flat(_) => Act::Flat(Tensor::cat(
                            parts
                                .into_iter()
                                .map(|p| match p {
                                    Act::Flat(t) => Ok(t),
                                    Act::Map(_) => Err(fail("joins a vector and an image".into())),
                                })
                                .collect::<Result<Vec<_>>>()?,
                            1,
                        )),
                    }
                }
                Op::Mul => match (input(0)?, input(1)?) {
                    (Act::Map(a), Act::Map(b)) => Act::Map(a * b),
                    (Act::Flat(a), Act::Flat(b)) => Act::Flat(a * b),
                    (Act::Map(a), Act::Flat(b)) => {
                        let [n, c] = b.dims();
                        Act::Map(a * b.reshape([n, c, 1, 1]))
                    }
                    _ => return Err(fail("multiplies a vector by an image".into())),
                },
                Op::Add => match (input(0)?, input(1)?) {
                    (Act::Map(a), Act::Map(b)) => Act::Map(a + b),
                    (Act::Flat(a), Act::Flat(b)) => Act::Flat(a + b),
                    _ => return Err(fail("adds an image and a vector".into())),
                },
                // Training works on logits; the softmax is applied by the loss (and by the runtime).
                Op::Softmax if k + 1 == n_nodes => input(0)?,
                Op::Softmax => match input(0)? {
                    Act::Flat(t) => Act::Flat(activation::softmax(t, 1)),
                    _ => return Err(fail("takes a vector".into())),
                },
            };
            acts.insert(node.name.as_str(), out);
            last = node.name.as_str();
        }
        match acts.remove(last) {
            Some(Act::Flat(logits)) => Ok((logits, BatchStats(stats))),
            _ => Err(Error::Model(
                "the graph's output must be one vector per image".into(),
            )),
        }
    }

    /// Fold a training step's batch statistics into the running averages.
    pub fn absorb(&mut self, stats: BatchStats) {
        for (name, mean, var, count) in stats.0 {
            // The running variance averages unbiased estimates (as PyTorch's does).
            let unbias = if count > 1 {
                count as f32 / (count as f32 - 1.0)
            } else {
                1.0
            };
            let Some(node) = self.graph.nodes.iter().find(|n| n.name == name) else {
                continue;
            };
            let (mean, var) = (host(mean), host(var));
            for (key, batch_values, scale) in [
                (&node.weights[2], mean, 1.0),
                (&node.weights[3], var, unbias),
            ] {
                let i = self.by_name[key.as_str()];
                if let Slot::Running(r) = &mut self.entries[i].slot {
                    for (r, b) in r.iter_mut().zip(batch_values) {
                        *r = (1.0 - BN_MOMENTUM) * *r + BN_MOMENTUM * b * scale;
                    }
                }
            }
        }
    }
}

/// A copy of everything training changes, to keep the best epoch.
pub(crate) struct Snapshot {
    params: Vec<Vec<f32>>,
    running: Vec<Option<Vec<f32>>>,
}

impl Net {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            params: self.params.tensors.iter().map(|p| host(p.val())).collect(),
            running: self
                .entries
                .iter()
                .map(|e| match &e.slot {
                    Slot::Running(v) => Some(v.clone()),
                    Slot::Trainable { .. } => None,
                })
                .collect(),
        }
    }

    pub fn restore(&mut self, snapshot: &Snapshot) {
        for (p, v) in self.params.tensors.iter_mut().zip(&snapshot.params) {
            *p = Param::from_tensor(tensor1(v, &self.device));
        }
        for (e, r) in self.entries.iter_mut().zip(&snapshot.running) {
            if let (Slot::Running(v), Some(r)) = (&mut e.slot, r) {
                v.clone_from(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::arch::Arch;
    use crate::train::device;
    use cxrm_format::container::value::Value;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    const INPUT: [usize; 4] = [5, 1, 4, 4];
    const CLASSES: usize = 3;

    /// A two-layer MLP on 4×4 inputs, and a fixed random batch for it.
    fn mlp() -> (Net, Tensor<4>) {
        let (graph, tensors) = Arch::parse("mlp-6")
            .unwrap()
            .build([1, 4, 4], CLASSES, 7)
            .unwrap();
        let net = Net::new(graph, tensors, &device()).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let x: Vec<f32> = (0..INPUT.iter().product::<usize>())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let x = Tensor::from_data(TensorData::new(x, INPUT), net.device());
        (net, x)
    }

    /// The gradient of a fixed linear function of the logits with respect to `name`'s
    /// parameter (for `Shared`, the codebook).
    fn parameter_gradient(net: &Net, x: &Tensor<4>, name: &str) -> Vec<f32> {
        let (logits, _) = net.forward(x.clone(), true).unwrap();
        let weights: Vec<f32> = (0..INPUT[0] * CLASSES)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let loss = (logits * tensor1(&weights, net.device()).reshape([INPUT[0], CLASSES])).sum();
        let grads = loss.backward();
        let Slot::Trainable { param, .. } = net.entries[net.by_name[name]].slot else {
            panic!("{name} is trainable");
        };
        host(
            net.params.tensors[param]
                .val()
                .grad(&grads)
                .expect("a gradient"),
        )
    }

    #[test]
    fn shared_weights_sum_the_gradients_of_their_members_into_the_centroid() {
        let (mut free, x) = mlp();
        let name = "fc1.weight";
        let n = free.shape(name).iter().product::<usize>();
        let mut rng = StdRng::seed_from_u64(11);
        let codebook = [-0.4f32, -0.1, 0.2, 0.5];
        let indices: Vec<u32> = (0..n).map(|_| rng.random_range(0..4u32)).collect();
        let mask: Vec<f32> = (0..n)
            .map(|_| (rng.random_range(0..3) > 0) as u8 as f32)
            .collect();
        let expanded: Vec<f32> = indices
            .iter()
            .zip(&mask)
            .map(|(&i, m)| codebook[i as usize] * m)
            .collect();
        let mut shared = mlp().0;
        free.set_form(name, Form::Free, &expanded).unwrap();
        shared
            .set_form(
                name,
                Form::Shared {
                    indices: indices.clone(),
                    mask: mask.clone(),
                },
                &codebook,
            )
            .unwrap();
        // Same weights, so the same forward pass...
        let logits = |net: &Net| host(net.forward(x.clone(), false).unwrap().0.reshape([15]));
        assert_eq!(logits(&free), logits(&shared));

        // ...and each centroid's gradient is the masked sum of its members' gradients: trained
        // quantization as Han et al. define it.
        let per_weight = parameter_gradient(&free, &x, name);
        let per_centroid = parameter_gradient(&shared, &x, name);
        let mut expected = [0.0f32; 4];
        for ((&i, m), g) in indices.iter().zip(&mask).zip(&per_weight) {
            expected[i as usize] += g * m;
        }
        assert_eq!(per_centroid.len(), 4);
        for (got, want) in per_centroid.iter().zip(expected) {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "centroid gradient {per_centroid:?}, expected {expected:?}"
            );
        }
        assert!(expected.iter().all(|g| g.abs() > 1e-4), "a real gradient");
    }

    #[test]
    fn xnor_layers_train_binarized_weights_through_the_straight_through_estimator() {
        // mlp-6 with fc1 as an XNOR layer: its weight takes the Binary form by itself.
        let (graph, tensors) = Arch::parse("mlp-6")
            .unwrap()
            .build([1, 4, 4], CLASSES, 7)
            .unwrap();
        let mut graph = graph;
        let fc1 = graph.nodes.iter_mut().find(|n| n.name == "fc1").unwrap();
        fc1.op = "xnor_dense".into();
        let binary = Net::new(graph, tensors, &device()).unwrap();
        let (_, x) = mlp();
        let name = "fc1.weight";
        let written = binary.tensors();
        let w = written
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .values
            .clone();
        for row in w.chunks(16) {
            assert!(
                row.iter().all(|v| v.abs() == row[0].abs() && *v != 0.0),
                "{row:?}"
            );
        }
        // The trainer's forward pass is the runtime's, on the file it writes.
        let model = crate::train::TrainedModel {
            graph: binary.graph.clone(),
            tensors: written.clone(),
            metadata: vec![("input.shape".into(), Value::ints([1, 4, 4]))],
        };
        let bytes = model.to_bytes(&|_| None).unwrap();
        let file = cxrm_format::Cxrm::parse(&bytes).unwrap();
        let chain = file.tensor(name).unwrap().chain_name();
        assert_eq!(chain, "binary");
        let runtime = cxrm_runtime::Model::load(&file).unwrap();
        let xs = host(x.clone().reshape([80]));
        let input = cxrm_runtime::ndarray::Array4::from_shape_vec((5, 1, 4, 4), xs).unwrap();
        let want = runtime.forward(input.view()).unwrap();
        let got = host(binary.forward(x.clone(), false).unwrap().0.reshape([15]));
        for (g, w) in got.iter().zip(want.iter()) {
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{got:?} vs {want:?}"
            );
        }
        // Straight through: the real-valued weights get the gradient the binarized ones would.
        let mut free = Net::new(binary.graph.clone(), written, &device()).unwrap();
        free.set_form(name, Form::Free, &w).unwrap();
        let (gb, gf) = (
            parameter_gradient(&binary, &x, name),
            parameter_gradient(&free, &x, name),
        );
        assert!(gf.iter().any(|g| *g != 0.0));
        for (b, f) in gb.iter().zip(&gf) {
            assert!((b - f).abs() <= 1e-6 * (1.0 + f.abs()), "{gb:?} vs {gf:?}");
        }
    }

    #[test]
    fn masked_weights_get_no_gradient_where_pruned() {
        let (mut net, x) = mlp();
        let name = "fc1.weight";
        let values = net
            .tensors()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap()
            .values;
        let mask: Vec<f32> = (0..values.len())
            .map(|i| (i % 3 != 0) as u8 as f32)
            .collect();
        net.set_form(name, Form::Masked(mask.clone()), &values)
            .unwrap();
        let g = parameter_gradient(&net, &x, name);
        assert!(g.iter().zip(&mask).all(|(g, m)| *m == 1.0 || *g == 0.0));
        assert!(g.iter().zip(&mask).any(|(g, m)| *m == 1.0 && *g != 0.0));
    }
}
