//! Strided convolutions over a few input channels (an image network's first layer, over the
//! three colours) with the output channels in the vector lanes, on AVX2.
//!
//! Through im2col, MobileNetV2's `Conv1` (3 → 32, 3×3 at stride 2 from 224×224) wrote and read
//! back 27 values per output pixel, and AVX2's 6-row tiles took its 32 rows as 6 + 6 + 6 + 6 +
//! 6 + 2, the last waiting on the latency of its four chains: 0.41 ms against onnxruntime's
//! 0.35 on one thread, whose kernel reads the image where it lies with the channels in the
//! lanes. Here each tap of the window is one broadcast input value against two vectors of
//! eight output channels' weights, in tiles of six pixels by sixteen channels (12
//! accumulators). Each output row's input rows are copied once with their padding, its sums
//! staged with the channels in the lanes, then transposed into the output's planes eight by
//! eight. The output rows split over the threads.
//!
//! Each output is one chain of fused multiply-adds over the taps in the weights' column order
//! (channel, then window row, then column) from zero, the padding's taps included as zeros as
//! im2col writes them, then the bias and the activation: the bits of the im2col product
//! (tested), whatever the split.

use super::transpose8::transpose;
use super::{Epilogue, OwnKernel, activate_avx2};
use crate::ops::Conv2dParams;
use crate::{parallel, scratch};
use ndarray::{ArrayViewMut2, Axis};
use std::arch::x86_64::*;

const LANES: usize = 8;
/// Output channels per tile: two vectors.
const CHANNELS: usize = 2 * LANES;
/// Pixels per tile: two accumulators each, 12 of the 16 registers.
const PIXELS: usize = 6;
/// The most input channels: an image's colours (and an alpha or depth channel).
const MOST_CHANNELS: usize = 4;

/// Whether a convolution runs here: AVX2's own kernels, one group, no dilation, a stride
/// other than 1 (stride 1 takes the shifted-row product), few input channels, and output
/// channels in whole tiles.
pub(crate) fn fits(cin: usize, cout: usize, p: &Conv2dParams) -> bool {
    super::own_kernel() == Some(OwnKernel::Avx2) && shape_fits(cin, cout, p)
}

/// [`fits`] but for the CPU.
fn shape_fits(cin: usize, cout: usize, p: &Conv2dParams) -> bool {
    p.groups == 1
        && p.dilation == [1, 1]
        && p.stride != [1, 1]
        && (1..=MOST_CHANNELS).contains(&cin)
        && cout > 0
        && cout.is_multiple_of(CHANNELS)
}

/// One image `[cin, h, w]` into `out` `[cout, oh, ow]`, `weights` row-major `[cout, cin·kh·kw]`;
/// the layer's shape must fit (as [`fits`] checks) and the CPU have AVX2 and FMA.
pub(crate) fn conv(
    image: &[f32],
    (cin, h, w): (usize, usize, usize),
    weights: &[f32],
    p: &Conv2dParams,
    (oh, ow): (usize, usize),
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) {
    let taps = cin * p.kernel[0] * p.kernel[1];
    let cout = weights.len() / taps.max(1);
    assert!(
        shape_fits(cin, cout, p) && crate::cpu::avx2_fma(),
        "a layer this kernel takes, on a CPU with AVX2 and FMA"
    );
    assert_eq!(image.len(), cin * h * w, "one image");
    assert_eq!(
        weights.len(),
        cout * taps,
        "a row of weights per output channel"
    );
    assert_eq!(out.len(), cout * oh * ow, "one output image");
    if let Some(bias) = epilogue.bias {
        assert!(bias.len() >= cout, "a bias per output channel");
    }
    if oh * ow == 0 {
        return;
    }
    let geometry = Geometry::new(cin, (h, w), p, (oh, ow));
    scratch::with(|packed: &mut Vec<f32>| {
        // `packed[t · cout + o]`: tap `t`'s weights for every output channel, one vector load
        // per eight channels.
        packed.resize(taps * cout, 0.0);
        for (o, row) in weights.chunks_exact(taps).enumerate() {
            for (t, &value) in row.iter().enumerate() {
                packed[t * cout + o] = value;
            }
        }
        let view = ArrayViewMut2::from_shape((cout, oh * ow), out).expect("cout planes");
        let work = cout * taps;
        parallel::split(view, Axis(1), ow, work, &|first, part| {
            let (mut rows, mut sums) = (scratch::take(), scratch::take());
            let rows_of_part = first / ow..(first + part.ncols()) / ow;
            let layer = Layer {
                image,
                geometry: &geometry,
                packed,
                cout,
                epilogue,
            };
            // SAFETY: the CPU has AVX2 and FMA (asserted above).
            unsafe { layer.rows(rows_of_part, part, (&mut rows, &mut sums)) };
            scratch::give(rows);
            scratch::give(sums);
        });
    })
}

/// The shapes a layer's rows are computed in.
struct Geometry {
    cin: usize,
    input: (usize, usize),
    kernel: [usize; 2],
    stride: [usize; 2],
    /// Top and left padding.
    origin: (usize, usize),
    /// Output columns computed per row: `ow` rounded up to whole tiles.
    columns: usize,
    ow: usize,
    /// The length of each copied input row, its padding and what the last tile reads
    /// included.
    row_len: usize,
}

impl Geometry {
    fn new(
        cin: usize,
        input: (usize, usize),
        p: &Conv2dParams,
        (_, ow): (usize, usize),
    ) -> Geometry {
        let columns = ow.div_ceil(PIXELS) * PIXELS;
        let (left, w) = (p.padding[1], input.1);
        let row_len = ((columns - 1) * p.stride[1] + p.kernel[1]).max(left + w);
        Geometry {
            cin,
            input,
            kernel: p.kernel,
            stride: p.stride,
            origin: (p.padding[0], left),
            columns,
            ow,
            row_len,
        }
    }
}

/// What every part of a layer reads.
struct Layer<'a> {
    image: &'a [f32],
    geometry: &'a Geometry,
    /// The weights by tap ([`conv`]).
    packed: &'a [f32],
    cout: usize,
    epilogue: Epilogue<'a>,
}

impl Layer<'_> {
    /// Output rows `rows` into `part` (`[cout, rows · ow]`, each channel's row contiguous).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows(
        &self,
        rows: std::ops::Range<usize>,
        mut part: ArrayViewMut2<'_, f32>,
        (input_rows, sums): (&mut Vec<f32>, &mut Vec<f32>),
    ) {
        let g = self.geometry;
        let [kh, _] = g.kernel;
        let (h, w) = g.input;
        input_rows.clear();
        input_rows.resize(g.cin * kh * g.row_len, 0.0);
        sums.clear();
        sums.resize(g.columns * self.cout, 0.0);
        for (local, oy) in rows.enumerate() {
            // The window's input rows, `row_len` apart in channel-then-row order, zero where
            // they are padding.
            for c in 0..g.cin {
                for ky in 0..kh {
                    let copy = &mut input_rows[(c * kh + ky) * g.row_len..][..g.row_len];
                    let iy = (oy * g.stride[0] + ky).checked_sub(g.origin.0);
                    match iy.filter(|&iy| iy < h) {
                        Some(iy) => {
                            copy[..g.origin.1].fill(0.0);
                            copy[g.origin.1..g.origin.1 + w]
                                .copy_from_slice(&self.image[(c * h + iy) * w..][..w]);
                            copy[g.origin.1 + w..].fill(0.0);
                        }
                        None => copy.fill(0.0),
                    }
                }
            }
            for first in (0..self.cout).step_by(CHANNELS) {
                for x in (0..g.columns).step_by(PIXELS) {
                    // SAFETY: the tile reads `input_rows` up to column `(x + PIXELS − 1) ·
                    // stride + kw − 1 < row_len` of each row, `packed`'s channels `first..first
                    // + 16` of every tap, and writes pixels `x..x + PIXELS` of `sums` (whose
                    // `columns` rows are `cout` wide); the CPU has AVX2 and FMA.
                    unsafe { self.tile(input_rows, x, first, sums) };
                }
            }
            // SAFETY: as for this function; `sums` holds `columns ≥ ow` rows of `cout`.
            unsafe { self.store_row(sums, &mut part, local * g.ow) };
        }
    }

    /// Pixels `x..x + PIXELS` of a row, channels `first..first + CHANNELS`, finished into
    /// `sums` (pixel-major, `cout` channels each).
    ///
    /// # Safety
    /// As [`Layer::rows`] calls it.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile(&self, input_rows: &[f32], x: usize, first: usize, sums: &mut [f32]) {
        let g = self.geometry;
        let [kh, kw] = g.kernel;
        let step = g.stride[1];
        let cout = self.cout;
        // SAFETY: as for this function.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; PIXELS];
            let mut weights = self.packed.as_ptr().add(first);
            for row in input_rows.chunks_exact(g.row_len).take(g.cin * kh) {
                let row = row.as_ptr().add(x * step);
                for kx in 0..kw {
                    let w0 = _mm256_loadu_ps(weights);
                    let w1 = _mm256_loadu_ps(weights.add(LANES));
                    for (j, sum) in acc.iter_mut().enumerate() {
                        let v = _mm256_broadcast_ss(&*row.add(j * step + kx));
                        sum[0] = _mm256_fmadd_ps(v, w0, sum[0]);
                        sum[1] = _mm256_fmadd_ps(v, w1, sum[1]);
                    }
                    weights = weights.add(cout);
                }
            }
            let bias = self.epilogue.bias.map(|b| {
                let b = b.as_ptr().add(first);
                [_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(LANES))]
            });
            let activation = self.epilogue.activation;
            for (j, sum) in acc.iter().enumerate() {
                let at = sums.as_mut_ptr().add((x + j) * cout + first);
                for (v, &s) in sum.iter().enumerate() {
                    let s = bias.map_or(s, |b| _mm256_add_ps(s, b[v]));
                    _mm256_storeu_ps(at.add(v * LANES), activate_avx2(s, activation));
                }
            }
        }
    }

    /// A row's finished sums (`sums`, pixel-major) into each channel's row of `part` from
    /// `at`: blocks of eight pixels by eight channels transposed in registers, the last
    /// pixels one at a time.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `sums` holds `ow` pixels of `cout` channels.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_row(&self, sums: &[f32], part: &mut ArrayViewMut2<'_, f32>, at: usize) {
        let (ow, cout) = (self.geometry.ow, self.cout);
        assert!(
            part.nrows() == cout && at + ow <= part.ncols() && part.strides()[1] == 1,
            "a row of every channel, each contiguous"
        );
        let (base, channel_stride) = (part.as_mut_ptr(), part.strides()[0] as usize);
        let whole = ow / LANES * LANES;
        for first in (0..cout).step_by(LANES) {
            // SAFETY: every store writes pixels `at + x..` (`x < ow`) of channel `first + j <
            // cout`, inside the part (asserted above); the loads read pixels `x + i < ow` of
            // `sums`, channels `first..first + 8`.
            unsafe {
                let channel = |j: usize| base.add((first + j) * channel_stride + at);
                for x in (0..whole).step_by(LANES) {
                    let columns = transpose(std::array::from_fn(|i| {
                        _mm256_loadu_ps(sums.as_ptr().add((x + i) * cout + first))
                    }));
                    for (j, column) in columns.into_iter().enumerate() {
                        _mm256_storeu_ps(channel(j).add(x), column);
                    }
                }
                for j in 0..LANES {
                    for x in whole..ow {
                        *channel(j).add(x) = sums[x * cout + first + j];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Activation;
    use crate::parallel::Threads;
    use cxrm_format::testing::uniform;

    /// Each output as the im2col product computes it: one fused multiply-add per tap in the
    /// weights' column order from zero, a padded tap's input zero, then the bias and the
    /// activation.
    fn chained(
        image: &[f32],
        (cin, h, w): (usize, usize, usize),
        weights: &[f32],
        p: &Conv2dParams,
        (oh, ow): (usize, usize),
        (bias, activation): (Option<&[f32]>, Activation),
    ) -> Vec<f32> {
        let [kh, kw] = p.kernel;
        let taps = cin * kh * kw;
        let cout = weights.len() / taps;
        let mut out = vec![0.0; cout * oh * ow];
        for o in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0.0f32;
                    for c in 0..cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * p.stride[0] + ky).checked_sub(p.padding[0]);
                                let ix = (ox * p.stride[1] + kx).checked_sub(p.padding[1]);
                                let v = match (iy, ix) {
                                    (Some(iy), Some(ix)) if iy < h && ix < w => {
                                        image[(c * h + iy) * w + ix]
                                    }
                                    _ => 0.0,
                                };
                                let t = (c * kh + ky) * kw + kx;
                                acc = v.mul_add(weights[o * taps + t], acc);
                            }
                        }
                    }
                    let x = bias.map_or(acc, |b| acc + b[o]);
                    out[(o * oh + oy) * ow + ox] = match activation {
                        Activation::None => x,
                        Activation::Relu => x.max(0.0),
                        Activation::Relu6 => x.clamp(0.0, 6.0),
                    };
                }
            }
        }
        out
    }

    #[test]
    fn every_output_has_the_bits_of_the_im2col_chain_on_any_thread_count() {
        if !crate::cpu::avx2_fma() {
            return;
        }
        // (cin, cout, h, w, kernel, stride, padding [top, left, bottom, right]): MobileNetV2's
        // `Conv1` at a smaller size (TensorFlow's "same" at stride 2 pads bottom and right),
        // Xception's first layer (no padding), a 7×7 window at stride 2, and one channel or
        // four, rows whose width leaves part tiles and part transposes.
        let cases = [
            (3, 32, 30, 30, [3, 3], [2, 2], [0, 0, 1, 1]),
            (3, 32, 31, 29, [3, 3], [2, 2], [0, 0, 0, 0]),
            (3, 64, 23, 37, [7, 7], [2, 2], [3, 3, 3, 3]),
            (1, 16, 9, 50, [3, 3], [2, 1], [1, 1, 1, 1]),
            (4, 48, 17, 13, [3, 2], [1, 2], [2, 0, 1, 1]),
            // Padding wider than the window (whole windows in it), a one-pixel-wide image.
            (2, 16, 6, 1, [3, 3], [2, 2], [5, 6, 4, 7]),
        ];
        for (i, &(cin, cout, h, w, kernel, stride, padding)) in cases.iter().enumerate() {
            let p = Conv2dParams {
                kernel,
                stride,
                padding,
                dilation: [1, 1],
                groups: 1,
            };
            assert!(shape_fits(cin, cout, &p), "case {i}");
            let (oh, ow) = p.output_size(h, w).unwrap();
            let seed = 10 * i as u64;
            let image = uniform(cin * h * w, seed);
            let weights = uniform(cout * cin * kernel[0] * kernel[1], seed + 1);
            let bias = uniform(cout, seed + 2);
            for (bias, activation) in [
                (None, Activation::None),
                (Some(&bias[..]), Activation::Relu6),
                (Some(&bias[..]), Activation::Relu),
            ] {
                let want = chained(
                    &image,
                    (cin, h, w),
                    &weights,
                    &p,
                    (oh, ow),
                    (bias, activation),
                );
                for threads in [1, 2, 3] {
                    let mut got = vec![f32::NAN; cout * oh * ow];
                    let epilogue = Epilogue { bias, activation };
                    Threads::new(threads).run(usize::MAX, || {
                        conv(
                            &image,
                            (cin, h, w),
                            &weights,
                            &p,
                            (oh, ow),
                            epilogue,
                            &mut got,
                        )
                    });
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "case {i}, {activation:?}, {threads} threads"
                    );
                }
            }
        }
    }
}
