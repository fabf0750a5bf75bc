//! 3×3 depthwise convolutions at stride 1 or 2 over large planes, read straight from the
//! input planes, sixteen outputs of a row to a vector (AVX-512).
//!
//! The per-plane kernel ([`super::planes`]) first copies each plane into a zero-padded buffer
//! (at stride 2, into its four phases), and copies the computed rows out again. On
//! MobileNetV2's 112×112 planes those copies were most of the layer: a profile of
//! `block_1_depthwise` (96 planes from 112² to 56²) put 42% of its time in splitting the rows
//! into phases, 28% in the sums. Here that layer took 0.19 ms against 0.48, and Xception's
//! 74×74 ones 0.28 against 0.58 (one thread, Zen 4). Here every tap is a load from the input row itself: at
//! stride 1 one unaligned load, at stride 2 two loads whose even lanes one permute gathers
//! (the odd lanes of the same pair are the middle column's tap). The padding is the loads'
//! masks: a lane left of or past the row reads zero, as it would from the padded copy, and a
//! row above or below the plane is a vector of zeros.
//!
//! The taps are added in the order of [`super::depthwise_plane`], `ky` then `kx`, from zero,
//! each product rounded before its sum, and a padded tap adds its zero product as the padded
//! copy does; then the bias and activation as `kernels::finish_rows` computes them. So the
//! bits are the per-plane kernel's (tested).

use super::{Plan, Taps};
use crate::kernels::first_lanes;
use crate::ops::Conv2dParams;
use std::arch::x86_64::*;

const LANES: usize = 16;
/// The widest output row: the column table lives on the stack.
const MAX_VECTORS_PER_ROW: usize = 64;
/// The narrowest output row taken here, ahead of the channel blocks. MobileNetV2's 14-wide
/// rows (stride 2 from 28×28) took 0.033 ms here against 0.055 on the channel blocks, its
/// 7-wide ones 0.078 against 0.066: below most of a vector a row wastes its lanes.
const MIN_OUTPUT_WIDTH: usize = 12;

/// Whether a layer runs here: AVX-512F, a 3×3 window without dilation, stride 1 or 2, and
/// output rows from [`MIN_OUTPUT_WIDTH`] values to [`MAX_VECTORS_PER_ROW`] vectors wide.
pub(super) fn fits(p: &Conv2dParams, ow: usize) -> bool {
    p.kernel == [3, 3]
        && p.dilation == [1, 1]
        && matches!(p.stride, [1, 1] | [2, 2])
        && (MIN_OUTPUT_WIDTH..=MAX_VECTORS_PER_ROW * LANES).contains(&ow)
        && crate::cpu::avx512f()
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

/// Where each load of a vector starts, relative to [`Column::start`] (stride 1 makes three).
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
    let mut groups = [Group::default(); MAX_VECTORS_PER_ROW];
    let whole = |c: &Column| c.masks == [u16::MAX; 4] && c.store == u16::MAX;
    let groups = Group::split(columns, whole, &mut groups);
    let plane_out = oh * ow;
    // The rows of the padding above and below the plane: the same masked loads read zeros
    // from here, so that no load asks whether its row exists.
    crate::scratch::with_zeros(w, |zeros| {
        let layout = Layout {
            columns,
            groups,
            zeros,
        };
        for (i, out) in part.chunks_exact_mut(plane_out.max(1)).enumerate() {
            // SAFETY: the CPU has AVX-512F (`fits`); plane `first + i` is in `plan.src`,
            // `out` is its output plane, the columns and groups were made for this layer's
            // widths, and `zeros` is as wide as its rows.
            unsafe {
                if stride == 1 {
                    plane::<1>(plan, first + i, &layout, out)
                } else {
                    plane::<2>(plan, first + i, &layout, out)
                }
            }
        }
    })
}

/// Where a layer's rows read: its columns (each instruction set's own), their groups, and a
/// row of zeros. (Shared with [`super::rows_avx2`].)
pub(super) struct Layout<'a, C> {
    pub(super) columns: &'a [C],
    pub(super) groups: &'a [Group],
    pub(super) zeros: &'a [f32],
}

impl<C> Layout<'_, C> {
    /// The three input rows of output row `oy` at stride `stride` of the plane `input`
    /// (`h × w`, `top` rows of padding above it): the row of zeros for one of the padding.
    pub(super) fn window_rows(
        &self,
        input: &[f32],
        (h, w): (usize, usize),
        (oy, stride, top): (usize, usize, usize),
    ) -> [*const f32; 3] {
        let mut rows = [self.zeros.as_ptr(); 3];
        for (ky, row) in rows.iter_mut().enumerate() {
            if let Some(iy) = (oy * stride + ky).checked_sub(top).filter(|&iy| iy < h) {
                *row = input[iy * w..].as_ptr();
            }
        }
        rows
    }
}

/// Vectors of a row summed side by side: four independent chains of additions (one vector
/// at a time waited on its chain of nine).
const GROUP: usize = 4;

/// Neighbouring vectors of a row computed together: up to [`GROUP`] whole ones, or one at the
/// row's edge, whose loads or store need masks. Masks only where needed: with every load
/// masked, loading the masks took 39% of the kernel's time (samples on `kmovw`), and a
/// vector took 80 cycles.
#[derive(Clone, Copy, Default)]
pub(super) struct Group {
    pub(super) first: usize,
    pub(super) count: usize,
    pub(super) masked: bool,
}

impl Group {
    /// The row's columns in groups, into `groups`; returns the groups used. A column is
    /// `whole` where none of its loads or its store needs a mask. (Shared with the AVX2
    /// kernel, [`super::rows_avx2`].)
    pub(super) fn split<'g, C>(
        columns: &[C],
        whole: impl Fn(&C) -> bool,
        groups: &'g mut [Group],
    ) -> &'g [Group] {
        let mut used = 0;
        let mut v = 0;
        while v < columns.len() {
            let masked = !whole(&columns[v]);
            let count = if masked {
                1
            } else {
                columns[v..]
                    .iter()
                    .take(GROUP)
                    .take_while(|c| whole(c))
                    .count()
            };
            groups[used] = Group {
                first: v,
                count,
                masked,
            };
            used += 1;
            v += count;
        }
        &groups[..used]
    }
}

/// One plane (`index`, channel `index % channels`) at stride `S`, a row at a time.
#[target_feature(enable = "avx512f")]
unsafe fn plane<const S: usize>(
    plan: &Plan<'_>,
    index: usize,
    layout: &Layout<'_, Column>,
    out: &mut [f32],
) {
    let (h, w) = plan.input;
    let (oh, ow) = plan.output;
    let top = plan.p.padding[0];
    let channel = index % plan.channels;
    let input = &plan.src[index * h * w..(index + 1) * h * w];
    let taps = Taps::of(plan, channel);
    for (oy, out_row) in out.chunks_exact_mut(ow).enumerate().take(oh) {
        let rows = layout.window_rows(input, (h, w), (oy, S, top));
        for group in layout.groups {
            let columns = &layout.columns[group.first..group.first + group.count];
            let out = out_row[group.first * LANES..].as_mut_ptr();
            // SAFETY: as `vectors` asks; `out` is the row from the group's first output.
            unsafe {
                match (group.masked, group.count) {
                    (true, _) => vectors::<S, 1, true>(&taps, &rows, columns, out),
                    (false, 4) => vectors::<S, 4, false>(&taps, &rows, columns, out),
                    (false, 3) => vectors::<S, 3, false>(&taps, &rows, columns, out),
                    (false, 2) => vectors::<S, 2, false>(&taps, &rows, columns, out),
                    (false, _) => vectors::<S, 1, false>(&taps, &rows, columns, out),
                }
            }
        }
    }
}

/// The `N` vectors of outputs of `columns` in one row, from its three input `rows`, stored
/// from `out` on; through the columns' masks if `MASKED`, else whole.
///
/// # Safety
/// AVX-512F; each row holds the `w` columns the columns' masks were made for, and `out` the
/// outputs the columns' store masks let through; without `MASKED`, every mask of the
/// columns is whole.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn vectors<const S: usize, const N: usize, const MASKED: bool>(
    taps: &Taps,
    rows: &[*const f32; 3],
    columns: &[Column],
    out: *mut f32,
) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let mut acc = [_mm512_setzero_ps(); N];
    // The masks in locals: read through `column` inside the loops, they were loaded again
    // for every row.
    let mut masks = [[u16::MAX; 4]; N];
    let mut starts = [0isize; N];
    for (j, column) in columns.iter().enumerate().take(N) {
        (masks[j], starts[j]) = (column.masks, column.start);
    }
    for (ky, &row) in rows.iter().enumerate() {
        for j in 0..N {
            // SAFETY: every lane a mask lets through is a column of the row, `0..w`; the
            // others are not read, so their addresses (`wrapping_offset`) may lie outside
            // the plane. Unmasked loads read only columns of the row (the caller's promise).
            let load = |k: usize| unsafe {
                let at = row.wrapping_offset(starts[j] + LOADS[S - 1][k]);
                if MASKED {
                    _mm512_maskz_loadu_ps(masks[j][k], at)
                } else {
                    _mm512_loadu_ps(at)
                }
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
    for (j, (acc, column)) in acc.into_iter().zip(columns).enumerate() {
        let acc = taps.finish(acc);
        // SAFETY: the store's lanes are outputs of the row (the caller's promise).
        unsafe {
            if MASKED {
                _mm512_mask_storeu_ps(out.add(j * LANES), column.store, acc)
            } else {
                _mm512_storeu_ps(out.add(j * LANES), acc)
            }
        };
    }
}

/// Each load's column relative to [`Column::start`], at stride 1 and 2.
const LOADS: [[isize; 4]; 2] = [STRIDE_1_LOADS, STRIDE_2_LOADS];
