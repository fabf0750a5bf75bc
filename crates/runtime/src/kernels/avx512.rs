//! The dense product on AVX-512, register-blocked in the layout the convolutions hand it: the
//! weights row-major (one row per output channel), the right-hand side row-major with the
//! pixels along its rows. Each tile of [`ROWS`] output rows × up to three 16-lane vectors of
//! columns is held in 24 of the 32 vector registers; each step of the depth broadcasts one
//! weight per row and loads the right-hand side's vectors once for all the rows, so a step is
//! 24 fused multiply-adds against 11 loads, which the two load ports keep up with. The weights
//! are read where they lie, a row per stream: packing them (as the `gemm` crate does on every
//! call) would copy a matrix that a layer with few pixels only reads a few times.
//!
//! Columns past a multiple of 16 are loaded and stored under a lane mask, so any pixel count
//! runs without a scalar edge. The depth is never split: every output element is a single
//! chain of fused multiply-adds over `k` in order, started from zero, whatever the tile, the
//! number of rows or the thread that computes it. So a split of the rows gives the same bits.

use super::{Activation, Epilogue};
use std::arch::x86_64::*;

/// Output rows per tile: one broadcast weight each per step of the depth.
const ROWS: usize = 8;
/// The most 16-lane vectors of columns per tile.
const VECTORS: usize = 3;
const LANES: usize = 16;
/// The columns of a tile, and of a panel of the packed right-hand side.
const PANEL: usize = LANES * VECTORS;
/// The most steps of the depth a packed panel holds: 256 steps of 48 columns are 48 KiB, and
/// a tile's 8 weight rows over them 8 KiB, so both stay in L1 and L2 while the tiles sweep
/// them. (Without it, VGG16's 4,608-deep products read 884 KiB panels and 147 KiB of weights
/// per tile from L2, and ran 1.9× onnxruntime's time against 1.6× through the `gemm` crate.)
const DEPTH_BLOCK: usize = 256;
/// Products with at most this many rows (four tiles) read the right-hand side in place
/// ([`in_place`]): packing copies the whole right-hand side for few tiles to read it.
/// MobileNetV2's 144→32 projection at 28×28 took 0.069–0.071 ms in place against
/// 0.081–0.088 packed, its 192→32 ones 0.091–0.093 against 0.104–0.117 (one thread), while
/// its 64-row products were level either way.
const IN_PLACE_MOST_ROWS: usize = 32;
/// The most bytes of packed right-hand side swept by every tile of rows.
const RHS_BLOCK_BYTES: usize = 1 << 20;
/// The most bytes of the right-hand side that [`in_place`] sweeps with each tile of rows
/// before the next: what a core's L1 holds (32 KiB on Zen 4), so that the tiles after the
/// first read it from there. A deep product keeps one 48-column strip to a chunk. On
/// MobileNetV2 (one thread, medians of eight alternating profiles), against one strip to a
/// chunk: `Conv1` (27 deep) 0.415 → 0.338 ms, `expanded_conv_project` (32 deep) 0.266 →
/// 0.229, `block_1_project` (96 deep) 0.170 → 0.157, the deeper projections level. 48 and
/// 128 KiB were no better; at two threads 16 and 32 KiB were level.
const IN_PLACE_CHUNK_BYTES: usize = 32 << 10;

/// Whether products run on [`product_strided`]: the CPU has AVX-512F and the environment
/// variable `CXRM_GEMM_CRATE` is not set. Setting it sends every product to the `gemm` crate
/// instead, so that a benchmark can compare the two on a whole model in one run. Read once.
pub fn available() -> bool {
    static CHOSEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::env::var_os("CXRM_GEMM_CRATE").is_none()
    })
}

/// `out[r·out_stride + j] = Σ_k w[r·cols + k] · rhs[k·rhs_stride + j]` for `r < rows` and
/// `j < n` (the contract of [`super::product_strided`], whose callers check the bounds and
/// `cols > 0`), then `epilogue`, applied to the registers of the last depth block before they
/// are stored. The right-hand side's rows are `rhs_stride` apart, so that a thread can take a
/// strip of its columns; the output is a pointer, since the strips other threads write lie
/// between this one's rows.
///
/// # Safety
/// The CPU has AVX-512F; `out` is valid for writes of `n` values at `r·out_stride` for every
/// `r < rows`, which nothing else accesses meanwhile; `w` holds `rows · cols` values, `rhs`
/// `(cols − 1)·rhs_stride + n`, and the epilogue's bias, if any, `rows`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub unsafe fn product_finished(
    out: *mut f32,
    out_stride: usize,
    rows: usize,
    w: &[f32],
    cols: usize,
    (rhs, rhs_stride): (&[f32], usize),
    n: usize,
    epilogue: Epilogue<'_>,
) {
    debug_assert!(w.len() >= rows * cols && rhs.len() >= (cols - 1) * rhs_stride + n);
    if rows <= IN_PLACE_MOST_ROWS {
        // SAFETY: as for this function.
        return unsafe {
            in_place(
                out,
                out_stride,
                rows,
                w,
                cols,
                (rhs, rhs_stride),
                n,
                epilogue,
            )
        };
    }
    // SAFETY: as for this function; row `k` of `rhs` starts at `k·rhs_stride`.
    unsafe {
        let rhs = (rhs, RhsRows::Strided(rhs_stride));
        packed(out, out_stride, rows, w, cols, rhs, n, epilogue)
    }
}

/// Where each step of the depth reads its row of the right-hand side (its `n` columns).
#[derive(Clone, Copy, Debug)]
pub enum RhsRows<'a> {
    /// Step `k` reads row `k` of a row-major matrix `n` wide: from `k·n`.
    Strided(usize),
    /// A stride-1 convolution's windows over zero-padded planes `plane` values apart: step
    /// `k = c·taps.len() + t` (channel `c`, window tap `t`, the weights' column order) reads
    /// from `c·plane + taps[t]`, the plane shifted by the tap. Output column `j` is then the
    /// window at padded position `j`, and the packing of the panels is the im2col.
    Shifted { plane: usize, taps: &'a [usize] },
}

impl RhsRows<'_> {
    /// Where step `k` starts.
    #[inline(always)]
    pub fn offset(&self, k: usize) -> usize {
        match *self {
            RhsRows::Strided(n) => k * n,
            RhsRows::Shifted { plane, taps } => (k / taps.len()) * plane + taps[k % taps.len()],
        }
    }
}

/// The product over packed panels: `out[r·out_stride + j] = Σ_k w[r·cols + k] · rhs[at(k) + j]`,
/// `at` from `rows_of`.
///
/// # Safety
/// The CPU has AVX-512F; `out` and `w` hold what [`product_strided`]'s contract reads and
/// writes, and `rhs` holds `at(k) + n` values for every step `k < cols`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub unsafe fn packed(
    out: *mut f32,
    out_stride: usize,
    rows: usize,
    w: &[f32],
    cols: usize,
    (rhs, rows_of): (&[f32], RhsRows<'_>),
    n: usize,
    epilogue: Epilogue<'_>,
) {
    // Columns in blocks whose packed panels fill half a core's L2 (2 MiB on the Xeons this
    // was tuned on); each tile of rows then sweeps the block's panels, its own weights staying
    // in L1 while the panels come from L2. (Panels outermost, each swept by every tile of
    // rows, was slower where the weights are large and the pixels few: Xception's 728×728
    // middle flow at 9×9 re-read its 2 MiB of weights once per panel, 0.88 against 0.64 ms.)
    let block = (RHS_BLOCK_BYTES / (4 * DEPTH_BLOCK.min(cols)) / PANEL).max(1) * PANEL;
    let block = block.min(n.next_multiple_of(PANEL));
    let depth_block = DEPTH_BLOCK.min(cols);
    // Every panel value is written by `pack` before the tiles read it.
    crate::scratch::with_len(depth_block * block + LANES, |buffer: &mut [f32]| {
        // A 64-byte aligned start, so that no vector load straddles two cache lines.
        let align = buffer.as_ptr().align_offset(64).min(LANES);
        let packed = &mut buffer[align..align + depth_block * block];
        for first_col in (0..n).step_by(block) {
            let block_cols = block.min(n - first_col);
            for first_step in (0..cols).step_by(DEPTH_BLOCK) {
                let steps = DEPTH_BLOCK.min(cols - first_step);
                let last = first_step + steps == cols;
                let depth = Depth {
                    stride: cols,
                    steps,
                    accumulate: first_step > 0,
                    finish: TileFinish::none(),
                };
                let panel_len = depth.steps * PANEL;
                for (p, col) in (first_col..first_col + block_cols)
                    .step_by(PANEL)
                    .enumerate()
                {
                    let width = PANEL.min(first_col + block_cols - col);
                    pack(
                        rhs,
                        (rows_of, first_step),
                        col,
                        width,
                        &mut packed[p * panel_len..(p + 1) * panel_len],
                    );
                }
                for first_row in (0..rows).step_by(ROWS) {
                    let tile_rows = ROWS.min(rows - first_row);
                    // While the block's first panel is computed, the next tile of rows'
                    // weights are fetched into L1: they come from memory or L3 (Xception's
                    // 83 MB of weights do not stay in L2 between passes), a row a stream,
                    // and each row of a 728-deep layer is shorter than a page, too short for
                    // the prefetchers to catch on before it ends.
                    let next = first_row + ROWS;
                    let ahead = ROWS.min(rows.saturating_sub(next));
                    let weights = first_row * cols + first_step;
                    for (p, col) in (first_col..first_col + block_cols)
                        .step_by(PANEL)
                        .enumerate()
                    {
                        let ahead = if p == 0 { ahead } else { 0 };
                        let finish = if last {
                            TileFinish::of(epilogue, first_row)
                        } else {
                            TileFinish::none()
                        };
                        let depth = Depth { finish, ..depth };
                        // SAFETY: the tile's rows are below `rows`, its columns below `n` and
                        // its steps below `cols`, inside the bounds the caller checked; panel
                        // `p` is `depth.steps` steps of `PANEL` values inside `packed`.
                        unsafe {
                            tile_of(
                                tile_rows,
                                PANEL.min(first_col + block_cols - col),
                                w.as_ptr().add(weights),
                                (w.as_ptr().wrapping_add(weights + ROWS * cols), ahead),
                                depth,
                                (packed.as_ptr().add(p * panel_len), PANEL),
                                out.add(first_row * out_stride + col),
                                out_stride,
                            )
                        }
                    }
                }
            }
        }
    })
}

/// How a tile walks the depth: `steps` steps from where its weight pointer starts, the weight
/// rows `stride` apart; with `accumulate`, the sums continue from what the output holds (the
/// earlier steps' sums, stored as the same `f32`s the registers held, so the chain of fused
/// multiply-adds and its bits are those of an unsplit depth).
#[derive(Clone, Copy)]
struct Depth {
    stride: usize,
    steps: usize,
    accumulate: bool,
    /// Applied before the store: set on the last block of the depth only.
    finish: TileFinish,
}

/// An [`Epilogue`] for one tile: its first row's bias (null for none) and the activation.
#[derive(Clone, Copy)]
struct TileFinish {
    bias: *const f32,
    activation: Activation,
}

impl TileFinish {
    fn none() -> TileFinish {
        TileFinish {
            bias: std::ptr::null(),
            activation: Activation::None,
        }
    }

    /// The tile whose first row is `first_row`.
    fn of(epilogue: Epilogue<'_>, first_row: usize) -> TileFinish {
        TileFinish {
            bias: epilogue
                .bias
                .map_or(std::ptr::null(), |b| b[first_row..].as_ptr()),
            activation: epilogue.activation,
        }
    }
}

/// [`product_strided`] with the tiles reading the right-hand side where it lies, `n` apart per
/// step of the depth, under the lane masks: for few rows, packing would copy each value of the
/// right-hand side for as few multiply-adds as the copy costs (MobileNetV2's 16-channel
/// projection at 112×112 took 0.25 ms packed, 0.16 ms through the `gemm` crate).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn in_place(
    out: *mut f32,
    out_stride: usize,
    rows: usize,
    w: &[f32],
    cols: usize,
    (rhs, rhs_stride): (&[f32], usize),
    n: usize,
    epilogue: Epilogue<'_>,
) {
    // The columns in chunks whose right-hand side fits in L1 ([`IN_PLACE_CHUNK_BYTES`]); each
    // tile of rows sweeps a chunk's strips of 48 columns, and the next tile reads the chunk
    // again from L1. With the rows outermost, MobileNetV2's 32→16 projection at 112×112 read
    // its 1.6 MB input from memory once per tile of rows; with one strip to a chunk, the
    // tiles wrote their 16 output rows 192 bytes at a time each, streams too short for the
    // prefetchers: reading the output before the layer (to bring it into cache) made that
    // layer faster, the read included (0.277 → 0.207 ms).
    let chunk = (IN_PLACE_CHUNK_BYTES / (4 * cols) / PANEL).max(1) * PANEL;
    for first_col in (0..n).step_by(chunk) {
        let chunk_end = (first_col + chunk).min(n);
        for first_row in (0..rows).step_by(ROWS) {
            for col in (first_col..chunk_end).step_by(PANEL) {
                // SAFETY: the tile's rows are below `rows` and its columns below `n`, inside
                // the bounds the caller checked; step `k` reads the tile's masked lanes of row
                // `k` of `rhs`.
                unsafe {
                    tile_of(
                        ROWS.min(rows - first_row),
                        PANEL.min(n - col),
                        w.as_ptr().add(first_row * cols),
                        (w.as_ptr(), 0),
                        Depth {
                            stride: cols,
                            steps: cols,
                            accumulate: false,
                            finish: TileFinish::of(epilogue, first_row),
                        },
                        (rhs.as_ptr().add(col), rhs_stride),
                        out.add(first_row * out_stride + col),
                        out_stride,
                    )
                }
            }
        }
    }
}

/// Copies columns `col..col + width` of the right-hand side's rows for steps `first_step..`
/// (one per step of the panel, where `rows_of` says) into a panel of [`PANEL`] columns, its
/// rows one after another, zero past `width`: the tiles then read their steps from
/// consecutive, aligned addresses. (Read in place, each step is a row of the right-hand side
/// further on: a page apart on the wide layers, where neither the prefetchers nor the TLB kept
/// up, and 1.45× slower on Xception's middle flow.)
///
/// Three masked vector loads and stores per step: a `copy_from_slice` of 48 values was a call
/// to `memmove` per step, 7% of Xception's time.
#[target_feature(enable = "avx512f")]
fn pack(
    rhs: &[f32],
    (rows_of, first_step): (RhsRows<'_>, usize),
    col: usize,
    width: usize,
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
