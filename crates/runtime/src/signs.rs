//! The `sign` op (spec §7), and products with binary weights in real-valued layers (BWN:
//! `conv2d` and `dense` whose weights are stored `binary`, spec §5.11): every weight is `±α` of
//! its row, so a row's product with a vector needs no multiplication but the final one by `α`:
//!
//! `Σ_k w[r,k]·x[k] = α_r · (Σ_{k: w>0} x[k] − Σ_{k: w<0} x[k]) = α_r · (2·Σ_{k∈S} x[k] − Σ_k x[k])`
//!
//! with `S` the positive weights. The column total `Σ_k x[k]` is shared by every row, so each
//! row costs one add per element of `S`; a row with more positive than negative weights sums
//! the negative ones instead (`total − 2·Σ_{k∉S} x[k]`, with `α` negated), so no row adds more
//! than half its columns. The weights are read as bits: 1/32 of their f32 bytes.
//!
//! Every row's result depends only on its bits, `α` and the input, never on how rows are split
//! over threads: the runtime's results are the same bits for every thread count.

use cxrm_format::encoding::binary::Binary;
use multiversion::multiversion;

/// A binary weight matrix as sign bits, one row per output, 64 columns per word (column `k` is
/// bit `k % 64` of word `k / 64`). Each row keeps the side with fewer weights: `bits` are the
/// positive weights, or the negative ones where those are fewer (`scale` is then `−α`).
#[derive(Debug, Clone, PartialEq)]
pub struct SignRows {
    pub rows: usize,
    pub cols: usize,
    words: usize,
    bits: Vec<u64>,
    /// Per row, `±α`: `y = scale · (2·Σ_{k∈bits} x[k] − Σ_k x[k])`.
    scale: Vec<f32>,
    /// The weights as stored (with any folded scale), for the popcount kernels a `sign` in
    /// front of the layer hands it to.
    binary: Binary,
}

impl SignRows {
    /// From a `binary` tensor (rows byte-aligned, most significant bit first).
    pub fn from_binary(b: &Binary) -> SignRows {
        let words = b.cols.div_ceil(64);
        let mut bits = vec![0u64; b.rows * words];
        let mut scale = Vec::with_capacity(b.rows);
        for r in 0..b.rows {
            let row = &mut bits[r * words..(r + 1) * words];
            let mut positive = 0;
            for (k, sign) in b.row_signs(r).enumerate() {
                if sign {
                    row[k / 64] |= 1 << (k % 64);
                    positive += 1;
                }
            }
            let alpha = b.scales[r];
            if 2 * positive > b.cols {
                // Keep the negative weights: fewer adds.
                for (j, word) in row.iter_mut().enumerate() {
                    *word = !*word & valid_bits(b.cols, j);
                }
                scale.push(-alpha);
            } else {
                scale.push(alpha);
            }
        }
        SignRows {
            rows: b.rows,
            cols: b.cols,
            words,
            bits,
            scale,
            binary: b.clone(),
        }
    }

    /// Multiply row `r`'s result by `s[r]` (a batch norm folded into the layer).
    pub fn scale_rows(&mut self, s: &[f32]) {
        self.scale.iter_mut().zip(s).for_each(|(a, s)| *a *= s);
        self.binary
            .scales
            .iter_mut()
            .zip(s)
            .for_each(|(a, s)| *a *= s);
    }

    /// The weights as a `binary` tensor: signs and a scale per row.
    pub fn binary(&self) -> &Binary {
        &self.binary
    }

    /// Bytes held: the bits twice (as stored and as words) and the scales.
    pub fn bytes(&self) -> u64 {
        (8 * self.bits.len() + self.binary.bits.len() + 8 * self.scale.len()) as u64
    }

    /// The dense weights, `±α` per row.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            let row = &self.bits[r * self.words..(r + 1) * self.words];
            let s = self.scale[r];
            out.extend((0..self.cols).map(|k| {
                if row[k / 64] >> (k % 64) & 1 == 1 {
                    s
                } else {
                    -s
                }
            }));
        }
        out
    }

    fn row(&self, r: usize) -> &[u64] {
        &self.bits[r * self.words..(r + 1) * self.words]
    }
}

/// The bits of word `j` that hold one of `cols` columns.
fn valid_bits(cols: usize, j: usize) -> u64 {
    let n = cols.saturating_sub(64 * j).min(64);
    if n == 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// `Σ_k rhs[k, :]` for `rhs` of `cols` rows, `n` wide: the column totals every row shares.
pub fn column_totals(rhs: &[f32], n: usize) -> Vec<f32> {
    let mut total = vec![0.0f32; n];
    for row in rhs.chunks_exact(n.max(1)) {
        add_row(&mut total, row);
    }
    total
}

/// `out[i, :] = w[first + i, :] · rhs` for `rhs` of `w.cols` rows, `n` wide, and `totals`
/// its [`column_totals`]: each set bit adds a row of `rhs`.
pub fn rows_times(
    out: &mut [f32],
    w: &SignRows,
    first: usize,
    rhs: &[f32],
    n: usize,
    totals: &[f32],
) {
    for (i, y) in out.chunks_exact_mut(n.max(1)).enumerate() {
        let r = first + i;
        y.iter_mut().for_each(|v| *v = 0.0);
        for (j, &word) in w.row(r).iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let k = 64 * j + word.trailing_zeros() as usize;
                add_row(y, &rhs[k * n..(k + 1) * n]);
                word &= word - 1;
            }
        }
        finish_row(y, totals, w.scale[r]);
    }
}

/// `out[i] = w[first + i, :] · x` for one vector `x` whose sum is `total`.
pub fn rows_dot(out: &mut [f32], w: &SignRows, first: usize, x: &[f32], total: f32) {
    for (i, y) in out.iter_mut().enumerate() {
        let r = first + i;
        let selected = masked_sum(w.row(r), x);
        *y = w.scale[r] * (2.0 * selected - total);
    }
}

/// `y += x`, element by element.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2", "aarch64+neon"))]
fn add_row(y: &mut [f32], x: &[f32]) {
    for (a, b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

/// `y = s · (2y − totals)`.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2", "aarch64+neon"))]
fn finish_row(y: &mut [f32], totals: &[f32], s: f32) {
    for (a, t) in y.iter_mut().zip(totals) {
        *a = s * (2.0 * *a - t);
    }
}

/// Lanes [`masked_sum`] keeps: the sum's order is fixed by it, whatever the target.
const LANES: usize = 16;

/// `Σ_{k: bit k set} x[k]`. Each bit becomes an all-ones or all-zeros mask on the value's bits,
/// so the selection is an AND and the sum is adds only; 16 lanes, added up in a fixed order.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2", "aarch64+neon"))]
fn masked_sum(bits: &[u64], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for (&word, chunk) in bits.iter().zip(x.chunks(64)) {
        for (t, &v) in chunk.iter().enumerate() {
            let keep = ((word >> t) & 1) as u32;
            acc[t % LANES] += f32::from_bits(v.to_bits() & keep.wrapping_neg());
        }
    }
    let mut sum = 0.0f32;
    for a in acc {
        sum += a;
    }
    sum
}

/// `sign` (spec §7) over one image's values: `+1` where `x ≥ τ`, else `−1` (NaN included),
/// `τ` the element of `threshold` for the value's channel (a map's channel, whose plane is
/// `x.len() / threshold.len()` values, or a vector's element), or 0.
pub fn sign_in_place(x: &mut [f32], threshold: Option<&[f32]>) {
    let sign = |v: f32, t: f32| if v >= t { 1.0 } else { -1.0 };
    match threshold {
        None => x.iter_mut().for_each(|v| *v = sign(*v, 0.0)),
        Some(t) => {
            let plane = (x.len() / t.len().max(1)).max(1);
            for (channel, &t) in x.chunks_exact_mut(plane).zip(t) {
                channel.iter_mut().for_each(|v| *v = sign(*v, t));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxrm_format::dtype::DType;
    use cxrm_format::encoding::binary::binarize;
    use cxrm_format::testing::uniform as rand;

    /// `Σ_k w[r,k]·rhs[k,j]` in f64 from the dense weights.
    fn reference(w: &[f32], rows: usize, cols: usize, rhs: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; rows * n];
        for r in 0..rows {
            for j in 0..n {
                let s: f64 = (0..cols)
                    .map(|k| w[r * cols + k] as f64 * rhs[k * n + j] as f64)
                    .sum();
                out[r * n + j] = s as f32;
            }
        }
        out
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what} {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn products_match_the_dense_weights() {
        // Column counts below, at and past a word; rows leaning positive and negative.
        for (case, &(rows, cols, n)) in [(3, 5, 4), (7, 64, 3), (5, 130, 17), (2, 500, 64)]
            .iter()
            .enumerate()
        {
            let seed = case as u64;
            let mut w = rand(rows * cols, seed);
            // Row 0 mostly positive, row 1 mostly negative: both sides of the choice.
            for k in 0..cols {
                w[k] = w[k].abs() + 0.01 * (k % 3 == 0) as i32 as f32;
                w[cols + k] = -w[cols + k].abs();
            }
            let b = binarize(&w, rows, cols, DType::F32);
            let dense = b.to_f32();
            let s = SignRows::from_binary(&b);
            assert_eq!(s.to_dense(), dense, "the bits hold the weights exactly");
            let rhs = rand(cols * n, 50 + seed);
            let totals = column_totals(&rhs, n);
            let mut out = vec![f32::NAN; rows * n];
            rows_times(&mut out, &s, 0, &rhs, n, &totals);
            close(&out, &reference(&dense, rows, cols, &rhs, n), "rows_times");
            let x = &rhs[..cols];
            let total: f32 = column_totals(x, 1)[0];
            let mut y = vec![f32::NAN; rows];
            rows_dot(&mut y, &s, 0, x, total);
            close(&y, &reference(&dense, rows, cols, x, 1), "rows_dot");
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_whatever_the_split() {
        let (rows, cols, n) = (9, 200, 6);
        let b = binarize(&rand(rows * cols, 3), rows, cols, DType::F32);
        let s = SignRows::from_binary(&b);
        let rhs = rand(cols * n, 4);
        let totals = column_totals(&rhs, n);
        let mut whole = vec![0.0; rows * n];
        rows_times(&mut whole, &s, 0, &rhs, n, &totals);
        for split in 1..rows {
            let mut parts = vec![0.0; rows * n];
            let (a, b) = parts.split_at_mut(split * n);
            rows_times(a, &s, 0, &rhs, n, &totals);
            rows_times(b, &s, split, &rhs, n, &totals);
            assert_eq!(parts, whole, "split at row {split}");
        }
    }

    #[test]
    fn folded_scales_multiply_each_row() {
        let (rows, cols) = (4, 70);
        let b = binarize(&rand(rows * cols, 8), rows, cols, DType::F32);
        let mut s = SignRows::from_binary(&b);
        let factors = [2.0, -0.5, 1.0, 0.0];
        s.scale_rows(&factors);
        let dense = b.to_f32();
        for (r, f) in factors.iter().enumerate() {
            for k in 0..cols {
                assert_eq!(s.to_dense()[r * cols + k], dense[r * cols + k] * f);
            }
        }
    }
}
