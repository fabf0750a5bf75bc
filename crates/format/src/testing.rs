//! Test data shared by the unit tests of every cxrm crate (not part of the API).

/// `n` values uniform in [-0.5, 0.5) from a 64-bit LCG: deterministic, and independent of any
/// RNG crate's version, so test inputs never change under a dependency update.
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::lcg::Lcg(seed);
    (0..n).map(|_| rng.centred()).collect()
}
