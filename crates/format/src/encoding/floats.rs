//! What the factored representations (`lowrank`, `tucker`, `binary`) share (and codebooks,
//! the float-type check): their parameters
//! name a float type for the numbers they store (f32 or f16, like codebook centroids), end in
//! reserved bytes, and apply only to float tensors; their payloads are arrays of such numbers.

use super::{DecodeContext, Stage};
use crate::cursor::Cursor;
use crate::dtype::DType;
use crate::error::{Error, ErrorCode, Result};

/// The stored number type of a factor or scale array: dtype code 1 (`f32`) or 2 (`f16`).
pub fn parse_store_dtype(code: u8, field: &str, offset: u64) -> Result<DType> {
    match DType::from_code(code) {
        Some(d @ (DType::F32 | DType::F16)) => Ok(d),
        _ => Err(Error::format(
            ErrorCode::BadChain,
            field,
            offset,
            format!("stored numbers are f32 (1) or f16 (2), found dtype code {code}"),
        )),
    }
}

/// Reserved parameter bytes must be zero.
pub fn check_reserved(bytes: &[u8], field: &str, offset: u64) -> Result<()> {
    if bytes.iter().any(|&b| b != 0) {
        return Err(Error::format(
            ErrorCode::ReservedNonzero,
            field,
            offset,
            "must be 0",
        ));
    }
    Ok(())
}

/// Codebooks and the factored representations decode to real numbers: the tensor must be a
/// float type (`bad_chain` at the stage).
pub fn require_float(stage: &Stage<'_>, ctx: &DecodeContext<'_>, field: &str) -> Result<()> {
    if !ctx.dtype.is_float() {
        return Err(Error::format(
            ErrorCode::BadChain,
            field,
            stage.offset,
            format!(
                "{} decodes to real numbers; the tensor is {}",
                super::stage_name(stage.code),
                ctx.dtype
            ),
        ));
    }
    Ok(())
}

/// `n` numbers of `dtype` (f32 or f16) as f32, which holds every f16 exactly. The bytes are
/// taken (and so checked present) before anything is allocated.
pub fn read(c: &mut Cursor<'_>, n: usize, dtype: DType, field: &str) -> Result<Vec<f32>> {
    let len = n
        .checked_mul(dtype.size())
        .ok_or_else(|| Error::format(ErrorCode::LimitExceeded, field, c.offset(), "too many"))?;
    let bytes = c.bytes(len, || field.to_string())?;
    Ok(match dtype {
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    })
}

/// Numbers rounded to `dtype` (f32 or f16, nearest even), as the decoder will read them back.
pub fn round_to(values: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => values
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect(),
        _ => values.to_vec(),
    }
}

/// Append `values` stored as `dtype` (f32 or f16), little-endian.
pub fn write(out: &mut Vec<u8>, values: &[f32], dtype: DType) {
    match dtype {
        DType::F16 => {
            out.extend(
                values
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes()),
            );
        }
        _ => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
    }
}

/// Reconstructed values (computed in f64) to the little-endian bytes of a float dtype, each
/// rounded once to nearest even: converting through f32 first would round twice.
pub fn f64_to_dtype(values: &[f64], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => values
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect(),
        // `half`'s own f64 conversions go through f32 and round twice; rounding to odd in
        // f32 first keeps the one rounding exact, since f32 has more than two bits to spare.
        DType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(round_to_odd_f32(v)).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(round_to_odd_f32(v)).to_le_bytes())
            .collect(),
        DType::F64 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        other => unreachable!("factored tensors are float types, not {other}"),
    }
}

/// `v` rounded to f32 toward zero, with the last bit set when that was inexact ("round to
/// odd"). Rounding this to a narrower type gives the same result as rounding `v` directly.
fn round_to_odd_f32(v: f64) -> f32 {
    let t = v as f32;
    if !t.is_finite() || t as f64 == v {
        return t;
    }
    let mut bits = t.to_bits();
    if (t as f64).abs() > v.abs() {
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

/// A parameter field as a `u32` at `at` (the caller checked the length).
pub fn u32_at(params: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(params[at..at + 4].try_into().expect("4 bytes"))
}

/// f32 values to little-endian bytes of a float dtype.
pub fn f32_to_dtype(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => bytemuck::cast_slice::<f32, u8>(values).to_vec(),
        DType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        DType::F64 => values
            .iter()
            .flat_map(|&v| (v as f64).to_le_bytes())
            .collect(),
        other => unreachable!("codebooks decode to float dtypes only, not {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f64_rounds_once_to_half_precision() {
        // 1 + 2^-11 + 2^-30 is just above the midpoint between two f16 values: rounding to
        // f32 first lands on the midpoint (1 + 2^-11), which then ties to even (1.0).
        let v = 1.0 + 2f64.powi(-11) + 2f64.powi(-30);
        let once =
            half::f16::from_le_bytes(f64_to_dtype(&[v], DType::F16)[..2].try_into().unwrap());
        assert_eq!(once.to_f64(), 1.0 + 2f64.powi(-10));
        assert_eq!(half::f16::from_f32(v as f32).to_f64(), 1.0);
        let below = 1.0 + 2f64.powi(-11) - 2f64.powi(-30);
        let bytes = f64_to_dtype(&[below, -v], DType::F16);
        assert_eq!(half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f64(), 1.0);
        assert_eq!(
            half::f16::from_le_bytes([bytes[2], bytes[3]]).to_f64(),
            -(1.0 + 2f64.powi(-10))
        );
        // bf16 keeps 7 fraction bits: 1 + 2^-8 + 2^-40 is above its midpoint.
        let b = f64_to_dtype(&[1.0 + 2f64.powi(-8) + 2f64.powi(-40)], DType::BF16);
        assert_eq!(
            half::bf16::from_le_bytes([b[0], b[1]]).to_f64(),
            1.0 + 2f64.powi(-7)
        );
    }

    #[test]
    fn reads_back_what_it_writes() {
        let vals = [0.5f32, -1.25, 3.0e-3];
        for dtype in [DType::F32, DType::F16] {
            let mut bytes = Vec::new();
            write(&mut bytes, &vals, dtype);
            let mut c = Cursor::new(&bytes, 0);
            assert_eq!(read(&mut c, 3, dtype, "f").unwrap(), round_to(&vals, dtype));
            assert!(c.is_empty());
            let mut short = Cursor::new(&bytes[..bytes.len() - 1], 0);
            assert_eq!(
                read(&mut short, 3, dtype, "f").unwrap_err().code(),
                Some(ErrorCode::Truncated)
            );
        }
    }
}
