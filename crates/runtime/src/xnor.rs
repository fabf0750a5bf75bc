//! XNOR-Net layers (spec §7, `xnor_conv2d` and `xnor_dense`). The input is replaced by its
//! signs and each output position is scaled by `K`, the mean magnitude of the input over its
//! receptive field; the weights are whatever the file stores.
//!
//! When the weights are stored `binary` (`α · sign` per row), the layer runs on bits: the dot
//! product of two sign vectors of length `n` is `n − 2 · popcount(x XOR w)`, 64 products per
//! instruction. Otherwise the signs go through the ordinary float kernels. Both paths compute
//! `K` with the same code, so they differ only by float rounding in the sums.
//!
//! The parts, in the order a convolution runs them: `weights` (sign bits, and how the input
//! becomes signs), `pixels` (each pixel's signs across channels, and `K`), `windows` (each
//! position's window gathered into panels), `popcount` (the kernels that count differing
//! bits), `borders` (what the padding takes off) and `conv`; `dense` is the dense layer. This
//! file keeps the tests that hold every popcount kernel to the reference.

use super::ops::{self, Conv2dParams, Matrix};
use super::parallel::{self, Along};
use super::scratch;
use cxrm_format::encoding::binary::Binary;
use ndarray::{Array2, Array4, ArrayView2, ArrayView4, ArrayViewMut2, Axis};
use std::borrow::Cow;
use std::sync::OnceLock;

// The layer's parts import this module whole, and one another by name.
mod borders;
mod conv;
mod dense;
mod pixels;
mod popcount;
mod weights;
mod windows;

pub use conv::{conv2d, conv2d_into};
pub use dense::{dense, dense_into};
pub use weights::{BitRows, SignInput, XnorWeight};

#[cfg(test)]
mod tests {
    use super::conv::conv2d_with;
    use super::popcount::{PANEL, Popcount, TILE_ROWS, count_differences};
    use super::*;
    use cxrm_format::dtype::DType;
    use cxrm_format::encoding::binary::binarize;

    use cxrm_format::testing::uniform as rand;

    /// The layer through [`conv2d_with`] on `kernel` and `threads` threads, into a fresh
    /// array.
    fn conv_on(
        kernel: Popcount,
        threads: usize,
        (x, weight, bias, p, input): (
            ArrayView4<'_, f32>,
            &XnorWeight<'_>,
            Option<&[f32]>,
            &Conv2dParams,
            &SignInput,
        ),
    ) -> Array4<f32> {
        let (n, _, h, w) = x.dim();
        let (oh, ow) = p.output_size(h, w).unwrap();
        let mut out = Array4::from_elem((n, weight.rows(), oh, ow), f32::NAN);
        let dst = out.as_slice_mut().unwrap();
        parallel::Threads::new(threads).run(usize::MAX, || {
            conv2d_with(kernel, x, weight, bias, p, input, dst)
        });
        out
    }

    /// XNOR-Net's formula written out directly, from the dense weights.
    fn reference(x: &Array4<f32>, w: &[f32], cout: usize, p: &Conv2dParams) -> Array4<f32> {
        let (n, c, h, wd) = x.dim();
        let [kh, kw] = p.kernel;
        let (oh, ow) = p.output_size(h, wd).unwrap();
        let mut out = Array4::<f32>::zeros((n, cout, oh, ow));
        for b in 0..n {
            for o in 0..cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (mut dot, mut mag) = (0.0f64, 0.0f64);
                        for ch in 0..c {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize
                                        - p.padding[0] as isize;
                                    let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                                        - p.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let v = x[[b, ch, iy as usize, ix as usize]];
                                    let wv = w[((o * c + ch) * kh + ky) * kw + kx];
                                    dot += if v >= 0.0 { wv as f64 } else { -wv as f64 };
                                    mag += v.abs() as f64;
                                }
                            }
                        }
                        out[[b, o, oy, ox]] = (dot * mag / (c * kh * kw) as f64) as f32;
                    }
                }
            }
        }
        out
    }

    fn close(a: &[f32], b: &[f32]) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "element {i} of {}: {x} vs {y}",
                a.len()
            );
        }
    }

    #[test]
    fn popcount_and_float_paths_match_the_reference() {
        // (n, cin, h, w, cout, kernel, stride, padding, dilation): cin·kh·kw crosses a word.
        let cases = [
            (2, 3, 7, 7, 4, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1]),
            // 70 channels: a tap's bits span two words and land at unaligned offsets.
            (1, 70, 5, 5, 3, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1]),
            (1, 8, 9, 8, 5, [3, 3], [2, 2], [0, 1, 2, 0], [1, 1]),
            (1, 2, 10, 10, 3, [3, 2], [1, 1], [2, 2, 2, 2], [2, 2]),
        ];
        for (i, &(n, cin, h, w, cout, kernel, stride, padding, dilation)) in
            cases.iter().enumerate()
        {
            let p = Conv2dParams {
                kernel,
                stride,
                padding,
                dilation,
                groups: 1,
            };
            let x =
                Array4::from_shape_vec((n, cin, h, w), rand(n * cin * h * w, i as u64)).unwrap();
            let cols = cin * kernel[0] * kernel[1];
            let b = binarize(&rand(cout * cols, 99 + i as u64), cout, cols, DType::F32);
            let dense = b.to_f32();
            let want = reference(&x, &dense, cout, &p);
            let bits = conv2d(
                x.view(),
                &XnorWeight::Bits(BitRows::for_conv(&b, cin)),
                None,
                &p,
                &SignInput::Scaled,
            );
            let float = conv2d(
                x.view(),
                &XnorWeight::Float(Matrix::dense(dense.clone(), cout, cols)),
                None,
                &p,
                &SignInput::Scaled,
            );
            close(bits.as_slice().unwrap(), want.as_slice().unwrap());
            close(float.as_slice().unwrap(), want.as_slice().unwrap());
        }
    }

    /// Every popcount kernel this CPU has, against the portable one, bit for bit: interior and
    /// border windows, channel counts that leave a tap's bits at unaligned offsets (3, 70,
    /// 130) or fill whole words (128), strides and dilations of 2, row counts that leave the
    /// last tile short or take more than one block of rows, position counts that leave the
    /// last panel short, and output rows that straddle panels.
    #[test]
    fn popcount_kernels_agree_bit_for_bit() {
        let cases = [
            (2, 3, 9, 9, 5, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1]),
            (1, 70, 8, 7, 6, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1]),
            (1, 130, 9, 10, 7, [3, 3], [1, 1], [2, 2, 2, 2], [2, 2]),
            (1, 128, 12, 12, 9, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1]),
            (1, 64, 6, 11, 3, [1, 5], [1, 2], [0, 2, 1, 1], [1, 1]),
            // 36 words a position: more than AVX2's block of byte counts.
            (1, 256, 6, 7, 5, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1]),
            // Padding wider than the window: corner outputs see nothing but padding.
            (1, 5, 3, 3, 2, [3, 3], [1, 1], [3, 3, 3, 3], [1, 1]),
            // More rows than a block of AVX2's, the last block and tile short.
            (1, 40, 7, 9, 70, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1]),
            // Enough work for two or three threads to split, in blocks of AVX2's rows too;
            // two bands of pixels and three of panels.
            (1, 70, 17, 17, 130, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1]),
        ];
        let kernels = [
            Popcount::Portable,
            #[cfg(target_arch = "x86_64")]
            Popcount::Avx512,
            #[cfg(target_arch = "x86_64")]
            Popcount::Avx2,
        ];
        for (i, &(n, cin, h, w, cout, kernel, stride, padding, dilation)) in
            cases.iter().enumerate()
        {
            let p = Conv2dParams {
                kernel,
                stride,
                padding,
                dilation,
                groups: 1,
            };
            let x = Array4::from_shape_vec((n, cin, h, w), rand(n * cin * h * w, 30 + i as u64))
                .unwrap();
            let cols = cin * kernel[0] * kernel[1];
            let b = binarize(&rand(cout * cols, 40 + i as u64), cout, cols, DType::F32);
            let bias = rand(cout, 50 + i as u64);
            let weight = XnorWeight::Bits(BitRows::for_conv(&b, cin));
            let run = |kernel, threads| {
                let input = SignInput::Scaled;
                conv_on(
                    kernel,
                    threads,
                    (x.view(), &weight, Some(&bias), &p, &input),
                )
            };
            let portable = run(Popcount::Portable, 1);
            let want = reference(&x, &b.to_f32(), cout, &p);
            let shifted: Vec<f32> = want
                .outer_iter()
                .flat_map(|image| {
                    image
                        .outer_iter()
                        .zip(&bias)
                        .flat_map(|(plane, &bo)| plane.iter().map(|v| v + bo).collect::<Vec<_>>())
                        .collect::<Vec<_>>()
                })
                .collect();
            close(portable.as_slice().unwrap(), &shifted);
            for &kernel in &kernels {
                if !kernel.available() {
                    continue;
                }
                // Three threads split 2 or 3 row blocks unevenly.
                for threads in [1, 2, 3] {
                    let got = run(kernel, threads);
                    let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got),
                        bits(&portable),
                        "case {i}, {kernel:?}, {threads} threads"
                    );
                }
            }
        }
    }

    /// Every bit differing, over more words than the AVX2 kernel adds up in bytes: the
    /// largest counts a layer can have, which must not wrap.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx2_counts_do_not_wrap_at_the_largest_counts() {
        if !Popcount::Avx2.available() {
            return;
        }
        for words in [1, 31, 32, 40, 63, 64] {
            let windows = Popcount::Avx2.lay_out_windows(vec![u64::MAX; 2 * words * PANEL]);
            let tiles = Popcount::Avx2.lay_out_tiles(vec![0u64; 2 * words * TILE_ROWS]);
            let mut out = vec![0u32; 2 * TILE_ROWS * 2 * PANEL];
            count_differences(Popcount::Avx2, &mut out, &tiles, &windows, words);
            assert!(out.iter().all(|&c| c == 64 * words as u32), "{words} words");
        }
    }

    #[test]
    fn dense_paths_agree() {
        let (n, cols, rows) = (3, 130, 7);
        let x = Array2::from_shape_vec((n, cols), rand(n * cols, 5)).unwrap();
        let b = binarize(&rand(rows * cols, 6), rows, cols, DType::F32);
        let bias = rand(rows, 7);
        let bits = dense(
            x.view(),
            &XnorWeight::Bits(BitRows::from_binary(&b)),
            Some(&bias),
            &SignInput::Scaled,
        );
        let float = dense(
            x.view(),
            &XnorWeight::Float(Matrix::dense(b.to_f32(), rows, cols)),
            Some(&bias),
            &SignInput::Scaled,
        );
        close(bits.as_slice().unwrap(), float.as_slice().unwrap());
        // One element by hand.
        let (xi, wi) = (x.row(1), &b.to_f32()[2 * cols..3 * cols]);
        let k = xi.iter().map(|v| v.abs()).sum::<f32>() / cols as f32;
        let dot: f32 = xi
            .iter()
            .zip(wi)
            .map(|(v, w)| if *v >= 0.0 { *w } else { -w })
            .sum();
        assert!((bits[[1, 2]] - (k * dot + bias[2])).abs() < 1e-5);
    }

    /// A binary dense layer large enough to split over threads gives the bits it gives on one.
    #[test]
    fn dense_rows_split_over_threads_change_no_bit() {
        let (n, cols, rows) = (2, 4000, 1000);
        let x = Array2::from_shape_vec((n, cols), rand(n * cols, 8)).unwrap();
        let b = binarize(&rand(rows * cols, 9), rows, cols, DType::F32);
        let weight = XnorWeight::Bits(BitRows::from_binary(&b));
        let bias = rand(rows, 10);
        let run = |threads| {
            let mut out = vec![f32::NAN; n * rows];
            parallel::Threads::new(threads).run(usize::MAX, || {
                dense_into(x.view(), &weight, Some(&bias), &SignInput::Scaled, &mut out)
            });
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let one = run(1);
        assert_eq!(run(2), one);
        assert_eq!(run(3), one);
    }

    /// The padding's corrections are kept for the first input shape a layer sees; another
    /// shape (a different plane, or a different padding) gets its own, the bits of weights
    /// that never saw the first.
    #[test]
    fn kept_borders_serve_only_their_own_geometry() {
        let (cin, cout) = (70, 5);
        let cols = cin * 9;
        let b = binarize(&rand(cout * cols, 61), cout, cols, DType::F32);
        let same_pad = Conv2dParams {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1, 1, 1],
            dilation: [1, 1],
            groups: 1,
        };
        let wider_pad = Conv2dParams {
            padding: [2, 2, 2, 2],
            ..same_pad
        };
        let kept = XnorWeight::Bits(BitRows::for_conv(&b, cin));
        let input = SignInput::Scaled;
        let first = Array4::from_shape_vec((1, cin, 9, 9), rand(cin * 81, 62)).unwrap();
        conv2d(first.view(), &kept, None, &same_pad, &input);
        for (h, w, p) in [(7, 8, same_pad), (9, 9, wider_pad)] {
            let x = Array4::from_shape_vec((1, cin, h, w), rand(cin * h * w, 63)).unwrap();
            let fresh = XnorWeight::Bits(BitRows::for_conv(&b, cin));
            let want = conv2d(x.view(), &fresh, None, &p, &input);
            let got = conv2d(x.view(), &kept, None, &p, &input);
            assert_eq!(
                got.mapv(f32::to_bits),
                want.mapv(f32::to_bits),
                "{h}x{w}, padding {:?}",
                p.padding
            );
        }
    }

    /// A `sign` with thresholds fused into a binary convolution and dense layer: the signs of
    /// the input at each channel's threshold, times the weights as an ordinary float layer
    /// (zero padding), unscaled; every popcount kernel and the float path agree.
    #[test]
    fn thresholded_signs_run_unscaled() {
        let p = Conv2dParams {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1, 1, 1],
            dilation: [1, 1],
            groups: 1,
        };
        let (n, cin, h, w, cout) = (2, 70, 6, 5, 6);
        let x = Array4::from_shape_vec((n, cin, h, w), rand(n * cin * h * w, 61)).unwrap();
        let threshold: Vec<f32> = rand(cin, 62).iter().map(|t| t * 0.5).collect();
        let input = SignInput::Thresholds(Some(threshold.clone()));
        let cols = cin * 9;
        let b = binarize(&rand(cout * cols, 63), cout, cols, DType::F32);
        let bias = rand(cout, 64);
        let mut signs = x.clone();
        for mut image in signs.outer_iter_mut() {
            for (c, mut channel) in image.outer_iter_mut().enumerate() {
                channel.mapv_inplace(|v| if v >= threshold[c] { 1.0 } else { -1.0 });
            }
        }
        let dense_w = Matrix::dense(b.to_f32(), cout, cols);
        let want = ops::conv2d(signs.view(), &dense_w, Some(&bias), &p);
        let bits = XnorWeight::Bits(BitRows::for_conv(&b, cin));
        let portable = conv_on(
            Popcount::Portable,
            1,
            (x.view(), &bits, Some(&bias), &p, &input),
        );
        let fastest = conv2d(x.view(), &bits, Some(&bias), &p, &input);
        let float = conv2d(
            x.view(),
            &XnorWeight::Float(dense_w),
            Some(&bias),
            &p,
            &input,
        );
        close(portable.as_slice().unwrap(), want.as_slice().unwrap());
        close(float.as_slice().unwrap(), want.as_slice().unwrap());
        assert_eq!(fastest, portable, "popcount kernels agree bit for bit");

        let x = x.into_shape_with_order((n, cin * h * w)).unwrap();
        let threshold = rand(cin * h * w, 65);
        let input = SignInput::Thresholds(Some(threshold.clone()));
        let b = binarize(&rand(cout * cin * h * w, 66), cout, cin * h * w, DType::F32);
        let got = dense(
            x.view(),
            &XnorWeight::Bits(BitRows::from_binary(&b)),
            Some(&bias),
            &input,
        );
        let w = b.to_f32();
        for (i, xi) in x.rows().into_iter().enumerate() {
            for o in 0..cout {
                let dot: f32 = xi
                    .iter()
                    .zip(&threshold)
                    .zip(&w[o * xi.len()..(o + 1) * xi.len()])
                    .map(|((v, t), w)| if v >= t { *w } else { -w })
                    .sum();
                let want = dot + bias[o];
                assert!(
                    (got[[i, o]] - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{i} {o}"
                );
            }
        }
    }
}
