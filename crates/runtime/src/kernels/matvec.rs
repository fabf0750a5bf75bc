//! Matrix × vector for fully connected layers at batch 1, compiled by multiversion for AVX2+FMA (or
//! NEON) and the portable baseline: four rows at a time, each over a fixed number of partial sums.

use super::*;

/// Accumulators per row in [`matvec()`]: two 8-lane AVX vectors.
pub(super) const LANES: usize = 16;

/// `out[r] = Σ_k w[r, k] · x[k]` for row-major `w` (`x.len()` wide; rows past `out.len()`
/// are not read).
///
/// Four weight rows at a time share each load of `x` and give the memory system four
/// independent streams; each row keeps `LANES` partial sums, added pairwise at the end.
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
pub fn matvec(out: &mut [f32], w: &[f32], x: &[f32]) {
    if selected_target!().supports_feature_str("fma") || cfg!(target_arch = "aarch64") {
        matvec_with::<true>(out, w, x)
    } else {
        matvec_with::<false>(out, w, x)
    }
}

#[inline(always)]
pub(super) fn matvec_with<const FUSED: bool>(out: &mut [f32], w: &[f32], x: &[f32]) {
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
pub(super) fn dot4<const FUSED: bool>(rows: [&[f32]; 4], x: &[f32]) -> [f32; 4] {
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
pub(super) fn lane_sums(acc: &[[f32; LANES]; 4]) -> [f32; 4] {
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
