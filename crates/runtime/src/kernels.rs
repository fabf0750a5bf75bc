//! The dense inner loops: matrix × matrix for convolutions ([`rows_times`]) and matrix × vector
//! for fully connected layers at batch 1 ([`matvec`]).
//!
//! Both read the weights in place (row-major, as the file stores them) and are compiled twice
//! by multiversion: for AVX2+FMA (or NEON) and for the portable baseline, chosen once at run
//! time. Where the selected target has fused multiply-add the products are fused: LLVM never
//! contracts `a * b + c` by itself, and a separate multiply and add halves the rate of a
//! latency-bound accumulation. Without FMA they stay a multiply and an add, since
//! a software `fma` would be slower than the whole layer.

use multiversion::{multiversion, target::selected_target};

/// Output columns a register block holds: two 8-lane AVX vectors.
const LANES: usize = 16;
/// Output rows a register block holds. 6 × 16 accumulators are 12 of AVX2's 16 vector
/// registers, leaving room for two input vectors and a broadcast weight; with 4 rows (8
/// accumulators) every fused multiply-add waited on the previous one's four-cycle latency.
pub const ROWS: usize = 6;

/// `a · b + c`, fused where the target can.
#[inline(always)]
fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

/// `out[r, :] = Σ_k w[r, k] · rhs[k, :]` for row-major `w` (`cols` wide; rows past `out`'s are
/// not read), `rhs` (`n` wide) and `out` (`n` wide, every element overwritten).
///
/// Blocks of [`ROWS`] output rows × [`LANES`] columns are accumulated in registers over all of
/// `k` and written once. Each block's weights are first copied `k`-major into a small buffer,
/// so the inner loop reads them contiguously and without bounds checks. Every element sums its
/// products in `k` order.
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
pub fn rows_times(out: &mut [f32], w: &[f32], cols: usize, rhs: &[f32], n: usize) {
    if selected_target!().supports_feature_str("fma") || cfg!(target_arch = "aarch64") {
        rows_times_with::<true>(out, w, cols, rhs, n)
    } else {
        rows_times_with::<false>(out, w, cols, rhs, n)
    }
}

#[inline(always)]
fn rows_times_with<const FUSED: bool>(
    out: &mut [f32],
    w: &[f32],
    cols: usize,
    rhs: &[f32],
    n: usize,
) {
    if n == 0 {
        return;
    }
    if cols == 0 {
        out.fill(0.0);
        return;
    }
    let rhs = &rhs[..cols * n];
    let mut packed = vec![[0.0f32; ROWS]; cols];
    for (out_rows, w_rows) in out.chunks_mut(ROWS * n).zip(w.chunks(ROWS * cols)) {
        let rows = out_rows.len() / n;
        for (k, p) in packed.iter_mut().enumerate() {
            for (r, v) in p.iter_mut().enumerate().take(rows) {
                *v = w_rows[r * cols + k];
            }
        }
        // One instantiation per row count, so each keeps its accumulators in registers.
        match rows {
            6 => row_block::<6, FUSED>(out_rows, &packed, rhs, n),
            5 => row_block::<5, FUSED>(out_rows, &packed, rhs, n),
            4 => row_block::<4, FUSED>(out_rows, &packed, rhs, n),
            3 => row_block::<3, FUSED>(out_rows, &packed, rhs, n),
            2 => row_block::<2, FUSED>(out_rows, &packed, rhs, n),
            _ => row_block::<1, FUSED>(out_rows, &packed, rhs, n),
        }
    }
}

/// `R` output rows: full [`LANES`]-wide column blocks, then the columns left over through a
/// zero-padded copy of each input row's tail.
#[inline(always)]
fn row_block<const R: usize, const FUSED: bool>(
    out: &mut [f32],
    packed: &[[f32; ROWS]],
    rhs: &[f32],
    n: usize,
) {
    let full = n - n % LANES;
    for j in (0..full).step_by(LANES) {
        let mut acc = [[0.0f32; LANES]; R];
        for (wk, row) in packed.iter().zip(rhs.chunks_exact(n)) {
            let x: &[f32; LANES] = row[j..j + LANES].try_into().expect("LANES wide");
            for r in 0..R {
                for l in 0..LANES {
                    acc[r][l] = madd::<FUSED>(wk[r], x[l], acc[r][l]);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            out[r * n + j..r * n + j + LANES].copy_from_slice(a);
        }
    }
    if full < n {
        let tail = n - full;
        let mut acc = [[0.0f32; LANES]; R];
        for (wk, row) in packed.iter().zip(rhs.chunks_exact(n)) {
            let mut x = [0.0f32; LANES];
            x[..tail].copy_from_slice(&row[full..]);
            for r in 0..R {
                for l in 0..LANES {
                    acc[r][l] = madd::<FUSED>(wk[r], x[l], acc[r][l]);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            out[r * n + full..(r + 1) * n].copy_from_slice(&a[..tail]);
        }
    }
}

/// `out[r] = Σ_k w[r, k] · x[k]` for row-major `w` (`x.len()` wide; rows past `out.len()`
/// are not read).
///
/// Four weight rows at a time share each load of `x` and give the memory system four
/// independent streams; each row keeps [`LANES`] partial sums, added pairwise at the end.
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
pub fn matvec(out: &mut [f32], w: &[f32], x: &[f32]) {
    if selected_target!().supports_feature_str("fma") || cfg!(target_arch = "aarch64") {
        matvec_with::<true>(out, w, x)
    } else {
        matvec_with::<false>(out, w, x)
    }
}

#[inline(always)]
fn matvec_with<const FUSED: bool>(out: &mut [f32], w: &[f32], x: &[f32]) {
    let cols = x.len();
    if cols == 0 {
        out.fill(0.0);
        return;
    }
    let w = &w[..out.len() * cols];
    let mut blocks = out.chunks_exact_mut(4);
    let mut w_blocks = w.chunks_exact(4 * cols);
    for (y, wb) in (&mut blocks).zip(&mut w_blocks) {
        let (w01, w23) = wb.split_at(2 * cols);
        let (w0, w1) = w01.split_at(cols);
        let (w2, w3) = w23.split_at(cols);
        y.copy_from_slice(&dot4::<FUSED>([w0, w1, w2, w3], x));
    }
    for (y, row) in blocks
        .into_remainder()
        .iter_mut()
        .zip(w_blocks.remainder().chunks_exact(cols))
    {
        *y = dot4::<FUSED>([row, row, row, row], x)[0];
    }
}

/// Four dot products with `x` at once, each over [`LANES`] partial sums. The rows are walked
/// by one zipped iterator: indexed as `rows[r][k]`, LLVM kept the bounds checks, did not unroll
/// over `r`, and left the sums in memory, a lane at a time.
#[inline(always)]
fn dot4<const FUSED: bool>(rows: [&[f32]; 4], x: &[f32]) -> [f32; 4] {
    let (x_blocks, x_tail) = x.as_chunks::<LANES>();
    let [b0, b1, b2, b3] = [rows[0], rows[1], rows[2], rows[3]].map(<[f32]>::as_chunks::<LANES>);
    let [b0, b1, b2, b3] = [b0.0, b1.0, b2.0, b3.0];
    let mut acc = [[0.0f32; LANES]; 4];
    for ((((xs, w0), w1), w2), w3) in x_blocks.iter().zip(b0).zip(b1).zip(b2).zip(b3) {
        for (a, ws) in acc.iter_mut().zip([w0, w1, w2, w3]) {
            for l in 0..LANES {
                a[l] = madd::<FUSED>(ws[l], xs[l], a[l]);
            }
        }
    }
    // The tails in plain loops, not closures: a closure is compiled outside the target-feature
    // clone, with SSE2 only, where a fused multiply-add is a call into libm's `fmaf`.
    let mut tails = [0.0f32; 4];
    for (tail, row) in tails.iter_mut().zip(rows) {
        for (&w, &v) in row[x.len() - x_tail.len()..].iter().zip(x_tail) {
            *tail = madd::<FUSED>(w, v, *tail);
        }
    }
    let mut sums = lane_sums(&acc);
    for (s, t) in sums.iter_mut().zip(tails) {
        *s += t;
    }
    sums
}

/// Each row's [`LANES`] partial sums, added as a fixed pairwise tree (the same on every
/// target). Kept out of line: inlined, it led LLVM to abandon the vectorised main loop.
#[inline(never)]
fn lane_sums(acc: &[[f32; LANES]; 4]) -> [f32; 4] {
    let mut sums = [0.0f32; 4];
    for (sum, a) in sums.iter_mut().zip(acc) {
        let mut a = *a;
        let mut width = LANES / 2;
        while width > 0 {
            for l in 0..width {
                a[l] += a[l + width];
            }
            width /= 2;
        }
        *sum = a[0];
    }
    sums
}

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
/// of `rhs`, vectorised along `n`.
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
pub fn sparse_rows_times<'a>(out: &mut [f32], w: SparseRows<'a>, rhs: &[f32], n: usize) {
    if selected_target!().supports_feature_str("fma") || cfg!(target_arch = "aarch64") {
        sparse_rows_times_with::<true>(out, w, rhs, n)
    } else {
        sparse_rows_times_with::<false>(out, w, rhs, n)
    }
}

#[inline(always)]
fn sparse_rows_times_with<const FUSED: bool>(
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
fn sparse_matvec_with<const FUSED: bool>(out: &mut [f32], w: SparseRows<'_>, x: &[f32]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use cxrm_format::testing::uniform;

    fn close(got: &[f32], want: &[f64], cols: usize) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            // Each output sums `cols` products of values in [-0.5, 0.5).
            let tol = 1e-6 * (cols as f64).max(1.0);
            assert!((*g as f64 - w).abs() <= tol, "{g} vs {w}");
        }
    }

    /// `w[rows, :] · rhs` in f64, the plain loop: `w` is `cols` wide, `rhs` is `n` wide (a
    /// vector when `n` is 1).
    fn plain(
        w: &[f32],
        cols: usize,
        rhs: &[f32],
        n: usize,
        rows: std::ops::Range<usize>,
    ) -> Vec<f64> {
        rows.flat_map(|r| {
            (0..n).map(move |j| {
                (0..cols)
                    .map(|k| w[r * cols + k] as f64 * rhs[k * n + j] as f64)
                    .sum()
            })
        })
        .collect()
    }

    #[test]
    fn rows_times_matches_the_plain_loop_for_every_block_shape() {
        // Row counts around the 6-row block, columns around the 16-lane block.
        for rows in [1, 2, 5, 6, 7, 13, 50] {
            for n in [1, 3, 15, 16, 17, 40, 64] {
                for cols in [0, 1, 9, 25] {
                    let w = uniform(rows * cols, (rows * 100 + n) as u64);
                    let rhs = uniform(cols * n, (cols * 1000 + n) as u64);
                    let mut out = vec![f32::NAN; rows * n];
                    rows_times(&mut out, &w, cols, &rhs, n);
                    close(&out, &plain(&w, cols, &rhs, n, 0..rows), cols);
                }
            }
        }
    }

    #[test]
    fn matvec_matches_the_plain_loop_for_every_block_shape() {
        for rows in [1, 3, 4, 5, 10] {
            for cols in [0, 1, 15, 16, 17, 33, 800] {
                let w = uniform(rows * cols, rows as u64);
                let x = uniform(cols, cols as u64 + 99);
                let mut out = vec![f32::NAN; rows];
                matvec(&mut out, &w, &x);
                close(&out, &plain(&w, cols, &x, 1, 0..rows), cols);
            }
        }
    }

    #[test]
    fn sparse_kernels_match_the_plain_loop_on_any_block_of_rows() {
        let (rows, cols, n) = (9, 37, 21);
        let mut w = uniform(rows * cols, 5);
        w.iter_mut().step_by(3).for_each(|v| *v = 0.0);
        let (mut row_ptr, mut col, mut val) = (vec![0], vec![], vec![]);
        for r in 0..rows {
            for c in 0..cols {
                if w[r * cols + c] != 0.0 {
                    col.push(c as u32);
                    val.push(w[r * cols + c]);
                }
            }
            row_ptr.push(col.len());
        }
        let rhs = uniform(cols * n, 6);
        let x = uniform(cols, 7);
        // Rows 2..8 only, as a split hands them to a thread.
        let block = SparseRows {
            row_ptr: &row_ptr[2..9],
            col: &col,
            val: &val,
        };
        let mut out = vec![f32::NAN; 6 * n];
        sparse_rows_times(&mut out, block, &rhs, n);
        close(&out, &plain(&w, cols, &rhs, n, 2..8), cols);
        let mut y = vec![f32::NAN; 6];
        sparse_matvec(&mut y, block, &x);
        close(&y, &plain(&w, cols, &x, 1, 2..8), cols);
    }
}
