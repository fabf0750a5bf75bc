//! XNOR-Net layers (spec §7, `xnor_conv2d` and `xnor_dense`). The input is replaced by its
//! signs and each output position is scaled by `K`, the mean magnitude of the input over its
//! receptive field; the weights are whatever the file stores.
//!
//! When the weights are stored `binary` (`α · sign` per row), the layer runs on bits: the dot
//! product of two sign vectors of length `n` is `n − 2 · popcount(x XOR w)`, 64 products per
//! instruction. Otherwise the signs go through the ordinary float kernels. Both paths compute
//! `K` with the same code, so they differ only by float rounding in the sums.

use super::ops::{self, Conv2dParams, Matrix};
use cxrm_format::encoding::binary::Binary;
use ndarray::{Array2, Array4, ArrayView2, ArrayView4};

/// Sign bits of a weight matrix, one row per output channel, 64 columns per word (column `k`
/// is bit `k % 64` of word `k / 64`); bits past `cols` are zero.
#[derive(Debug, Clone, PartialEq)]
pub struct BitRows {
    pub rows: usize,
    pub cols: usize,
    pub words: usize,
    pub bits: Vec<u64>,
    pub alpha: Vec<f32>,
}

impl BitRows {
    /// Repack a `binary` tensor's bytes (most significant bit first, rows byte-aligned) into
    /// words for the popcount kernel.
    pub fn from_binary(b: &Binary) -> BitRows {
        Self::permuted(b, |k| k)
    }

    /// A convolution's weights `[out, channels, kh, kw]`, columns reordered from the file's
    /// `(c, ky, kx)` to `(ky, kx, c)`: then the input bits a window position contributes (one
    /// bit per channel) are contiguous, and building each output position's bits copies whole
    /// words instead of testing every channel of every tap.
    pub fn for_conv(b: &Binary, channels: usize) -> BitRows {
        let window = b.cols / channels.max(1);
        Self::permuted(b, |k| (k % window) * channels + k / window)
    }

    fn permuted(b: &Binary, column: impl Fn(usize) -> usize) -> BitRows {
        let words = b.cols.div_ceil(64);
        let mut bits = vec![0u64; b.rows * words];
        for r in 0..b.rows {
            for (k, sign) in b.row_signs(r).enumerate() {
                if sign {
                    let k = column(k);
                    bits[r * words + k / 64] |= 1 << (k % 64);
                }
            }
        }
        BitRows {
            rows: b.rows,
            cols: b.cols,
            words,
            bits,
            alpha: b.scales.clone(),
        }
    }
}

/// The weights of an XNOR layer.
#[derive(Debug, Clone)]
pub enum XnorWeight<'a> {
    /// Stored `binary`: the popcount kernel.
    Bits(BitRows),
    /// Any other encoding: signs times float weights.
    Float(Matrix<'a>),
}

impl XnorWeight<'_> {
    pub fn rows(&self) -> usize {
        match self {
            XnorWeight::Bits(b) => b.rows,
            XnorWeight::Float(m) => m.rows(),
        }
    }
}

/// XNOR-Net's sign: +1 for `x ≥ 0`, else −1 (NaN included).
#[inline]
fn sign(x: f32) -> f32 {
    if x >= 0.0 { 1.0 } else { -1.0 }
}

/// `K` for every image and output position `[n, oh · ow]`: the sum of `|x|` over the window
/// (all channels; padded positions count as zero) divided by `C · kh · kw`.
fn window_scales(x: ArrayView4<'_, f32>, p: &Conv2dParams, oh: usize, ow: usize) -> Array2<f32> {
    let (n, c, h, w) = x.dim();
    let [kh, kw] = p.kernel;
    let count = (c * kh * kw) as f32;
    let mut out = Array2::<f32>::zeros((n, oh * ow));
    for b in 0..n {
        // Channel sums of |x| first: the window then sums one plane.
        let mut plane = vec![0.0f32; h * w];
        for ch in 0..c {
            let channel = x.slice(ndarray::s![b, ch, .., ..]);
            // Contiguous in a standard-layout input: one vectorised pass.
            match channel.as_slice() {
                Some(values) => plane
                    .iter_mut()
                    .zip(values)
                    .for_each(|(p, v)| *p += v.abs()),
                None => {
                    for ((iy, ix), v) in channel.indexed_iter() {
                        plane[iy * w + ix] += v.abs();
                    }
                }
            }
        }
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = 0.0f32;
                for ky in 0..kh {
                    let iy =
                        (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                            - p.padding[1] as isize;
                        if ix >= 0 && ix < w as isize {
                            acc += plane[iy as usize * w + ix as usize];
                        }
                    }
                }
                out[[b, oy * ow + ox]] = acc / count;
            }
        }
    }
    out
}

/// `xnor_conv2d` (groups 1, checked at load).
pub fn conv2d(
    x: ArrayView4<'_, f32>,
    weight: &XnorWeight<'_>,
    bias: Option<&[f32]>,
    p: &Conv2dParams,
) -> Array4<f32> {
    let (n, _, h, w) = x.dim();
    let (oh, ow) = p.output_size(h, w).expect("checked at load");
    let scales = window_scales(x, p, oh, ow);
    let cout = weight.rows();
    let mut out = match weight {
        XnorWeight::Float(m) => ops::conv2d(x.mapv(sign).view(), m, None, p),
        XnorWeight::Bits(bits) => {
            let mut out = Array4::<f32>::zeros((n, cout, oh, ow));
            for b in 0..n {
                let dots = popcount_conv(x.slice(ndarray::s![b, .., .., ..]), bits, p, oh, ow);
                out.slice_mut(ndarray::s![b, .., .., ..])
                    .iter_mut()
                    .zip(&dots)
                    .for_each(|(o, &d)| *o = d);
            }
            out
        }
    };
    for b in 0..n {
        for o in 0..cout {
            let bo = bias.map_or(0.0, |bias| bias[o]);
            let mut plane = out.slice_mut(ndarray::s![b, o, .., ..]);
            for (v, k) in plane.iter_mut().zip(scales.row(b)) {
                *v = *v * k + bo;
            }
        }
    }
    out
}

/// `α[o] · Σ_k sign(x)[k, p] · sign(w)[o, k]` for one image, `[cout, oh, ow]` flattened.
/// `w` is in `(ky, kx, c)` column order ([`BitRows::for_conv`]).
fn popcount_conv(
    x: ndarray::ArrayView3<'_, f32>,
    w: &BitRows,
    p: &Conv2dParams,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let (c, h, wd) = x.dim();
    let [kh, kw] = p.kernel;
    let words = w.words;
    let positions = oh * ow;
    // Each pixel's signs across channels, packed: one window tap's contribution.
    let cw = c.div_ceil(64);
    let mut pixels = vec![0u64; h * wd * cw];
    for (ch, plane) in x.outer_iter().enumerate() {
        let (word, bit) = (ch / 64, ch % 64);
        let plane = plane.as_standard_layout();
        let values = plane.as_slice().expect("standard layout");
        for (pixel, &v) in pixels.chunks_exact_mut(cw).zip(values) {
            pixel[word] |= u64::from(v >= 0.0) << bit;
        }
    }
    let ones: Vec<u64> = (0..cw)
        .map(|j| {
            let n = (c - 64 * j).min(64);
            if n == 64 { u64::MAX } else { (1u64 << n) - 1 }
        })
        .collect();
    // Per output position: the input's sign bits in the weights' column order, which bits lie
    // inside the image, and how many do.
    let mut signs = vec![0u64; positions * words];
    let mut inside = vec![0u64; positions * words];
    let mut counts = vec![0i32; positions];
    for oy in 0..oh {
        for ox in 0..ow {
            let pos = oy * ow + ox;
            let sb = &mut signs[pos * words..(pos + 1) * words];
            let ib = &mut inside[pos * words..(pos + 1) * words];
            for ky in 0..kh {
                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..kw {
                    let ix =
                        (ox * p.stride[1] + kx * p.dilation[1]) as isize - p.padding[1] as isize;
                    if ix < 0 || ix >= wd as isize {
                        continue;
                    }
                    let pixel = (iy as usize * wd + ix as usize) * cw;
                    let at = (ky * kw + kx) * c;
                    put_bits(sb, at, &pixels[pixel..pixel + cw], c);
                    put_bits(ib, at, &ones, c);
                    counts[pos] += c as i32;
                }
            }
        }
    }
    let mut out = vec![0.0f32; w.rows * positions];
    sign_products(&mut out, w, &signs, &inside, &counts);
    out
}

/// OR the low `n` bits of `src` (bits past `n` are zero) into `dst` starting at bit `at`.
#[inline]
fn put_bits(dst: &mut [u64], at: usize, src: &[u64], n: usize) {
    let shift = at % 64;
    for (j, &v) in src.iter().enumerate() {
        let word = at / 64 + j;
        dst[word] |= v << shift;
        let bits_here = (n - 64 * j).min(64);
        if shift != 0 && shift + bits_here > 64 {
            dst[word + 1] |= v >> (64 - shift);
        }
    }
}

/// `out[o, pos] = α[o] · (inside − 2 · popcount((x XOR w) AND inside))`. A position whose
/// window lies wholly inside the image (most of them) needs no mask, which halves the words
/// read. Compiled for AVX-512 with its vector popcount (eight words per instruction), and
/// with the POPCNT instruction as well as without (the x86-64 baseline lacks it, and its
/// software popcount made the XNOR layers 3× slower), chosen once at run time by multiversion.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vpopcntdq",
    "x86_64+avx2+popcnt",
    "x86_64+popcnt",
    "aarch64+neon"
))]
fn sign_products(out: &mut [f32], w: &BitRows, signs: &[u64], inside: &[u64], counts: &[i32]) {
    let words = w.words;
    let positions = counts.len();
    let whole = w.cols as i32;
    for o in 0..w.rows {
        let row = &w.bits[o * words..(o + 1) * words];
        let alpha = w.alpha[o];
        for (pos, (sb, ib)) in signs
            .chunks_exact(words)
            .zip(inside.chunks_exact(words))
            .enumerate()
        {
            let differ: u32 = if counts[pos] == whole {
                sb.iter().zip(row).map(|(s, r)| (s ^ r).count_ones()).sum()
            } else {
                sb.iter()
                    .zip(ib)
                    .zip(row)
                    .map(|((s, i), r)| ((s ^ r) & i).count_ones())
                    .sum()
            };
            out[o * positions + pos] = alpha * (counts[pos] - 2 * differ as i32) as f32;
        }
    }
}

/// Per row of `w`: `α · (cols − 2 · popcount(x XOR w))` (bits past `cols` are zero in both).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vpopcntdq",
    "x86_64+avx2+popcnt",
    "x86_64+popcnt",
    "aarch64+neon"
))]
fn sign_dots(out: &mut [f32], w: &BitRows, signs: &[u64]) {
    for (o, y) in out.iter_mut().enumerate() {
        let row = &w.bits[o * w.words..(o + 1) * w.words];
        let differ: u32 = signs
            .iter()
            .zip(row)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        *y = w.alpha[o] * (w.cols as i32 - 2 * differ as i32) as f32;
    }
}

/// `xnor_dense`: `y[o] = K · Σ_k sign(x[k]) · w[o, k] + b[o]` with `K` the mean of `|x|`.
pub fn dense(x: ArrayView2<'_, f32>, weight: &XnorWeight<'_>, bias: Option<&[f32]>) -> Array2<f32> {
    let cols = x.ncols();
    let scales: Vec<f32> = x
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|v| v.abs()).sum::<f32>() / cols as f32)
        .collect();
    let mut y = match weight {
        XnorWeight::Float(m) => m.mul_transposed(x.mapv(sign).view()),
        XnorWeight::Bits(w) => {
            let mut y = Array2::<f32>::zeros((x.nrows(), w.rows));
            let mut signs = vec![0u64; w.words];
            for (xi, mut yi) in x.rows().into_iter().zip(y.rows_mut()) {
                signs.iter_mut().for_each(|s| *s = 0);
                for (k, &v) in xi.iter().enumerate() {
                    if v >= 0.0 {
                        signs[k / 64] |= 1 << (k % 64);
                    }
                }
                sign_dots(yi.as_slice_mut().expect("standard layout"), w, &signs);
            }
            y
        }
    };
    for (mut row, k) in y.rows_mut().into_iter().zip(scales) {
        for (o, v) in row.iter_mut().enumerate() {
            *v = *v * k + bias.map_or(0.0, |b| b[o]);
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxrm_format::dtype::DType;
    use cxrm_format::encoding::binary::binarize;

    use cxrm_format::testing::uniform as rand;

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
            );
            let float = conv2d(
                x.view(),
                &XnorWeight::Float(Matrix::dense(dense.clone(), cout, cols)),
                None,
                &p,
            );
            close(bits.as_slice().unwrap(), want.as_slice().unwrap());
            close(float.as_slice().unwrap(), want.as_slice().unwrap());
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
        );
        let float = dense(
            x.view(),
            &XnorWeight::Float(Matrix::dense(b.to_f32(), rows, cols)),
            Some(&bias),
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
}
