//! Window maxima along a row at stride 2, on AVX-512: the first pass of a strided max pooling
//! (`ops::pool::max_pool_plane`). Output `i` is the maximum of `row[2i .. 2i + k]`; sixteen outputs
//! at a time, each tap `t` loading the 32 values from `2i + t` and keeping their even lanes (one
//! cross-lane permute). The portable pass split every row into its even and odd columns with scalar
//! copies first, and Xception's four 3×3/2 poolings took 2.8 ms of a 38 ms pass against
//! onnxruntime's 0.35 ms.
//!
//! `_mm512_max_ps(x, m)` returns `m` where `x` is NaN, as `f32::max` does, and the running
//! maximum starts at −∞, never NaN: the values are those of the portable pass.

use std::arch::x86_64::*;

const LANES: usize = 16;

/// Whether [`rows_maxima_stride2`] can run: the CPU has AVX-512F. Read once.
pub fn available() -> bool {
    crate::cpu::avx512f()
}

/// The most window columns [`rows_maxima_stride2`] takes.
pub const MAX_TAPS: usize = 8;

/// For each row of `rows` (`w` wide), `out[i] = max(row[2i − pad], …, row[2i − pad + k −
/// 1])` over the columns inside the row, −∞ for a window wholly outside it, for every `i <
/// ow`; `out` holds the rows' maxima one after another, `ow` apart. The rows are read in place
/// under lane masks: copying each row between −∞ columns first was a call to `memmove` per row,
/// and on the small planes of Xception's later poolings (18 and 10 wide) the calls cost more
/// than the maxima. Every row has the same masks, so they are worked out once per vector of
/// outputs, for all the rows: per row and tap, they took more of the pass than the maxima.
///
/// # Safety
/// The CPU has AVX-512F ([`available`]).
#[target_feature(enable = "avx512f")]
pub unsafe fn rows_maxima_stride2(
    rows: &[f32],
    w: usize,
    (pad, k): (usize, usize),
    out: &mut [f32],
    ow: usize,
) {
    assert!(k <= MAX_TAPS, "at most MAX_TAPS columns");
    let (w, ow) = (w.max(1), ow.max(1));
    let count = (rows.len() / w).min(out.len() / ow);
    // Lanes 0, 2, …, 30 of the pair (lo, hi): the even positions of 32 values.
    let evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
    for first in (0..ow).step_by(LANES) {
        let lanes = LANES.min(ow - first);
        // Tap `t` reads the 32 columns from `c0[t]`; lane `j` is loaded where `0 ≤ c0 + j <
        // w`, the lanes in `valid[t]`.
        let mut c0 = [0isize; MAX_TAPS];
        let mut valid = [0u32; MAX_TAPS];
        for tap in 0..k {
            let c = (2 * first + tap) as isize - pad as isize;
            c0[tap] = c;
            valid[tap] = pair_inside(c, w);
        }
        let store = low_bits(lanes as u32) as __mmask16;
        for r in 0..count {
            let row = rows[r * w..].as_ptr();
            let mut m = neg_inf;
            for tap in 0..k {
                let at = row.wrapping_offset(c0[tap]);
                // SAFETY: only the lanes in `valid` are read, and each is a column of row `r`.
                let (lo, hi) = unsafe {
                    (
                        _mm512_mask_loadu_ps(neg_inf, valid[tap] as __mmask16, at),
                        _mm512_mask_loadu_ps(
                            neg_inf,
                            (valid[tap] >> 16) as __mmask16,
                            at.wrapping_add(LANES),
                        ),
                    )
                };
                let x = _mm512_permutex2var_ps(lo, evens, hi);
                m = _mm512_max_ps(x, m);
            }
            // SAFETY: the masked lanes are `out[r·ow + first..][..lanes]`, inside `out`.
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(r * ow + first), store, m) };
        }
    }
}

/// Whether [`plane_max`] takes a window `kw` columns wide on this CPU: AVX-512F, or AVX2
/// (`window_max_avx2`).
pub fn plane_max_fits(kw: usize) -> bool {
    matches!(kw, 2 | 3) && (available() || super::window_max_avx2::available())
}

/// [`plane_max_stride2`] on AVX-512F, or its AVX2 twin where the CPU has only that.
///
/// Panics where [`plane_max_fits`] is false for the window, or the planes are too short.
pub fn plane_max(
    plane: &[f32],
    input: (usize, usize),
    window: ((usize, usize), (usize, usize)),
    out: &mut [f32],
    output: (usize, usize),
) {
    assert!(
        plane_max_fits(window.1.1),
        "a window this CPU's kernels take"
    );
    if available() {
        // SAFETY: the CPU has AVX-512F.
        unsafe { plane_max_stride2(plane, input, window, out, output) }
    } else {
        // SAFETY: the CPU has AVX2 (`plane_max_fits`).
        unsafe { super::window_max_avx2::plane_max_stride2(plane, input, window, out, output) }
    }
}

/// Max pooling of one `h × w` plane at stride 2 in both directions, with a window 2 or 3
/// columns wide, into `out` (`oh × ow`): sixteen outputs of a row at a time, in one pass.
/// `window` is the padding above and left and the window's size. No window may be empty
/// (padding narrower than the window): the portable pass gives those 0.
///
/// Each input row's window maxima take two loads (32 columns from the window's first
/// column), whose even lanes are the first tap and odd lanes the second, and for a 3-wide
/// window two more from two columns on, whose even lanes are the third. A row is computed
/// once: at stride 2 an output row's last input row is the next one's first, and is kept.
/// The two-pass kernel ([`rows_maxima_stride2`], then the output rows from a buffer) took
/// 0.11 ms on Xception's last pooling (1,024 planes of 9×9), mostly on the loads of six
/// runs a row and on output rows shorter than a vector.
///
/// # Safety
/// The CPU has AVX-512F ([`available`]).
#[target_feature(enable = "avx512f")]
pub unsafe fn plane_max_stride2(
    plane: &[f32],
    (h, w): (usize, usize),
    ((top, left), (kh, kw)): ((usize, usize), (usize, usize)),
    out: &mut [f32],
    (oh, ow): (usize, usize),
) {
    assert!(plane.len() >= h * w && out.len() >= oh * ow, "whole planes");
    assert!(matches!(kw, 2 | 3), "a window 2 or 3 wide");
    let evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    let odds = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
    for x in (0..ow).step_by(LANES) {
        // The pairs of loads from columns `c0` and `c0 + 2`; lane `j` of a pair is loaded
        // where its column is in the row.
        let c0 = (2 * x) as isize - left as isize;
        let (first_pair, second_pair) = (pair_inside(c0, w), pair_inside(c0 + 2, w));
        let store = low_bits((ow - x).min(LANES) as u32) as __mmask16;
        // The window maxima of row `y` for these sixteen outputs.
        let row_max = |y: usize| {
            let at = plane[y * w..].as_ptr().wrapping_offset(c0);
            // SAFETY: only lanes in a pair's mask are read, and each is a column of row `y`.
            let pair = |at: *const f32, valid: u32| unsafe {
                (
                    _mm512_mask_loadu_ps(neg_inf, valid as __mmask16, at),
                    _mm512_mask_loadu_ps(neg_inf, (valid >> 16) as __mmask16, at.wrapping_add(16)),
                )
            };
            let (a, b) = pair(at, first_pair);
            let mut m = _mm512_max_ps(_mm512_permutex2var_ps(a, odds, b), neg_inf);
            m = _mm512_max_ps(_mm512_permutex2var_ps(a, evens, b), m);
            if kw == 3 {
                let (c, d) = pair(at.wrapping_offset(2), second_pair);
                m = _mm512_max_ps(_mm512_permutex2var_ps(c, evens, d), m);
            }
            m
        };
        let max = |r, m| _mm512_max_ps(r, m);
        strip_of_windows((h, top, kh, oh), row_max, max, |oy, m| {
            // SAFETY: the masked lanes are outputs `x..ow` of row `oy`, inside `out`.
            unsafe { _mm512_mask_storeu_ps(out[oy * ow + x..].as_mut_ptr(), store, m) }
        });
    }
}

/// The output rows of one strip of columns at stride 2: each output row's window maximum,
/// `max` over `row_max(y)` of its input rows `y` (`h` rows, `top` of padding above, a window
/// `kh` high), handed to `store(oy, maximum)`. A window 3 high starts on the last row of the
/// one before, whose maxima are kept rather than taken again. The row maxima are never NaN,
/// so the order they are combined in does not matter. The driver of this kernel and of its
/// AVX2 twin ([`super::window_max_avx2`]), each with its own vectors.
#[inline(always)]
pub(super) fn strip_of_windows<V: Copy>(
    (h, top, kh, oh): (usize, usize, usize, usize),
    mut row_max: impl FnMut(usize) -> V,
    max: impl Fn(V, V) -> V,
    mut store: impl FnMut(usize, V),
) {
    let mut kept: Option<(usize, V)> = None;
    for oy in 0..oh {
        let first = (2 * oy).saturating_sub(top);
        let last = (2 * oy + kh).saturating_sub(top).min(h);
        assert!(first < last, "no empty window");
        let mut m = match kept {
            Some((y, m)) if y == first => m,
            _ => row_max(first),
        };
        for y in first + 1..last {
            let r = row_max(y);
            m = max(r, m);
            kept = Some((y, r));
        }
        if last == first + 1 {
            kept = None;
        }
        store(oy, m);
    }
}

/// The lanes `j` of a pair of loads (32 values) from column `c` with `0 ≤ c + j < w`.
fn pair_inside(c: isize, w: usize) -> u32 {
    let below = (-c).clamp(0, 32) as u32;
    let end = (w as isize - c).clamp(0, 32) as u32;
    low_bits(end) & !low_bits(below)
}

/// The lowest `n` bits set, `n ≤ 32`.
#[inline(always)]
fn low_bits(n: u32) -> u32 {
    if n >= 32 { u32::MAX } else { (1 << n) - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxima_match_whole_windows_for_every_width_and_window() {
        if !available() {
            return;
        }
        for w in [1, 2, 5, 10, 18, 31, 32, 33, 72, 150] {
            for k in 1..=4 {
                for pad in 0..k {
                    // Distinct values in no order, a NaN among them (skipped like f32::max).
                    let mut row: Vec<f32> =
                        (0..w).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
                    row[w / 2] = f32::NAN;
                    let out_len = (w + 2 * pad).saturating_sub(k) / 2 + 1;
                    let mut out = vec![0.0; out_len];
                    // SAFETY: the CPU has AVX-512F (checked above).
                    unsafe { rows_maxima_stride2(&row, w, (pad, k), &mut out, out_len) };
                    for (i, &o) in out.iter().enumerate() {
                        let want = (0..k)
                            .filter_map(|t| (2 * i + t).checked_sub(pad))
                            .filter_map(|c| row.get(c))
                            .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                        assert_eq!(
                            o.to_bits(),
                            want.to_bits(),
                            "w {w}, k {k}, pad {pad}, i {i}"
                        );
                    }
                }
            }
        }
    }
}
