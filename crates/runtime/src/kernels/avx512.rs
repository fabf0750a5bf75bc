//! The dense product's register tile on AVX-512 ([`super::tiled`] blocks over it): each tile
//! of [`ROWS`] output rows × up to three 16-lane vectors of columns is held in 24 of the 32
//! vector registers; each step of the depth broadcasts one weight per row and loads the
//! right-hand side's vectors once for all the rows, so a step is 24 fused multiply-adds against
//! 11 loads, which the two load ports keep up with. Columns past a multiple of 16 are loaded
//! and stored under a lane mask, so any pixel count runs without a scalar edge.

use super::Activation;
use super::tiled::{Depth, RhsRows, TileRhs, Tiles};
use std::arch::x86_64::*;

/// Output rows per tile: one broadcast weight each per step of the depth.
const ROWS: usize = 8;
/// The most 16-lane vectors of columns per tile.
const VECTORS: usize = 3;
const LANES: usize = 16;
/// The columns of a tile, and of a panel of the packed right-hand side.
const PANEL: usize = LANES * VECTORS;

/// Whether the product runs on this tile ([`super::own_kernel`]).
pub fn available() -> bool {
    super::own_kernel() == Some(super::OwnKernel::Avx512)
}

/// The AVX-512 tile, for [`super::tiled`].
pub(crate) struct Avx512;

impl Tiles for Avx512 {
    const ROWS: usize = ROWS;
    const PANEL: usize = PANEL;
    const RHS_BLOCK_BYTES: usize = 1 << 20;
    const LANES: usize = LANES;

    unsafe fn pack(
        rhs: &[f32],
        rows_of: (RhsRows<'_>, usize),
        (col, width): (usize, usize),
        steps: usize,
        panels: &mut [f32],
    ) {
        // `panels` may run on past this call's panels (a batch's images pack into one buffer,
        // each image's columns from where the last left off): only `⌈width / PANEL⌉` are ours.
        let count = width.div_ceil(PANEL);
        assert!(
            panels.len() >= count * steps * PANEL,
            "room for every panel"
        );
        for (p, panel) in panels
            .chunks_exact_mut(steps * PANEL)
            .take(count)
            .enumerate()
        {
            let first = p * PANEL;
            let columns = (col + first, PANEL.min(width - first));
            // SAFETY: the CPU has AVX-512F (the caller's contract).
            unsafe { pack(rhs, rows_of, columns, panel) }
        }
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
        // SAFETY: as for the trait's method; the masked loads read the tile's `width` columns
        // whether or not the panel is padded.
        unsafe {
            let rhs = (rhs.at, rhs.stride);
            tile_of(rows, width, w, ahead, depth, rhs, out, out_stride)
        }
    }
}

/// One panel of [`Tiles::pack`]: three masked vector loads and stores per step (a
/// `copy_from_slice` of 48 values was a call to `memmove` per step, 7% of Xception's time).
#[target_feature(enable = "avx512f")]
fn pack(
    rhs: &[f32],
    (rows_of, first_step): (RhsRows<'_>, usize),
    (col, width): (usize, usize),
    panel: &mut [f32],
) {
    let m = masks(width);
    let steps = panel.len() / PANEL;
    assert!(width <= PANEL);
    let (src, dst) = (rhs.as_ptr(), panel.as_mut_ptr());
    for step in 0..steps {
        let from = rows_of.offset(first_step + step) + col;
        assert!(
            from + width <= rhs.len(),
            "a step's columns inside the right-hand side"
        );
        for (v, &mask) in m.iter().enumerate() {
            // SAFETY: the masked lanes are `rhs[from..from + width]` (checked above); the
            // store writes the panel's step, inside it.
            unsafe {
                let x = _mm512_maskz_loadu_ps(mask, src.add(from + v * LANES));
                _mm512_storeu_ps(dst.add(step * PANEL + v * LANES), x);
            }
        }
    }
}

/// The lane masks of `width` columns in [`VECTORS`] vectors.
#[inline(always)]
fn masks(width: usize) -> [__mmask16; VECTORS] {
    std::array::from_fn(|v| first_lanes(width.saturating_sub(v * LANES)))
}

/// One tile, `rows` (1..=[`ROWS`]) by `width` (1..=48) columns, through the instance of
/// [`tile`] for its shape.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn tile_of(
    rows: usize,
    width: usize,
    w: *const f32,
    ahead: (*const f32, usize),
    depth: Depth,
    rhs: (*const f32, usize),
    out: *mut f32,
    out_stride: usize,
) {
    let m = masks(width);
    let vectors = width.div_ceil(LANES);
    macro_rules! by_rows {
        ($v:literal) => {
            // SAFETY: as for the tile.
            unsafe {
                match rows {
                    8 => tile::<8, $v>(w, ahead, depth, rhs, out, out_stride, m),
                    7 => tile::<7, $v>(w, ahead, depth, rhs, out, out_stride, m),
                    6 => tile::<6, $v>(w, ahead, depth, rhs, out, out_stride, m),
                    5 => tile::<5, $v>(w, ahead, depth, rhs, out, out_stride, m),
                    4 => tile::<4, $v>(w, ahead, depth, rhs, out, out_stride, m),
                    3 => tile::<3, $v>(w, ahead, depth, rhs, out, out_stride, m),
                    2 => tile::<2, $v>(w, ahead, depth, rhs, out, out_stride, m),
                    _ => tile::<1, $v>(w, ahead, depth, rhs, out, out_stride, m),
                }
            }
        };
    }
    match vectors {
        3 => by_rows!(3),
        2 => by_rows!(2),
        _ => by_rows!(1),
    }
}

/// `R` output rows × `V` vectors of columns (the lanes in `m`), summed over the whole depth
/// `cols` in registers and stored once. Plain loops, no closures: these are unrolled over the
/// constant `R` and `V` into the registers.
// Indexed loops over the constant bounds are what unroll into the registers.
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const V: usize>(
    w: *const f32,
    (ahead, ahead_rows): (*const f32, usize),
    depth: Depth,
    (rhs, rhs_stride): (*const f32, usize),
    out: *mut f32,
    out_stride: usize,
    m: [__mmask16; VECTORS],
) {
    // SAFETY (whole body): row `r < R` of the weights has `depth.steps` values from
    // `w + r·depth.stride`, and so has row `r < ahead_rows` from `ahead` (only prefetched); with
    // `accumulate` the tile's masked lanes of `out` are read; step `k` reads the masked
    // lanes of `V` vectors at `rhs + k·rhs_stride` (a packed panel's step, or a row of the
    // right-hand side), and the stores write the tile's masked lanes of its rows.
    unsafe {
        let cols = depth.stride;
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        if depth.accumulate {
            for r in 0..R {
                for v in 0..V {
                    acc[r][v] = _mm512_maskz_loadu_ps(m[v], out.add(r * out_stride + v * LANES));
                }
            }
        }
        let mut row = [w; R];
        for (r, p) in row.iter_mut().enumerate() {
            *p = w.add(r * cols);
        }
        let mut b = rhs;
        for k in 0..depth.steps {
            if ahead_rows > 0 && k % LANES == 0 {
                for r in 0..ahead_rows {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.add(r * cols + k) as *const i8);
                }
            }
            let mut x = [_mm512_setzero_ps(); V];
            for v in 0..V {
                x[v] = _mm512_maskz_loadu_ps(m[v], b.add(v * LANES));
            }
            for r in 0..R {
                let a = _mm512_set1_ps(*row[r].add(k));
                for v in 0..V {
                    acc[r][v] = _mm512_fmadd_ps(a, x[v], acc[r][v]);
                }
            }
            b = b.add(rhs_stride);
        }
        // The epilogue, as `kernels::finish_row` computes it: the bias added, then the
        // activation ([`activate`]).
        let finish = depth.finish;
        for r in 0..R {
            if !finish.bias.is_null() {
                let b = _mm512_set1_ps(*finish.bias.add(r));
                for v in 0..V {
                    acc[r][v] = _mm512_add_ps(acc[r][v], b);
                }
            }
            for v in 0..V {
                acc[r][v] = activate(acc[r][v], finish.activation);
            }
            for v in 0..V {
                _mm512_mask_storeu_ps(out.add(r * out_stride + v * LANES), m[v], acc[r][v]);
            }
        }
    }
}

/// The mask of the first `count` lanes: all sixteen from 16 on. The one definition every
/// AVX-512 kernel's edge uses.
#[inline]
pub(crate) fn first_lanes(count: usize) -> __mmask16 {
    ((1u32 << count.min(LANES)) - 1) as __mmask16
}

/// `activation` on sixteen lanes, with the values of `kernels::finish_row`: `max(x, 0)` (0 for
/// NaN, as `f32::max`), or `min(max(x, 0), 6)` keeping NaN and −0 (as `f32::clamp`);
/// `max_ps(a, b)` is `a > b ? a : b`. The one definition every AVX-512 epilogue uses.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn activate(x: __m512, activation: Activation) -> __m512 {
    let zero = _mm512_setzero_ps();
    match activation {
        Activation::None => x,
        Activation::Relu => _mm512_max_ps(x, zero),
        Activation::Relu6 => _mm512_min_ps(_mm512_set1_ps(6.0), _mm512_max_ps(zero, x)),
    }
}
