//! What one pass over an image gives the layer: each pixel's signs across channels, and `K`,
//! XNOR-Net's mean input magnitude over each window.

use super::*;

/// What one image's layer needs of each pixel, from one pass over the image: the sum of `|x|`
/// over channels (for `K`) and, on the popcount path, the signs across channels,
/// `c.div_ceil(64)` planes of `h · w` words with channel `ch` at bit `ch % 64` of plane
/// `ch / 64`. Both are buffers of the calling thread's pool ([`Pixels::give_back`]), so a warm
/// pass allocates nothing for them.
pub(super) struct Pixels {
    pub(super) magnitudes: Vec<f32>,
    pub(super) signs: Vec<u64>,
}

impl Pixels {
    /// Both buffers back to this thread's pool.
    pub(super) fn give_back(self) {
        scratch::give(self.magnitudes);
        scratch::give(self.signs);
    }
}

pub(super) fn pixels(
    x: ndarray::ArrayView3<'_, f32>,
    with_signs: bool,
    input: &SignInput,
) -> Pixels {
    let (c, h, w) = x.dim();
    let x = x.as_standard_layout();
    let values = x.as_slice().expect("standard layout");
    let positions = h * w;
    // Unscaled layers need no magnitudes (their `K` is 1).
    let magnitude_rows = usize::from(input.scaled());
    let planes = if with_signs { c.div_ceil(64) } else { 0 };
    let (mut magnitudes, mut signs) = (scratch::take::<f32>(), scratch::take::<u64>());
    magnitudes.resize(magnitude_rows * positions, 0.0);
    signs.resize(planes * positions, 0);
    // Bands of pixels over the threads, each band's words and sums its own; every pixel still
    // takes its channels in order.
    let bands = (
        Along(view2(&mut signs, (planes, positions)), Axis(1)),
        Along(view2(&mut magnitudes, (magnitude_rows, positions)), Axis(1)),
    );
    parallel::split_parts(bands, PIXEL_BAND, c, &|first, (signs, magnitudes)| {
        add_channels(
            values,
            (c, positions),
            input,
            first,
            (signs.0, magnitudes.0),
        )
    });
    Pixels { magnitudes, signs }
}

/// `values` as a row-major `rows × cols` view.
pub(super) fn view2<T>(values: &mut [T], (rows, cols): (usize, usize)) -> ArrayViewMut2<'_, T> {
    ArrayViewMut2::from_shape((rows, cols), values).expect("rows × cols values")
}

/// Pixels a thread takes at a time in [`pixels()`]: a multiple of the vectors' widths.
pub(super) const PIXEL_BAND: usize = 256;

/// Every channel of `values` (`[c, positions]`) added to the pixels `first..` of one band
/// (in [`pixels()`]): their words of signs, a row per plane of 64 channels (none on the float
/// path), and their sums of `|x|` (no row where the layer is unscaled), in channel order.
pub(super) fn add_channels(
    values: &[f32],
    (c, positions): (usize, usize),
    input: &SignInput,
    first: usize,
    (mut signs, mut magnitudes): (ArrayViewMut2<'_, u64>, ArrayViewMut2<'_, f32>),
) {
    let len = signs.ncols();
    let mut magnitudes = magnitudes
        .rows_mut()
        .into_iter()
        .next()
        .map(|row| row.into_slice().expect("a row of pixels"));
    for ch in 0..c {
        let values = &values[ch * positions + first..][..len];
        let (bit, threshold) = (ch % 64, input.at(ch));
        let mut plane = (ch / 64 < signs.nrows()).then(|| signs.row_mut(ch / 64));
        let signs = plane
            .as_mut()
            .map(|row| row.as_slice_mut().expect("a row of pixels"));
        match (signs, magnitudes.as_deref_mut()) {
            (Some(signs), Some(magnitudes)) => {
                add_channel(signs, magnitudes, values, bit, threshold)
            }
            (Some(signs), None) => add_signs(signs, values, bit, threshold),
            (None, Some(magnitudes)) => add_magnitudes(magnitudes, values),
            (None, None) => {}
        }
    }
}

/// `magnitudes += |values|`, one vectorised pass (each element is one sum, so the width of
/// the vectors changes no bit).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2", "aarch64+neon"))]
pub(super) fn add_magnitudes(magnitudes: &mut [f32], values: &[f32]) {
    for (m, v) in magnitudes.iter_mut().zip(values) {
        *m += v.abs();
    }
}

/// [`add_magnitudes`], and each value's sign at `threshold` as bit `bit` of its pixel's word
/// in `signs`.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl",
    "x86_64+avx2",
    "aarch64+neon"
))]
pub(super) fn add_channel(
    signs: &mut [u64],
    magnitudes: &mut [f32],
    values: &[f32],
    bit: usize,
    threshold: f32,
) {
    // A select of a constant: one masked OR per vector.
    let one = 1u64 << bit;
    for ((word, m), &v) in signs.iter_mut().zip(magnitudes.iter_mut()).zip(values) {
        *word |= if v >= threshold { one } else { 0 };
        *m += v.abs();
    }
}

/// Each value's sign at `threshold` as bit `bit` of its pixel's word in `signs` (the
/// [`add_channel`] of a layer without `K`).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl",
    "x86_64+avx2",
    "aarch64+neon"
))]
pub(super) fn add_signs(signs: &mut [u64], values: &[f32], bit: usize, threshold: f32) {
    let one = 1u64 << bit;
    for (word, &v) in signs.iter_mut().zip(values) {
        *word |= if v >= threshold { one } else { 0 };
    }
}

/// `K` for each output position of one image: the sum of `|x|` over the window (all
/// channels, from the pixels' `magnitudes`; padded positions count as zero) divided by
/// `C · kh · kw`.
pub(super) fn window_means(
    magnitudes: &[f32],
    (c, h, w): (usize, usize, usize),
    p: &Conv2dParams,
    (oh, ow): (usize, usize),
    sums: &mut Vec<f32>,
) {
    let [kh, kw] = p.kernel;
    sums.clear();
    sums.resize(oh * ow, 0.0);
    // Tap by tap over the positions that tap reaches inside the image: each position still
    // adds its taps in (ky, kx) order.
    for ky in 0..kh {
        let out_rows = inside_outputs(ky, 0, p, h, oh);
        for kx in 0..kw {
            let out_cols = inside_outputs(kx, 1, p, w, ow);
            if out_cols.is_empty() {
                continue;
            }
            for oy in out_rows.clone() {
                let iy = oy * p.stride[0] + ky * p.dilation[0] - p.padding[0];
                let ix = out_cols.start * p.stride[1] + kx * p.dilation[1] - p.padding[1];
                let taps = magnitudes[iy * w + ix..].iter().step_by(p.stride[1]);
                for (sum, &v) in sums[oy * ow..][out_cols.clone()].iter_mut().zip(taps) {
                    *sum += v;
                }
            }
        }
    }
    let count = (c * kh * kw) as f32;
    for sum in sums.iter_mut() {
        *sum /= count;
    }
}

/// Where output `o`, tap `k` reads along one axis (`axis` 0 for rows, 1 for columns), or
/// `None` in the padding.
pub(super) fn input_index(
    o: usize,
    k: usize,
    axis: usize,
    p: &Conv2dParams,
    len: usize,
) -> Option<usize> {
    let i = (o * p.stride[axis] + k * p.dilation[axis]).checked_sub(p.padding[axis])?;
    (i < len).then_some(i)
}

/// The outputs `o < out_len` whose tap `k` reads inside the input along one axis: a range,
/// as the input index grows with `o`.
pub(super) fn inside_outputs(
    k: usize,
    axis: usize,
    p: &Conv2dParams,
    len: usize,
    out_len: usize,
) -> std::ops::Range<usize> {
    let inside = |o: &usize| input_index(*o, k, axis, p, len).is_some();
    let start = (0..out_len).find(inside).unwrap_or(out_len);
    let end = (start..out_len).find(|o| !inside(o)).unwrap_or(out_len);
    start..end
}
