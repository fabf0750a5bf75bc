//! [`super::channel_blocks`]' kernel on AVX2, for CPUs without AVX-512: depthwise
//! convolutions over small planes, eight channels to a vector.
//!
//! A block of up to eight planes is transposed into onnxruntime's blocked-channel layout in
//! registers, zero-padded (`[ph][pw][8]`), summed a whole output pixel per vector, and
//! transposed back into its planes. On a small plane the flat kernel ([`super::flat_avx2`])
//! wastes the lanes of each row's last vector and loads every vector at a plane's edge
//! through masks; here no lane is wasted but the last eight pixels' and no load is masked.
//!
//! The taps are added in the same order, `ky` then `kx`, from zero, each product rounded
//! before its sum, as in [`super::depthwise_plane`]; then the bias and activation as
//! `kernels::finish_rows` computes them: the bits of the per-plane kernel (tested).

use super::Plan;
use super::channel_blocks::{Buffers, in_blocks};
use crate::kernels::transpose8::transpose;
use crate::kernels::{activate_avx2, first_lanes_avx2 as first_lanes};
use crate::ops::Conv2dParams;
use std::arch::x86_64::*;

const LANES: usize = 8;
/// The padded plane's most pixels at stride 1: Xception's 18×18 planes (20×20 padded). One
/// thread on Zen 3, against [`super::flat_avx2`]: Xception's 9×9 layers took 0.049 ms against
/// 0.077, its 18×18 ones 0.18–0.19 against 0.20, MobileNetV2's 7×7 ones 0.045 against 0.072
/// and its 14×14 ones 0.061 against 0.078; its 28×28 ones were level.
const MAX_PADDED_PIXELS: usize = 400;
/// The same at stride 2, against [`super::rows_avx2`]: MobileNetV2's layers from 14×14 took
/// 0.047–0.051 ms against 0.086–0.092, from 28×28 (29×29 padded) 0.062–0.065 against
/// 0.069–0.073; from 56×56 (57×57 padded) the rows were the faster, 0.150–0.160 against
/// 0.163–0.177.
const MAX_PADDED_PIXELS_STRIDE_2: usize = 1024;

/// Whether a layer runs here: the CPU has AVX2 and FMA (the runtime's AVX2 level), the window
/// is 3×3, and the padded plane is small.
pub(super) fn fits(p: &Conv2dParams, (h, w): (usize, usize)) -> bool {
    let [top, left, bottom, right] = p.padding;
    let padded = (h + top + bottom) * (w + left + right);
    let most = match p.stride {
        [2, 2] => MAX_PADDED_PIXELS_STRIDE_2,
        _ => MAX_PADDED_PIXELS,
    };
    p.kernel == [3, 3] && padded <= most && crate::cpu::avx2_fma()
}

/// The output planes `first..` in `part` (whole planes, `oh·ow` each), eight channels of
/// one image at a time; `block` and `sums` are this thread's buffers.
pub(super) fn planes(plan: &Plan<'_>, first: usize, part: &mut [f32], buffers: Buffers<'_>) {
    // SAFETY: the CPU has AVX2 and FMA (`fits`), which `block_of_planes` needs.
    unsafe { in_blocks(plan, (first, part), buffers, (LANES, block_of_planes)) }
}

/// One block: `count` planes from plane `index` (channel `index % channels`).
#[target_feature(enable = "avx2,fma")]
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
    let planes = plan.src[index * plane_in..].as_ptr();
    // SAFETY (whole body): rows below `count` load from planes `index..index + count`
    // (inside `plan.src`) at pixels below `plane_in`; block positions are below `ph·pw`
    // (the interior of the padded plane), sum positions below `oh·ow`; the stores write the
    // output planes' pixels below `plane_out` of the `count` planes in `out`.
    unsafe {
        // Eight pixels of the block's planes at a time, turned into eight pixels of eight
        // channels and stored at their places in the padded plane.
        let (mut y, mut x) = (0, 0);
        for first in (0..plane_in).step_by(LANES) {
            let pixels = LANES.min(plane_in - first);
            let mask = first_lanes(pixels);
            let mut rows = [_mm256_setzero_ps(); LANES];
            for (j, row) in rows.iter_mut().enumerate().take(count) {
                let at = planes.add(j * plane_in + first);
                *row = if pixels == LANES {
                    _mm256_loadu_ps(at)
                } else {
                    _mm256_maskload_ps(at, mask)
                };
            }
            let columns = transpose(rows);
            for column in columns.iter().take(pixels) {
                let at = ((y + top) * pw + x + left) * LANES;
                _mm256_storeu_ps(block.as_mut_ptr().add(at), *column);
                x += 1;
                if x == w {
                    (y, x) = (y + 1, 0);
                }
            }
        }
        // The taps' weights, a vector of `count` channels each, zero past them: each
        // channel's first eight taps as a row, transposed, and the ninth gathered. (Built
        // from scalars in memory, each vector's load waited on eight narrower stores.)
        let filters = plan.filters[channel * 9..].as_ptr();
        let mut rows = [_mm256_setzero_ps(); LANES];
        for (j, row) in rows.iter_mut().enumerate().take(count) {
            *row = _mm256_loadu_ps(filters.add(j * 9));
        }
        let first_eight = transpose(rows);
        let ninth = _mm256_mask_i32gather_ps::<4>(
            _mm256_setzero_ps(),
            filters.add(8),
            _mm256_setr_epi32(0, 9, 18, 27, 36, 45, 54, 63),
            _mm256_castsi256_ps(first_lanes(count)),
        );
        let mut weights = [ninth; 9];
        weights[..8].copy_from_slice(&first_eight);
        let [sy, sx] = p.stride;
        let [dy, dx] = p.dilation;
        let mut offsets = [0usize; 9];
        for (t, offset) in offsets.iter_mut().enumerate() {
            *offset = ((t / 3) * dy * pw + (t % 3) * dx) * LANES;
        }
        let bias = match plan.bias {
            Some(b) => _mm256_maskload_ps(b[channel..].as_ptr(), first_lanes(count)),
            None => _mm256_setzero_ps(),
        };
        let src = block.as_ptr();
        for oy in 0..oh {
            for ox in 0..ow {
                let at = src.add((oy * sy * pw + ox * sx) * LANES);
                let mut acc = _mm256_setzero_ps();
                for t in 0..9 {
                    let x = _mm256_loadu_ps(at.add(offsets[t]));
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(weights[t], x));
                }
                if plan.bias.is_some() {
                    acc = _mm256_add_ps(acc, bias);
                }
                acc = activate_avx2(acc, plan.activation);
                _mm256_storeu_ps(sums.as_mut_ptr().add((oy * ow + ox) * LANES), acc);
            }
        }
        // Back into the planes: eight pixels of eight channels turned into eight pixels of
        // each channel.
        for first in (0..plane_out).step_by(LANES) {
            let pixels = LANES.min(plane_out - first);
            let mask = first_lanes(pixels);
            let mut rows = [_mm256_setzero_ps(); LANES];
            for (i, row) in rows.iter_mut().enumerate().take(pixels) {
                *row = _mm256_loadu_ps(sums.as_ptr().add((first + i) * LANES));
            }
            let columns = transpose(rows);
            for (j, column) in columns.iter().enumerate().take(count) {
                let at = out.as_mut_ptr().add(j * plane_out + first);
                if pixels == LANES {
                    _mm256_storeu_ps(at, *column);
                } else {
                    _mm256_maskstore_ps(at, mask, *column);
                }
            }
        }
    }
}
