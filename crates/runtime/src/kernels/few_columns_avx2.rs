//! The last few columns of a dense product on AVX2, computed with eight output rows in a
//! vector's lanes instead of eight columns.
//!
//! The register tiles ([`super::avx2`]) hold columns in their lanes, two vectors to a panel.
//! A product one or two columns wider than a whole number of panels (Xception's 9×9 middle
//! flow, 81 pixels, and MobileNetV2's 7×7 layers, 49) puts its last columns in a tile of their
//! own, which spends a whole vector of multiply-adds per weight on them, and its loads: on the
//! middle flow's 728×728 products that tile cost an eighth of the rest for an eightieth of the
//! result. Here the weights of eight rows are loaded eight steps of the depth at a time and
//! transposed in registers, so that each fused multiply-add serves eight rows of one column.
//!
//! Each output is still one chain of fused multiply-adds over the depth in order, from zero,
//! then the bias and the activation, as in the tiles: the columns taken here get the bits
//! they would get in a tile.

use super::avx2::{activate, first_lanes};
use super::tiled::Depth;
use super::transpose8::{transpose, transpose_halves};
use std::arch::x86_64::*;

const LANES: usize = 8;

/// The most columns [`rows_in_lanes`] takes: a masked vector of the tiles costs the same
/// whatever its lanes hold, while here each column costs its own multiply-adds, on top of the
/// transposes that every column shares. (Three columns would need nine accumulators beside
/// the eight transposed weights and a broadcast, more than the sixteen registers.)
pub(crate) const MOST_COLUMNS: usize = 2;
/// The rows of a call: four of the tiles' six rows, three vectors of eight here, so that a
/// call follows the tiles that have just read the same weights into L1.
pub(crate) const ROWS: usize = 24;
/// Vectors of eight rows summed at once: three independent chains of fused multiply-adds per
/// column against their four cycles of latency.
const BLOCKS: usize = ROWS / LANES;

/// `out[r·out_stride + j] (+)= Σ_k w[r·depth.stride + k] · x[j·x_stride + k]` over
/// `depth.steps` steps, for `skip ≤ r < rows` (`rows` from 8 to [`ROWS`]) and `j < width` (at
/// most [`MOST_COLUMNS`]), continuing from what `out` holds with `depth.accumulate`, then
/// `depth.finish` (that of row 0): a tile's contract, with the right-hand side's columns one
/// after another. The first `skip` rows are summed but neither read nor written: a caller
/// with fewer than eight rows left moves the call back over rows it has done, so that every
/// vector of rows is whole.
///
/// # Safety
/// The CPU has AVX2 and FMA; row `r < rows` of the weights has `depth.steps` values from
/// `w + r·depth.stride`; column `j < width` has as many from `x + j·x_stride`; `out` is valid
/// for reads and writes at `r·out_stride + j` for `skip ≤ r < rows`, which nothing else
/// accesses meanwhile; the finish's bias, where not null, holds `rows` values.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn rows_in_lanes(
    (skip, rows): (usize, usize),
    w: *const f32,
    depth: Depth,
    (x, x_stride): (*const f32, usize),
    width: usize,
    out: *mut f32,
    out_stride: usize,
) {
    assert!((LANES..=ROWS).contains(&rows) && skip < rows);
    assert!((1..=MOST_COLUMNS).contains(&width));
    if depth.steps == 0 {
        return;
    }
    let o = Operands {
        skip,
        rows,
        w,
        depth,
        x,
        x_stride,
        out,
        out_stride,
    };
    // SAFETY: as for this function.
    unsafe {
        match width {
            1 => rows_block::<1>(&o),
            _ => rows_block::<2>(&o),
        }
    }
}

/// What [`rows_in_lanes`] reads and writes.
struct Operands {
    skip: usize,
    rows: usize,
    w: *const f32,
    depth: Depth,
    x: *const f32,
    x_stride: usize,
    out: *mut f32,
    out_stride: usize,
}

/// The call's rows × `T` columns: [`BLOCKS`] vectors of eight rows per column summed in
/// registers, then finished and stored lane by lane. Vector `b` holds rows `8b..8b + 8`, or
/// the last eight rows where those run past them; a lane stores its row only if no vector
/// before it holds the row and the row is not skipped.
///
/// The weights are transposed in registers eight steps at a time and summed at once. (Storing
/// each chunk's transpose to a buffer first, and summing from there with plain loads, was
/// slower: 0.101 against 0.064 ms for the last of 81 columns of a 728×728 product.)
///
/// # Safety
/// As for [`rows_in_lanes`], with `T` its width.
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_block<const T: usize>(o: &Operands) {
    let Depth {
        stride,
        steps,
        accumulate,
        finish,
    } = o.depth;
    let first: [usize; BLOCKS] = std::array::from_fn(|b| (b * LANES).min(o.rows - LANES));
    // The rows each vector stores: from the first that no earlier vector holds and that is
    // not skipped, to its end.
    let kept = |b: usize| (b * LANES).max(o.skip).max(first[b])..first[b] + LANES;
    // SAFETY (whole body): vector `b`'s rows `first[b] + i` (`i < 8`) are below `o.rows`, so
    // each holds `steps` weights from `o.w + (first[b] + i)·stride`; column `j < T` holds
    // `steps` values from `o.x + j·o.x_stride`; the loads at a step `k0` read steps
    // `k0..k0 + 8` of a row, masked past `steps`; `out` and the bias are read and written at
    // the kept rows only.
    unsafe {
        // One pointer per vector of rows, its rows at multiples of the stride.
        let base: [*const f32; BLOCKS] = std::array::from_fn(|b| o.w.add(first[b] * stride));
        let mut acc = [[_mm256_setzero_ps(); T]; BLOCKS];
        if accumulate {
            for b in 0..BLOCKS {
                for j in 0..T {
                    let mut sums = [0f32; LANES];
                    for r in kept(b) {
                        sums[r - first[b]] = *o.out.add(r * o.out_stride + j);
                    }
                    acc[b][j] = _mm256_loadu_ps(sums.as_ptr());
                }
            }
        }
        let x = |j: usize, k: usize| o.x.add(j * o.x_stride + k);
        let whole = steps - steps % LANES;
        for k0 in (0..whole).step_by(LANES) {
            for b in 0..BLOCKS {
                let low = steps_of(base[b].add(k0), stride);
                let high = steps_of(base[b].add(k0 + 4), stride);
                for m in 0..4 {
                    for j in 0..T {
                        let v = _mm256_broadcast_ss(&*x(j, k0 + m));
                        acc[b][j] = _mm256_fmadd_ps(low[m], v, acc[b][j]);
                    }
                }
                for m in 0..4 {
                    for j in 0..T {
                        let v = _mm256_broadcast_ss(&*x(j, k0 + 4 + m));
                        acc[b][j] = _mm256_fmadd_ps(high[m], v, acc[b][j]);
                    }
                }
            }
        }
        if whole < steps {
            let mask = first_lanes(steps - whole);
            for b in 0..BLOCKS {
                let mut rows = [_mm256_setzero_ps(); LANES];
                for (i, r) in rows.iter_mut().enumerate() {
                    *r = _mm256_maskload_ps(base[b].add(i * stride + whole), mask);
                }
                for (m, step) in transpose(rows).iter().enumerate().take(steps - whole) {
                    for j in 0..T {
                        let v = _mm256_broadcast_ss(&*x(j, whole + m));
                        acc[b][j] = _mm256_fmadd_ps(*step, v, acc[b][j]);
                    }
                }
            }
        }
        // The tiles' epilogue: the bias added, then the activation.
        for b in 0..BLOCKS {
            let bias = (!finish.bias.is_null()).then(|| {
                let mut values = [0f32; LANES];
                for r in kept(b) {
                    values[r - first[b]] = *finish.bias.add(r);
                }
                _mm256_loadu_ps(values.as_ptr())
            });
            for j in 0..T {
                let mut sums = acc[b][j];
                if let Some(bias) = bias {
                    sums = _mm256_add_ps(sums, bias);
                }
                let mut values = [0f32; LANES];
                _mm256_storeu_ps(values.as_mut_ptr(), activate(sums, finish.activation));
                for r in kept(b) {
                    *o.out.add(r * o.out_stride + j) = values[r - first[b]];
                }
            }
        }
    }
}

/// Steps `m < 4` from `at` of eight weight rows `stride` apart, step `m` in vector `m`: rows
/// `i` and `i + 4` loaded into one vector's halves, then a 4×4 transpose inside each half.
///
/// # Safety
/// AVX2 and FMA; each of the eight rows holds four values from `at + i·stride`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn steps_of(at: *const f32, stride: usize) -> [__m256; 4] {
    let mut pairs = [_mm256_setzero_ps(); 4];
    for (i, pair) in pairs.iter_mut().enumerate() {
        // SAFETY: as for this function.
        *pair = unsafe { _mm256_loadu2_m128(at.add((i + 4) * stride), at.add(i * stride)) };
    }
    transpose_halves(pairs)
}
