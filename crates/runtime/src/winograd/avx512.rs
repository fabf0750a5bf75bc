//! The input and output transforms of F(4×4, 3×3) on AVX-512, sixteen tiles of a tile row to
//! a vector.
//!
//! A tile row's input is six padded rows; tile `t` reads columns `4t..4t + 6` of each. The
//! transform runs down the columns first, on contiguous vectors of each row, then along each
//! transformed row, where the six columns of sixteen tiles come out of four vectors by two
//! rounds of lane permutes (stride 4) and a one-lane shift. The output transform runs the same
//! way back: the sixteen tiles' 4×4 outputs are computed in registers and interleaved into
//! four vectors of each output row.

use super::columns::{Lanes, input_1d, output_1d};
use super::{ALPHA, TILE};
use crate::kernels::{Activation, activate, first_lanes};
use std::arch::x86_64::*;

const LANES: usize = 16;

impl Lanes for __m512 {
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY (every method): the CPU has the instruction set (the trait's contract).
        unsafe { _mm512_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        unsafe { _mm512_add_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        unsafe { _mm512_sub_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn mul(self, other: Self) -> Self {
        unsafe { _mm512_mul_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn neg_mul_add(a: Self, b: Self, c: Self) -> Self {
        unsafe { _mm512_fnmadd_ps(a, b, c) }
    }
}

/// Lane indices for `_mm512_permutex2var_ps` (0–15 from the first operand, 16–31 from the
/// second).
#[inline]
#[target_feature(enable = "avx512f")]
fn indices(lanes: [i32; LANES]) -> __m512i {
    // SAFETY: sixteen `i32`s are one unaligned 512-bit load.
    unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
}

/// The indices that put the low (high) halves of two vectors side by side.
#[inline]
#[target_feature(enable = "avx512f")]
fn halves() -> (__m512i, __m512i) {
    (
        indices([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]),
        indices([8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31]),
    )
}

/// Columns `4t + j` (`j < 4`, `t < 16`) of the 64 values in `v`, one vector per `j`.
#[inline]
#[target_feature(enable = "avx512f")]
fn deinterleave(v: [__m512; 4]) -> [__m512; 4] {
    // First round: within each pair of vectors, phases 0 and 1 (and 2 and 3) of their eight
    // tiles side by side; second round: each phase's two halves together.
    let even = indices([0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29]);
    let odd = indices([2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31]);
    let (low, high) = halves();
    let ab01 = _mm512_permutex2var_ps(v[0], even, v[1]);
    let ab23 = _mm512_permutex2var_ps(v[0], odd, v[1]);
    let cd01 = _mm512_permutex2var_ps(v[2], even, v[3]);
    let cd23 = _mm512_permutex2var_ps(v[2], odd, v[3]);
    [
        _mm512_permutex2var_ps(ab01, low, cd01),
        _mm512_permutex2var_ps(ab01, high, cd01),
        _mm512_permutex2var_ps(ab23, low, cd23),
        _mm512_permutex2var_ps(ab23, high, cd23),
    ]
}

/// The inverse of [`deinterleave`]: 64 consecutive values from one vector per phase.
#[inline]
#[target_feature(enable = "avx512f")]
fn interleave(p: [__m512; 4]) -> [__m512; 4] {
    let (low, high) = halves();
    // Tiles 0–7 of phases 0 and 1 (2 and 3) side by side, then tiles 8–15.
    let ab01 = _mm512_permutex2var_ps(p[0], low, p[1]);
    let ab23 = _mm512_permutex2var_ps(p[2], low, p[3]);
    let cd01 = _mm512_permutex2var_ps(p[0], high, p[1]);
    let cd23 = _mm512_permutex2var_ps(p[2], high, p[3]);
    // Lane 4t + j of a quarter: phase j of tile t (of its four tiles).
    let first = indices([0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27]);
    let second = indices([4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31]);
    [
        _mm512_permutex2var_ps(ab01, first, ab23),
        _mm512_permutex2var_ps(ab01, second, ab23),
        _mm512_permutex2var_ps(cd01, first, cd23),
        _mm512_permutex2var_ps(cd01, second, cd23),
    ]
}

/// `[v[1..16], next]`: a vector of tiles shifted by one tile.
#[inline]
#[target_feature(enable = "avx512f")]
fn shifted(v: __m512, next: f32) -> __m512 {
    let next = _mm512_castps_si512(_mm512_set1_ps(next));
    _mm512_castsi512_ps(_mm512_alignr_epi32(next, _mm512_castps_si512(v), 1))
}

/// The transformed input of one tile row of one channel: `rows` holds the six padded input
/// rows `width` apart (tile `t` reads columns `4t..4t + 6`), `columns` is scratch of the same
/// size, and position `p` of tile `t` goes to `v[p·position_stride + t]` for `t < tiles`.
///
/// # Safety
/// The CPU has AVX-512F; `rows` and `columns` hold `6·width` values, `width` is a multiple of
/// 16 and at least `4·⌈tiles/16⌉·16 + 16`; `v` is valid for writes at
/// `p·position_stride + t` for every `p < 36` and `t < tiles`, which nothing else accesses
/// meanwhile.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn input_row(
    rows: &[f32],
    columns: &mut [f32],
    width: usize,
    tiles: usize,
    v: *mut f32,
    position_stride: usize,
) {
    debug_assert!(rows.len() >= ALPHA * width && columns.len() >= ALPHA * width);
    debug_assert!(
        width.is_multiple_of(LANES) && width >= 4 * tiles.next_multiple_of(LANES) + LANES
    );
    // Down the columns: contiguous vectors of the six rows.
    let (r, c) = (rows.as_ptr(), columns.as_mut_ptr());
    for x in (0..4 * tiles + 2).step_by(LANES) {
        // SAFETY: `x + 16 ≤ width` (the bound above), so every access is inside row `i`.
        unsafe {
            let d = std::array::from_fn(|i| _mm512_loadu_ps(r.add(i * width + x)));
            for (i, e) in input_1d(d).into_iter().enumerate() {
                _mm512_storeu_ps(c.add(i * width + x), e);
            }
        }
    }
    // Along the transformed rows, sixteen tiles at a time.
    for t0 in (0..tiles).step_by(LANES) {
        let mask = first_lanes(tiles - t0);
        for i in 0..ALPHA {
            // SAFETY: columns `4·t0..4·t0 + 66` of row `i` are inside it (the bound above);
            // the stores are masked to tiles `< tiles`.
            unsafe {
                let row = c.add(i * width + 4 * t0);
                let quarters = std::array::from_fn(|q| _mm512_loadu_ps(row.add(q * LANES)));
                let [p0, p1, p2, p3] = deinterleave(quarters);
                let p4 = shifted(p0, *row.add(4 * LANES));
                let p5 = shifted(p1, *row.add(4 * LANES + 1));
                let transformed = input_1d([p0, p1, p2, p3, p4, p5]);
                for (j, value) in transformed.into_iter().enumerate() {
                    let at = v.add((i * ALPHA + j) * position_stride + t0);
                    _mm512_mask_storeu_ps(at, mask, value);
                }
            }
        }
    }
}

/// One output channel's tile row from its transformed products: position `p` of tile `t` is
/// `m[p·position_stride + t]`; output row `r < rows` (at most 4) of the tile row goes to
/// `out[r·out_stride..][..ow]`, tile `t` to its columns `4t..4t + 4`, plus `bias`, then the
/// activation.
///
/// # Safety
/// The CPU has AVX-512F; `m` is valid for reads at `p·position_stride + t` for `p < 36` and
/// `t < tiles`; `out` for writes of `ow` values at `r·out_stride` for `r < rows`, which nothing
/// else accesses meanwhile; `ow ≤ 4·tiles`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn output_row(
    m: *const f32,
    position_stride: usize,
    tiles: usize,
    (out, out_stride, rows, ow): (*mut f32, usize, usize, usize),
    bias: f32,
    activation: Activation,
) {
    debug_assert!(rows <= TILE && ow <= TILE * tiles);
    let bias = _mm512_set1_ps(bias);
    for t0 in (0..tiles).step_by(LANES) {
        let mask = first_lanes(tiles - t0);
        // Down the columns of the 6×6 products, then along each of the four rows.
        let columns: [[__m512; TILE]; ALPHA] = std::array::from_fn(|j| {
            // SAFETY: positions `i·6 + j < 36` of tiles `t0..` under the mask, in `m`.
            let column = std::array::from_fn(|i| unsafe {
                _mm512_maskz_loadu_ps(mask, m.add((i * ALPHA + j) * position_stride + t0))
            });
            // SAFETY: the CPU has the instruction set (this function's contract).
            unsafe { output_1d(column) }
        });
        let down: [[__m512; ALPHA]; TILE] = std::array::from_fn(|r| columns.map(|c| c[r]));
        let first_column = TILE * t0;
        for (r, row) in down.iter().enumerate().take(rows) {
            // SAFETY: as above.
            let values =
                unsafe { output_1d(*row) }.map(|y| activate(_mm512_add_ps(y, bias), activation));
            for (q, quarter) in interleave(values).into_iter().enumerate() {
                let x = first_column + q * LANES;
                if x >= ow {
                    break;
                }
                // SAFETY: the lanes stored are columns `x..ow` of output row `r`.
                unsafe {
                    let at = out.add(r * out_stride + x);
                    _mm512_mask_storeu_ps(at, first_lanes(ow - x), quarter);
                }
            }
        }
    }
}
