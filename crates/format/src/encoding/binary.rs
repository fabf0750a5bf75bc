//! `binary` (spec §5.11): XNOR-Net's binary weights. Each row of the tensor (its first
//! dimension: one output channel or neuron) is a scale `α` times a vector of signs, stored one
//! bit per weight. Rastegari et al. show that `α = mean |w|` over the row is the scale that
//! minimises `‖w − α·sign(w)‖²`; that is what [`binarize`] picks.
//!
//! Each row starts on a byte boundary, so a runtime finds row `r`'s bits without counting and
//! can repack them into machine words for the XNOR + popcount kernel.

use super::bits::{self, BitWriter};
use super::{Encoded, floats};
use crate::cursor::Cursor;
use crate::dtype::DType;
use crate::error::{Error, ErrorCode, Result};

pub const PARAMS_LEN: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// f32 or f16.
    pub scale_dtype: DType,
}

impl Params {
    pub fn to_bytes(self) -> Vec<u8> {
        vec![self.scale_dtype.code(), 0, 0, 0]
    }

    /// Check the parameters in their stored order.
    pub fn parse(params: &[u8], field: &str, offset: u64) -> Result<Params> {
        if params.len() != PARAMS_LEN {
            return Err(Error::format(
                ErrorCode::BadChain,
                format!("{field}.params"),
                offset,
                format!(
                    "binary takes {PARAMS_LEN} parameter bytes, found {}",
                    params.len()
                ),
            ));
        }
        let scale_dtype =
            floats::parse_store_dtype(params[0], &format!("{field}.params.scale_dtype"), offset)?;
        floats::check_reserved(
            &params[1..4],
            &format!("{field}.params.reserved"),
            offset + 1,
        )?;
        Ok(Params { scale_dtype })
    }
}

/// A binarized matrix: `rows` scales and `rows × cols` signs.
#[derive(Debug, Clone, PartialEq)]
pub struct Binary {
    pub rows: usize,
    pub cols: usize,
    pub scales: Vec<f32>,
    /// Sign bits, row by row, each row padded to whole bytes, most significant bit first;
    /// 1 is `+α`, 0 is `−α`.
    pub bits: Vec<u8>,
}

impl Binary {
    /// Bytes per row of sign bits.
    pub fn row_bytes(&self) -> usize {
        self.cols.div_ceil(8)
    }

    /// Row `r`'s signs, one bit per column.
    pub fn row_signs(&self, r: usize) -> impl Iterator<Item = bool> + '_ {
        let row = &self.bits[r * self.row_bytes()..(r + 1) * self.row_bytes()];
        (0..self.cols).map(move |c| bits::get(row, c))
    }

    /// Every weight, `±α` of its row, as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            let a = self.scales[r];
            out.extend(self.row_signs(r).map(|b| if b { a } else { -a }));
        }
        out
    }

    /// The decoded tensor's bytes: each scale rounded to `dtype`, then signed (spec §5.11).
    pub fn to_dtype(&self, dtype: DType) -> Vec<u8> {
        let values: Vec<f64> = self.to_f32().into_iter().map(f64::from).collect();
        floats::f64_to_dtype(&values, dtype)
    }
}

/// XNOR-Net's binarization of a `rows × cols` row-major matrix: per row `α = mean |w|`
/// (rounded to `scale_dtype`), and the sign of each weight (zero counts as positive).
pub fn binarize(values: &[f32], rows: usize, cols: usize, scale_dtype: DType) -> Binary {
    assert_eq!(values.len(), rows * cols, "values fill the matrix");
    let mut bits = BitWriter::with_capacity(rows * cols.div_ceil(8));
    let mut scales = Vec::with_capacity(rows);
    for row in values.chunks_exact(cols.max(1)).take(rows) {
        let mean = row.iter().map(|v| v.abs() as f64).sum::<f64>() / cols.max(1) as f64;
        scales.push(mean as f32);
        for &v in row {
            bits.put((v >= 0.0) as u32, 1);
        }
        // Each row starts on a byte boundary.
        bits.align();
    }
    if cols == 0 {
        scales.resize(rows, 0.0);
    }
    Binary {
        rows,
        cols,
        scales: floats::round_to(&scales, scale_dtype),
        bits: bits.finish(),
    }
}

/// The stored form: `rows` scales, then the sign bits.
pub fn encode(b: &Binary, params: Params) -> Encoded<'static> {
    let mut payload = Vec::with_capacity(b.rows * params.scale_dtype.size() + b.bits.len());
    floats::write(&mut payload, &b.scales, params.scale_dtype);
    payload.extend_from_slice(&b.bits);
    Encoded::new(super::Repr::Binary(params), false, payload)
}

/// Read a payload for a `rows × cols` view; every byte must be consumed by the caller's
/// check afterwards.
pub fn read_payload(
    c: &mut Cursor<'_>,
    params: &Params,
    rows: u64,
    cols: u64,
    what: &str,
) -> Result<Binary> {
    let (rows, cols) = (rows as usize, cols as usize);
    let scales = floats::read(c, rows, params.scale_dtype, &format!("{what}.scales"))?;
    let row_bytes = cols.div_ceil(8);
    let start = c.offset();
    let len = rows.checked_mul(row_bytes).ok_or_else(|| {
        Error::format(
            ErrorCode::LimitExceeded,
            format!("{what}.signs"),
            start,
            "too many",
        )
    })?;
    let bits = c.bytes(len, || format!("{what}.signs"))?;
    if cols % 8 != 0 {
        let pad_mask = 0xffu8 >> (cols % 8);
        if let Some(r) = (0..rows).find(|r| bits[(r + 1) * row_bytes - 1] & pad_mask != 0) {
            return Err(Error::format(
                ErrorCode::DecodeError,
                format!("{what}.signs"),
                start + ((r + 1) * row_bytes - 1) as u64,
                format!("nonzero padding bits after row {r}'s signs"),
            ));
        }
    }
    Ok(Binary {
        rows,
        cols,
        scales,
        bits: bits.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn alpha_is_the_mean_magnitude_and_zero_is_positive() {
        let b = binarize(
            &[0.5, -1.5, 0.0, -2.0, 2.0, 1.0, -3.0, 1.0, 0.25],
            3,
            3,
            DType::F32,
        );
        assert_eq!(b.scales, vec![2.0 / 3.0f32, 5.0 / 3.0, 4.25 / 3.0]);
        assert_eq!(b.bits, vec![0b1010_0000, 0b0110_0000, 0b0110_0000]);
        let a = b.scales[0];
        assert_eq!(&b.to_f32()[..3], &[a, -a, a]);
    }

    #[test]
    fn nonzero_padding_is_rejected() {
        let b = binarize(&[1.0, -1.0, 1.0], 1, 3, DType::F32);
        let enc = encode(
            &b,
            Params {
                scale_dtype: DType::F32,
            },
        );
        let mut bytes = enc.payload.to_vec();
        bytes[4] |= 1;
        let p = Params::parse(&enc.stages[0].params, "t", 0).unwrap();
        let err = read_payload(&mut Cursor::new(&bytes, 100), &p, 1, 3, "t").unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::DecodeError));
        assert_eq!(err.offset(), Some(104));
    }

    #[test]
    fn params_are_checked_in_order() {
        let code = |p: &[u8]| Params::parse(p, "t", 0).unwrap_err().code();
        assert_eq!(code(&[1, 0, 0]), Some(ErrorCode::BadChain));
        assert_eq!(code(&[3, 0, 0, 0]), Some(ErrorCode::BadChain));
        assert_eq!(code(&[1, 0, 1, 0]), Some(ErrorCode::ReservedNonzero));
        assert!(Params::parse(&[2, 0, 0, 0], "t", 0).is_ok());
    }

    proptest! {
        #[test]
        fn roundtrip(rows in 0usize..5, cols in 0usize..20, seed in any::<u64>(), f16 in any::<bool>()) {
            let mut rng = crate::lcg::Lcg(seed);
            let values: Vec<f32> = (0..rows * cols).map(|_| rng.centred()).collect();
            let dtype = if f16 { DType::F16 } else { DType::F32 };
            let b = binarize(&values, rows, cols, dtype);
            let enc = encode(&b, Params { scale_dtype: dtype });
            let mut c = Cursor::new(&enc.payload, 0);
            let back = read_payload(&mut c, &Params { scale_dtype: dtype }, rows as u64, cols as u64, "t").unwrap();
            prop_assert!(c.is_empty());
            prop_assert_eq!(&back, &b);
            for (w, d) in values.iter().zip(back.to_f32()) {
                prop_assert_eq!(*w >= 0.0, d >= 0.0 || d == 0.0);
            }
        }
    }
}
