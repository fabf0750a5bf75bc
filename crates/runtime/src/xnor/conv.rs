//! The binary convolution: signs and scales of the input, the counts of differing bits per row and
//! position, and the outputs they make.

use super::borders::{BorderRun, Borders};
use super::pixels::{pixels, window_means};
use super::popcount::{Popcount, TILE_ROWS, WORK_PER_WORD, count_differences};
use super::weights::sign;
use super::windows::gather_windows;
use super::*;

/// `xnor_conv2d`, or a `sign` and the binary `conv2d` it feeds (groups 1, checked at load).
pub fn conv2d(
    x: ArrayView4<'_, f32>,
    weight: &XnorWeight<'_>,
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    input: &SignInput,
) -> Array4<f32> {
    let (n, _, h, w) = x.dim();
    let (oh, ow) = p.output_size(h, w).expect("checked at load");
    let mut out = Array4::zeros((n, weight.rows(), oh, ow));
    let dst = out.as_slice_mut().expect("a fresh array is contiguous");
    conv2d_into(x, weight, bias, p, input, dst);
    out
}

/// [`conv2d`] into `dst` (`[n, cout, oh, ow]`, every element written), as a model's pass
/// runs it: into its arena, the popcount path's rows split over the pass's threads.
pub fn conv2d_into(
    x: ArrayView4<'_, f32>,
    weight: &XnorWeight<'_>,
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    input: &SignInput,
    dst: &mut [f32],
) {
    conv2d_with(Popcount::fastest(), x, weight, bias, p, input, dst)
}

/// `K` per output position of one image: XNOR-Net's window means, or 1 for unscaled layers
/// (`v · 1 + b` is `v + b` exactly), in a buffer of this thread's pool.
pub(super) fn position_scales(
    input: &SignInput,
    magnitudes: &[f32],
    dims: (usize, usize, usize),
    p: &Conv2dParams,
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    let mut scales = scratch::take();
    if input.scaled() {
        window_means(magnitudes, dims, p, (oh, ow), &mut scales);
    } else {
        scales.resize(oh * ow, 1.0);
    }
    scales
}

/// [`conv2d_into`] with the popcount kernel given, so that tests can hold every kernel to
/// the same bits.
pub(super) fn conv2d_with(
    kernel: Popcount,
    x: ArrayView4<'_, f32>,
    weight: &XnorWeight<'_>,
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    input: &SignInput,
    dst: &mut [f32],
) {
    let (_, c, h, w) = x.dim();
    let (oh, ow) = p.output_size(h, w).expect("checked at load");
    let image_len = weight.rows() * oh * ow;
    assert_eq!(dst.len(), x.dim().0 * image_len, "one output per element");
    match weight {
        XnorWeight::Float(m) => {
            let mut signs = scratch::take::<f32>();
            signs_of(x, input, &mut signs);
            let signs_view = ArrayView4::from_shape(x.dim(), &signs[..]).expect("x's shape");
            ops::conv2d_into(signs_view, m, None, p, ops::Activation::None, dst);
            scratch::give(signs);
            for (image, out) in x.outer_iter().zip(dst.chunks_exact_mut(image_len)) {
                let pixels = pixels(image, false, input);
                let k = position_scales(input, &pixels.magnitudes, (c, h, w), p, (oh, ow));
                for (o, plane) in out.chunks_exact_mut(oh * ow).enumerate() {
                    scale_and_shift(plane, &k, bias.map_or(0.0, |bias| bias[o]));
                }
                scratch::give(k);
                pixels.give_back();
            }
        }
        XnorWeight::Bits(bits) => {
            let conv = SignConv::new(kernel, bits, p, (c, h, w), (oh, ow));
            for (image, out) in x.outer_iter().zip(dst.chunks_exact_mut(image_len)) {
                let pixels = pixels(image, true, input);
                let k = position_scales(input, &pixels.magnitudes, (c, h, w), p, (oh, ow));
                conv.image(&pixels.signs, &k, bias, out);
                scratch::give(k);
                pixels.give_back();
            }
        }
    }
}

/// `x` (`[n, c, …]`, any layout; a dense layer's `c` is its input features) as signs `±1` at
/// each channel's threshold, row-major into `signs` (emptied first).
pub(super) fn signs_of<D>(
    x: ndarray::ArrayView<'_, f32, D>,
    input: &SignInput,
    signs: &mut Vec<f32>,
) where
    D: ndarray::RemoveAxis,
    D::Smaller: ndarray::RemoveAxis,
{
    signs.clear();
    for image in x.outer_iter() {
        for (ch, channel) in image.outer_iter().enumerate() {
            let threshold = input.at(ch);
            signs.extend(channel.iter().map(|&v| sign(v, threshold)));
        }
    }
}

/// `v · K + b` over one output plane, `K` per position.
pub(super) fn scale_and_shift(plane: &mut [f32], scales: &[f32], bias: f32) {
    for (v, k) in plane.iter_mut().zip(scales) {
        *v = *v * k + bias;
    }
}

/// What turns row `o`'s sign products into its outputs: `α[o]` and `b[o]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct RowScale {
    alpha: f32,
    bias: f32,
}

/// One output element from its sign product: `(α · dot) · K + b`, the float path's `v · K + b`
/// with `v = α · dot`.
#[inline]
pub(super) fn output(dot: i32, row: RowScale, scale: f32) -> f32 {
    row.alpha * dot as f32 * scale + row.bias
}

/// One output plane from its counts of differing bits, as if no tap were in the padding:
/// [`output`] of `cols − 2 · differ` (the border positions are then rewritten).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2", "aarch64+neon"))]
pub(super) fn output_plane(
    plane: &mut [f32],
    differ: &[u32],
    cols: i32,
    row: RowScale,
    scales: &[f32],
) {
    assert_eq!(plane.len(), differ.len(), "every element written");
    for ((v, &d), &k) in plane.iter_mut().zip(differ).zip(scales) {
        *v = output(cols - 2 * d as i32, row, k);
    }
}

/// The border positions of an [`output_plane`] again, from their true products: less what
/// their padded taps added (`border_dots`, this row's per pattern).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2", "aarch64+neon"))]
pub(super) fn rewrite_border(
    plane: &mut [f32],
    differ: &[u32],
    cols: i32,
    row: RowScale,
    scales: &[f32],
    (runs, border_dots): (&[BorderRun], &[i32]),
) {
    for run in runs {
        let dots = cols - border_dots[run.pattern];
        for i in 0..run.len {
            let pos = run.start + i * run.step;
            plane[pos] = output(dots - 2 * differ[pos] as i32, row, scales[pos]);
        }
    }
}

/// The popcount path of one layer call: everything but the image, prepared once.
pub(super) struct SignConv<'a> {
    kernel: Popcount,
    /// In `(ky, kx, c)` column order ([`BitRows::for_conv`]).
    w: &'a BitRows,
    p: &'a Conv2dParams,
    /// `(c, h, w)`.
    input: (usize, usize, usize),
    /// `(oh, ow)`.
    output: (usize, usize),
    /// [`BitRows::tiles_for`] the kernel.
    tiles: Cow<'a, [u64]>,
    /// [`BitRows::borders_for`] this geometry.
    borders: Cow<'a, Borders>,
}

impl<'a> SignConv<'a> {
    fn new(
        kernel: Popcount,
        w: &'a BitRows,
        p: &'a Conv2dParams,
        input: (usize, usize, usize),
        output: (usize, usize),
    ) -> SignConv<'a> {
        SignConv {
            kernel,
            w,
            p,
            input,
            output,
            tiles: w.tiles_for(kernel),
            borders: w.borders_for(p, input, output),
        }
    }

    /// One image (its [`Pixels`] signs) into `out` `[cout, oh · ow]`: per row and position,
    /// `(α · dot) · K + b` with `dot = Σ_k sign(x)[k, pos] · sign(w)[o, k]`, which is
    /// `cols − 2 · popcount(x XOR w)` over the whole window less what the padded taps added.
    /// The windows are gathered once; the rows are split over the pass's threads in whole
    /// blocks, each row counted by the same code whatever the split.
    ///
    /// [`Pixels`]: super::pixels::Pixels
    fn image(&self, signs: &[u64], scales: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.w.rows * scales.len(),
            "every element written"
        );
        let (words, positions) = (self.w.words, scales.len());
        let windows = gather_windows(signs, self.input, words, self.p, self.output);
        let windows = Windows {
            stride: windows.len() / words,
            words: self.kernel.lay_out_windows(windows),
        };
        let row_block = self.kernel.row_block();
        parallel::split_rows(
            out,
            positions,
            row_block,
            WORK_PER_WORD * words * positions,
            &|first, part| self.rows(&windows, (scales, bias), first, part),
        );
        scratch::give(windows.words);
    }

    /// Rows `first..` of one image's output into `part` (whole planes; `first` a multiple of
    /// the kernel's row block), a block of rows at a time, so that the counts are still in
    /// L2 when finished.
    fn rows(
        &self,
        windows: &Windows,
        (scales, bias): (&[f32], Option<&[f32]>),
        first: usize,
        part: &mut [f32],
    ) {
        let positions = scales.len();
        let row_block = self.kernel.row_block();
        let tile_len = self.tiles.len() / self.w.rows.div_ceil(TILE_ROWS);
        let rows = part.len() / positions;
        // The tiles of these rows, with the zero rows that complete the layer's last tile.
        let tiles = &self.tiles
            [first / TILE_ROWS * tile_len..(first + rows).div_ceil(TILE_ROWS) * tile_len];
        let mut differ = scratch::take::<u32>();
        differ.resize(row_block * windows.stride, 0);
        let mut planes = part
            .chunks_exact_mut(positions)
            .enumerate()
            .map(|(i, plane)| (first + i, plane));
        let patterns = self.borders.dots.len() / self.w.rows;
        let cols = self.w.cols as i32;
        for tiles in tiles.chunks(row_block / TILE_ROWS * tile_len) {
            let differ = &mut differ[..tiles.len() / tile_len * TILE_ROWS * windows.stride];
            count_differences(self.kernel, differ, tiles, &windows.words, self.w.words);
            for (differ, (o, plane)) in differ.chunks_exact(windows.stride).zip(&mut planes) {
                let row = RowScale {
                    alpha: self.w.alpha[o],
                    bias: bias.map_or(0.0, |bias| bias[o]),
                };
                let differ = &differ[..positions];
                output_plane(plane, differ, cols, row, scales);
                let border_dots = &self.borders.dots[o * patterns..(o + 1) * patterns];
                rewrite_border(
                    plane,
                    differ,
                    cols,
                    row,
                    scales,
                    (&self.borders.runs, border_dots),
                );
            }
        }
        scratch::give(differ);
    }
}

/// One image's gathered windows ([`gather_windows`]) as the kernel lays them out, and the
/// positions they hold (whole panels) per word.
pub(super) struct Windows {
    words: Vec<u64>,
    stride: usize,
}
