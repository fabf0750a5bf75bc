//! The sparse (CSR) products: rows of nonzeros times a right-hand side (convolutions and batches)
//! or a vector (dense layers at batch 1), on the AVX-512 or AVX2 kernels that sum in registers
//! where the CPU has them, else the portable loops.

use super::*;

/// A block of rows of a sparse (CSR) weight matrix: row `r`'s nonzeros are
/// `val[row_ptr[r]..row_ptr[r + 1]]`, in columns `col[..]` (same range).
#[derive(Clone, Copy)]
pub struct SparseRows<'a> {
    /// One more entry than the block has rows; offsets into `col` and `val`.
    pub row_ptr: &'a [usize],
    pub col: &'a [u32],
    pub val: &'a [f32],
}

/// `out[r, :] = Σ_k val[k] · rhs[col[k], :]` over row `r`'s nonzeros, for `rhs` and `out`
/// row-major and `n` wide (`out` every element overwritten). Each nonzero adds a scaled row
/// of `rhs`, vectorised along `n`: on AVX-512 and AVX2 into a strip of the output row held in
/// registers (`sparse_avx512`, `sparse_avx2`), elsewhere into the row in memory. All give the
/// same bits where the target has fused multiply-add.
pub fn sparse_rows_times(out: &mut [f32], w: SparseRows<'_>, rhs: &[f32], n: usize) {
    if n == 0 {
        return;
    }
    let rows = w.row_ptr.len().saturating_sub(1);
    assert_eq!(
        Some(out.len()),
        rows.checked_mul(n),
        "an output row per weight row"
    );
    if rows == 0 {
        return;
    }
    assert!(
        w.row_ptr.windows(2).all(|b| b[0] <= b[1]),
        "row offsets that never decrease"
    );
    // Both slices hold every row's nonzeros (indexing panics otherwise).
    let _ = &w.val[..w.row_ptr[rows]];
    let cols = &w.col[w.row_ptr[0]..w.row_ptr[rows]];
    let depth = cols.iter().fold(0, |most, &c| most.max(c)) as usize + 1;
    assert!(
        cols.is_empty() || depth.checked_mul(n).is_some_and(|len| len <= rhs.len()),
        "a right-hand row per column"
    );
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has AVX-512F, and the bounds were checked above: every row's
        // nonzeros lie within `col` and `val` (offsets in order, the last one inside both),
        // each column's right-hand row within `rhs`, each row's output within `out`.
        return unsafe { sparse_avx512::rows_times(out, w, rhs, n) };
    }
    #[cfg(target_arch = "x86_64")]
    if own_kernel() == Some(OwnKernel::Avx2) {
        // Each nonzero loads its strip of a right-hand row at random; where the rows are not
        // whole cache lines long (81 values on Xception's 9×9 planes) half of those vector
        // loads straddle two lines. So the rows are copied first into rows of whole lines,
        // aligned, for as many rows as the nonzeros read. (Not on AVX-512, where this was
        // not measured.)
        let stride = n.next_multiple_of(crate::scratch::LINE_VALUES);
        if stride == n && rhs.as_ptr().align_offset(64) == 0 || cols.is_empty() {
            // SAFETY: the CPU has AVX2 and FMA, and the bounds were checked above.
            return unsafe { sparse_avx2::rows_times(out, w, (rhs, n), n) };
        }
        return crate::scratch::with_line_aligned_len(depth * stride, |aligned| {
            for (to, from) in aligned.chunks_exact_mut(stride).zip(rhs.chunks(n)) {
                to[..n].copy_from_slice(from);
            }
            // SAFETY: the CPU has AVX2 and FMA; the bounds were checked above, and row `c`
            // of `aligned` holds `rhs`'s row `c` for every column below `depth`.
            unsafe { sparse_avx2::rows_times(out, w, (aligned, stride), n) }
        });
    }
    sparse_rows_times_portable(out, w, rhs, n)
}

/// [`sparse_rows_times`] without AVX-512.
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
pub(super) fn sparse_rows_times_portable<'a>(
    out: &mut [f32],
    w: SparseRows<'a>,
    rhs: &[f32],
    n: usize,
) {
    if selected_target!().supports_feature_str("fma") || cfg!(target_arch = "aarch64") {
        sparse_rows_times_with::<true>(out, w, rhs, n)
    } else {
        sparse_rows_times_with::<false>(out, w, rhs, n)
    }
}

#[inline(always)]
pub(super) fn sparse_rows_times_with<const FUSED: bool>(
    out: &mut [f32],
    w: SparseRows<'_>,
    rhs: &[f32],
    n: usize,
) {
    if n == 0 {
        return;
    }
    out.fill(0.0);
    for (y, bounds) in out.chunks_exact_mut(n).zip(w.row_ptr.windows(2)) {
        for (&c, &v) in w.col[bounds[0]..bounds[1]]
            .iter()
            .zip(&w.val[bounds[0]..bounds[1]])
        {
            let x = &rhs[c as usize * n..(c as usize + 1) * n];
            for (y, &x) in y.iter_mut().zip(x) {
                *y = madd::<FUSED>(v, x, *y);
            }
        }
    }
}

/// `out[r] = Σ_k val[k] · x[col[k]]` over row `r`'s nonzeros, with four independent sums per
/// row: one running sum makes every product wait for the previous addition, which held
/// LeNet-300-100's pruned fc1 (8% kept) at the speed of its dense twin.
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
pub fn sparse_matvec<'a>(out: &mut [f32], w: SparseRows<'a>, x: &[f32]) {
    if selected_target!().supports_feature_str("fma") || cfg!(target_arch = "aarch64") {
        sparse_matvec_with::<true>(out, w, x)
    } else {
        sparse_matvec_with::<false>(out, w, x)
    }
}

#[inline(always)]
pub(super) fn sparse_matvec_with<const FUSED: bool>(out: &mut [f32], w: SparseRows<'_>, x: &[f32]) {
    for (y, bounds) in out.iter_mut().zip(w.row_ptr.windows(2)) {
        let (col, val) = (&w.col[bounds[0]..bounds[1]], &w.val[bounds[0]..bounds[1]]);
        let (c4, v4) = (col.as_chunks::<4>(), val.as_chunks::<4>());
        let mut acc = [0.0f32; 4];
        for (c, v) in c4.0.iter().zip(v4.0) {
            for j in 0..4 {
                acc[j] = madd::<FUSED>(v[j], x[c[j] as usize], acc[j]);
            }
        }
        let mut tail = 0.0f32;
        for (&c, &v) in c4.1.iter().zip(v4.1) {
            tail = madd::<FUSED>(v, x[c as usize], tail);
        }
        *y = (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail;
    }
}
