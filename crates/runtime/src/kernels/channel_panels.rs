//! The dense product with the output channels in the vector lanes, for convolutions whose
//! pixels are too few to fill them.
//!
//! [`super::avx512`] puts an output row's pixels in the lanes: a 9×9 plane is 81 pixels, six
//! 16-lane vectors, 96 lanes computed for 81 kept (84%); 5×5 and 7×7 planes keep 78% and 77%.
//! Xception's middle flow (25 products 728×728 over 9×9) ran at 43 billion multiply-adds a
//! second there against the core's 56. Channels come in multiples of 8 or 16 (728, 1024,
//! 2048), so with the channels in the lanes and up to nine pixels broadcast per tile (six on
//! AVX2), almost every lane computed is kept.
//!
//! That needs the weights' columns as vectors: [`ChannelPanels`] stores `Wᵀ` in panels of
//! [`PANEL`] output channels ([`NARROW_PANEL`] on AVX2), packed once when the model is
//! loaded, in place of the row-major weights. Each output element is still one chain of
//! fused multiply-adds over `k` in order from zero, then the bias, then the activation, and
//! `fma(a, b, c)` does not depend on the order of `a` and `b`: the bits are those of the
//! row-major kernel (tested), whatever the tile or the thread.

/// Output channels per panel for the AVX-512 kernel: three 16-lane vectors.
pub const PANEL: usize = 48;
/// Output channels per panel for the AVX2 kernel, which takes 16 channels at a time: each
/// step of a panel is then one cache line, and a tile reads its panel front to back. With
/// 48-channel panels, each tile reading one line of every three-line step, Xception's
/// 2048×1536 product at 5×5 took 3.7–3.8 ms inside the model against 2.4–2.5 row-major.
pub const NARROW_PANEL: usize = 16;

/// Weights `[rows, cols]` stored as `Wᵀ` in panels of `panel` rows (`PANEL`, or
/// `NARROW_PANEL` where the AVX2 kernel reads them): panel `p`, step `k`, lane `j` holds
/// `W[p·panel + j, k]`. The last panel is as wide as its rows rounded up to 16 lanes (728
/// rows in panels of 48: fifteen of 48 and one of 16), zeros past its last row.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelPanels {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    panel: usize,
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
        let panel_rows = panel_for_this_cpu();
        let len = Self::spans(rows, panel_rows)
            .map(|(_, width)| width * cols)
            .sum::<usize>();
        let mut panel = Vec::new();
        if w.try_reserve_exact(len - w.len()).is_err()
            || panel.try_reserve_exact(panel_rows * cols).is_err()
        {
            return Err(w);
        }
        w.resize(len, 0.0);
        for (first, width) in Self::spans(rows, panel_rows) {
            let count = panel_rows.min(rows - first);
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
            panel: panel_rows,
        })
    }

    /// Each panel's first row and width (its lanes per step); a panel starts at value
    /// `first·cols`.
    fn spans(rows: usize, panel: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..rows)
            .step_by(panel)
            .map(move |first| (first, panel.min((rows - first).next_multiple_of(16))))
    }

    /// The row-major weights back.
    pub fn to_rows(&self) -> Vec<f32> {
        let mut w = vec![0.0; self.rows * self.cols];
        for (first, width) in Self::spans(self.rows, self.panel) {
            let panel = &self.data[first * self.cols..];
            let rows = w[first * self.cols..].chunks_exact_mut(self.cols.max(1));
            for (j, row) in rows.take(self.panel).enumerate() {
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

    /// The rows of a panel: `PANEL`, or `NARROW_PANEL` where the AVX2 kernel reads them.
    pub fn panel_rows(&self) -> usize {
        self.panel
    }

    /// Bytes held, padding included.
    pub fn bytes(&self) -> u64 {
        4 * self.data.len() as u64
    }

    /// Row `r` times `scale[r]`.
    pub fn scale_rows(&mut self, scale: &[f32]) {
        for (first, width) in Self::spans(self.rows, self.panel) {
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

/// The rows of a panel for the kernel that runs here.
fn panel_for_this_cpu() -> usize {
    match super::own_kernel() {
        Some(super::OwnKernel::Avx2) => NARROW_PANEL,
        _ => PANEL,
    }
}

/// Whether a product with `rows` output channels, `cols` deep, over `n` pixels runs faster
/// with the channels in the lanes: they must fill more of the lanes than the pixels do, by a
/// margin plus what the transposed store of each tile costs against its depth.
///
/// On AVX-512 the margin is 4% and the store is about 8 steps' worth of multiply-adds (a
/// 16×16 transpose). So a 9×9 or 7×7 plane qualifies, an 18×18 one (96% either way) does
/// not, nor do MobileNetV2's 64→384 expansions at 14×14 (94% of the lanes kept, 64 steps
/// deep), which took 0.147 ms with the channels in the lanes against 0.107.
///
/// On AVX2 the row-major tiles take the one or two columns past their last whole panel of 16
/// without wasting lanes (`few_columns_avx2`), so 9×9 and 7×7 planes keep all of
/// theirs there and stay row-major. The 8×8 transposes of the store cost about 4 steps, and
/// the margin is 10%: inside MobileNetV2 (one thread, Zen 3, three alternating profiles) its
/// 14×14 projections (94% of the lanes) gained 5% at 64 output channels and lost 2–5% at 96,
/// while Xception's 1536×1024 product at 5×5 (78%) gained 14% and its 2048×1536 one was
/// level.
pub fn channels_fill_more_lanes(rows: usize, cols: usize, n: usize) -> bool {
    let kept = |len: usize| len as f64 / len.next_multiple_of(16).max(1) as f64;
    let (pixels_kept, margin, store_steps) = match super::own_kernel() {
        Some(super::OwnKernel::Avx2) => {
            // The columns past the last whole panel that take no lanes; all of them where
            // there is no whole panel.
            let few = match n % 16 {
                past if past <= super::few_columns_avx2::MOST_COLUMNS => past,
                _ => 0,
            };
            (if n > few { kept(n - few) } else { 1.0 }, 0.10, 4.0)
        }
        _ => (kept(n), 0.04, 8.0),
    };
    rows >= 16 && cols > 0 && kept(rows) >= pixels_kept + margin + store_steps / cols as f64
}

/// A product on channel panels, its operands checked by `kernels::channel_panels_product`:
/// `out[r·n + j] = Σ_k W[first_row + r, k] · rhs[k·n + j]`, then `epilogue` (its bias from
/// row `first_row`), for `r < out.len() / n` and `j < n`; `first_row` a multiple of 16,
/// `first_row + out.len() / n ≤ w.rows()`, `rhs` holding `w.cols() · n` values and the bias,
/// if any, `out.len() / n`.
pub(super) struct Operands<'a> {
    pub out: &'a mut [f32],
    pub w: &'a ChannelPanels,
    pub first_row: usize,
    pub rhs: &'a [f32],
    pub n: usize,
    pub epilogue: super::Epilogue<'a>,
}

#[cfg(target_arch = "x86_64")]
impl Operands<'_> {
    /// The output rows.
    fn rows(&self) -> usize {
        self.out.len() / self.n
    }

    /// The bias of output rows `first..`, or null.
    fn bias_from(&self, first: usize) -> *const f32 {
        self.epilogue
            .bias
            .map_or(std::ptr::null(), |b| b[first..].as_ptr())
    }
}

/// The first pixel and the width of each tile of `n` pixels, at most `most` to a tile, in
/// tiles as even as the count allows (81 by 9: nine of 9; 25 by 9: 9, 8, 8; 25 by 6: five
/// of 5), so no tile is left with one or two pixels, whose few multiply-adds per weight
/// loaded would run below the rate of the rest.
#[cfg(target_arch = "x86_64")]
fn pixel_tiles(n: usize, most: usize) -> impl Iterator<Item = (usize, usize)> {
    let tiles = n.div_ceil(most);
    let (base, longer) = (n / tiles.max(1), n % tiles.max(1));
    (0..tiles).map(move |t| (t * base + t.min(longer), base + usize::from(t < longer)))
}

#[cfg(target_arch = "x86_64")]
pub(super) use avx2::product as product_avx2;
#[cfg(target_arch = "x86_64")]
pub(super) use avx512::product;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Operands, PANEL, pixel_tiles};
    use crate::kernels::transpose16::transpose;
    use crate::kernels::{Activation, activate, first_lanes};
    use std::arch::x86_64::*;

    const LANES: usize = 16;
    /// Bytes in a cache line.
    const LINE: usize = 64;

    /// The most pixels per tile: 9 × 3 accumulators, 3 weight vectors and a broadcast fill
    /// 31 of the 32 vector registers.
    const MAX_PIXELS: usize = 9;

    /// The product of `p` ([`Operands`]).
    ///
    /// The rows may start and end inside a panel, on a vector's boundary: a thread's part
    /// need not be whole panels. Split by whole panels, Xception's 728 channels (15⅙
    /// panels) went to two threads as 384 and 344, so one thread did 5.5% more than half.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `p`'s operands were checked, and `w` is in panels of [`PANEL`].
    #[target_feature(enable = "avx512f")]
    pub unsafe fn product(p: Operands<'_>) {
        let (w, n, rows) = (p.w, p.n, p.rows());
        let tiles = n.div_ceil(MAX_PIXELS);
        let mut first = 0;
        while first < rows {
            // The panel holding row `first_row + first`, and the lane that row is in.
            let row = p.first_row + first;
            let (panel_row, lane) = (row / PANEL * PANEL, row % PANEL);
            // A full panel is `PANEL` lanes a step; the matrix's last, its rows rounded up
            // to 16 (`ChannelPanels::spans`).
            let step = PANEL.min((w.rows - panel_row).next_multiple_of(16));
            let channels = (step - lane).min(rows - first);
            let panel = w.data[panel_row * w.cols + lane..].as_ptr();
            let bias = p.bias_from(first);
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
            for (t, (pixel, width)) in pixel_tiles(n, MAX_PIXELS).enumerate() {
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
                        p.rhs.as_ptr().add(pixel),
                        n,
                        p.out.as_mut_ptr().add(first * n + pixel),
                        (bias, p.epilogue.activation),
                    )
                }
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

/// The same product on AVX2 with FMA, for CPUs without AVX-512, on panels of
/// [`NARROW_PANEL`] channels: two 8-lane vectors, a cache line a step, against up to
/// [`avx2::MAX_PIXELS`] broadcast pixels, 12 of the 16 vector registers.
///
/// Measured on a 2-core Zen 3, one thread, weights cold (an example program timing both
/// products, medians of 40): Xception's 1536×1024 product at 5×5 took 1.18–1.19 ms against
/// 1.39–1.41 with the pixels in the lanes, its 2048×1536 one 2.25–2.29 against 2.37–2.40,
/// MobileNetV2's 64×384 projections at 14×14 0.112–0.114 against 0.120–0.121.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{NARROW_PANEL, Operands, pixel_tiles};
    use crate::kernels::transpose8::transpose;
    use crate::kernels::{Activation, activate_avx2 as activate, first_lanes_avx2};
    use std::arch::x86_64::*;

    const LANES: usize = 8;
    /// The channels of a tile: two vectors, a whole panel.
    const CHANNELS: usize = 2 * LANES;
    const _: () = assert!(CHANNELS == NARROW_PANEL);
    /// The most pixels per tile: 6 × 2 accumulators, two weight vectors and a broadcast fill
    /// 15 of the 16 vector registers.
    pub(super) const MAX_PIXELS: usize = 6;

    /// The product of each of `images` ([`Operands`], the same weights, rows and width for
    /// all) on AVX2: a panel at a time, for every image in turn, so that the panel, read from
    /// memory for the first image, is in L2 for the others (a batch's images, as the
    /// row-major kernels run them together, `kernels::product_images`).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; each image's operands were checked, and `w` is in panels of
    /// [`NARROW_PANEL`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn product(images: &mut [Operands<'_>]) {
        let Some(first_image) = images.first() else {
            return;
        };
        let (w, n, rows) = (first_image.w, first_image.n, first_image.rows());
        debug_assert!(
            images
                .iter()
                .all(|p| std::ptr::eq(p.w, w) && p.n == n && p.rows() == rows)
        );
        // A panel at a time: rows `first..first + 16` of this part, which start a panel since
        // `first_row` does.
        for first in (0..rows).step_by(CHANNELS) {
            for (image, p) in images.iter_mut().enumerate() {
                // SAFETY: as for this function.
                unsafe { panel_of_image(p, first, image == 0) };
            }
        }
    }

    /// Rows `first..first + 16` of the part `p`, a panel; `fetch` says whether its first tile
    /// fetches the next panel.
    ///
    /// # Safety
    /// As for [`product`].
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn panel_of_image(p: &mut Operands<'_>, first: usize, fetch: bool) {
        let (w, n, rows) = (p.w, p.n, p.rows());
        let channels = CHANNELS.min(rows - first);
        let panel = w.data[(p.first_row + first) * w.cols..].as_ptr();
        // The next panel this part reads, a line a step, fetched into L2 by the first
        // tile while it sums this one: each panel's first tile otherwise waits on memory
        // at every step (a network's weights do not stay in cache between passes). The
        // other tiles fetch their own panel's lines, which are in cache.
        let next = if fetch && first + CHANNELS < rows {
            panel.wrapping_add(CHANNELS * w.cols)
        } else {
            panel
        };
        let bias = p.bias_from(first);
        for (pixel, width) in pixel_tiles(n, MAX_PIXELS) {
            let ahead = if pixel == 0 { next } else { panel };
            // SAFETY: the panel holds `w.cols` steps of 16 values (the last panel's rows
            // rounded up to 16, `ChannelPanels::spans`); the tile's pixels are below `n`, so
            // every step's broadcasts are inside `rhs`; the tile writes `channels` rows of
            // `width` values from `out[first·n + pixel]`, inside `out`; the bias holds
            // `channels` values from `first`.
            unsafe {
                tile_of(
                    width,
                    (panel, CHANNELS, w.cols),
                    ahead,
                    p.rhs.as_ptr().add(pixel),
                    n,
                    p.out.as_mut_ptr().add(first * n + pixel),
                    (channels, (bias, p.epilogue.activation)),
                )
            }
        }
    }

    /// One tile of `pixels` (1..=[`MAX_PIXELS`]) through the instance of [`tile`] for it.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_of(
        pixels: usize,
        (at, step, count): (*const f32, usize, usize),
        ahead: *const f32,
        x: *const f32,
        n: usize,
        out: *mut f32,
        finish: (usize, (*const f32, Activation)),
    ) {
        // SAFETY: as for the tile.
        unsafe {
            match pixels {
                6 => tile::<6>((at, step), count, ahead, x, n, out, finish),
                5 => tile::<5>((at, step), count, ahead, x, n, out, finish),
                4 => tile::<4>((at, step), count, ahead, x, n, out, finish),
                3 => tile::<3>((at, step), count, ahead, x, n, out, finish),
                2 => tile::<2>((at, step), count, ahead, x, n, out, finish),
                _ => tile::<1>((at, step), count, ahead, x, n, out, finish),
            }
        }
    }

    /// `P` pixels × 16 channels summed over the whole depth in registers, each output one
    /// chain of fused multiply-adds in `k` order from zero; then the bias and activation as
    /// [`crate::kernels::finish_rows`] computes them, and the tile written transposed (a
    /// pixel's channels are `n` apart in the output), an 8×8 block at a time in registers,
    /// each channel's `P` pixels stored under a mask.
    // Indexed loops over the constant bounds are what unroll into the registers.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const P: usize>(
        (at, step): (*const f32, usize),
        count: usize,
        ahead: *const f32,
        x: *const f32,
        n: usize,
        out: *mut f32,
        (channels, (bias, activation)): (usize, (*const f32, Activation)),
    ) {
        // SAFETY (whole body): step `k` reads two vectors at `at + k·step` and `P` values
        // at `x + k·n` (and only prefetches `ahead + k·step`); the bias, if not null, holds
        // `channels` values; the output rows `c < channels` hold `P` values at `out + c·n`.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; P];
            let (mut w, mut xk, mut fetch) = (at, x, ahead);
            for _ in 0..count {
                _mm_prefetch::<_MM_HINT_T1>(fetch.cast());
                fetch = fetch.wrapping_add(step);
                let w0 = _mm256_loadu_ps(w);
                let w1 = _mm256_loadu_ps(w.add(LANES));
                for p in 0..P {
                    let a = _mm256_broadcast_ss(&*xk.add(p));
                    acc[p][0] = _mm256_fmadd_ps(a, w0, acc[p][0]);
                    acc[p][1] = _mm256_fmadd_ps(a, w1, acc[p][1]);
                }
                w = w.add(step);
                xk = xk.add(n);
            }
            let zero = _mm256_setzero_ps();
            let pixels = first_lanes_avx2(P);
            for v in 0..2 {
                let lanes = channels.saturating_sub(v * LANES).min(LANES);
                if lanes == 0 {
                    break;
                }
                let b = (!bias.is_null())
                    .then(|| _mm256_maskload_ps(bias.add(v * LANES), first_lanes_avx2(lanes)));
                let mut rows = [zero; LANES];
                for p in 0..P {
                    let mut sums = acc[p][v];
                    if let Some(b) = b {
                        sums = _mm256_add_ps(sums, b);
                    }
                    rows[p] = activate(sums, activation);
                }
                let columns = transpose(rows);
                for (c, column) in columns.iter().enumerate().take(lanes) {
                    _mm256_maskstore_ps(out.add((v * LANES + c) * n), pixels, *column);
                }
            }
        }
    }
}
