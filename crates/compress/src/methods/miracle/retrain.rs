//! MIRACLE's training and coding (Havasi, Peharz & Hernández-Lobato, ICLR 2019):
//!
//! 1. **Variational training.** Every trainable tensor gets a Gaussian posterior per weight
//!    (mean `μ` from the trained model, `log σ`) and a Gaussian prior `N(0, σ_p²)` per tensor
//!    (σ_p learned). The loss is the cross-entropy of a reparameterised draw plus `β · KL(q ‖ p)
//!    / N`, with `β` annealed as the paper does: after every step it grows by `1 + ε_β` while
//!    the KL is above its goal and shrinks by the same factor below it. For the first half of
//!    the epochs one `β` holds the whole network's KL to the whole code's size, so the
//!    optimizer decides where the information goes; each tensor then gets blocks in proportion
//!    to the KL it holds, and for the second half every block has its own `β_b` and the goal of
//!    `C` bits, so that each block can be coded with `2^C` candidates.
//! 2. **Coding, block by block.** The blocks are coded in a random order, a group at a time
//!    (groups shrinking, so that the last, with no training after it, is small);
//!    each block becomes one of `2^C` draws from the prior, picked by importance weights
//!    ([`super::store`]). After each group the weights not yet coded are trained on for
//!    `iters_between` steps, so they absorb the noise the coded ones now carry.
//!
//! 0. **The hashing trick** (as the paper does for LeNet-5's large layers): a weight tensor that
//!    holds much of the network shares fewer values, each weight one of them times a hashed
//!    sign (spec §5.13; HashedNets, Chen et al. 2015). The posterior is then over the shared
//!    values, so the code's bits are spread over far fewer numbers. The shared values start as
//!    the projection of the trained weights and are first trained without noise or KL
//!    (`pretrain_epochs`), as the paper's code pretrains before the KL is switched on.
//!
//! Every phase sees the training images shifted at random as the baseline did (`shift`).
//!
//! The file then stores each tensor as `miracle` (spec §5.12): a seed, and `C` bits per block;
//! a hashed tensor as `hashed` then `miracle`.

use super::store::{self, BlockPosterior};
use crate::train::fit::{correct_in_batch, normalised, shifted};
use crate::train::net::{Form, Hash, LOG_SIGMA_SCALE, Net, host, tensor1};
use crate::train::{Event, TrainData, TrainOptions, TrainedModel, device, finish, validator};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};
use cxrm_format::container::value::Value;
use cxrm_format::encoding::hashed;
use cxrm_format::encoding::miracle::{self, Miracle, Params};
use cxrm_format::error::{Error, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use std::path::Path;

#[derive(Debug, Clone)]
pub struct MiracleOptions {
    /// `C`: bits per block, the coding goal of each block's KL divergence.
    pub bits_per_block: u8,
    /// Size of the whole code (every block's index) in KB (1,024 bytes); sets the blocks.
    pub target_kb: f64,
    /// Training steps on the weights not yet coded after each group of coded blocks.
    pub iters_between: usize,
    /// Groups the blocks are coded in.
    pub rounds: usize,
    /// `ε_β`: the factor each block's KL weight moves by per step.
    pub beta_step: f64,
    /// The variational phase (epochs, Adam's learning rate, batch size, shift, seed).
    pub train: TrainOptions,
    /// Threads that score candidates.
    pub threads: usize,
    /// Which weight tensors share values through the hashing trick.
    pub hash: HashPlan,
    /// Epochs of plain training of the hashed tensors' shared values before the variational
    /// phase; `None`: half the variational epochs when some tensor is hashed, else none.
    pub pretrain_epochs: Option<usize>,
}

/// Which weight tensors share values through the hashing trick (spec §5.13), and how many
/// weights share each value.
#[derive(Debug, Clone, PartialEq)]
pub enum HashPlan {
    /// None.
    Off,
    /// The paper's LeNet-5 factors (fc1 by 50, conv2 by 2), as a rule any network can follow:
    /// a weight tensor holding over half of the network's weights shares each value among 50,
    /// one holding over 5% among 2.
    Auto,
    /// `(tensor name, weights per shared value)`.
    Groups(Vec<(String, u32)>),
}

impl HashPlan {
    /// Weights per shared value for a tensor of `elements` (rank `rank`) in a network of
    /// `total` weights; 1 means not hashed.
    pub fn group(&self, name: &str, rank: usize, elements: usize, total: usize) -> u32 {
        match self {
            HashPlan::Off => 1,
            HashPlan::Auto if rank < 2 => 1,
            HashPlan::Auto if elements * 2 > total => 50,
            HashPlan::Auto if elements * 20 > total => 2,
            HashPlan::Auto => 1,
            HashPlan::Groups(g) => g.iter().find(|(n, _)| n == name).map_or(1, |&(_, g)| g),
        }
    }
}

impl std::str::FromStr for HashPlan {
    type Err = String;

    /// `auto`, `off`, or `NAME=G,NAME=G`.
    fn from_str(s: &str) -> std::result::Result<HashPlan, String> {
        match s {
            "auto" => return Ok(HashPlan::Auto),
            "off" | "none" => return Ok(HashPlan::Off),
            _ => {}
        }
        s.split(',')
            .map(|item| {
                let (name, g) = item
                    .split_once('=')
                    .ok_or_else(|| format!("{item:?}: expected NAME=WEIGHTS_PER_VALUE"))?;
                let g: u32 =
                    g.parse().ok().filter(|&g| g >= 1).ok_or_else(|| {
                        format!("{item:?}: weights per value is a whole number ≥ 1")
                    })?;
                Ok((name.to_string(), g))
            })
            .collect::<std::result::Result<_, _>>()
            .map(HashPlan::Groups)
    }
}

impl MiracleOptions {
    /// cxrm's defaults for LeNet-sized networks on two CPU cores: 16-bit blocks (the paper
    /// codes 20 bits a block on a GPU), a 3 KB code, 20 coding rounds of 50 steps between.
    pub fn defaults(train: TrainOptions) -> MiracleOptions {
        MiracleOptions {
            bits_per_block: 16,
            target_kb: 3.0,
            iters_between: 50,
            rounds: 20,
            beta_step: 0.005,
            train,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            hash: HashPlan::Auto,
            pretrain_epochs: None,
        }
    }

    /// Blocks in all for `tensors` coded tensors: the code's bits over the bits per block,
    /// less 7 bits a tensor, since each tensor's indices end on a whole byte; so the tensors'
    /// payloads together never pass `target_kb`.
    pub fn total_blocks(&self, tensors: usize) -> usize {
        let bits = (self.target_kb * 1024.0 * 8.0).floor() - 7.0 * tensors as f64;
        (bits.max(0.0) / self.bits_per_block as f64).floor() as usize
    }
}

/// One coded tensor, as a line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct MiracleReport {
    pub tensor: String,
    pub elements: usize,
    pub blocks: u32,
    pub bits_per_block: u8,
    pub prior_sigma: f32,
    /// Its posterior's KL divergence from the prior when coding began, in bits.
    pub kl_bits: f64,
    /// The values its weights share (hashing trick), when hashed.
    pub shared_values: Option<u32>,
}

impl std::fmt::Display for MiracleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<16} {} weights{} in {} blocks of {} bits ({} bits coded; KL {:.0} bits), σ_p {:.4}",
            self.tensor,
            self.elements,
            self.shared_values
                .map(|m| format!(" sharing {m} hashed values"))
                .unwrap_or_default(),
            self.blocks,
            self.bits_per_block,
            self.blocks as u64 * self.bits_per_block as u64,
            self.kl_bits,
            self.prior_sigma
        )
    }
}

/// One tensor's code: its blocks' indices, and the hashing when its weights share values.
#[derive(Debug, Clone, PartialEq)]
pub struct CodedTensor {
    pub name: String,
    pub shared: Option<hashed::Params>,
    pub code: Miracle,
}

impl CodedTensor {
    fn encode(&self) -> cxrm_format::encoding::Encoded<'static> {
        match self.shared {
            Some(shared) => hashed::encode(shared, &self.code),
            None => miracle::encode(&self.code),
        }
    }
}

/// A model whose tensors are MIRACLE codes.
pub struct MiracleModel {
    /// The coded values, as the runtime will decode them.
    pub model: TrainedModel,
    /// Each tensor's code.
    pub coded: Vec<CodedTensor>,
}

impl MiracleModel {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.model
            .to_bytes_with(&|t, _| match self.coded.iter().find(|c| c.name == t.name) {
                Some(c) => Ok(c.encode()),
                None => Ok(t.dense()),
            })
    }

    /// Write atomically; returns the file's size.
    pub fn write(&self, path: &Path) -> Result<u64> {
        let bytes = self.to_bytes()?;
        cxrm_format::container::writer::write_atomically(path, |w| {
            std::io::Write::write_all(w, &bytes)
        })?;
        Ok(bytes.len() as u64)
    }
}

/// One tensor under MIRACLE: its parameters' places and its coding state.
struct Coded {
    name: String,
    /// Parameters: `μ`, `log σ` and `log σ_p` (one value), both logs divided by
    /// [`LOG_SIGMA_SCALE`].
    mean: usize,
    log_sigma: usize,
    log_prior: usize,
    params: Params,
    /// The hashing trick's parameters, when the weights share fewer values (the posterior and
    /// everything below are then over the shared values).
    shared: Option<hashed::Params>,
    /// Each block's KL weight `β_b`.
    beta: Vec<f32>,
    /// 1 for weights still trained, 0 for coded ones.
    keep: Vec<f32>,
    values: Vec<f32>,
    indices: Vec<u32>,
    /// Whether block `b` is coded.
    done: Vec<bool>,
}

impl Coded {
    fn len(&self) -> usize {
        self.keep.len()
    }

    /// `log σ_p`, as the file will store it (f32).
    fn prior_sigma(&self, net: &Net) -> f32 {
        (host(net.param(self.log_prior))[0] * LOG_SIGMA_SCALE).exp()
    }
}

/// The training state shared by both phases.
struct Trainer<'a> {
    net: Net,
    coded: Vec<Coded>,
    optim: ModuleOptimizer,
    rng: StdRng,
    data: &'a TrainData,
    x_all: Vec<f32>,
    /// KL goal of a block, in nats.
    goal: f32,
    beta_step: f32,
    /// σ_p stays fixed once coding starts: the coded draws were made with it.
    prior_frozen: bool,
    /// While the blocks are not planned yet: one `β` (every tensor's `beta[0]`) for the whole
    /// network's KL, against this goal in nats.
    global_goal: Option<f32>,
    /// `false` while pretraining: the means alone, with no noise and no KL.
    variational: bool,
    /// Random shifts of up to this many pixels, as the baseline trained (`--shift`).
    shift: usize,
    /// What a black pixel becomes after normalisation: the fill for shifted-in borders.
    background: Vec<f32>,
}

impl Trainer<'_> {
    /// Each block's `KL(q ‖ p)` in nats, as autodiff sees it (weights already coded count 0).
    fn block_kl(&self, c: &Coded, tracked: bool) -> Tensor<1> {
        let n = c.len();
        let blocks = c.params.blocks as usize;
        // Untracked reads detach the parameters before any op: an op on a tracked tensor that
        // no backward pass consumes stays in burn's autodiff graph, and the graph's cleaner then
        // scans every such orphan on each step (it was 85% of a coding step's time).
        let param = |i: usize, track: bool| {
            let p = self.net.param(i);
            if track { p } else { p.detach() }
        };
        let mu = param(c.mean, tracked);
        let log_sigma = param(c.log_sigma, tracked) * LOG_SIGMA_SCALE;
        let log_prior = param(c.log_prior, tracked && !self.prior_frozen) * LOG_SIGMA_SCALE;
        let log_prior = log_prior.repeat_dim(0, n);
        let device = self.net.device();
        // log σ_p − log σ + (σ² + μ²) / (2σ_p²) − 1/2, per weight.
        let kl = log_prior.clone() - log_sigma.clone()
            + ((log_sigma * 2.0).exp() + mu.powi_scalar(2)) / ((log_prior * 2.0).exp() * 2.0)
            - 0.5;
        let kl = kl * tensor1(&c.keep, device);
        // Element e is in block e mod B: rows of B, summed down the columns.
        let rows = n.div_ceil(blocks);
        let padded = Tensor::cat(vec![kl, Tensor::<1>::zeros([rows * blocks - n], device)], 0);
        padded.reshape([rows, blocks]).sum_dim(0).reshape([blocks])
    }

    /// One step of Adam on a batch: cross-entropy of a fresh draw of the weights plus the
    /// blocks' weighted KL; then each block's `β` moves towards its goal. Returns the loss and
    /// the batch's correct answers.
    fn step(&mut self, batch: &[usize], lr: f64) -> Result<(f64, usize)> {
        let train = &self.data.train;
        let classes = train.classes.len();
        let per_image = train.channels * train.height * train.width;
        let b = batch.len();
        let mut xb = Vec::with_capacity(b * per_image);
        let mut onehot = vec![0.0f32; b * classes];
        for (r, &i) in batch.iter().enumerate() {
            let image = &self.x_all[i * per_image..(i + 1) * per_image];
            if self.shift > 0 {
                let s = self.shift as i64;
                let (dy, dx) = (self.rng.random_range(-s..=s), self.rng.random_range(-s..=s));
                let shape = [train.channels, train.height, train.width];
                shifted(image, shape, dy, dx, &self.background, &mut xb);
            } else {
                xb.extend_from_slice(image);
            }
            onehot[r * classes + train.labels[i]] = 1.0;
        }
        for k in 0..self.coded.len() {
            let name = self.coded[k].name.clone();
            if self.variational {
                let eps = gaussian_noise(&mut self.rng, self.coded[k].len());
                self.net.set_noise(&name, Some(&eps));
            } else {
                self.net.set_noise(&name, None);
            }
        }
        let device = self.net.device().clone();
        let x = Tensor::<4>::from_data(
            TensorData::new(xb, [b, train.channels, train.height, train.width]),
            &device,
        );
        let (logits, stats) = self.net.forward(x, true)?;
        let target = tensor1(&onehot, &device).reshape([b, classes]);
        let ce = (log_softmax(logits.clone(), 1) * target).sum().neg() / b as f32;
        if !self.variational {
            let grads = GradientsParams::from_grads(ce.backward(), &self.net.params);
            let params = std::mem::take(&mut self.net.params);
            self.net.params = self.optim.step(lr, params, grads);
            self.net.absorb(stats);
            let loss = host(ce.detach())[0] as f64;
            if !loss.is_finite() {
                return Err(Error::Model(
                    "miracle: pretraining diverged (try a lower --lr)".into(),
                ));
            }
            return Ok((loss, correct_in_batch(logits, batch, &train.labels)));
        }
        let kls: Vec<Tensor<1>> = self.coded.iter().map(|c| self.block_kl(c, true)).collect();
        let mut kl_term = Tensor::<1>::zeros([1], &device);
        for (c, kl) in self.coded.iter().zip(&kls) {
            kl_term = kl_term + (kl.clone() * tensor1(&c.beta, &device)).sum();
        }
        let loss = ce + kl_term / train.len() as f32;
        let grads = GradientsParams::from_grads(loss.backward(), &self.net.params);
        let params = std::mem::take(&mut self.net.params);
        self.net.params = self.optim.step(lr, params, grads);
        self.net.absorb(stats);
        let grow = |beta: f32, above: bool| {
            if above {
                beta * (1.0 + self.beta_step)
            } else {
                beta / (1.0 + self.beta_step)
            }
        };
        match self.global_goal {
            Some(goal) => {
                let total: f32 = kls.into_iter().map(|kl| host(kl.detach().sum())[0]).sum();
                for c in &mut self.coded {
                    c.beta[0] = grow(c.beta[0], total > goal);
                }
            }
            None => {
                for (c, kl) in self.coded.iter_mut().zip(kls) {
                    let blocks = host(kl.detach());
                    for ((beta, kl), done) in c.beta.iter_mut().zip(blocks).zip(&c.done) {
                        if !done {
                            *beta = grow(*beta, kl > self.goal);
                        }
                    }
                }
            }
        }
        let loss_value = host(loss.detach())[0] as f64;
        if !loss_value.is_finite() {
            return Err(Error::Model(
                "miracle: the loss diverged (try a lower --lr)".into(),
            ));
        }
        Ok((loss_value, correct_in_batch(logits, batch, &train.labels)))
    }

    /// One pass over the training images in a fresh order, then the validation accuracy at the
    /// posterior's means, reported as an epoch; `step` counts the steps across epochs.
    fn epoch(
        &mut self,
        pass: &EpochPass<'_>,
        order: &mut [usize],
        step: &mut usize,
        validate: &mut dyn FnMut(&Net) -> Result<f64>,
        on: &mut dyn FnMut(Event),
    ) -> Result<f64> {
        order.shuffle(&mut self.rng);
        let (mut loss_sum, mut correct) = (0.0, 0);
        for chunk in order.chunks(pass.batch) {
            let (loss, ok) = self.step(chunk, (pass.lr)(*step))?;
            on(Event::Step {
                loss,
                accuracy: ok as f64 / chunk.len() as f64,
            });
            loss_sum += loss * chunk.len() as f64;
            correct += ok;
            *step += 1;
        }
        self.without_noise();
        let val = validate(&self.net)?;
        on(Event::Epoch {
            epoch: pass.epoch,
            loss: loss_sum / order.len() as f64,
            train_accuracy: correct as f64 / order.len() as f64,
            val_accuracy: val,
            best: false,
        });
        Ok(val)
    }

    /// Give each tensor blocks in proportion to the KL its posterior holds, each block then
    /// held to its own goal of `C` bits, starting from the network's shared `β`.
    fn plan_blocks(&mut self, sizes: &[usize], total: usize) {
        let need = self.kl_bits();
        let blocks = store::plan_blocks(&need, sizes, total);
        for (c, b) in self.coded.iter_mut().zip(blocks) {
            let beta = c.beta[0];
            c.params.blocks = b;
            c.beta = vec![beta; b as usize];
            c.indices = vec![0; b as usize];
            c.done = vec![false; b as usize];
        }
        self.global_goal = None;
    }

    /// Each posterior starts narrow around its means (σ a tenth of their spread), and each
    /// prior as wide as they.
    fn init_sigmas(&mut self) {
        let device = self.net.device().clone();
        for c in &self.coded {
            let spread = std_dev(&host(self.net.param(c.mean))).max(1e-3);
            self.net.params.tensors[c.log_sigma] = burn::module::Param::from_tensor(tensor1(
                &vec![(spread * 0.1).ln() / LOG_SIGMA_SCALE; c.len()],
                &device,
            ));
            self.net.params.tensors[c.log_prior] = burn::module::Param::from_tensor(tensor1(
                &[spread.ln() / LOG_SIGMA_SCALE],
                &device,
            ));
        }
    }

    /// Evaluation uses each posterior's mean (coded weights as coded).
    fn without_noise(&mut self) {
        for k in 0..self.coded.len() {
            let name = self.coded[k].name.clone();
            self.net.set_noise(&name, None);
        }
    }

    /// Total KL of each tensor, in bits.
    fn kl_bits(&self) -> Vec<f64> {
        self.coded
            .iter()
            .map(|c| {
                host(self.block_kl(c, false))
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>()
                    / std::f64::consts::LN_2
            })
            .collect()
    }

    /// Code the blocks `order` lists: each picks a prior draw by importance weight, and the
    /// tensor's weights in it are fixed to that draw.
    fn code(&mut self, order: &[(usize, u32)], threads: usize) {
        let mut touched = vec![false; self.coded.len()];
        // Each tensor's posterior, read from the net once per group (nothing trains within a
        // group), not once per block: fc1 alone has over a thousand blocks.
        let mut posteriors: Vec<Option<(Vec<f32>, Vec<f32>)>> = vec![None; self.coded.len()];
        for &(t, block) in order {
            let c = &self.coded[t];
            let (mu, sigma) = posteriors[t].get_or_insert_with(|| {
                (
                    host(self.net.param(c.mean)),
                    host((self.net.param(c.log_sigma).detach() * LOG_SIGMA_SCALE).exp()),
                )
            });
            let elements: Vec<usize> =
                store::block_elements(c.len(), c.params.blocks, block).collect();
            let mean: Vec<f32> = elements.iter().map(|&e| mu[e]).collect();
            let sd: Vec<f32> = elements.iter().map(|&e| sigma[e]).collect();
            let log_w = store::log_importance(
                &c.params,
                block,
                &BlockPosterior {
                    mean: &mean,
                    sigma: &sd,
                },
                threads,
            );
            let (index, _) = store::pick(&log_w, self.rng.random::<f64>());
            let values = store::block_values(&c.params, block, index, elements.len());
            let c = &mut self.coded[t];
            for (&e, v) in elements.iter().zip(values) {
                c.values[e] = v;
                c.keep[e] = 0.0;
            }
            c.indices[block as usize] = index;
            c.done[block as usize] = true;
            touched[t] = true;
        }
        for (t, c) in self.coded.iter().enumerate() {
            if touched[t] {
                let coded: Vec<f32> = c
                    .values
                    .iter()
                    .zip(&c.keep)
                    .map(|(v, k)| v * (1.0 - k))
                    .collect();
                self.net
                    .set_coded(&c.name, c.keep.clone(), coded)
                    .expect("a Gaussian tensor");
            }
        }
    }
}

/// One epoch's settings: its number, the batch size, and the learning rate at each step.
struct EpochPass<'a> {
    epoch: usize,
    batch: usize,
    lr: &'a dyn Fn(usize) -> f64,
}

/// `n` standard normal numbers (Box–Muller), for the reparameterised draws.
fn gaussian_noise(rng: &mut StdRng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}

fn std_dev(v: &[f32]) -> f32 {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt() as f32
}

/// Train `base`'s posterior and code every trainable tensor with MIRACLE.
pub fn miracle(
    base: &TrainedModel,
    data: &TrainData,
    opts: &MiracleOptions,
    on: &mut dyn FnMut(Event),
) -> Result<(MiracleModel, Vec<MiracleReport>)> {
    if !(1..=24).contains(&opts.bits_per_block) {
        return Err(Error::Usage(format!(
            "--bits-per-block {}: 1 to 24 (each block scores 2^bits candidates)",
            opts.bits_per_block
        )));
    }
    let n_train = data.train.len();
    if n_train == 0 {
        return Err(Error::Usage("the training split is empty".into()));
    }
    let mut net = Net::new(base.graph.clone(), base.tensors.clone(), &device())?;
    let trainable: Vec<&crate::train::NamedTensor> = base
        .tensors
        .iter()
        .filter(|t| net.param_of(&t.name).is_some() && !t.values.is_empty())
        .collect();
    let total_weights: usize = trainable
        .iter()
        .filter(|t| t.shape.len() >= 2)
        .map(|t| t.values.len())
        .sum();
    let mut coded = Vec::new();
    let mut sizes = Vec::new();
    // One block each until the first half of training shows where the information goes.
    let b = 1;
    for (k, t) in trainable.iter().enumerate() {
        let n = t.values.len();
        let group = opts.hash.group(&t.name, t.shape.len(), n, total_weights);
        let shared = (group > 1).then(|| hashed::Params {
            seed: miracle::mix(opts.train.seed ^ (k as u64 + 1).wrapping_mul(0x51_7CC1_B727)),
            values: n.div_ceil(group as usize) as u32,
        });
        // The posterior's means start at the trained weights, or at their projection onto the
        // shared values: the mean of `ξ(e)·w[e]` over the weights sharing each.
        let (mean, hash) = match shared {
            None => (t.values.clone(), None),
            Some(p) => {
                let sums = p.gather_sums(&t.values);
                let mean: Vec<f32> = sums
                    .iter()
                    .enumerate()
                    .map(|(v, &sum)| (sum / p.uses(n as u64, v) as f64) as f32)
                    .collect();
                let (indices, signs) = (0..n as u64)
                    .map(|e| {
                        let (v, negated) = p.slot(e);
                        (v as u32, if negated { -1.0f32 } else { 1.0 })
                    })
                    .unzip();
                (mean, Some(Hash { indices, signs }))
            }
        };
        let m = mean.len();
        sizes.push(m);
        // Placeholders until the means are final (after any pretraining): see `init_sigmas`.
        let log_sigma = net.add_param(&vec![0.0; m]);
        let log_prior = net.add_param(&[0.0]);
        net.set_form(
            &t.name,
            Form::Gaussian {
                log_sigma,
                keep: vec![1.0; m],
                coded: vec![0.0; m],
                hash,
            },
            &mean,
        )?;
        coded.push(Coded {
            name: t.name.clone(),
            mean: net.param_of(&t.name).expect("trainable"),
            log_sigma,
            log_prior,
            params: Params {
                seed: miracle::mix(opts.train.seed ^ (k as u64 + 1).wrapping_mul(0x9E37_79B9)),
                blocks: b,
                index_bits: opts.bits_per_block,
                prior_sigma: 1.0,
            },
            shared,
            beta: vec![1.0; b as usize],
            keep: vec![1.0; m],
            values: vec![0.0; m],
            indices: vec![0; b as usize],
            done: vec![false; b as usize],
        });
    }
    let any_hashed = coded.iter().any(|c| c.shared.is_some());
    let total_blocks = opts.total_blocks(coded.len());
    let pretrain_epochs = opts.pretrain_epochs.unwrap_or(if any_hashed {
        opts.train.epochs.div_ceil(2)
    } else {
        0
    });
    let mut trainer = Trainer {
        net,
        coded,
        optim: AdamConfig::new().init(),
        rng: StdRng::seed_from_u64(opts.train.seed ^ 0x4d49_5241),
        data,
        x_all: normalised(&data.train, &data.spec),
        goal: opts.bits_per_block as f32 * std::f32::consts::LN_2,
        beta_step: opts.beta_step as f32,
        prior_frozen: false,
        global_goal: Some(
            total_blocks as f32 * opts.bits_per_block as f32 * std::f32::consts::LN_2,
        ),
        variational: false,
        shift: opts.train.shift,
        background: (0..data.train.channels)
            .map(|c| data.spec.scale_pixel(c, 0))
            .collect(),
    };
    let batch = opts.train.batch_size.clamp(1, n_train);
    let steps_per_epoch = n_train.div_ceil(batch);
    let mut validate = validator(&base.metadata, &data.val, &crate::train::dense);
    let mut order: Vec<usize> = (0..n_train).collect();

    // 0. Pretraining: the shared values learn to stand for the weights they replace.
    if pretrain_epochs > 0 {
        on(Event::Phase {
            name: "miracle: pretraining the hashed weights".into(),
            epochs: pretrain_epochs,
            steps_per_epoch,
        });
        let pretrain_steps = (steps_per_epoch * pretrain_epochs).max(1);
        let mut step = 0;
        let mut last_val = 0.0;
        // A cosine decay to a tenth: the shared values settle before the noise starts.
        let lr = |step: usize| {
            let progress = step as f64 / pretrain_steps as f64;
            opts.train.lr * (0.55 + 0.45 * (std::f64::consts::PI * progress).cos())
        };
        for epoch in 1..=pretrain_epochs {
            let pass = EpochPass {
                epoch,
                batch,
                lr: &lr,
            };
            last_val = trainer.epoch(&pass, &mut order, &mut step, &mut validate, on)?;
        }
        on(Event::PhaseEnd {
            name: "miracle: pretraining the hashed weights".into(),
            best_epoch: pretrain_epochs,
            val_accuracy: last_val,
        });
        // The variational phase starts its optimizer afresh.
        trainer.optim = AdamConfig::new().init();
    }
    trainer.init_sigmas();
    trainer.variational = true;
    let planned_after = opts.train.epochs.div_ceil(2);

    // 1. The variational phase.
    on(Event::Phase {
        name: "miracle: variational training".into(),
        epochs: opts.train.epochs,
        steps_per_epoch,
    });
    let total_steps = (steps_per_epoch * opts.train.epochs).max(1);
    let mut step = 0;
    let mut last_val = 0.0;
    // Constant, then a cosine decay over the last half: the KL weights need steps at a useful
    // rate to find their balance.
    let lr = |step: usize| {
        let progress = (step as f64 / total_steps as f64 - 0.5).max(0.0) * 2.0;
        opts.train.lr * (0.55 + 0.45 * (std::f64::consts::PI * progress).cos())
    };
    for epoch in 1..=opts.train.epochs {
        let pass = EpochPass {
            epoch,
            batch,
            lr: &lr,
        };
        last_val = trainer.epoch(&pass, &mut order, &mut step, &mut validate, on)?;
        let kl: f64 = trainer.kl_bits().iter().sum();
        let budget = total_blocks * opts.bits_per_block as usize;
        on(Event::Note(format!(
            "epoch {epoch}: KL {kl:.0} bits against a code of {budget} bits"
        )));
        if epoch == planned_after {
            trainer.plan_blocks(&sizes, total_blocks);
            let plan: Vec<String> = trainer
                .coded
                .iter()
                .map(|c| format!("{} {}", c.name, c.params.blocks))
                .collect();
            on(Event::Note(format!("blocks by KL: {}", plan.join(", "))));
        }
    }
    if trainer.global_goal.is_some() {
        trainer.plan_blocks(&sizes, total_blocks);
    }
    on(Event::PhaseEnd {
        name: "miracle: variational training".into(),
        best_epoch: opts.train.epochs,
        val_accuracy: last_val,
    });

    // 2. Coding: the prior is fixed to what the file stores, then blocks are coded a group at
    // a time, with training between.
    trainer.prior_frozen = true;
    let kl_bits = trainer.kl_bits();
    for c in &mut trainer.coded {
        c.params.prior_sigma = c.prior_sigma(&trainer.net);
    }
    for k in 0..trainer.coded.len() {
        // The prior the candidates are drawn from is the f32 the file stores.
        let sigma = trainer.coded[k].params.prior_sigma;
        let i = trainer.coded[k].log_prior;
        trainer.net.params.tensors[i] = burn::module::Param::from_tensor(tensor1(
            &[sigma.ln() / LOG_SIGMA_SCALE],
            &trainer.net.device().clone(),
        ));
    }
    let mut blocks_left: Vec<(usize, u32)> = trainer
        .coded
        .iter()
        .enumerate()
        .flat_map(|(t, c)| (0..c.params.blocks).map(move |b| (t, b)))
        .collect();
    blocks_left.shuffle(&mut trainer.rng);
    let rounds = opts.rounds.max(1);
    on(Event::Phase {
        name: "miracle: coding".into(),
        epochs: rounds,
        steps_per_epoch: opts.iters_between,
    });
    let mut batch_order: Vec<usize> = (0..n_train).collect();
    let groups = store::coding_groups(blocks_left.len(), rounds)
        .into_iter()
        .map(|range| blocks_left[range].to_vec())
        .collect::<Vec<_>>();
    let total_groups = groups.len();
    for (round, group) in groups.into_iter().enumerate() {
        let started = std::time::Instant::now();
        trainer.code(&group, opts.threads);
        let coding_seconds = started.elapsed().as_secs_f64();
        let remaining = round + 1 < total_groups;
        if remaining {
            batch_order.shuffle(&mut trainer.rng);
            for (s, chunk) in batch_order
                .chunks(batch)
                .cycle()
                .take(opts.iters_between)
                .enumerate()
            {
                let lr = opts.train.lr * 0.5 * (1.0 - s as f64 / opts.iters_between.max(1) as f64);
                let (loss, ok) = trainer.step(chunk, lr)?;
                on(Event::Step {
                    loss,
                    accuracy: ok as f64 / chunk.len() as f64,
                });
            }
        }
        trainer.without_noise();
        last_val = validate(&trainer.net)?;
        on(Event::Note(format!(
            "round {}/{total_groups}: coded {} blocks of 2^{} candidates in {coding_seconds:.1} s; \
             validation accuracy {last_val:.4}",
            round + 1,
            group.len(),
            opts.bits_per_block,
        )));
    }

    // 3. The file: every coded tensor must decode to exactly the values trained with.
    let mut out = finish(&trainer.net, base.metadata.clone());
    out.set_meta("compress.method", Value::String("miracle".into()));
    out.set_meta("train.val_accuracy", Value::Float(last_val));
    out.set_meta(
        "miracle.bits_per_block",
        Value::Int(opts.bits_per_block as i64),
    );
    out.set_meta("miracle.target_kb", Value::Float(opts.target_kb));
    out.set_meta("miracle.epochs", Value::Int(opts.train.epochs as i64));
    out.set_meta(
        "miracle.iters_between",
        Value::Int(opts.iters_between as i64),
    );
    out.set_meta(
        "miracle.pretrain_epochs",
        Value::Int(pretrain_epochs as i64),
    );
    let mut codes = Vec::new();
    let mut reports = Vec::new();
    for (c, kl) in trainer.coded.iter().zip(kl_bits) {
        let m = Miracle {
            params: c.params,
            indices: c.indices.clone(),
        };
        if store::decoded_values(&m, c.len()) != c.values {
            return Err(Error::Model(format!(
                "miracle: tensor {:?} would not decode to the values it was trained with",
                c.name
            )));
        }
        let elements = match c.shared {
            Some(_) => base
                .tensors
                .iter()
                .find(|t| t.name == c.name)
                .map_or(0, |t| t.values.len()),
            None => c.len(),
        };
        reports.push(MiracleReport {
            tensor: c.name.clone(),
            elements,
            blocks: c.params.blocks,
            bits_per_block: c.params.index_bits,
            prior_sigma: c.params.prior_sigma,
            kl_bits: kl,
            shared_values: c.shared.map(|p| p.values),
        });
        codes.push(CodedTensor {
            name: c.name.clone(),
            shared: c.shared,
            code: m,
        });
    }
    Ok((
        MiracleModel {
            model: out,
            coded: codes,
        },
        reports,
    ))
}
