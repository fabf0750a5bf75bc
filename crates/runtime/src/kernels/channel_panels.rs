//! The dense product with the output channels in the vector lanes, for convolutions whose
//! pixels are too few to fill them.
//!
//! [`super::avx512`] puts an output row's pixels in the lanes: a 9×9 plane is 81 pixels, six
//! 16-lane vectors, 96 lanes computed for 81 kept (84%); 5×5 and 7×7 planes keep 78% and 77%.
//! Xception's middle flow (25 products 728×728 over 9×9) ran at 43 billion multiply-adds a
//! second there against the core's 56. Channels come in multiples of 8 or 16 (728, 1024,
//! 2048), so with the channels in the lanes and up to [`MAX_PIXELS`] pixels broadcast per
//! tile, almost every lane computed is kept.
//!
//! That needs the weights' columns as vectors: [`ChannelPanels`] stores `Wᵀ` in panels of
//! [`PANEL`] output channels, packed once when the model is loaded, in place of the row-major
//! weights. Each output element is still one chain of fused multiply-adds over `k` in order
//! from zero, then the bias, then the activation, and `fma(a, b, c)` does not depend on the
//! order of `a` and `b`: the bits are those of the row-major kernel (tested), whatever the
//! tile or the thread.

/// Output channels per panel: three 16-lane vectors.
pub const PANEL: usize = 48;

/// Weights `[rows, cols]` stored as `Wᵀ` in panels of [`PANEL`] rows: panel `p`, step `k`,
/// lane `j` holds `W[p·PANEL + j, k]`. The last panel is as wide as its rows rounded up to
/// 16 lanes (728 rows: fifteen panels of 48 and one of 16), zeros past its last row.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelPanels {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl ChannelPanels {
    /// `w` (row-major, `rows × cols`) repacked, or `None` where the allocator refuses the
    /// copy (the caller keeps the row-major weights, which compute the same values).
    pub fn pack(w: &[f32], rows: usize, cols: usize) -> Option<ChannelPanels> {
        let mut copy = Vec::new();
        copy.try_reserve_exact(w.len()).ok()?;
        copy.extend_from_slice(w);
        ChannelPanels::pack_in_place(copy, rows, cols).ok()
    }

    /// `w` (row-major, `rows × cols`) repacked in its own buffer, or `w` back where the
    /// allocator refuses the room. Rows `48p..48p + 48` and panel `p` take the same span,
    /// so each panel is transposed through a buffer of one panel and only the last, partial
    /// panel grows the buffer: a copy of the whole matrix, made when every other weight was
    /// loaded, raised Xception's peak by the size of its largest layer (12.6 MB).
    pub fn pack_in_place(
        mut w: Vec<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<ChannelPanels, Vec<f32>> {
        assert_eq!(w.len(), rows * cols, "a row-major matrix");
        let len = Self::spans(rows)
            .map(|(_, width)| width * cols)
            .sum::<usize>();
        let mut panel = Vec::new();
        if w.try_reserve_exact(len - w.len()).is_err()
            || panel.try_reserve_exact(PANEL * cols).is_err()
        {
            return Err(w);
        }
        w.resize(len, 0.0);
        for (first, width) in Self::spans(rows) {
            let count = PANEL.min(rows - first);
            let span = &mut w[first * cols..(first + width) * cols];
            panel.clear();
            panel.extend_from_slice(&span[..count * cols]);
            for (k, step) in span.chunks_exact_mut(width.max(1)).enumerate() {
                for (j, value) in step.iter_mut().enumerate() {
                    *value = if j < count { panel[j * cols + k] } else { 0.0 };
                }
            }
        }
        Ok(ChannelPanels {
            data: w,
            rows,
            cols,
        })
    }

    /// Each panel's first row and width (its lanes per step); a panel starts at value
    /// `first·cols`.
    fn spans(rows: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..rows)
            .step_by(PANEL)
            .map(move |first| (first, PANEL.min((rows - first).next_multiple_of(16))))
    }

    /// The row-major weights back.
    pub fn to_rows(&self) -> Vec<f32> {
        let mut w = vec![0.0; self.rows * self.cols];
        for (first, width) in Self::spans(self.rows) {
            let panel = &self.data[first * self.cols..];
            let rows = w[first * self.cols..].chunks_exact_mut(self.cols.max(1));
            for (j, row) in rows.take(PANEL).enumerate() {
                for (k, value) in row.iter_mut().enumerate() {
                    *value = panel[k * width + j];
                }
            }
        }
        w
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held, padding included.
    pub fn bytes(&self) -> u64 {
        4 * self.data.len() as u64
    }

    /// Row `r` times `scale[r]`.
    pub fn scale_rows(&mut self, scale: &[f32]) {
        for (first, width) in Self::spans(self.rows) {
            let panel = &mut self.data[first * self.cols..(first + width) * self.cols];
            for step in panel.chunks_exact_mut(width.max(1)) {
                for (j, value) in step.iter_mut().enumerate() {
                    if let Some(s) = scale.get(first + j) {
                        *value *= s;
                    }
                }
            }
        }
    }
}

/// Whether a product with `rows` output channels, `cols` deep, over `n` pixels runs faster
/// with the channels in the lanes: they must fill more of the lanes than the pixels do, by
/// 4% plus what the transposed store of each tile costs against its depth (about 8 steps'
/// worth of multiply-adds). So a 9×9 or 7×7 plane qualifies, an 18×18 one (96% either way)
/// does not, nor do MobileNetV2's 64→384 expansions at 14×14 (94% of the lanes kept, 64
/// steps deep), which took 0.147 ms with the channels in the lanes against 0.107.
pub fn channels_fill_more_lanes(rows: usize, cols: usize, n: usize) -> bool {
    let kept = |len: usize| len as f64 / len.next_multiple_of(16).max(1) as f64;
    rows >= 16 && cols > 0 && kept(rows) >= kept(n) + 0.04 + 8.0 / cols as f64
}

#[cfg(target_arch = "x86_64")]
pub(super) use avx512::product;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{ChannelPanels, PANEL};
    use crate::kernels::transpose16::transpose;
    use crate::kernels::{Activation, Epilogue, activate, first_lanes};
    use std::arch::x86_64::*;

    const LANES: usize = 16;
    /// Bytes in a cache line.
    const LINE: usize = 64;

    /// The most pixels per tile: 9 × 3 accumulators, 3 weight vectors and a broadcast fill
    /// 31 of the 32 vector registers.
    const MAX_PIXELS: usize = 9;

    /// `out[r·n + j] = Σ_k W[first_row + r, k] · rhs[k·n + j]`, then `epilogue` (its bias
    /// from row `first_row`), for `r < out.len() / n` and `j < n`.
    ///
    /// The rows may start and end inside a panel, on a vector's boundary: a thread's part
    /// need not be whole panels. Split by whole panels, Xception's 728 channels (15⅙
    /// panels) went to two threads as 384 and 344, so one thread did 5.5% more than half.
    ///
    /// # Safety
    /// The CPU has AVX-512F. The caller checked that `first_row` is a multiple of 16, that
    /// `first_row + out.len() / n ≤ w.rows()`, that `rhs` holds `w.cols() · n` values and the
    /// bias, if any, `out.len() / n`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn product(
        out: &mut [f32],
        w: &ChannelPanels,
        first_row: usize,
        rhs: &[f32],
        n: usize,
        epilogue: Epilogue<'_>,
    ) {
        let rows = out.len() / n;
        // The pixels in tiles as even as the count allows (81: nine of 9; 25: 9, 8, 8), so
        // no tile is left with one or two pixels, whose few multiply-adds per weight loaded
        // would run below the rate of the rest.
        let tiles = n.div_ceil(MAX_PIXELS);
        let (base, longer) = (n / tiles, n % tiles);
        let mut first = 0;
        while first < rows {
            // The panel holding row `first_row + first`, and the lane that row is in.
            let row = first_row + first;
            let (panel_row, lane) = (row / PANEL * PANEL, row % PANEL);
            // A full panel is `PANEL` lanes a step; the matrix's last, its rows rounded up
            // to 16 (`ChannelPanels::spans`).
            let step = PANEL.min((w.rows - panel_row).next_multiple_of(16));
            let channels = (step - lane).min(rows - first);
            let panel = w.data[panel_row * w.cols + lane..].as_ptr();
            let bias = epilogue
                .bias
                .map_or(std::ptr::null(), |b| b[first..].as_ptr());
            // The next panel this part reads, fetched into L2 while this one's tiles run,
            // shared among the first half of the tiles, two lines a step: the first tile of
            // a panel otherwise waits on memory for every step (the weights of a whole
            // network do not stay in cache between passes, and one step of a panel, three
            // lines, is 27 multiply-adds). Measured at one thread, against no prefetch:
            // MobileNetV2's 7×7 products 5–13% faster (`Conv_1` 0.481 → 0.424 ms),
            // Xception's 5×5 exit flow 10% (1.895 → 1.704 ms), its 9×9 middle flow level.
            // Spread over every tile at one line a step instead, the 7×7 products were
            // 3–6% slower than this.
            let ahead = if first + channels < rows {
                let next = (panel_row + PANEL) * w.cols;
                let next_step = PANEL.min((w.rows - panel_row - PANEL).next_multiple_of(16));
                &w.data[next..next + next_step * w.cols]
            } else {
                &[]
            };
            let ahead_lines = (4 * ahead.len()).div_ceil(LINE);
            let fetching = tiles.div_ceil(2);
            let mut pixel = 0;
            for t in 0..tiles {
                let width = base + usize::from(t < longer);
                let (from, to) = if t < fetching {
                    (t * ahead_lines / fetching, (t + 1) * ahead_lines / fetching)
                } else {
                    (0, 0)
                };
                let share = (
                    ahead.as_ptr().cast::<i8>().wrapping_add(from * LINE),
                    to - from,
                );
                // SAFETY: the panel holds `w.cols` steps of `step` values, of which the tile
                // reads lanes `lane..lane + channels` (rounded up to whole vectors, at most
                // `step`); the tile's pixels are below `n`, so every step's broadcasts are
                // inside `rhs`; the tile writes `channels` rows of `width` values from
                // `out[first·n + pixel]`, inside `out`; the bias holds `channels` values from
                // `first`.
                unsafe {
                    tile_of(
                        (width, channels),
                        (panel, step, w.cols),
                        share,
                        rhs.as_ptr().add(pixel),
                        n,
                        out.as_mut_ptr().add(first * n + pixel),
                        (bias, epilogue.activation),
                    )
                }
                pixel += width;
            }
            first += channels;
        }
    }

    /// One tile, `pixels` (1..=[`MAX_PIXELS`]) by `channels` (1..=[`PANEL`]), through the
    /// instance of [`tile`] for its shape.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_of(
        (pixels, channels): (usize, usize),
        panel: (*const f32, usize, usize),
        ahead: (*const i8, usize),
        x: *const f32,
        n: usize,
        out: *mut f32,
        finish: (*const f32, Activation),
    ) {
        let (at, step, count) = panel;
        macro_rules! by_pixels {
            ($v:literal) => {
                // SAFETY: as for the tile.
                unsafe {
                    match pixels {
                        9 => tile::<9, $v>((at, step), count, ahead, x, n, out, (channels, finish)),
                        8 => tile::<8, $v>((at, step), count, ahead, x, n, out, (channels, finish)),
                        7 => tile::<7, $v>((at, step), count, ahead, x, n, out, (channels, finish)),
                        6 => tile::<6, $v>((at, step), count, ahead, x, n, out, (channels, finish)),
                        5 => tile::<5, $v>((at, step), count, ahead, x, n, out, (channels, finish)),
                        4 => tile::<4, $v>((at, step), count, ahead, x, n, out, (channels, finish)),
                        3 => tile::<3, $v>((at, step), count, ahead, x, n, out, (channels, finish)),
                        2 => tile::<2, $v>((at, step), count, ahead, x, n, out, (channels, finish)),
                        _ => tile::<1, $v>((at, step), count, ahead, x, n, out, (channels, finish)),
                    }
                }
            };
        }
        match channels.div_ceil(LANES) {
            3 => by_pixels!(3),
            2 => by_pixels!(2),
            _ => by_pixels!(1),
        }
    }

    /// `P` pixels × `V` vectors of channels summed over the whole depth in registers; then
    /// the bias and activation as [`crate::kernels::finish_rows`] computes them, and the
    /// tile written transposed (a pixel's channels are `n` apart in the output), a 16×16
    /// block at a time in registers.
    ///
    /// The tile reads `count` steps of `step` values from `at` (its lanes of each), and
    /// prefetches `ahead_lines` lines of the next panel from `ahead` meanwhile. (With
    /// `at`, `step` and `count` passed in a struct or a triple, which go by reference,
    /// LLVM stored all the accumulators to the stack at every step.)
    // Indexed loops over the constant bounds are what unroll into the registers.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const P: usize, const V: usize>(
        (at, step): (*const f32, usize),
        count: usize,
        (ahead, ahead_lines): (*const i8, usize),
        x: *const f32,
        n: usize,
        out: *mut f32,
        (channels, (bias, activation)): (usize, (*const f32, Activation)),
    ) {
        // SAFETY (whole body): step `k` reads `V` vectors at `at + k·step` and
        // `P` values at `x + k·n` (the `ahead` lines are only prefetched); the bias, if not
        // null, holds `channels` values; the output rows `c < channels` hold `P` values at
        // `out + c·n`.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; P];
            // Two lines fetched a step, any lines beyond two a step at once before. Past its
            // share a tile fetches its last line again (or, with no share, the panel's
            // first), so the loop has no branch; a prefetch of a cached line costs a load slot.
            let (ahead, last) = match ahead_lines {
                0 => (at.cast::<i8>(), 0),
                lines => (ahead, lines - 1),
            };
            for line in 2 * count..ahead_lines {
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(line * LINE));
            }
            let (mut w, mut xk) = (at, x);
            for k in 0..count {
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add((2 * k).min(last) * LINE));
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add((2 * k + 1).min(last) * LINE));
                let mut wv = [_mm512_setzero_ps(); V];
                for v in 0..V {
                    wv[v] = _mm512_loadu_ps(w.add(v * LANES));
                }
                for p in 0..P {
                    let a = _mm512_set1_ps(*xk.add(p));
                    for v in 0..V {
                        acc[p][v] = _mm512_fmadd_ps(a, wv[v], acc[p][v]);
                    }
                }
                w = w.add(step);
                xk = xk.add(n);
            }
            let zero = _mm512_setzero_ps();
            for v in 0..V {
                let mask = first_lanes(channels.saturating_sub(v * LANES));
                let b = if bias.is_null() {
                    None
                } else {
                    Some(_mm512_maskz_loadu_ps(mask, bias.add(v * LANES)))
                };
                for p in 0..P {
                    if let Some(b) = b {
                        acc[p][v] = _mm512_add_ps(acc[p][v], b);
                    }
                    acc[p][v] = activate(acc[p][v], activation);
                }
            }
            // Each vector of channels as sixteen rows of pixels: transposed in registers,
            // then each channel's `P` pixels stored under a mask. (Through a buffer on the
            // stack, 432 scalar moves a tile, the store cost a quarter of a 64-deep tile.)
            let pixels = first_lanes(P);
            for v in 0..V {
                let mut rows = [zero; LANES];
                for p in 0..P {
                    rows[p] = acc[p][v];
                }
                let columns = transpose(rows);
                let lanes = channels.saturating_sub(v * LANES).min(LANES);
                for (c, column) in columns.iter().enumerate().take(lanes) {
                    _mm512_mask_storeu_ps(out.add((v * LANES + c) * n), pixels, *column);
                }
            }
        }
    }
}
