//! [`super::flat`]'s kernel on AVX2, for CPUs without AVX-512: each plane of a 3×3 stride-1
//! layer with one pixel of padding read as one run, eight outputs to a vector whatever the row
//! width, no copies.
//!
//! AVX2 has no mask registers, and its masked load (`vmaskmovps`) is slower than a plain one.
//! So a vector whose rows above and below lie inside the plane (an interior vector) loads each
//! tap whole, since every value it reads is a pixel of the plane, and clears with a bitwise
//! `and` the lanes whose left or right tap falls in the padding (they read a neighbouring row's
//! pixel). Only the vectors on the first and last rows, and the plane's last, load through
//! `vmaskmovps`, which leaves the lanes outside the plane untouched in memory too.
//!
//! Without the other AVX-512 kernels ([`super::rows`], [`super::channel_blocks`]) the per-plane
//! kernel's copies are the alternative for every layer, so the rows here go up to
//! MobileNetV2's 112.
//!
//! The taps are added in the order of [`super::depthwise_plane`], `ky` then `kx`, from zero,
//! each product rounded before its sum, and a padded tap adds its zero product; then the bias
//! and activation as `kernels::finish_rows` computes them: the per-plane kernel's bits
//! (tested).

use super::Plan;
use crate::kernels::lane_mask_loaded;
use crate::ops::{Activation, Conv2dParams};
use std::arch::x86_64::*;

const LANES: usize = 8;
/// The widest rows taken here: MobileNetV2's 112.
const MAX_WIDTH: usize = 112;
/// The largest plane taken here, in vectors (112×112 is 1,568): the masks of a layer live on
/// the stack, six bytes a vector.
const MAX_VECTORS: usize = 1568;
// A plane's vectors are numbered in a u16 ([`Order`]).
const _: () = assert!(MAX_VECTORS <= u16::MAX as usize);

/// Whether a layer runs here: AVX2 and FMA (the runtime's AVX2 level; no product here is
/// fused), a 3×3 window at stride 1 without dilation, one pixel of
/// padding on every side, rows up to [`MAX_WIDTH`] wide and planes up to [`MAX_VECTORS`]
/// vectors.
pub(super) fn fits(p: &Conv2dParams, (h, w): (usize, usize)) -> bool {
    p.kernel == [3, 3]
        && p.stride == [1, 1]
        && p.dilation == [1, 1]
        && p.padding == [1, 1, 1, 1]
        && (1..=MAX_WIDTH).contains(&w)
        && h >= 1
        && (h * w).div_ceil(LANES) <= MAX_VECTORS
        && crate::cpu::avx2_fma()
}

/// Which lanes of one vector of outputs read a real input through each tap, a bit per lane:
/// `rows[ky]` for the row the tap reads (`ky = 0` above, `2` below), `columns[kx]` for its
/// column; a tap's mask is the two together. Every mask leaves out the lanes past the plane's
/// end.
#[derive(Clone, Copy, Default)]
struct Masks {
    rows: [u8; 3],
    columns: [u8; 3],
    /// Every lane is an output whose rows above and below are in the plane, and the whole
    /// vectors its taps load, a pixel left and right of those rows included, lie inside it.
    interior: bool,
}

impl Masks {
    /// The masks of vector `vector` of an `h × w` plane: one division for its first pixel,
    /// then a step along the row for each lane.
    fn of(vector: usize, (h, w): (usize, usize)) -> Masks {
        let first = vector * LANES;
        let (rows, columns) = super::tap_lane_bits(first, LANES, (h, w));
        let mut masks = Masks {
            rows: rows.map(|bits| bits as u8),
            columns: columns.map(|bits| bits as u8),
            interior: false,
        };
        // The vector's loads reach from `first − w − 1` to `first + LANES + w` (exclusive
        // end `+ 1`): the first and last values of the plane's interior rows would otherwise
        // read one value past either end.
        masks.interior = masks.rows == [u8::MAX; 3] && first > w && first + LANES + w < h * w;
        masks
    }

    fn tap(&self, ky: usize, kx: usize) -> u8 {
        self.rows[ky] & self.columns[kx]
    }

    /// The lanes that are outputs of the plane.
    fn store(&self) -> u8 {
        self.rows[1]
    }

    fn is_interior(&self) -> bool {
        self.interior
    }

    /// Whether every lane's left and right taps are in the plane's row (no lane is in its
    /// first or last column).
    fn has_whole_sides(&self) -> bool {
        self.columns[0] & self.columns[2] == u8::MAX
    }
}

/// The order a layer's planes take their vectors in, one list per kind, so that every
/// group but a kind's last holds [`GROUP`] vectors: the interior vectors with whole sides,
/// then the interior ones with a side in the padding, then the edge vectors.
///
/// In plane order a run of one kind ends where the next vector's kind changes: a 56-wide row
/// makes runs of 1, 4, 1 and 1 vectors, and a vector on its own waits on one chain of nine
/// additions. Sorted, MobileNetV2's 144-channel 56×56 layer took 0.20–0.21 ms against
/// 0.27–0.28 (one thread, in the model; docs/performance/kernels.md). Each plane is small
/// enough to stay in the caches between the three passes over it.
struct Order {
    vectors: [u16; MAX_VECTORS],
    /// The ends of the whole-sided and of the other interior vectors in `vectors`.
    whole_end: usize,
    interior_end: usize,
    len: usize,
}

impl Order {
    fn of(masks: &[Masks]) -> Order {
        // 0: interior with whole sides, 1: interior with a side in the padding, 2: edge.
        let kind = |m: &Masks| match (m.is_interior(), m.has_whole_sides()) {
            (true, true) => 0,
            (true, false) => 1,
            (false, _) => 2,
        };
        let mut order = Order {
            vectors: [0; MAX_VECTORS],
            whole_end: 0,
            interior_end: 0,
            len: 0,
        };
        for k in 0..3 {
            for (v, _) in masks.iter().enumerate().filter(|(_, m)| kind(m) == k) {
                order.vectors[order.len] = v as u16;
                order.len += 1;
            }
            if k == 0 {
                order.whole_end = order.len;
            } else if k == 1 {
                order.interior_end = order.len;
            }
        }
        order
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
    let order = Order::of(masks);
    for (i, out) in part.chunks_exact_mut((h * w).max(1)).enumerate() {
        // SAFETY: the CPU has AVX2 (`fits`); plane `first + i` is in `plan.src`, `out` is its
        // output plane, and the masks and order were made for this plane's shape.
        unsafe { plane(plan, first + i, masks, &order, out) }
    }
}

/// One channel's nine weights, each broadcast to a vector, its bias and the layer's
/// activation: what the AVX2 kernels (here and [`super::rows_avx2`]) take for each plane.
pub(super) struct Taps {
    pub(super) weights: [__m256; 9],
    bias: Option<__m256>,
    activation: Activation,
}

impl Taps {
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn of(plan: &Plan<'_>, channel: usize) -> Taps {
        let filter = &plan.filters[channel * 9..(channel + 1) * 9];
        let mut weights = [_mm256_setzero_ps(); 9];
        for (weight, &value) in weights.iter_mut().zip(filter) {
            *weight = _mm256_set1_ps(value);
        }
        Taps {
            weights,
            bias: plan.bias.map(|b| _mm256_set1_ps(b[channel])),
            activation: plan.activation,
        }
    }

    /// A vector of sums with the bias added and the activation applied, as
    /// `kernels::finish_rows` computes them.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn finish(&self, mut sums: __m256) -> __m256 {
        if let Some(bias) = self.bias {
            sums = _mm256_add_ps(sums, bias);
        }
        crate::kernels::activate_avx2(sums, self.activation)
    }
}

/// Vectors summed side by side: four independent chains of additions.
const GROUP: usize = 4;

/// One plane (`index`, channel `index % channels`) in the layer's [`Order`]: its interior
/// vectors in groups of [`GROUP`], those with whole sides first, then each vector that
/// touches the first or last row, or the plane's end, on its own. (The edge vectors in groups
/// too took 0.24 ms against 0.20 on the 56×56 layer: their masked loads side by side cost
/// more than the chains they overlap.)
#[target_feature(enable = "avx2,fma")]
unsafe fn plane(plan: &Plan<'_>, index: usize, masks: &[Masks], order: &Order, out: &mut [f32]) {
    let (h, w) = plan.input;
    let channel = index % plan.channels;
    let input = &plan.src[index * h * w..(index + 1) * h * w];
    let taps = Taps::of(plan, channel);
    let len = h * w;
    // Each tap's offset from the output it is for.
    let w = w as isize;
    let offsets: [isize; 9] =
        std::array::from_fn(|t| (t as isize / 3 - 1) * w + t as isize % 3 - 1);
    let (input, out) = (input.as_ptr(), out.as_mut_ptr());
    let taps = (&taps, &offsets);
    let whole = &order.vectors[..order.whole_end];
    let sides = &order.vectors[order.whole_end..order.interior_end];
    // SAFETY (both kinds): the order's interior vectors are this plane's, and the first
    // kind's sides are whole.
    for group in whole.chunks(GROUP) {
        unsafe {
            match group.len() {
                4 => interior_vectors::<4, false>(taps, input, masks, group, out),
                3 => interior_vectors::<3, false>(taps, input, masks, group, out),
                2 => interior_vectors::<2, false>(taps, input, masks, group, out),
                _ => interior_vectors::<1, false>(taps, input, masks, group, out),
            }
        }
    }
    for group in sides.chunks(GROUP) {
        unsafe {
            match group.len() {
                4 => interior_vectors::<4, true>(taps, input, masks, group, out),
                3 => interior_vectors::<3, true>(taps, input, masks, group, out),
                2 => interior_vectors::<2, true>(taps, input, masks, group, out),
                _ => interior_vectors::<1, true>(taps, input, masks, group, out),
            }
        }
    }
    for &v in &order.vectors[order.interior_end..order.len] {
        let v = v as usize;
        // SAFETY: vector `v` is this plane's, with its masks.
        unsafe { edge_vector(taps, (input, len), masks[v], v, out) }
    }
}

/// Interior vectors `group` (`N` of them) of the plane at `input`, stored at the same places
/// from `out`: every tap loaded whole, and with `SIDES` the left and right taps' lanes in the
/// padding cleared.
///
/// # Safety
/// AVX2 and FMA; `masks` are the masks of the plane `input` points at, the vectors of `group`
/// are interior (and without `SIDES`, their sides whole), and `out` points at its output
/// plane.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn interior_vectors<const N: usize, const SIDES: bool>(
    (taps, offsets): (&Taps, &[isize; 9]),
    input: *const f32,
    masks: &[Masks],
    group: &[u16],
    out: *mut f32,
) {
    let mut at = [0isize; N];
    for (at, &v) in at.iter_mut().zip(group) {
        *at = v as isize * LANES as isize;
    }
    let mut acc = [_mm256_setzero_ps(); N];
    // The left and right taps' lanes, for each vector.
    let mut sides = [[_mm256_setzero_ps(); 2]; N];
    for (side, &v) in sides.iter_mut().zip(group).filter(|_| SIDES) {
        let masks = &masks[v as usize];
        side[0] = lane_mask_loaded(masks.columns[0]);
        side[1] = lane_mask_loaded(masks.columns[2]);
    }
    // A row of taps at a time: each vector's loads in that row are one pointer and the
    // constant displacements −1, 0 and +1 (with a pointer per vector and tap, the sorted
    // groups ran out of general registers).
    for ky in 0..3 {
        let mut row = [input; N];
        for (row, &at) in row.iter_mut().zip(&at) {
            // SAFETY: an interior vector's rows above and below are in the plane.
            *row = unsafe { input.offset(at + offsets[ky * 3 + 1]) };
        }
        for kx in 0..3 {
            for j in 0..N {
                // SAFETY: an interior vector's whole loads lie inside the plane (`Masks::of`).
                let mut x = unsafe { _mm256_loadu_ps(row[j].offset(kx as isize - 1)) };
                if SIDES && kx != 1 {
                    x = _mm256_and_ps(x, sides[j][kx / 2]);
                }
                acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(taps.weights[ky * 3 + kx], x));
            }
        }
    }
    for (j, acc) in acc.into_iter().enumerate() {
        // SAFETY: an interior vector's lanes are all outputs of the plane.
        unsafe { _mm256_storeu_ps(out.offset(at[j]), taps.finish(acc)) }
    }
}

/// Vector `first` of the plane at `input` (`len` values), which touches its first or last row
/// or its end. A tap whose lanes all fall in the padding adds a product of zeros, with no
/// load; one whose loads lie inside the plane loads whole and clears the padding's lanes with
/// a bitwise `and`, as the interior vectors' sides do; only the others (past the plane's ends)
/// load through `vmaskmovps`. The store is masked only where the vector runs past the plane.
/// (Every tap through `vmaskmovps`, MobileNetV2's 56×56 layer spent a tenth of its time on
/// the two rows' vectors; docs/performance/kernels.md.)
///
/// # Safety
/// AVX2 and FMA; `masks` are the masks of vector `first` of the plane `input` points at, and `out`
/// points at its output plane.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn edge_vector(
    (taps, offsets): (&Taps, &[isize; 9]),
    (input, len): (*const f32, usize),
    masks: Masks,
    first: usize,
    out: *mut f32,
) {
    let mut acc = _mm256_setzero_ps();
    for (t, &offset) in offsets.iter().enumerate() {
        let bits = masks.tap(t / 3, t % 3);
        let start = (first * LANES) as isize + offset;
        let at = input.wrapping_offset(start);
        let x = if bits == 0 {
            _mm256_setzero_ps()
        } else if start >= 0 && start as usize + LANES <= len {
            // SAFETY: the load lies inside the plane.
            unsafe { _mm256_and_ps(_mm256_loadu_ps(at), lane_mask_loaded(bits)) }
        } else {
            // SAFETY: the mask lets through only lanes whose tap is a pixel of the plane; the
            // others are not read, so their addresses (`wrapping_offset`) may lie outside it.
            unsafe { _mm256_maskload_ps(at, _mm256_castps_si256(lane_mask_loaded(bits))) }
        };
        acc = _mm256_add_ps(acc, _mm256_mul_ps(taps.weights[t], x));
    }
    let value = taps.finish(acc);
    // SAFETY: the store's lanes are outputs of the plane: all eight, or those its mask lets
    // through.
    unsafe {
        let at = out.add(first * LANES);
        match masks.store() {
            u8::MAX => _mm256_storeu_ps(at, value),
            bits => _mm256_maskstore_ps(at, _mm256_castps_si256(lane_mask_loaded(bits)), value),
        }
    }
}
