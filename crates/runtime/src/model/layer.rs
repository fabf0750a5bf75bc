//! A loaded layer: its operator with the weights in the form its kernel takes, and its inputs.

use super::*;

pub(super) enum Op<'a> {
    Conv {
        weight: Matrix<'a>,
        bias: Option<Vec<f32>>,
        params: Conv2dParams,
        /// A following `relu`/`relu6`, fused at load ([`fuse_activations`]).
        activation: Activation,
        /// Whether the layer's second input is added to its output, after the activation: a
        /// residual `add` fused at load ([`fuse_residual_adds`]).
        residual: bool,
    },
    Dense {
        weight: Matrix<'a>,
        bias: Option<Vec<f32>>,
    },
    /// A Tucker-2 convolution: 1×1 to `r_in` channels, the core's window to `r_out`, 1×1 to
    /// the output channels; the bias comes last.
    ConvChain {
        steps: Vec<(Matrix<'a>, Conv2dParams)>,
        bias: Option<Vec<f32>>,
    },
    /// XNOR-Net's convolution, or a `sign` fused into the binary `conv2d` it feeds
    /// ([`fuse_signs`]); `input` says which.
    XnorConv {
        weight: XnorWeight<'a>,
        bias: Option<Vec<f32>>,
        params: Conv2dParams,
        input: SignInput,
    },
    XnorDense {
        weight: XnorWeight<'a>,
        bias: Option<Vec<f32>>,
        input: SignInput,
    },
    BatchNorm {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    Relu,
    Relu6,
    Softmax,
    Flatten,
    MaxPool(PoolParams),
    AvgPool(PoolParams),
    GlobalAvgPool,
    Add,
    /// Zeros around each channel: top, left, bottom, right.
    Pad([usize; 4]),
    Sigmoid,
    HardSwish,
    /// Element-wise, or each channel of the first input scaled by the second (`[C]`).
    Mul,
    /// The inputs joined along axis 1 (channels, or vector elements).
    Concat,
    /// `+1` where `x ≥ τ`, else `−1`: `τ` per channel (`[C, H, W]`) or per element (vectors),
    /// 0 without thresholds (spec §7, 1.5).
    Sign {
        threshold: Option<Vec<f32>>,
    },
    /// A layer folded into the one before it: what it was, for `layer_info`.
    Identity(&'static str),
}

impl Op<'_> {
    /// Adds the bytes of this layer's weights to `bytes`, by where they live.
    pub(super) fn add_weight_bytes(&self, bytes: &mut WeightBytes) {
        match self {
            Op::Conv { weight, bias, .. } | Op::Dense { weight, bias } => {
                bytes.add_matrix(weight);
                bias.iter().for_each(|b| bytes.add_owned(b));
            }
            Op::ConvChain { steps, bias } => {
                steps.iter().for_each(|(m, _)| bytes.add_matrix(m));
                bias.iter().for_each(|b| bytes.add_owned(b));
            }
            Op::XnorConv { weight, bias, .. } | Op::XnorDense { weight, bias, .. } => {
                match weight {
                    XnorWeight::Bits(b) => {
                        bytes.owned += 8 * b.bits.len() as u64;
                        bytes.add_owned(&b.alpha);
                    }
                    XnorWeight::Float(m) => bytes.add_matrix(m),
                }
                bias.iter().for_each(|b| bytes.add_owned(b));
            }
            Op::BatchNorm { scale, shift } => {
                bytes.add_owned(scale);
                bytes.add_owned(shift);
            }
            _ => {}
        }
    }

    /// Multiply-adds per image of the products that split over threads, given the layer's
    /// output shape; 0 for layers that always run on one thread.
    pub(super) fn work(&self, out_shape: &[usize]) -> usize {
        let positions: usize = out_shape.iter().skip(1).product();
        match self {
            Op::Conv { weight, .. } => weight.work() * positions,
            Op::ConvChain { steps, .. } => {
                steps.iter().map(|(m, _)| m.work()).sum::<usize>() * positions
            }
            Op::Dense { weight, .. } => weight.work(),
            _ => 0,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Input,
    Node(usize),
}

pub(super) struct Layer<'a> {
    pub(super) name: String,
    pub(super) op: Op<'a>,
    pub(super) inputs: Vec<Source>,
}
