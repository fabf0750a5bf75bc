//! The dense product's register tile on AVX2 with FMA ([`super::tiled`] blocks over it), for
//! the CPUs without AVX-512: AMD before Zen 4, Intel's client cores. A tile holds [`ROWS`]
//! output rows × two 8-lane vectors of columns in 12 of the 16 vector registers, leaving two
//! for the right-hand side's loads and one for the broadcast weight: a step of the depth is 12
//! fused multiply-adds against 2 loads and 6 broadcasts from memory, which two FMA units and
//! the load ports keep up with (BLIS's Haswell tile is the same 6 × 16).
//!
//! AVX2 has no lane masks of its own: `vmaskmovps` takes a vector of them and is slower than a
//! plain move, so the tiles use it only where they must. Packed panels are padded with zeros,
//! so a tile reads them whole and masks only the stores of its last columns; a tile reading the
//! right-hand side in place masks its last vector's loads as well.

use super::Activation;
use super::tiled::{Depth, RhsRows, TileRhs, Tiles};
use std::arch::x86_64::*;

/// Output rows per tile: one broadcast weight each per step of the depth.
const ROWS: usize = 6;
/// The most 8-lane vectors of columns per tile.
const VECTORS: usize = 2;
const LANES: usize = 8;
/// The columns of a tile, and of a panel of the packed right-hand side.
const PANEL: usize = LANES * VECTORS;

// A call for a few columns covers whole tiles of rows.
const _: () = assert!(super::few_columns_avx2::ROWS.is_multiple_of(ROWS));

/// The AVX2 tile, for [`super::tiled`].
pub(crate) struct Avx2;

impl Tiles for Avx2 {
    const ROWS: usize = ROWS;
    const PANEL: usize = PANEL;
    const RHS_BLOCK_BYTES: usize = 256 << 10;
    const LANES: usize = LANES;
    const FEW_COLUMNS: usize = super::few_columns_avx2::MOST_COLUMNS;
    const FEW_ROWS: usize = super::few_columns_avx2::ROWS;

    unsafe fn few_columns(
        rows: (usize, usize),
        w: *const f32,
        depth: Depth,
        x: (*const f32, usize),
        width: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        // SAFETY: as for the trait's method.
        unsafe { super::few_columns_avx2::rows_in_lanes(rows, w, depth, x, width, out, out_stride) }
    }

    unsafe fn pack(
        rhs: &[f32],
        rows_of: (RhsRows<'_>, usize),
        columns: (usize, usize),
        steps: usize,
        panels: &mut [f32],
    ) {
        // SAFETY: the CPU has AVX2 and FMA (the caller's contract).
        unsafe { pack(rhs, rows_of, columns, steps, panels) }
    }

    unsafe fn tile(
        rows: usize,
        width: usize,
        w: *const f32,
        ahead: (*const f32, usize),
        depth: Depth,
        rhs: TileRhs,
        out: *mut f32,
        out_stride: usize,
    ) {
        // SAFETY: as for the trait's method.
        unsafe { tile_of(rows, width, w, ahead, depth, rhs, out, out_stride) }
    }
}

/// [`Tiles::pack`], a step at a time across all the panels: each step's row of the
/// right-hand side is read from its first column to its last, so the prefetchers follow it.
/// (A panel at a time, each step read 64 bytes of a row and moved to the next row: on
/// Xception's 728×728 products over 324 pixels, with the right-hand side no longer in cache as
/// in the model, that took the product from 34 to 24 billion multiply-adds a second.) Two
/// vector moves per panel and step, masked loads at the last columns only.
#[target_feature(enable = "avx2,fma")]
fn pack(
    rhs: &[f32],
    (rows_of, first_step): (RhsRows<'_>, usize),
    (col, width): (usize, usize),
    steps: usize,
    panels: &mut [f32],
) {
    let count = width.div_ceil(PANEL);
    assert!(
        panels.len() >= count * steps * PANEL,
        "room for every panel"
    );
    let last = masks(width - (count - 1) * PANEL);
    let (src, dst) = (rhs.as_ptr(), panels.as_mut_ptr());
    for step in 0..steps {
        let from = rows_of.offset(first_step + step) + col;
        assert!(
            from + width <= rhs.len(),
            "a step's columns inside the right-hand side"
        );
        for p in 0..count {
            let whole = p + 1 < count;
            for (v, &mask) in last.iter().enumerate() {
                let first = p * PANEL + v * LANES;
                // SAFETY: the loads read `rhs[from..from + width]` (checked above), masked in
                // the last panel unless the vector is whole; the store writes step `step` of
                // panel `p`, inside `panels` (checked above).
                unsafe {
                    let at = src.add(from + first);
                    let x = if whole || width >= first + LANES {
                        _mm256_loadu_ps(at)
                    } else {
                        _mm256_maskload_ps(at, mask)
                    };
                    _mm256_storeu_ps(dst.add((p * steps + step) * PANEL + v * LANES), x);
                }
            }
        }
    }
}

/// The lane masks of `width` columns in [`VECTORS`] vectors: all ones in a lane that holds a
/// column (`vmaskmovps` reads each lane's top bit).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn masks(width: usize) -> [__m256i; VECTORS] {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut m = [_mm256_setzero_si256(); VECTORS];
    for (v, mask) in m.iter_mut().enumerate() {
        let count = width.saturating_sub(v * LANES).min(LANES) as i32;
        *mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes);
    }
    m
}

/// One tile through the instance of [`tile`] for its shape: its rows, its vectors, and
/// whether its last vector's loads need a mask.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_of(
    rows: usize,
    width: usize,
    w: *const f32,
    ahead: (*const f32, usize),
    depth: Depth,
    rhs: TileRhs,
    out: *mut f32,
    out_stride: usize,
) {
    let m = masks(width);
    let vectors = width.div_ceil(LANES);
    let partial = !width.is_multiple_of(LANES);
    let rhs_at = (rhs.at, rhs.stride);
    macro_rules! by_rows {
        ($v:literal, $masked:literal) => {
            // SAFETY: as for the tile.
            unsafe {
                match rows {
                    6 => tile::<6, $v, $masked>(w, ahead, depth, rhs_at, out, out_stride, m),
                    5 => tile::<5, $v, $masked>(w, ahead, depth, rhs_at, out, out_stride, m),
                    4 => tile::<4, $v, $masked>(w, ahead, depth, rhs_at, out, out_stride, m),
                    3 => tile::<3, $v, $masked>(w, ahead, depth, rhs_at, out, out_stride, m),
                    2 => tile::<2, $v, $masked>(w, ahead, depth, rhs_at, out, out_stride, m),
                    _ => tile::<1, $v, $masked>(w, ahead, depth, rhs_at, out, out_stride, m),
                }
            }
        };
    }
    match (vectors, partial && !rhs.padded) {
        (2, false) => by_rows!(2, false),
        (2, true) => by_rows!(2, true),
        (_, false) => by_rows!(1, false),
        (_, true) => by_rows!(1, true),
    }
}

/// `R` output rows × `V` vectors of columns, summed over the depth in registers and stored
/// once, the last vector under its mask where the tile is narrower than `V` whole vectors.
/// With `MASKED_LOADS`, the last vector's loads of the right-hand side are masked too. Plain
/// indexed loops over the constant bounds, which unroll into the registers.
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const V: usize, const MASKED_LOADS: bool>(
    w: *const f32,
    (ahead, ahead_rows): (*const f32, usize),
    depth: Depth,
    (rhs, rhs_stride): (*const f32, usize),
    out: *mut f32,
    out_stride: usize,
    m: [__m256i; VECTORS],
) {
    // Whether the last vector holds fewer than eight of the tile's columns (its mask is not
    // all ones): its lanes of `out` are then read and written under the mask.
    let partial = _mm256_movemask_ps(_mm256_castsi256_ps(m[V - 1])) != 0xff;
    // SAFETY (whole body): row `r < R` of the weights has `depth.steps` values from
    // `w + r·depth.stride`, and so has row `r < ahead_rows` from `ahead` (only prefetched); with
    // `accumulate` the tile's lanes of `out` are read; step `k` reads `V` vectors at
    // `rhs + k·rhs_stride` (a padded panel's step, or the tile's columns of a row of the
    // right-hand side, the last under its mask), and the stores write the tile's lanes.
    unsafe {
        let cols = depth.stride;
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        if depth.accumulate {
            for r in 0..R {
                for v in 0..V {
                    let at = out.add(r * out_stride + v * LANES);
                    acc[r][v] = if partial && v == V - 1 {
                        _mm256_maskload_ps(at, m[v])
                    } else {
                        _mm256_loadu_ps(at)
                    };
                }
            }
        }
        let mut row = [w; R];
        for (r, p) in row.iter_mut().enumerate() {
            *p = w.add(r * cols);
        }
        let mut b = rhs;
        // Two loops, so that the tiles that prefetch nothing (all but a block's first panel)
        // test nothing per step: with the test inside, LLVM kept the prefetch address in
        // memory and added to it every step.
        if ahead_rows == 0 {
            for k in 0..depth.steps {
                step::<R, V, MASKED_LOADS>(&mut acc, &row, k, b, &m);
                b = b.add(rhs_stride);
            }
        } else {
            for k in 0..depth.steps {
                if k % 16 == 0 {
                    for r in 0..ahead_rows {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.add(r * cols + k) as *const i8);
                    }
                }
                step::<R, V, MASKED_LOADS>(&mut acc, &row, k, b, &m);
                b = b.add(rhs_stride);
            }
        }
        // The epilogue, as `kernels::finish_row` computes it: the bias added, then the
        // activation. One unrolled copy per kind of epilogue, chosen once: with the choices
        // inside, LLVM kept the sums on the stack and looped over the rows, a tenth of a
        // 64-deep tile's time.
        let at = (out, out_stride);
        let bias = depth.finish.bias;
        match (bias.is_null(), depth.finish.activation) {
            (true, Activation::None) => store::<R, V, NONE, false>(acc, bias, at, m, partial),
            (true, Activation::Relu) => store::<R, V, RELU, false>(acc, bias, at, m, partial),
            (true, Activation::Relu6) => store::<R, V, RELU6, false>(acc, bias, at, m, partial),
            (false, Activation::None) => store::<R, V, NONE, true>(acc, bias, at, m, partial),
            (false, Activation::Relu) => store::<R, V, RELU, true>(acc, bias, at, m, partial),
            (false, Activation::Relu6) => store::<R, V, RELU6, true>(acc, bias, at, m, partial),
        }
    }
}

/// The activations as constants for [`store`].
const NONE: u8 = 0;
const RELU: u8 = 1;
const RELU6: u8 = 2;

/// A tile's sums finished and stored: each row's bias added where `BIAS` (`bias` then points
/// at the tile's first row's), then the activation `ACT`, the last vector under its mask
/// where `partial`. [`activate`]'s values.
///
/// # Safety
/// AVX2; `out` holds the tile's `R` rows, `out_stride` apart, of the lanes `m` lets through;
/// with `BIAS`, `bias` holds `R` values.
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store<const R: usize, const V: usize, const ACT: u8, const BIAS: bool>(
    acc: [[__m256; V]; R],
    bias: *const f32,
    (out, out_stride): (*mut f32, usize),
    m: [__m256i; VECTORS],
    partial: bool,
) {
    // SAFETY: as for this function.
    unsafe {
        let zero = _mm256_setzero_ps();
        let six = _mm256_set1_ps(6.0);
        for r in 0..R {
            let b = if BIAS {
                _mm256_broadcast_ss(&*bias.add(r))
            } else {
                zero
            };
            for v in 0..V {
                let mut x = acc[r][v];
                if BIAS {
                    x = _mm256_add_ps(x, b);
                }
                x = match ACT {
                    RELU => _mm256_max_ps(x, zero),
                    RELU6 => _mm256_min_ps(six, _mm256_max_ps(zero, x)),
                    _ => x,
                };
                let at = out.add(r * out_stride + v * LANES);
                if partial && v == V - 1 {
                    _mm256_maskstore_ps(at, m[v], x);
                } else {
                    _mm256_storeu_ps(at, x);
                }
            }
        }
    }
}

/// One step `k` of the depth: `V` vectors of the right-hand side from `b`, one broadcast
/// weight per row, `R × V` fused multiply-adds.
///
/// # Safety
/// Row `r`'s weights hold step `k`; `b` holds `V` vectors (the last masked with
/// `MASKED_LOADS`).
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn step<const R: usize, const V: usize, const MASKED_LOADS: bool>(
    acc: &mut [[__m256; V]; R],
    row: &[*const f32; R],
    k: usize,
    b: *const f32,
    m: &[__m256i; VECTORS],
) {
    // SAFETY: as for this function.
    unsafe {
        let mut x = [_mm256_setzero_ps(); V];
        for v in 0..V {
            x[v] = if MASKED_LOADS && v == V - 1 {
                _mm256_maskload_ps(b.add(v * LANES), m[v])
            } else {
                _mm256_loadu_ps(b.add(v * LANES))
            };
        }
        for r in 0..R {
            let a = _mm256_broadcast_ss(&*row[r].add(k));
            for v in 0..V {
                acc[r][v] = _mm256_fmadd_ps(a, x[v], acc[r][v]);
            }
        }
    }
}

/// The lanes whose bit is set in `bits` (bit `j` for lane `j`), as a vector mask: all ones in
/// each such lane, zeros elsewhere, as `vmaskmovps` and `vblendvps` read it.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn lane_mask(bits: u8) -> __m256i {
    let select = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let set = _mm256_and_si256(_mm256_set1_epi32(bits as i32), select);
    _mm256_cmpeq_epi32(set, select)
}

/// Every [`lane_mask`], a row of the table per `bits`.
static LANE_MASKS: [[u32; LANES]; 256] = {
    let mut table = [[0; LANES]; 256];
    let mut bits = 0;
    while bits < 256 {
        let mut lane = 0;
        while lane < LANES {
            if bits >> lane & 1 == 1 {
                table[bits][lane] = u32::MAX;
            }
            lane += 1;
        }
        bits += 1;
    }
    table
};

/// [`lane_mask`] as floats, loaded from a table: one load instead of four instructions and
/// a register, for loops that need a mask per vector with their registers full (the AVX2
/// depthwise kernels' edge vectors).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn lane_mask_loaded(bits: u8) -> __m256 {
    // SAFETY: each row of the table is eight u32s, one vector.
    unsafe { _mm256_loadu_ps(LANE_MASKS[bits as usize].as_ptr().cast()) }
}

/// The first `count` lanes (all eight from 8 on), as a vector mask: the AVX2 twin of
/// [`super::first_lanes`].
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn first_lanes(count: usize) -> __m256i {
    lane_mask(((1u32 << count.min(LANES)) - 1) as u8)
}

/// `activation` on eight lanes, with the values of `kernels::finish_row` and of the AVX-512
/// epilogue: `max(x, 0)` (0 for NaN, as `f32::max`), or `min(max(x, 0), 6)` keeping NaN and
/// −0 (as `f32::clamp`); `max_ps(a, b)` is `a > b ? a : b`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn activate(x: __m256, activation: Activation) -> __m256 {
    let zero = _mm256_setzero_ps();
    match activation {
        Activation::None => x,
        Activation::Relu => _mm256_max_ps(x, zero),
        Activation::Relu6 => _mm256_min_ps(_mm256_set1_ps(6.0), _mm256_max_ps(zero, x)),
    }
}
