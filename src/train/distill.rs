//! Knowledge distillation (Hinton, Vinyals & Dean, 2015): a smaller student trained on the
//! teacher's temperature-softened outputs together with the true labels.

use super::fit::{self, Targets};
use super::net::Net;
use super::{
    Arch, Event, TrainData, TrainOptions, TrainedModel, base_metadata, dense, device, finish,
    validator,
};
use crate::container::reader::Cxrm;
use crate::container::value::Value;
use crate::error::Result;
use crate::runtime::Model;

#[derive(Debug, Clone)]
pub struct DistillOptions {
    pub student: Arch,
    /// Softmax temperature for both teacher and student in the soft term.
    pub temperature: f32,
    /// Weight of the soft term; `1 − alpha` goes to the labels.
    pub alpha: f32,
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

/// Train `opts.student` from scratch against `teacher` (run through the runtime from its
/// written form) on `data`.
pub fn distill(
    teacher: &TrainedModel,
    data: &TrainData,
    opts: &DistillOptions,
    on: &mut dyn FnMut(Event),
) -> Result<TrainedModel> {
    let bytes = teacher.to_bytes(&dense)?;
    let file = Cxrm::parse(&bytes)?;
    let teacher_model = Model::load(&file)?;
    let classes = data.train.classes.len();
    let probs = crate::runtime::batch::predict(
        &teacher_model,
        &data.train,
        data.train.len(),
        256,
        &mut |_| {},
    )?;
    let soft = soften(
        probs.as_slice().expect("standard layout"),
        classes,
        opts.temperature,
    );

    let s = &data.spec;
    let (graph, tensors) =
        opts.student
            .build([s.channels, s.height, s.width], classes, opts.train.seed)?;
    let mut net = Net::new(graph, tensors, &device())?;
    let mut metadata = base_metadata(&opts.student, data, &opts.train);
    let val = fit::fit(
        &mut net,
        data,
        &opts.train,
        &Targets::Distill {
            soft: &soft,
            temperature: opts.temperature,
            alpha: opts.alpha,
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
            Value::Float(opts.temperature as f64),
        ),
        ("distill.alpha".to_string(), Value::Float(opts.alpha as f64)),
    ]);
    Ok(finish(&net, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_student_learns_from_the_teacher() {
        let data = super::super::tests::mnist(800);
        let quick = TrainOptions {
            epochs: 3,
            batch_size: 16,
            ..Default::default()
        };
        let teacher =
            super::super::train(&Arch::parse("mlp-32").unwrap(), &data, &quick, &mut |_| {})
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
    }
}
