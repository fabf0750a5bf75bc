//! The graph's operators as types (spec §7): each node's `op` and attributes parsed once, with
//! the spec's defaults filled in and every value range-checked, so that the runtime and the
//! trainer build from the same reading of a node and cannot disagree about it.

use super::graph::Node;
use super::value::Value;
use crate::error::{Error, Result};

/// A convolution's geometry (`conv2d`, `xnor_conv2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: [usize; 2],
    /// Top, left, bottom, right.
    pub padding: [usize; 4],
    pub dilation: [usize; 2],
    pub groups: usize,
}

/// A pooling window (`max_pool2d`, `avg_pool2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    pub kernel: [usize; 2],
    /// Defaults to the kernel.
    pub stride: [usize; 2],
    /// Top, left, bottom, right.
    pub padding: [usize; 4],
}

/// One graph operator with its parameters. Weights stay named on the [`Node`]; their shapes
/// are checked against the input shapes by whoever builds the op (runtime or trainer), since
/// only they know the input shapes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Conv2d(Conv2d),
    /// XNOR-Net convolution: binarised inputs and weights (spec §7, format 1.2).
    XnorConv2d(Conv2d),
    Dense,
    XnorDense,
    BatchNorm {
        epsilon: f64,
    },
    Relu,
    Relu6,
    Softmax,
    Flatten,
    MaxPool2d(Pool2d),
    AvgPool2d(Pool2d),
    GlobalAvgPool,
    Add,
    /// `1 / (1 + e^−x)` (format 1.3).
    Sigmoid,
    /// `x · min(max(x + 3, 0), 6) / 6` (format 1.3).
    HardSwish,
    /// The product of two values of equal shape, or of `[C, H, W]` and a `[C]` that scales
    /// each channel, as squeeze-and-excite does (format 1.3).
    Mul,
    /// Two or more inputs joined along the channels (or vectors joined end to end) (1.3).
    Concat,
    /// Zeros around each channel (format 1.3).
    Pad {
        /// Top, left, bottom, right.
        padding: [usize; 4],
    },
    /// `+1` where `x ≥ τ`, else `−1`: `τ` the channel's element of an optional `threshold`
    /// weight, else 0 (format 1.5). In front of a `conv2d` or `dense` with binary weights, a
    /// binary layer with a batch norm folded into its thresholds.
    Sign,
}

/// The largest value an integer attribute may take; larger values are certainly wrong and
/// would only make shape arithmetic overflow-prone.
pub const MAX_ATTR: i64 = 1 << 16;

/// The `batch_norm` epsilon when a node gives none.
pub const DEFAULT_EPSILON: f64 = 1e-5;

impl Op {
    /// Every op name this version defines, in spec order.
    pub const NAMES: [&'static str; 19] = [
        "conv2d",
        "dense",
        "batch_norm",
        "relu",
        "relu6",
        "softmax",
        "flatten",
        "max_pool2d",
        "avg_pool2d",
        "global_avg_pool",
        "add",
        "xnor_conv2d",
        "xnor_dense",
        "pad",
        "sigmoid",
        "hard_swish",
        "mul",
        "concat",
        "sign",
    ];

    /// The ops that format 1.3 added: a file whose graph uses one is written as 1.3.
    pub const SINCE_1_3: [&'static str; 5] = ["pad", "sigmoid", "hard_swish", "mul", "concat"];

    /// The ops that format 1.5 added.
    pub const SINCE_1_5: [&'static str; 1] = ["sign"];

    /// The attributes an op takes (spec §7). Any other key on a node of that op is an error:
    /// a misspelt `eps` or Keras's `strides` must not fall back to a default in silence.
    pub fn attribute_names(op: &str) -> &'static [&'static str] {
        match op {
            "conv2d" | "xnor_conv2d" => &["stride", "padding", "dilation", "groups"],
            "batch_norm" => &["epsilon"],
            "max_pool2d" | "avg_pool2d" => &["kernel", "stride", "padding"],
            "pad" => &["padding"],
            _ => &[],
        }
    }

    /// Read a node's op and attributes. An unknown op name, or an attribute the op does not
    /// take, is an error naming the node and the key.
    pub fn parse(node: &Node) -> Result<Op> {
        let attrs = Attrs(node);
        let op = Self::parse_known(node, &attrs)?;
        let allowed = Self::attribute_names(&node.op);
        if let Some((key, _)) = node
            .attrs
            .iter()
            .find(|(k, _)| !allowed.contains(&k.as_str()))
        {
            let takes = if allowed.is_empty() {
                "it takes no attributes".to_string()
            } else {
                format!("it takes {}", allowed.join(", "))
            };
            return Err(attrs.fail(format!(
                "unknown attribute {:?} ({takes})",
                crate::text::escape(key)
            )));
        }
        Ok(op)
    }

    fn parse_known(node: &Node, attrs: &Attrs<'_>) -> Result<Op> {
        Ok(match node.op.as_str() {
            "conv2d" => Op::Conv2d(attrs.conv()?),
            "xnor_conv2d" => Op::XnorConv2d(attrs.conv()?),
            "dense" => Op::Dense,
            "xnor_dense" => Op::XnorDense,
            "batch_norm" => Op::BatchNorm {
                epsilon: attrs.float("epsilon", DEFAULT_EPSILON)?,
            },
            "relu" => Op::Relu,
            "relu6" => Op::Relu6,
            "softmax" => Op::Softmax,
            "flatten" => Op::Flatten,
            "max_pool2d" => Op::MaxPool2d(attrs.pool()?),
            "avg_pool2d" => Op::AvgPool2d(attrs.pool()?),
            "global_avg_pool" => Op::GlobalAvgPool,
            "add" => Op::Add,
            "sigmoid" => Op::Sigmoid,
            "hard_swish" => Op::HardSwish,
            "mul" => Op::Mul,
            "concat" => Op::Concat,
            "sign" => Op::Sign,
            "pad" => Op::Pad {
                padding: attrs.ints("padding", [0; 4], 0)?,
            },
            other => {
                return Err(attrs.fail(format!(
                    "operator {:?} is not implemented by this version (the ops are {})",
                    crate::text::escape(other),
                    Op::NAMES.join(", ")
                )));
            }
        })
    }

    /// The spec's name of the op.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "conv2d",
            Op::XnorConv2d(_) => "xnor_conv2d",
            Op::Dense => "dense",
            Op::XnorDense => "xnor_dense",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Relu => "relu",
            Op::Relu6 => "relu6",
            Op::Softmax => "softmax",
            Op::Flatten => "flatten",
            Op::MaxPool2d(_) => "max_pool2d",
            Op::AvgPool2d(_) => "avg_pool2d",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Add => "add",
            Op::Pad { .. } => "pad",
            Op::Sigmoid => "sigmoid",
            Op::HardSwish => "hard_swish",
            Op::Mul => "mul",
            Op::Concat => "concat",
            Op::Sign => "sign",
        }
    }

    /// How many inputs the op takes.
    pub fn arity(&self) -> std::ops::RangeInclusive<usize> {
        match self {
            Op::Add | Op::Mul => 2..=2,
            Op::Concat => 2..=crate::limits::Limits::SPEC.graph_nodes as usize,
            _ => 1..=1,
        }
    }

    /// Whether the op has weights of its own (and so a weight tensor is required).
    pub fn has_weights(&self) -> bool {
        matches!(
            self,
            Op::Conv2d(_) | Op::XnorConv2d(_) | Op::Dense | Op::XnorDense | Op::BatchNorm { .. }
        )
    }
}

/// A node's attributes, read with the node named in every error.
struct Attrs<'n>(&'n Node);

impl Attrs<'_> {
    fn fail(&self, what: String) -> Error {
        Error::Model(format!(
            "node {} ({}): {what}",
            crate::text::escape(&self.0.name),
            crate::text::escape(&self.0.op)
        ))
    }

    /// An array of `N` ints in `min..=MAX_ATTR`, or `default` when absent.
    fn ints<const N: usize>(&self, key: &str, default: [usize; N], min: i64) -> Result<[usize; N]> {
        let Some(v) = self.0.get(key) else {
            return Ok(default);
        };
        let items = v
            .as_array()
            .ok_or_else(|| self.fail(format!("{key} must be an array of ints")))?;
        let vals: Option<Vec<usize>> = items
            .iter()
            .map(|x| {
                x.as_int()
                    .filter(|&i| (min..=MAX_ATTR).contains(&i))
                    .map(|i| i as usize)
            })
            .collect();
        let vals = vals
            .ok_or_else(|| self.fail(format!("{key} must hold ints from {min} to {MAX_ATTR}")))?;
        let found = vals.len();
        vals.try_into()
            .map_err(|_| self.fail(format!("{key} needs {N} values, found {found}")))
    }

    /// An int in `1..=MAX_ATTR`, or `default` when absent.
    fn positive(&self, key: &str, default: usize) -> Result<usize> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_int()
                .filter(|&i| (1..=MAX_ATTR).contains(&i))
                .map(|i| i as usize)
                .ok_or_else(|| self.fail(format!("{key} must be an int from 1 to {MAX_ATTR}"))),
        }
    }

    /// A finite, positive float, or `default` when absent.
    fn float(&self, key: &str, default: f64) -> Result<f64> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_float()
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| self.fail(format!("{key} must be a positive float"))),
        }
    }

    fn conv(&self) -> Result<Conv2d> {
        Ok(Conv2d {
            stride: self.ints("stride", [1, 1], 1)?,
            padding: self.ints("padding", [0; 4], 0)?,
            dilation: self.ints("dilation", [1, 1], 1)?,
            groups: self.positive("groups", 1)?,
        })
    }

    fn pool(&self) -> Result<Pool2d> {
        let kernel = self.ints("kernel", [2, 2], 1)?;
        Ok(Pool2d {
            kernel,
            stride: self.ints("stride", kernel, 1)?,
            padding: self.ints("padding", [0; 4], 0)?,
        })
    }
}

/// The attribute value a writer stores for a `[usize; N]` parameter.
pub fn ints_value(values: &[usize]) -> Value {
    Value::ints(values.iter().map(|&v| v as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str) -> Node {
        Node::new("n", op, &["input"], &["w"])
    }

    #[test]
    fn defaults_follow_the_spec() {
        let Op::Conv2d(c) = Op::parse(&node("conv2d")).unwrap() else {
            panic!()
        };
        assert_eq!(
            c,
            Conv2d {
                stride: [1, 1],
                padding: [0; 4],
                dilation: [1, 1],
                groups: 1
            }
        );
        let pool = node("max_pool2d").attr("kernel", ints_value(&[3, 3]));
        let Op::MaxPool2d(p) = Op::parse(&pool).unwrap() else {
            panic!()
        };
        assert_eq!(p.stride, [3, 3], "a pooling stride defaults to its kernel");
        assert_eq!(
            Op::parse(&node("batch_norm")).unwrap(),
            Op::BatchNorm { epsilon: 1e-5 }
        );
    }

    #[test]
    fn bad_attributes_name_the_node_and_key() {
        let zero_stride = node("conv2d").attr("stride", ints_value(&[0, 0]));
        let e = Op::parse(&zero_stride).unwrap_err().to_string();
        assert!(
            e.contains("node n (conv2d): stride must hold ints from 1"),
            "{e}"
        );
        let short = node("avg_pool2d").attr("padding", ints_value(&[1, 1]));
        let e = Op::parse(&short).unwrap_err().to_string();
        assert!(e.contains("padding needs 4 values, found 2"), "{e}");
        let eps = node("batch_norm").attr("eps", Value::Float(1e-3));
        let e = Op::parse(&eps).unwrap_err().to_string();
        assert!(
            e.contains("node n (batch_norm): unknown attribute \"eps\" (it takes epsilon)"),
            "{e}"
        );
        let keras = node("conv2d").attr("strides", ints_value(&[2, 2]));
        let e = Op::parse(&keras).unwrap_err().to_string();
        assert!(e.contains("unknown attribute \"strides\""), "{e}");
        let e = Op::parse(&node("relu").attr("alpha", Value::Float(0.1)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("it takes no attributes"), "{e}");
        let e = Op::parse(&node("lstm")).unwrap_err().to_string();
        assert!(e.contains("operator \"lstm\" is not implemented"), "{e}");
        for op in Op::NAMES {
            assert_eq!(Op::parse(&node(op)).unwrap().name(), op);
        }
    }
}
