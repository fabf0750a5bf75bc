//! Magnitude pruning (Han et al. 2015): the weights of smallest absolute value are set to zero.

/// Zero the `round(sparsity × n)` weights of smallest magnitude in one tensor. Ties are broken
/// by position so the result is deterministic. Returns the number of zeros now in the tensor.
pub fn prune_layer(weights: &mut [f32], sparsity: f64) -> usize {
    let n = weights.len();
    let k = ((sparsity.clamp(0.0, 1.0) * n as f64).round() as usize).min(n);
    if k == 0 {
        return weights.iter().filter(|w| **w == 0.0).count();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.select_nth_unstable_by(k - 1, |&a, &b| {
        weights[a]
            .abs()
            .total_cmp(&weights[b].abs())
            .then(a.cmp(&b))
    });
    for &i in &order[..k] {
        weights[i] = 0.0;
    }
    weights.iter().filter(|w| **w == 0.0).count()
}

/// The magnitude below which weights are pruned so that `sparsity` of all the given weights
/// (pooled across tensors) become zero: Deep Compression's single global threshold.
pub fn global_threshold<'a>(tensors: impl IntoIterator<Item = &'a [f32]>, sparsity: f64) -> f32 {
    let mut mags: Vec<f32> = tensors
        .into_iter()
        .flat_map(|t| t.iter().map(|w| w.abs()))
        .collect();
    let k = ((sparsity.clamp(0.0, 1.0) * mags.len() as f64).round() as usize).min(mags.len());
    if k == 0 {
        return 0.0;
    }
    let (_, kth, _) = mags.select_nth_unstable_by(k - 1, f32::total_cmp);
    // Everything at or below the k-th smallest magnitude goes.
    f32::from_bits(kth.to_bits() + 1)
}

/// Zero every weight whose magnitude is below `threshold`.
pub fn prune_below(weights: &mut [f32], threshold: f32) -> usize {
    for w in weights.iter_mut() {
        if w.abs() < threshold {
            *w = 0.0;
        }
    }
    weights.iter().filter(|w| **w == 0.0).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_pruning_hits_the_target_exactly() {
        let mut w: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 1000) as f32 - 500.0)
            .collect();
        assert_eq!(prune_layer(&mut w, 0.9), 900);
        // The survivors are the largest magnitudes.
        let min_kept = w
            .iter()
            .filter(|v| **v != 0.0)
            .map(|v| v.abs())
            .fold(f32::MAX, f32::min);
        assert!(min_kept >= 450.0);
        let mut none = vec![1.0f32; 10];
        assert_eq!(prune_layer(&mut none, 0.0), 0);
        assert_eq!(prune_layer(&mut none, 1.0), 10);
    }

    #[test]
    fn global_threshold_pools_layers() {
        let a: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        let b: Vec<f32> = (1..=100).map(|i| i as f32 * 0.0099).collect();
        let t = global_threshold([&a[..], &b[..]], 0.5);
        let (mut a2, mut b2) = (a.clone(), b.clone());
        let zeros = prune_below(&mut a2, t) + prune_below(&mut b2, t);
        assert_eq!(zeros, 100);
        assert_eq!(
            prune_below(&mut b2, t),
            100,
            "all of the small layer goes first"
        );
    }
}
