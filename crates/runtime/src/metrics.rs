//! Classification metrics: accuracy, per-class precision and recall, the confusion matrix and
//! ROC AUC (for two classes, of the second class's probability; otherwise the one-vs-rest
//! mean).

use ndarray::ArrayView2;

#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub n: usize,
    pub accuracy: f64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    /// `None` for a class never predicted (precision) or never present (recall).
    pub precision: Vec<Option<f64>>,
    pub recall: Vec<Option<f64>>,
    /// ROC AUC: binary tasks score the second class; otherwise the mean one-vs-rest AUC over
    /// classes that have both positives and negatives. `None` when undefined.
    pub roc_auc: Option<f64>,
}

/// Area under the ROC curve via the Mann–Whitney statistic, ties counted half.
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let pos = positive.iter().filter(|&&p| p).count();
    let neg = positive.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks over ties.
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += order[i..=j].iter().filter(|&&k| positive[k]).count() as f64 * avg_rank;
        i = j + 1;
    }
    Some((rank_sum_pos - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64))
}

/// Index of the largest value (the first of equal ones; 0 for an empty or all-NaN row): the
/// predicted class of one row of logits or probabilities.
pub fn argmax<'a>(values: impl IntoIterator<Item = &'a f32>) -> usize {
    values
        .into_iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

pub fn evaluate(labels: &[usize], probs: ArrayView2<'_, f32>) -> Evaluation {
    let k = probs.ncols();
    let mut confusion = vec![vec![0u64; k]; k];
    let mut correct = 0usize;
    for (row, &label) in probs.rows().into_iter().zip(labels) {
        let pred = argmax(row.iter());
        confusion[label][pred] += 1;
        correct += (pred == label) as usize;
    }
    let precision = (0..k)
        .map(|c| {
            let predicted: u64 = (0..k).map(|t| confusion[t][c]).sum();
            (predicted > 0).then(|| confusion[c][c] as f64 / predicted as f64)
        })
        .collect();
    let recall = (0..k)
        .map(|c| {
            let actual: u64 = confusion[c].iter().sum();
            (actual > 0).then(|| confusion[c][c] as f64 / actual as f64)
        })
        .collect();
    let auc_for = |c: usize| {
        let scores: Vec<f32> = probs.column(c).to_vec();
        let positive: Vec<bool> = labels.iter().map(|&l| l == c).collect();
        roc_auc(&scores, &positive)
    };
    let roc_auc = if k == 2 {
        auc_for(1)
    } else {
        let aucs: Vec<f64> = (0..k).filter_map(auc_for).collect();
        (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
    };
    Evaluation {
        n: labels.len(),
        accuracy: correct as f64 / labels.len().max(1) as f64,
        confusion,
        precision,
        recall,
        roc_auc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn auc_of_known_rankings() {
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        // One misordered pair of four: 3/4.
        assert_eq!(
            roc_auc(&[0.1, 0.6, 0.5, 0.9], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(roc_auc(&[0.1], &[true]), None);
    }

    #[test]
    fn confusion_precision_recall() {
        let probs = array![[0.9f32, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]];
        let e = evaluate(&[0, 1, 1, 0], probs.view());
        assert_eq!(e.confusion, vec![vec![1, 1], vec![1, 1]]);
        assert_eq!(e.accuracy, 0.5);
        assert_eq!(e.precision, vec![Some(0.5), Some(0.5)]);
        // Class-1 scores 0.8 and 0.4 against 0.1 and 0.7: three of four pairs ordered.
        assert_eq!(e.roc_auc, Some(0.75));
    }
}
