//! `miracle` (spec §5.12): MIRACLE's weights (Havasi et al. 2019, "Minimal Random Code
//! Learning") stored as one seed and one sample index per block. The tensor's elements are
//! dealt into blocks; each block's weights are the `index`-th of `2^index_bits` candidate draws
//! from the prior `N(0, σ²)`, and a reader regenerates that draw from the seed, the block and
//! the index. A block of a few hundred weights then costs `index_bits` bits.
//!
//! Every reader must regenerate the same bits, so the generator is fixed to the last bit: a
//! counter-based hash (SplitMix64's finaliser), so block `k` needs no draws of blocks `0..k`,
//! and Marsaglia's polar method with a logarithm written out in IEEE-754 operations that every
//! language rounds alike (`+ − × ÷ √`, no libm). [`ln`] is that logarithm.

use super::bits::{BitReader, BitWriter};
use super::{DecodeContext, Encoded, Stage, floats};
use crate::cursor::Cursor;
use crate::dtype::DType;
use crate::error::{Error, ErrorCode, Result};

pub const PARAMS_LEN: usize = 20;
/// Widest sample index: 2^32 candidates per block is already far past what an encoder draws.
pub const MAX_INDEX_BITS: u8 = 32;
/// Polar-method attempts per element before the spec's fallback of 0 (never reached in
/// practice: each attempt is rejected with probability 1 − π/4, so 64 in a row is ~1e-43).
pub const MAX_ATTEMPTS: u64 = 64;

/// Weyl increment (2^64 / golden ratio) that spreads the counters before each mix.
pub(crate) const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
/// ln 2, the binary64 nearest to it.
const LN2: f64 = f64::from_bits(0x3FE6_2E42_FEFA_39EF);
/// √2, the binary64 nearest to it.
const SQRT2: f64 = f64::from_bits(0x3FF6_A09E_667F_3BCD);
/// Terms of the series for ln of the reduced mantissa (enough for 2^-53 with |t| ≤ 0.172).
const LN_TERMS: usize = 12;
/// `1 / (2k + 1)` for each term, each the correctly rounded quotient, as the spec computes it:
/// evaluated once here (Rust's constant evaluation rounds as IEEE-754 does), because eleven
/// divisions per logarithm made them most of a draw's cost.
const INV_ODD: [f64; LN_TERMS] = {
    let mut t = [0.0; LN_TERMS];
    let mut k = 0;
    while k < LN_TERMS {
        t[k] = 1.0 / (2 * k + 1) as f64;
        k += 1;
    }
    t
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// The seed every block's draws are hashed from.
    pub seed: u64,
    /// Number of blocks: element `e` (row-major) is in block `e mod blocks`.
    pub blocks: u32,
    /// Bits of each block's sample index (1..=32).
    pub index_bits: u8,
    /// Standard deviation of the prior `N(0, σ²)`: finite and positive.
    pub prior_sigma: f32,
}

impl Params {
    pub fn to_bytes(self) -> Vec<u8> {
        let mut v = self.seed.to_le_bytes().to_vec();
        v.extend_from_slice(&self.blocks.to_le_bytes());
        v.extend_from_slice(&[self.index_bits, 0, 0, 0]);
        v.extend_from_slice(&self.prior_sigma.to_le_bytes());
        v
    }

    /// Check the parameters in their stored order, then the block count against the tensor.
    pub fn parse(stage: &Stage<'_>, ctx: &DecodeContext<'_>, field: &str) -> Result<Params> {
        let offset = stage.params_offset();
        let bad = |at: u64, what: &str, detail: String| {
            Error::format(
                ErrorCode::BadChain,
                format!("{field}.params.{what}"),
                at,
                detail,
            )
        };
        let p = &super::fixed_params::<PARAMS_LEN>(stage, field)?;
        let seed = u64::from_le_bytes(p[0..8].try_into().expect("8 bytes"));
        let blocks = floats::u32_at(p, 8);
        let index_bits = p[12];
        if !(1..=MAX_INDEX_BITS).contains(&index_bits) {
            return Err(bad(
                offset + 12,
                "index_bits",
                format!("index_bits {index_bits}, must be 1 to {MAX_INDEX_BITS}"),
            ));
        }
        floats::check_reserved(&p[13..16], &format!("{field}.params.reserved"), offset + 13)?;
        let prior_sigma = f32::from_le_bytes(p[16..20].try_into().expect("4 bytes"));
        if !(prior_sigma.is_finite() && prior_sigma > 0.0) {
            return Err(bad(
                offset + 16,
                "prior_sigma",
                format!("prior σ {prior_sigma}, must be finite and positive"),
            ));
        }
        floats::require_float(stage, ctx, field)?;
        let fits = if ctx.elements == 0 {
            blocks == 0
        } else {
            (1..=ctx.elements).contains(&(blocks as u64))
        };
        if !fits {
            return Err(bad(
                offset + 8,
                "blocks",
                format!(
                    "{blocks} blocks for {} elements: every block must hold at least one \
                     element and every element a block (1 to {0}; 0 only for an empty tensor)",
                    ctx.elements
                ),
            ));
        }
        Ok(Params {
            seed,
            blocks,
            index_bits,
            prior_sigma,
        })
    }

    /// Bits the sample indices take: the tensor's whole coded size, before padding.
    pub fn coded_bits(&self) -> u64 {
        self.blocks as u64 * self.index_bits as u64
    }
}

/// SplitMix64's finaliser: a bijection of `u64` that scrambles every input bit into every
/// output bit.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `ln s` for a positive normal `s`, from IEEE-754 operations only: `s = m·2^e` with
/// `m` in `[√2/2, √2]`, then `ln m = 2·atanh t` with `t = (m−1)/(m+1)`, summed by Horner's rule
/// from the term in `t^22`. Every step is one correctly rounded operation, so any language's
/// binary64 gives these bits (the spec writes out the same steps).
#[inline]
pub fn ln(s: f64) -> f64 {
    let bits = s.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if m > SQRT2 {
        m *= 0.5;
        e += 1;
    }
    let t = (m - 1.0) / (m + 1.0);
    let u = t * t;
    let mut acc = INV_ODD[LN_TERMS - 1];
    for k in (0..LN_TERMS - 1).rev() {
        acc = acc * u + INV_ODD[k];
    }
    e as f64 * LN2 + (t + t) * acc
}

/// A uniform number in (−1, 1) from a hash's top 53 bits: `(2k + 1 − 2^53) / 2^53`, exact,
/// never 0, symmetric about 0.
#[inline]
fn uniform(word: u64) -> f64 {
    let k = (word >> 11) as i64;
    (2 * k + 1 - (1 << 53)) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The draws of one (block, sample index): a standard normal number per position in the
/// block. Cheap to make; each position is independent of the others.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    base: u64,
}

impl Candidate {
    pub fn new(seed: u64, block: u32, index: u32) -> Candidate {
        let h = mix(mix(seed).wrapping_add(GAMMA.wrapping_mul(block as u64 + 1)));
        Candidate {
            base: mix(h.wrapping_add(GAMMA.wrapping_mul(index as u64 + 1))),
        }
    }

    #[inline]
    fn word(&self, counter: u64) -> u64 {
        mix(self
            .base
            .wrapping_add(GAMMA.wrapping_mul(counter.wrapping_add(1))))
    }

    /// The standard normal number at `position` of the block: Marsaglia's polar method, the
    /// attempts drawn from counters `position·128 + 2·attempt` and `+1`, the first coordinate
    /// kept.
    #[inline]
    pub fn standard_normal(&self, position: u64) -> f64 {
        let first = position.wrapping_mul(2 * MAX_ATTEMPTS);
        for attempt in 0..MAX_ATTEMPTS {
            // One attempt at a time. Left to itself the compiler vectorises this early-exit loop,
            // running several attempts' 64-bit multiplies at once (emulated below AVX-512):
            // measured ten times slower than hiding the counter from it.
            let c = std::hint::black_box(first.wrapping_add(2 * attempt));
            let v1 = uniform(self.word(c));
            let v2 = uniform(self.word(c.wrapping_add(1)));
            let s = v1 * v1 + v2 * v2;
            if s < 1.0 {
                return v1 * ((-2.0 * ln(s)) / s).sqrt();
            }
        }
        0.0
    }

    /// The weight at `position`: `σ·z` in binary64, before the one rounding to the dtype.
    pub fn weight(&self, position: u64, sigma: f32) -> f64 {
        sigma as f64 * self.standard_normal(position)
    }
}

/// How many elements block `block` holds: elements `block`, `block + blocks`, ...
pub fn block_len(elements: u64, blocks: u32, block: u32) -> u64 {
    if block as u64 >= elements {
        0
    } else {
        (elements - block as u64 - 1) / blocks as u64 + 1
    }
}

/// A tensor as MIRACLE codes it: the parameters and each block's chosen sample index.
#[derive(Debug, Clone, PartialEq)]
pub struct Miracle {
    pub params: Params,
    pub indices: Vec<u32>,
}

impl Miracle {
    /// Every element in binary64, row-major: element `e` is position `e / blocks` of block
    /// `e mod blocks`.
    pub fn to_f64(&self, elements: u64) -> Vec<f64> {
        let blocks = self.params.blocks as u64;
        let candidates: Vec<Candidate> = self
            .indices
            .iter()
            .enumerate()
            .map(|(b, &i)| Candidate::new(self.params.seed, b as u32, i))
            .collect();
        (0..elements)
            .map(|e| candidates[(e % blocks) as usize].weight(e / blocks, self.params.prior_sigma))
            .collect()
    }

    /// The decoded tensor's bytes, each element rounded once to `dtype` (spec §5.8's rule).
    pub fn to_dtype(&self, elements: u64, dtype: DType) -> Vec<u8> {
        floats::f64_to_dtype(&self.to_f64(elements), dtype)
    }
}

/// The stored form: the sample indices, `index_bits` each, packed most significant bit first
/// across byte boundaries, the last byte padded with zero bits.
pub fn encode(m: &Miracle) -> Encoded<'static> {
    assert_eq!(
        m.indices.len(),
        m.params.blocks as usize,
        "an index per block"
    );
    let bits = m.params.index_bits;
    let mut w = BitWriter::with_capacity((m.params.coded_bits() as usize).div_ceil(8));
    for &i in &m.indices {
        assert!(bits == 32 || i >> bits == 0, "index {i} fits {bits} bits");
        w.put(i, bits);
    }
    Encoded::new(super::Repr::Miracle(m.params), false, w.finish())
}

/// Read the indices; the caller checks that the payload was consumed exactly.
pub fn read_payload(c: &mut Cursor<'_>, params: &Params, what: &str) -> Result<Miracle> {
    let bits = params.coded_bits();
    let start = c.offset();
    let bytes = c.bytes(bits.div_ceil(8) as usize, || format!("{what}.indices"))?;
    if !super::bits::zero_from(bytes, bits) {
        return Err(Error::format(
            ErrorCode::DecodeError,
            format!("{what}.indices"),
            start + bytes.len() as u64 - 1,
            "nonzero padding bits after the last index",
        ));
    }
    let mut r = BitReader::new(bytes);
    let indices = (0..params.blocks)
        .map(|_| r.read(params.index_bits))
        .collect();
    Ok(Miracle {
        params: *params,
        indices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use proptest::prelude::*;

    fn params(blocks: u32, index_bits: u8) -> Params {
        Params {
            seed: 0x0123_4567_89AB_CDEF,
            blocks,
            index_bits,
            prior_sigma: 0.5,
        }
    }

    fn parse(bytes: &[u8], shape: &[u64], dtype: DType) -> Result<Params> {
        let limits = Limits::SPEC;
        let ctx = DecodeContext::in_memory("t", dtype, shape, &limits);
        let stage = Stage {
            code: super::super::StageId::Miracle as u8,
            params: bytes,
            offset: 0,
        };
        Params::parse(&stage, &ctx, "t")
    }

    /// The spec's test vectors (§5.12): seed 0x0123456789ABCDEF, block 0 and 1, indices 0
    /// and 5, the first standard normal numbers as binary64 bits.
    #[test]
    fn spec_test_vectors() {
        let seed = 0x0123_4567_89AB_CDEF;
        assert_eq!(mix(0), 0);
        assert_eq!(mix(1), 0x5692_161D_100B_05E5);
        let cases: [(u32, u32, [u64; 3]); 3] = [
            (
                0,
                0,
                [0xBFB92392877D4D62, 0xBFC3941F2D8DFA3E, 0xBFF6707324A29C61],
            ),
            (
                0,
                5,
                [0x400436D1422C2F56, 0xBFF55B4886499F56, 0xBFB8BA5F1AB63B5E],
            ),
            (
                1,
                0,
                [0x3FF1327096842D6B, 0xBFED78CE42C2EE3F, 0x3FEEA5F65C4B01B8],
            ),
        ];
        for (block, index, expected) in cases {
            let c = Candidate::new(seed, block, index);
            let got: Vec<u64> = (0..3).map(|p| c.standard_normal(p).to_bits()).collect();
            assert_eq!(got, expected, "block {block} index {index}");
        }
    }

    #[test]
    fn the_series_coefficients_are_the_runtime_quotients() {
        for (k, &c) in INV_ODD.iter().enumerate() {
            let odd = std::hint::black_box((2 * k + 1) as f64);
            assert_eq!(c.to_bits(), (1.0 / odd).to_bits());
        }
    }

    #[test]
    fn ln_matches_the_library_logarithm() {
        let mut rng = crate::lcg::Lcg(7);
        for _ in 0..10_000 {
            let s = ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64).max(1e-300);
            let (ours, libm) = (ln(s), s.ln());
            assert!(
                (ours - libm).abs() <= 4.0 * f64::EPSILON * libm.abs().max(1.0),
                "ln({s}) = {ours}, libm {libm}"
            );
        }
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.5), -LN2);
    }

    #[test]
    fn draws_look_standard_normal() {
        let c = Candidate::new(42, 3, 9);
        let n = 100_000;
        let z: Vec<f64> = (0..n).map(|p| c.standard_normal(p)).collect();
        let mean = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let beyond_2 = z.iter().filter(|v| v.abs() > 2.0).count() as f64 / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        // P(|z| > 2) = 0.0455 for a standard normal.
        assert!((beyond_2 - 0.0455).abs() < 0.003, "tail {beyond_2}");
        // Other blocks and indices draw other numbers.
        let other = Candidate::new(42, 3, 10).standard_normal(0);
        assert_ne!(other, z[0]);
    }

    #[test]
    fn blocks_deal_the_elements_round_robin() {
        assert_eq!(
            (0..3).map(|b| block_len(10, 3, b)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(block_len(2, 3, 2), 0);
        let m = Miracle {
            params: params(3, 4),
            indices: vec![1, 2, 3],
        };
        let all = m.to_f64(10);
        let c = Candidate::new(m.params.seed, 1, 2);
        assert_eq!(all[7], c.weight(2, 0.5));
    }

    #[test]
    fn params_are_checked_in_order() {
        let code = |p: Params, shape: &[u64]| {
            parse(&p.to_bytes(), shape, DType::F32)
                .err()
                .map(|e| e.code())
        };
        assert_eq!(code(params(4, 8), &[2, 3]), None);
        assert_eq!(code(params(6, 32), &[2, 3]), None);
        assert_eq!(code(params(0, 0), &[0, 3]), Some(Some(ErrorCode::BadChain)));
        assert_eq!(code(params(0, 33), &[2]), Some(Some(ErrorCode::BadChain)));
        assert_eq!(code(params(0, 8), &[2]), Some(Some(ErrorCode::BadChain)));
        assert_eq!(code(params(7, 8), &[2, 3]), Some(Some(ErrorCode::BadChain)));
        assert_eq!(code(params(0, 8), &[0, 3]), None);
        let mut bytes = params(1, 8).to_bytes();
        bytes[14] = 1;
        assert_eq!(
            parse(&bytes, &[1], DType::F32).unwrap_err().code(),
            Some(ErrorCode::ReservedNonzero)
        );
        for sigma in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let p = Params {
                prior_sigma: sigma,
                ..params(1, 8)
            };
            let e = parse(&p.to_bytes(), &[1], DType::F32).unwrap_err();
            assert_eq!(
                (e.code(), e.offset()),
                (Some(ErrorCode::BadChain), Some(20))
            );
        }
        let e = parse(&params(1, 8).to_bytes(), &[1], DType::I32).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::BadChain));
        assert_eq!(
            parse(&[0; 19], &[1], DType::F32).unwrap_err().code(),
            Some(ErrorCode::BadChain)
        );
    }

    #[test]
    fn padding_and_length_are_checked() {
        let m = Miracle {
            params: params(3, 5),
            indices: vec![31, 0, 17],
        };
        let enc = encode(&m);
        assert_eq!(enc.payload.len(), 2);
        let mut bytes = enc.payload.to_vec();
        bytes[1] |= 1;
        let err = read_payload(&mut Cursor::new(&bytes, 100), &m.params, "t").unwrap_err();
        assert_eq!(
            (err.code(), err.offset()),
            (Some(ErrorCode::DecodeError), Some(101))
        );
        let err = read_payload(&mut Cursor::new(&bytes[..1], 100), &m.params, "t").unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Truncated));
    }

    proptest! {
        #[test]
        fn roundtrip(blocks in 1u32..40, bits in 1u8..=32, seed in any::<u64>()) {
            let mut rng = crate::lcg::Lcg(seed);
            let mask = if bits == 32 { u32::MAX } else { (1 << bits) - 1 };
            let indices: Vec<u32> = (0..blocks).map(|_| (rng.next_u64() as u32) & mask).collect();
            let m = Miracle { params: Params { seed, blocks, index_bits: bits, prior_sigma: 0.1 }, indices };
            let enc = encode(&m);
            prop_assert_eq!(enc.payload.len() as u64, m.params.coded_bits().div_ceil(8));
            let mut c = Cursor::new(&enc.payload, 0);
            let back = read_payload(&mut c, &m.params, "t").unwrap();
            prop_assert!(c.is_empty());
            prop_assert_eq!(back, m);
        }
    }
}
