//! Test data shared by the unit tests of every cxrm crate (not part of the API).

/// `n` values uniform in [-0.5, 0.5) from a 64-bit LCG: deterministic, and independent of any
/// RNG crate's version, so test inputs never change under a dependency update.
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}
