//! 3×3 depthwise convolutions at stride 1 with one pixel of padding on every side, over
//! small planes: the plane read as one run of `h·w` values, sixteen outputs to a vector
//! whatever the row width (AVX-512).
//!
//! With that padding the output plane has the input's shape, so output `o = y·w + x` and tap
//! `(ky, kx)` read input `o + (ky − 1)·w + (kx − 1)`: one unaligned load per tap for sixteen
//! consecutive outputs, even where they span several rows. A lane whose tap falls in the
//! padding (left of column 0, right of column `w − 1`, above row 0 or below row `h − 1`)
//! would read a neighbouring row's value there; its load mask leaves it zero instead, as the
//! padded copy of the per-plane kernel would give.
//!
//! [`super::rows`] puts each output row in whole vectors, so rows that are not a multiple of
//! sixteen waste lanes: Xception's 18-wide rows use 18 of 32 lanes, its 36-wide ones 36 of
//! 48, and the 9×9 planes of its middle flow went to [`super::channel_blocks`], whose
//! transposes cost more than the sums. Here every vector but a plane's last is full.
//!
//! The taps are added in the order of [`super::depthwise_plane`], `ky` then `kx`, from zero,
//! each product rounded before its sum, and a padded tap adds its zero product; then the
//! bias and activation as `kernels::finish_rows` computes them: the per-plane kernel's bits
//! (tested).

use super::{Plan, Taps};
use crate::ops::Conv2dParams;
use std::arch::x86_64::*;

const LANES: usize = 16;
/// The largest plane taken here, in vectors (an 80×80 plane is 400): the masks of a layer
/// live on the stack.
const MAX_VECTORS: usize = 512;
/// The widest rows taken here. Up to them the lanes [`super::rows`] wastes cost more than
/// the masks here (criterion, one thread, Zen 4: 128 planes of 72×72 in 0.354 ms against
/// 0.393, 144 of 56×56 in 0.230 against 0.263); on MobileNetV2's 112-wide rows, seven whole
/// vectors, the rows kernel took 0.180 ms against 0.230.
const MAX_WIDTH: usize = 80;

/// Whether a layer runs here: AVX-512F, a 3×3 window at stride 1 without dilation, one pixel
/// of padding on every side, rows up to [`MAX_WIDTH`] wide and planes up to
/// [`MAX_VECTORS`] vectors.
pub(super) fn fits(p: &Conv2dParams, (h, w): (usize, usize)) -> bool {
    p.kernel == [3, 3]
        && p.stride == [1, 1]
        && p.dilation == [1, 1]
        && p.padding == [1, 1, 1, 1]
        && (1..=MAX_WIDTH).contains(&w)
        && h >= 1
        && (h * w).div_ceil(LANES) <= MAX_VECTORS
        && crate::cpu::avx512f()
}

/// Which lanes of one vector of outputs read a real input through each tap: `rows[ky]` for
/// the row the tap reads (`ky = 0` above, `2` below), `columns[kx]` for its column; a tap's
/// mask is the two together. Every mask leaves out the lanes past the plane's end.
#[derive(Clone, Copy, Default)]
struct Masks {
    rows: [__mmask16; 3],
    columns: [__mmask16; 3],
}

impl Masks {
    /// The masks of vector `vector` of an `h × w` plane. One division for the vector's first
    /// pixel, then a step along the row for each lane: a division per lane would be 5,184 of
    /// them for a 72×72 plane, whose masks each thread builds once per layer.
    fn of(vector: usize, (h, w): (usize, usize)) -> Masks {
        let (rows, columns) = super::tap_lane_bits(vector * LANES, LANES, (h, w));
        Masks {
            rows: rows.map(|bits| bits as __mmask16),
            columns: columns.map(|bits| bits as __mmask16),
        }
    }

    fn tap(&self, ky: usize, kx: usize) -> __mmask16 {
        self.rows[ky] & self.columns[kx]
    }

    /// The lanes that are outputs of the plane.
    fn store(&self) -> __mmask16 {
        self.rows[1]
    }

    /// Whether every lane is an output whose rows above and below are in the plane.
    fn is_interior(&self) -> bool {
        self.rows == [u16::MAX; 3]
    }
}

/// The output planes `first..` in `part` (whole planes, `h·w` each).
pub(super) fn planes(plan: &Plan<'_>, first: usize, part: &mut [f32]) {
    let (h, w) = plan.input;
    let vectors = (h * w).div_ceil(LANES);
    let mut masks = [Masks::default(); MAX_VECTORS];
    for (v, masks) in masks.iter_mut().enumerate().take(vectors) {
        *masks = Masks::of(v, (h, w));
    }
    let masks = &masks[..vectors];
    for (i, out) in part.chunks_exact_mut((h * w).max(1)).enumerate() {
        // SAFETY: the CPU has AVX-512F (`fits`); plane `first + i` is in `plan.src`, `out`
        // is its output plane, and the masks were made for this plane's shape.
        unsafe { plane(plan, first + i, masks, out) }
    }
}

/// Vectors summed side by side: four independent chains of additions.
const GROUP: usize = 4;

/// One plane (`index`, channel `index % channels`): runs of up to [`GROUP`] vectors whose
/// rows all lie inside the plane (only their columns need masks), and each vector that
/// touches the first or last row, or the plane's end, on its own.
#[target_feature(enable = "avx512f")]
unsafe fn plane(plan: &Plan<'_>, index: usize, masks: &[Masks], out: &mut [f32]) {
    let (h, w) = plan.input;
    let channel = index % plan.channels;
    let input = &plan.src[index * h * w..(index + 1) * h * w];
    let taps = Taps::of(plan, channel);
    // Each tap's offset from the output it is for.
    let w = w as isize;
    let offsets: [isize; 9] =
        std::array::from_fn(|t| (t as isize / 3 - 1) * w + t as isize % 3 - 1);
    let (input, out) = (input.as_ptr(), out.as_mut_ptr());
    let mut v = 0;
    while v < masks.len() {
        let interior = masks[v..]
            .iter()
            .take(GROUP)
            .take_while(|m| m.is_interior())
            .count();
        // SAFETY: the masks of vectors `v..` are this plane's; run as interior only while
        // they are.
        unsafe {
            match interior {
                0 => vectors::<1, false>((&taps, &offsets), input, &masks[v..], v, out),
                4 => vectors::<4, true>((&taps, &offsets), input, &masks[v..], v, out),
                3 => vectors::<3, true>((&taps, &offsets), input, &masks[v..], v, out),
                2 => vectors::<2, true>((&taps, &offsets), input, &masks[v..], v, out),
                _ => vectors::<1, true>((&taps, &offsets), input, &masks[v..], v, out),
            }
        }
        v += interior.max(1);
    }
}

/// Vectors `first..first + N` of the plane at `input`, stored at the same place from `out`.
/// With `INTERIOR`, the vectors' rows and lanes are all in the plane: only the left and
/// right taps are masked, and the store is whole.
///
/// # Safety
/// AVX-512F; `masks` starts with the masks of vector `first` of the plane `input` points at,
/// `out` points at its output plane, and with `INTERIOR` the first `N` are interior.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn vectors<const N: usize, const INTERIOR: bool>(
    (taps, offsets): (&Taps, &[isize; 9]),
    input: *const f32,
    masks: &[Masks],
    first: usize,
    out: *mut f32,
) {
    let mut acc = [_mm512_setzero_ps(); N];
    let masks: [Masks; N] = std::array::from_fn(|j| masks[j]);
    for (t, &offset) in offsets.iter().enumerate() {
        let (ky, kx) = (t / 3, t % 3);
        for j in 0..N {
            let at = input.wrapping_offset(((first + j) * LANES) as isize + offset);
            // SAFETY: a mask lets through only lanes whose tap is a pixel of the plane; the
            // others are not read, so their addresses (`wrapping_offset`) may lie outside it.
            // An interior vector's middle column reads its rows' own pixels.
            let x = unsafe {
                match (INTERIOR, kx) {
                    (true, 1) => _mm512_loadu_ps(at),
                    (true, _) => _mm512_maskz_loadu_ps(masks[j].columns[kx], at),
                    (false, _) => _mm512_maskz_loadu_ps(masks[j].tap(ky, kx), at),
                }
            };
            acc[j] = _mm512_add_ps(acc[j], _mm512_mul_ps(taps.weights[t], x));
        }
    }
    for (j, acc) in acc.into_iter().enumerate() {
        let acc = taps.finish(acc);
        // SAFETY: the store mask lets through only outputs of the plane; an interior
        // vector's lanes all are.
        unsafe {
            let at = out.add((first + j) * LANES);
            if INTERIOR {
                _mm512_storeu_ps(at, acc)
            } else {
                _mm512_mask_storeu_ps(at, masks[j].store(), acc)
            }
        }
    }
}
