//! A 16×16 block of `f32` transposed in AVX-512 registers: for kernels that compute with
//! one layout in the lanes and store another (channels against pixels).

use std::arch::x86_64::*;

const LANES: usize = 16;

/// `out[j][i] = rows[i][j]`: a 16×16 block transposed in registers, in four rounds of
/// shuffles (pairs, then quadruples within 128-bit lanes, then lanes across pairs of
/// registers, twice).
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)]
pub(crate) fn transpose(r: [__m512; LANES]) -> [__m512; LANES] {
    let mut t = [_mm512_setzero_ps(); LANES];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // `u[4g + m]`, 128-bit lane `k`: rows `4g..4g + 4` of column `4k + m`.
    let mut u = [_mm512_setzero_ps(); LANES];
    for g in 0..4 {
        let b = 4 * g;
        u[b] = _mm512_shuffle_ps::<0x44>(t[b], t[b + 2]);
        u[b + 1] = _mm512_shuffle_ps::<0xEE>(t[b], t[b + 2]);
        u[b + 2] = _mm512_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
        u[b + 3] = _mm512_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
    }
    let mut c = [_mm512_setzero_ps(); LANES];
    for m in 0..4 {
        let even_lanes_low = _mm512_shuffle_f32x4::<0x88>(u[m], u[4 + m]);
        let odd_lanes_low = _mm512_shuffle_f32x4::<0xDD>(u[m], u[4 + m]);
        let even_lanes_high = _mm512_shuffle_f32x4::<0x88>(u[8 + m], u[12 + m]);
        let odd_lanes_high = _mm512_shuffle_f32x4::<0xDD>(u[8 + m], u[12 + m]);
        c[m] = _mm512_shuffle_f32x4::<0x88>(even_lanes_low, even_lanes_high);
        c[8 + m] = _mm512_shuffle_f32x4::<0xDD>(even_lanes_low, even_lanes_high);
        c[4 + m] = _mm512_shuffle_f32x4::<0x88>(odd_lanes_low, odd_lanes_high);
        c[12 + m] = _mm512_shuffle_f32x4::<0xDD>(odd_lanes_low, odd_lanes_high);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_transposes() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let m: Vec<f32> = (0..256).map(|v| v as f32).collect();
        // SAFETY: the CPU has AVX-512F (checked above); each load reads 16 values of `m`.
        let got = unsafe {
            let rows = std::array::from_fn(|i| _mm512_loadu_ps(m[16 * i..].as_ptr()));
            transpose(rows)
        };
        for (j, column) in got.iter().enumerate() {
            let mut values = [0f32; LANES];
            // SAFETY: as above; the store writes the 16 values of `values`.
            unsafe { _mm512_storeu_ps(values.as_mut_ptr(), *column) };
            let want: Vec<f32> = (0..16).map(|i| m[16 * i + j]).collect();
            assert_eq!(values.to_vec(), want, "column {j}");
        }
    }
}
