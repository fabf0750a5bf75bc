//! Depthwise convolutions over small planes, sixteen channels to a vector (AVX-512).
//!
//! On a small plane the per-plane kernel ([`super::planes`]) spends more on each plane's
//! copies, row by row, than on its sums: Xception's 9×9 planes took 2.2× onnxruntime's time,
//! MobileNetV2's 7×7 ones 2.3×. onnxruntime keeps its activations in blocks of channels
//! (NCHWc), where each tap is one multiply and one add on sixteen channels at once. Here a
//! block of up to sixteen planes is transposed into that layout in registers, zero-padded
//! (`[ph][pw][16]`), summed a whole output pixel per vector, and transposed back into its
//! planes.
//!
//! The taps are added in the same order, `ky` then `kx`, from zero, each product rounded
//! before its sum, as in [`super::depthwise_plane`]; then the bias and activation as
//! `kernels::finish_rows` computes them: the bits of the per-plane kernel (tested).

use super::Plan;
use crate::kernels::transpose16::transpose;
use crate::kernels::{activate, first_lanes};
use crate::ops::Conv2dParams;
use crate::scratch;
use std::arch::x86_64::*;

const LANES: usize = 16;
/// The lanes of a 3×3 window's taps.
const NINE_TAPS: __mmask16 = (1 << 9) - 1;
/// The padded plane's most pixels (16×16: a 14×14 plane and its border). Past it the
/// per-plane kernel's overheads are a small part of its plane, and the transposes cost more
/// than they save: Xception's 18×18 layers (20×20 padded) took 0.22 ms against 0.19, and
/// MobileNetV2's 28×28 ones (a 56 KiB block, past L1) were no faster.
const MAX_PADDED_PIXELS: usize = 256;
/// The same at stride 2, where the per-plane kernel first splits each plane into its phases
/// and here the stride costs nothing: MobileNetV2's 192 channels from 28×28 to 14×14 took
/// 0.053 ms against 0.080 (output rows of 12 or more now take [`super::rows`] first). From 56×56 to 28×28 the two were level, and from 112×112 (a 0.8 MB
/// block) this one was slower. A kernel that streamed rows through a ring in L1 instead of a
/// whole block was measured too: level at stride 2, and 1.5–2× slower on Xception's 9×9
/// planes, whose rows of 9 each took a transpose where 16 pixels of the plane did.
const MAX_PADDED_PIXELS_STRIDE_2: usize = 1024;

/// Whether a layer runs here: the CPU has AVX-512F, the window is 3×3 (the separable
/// networks' window; others keep the per-plane kernel), and the padded plane is small.
pub(super) fn fits(p: &Conv2dParams, (h, w): (usize, usize)) -> bool {
    let [top, left, bottom, right] = p.padding;
    let padded = (h + top + bottom) * (w + left + right);
    let most = match p.stride {
        [2, 2] => MAX_PADDED_PIXELS_STRIDE_2,
        _ => MAX_PADDED_PIXELS,
    };
    p.kernel == [3, 3] && padded <= most && crate::cpu::avx512f()
}

/// The output planes `first..` in `part` (whole planes, `oh·ow` each), sixteen channels of
/// one image at a time; `block` and `sums` are this thread's buffers.
pub(super) fn planes(plan: &Plan<'_>, first: usize, part: &mut [f32], buffers: Buffers<'_>) {
    // SAFETY: the CPU has AVX-512F (`fits`), which `block_of_planes` needs.
    unsafe { in_blocks(plan, (first, part), buffers, (LANES, block_of_planes)) }
}

/// A thread's two buffers: the padded block of planes and the sums.
pub(super) type Buffers<'a> = (&'a mut Vec<f32>, &'a mut Vec<f32>);

/// One instruction set's kernel for a block: `count` planes from plane `index` into `out`,
/// through the padded `block` and the `sums` ([`block_of_planes`]).
pub(super) type BlockKernel =
    unsafe fn(&Plan<'_>, (usize, usize), &mut [f32], &mut [f32], &mut [f32]);

/// The output planes `first..` in `part`, `lanes` channels of one image at a time, each block
/// through `kernel`: the driver of this kernel and of its AVX2 twin
/// ([`super::channel_blocks_avx2`]).
///
/// # Safety
/// The CPU has the instruction set `kernel` is compiled for.
pub(super) unsafe fn in_blocks(
    plan: &Plan<'_>,
    (first, part): (usize, &mut [f32]),
    (block, sums): Buffers<'_>,
    (lanes, kernel): (usize, BlockKernel),
) {
    let (h, w) = plan.input;
    let (oh, ow) = plan.output;
    let [top, left, bottom, right] = plan.p.padding;
    let (ph, pw) = (h + top + bottom, w + left + right);
    let plane_out = (oh * ow).max(1);
    // Zeros once: the borders are never written, the interior is rewritten per block. Each
    // from a cache line, so that no vector of a pixel's channels straddles two.
    let block = scratch::filled_line_aligned(block, ph * pw * lanes, 0.0);
    let sums = scratch::filled_line_aligned(sums, oh * ow * lanes, 0.0);
    let planes = part.len() / plane_out;
    let mut done = 0;
    while done < planes {
        let index = first + done;
        let channel = index % plan.channels;
        // Up to `lanes` planes of one image: the block's lanes share an image's planes.
        let count = lanes.min(planes - done).min(plan.channels - channel);
        let out = &mut part[done * plane_out..(done + count) * plane_out];
        // SAFETY: the CPU has the kernel's instruction set (this function's contract); the
        // planes `index..index + count` are in `plan.src`, the block and the sums have the
        // sizes set above, and `out` holds the `count` output planes.
        unsafe { kernel(plan, (index, count), block, sums, out) };
        done += count;
    }
}

/// One block: `count` planes from plane `index` (channel `index % channels`).
#[target_feature(enable = "avx512f")]
unsafe fn block_of_planes(
    plan: &Plan<'_>,
    (index, count): (usize, usize),
    block: &mut [f32],
    sums: &mut [f32],
    out: &mut [f32],
) {
    let (h, w) = plan.input;
    let (oh, ow) = plan.output;
    let p = plan.p;
    let [top, left, _, right] = p.padding;
    let pw = w + left + right;
    let plane_in = h * w;
    let plane_out = oh * ow;
    let channel = index % plan.channels;
    let lanes = first_lanes(count);
    let planes = plan.src[index * plane_in..].as_ptr();
    // SAFETY (whole body): lanes below `count` gather from planes `index..index + count`
    // (inside `plan.src`) at pixels below `plane_in`; block positions are below `ph·pw`
    // (the interior of the padded plane), sum positions below `oh·ow`; the stores write the
    // output planes' pixels below `plane_out` of the `count` planes in `out`.
    unsafe {
        // Sixteen pixels of the block's planes at a time, turned into sixteen pixels of
        // sixteen channels and stored at their places in the padded plane.
        let (mut y, mut x) = (0, 0);
        for first in (0..plane_in).step_by(LANES) {
            let pixels = LANES.min(plane_in - first);
            let mask = first_lanes(pixels);
            let mut rows = [_mm512_setzero_ps(); LANES];
            for (j, row) in rows.iter_mut().enumerate().take(count) {
                *row = _mm512_maskz_loadu_ps(mask, planes.add(j * plane_in + first));
            }
            let columns = transpose(rows);
            for column in columns.iter().take(pixels) {
                let at = ((y + top) * pw + x + left) * LANES;
                _mm512_storeu_ps(block.as_mut_ptr().add(at), *column);
                x += 1;
                if x == w {
                    (y, x) = (y + 1, 0);
                }
            }
        }
        // The taps' weights, a vector of `count` channels each, zero past them: each
        // channel's nine taps as a row, transposed. (Built from scalars in memory, each
        // vector's load waited on sixteen narrower stores.)
        let filters = plan.filters[channel * 9..].as_ptr();
        let mut rows = [_mm512_setzero_ps(); LANES];
        for (j, row) in rows.iter_mut().enumerate().take(count) {
            *row = _mm512_maskz_loadu_ps(NINE_TAPS, filters.add(j * 9));
        }
        let mut weights = [_mm512_setzero_ps(); 9];
        weights.copy_from_slice(&transpose(rows)[..9]);
        let [sy, sx] = p.stride;
        let [dy, dx] = p.dilation;
        let mut offsets = [0usize; 9];
        for (t, offset) in offsets.iter_mut().enumerate() {
            *offset = ((t / 3) * dy * pw + (t % 3) * dx) * LANES;
        }
        let bias = match plan.bias {
            Some(b) => _mm512_maskz_loadu_ps(lanes, b[channel..].as_ptr()),
            None => _mm512_setzero_ps(),
        };
        let zero = _mm512_setzero_ps();
        let src = block.as_ptr();
        for oy in 0..oh {
            for ox in 0..ow {
                let at = src.add((oy * sy * pw + ox * sx) * LANES);
                let mut acc = _mm512_setzero_ps();
                for t in 0..9 {
                    let x = _mm512_loadu_ps(at.add(offsets[t]));
                    acc = _mm512_add_ps(acc, _mm512_mul_ps(weights[t], x));
                }
                if plan.bias.is_some() {
                    acc = _mm512_add_ps(acc, bias);
                }
                acc = activate(acc, plan.activation);
                _mm512_storeu_ps(sums.as_mut_ptr().add((oy * ow + ox) * LANES), acc);
            }
        }
        // Back into the planes: sixteen pixels of sixteen channels turned into sixteen
        // pixels of each channel.
        for first in (0..plane_out).step_by(LANES) {
            let pixels = LANES.min(plane_out - first);
            let mask = first_lanes(pixels);
            let mut rows = [zero; LANES];
            for (i, row) in rows.iter_mut().enumerate().take(pixels) {
                *row = _mm512_loadu_ps(sums.as_ptr().add((first + i) * LANES));
            }
            let columns = transpose(rows);
            for (j, column) in columns.iter().enumerate().take(count) {
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(j * plane_out + first), mask, *column);
            }
        }
    }
}
