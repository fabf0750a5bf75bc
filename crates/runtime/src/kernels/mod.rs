//! The dense inner loops: matrix × matrix for convolutions and batches ([`product`]), matrix ×
//! vector for fully connected layers at batch 1 ([`matvec()`]), and their sparse (CSR) twins.
//!
//! [`product`] runs on this crate's own register tiles (`tiled`: 8 × 48 on AVX-512F
//! (`avx512`), 6 × 16 on AVX2 with FMA (`avx2`), over packed panels of the right-hand side,
//! reading the weights in place), and on the `gemm` crate's packed kernels elsewhere. On
//! Xception's product shapes the AVX-512 kernel was level with the `gemm` crate's AVX-512
//! kernels in isolation and faster inside the model, where it prefetches the weights that the
//! caches no longer hold (docs/performance/kernels.md); the AVX2 tiles were within 10% of the
//! `gemm` crate's AVX2 kernels either way, and ahead where the weights come from memory. Both give
//! the same bits, and they fuse the bias and activation into the store. The other kernels here are
//! compiled twice by multiversion: for AVX2+FMA (or NEON) and for the portable baseline. Where
//! the selected target has fused multiply-add the products are fused: LLVM never contracts
//! `a * b + c` by itself, and a separate multiply and add halves the rate of a latency-bound
//! accumulation. Without FMA they stay a multiply and an add, since a software `fma` would be
//! slower than the whole layer.
//!
//! This file chooses among the products; `epilogue` holds what a product does to its finished
//! rows, `matvec` the matrix × vector loops, and `sparse` the CSR products.

use arrayvec::ArrayVec;
use multiversion::{multiversion, target::selected_target};

// The parts below import this module whole.
mod epilogue;
mod matvec;
mod sparse;
pub use epilogue::{Activation, Epilogue, add_to_row, finish_rows};
pub use matvec::matvec;
pub use sparse::{SparseRows, sparse_matvec, sparse_rows_times};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::{
    activate as activate_avx2, first_lanes as first_lanes_avx2, lane_mask, lane_mask_loaded,
};
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod few_channels_avx2;
#[cfg(target_arch = "x86_64")]
mod few_columns_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod pairs_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::{activate, first_lanes};
mod channel_panels;
#[cfg(target_arch = "x86_64")]
mod tiled;
#[cfg(target_arch = "x86_64")]
mod tiled_columns;
pub use channel_panels::{ChannelPanels, channels_fill_more_lanes};
#[cfg(target_arch = "x86_64")]
mod sparse_avx2;
#[cfg(target_arch = "x86_64")]
mod sparse_avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod transpose16;
#[cfg(target_arch = "x86_64")]
pub(crate) mod transpose8;
#[cfg(target_arch = "x86_64")]
pub mod window_max;
#[cfg(target_arch = "x86_64")]
mod window_max_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod window_max_blocks;

/// Whether max pooling at a column stride of 2 runs on [`window_max`] (AVX-512).
pub fn window_max_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return window_max::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The depth (inner dimension) of one call into `gemm` (the path without the own kernels,
/// which never split the depth). A product deeper than this is summed
/// in blocks of exactly this many terms, each added to the output in turn. `gemm` picks its own
/// depth blocking from the cache sizes and, for small products, from the output's size, so
/// left to itself an output row's rounding would depend on how many rows the call had, and so
/// on the thread count. With at most 512 terms per call `gemm` never splits the depth (512 is
/// its smallest block), and every output element is one fused multiply-add chain per block,
/// in `k` order, whatever the split.
pub const DEPTH_BLOCK: usize = 512;

/// [`product_strided`], then the epilogue on its output rows: in the own kernels'
/// registers before the store, elsewhere as a pass over the rows.
#[allow(clippy::too_many_arguments)]
pub fn product_finished(
    out: &mut [f32],
    out_stride: usize,
    rows: usize,
    w: &[f32],
    cols: usize,
    rhs: &[f32],
    n: usize,
    epilogue: Epilogue<'_>,
) {
    if let Some(bias) = epilogue.bias {
        assert!(bias.len() >= rows, "a bias per row");
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(kernel) = own_kernel()
        && cols > 0
        && needs_product(out, out_stride, rows, w, cols, rhs, n)
    {
        // SAFETY: the CPU has the kernel's instruction set, and the bounds were checked above.
        return unsafe {
            let out = out.as_mut_ptr();
            own_product(
                kernel,
                out,
                out_stride,
                rows,
                w,
                cols,
                (rhs, n),
                n,
                epilogue,
            )
        };
    }
    product_strided(out, out_stride, rows, w, cols, rhs, n);
    finish_rows(out, out_stride, rows, n, epilogue);
}

/// Whether a convolution over `cin` channels into `cout` runs on the direct kernel for a few
/// input channels (`kernels/few_channels_avx2.rs`): AVX2's own kernels, strided first layers.
pub fn few_channels_fit(cin: usize, cout: usize, p: &crate::ops::Conv2dParams) -> bool {
    #[cfg(target_arch = "x86_64")]
    return few_channels_avx2::fits(cin, cout, p);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (cin, cout, p);
        false
    }
}

/// One image through the direct kernel for a few input channels: `image` `[cin, h, w]` into
/// `out` `[cout, oh, ow]`, `weights` row-major `[cout, cin·kh·kw]`, then the epilogue.
/// Panics where [`few_channels_fit`] is false.
pub fn few_channels_conv(
    image: &[f32],
    input: (usize, usize, usize),
    weights: &[f32],
    p: &crate::ops::Conv2dParams,
    output: (usize, usize),
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    few_channels_avx2::conv(image, input, weights, p, output, epilogue, out);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (image, input, weights, p, output, epilogue, out);
        unreachable!("few_channels_fit is false off x86-64");
    }
}

/// The images [`product_images`] and [`channel_panels_product_images`] take in one product;
/// more go in turns of this many, whose operands' lists are then held inline (a batch's pass
/// allocates nothing for them). A model's groups are smaller.
const MOST_IMAGES: usize = 8;

/// [`product_finished`] for each of several images: `outs[g] = w · rhs[g]`, each output
/// `rows × n` and each right-hand side `cols × n` (row-major), then the epilogue. On the own
/// kernels the images' columns are one product, so that each tile of weights, read from
/// memory once, serves every image (a batch's pointwise convolutions); each element gets the
/// same bits as from a call per image.
pub fn product_images(
    outs: &mut [&mut [f32]],
    rows: usize,
    w: &[f32],
    cols: usize,
    rhs: &[&[f32]],
    n: usize,
    epilogue: Epilogue<'_>,
) {
    assert_eq!(outs.len(), rhs.len(), "an output per image");
    assert!(w.len() >= rows * cols, "a weight row per output row");
    assert!(
        outs.iter().all(|o| o.len() >= rows * n) && rhs.iter().all(|r| r.len() >= cols * n),
        "whole images"
    );
    if let Some(bias) = epilogue.bias {
        assert!(bias.len() >= rows, "a bias per row");
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(kernel) = own_kernel()
        && rows > 0
        && cols > 0
        && n > 0
    {
        for (outs, rhs) in outs.chunks_mut(MOST_IMAGES).zip(rhs.chunks(MOST_IMAGES)) {
            let out: ArrayVec<*mut f32, MOST_IMAGES> =
                outs.iter_mut().map(|o| o.as_mut_ptr()).collect();
            let images = tiled::Images {
                rhs,
                out: &out,
                width: n,
            };
            // SAFETY: the CPU has the kernel's instruction set, the bounds were checked above,
            // and each output is a distinct `&mut`.
            unsafe {
                match kernel {
                    OwnKernel::Avx512 => tiled::product_images_finished::<avx512::Avx512>(
                        &images, rows, w, cols, epilogue,
                    ),
                    OwnKernel::Avx2 => tiled::product_images_finished::<avx2::Avx2>(
                        &images, rows, w, cols, epilogue,
                    ),
                }
            }
        }
        return;
    }
    for (out, rhs) in outs.iter_mut().zip(rhs) {
        product_finished(out, n, rows, w, cols, rhs, n, epilogue);
    }
}

/// `a · b + c`, fused where the target can.
#[inline(always)]
fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

/// `out[r, :] = Σ_k w[r, k] · rhs[k, :]` for row-major `w` (`cols` wide, `out.len() / n` rows
/// read), `rhs` (`cols` rows, `n` wide) and `out` (`n` wide, every element overwritten).
///
/// The result of each element depends only on its row of `w`, its column of `rhs` and `cols`,
/// never on how many rows `out` has: the threads split a product by rows.
pub fn product(out: &mut [f32], w: &[f32], cols: usize, rhs: &[f32], n: usize) {
    if n == 0 || out.is_empty() {
        return;
    }
    let rows = out.len() / n;
    assert_eq!(out.len(), rows * n, "whole output rows");
    product_strided(out, n, rows, w, cols, rhs, n)
}

/// [`product`] into `rows` output rows that lie `out_stride` apart in `out` (each `n` wide,
/// the rest of each stride untouched): a tile of an output's columns. Each element gets the
/// same bits as from [`product`].
pub fn product_strided(
    out: &mut [f32],
    out_stride: usize,
    rows: usize,
    w: &[f32],
    cols: usize,
    rhs: &[f32],
    n: usize,
) {
    if !needs_product(out, out_stride, rows, w, cols, rhs, n) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(kernel) = own_kernel() {
        // SAFETY: the CPU has the kernel's instruction set, and the bounds were checked above.
        return unsafe {
            let out = out.as_mut_ptr();
            let none = Epilogue::default();
            own_product(kernel, out, out_stride, rows, w, cols, (rhs, n), n, none)
        };
    }
    gemm_crate_product_strided(out, out_stride, rows, w, cols, rhs, n)
}

/// [`product_finished`] for a strip of the output's columns: `out` is `rows × m`, a view
/// into a product `rhs_stride` wide whose other columns other threads write, and `rhs` starts
/// at the strip's first column (its rows `rhs_stride` apart). For products with too few rows
/// to split by rows (MobileNetV2's 16- to 32-channel projections at up to 112×112). Each
/// element's chain of fused multiply-adds is the same whatever the strip, so the bits are
/// those of one whole product.
///
/// Panics where [`own_kernel_available`] is false or the operands are too short.
pub fn product_columns(
    mut out: ndarray::ArrayViewMut2<'_, f32>,
    w: &[f32],
    cols: usize,
    (rhs, rhs_stride): (&[f32], usize),
    epilogue: Epilogue<'_>,
) {
    let kernel = own_kernel().expect("the runtime's own product kernel");
    let (rows, m) = out.dim();
    if rows == 0 || m == 0 {
        return;
    }
    assert!(cols > 0, "a depth");
    assert!(w.len() >= rows * cols, "a weight row per output row");
    assert!(
        rhs.len() >= (cols - 1) * rhs_stride + m,
        "the strip of every right-hand row"
    );
    if let Some(bias) = epilogue.bias {
        assert!(bias.len() >= rows, "a bias per row");
    }
    // A view sliced to one row or one column has a stride of 0 along that axis (ndarray's
    // choice), which says nothing of the layout: one row needs no row stride, one column
    // no column stride.
    let strides = out.strides();
    assert!(
        (strides[1] == 1 || m == 1) && (strides[0] >= m as isize || rows == 1),
        "rows of contiguous columns"
    );
    let out_stride = if rows == 1 { m } else { strides[0] as usize };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has the kernel's instruction set; the view's rows are `m` contiguous
    // values `out_stride` apart, borrowed mutably for this call; the operands' bounds are
    // checked.
    unsafe {
        own_product(
            kernel,
            out.as_mut_ptr(),
            out_stride,
            rows,
            w,
            cols,
            (rhs, rhs_stride),
            m,
            epilogue,
        )
    }
}

/// `out = W[first_row.., :] · rhs`, then `epilogue` (its bias from row `first_row`), for
/// weights packed as [`ChannelPanels`]: `out` holds whole rows `n` wide, `rhs` is `w.cols()`
/// rows of `n`. The output channels are in the vector lanes (see [`ChannelPanels`]); the bits
/// are those of [`product_finished`] on the row-major weights.
///
/// Panics where [`channel_panels_available`] is false, `first_row` is not a multiple of 16 (a
/// vector of a panel) or the operands are too short.
pub fn channel_panels_product(
    out: &mut [f32],
    w: &ChannelPanels,
    first_row: usize,
    rhs: &[f32],
    n: usize,
    epilogue: Epilogue<'_>,
) {
    let Some(operands) = channel_panels_operands(out, w, first_row, rhs, n, epilogue) else {
        return;
    };
    // No own kernel elsewhere: `channel_panels_operands` has panicked.
    #[cfg(not(target_arch = "x86_64"))]
    drop(operands);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has the kernel's instruction set and the operands are checked
    // (`channel_panels_operands`).
    unsafe {
        match own_kernel() {
            Some(OwnKernel::Avx512) => channel_panels::product(operands),
            _ => channel_panels::product_avx2(&mut [operands]),
        }
    }
}

/// The operands of a product on channel panels ([`channel_panels_product`]), checked: an own
/// kernel runs and `w`'s panels are its width, the output is whole rows of the weights from a
/// vector's first row, and `rhs` and the bias hold what the rows read. `None` where there is
/// nothing to compute.
fn channel_panels_operands<'a>(
    out: &'a mut [f32],
    w: &'a ChannelPanels,
    first_row: usize,
    rhs: &'a [f32],
    n: usize,
    epilogue: Epilogue<'a>,
) -> Option<channel_panels::Operands<'a>> {
    assert!(
        channel_panels_available(),
        "an own kernel for channel panels"
    );
    let panel = match own_kernel() {
        Some(OwnKernel::Avx512) => channel_panels::PANEL,
        _ => channel_panels::NARROW_PANEL,
    };
    assert_eq!(w.panel_rows(), panel, "panels of this CPU's kernel");
    if n == 0 || out.is_empty() {
        return None;
    }
    let rows = out.len() / n;
    assert_eq!(out.len(), rows * n, "whole output rows");
    assert_eq!(first_row % 16, 0, "a vector's first row");
    assert!(first_row + rows <= w.rows(), "rows of the weights");
    assert!(rhs.len() >= w.cols() * n, "a right-hand row per step");
    if let Some(bias) = epilogue.bias {
        assert!(bias.len() >= rows, "a bias per row");
    }
    Some(channel_panels::Operands {
        out,
        w,
        first_row,
        rhs,
        n,
        epilogue,
    })
}

/// Whether [`channel_panels_product_images`] reads each panel once for all the images (the
/// AVX2 kernel), rather than running an image at a time (AVX-512, whose grouped speed was
/// not measured).
pub fn channel_panels_share_images() -> bool {
    own_kernel() == Some(OwnKernel::Avx2)
}

/// [`channel_panels_product`] of the whole matrix for each of several images: `outs[g] = W ·
/// rhs[g]`, then the epilogue, each output `w.rows() × n` and each right-hand side
/// `w.cols() × n` (row-major). On AVX2 a panel serves every image while it is in cache, as
/// [`product_images`] does for row-major weights; each element gets the bits of a call per
/// image.
///
/// Panics where [`channel_panels_available`] is false or the operands are too short.
pub fn channel_panels_product_images(
    outs: &mut [&mut [f32]],
    w: &ChannelPanels,
    rhs: &[&[f32]],
    n: usize,
    epilogue: Epilogue<'_>,
) {
    assert_eq!(outs.len(), rhs.len(), "an output per image");
    assert!(
        outs.iter().all(|o| o.len() == w.rows() * n),
        "every row of the weights"
    );
    #[cfg(target_arch = "x86_64")]
    if channel_panels_share_images() {
        for (outs, rhs) in outs.chunks_mut(MOST_IMAGES).zip(rhs.chunks(MOST_IMAGES)) {
            let mut images: ArrayVec<channel_panels::Operands<'_>, MOST_IMAGES> = outs
                .iter_mut()
                .zip(rhs)
                .filter_map(|(out, rhs)| channel_panels_operands(out, w, 0, rhs, n, epilogue))
                .collect();
            // SAFETY: the CPU has AVX2 and FMA (the own kernel is AVX2's), and the operands
            // are checked (`channel_panels_operands`).
            unsafe { channel_panels::product_avx2(&mut images) };
        }
        return;
    }
    for (out, rhs) in outs.iter_mut().zip(rhs) {
        channel_panels_product(out, w, 0, rhs, n, epilogue);
    }
}

/// The runtime's own dense product kernels (`tiled`), one per instruction set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnKernel {
    /// 8 × 48 register tiles of 16-lane vectors (`avx512`).
    Avx512,
    /// 6 × 16 register tiles of 8-lane vectors, with FMA (`avx2`).
    Avx2,
}

/// Which of the runtime's own product kernels runs on this CPU: AVX-512F's, else AVX2 with
/// FMA's, else none (the `gemm` crate's products, with im2col), at most the level
/// [`crate::cpu`] allows. Setting the environment
/// variable `CXRM_GEMM_CRATE` sends every product to the `gemm` crate instead, so that a
/// benchmark can compare the two on a whole model in one run. Read once.
pub fn own_kernel() -> Option<OwnKernel> {
    static CHOSEN: std::sync::OnceLock<Option<OwnKernel>> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        if std::env::var_os("CXRM_GEMM_CRATE").is_some() {
            return None;
        }
        match crate::cpu::level() {
            crate::cpu::Level::Avx512 => Some(OwnKernel::Avx512),
            crate::cpu::Level::Avx2 => Some(OwnKernel::Avx2),
            crate::cpu::Level::Portable => None,
        }
    })
}

/// Whether one of the runtime's own product kernels runs ([`own_kernel`]), and with it the
/// entries only they have: [`shifted_product`] and [`product_columns`].
pub fn own_kernel_available() -> bool {
    own_kernel().is_some()
}

/// Whether the products whose weights are packed as [`ChannelPanels`] run
/// ([`channel_panels_product`]): wherever one of the own kernels does.
pub fn channel_panels_available() -> bool {
    own_kernel().is_some()
}

/// Whether [`sparse_rows_times`] sums each strip of an output row in registers (AVX-512, or
/// AVX2 with FMA, beside the own dense kernels), which makes a sparse product worth it at
/// higher densities than one that adds into memory. On AVX2 (criterion, one thread, Zen 3) a
/// 728×728 product with 30% of its weights kept took 0.45 against 0.56 ms dense at 5×5,
/// 1.12 against 1.70 at 9×9 and 3.78 against 6.82 at 18×18; with 50% kept the dense one was
/// ahead (1.79 against 1.61, 7.01 against 6.31), as on AVX-512.
pub fn sparse_in_registers() -> bool {
    own_kernel().is_some()
}

/// [`tiled::product_finished`] on `kernel`'s tiles.
///
/// # Safety
/// As for [`tiled::product_finished`], the CPU having `kernel`'s instruction set.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn own_product(
    kernel: OwnKernel,
    out: *mut f32,
    out_stride: usize,
    rows: usize,
    w: &[f32],
    cols: usize,
    rhs: (&[f32], usize),
    n: usize,
    epilogue: Epilogue<'_>,
) {
    // SAFETY: as for this function.
    unsafe {
        match kernel {
            OwnKernel::Avx512 => tiled::product_finished::<avx512::Avx512>(
                out, out_stride, rows, w, cols, rhs, n, epilogue,
            ),
            OwnKernel::Avx2 => tiled::product_finished::<avx2::Avx2>(
                out, out_stride, rows, w, cols, rhs, n, epilogue,
            ),
        }
    }
}

/// A stride-1 convolution as one product without im2col: `out[r·out_stride + j] =
/// Σ_c Σ_t w[r·cols + c·taps.len() + t] · padded[c·plane + taps[t] + j]` for `r < rows`,
/// `j < n`, where `padded` holds the input's zero-padded planes `plane` values apart and
/// `taps` each window tap's offset in a plane. The kernel packs the shifted rows straight into
/// its panels, so the windows are copied once, into cache, and never as a whole im2col
/// matrix. Each element is one fused multiply-add chain in `k` order, as in [`product`].
///
/// Panics where [`own_kernel_available`] is false or the slices are too short.
#[allow(clippy::too_many_arguments)]
pub fn shifted_product(
    out: &mut [f32],
    out_stride: usize,
    rows: usize,
    w: &[f32],
    cols: usize,
    (padded, plane, taps): (&[f32], usize, &[usize]),
    n: usize,
    epilogue: Epilogue<'_>,
) {
    let kernel = own_kernel().expect("the runtime's own product kernel");
    assert!(
        !taps.is_empty() && cols.is_multiple_of(taps.len()),
        "whole windows per channel"
    );
    if n == 0 || rows == 0 || cols == 0 {
        return;
    }
    assert!(out_stride >= n && out.len() >= (rows - 1) * out_stride + n);
    assert!(w.len() >= rows * cols, "a weight row per output row");
    let last = (cols / taps.len() - 1) * plane + taps.iter().max().expect("a tap");
    assert!(
        padded.len() >= last + n,
        "every shifted row inside the planes"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has the kernel's instruction set, and every step's row ends inside
    // `padded`.
    unsafe {
        let out = out.as_mut_ptr();
        let rhs = (padded, tiled::RhsRows::Shifted { plane, taps });
        match kernel {
            OwnKernel::Avx512 => {
                tiled::packed::<avx512::Avx512>(out, out_stride, rows, w, cols, rhs, n, epilogue)
            }
            OwnKernel::Avx2 => {
                tiled::packed::<avx2::Avx2>(out, out_stride, rows, w, cols, rhs, n, epilogue)
            }
        }
    }
}

/// Checks a strided product's bounds (panics on slices too short for the contract) and
/// handles the empty cases: false when nothing is left to compute (no rows or columns, or a
/// depth of 0, whose output rows are then zeros).
fn needs_product(
    out: &mut [f32],
    out_stride: usize,
    rows: usize,
    w: &[f32],
    cols: usize,
    rhs: &[f32],
    n: usize,
) -> bool {
    if n == 0 || rows == 0 {
        return false;
    }
    assert!(out_stride >= n, "rows do not overlap");
    assert!(
        out.len() >= (rows - 1) * out_stride + n,
        "room for every output row"
    );
    assert!(w.len() >= rows * cols, "a weight row per output row");
    assert!(rhs.len() >= cols * n, "a right-hand row per weight column");
    if cols == 0 {
        for r in 0..rows {
            out[r * out_stride..r * out_stride + n].fill(0.0);
        }
        return false;
    }
    true
}

/// [`product_strided`] through the `gemm` crate, the path for CPUs without AVX2 and FMA (and
/// the baseline the benchmarks measure the own kernels against). The bounds are checked as
/// there.
pub fn gemm_crate_product_strided(
    out: &mut [f32],
    out_stride: usize,
    rows: usize,
    w: &[f32],
    cols: usize,
    rhs: &[f32],
    n: usize,
) {
    if !needs_product(out, out_stride, rows, w, cols, rhs, n) {
        return;
    }
    if rows == 1 && n > 1 {
        // `gemm` computes a single row as a matrix-vector product, which rounds differently
        // from its blocked kernel: compute it as two equal rows, as any larger split would.
        let twice = [&w[..cols], &w[..cols]].concat();
        let mut pair = vec![0.0f32; 2 * n];
        gemm_crate_product_strided(&mut pair, n, 2, &twice, cols, rhs, n);
        out[..n].copy_from_slice(&pair[..n]);
        return;
    }
    for (block, start) in (0..cols).step_by(DEPTH_BLOCK).enumerate() {
        let depth = DEPTH_BLOCK.min(cols - start);
        // SAFETY: `gemm` reads `rows × depth` weights at `w[start..]` with row stride `cols`
        // (inside `w`, whose length was checked above), `depth × n` values of `rhs` from row
        // `start` with row stride `n` (inside `rhs`), and writes `rows × n` outputs with row
        // stride `out_stride` (inside `out`, checked above). Column strides are 1. `out` is not
        // aliased by `w` or `rhs`: it is a unique borrow.
        unsafe {
            gemm::gemm(
                rows,
                n,
                depth,
                out.as_mut_ptr(),
                1,
                out_stride as isize,
                block > 0,
                w[start..].as_ptr(),
                1,
                cols as isize,
                rhs[start * n..].as_ptr(),
                1,
                n as isize,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sparse::sparse_rows_times_portable;
    use super::*;
    use cxrm_format::testing::uniform;

    fn close(got: &[f32], want: &[f64], cols: usize) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            // Each output sums `cols` products of values in [-0.5, 0.5).
            let tol = 1e-6 * (cols as f64).max(1.0);
            assert!((*g as f64 - w).abs() <= tol, "{g} vs {w}");
        }
    }

    /// `w[rows, :] · rhs` in f64, the plain loop: `w` is `cols` wide, `rhs` is `n` wide (a
    /// vector when `n` is 1).
    fn plain(
        w: &[f32],
        cols: usize,
        rhs: &[f32],
        n: usize,
        rows: std::ops::Range<usize>,
    ) -> Vec<f64> {
        rows.flat_map(|r| {
            (0..n).map(move |j| {
                (0..cols)
                    .map(|k| w[r * cols + k] as f64 * rhs[k * n + j] as f64)
                    .sum()
            })
        })
        .collect()
    }

    #[test]
    fn product_matches_the_plain_loop_for_every_block_shape() {
        // Row counts around gemm's register blocks, columns around its vector width, depths
        // around the depth blocks (256 steps on AVX-512, 768 on AVX2).
        for rows in [1, 2, 5, 6, 7, 13, 50] {
            for n in [1, 3, 15, 16, 17, 40, 64] {
                for cols in [0, 1, 9, 25, 600, 1600] {
                    let w = uniform(rows * cols, (rows * 100 + n) as u64);
                    let rhs = uniform(cols * n, (cols * 1000 + n) as u64);
                    let mut out = vec![f32::NAN; rows * n];
                    product(&mut out, &w, cols, &rhs, n);
                    close(&out, &plain(&w, cols, &rhs, n, 0..rows), cols);
                }
            }
        }
    }

    #[test]
    fn in_place_products_over_many_chunks_match_the_plain_loop_whatever_the_strip() {
        if !own_kernel_available() {
            return;
        }
        // Up to 32 rows run in place, the columns in chunks of the right-hand side's L1 share:
        // shallow products make chunks of many strips, and these widths make several chunks
        // and a ragged last strip.
        for (rows, cols, n) in [(16, 32, 2000), (24, 9, 1901), (32, 27, 3001), (8, 96, 777)] {
            let w = uniform(rows * cols, (rows + cols) as u64);
            let rhs = uniform(cols * n, n as u64);
            let mut whole = vec![f32::NAN; rows * n];
            product(&mut whole, &w, cols, &rhs, n);
            close(&whole, &plain(&w, cols, &rhs, n, 0..rows), cols);
            // Any strip of the columns gives the same bits as the whole product.
            for at in [1, 48 * 7 + 5, n / 2] {
                let mut parts = vec![f32::NAN; rows * n];
                let mut view = ndarray::ArrayViewMut2::from_shape((rows, n), &mut parts[..])
                    .expect("rows × n");
                let epilogue = Epilogue::default();
                product_columns(
                    view.slice_mut(ndarray::s![.., ..at]),
                    &w,
                    cols,
                    (&rhs, n),
                    epilogue,
                );
                let rest = (&rhs[at..], n);
                product_columns(
                    view.slice_mut(ndarray::s![.., at..]),
                    &w,
                    cols,
                    rest,
                    epilogue,
                );
                let same = whole
                    .iter()
                    .zip(&parts)
                    .all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(same, "{rows}x{cols}x{n} split at column {at}");
            }
        }
    }

    #[test]
    fn the_last_few_columns_get_the_bits_of_a_tile() {
        // Widths a few columns past a vector (Xception's 81 and 25 pixels among them), taken
        // with the rows in the lanes where the CPU has that kernel; the same columns inside a
        // product five columns wider fall in a tile's masked vector instead. Rows past the
        // in-place limit (the packed path), not a whole number of vectors; depths short, odd
        // and deeper than a depth block; widths of one and of several blocks of columns.
        // Without the own kernels the `gemm` crate blocks each width its own way, and nothing
        // needs a column's bits to follow its neighbours' there.
        if !own_kernel_available() {
            return;
        }
        let activations = [Activation::None, Activation::Relu, Activation::Relu6];
        for (rows, cols) in [(33, 1), (40, 7), (70, 9), (45, 300), (50, 600)] {
            let w = uniform(rows * cols, (rows + cols) as u64);
            let bias: Vec<f32> = uniform(rows, 3).iter().map(|b| 4.0 * b).collect();
            for n in [1, 2, 3, 9, 10, 11, 25, 81, 513] {
                let wide = n + 5;
                let rhs = uniform(cols * wide, (n * 31 + cols) as u64);
                let narrow: Vec<f32> = rhs
                    .chunks_exact(wide)
                    .flat_map(|r| &r[..n])
                    .copied()
                    .collect();
                for (i, activation) in activations.into_iter().enumerate() {
                    let epilogue = Epilogue {
                        bias: (i != 1).then_some(&bias[..]),
                        activation,
                    };
                    let mut want = vec![f32::NAN; rows * wide];
                    product_finished(&mut want, wide, rows, &w, cols, &rhs, wide, epilogue);
                    let mut got = vec![f32::NAN; rows * n];
                    product_finished(&mut got, n, rows, &w, cols, &narrow, n, epilogue);
                    let want: Vec<f32> = want
                        .chunks_exact(wide)
                        .flat_map(|r| &r[..n])
                        .copied()
                        .collect();
                    assert_eq!(bits(&got), bits(&want), "{rows}x{cols}x{n}, {activation:?}");
                }
            }
        }
    }

    #[test]
    fn images_side_by_side_get_the_bits_of_a_product_each() {
        // Images narrower than a panel (several in one), a panel and a few columns wide
        // (Xception's 25 and 81 pixels), and wider than a block of columns; rows in place and
        // packed; depths short and deeper than a depth block; image counts that end a product
        // inside a panel and on a few columns.
        for (rows, cols) in [(20, 5), (50, 9), (70, 300)] {
            let w = uniform(rows * cols, (rows + cols) as u64);
            let bias: Vec<f32> = uniform(rows, 3).iter().map(|b| 4.0 * b).collect();
            let epilogue = Epilogue {
                bias: Some(&bias),
                activation: Activation::Relu,
            };
            for n in [1, 3, 7, 16, 25, 81, 1100] {
                for images in [1, 2, 3, 5] {
                    let rhs: Vec<Vec<f32>> = (0..images)
                        .map(|g| uniform(cols * n, (g * 7 + n) as u64))
                        .collect();
                    let rhs: Vec<&[f32]> = rhs.iter().map(|r| &r[..]).collect();
                    let mut got = vec![vec![f32::NAN; rows * n]; images];
                    let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|o| &mut o[..]).collect();
                    product_images(&mut outs, rows, &w, cols, &rhs, n, epilogue);
                    for (g, image) in rhs.iter().enumerate() {
                        let mut want = vec![f32::NAN; rows * n];
                        product_finished(&mut want, n, rows, &w, cols, image, n, epilogue);
                        let at = format!("{rows}x{cols}, {images} images of {n}, image {g}");
                        assert_eq!(bits(&got[g]), bits(&want), "{at}");
                    }
                }
            }
        }
    }

    #[test]
    fn product_rows_do_not_depend_on_how_the_rows_are_split() {
        // Deep enough for several depth blocks, and sizes on both sides of gemm's small-
        // product path (64 × 64), where it would otherwise choose another depth blocking.
        for (rows, cols, n) in [(100, 1300, 50), (70, 1100, 81), (9, 700, 200)] {
            let w = uniform(rows * cols, 11);
            let rhs = uniform(cols * n, 12);
            let mut whole = vec![0.0f32; rows * n];
            product(&mut whole, &w, cols, &rhs, n);
            for split in [1, 2, 8, rows / 2, rows - 1] {
                let mut parts = vec![0.0f32; rows * n];
                let (a, b) = parts.split_at_mut(split * n);
                product(a, &w, cols, &rhs, n);
                product(b, &w[split * cols..], cols, &rhs, n);
                let same = whole
                    .iter()
                    .zip(&parts)
                    .all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(same, "{rows}x{cols}x{n} split at {split}");
            }
        }
    }

    #[test]
    fn channel_panels_give_the_bits_of_the_row_major_product() {
        if !channel_panels_available() {
            return;
        }
        let activations = [Activation::None, Activation::Relu, Activation::Relu6];
        for (rows, n, cols) in [
            (16, 81, 300),
            (40, 9, 7),
            (50, 25, 1),
            (96, 49, 33),
            (100, 10, 64),
            (136, 25, 20),
        ] {
            let w = uniform(rows * cols, (rows * 7 + cols) as u64);
            let rhs = uniform(cols * n, (n * 11 + cols) as u64);
            let bias: Vec<f32> = uniform(rows, 5).iter().map(|b| 8.0 * b).collect();
            let panels = ChannelPanels::pack(&w, rows, cols).unwrap();
            assert_eq!(panels.to_rows(), w);
            for (i, activation) in activations.into_iter().enumerate() {
                let epilogue = Epilogue {
                    bias: (i != 1).then_some(&bias[..]),
                    activation,
                };
                let mut want = vec![f32::NAN; rows * n];
                product_finished(&mut want, n, rows, &w, cols, &rhs, n, epilogue);
                // Whole, and in two parts cut at every vector's boundary (threads' parts),
                // inside a panel or between two.
                let mut got = vec![f32::NAN; rows * n];
                channel_panels_product(&mut got, &panels, 0, &rhs, n, epilogue);
                assert_eq!(bits(&got), bits(&want), "{rows}x{cols}x{n}");
                for cut in (16..rows).step_by(16) {
                    got.fill(f32::NAN);
                    let (head, rest) = got.split_at_mut(cut * n);
                    channel_panels_product(head, &panels, 0, &rhs, n, epilogue);
                    let from = epilogue.from_row(cut);
                    channel_panels_product(rest, &panels, cut, &rhs, n, from);
                    assert_eq!(bits(&got), bits(&want), "{rows}x{cols}x{n} cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn images_on_channel_panels_get_the_bits_of_a_product_each() {
        if !channel_panels_available() {
            return;
        }
        for (rows, cols, n) in [(64, 40, 25), (40, 9, 36), (50, 7, 3)] {
            let w = uniform(rows * cols, (rows + cols) as u64);
            let panels = ChannelPanels::pack(&w, rows, cols).unwrap();
            let bias = uniform(rows, 9);
            let epilogue = Epilogue {
                bias: Some(&bias),
                activation: Activation::Relu,
            };
            let rhs: Vec<Vec<f32>> = (0..3).map(|g| uniform(cols * n, 20 + g)).collect();
            let rhs_refs: Vec<&[f32]> = rhs.iter().map(|r| &r[..]).collect();
            let mut outs = vec![vec![f32::NAN; rows * n]; 3];
            let mut out_refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
            channel_panels_product_images(&mut out_refs, &panels, &rhs_refs, n, epilogue);
            for (g, out) in outs.iter().enumerate() {
                let mut want = vec![f32::NAN; rows * n];
                product_finished(&mut want, n, rows, &w, cols, &rhs[g], n, epilogue);
                assert_eq!(bits(out), bits(&want), "{rows}x{cols}x{n}, image {g}");
            }
        }
    }

    #[test]
    fn scaled_channel_panels_are_the_scaled_rows() {
        let (rows, cols) = (50, 3);
        let mut w = uniform(rows * cols, 9);
        let mut panels = ChannelPanels::pack(&w, rows, cols).unwrap();
        let scale: Vec<f32> = (0..rows).map(|r| r as f32 - 7.5).collect();
        panels.scale_rows(&scale);
        for (row, s) in w.chunks_exact_mut(cols).zip(&scale) {
            row.iter_mut().for_each(|v| *v *= s);
        }
        assert_eq!(panels.to_rows(), w);
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn matvec_matches_the_plain_loop_for_every_block_shape() {
        for rows in [1, 3, 4, 5, 10] {
            for cols in [0, 1, 15, 16, 17, 33, 800] {
                let w = uniform(rows * cols, rows as u64);
                let x = uniform(cols, cols as u64 + 99);
                let mut out = vec![f32::NAN; rows];
                matvec(&mut out, &w, &x);
                close(&out, &plain(&w, cols, &x, 1, 0..rows), cols);
            }
        }
    }

    #[test]
    fn sparse_kernels_match_the_plain_loop_on_any_block_of_rows() {
        let (rows, cols, n) = (9, 37, 21);
        let mut w = uniform(rows * cols, 5);
        w.iter_mut().step_by(3).for_each(|v| *v = 0.0);
        let (mut row_ptr, mut col, mut val) = (vec![0], vec![], vec![]);
        for r in 0..rows {
            for c in 0..cols {
                if w[r * cols + c] != 0.0 {
                    col.push(c as u32);
                    val.push(w[r * cols + c]);
                }
            }
            row_ptr.push(col.len());
        }
        let rhs = uniform(cols * n, 6);
        let x = uniform(cols, 7);
        // Rows 2..8 only, as a split hands them to a thread.
        let block = SparseRows {
            row_ptr: &row_ptr[2..9],
            col: &col,
            val: &val,
        };
        let mut out = vec![f32::NAN; 6 * n];
        sparse_rows_times(&mut out, block, &rhs, n);
        close(&out, &plain(&w, cols, &rhs, n, 2..8), cols);
        let mut y = vec![f32::NAN; 6];
        sparse_matvec(&mut y, block, &x);
        close(&y, &plain(&w, cols, &x, 1, 2..8), cols);
    }

    #[test]
    fn the_sparse_product_gives_the_portable_kernels_bits_at_every_width() {
        // One strip of one to seven vectors (rows up to 112), a masked last vector, and rows
        // wider, in strips of four vectors and the rest.
        let (rows, cols) = (7, 50);
        let mut w = uniform(rows * cols, 8);
        w.iter_mut().step_by(4).for_each(|v| *v = 0.0);
        let csr = crate::ops::Csr::from_dense(&w, rows, cols);
        // Rows 1.., as a split hands them to a thread.
        let block = SparseRows {
            row_ptr: &csr.row_ptr[1..],
            col: &csr.col,
            val: &csr.val,
        };
        for n in [
            1, 7, 8, 9, 15, 16, 17, 47, 48, 49, 81, 100, 112, 113, 128, 129, 300,
        ] {
            let rhs = uniform(cols * n, 9);
            let mut fast = vec![f32::NAN; (rows - 1) * n];
            let mut portable = vec![f32::NAN; (rows - 1) * n];
            sparse_rows_times(&mut fast, block, &rhs, n);
            sparse_rows_times_portable(&mut portable, block, &rhs, n);
            close(&fast, &plain(&w, cols, &rhs, n, 1..rows), cols);
            // Both fuse their multiply-adds where the CPU has FMA (every AVX-512 CPU does).
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("fma") {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&portable), "{n} columns");
            }
        }
    }
}
