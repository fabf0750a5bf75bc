//! Sixteen values in two AVX2 vectors split into their even and odd values, for the stride-2
//! kernels (depthwise rows, max pooling): AVX2 has no two-register permute, so `shufps` takes
//! lanes 0 and 2 (or 1 and 3) of each vector within 128-bit halves and leaves the halves where
//! they are. The values come out in the order `PAIRED`, the same for every tap, so a kernel
//! works in that order and puts its results back once per vector ([`in_order`]): a permute per
//! tap, nine a vector in the depthwise rows, took more time than the sums.

use std::arch::x86_64::*;

/// The order of the values in [`even_lanes`] and [`odd_lanes`]: lane `j` holds value
/// `PAIRED[j]` of the eight, the 64-bit quarters in the order 0, 2, 1, 3.
#[cfg(test)]
const PAIRED: [usize; 8] = [0, 1, 4, 5, 2, 3, 6, 7];

/// The even values of the sixteen in `a, b`, in the order `PAIRED`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn even_lanes(a: __m256, b: __m256) -> __m256 {
    _mm256_shuffle_ps::<0b10_00_10_00>(a, b)
}

/// The odd values of the sixteen in `a, b`, in the order `PAIRED`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn odd_lanes(a: __m256, b: __m256) -> __m256 {
    _mm256_shuffle_ps::<0b11_01_11_01>(a, b)
}

/// A vector in the order `PAIRED` back in order: quarters 0, 2, 1, 3 swapped back.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn in_order(v: __m256) -> __m256 {
    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_and_odd_lanes_split_sixteen_values_in_paired_order() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        let values: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let mut got = [[0f32; 8]; 3];
        // SAFETY: AVX2 and FMA (checked above); the loads read `values`, the stores `got`.
        unsafe {
            let (a, b) = (
                _mm256_loadu_ps(values.as_ptr()),
                _mm256_loadu_ps(values[8..].as_ptr()),
            );
            _mm256_storeu_ps(got[0].as_mut_ptr(), even_lanes(a, b));
            _mm256_storeu_ps(got[1].as_mut_ptr(), odd_lanes(a, b));
            _mm256_storeu_ps(got[2].as_mut_ptr(), in_order(even_lanes(a, b)));
        }
        let paired = |first: f32| PAIRED.map(|j| first + 2.0 * j as f32);
        assert_eq!(got[0], paired(0.0));
        assert_eq!(got[1], paired(1.0));
        assert_eq!(got[2], [0., 2., 4., 6., 8., 10., 12., 14.]);
    }
}
