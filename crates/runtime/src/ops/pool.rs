//! Max and average pooling over windows, and global average pooling.

use super::conv::inside;
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolParams {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 4],
}

impl PoolParams {
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        Conv2dParams {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: [1, 1],
            groups: 1,
        }
        .output_size(h, w)
    }
}

/// Max or average pooling. Padded positions never win a max and are left out of an average
/// (spec §7).
pub fn pool2d(x: ArrayView4<'_, f32>, p: &PoolParams, max: bool) -> Array4<f32> {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = p.output_size(h, w).expect("checked at load");
    let mut out = Array4::<f32>::zeros((n, c, oh, ow));
    pool2d_into(x, p, max, out.as_slice_mut().expect("standard layout"));
    out
}

/// [`pool2d`] written into `out` (`[n, c, oh, ow]` row-major, every element overwritten).
pub fn pool2d_into(x: ArrayView4<'_, f32>, p: &PoolParams, max: bool, dst: &mut [f32]) {
    let (_, _, h, w) = x.dim();
    let (oh, ow) = p.output_size(h, w).expect("checked at load");
    let x = x.as_standard_layout();
    let src = x.as_slice().expect("standard layout");
    let (plane_in, plane_out) = (h * w, oh * ow);
    let work = p.kernel[0] * p.kernel[1] * plane_out;
    // Planes are independent: split over the threads.
    #[cfg(target_arch = "x86_64")]
    if max && stride2_max_fits(p, (h, w), (oh, ow)) {
        let (top, left) = (p.padding[0], p.padding[1]);
        let geometry = kernels::window_max_blocks::Geometry {
            input: (h, w),
            origin: (top, left),
            window: (p.kernel[0], p.kernel[1]),
            output: (oh, ow),
        };
        if kernels::window_max_blocks::fits(&geometry) {
            parallel::split_rows(dst, plane_out.max(1), 1, work, &|first, part| {
                let (mut block, mut maxima) = (scratch::take(), scratch::take());
                let buffers = (&mut block, &mut maxima);
                kernels::window_max_blocks::planes(src, &geometry, (first, part), buffers);
                scratch::give(block);
                scratch::give(maxima);
            });
            return;
        }
        let window = ((top, left), (p.kernel[0], p.kernel[1]));
        parallel::split_rows(dst, plane_out.max(1), 1, work, &|first, part| {
            for (i, out_plane) in part.chunks_exact_mut(plane_out.max(1)).enumerate() {
                let plane = &src[(first + i) * plane_in..(first + i + 1) * plane_in];
                kernels::window_max::plane_max(plane, (h, w), window, out_plane, (oh, ow))
            }
        });
        return;
    }
    parallel::split_rows(dst, plane_out.max(1), 1, work, &|first, part| {
        let (mut rows, mut phases) = (scratch::take::<f32>(), scratch::take::<f32>());
        // Every plane's windows cover the same columns.
        let mut cols = scratch::take::<(usize, usize)>();
        cols.extend(column_spans(w, ow, p));
        for (i, out_plane) in part.chunks_exact_mut(plane_out.max(1)).enumerate() {
            let plane = &src[(first + i) * plane_in..(first + i + 1) * plane_in];
            // 2×2 windows without a stride of 2 on AVX-512 take the loop of `pool_plane`.
            let strided_max = p.stride[1] == 2 && kernels::window_max_available();
            if max && (p.kernel != [2, 2] || strided_max) {
                max_pool_plane(plane, out_plane, (h, w), &cols, p, (&mut rows, &mut phases));
            } else if max {
                pool_plane::<true>(plane, out_plane, (h, w), (oh, ow), p);
            } else {
                pool_plane::<false>(plane, out_plane, (h, w), (oh, ow), p);
            }
        }
        scratch::give(rows);
        scratch::give(phases);
        scratch::give(cols);
    });
}

/// Whether a max pooling runs whole planes on `window_max::plane_max` (AVX-512F or AVX2),
/// stride 2 both ways, a window 2 or 3 wide, and no window wholly in the padding.
#[cfg(target_arch = "x86_64")]
pub(super) fn stride2_max_fits(
    p: &PoolParams,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> bool {
    let nonempty = |o: usize, pad: usize, k: usize, len: usize| {
        let (lo, hi) = window_span(o, 2, pad, k, len);
        lo < hi
    };
    p.stride == [2, 2]
        && kernels::window_max::plane_max_fits(p.kernel[1])
        && (0..oh).all(|oy| nonempty(oy, p.padding[0], p.kernel[0], h))
        && (0..ow).all(|ox| nonempty(ox, p.padding[1], p.kernel[1], w))
}

/// The input positions `lo..hi` a pooling window at output `o` covers, clipped to `0..len`.
pub(super) fn window_span(
    o: usize,
    stride: usize,
    pad: usize,
    k: usize,
    len: usize,
) -> (usize, usize) {
    let a = (o * stride) as isize - pad as isize;
    let lo = a.max(0) as usize;
    let hi = ((a + k as isize).min(len as isize)).max(0) as usize;
    (lo, hi.max(lo))
}

/// The input columns each of `ow` output columns' windows covers, clipped to `0..w`.
pub(super) fn column_spans(
    w: usize,
    ow: usize,
    p: &PoolParams,
) -> impl Iterator<Item = (usize, usize)> {
    (0..ow).map(move |ox| window_span(ox, p.stride[1], p.padding[1], p.kernel[1], w))
}

/// Max pooling in two passes: each input row's maxima over the window's columns (`rows`, `ow`
/// wide), then the output row as the elementwise maximum of its window's rows. Both passes are
/// elementwise maxima of contiguous runs, which vectorise: in the first, each column tap of the
/// window reads the input columns `ox·stride + tap − pad`, which are one contiguous run of the
/// row's phase `(tap − pad) mod stride` (its columns split by their remainder modulo the
/// stride, in `phases`). A maximum does not depend on the order it is taken in, so this gives
/// the same values as taking each window whole. An empty window gives 0. Compiled for AVX-512
/// and AVX2 too: in the baseline's four lanes, with the comparisons that make `f32::max` skip
/// a NaN, pooling was 7% of Xception's time.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub(super) fn max_pool_plane(
    plane: &[f32],
    out: &mut [f32],
    (h, w): (usize, usize),
    cols: &[(usize, usize)],
    p: &PoolParams,
    (rows, phases): (&mut Vec<f32>, &mut Vec<f32>),
) {
    let ow = cols.len();
    let stride = p.stride[1].max(1);
    // Phase `q` holds columns `q, q + stride, …`: `phase_len` of them, the last padded.
    let phase_len = w.div_ceil(stride);
    #[cfg(target_arch = "x86_64")]
    if stride == 2
        && p.kernel[1] <= kernels::window_max::MAX_TAPS
        && kernels::window_max_available()
    {
        // Every row maximum is written below: the buffer needs its length, not a fill
        // (a pass over 100 KB per plane of VGG16's first pooling).
        rows.resize(h * ow, f32::NEG_INFINITY);
        let window = (p.padding[1], p.kernel[1]);
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { kernels::window_max::rows_maxima_stride2(plane, w, window, rows, ow) };
        return max_of_window_rows(out, rows, cols, (h, ow), p);
    }
    rows.clear();
    rows.resize(h * ow, f32::NEG_INFINITY);
    phases.clear();
    phases.resize(stride * phase_len, f32::NEG_INFINITY);
    for (in_row, row_max) in plane
        .chunks_exact(w.max(1))
        .zip(rows.chunks_exact_mut(ow.max(1)))
    {
        let row = if stride == 1 {
            in_row
        } else {
            for (q, phase) in phases.chunks_exact_mut(phase_len).enumerate() {
                for (d, &v) in phase
                    .iter_mut()
                    .zip(in_row[q.min(w)..].iter().step_by(stride))
                {
                    *d = v;
                }
            }
            &phases[..]
        };
        for tap in 0..p.kernel[1] {
            let offset = tap as isize - p.padding[1] as isize;
            let oxs = inside(offset, stride, w, ow);
            if oxs.is_empty() {
                continue;
            }
            // The first input column read, then its phase and place in the phase.
            let x0 = (oxs.start * stride) as isize + offset;
            let x0 = x0 as usize;
            let from = (x0 % stride) * phase_len + x0 / stride;
            let src = &row[from..from + oxs.len()];
            row_max[oxs]
                .iter_mut()
                .zip(src)
                .for_each(|(m, &v)| *m = m.max(v));
        }
    }
    max_of_window_rows(out, rows, cols, (h, ow), p)
}

/// The second pass of [`max_pool_plane`]: each output row is the elementwise maximum of its
/// window's rows of `rows` (each input row's window maxima, `ow` wide); an empty window gives 0.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub(super) fn max_of_window_rows(
    out: &mut [f32],
    rows: &[f32],
    cols: &[(usize, usize)],
    (h, ow): (usize, usize),
    p: &PoolParams,
) {
    // Only a padding wider than the window leaves a column's windows empty.
    let empty_columns = cols.iter().any(|&(xa, xb)| xa == xb);
    for (oy, out_row) in out.chunks_exact_mut(ow.max(1)).enumerate() {
        let (ya, yb) = window_span(oy, p.stride[0], p.padding[0], p.kernel[0], h);
        if ya == yb {
            out_row.fill(0.0);
            continue;
        }
        // The row maxima are never NaN (they start at −∞ and `max` skips a NaN), so starting
        // from the window's first two rows gives the values of starting from −∞; a copy of the
        // first alone would be a call to `memcpy` per row.
        let mut window = rows[ya * ow..yb * ow].chunks_exact(ow.max(1));
        let top = window.next().expect("a row in the window");
        let next = window.next().unwrap_or(top);
        for ((o, &a), &b) in out_row.iter_mut().zip(top).zip(next) {
            *o = a.max(b);
        }
        for row_max in window {
            out_row
                .iter_mut()
                .zip(row_max)
                .for_each(|(o, &v)| *o = o.max(v));
        }
        if empty_columns {
            for (o, &(xa, xb)) in out_row.iter_mut().zip(cols) {
                if xa == xb {
                    *o = 0.0;
                }
            }
        }
    }
}

pub(super) fn pool_plane<const MAX: bool>(
    plane: &[f32],
    out: &mut [f32],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    p: &PoolParams,
) {
    if p.kernel == [2, 2] && p.stride == [2, 2] && p.padding == [0; 4] {
        // The CNNs' usual 2×2/2 pooling: every window is whole, so two input rows give one
        // output row with no window arithmetic (the general loop below cost LeNet-5 a fifth
        // of its batch-1 time). Same order of operations, so the same bits.
        for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
            let top = &plane[2 * oy * w..2 * oy * w + 2 * ow];
            let bottom = &plane[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow];
            for ((d, t), b) in out_row
                .iter_mut()
                .zip(top.chunks_exact(2))
                .zip(bottom.chunks_exact(2))
            {
                *d = if MAX {
                    t[0].max(t[1]).max(b[0]).max(b[1])
                } else {
                    (t[0] + t[1] + b[0] + b[1]) / 4.0
                };
            }
        }
        return;
    }
    let span = window_span;
    for oy in 0..oh {
        let (ya, yb) = span(oy, p.stride[0], p.padding[0], p.kernel[0], h);
        for ox in 0..ow {
            let (xa, xb) = span(ox, p.stride[1], p.padding[1], p.kernel[1], w);
            let count = (yb - ya) * (xb - xa);
            let mut acc = if MAX { f32::NEG_INFINITY } else { 0.0 };
            for y in ya..yb {
                for &v in &plane[y * w + xa..y * w + xb] {
                    acc = if MAX { acc.max(v) } else { acc + v };
                }
            }
            out[oy * ow + ox] = match (count, MAX) {
                (0, _) => 0.0,
                (_, true) => acc,
                (c, false) => acc / c as f32,
            };
        }
    }
}

pub fn global_avg_pool(x: ArrayView4<'_, f32>) -> Array2<f32> {
    let (n, c, _, _) = x.dim();
    let mut out = Array2::<f32>::zeros((n, c));
    global_avg_pool_into(x, out.as_slice_mut().expect("a fresh array is contiguous"));
    out
}

/// [`global_avg_pool`] written into `out` (`[n, c]` row-major).
pub fn global_avg_pool_into(x: ArrayView4<'_, f32>, out: &mut [f32]) {
    let (n, c, h, w) = x.dim();
    let x = x.as_standard_layout();
    let planes = x.as_slice().expect("standard layout");
    if h * w == 0 {
        out[..n * c].fill(0.0);
        return;
    }
    let plane = h * w;
    // Each plane as a contiguous one-dimensional view: its sum is ndarray's unrolled fold, the
    // bits of a slice of the four-dimensional array, without building that slice per channel
    // (MobileNetV2's 1280 channels of 7×7 took 0.06 ms that way).
    for (mean, values) in out[..n * c].iter_mut().zip(planes.chunks_exact(plane)) {
        *mean = ndarray::ArrayView1::from(values).sum() / plane as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxrm_format::testing::uniform as rand;
    use ndarray::Array;

    #[test]
    fn two_pass_max_pooling_equals_whole_windows() {
        // 40 rows as well as 9: taller planes, more output rows.
        for (h, w) in [(9, 11), (40, 13)] {
            let x = rand(h * w, 21);
            for (kernel, stride, padding) in [
                ([3, 3], [2, 2], [1, 1, 1, 1]),
                ([3, 3], [2, 2], [0, 0, 1, 1]),
                ([2, 2], [2, 2], [0; 4]),
                ([3, 2], [1, 1], [0, 1, 2, 0]),
                ([1, 1], [2, 3], [0; 4]),
                ([5, 5], [3, 3], [2, 2, 2, 2]),
                ([3, 3], [1, 1], [1, 1, 1, 1]),
                ([3, 3], [2, 2], [0; 4]),
                ([2, 4], [1, 2], [0, 3, 0, 0]),
            ] {
                let p = PoolParams {
                    kernel,
                    stride,
                    padding,
                };
                let (oh, ow) = p.output_size(h, w).unwrap();
                let mut whole = vec![f32::NAN; oh * ow];
                let mut two_pass = vec![f32::NAN; oh * ow];
                pool_plane::<true>(&x, &mut whole, (h, w), (oh, ow), &p);
                let cols: Vec<_> = column_spans(w, ow, &p).collect();
                max_pool_plane(
                    &x,
                    &mut two_pass,
                    (h, w),
                    &cols,
                    &p,
                    (&mut Vec::new(), &mut Vec::new()),
                );
                assert_eq!(whole, two_pass, "{h}×{w} {p:?}");
            }
        }
    }

    #[test]
    fn max_pooling_at_stride_2_equals_whole_windows_on_every_path() {
        // Xception's planes (9 to 72 wide), one pixel, and rows past two vectors of outputs;
        // a NaN in each plane, which `max` skips.
        for (h, w) in [
            (9, 9),
            (18, 18),
            (36, 36),
            (72, 72),
            (1, 1),
            (2, 5),
            (40, 70),
        ] {
            let mut x = rand(3 * h * w, 22);
            for plane in x.chunks_exact_mut(h * w) {
                plane[(h * w) / 2] = f32::NAN;
            }
            for (kernel, padding) in [
                ([3, 3], [0, 0, 1, 1]),
                ([3, 3], [1, 1, 1, 1]),
                ([2, 2], [0; 4]),
                ([3, 2], [2, 1, 0, 0]),
            ] {
                let p = PoolParams {
                    kernel,
                    stride: [2, 2],
                    padding,
                };
                let Some((oh, ow)) = p.output_size(h, w) else {
                    continue;
                };
                let mut whole = vec![f32::NAN; 3 * oh * ow];
                for (plane, out) in x.chunks_exact(h * w).zip(whole.chunks_exact_mut(oh * ow)) {
                    pool_plane::<true>(plane, out, (h, w), (oh, ow), &p);
                }
                let input = ArrayView4::from_shape((1, 3, h, w), &x).unwrap();
                let pooled = pool2d(input, &p, true);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let label = format!("{h}×{w} {p:?}");
                assert_eq!(bits(&whole), bits(pooled.as_slice().unwrap()), "{label}");
            }
        }
    }

    #[test]
    fn pooling_matches_the_reference() {
        let x = Array::from_shape_vec((1, 2, 5, 5), rand(50, 7)).unwrap();
        let p = PoolParams {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0, 1, 1],
        };
        let mx = pool2d(x.view(), &p, true);
        let av = pool2d(x.view(), &p, false);
        assert_eq!(mx.dim(), (1, 2, 3, 3));
        for c in 0..2 {
            for oy in 0..3 {
                for ox in 0..3 {
                    let vals: Vec<f32> = (oy * 2..(oy * 2 + 2).min(5))
                        .flat_map(|y| (ox * 2..(ox * 2 + 2).min(5)).map(move |xx| (y, xx)))
                        .map(|(y, xx)| x[[0, c, y, xx]])
                        .collect();
                    assert_eq!(
                        mx[[0, c, oy, ox]],
                        vals.iter().cloned().fold(f32::MIN, f32::max)
                    );
                    assert!(
                        (av[[0, c, oy, ox]] - vals.iter().sum::<f32>() / vals.len() as f32).abs()
                            < 1e-6
                    );
                }
            }
        }
        // Unpadded 2×2/2 pooling (its own fast path) on odd sizes: the last row and column are
        // dropped, every window is whole.
        let x7 = Array::from_shape_vec((2, 1, 7, 5), rand(70, 8)).unwrap();
        let unpadded = PoolParams {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0; 4],
        };
        let (mx, av) = (
            pool2d(x7.view(), &unpadded, true),
            pool2d(x7.view(), &unpadded, false),
        );
        assert_eq!(mx.dim(), (2, 1, 3, 2));
        for ((b, _, oy, ox), &m) in mx.indexed_iter() {
            let vals = [(0, 0), (0, 1), (1, 0), (1, 1)]
                .map(|(dy, dx)| x7[[b, 0, 2 * oy + dy, 2 * ox + dx]]);
            assert_eq!(m, vals.iter().cloned().fold(f32::MIN, f32::max));
            assert_eq!(
                av[[b, 0, oy, ox]],
                (vals[0] + vals[1] + vals[2] + vals[3]) / 4.0
            );
        }
        let g = global_avg_pool(x.view());
        assert!((g[[0, 1]] - x.slice(s![0, 1, .., ..]).sum() / 25.0).abs() < 1e-6);
        let mut l = Array2::from_shape_vec((1, 3), vec![1.0, 2.0, 3.0]).unwrap();
        softmax(&mut l);
        assert!((l.sum() - 1.0).abs() < 1e-6 && l[[0, 2]] > l[[0, 1]]);
    }
}
