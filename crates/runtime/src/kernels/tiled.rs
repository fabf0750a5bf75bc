//! The blocking of the runtime's own dense product, shared by its instruction sets
//! ([`super::avx512`], [`super::avx2`]): which tiles of the output are computed in which order,
//! and which parts of the right-hand side are packed into panels first. Each instruction set
//! supplies only its register tile and its packing ([`Tiles`]).
//!
//! The layout is the one the convolutions hand over: the weights row-major (one row per output
//! channel), the right-hand side row-major with the pixels along its rows. A tile holds
//! [`Tiles::ROWS`] output rows × [`Tiles::PANEL`] columns in registers; each step of the depth
//! broadcasts one weight per row and loads the right-hand side's vectors once for all the rows.
//! The weights are read where they lie, a row per stream: packing them (as the `gemm` crate
//! does on every call) would copy a matrix that a layer with few pixels only reads a few times.
//!
//! The depth is never split inside a register: every output element is a single chain of fused
//! multiply-adds over `k` in order, started from zero, whatever the tile, the number of rows,
//! the thread or the instruction set. So a split of the rows or columns gives the same bits, and
//! so do the AVX-512 and the AVX2 tiles.

pub(crate) use super::tiled_columns::{Columns, Images, OneMatrix};

/// The bytes of a packed panel's block of the depth: 256 steps of AVX-512's 48 columns, and an
/// AVX-512 tile's 8 weight rows over them 8 KiB, so both stay in L1 and L2 while the tiles
/// sweep them. (Without a bound, VGG16's 4,608-deep products read 884 KiB panels and 147 KiB
/// of weights per tile from L2, and ran 1.9× onnxruntime's time against 1.6× through the
/// `gemm` crate.) AVX2's 16-column panels take 768 steps in the same bytes (6 weight rows,
/// 18 KiB); with 256 there, as AVX-512 has, Xception's 728-deep middle flow took three blocks
/// a product, each reading and writing the tile's sums again: 0.877 against 0.822 ms a layer,
/// its 1×1 layers in all 36.4 against 35.4 ms (one thread, AVX-512 hidden, three alternating
/// profiles; 512 steps gave 36.0, 1,024 35.8).
const PANEL_BLOCK_BYTES: usize = 48 << 10;

/// The most steps of the depth a packed panel of `K` holds ([`PANEL_BLOCK_BYTES`]).
const fn depth_block<K: Tiles>() -> usize {
    PANEL_BLOCK_BYTES / (4 * K::PANEL)
}
/// Products with at most this many rows (four AVX-512 tiles) read the right-hand side in place
/// ([`in_place`]): packing copies the whole right-hand side for few tiles to read it.
/// MobileNetV2's 144→32 projection at 28×28 took 0.069–0.071 ms in place against
/// 0.081–0.088 packed, its 192→32 ones 0.091–0.093 against 0.104–0.117 (one thread, AVX-512),
/// while its 64-row products were level either way.
const IN_PLACE_MOST_ROWS: usize = 32;
/// The most bytes of the right-hand side that [`in_place`] sweeps with each tile of rows
/// before the next: what a core's L1 holds (32 KiB on Zen 3 and Zen 4), so that the tiles after
/// the first read it from there. A deep product keeps one strip to a chunk. On MobileNetV2
/// (one thread, AVX-512, medians of eight alternating profiles), against one strip to a chunk:
/// `Conv1` (27 deep) 0.415 → 0.338 ms, `expanded_conv_project` (32 deep) 0.266 → 0.229,
/// `block_1_project` (96 deep) 0.170 → 0.157, the deeper projections level. 48 and 128 KiB
/// were no better; at two threads 16 and 32 KiB were level.
const IN_PLACE_CHUNK_BYTES: usize = 32 << 10;
/// In [`in_place`], the first tile of rows asks for the right-hand side this many panels
/// ahead of the one it reads, into L2, where the product is at most [`PREFETCH_MOST_DEPTH`]
/// deep: each step of the depth reads its own row, too many streams for the prefetchers to
/// follow ahead. On MobileNetV2 (one thread, alternating profiles), with AVX-512 hidden:
/// `expanded_conv_project` (32 deep, 112×112) 0.213 → 0.193 ms and `block_1_project` (96
/// deep) 0.195 → 0.162 (medians of four); in six on a busier host, 0.233–0.299 → 0.212–0.224
/// and 0.160–0.244 → 0.170–0.172, steadier more than faster. With AVX-512, 0.180 → 0.169 and
/// level. The 144- and 192-deep projections lost 7–9% with it (one prefetch per row and tile
/// is a tenth of such a tile's instructions), so they go without.
const PREFETCH_PANELS_AHEAD: usize = 2;
const PREFETCH_MOST_DEPTH: usize = 128;

/// One instruction set's register tile and panel packing, which [`product_finished`] and
/// [`packed`] block over.
pub(crate) trait Tiles {
    /// Output rows per tile: one broadcast weight each per step of the depth.
    const ROWS: usize;
    /// The columns of a tile, and of a packed panel.
    const PANEL: usize;
    /// The most bytes of packed right-hand side that every tile of rows sweeps: about half
    /// the L2 of the cores that have the instruction set.
    const RHS_BLOCK_BYTES: usize;
    /// The lanes of a vector of columns.
    const LANES: usize;
    /// The most columns past a product's last whole panel that [`Tiles::few_columns`]
    /// computes instead of a tile's masked vector; 0 where the instruction set has no such
    /// kernel.
    const FEW_COLUMNS: usize = 0;
    /// The rows of a call of [`Tiles::few_columns`]: a multiple of [`Self::ROWS`].
    const FEW_ROWS: usize = Self::ROWS;

    /// A tile's contract for rows `skip..rows` (`rows` from [`Self::LANES`] to
    /// [`Self::FEW_ROWS`]) by `width` (at most [`Self::FEW_COLUMNS`]) columns, with the same
    /// bits, where the right-hand side's columns lie one after another, `x.1` apart, each
    /// `depth.steps` deep from `x.0`. The first `skip` rows are read from the weights but not
    /// from or to `out`: a caller with fewer rows left than a vector moves the call back over
    /// rows it has done.
    ///
    /// # Safety
    /// As for [`Tiles::tile`] over rows `0..rows` (`out` at rows `skip..rows`), column
    /// `j < width` holding `depth.steps` values from `x.0 + j·x.1`.
    unsafe fn few_columns(
        _rows: (usize, usize),
        _w: *const f32,
        _depth: Depth,
        _x: (*const f32, usize),
        _width: usize,
        _out: *mut f32,
        _out_stride: usize,
    ) {
        unreachable!("no kernel for a few columns")
    }

    /// Copies `columns` (the first and how many: `col..col + width`) of the right-hand side's rows for `steps` steps from
    /// `first_step` (one per step, where `rows_of` says) into `⌈width / PANEL⌉` panels one
    /// after another in `panels`, each `steps` steps of [`Self::PANEL`] values, zero past
    /// `width`: the tiles then read their steps from consecutive, aligned addresses, without
    /// masks. (Read in place, each step is a row of the right-hand side further on: a page
    /// apart on the wide layers, where neither the prefetchers nor the TLB kept up, and 1.45×
    /// slower on Xception's middle flow.)
    ///
    /// # Safety
    /// The CPU has the instruction set. (The bounds are checked.)
    unsafe fn pack(
        rhs: &[f32],
        rows_of: (RhsRows<'_>, usize),
        columns: (usize, usize),
        steps: usize,
        panels: &mut [f32],
    );

    /// One tile, `rows` (1..=[`Self::ROWS`]) by `width` (1..=[`Self::PANEL`]) columns:
    /// `out[r·out_stride + j] = Σ_k w[r·depth.stride + k] · rhs[k·rhs.stride + j]` over
    /// `depth.steps` steps (continuing from `out` with `depth.accumulate`), then the tile's
    /// finish, stored to the tile's `width` columns only. The `ahead.1` weight rows from
    /// `ahead.0` (`depth.stride` apart) are prefetched along the way.
    ///
    /// # Safety
    /// The CPU has the instruction set; row `r < rows` of the weights has `depth.steps`
    /// values from `w + r·depth.stride`, and so has row `r < ahead.1` from `ahead.0`; step `k`
    /// reads `width` values at `rhs.at + k·rhs.stride`, or [`Self::PANEL`] where `rhs.padded`;
    /// `out` holds `width` values at `r·out_stride` for `r < rows`, which nothing else
    /// accesses meanwhile; the finish's bias, if any, `rows` values.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        rows: usize,
        width: usize,
        w: *const f32,
        ahead: (*const f32, usize),
        depth: Depth,
        rhs: TileRhs,
        out: *mut f32,
        out_stride: usize,
    );
}

/// Where a tile reads its right-hand side: step `k` at `at + k·stride`.
#[derive(Clone, Copy)]
pub(crate) struct TileRhs {
    pub at: *const f32,
    pub stride: usize,
    /// A packed panel: every step holds a whole panel of columns (zeros past the tile's
    /// width), so the loads need no mask.
    pub padded: bool,
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

/// How a tile walks the depth: `steps` steps from where its weight pointer starts, the weight
/// rows `stride` apart; with `accumulate`, the sums continue from what the output holds (the
/// earlier steps' sums, stored as the same `f32`s the registers held, so the chain of fused
/// multiply-adds and its bits are those of an unsplit depth).
#[derive(Clone, Copy)]
pub(crate) struct Depth {
    pub stride: usize,
    pub steps: usize,
    pub accumulate: bool,
    /// Applied before the store: set on the last block of the depth only.
    pub finish: TileFinish,
}

/// An [`super::Epilogue`] for one tile: its first row's bias (null for none) and the
/// activation.
#[derive(Clone, Copy)]
pub(crate) struct TileFinish {
    pub bias: *const f32,
    pub activation: super::Activation,
}

impl TileFinish {
    fn none() -> TileFinish {
        TileFinish {
            bias: std::ptr::null(),
            activation: super::Activation::None,
        }
    }

    /// The tile whose first row is `first_row`.
    fn of(epilogue: super::Epilogue<'_>, first_row: usize) -> TileFinish {
        TileFinish {
            bias: epilogue
                .bias
                .map_or(std::ptr::null(), |b| b[first_row..].as_ptr()),
            activation: epilogue.activation,
        }
    }
}

/// `out[r·out_stride + j] = Σ_k w[r·cols + k] · rhs[k·rhs_stride + j]` for `r < rows` and
/// `j < n` (the contract of [`super::product_strided`], whose callers check the bounds and
/// `cols > 0`), then `epilogue`, applied to the registers of the last depth block before they
/// are stored. The right-hand side's rows are `rhs_stride` apart, so that a thread can take a
/// strip of its columns; the output is a pointer, since the strips other threads write lie
/// between this one's rows.
///
/// # Safety
/// The CPU has `K`'s instruction set; `out` is valid for writes of `n` values at
/// `r·out_stride` for every `r < rows`, which nothing else accesses meanwhile; `w` holds
/// `rows · cols` values, `rhs` `(cols − 1)·rhs_stride + n`, and the epilogue's bias, if any,
/// `rows`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product_finished<K: Tiles>(
    out: *mut f32,
    out_stride: usize,
    rows: usize,
    w: &[f32],
    cols: usize,
    (rhs, rhs_stride): (&[f32], usize),
    n: usize,
    epilogue: super::Epilogue<'_>,
) {
    debug_assert!(w.len() >= rows * cols && rhs.len() >= (cols - 1) * rhs_stride + n);
    if rows <= IN_PLACE_MOST_ROWS {
        // SAFETY: as for this function.
        return unsafe {
            in_place::<K>(
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
        packed::<K>(out, out_stride, rows, w, cols, rhs, n, epilogue)
    }
}

/// The product over packed panels: `out[r·out_stride + j] = Σ_k w[r·cols + k] · rhs[at(k) + j]`,
/// `at` from `rows_of`. The last few columns past the last whole panel go to
/// [`Tiles::few_columns`] where the instruction set has it.
///
/// # Safety
/// The CPU has `K`'s instruction set; `out` and `w` hold what [`product_finished`]'s contract
/// reads and writes, and `rhs` holds `at(k) + n` values for every step `k < cols`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn packed<K: Tiles>(
    out: *mut f32,
    out_stride: usize,
    rows: usize,
    w: &[f32],
    cols: usize,
    (rhs, rows_of): (&[f32], RhsRows<'_>),
    n: usize,
    epilogue: super::Epilogue<'_>,
) {
    let columns = OneMatrix {
        rhs,
        rows_of,
        out,
        out_stride,
    };
    // SAFETY: as for this function.
    unsafe { packed_over::<K, _>(&columns, rows, w, cols, n, epilogue) }
}

/// [`product_finished`] for each image of `images`: one packed product over all their columns
/// ([`packed_images`]), except where the rows are few enough to read each image in place.
///
/// # Safety
/// As for [`packed_images`].
pub(crate) unsafe fn product_images_finished<K: Tiles>(
    images: &Images<'_>,
    rows: usize,
    w: &[f32],
    cols: usize,
    epilogue: super::Epilogue<'_>,
) {
    let n = images.width;
    // SAFETY: as for this function.
    unsafe {
        if rows <= IN_PLACE_MOST_ROWS {
            for (&out, rhs) in images.out.iter().zip(images.rhs) {
                in_place::<K>(out, n, rows, w, cols, (rhs, n), n, epilogue)
            }
        } else {
            packed_images::<K>(images, rows, w, cols, epilogue)
        }
    }
}

/// [`packed`] over the columns of several images side by side: image `g`'s right-hand side is
/// `images.rhs[g]` (`cols` rows, `images.width` wide) and its output rows start at
/// `images.out[g]`, `images.width` apart. Each tile's weights then serve every image's columns
/// while they are in cache, and only the last image's last panel can be partial: Xception's
/// 2048×1536 product at 5×5 took 2.4 ms an image alone and about 2.0 eight images at a time
/// (its weights, 12 MB, read once for eight images, and 200 columns fill whole panels).
///
/// # Safety
/// As for [`packed`], for each image: `images.out[g]` valid for writes of `rows` rows of
/// `images.width` values, which nothing else accesses meanwhile.
unsafe fn packed_images<K: Tiles>(
    images: &Images<'_>,
    rows: usize,
    w: &[f32],
    cols: usize,
    epilogue: super::Epilogue<'_>,
) {
    let n = images.width * images.rhs.len();
    // SAFETY: as for this function.
    unsafe { packed_over::<K, _>(images, rows, w, cols, n, epilogue) }
}

/// [`packed`] over any [`Columns`]: the few columns gathered, then the tiles.
///
/// # Safety
/// As for [`packed`], with the columns' own contract.
unsafe fn packed_over<K: Tiles, C: Columns>(
    columns: &C,
    rows: usize,
    w: &[f32],
    cols: usize,
    n: usize,
    epilogue: super::Epilogue<'_>,
) {
    // The last few columns past the last whole panel, where the instruction set computes
    // them with the rows in the lanes (`few_columns`): in a tile of their own they would
    // cost a whole vector of multiply-adds per weight, and its loads. (Past a panel and a
    // vector, as 25 columns are 16 + 9, the last vector shares a tile's loads and costs
    // less than the transposes here: Xception's 2048×1536 product at 5×5 took 2.5 ms with
    // its 25th column here against 2.3 ms as the tile's.) They must lie in one stretch.
    let few = match n % K::PANEL {
        t if t <= K::FEW_COLUMNS && columns.stretch_end(n - t) >= n => t,
        _ => 0,
    };
    let tiled = n - few;
    // The few columns, each one after another, `cols` deep.
    crate::scratch::with_len(few * cols, |gathered| {
        // Most products have no such columns: no walk down the depth for them.
        if few > 0 {
            for k in 0..cols {
                for (j, value) in columns.step_from(k, tiled)[..few].iter().enumerate() {
                    gathered[j * cols + k] = *value;
                }
            }
        }
        let few = FewColumns {
            columns: gathered,
            width: few,
            first: tiled,
        };
        let product = Product {
            columns,
            w,
            cols,
            epilogue,
        };
        // SAFETY: as for this function.
        unsafe {
            if tiled > 0 {
                tiles_over_panels::<K, C>(&product, rows, tiled, few)
            } else {
                few.below_tiles::<K, C>(&product, (0, rows), (0, cols))
            }
        }
    })
}

/// What the tiles of a packed product share: where its columns lie, the weights (`cols`
/// deep), and the finish.
struct Product<'a, C> {
    columns: &'a C,
    w: &'a [f32],
    cols: usize,
    epilogue: super::Epilogue<'a>,
}

impl<C> Product<'_, C> {
    /// How a tile (or a call for the few columns) of the rows from `first_row` walks steps
    /// `first_step..first_step + steps`, finishing on the depth's last step.
    fn depth(&self, first_row: usize, (first_step, steps): (usize, usize)) -> Depth {
        Depth {
            stride: self.cols,
            steps,
            accumulate: first_step > 0,
            finish: if first_step + steps == self.cols {
                TileFinish::of(self.epilogue, first_row)
            } else {
                TileFinish::none()
            },
        }
    }
}

/// The last columns of a packed product that [`Tiles::few_columns`] takes, one after another
/// in `columns`, each as deep as the product: columns `first..first + width` of the output.
#[derive(Clone, Copy)]
struct FewColumns<'a> {
    columns: &'a [f32],
    width: usize,
    first: usize,
}

impl FewColumns<'_> {
    /// The columns over `steps` steps of the depth (from the first and how many) for `rows`
    /// rows (from the first and how many), in calls of [`Tiles::FEW_ROWS`] rows, finished on
    /// the depth's last step.
    ///
    /// # Safety
    /// As for [`packed`].
    unsafe fn below_tiles<K: Tiles, C: Columns>(
        self,
        p: &Product<'_, C>,
        (first_row, rows): (usize, usize),
        steps: (usize, usize),
    ) {
        if self.width == 0 {
            return;
        }
        for start in (first_row..first_row + rows).step_by(K::FEW_ROWS) {
            let end = (start + K::FEW_ROWS).min(first_row + rows);
            // A group shorter than a vector starts earlier, over rows already done.
            let skip = K::LANES.saturating_sub(end - start).min(start);
            let start = start - skip;
            let (out, out_stride) = p.columns.out_at(start, self.first);
            // SAFETY: as for this function: the rows are below the product's, the steps
            // below its depth, the columns' values were gathered that deep, and they lie in
            // one stretch of the output (`packed_over`).
            unsafe {
                K::few_columns(
                    (skip, end - start),
                    p.w.as_ptr().add(start * p.cols + steps.0),
                    p.depth(start, steps),
                    (self.columns.as_ptr().add(steps.0), p.cols),
                    self.width,
                    out,
                    out_stride,
                )
            }
        }
    }
}

/// The tiles of [`packed`] over its first `n` columns, a block of packed panels at a time.
///
/// # Safety
/// As for [`packed`].
unsafe fn tiles_over_panels<K: Tiles, C: Columns>(
    p: &Product<'_, C>,
    rows: usize,
    n: usize,
    few: FewColumns<'_>,
) {
    let (w, cols) = (p.w, p.cols);
    // Columns in blocks whose packed panels fill half a core's L2 (2 MiB on the Xeons this
    // was tuned on); each tile of rows then sweeps the block's panels, its own weights staying
    // in L1 while the panels come from L2. (Panels outermost, each swept by every tile of
    // rows, was slower where the weights are large and the pixels few: Xception's 728×728
    // middle flow at 9×9 re-read its 2 MiB of weights once per panel, 0.88 against 0.64 ms.)
    let block_steps = depth_block::<K>().min(cols);
    let most = (K::RHS_BLOCK_BYTES / (4 * block_steps) / K::PANEL).max(1);
    let block = balanced_block(n.div_ceil(K::PANEL), most) * K::PANEL;
    // The tiles whose columns span two stretches (images) sum into a buffer of their own,
    // a slot per stretch they start in, and are stored when their depth is done.
    let side_len = p.columns.stretches_crossed() * rows * K::PANEL;
    // Every panel value is written by `pack` before the tiles read it, and every side value by
    // its tile's first depth block.
    crate::scratch::with_len(side_len, |side| {
        crate::scratch::with_line_aligned_len(block_steps * block, |packed| {
            for first_col in (0..n).step_by(block) {
                let block_cols = block.min(n - first_col);
                for first_step in (0..cols).step_by(block_steps) {
                    let steps = block_steps.min(cols - first_step);
                    let panel_len = steps * K::PANEL;
                    let panels = (first_col..first_col + block_cols).step_by(K::PANEL);
                    let block_panels = &mut packed[..block_cols.div_ceil(K::PANEL) * panel_len];
                    // SAFETY: the CPU has the instruction set (this function's contract).
                    unsafe {
                        let columns = (first_col, block_cols);
                        p.columns
                            .pack::<K>((first_step, steps), columns, block_panels)
                    };
                    for first_row in (0..rows).step_by(K::ROWS) {
                        // While the block's first panel is computed, the next tile of rows'
                        // weights are fetched into L1: they come from memory or L3 (Xception's
                        // 83 MB of weights do not stay in L2 between passes), a row a stream,
                        // and each row of a 728-deep layer is shorter than a page, too short for
                        // the prefetchers to catch on before it ends.
                        let next = first_row + K::ROWS;
                        let ahead = K::ROWS.min(rows.saturating_sub(next));
                        let weights = first_row * cols + first_step;
                        let depth = p.depth(first_row, (first_step, steps));
                        let tile_rows = K::ROWS.min(rows - first_row);
                        for (panel, col) in panels.clone().enumerate() {
                            let ahead = if panel == 0 { ahead } else { 0 };
                            let rhs = TileRhs {
                                at: packed[panel * panel_len..].as_ptr(),
                                stride: K::PANEL,
                                padded: true,
                            };
                            let width = K::PANEL.min(first_col + block_cols - col);
                            let at = w.as_ptr().wrapping_add(weights);
                            let ahead = (at.wrapping_add(K::ROWS * cols), ahead);
                            // SAFETY: the tile's rows are below `rows`, its columns below `n` and
                            // its steps below `cols`, inside the bounds the caller checked; panel
                            // `panel` is `steps` steps of `PANEL` values inside `packed`.
                            unsafe {
                                if p.columns.stretch_end(col) >= col + width {
                                    let (out, out_stride) = p.columns.out_at(first_row, col);
                                    K::tile(
                                        tile_rows, width, at, ahead, depth, rhs, out, out_stride,
                                    )
                                } else {
                                    let slot = p.columns.stretch_of(col) * rows + first_row;
                                    let sums = side[slot * K::PANEL..].as_mut_ptr();
                                    K::tile(
                                        tile_rows,
                                        width,
                                        at,
                                        ahead,
                                        depth,
                                        rhs,
                                        sums,
                                        K::PANEL,
                                    );
                                    if first_step + steps == cols {
                                        let tile = (first_row, tile_rows, col, width);
                                        store_across::<K, C>(p.columns, tile, sums);
                                    }
                                }
                            }
                        }
                        // The few columns of the rows the tiles have just swept, while their
                        // weights are in L1: after the last block of columns, a call every
                        // `FEW_ROWS` rows. (A pass of their own after the tiles read the weights
                        // from memory again: Xception's 2048×1536 product at 5×5 took 3.1 against
                        // 2.3 ms with it.)
                        let end = (first_row + K::ROWS).min(rows);
                        if first_col + block_cols == n && (end % K::FEW_ROWS == 0 || end == rows) {
                            let start = (end - 1) / K::FEW_ROWS * K::FEW_ROWS;
                            // SAFETY: as for this function; rows `start..end` are below `rows`.
                            unsafe {
                                few.below_tiles::<K, C>(
                                    p,
                                    (start, end - start),
                                    (first_step, steps),
                                )
                            }
                        }
                    }
                }
            }
        })
    })
}

/// A finished tile whose columns (`tile.2..tile.2 + tile.3`, `tile.1` rows from `tile.0`)
/// span stretches of the output (two images' columns), from where it summed them (`sums`,
/// rows [`Tiles::PANEL`] apart), stretch by stretch. Its sums are those of any tile: one
/// chain of multiply-adds each, finished in registers, so the same bits.
///
/// # Safety
/// `sums` holds the tile's rows; each stretch's rows hold its columns for the tile's rows
/// (as for [`packed_images`]).
unsafe fn store_across<K: Tiles, C: Columns>(
    columns: &C,
    (first_row, rows, col, width): (usize, usize, usize, usize),
    sums: *const f32,
) {
    let mut first = col;
    while first < col + width {
        let end = columns.stretch_end(first).min(col + width);
        let (out, stride) = columns.out_at(first_row, first);
        // SAFETY: as for this function.
        unsafe {
            for r in 0..rows {
                let from = sums.add(r * K::PANEL + first - col);
                std::ptr::copy_nonoverlapping(from, out.add(r * stride), end - first);
            }
        }
        first = end;
    }
}

/// Panels per block of columns, for `panels` in blocks of at most `most` (what half a core's
/// L2 holds), as even as they can be; a last block of a quarter of `most` or less joins the
/// others, a little over the bound, since every block reads all the weights again. Xception's
/// 728-deep products over 9×9 pixels are six AVX2 panels, five to a block: the sixth, one
/// column wide, read the 2 MiB of weights a second time. At two threads (alternating
/// profiles, the CPUs near), Xception's 1×1 layers took 18.30 against 18.55 ms with AVX-512
/// hidden and 18.49 against 18.81 with it; at one thread and on MobileNetV2, level.
fn balanced_block(panels: usize, most: usize) -> usize {
    let mut count = panels.div_ceil(most).max(1);
    if count > 1 && panels - (count - 1) * most <= most / 4 {
        count -= 1;
    }
    panels.div_ceil(count).max(1)
}

/// [`product_finished`] with the tiles reading the right-hand side where it lies, `rhs_stride`
/// apart per step of the depth, masked at the last columns: for few rows, packing would copy
/// each value of the right-hand side for as few multiply-adds as the copy costs (MobileNetV2's
/// 16-channel projection at 112×112 took 0.25 ms packed, 0.16 ms through the `gemm` crate).
///
/// # Safety
/// As for [`product_finished`].
#[allow(clippy::too_many_arguments)]
unsafe fn in_place<K: Tiles>(
    out: *mut f32,
    out_stride: usize,
    rows: usize,
    w: &[f32],
    cols: usize,
    (rhs, rhs_stride): (&[f32], usize),
    n: usize,
    epilogue: super::Epilogue<'_>,
) {
    // The columns in chunks whose right-hand side fits in L1 ([`IN_PLACE_CHUNK_BYTES`]); each
    // tile of rows sweeps a chunk's strips, and the next tile reads the chunk again from L1.
    // With the rows outermost, MobileNetV2's 32→16 projection at 112×112 read its 1.6 MB input
    // from memory once per tile of rows; with one strip to a chunk, the tiles wrote their 16
    // output rows 192 bytes at a time each, streams too short for the prefetchers: reading the
    // output before the layer (to bring it into cache) made that layer faster, the read
    // included (0.277 → 0.207 ms).
    let chunk = (IN_PLACE_CHUNK_BYTES / (4 * cols) / K::PANEL).max(1) * K::PANEL;
    for first_col in (0..n).step_by(chunk) {
        let chunk_end = (first_col + chunk).min(n);
        for first_row in (0..rows).step_by(K::ROWS) {
            for col in (first_col..chunk_end).step_by(K::PANEL) {
                if first_row == 0 && cols <= PREFETCH_MOST_DEPTH {
                    let ahead = col + PREFETCH_PANELS_AHEAD * K::PANEL;
                    let width = K::PANEL.min(n.saturating_sub(ahead));
                    prefetch_columns((rhs, rhs_stride), cols, ahead..ahead + width);
                }
                let rhs = TileRhs {
                    at: rhs[col..].as_ptr(),
                    stride: rhs_stride,
                    padded: false,
                };
                let depth = Depth {
                    stride: cols,
                    steps: cols,
                    accumulate: false,
                    finish: TileFinish::of(epilogue, first_row),
                };
                // SAFETY: the tile's rows are below `rows` and its columns below `n`, inside
                // the bounds the caller checked; step `k` reads the tile's columns of row `k`
                // of `rhs`.
                unsafe {
                    K::tile(
                        K::ROWS.min(rows - first_row),
                        K::PANEL.min(n - col),
                        w.as_ptr().add(first_row * cols),
                        (w.as_ptr(), 0),
                        depth,
                        rhs,
                        out.add(first_row * out_stride + col),
                        out_stride,
                    )
                }
            }
        }
    }
}

/// Asks for `columns` of each of the first `rows` rows of the right-hand side (rows `stride`
/// apart) to be brought into L2, a cache line at a time.
fn prefetch_columns((rhs, stride): (&[f32], usize), rows: usize, columns: std::ops::Range<usize>) {
    const LINE: usize = crate::scratch::LINE_VALUES;
    for k in 0..rows {
        let row = k * stride;
        for at in (row + columns.start..row + columns.end).step_by(LINE) {
            if let Some(value) = rhs.get(at) {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: a prefetch reads nothing; the address is a value of `rhs`.
                unsafe {
                    use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
                    _mm_prefetch::<_MM_HINT_T1>((value as *const f32).cast());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::balanced_block;

    #[test]
    fn blocks_of_columns_are_even_and_a_small_last_block_joins_the_others() {
        // Within the bound: one block.
        assert_eq!(balanced_block(3, 5), 3);
        // Six panels, five to a block: the sixth alone is a fifth of a block, so one block.
        assert_eq!(balanced_block(6, 5), 6);
        // Eight: two blocks of four, not five and three.
        assert_eq!(balanced_block(8, 5), 4);
        // Twenty-one: four blocks of six rather than five of five and one of one.
        assert_eq!(balanced_block(21, 5), 6);
        assert_eq!(balanced_block(0, 5), 1);
    }
}
