//! MIRACLE's coding step (Havasi et al. 2019), with no training framework: how a tensor's
//! elements are dealt into blocks, how many blocks each tensor gets for a size target, and
//! how one block's code is chosen. A block of weights with posterior `N(μ, σ²)` is coded by
//! drawing `K = 2^C` candidates from the prior `N(0, σ_p²)` with the spec's generator
//! (§5.12) and picking one at random with probability proportional to its importance weight
//! `q(w)/p(w)`: when the block's KL divergence is about `C` bits, the pick is close to a draw
//! from the posterior, and it costs `C` bits to name.

use cxrm_format::encoding::miracle::{Candidate, Miracle, Params};

/// Blocks per tensor for `total` blocks in all: shared in proportion to each tensor's `need`
/// (the information its posterior holds, so every block ends near the same KL), by largest
/// remainders, every tensor at least one block and at most one per element.
pub fn plan_blocks(need: &[f64], sizes: &[usize], total: usize) -> Vec<u32> {
    let n: usize = sizes.iter().sum();
    if n == 0 {
        return vec![0; sizes.len()];
    }
    let total = total.clamp(sizes.iter().filter(|&&s| s > 0).count(), n);
    let need: Vec<f64> = need
        .iter()
        .zip(sizes)
        .map(|(&w, &s)| if s == 0 { 0.0 } else { w.max(1e-9) })
        .collect();
    let sum: f64 = need.iter().sum();
    let exact: Vec<f64> = need.iter().map(|&w| w * total as f64 / sum).collect();
    let mut blocks: Vec<usize> = exact
        .iter()
        .zip(sizes)
        .map(|(&e, &s)| (e.floor() as usize).clamp(s.min(1), s))
        .collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| {
        let frac = |i: usize| exact[i] - exact[i].floor();
        frac(b).total_cmp(&frac(a)).then(a.cmp(&b))
    });
    // Hand out what flooring left (or take back what the one-block minimum overspent), in
    // order of the remainders, within each tensor's bounds.
    let mut placed: usize = blocks.iter().sum();
    while placed != total {
        let before = placed;
        for &i in &order {
            if placed < total && blocks[i] < sizes[i] {
                blocks[i] += 1;
                placed += 1;
            } else if placed > total && blocks[i] > 1 {
                blocks[i] -= 1;
                placed -= 1;
            }
        }
        if placed == before {
            break;
        }
    }
    blocks.into_iter().map(|b| b as u32).collect()
}

/// The blocks each coding round takes, as ranges of the coding order: after round `r` of `R`,
/// `1 − (1 − r/R)²` of the `n` blocks are coded, so the groups shrink from about `2n/R` to
/// about `n/R²`. The weights not yet coded are retrained after each group but the last, whose
/// blocks nothing can compensate: it is the smallest.
pub fn coding_groups(n: usize, rounds: usize) -> Vec<std::ops::Range<usize>> {
    let rounds = rounds.max(1);
    let after = |r: usize| {
        let left = 1.0 - r as f64 / rounds as f64;
        ((n as f64 * (1.0 - left * left)).ceil() as usize).min(n)
    };
    (0..rounds)
        .map(|r| after(r)..after(r + 1))
        .filter(|g| !g.is_empty())
        .collect()
}

/// The elements of block `block` among `n` dealt into `blocks` (spec §5.12): `block`,
/// `block + blocks`, ...
pub fn block_elements(n: usize, blocks: u32, block: u32) -> impl Iterator<Item = usize> {
    (block as usize..n).step_by(blocks.max(1) as usize)
}

/// The value an f32 tensor decodes to for a standard normal draw `z` under prior `σ_p`: the
/// binary64 product rounded once to f32, exactly as a reader computes it.
pub fn prior_value(sigma_p: f32, z: f64) -> f32 {
    (sigma_p as f64 * z) as f32
}

/// One block's posterior: each weight's mean and standard deviation.
pub struct BlockPosterior<'a> {
    pub mean: &'a [f32],
    pub sigma: &'a [f32],
}

/// `log q(w)/p(w)` of every candidate of a block, up to a constant shared by all of them:
/// `Σ_j z_j²/2 − (w_j − μ_j)²/(2σ_j²)`, with `w_j` the value the file will hold. Candidates are
/// split over `threads`.
pub fn log_importance(
    params: &Params,
    block: u32,
    post: &BlockPosterior<'_>,
    threads: usize,
) -> Vec<f64> {
    let k = 1usize << params.index_bits;
    let inv_var: Vec<f64> = post
        .sigma
        .iter()
        .map(|&s| 0.5 / (s as f64 * s as f64))
        .collect();
    let score = |index: usize| {
        let c = Candidate::new(params.seed, block, index as u32);
        let mut total = 0.0;
        for (j, (&mu, &iv)) in post.mean.iter().zip(&inv_var).enumerate() {
            let z = c.standard_normal(j as u64);
            let d = prior_value(params.prior_sigma, z) as f64 - mu as f64;
            total += 0.5 * z * z - d * d * iv;
        }
        total
    };
    let threads = threads.clamp(1, k);
    let per = k.div_ceil(threads);
    let mut out = vec![0.0; k];
    std::thread::scope(|s| {
        for (part, chunk) in out.chunks_mut(per).enumerate() {
            let score = &score;
            s.spawn(move || {
                for (i, v) in chunk.iter_mut().enumerate() {
                    *v = score(part * per + i);
                }
            });
        }
    });
    out
}

/// The candidate to code: drawn with probability proportional to `exp(log_w)`, from a
/// uniform number `u` in [0, 1). Returns its index and the normalised weight it had (1.0 when
/// one candidate dominates, 1/K when all are alike).
pub fn pick(log_w: &[f64], u: f64) -> (u32, f64) {
    let top = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = log_w.iter().map(|&l| (l - top).exp()).collect();
    let sum: f64 = weights.iter().sum();
    let mut target = u * sum;
    for (i, &w) in weights.iter().enumerate() {
        if target < w {
            return (i as u32, w / sum);
        }
        target -= w;
    }
    let last = weights.len() - 1;
    (last as u32, weights[last] / sum)
}

/// The f32 values block `block` decodes to with candidate `index`, in block order.
pub fn block_values(params: &Params, block: u32, index: u32, len: usize) -> Vec<f32> {
    let c = Candidate::new(params.seed, block, index);
    (0..len)
        .map(|j| prior_value(params.prior_sigma, c.standard_normal(j as u64)))
        .collect()
}

/// A coded tensor's values as the file will decode them (checked against what training fixed).
pub fn decoded_values(m: &Miracle, n: usize) -> Vec<f32> {
    m.to_f64(n as u64).into_iter().map(|v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_follow_the_sizes_and_sum_to_the_total() {
        let sizes = [500, 25_000, 400_000, 5_000, 20, 10];
        let need: Vec<f64> = sizes.iter().map(|&s| s as f64).collect();
        let b = plan_blocks(&need, &sizes, 1000);
        assert_eq!(b.iter().map(|&x| x as usize).sum::<usize>(), 1000);
        assert!(b[4] >= 1 && b[5] >= 1, "{b:?}");
        assert!(b[2] > b[1] && b[1] > b[3], "{b:?}");
        // By need, not size: the small tensor that holds most information gets most blocks.
        let b = plan_blocks(&[900.0, 100.0], &[10, 1000], 10);
        assert_eq!(b, vec![9, 1]);
        // Never more blocks than elements, never none.
        assert_eq!(plan_blocks(&[1.0, 1.0], &[3, 2], 100), vec![3, 2]);
        assert_eq!(plan_blocks(&[1.0, 1.0], &[0, 4], 2), vec![0, 2]);
        assert_eq!(
            plan_blocks(&[1e6, 0.0, 0.0], &[100, 5, 5], 3),
            vec![1, 1, 1]
        );
    }

    #[test]
    fn coding_groups_cover_every_block_once_and_shrink() {
        let groups = coding_groups(2048, 20);
        assert_eq!(groups.len(), 20);
        assert_eq!(groups[0].start, 0);
        assert_eq!(groups.last().unwrap().end, 2048);
        assert!(groups.windows(2).all(|w| w[0].end == w[1].start));
        assert!(groups.windows(2).all(|w| w[0].len() >= w[1].len()));
        assert!(groups.last().unwrap().len() <= 6, "{groups:?}");
        assert_eq!(
            coding_groups(3, 20).iter().map(|g| g.len()).sum::<usize>(),
            3
        );
        assert!(coding_groups(0, 5).is_empty());
    }

    #[test]
    fn the_pick_follows_the_importance_weights() {
        assert_eq!(pick(&[0.0, 50.0, 0.0], 0.5).0, 1);
        let flat = [1.0; 4];
        assert_eq!(pick(&flat, 0.0).0, 0);
        assert_eq!(pick(&flat, 0.99).0, 3);
        assert!((pick(&flat, 0.3).1 - 0.25).abs() < 1e-12);
    }

    /// A posterior narrow around one candidate's values makes that candidate the pick.
    #[test]
    fn a_posterior_at_a_candidate_picks_it() {
        let params = Params {
            seed: 11,
            blocks: 4,
            index_bits: 8,
            prior_sigma: 0.1,
        };
        let target = block_values(&params, 2, 77, 30);
        let sigma = vec![1e-4; 30];
        let log_w = log_importance(
            &params,
            2,
            &BlockPosterior {
                mean: &target,
                sigma: &sigma,
            },
            2,
        );
        assert_eq!(pick(&log_w, 0.5).0, 77);
        // The block's values, dealt back, are what the decoder regenerates.
        let mut indices = vec![0; 4];
        indices[2] = 77;
        let m = Miracle { params, indices };
        let all = decoded_values(&m, 120);
        let back: Vec<f32> = block_elements(120, 4, 2).map(|e| all[e]).collect();
        assert_eq!(back, target);
    }
}
