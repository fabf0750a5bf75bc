//! [`super::sparse_avx512`]'s CSR product on AVX2 with FMA: each output row's strip of
//! columns held in registers across all of the row's nonzeros, two rows at a time, in 8-lane
//! vectors. Sixteen registers hold two rows' strips of up to [`MAX_VECTORS`] vectors (12
//! accumulators), the broadcast weight and the loaded vector. The last vector of a strip is
//! loaded and stored through `vmaskmovps` where the strip ends partway.
//!
//! Each output element is the same chain of fused multiply-adds as in the portable kernel
//! (from zero, over the row's nonzeros in order), whatever the strip: the same bits.

use super::SparseRows;
use std::arch::x86_64::*;

const LANES: usize = 8;
/// The most vectors of a strip: two rows' six each fill 12 of the 16 registers. A row is cut
/// into strips of as equal a width as this allows (as on AVX-512): Xception's 9×9 planes in
/// two strips of 48 and 33 columns, its 18×18 ones in seven.
const MAX_VECTORS: usize = 6;

/// `out[r, :] = Σ_k val[k] · rhs[col[k], :]` over row `r`'s nonzeros (the contract of
/// [`super::sparse_rows_times`]), the right-hand side's rows `rhs_stride` apart.
///
/// # Safety
/// The CPU has AVX2 and FMA; `out` holds `rows · n` values for the `rows = row_ptr.len() − 1`
/// rows of `w`, and `rhs` a row of `n` values at `c · rhs_stride` for every column index `c`
/// in `w.col`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rows_times(
    out: &mut [f32],
    w: SparseRows<'_>,
    (rhs, rhs_stride): (&[f32], usize),
    n: usize,
) {
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
            rhs_stride,
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
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_rows<const R: usize>(rows: [RowStrip<'_>; R], width: usize) {
    // SAFETY: passed on.
    unsafe {
        match width.div_ceil(LANES) {
            1 => Strip::sum::<R, 1>(rows),
            2 => Strip::sum::<R, 2>(rows),
            3 => Strip::sum::<R, 3>(rows),
            4 => Strip::sum::<R, 4>(rows),
            5 => Strip::sum::<R, 5>(rows),
            _ => Strip::sum::<R, 6>(rows),
        }
    }
}

/// A strip of an output row, and the row's nonzeros: columns and values.
type RowStrip<'a> = (Strip, (&'a [u32], &'a [f32]));

/// `width` columns of one output row (`out`), and the same columns of the right-hand side's
/// first row (`rhs`, rows `rhs_stride` apart).
struct Strip {
    out: *mut f32,
    rhs: *const f32,
    rhs_stride: usize,
    width: usize,
}

impl Strip {
    /// The sums of `R` rows' strips over their nonzeros, `V` vectors wide (the last under a
    /// mask): the rows' nonzeros side by side while both have some, then each one's rest.
    ///
    /// # Safety
    /// AVX2 and FMA; each `out` is valid for `width` writes, and each `rhs` for `width` reads
    /// at `c·n` for every `c` in its row's `cols`; `V = ⌈width / 8⌉`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum<const R: usize, const V: usize>(rows: [RowStrip<'_>; R]) {
        let width = rows[0].0.width;
        // The last vector's lanes, where the strip ends partway through it.
        let tail = width - (V - 1) * LANES;
        let partial = tail < LANES;
        let last = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(tail as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        // One nonzero `(c, v)` of row `r` into its sums.
        let step = |acc: &mut [__m256; V], strip: &Strip, c: u32, v: f32| {
            let weight = _mm256_set1_ps(v);
            // SAFETY: columns below `width` of right-hand row `c` (the caller's bounds).
            let row = unsafe { strip.rhs.add(c as usize * strip.rhs_stride) };
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: as above; a partial last vector reads only its lanes.
                let x = unsafe {
                    if partial && i + 1 == V {
                        _mm256_maskload_ps(row.add(i * LANES), last)
                    } else {
                        _mm256_loadu_ps(row.add(i * LANES))
                    }
                };
                *a = _mm256_fmadd_ps(weight, x, *a);
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
                unsafe {
                    let at = strip.out.add(i * LANES);
                    if partial && i + 1 == V {
                        _mm256_maskstore_ps(at, last, *value)
                    } else {
                        _mm256_storeu_ps(at, *value)
                    }
                }
            }
        }
    }
}
