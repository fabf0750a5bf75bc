//! The binary dense layer: rows of sign bits against the input's signs.

use super::conv::signs_of;
use super::popcount::WORK_PER_WORD;
use super::*;

/// Per row `first + i` of `w` into `out[i]`: `α · (cols − 2 · popcount(x XOR w))` (bits past
/// `cols` are zero in both).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vpopcntdq",
    "x86_64+avx2+popcnt",
    "x86_64+popcnt",
    "aarch64+neon"
))]
pub(super) fn sign_dots(out: &mut [f32], w: &BitRows, first: usize, signs: &[u64]) {
    for (o, y) in (first..).zip(out.iter_mut()) {
        let row = &w.bits[o * w.words..(o + 1) * w.words];
        let differ: u32 = signs
            .iter()
            .zip(row)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        *y = w.alpha[o] * (w.cols as i32 - 2 * differ as i32) as f32;
    }
}

/// `xnor_dense`: `y[o] = K · Σ_k sign(x[k]) · w[o, k] + b[o]` with `K` the mean of `|x|`.
pub fn dense(
    x: ArrayView2<'_, f32>,
    weight: &XnorWeight<'_>,
    bias: Option<&[f32]>,
    input: &SignInput,
) -> Array2<f32> {
    let mut y = Array2::<f32>::zeros((x.nrows(), weight.rows()));
    dense_into(
        x,
        weight,
        bias,
        input,
        y.as_slice_mut().expect("a fresh array is contiguous"),
    );
    y
}

/// [`dense()`] into `out` (`[n, rows]`), as a model's pass runs it: the popcount path's rows
/// split over the pass's threads.
pub fn dense_into(
    x: ArrayView2<'_, f32>,
    weight: &XnorWeight<'_>,
    bias: Option<&[f32]>,
    input: &SignInput,
    out: &mut [f32],
) {
    let (n, cols) = x.dim();
    let rows = weight.rows();
    assert_eq!(out.len(), n * rows, "one output per element");
    match weight {
        XnorWeight::Float(m) => {
            let mut signs = scratch::take::<f32>();
            signs_of(x, input, &mut signs);
            let signs_view = ArrayView2::from_shape(x.dim(), &signs[..]).expect("x's shape");
            m.mul_transposed_into(signs_view, out);
            scratch::give(signs);
        }
        XnorWeight::Bits(w) => {
            let mut signs = scratch::take::<u64>();
            for (xi, yi) in x.rows().into_iter().zip(out.chunks_exact_mut(rows.max(1))) {
                signs.clear();
                signs.resize(w.words, 0);
                for (k, &v) in xi.iter().enumerate() {
                    if v >= input.at(k) {
                        signs[k / 64] |= 1 << (k % 64);
                    }
                }
                let work = WORK_PER_WORD * w.words;
                parallel::split_rows(yi, 1, DENSE_ROW_ALIGN, work, &|first, part| {
                    sign_dots(part, w, first, &signs)
                });
            }
            scratch::give(signs);
        }
    }
    for (xi, yi) in x.rows().into_iter().zip(out.chunks_exact_mut(rows.max(1))) {
        let k = match input {
            SignInput::Scaled => xi.iter().map(|v| v.abs()).sum::<f32>() / cols as f32,
            SignInput::Thresholds(_) => 1.0,
        };
        for (o, v) in yi.iter_mut().enumerate() {
            *v = *v * k + bias.map_or(0.0, |b| b[o]);
        }
    }
}

/// Rows of a binary dense layer a split keeps together: a cache line of outputs.
pub(super) const DENSE_ROW_ALIGN: usize = 16;
