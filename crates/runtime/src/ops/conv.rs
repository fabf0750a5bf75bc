//! Convolutions as products: 1×1 on the input as it lies, stride-1 windows through shifted bands,
//! the rest through im2col tiles.

use super::matrix::{add_residual, split_product};
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// top, left, bottom, right
    pub padding: [usize; 4],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Conv2dParams {
    /// A 1×1 window, stride 1, no padding and one group: the product of the weights and the
    /// input as it lies, which the loader's fusions and the arena's placement look for.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0; 4] && self.groups == 1
    }

    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let eff = |k: usize, d: usize| d * (k - 1) + 1;
        let hp = h + self.padding[0] + self.padding[2];
        let wp = w + self.padding[1] + self.padding[3];
        let (kh, kw) = (
            eff(self.kernel[0], self.dilation[0]),
            eff(self.kernel[1], self.dilation[1]),
        );
        if hp < kh || wp < kw || self.stride[0] == 0 || self.stride[1] == 0 {
            return None;
        }
        Some((
            (hp - kh) / self.stride[0] + 1,
            (wp - kw) / self.stride[1] + 1,
        ))
    }
}

/// The output positions `o` whose input `o * stride + offset` lies in `0..len`, as a range
/// clipped to `0..out_len`.
pub(super) fn inside(
    offset: isize,
    stride: usize,
    len: usize,
    out_len: usize,
) -> std::ops::Range<usize> {
    let start = if offset >= 0 {
        0
    } else {
        offset.unsigned_abs().div_ceil(stride).min(out_len)
    };
    let end = if len as isize <= offset {
        0
    } else {
        ((len as isize - offset) as usize)
            .div_ceil(stride)
            .min(out_len)
    };
    start..end.max(start)
}

/// im2col for one image and one group into `out`, `[cg * kh * kw, oh * ow]` row-major, every
/// value written (the padding's positions with zeros, so the buffer need not be zeroed first:
/// zeroing MobileNetV2's first layer's tiles took as long as filling them). Per kernel offset
/// it computes the output rows and columns that read inside the image, so padding is never
/// tested in the loops, and copies whole runs when the stride is 1.
#[allow(clippy::too_many_arguments)]
pub(super) fn im2col(
    x: ArrayView4<'_, f32>,
    n: usize,
    c0: usize,
    cg: usize,
    p: &Conv2dParams,
    out_rows: std::ops::Range<usize>,
    ow: usize,
    out: &mut [f32],
) {
    let (h, w) = (x.dim().2, x.dim().3);
    let [kh, kw] = p.kernel;
    let (first, oh) = (out_rows.start, out_rows.len());
    let image = x.slice(s![n, c0..c0 + cg, .., ..]);
    let image = image.as_standard_layout();
    let image = image.as_slice().expect("standard layout");
    let mut rows = out.chunks_exact_mut((oh * ow).max(1));
    for plane in image.chunks_exact(h * w) {
        for ky in 0..kh {
            let off_y = (ky * p.dilation[0]) as isize - p.padding[0] as isize;
            // The output rows of this tile that read inside the image, counted from the
            // tile's first row.
            let all = inside(off_y, p.stride[0], h, out_rows.end);
            let oys = all.start.max(first) - first..all.end.max(first) - first;
            for kx in 0..kw {
                let dst = rows.next().expect("one row per kernel offset");
                let off_x = (kx * p.dilation[1]) as isize - p.padding[1] as isize;
                let oxs = inside(off_x, p.stride[1], w, ow);
                if oys.is_empty() || oxs.is_empty() {
                    dst.fill(0.0);
                    continue;
                }
                dst[..oys.start * ow].fill(0.0);
                dst[oys.end * ow..].fill(0.0);
                if oxs.len() < ow {
                    for row in dst[oys.start * ow..oys.end * ow].chunks_exact_mut(ow) {
                        row[..oxs.start].fill(0.0);
                        row[oxs.end..].fill(0.0);
                    }
                }
                // The first input read, and the steps between output rows.
                let iy = (((oys.start + first) * p.stride[0]) as isize + off_y) as usize;
                let ix = ((oxs.start * p.stride[1]) as isize + off_x) as usize;
                copy_rows(
                    &mut dst[oys.start * ow + oxs.start..],
                    ow,
                    &plane[iy * w + ix..],
                    p.stride[0] * w,
                    p.stride[1],
                    oys.len(),
                    oxs.len(),
                );
            }
        }
    }
}

/// `count` runs of `len` values: run `r` reads `src[r * src_step + k * stride]` and writes
/// `dst[r * dst_step + k]`. Compiled for AVX2 too, with the offsets advanced rather than
/// recomputed: on LeNet-5's second convolution (4,000 runs of 8 values per image) the
/// per-run bookkeeping, not the copying, was im2col's cost.
#[multiversion::multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
pub(super) fn copy_rows(
    dst: &mut [f32],
    dst_step: usize,
    src: &[f32],
    src_step: usize,
    stride: usize,
    count: usize,
    len: usize,
) {
    for r in 0..count {
        let d = &mut dst[r * dst_step..r * dst_step + len];
        if stride == 1 {
            let s = &src[r * src_step..r * src_step + len];
            // Eight at a time, each a fixed-size copy that is inlined; a run-length
            // `copy_from_slice` is a call to `memcpy` per run.
            let (d8, d_rest) = d.as_chunks_mut::<8>();
            let (s8, s_rest) = s.as_chunks::<8>();
            for (d, s) in d8.iter_mut().zip(s8) {
                *d = *s;
            }
            for (d, s) in d_rest.iter_mut().zip(s_rest) {
                *d = *s;
            }
        } else if stride == 2 {
            // Pairs, of which the first: LLVM turns this into vector shuffles, where
            // `step_by(2)` stayed one value at a time (MobileNetV2's and Xception's first
            // layers).
            let (pairs, _) = src[r * src_step..].as_chunks::<2>();
            for (d, pair) in d.iter_mut().zip(pairs) {
                *d = pair[0];
            }
            if pairs.len() < len {
                d[len - 1] = src[r * src_step + 2 * (len - 1)];
            }
        } else {
            let s = src[r * src_step..].iter().step_by(stride);
            for (d, s) in d.iter_mut().zip(s) {
                *d = *s;
            }
        }
    }
}

/// The most bytes of im2col a convolution builds at once: a tile of output rows whose columns,
/// with the weights, stay in a core's L2 cache for the product.
pub(super) const IM2COL_TILE_BYTES: usize = 512 << 10;

/// 2-D convolution. `weight` is `[cout, cin / groups * kh * kw]`.
pub fn conv2d(
    x: ArrayView4<'_, f32>,
    weight: &Matrix<'_>,
    bias: Option<&[f32]>,
    p: &Conv2dParams,
) -> Array4<f32> {
    conv2d_activated(x, weight, bias, p, Activation::None)
}

/// [`conv2d`] followed by `activation`, both applied to each part of the output as it is
/// computed.
pub fn conv2d_activated(
    x: ArrayView4<'_, f32>,
    weight: &Matrix<'_>,
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    activation: Activation,
) -> Array4<f32> {
    let (n, _, h, w) = x.dim();
    let (oh, ow) = p.output_size(h, w).expect("a valid window");
    let mut out = Array4::<f32>::zeros((n, weight.rows(), oh, ow));
    let dst = out.as_slice_mut().expect("a fresh array is contiguous");
    conv2d_into(x, weight, bias, p, activation, dst);
    out
}

/// [`conv2d_activated`] written into `out` (`[n, cout, oh, ow]` row-major, every element
/// overwritten, whatever it held). The scratch it needs (im2col tiles, padded planes) comes
/// from the thread's pool ([`scratch`]), so at batch 1 it allocates nothing once warm.
pub fn conv2d_into(
    x: ArrayView4<'_, f32>,
    weight: &Matrix<'_>,
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    activation: Activation,
    out: &mut [f32],
) {
    conv2d_plus_into(x, weight, bias, p, activation, None, out)
}

/// Whether a convolution runs the images of a batch's group as one product
/// ([`pointwise_images`]): a 1×1 window at stride 1 with no padding and one group, over
/// dense weights, on the runtime's own kernels.
pub fn runs_images_together(weight: &Matrix<'_>, p: &Conv2dParams) -> bool {
    p.is_pointwise()
        && p.groups == 1
        && kernels::own_kernel_available()
        && match weight {
            Matrix::Dense { .. } => true,
            Matrix::Panels(_) => kernels::channel_panels_share_images(),
            _ => false,
        }
}

/// A 1×1 convolution ([`runs_images_together`]) of several images at once: image `g`'s
/// channels `xs[g]` (`[cin, plane]`) into `outs[g]` (`[cout, plane]`), with the bias, the
/// activation and then `residuals[g]` added. All the images' pixels are one product
/// ([`kernels::product_images`]), whose weights each tile reads once for the group; each value
/// gets the bits of [`conv2d_plus_into`] on its own image.
pub fn pointwise_images(
    xs: &[&[f32]],
    weight: &Matrix<'_>,
    bias: Option<&[f32]>,
    activation: Activation,
    residuals: &[Option<&[f32]>],
    outs: &mut [&mut [f32]],
) {
    let (rows, cols) = (weight.rows(), weight.cols());
    let plane = xs.first().map_or(0, |x| x.len() / cols.max(1));
    assert!(
        xs.iter().all(|x| x.len() == cols * plane) && outs.iter().all(|o| o.len() == rows * plane),
        "whole images of one shape"
    );
    let epilogue = Epilogue { bias, activation };
    match weight {
        Matrix::Dense { data, .. } => {
            kernels::product_images(outs, rows, data, cols, xs, plane, epilogue)
        }
        Matrix::Panels(panels) => {
            kernels::channel_panels_product_images(outs, panels, xs, plane, epilogue)
        }
        _ => panic!("dense weights or channel panels (runs_images_together)"),
    }
    for (out, residual) in outs.iter_mut().zip(residuals) {
        add_residual(out, *residual);
    }
}

/// [`conv2d_into`], then `out += residual` (laid out as `out`): a residual `add` fused into
/// the convolution before it. A 1×1 convolution's product adds it to each thread's part of
/// the output as soon as the part is done (`add_residual`); any other convolution, as a
/// pass over the whole output.
pub fn conv2d_plus_into(
    x: ArrayView4<'_, f32>,
    weight: &Matrix<'_>,
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    activation: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    if let Some(residual) = residual {
        assert_eq!(
            residual.len(),
            out.len(),
            "a residual of the output's shape"
        );
    }
    let add_after = |out: &mut [f32]| add_residual(out, residual);
    let (n, cin, h, w) = x.dim();
    let cout = weight.rows();
    let (oh, ow) = p.output_size(h, w).expect("checked at load");
    assert_eq!(
        out.len(),
        n * cout * oh * ow,
        "an output of the layer's shape"
    );
    let cg = cin / p.groups;
    let og = cout / p.groups;
    if p.groups == cin && cout == cin && !weight.is_sparse() {
        let Matrix::Dense { data, .. } = weight else {
            unreachable!("dense, checked above")
        };
        crate::depthwise::depthwise(x, data, bias, p, (oh, ow), activation, out);
        return add_after(out);
    }
    // Only where the transform holds (the loader makes `Winograd` weights for no other
    // layer); anything else multiplies the dense weights below.
    if let Matrix::Winograd { domain, .. } = weight
        && winograd::suits(p, cin, cout)
    {
        let x = x.as_standard_layout();
        let images = x.as_slice().expect("standard layout");
        let epilogue = Epilogue { bias, activation };
        let plane_out = (cout * oh * ow).max(1);
        for (image, image_out) in images
            .chunks_exact(cin * h * w)
            .zip(out.chunks_exact_mut(plane_out))
        {
            winograd::conv(image, (h, w), domain, p, (oh, ow), epilogue, image_out);
        }
        return add_after(out);
    }
    // A 1×1 convolution with stride 1 and no padding multiplies the input as it lies: each
    // image's channels are already the rows of the product's right-hand side.
    let pointwise = p.kernel == [1, 1] && p.stride == [1, 1] && p.padding == [0; 4];
    let x = x.as_standard_layout();
    let plane = oh * ow;
    let finish =
        |channel: usize, rows: &mut [f32]| finish_channels(rows, plane, channel, bias, activation);
    for (b, image_out) in out.chunks_exact_mut((cout * plane).max(1)).enumerate() {
        for (g, group_out) in image_out.chunks_exact_mut((og * plane).max(1)).enumerate() {
            let rows = g * og..(g + 1) * og;
            let first_value = (b * cout + rows.start) * plane;
            let group_residual = residual
                .filter(|_| pointwise)
                .map(|r| &r[first_value..first_value + og * plane]);
            if pointwise {
                let channels = x.slice(s![b, g * cg..(g + 1) * cg, .., ..]);
                let rhs = channels
                    .into_shape_with_order((cg, plane))
                    .expect("a standard-layout slice of whole planes");
                let epilogue = Epilogue { bias, activation };
                let rows = (rows.start, rows.end);
                weight.mul_rows_finished_into(group_out, rows, rhs, epilogue, group_residual);
            } else if let (Matrix::Dense { data, cols, .. }, true) = (
                weight,
                p.stride == [1, 1] && kernels::own_kernel_available(),
            ) {
                let image = x.slice(s![b, g * cg..(g + 1) * cg, .., ..]);
                let image = image.as_slice().expect("whole planes of a standard layout");
                let weights = &data[rows.start * cols..rows.end * cols];
                let epilogue = Epilogue { bias, activation }.from_row(rows.start);
                let shape = (cg, h, w);
                shifted_conv(
                    image,
                    shape,
                    (weights, *cols),
                    p,
                    (oh, ow),
                    epilogue,
                    group_out,
                );
            } else if let (Matrix::Dense { data, .. }, true) =
                (weight, kernels::few_channels_fit(cin, cout, p))
            {
                let image = x.slice(s![b, .., .., ..]);
                let image = image.as_slice().expect("whole planes of a standard layout");
                let epilogue = Epilogue { bias, activation };
                let (input, output) = ((cin, h, w), (oh, ow));
                kernels::few_channels_conv(image, input, data, p, output, epilogue, group_out);
            } else if let Matrix::Dense { data, cols, .. } = weight {
                // im2col a few output rows at a time, so that the copy stays in cache for the
                // product that reads it (a whole VGG16 layer's is 115 MB at 224×224).
                let w = &data[rows.start * cols..rows.end * cols];
                let tile_rows = (IM2COL_TILE_BYTES / (4 * cols * ow).max(1)).clamp(1, oh.max(1));
                if oh > tile_rows && kernels::own_kernel_available() {
                    let epilogue = Epilogue { bias, activation }.from_row(rows.start);
                    let image = (x.view(), b, g * cg, cg);
                    let shape = ((oh, ow), tile_rows);
                    im2col_tiles_on_threads(image, p, shape, (w, *cols), epilogue, group_out);
                    continue;
                }
                for oy in (0..oh).step_by(tile_rows) {
                    let tile = oy..(oy + tile_rows).min(oh);
                    let at = tile.start * ow;
                    let n = tile.len() * ow;
                    scratch::with_len(cols * n, |im| {
                        im2col(x.view(), b, g * cg, cg, p, tile, ow, im);
                        let im = &*im;
                        if kernels::own_kernel_available() {
                            // The tile's columns of every output row, `plane` apart.
                            let mut view =
                                ndarray::ArrayViewMut2::from_shape((og, plane), &mut *group_out)
                                    .expect("og × plane");
                            let tile_view = view.slice_mut(s![.., at..at + n]);
                            let epilogue = Epilogue { bias, activation }.from_row(rows.start);
                            return split_product(tile_view, w, *cols, im, epilogue, None);
                        }
                        parallel::split_rows(group_out, plane, 16, cols * n, &|first, part| {
                            let count = part.len() / plane.max(1);
                            // Without AVX-512, the `gemm` crate.
                            kernels::gemm_crate_product_strided(
                                &mut part[at..],
                                plane,
                                count,
                                &w[first * cols..],
                                *cols,
                                im,
                                n,
                            );
                            for (r, row) in part.chunks_exact_mut(plane.max(1)).enumerate() {
                                let channel = rows.start + first + r;
                                finish_channels(&mut row[at..at + n], n, channel, bias, activation);
                            }
                        });
                    });
                }
            } else {
                let k = cg * p.kernel[0] * p.kernel[1];
                scratch::with_len(k * plane, |im| {
                    im2col(x.view(), b, g * cg, cg, p, 0..oh, ow, im);
                    let im = ArrayView2::from_shape((k, plane), &*im).expect("im2col's shape");
                    weight.mul_rows_into(group_out, rows.start, rows.end, im, &finish);
                });
            }
        }
    }
    if !pointwise {
        add_after(out);
    }
}

/// A convolution through im2col tiles of at most `most_rows` output rows (the rows of
/// [`IM2COL_TILE_BYTES`]), as many tiles as the threads can share evenly, each thread
/// copying and multiplying whole tiles of its own. (The tiles' copies ran on the calling
/// thread, only their products split: on MobileNetV2's first layer, 3 → 32 channels at
/// stride 2, two threads took 0.32 ms against one thread's 0.42.)
pub(super) fn im2col_tiles_on_threads(
    (x, b, first_channel, cg): (ArrayView4<'_, f32>, usize, usize, usize),
    p: &Conv2dParams,
    ((oh, ow), most_rows): ((usize, usize), usize),
    (w, cols): (&[f32], usize),
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) {
    let plane = oh * ow;
    // An even number of tiles, so that two threads take the same share.
    let tiles = oh.div_ceil(most_rows).next_multiple_of(2);
    let tile_rows = oh.div_ceil(tiles);
    let view = ndarray::ArrayViewMut2::from_shape((out.len() / plane.max(1), plane), out)
        .expect("whole output planes");
    let work = view.nrows() * cols;
    parallel::split(view, Axis(1), tile_rows * ow, work, &|first, mut part| {
        let first_row = first / ow.max(1);
        let rows = part.ncols() / ow.max(1);
        for oy in (first_row..first_row + rows).step_by(tile_rows) {
            let tile = oy..(oy + tile_rows).min(first_row + rows);
            let (at, n) = ((tile.start - first_row) * ow, tile.len() * ow);
            scratch::with_len(cols * n, |im| {
                im2col(x, b, first_channel, cg, p, tile, ow, im);
                let tile_view = part.slice_mut(s![.., at..at + n]);
                kernels::product_columns(tile_view, w, cols, (im, n), epilogue);
            });
        }
    });
}

/// The most bytes of zero-padded input a [`shifted_conv`] band copies, and of output rows it
/// computes: with the weights, what a core's L2 holds while the product packs its panels.
pub(super) const SHIFTED_BAND_BYTES: usize = 1 << 20;

/// A stride-1 convolution of one image's group (`cg` planes `h × w` in `image`) without
/// im2col. A band of output rows at a time, the input rows it reads are copied into
/// zero-padded planes `pw = w + left + right` wide; output `(oy, ox)` is then the weights
/// times the window at padded position `oy·pw + ox` of every plane, so computing `pw`-wide
/// output rows makes each step of the depth (a channel and a window tap) one contiguous run of
/// a plane, shifted by the tap ([`kernels::shifted_product`], which packs those runs straight
/// into its panels). The `pw − ow` extra columns of each row are computed and dropped as the
/// rows are copied into `out`, with the bias and activation.
///
/// In place of the im2col tiles on the `gemm` crate (see `docs/performance/kernels.md`).
pub(super) fn shifted_conv(
    image: &[f32],
    (cg, h, w): (usize, usize, usize),
    (weights, cols): (&[f32], usize),
    p: &Conv2dParams,
    (oh, ow): (usize, usize),
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) {
    let [_, left, _, right] = p.padding;
    let pw = w + left + right;
    let [kh, kw] = p.kernel;
    let (dy, dx) = (p.dilation[0], p.dilation[1]);
    let plane_out = oh * ow;
    let og = weights.len() / cols.max(1);
    let mut taps = scratch::take::<usize>();
    taps.extend((0..kh).flat_map(|ky| (0..kw).map(move |kx| ky * dy * pw + kx * dx)));
    // Both the band's padded input and its computed rows (`pw` wide, for every output
    // channel) within the bound: on a 3-channel input the output rows are the larger (64
    // channels of VGG16's first layer at 224×226 were 13 MB for one whole-image band).
    let band = SHIFTED_BAND_BYTES / (4 * cg.max(og) * pw).max(1);
    let band = band.clamp(1, oh.max(1));
    let shape = Band {
        image,
        input: (cg, h, w),
        p,
        pw,
        ow,
        taps: &taps,
    };
    let view = ndarray::ArrayViewMut2::from_shape((og, plane_out), out).expect("og × plane");
    if oh.div_ceil(band) >= 4 {
        // Enough bands to go round: each thread takes whole bands, copies their input itself
        // and computes every channel of them, so no band is packed twice.
        let work = og * cols * pw;
        parallel::split(view, Axis(1), band * ow, work, &|first, mut part| {
            let first_row = first / ow.max(1);
            let rows = part.ncols() / ow.max(1);
            for oy0 in (first_row..first_row + rows).step_by(band) {
                let band_rows = band.min(first_row + rows - oy0);
                let at = (oy0 - first_row) * ow;
                let strip = part.slice_mut(s![.., at..at + band_rows * ow]);
                scratch::with(|padded: &mut Vec<f32>| {
                    let plane = shape.fill(oy0, band_rows, padded);
                    let operands = (&padded[..], plane, weights, cols);
                    shape.product(operands, band_rows, strip, epilogue);
                });
            }
        });
    } else {
        // Few bands: each is copied once and its output channels split over the threads.
        let mut view = view;
        for oy0 in (0..oh).step_by(band) {
            let band_rows = band.min(oh - oy0);
            let strip = view.slice_mut(s![.., oy0 * ow..(oy0 + band_rows) * ow]);
            scratch::with(|padded: &mut Vec<f32>| {
                let plane = shape.fill(oy0, band_rows, padded);
                let work = cols * band_rows * pw;
                parallel::split(strip, Axis(0), 16, work, &|first, part| {
                    let w = &weights[first * cols..];
                    let operands = (&padded[..], plane, w, cols);
                    shape.product(operands, band_rows, part, epilogue.from_row(first));
                });
            });
        }
    }
    scratch::give(taps);
}

/// A [`shifted_conv`]'s input and how it is cut into bands of output rows.
pub(super) struct Band<'a> {
    image: &'a [f32],
    input: (usize, usize, usize),
    p: &'a Conv2dParams,
    pw: usize,
    ow: usize,
    taps: &'a [usize],
}

impl Band<'_> {
    /// Copies the padded input rows that output rows `oy0..oy0 + band_rows` read, every
    /// channel, into `padded` (zero elsewhere, and past the last plane the values its last
    /// row's dropped columns read); returns the length of one plane.
    fn fill(&self, oy0: usize, band_rows: usize, padded: &mut Vec<f32>) -> usize {
        let (cg, h, w) = self.input;
        let (top, left) = (self.p.padding[0], self.p.padding[1]);
        let [kh, kw] = self.p.kernel;
        let reach_y = self.p.dilation[0] * (kh - 1);
        let reach_x = self.p.dilation[1] * (kw - 1);
        let plane = (band_rows + reach_y) * self.pw;
        padded.clear();
        padded.resize(cg * plane + reach_x, 0.0);
        for (c, dst) in padded.chunks_exact_mut(plane).enumerate() {
            for (r, row) in dst.chunks_exact_mut(self.pw).enumerate() {
                let iy = (oy0 + r).checked_sub(top).filter(|&iy| iy < h);
                if let Some(iy) = iy {
                    let src = &self.image[(c * h + iy) * w..(c * h + iy + 1) * w];
                    row[left..left + w].copy_from_slice(src);
                }
            }
        }
        plane
    }

    /// The band's output rows for the channels of `out` (`weights` from its first), each
    /// computed `pw` wide and its first `ow` values copied into its row of `out`.
    fn product(
        &self,
        (padded, plane, weights, cols): (&[f32], usize, &[f32], usize),
        band_rows: usize,
        mut out: ndarray::ArrayViewMut2<'_, f32>,
        epilogue: Epilogue<'_>,
    ) {
        let (pw, ow) = (self.pw, self.ow);
        let n = band_rows * pw;
        let count = out.nrows();
        // Every value is written by the product before it is copied out.
        scratch::with_len(count * n, |computed: &mut [f32]| {
            let operands = (padded, plane, self.taps);
            kernels::shifted_product(computed, n, count, weights, cols, operands, n, epilogue);
            for (rows, mut dst) in computed.chunks_exact(n).zip(out.rows_mut()) {
                let dst = dst.as_slice_mut().expect("a contiguous row");
                for (d, src) in dst.chunks_exact_mut(ow).zip(rows.chunks(pw)) {
                    d.copy_from_slice(&src[..ow]);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxrm_format::testing::uniform as rand;
    use ndarray::Array;

    /// The definition of a grouped, strided, padded, dilated convolution, loop by loop.
    fn conv_reference(
        x: &Array4<f32>,
        w: &[f32],
        bias: &[f32],
        cout: usize,
        p: &Conv2dParams,
    ) -> Array4<f32> {
        let (n, cin, h, wd) = x.dim();
        let (oh, ow) = p.output_size(h, wd).unwrap();
        let [kh, kw] = p.kernel;
        let cg = cin / p.groups;
        let og = cout / p.groups;
        let mut out = Array4::<f32>::zeros((n, cout, oh, ow));
        for b in 0..n {
            for o in 0..cout {
                let g = o / og;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = bias[o] as f64;
                        for c in 0..cg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize
                                        - p.padding[0] as isize;
                                    let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                                        - p.padding[1] as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd
                                    {
                                        let wv = w[((o * cg + c) * kh + ky) * kw + kx];
                                        acc += (wv * x[[b, g * cg + c, iy as usize, ix as usize]])
                                            as f64;
                                    }
                                }
                            }
                        }
                        out[[b, o, oy, ox]] = acc as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn conv2d_matches_the_reference_for_every_parameter_kind() {
        let cases = [
            (1, 3, 8, 9, 4, [3, 3], [1, 1], [0, 0, 0, 0], [1, 1], 1),
            (2, 4, 7, 7, 6, [3, 2], [2, 1], [1, 0, 2, 1], [1, 1], 2),
            (1, 2, 9, 9, 2, [3, 3], [1, 2], [2, 2, 2, 2], [2, 2], 1),
            (2, 5, 6, 6, 5, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 5), // depthwise
            // Depthwise with stride 2, TensorFlow's uneven "same" padding, a 5×5 window, and
            // dilation, as EfficientNet and Xception have them.
            (1, 4, 11, 10, 4, [3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 4),
            (2, 3, 9, 12, 3, [5, 5], [2, 1], [1, 2, 2, 1], [1, 1], 3),
            (1, 2, 10, 10, 2, [3, 3], [1, 2], [2, 2, 2, 2], [2, 2], 2),
            // Ten output rows and 100 columns: register blocks of 4 × 16 plus leftover rows
            // and columns.
            (1, 3, 12, 12, 10, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
            // Depthwise rows of 37: two 16-wide register blocks and a tail; the same with
            // stride 2 (column phases) and a 5×5 window.
            (2, 3, 7, 37, 3, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 3),
            (1, 2, 9, 70, 2, [3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 2),
            (1, 2, 9, 75, 2, [5, 5], [1, 2], [2, 2, 2, 2], [1, 1], 2),
            // 1×1 convolutions, which multiply the input in place, with one and two groups.
            (2, 6, 5, 7, 4, [1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1),
            (1, 6, 5, 7, 4, [1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 2),
            // A first layer: three channels at stride 2 through im2col, an odd width (the
            // last pair of a row is half outside the plane) and TensorFlow's "same" padding.
            (1, 3, 10, 11, 8, [3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 1),
            // Strided products whose output views are one row or one column wide: a single
            // output channel, one output channel per group, and a 1×1 output plane.
            (1, 3, 9, 9, 1, [3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 1),
            (1, 4, 9, 9, 2, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 2),
            (1, 3, 3, 3, 2, [3, 3], [2, 2], [0, 0, 0, 0], [1, 1], 1),
        ];
        for (n, cin, h, w, cout, kernel, stride, padding, dilation, groups) in cases {
            let p = Conv2dParams {
                kernel,
                stride,
                padding,
                dilation,
                groups,
            };
            let x = Array::from_shape_vec((n, cin, h, w), rand(n * cin * h * w, 1)).unwrap();
            let k = cin / groups * kernel[0] * kernel[1];
            let mut wv = rand(cout * k, 2);
            let bias = rand(cout, 3);
            let want = conv_reference(&x, &wv, &bias, cout, &p);
            let dense = Matrix::Dense {
                data: wv.clone().into(),
                rows: cout,
                cols: k,
            };
            // Scratch that holds NaNs, as a buffer left by another layer may: im2col and the
            // padded bands write every value they read.
            scratch::with_len(1 << 16, |v| v.fill(f32::NAN));
            close(
                conv2d(x.view(), &dense, Some(&bias), &p)
                    .as_slice()
                    .unwrap(),
                want.as_slice().unwrap(),
                1e-5,
            );
            // Sparse weights: same answer through the CSR kernel.
            scratch::with_len(1 << 16, |v| v.fill(f32::NAN));
            for (i, v) in wv.iter_mut().enumerate() {
                if i % 3 != 0 {
                    *v = 0.0;
                }
            }
            let want = conv_reference(&x, &wv, &bias, cout, &p);
            let sparse = Matrix::Sparse(Csr::from_dense(&wv, cout, k));
            close(
                conv2d(x.view(), &sparse, Some(&bias), &p)
                    .as_slice()
                    .unwrap(),
                want.as_slice().unwrap(),
                1e-5,
            );
        }
    }

    #[test]
    fn convolutions_and_pooling_give_the_same_bits_on_one_thread_and_two() {
        // Large enough to split: a 3×3 convolution, a 1×1 one, a depthwise one and a 3×3/2 max
        // pooling over 64 channels of 40 × 40.
        let (c, h, w) = (64, 40, 40);
        let x = Array::from_shape_vec((1, c, h, w), rand(c * h * w, 31)).unwrap();
        let conv = |kernel: [usize; 2], groups: usize| Conv2dParams {
            kernel,
            stride: [1, 1],
            padding: if kernel == [3, 3] { [1; 4] } else { [0; 4] },
            dilation: [1, 1],
            groups,
        };
        let weights = |k: usize| Matrix::Dense {
            data: rand(c * k, 32).into(),
            rows: c,
            cols: k,
        };
        let (full, pointwise, depthwise) = (weights(c * 9), weights(c), weights(9));
        let projection = Matrix::dense(rand(24 * c, 33), 24, c);
        let pool = PoolParams {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [0, 0, 1, 1],
        };
        let layers = || {
            vec![
                conv2d(x.view(), &full, None, &conv([3, 3], 1)),
                conv2d(x.view(), &pointwise, None, &conv([1, 1], 1)),
                // Too few rows to split by rows: split by columns.
                conv2d(x.view(), &projection, None, &conv([1, 1], 1)),
                conv2d(x.view(), &depthwise, None, &conv([3, 3], c)),
                pool2d(x.view(), &pool, true),
            ]
        };
        let one = super::super::parallel::Threads::new(1).run(usize::MAX, layers);
        let two = super::super::parallel::Threads::new(2).run(usize::MAX, layers);
        for (a, b) in one.iter().zip(&two) {
            let bits = |m: &Array4<f32>| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(a), bits(b));
        }
    }

    #[test]
    fn banded_convolutions_give_the_bits_of_one_whole_product() {
        // 64 channels of 300 columns: more than a band (shifted) or a tile (im2col) of rows,
        // so the output comes in several; 40 rows of weights, packed.
        // At stride 2, im2col tiles: 35 output rows of 300 columns, a tile each, which two
        // threads share.
        for (stride, padding, dilation, h) in [
            ([1, 1], [1; 4], [1, 1], 30),
            ([1, 1], [2, 1, 3, 2], [2, 1], 30),
            ([1, 1], [1; 4], [1, 1], 70),
            ([2, 2], [0, 0, 1, 1], [1, 1], 70),
        ] {
            let (cin, cout, w) = (64, 40, 300);
            let x = Array::from_shape_vec((1, cin, h, w), rand(cin * h * w, 61)).unwrap();
            let p = Conv2dParams {
                kernel: [3, 3],
                stride,
                padding,
                dilation,
                groups: 1,
            };
            let k = cin * 9;
            assert!(4 * k * w > IM2COL_TILE_BYTES && 4 * cin * w * h > SHIFTED_BAND_BYTES);
            let weights = rand(cout * k, 62);
            let m = Matrix::dense(weights.clone(), cout, k);
            // 70 rows are more than four bands: two threads take whole bands each.
            let banded = super::super::parallel::Threads::new(2)
                .run(usize::MAX, || conv2d(x.view(), &m, None, &p));
            let (oh, ow) = p.output_size(h, w).unwrap();
            let mut whole = vec![0f32; k * oh * ow];
            im2col(x.view(), 0, 0, cin, &p, 0..oh, ow, &mut whole);
            let mut want = vec![0f32; cout * oh * ow];
            let n = oh * ow;
            // Shifted rows or im2col tiles on AVX-512 (one chain per element, as the kernel's
            // product); else im2col tiles through the `gemm` crate (see `conv2d_into`).
            if kernels::own_kernel_available() {
                kernels::product(&mut want, &weights, k, &whole, n);
            } else {
                kernels::gemm_crate_product_strided(&mut want, n, cout, &weights, k, &whole, n);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(banded.as_slice().unwrap()), bits(&want));
        }
    }

    #[test]
    fn activations_in_the_product_registers_give_the_bits_of_a_separate_pass() {
        // 1×1 convolutions packed (40 rows) and in place (5), deeper than a depth block (300),
        // and a stride-1 3×3 one (shifted rows); inputs scaled so that ReLU6 clips both ends.
        for (cin, cout, k) in [(300, 40, 1), (300, 5, 1), (30, 40, 3)] {
            let x = Array::from_shape_vec((1, cin, 7, 9), rand(cin * 63, 54)).unwrap() * 10.0;
            let bias = rand(cout, 55);
            let p = Conv2dParams {
                kernel: [k, k],
                stride: [1, 1],
                padding: [k / 2; 4],
                dilation: [1, 1],
                groups: 1,
            };
            let w = Matrix::dense(rand(cout * cin * k * k, 56), cout, cin * k * k);
            for (act, f) in [
                (Activation::None, (|v: f32| v) as fn(f32) -> f32),
                (Activation::Relu, |v: f32| v.max(0.0)),
                (Activation::Relu6, |v: f32| v.clamp(0.0, 6.0)),
            ] {
                let separate = conv2d(x.view(), &w, None, &p);
                let bias_added =
                    &separate + &Array::from_shape_vec((1, cout, 1, 1), bias.clone()).unwrap();
                let separate = bias_added.mapv(f);
                let fused = conv2d_activated(x.view(), &w, Some(&bias), &p, act);
                assert!(separate.iter().any(|&v| v >= 6.0));
                let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&separate),
                    bits(&fused),
                    "{cin}→{cout} {k}×{k}, {act:?}"
                );
            }
        }
    }

    #[test]
    fn a_fused_activation_gives_the_bits_of_a_separate_pass() {
        let x = Array::from_shape_vec((2, 4, 9, 9), rand(2 * 4 * 81, 51)).unwrap();
        let bias = rand(4, 52);
        for (groups, k) in [(1, 4 * 9), (4, 9)] {
            let p = Conv2dParams {
                kernel: [3, 3],
                stride: [1, 1],
                padding: [1; 4],
                dilation: [1, 1],
                groups,
            };
            let w = Matrix::dense(rand(4 * k, 53), 4, k);
            for (act, f) in [
                (Activation::Relu, (|v: f32| v.max(0.0)) as fn(f32) -> f32),
                (Activation::Relu6, |v: f32| v.clamp(0.0, 6.0)),
            ] {
                let separate = conv2d(x.view(), &w, Some(&bias), &p).mapv(f);
                let fused = conv2d_activated(x.view(), &w, Some(&bias), &p, act);
                let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&separate), bits(&fused), "groups {groups}, {act:?}");
            }
        }
    }
}
