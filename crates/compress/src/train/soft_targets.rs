//! Soft targets for distillation, as the training loop asks for them: a [`Teacher`] answers
//! for a batch, and [`SoftTargetCache`] remembers each answer per image and shift. The loop
//! ([`super::fit`]) needs only this trait, so it does not depend on the distillation method
//! that implements it.

use cxrm_format::error::Result;

/// Something that gives, for a batch `[b, C, H, W]` normalised as the student's data is, one
/// row of `classes()` softened probabilities per image.
pub(crate) trait Teacher {
    fn classes(&self) -> usize;
    /// The distillation temperature T its answers are softened by.
    fn temperature(&self) -> f32;
    fn soft_targets(&self, student_inputs: &[f32], b: usize) -> Result<Vec<f32>>;
}

/// The teacher's soft targets, remembered per image and shift.
///
/// With shifts of up to `s` pixels an image has only `(2s + 1)²` versions, so after the first
/// epochs most of what the student is shown the teacher has already been asked about: over 20
/// epochs with `s = 1` the teacher runs about 8 times per image instead of 20. The answers are
/// the ones asking again would give, up to float rounding: the runtime's row blocking can sum
/// an image's products in another order in another batch (a few ulp).
pub(crate) struct SoftTargetCache<'t> {
    teacher: &'t dyn Teacher,
    classes: usize,
    /// Row `key · classes` holds the targets of `key`, when `known[key]`; empty when the cache
    /// would be too large and the teacher is asked every time.
    targets: Vec<f32>,
    known: Vec<bool>,
}

/// Above this many remembered values (512 MB of f32) the teacher is asked on every batch.
const CACHE_LIMIT: usize = 1 << 27;

impl<'t> SoftTargetCache<'t> {
    /// A cache for `images` images, each seen in `versions` ways.
    pub(crate) fn new(teacher: &'t dyn Teacher, images: usize, versions: usize) -> Self {
        let classes = teacher.classes();
        let keys = images.saturating_mul(versions);
        let fits = keys.saturating_mul(classes) <= CACHE_LIMIT;
        SoftTargetCache {
            teacher,
            classes,
            targets: if fits {
                vec![0.0; keys * classes]
            } else {
                Vec::new()
            },
            known: if fits { vec![false; keys] } else { Vec::new() },
        }
    }

    /// Soft targets for `batch` (`[b, C, H, W]`, normalised as the student's data), whose
    /// image `r` is the version with cache key `keys[r]`.
    pub(crate) fn get(&mut self, keys: &[usize], batch: &[f32]) -> Result<Vec<f32>> {
        let b = keys.len();
        if self.known.is_empty() {
            return self.teacher.soft_targets(batch, b);
        }
        let per_image = batch.len() / b.max(1);
        let missing: Vec<usize> = (0..b).filter(|&r| !self.known[keys[r]]).collect();
        if !missing.is_empty() {
            let asked: Vec<f32> = missing
                .iter()
                .flat_map(|&r| &batch[r * per_image..(r + 1) * per_image])
                .copied()
                .collect();
            let answers = self.teacher.soft_targets(&asked, missing.len())?;
            for (&r, row) in missing.iter().zip(answers.chunks(self.classes)) {
                let k = keys[r];
                self.targets[k * self.classes..(k + 1) * self.classes].copy_from_slice(row);
                self.known[k] = true;
            }
        }
        Ok(keys
            .iter()
            .flat_map(|&k| &self.targets[k * self.classes..(k + 1) * self.classes])
            .copied()
            .collect())
    }
}
