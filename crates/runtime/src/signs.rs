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
        }
    }

    /// Multiply row `r`'s result by `s[r]` (a batch norm folded into the layer).
    pub fn scale_rows(&mut self, s: &[f32]) {
        self.scale.iter_mut().zip(s).for_each(|(a, s)| *a *= s);
    }

    /// The weights as a `binary` tensor (for the popcount kernels a `sign` in front of the
    /// layer hands it to): a row's set bits hold `scale`, the others `−scale`, which is the
    /// encoding's `+α` / `−α` with `α = scale`, any folded factor included.
    pub fn to_binary(&self) -> Binary {
        let row_bytes = self.cols.div_ceil(8);
        let mut bits = vec![0u8; self.rows * row_bytes];
        for (r, out) in bits.chunks_exact_mut(row_bytes.max(1)).enumerate() {
            let row = self.row(r);
            for k in 0..self.cols {
                if row[k / 64] >> (k % 64) & 1 == 1 {
                    out[k / 8] |= 0x80 >> (k % 8);
                }
            }
        }
        Binary {
            rows: self.rows,
            cols: self.cols,
            scales: self.scale.clone(),
            bits,
        }
    }

    /// Bytes held: the bits as words and the scales.
    pub fn bytes(&self) -> u64 {
        (8 * self.bits.len() + 4 * self.scale.len()) as u64
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
/// its [`column_totals`]: each set bit adds a row of `rhs`. Compiled whole for each target,
/// so that the row additions inline (a dispatched call per 64-value row cost more than the
/// additions).
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2", "aarch64+neon"))]
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
                for (a, b) in y.iter_mut().zip(&rhs[k * n..(k + 1) * n]) {
                    *a += b;
                }
                word &= word - 1;
            }
        }
        let s = w.scale[r];
        for (a, t) in y.iter_mut().zip(totals) {
            *a = s * (2.0 * *a - t);
        }
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

/// Lanes [`masked_sum`] keeps: the sum's order is fixed by it, whatever the target. One per
/// bit of a word: on AVX-512 that is four independent vector sums, whose additions overlap
/// (one accumulator made each add wait for the one before).
const LANES: usize = 64;

/// `Σ_{k: bit k set} x[k]`, in [`LANES`] partial sums (lane `j` adds the selected `x[k]` with
/// `k % 64 == j`, in `k` order), then the lanes in order: every path gives the same bits.
fn masked_sum(bits: &[u64], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::avx512f() {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { avx512::masked_sum(bits, x) };
    }
    masked_sum_portable(bits, x)
}

/// [`masked_sum`] without intrinsics. An unselected element leaves its lane as it is (adding
/// +0 instead would turn a lane's −0 into +0), as AVX-512's masked add does.
#[multiversion(targets("x86_64+avx2", "aarch64+neon"))]
fn masked_sum_portable(bits: &[u64], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for (&word, chunk) in bits.iter().zip(x.chunks(64)) {
        for (t, &v) in chunk.iter().enumerate() {
            if (word >> t) & 1 == 1 {
                acc[t % LANES] += v;
            }
        }
    }
    lanes_total(&acc)
}

fn lanes_total(acc: &[f32; LANES]) -> f32 {
    let mut sum = 0.0f32;
    for &a in acc {
        sum += a;
    }
    sum
}

/// [`masked_sum`] on AVX-512: each sixteen bits of a word are the write mask of one masked add
/// of sixteen values into one of four accumulators, lane `j` of accumulator `q` taking element
/// `16q + j` of each word, as the portable loop's lane `16q + j` does.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{LANES, lanes_total};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) fn masked_sum(bits: &[u64], x: &[f32]) -> f32 {
        let whole = (x.len() / 64).min(bits.len());
        let mut acc = [_mm512_setzero_ps(); 4];
        for (&word, chunk) in bits[..whole].iter().zip(x.chunks_exact(64)) {
            for (q, (a, sixteen)) in acc.iter_mut().zip(chunk.chunks_exact(16)).enumerate() {
                let mask = (word >> (16 * q)) as u16;
                // SAFETY: `sixteen` is 16 f32, the 64 bytes read; loadu needs no alignment.
                let v = unsafe { _mm512_loadu_ps(sixteen.as_ptr()) };
                *a = _mm512_mask_add_ps(*a, mask, *a, v);
            }
        }
        let mut lanes = [0.0f32; LANES];
        for (a, out) in acc.iter().zip(lanes.chunks_exact_mut(16)) {
            // SAFETY: `out` is 16 f32, the 64 bytes written.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), *a) };
        }
        // A last partial word continues the same lanes in the same order (its elements start
        // at a multiple of 64, so element `k` still goes to lane `k % 64`).
        if let (Some(&word), Some(tail)) = (bits.get(whole), x.get(64 * whole..)) {
            for (t, &v) in tail.iter().take(64).enumerate() {
                if (word >> t) & 1 == 1 {
                    lanes[t % LANES] += v;
                }
            }
        }
        lanes_total(&lanes)
    }
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
            assert_eq!(
                s.to_binary().to_f32(),
                dense,
                "and give them back as binary"
            );
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
    fn every_masked_sum_path_gives_the_same_bits() {
        for n in [0, 5, 16, 64, 70, 130, 800] {
            let x = rand(n, n as u64);
            let bits: Vec<u64> = (0..n.div_ceil(64))
                .map(|j| 0x9E37_79B9_7F4A_7C15u64.rotate_left(j as u32 * 7))
                .collect();
            let want = masked_sum_portable(&bits, &x);
            assert_eq!(masked_sum(&bits, &x).to_bits(), want.to_bits(), "{n}");
            let direct: f64 = (0..n)
                .filter(|&k| bits[k / 64] >> (k % 64) & 1 == 1)
                .map(|k| x[k] as f64)
                .sum();
            assert!((want as f64 - direct).abs() < 1e-4, "{n}");
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
        assert_eq!(s.to_binary().to_f32(), s.to_dense());
        let dense = b.to_f32();
        for (r, f) in factors.iter().enumerate() {
            for k in 0..cols {
                assert_eq!(s.to_dense()[r * cols + k], dense[r * cols + k] * f);
            }
        }
    }
}
