//! Depthwise convolutions (one filter per channel), computed directly: im2col would copy each
//! input `kh × kw` times for a product with one row.
//!
//! Every window, stride and dilation runs through one kernel, [`taps_over_plane`]. A plane is
//! copied once into a zero-padded buffer `pw` wide; with stride 1, output `(oy, ox)` and tap
//! `(ky, kx)` read padded element `(oy + dy·ky)·pw + ox + dx·kx`, so computing `pw`-wide output
//! rows (the columns past `ow` are dropped) makes each tap one contiguous run over the whole
//! plane, whatever its width (Xception's middle flow is 9 wide). With stride `s` the padded
//! plane is first split into its `s × s` phases (rows and columns by remainder modulo `s`),
//! each `sw = ⌈pw/s⌉` wide: output `(oy, ox)` then reads element `oy + ⌊dy·ky/s⌋, ox +
//! ⌊dx·kx/s⌋` of phase `(dy·ky mod s, dx·kx mod s)`, again one contiguous run per tap, with
//! `sw − ow` (one or none) columns dropped per row.
//!
//! On AVX-512, 3×3 layers take one of three other kernels instead. At stride 1 with one
//! pixel of padding and rows up to 80 wide, [`flat`]: each plane read as one run, sixteen
//! outputs to a vector whatever the row width, the padding as load masks. At stride 1 or 2
//! where the output rows are 12 or more wide, [`rows`]: each tap loaded straight from the
//! input rows, the padding as masks, so no copies at all. Below that, over small planes
//! (16×16 padded at most; 32×32 at stride 2), [`channel_blocks`]: sixteen planes at a time in
//! the vector lanes, where the per-plane copies above would cost more than the sums. On AVX2,
//! [`flat_avx2`] takes the stride-1 layers with one pixel of padding and rows up to 112 wide,
//! and [`rows_avx2`] the other 3×3 layers at stride 1 or 2, eight outputs to a vector; ahead
//! of both, [`channel_blocks_avx2`] takes the small planes (20×20 padded at most; 32×32 at
//! stride 2), eight channels to a vector. The per-plane kernel keeps other windows, strides
//! and dilations, and the other CPUs.
//!
//! The taps are added in the same order for every output, `ky` then `kx`, each product rounded
//! before its sum (not fused), as [`depthwise_plane`] does: every path, target and thread
//! count gives the same bits (tested).

#[cfg(target_arch = "x86_64")]
mod channel_blocks;
#[cfg(target_arch = "x86_64")]
mod channel_blocks_avx2;
#[cfg(target_arch = "x86_64")]
mod flat;
#[cfg(target_arch = "x86_64")]
mod flat_avx2;
#[cfg(target_arch = "x86_64")]
mod rows;
#[cfg(target_arch = "x86_64")]
mod rows_avx2;

use crate::cpu::avx512f;
use crate::ops::{Activation, Conv2dParams};
use crate::{parallel, scratch};
use ndarray::{Array4, ArrayView4};

/// Outputs summed at once by [`taps_over_plane`]: four 16-lane accumulators, so that four
/// independent chains of additions hide each addition's latency. (One accumulator, the
/// previous kernel, waited on its chain: 9 dependent additions per 16 outputs of a 3×3
/// window, 3.6–7 billion multiply-adds a second; MobileNetV2's depthwise layers were 35% of
/// its pass.)
const BLOCK: usize = 64;

/// `dst[b, c] = Σ_taps filter[c] ∗ x[b, c]` (+ bias, then the activation) for every image `b`
/// and channel `c`; `filters` holds each channel's `kh × kw` window row-major. Planes are split
/// over the threads, each part with its own buffers from the scratch pool.
#[allow(clippy::too_many_arguments)]
pub(crate) fn depthwise(
    x: ArrayView4<'_, f32>,
    filters: &[f32],
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    output: (usize, usize),
    activation: Activation,
    dst: &mut [f32],
) {
    let (_, _, h, w) = x.dim();
    let path = Path::choose(p, (h, w), output.1);
    depthwise_on(path, x, filters, bias, p, output, activation, dst)
}

/// The kernels a depthwise layer can run on. `Path::choose` picks one per layer; the
/// benchmarks and tests run each that fits ([`depthwise_through`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// `planes`: one plane at a time, its taps over a padded copy. Fits every layer.
    PerPlane,
    /// `channel_blocks`: sixteen channels to a vector, for small planes on AVX-512;
    /// `channel_blocks_avx2`, eight, on AVX2.
    ChannelBlocks,
    /// `rows`: straight from the planes, for 3×3 windows at stride 1 or 2 with rows of 12
    /// or more outputs on AVX-512; `rows_avx2`, any row up to 1,024 outputs, on AVX2.
    Rows,
    /// `flat`: each plane as one run, for 3×3 windows at stride 1 with one pixel of
    /// padding, rows up to 80 wide on AVX-512; `flat_avx2`, up to 112 wide, on AVX2.
    Flat,
}

impl Path {
    /// Every kernel, the per-plane one (which fits every layer) first.
    pub const ALL: [Path; 4] = [Path::PerPlane, Path::ChannelBlocks, Path::Rows, Path::Flat];

    /// The kernel a layer runs on: the first of flat, rows and channel blocks that fits it
    /// (channel blocks first without AVX-512), else the per-plane one.
    fn choose(p: &Conv2dParams, input: (usize, usize), output_width: usize) -> Path {
        // The channel blocks' AVX2 kernel is ahead of the flat and row kernels on the small
        // planes it takes; on AVX-512 the flat kernel, with 16 lanes and mask registers, was
        // ahead of them on Xception's 9×9 planes.
        let order = if avx512f() {
            [Path::Flat, Path::Rows, Path::ChannelBlocks]
        } else {
            [Path::ChannelBlocks, Path::Flat, Path::Rows]
        };
        order
            .into_iter()
            .find(|path| path.fits(p, input, output_width))
            .unwrap_or(Path::PerPlane)
    }

    /// Whether this kernel can run a layer on this CPU.
    pub fn fits(self, p: &Conv2dParams, input: (usize, usize), output_width: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Path::PerPlane => true,
                // On AVX-512 only the AVX-512 kernels, so that a CPU with both runs the
                // layers it ran before the AVX2 twins came. (With the AVX2 flat kernel's
                // wider rows let in, MobileNetV2's 112×112 layer left the AVX-512 row kernel
                // for it: 0.203 ms against 0.170 in criterion, one thread, Zen 4.)
                Path::ChannelBlocks if avx512f() => channel_blocks::fits(p, input),
                Path::ChannelBlocks => channel_blocks_avx2::fits(p, input),
                Path::Rows if avx512f() => rows::fits(p, output_width),
                Path::Rows => rows_avx2::fits(p, output_width),
                Path::Flat if avx512f() => flat::fits(p, input),
                Path::Flat => flat_avx2::fits(p, input),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (p, input, output_width);
            self == Path::PerPlane
        }
    }
}

/// [`depthwise`] on the kernel `path` says.
#[allow(clippy::too_many_arguments)]
fn depthwise_on(
    path: Path,
    x: ArrayView4<'_, f32>,
    filters: &[f32],
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    (oh, ow): (usize, usize),
    activation: Activation,
    dst: &mut [f32],
) {
    let (_, c, h, w) = x.dim();
    let [kh, kw] = p.kernel;
    let x = x.as_standard_layout();
    let src = x.as_slice().expect("standard layout");
    let plane_out = oh * ow;
    let layout = Phases::of(p, (h, w));
    let taps = kh * kw;
    let plan = Plan {
        src,
        channels: c,
        input: (h, w),
        output: (oh, ow),
        layout,
        p,
        filters,
        bias,
        activation,
    };
    // Each thread's planes on the kernel `path` names, with that kernel's buffers.
    parallel::split_rows(
        dst,
        plane_out.max(1),
        1,
        taps * plane_out,
        &|first, part| match path {
            #[cfg(target_arch = "x86_64")]
            Path::Rows if avx512f() => rows::planes(&plan, first, part),
            #[cfg(target_arch = "x86_64")]
            Path::Rows => rows_avx2::planes(&plan, first, part),
            #[cfg(target_arch = "x86_64")]
            Path::Flat if avx512f() => flat::planes(&plan, first, part),
            #[cfg(target_arch = "x86_64")]
            Path::Flat => flat_avx2::planes(&plan, first, part),
            #[cfg(target_arch = "x86_64")]
            Path::ChannelBlocks => {
                let (mut block, mut sums) = (scratch::take(), scratch::take());
                let buffers = (&mut block, &mut sums);
                if avx512f() {
                    channel_blocks::planes(&plan, first, part, buffers);
                } else {
                    channel_blocks_avx2::planes(&plan, first, part, buffers);
                }
                scratch::give(block);
                scratch::give(sums);
            }
            _ => {
                let mut buffers = Buffers {
                    padded: scratch::take(),
                    phases: scratch::take(),
                    wide: scratch::take(),
                    offsets: scratch::take(),
                };
                layout.tap_offsets(p, &mut buffers.offsets);
                planes(&plan, first, part, &mut buffers);
                for buffer in [buffers.padded, buffers.phases, buffers.wide] {
                    scratch::give(buffer);
                }
                scratch::give(buffers.offsets);
            }
        },
    );
}

/// One channel's 3×3 weights, each broadcast to a vector, its bias and the layer's
/// activation: what the AVX-512 kernels that sum a plane's taps in registers ([`rows`],
/// [`flat`]) take for each plane.
#[cfg(target_arch = "x86_64")]
struct Taps {
    weights: [std::arch::x86_64::__m512; 9],
    bias: Option<std::arch::x86_64::__m512>,
    activation: Activation,
}

#[cfg(target_arch = "x86_64")]
impl Taps {
    /// Channel `channel`'s taps.
    #[target_feature(enable = "avx512f")]
    fn of(plan: &Plan<'_>, channel: usize) -> Taps {
        use std::arch::x86_64::_mm512_set1_ps;
        let filter = &plan.filters[channel * 9..(channel + 1) * 9];
        Taps {
            weights: std::array::from_fn(|t| _mm512_set1_ps(filter[t])),
            bias: plan.bias.map(|b| _mm512_set1_ps(b[channel])),
            activation: plan.activation,
        }
    }

    /// A vector of sums with the bias added and the activation applied, as
    /// `kernels::finish_rows` computes them.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn finish(&self, mut sums: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
        if let Some(bias) = self.bias {
            sums = std::arch::x86_64::_mm512_add_ps(sums, bias);
        }
        crate::kernels::activate(sums, self.activation)
    }
}

/// Which of the `lanes` outputs from pixel `first` of an `h × w` plane (fewer at the plane's
/// end) read a real input through each tap of a 3×3 window with one pixel of padding: bit `j`
/// of `rows[ky]` where output `first + j`'s row `ky − 1` away is in the plane, of
/// `columns[kx]` where its column `kx − 1` away is. One division for the first pixel, then a
/// step along the row for each lane: a division per lane would be 5,184 of them for a 72×72
/// plane. The masks of both flat kernels ([`flat`], [`flat_avx2`]).
#[cfg(target_arch = "x86_64")]
fn tap_lane_bits(first: usize, lanes: usize, (h, w): (usize, usize)) -> ([u32; 3], [u32; 3]) {
    let (mut rows, mut columns) = ([0u32; 3], [0u32; 3]);
    let (mut y, mut x) = (first / w, first % w);
    for lane in 0..lanes.min(h * w - first) {
        if lane > 0 {
            x += 1;
            if x == w {
                (y, x) = (y + 1, 0);
            }
        }
        let bit = 1 << lane;
        for (mask, inside) in rows.iter_mut().zip([y > 0, true, y + 1 < h]) {
            *mask |= if inside { bit } else { 0 };
        }
        for (mask, inside) in columns.iter_mut().zip([x > 0, true, x + 1 < w]) {
            *mask |= if inside { bit } else { 0 };
        }
    }
    (rows, columns)
}

/// A depthwise layer's operands and shapes.
struct Plan<'a> {
    src: &'a [f32],
    channels: usize,
    input: (usize, usize),
    output: (usize, usize),
    layout: Phases,
    p: &'a Conv2dParams,
    filters: &'a [f32],
    bias: Option<&'a [f32]>,
    activation: Activation,
}

/// One thread's buffers: the padded plane, its phases, the computed rows, the taps' offsets.
struct Buffers {
    padded: Vec<f32>,
    phases: Vec<f32>,
    wide: Vec<f32>,
    offsets: Vec<usize>,
}

/// The output planes `first..` in `part`: each input plane copied, its taps summed, the rows
/// copied out and finished. One function compiled for each target, the copies and the kernel
/// inlined into it: as separate multiversioned functions, a dispatch per row copied cost
/// Xception's small planes (9 and 18 wide) more than the copies.
#[multiversion::multiversion(targets("x86_64+avx512f", "x86_64+avx2", "aarch64+neon"))]
fn planes<'a>(plan: &Plan<'a>, first: usize, part: &mut [f32], buffers: &mut Buffers) {
    let (h, w) = plan.input;
    let (oh, ow) = plan.output;
    let (plane_in, plane_out) = (h * w, oh * ow);
    let taps = plan.p.kernel[0] * plan.p.kernel[1];
    let layout = plan.layout;
    for (i, out_plane) in part.chunks_exact_mut(plane_out.max(1)).enumerate() {
        let index = first + i;
        let ch = index % plan.channels;
        let plane = &plan.src[index * plane_in..(index + 1) * plane_in];
        let source = layout.fill(
            plane,
            (h, w),
            plan.p,
            &mut buffers.padded,
            &mut buffers.phases,
        );
        // Every value is written by the kernel: no need to zero it first.
        let len = layout.wide_len(oh);
        let wide = &mut buffers.wide;
        wide.truncate(len);
        wide.resize(len, 0.0);
        let filter = &plan.filters[ch * taps..(ch + 1) * taps];
        match (
            <&[usize; 9]>::try_from(&buffers.offsets[..]),
            <&[f32; 9]>::try_from(filter),
        ) {
            // 3×3 windows, the common case, with the taps unrolled.
            (Ok(offsets), Ok(filter)) => fixed_taps_over_plane(wide, source, offsets, filter),
            _ => taps_over_plane(wide, source, &buffers.offsets, filter),
        }
        // The rows out, each value through the bias and activation on the way (the
        // expressions of `kernels::finish_rows`, so its bits): a separate pass cost a call and
        // a read of the plane, as much as the copy on Xception's 9×9 planes.
        let rows = (&wide[..], (ow, layout.width));
        match (plan.bias.map(|b| b[ch]), plan.activation) {
            (None, Activation::None) => rows_out(out_plane, rows, |v| v),
            (Some(b), Activation::None) => rows_out(out_plane, rows, move |v| v + b),
            (Some(b), Activation::Relu) => rows_out(out_plane, rows, move |v| (v + b).max(0.0)),
            (Some(b), Activation::Relu6) => {
                rows_out(out_plane, rows, move |v| (v + b).clamp(0.0, 6.0))
            }
            (None, Activation::Relu) => rows_out(out_plane, rows, |v| v.max(0.0)),
            (None, Activation::Relu6) => rows_out(out_plane, rows, |v| v.clamp(0.0, 6.0)),
        }
    }
}

/// `ow` values of each `width`-wide computed row into the output plane's rows, through `f`.
#[inline(always)]
fn rows_out(
    out_plane: &mut [f32],
    (wide, (ow, width)): (&[f32], (usize, usize)),
    f: impl Fn(f32) -> f32 + Copy,
) {
    for (out_row, wide_row) in out_plane
        .chunks_exact_mut(ow.max(1))
        .zip(wide.chunks(width))
    {
        map_run(out_row, &wide_row[..ow], f);
    }
}

/// Where a plane's taps read: the padded plane (`pw` wide) at stride 1, else its phases.
#[derive(Clone, Copy, Debug)]
struct Phases {
    /// The stride, the same in both directions, or the phases are per direction.
    stride: [usize; 2],
    /// The padded plane's size.
    padded: (usize, usize),
    /// The rows of a phase and their width, which is also the width of the computed output
    /// rows.
    rows: usize,
    width: usize,
}

impl Phases {
    fn of(p: &Conv2dParams, (h, w): (usize, usize)) -> Phases {
        let [top, left, bottom, right] = p.padding;
        let (ph, pw) = (h + top + bottom, w + left + right);
        let [sy, sx] = p.stride;
        Phases {
            stride: [sy, sx],
            padded: (ph, pw),
            rows: ph.div_ceil(sy),
            width: pw.div_ceil(sx),
        }
    }

    /// Zeros past the last phase: the last row's widest tap reads up to `dx·(kw − 1)` values
    /// past its row, and the last vector of outputs up to 15 more.
    fn slack(p: &Conv2dParams) -> usize {
        p.dilation[1] * (p.kernel[1] - 1) + 16
    }

    /// Values in one phase.
    fn phase_len(&self) -> usize {
        self.rows * self.width
    }

    /// The computed outputs: `oh` rows of `width`, rounded up to whole 16-lane vectors.
    fn wide_len(&self, oh: usize) -> usize {
        (oh * self.width).next_multiple_of(16)
    }

    /// Each tap's offset, `ky` then `kx`: its phase's start plus its shift inside the phase.
    fn tap_offsets(&self, p: &Conv2dParams, offsets: &mut Vec<usize>) {
        let [sy, sx] = self.stride;
        let [dy, dx] = p.dilation;
        offsets.clear();
        for ky in 0..p.kernel[0] {
            for kx in 0..p.kernel[1] {
                let (ry, rx) = ((dy * ky) % sy, (dx * kx) % sx);
                let phase = (ry * sx + rx) * self.phase_len();
                offsets.push(phase + (dy * ky / sy) * self.width + dx * kx / sx);
            }
        }
    }

    /// Copies `plane` into the padded buffer or, with a stride, its phases; returns what the
    /// taps read, with [`Phases::slack`] zeros past it. The buffers keep their zero borders
    /// from one plane of the layer to the next: only the interior is rewritten.
    #[inline(always)]
    fn fill<'b>(
        &self,
        plane: &[f32],
        (h, w): (usize, usize),
        p: &Conv2dParams,
        padded: &'b mut Vec<f32>,
        phases: &'b mut Vec<f32>,
    ) -> &'b [f32] {
        let (ph, pw) = self.padded;
        let (top, left) = (p.padding[0], p.padding[1]);
        let slack = Phases::slack(p);
        let rows = plane.chunks_exact(w.max(1)).take(h);
        match self.stride {
            [1, 1] => {
                zeros(padded, ph * pw + slack);
                for (y, row) in rows.enumerate() {
                    let start = (y + top) * pw + left;
                    copy_run(&mut padded[start..start + w], row);
                }
                &padded[..]
            }
            [2, 2] => {
                // Each input row straight into its row's two column phases: padded column
                // `x + left` is element `(x + left) / 2` of phase `(x + left) % 2`.
                zeros(phases, 4 * self.phase_len() + slack);
                let width = self.width;
                for (y, row) in rows.enumerate() {
                    let (ry, iy) = ((y + top) % 2, (y + top) / 2);
                    let at = |rx: usize, x: usize| {
                        (ry * 2 + rx) * self.phase_len() + iy * width + (x + left) / 2
                    };
                    let (even_at, odd_at) = (at(left % 2, 0), at((left + 1) % 2, 1));
                    // The two runs lie in different phases, so never overlap.
                    let (even, odd) = if even_at < odd_at {
                        let (a, b) = phases.split_at_mut(odd_at);
                        (&mut a[even_at..], b)
                    } else {
                        let (a, b) = phases.split_at_mut(even_at);
                        (b, &mut a[odd_at..])
                    };
                    split_pairs(row, &mut even[..w.div_ceil(2)], &mut odd[..w / 2]);
                }
                &phases[..]
            }
            [sy, sx] => {
                zeros(padded, ph * pw);
                for (y, row) in rows.enumerate() {
                    let start = (y + top) * pw + left;
                    copy_run(&mut padded[start..start + w], row);
                }
                zeros(phases, sy * sx * self.phase_len() + slack);
                let (rows, width) = (self.rows, self.width);
                for (y, row) in padded[..ph * pw].chunks_exact(pw).enumerate() {
                    let (ry, iy) = (y % sy, y / sy);
                    for rx in 0..sx {
                        let at = (ry * sx + rx) * rows * width + iy * width;
                        let dst = &mut phases[at..at + width];
                        for (d, &v) in dst.iter_mut().zip(row[rx.min(pw)..].iter().step_by(sx)) {
                            *d = v;
                        }
                    }
                }
                &phases[..]
            }
        }
    }
}

/// Makes `buffer` `len` zeros, unless it is that long already (a buffer from the scratch pool
/// comes empty; one kept from the layer's previous plane has the borders zero still).
fn zeros(buffer: &mut Vec<f32>, len: usize) {
    if buffer.len() != len {
        buffer.clear();
        buffer.resize(len, 0.0);
    }
}

/// `even[i] = row[2i]`, `odd[i] = row[2i + 1]`. Inlined into [`planes`], compiled for
/// AVX-512 and AVX2, where LLVM turns the pairs into vector shuffles; in the baseline it
/// copied one value at a time.
#[inline(always)]
fn split_pairs(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let (pairs, last) = row.as_chunks::<2>();
    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
        *e = pair[0];
        *o = pair[1];
    }
    if let ([v], Some(e)) = (last, even.get_mut(pairs.len())) {
        *e = *v;
    }
}

/// `dst.copy_from_slice(src)` in fixed 16-value copies, inlined into [`planes`]: a call to
/// `memcpy` per row cost more than the rows of the small planes (7 to 28 wide) it copied.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    map_run(dst, src, |v| v)
}

/// `dst[i] = f(src[i])`, as [`copy_run`] copies: the tail's moves overlap values already
/// written, and write them again with the same values.
#[inline(always)]
fn map_run(dst: &mut [f32], src: &[f32], f: impl Fn(f32) -> f32 + Copy) {
    let len = dst.len();
    assert_eq!(src.len(), len, "runs of one length");
    // Whole 16-value copies, then the tail as one more copy of the last 16 (or 8), which
    // overlaps values already copied: every copy a fixed-size vector move, even for rows of
    // 9 or 14.
    #[inline(always)]
    fn tail<const N: usize>(dst: &mut [f32], src: &[f32], f: impl Fn(f32) -> f32) {
        let at = dst.len() - N;
        let d: &mut [f32; N] = (&mut dst[at..]).try_into().expect("N values");
        let s: &[f32; N] = src[at..].try_into().expect("N values");
        *d = s.map(f);
    }
    if len >= 16 {
        let (d16, _) = dst.as_chunks_mut::<16>();
        let (s16, _) = src.as_chunks::<16>();
        for (d, s) in d16.iter_mut().zip(s16) {
            *d = s.map(f);
        }
        if !len.is_multiple_of(16) {
            tail::<16>(dst, src, f);
        }
    } else if len >= 8 {
        let d: &mut [f32; 8] = (&mut dst[..8]).try_into().expect("8 values");
        let s: &[f32; 8] = src[..8].try_into().expect("8 values");
        *d = s.map(f);
        tail::<8>(dst, src, f);
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f(*s);
        }
    }
}

/// `wide[j] = Σ_t filter[t] · source[offsets[t] + j]`, taps in order, each product rounded
/// before it is added, for every `j < wide.len()` (a multiple of 16); `source` holds at least
/// `max(offsets) + wide.len()` values. [`BLOCK`] outputs at a time in registers. Written once
/// for a window of any size (`taps_over_plane`) and once for `T` taps known at compile time
/// (`fixed_taps_over_plane`, 3×3 windows), whose loop over the taps unrolls.
macro_rules! taps_over_plane_body {
    ($wide:ident, $source:ident, $offsets:ident, $filter:ident) => {{
        let (blocks, rest) = $wide.as_chunks_mut::<BLOCK>();
        for (b, block) in blocks.iter_mut().enumerate() {
            let mut acc = [0f32; BLOCK];
            for (&offset, &wk) in $offsets.iter().zip($filter.iter()) {
                // One bounds check per tap: its `BLOCK` inputs.
                let at = offset + b * BLOCK;
                let src: &[f32; BLOCK] = $source[at..at + BLOCK].try_into().expect("a block");
                for l in 0..BLOCK {
                    acc[l] += wk * src[l];
                }
            }
            *block = acc;
        }
        let first = blocks.len() * BLOCK;
        for (v, vector) in rest.as_chunks_mut::<16>().0.iter_mut().enumerate() {
            let mut acc = [0f32; 16];
            for (&offset, &wk) in $offsets.iter().zip($filter.iter()) {
                let at = offset + first + v * 16;
                let src: &[f32; 16] = $source[at..at + 16].try_into().expect("a vector");
                for l in 0..16 {
                    acc[l] += wk * src[l];
                }
            }
            *vector = acc;
        }
    }};
}

#[inline(always)]
fn taps_over_plane(wide: &mut [f32], source: &[f32], offsets: &[usize], filter: &[f32]) {
    taps_over_plane_body!(wide, source, offsets, filter)
}

#[inline(always)]
fn fixed_taps_over_plane<const T: usize>(
    wide: &mut [f32],
    source: &[f32],
    offsets: &[usize; T],
    filter: &[f32; T],
) {
    taps_over_plane_body!(wide, source, offsets, filter)
}

/// One output plane of a depthwise convolution from its zero-padded input plane (`pw` wide),
/// for any kernel, stride and dilation: each tap adds a scaled run of an input row to an output
/// row, `ky` then `kx`. The reference the kernel above is tested against, and the benchmarks'
/// baseline.
fn depthwise_plane(
    out: &mut [f32],
    padded: &[f32],
    pw: usize,
    filt: &[f32],
    p: &Conv2dParams,
    ow: usize,
) {
    let [kh, kw] = p.kernel;
    out.fill(0.0);
    for (oy, out_row) in out.chunks_exact_mut(ow.max(1)).enumerate() {
        for ky in 0..kh {
            let iy = oy * p.stride[0] + ky * p.dilation[0];
            let in_row = &padded[iy * pw..(iy + 1) * pw];
            for kx in 0..kw {
                let wk = filt[ky * kw + kx];
                let src = in_row[kx * p.dilation[1]..].iter().step_by(p.stride[1]);
                out_row.iter_mut().zip(src).for_each(|(o, &v)| *o += wk * v);
            }
        }
    }
}

/// A depthwise convolution (no bias) on kernel `path`, whatever the layer would take; `None`
/// where that kernel does not fit the layer or the CPU. The benchmarks compare the kernels
/// with it.
pub fn depthwise_through(
    path: Path,
    x: ArrayView4<'_, f32>,
    weight: &[f32],
    p: &Conv2dParams,
) -> Option<Array4<f32>> {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = p.output_size(h, w)?;
    if !path.fits(p, (h, w), ow) {
        return None;
    }
    let mut out = Array4::<f32>::zeros((n, c, oh, ow));
    let dst = out.as_slice_mut().expect("a fresh array is contiguous");
    let none = Activation::None;
    depthwise_on(path, x, weight, None, p, (oh, ow), none, dst);
    Some(out)
}

/// A depthwise convolution (no bias) through the general tap-by-tap loop only, whatever the
/// window: the baseline the kernel benchmarks compare the tap-offset kernel against.
pub fn depthwise_general(x: ArrayView4<'_, f32>, weight: &[f32], p: &Conv2dParams) -> Array4<f32> {
    let (n, c, h, w) = x.dim();
    let [kh, kw] = p.kernel;
    let (oh, ow) = p.output_size(h, w).expect("a valid window");
    let [top, left, bottom, right] = p.padding;
    let pw = w + left + right;
    let x = x.as_standard_layout();
    let src = x.as_slice().expect("standard layout");
    let mut padded = vec![0f32; (h + top + bottom) * pw];
    let mut out = Array4::<f32>::zeros((n, c, oh, ow));
    let dst = out.as_slice_mut().expect("a fresh array is contiguous");
    for (index, out_plane) in dst.chunks_exact_mut((oh * ow).max(1)).enumerate() {
        let plane = &src[index * h * w..(index + 1) * h * w];
        for (y, row) in plane.chunks_exact(w.max(1)).enumerate() {
            let start = (y + top) * pw + left;
            padded[start..start + w].copy_from_slice(row);
        }
        let filt = &weight[(index % c) * kh * kw..][..kh * kw];
        depthwise_plane(out_plane, &padded, pw, filt, p, ow);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxrm_format::testing::uniform as rand;
    use ndarray::Array;

    /// The kernels that can run a layer here: the per-plane one always, the others where
    /// the CPU and the layer allow.
    fn paths(p: &Conv2dParams, input: (usize, usize)) -> Vec<Path> {
        let (_, ow) = p.output_size(input.0, input.1).unwrap();
        Path::ALL
            .into_iter()
            .filter(|path| path.fits(p, input, ow))
            .collect()
    }

    #[test]
    fn bias_and_activation_on_the_way_out_give_the_bits_of_a_separate_pass() {
        // 20 channels: a block of sixteen and one of four per image. 9×9 planes for the
        // channel blocks, 21×37 ones for the rows.
        let c = 20;
        for ((h, w), stride) in [(9, 9), (21, 37)]
            .into_iter()
            .flat_map(|s| [(s, 1), (s, 2)])
        {
            let x = Array::from_shape_vec((2, c, h, w), rand(2 * c * h * w, 43)).unwrap();
            let filters: Vec<f32> = rand(c * 9, 44).iter().map(|v| 4.0 * v).collect();
            let bias = rand(c, 45);
            {
                let p = Conv2dParams {
                    kernel: [3, 3],
                    stride: [stride, stride],
                    padding: [1, 1, 1, 1],
                    dilation: [1, 1],
                    groups: c,
                };
                let (oh, ow) = p.output_size(h, w).unwrap();
                let general = depthwise_general(x.view(), &filters, &p);
                for bias in [None, Some(&bias[..])] {
                    for activation in [Activation::None, Activation::Relu, Activation::Relu6] {
                        let mut want = general.as_slice().unwrap().to_vec();
                        let epilogue = crate::kernels::Epilogue { bias, activation };
                        for image in want.chunks_exact_mut(c * oh * ow) {
                            crate::kernels::finish_rows(image, oh * ow, c, oh * ow, epilogue);
                        }
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        for path in paths(&p, (h, w)) {
                            let mut got = vec![f32::NAN; 2 * c * oh * ow];
                            let out = (oh, ow);
                            depthwise_on(
                                path,
                                x.view(),
                                &filters,
                                bias,
                                &p,
                                out,
                                activation,
                                &mut got,
                            );
                            let label = format!("stride {stride} {activation:?} {path:?}");
                            assert_eq!(bits(&got), bits(&want), "{label}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn each_instruction_set_takes_only_its_own_kernels() {
        // A 3×3 stride-1 layer at 112×112 fits the AVX2 flat kernel (rows up to 112) but not
        // the AVX-512 one (up to 80): on AVX-512 it must go to the AVX-512 row kernel, not
        // to the AVX2 flat one, which took it for a while at 1.6× the time.
        let p = Conv2dParams {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1, 1, 1],
            dilation: [1, 1],
            groups: 32,
        };
        let path = Path::choose(&p, (112, 112), 112);
        if crate::cpu::avx512f() {
            assert_eq!(path, Path::Rows);
        } else if crate::cpu::avx2_fma() {
            assert_eq!(path, Path::Flat);
        }
        // The flat path fits that layer only where its own flat kernel does.
        assert_eq!(
            Path::Flat.fits(&p, (112, 112), 112),
            !crate::cpu::avx512f() && crate::cpu::avx2_fma()
        );
    }

    #[test]
    fn planes_of_any_shape_at_stride_1_give_the_general_loops_bits() {
        // The flat kernel's edges: one pixel, one row, one column, planes of whole vectors
        // and planes whose vectors span several rows or end partway.
        let p = Conv2dParams {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1, 1, 1],
            dilation: [1, 1],
            groups: 3,
        };
        for (h, w) in [
            (1, 1),
            (1, 17),
            (17, 1),
            (2, 2),
            (4, 4),
            (16, 16),
            (3, 48),
            (18, 18),
            (9, 9),
            (5, 8),
            (6, 112),
            (7, 56),
            (10, 28),
        ] {
            let x = Array::from_shape_vec((2, 3, h, w), rand(6 * h * w, 46)).unwrap();
            let filters = rand(27, 47);
            let general = depthwise_general(x.view(), &filters, &p);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for path in paths(&p, (h, w)) {
                let got = depthwise_through(path, x.view(), &filters, &p).unwrap();
                let label = format!("{h}×{w}, {path:?}");
                assert_eq!(
                    bits(general.as_slice().unwrap()),
                    bits(got.as_slice().unwrap()),
                    "{label}"
                );
            }
        }
    }

    /// The values' bits, to compare results exactly.
    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|x| x.to_bits()).collect()
    }

    /// The bits of a layer without bias or activation on kernel `path`, into a buffer of NaNs
    /// so that an output the kernel misses shows.
    fn bits_through(
        path: Path,
        x: ndarray::ArrayView4<'_, f32>,
        filters: &[f32],
        p: &Conv2dParams,
    ) -> Vec<u32> {
        let (n, c, h, w) = x.dim();
        let (oh, ow) = p.output_size(h, w).unwrap();
        let mut out = vec![f32::NAN; n * c * oh * ow];
        let none = Activation::None;
        depthwise_on(path, x, filters, None, p, (oh, ow), none, &mut out);
        bits(&out)
    }

    #[test]
    fn rows_of_every_width_give_the_general_loops_bits() {
        // The row kernels' groups of vectors: rows of one vector to several groups, whose
        // first, last or middle vectors touch an edge, at both strides; five rows, so that
        // the planes' first and last rows (loads past the input's ends) and the rows between
        // (whole loads, lanes cleared) all occur; and paddings past the zero rows' margins.
        let cases = [1, 2].into_iter().flat_map(|stride| {
            let widths = (1..=72).map(move |w| (stride, w, [1, 1, 1, 1]));
            let wide = [(stride, 9, [40, 40, 40, 40]), (stride, 30, [0, 0, 1, 1])];
            widths.chain(wide)
        });
        for (stride, w, padding) in cases {
            let p = Conv2dParams {
                kernel: [3, 3],
                stride: [stride, stride],
                padding,
                dilation: [1, 1],
                groups: 2,
            };
            let h = 5;
            let (_, ow) = p.output_size(h, w).unwrap();
            if !Path::Rows.fits(&p, (h, w), ow) {
                continue;
            }
            let x = Array::from_shape_vec((1, 2, h, w), rand(2 * h * w, 48)).unwrap();
            let filters = rand(18, 49);
            let general = depthwise_general(x.view(), &filters, &p);
            let got = bits_through(Path::Rows, x.view(), &filters, &p);
            let label = format!("{h}×{w}, stride {stride}, padding {padding:?}");
            assert_eq!(bits(general.as_slice().unwrap()), got, "{label}");
        }
    }

    #[test]
    fn every_window_stride_and_dilation_gives_the_general_loops_bits() {
        // Widths below, at and past a block; strides 1–3, dilation, uneven padding.
        for (h, w) in [(9, 45), (7, 7), (6, 12), (12, 70), (5, 130)] {
            for (k, stride, dilation, padding) in [
                (3, 1, 1, [1, 1, 1, 1]),
                (3, 2, 1, [0, 0, 1, 1]),
                (5, 1, 1, [2, 2, 2, 2]),
                (5, 2, 1, [1, 2, 2, 1]),
                (3, 1, 2, [2, 2, 2, 2]),
                (3, 3, 1, [1, 1, 1, 1]),
                (2, 2, 1, [0, 0, 0, 0]),
            ] {
                let p = Conv2dParams {
                    kernel: [k, k],
                    stride: [stride, stride],
                    padding,
                    dilation: [dilation, dilation],
                    groups: 3,
                };
                let x = Array::from_shape_vec((2, 3, h, w), rand(6 * h * w, 41)).unwrap();
                let filters = rand(3 * k * k, 42);
                let general = depthwise_general(x.view(), &filters, &p);
                for path in paths(&p, (h, w)) {
                    let fast = bits_through(path, x.view(), &filters, &p);
                    let label = format!("{h}×{w}, {k}×{k}/{stride}, dilation {dilation}, {path:?}");
                    assert_eq!(bits(general.as_slice().unwrap()), fast, "{label}");
                }
            }
        }
    }
}
