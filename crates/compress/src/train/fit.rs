//! The training loop: shuffled mini-batches, Adam with a cosine learning-rate schedule, a
//! validation pass through the cxrm runtime after every epoch, and the best epoch kept.

use super::net::{Net, tensor1};
use super::soft_targets::{SoftTargetCache, Teacher};
use super::{Event, TrainData, TrainOptions};
use burn::optim::{AdamConfig, GradientsParams, decay::WeightDecayConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};
use cxrm_format::error::{Error, Result};
use cxrm_runtime::InputSpec;
use cxrm_runtime::data::Dataset;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

/// What the loss is measured against.
pub(crate) enum Targets<'a> {
    /// Cross-entropy with the labels.
    Labels,
    /// Hinton et al.'s distillation, `alpha · T² · CE(softmax(teacher/T), softmax(student/T))`
    /// plus `(1 − alpha) · CE(labels, softmax(student))`. The soft targets are the teacher's
    /// softened probabilities for each image as the student sees it, shift included.
    Distill {
        teacher: &'a dyn Teacher,
        alpha: f32,
    },
}

/// Images normalised as the model's metadata says, `[n, C, H, W]` f32, in one buffer.
/// The arithmetic is the runtime's (spec §7), so training sees what the runtime will see.
pub(crate) fn normalised(data: &Dataset, spec: &InputSpec) -> Vec<f32> {
    let plane = data.height * data.width;
    data.pixels
        .chunks(plane)
        .enumerate()
        .flat_map(|(k, px)| {
            let c = k % data.channels;
            px.iter().map(move |&p| spec.scale_pixel(c, p))
        })
        .collect()
}

/// Append `image` (`[C, H, W]`) translated by (`dy`, `dx`) pixels, borders filled with the
/// channel's background value: the random-shift augmentation of LeCun et al.'s MNIST work.
pub(crate) fn shifted(
    image: &[f32],
    [c, h, w]: [usize; 3],
    dy: i64,
    dx: i64,
    background: &[f32],
    out: &mut Vec<f32>,
) {
    for ch in 0..c {
        let plane = &image[ch * h * w..(ch + 1) * h * w];
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                let (sy, sx) = (y - dy, x - dx);
                out.push(
                    if (0..h as i64).contains(&sy) && (0..w as i64).contains(&sx) {
                        plane[sy as usize * w + sx as usize]
                    } else {
                        background[ch]
                    },
                );
            }
        }
    }
}

/// How many of a batch's images (`batch`, indices into `labels`) its logits classify right.
pub(crate) fn correct_in_batch(logits: Tensor<2>, batch: &[usize], labels: &[usize]) -> usize {
    let [b, classes] = logits.dims();
    let predicted = super::net::host(logits.detach().reshape([b * classes]));
    batch
        .iter()
        .enumerate()
        .filter(|&(r, &i)| {
            cxrm_runtime::metrics::argmax(&predicted[r * classes..(r + 1) * classes]) == labels[i]
        })
        .count()
}

/// Train `net` in place for `opts.epochs` epochs; at the end it holds the weights of the
/// epoch with the best validation accuracy (measured on the written form of the model by
/// `validate`). Returns that accuracy.
pub(crate) fn fit(
    net: &mut Net,
    data: &TrainData,
    opts: &TrainOptions,
    targets: &Targets<'_>,
    phase: &str,
    validate: &mut dyn FnMut(&Net) -> Result<f64>,
    on: &mut dyn FnMut(Event),
) -> Result<f64> {
    let train = &data.train;
    let n = train.len();
    if n == 0 {
        return Err(Error::Usage("the training split is empty".into()));
    }
    let classes = train.classes.len();
    let x_all = normalised(train, &data.spec);
    let per_image = train.channels * train.height * train.width;
    let batch = opts.batch_size.clamp(1, n);
    let steps_per_epoch = n.div_ceil(batch);
    let total_steps = (steps_per_epoch * opts.epochs).max(1);
    let mut optim = AdamConfig::new()
        .with_weight_decay(
            (opts.weight_decay > 0.0).then(|| WeightDecayConfig::new(opts.weight_decay)),
        )
        .init();
    // A different shuffle per phase, still fixed by the seed.
    let mut rng = StdRng::seed_from_u64(
        opts.seed
            ^ phase
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)),
    );
    let mut order: Vec<usize> = (0..n).collect();
    // What a black pixel becomes after normalisation: the fill for shifted-in borders.
    let background: Vec<f32> = (0..train.channels)
        .map(|c| data.spec.scale_pixel(c, 0))
        .collect();
    let device = net.device().clone();
    // An image shifted by (dy, dx) in -s..=s is version (dy + s)·(2s + 1) + (dx + s) of it.
    let side = 2 * opts.shift + 1;
    let mut teacher = match targets {
        Targets::Labels => None,
        Targets::Distill { teacher, .. } => Some(SoftTargetCache::new(*teacher, n, side * side)),
    };
    on(Event::Phase {
        name: phase.to_string(),
        epochs: opts.epochs,
        steps_per_epoch,
    });
    let mut best = (validate(net)?, net.snapshot(), 0usize);
    let mut step = 0usize;
    for epoch in 1..=opts.epochs {
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for chunk in order.chunks(batch) {
            let b = chunk.len();
            let mut xb = Vec::with_capacity(b * per_image);
            let mut onehot = vec![0.0f32; b * classes];
            let mut versions = Vec::with_capacity(b);
            for (r, &i) in chunk.iter().enumerate() {
                let image = &x_all[i * per_image..(i + 1) * per_image];
                if opts.shift > 0 {
                    let s = opts.shift as i64;
                    let (dy, dx) = (rng.random_range(-s..=s), rng.random_range(-s..=s));
                    shifted(
                        image,
                        [train.channels, train.height, train.width],
                        dy,
                        dx,
                        &background,
                        &mut xb,
                    );
                    versions.push(i * side * side + ((dy + s) as usize) * side + (dx + s) as usize);
                } else {
                    xb.extend_from_slice(image);
                    versions.push(i);
                }
                onehot[r * classes + train.labels[i]] = 1.0;
            }
            let soft = match &mut teacher {
                None => None,
                Some(cache) => Some(cache.get(&versions, &xb)?),
            };
            let x = Tensor::<4>::from_data(
                TensorData::new(xb, [b, train.channels, train.height, train.width]),
                &device,
            );
            let (logits, stats) = net.forward(x, true)?;
            let hard = tensor1(&onehot, &device).reshape([b, classes]);
            let ce = |logits: Tensor<2>, target: Tensor<2>| {
                (log_softmax(logits, 1) * target).sum().neg() / b as f32
            };
            let loss = match targets {
                Targets::Labels => ce(logits.clone(), hard),
                Targets::Distill { teacher, alpha } => {
                    let t = teacher.temperature();
                    let soft = soft.as_deref().expect("soft targets computed for Distill");
                    let soft = tensor1(soft, &device).reshape([b, classes]);
                    // T² keeps the soft term's gradients on the scale of the hard term's.
                    ce(logits.clone() / t, soft) * (alpha * t * t)
                        + ce(logits.clone(), hard) * (1.0 - alpha)
                }
            };
            let grads = GradientsParams::from_grads(loss.backward(), &net.params);
            let progress = step as f64 / total_steps as f64;
            let lr = opts.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            let params = std::mem::take(&mut net.params);
            net.params = optim.step(lr, params, grads);
            net.absorb(stats);
            step += 1;
            let loss_value = super::net::host(loss.detach())[0] as f64;
            let batch_correct = correct_in_batch(logits, chunk, &train.labels);
            loss_sum += loss_value * b as f64;
            correct += batch_correct;
            on(Event::Step {
                loss: loss_value,
                accuracy: batch_correct as f64 / b as f64,
            });
            if !loss_value.is_finite() {
                return Err(Error::Model(format!(
                    "{phase}: the loss diverged at epoch {epoch} (try a lower --lr)"
                )));
            }
        }
        let val = validate(net)?;
        let improved = val > best.0;
        if improved {
            best = (val, net.snapshot(), epoch);
        }
        on(Event::Epoch {
            epoch,
            loss: loss_sum / n as f64,
            train_accuracy: correct as f64 / n as f64,
            val_accuracy: val,
            best: improved,
        });
    }
    net.restore(&best.1);
    on(Event::PhaseEnd {
        name: phase.to_string(),
        best_epoch: best.2,
        val_accuracy: best.0,
    });
    Ok(best.0)
}
