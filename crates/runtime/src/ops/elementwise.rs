//! Layers that map values one by one or pair them (activations, per-channel and broadcast
//! arithmetic), padding and softmax.

use super::*;

/// `1 / (1 + e^−x)`.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `x · min(max(x + 3, 0), 6) / 6`.
pub fn hard_swish(x: f32) -> f32 {
    x * (x + 3.0).clamp(0.0, 6.0) / 6.0
}

/// `a × b` element-wise, or each channel of `a` (`[n, c, h, w]`) times `b[n, c]`.
pub fn mul(
    a: &ndarray::ArrayViewD<'_, f32>,
    b: &ndarray::ArrayViewD<'_, f32>,
) -> ndarray::ArrayD<f32> {
    if a.shape() == b.shape() {
        return a * b;
    }
    let (n, c) = (b.shape()[0], b.shape()[1]);
    let scale = b
        .view()
        .into_shape_with_order(ndarray::IxDyn(&[n, c, 1, 1]))
        .expect("a [n, c] scale");
    a * &scale
}

/// One side of an element-wise operation written into `out`: `out` itself (the operation
/// runs in place, over a value nothing reads afterwards), or another slice of `out`'s length.
#[derive(Clone, Copy)]
pub enum Operand<'s> {
    Out,
    Values(&'s [f32]),
}

/// What one value of an element-wise layer counts as, in multiply-adds, when the threads
/// decide whether to split it: a value read, another read or not, and one written take
/// about as long as eight multiply-adds of a product. So a layer of 16K values or more is
/// split between two threads, each part about as large as a product's smallest part.
pub(super) const ELEMENT_WORK: usize = 8;

/// `f(at, part)` over `out` in parts of whole `row_len`-value rows, split over the threads
/// where the layer is large enough (`ELEMENT_WORK`); `at` is the part's first value. Each
/// thread then reads back the values it has just written: a layer that follows a split
/// product runs on the cores that hold its halves. (Run on one thread, MobileNetV2's adds
/// took twice as long at two threads as at one, reading the other core's half.)
pub fn split_elements(out: &mut [f32], row_len: usize, f: &(impl Fn(usize, &mut [f32]) + Sync)) {
    let row_len = if row_len > 0 && out.len().is_multiple_of(row_len) {
        row_len
    } else {
        out.len().max(1)
    };
    parallel::split_rows(out, row_len, 1, row_len * ELEMENT_WORK, &|first, part| {
        f(first * row_len, part)
    })
}

/// `out[k] = f(a[k], b[k])`, or with `per_channel`, `out[k] = f(a[k], b[k / plane])` where
/// `b` has one value per plane of `plane` values. The operands keep their order (`a` first),
/// so the bits are those of `a + b` or `a * b` on arrays. Without `per_channel` the values
/// are split over the threads in rows of `row_len` ([`split_elements`]).
pub fn binary_into(
    out: &mut [f32],
    a: Operand<'_>,
    b: Operand<'_>,
    (per_channel, row_len): (Option<usize>, usize),
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    fn part_of(operand: Operand<'_>, at: usize, len: usize) -> Operand<'_> {
        match operand {
            Operand::Out => Operand::Out,
            Operand::Values(v) => Operand::Values(&v[at..at + len]),
        }
    }
    match per_channel {
        None => split_elements(out, row_len, &|at, part| {
            let len = part.len();
            binary_part(part, part_of(a, at, len), part_of(b, at, len), &f)
        }),
        Some(plane) => binary_per_channel(out, a, b, plane, f),
    }
}

/// [`binary_into`] on one part: `out[k] = f(a[k], b[k])`.
pub(super) fn binary_part(
    out: &mut [f32],
    a: Operand<'_>,
    b: Operand<'_>,
    f: &impl Fn(f32, f32) -> f32,
) {
    match (a, b) {
        (Operand::Out, Operand::Out) => out.iter_mut().for_each(|o| *o = f(*o, *o)),
        (Operand::Out, Operand::Values(b)) => {
            out.iter_mut().zip(b).for_each(|(o, &b)| *o = f(*o, b))
        }
        (Operand::Values(a), Operand::Out) => {
            out.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a, *o))
        }
        (Operand::Values(a), Operand::Values(b)) => out
            .iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(o, (&a, &b))| *o = f(a, b)),
    }
}

/// [`binary_into`] with one `b` per plane of `plane` values.
pub(super) fn binary_per_channel(
    out: &mut [f32],
    a: Operand<'_>,
    b: Operand<'_>,
    plane: usize,
    f: impl Fn(f32, f32) -> f32,
) {
    match (a, b) {
        (Operand::Out, Operand::Values(b)) => {
            for (o, &b) in out.chunks_exact_mut(plane.max(1)).zip(b) {
                o.iter_mut().for_each(|o| *o = f(*o, b));
            }
        }
        (Operand::Values(a), Operand::Values(b)) => {
            for ((o, a), &b) in out
                .chunks_exact_mut(plane.max(1))
                .zip(a.chunks_exact(plane.max(1)))
                .zip(b)
            {
                o.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a, b));
            }
        }
        (_, Operand::Out) => unreachable!("a per-channel scale is never the output"),
    }
}

/// `[n, c, h, w]` with zeros around each plane: `padding` is top, left, bottom, right.
pub fn pad(x: ArrayView4<'_, f32>, padding: [usize; 4]) -> Array4<f32> {
    let (n, c, h, w) = x.dim();
    let [t, l, b, r] = padding;
    let mut out = Array4::<f32>::zeros((n, c, h + t + b, w + l + r));
    pad_into(
        x,
        padding,
        out.as_slice_mut().expect("a fresh array is contiguous"),
    );
    out
}

/// [`pad`] written into `out` (`[n, c, h + t + b, w + l + r]` row-major, whatever it held).
pub fn pad_into(x: ArrayView4<'_, f32>, padding: [usize; 4], out: &mut [f32]) {
    let (n, c, h, w) = x.dim();
    let [t, l, b, r] = padding;
    out.fill(0.0);
    let mut out = ndarray::ArrayViewMut4::from_shape((n, c, h + t + b, w + l + r), out)
        .expect("an output of the padded shape");
    out.slice_mut(s![.., .., t..t + h, l..l + w]).assign(&x);
}

/// Softmax over the last axis of `[n, k]`.
pub fn softmax(x: &mut Array2<f32>) {
    softmax_rows(x.view_mut())
}

/// [`softmax`] on a view: each row in place.
pub fn softmax_rows(mut x: ndarray::ArrayViewMut2<'_, f32>) {
    for mut row in x.axis_iter_mut(Axis(0)) {
        let m = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_hard_swish_and_channel_scaling_follow_the_spec() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) as f64 - 1.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-7);
        assert_eq!(hard_swish(-4.0), -0.0);
        assert_eq!(hard_swish(1.0), 1.0 * 4.0 / 6.0);
        assert_eq!(hard_swish(5.0), 5.0);
        let a = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[1, 2, 1, 2]), |i| {
            (i[1] * 2 + i[3] + 1) as f32
        });
        let b =
            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 2]), vec![10.0, 100.0]).unwrap();
        let y = mul(&a.view(), &b.view());
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            [10.0, 20.0, 300.0, 400.0]
        );
        assert_eq!(mul(&a.view(), &a.view())[[0, 1, 0, 1]], 16.0);
    }

    #[test]
    fn pad_surrounds_each_plane_with_zeros() {
        let x = Array4::from_shape_fn((1, 2, 2, 2), |(_, c, y, x)| (c * 4 + y * 2 + x + 1) as f32);
        let y = pad(x.view(), [1, 0, 0, 2]);
        assert_eq!(y.dim(), (1, 2, 3, 4));
        assert_eq!(
            y.slice(s![0, 1, .., ..])
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            [0., 0., 0., 0., 5., 6., 0., 0., 7., 8., 0., 0.]
        );
    }
}
