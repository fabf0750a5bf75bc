//! An 8×8 block of `f32` transposed in AVX2 registers: the 256-bit twin of
//! [`super::transpose16`], for the AVX2 kernels that compute with one layout in the lanes and
//! store another (channels against pixels).

use std::arch::x86_64::*;

const LANES: usize = 8;

/// `out[j][i] = rows[i][j]`: an 8×8 block transposed in registers, in three rounds of
/// shuffles (pairs, then quadruples within 128-bit lanes, then the 128-bit lanes across
/// pairs of registers).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn transpose(r: [__m256; LANES]) -> [__m256; LANES] {
    // `t[2i]`, 128-bit lane `h`: rows `2i, 2i + 1` interleaved over columns `4h, 4h + 1`;
    // `t[2i + 1]` the same over columns `4h + 2, 4h + 3`.
    let mut t = [_mm256_setzero_ps(); LANES];
    for i in 0..4 {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // `u[4g + m]`, 128-bit lane `h`: rows `4g..4g + 4` of column `4h + m`.
    let mut u = [_mm256_setzero_ps(); LANES];
    for g in 0..2 {
        let b = 4 * g;
        u[b] = _mm256_shuffle_ps::<0x44>(t[b], t[b + 2]);
        u[b + 1] = _mm256_shuffle_ps::<0xEE>(t[b], t[b + 2]);
        u[b + 2] = _mm256_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
        u[b + 3] = _mm256_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
    }
    let mut c = [_mm256_setzero_ps(); LANES];
    for m in 0..4 {
        c[m] = _mm256_permute2f128_ps::<0x20>(u[m], u[4 + m]);
        c[4 + m] = _mm256_permute2f128_ps::<0x31>(u[m], u[4 + m]);
    }
    c
}

/// A 4×4 transpose within each 128-bit half of four vectors: lane `i` of half `h` of output
/// `j` is lane `j` of half `h` of input `i`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn transpose_halves(v: [__m256; 4]) -> [__m256; 4] {
    let low01 = _mm256_unpacklo_ps(v[0], v[1]);
    let low23 = _mm256_unpacklo_ps(v[2], v[3]);
    let high01 = _mm256_unpackhi_ps(v[0], v[1]);
    let high23 = _mm256_unpackhi_ps(v[2], v[3]);
    [
        _mm256_shuffle_ps::<0x44>(low01, low23),
        _mm256_shuffle_ps::<0xEE>(low01, low23),
        _mm256_shuffle_ps::<0x44>(high01, high23),
        _mm256_shuffle_ps::<0xEE>(high01, high23),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_transposes() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        let m: Vec<f32> = (0..64).map(|v| v as f32).collect();
        // SAFETY: the CPU has AVX2 and FMA (checked above); each load reads 8 values of `m`.
        let got = unsafe {
            let rows = std::array::from_fn(|i| _mm256_loadu_ps(m[8 * i..].as_ptr()));
            transpose(rows)
        };
        for (j, column) in got.iter().enumerate() {
            let mut values = [0f32; LANES];
            // SAFETY: as above; the store writes the 8 values of `values`.
            unsafe { _mm256_storeu_ps(values.as_mut_ptr(), *column) };
            let want: Vec<f32> = (0..8).map(|i| m[8 * i + j]).collect();
            assert_eq!(values.to_vec(), want, "column {j}");
        }
    }
}
