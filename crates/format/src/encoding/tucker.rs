//! `tucker` (spec §5.10): Tucker-2, the decomposition Kim et al. (2016) use to compress
//! convolutions. A tensor `[O, I, s…]` becomes a core `[r_out, r_in, s…]` and two factor
//! matrices, `U_out` (`O × r_out`) and `U_in` (`I × r_in`):
//!
//! `W[o, i, s] = Σ_a U_out[o, a] · Σ_b core[a, b, s] · U_in[i, b]`
//!
//! A convolution then runs as three: a 1×1 convolution from `I` to `r_in` channels (`U_inᵀ`),
//! the core's `kh × kw` convolution from `r_in` to `r_out`, and a 1×1 one to `O` (`U_out`).
//! The trailing dimensions (`s…`, the kernel window) are not factored.

use super::{DecodeContext, Encoded, Stage, floats};
use crate::cursor::Cursor;
use crate::dtype::DType;
use crate::error::{Error, ErrorCode, Result};

pub const PARAMS_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub rank_out: u32,
    pub rank_in: u32,
    /// f32 or f16.
    pub factor_dtype: DType,
}

impl Params {
    pub fn to_bytes(self) -> Vec<u8> {
        let mut v = self.rank_out.to_le_bytes().to_vec();
        v.extend_from_slice(&self.rank_in.to_le_bytes());
        v.extend_from_slice(&[self.factor_dtype.code(), 0, 0, 0]);
        v
    }

    /// Check the parameters in their stored order, then that they fit the tensor.
    pub fn parse(stage: &Stage<'_>, ctx: &DecodeContext<'_>, field: &str) -> Result<Params> {
        let offset = stage.params_offset();
        let bad = |at: u64, detail: String| {
            Error::format(ErrorCode::BadChain, format!("{field}.params"), at, detail)
        };
        let p = &super::fixed_params::<PARAMS_LEN>(stage, field)?;
        let (rank_out, rank_in) = (floats::u32_at(p, 0), floats::u32_at(p, 4));
        if rank_out == 0 || rank_in == 0 {
            return Err(bad(
                offset + if rank_out == 0 { 0 } else { 4 },
                "ranks must be at least 1".into(),
            ));
        }
        let factor_dtype =
            floats::parse_store_dtype(p[8], &format!("{field}.params.factor_dtype"), offset + 8)?;
        floats::check_reserved(&p[9..12], &format!("{field}.params.reserved"), offset + 9)?;
        floats::require_float(stage, ctx, field)?;
        let Some(&[out, inp]) = ctx
            .shape
            .get(..2)
            .map(|s| <&[u64; 2]>::try_from(s).expect("2"))
        else {
            return Err(bad(
                stage.offset,
                "tucker factors a tensor of rank 2 or more".into(),
            ));
        };
        // A mode's rank is at most the rank of its unfolding, `O × I·S` or `I × O·S`; this also
        // keeps each factor no larger than the tensor.
        let spatial = ctx.elements.checked_div(out * inp).unwrap_or(0);
        let (max_out, max_in) = (out.min(inp * spatial), inp.min(out * spatial));
        if rank_out as u64 > max_out {
            return Err(bad(
                offset,
                format!("rank_out {rank_out} exceeds min(O, I·S) = {max_out}"),
            ));
        }
        if rank_in as u64 > max_in {
            return Err(bad(
                offset + 4,
                format!("rank_in {rank_in} exceeds min(I, O·S) = {max_in}"),
            ));
        }
        Ok(Params {
            rank_out,
            rank_in,
            factor_dtype,
        })
    }
}

/// A Tucker-2 decomposition; every array row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tucker {
    pub out: usize,
    pub inp: usize,
    /// Product of the dimensions after the first two (1 for a matrix).
    pub spatial: usize,
    pub rank_out: usize,
    pub rank_in: usize,
    /// `out × rank_out`.
    pub u_out: Vec<f32>,
    /// `rank_out × rank_in × spatial`.
    pub core: Vec<f32>,
    /// `inp × rank_in`.
    pub u_in: Vec<f32>,
}

impl Tucker {
    /// The whole tensor in f64, summed in the spec's order: first `T = core ×₂ U_in` over `b`,
    /// then `W = T ×₁ U_out` over `a`, each in increasing index.
    fn to_f64(&self) -> Vec<f64> {
        let (s, ri, ro) = (self.spatial, self.rank_in, self.rank_out);
        let row = self.inp * s;
        // T[a, i, s] = Σ_b core[a, b, s] · U_in[i, b]
        let mut t = vec![0.0f64; ro * row];
        for a in 0..ro {
            for i in 0..self.inp {
                let dst = &mut t[a * row + i * s..a * row + (i + 1) * s];
                for b in 0..ri {
                    let uib = self.u_in[i * ri + b] as f64;
                    let src = &self.core[(a * ri + b) * s..(a * ri + b + 1) * s];
                    dst.iter_mut()
                        .zip(src)
                        .for_each(|(d, &c)| *d += c as f64 * uib);
                }
            }
        }
        let mut w = vec![0.0f64; self.out * row];
        for (o, dst) in w.chunks_exact_mut(row.max(1)).enumerate().take(self.out) {
            for a in 0..ro {
                let uoa = self.u_out[o * ro + a] as f64;
                dst.iter_mut()
                    .zip(&t[a * row..(a + 1) * row])
                    .for_each(|(d, &v)| *d += uoa * v);
            }
        }
        w
    }

    /// The decoded tensor's bytes, each element rounded once to `dtype`.
    pub fn to_dtype(&self, dtype: DType) -> Vec<u8> {
        floats::f64_to_dtype(&self.to_f64(), dtype)
    }

    /// The reconstruction as f32 (the decoded-dense twin of the factored layer).
    pub fn to_f32(&self) -> Vec<f32> {
        self.to_f64().into_iter().map(|v| v as f32).collect()
    }
}

pub fn encode(t: &Tucker, factor_dtype: DType) -> Encoded<'static> {
    let mut payload =
        Vec::with_capacity((t.u_out.len() + t.core.len() + t.u_in.len()) * factor_dtype.size());
    floats::write(&mut payload, &t.u_out, factor_dtype);
    floats::write(&mut payload, &t.core, factor_dtype);
    floats::write(&mut payload, &t.u_in, factor_dtype);
    let params = Params {
        rank_out: t.rank_out as u32,
        rank_in: t.rank_in as u32,
        factor_dtype,
    };
    Encoded::new(super::Repr::Tucker(params), false, payload)
}

/// Read `U_out`, the core, then `U_in`; the caller checks that nothing is left over.
pub fn read_payload(
    c: &mut Cursor<'_>,
    params: &Params,
    ctx: &DecodeContext<'_>,
) -> Result<Tucker> {
    let (out, inp) = (ctx.shape[0] as usize, ctx.shape[1] as usize);
    let spatial: usize = ctx.shape[2..].iter().map(|&d| d as usize).product();
    let (ro, ri) = (params.rank_out as usize, params.rank_in as usize);
    let dt = params.factor_dtype;
    let u_out = floats::read(c, out * ro, dt, &format!("{}.u_out", ctx.what))?;
    // ro ≤ out and ri ≤ inp, so the core is no larger than the tensor (checked by the limits).
    let core = floats::read(c, ro * ri * spatial, dt, &format!("{}.core", ctx.what))?;
    let u_in = floats::read(c, inp * ri, dt, &format!("{}.u_in", ctx.what))?;
    Ok(Tucker {
        out,
        inp,
        spatial,
        rank_out: ro,
        rank_in: ri,
        u_out,
        core,
        u_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;

    /// A naive reconstruction straight from the formula.
    fn naive(t: &Tucker) -> Vec<f32> {
        let mut w = vec![0.0f32; t.out * t.inp * t.spatial];
        for o in 0..t.out {
            for i in 0..t.inp {
                for s in 0..t.spatial {
                    let mut acc = 0.0f64;
                    for a in 0..t.rank_out {
                        let mut inner = 0.0f64;
                        for b in 0..t.rank_in {
                            inner += t.core[(a * t.rank_in + b) * t.spatial + s] as f64
                                * t.u_in[i * t.rank_in + b] as f64;
                        }
                        acc += t.u_out[o * t.rank_out + a] as f64 * inner;
                    }
                    w[(o * t.inp + i) * t.spatial + s] = acc as f32;
                }
            }
        }
        w
    }

    fn sample() -> Tucker {
        use crate::testing::uniform;
        let (out, inp, spatial, ro, ri) = (4, 3, 6, 2, 2);
        Tucker {
            out,
            inp,
            spatial,
            rank_out: ro,
            rank_in: ri,
            u_out: uniform(out * ro, 7),
            core: uniform(ro * ri * spatial, 8),
            u_in: uniform(inp * ri, 9),
        }
    }

    #[test]
    fn reconstruction_follows_the_formula() {
        let t = sample();
        assert_eq!(t.to_f32(), naive(&t));
    }

    #[test]
    fn roundtrip_and_params() {
        let t = sample();
        let enc = encode(&t, DType::F32);
        let limits = Limits::SPEC;
        let shape = [4u64, 3, 2, 3];
        let ctx = DecodeContext::in_memory("t", DType::F32, &shape, &limits);
        let stages = enc.stage_views();
        let p = Params::parse(&stages[0], &ctx, "t").unwrap();
        let mut c = Cursor::new(&enc.payload, 0);
        assert_eq!(read_payload(&mut c, &p, &ctx).unwrap(), t);
        assert!(c.is_empty());
        let too_big = Params {
            rank_out: 5,
            rank_in: 1,
            factor_dtype: DType::F32,
        }
        .to_bytes();
        let stage = Stage {
            code: 6,
            params: &too_big,
            offset: 0,
        };
        assert_eq!(
            Params::parse(&stage, &ctx, "t").unwrap_err().code(),
            Some(ErrorCode::BadChain)
        );
    }
}
