//! [`super::rows`]' kernel on AVX2, for CPUs without AVX-512: 3×3 depthwise convolutions at
//! stride 1 or 2 read straight from the input rows, eight outputs of a row to a vector, no
//! copies. [`super::flat_avx2`] takes the stride-1 layers it fits first; here are the
//! stride-2 ones, which the per-plane kernel otherwise splits into phases (MobileNetV2's
//! four stride-2 layers took 1.11 ms there against onnxruntime's 0.45, one thread, Zen 3),
//! and stride-1 rows wider than 112.
//!
//! At stride 2, one vector's taps in a row are 16 consecutive values for the left and
//! middle columns, whose even and odd lanes a shuffle within 128-bit halves separates, and
//! the 16 from two columns on, whose even lanes are the right column's. The shuffles leave
//! the outputs' quarters out of order, the same for every tap, so one permute per vector
//! puts the sums in order. AVX2 has no mask
//! registers and its masked load (`vmaskmovps`) is slower than a plain one, so only the
//! vectors at the row's edges load through masks (lanes outside the row read zero, as from a
//! padded copy); a row above or below the plane reads a row of zeros.
//!
//! The taps are added in the order of [`super::depthwise_plane`], `ky` then `kx`, from zero,
//! each product rounded before its sum; then the bias and activation as
//! `kernels::finish_rows` computes them: the per-plane kernel's bits (tested).

use super::Plan;
use super::flat_avx2::Taps;
use super::rows::{Group, Layout};
use crate::kernels::pairs_avx2::{even_lanes, in_order, odd_lanes};
use crate::kernels::{lane_mask, lane_mask_loaded};
use crate::ops::Conv2dParams;
use std::arch::x86_64::*;

const LANES: usize = 8;
/// The widest output row, in vectors: the column table lives on the stack.
const MAX_VECTORS_PER_ROW: usize = 128;

/// Whether a layer runs here: AVX2 and FMA (the runtime's AVX2 level), a 3×3 window without
/// dilation, stride 1 or 2, and output rows up to [`MAX_VECTORS_PER_ROW`] vectors wide.
pub(super) fn fits(p: &Conv2dParams, ow: usize) -> bool {
    p.kernel == [3, 3]
        && p.dilation == [1, 1]
        && matches!(p.stride, [1, 1] | [2, 2])
        && (1..=MAX_VECTORS_PER_ROW * LANES).contains(&ow)
        && crate::cpu::avx2_fma()
}

/// Where the taps of one vector of outputs (`ox0..ox0 + 8`) read in each input row: the
/// column of the first load and each load's lanes inside the row, a bit per lane. At stride
/// 1 loads 0–2 are the three columns' taps; at stride 2, loads 0 and 1 are one run of 16
/// values from the left column (even lanes left taps, odd lanes middle ones), and loads 2 and
/// 3 the run two columns on (the right taps).
#[derive(Clone, Copy, Default)]
struct Column {
    start: isize,
    masks: [u8; 4],
    /// The outputs of the vector that are in the row.
    store: u8,
}

/// Where each load of a vector starts, relative to [`Column::start`], at stride 1 (three
/// loads; the fourth repeats the first) and 2.
const LOADS: [[isize; 4]; 2] = [[0, 1, 2, 0], [0, 8, 2, 10]];

impl Column {
    fn of(vector: usize, stride: usize, left: usize, (w, ow): (usize, usize)) -> Column {
        let ox0 = vector * LANES;
        let start = (ox0 * stride) as isize - left as isize;
        Column {
            start,
            masks: LOADS[stride - 1].map(|at| inside(start + at, w)),
            store: first_lanes(ow - ox0),
        }
    }

    /// Whether every load and the store take all eight lanes.
    fn is_whole(&self) -> bool {
        self.masks == [u8::MAX; 4] && self.store == u8::MAX
    }
}

/// The first `count` lanes (all eight from 8 on), a bit per lane.
fn first_lanes(count: usize) -> u8 {
    ((1u32 << count.min(LANES)) - 1) as u8
}

/// The lanes `j` of a load from column `start` with `0 ≤ start + j < w`.
fn inside(start: isize, w: usize) -> u8 {
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
    let groups = groups_of_four(columns, &mut groups);
    let mut kinds = [Masked::None; MAX_VECTORS_PER_ROW];
    for (kind, group) in kinds.iter_mut().zip(groups) {
        let columns = &columns[group.first..group.first + group.count];
        *kind = if group.masked {
            Masked::of(columns)
        } else {
            Masked::None
        };
    }
    let plane_out = oh * ow;
    // The rows of the padding above and below the plane: the same loads read zeros from
    // here, so that no load asks whether its row exists.
    // With a margin either side, so that a masked vector's loads from it lie inside it.
    crate::scratch::with_zeros(w + 2 * MARGIN, |padded_zeros| {
        let readable = Readable {
            input: plan.src.as_ptr_range(),
            zeros: padded_zeros.as_ptr_range(),
            reach: Readable::reach(columns, stride),
            kinds: &kinds[..groups.len()],
        };
        let layout = Layout {
            columns,
            groups,
            zeros: &padded_zeros[MARGIN..],
        };
        for (i, out) in part.chunks_exact_mut(plane_out.max(1)).enumerate() {
            // SAFETY: the CPU has AVX2 and FMA (`fits`); plane `first + i` is in
            // `plan.src`, `out` is its output plane, the columns and groups were made for
            // this layer's widths, and `zeros` is as wide as its rows.
            unsafe {
                if stride == 1 {
                    plane::<1>(plan, first + i, (&layout, &readable), out)
                } else {
                    plane::<2>(plan, first + i, (&layout, &readable), out)
                }
            }
        }
    })
}

/// The zeros' margin either side of the padding's row, in values: past the farthest a load
/// reaches beyond its row with one column of padding (a column before it; at stride 2, 18
/// after it). Wider paddings load the padding's rows through masks.
const MARGIN: usize = 32;

/// The memory a masked vector may load whole from, clearing the lanes outside its row: the
/// layer's input and the padding's row of zeros with its margins; how far a row's loads
/// reach either side of it; and which vectors of each group take masks.
struct Readable<'a> {
    input: std::ops::Range<*const f32>,
    zeros: std::ops::Range<*const f32>,
    /// The first and one past the last value a row's loads read, from the row's start.
    reach: (isize, isize),
    kinds: &'a [Masked],
}

impl Readable<'_> {
    /// The reach of the loads of `columns`.
    fn reach(columns: &[Column], stride: usize) -> (isize, isize) {
        let loads = &LOADS[stride - 1];
        let first = columns.iter().map(|c| c.start).min().unwrap_or(0);
        let last = columns.iter().map(|c| c.start).max().unwrap_or(0);
        let end = last + loads.iter().max().unwrap_or(&0) + LANES as isize;
        (first + loads.iter().min().unwrap_or(&0), end)
    }

    /// Whether every load of a row's vectors from each of `rows` lies in readable memory:
    /// true but at the input's two ends (and for paddings wider than the zeros' margins).
    /// Once per output row, since a check per group cost as much as the loads it saved.
    fn holds(&self, rows: &[*const f32; 3]) -> bool {
        rows.iter().all(|&row| {
            let (from, to) = (
                row.wrapping_offset(self.reach.0),
                row.wrapping_offset(self.reach.1),
            );
            [&self.input, &self.zeros]
                .iter()
                .any(|range| range.start <= from && to <= range.end)
        })
    }
}

/// A row's columns in groups of four neighbours (fewer at its end), each masked where any of
/// its columns needs a mask. A row's edge vectors then sum beside three others, the whole
/// ones among them loading whole ([`Masked`]). (On their own, as [`Group::split`] leaves them
/// for the AVX-512 kernel, each waited on its chain of nine additions: MobileNetV2's stride-2
/// layer from 56×56, four vectors a row, two of them at an edge, spent 40% of its time on
/// those; with every load of a group masked it was slower still.
/// docs/performance/measurements.md.)
fn groups_of_four<'g>(columns: &[Column], groups: &'g mut [Group]) -> &'g [Group] {
    let mut used = 0;
    for (i, chunk) in columns.chunks(GROUP).enumerate() {
        groups[used] = Group {
            first: i * GROUP,
            count: chunk.len(),
            masked: !chunk.iter().all(Column::is_whole),
        };
        used += 1;
    }
    &groups[..used]
}

/// Vectors of a row summed side by side.
const GROUP: usize = 4;

/// Which vectors of a group load and store through masks: none, its first, its last, both,
/// or all of them, where a vector between them needs masks too (a row of few columns). Each
/// is a constant of [`vectors`], so the other vectors' loads stay whole.
#[derive(Clone, Copy)]
enum Masked {
    None,
    First,
    Last,
    Edges,
    All,
}

/// [`Masked`] as the bits of [`vectors`]' constant.
const NONE: u8 = 0;
const FIRST: u8 = 1;
const LAST: u8 = 2;
const ALL: u8 = 4;
/// With [`Masked`]'s bits: the masked vectors load whole and clear the lanes outside the row.
const WHOLE: u8 = 8;

impl Masked {
    /// The vectors of `columns` (a group with a column that needs masks) that take masks.
    fn of(columns: &[Column]) -> Masked {
        let needs = |c: &Column| !c.is_whole();
        let last = columns.len() - 1;
        if columns[1.min(last)..last].iter().any(needs) {
            return Masked::All;
        }
        match (needs(&columns[0]), last > 0 && needs(&columns[last])) {
            (true, true) => Masked::Edges,
            (true, false) => Masked::First,
            (false, true) => Masked::Last,
            (false, false) => Masked::None,
        }
    }
}

/// One plane (`index`, channel `index % channels`) at stride `S`, a row at a time.
#[target_feature(enable = "avx2,fma")]
unsafe fn plane<const S: usize>(
    plan: &Plan<'_>,
    index: usize,
    (layout, readable): (&Layout<'_, Column>, &Readable<'_>),
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
        // Masked vectors load whole and clear the lanes outside the row, but where a load
        // would leave readable memory (vmaskmovps side by side stalled: 0.120 ms against
        // 0.113 on the stride-2 layer from 56×56).
        let whole = readable.holds(&rows);
        for (group, &masked) in layout.groups.iter().zip(readable.kinds) {
            let columns = &layout.columns[group.first..group.first + group.count];
            let out = out_row[group.first * LANES..].as_mut_ptr();
            // SAFETY: as `vectors` asks; `out` is the row from the group's first output.
            unsafe {
                macro_rules! by_count {
                    ($mask:expr) => {
                        match group.count {
                            4 => vectors::<S, 4, { $mask }>(&taps, &rows, columns, out),
                            3 => vectors::<S, 3, { $mask }>(&taps, &rows, columns, out),
                            2 => vectors::<S, 2, { $mask }>(&taps, &rows, columns, out),
                            _ => vectors::<S, 1, { $mask }>(&taps, &rows, columns, out),
                        }
                    };
                }
                match (masked, whole) {
                    (Masked::None, _) => by_count!(NONE),
                    (Masked::First, true) => by_count!(FIRST | WHOLE),
                    (Masked::Last, true) => by_count!(LAST | WHOLE),
                    (Masked::Edges, true) => by_count!(FIRST | LAST | WHOLE),
                    (Masked::All, true) => by_count!(ALL | WHOLE),
                    (Masked::First, false) => by_count!(FIRST),
                    (Masked::Last, false) => by_count!(LAST),
                    (Masked::Edges, false) => by_count!(FIRST | LAST),
                    (Masked::All, false) => by_count!(ALL),
                }
            }
        }
    }
}

/// The `N` vectors of outputs of `columns` in one row, from its three input `rows`, stored
/// from `out` on. The vectors `MASK` names ([`Masked`]) load and store through the columns'
/// masks: with [`WHOLE`], their loads read whole vectors and clear the lanes outside the row;
/// without it, through `vmaskmovps`, reading only the row's columns. The others load and
/// store whole.
///
/// # Safety
/// AVX2 and FMA; each row holds the `w` columns the columns' masks were made for, and `out`
/// the outputs the columns' store masks let through; the vectors `MASK` leaves out have whole
/// masks; with [`WHOLE`], every load of the masked vectors lies in readable memory.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn vectors<const S: usize, const N: usize, const MASK: u8>(
    taps: &Taps,
    rows: &[*const f32; 3],
    columns: &[Column],
    out: *mut f32,
) {
    // Whether vector `j` loads and stores through its masks.
    let masked = |j: usize| {
        MASK & ALL != 0 || (MASK & FIRST != 0 && j == 0) || (MASK & LAST != 0 && j == N - 1)
    };
    let mut acc = [_mm256_setzero_ps(); N];
    let mut starts = [0isize; N];
    for (j, column) in columns.iter().enumerate().take(N) {
        starts[j] = column.start;
    }
    for (ky, &row) in rows.iter().enumerate() {
        for j in 0..N {
            // SAFETY: every lane a mask lets through is a column of the row, `0..w`; the
            // others are not read by `vmaskmovps`, so their addresses (`wrapping_offset`) may
            // lie outside the plane, and are read whole only where the caller found them
            // readable. Unmasked loads read only columns of the row (the caller's promise).
            let load = |k: usize| unsafe {
                let at = row.wrapping_offset(starts[j] + LOADS[S - 1][k]);
                // The masks come from a table, a load each, rather than held in registers,
                // which four vectors' sums and loads already fill.
                let mask = || lane_mask_loaded(columns[j].masks[k]);
                if masked(j) && MASK & WHOLE != 0 {
                    _mm256_and_ps(_mm256_loadu_ps(at), mask())
                } else if masked(j) {
                    _mm256_maskload_ps(at, _mm256_castps_si256(mask()))
                } else {
                    _mm256_loadu_ps(at)
                }
            };
            let x = if S == 1 {
                [load(0), load(1), load(2)]
            } else {
                let (a, b) = (load(0), load(1));
                let (c, d) = (load(2), load(3));
                [even_lanes(a, b), odd_lanes(a, b), even_lanes(c, d)]
            };
            for (kx, x) in x.into_iter().enumerate() {
                acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(taps.weights[ky * 3 + kx], x));
            }
        }
    }
    for (j, (acc, column)) in acc.into_iter().zip(columns).enumerate() {
        let acc = taps.finish(if S == 2 { in_order(acc) } else { acc });
        // SAFETY: the store's lanes are outputs of the row (the caller's promise).
        unsafe {
            if masked(j) && column.store != u8::MAX {
                _mm256_maskstore_ps(out.add(j * LANES), lane_mask(column.store), acc)
            } else {
                _mm256_storeu_ps(out.add(j * LANES), acc)
            }
        };
    }
}
