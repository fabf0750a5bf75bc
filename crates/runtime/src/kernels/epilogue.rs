//! What a product does to each output row once its sum is complete: the row's bias, then the
//! activation, fused into the own kernels' stores or run as a pass.

use super::*;

/// An activation applied to a convolution's output as it is written (a `relu` or `relu6`
/// layer that was the only reader of the convolution, fused at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    #[default]
    None,
    Relu,
    Relu6,
}

/// What a product does to each output row once its sum is complete: add the row's bias, then
/// apply the activation. The same operations in the same order as a bias pass followed by an
/// activation layer ([`finish_rows`]), so the same values; the own kernels apply them to
/// their registers before the store, saving a pass over the output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// One value per output row of the product, from its first.
    pub bias: Option<&'a [f32]>,
    pub activation: Activation,
}

impl<'a> Epilogue<'a> {
    /// Nothing to do.
    pub fn is_none(&self) -> bool {
        self.bias.is_none() && self.activation == Activation::None
    }

    /// The epilogue of the rows from `first` on.
    pub fn from_row(&self, first: usize) -> Epilogue<'a> {
        Epilogue {
            bias: self.bias.map(|b| &b[first..]),
            activation: self.activation,
        }
    }
}

/// [`Epilogue`] as a pass over `rows` output rows `n` wide, `stride` apart.
pub fn finish_rows(out: &mut [f32], stride: usize, rows: usize, n: usize, epilogue: Epilogue<'_>) {
    if epilogue.is_none() {
        return;
    }
    for r in 0..rows {
        let bias = epilogue.bias.map(|b| b[r]);
        finish_row(
            &mut out[r * stride..r * stride + n],
            bias,
            epilogue.activation,
        );
    }
}

/// One row of [`finish_rows`], compiled for AVX-512 and AVX2: in the baseline's four lanes, a
/// bias pass and an activation pass were 16% of MobileNetV2's time.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2", "aarch64+neon"))]
pub(super) fn finish_row(row: &mut [f32], bias: Option<f32>, activation: Activation) {
    // One loop per case, so that each is a plain elementwise loop to vectorise.
    match (bias, activation) {
        (None, Activation::None) => {}
        (Some(b), Activation::None) => row.iter_mut().for_each(|v| *v += b),
        (Some(b), Activation::Relu) => row.iter_mut().for_each(|v| *v = (*v + b).max(0.0)),
        (Some(b), Activation::Relu6) => row.iter_mut().for_each(|v| *v = (*v + b).clamp(0.0, 6.0)),
        (None, Activation::Relu) => row.iter_mut().for_each(|v| *v = v.max(0.0)),
        (None, Activation::Relu6) => row.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
    }
}

/// `row[j] += residual[j]`, compiled for AVX-512 and AVX2 as `finish_row` is.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2", "aarch64+neon"))]
pub fn add_to_row(row: &mut [f32], residual: &[f32]) {
    assert_eq!(row.len(), residual.len(), "a residual of the row's length");
    row.iter_mut().zip(residual).for_each(|(v, r)| *v += r);
}
