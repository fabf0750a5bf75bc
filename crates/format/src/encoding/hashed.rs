//! `hashed` (spec §5.13): the hashing trick of HashedNets (Chen et al., "Compressing Neural
//! Networks with the Hashing Trick", ICML 2015), as MIRACLE uses it for LeNet-5's large layers.
//! The tensor's `N` elements share `M ≤ N` values: element `e` is `ξ(e) · v[e mod M]`, with a
//! sign `ξ(e) = ±1` hashed from the seed, so the elements sharing a value do not all pull the
//! same way. The `M` values are coded by the stage that follows (`miracle`), as a tensor of
//! shape `[M]`; the file stores nothing else.

use super::miracle::Miracle;
use super::{DecodeContext, Encoded, Stage, floats};
use crate::error::{Error, ErrorCode, Result};

pub const PARAMS_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The seed the signs are hashed from.
    pub seed: u64,
    /// `M`: the shared values, 1..=N (0 only for a tensor without elements).
    pub values: u32,
}

impl Params {
    pub fn to_bytes(self) -> Vec<u8> {
        let mut v = self.seed.to_le_bytes().to_vec();
        v.extend_from_slice(&self.values.to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        v
    }

    /// Check the parameters in their stored order, then `M` against the tensor.
    pub fn parse(stage: &Stage<'_>, ctx: &DecodeContext<'_>, field: &str) -> Result<Params> {
        let offset = stage.params_offset();
        let p = &super::fixed_params::<PARAMS_LEN>(stage, field)?;
        let seed = u64::from_le_bytes(p[0..8].try_into().expect("8 bytes"));
        let values = floats::u32_at(p, 8);
        floats::check_reserved(&p[12..16], &format!("{field}.params.reserved"), offset + 12)?;
        floats::require_float(stage, ctx, field)?;
        let fits = if ctx.elements == 0 {
            values == 0
        } else {
            (1..=ctx.elements).contains(&(values as u64))
        };
        if !fits {
            return Err(Error::format(
                ErrorCode::BadChain,
                format!("{field}.params.values"),
                offset + 8,
                format!(
                    "{values} shared values for {} elements: 1 to {0} (0 only for an empty tensor)",
                    ctx.elements
                ),
            ));
        }
        Ok(Params { seed, values })
    }

    /// Element `e`'s shared value and sign: `v[e mod M]`, negated where the hash says.
    #[inline]
    pub fn slot(&self, element: u64) -> (usize, bool) {
        (
            (element % self.values as u64) as usize,
            negated(self.seed, element),
        )
    }

    /// Expand the `M` shared values to the tensor's `elements`, row-major.
    pub fn expand<T: Copy + std::ops::Neg<Output = T>>(
        &self,
        shared: &[T],
        elements: u64,
    ) -> Vec<T> {
        (0..elements)
            .map(|e| {
                let (k, neg) = self.slot(e);
                if neg { -shared[k] } else { shared[k] }
            })
            .collect()
    }

    /// The transpose of [`Params::expand`]: each shared value's sum of `ξ(e) · x[e]` over the
    /// elements that use it. An encoder's projection of a dense tensor onto the shared values
    /// is this sum divided by how many elements share each value ([`Params::uses`]).
    pub fn gather_sums(&self, x: &[f32]) -> Vec<f64> {
        let mut sums = vec![0.0f64; self.values as usize];
        for (e, &v) in x.iter().enumerate() {
            let (k, neg) = self.slot(e as u64);
            sums[k] += if neg { -(v as f64) } else { v as f64 };
        }
        sums
    }

    /// How many of `elements` share value `k`.
    pub fn uses(&self, elements: u64, k: usize) -> u64 {
        super::miracle::block_len(elements, self.values, k as u32)
    }
}

/// The stored form: `hashed` then `miracle`, whose payload is the shared values' indices.
pub fn encode(shared: Params, values: &Miracle) -> Encoded<'static> {
    assert!(
        values.params.blocks <= shared.values,
        "a block per shared value at most"
    );
    let payload = super::miracle::encode(values).payload;
    Encoded::new(
        super::Repr::Hashed {
            shared,
            values: values.params,
        },
        false,
        payload,
    )
}

/// `ξ(e) = −1` when the top bit of `mix(mix(seed) + γ·(e + 1))` is set (spec §5.13).
#[inline]
pub fn negated(seed: u64, element: u64) -> bool {
    use super::miracle::{GAMMA, mix};
    mix(mix(seed).wrapping_add(GAMMA.wrapping_mul(element.wrapping_add(1)))) >> 63 == 1
}

/// The context the value stage decodes in: a float tensor of shape `[M]`.
pub fn values_context<'a>(
    ctx: &DecodeContext<'a>,
    params: &Params,
    shape: &'a [u64],
) -> DecodeContext<'a> {
    let elements = params.values as u64;
    DecodeContext {
        shape,
        elements,
        dense_len: elements * ctx.dtype.size() as u64,
        ..*ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::limits::Limits;

    fn parse(bytes: &[u8], shape: &[u64], dtype: DType) -> Result<Params> {
        let limits = Limits::SPEC;
        let ctx = DecodeContext::in_memory("t", dtype, shape, &limits);
        let stage = Stage {
            code: super::super::StageId::Hashed as u8,
            params: bytes,
            offset: 0,
        };
        Params::parse(&stage, &ctx, "t")
    }

    #[test]
    fn signs_are_balanced() {
        let n = 100_000u64;
        let minus = (0..n).filter(|&e| negated(99, e)).count() as f64 / n as f64;
        assert!((minus - 0.5).abs() < 0.01, "{minus}");
    }

    #[test]
    fn expand_and_gather_are_transposes() {
        let p = Params { seed: 5, values: 4 };
        let shared = [1.0f32, 2.0, 3.0, 4.0];
        let full = p.expand(&shared, 10);
        for (e, &w) in full.iter().enumerate() {
            let (k, neg) = p.slot(e as u64);
            assert_eq!(w, if neg { -shared[k] } else { shared[k] });
            assert_eq!(k, e % 4);
        }
        // <expand(v), x> = <v, gather(x)> for any x.
        let x: Vec<f32> = (0..10).map(|i| i as f32 * 0.5 - 2.0).collect();
        let lhs: f64 = full
            .iter()
            .zip(&x)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        let g = p.gather_sums(&x);
        let rhs: f64 = shared.iter().zip(&g).map(|(&a, &b)| a as f64 * b).sum();
        assert!((lhs - rhs).abs() < 1e-9);
        assert_eq!(
            (0..4).map(|k| p.uses(10, k)).collect::<Vec<_>>(),
            [3, 3, 2, 2]
        );
    }

    #[test]
    fn params_are_checked_in_order() {
        let p = |values| Params { seed: 1, values }.to_bytes();
        assert_eq!(parse(&p(3), &[2, 3], DType::F32).unwrap().values, 3);
        assert_eq!(parse(&p(6), &[6], DType::F16).unwrap().values, 6);
        assert_eq!(parse(&p(0), &[0, 3], DType::F32).unwrap().values, 0);
        for (values, shape) in [(0u32, &[2u64][..]), (7, &[6]), (1, &[0])] {
            let e = parse(&p(values), shape, DType::F32).unwrap_err();
            assert_eq!(
                (e.code(), e.offset()),
                (Some(ErrorCode::BadChain), Some(12))
            );
        }
        let mut bytes = p(1);
        bytes[15] = 1;
        let e = parse(&bytes, &[1], DType::F32).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::ReservedNonzero));
        let e = parse(&p(1), &[1], DType::I32).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::BadChain));
        let e = parse(&[0; 15], &[1], DType::F32).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::BadChain));
    }
}
