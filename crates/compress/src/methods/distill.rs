//! Knowledge distillation (Hinton, Vinyals & Dean, 2015): a smaller student trained on the
//! teacher's temperature-softened outputs together with the true labels.

use crate::train::fit::{self, Targets};
use crate::train::net::Net;
use crate::train::soft_targets;
use crate::train::{
    Arch, Event, TrainData, TrainOptions, TrainedModel, dense, device, finish, training_metadata,
    validator,
};
use cxrm_format::container::reader::Cxrm;
use cxrm_format::container::value::Value;
use cxrm_format::error::Result;
use cxrm_runtime::Model;

#[derive(Debug, Clone)]
pub struct DistillOptions {
    pub student: Arch,
    /// Softmax temperature for both teacher and student in the soft term.
    pub temperature: f64,
    /// Weight of the soft term; `1 − alpha` goes to the labels.
    pub alpha: f64,
    pub train: TrainOptions,
}

/// `softmax(logits / T)` from probabilities: `p^(1/T)`, renormalised (the softmax's constant
/// cancels), so the teacher can be run by the runtime exactly as its file says.
fn soften(probs: &[f32], classes: usize, temperature: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(probs.len());
    for row in probs.chunks(classes) {
        // Work in logs so tiny probabilities don't underflow before the root is taken.
        let logs: Vec<f32> = row
            .iter()
            .map(|&p| p.max(1e-30).ln() / temperature)
            .collect();
        let max = logs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = logs.iter().map(|&l| (l - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        out.extend(exps.iter().map(|e| e / sum));
    }
    out
}

/// The teacher as the training loop sees it: the runtime running the teacher's written form,
/// asked for softened targets on exactly the (possibly shifted) images the student is shown.
///
/// Asking per batch rather than once per image matters when the student trains with shifts:
/// the soft targets then describe the shifted image, which is how the teacher's knowledge of
/// translations reaches the student (Hinton et al. trained their MNIST teacher on jittered
/// images for the same reason).
pub(crate) struct RuntimeTeacher<'a> {
    model: Model<'a>,
    /// Per channel `(scale, offset)` taking the student's normalised pixels to the teacher's.
    to_teacher: Vec<(f32, f32)>,
    pub(crate) temperature: f32,
}

impl soft_targets::Teacher for RuntimeTeacher<'_> {
    fn classes(&self) -> usize {
        self.model.num_classes()
    }

    fn temperature(&self) -> f32 {
        self.temperature
    }

    /// `softmax(teacher logits / T)`, the teacher run through the runtime.
    fn soft_targets(&self, student_inputs: &[f32], b: usize) -> Result<Vec<f32>> {
        let spec = &self.model.input;
        let plane = spec.height * spec.width;
        let per_image = spec.channels * plane;
        let x: Vec<f32> = student_inputs
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                let (scale, offset) = self.to_teacher[(k % per_image) / plane];
                v * scale + offset
            })
            .collect();
        let batch = cxrm_runtime::ndarray::Array4::from_shape_vec(
            (b, spec.channels, spec.height, spec.width),
            x,
        )
        .map_err(|e| cxrm_format::error::Error::Model(format!("teacher batch: {e}")))?;
        let probs = self.model.predict(batch.view())?;
        Ok(soften(
            probs.as_slice().expect("standard layout"),
            self.model.num_classes(),
            self.temperature,
        ))
    }
}

/// Train `opts.student` from scratch against `teacher` (run through the runtime from its
/// written form) on `data`.
pub fn distill(
    teacher: &TrainedModel,
    data: &TrainData,
    opts: &DistillOptions,
    on: &mut dyn FnMut(Event),
) -> Result<TrainedModel> {
    if !(opts.temperature.is_finite() && opts.temperature > 0.0) {
        return Err(cxrm_format::error::Error::Usage(format!(
            "the temperature must be a positive number, not {}",
            opts.temperature
        )));
    }
    if !(0.0..=1.0).contains(&opts.alpha) {
        return Err(cxrm_format::error::Error::Usage(format!(
            "alpha weighs the soft term against the labels and must lie in 0..=1, not {}",
            opts.alpha
        )));
    }
    let bytes = teacher.to_bytes(&dense)?;
    let file = Cxrm::parse(&bytes)?;
    let model = Model::load(&file)?;
    let s = &data.spec;
    let t = &model.input;
    if [t.channels, t.height, t.width] != [s.channels, s.height, s.width] {
        return Err(cxrm_format::error::Error::Usage(format!(
            "the teacher takes {}x{}x{} inputs, the data is {}x{}x{}",
            t.channels, t.height, t.width, s.channels, s.height, s.width
        )));
    }
    if model.num_classes() != data.train.classes.len() {
        return Err(cxrm_format::error::Error::Usage(format!(
            "the teacher has {} classes, the data {}",
            model.num_classes(),
            data.train.classes.len()
        )));
    }
    // x_s = (p − m_s)/σ_s and x_t = (p − m_t)/σ_t, so x_t = x_s·σ_s/σ_t + (m_s − m_t)/σ_t.
    let to_teacher = (0..s.channels)
        .map(|c| (s.std[c] / t.std[c], (s.mean[c] - t.mean[c]) / t.std[c]))
        .collect();
    let teacher_run = RuntimeTeacher {
        model,
        to_teacher,
        temperature: opts.temperature as f32,
    };

    let classes = data.train.classes.len();
    let (graph, tensors) =
        opts.student
            .build([s.channels, s.height, s.width], classes, opts.train.seed)?;
    let mut net = Net::new(graph, tensors, &device())?;
    let mut metadata = training_metadata(&opts.student, data, &opts.train);
    let val = fit::fit(
        &mut net,
        data,
        &opts.train,
        &Targets::Distill {
            teacher: &teacher_run,
            alpha: opts.alpha as f32,
        },
        &format!("distill {}", opts.student.name()),
        &mut validator(&metadata, &data.val, &dense),
        on,
    )?;
    metadata.extend([
        ("train.val_accuracy".to_string(), Value::Float(val)),
        (
            "compress.method".to_string(),
            Value::String("distill".into()),
        ),
        (
            "distill.teacher".to_string(),
            teacher
                .meta("model.name")
                .cloned()
                .unwrap_or(Value::String("?".into())),
        ),
        (
            "distill.temperature".to_string(),
            Value::Float(opts.temperature),
        ),
        ("distill.alpha".to_string(), Value::Float(opts.alpha)),
    ]);
    Ok(finish(&net, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::soft_targets::{SoftTargetCache, Teacher as _};

    #[test]
    fn softening_is_the_tempered_softmax() {
        // probs = softmax([2, 1, 0]); at T = 2 the result is softmax([1, 0.5, 0]).
        let logits = [2.0f32, 1.0, 0.0];
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        let probs: Vec<f32> = logits.iter().map(|l| l.exp() / z).collect();
        let t2: Vec<f32> = logits.iter().map(|l| (l / 2.0).exp()).collect();
        let z2: f32 = t2.iter().sum();
        for (a, b) in soften(&probs, 3, 2.0).iter().zip(t2.iter().map(|v| v / z2)) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn cached_soft_targets_are_the_teachers_answers_and_each_version_is_asked_once() {
        let data = crate::train::tests::mnist(50);
        let arch = Arch::parse("mlp-8").unwrap();
        let (graph, tensors) = arch.build([1, 28, 28], 10, 5).unwrap();
        let metadata = training_metadata(&arch, &data, &TrainOptions::default());
        let bytes = TrainedModel {
            graph,
            tensors,
            metadata,
        }
        .to_bytes(&dense)
        .unwrap();
        let file = Cxrm::parse(&bytes).unwrap();
        let teacher = RuntimeTeacher {
            model: Model::load(&file).unwrap(),
            to_teacher: vec![(1.0, 0.0)],
            temperature: 2.0,
        };
        let image = |seed: usize| -> Vec<f32> {
            (0..784)
                .map(|k| ((k * 31 + seed * 7) % 17) as f32 / 8.0 - 1.0)
                .collect()
        };
        let (a, b) = (image(1), image(2));
        let batch: Vec<f32> = [&a, &b, &a].into_iter().flatten().copied().collect();
        let mut cache = SoftTargetCache::new(&teacher, 3, 2);
        let cached = cache.get(&[0, 3, 0], &batch).unwrap();
        assert_eq!(cached, teacher.soft_targets(&batch, 3).unwrap());
        // Version 3 is known now: its remembered answer comes back whatever the batch holds.
        assert_eq!(cache.get(&[3], &a).unwrap(), cached[10..20]);
        // An image's answer depends on its batch only through float rounding, so remembering
        // it changes nothing that matters.
        let five: Vec<f32> = [&b, &a, &b, &b, &a]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let alone = teacher.soft_targets(&a, 1).unwrap();
        let in_five = teacher.soft_targets(&five, 5).unwrap();
        for (x, y) in in_five[10..20].iter().zip(&alone) {
            assert!((x - y).abs() <= 1e-6, "{in_five:?} against {alone:?}");
        }
        // An unknown version is asked for.
        assert_eq!(
            cache.get(&[5], &a).unwrap(),
            teacher.soft_targets(&a, 1).unwrap()
        );
    }

    #[test]
    fn a_student_learns_from_the_teacher() {
        let data = crate::train::tests::mnist(800);
        let quick = TrainOptions {
            epochs: 3,
            batch_size: 16,
            ..Default::default()
        };
        let teacher =
            crate::train::train(&Arch::parse("mlp-32").unwrap(), &data, &quick, &mut |_| {})
                .unwrap();
        let opts = DistillOptions {
            student: Arch::parse("mlp-12").unwrap(),
            temperature: 2.0,
            alpha: 0.5,
            train: quick,
        };
        let student = distill(&teacher, &data, &opts, &mut |_| {}).unwrap();
        assert!(student.params() * 2 < teacher.params());
        let acc = student.accuracy(&data.val, &dense).unwrap();
        // Chance is 10%.
        assert!(acc > 0.5, "{acc}");
        // The settings are recorded as given, not as the f32 the loss uses.
        assert_eq!(student.meta("distill.alpha"), Some(&Value::Float(0.5)));
        assert_eq!(
            student.meta("distill.temperature"),
            Some(&Value::Float(2.0))
        );

        for (temperature, alpha) in [(0.0, 0.5), (f64::NAN, 0.5), (2.0, 1.5), (2.0, -0.1)] {
            let bad = DistillOptions {
                temperature,
                alpha,
                ..opts.clone()
            };
            let err = distill(&teacher, &data, &bad, &mut |_| {}).unwrap_err();
            assert!(matches!(err, cxrm_format::error::Error::Usage(_)), "{err}");
        }
    }
}
