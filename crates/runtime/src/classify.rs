//! Labels rather than probability matrices: which classes each image most likely shows.

use crate::Result;
use crate::model::Model;
use ndarray::ArrayView4;

/// One image's classification.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The graph's raw output, before softmax; `None` when the graph itself ends in softmax
    /// (its output is already probabilities, and the logits are gone).
    pub logits: Option<Vec<f32>>,
    /// The probability of each class, in class order.
    pub probabilities: Vec<f32>,
    /// The most probable class (the first of equals); `None` for a model without classes.
    pub best: Option<Ranked>,
    /// Up to `k` classes, most probable first; equal probabilities keep class order.
    pub top: Vec<Ranked>,
}

/// A class and its probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Index into the model's classes (see [`Model::class_names`]).
    pub class: usize,
    pub probability: f32,
}

impl Classification {
    /// Rank one image's class probabilities, keeping the `k` most probable.
    pub fn new(probabilities: Vec<f32>, k: usize) -> Classification {
        let p = &probabilities;
        let best = p
            .iter()
            .enumerate()
            .fold(0, |b, (i, &v)| if v > p[b] { i } else { b });
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let ranked = |class: usize| Ranked {
            class,
            probability: p[class],
        };
        Classification {
            logits: None,
            best: (!p.is_empty()).then(|| ranked(best)),
            top: order.into_iter().take(k).map(ranked).collect(),
            probabilities,
        }
    }
}

impl Model<'_> {
    /// Classify every image of a batch, each with its `k` most probable classes.
    pub fn classify(&self, batch: ArrayView4<'_, f32>, k: usize) -> Result<Vec<Classification>> {
        let out = self.forward(batch)?;
        if self.ends_in_softmax() {
            return Ok(out
                .rows()
                .into_iter()
                .map(|row| Classification::new(row.to_vec(), k))
                .collect());
        }
        let mut probs = out.clone();
        crate::ops::softmax(&mut probs);
        Ok(out
            .rows()
            .into_iter()
            .zip(probs.rows())
            .map(|(logits, p)| Classification {
                logits: Some(logits.to_vec()),
                ..Classification::new(p.to_vec(), k)
            })
            .collect())
    }

    /// A label for each class: the file's `model.classes`, or the class indices when it
    /// names none.
    pub fn class_names(&self) -> Vec<String> {
        if self.classes.is_empty() {
            (0..self.num_classes()).map(|i| i.to_string()).collect()
        } else {
            self.classes.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_most_probable_first_and_equals_in_class_order() {
        let c = Classification::new(vec![0.1, 0.4, 0.1, 0.4], 3);
        let classes: Vec<usize> = c.top.iter().map(|r| r.class).collect();
        assert_eq!(classes, [1, 3, 0]);
        assert_eq!(
            c.best,
            Some(Ranked {
                class: 1,
                probability: 0.4
            })
        );
        assert_eq!(Classification::new(vec![0.5, 0.5], 5).top.len(), 2);
        assert_eq!(Classification::new(Vec::new(), 3).best, None);
    }
}
