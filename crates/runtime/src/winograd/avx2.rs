//! The input and output transforms of F(4×4, 3×3) on AVX2 with FMA, eight tiles of a tile row
//! to a vector: [`super::avx512`]'s transforms on 256-bit vectors.
//!
//! A tile row's input is six padded rows; tile `t` reads columns `4t..4t + 6` of each. The
//! transform runs down the columns first, on contiguous vectors of each row, then along each
//! transformed row. There the first four columns of eight tiles are loaded as halves, tiles
//! `t` and `t + 4` in one vector, and a 4×4 transpose within each 128-bit half puts column `j`
//! of the eight tiles in vector `j`; the fifth and sixth columns are the first and second
//! shifted by one tile. The output transform runs the same way back: the eight tiles' 4×4
//! outputs are computed in registers, and the same transpose turns the four output columns
//! into each tile's four values, stored a half at a time.

use super::columns::{Lanes, input_1d, output_1d};
use super::{ALPHA, TILE};
use crate::kernels::transpose8::transpose_halves;
use crate::kernels::{Activation, activate_avx2, first_lanes_avx2 as first_lanes};
use std::arch::x86_64::*;

const LANES: usize = 8;

impl Lanes for __m256 {
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY (every method): the CPU has the instruction set (the trait's contract).
        unsafe { _mm256_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        unsafe { _mm256_add_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        unsafe { _mm256_sub_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn mul(self, other: Self) -> Self {
        unsafe { _mm256_mul_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn neg_mul_add(a: Self, b: Self, c: Self) -> Self {
        unsafe { _mm256_fnmadd_ps(a, b, c) }
    }
}

/// Columns `4t + j` (`j < 4`, `t < 8`) of the 32 values from `row`, one vector per `j`.
///
/// # Safety
/// AVX2 and FMA; `row` holds 32 values.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn deinterleave(row: *const f32) -> [__m256; 4] {
    // SAFETY: tile `t`'s four values are at `row + 4t`, `t < 8`.
    let tiles = std::array::from_fn(|t| unsafe {
        _mm256_loadu2_m128(row.add(4 * (t + 4)), row.add(4 * t))
    });
    transpose_halves(tiles)
}

/// `[v[1..8], next]`: a vector of tiles shifted by one tile.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn shifted(v: __m256, next: f32) -> __m256 {
    let rotated = _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0));
    _mm256_blend_ps::<0x80>(rotated, _mm256_set1_ps(next))
}

/// The transformed input of one tile row of one channel: `rows` holds the six padded input
/// rows `width` apart (tile `t` reads columns `4t..4t + 6`), `columns` is scratch of the same
/// size, and position `p` of tile `t` goes to `v[p·position_stride + t]` for `t < tiles`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `rows` and `columns` hold `6·width` values, `width` is a multiple
/// of 8 and at least `4·⌈tiles/8⌉·8 + 8`; `v` is valid for writes at `p·position_stride + t`
/// for every `p < 36` and `t < tiles`, which nothing else accesses meanwhile.
#[target_feature(enable = "avx2,fma")]
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
        // SAFETY: `x + 8 ≤ width` (the bound above), so every access is inside row `i`.
        unsafe {
            let d = std::array::from_fn(|i| _mm256_loadu_ps(r.add(i * width + x)));
            for (i, e) in input_1d(d).into_iter().enumerate() {
                _mm256_storeu_ps(c.add(i * width + x), e);
            }
        }
    }
    // Along the transformed rows, eight tiles at a time.
    for t0 in (0..tiles).step_by(LANES) {
        let count = tiles - t0;
        let mask = first_lanes(count);
        for i in 0..ALPHA {
            // SAFETY: columns `4·t0..4·t0 + 34` of row `i` are inside it (the bound above);
            // the stores are masked to tiles `< tiles`.
            unsafe {
                let row = c.add(i * width + 4 * t0);
                let [p0, p1, p2, p3] = deinterleave(row);
                let p4 = shifted(p0, *row.add(4 * LANES));
                let p5 = shifted(p1, *row.add(4 * LANES + 1));
                let transformed = input_1d([p0, p1, p2, p3, p4, p5]);
                for (j, value) in transformed.into_iter().enumerate() {
                    let at = v.add((i * ALPHA + j) * position_stride + t0);
                    if count >= LANES {
                        _mm256_storeu_ps(at, value);
                    } else {
                        _mm256_maskstore_ps(at, mask, value);
                    }
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
/// The CPU has AVX2 and FMA; `m` is valid for reads at `p·position_stride + t` for `p < 36`
/// and `t < tiles`; `out` for writes of `ow` values at `r·out_stride` for `r < rows`, which
/// nothing else accesses meanwhile; `ow ≤ 4·tiles`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn output_row(
    m: *const f32,
    position_stride: usize,
    tiles: usize,
    (out, out_stride, rows, ow): (*mut f32, usize, usize, usize),
    bias: f32,
    activation: Activation,
) {
    debug_assert!(rows <= TILE && ow <= TILE * tiles);
    let bias = _mm256_set1_ps(bias);
    for t0 in (0..tiles).step_by(LANES) {
        let count = tiles - t0;
        let mask = first_lanes(count);
        // Down the columns of the 6×6 products, then along each of the four rows.
        let columns: [[__m256; TILE]; ALPHA] = std::array::from_fn(|j| {
            // SAFETY: positions `i·6 + j < 36` of tiles `t0..` under the mask, in `m`.
            let column = std::array::from_fn(|i| unsafe {
                let at = m.add((i * ALPHA + j) * position_stride + t0);
                if count >= LANES {
                    _mm256_loadu_ps(at)
                } else {
                    _mm256_maskload_ps(at, mask)
                }
            });
            // SAFETY: the CPU has the instruction set (this function's contract).
            unsafe { output_1d(column) }
        });
        let down: [[__m256; ALPHA]; TILE] = std::array::from_fn(|r| columns.map(|c| c[r]));
        let first_column = TILE * t0;
        for (r, row) in down.iter().enumerate().take(rows) {
            // SAFETY: as above.
            let values = unsafe { output_1d(*row) }
                .map(|y| activate_avx2(_mm256_add_ps(y, bias), activation));
            // Vector `q` holds tile `q`'s four values in its low half, tile `q + 4`'s in its
            // high half.
            let tiles_of = transpose_halves(values);
            for t in 0..LANES.min(count) {
                let x = first_column + TILE * t;
                if x >= ow {
                    break;
                }
                let quad = if t < 4 {
                    _mm256_castps256_ps128(tiles_of[t])
                } else {
                    _mm256_extractf128_ps::<1>(tiles_of[t - 4])
                };
                // SAFETY: the lanes stored are columns `x..ow` (at most four) of output row
                // `r`.
                unsafe {
                    let at = out.add(r * out_stride + x);
                    if ow - x >= TILE {
                        _mm_storeu_ps(at, quad);
                    } else {
                        let lanes = _mm256_castsi256_si128(first_lanes(ow - x));
                        _mm_maskstore_ps(at, lanes, quad);
                    }
                }
            }
        }
    }
}
