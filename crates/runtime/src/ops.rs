//! Operator kernels on NCHW `f32` tensors. Convolutions are products ([`kernels::product`]):
//! a 1×1 convolution with stride 1 multiplies the input as it lies, a stride-1 convolution on
//! AVX-512 packs shifted rows of zero-padded bands ([`kernels::shifted_product`]), others go
//! through im2col tiles; depthwise convolutions get a direct kernel (`crate::depthwise`).
//! Weight matrices can be sparse (CSR), in which case the product walks only the surviving
//! weights, or a product of factors (low-rank and Tucker layers), which is applied one thin
//! factor at a time.
//!
//! The operators by kind: `matrix` (weight matrices, their products and dense layers), `conv`,
//! `pool` and `elementwise`; each module keeps its tests.

use super::signs::{self, SignRows};
use super::{kernels, parallel, scratch};
pub use crate::depthwise::{Path as DepthwiseKernel, depthwise_general, depthwise_through};
pub use crate::kernels::Activation;
use crate::kernels::Epilogue;
use crate::winograd::{self, WinogradWeights};
use ndarray::{Array2, Array4, ArrayView2, ArrayView4, Axis, s};

// The operators' modules import this module whole, and one another by name.
mod conv;
mod elementwise;
mod matrix;
mod pool;

pub use conv::{
    Conv2dParams, conv2d, conv2d_activated, conv2d_into, conv2d_plus_into, pointwise_images,
    runs_images_together,
};
pub use elementwise::{
    Operand, binary_into, hard_swish, mul, pad, pad_into, sigmoid, softmax, softmax_rows,
    split_elements,
};
pub use matrix::{Csr, Matrix, RowsFinish, dense, dense_into};
pub(crate) use matrix::{finish_channels, nonzeros, splits_by_rows};
pub use pool::{PoolParams, global_avg_pool, global_avg_pool_into, pool2d, pool2d_into};

/// Asserts that `a` and `b` agree element by element to `tol`, relative to `b`.
#[cfg(test)]
fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "element {i}: {x} vs {y}"
        );
    }
}
