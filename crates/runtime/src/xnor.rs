//! XNOR-Net layers (spec §7, `xnor_conv2d` and `xnor_dense`). The input is replaced by its
//! signs and each output position is scaled by `K`, the mean magnitude of the input over its
//! receptive field; the weights are whatever the file stores.
//!
//! When the weights are stored `binary` (`α · sign` per row), the layer runs on bits: the dot
//! product of two sign vectors of length `n` is `n − 2 · popcount(x XOR w)`, 64 products per
//! instruction. Otherwise the signs go through the ordinary float kernels. Both paths compute
//! `K` with the same code, so they differ only by float rounding in the sums.

use super::ops::{self, Conv2dParams, Matrix};
use super::parallel::{self, Along};
use super::scratch;
use cxrm_format::encoding::binary::Binary;
use ndarray::{Array2, Array4, ArrayView2, ArrayView4, ArrayViewMut2, Axis};
use std::borrow::Cow;
use std::sync::OnceLock;

/// Sign bits of a weight matrix, one row per output channel, 64 columns per word (column `k`
/// is bit `k % 64` of word `k / 64`); bits past `cols` are zero.
#[derive(Debug, Clone)]
pub struct BitRows {
    pub rows: usize,
    pub cols: usize,
    pub words: usize,
    pub bits: Vec<u64>,
    pub alpha: Vec<f32>,
    /// The rows as the fastest popcount kernel's convolution reads them
    /// ([`Popcount::lay_out_tiles`]), made by the first call and kept for the next passes.
    tiles: OnceLock<Vec<u64>>,
    /// A convolution's windows in the padding and what they add ([`Borders`]), for the
    /// geometry of the first call, kept for the next passes (a model's input shape is fixed).
    borders: OnceLock<Borders>,
}

/// Equal weights: the kept tiles are made from them.
impl PartialEq for BitRows {
    fn eq(&self, other: &BitRows) -> bool {
        (self.rows, self.cols, self.words) == (other.rows, other.cols, other.words)
            && self.bits == other.bits
            && self.alpha == other.alpha
    }
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
            tiles: OnceLock::new(),
            borders: OnceLock::new(),
        }
    }

    /// The rows in the tiles `kernel` reads: kept for the fastest kernel, which is the one
    /// every pass takes, and made anew for the others (which only tests take).
    fn tiles_for(&self, kernel: Popcount) -> Cow<'_, [u64]> {
        if kernel == Popcount::fastest() {
            Cow::Borrowed(
                self.tiles
                    .get_or_init(|| kernel.lay_out_tiles(weight_tiles(self))),
            )
        } else {
            Cow::Owned(kernel.lay_out_tiles(weight_tiles(self)))
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

/// How a binary layer's input becomes signs, and whether its outputs are scaled.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum SignInput {
    /// XNOR-Net's layers (`xnor_conv2d`, `xnor_dense`): signs at 0, each output scaled by `K`,
    /// the mean `|x|` of its receptive field.
    #[default]
    Scaled,
    /// A `sign` node fused into the `conv2d` / `dense` it feeds (spec 1.5): signs at a
    /// threshold per input channel (0 without), outputs unscaled.
    Thresholds(Option<Vec<f32>>),
}

impl SignInput {
    /// The threshold of input channel `c`.
    #[inline]
    fn at(&self, c: usize) -> f32 {
        match self {
            SignInput::Thresholds(Some(t)) => t[c],
            _ => 0.0,
        }
    }

    fn scaled(&self) -> bool {
        matches!(self, SignInput::Scaled)
    }
}

/// The sign of `x` at threshold `t`: +1 for `x ≥ t`, else −1 (NaN included).
#[inline]
fn sign(x: f32, t: f32) -> f32 {
    if x >= t { 1.0 } else { -1.0 }
}

/// What one image's layer needs of each pixel, from one pass over the image: the sum of `|x|`
/// over channels (for `K`) and, on the popcount path, the signs across channels,
/// `c.div_ceil(64)` planes of `h · w` words with channel `ch` at bit `ch % 64` of plane
/// `ch / 64`. Both are buffers of the calling thread's pool ([`Pixels::give_back`]), so a warm
/// pass allocates nothing for them.
struct Pixels {
    magnitudes: Vec<f32>,
    signs: Vec<u64>,
}

impl Pixels {
    /// Both buffers back to this thread's pool.
    fn give_back(self) {
        scratch::give(self.magnitudes);
        scratch::give(self.signs);
    }
}

fn pixels(x: ndarray::ArrayView3<'_, f32>, with_signs: bool, input: &SignInput) -> Pixels {
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
fn view2<T>(values: &mut [T], (rows, cols): (usize, usize)) -> ArrayViewMut2<'_, T> {
    ArrayViewMut2::from_shape((rows, cols), values).expect("rows × cols values")
}

/// Pixels a thread takes at a time in [`pixels`]: a multiple of the vectors' widths.
const PIXEL_BAND: usize = 256;

/// Every channel of `values` (`[c, positions]`) added to the pixels `first..` of one band
/// (in [`pixels`]): their words of signs, a row per plane of 64 channels (none on the float
/// path), and their sums of `|x|` (no row where the layer is unscaled), in channel order.
fn add_channels(
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
fn add_magnitudes(magnitudes: &mut [f32], values: &[f32]) {
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
fn add_channel(
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
fn add_signs(signs: &mut [u64], values: &[f32], bit: usize, threshold: f32) {
    let one = 1u64 << bit;
    for (word, &v) in signs.iter_mut().zip(values) {
        *word |= if v >= threshold { one } else { 0 };
    }
}

/// `K` for each output position of one image: the sum of `|x|` over the window (all
/// channels, from the pixels' `magnitudes`; padded positions count as zero) divided by
/// `C · kh · kw`.
fn window_means(
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
fn input_index(o: usize, k: usize, axis: usize, p: &Conv2dParams, len: usize) -> Option<usize> {
    let i = (o * p.stride[axis] + k * p.dilation[axis]).checked_sub(p.padding[axis])?;
    (i < len).then_some(i)
}

/// The outputs `o < out_len` whose tap `k` reads inside the input along one axis: a range,
/// as the input index grows with `o`.
fn inside_outputs(
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
fn position_scales(
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
fn conv2d_with(
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
fn signs_of<D>(x: ndarray::ArrayView<'_, f32, D>, input: &SignInput, signs: &mut Vec<f32>)
where
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
fn scale_and_shift(plane: &mut [f32], scales: &[f32], bias: f32) {
    for (v, k) in plane.iter_mut().zip(scales) {
        *v = *v * k + bias;
    }
}

/// What turns row `o`'s sign products into its outputs: `α[o]` and `b[o]`.
#[derive(Debug, Clone, Copy)]
struct RowScale {
    alpha: f32,
    bias: f32,
}

/// One output element from its sign product: `(α · dot) · K + b`, the float path's `v · K + b`
/// with `v = α · dot`.
#[inline]
fn output(dot: i32, row: RowScale, scale: f32) -> f32 {
    row.alpha * dot as f32 * scale + row.bias
}

/// One output plane from its counts of differing bits, as if no tap were in the padding:
/// [`output`] of `cols − 2 · differ` (the border positions are then rewritten).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2", "aarch64+neon"))]
fn output_plane(plane: &mut [f32], differ: &[u32], cols: i32, row: RowScale, scales: &[f32]) {
    assert_eq!(plane.len(), differ.len(), "every element written");
    for ((v, &d), &k) in plane.iter_mut().zip(differ).zip(scales) {
        *v = output(cols - 2 * d as i32, row, k);
    }
}

/// The border positions of an [`output_plane`] again, from their true products: less what
/// their padded taps added (`border_dots`, this row's per pattern).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2", "aarch64+neon"))]
fn rewrite_border(
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

/// Output positions per panel of gathered input signs ([`gather_windows`]), which is the
/// width of a popcount tile: four vectors of eight 64-bit lanes.
const PANEL: usize = 32;

/// Weight rows per popcount tile ([`weight_tiles`]). Four rows by four vectors of positions
/// is 16 accumulators, which with the four input vectors and a broadcast weight word fits in
/// AVX-512's 32 registers.
const TILE_ROWS: usize = 4;

/// Weight rows counted before their counts are finished: 16 rows of 1,024 positions are
/// 64 KiB of counts, which stay in L2 (all 256 rows' 1 MiB went out to memory and back).
const ROW_BLOCK: usize = 4 * TILE_ROWS;

/// How the differing sign bits are counted. Counts are integers, so every kernel gives the
/// same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Popcount {
    /// Scalar popcounts, compiled for POPCNT and NEON where the CPU has them.
    Portable,
    /// AVX-512's vector popcount, a tile of rows × positions held in registers.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2's nibble lookups, counts summed in bytes over blocks of words.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Popcount {
    fn fastest() -> Popcount {
        #[cfg(target_arch = "x86_64")]
        for kernel in [Popcount::Avx512, Popcount::Avx2] {
            if kernel.available() {
                return kernel;
            }
        }
        Popcount::Portable
    }

    /// Whether this CPU has the features the kernel is compiled for.
    fn available(self) -> bool {
        match self {
            Popcount::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Popcount::Avx512 => crate::cpu::avx512_vpopcntdq(),
            #[cfg(target_arch = "x86_64")]
            Popcount::Avx2 => crate::cpu::avx2(),
        }
    }

    /// Weight rows counted before their counts are finished: a block reads every window.
    /// AVX2's windows are twice as large, their nibbles apart (590 KiB for 256 channels at
    /// 32×32, more than Zen 3's L2), so it takes 64 rows at a time (256 KiB of counts) and
    /// reads them four times instead of sixteen: 256→256 at 32×32 took 1.44–1.58 ms against
    /// 1.43–1.82 in three alternating criterion runs.
    fn row_block(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Popcount::Avx2 => 4 * ROW_BLOCK,
            _ => ROW_BLOCK,
        }
    }

    /// Gathered windows ([`gather_windows`]) as the kernel reads them: as they are, or for
    /// AVX2 with each word's nibbles apart ([`avx2::window_groups`]) in a buffer of this
    /// thread's pool, `windows` going back to it.
    fn lay_out_windows(self, windows: Vec<u64>) -> Vec<u64> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Popcount::Avx2 => {
                let mut laid = scratch::take();
                avx2::window_groups(&windows, &mut laid);
                scratch::give(windows);
                laid
            }
            _ => windows,
        }
    }

    /// Weight tiles ([`weight_tiles`]) as the kernel reads them (as for
    /// [`Popcount::lay_out_windows`]).
    fn lay_out_tiles(self, tiles: Vec<u64>) -> Vec<u64> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Popcount::Avx2 => avx2::tile_groups(&tiles),
            _ => tiles,
        }
    }
}

/// What a convolution's padding takes off its sign products, for one geometry: the positions
/// whose windows reach into it, and what each pattern of padded taps adds to each row.
#[derive(Debug, Clone)]
struct Borders {
    /// The layer's parameters and `(c, h, w)` these are for.
    geometry: (Conv2dParams, (usize, usize, usize)),
    /// The positions whose windows reach into the padding ([`border_runs`]).
    runs: Vec<BorderRun>,
    /// `[o · patterns + q]`: what pattern `q`'s taps add to row `o`'s `cols − 2 · popcount`
    /// ([`border_dots`]), to be taken off.
    dots: Vec<i32>,
}

impl Borders {
    fn new(
        w: &BitRows,
        p: &Conv2dParams,
        input: (usize, usize, usize),
        output: (usize, usize),
    ) -> Borders {
        let (border, patterns) = border_windows(p, input, output);
        Borders {
            geometry: (*p, input),
            runs: border_runs(&border, patterns.len()),
            dots: border_dots(w, input.0, &patterns),
        }
    }
}

impl BitRows {
    /// [`Borders`] for a geometry (`output` is `p`'s for `input`): kept for the first one
    /// asked, made anew for any other.
    fn borders_for(
        &self,
        p: &Conv2dParams,
        input: (usize, usize, usize),
        output: (usize, usize),
    ) -> Cow<'_, Borders> {
        let kept = self
            .borders
            .get_or_init(|| Borders::new(self, p, input, output));
        if kept.geometry == (*p, input) {
            Cow::Borrowed(kept)
        } else {
            Cow::Owned(Borders::new(self, p, input, output))
        }
    }
}

/// The popcount path of one layer call: everything but the image, prepared once.
struct SignConv<'a> {
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
struct Windows {
    words: Vec<u64>,
    stride: usize,
}

/// What one word of a row and a position (64 sign products) counts as in the multiply-adds
/// that decide whether a split is worth a hand-off ([`parallel::split_rows`]): an XOR, a
/// count and an add on an eighth of a vector, against one multiply-add on a sixteenth.
const WORK_PER_WORD: usize = 6;

/// `out[o, pos] = Σ_k popcount(windows[pos, k] XOR tiles[o, k])`, one row of `out` per tile
/// row (including the zero rows that complete the last tile), one column per panel position.
/// `tiles` and `windows` as the kernel lays them out ([`Popcount::lay_out_tiles`],
/// [`Popcount::lay_out_windows`]).
fn count_differences(
    kernel: Popcount,
    out: &mut [u32],
    tiles: &[u64],
    windows: &[u64],
    words: usize,
) {
    assert!(
        kernel.available(),
        "{kernel:?} on a CPU without its features"
    );
    match kernel {
        Popcount::Portable => differences_portable(out, tiles, windows, words),
        // SAFETY (both): the CPU features the functions are compiled for were just detected.
        #[cfg(target_arch = "x86_64")]
        Popcount::Avx512 => unsafe { avx512::differences(out, tiles, windows, words) },
        #[cfg(target_arch = "x86_64")]
        Popcount::Avx2 => unsafe { avx2::differences(out, tiles, windows, words) },
    }
}

/// Every output position's input signs in the weights' column order, in panels of [`PANEL`]
/// positions: word `k` of position `pos` is at `((pos / PANEL) · words + k) · PANEL + pos %
/// PANEL`. A tile then reads word `k` of its positions as contiguous vectors, and a panel
/// (`words · 256` bytes) stays in L1 while every weight row passes over it. Taps in the
/// padding, and positions past the last, have zero bits. In a buffer of this thread's pool.
fn gather_windows(
    planes: &[u64],
    input: (usize, usize, usize),
    words: usize,
    p: &Conv2dParams,
    output: (usize, usize),
) -> Vec<u64> {
    let (oh, ow) = output;
    let panel_len = words * PANEL;
    let mut windows = scratch::take::<u64>();
    windows.resize((oh * ow).div_ceil(PANEL) * panel_len, 0);
    // Bands of panels over the threads, each writing only its own positions.
    parallel::split_rows(
        &mut windows,
        panel_len,
        PANELS_PER_BAND,
        panel_len,
        &|first_panel, band| {
            let first = first_panel * PANEL;
            let positions = first..(first + band.len() / words).min(oh * ow);
            gather_band(band, positions, planes, input, words, p, output)
        },
    );
    windows
}

/// Panels a part of [`gather_windows`] holds a whole number of.
const PANELS_PER_BAND: usize = 4;

/// [`gather_windows`] for the output positions `band` (starting a panel), into `windows`, the
/// band's panels.
fn gather_band(
    windows: &mut [u64],
    band: std::ops::Range<usize>,
    planes: &[u64],
    (c, h, w): (usize, usize, usize),
    words: usize,
    p: &Conv2dParams,
    (oh, ow): (usize, usize),
) {
    let [kh, kw] = p.kernel;
    // The band's output rows, and its positions in row `oy`.
    let band_rows = band.start / ow..band.end.div_ceil(ow);
    let in_band = |oy: usize, cols: &std::ops::Range<usize>| {
        cols.start.max(band.start.saturating_sub(oy * ow))
            ..cols.end.min(band.end.saturating_sub(oy * ow))
    };
    for ky in 0..kh {
        let out_rows = inside_outputs(ky, 0, p, h, oh);
        let out_rows = out_rows.start.max(band_rows.start)..out_rows.end.min(band_rows.end);
        for kx in 0..kw {
            let out_cols = inside_outputs(kx, 1, p, w, ow);
            for (j, plane) in planes.chunks_exact(h * w).enumerate() {
                // This plane's 64 channels start at this bit of the window: one or two words.
                let at = (ky * kw + kx) * c + 64 * j;
                let (word, shift) = (at / 64, at % 64);
                let spills = shift != 0 && word + 1 < words;
                for oy in out_rows.clone() {
                    let iy = oy * p.stride[0] + ky * p.dilation[0] - p.padding[0];
                    let input_row = &plane[iy * w..(iy + 1) * w];
                    // Runs of positions within one panel: contiguous words on both sides.
                    let cols = in_band(oy, &out_cols);
                    let mut ox = cols.start;
                    while ox < cols.end {
                        let pos = oy * ow + ox;
                        let run = (PANEL - pos % PANEL).min(cols.end - ox);
                        let local = pos - band.start;
                        let first = (local / PANEL * words + word) * PANEL + local % PANEL;
                        let ix = ox * p.stride[1] + kx * p.dilation[1] - p.padding[1];
                        let inputs = &input_row[ix..];
                        let dst = &mut windows[first..first + run];
                        or_shifted(dst, inputs, p.stride[1], |bits| bits << shift);
                        if spills {
                            let dst = &mut windows[first + PANEL..first + PANEL + run];
                            or_shifted(dst, inputs, p.stride[1], |bits| bits >> (64 - shift));
                        }
                        ox += run;
                    }
                }
            }
        }
    }
}

/// `dst[i] |= shifted(src[i · stride])`; a plain zip for stride 1, which vectorises.
#[inline]
fn or_shifted(dst: &mut [u64], src: &[u64], stride: usize, shifted: impl Fn(u64) -> u64) {
    if stride == 1 {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d |= shifted(s);
        }
    } else {
        for (d, &s) in dst.iter_mut().zip(src.iter().step_by(stride)) {
            *d |= shifted(s);
        }
    }
}

/// The output positions whose windows reach into the padding, each with the index of its
/// pattern (the taps that lie in the padding), and the patterns: a few, one per edge and
/// corner of a 3×3 window with padding 1.
fn border_windows(
    p: &Conv2dParams,
    (_, h, w): (usize, usize, usize),
    (oh, ow): (usize, usize),
) -> (Vec<(usize, usize)>, Vec<Vec<usize>>) {
    let [kh, kw] = p.kernel;
    let (mut border, mut patterns) = (Vec::new(), Vec::<Vec<usize>>::new());
    let mut padded = Vec::new();
    for oy in 0..oh {
        for ox in 0..ow {
            padded.clear();
            for ky in 0..kh {
                for kx in 0..kw {
                    if input_index(oy, ky, 0, p, h).is_none()
                        || input_index(ox, kx, 1, p, w).is_none()
                    {
                        padded.push(ky * kw + kx);
                    }
                }
            }
            if padded.is_empty() {
                continue;
            }
            let q = match patterns.iter().position(|q| *q == padded) {
                Some(q) => q,
                None => {
                    patterns.push(padded.clone());
                    patterns.len() - 1
                }
            };
            border.push((oy * ow + ox, q));
        }
    }
    (border, patterns)
}

/// Positions `start + i · step` for `i < len` whose windows have the same taps in the
/// padding (pattern number `pattern` of [`border_windows`]).
#[derive(Debug, Clone, Copy, PartialEq)]
struct BorderRun {
    start: usize,
    step: usize,
    len: usize,
    pattern: usize,
}

/// The border positions as runs: an edge of the image is one (a row of positions, or a
/// column at a step of the row length), which the rewrite walks without looking up each
/// position and its pattern.
fn border_runs(border: &[(usize, usize)], patterns: usize) -> Vec<BorderRun> {
    let mut runs = Vec::new();
    for pattern in 0..patterns {
        let mut run: Option<BorderRun> = None;
        for &(pos, _) in border.iter().filter(|&&(_, q)| q == pattern) {
            let single = BorderRun {
                start: pos,
                step: 1,
                len: 1,
                pattern,
            };
            run = Some(match run {
                None => single,
                Some(r) if r.len == 1 => BorderRun {
                    step: pos - r.start,
                    len: 2,
                    ..r
                },
                Some(r) if pos == r.start + r.len * r.step => BorderRun {
                    len: r.len + 1,
                    ..r
                },
                Some(r) => {
                    runs.push(r);
                    single
                }
            });
        }
        runs.extend(run);
    }
    runs
}

/// `[o · patterns + q]`: what the taps of pattern `q` add to row `o`'s `cols − 2 · popcount(x
/// XOR w)`. A tap in the padding has zero input bits, read as −1, so each of its `c` columns
/// adds `−sign(w)`: `c − 2 · ones` in all. The true product has nothing there.
fn border_dots(w: &BitRows, c: usize, patterns: &[Vec<usize>]) -> Vec<i32> {
    let taps = w.cols / c.max(1);
    let ones = tap_ones(w, c);
    let mut dots = Vec::with_capacity(w.rows * patterns.len());
    for row in ones.chunks_exact(taps.max(1)).take(w.rows) {
        for pattern in patterns {
            let padded: u32 = pattern.iter().map(|&tap| row[tap]).sum();
            dots.push((pattern.len() * c) as i32 - 2 * padded as i32);
        }
    }
    dots
}

/// `[o · taps + tap]`: the set bits of each tap's `c` columns in each weight row, with the
/// POPCNT instruction where there is one (the x86-64 baseline lacks it).
#[multiversion::multiversion(targets("x86_64+popcnt", "aarch64+neon"))]
fn tap_ones(w: &BitRows, c: usize) -> Vec<u32> {
    let taps = w.cols / c.max(1);
    let mut ones = Vec::with_capacity(w.rows * taps);
    for row in w.bits.chunks_exact(w.words.max(1)).take(w.rows) {
        for tap in 0..taps {
            ones.push(ones_in(row, tap * c, c));
        }
    }
    ones
}

/// Set bits among bits `start..start + len` of `row`, a word (or the part of one in range)
/// at a time.
#[inline]
fn ones_in(row: &[u64], start: usize, len: usize) -> u32 {
    if start.is_multiple_of(64) && len.is_multiple_of(64) {
        // Whole words, as when the channels are a multiple of 64.
        let mut ones = 0;
        for word in &row[start / 64..(start + len) / 64] {
            ones += word.count_ones();
        }
        return ones;
    }
    let (mut ones, end) = (0, start + len);
    let mut k = start;
    while k < end {
        let (word, bit) = (k / 64, k % 64);
        let take = (64 - bit).min(end - k);
        let mask = if take == 64 {
            u64::MAX
        } else {
            ((1u64 << take) - 1) << bit
        };
        ones += (row[word] & mask).count_ones();
        k += take;
    }
    ones
}

/// The weight rows in tiles of [`TILE_ROWS`]: word `k` of row `r` of tile `t` at
/// `(t · words + k) · TILE_ROWS + r`, so that a tile reads its rows' words for one `k`
/// together. Rows past the last are zero.
fn weight_tiles(w: &BitRows) -> Vec<u64> {
    let tiles = w.rows.div_ceil(TILE_ROWS);
    let mut packed = vec![0u64; tiles * w.words * TILE_ROWS];
    for (o, row) in w.bits.chunks_exact(w.words.max(1)).take(w.rows).enumerate() {
        let (tile, r) = (o / TILE_ROWS, o % TILE_ROWS);
        for (k, &bits) in row.iter().enumerate() {
            packed[(tile * w.words + k) * TILE_ROWS + r] = bits;
        }
    }
    packed
}

/// [`count_differences`] with scalar popcounts: per tile, the counts of `TILE_ROWS × PANEL`
/// pairs accumulate in an array the compiler can keep in vectors. Plain loops, no closures:
/// multiversion compiles closures without the target's features.
#[multiversion::multiversion(targets("x86_64+avx2+popcnt", "x86_64+popcnt", "aarch64+neon"))]
fn differences_portable(out: &mut [u32], tiles: &[u64], windows: &[u64], words: usize) {
    let stride = windows.len() / words;
    for (panel, xs) in windows.chunks_exact(words * PANEL).enumerate() {
        for (tile, ws) in tiles.chunks_exact(words * TILE_ROWS).enumerate() {
            let mut counts = [[0u32; PANEL]; TILE_ROWS];
            for (xk, wk) in xs.chunks_exact(PANEL).zip(ws.chunks_exact(TILE_ROWS)) {
                for (row, &w) in counts.iter_mut().zip(wk) {
                    for (count, &x) in row.iter_mut().zip(xk) {
                        *count += (x ^ w).count_ones();
                    }
                }
            }
            for (r, row) in counts.iter().enumerate() {
                let at = (tile * TILE_ROWS + r) * stride + panel * PANEL;
                out[at..at + PANEL].copy_from_slice(row);
            }
        }
    }
}

/// [`count_differences`] on AVX-512: a tile's 4 × 32 counts stay in 16 registers of eight
/// 64-bit lanes for all `words` (XOR with the broadcast weight word, VPOPCNTQ, add), and are
/// narrowed and stored once. No horizontal sums: each lane is one position.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    const VECTORS: usize = PANEL / 8;

    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    pub(super) fn differences(out: &mut [u32], tiles: &[u64], windows: &[u64], words: usize) {
        let stride = windows.len() / words;
        for (panel, xs) in windows.chunks_exact(words * PANEL).enumerate() {
            for (tile, ws) in tiles.chunks_exact(words * TILE_ROWS).enumerate() {
                let counts = tile_counts(xs, ws);
                for (r, row) in counts.iter().enumerate() {
                    let at = (tile * TILE_ROWS + r) * stride + panel * PANEL;
                    store_counts(&mut out[at..at + PANEL], row);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    #[inline]
    fn tile_counts(xs: &[u64], ws: &[u64]) -> [[__m512i; VECTORS]; TILE_ROWS] {
        let mut counts = [[_mm512_setzero_si512(); VECTORS]; TILE_ROWS];
        for (xk, wk) in xs.chunks_exact(PANEL).zip(ws.chunks_exact(TILE_ROWS)) {
            let x = load_positions(xk);
            for (row, &w) in counts.iter_mut().zip(wk) {
                let w = _mm512_set1_epi64(w as i64);
                for (count, &x) in row.iter_mut().zip(&x) {
                    let differ = _mm512_popcnt_epi64(_mm512_xor_si512(x, w));
                    *count = _mm512_add_epi64(*count, differ);
                }
            }
        }
        counts
    }

    /// One word of a panel's positions, `PANEL` words, as vectors.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn load_positions(xk: &[u64]) -> [__m512i; VECTORS] {
        let mut x = [_mm512_setzero_si512(); VECTORS];
        for (v, chunk) in x.iter_mut().zip(xk.chunks_exact(8)) {
            // SAFETY: `chunk` is eight u64, the 64 bytes read; loadu needs no alignment.
            *v = unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) };
        }
        x
    }

    /// The counts (at most 64 · words, far below 2³²) narrowed to u32 and stored.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn store_counts(out: &mut [u32], counts: &[__m512i; VECTORS]) {
        for (chunk, &v) in out.chunks_exact_mut(8).zip(counts) {
            // SAFETY: `chunk` is eight u32, the 32 bytes written; storeu needs no alignment.
            unsafe { _mm256_storeu_si256(chunk.as_mut_ptr().cast(), _mm512_cvtepi64_epi32(v)) };
        }
    }
}

/// [`count_differences`] on AVX2, which has no vector popcount. Each byte of `x XOR w` is
/// counted by two 16-entry lookups (`VPSHUFB`, one per nibble); the byte counts of up to
/// [`BYTE_BLOCK`] words are added as bytes, and only then widened into 64-bit lanes by
/// `VPSADBW`, one per block instead of one per word.
///
/// - Windows and weights come with their nibbles already apart ([`window_groups`],
///   [`tile_groups`]): the lookups need each nibble alone in its byte, and
///   `(x XOR w) >> 4` masked is `(x >> 4) XOR (w >> 4)` masked. So a word takes two XORs,
///   two lookups and two adds, instead of an XOR, a shift, two masks, two lookups and two
///   adds. Splitting costs one pass over each image's windows, which every weight row then
///   reads.
/// - Those six vector operations a word-vector keep the four vector pipes busy, while the
///   integer ones idle. So the last [`SCALAR`] positions of each panel are counted there, by
///   scalar `POPCNT`, in the same loop.
/// - A row's whole panel is one pass: its byte accumulators, the table and the weight word's
///   two halves fit in the 16 registers. The widened counts must not take registers too:
///   where a change around the loop led the compiler to keep them there, it loaded the table
///   again for every lookup and the layer took 1.4 times as long. Check the loop's
///   disassembly (`perf annotate`) after changing it: one register for the table, no loads
///   of it inside.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    /// Words whose byte counts (at most 8 each) add up within a byte: 31 · 8 = 248.
    const BYTE_BLOCK: usize = 31;
    /// The positions of a panel counted by scalar popcounts.
    const SCALAR: usize = 4;
    /// The positions of a panel counted in vectors.
    const VECTOR: usize = PANEL - SCALAR;
    /// Vectors of four positions.
    const VECTORS: usize = VECTOR / 4;
    /// The values of one word of a panel in [`window_groups`].
    const WINDOW_GROUP: usize = 2 * VECTOR + SCALAR;
    /// The values of one word of a tile in [`tile_groups`].
    const TILE_GROUP: usize = 3 * TILE_ROWS;
    /// The low nibble of every byte.
    const LOW_NIBBLES: u64 = 0x0f0f_0f0f_0f0f_0f0f;

    /// Each word of each panel ([`PANEL`] positions) as the low nibbles of its first
    /// [`VECTOR`] positions, their high nibbles shifted down, and its last [`SCALAR`]
    /// positions whole.
    pub(super) fn window_groups(windows: &[u64], laid: &mut Vec<u64>) {
        split_groups(windows, PANEL, VECTOR, VECTOR, laid)
    }

    /// Each word of each tile ([`TILE_ROWS`] rows) as its rows' low nibbles, their high
    /// nibbles shifted down, and the rows whole.
    pub(super) fn tile_groups(tiles: &[u64]) -> Vec<u64> {
        let mut laid = Vec::new();
        split_groups(tiles, TILE_ROWS, TILE_ROWS, 0, &mut laid);
        laid
    }

    /// `words` in groups of `group` into `laid` (emptied first): each as the low nibbles of
    /// its first `split` words, their high nibbles shifted down, then its words from `whole`
    /// on as they are. Built by extending, so nothing is zeroed first.
    fn split_groups(words: &[u64], group: usize, split: usize, whole: usize, laid: &mut Vec<u64>) {
        laid.clear();
        laid.reserve(words.len() / group * (2 * split + group - whole));
        for from in words.chunks_exact(group) {
            laid.extend(from[..split].iter().map(|&x| nibbles(x).0));
            laid.extend(from[..split].iter().map(|&x| nibbles(x).1));
            laid.extend_from_slice(&from[whole..]);
        }
    }

    /// `count + popcount(x)` by a scalar `POPCNT`, opaque to the compiler: written as
    /// `count_ones`, the [`SCALAR`] positions' counts were vectorised (into the same
    /// lookups as the rest of the loop, or their sums gathered into a vector), which left
    /// the integer pipes idle and loaded the vector ones more.
    #[inline(always)]
    fn add_popcount(count: u64, x: u64) -> u64 {
        let mut count = count;
        // SAFETY: POPCNT and ADD read and write registers only; the caller has the
        // `popcnt` feature.
        unsafe {
            std::arch::asm!(
                "popcnt {ones}, {x}",
                "add {count}, {ones}",
                count = inout(reg) count,
                x = in(reg) x,
                ones = out(reg) _,
                options(pure, nomem, nostack),
            );
        }
        count
    }

    /// `x & 0x0f…` and `(x >> 4) & 0x0f…`.
    #[inline(always)]
    fn nibbles(x: u64) -> (u64, u64) {
        (x & LOW_NIBBLES, (x >> 4) & LOW_NIBBLES)
    }

    /// As the portable kernel, over [`window_groups`] and [`tile_groups`].
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) fn differences(out: &mut [u32], tiles: &[u64], windows: &[u64], words: usize) {
        let stride = windows.len() / (words * WINDOW_GROUP) * PANEL;
        for (panel, xs) in windows.chunks_exact(words * WINDOW_GROUP).enumerate() {
            for (tile, ws) in tiles.chunks_exact(words * TILE_GROUP).enumerate() {
                for r in 0..TILE_ROWS {
                    let at = (tile * TILE_ROWS + r) * stride + panel * PANEL;
                    let (vector, scalar) = row_counts(xs, ws, r, words);
                    let to = &mut out[at..at + PANEL];
                    for (chunk, &count) in to.chunks_exact_mut(4).zip(&vector) {
                        let mut lanes = [0u64; 4];
                        // SAFETY: `lanes` is 32 bytes; storeu needs no alignment.
                        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), count) };
                        // Counts are at most 64 · words, far below 2³².
                        for (c, &l) in chunk.iter_mut().zip(&lanes) {
                            *c = l as u32;
                        }
                    }
                    for (c, &count) in to[VECTOR..].iter_mut().zip(&scalar) {
                        *c = count as u32;
                    }
                }
            }
        }
    }

    /// The counts of weight row `r` of a tile (`ws`) against the positions of a panel
    /// (`xs`): the first [`VECTOR`] in vectors of four 64-bit lanes, the last [`SCALAR`]
    /// apart.
    #[target_feature(enable = "avx2,popcnt")]
    #[inline]
    fn row_counts(
        xs: &[u64],
        ws: &[u64],
        r: usize,
        words: usize,
    ) -> ([__m256i; VECTORS], [u64; SCALAR]) {
        assert!(xs.len() >= words * WINDOW_GROUP && ws.len() >= words * TILE_GROUP);
        assert!(r < TILE_ROWS);
        let table = _mm256_setr_epi8(
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, //
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
        );
        let mut counts = [_mm256_setzero_si256(); VECTORS];
        let mut scalar = [0u64; SCALAR];
        let mut k = 0;
        while k < words {
            let end = (k + BYTE_BLOCK).min(words);
            let mut bytes = [_mm256_setzero_si256(); VECTORS];
            for k in k..end {
                // SAFETY: `k < words`, so word `k`'s groups lie inside `ws` and `xs`
                // (asserted above); loadu needs no alignment.
                unsafe {
                    let wk = ws.as_ptr().add(k * TILE_GROUP + r);
                    let w_low = _mm256_set1_epi64x(*wk as i64);
                    let w_high = _mm256_set1_epi64x(*wk.add(TILE_ROWS) as i64);
                    let w_whole = *wk.add(2 * TILE_ROWS);
                    let low = xs.as_ptr().add(k * WINDOW_GROUP);
                    let high = low.add(VECTOR);
                    let whole = high.add(VECTOR);
                    for (v, b) in bytes.iter_mut().enumerate() {
                        let x_low = _mm256_loadu_si256(low.add(4 * v).cast());
                        let x_high = _mm256_loadu_si256(high.add(4 * v).cast());
                        let ones = _mm256_add_epi8(
                            _mm256_shuffle_epi8(table, _mm256_xor_si256(x_low, w_low)),
                            _mm256_shuffle_epi8(table, _mm256_xor_si256(x_high, w_high)),
                        );
                        *b = _mm256_add_epi8(*b, ones);
                    }
                    for (j, count) in scalar.iter_mut().enumerate() {
                        *count = add_popcount(*count, *whole.add(j) ^ w_whole);
                    }
                }
            }
            for (c, &b) in counts.iter_mut().zip(&bytes) {
                *c = _mm256_add_epi64(*c, _mm256_sad_epu8(b, _mm256_setzero_si256()));
            }
            k = end;
        }
        (counts, scalar)
    }
}

/// Per row `first + i` of `w` into `out[i]`: `α · (cols − 2 · popcount(x XOR w))` (bits past
/// `cols` are zero in both).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vpopcntdq",
    "x86_64+avx2+popcnt",
    "x86_64+popcnt",
    "aarch64+neon"
))]
fn sign_dots(out: &mut [f32], w: &BitRows, first: usize, signs: &[u64]) {
    for (o, y) in (first..).zip(out.iter_mut()) {
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
pub fn dense(
    x: ArrayView2<'_, f32>,
    weight: &XnorWeight<'_>,
    bias: Option<&[f32]>,
    input: &SignInput,
) -> Array2<f32> {
    let mut y = Array2::<f32>::zeros((x.nrows(), weight.rows()));
    dense_into(
        x,
        weight,
        bias,
        input,
        y.as_slice_mut().expect("a fresh array is contiguous"),
    );
    y
}

/// [`dense`] into `out` (`[n, rows]`), as a model's pass runs it: the popcount path's rows
/// split over the pass's threads.
pub fn dense_into(
    x: ArrayView2<'_, f32>,
    weight: &XnorWeight<'_>,
    bias: Option<&[f32]>,
    input: &SignInput,
    out: &mut [f32],
) {
    let (n, cols) = x.dim();
    let rows = weight.rows();
    assert_eq!(out.len(), n * rows, "one output per element");
    match weight {
        XnorWeight::Float(m) => {
            let mut signs = scratch::take::<f32>();
            signs_of(x, input, &mut signs);
            let signs_view = ArrayView2::from_shape(x.dim(), &signs[..]).expect("x's shape");
            m.mul_transposed_into(signs_view, out);
            scratch::give(signs);
        }
        XnorWeight::Bits(w) => {
            let mut signs = scratch::take::<u64>();
            for (xi, yi) in x.rows().into_iter().zip(out.chunks_exact_mut(rows.max(1))) {
                signs.clear();
                signs.resize(w.words, 0);
                for (k, &v) in xi.iter().enumerate() {
                    if v >= input.at(k) {
                        signs[k / 64] |= 1 << (k % 64);
                    }
                }
                let work = WORK_PER_WORD * w.words;
                parallel::split_rows(yi, 1, DENSE_ROW_ALIGN, work, &|first, part| {
                    sign_dots(part, w, first, &signs)
                });
            }
            scratch::give(signs);
        }
    }
    for (xi, yi) in x.rows().into_iter().zip(out.chunks_exact_mut(rows.max(1))) {
        let k = match input {
            SignInput::Scaled => xi.iter().map(|v| v.abs()).sum::<f32>() / cols as f32,
            SignInput::Thresholds(_) => 1.0,
        };
        for (o, v) in yi.iter_mut().enumerate() {
            *v = *v * k + bias.map_or(0.0, |b| b[o]);
        }
    }
}

/// Rows of a binary dense layer a split keeps together: a cache line of outputs.
const DENSE_ROW_ALIGN: usize = 16;

#[cfg(test)]
mod tests {
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
