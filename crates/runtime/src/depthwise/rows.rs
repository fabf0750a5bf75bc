//! 3×3 depthwise convolutions at stride 1 or 2 over large planes, read straight from the
//! input planes, sixteen outputs of a row to a vector (AVX-512).
//!
//! The per-plane kernel ([`super::planes`]) first copies each plane into a zero-padded buffer
//! (at stride 2, into its four phases), and copies the computed rows out again. On
//! MobileNetV2's 112×112 planes those copies were most of the layer: a profile of
//! `block_1_depthwise` (96 planes from 112² to 56²) put 42% of its time in splitting the rows
//! into phases, 28% in the sums. Here every tap is a load from the input row itself: at
//! stride 1 one unaligned load, at stride 2 two loads whose even lanes one permute gathers
//! (the odd lanes of the same pair are the middle column's tap). The padding is the loads'
//! masks: a lane left of or past the row reads zero, as it would from the padded copy, and a
//! row above or below the plane is a vector of zeros.
//!
//! The taps are added in the order of [`super::depthwise_plane`], `ky` then `kx`, from zero,
//! each product rounded before its sum, and a padded tap adds its zero product as the padded
//! copy does; then the bias and activation as `kernels::finish_rows` computes them. So the
//! bits are the per-plane kernel's (tested).

use super::Plan;
use crate::kernels::{activate, first_lanes};
use crate::ops::Conv2dParams;
use std::arch::x86_64::*;

const LANES: usize = 16;
/// The widest output row: the column table lives on the stack.
const MAX_VECTORS_PER_ROW: usize = 64;
/// The narrowest output row taken here at stride 2. Below one vector a row wastes most of
/// its lanes, and the per-plane kernel, whose computed rows run on into each other, does
/// better.
const MIN_OUTPUT_WIDTH: usize = 16;
/// The same at stride 1, where the per-plane kernel only copies its plane once, into L1: it
/// was level or faster up to MobileNetV2's 56×56 planes, and slower at 112×112.
const MIN_OUTPUT_WIDTH_STRIDE_1: usize = 96;

/// Whether a layer runs here: AVX-512F, a 3×3 window without dilation, stride 1 or 2, and
/// output rows from the stride's least width to [`MAX_VECTORS_PER_ROW`] vectors.
pub(super) fn fits(p: &Conv2dParams, ow: usize) -> bool {
    let least = match p.stride {
        [1, 1] => MIN_OUTPUT_WIDTH_STRIDE_1,
        [2, 2] => MIN_OUTPUT_WIDTH,
        _ => return false,
    };
    p.kernel == [3, 3]
        && p.dilation == [1, 1]
        && (least..=MAX_VECTORS_PER_ROW * LANES).contains(&ow)
        && is_x86_feature_detected!("avx512f")
}

/// Where the taps of one vector of outputs (`ox0..ox0 + 16`) read in each input row: the
/// column of the first load and each load's mask of lanes inside the row. At stride 1 loads
/// 0–2 are the three columns' taps; at stride 2, loads 0 and 1 are one pair (32 values from
/// the first column, whose even lanes are the left taps and odd lanes the middle ones), and
/// loads 2 and 3 the pair two columns on (the right taps).
#[derive(Clone, Copy, Default)]
struct Column {
    start: isize,
    masks: [__mmask16; 4],
    /// The outputs of the vector that are in the row.
    store: __mmask16,
}

/// Where each load of a vector starts, relative to [`Column::start`].
const STRIDE_1_LOADS: [isize; 4] = [0, 1, 2, 0];
const STRIDE_2_LOADS: [isize; 4] = [0, 16, 2, 18];

impl Column {
    fn of(vector: usize, stride: usize, left: usize, (w, ow): (usize, usize)) -> Column {
        let ox0 = vector * LANES;
        let start = (ox0 * stride) as isize - left as isize;
        let loads = if stride == 1 {
            STRIDE_1_LOADS
        } else {
            STRIDE_2_LOADS
        };
        Column {
            start,
            masks: loads.map(|at| inside(start + at, w)),
            store: first_lanes(ow - ox0),
        }
    }
}

/// The lanes `j` of a load from column `start` with `0 ≤ start + j < w`.
fn inside(start: isize, w: usize) -> __mmask16 {
    let below = (-start).clamp(0, LANES as isize) as usize;
    let within = (w as isize - start).clamp(0, LANES as isize) as usize;
    first_lanes(within) & !first_lanes(below)
}

/// The output planes `first..` in `part` (whole planes, `oh·ow` each).
pub(super) fn planes(plan: &Plan<'_>, first: usize, part: &mut [f32]) {
    let (_, w) = plan.input;
    let (oh, ow) = plan.output;
    let vectors = ow.div_ceil(LANES);
    let mut columns = [Column::default(); MAX_VECTORS_PER_ROW];
    let (stride, left) = (plan.p.stride[1], plan.p.padding[1]);
    for (v, column) in columns.iter_mut().enumerate().take(vectors) {
        *column = Column::of(v, stride, left, (w, ow));
    }
    let columns = &columns[..vectors];
    let plane_out = oh * ow;
    for (i, out) in part.chunks_exact_mut(plane_out.max(1)).enumerate() {
        // SAFETY: the CPU has AVX-512F (`fits`); plane `first + i` is in `plan.src`, `out`
        // is its output plane, and the columns were made for this layer's widths.
        unsafe {
            if stride == 1 {
                plane::<1>(plan, first + i, columns, out)
            } else {
                plane::<2>(plan, first + i, columns, out)
            }
        }
    }
}

/// One plane (`index`, channel `index % channels`) at stride `S`: each output row in groups
/// of up to four vectors, whose sums are four independent chains of additions (one vector
/// at a time waited on its chain of nine).
#[target_feature(enable = "avx512f")]
unsafe fn plane<const S: usize>(
    plan: &Plan<'_>,
    index: usize,
    columns: &[Column],
    out: &mut [f32],
) {
    let (h, w) = plan.input;
    let (oh, ow) = plan.output;
    let top = plan.p.padding[0];
    let channel = index % plan.channels;
    let input = &plan.src[index * h * w..(index + 1) * h * w];
    let filter = &plan.filters[channel * 9..(channel + 1) * 9];
    let taps = Taps {
        weights: std::array::from_fn(|t| _mm512_set1_ps(filter[t])),
        bias: plan.bias.map(|b| _mm512_set1_ps(b[channel])),
        activation: plan.activation,
    };
    for (oy, out_row) in out.chunks_exact_mut(ow).enumerate().take(oh) {
        // The three input rows, `None` for a row of the padding.
        let rows: [Option<*const f32>; 3] = std::array::from_fn(|ky| {
            let iy = (oy * S + ky).checked_sub(top)?;
            (iy < h).then(|| input[iy * w..].as_ptr())
        });
        let groups = columns.chunks(GROUP);
        for (g, group) in groups.enumerate() {
            let out = out_row[g * GROUP * LANES..].as_mut_ptr();
            // SAFETY: as `vectors` asks; `out` is the row from the group's first output.
            unsafe {
                match group.len() {
                    4 => vectors::<S, 4>(&taps, &rows, group, out),
                    3 => vectors::<S, 3>(&taps, &rows, group, out),
                    2 => vectors::<S, 2>(&taps, &rows, group, out),
                    _ => vectors::<S, 1>(&taps, &rows, group, out),
                }
            }
        }
    }
}

/// Vectors of a row summed side by side.
const GROUP: usize = 4;

/// One channel's weights, each broadcast to a vector, its bias and the activation.
struct Taps {
    weights: [__m512; 9],
    bias: Option<__m512>,
    activation: crate::ops::Activation,
}

/// The `N` vectors of outputs of `columns` in one row, from its three input `rows`, stored
/// from `out` on.
///
/// # Safety
/// AVX-512F; each row holds the plane's `w` columns the columns' masks were made for, and
/// `out` the outputs the columns' store masks let through.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn vectors<const S: usize, const N: usize>(
    taps: &Taps,
    rows: &[Option<*const f32>; 3],
    columns: &[Column],
    out: *mut f32,
) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let zero = _mm512_setzero_ps();
    let mut acc = [zero; N];
    for (ky, row) in rows.iter().enumerate() {
        for (j, column) in columns.iter().enumerate().take(N) {
            // SAFETY: every lane a mask lets through is a column of the row, `0..w`; the
            // others are not read, so their addresses (`wrapping_offset`) may lie outside
            // the plane.
            let load = |k: usize| match row {
                Some(row) => unsafe {
                    let at = row.wrapping_offset(column.start + LOADS[S - 1][k]);
                    _mm512_maskz_loadu_ps(column.masks[k], at)
                },
                None => zero,
            };
            let x = if S == 1 {
                [load(0), load(1), load(2)]
            } else {
                let (a, b) = (load(0), load(1));
                let (c, d) = (load(2), load(3));
                [
                    _mm512_permutex2var_ps(a, even, b),
                    _mm512_permutex2var_ps(a, odd, b),
                    _mm512_permutex2var_ps(c, even, d),
                ]
            };
            for (kx, x) in x.into_iter().enumerate() {
                acc[j] = _mm512_add_ps(acc[j], _mm512_mul_ps(taps.weights[ky * 3 + kx], x));
            }
        }
    }
    for (j, (mut acc, column)) in acc.into_iter().zip(columns).enumerate() {
        if let Some(bias) = taps.bias {
            acc = _mm512_add_ps(acc, bias);
        }
        acc = activate(acc, taps.activation);
        // SAFETY: the store's lanes are outputs of the row (the caller's promise).
        unsafe { _mm512_mask_storeu_ps(out.add(j * LANES), column.store, acc) };
    }
}

/// Each load's column relative to [`Column::start`], at stride 1 and 2.
const LOADS: [[isize; 4]; 2] = [STRIDE_1_LOADS, STRIDE_2_LOADS];
