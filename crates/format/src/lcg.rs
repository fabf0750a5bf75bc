//! The project's one deterministic generator: a 64-bit linear congruential generator (Knuth's
//! MMIX constants). It is not for statistics; it makes test data, benchmark inputs and the
//! random k-means initialisation reproducible forever, independent of any RNG crate's version.

/// A 64-bit LCG. Use the high bits; the low bits of an LCG are poor.
#[derive(Debug, Clone)]
pub struct Lcg(pub u64);

impl Lcg {
    pub const MULTIPLIER: u64 = 6364136223846793005;
    pub const INCREMENT: u64 = 1442695040888963407;

    /// Advance and return the new state.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(Self::MULTIPLIER)
            .wrapping_add(Self::INCREMENT);
        self.0
    }

    /// 31 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 33) as u32
    }

    /// Uniform in [0, 1), from 24 bits (exact in f32).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [-0.5, 0.5).
    pub fn centred(&mut self) -> f32 {
        self.unit() - 0.5
    }
}
