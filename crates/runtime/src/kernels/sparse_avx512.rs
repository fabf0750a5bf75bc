//! The sparse (CSR) product on AVX-512, with each output row's strip of columns held in
//! registers across all of the row's nonzeros.
//!
//! The portable kernel ([`super::sparse_rows_times`]) adds each nonzero's scaled right-hand
//! row into the output row in memory: two loads and a store per fused multiply-add, so it ran
//! at a third of the dense product's rate, and a 728×728 pointwise layer with 30% of its
//! weights kept took 2.6× the dense time. Here a strip of up to [`MAX_VECTORS`] 16-lane vectors
//! of two output rows at a time accumulates in registers while the rows' nonzeros go by, and
//! is stored once.
//!
//! Each output element is the same chain of fused multiply-adds as in the portable kernel
//! (from zero, over the row's nonzeros in order), whatever the strip: the same bits.

use super::{SparseRows, first_lanes};
use std::arch::x86_64::*;

const LANES: usize = 16;
/// The most vectors of a strip. Two rows run at once, so that at least eight chains of fused
/// multiply-adds are in flight: each nonzero's sum waits on the row's previous one (4 cycles
/// on Zen 4), and one row's four chains left the unit idle half the time. A row is cut into
/// strips of as equal a width as this allows: rows up to 112 wide (Xception's 9×9 planes) in
/// one pass over their nonzeros, an 18×18 plane's 324 in three of 112, 112 and 100. In
/// strips of 64 and the rest, each nonzero was read, broadcast and addressed once per strip,
/// and the rest's strip (324: 4 columns) cost a whole pass for a few lanes.
const MAX_VECTORS: usize = 7;

/// `out[r, :] = Σ_k val[k] · rhs[col[k], :]` over row `r`'s nonzeros (the contract of
/// [`super::sparse_rows_times`]).
///
/// # Safety
/// The CPU has AVX-512F; `out` holds `rows · n` values for the `rows = row_ptr.len() − 1`
/// rows of `w`, and `rhs` a row of `n` values for every column index in `w.col`.
#[target_feature(enable = "avx512f")]
pub unsafe fn rows_times(out: &mut [f32], w: SparseRows<'_>, rhs: &[f32], n: usize) {
    let rows = w.row_ptr.len() - 1;
    let nonzeros = |r: usize| {
        let (a, b) = (w.row_ptr[r], w.row_ptr[r + 1]);
        (&w.col[a..b], &w.val[a..b])
    };
    let vectors = n.div_ceil(LANES);
    let strip_width = vectors.div_ceil(vectors.div_ceil(MAX_VECTORS)) * LANES;
    for x0 in (0..n).step_by(strip_width) {
        let width = strip_width.min(n - x0);
        let strip = |row: &mut [f32]| Strip {
            out: row[x0..].as_mut_ptr(),
            rhs: rhs[x0..].as_ptr(),
            n,
            width,
        };
        let mut pairs = out[..rows * n].chunks_exact_mut(2 * n);
        for (p, pair) in pairs.by_ref().enumerate() {
            let (a, b) = pair.split_at_mut(n);
            let rows = [(strip(a), nonzeros(2 * p)), (strip(b), nonzeros(2 * p + 1))];
            // SAFETY: the strips' columns `x0..x0 + width` lie in their output rows and in
            // every right-hand row (the caller's bounds).
            unsafe { sum_rows(rows, width) };
        }
        if let Some(last) = pairs.into_remainder().get_mut(..n) {
            let rows = [(strip(last), nonzeros(rows - 1))];
            // SAFETY: as above.
            unsafe { sum_rows(rows, width) };
        }
    }
}

/// One or two rows' strips, `width` columns, over their nonzeros.
///
/// # Safety
/// As [`Strip::sum`].
#[target_feature(enable = "avx512f")]
unsafe fn sum_rows<const R: usize>(rows: [RowStrip<'_>; R], width: usize) {
    // SAFETY: passed on.
    unsafe {
        match width.div_ceil(LANES) {
            1 => Strip::sum::<R, 1>(rows),
            2 => Strip::sum::<R, 2>(rows),
            3 => Strip::sum::<R, 3>(rows),
            4 => Strip::sum::<R, 4>(rows),
            5 => Strip::sum::<R, 5>(rows),
            6 => Strip::sum::<R, 6>(rows),
            _ => Strip::sum::<R, 7>(rows),
        }
    }
}

/// A strip of an output row, and the row's nonzeros: columns and values.
type RowStrip<'a> = (Strip, (&'a [u32], &'a [f32]));

/// `width` columns of one output row (`out`), and the same columns of the right-hand side's
/// first row (`rhs`, rows `n` apart).
struct Strip {
    out: *mut f32,
    rhs: *const f32,
    n: usize,
    width: usize,
}

impl Strip {
    /// The sums of `R` rows' strips over their nonzeros, `V` vectors wide (the last under a
    /// mask): the rows' nonzeros side by side while both have some, then each one's rest.
    ///
    /// # Safety
    /// AVX-512F; each `out` is valid for `width` writes, and each `rhs` for `width` reads at
    /// `c·n` for every `c` in its row's `cols`; `V = ⌈width / 16⌉`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sum<const R: usize, const V: usize>(rows: [RowStrip<'_>; R]) {
        let width = rows[0].0.width;
        let last = first_lanes(width - (V - 1) * LANES);
        let mask = |i: usize| if i + 1 == V { last } else { 0xffff };
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        // One nonzero `(c, v)` of row `r` into its sums.
        let step = |acc: &mut [__m512; V], strip: &Strip, c: u32, v: f32| {
            let weight = _mm512_set1_ps(v);
            // SAFETY: columns below `width` of right-hand row `c` (the caller's bounds).
            let row = unsafe { strip.rhs.add(c as usize * strip.n) };
            for (i, a) in acc.iter_mut().enumerate() {
                let x = unsafe { _mm512_maskz_loadu_ps(mask(i), row.add(i * LANES)) };
                *a = _mm512_fmadd_ps(weight, x, *a);
            }
        };
        let together = rows
            .iter()
            .map(|(_, (cols, _))| cols.len())
            .min()
            .unwrap_or(0);
        for k in 0..together {
            for (a, (strip, (cols, vals))) in acc.iter_mut().zip(&rows) {
                step(a, strip, cols[k], vals[k]);
            }
        }
        for (a, (strip, (cols, vals))) in acc.iter_mut().zip(&rows) {
            for (&c, &v) in cols[together..].iter().zip(&vals[together..]) {
                step(a, strip, c, v);
            }
        }
        for (a, (strip, _)) in acc.iter().zip(&rows) {
            for (i, value) in a.iter().enumerate() {
                // SAFETY: columns below `width` of the output row.
                unsafe { _mm512_mask_storeu_ps(strip.out.add(i * LANES), mask(i), *value) };
            }
        }
    }
}
