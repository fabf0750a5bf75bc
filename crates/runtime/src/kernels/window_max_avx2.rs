//! [`super::window_max::plane_max_stride2`] on AVX2, for CPUs without AVX-512: max pooling of
//! a plane at stride 2 with a window 2 or 3 columns wide, eight outputs of a row at a time.
//!
//! A pair of loads (16 columns from the window's first) holds the first tap in its even lanes
//! and the second in its odd ones; AVX2 has no two-register permute, so each is gathered by a
//! shuffle within 128-bit halves, which leaves the outputs' 64-bit quarters in the order 0, 2,
//! 1, 3. Every tap comes in that order, so the maxima are taken in it and one permute per
//! vector of outputs puts them back before the store. Columns outside the row
//! (the padding, the row's end) are loaded through `vmaskmovps` and set to −∞ by a blend, at
//! the planes' edges only. The maxima are taken in the AVX-512 kernel's order from −∞ (NaN
//! skipped as `f32::max` skips it): its bits (tested against whole windows).

use super::pairs_avx2::{even_lanes, in_order, odd_lanes};
use super::{first_lanes_avx2, lane_mask};
use std::arch::x86_64::*;

const LANES: usize = 8;

/// Whether [`plane_max_stride2`] can run: the CPU has AVX2 and FMA (the runtime's AVX2
/// level; no FMA instruction is used). Read once.
pub fn available() -> bool {
    crate::cpu::avx2_fma()
}

/// The contract of [`super::window_max::plane_max_stride2`], on AVX2.
///
/// # Safety
/// The CPU has AVX2 and FMA ([`available`]).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn plane_max_stride2(
    plane: &[f32],
    (h, w): (usize, usize),
    ((top, left), (kh, kw)): ((usize, usize), (usize, usize)),
    out: &mut [f32],
    (oh, ow): (usize, usize),
) {
    assert!(plane.len() >= h * w && out.len() >= oh * ow, "whole planes");
    assert!(matches!(kw, 2 | 3), "a window 2 or 3 wide");
    for x in (0..ow).step_by(LANES) {
        // The pairs of loads from columns `c0` and `c0 + 2`; lane `j` of a pair is loaded
        // where its column is in the row.
        let c0 = (2 * x) as isize - left as isize;
        let pairs = (pair_inside(c0, w), pair_inside(c0 + 2, w));
        let strip = Strip {
            plane,
            w,
            c0,
            pairs,
            kw,
        };
        let rows = (h, top, kh, oh);
        let outputs = (x, (ow - x).min(LANES), ow);
        // Strips whose loads all lie in the row (all but a plane's edges) take loads that
        // test no mask: the tests for each half of each pair were a third of the time.
        if pairs.0 == WHOLE_PAIR && (kw == 2 || pairs.1 == WHOLE_PAIR) {
            strip_maxima::<true>(&strip, rows, outputs, out);
        } else {
            strip_maxima::<false>(&strip, rows, outputs, out);
        }
    }
}

/// A pair of loads wholly inside the row: all sixteen bits of [`pair_inside`].
const WHOLE_PAIR: u32 = (1 << 16) - 1;

/// One strip of eight output columns: the plane (`w` wide), the strip's first window column
/// `c0`, which values of its two pairs of loads lie in the row, and the window's width.
struct Strip<'a> {
    plane: &'a [f32],
    w: usize,
    c0: isize,
    pairs: (u32, u32),
    kw: usize,
}

/// The outputs `x..x + lanes` of every output row of `strip`, into `out` (`ow` wide), its
/// loads through masks unless `WHOLE` (both pairs wholly in the row).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn strip_maxima<const WHOLE: bool>(
    strip: &Strip<'_>,
    rows: (usize, usize, usize, usize),
    (x, lanes, ow): (usize, usize, usize),
    out: &mut [f32],
) {
    let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
    let store = first_lanes_avx2(lanes);
    let load = |at: *const f32, valid: u32| {
        if WHOLE {
            // SAFETY: both halves lie in the row (`WHOLE`).
            unsafe { (_mm256_loadu_ps(at), _mm256_loadu_ps(at.wrapping_add(LANES))) }
        } else {
            load_pair(at, valid, neg_inf)
        }
    };
    // The window maxima of row `y` for these eight outputs.
    let row_max = |y: usize| {
        let at = strip.plane[y * strip.w..]
            .as_ptr()
            .wrapping_offset(strip.c0);
        let (a, b) = load(at, strip.pairs.0);
        let (even, odd) = (even_lanes(a, b), odd_lanes(a, b));
        let mut m = _mm256_max_ps(odd, neg_inf);
        m = _mm256_max_ps(even, m);
        if strip.kw == 3 {
            let (c, d) = load(at.wrapping_offset(2), strip.pairs.1);
            m = _mm256_max_ps(even_lanes(c, d), m);
        }
        m
    };
    let max = |r, m| _mm256_max_ps(r, m);
    super::window_max::strip_of_windows(rows, row_max, max, |oy, m| {
        let m = in_order(m);
        let at = out[oy * ow + x..].as_mut_ptr();
        // SAFETY: the stored lanes are outputs `x..ow` of row `oy`, inside `out`.
        unsafe {
            if lanes == LANES {
                _mm256_storeu_ps(at, m)
            } else {
                _mm256_maskstore_ps(at, store, m)
            }
        }
    });
}

/// Sixteen values from `at`: those whose bit is set in `valid` (bit `j` for value `j`), −∞
/// for the others, which are not read.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load_pair(at: *const f32, valid: u32, neg_inf: __m256) -> (__m256, __m256) {
    let half = |at: *const f32, bits: u8| {
        // SAFETY: only the lanes whose bit is set are read, and the caller's `valid` holds
        // the columns of the row (a whole half is all of them).
        unsafe {
            if bits == u8::MAX {
                _mm256_loadu_ps(at)
            } else {
                let mask = lane_mask(bits);
                _mm256_blendv_ps(
                    neg_inf,
                    _mm256_maskload_ps(at, mask),
                    _mm256_castsi256_ps(mask),
                )
            }
        }
    };
    (
        half(at, valid as u8),
        half(at.wrapping_add(LANES), (valid >> 8) as u8),
    )
}

/// The values `j < 16` of a pair of loads from column `c` with `0 ≤ c + j < w`, as bits.
fn pair_inside(c: isize, w: usize) -> u32 {
    let below = (-c).clamp(0, 16) as u32;
    let end = (w as isize - c).clamp(0, 16) as u32;
    low_bits(end) & !low_bits(below)
}

/// The lowest `n` bits set, `n ≤ 16`.
fn low_bits(n: u32) -> u32 {
    (1 << n) - 1
}
