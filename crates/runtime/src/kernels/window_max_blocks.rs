//! Max pooling at stride 2 over small planes on AVX2, eight planes to a vector: the pooling
//! twin of `depthwise::channel_blocks_avx2`.
//!
//! On a small plane [`super::window_max_avx2`] spends its time on each row's edges: Xception's
//! pooling from 18×18 to 9×9 took 0.15 ms there (0.21 µs a plane), where onnxruntime's
//! blocked-channel layout pools eight planes with each vector operation (its four poolings
//! take 0.26 ms in all against cxrm's 0.52–0.55 with this kernel, 0.60 without). Here a block of up
//! to eight planes is transposed into that layout in registers, with −∞ in the padding, each
//! output's window taken a whole vector at a time, and the maxima transposed back.
//!
//! The taps are taken as the row kernel takes them, each window row's middle column, then its
//! left, then its right, and the rows in order, with `max(x, m)` from −∞: a NaN is skipped as
//! `f32::max` skips it, and the values are those of whole windows (tested in `ops`).

use super::first_lanes_avx2 as first_lanes;
use super::transpose8::transpose;
use crate::scratch::filled_line_aligned;
use std::arch::x86_64::*;

const LANES: usize = 8;
/// The padded plane's most pixels: Xception's 18×18 planes (19×19 with the padding below and
/// right). One thread on Zen 3 (`--profile 20`), against the row kernel: its pooling from
/// 18×18 took 0.108–0.112 ms against 0.153, from 9×9 0.043–0.044 against 0.079, and from
/// 36×36 (37×37 padded) 0.143–0.150 against 0.148, level, so that one stays on the rows.
const MAX_PADDED_PIXELS: usize = 400;

/// A layer's geometry: the input plane, the padding above and left, the window, the output.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub input: (usize, usize),
    pub origin: (usize, usize),
    pub window: (usize, usize),
    pub output: (usize, usize),
}

impl Geometry {
    /// The padded block's rows and columns: every input pixel and every window inside it.
    fn padded(&self) -> (usize, usize) {
        let ((h, w), (top, left), (kh, kw), (oh, ow)) =
            (self.input, self.origin, self.window, self.output);
        let rows = (h + top).max(2 * oh.saturating_sub(1) + kh);
        let columns = (w + left).max(2 * ow.saturating_sub(1) + kw);
        (rows, columns)
    }
}

/// Whether a stride-2 max pooling runs here: AVX2 with FMA (the runtime's AVX2 level) and no
/// AVX-512 (whose row kernel is kept there), a window 2 or 3 each way, a small padded plane.
/// The caller has checked that no window lies wholly in the padding.
pub fn fits(g: &Geometry) -> bool {
    let (rows, columns) = g.padded();
    matches!(g.window, (2 | 3, 2 | 3))
        && rows * columns <= MAX_PADDED_PIXELS
        && super::window_max_avx2::available()
        && !crate::cpu::avx512f()
}

/// The output planes from plane `first` in `part` (whole planes), eight planes at a time;
/// `src` holds every input plane, `block` and `maxima` are this thread's buffers.
///
/// Panics where [`fits`] is false or the slices are too short.
pub fn planes(
    src: &[f32],
    g: &Geometry,
    (first, part): (usize, &mut [f32]),
    (block, maxima): (&mut Vec<f32>, &mut Vec<f32>),
) {
    assert!(fits(g), "AVX2 and a small plane");
    let (h, w) = g.input;
    let (oh, ow) = g.output;
    let (plane_in, plane_out) = (h * w, (oh * ow).max(1));
    let planes = part.len() / plane_out;
    assert!(src.len() >= (first + planes) * plane_in, "the input planes");
    let (rows, columns) = g.padded();
    // −∞ once: the padding is never written, the interior is rewritten per block. Each from
    // a cache line, so that no vector of a pixel's planes straddles two.
    let block = filled_line_aligned(block, rows * columns * LANES, f32::NEG_INFINITY);
    let maxima = filled_line_aligned(maxima, oh * ow * LANES, 0.0);
    let mut done = 0;
    while done < planes {
        let count = LANES.min(planes - done);
        let input = &src[(first + done) * plane_in..(first + done + count) * plane_in];
        let out = &mut part[done * plane_out..(done + count) * plane_out];
        // SAFETY: the CPU has AVX2 and FMA (`fits`, asserted); `input` and `out` hold `count`
        // whole planes, the block and the maxima have the sizes set above.
        unsafe { block_of_planes(input, g, count, (block, maxima), out) };
        done += count;
    }
}

/// One block of `count` planes.
#[target_feature(enable = "avx2,fma")]
unsafe fn block_of_planes(
    input: &[f32],
    g: &Geometry,
    count: usize,
    (block, maxima): (&mut [f32], &mut [f32]),
    out: &mut [f32],
) {
    let ((h, w), (top, left), (kh, kw), (oh, ow)) = (g.input, g.origin, g.window, g.output);
    let columns = g.padded().1;
    let (plane_in, plane_out) = (h * w, oh * ow);
    // SAFETY (whole body): loads read pixels below `plane_in` of planes below `count`, inside
    // `input`; block positions are inside the padded plane (`Geometry::padded`), maxima
    // positions below `oh·ow`; the stores write pixels below `plane_out` of the `count`
    // planes of `out`.
    unsafe {
        // Eight pixels of the planes at a time, turned into eight pixels of eight planes.
        let (mut y, mut x) = (0, 0);
        for first in (0..plane_in).step_by(LANES) {
            let pixels = LANES.min(plane_in - first);
            let mask = first_lanes(pixels);
            let mut rows = [_mm256_set1_ps(f32::NEG_INFINITY); LANES];
            for (j, row) in rows.iter_mut().enumerate().take(count) {
                let at = input.as_ptr().add(j * plane_in + first);
                *row = if pixels == LANES {
                    _mm256_loadu_ps(at)
                } else {
                    _mm256_maskload_ps(at, mask)
                };
            }
            for column in transpose(rows).iter().take(pixels) {
                let at = ((y + top) * columns + x + left) * LANES;
                _mm256_storeu_ps(block.as_mut_ptr().add(at), *column);
                x += 1;
                if x == w {
                    (y, x) = (y + 1, 0);
                }
            }
        }
        // Each window: its rows' middle, left and right taps, the rows in order.
        let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
        let order: [usize; 3] = [1, 0, 2];
        let src = block.as_ptr();
        for oy in 0..oh {
            for ox in 0..ow {
                let corner = src.add((2 * oy * columns + 2 * ox) * LANES);
                let mut m = neg_inf;
                for ky in 0..kh {
                    let row = corner.add(ky * columns * LANES);
                    let mut r = neg_inf;
                    for &kx in order.iter().take(kw) {
                        r = _mm256_max_ps(_mm256_loadu_ps(row.add(kx * LANES)), r);
                    }
                    m = if ky == 0 { r } else { _mm256_max_ps(r, m) };
                }
                _mm256_storeu_ps(maxima.as_mut_ptr().add((oy * ow + ox) * LANES), m);
            }
        }
        // Back into the planes.
        for first in (0..plane_out).step_by(LANES) {
            let pixels = LANES.min(plane_out - first);
            let mask = first_lanes(pixels);
            let mut rows = [neg_inf; LANES];
            for (i, row) in rows.iter_mut().enumerate().take(pixels) {
                *row = _mm256_loadu_ps(maxima.as_ptr().add((first + i) * LANES));
            }
            for (j, column) in transpose(rows).iter().enumerate().take(count) {
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
