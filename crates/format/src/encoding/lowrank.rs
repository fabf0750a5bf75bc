//! `lowrank` (spec §5.9): a tensor viewed as a `rows × cols` matrix (first dimension by the
//! rest) stored as two factors, `W ≈ U · V` with `U` `rows × r` and `V` `r × cols`, as a
//! truncated SVD gives them (singular values folded into the factors). A runtime can run the
//! layer as two thinner ones: a convolution with `r` filters, then a 1×1 one with `rows`.
//!
//! The factors cost `(rows + cols) · r` numbers against `rows · cols`, so a factorization only
//! pays below `r = rows · cols / (rows + cols)`.

use super::{DecodeContext, Encoded, Stage, floats};
use crate::cursor::Cursor;
use crate::dtype::DType;
use crate::error::{Error, ErrorCode, Result};

pub const PARAMS_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub rank: u32,
    /// f32 or f16.
    pub factor_dtype: DType,
}

impl Params {
    pub fn to_bytes(self) -> Vec<u8> {
        let mut v = self.rank.to_le_bytes().to_vec();
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
        let rank = floats::u32_at(p, 0);
        if rank == 0 {
            return Err(bad(offset, "rank must be at least 1".into()));
        }
        let factor_dtype =
            floats::parse_store_dtype(p[4], &format!("{field}.params.factor_dtype"), offset + 4)?;
        floats::check_reserved(&p[5..8], &format!("{field}.params.reserved"), offset + 5)?;
        floats::require_float(stage, ctx, field)?;
        let (rows, cols) = matrix_shape(ctx.shape, ctx.elements).ok_or_else(|| {
            bad(
                stage.offset,
                "lowrank factors a tensor of rank 2 or more".into(),
            )
        })?;
        if rank as u64 > rows.min(cols) {
            return Err(bad(
                offset,
                format!("rank {rank} exceeds min(rows, cols) of a {rows}x{cols} matrix"),
            ));
        }
        Ok(Params { rank, factor_dtype })
    }
}

/// The matrix a factorization sees: the first dimension by the product of the rest; `None`
/// below rank 2.
pub fn matrix_shape(shape: &[u64], elements: u64) -> Option<(u64, u64)> {
    match shape {
        [rows, _, ..] if *rows == 0 => Some((0, 0)),
        [rows, _, ..] => Some((*rows, elements / rows)),
        _ => None,
    }
}

/// `W = U · V`: `u` is `rows × rank`, `v` is `rank × cols`, both row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct LowRank {
    pub rows: usize,
    pub cols: usize,
    pub rank: usize,
    pub u: Vec<f32>,
    pub v: Vec<f32>,
}

impl LowRank {
    /// Row `i` of `U · V`, summed in f64 in increasing `k` as the spec fixes, so that every
    /// reader rounds the same number.
    fn row_f64(&self, i: usize, acc: &mut [f64]) {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for k in 0..self.rank {
            let uik = self.u[i * self.rank + k] as f64;
            let vk = &self.v[k * self.cols..(k + 1) * self.cols];
            acc.iter_mut()
                .zip(vk)
                .for_each(|(a, &v)| *a += uik * v as f64);
        }
    }

    /// The decoded tensor's bytes, each element rounded once to `dtype`.
    pub fn to_dtype(&self, dtype: DType) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rows * self.cols * dtype.size());
        let mut acc = vec![0.0f64; self.cols];
        for i in 0..self.rows {
            self.row_f64(i, &mut acc);
            out.extend(floats::f64_to_dtype(&acc, dtype));
        }
        out
    }

    /// `U · V` as f32 (the decoded-dense twin of the factored layer).
    pub fn to_f32(&self) -> Vec<f32> {
        self.to_dtype(DType::F32)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

/// The stored form of factors already rounded to `factor_dtype` (or rounded here).
pub fn encode(lr: &LowRank, factor_dtype: DType) -> Encoded<'static> {
    let mut payload = Vec::with_capacity((lr.u.len() + lr.v.len()) * factor_dtype.size());
    floats::write(&mut payload, &lr.u, factor_dtype);
    floats::write(&mut payload, &lr.v, factor_dtype);
    let params = Params {
        rank: lr.rank as u32,
        factor_dtype,
    };
    Encoded::new(super::Repr::LowRank(params), false, payload)
}

/// Read `U` then `V`; the caller checks that nothing is left over.
pub fn read_payload(
    c: &mut Cursor<'_>,
    params: &Params,
    ctx: &DecodeContext<'_>,
) -> Result<LowRank> {
    let (rows, cols) = matrix_shape(ctx.shape, ctx.elements).expect("checked with the params");
    let (rows, cols, rank) = (rows as usize, cols as usize, params.rank as usize);
    let u = floats::read(
        c,
        rows * rank,
        params.factor_dtype,
        &format!("{}.u", ctx.what),
    )?;
    let v = floats::read(
        c,
        rank * cols,
        params.factor_dtype,
        &format!("{}.v", ctx.what),
    )?;
    Ok(LowRank {
        rows,
        cols,
        rank,
        u,
        v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;

    fn ctx<'a>(shape: &'a [u64], dtype: DType, limits: &'a Limits) -> DecodeContext<'a> {
        DecodeContext::in_memory("t", dtype, shape, limits)
    }

    #[test]
    fn reconstructs_the_product() {
        let lr = LowRank {
            rows: 2,
            cols: 3,
            rank: 1,
            u: vec![2.0, -0.5],
            v: vec![1.0, 0.25, -4.0],
        };
        assert_eq!(lr.to_f32(), vec![2.0, 0.5, -8.0, -0.5, -0.125, 2.0]);
        let enc = encode(&lr, DType::F16);
        assert_eq!(enc.payload.len(), 5 * 2);
        let limits = Limits::SPEC;
        let c = ctx(&[2, 3], DType::F32, &limits);
        let stages = enc.stage_views();
        let p = Params::parse(&stages[0], &c, "t").unwrap();
        let mut cur = Cursor::new(&enc.payload, 0);
        assert_eq!(read_payload(&mut cur, &p, &c).unwrap(), lr);
        assert!(cur.is_empty());
    }

    #[test]
    fn params_must_fit_the_tensor() {
        let limits = Limits::SPEC;
        let check = |params: Params, shape: &[u64], dtype: DType| {
            let bytes = params.to_bytes();
            let stage = Stage {
                code: crate::encoding::StageId::LowRank as u8,
                params: &bytes,
                offset: 0,
            };
            Params::parse(&stage, &ctx(shape, dtype, &limits), "t")
                .err()
                .and_then(|e| e.code())
        };
        let p = |rank| Params {
            rank,
            factor_dtype: DType::F32,
        };
        assert_eq!(check(p(2), &[2, 3], DType::F32), None);
        assert_eq!(check(p(3), &[2, 3], DType::F32), Some(ErrorCode::BadChain));
        assert_eq!(check(p(0), &[2, 3], DType::F32), Some(ErrorCode::BadChain));
        assert_eq!(check(p(1), &[6], DType::F32), Some(ErrorCode::BadChain));
        assert_eq!(check(p(1), &[2, 3], DType::I32), Some(ErrorCode::BadChain));
        assert_eq!(check(p(1), &[0, 3], DType::F32), Some(ErrorCode::BadChain));
        let mut reserved = p(1).to_bytes();
        reserved[7] = 1;
        let stage = Stage {
            code: 5,
            params: &reserved,
            offset: 0,
        };
        assert_eq!(
            Params::parse(&stage, &ctx(&[2, 3], DType::F32, &limits), "t")
                .unwrap_err()
                .code(),
            Some(ErrorCode::ReservedNonzero)
        );
    }

    #[test]
    fn sums_in_f64_and_rounds_once() {
        // 1 + 2^-24 + 2^-24 in f32 steps would round 1 + 2^-24 down to 1 twice; in f64 the sum
        // is 1 + 2^-23, which f32 holds exactly.
        let e = 2f32.powi(-24);
        let lr = LowRank {
            rows: 1,
            cols: 1,
            rank: 3,
            u: vec![1.0, e, e],
            v: vec![1.0, 1.0, 1.0],
        };
        assert_eq!(lr.to_f32(), vec![1.0 + 2f32.powi(-23)]);
    }
}
