//! One ONNX node at a time: folded into a constant, passed through, or turned into `.cxrm`
//! nodes. Each operator's attributes are read with its ONNX defaults; an attribute value the
//! runtime cannot honour is an error naming the node, never ignored.

use super::Val;
use super::constants::Const;
use super::proto::{AttributeProto, NodeProto};
use crate::interop::builder::{ConvGeometry, GraphBuilder, Weight, same_padding};
use cxrm_format::error::{Error, Result};
use std::collections::HashMap;

/// A node's attributes, with the node named in every error.
struct Node<'a> {
    proto: &'a NodeProto,
    name: String,
    opset: i64,
}

impl Node<'_> {
    fn fail(&self, what: impl std::fmt::Display) -> Error {
        Error::Usage(format!(
            "node {} ({}, opset {}): {what}",
            cxrm_format::text::escape(&self.name),
            cxrm_format::text::escape(&self.proto.op_type),
            self.opset
        ))
    }

    fn attr(&self, key: &str) -> Option<&AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name == key)
    }

    fn int(&self, key: &str, default: i64) -> i64 {
        self.attr(key).map_or(default, |a| a.i)
    }

    fn float(&self, key: &str, default: f32) -> f32 {
        self.attr(key).map_or(default, |a| a.f)
    }

    fn string(&self, key: &str) -> Option<String> {
        self.attr(key)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    fn ints(&self, key: &str) -> Option<&[i64]> {
        self.attr(key).map(|a| a.ints.as_slice())
    }

    /// `N` non-negative (or positive, with `min` 1) ints from an attribute, or `default`.
    fn sizes<const N: usize>(
        &self,
        key: &str,
        default: [usize; N],
        min: i64,
    ) -> Result<[usize; N]> {
        let Some(v) = self.ints(key) else {
            return Ok(default);
        };
        let vals: Option<Vec<usize>> = v
            .iter()
            .map(|&x| (min..=1 << 16).contains(&x).then_some(x as usize))
            .collect();
        vals.and_then(|v| v.try_into().ok())
            .ok_or_else(|| self.fail(format!("{key} {v:?}: expected {N} ints from {min}")))
    }

    /// Only the attributes in `known` may appear; anything else would change the result.
    fn only(&self, known: &[&str]) -> Result<()> {
        match self
            .proto
            .attribute
            .iter()
            .find(|a| !known.contains(&a.name.as_str()))
        {
            Some(a) => Err(self.fail(format!(
                "attribute {} is not supported",
                cxrm_format::text::escape(&a.name)
            ))),
            None => Ok(()),
        }
    }
}

/// The value of input `i` (an empty name is an absent optional input).
fn input<'v>(
    node: &Node<'_>,
    values: &'v HashMap<String, Val>,
    i: usize,
) -> Result<Option<&'v Val>> {
    match node.proto.input.get(i).filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(name) => values.get(name).map(Some).ok_or_else(|| {
            node.fail(format!(
                "input {} is not computed by any earlier node",
                cxrm_format::text::escape(name)
            ))
        }),
    }
}

fn required<'v>(node: &Node<'_>, values: &'v HashMap<String, Val>, i: usize) -> Result<&'v Val> {
    input(node, values, i)?.ok_or_else(|| node.fail(format!("input {i} is missing")))
}

fn constant<'v>(node: &Node<'_>, values: &'v HashMap<String, Val>, i: usize) -> Result<&'v Const> {
    match required(node, values, i)? {
        Val::Const(c) => Ok(c),
        Val::Act { .. } | Val::Padded { .. } => Err(node.fail(format!(
            "input {i} must be a constant (an initializer), not computed from the image"
        ))),
    }
}

fn activation<'v>(
    node: &Node<'_>,
    values: &'v HashMap<String, Val>,
    i: usize,
) -> Result<(&'v crate::interop::builder::Act, &'v [usize])> {
    match required(node, values, i)? {
        Val::Act { act, dims } => Ok((act, dims)),
        Val::Padded { .. } => Err(node.fail(format!(
            "input {i} comes from a Pad; only a Conv may follow a Pad (its padding absorbs it)"
        ))),
        Val::Const(_) => {
            Err(node.fail(format!("input {i} is a constant; expected the image path")))
        }
    }
}

/// Translate one node; `Ok(true)` when it was folded away (a constant or a pass-through).
pub(super) fn translate(
    proto: &NodeProto,
    index: usize,
    opset: i64,
    values: &mut HashMap<String, Val>,
    b: &mut GraphBuilder,
) -> Result<bool> {
    let name = if proto.name.is_empty() {
        format!("{}_{index}", proto.op_type)
    } else {
        proto.name.clone()
    };
    let node = Node { proto, name, opset };
    if !(proto.domain.is_empty() || proto.domain == "ai.onnx") {
        return Err(node.fail(format!(
            "operators of domain {} are not supported",
            cxrm_format::text::escape(&proto.domain)
        )));
    }
    let all_const = proto
        .input
        .iter()
        .filter(|n| !n.is_empty())
        .all(|n| matches!(values.get(n), Some(Val::Const(_))));
    let nodes_before = b.node_count();
    let out = match proto.op_type.as_str() {
        "Constant" => Val::Const(constant_node(&node)?),
        "Identity" | "Dropout" => required(&node, values, 0)?.clone(),
        _ if all_const && !proto.input.is_empty() => Val::Const(fold(&node, values)?),
        "Shape" => {
            let (_, dims) = activation(&node, values, 0)?;
            Val::Const(Const::i64(
                vec![dims.len()],
                dims.iter().map(|&d| d as i64).collect(),
            ))
        }
        "Conv" => conv(&node, values, b)?,
        "Pad" => pad(&node, values)?,
        "Gemm" => gemm(&node, values, b)?,
        "MatMul" => matmul(&node, values, b)?,
        "Add" => add(&node, values, b)?,
        "BatchNormalization" => batch_norm(&node, values, b)?,
        "Relu" => unary(&node, values, b, "relu")?,
        "Sigmoid" => unary(&node, values, b, "sigmoid")?,
        "HardSwish" => unary(&node, values, b, "hard_swish")?,
        "Mul" => mul(&node, values, b)?,
        "Concat" => concat(&node, values, b)?,
        "Clip" => clip(&node, values, b)?,
        "MaxPool" | "AveragePool" => pool(&node, values, b)?,
        "GlobalAveragePool" => {
            let (x, dims) = activation(&node, values, 0)?;
            let y = b.unary(&node.name, "global_avg_pool", x)?;
            let dims = vec![1, dims[1], 1, 1];
            Val::Act { act: y, dims }
        }
        "ReduceMean" => reduce_mean(&node, values, b)?,
        "Flatten" | "Reshape" | "Squeeze" => to_vector(&node, values, b)?,
        "Softmax" => {
            let (x, dims) = activation(&node, values, 0)?;
            let axis = node.int("axis", if opset >= 13 { -1 } else { 1 });
            let last = dims.len() as i64 - 1;
            if !matches!(dims, [1, _]) || (axis != -1 && axis != last) {
                return Err(node.fail(format!(
                    "softmax over axis {axis} of {dims:?}: only over the classes of a [N, K] output"
                )));
            }
            let dims = dims.to_vec();
            Val::Act {
                act: b.unary(&node.name, "softmax", x)?,
                dims,
            }
        }
        other => {
            return Err(node.fail(format!(
                "operator {} is not supported by cxrm import",
                cxrm_format::text::escape(other)
            )));
        }
    };
    // Folded: the node left no `.cxrm` node of its own (a constant, a pass-through, a Pad
    // kept for the Conv after it, a reshape of what already was a vector).
    let folded = b.node_count() == nodes_before;
    if let Some(first) = proto.output.first() {
        values.insert(first.clone(), out);
    }
    Ok(folded)
}

fn constant_node(node: &Node<'_>) -> Result<Const> {
    if let Some(t) = node.attr("value").and_then(|a| a.t.as_ref()) {
        return Const::from_proto(t);
    }
    if let Some(a) = node.attr("value_float") {
        return Ok(Const::f32(vec![], vec![a.f]));
    }
    if let Some(a) = node.attr("value_floats") {
        return Ok(Const::f32(vec![a.floats.len()], a.floats.clone()));
    }
    if let Some(a) = node.attr("value_int") {
        return Ok(Const::i64(vec![], vec![a.i]));
    }
    if let Some(a) = node.attr("value_ints") {
        return Ok(Const::i64(vec![a.ints.len()], a.ints.clone()));
    }
    Err(node.fail("a Constant without a value, or with a sparse or string value"))
}

/// Evaluate a node whose inputs are all constants.
fn fold(node: &Node<'_>, values: &HashMap<String, Val>) -> Result<Const> {
    let c = |i| constant(node, values, i);
    let arith = |f: fn(f32, f32) -> f32| -> Result<Const> {
        c(0)?
            .zip(c(1)?, f)
            .ok_or_else(|| node.fail("cannot broadcast these constants"))
    };
    match node.proto.op_type.as_str() {
        "ConstantOfShape" => {
            let shape = c(0)?
                .ints()
                .ok_or_else(|| node.fail("the shape must be integers"))?;
            let dims: Vec<usize> = shape
                .iter()
                .map(|&d| usize::try_from(d).ok().filter(|&d| d <= 1 << 16))
                .collect::<Option<_>>()
                .ok_or_else(|| node.fail(format!("shape {shape:?}")))?;
            let n: usize = dims.iter().product();
            if n > 1 << 20 {
                return Err(node.fail(format!("a constant of shape {dims:?} is too large")));
            }
            let fill = match node.attr("value").and_then(|a| a.t.as_ref()) {
                Some(t) => Const::from_proto(t)?,
                None => Const::f32(vec![1], vec![0.0]),
            };
            Ok(match fill.values {
                super::constants::Values::F32(v) => {
                    Const::f32(dims, vec![v.first().copied().unwrap_or(0.0); n])
                }
                super::constants::Values::I64(v) => {
                    Const::i64(dims, vec![v.first().copied().unwrap_or(0); n])
                }
            })
        }
        "Slice" => {
            let x = c(0)?;
            let ints = |i: usize| -> Result<Option<Vec<i64>>> {
                match input(node, values, i)? {
                    None => Ok(None),
                    Some(_) => c(i)?
                        .ints()
                        .map(Some)
                        .ok_or_else(|| node.fail("bad Slice input")),
                }
            };
            let starts = ints(1)?.ok_or_else(|| node.fail("Slice needs starts"))?;
            let ends = ints(2)?.ok_or_else(|| node.fail("Slice needs ends"))?;
            let axes = ints(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
            x.sliced(&starts, &ends, &axes, &steps)
                .ok_or_else(|| node.fail("a Slice this importer cannot fold"))
        }
        "Shape" => {
            let x = c(0)?;
            Ok(Const::i64(
                vec![x.dims.len()],
                x.dims.iter().map(|&d| d as i64).collect(),
            ))
        }
        "Add" => arith(|a, b| a + b),
        "Sub" => arith(|a, b| a - b),
        "Mul" => arith(|a, b| a * b),
        "Div" => arith(|a, b| a / b),
        "Sqrt" => {
            let x = c(0)?;
            Ok(Const::f32(
                x.dims.clone(),
                x.floats().iter().map(|v| v.sqrt()).collect(),
            ))
        }
        "Neg" => {
            let x = c(0)?;
            Ok(Const::f32(
                x.dims.clone(),
                x.floats().iter().map(|v| -v).collect(),
            ))
        }
        "Cast" => {
            let x = c(0)?;
            // FLOAT, DOUBLE and FLOAT16 are floats; the integer types stay integers.
            match node.int("to", 1) {
                1 | 10 | 11 => Ok(Const::f32(x.dims.clone(), x.floats())),
                _ => Ok(Const::i64(
                    x.dims.clone(),
                    x.floats().iter().map(|&v| v as i64).collect(),
                )),
            }
        }
        "Transpose" => {
            let x = c(0)?;
            let perm = node.ints("perm").map(<[i64]>::to_vec);
            if x.dims.len() == 2 && perm.as_deref().is_none_or(|p| p == [1, 0]) {
                x.transposed().ok_or_else(|| node.fail("bad transpose"))
            } else {
                Err(node.fail("only 2-D constants are transposed"))
            }
        }
        "Unsqueeze" | "Squeeze" | "Reshape" | "Flatten" => {
            let x = c(0)?;
            let dims = match node.proto.op_type.as_str() {
                "Reshape" => {
                    let target = c(1)?.ints().ok_or_else(|| node.fail("bad shape"))?;
                    reshape_target(node, &x.dims, &target)?
                }
                "Flatten" => {
                    let axis = node.int("axis", 1).clamp(0, x.dims.len() as i64) as usize;
                    vec![
                        x.dims[..axis].iter().product(),
                        x.dims[axis..].iter().product(),
                    ]
                }
                // Unsqueeze and Squeeze of a constant only move size-1 axes; a 1-D result
                // serves every use made of them here (shape arithmetic).
                _ => vec![x.len()],
            };
            Ok(Const {
                dims,
                values: x.values.clone(),
            })
        }
        "Concat" => {
            let mut all = Vec::new();
            for i in 0..node.proto.input.len() {
                all.extend(
                    c(i)?
                        .ints()
                        .ok_or_else(|| node.fail("only integer constants are concatenated"))?,
                );
            }
            Ok(Const::i64(vec![all.len()], all))
        }
        "Gather" => {
            let data = c(0)?
                .ints()
                .ok_or_else(|| node.fail("only integer constants are gathered"))?;
            let idx = c(1)?.ints().ok_or_else(|| node.fail("bad indices"))?;
            let picked: Option<Vec<i64>> = idx
                .iter()
                .map(|&i| {
                    let i = if i < 0 { i + data.len() as i64 } else { i };
                    usize::try_from(i).ok().and_then(|i| data.get(i).copied())
                })
                .collect();
            let picked = picked.ok_or_else(|| node.fail("index out of range"))?;
            let dims = if c(1)?.dims.is_empty() {
                vec![]
            } else {
                vec![picked.len()]
            };
            Ok(Const::i64(dims, picked))
        }
        other => Err(node.fail(format!(
            "operator {} on constants is not supported by cxrm import",
            cxrm_format::text::escape(other)
        ))),
    }
}

/// A `Reshape` node's output dims. With `allowzero` = 1 a 0 in the shape is an empty axis,
/// not a copy of the input's; no image-sized value has one, so such a shape is refused rather
/// than read the opset-13 way.
fn reshape_target(node: &Node<'_>, from: &[usize], shape: &[i64]) -> Result<Vec<usize>> {
    node.only(&["allowzero"])?;
    if node.int("allowzero", 0) != 0 && shape.contains(&0) {
        return Err(node.fail(format!(
            "shape {shape:?} with allowzero = 1 would make an empty tensor"
        )));
    }
    reshape_dims(from, shape)
        .ok_or_else(|| node.fail(format!("cannot reshape {from:?} to {shape:?}")))
}

/// ONNX `Reshape` dims: 0 copies the input's dim, -1 takes what is left. `None` for a shape
/// that cannot hold the input: a 0 past the input's rank, a negative dim other than one -1,
/// or dims whose product overflows (a hostile file's, which must not wrap to a match).
fn reshape_dims(from: &[usize], target: &[i64]) -> Option<Vec<usize>> {
    let total = checked_product(from)?;
    let mut dims: Vec<Option<usize>> = Vec::with_capacity(target.len());
    for (i, &d) in target.iter().enumerate() {
        dims.push(match d {
            0 => Some(*from.get(i)?),
            -1 => None,
            d => Some(usize::try_from(d).ok()?),
        });
    }
    let known = checked_product(dims.iter().flatten())?;
    let unknown = dims.iter().filter(|d| d.is_none()).count();
    match unknown {
        0 => {}
        1 if known > 0 && total.is_multiple_of(known) => {
            *dims.iter_mut().find(|d| d.is_none())? = Some(total / known);
        }
        _ => return None,
    }
    let dims: Vec<usize> = dims.into_iter().collect::<Option<_>>()?;
    (checked_product(&dims)? == total).then_some(dims)
}

/// The product of `dims`, or `None` where it overflows.
fn checked_product<'a>(dims: impl IntoIterator<Item = &'a usize>) -> Option<usize> {
    dims.into_iter().try_fold(1usize, |p, &d| p.checked_mul(d))
}

fn conv(node: &Node<'_>, values: &HashMap<String, Val>, b: &mut GraphBuilder) -> Result<Val> {
    node.only(&[
        "auto_pad",
        "dilations",
        "group",
        "kernel_shape",
        "pads",
        "strides",
    ])?;
    let (x, dims, zero_pad) = match required(node, values, 0)? {
        Val::Padded { act, dims, pad } => (act, dims.as_slice(), *pad),
        _ => {
            let (x, dims) = activation(node, values, 0)?;
            (x, dims, [0; 4])
        }
    };
    let w = constant(node, values, 1)?;
    let bias = input(node, values, 2)?
        .map(|_| constant(node, values, 2).map(Const::floats))
        .transpose()?;
    if w.dims.len() != 4 || dims.len() != 4 {
        return Err(node.fail(format!(
            "only 2-D convolutions of [N, C, H, W] are supported (weight {:?})",
            w.dims
        )));
    }
    let kernel = [w.dims[2], w.dims[3]];
    if let Some(k) = node.ints("kernel_shape")
        && k.iter().map(|&v| v as usize).ne(kernel)
    {
        return Err(node.fail(format!(
            "kernel_shape {k:?} does not match the weight {:?}",
            w.dims
        )));
    }
    let stride = node.sizes("strides", [1, 1], 1)?;
    let dilation = node.sizes("dilations", [1, 1], 1)?;
    let own = padding(node, [dims[2], dims[3]], kernel, stride, dilation)?;
    let padding = [0, 1, 2, 3].map(|i| own[i] + zero_pad[i]);
    let groups = usize::try_from(node.int("group", 1))
        .ok()
        .filter(|&g| g >= 1)
        .ok_or_else(|| node.fail("group must be positive"))?;
    // A 1×1 convolution of a globally pooled [N, C, 1, 1] value (squeeze-and-excite) is a
    // dense layer on the `.cxrm` vector [C].
    if x.shape.len() == 1 && kernel == [1, 1] && padding == [0; 4] && node.int("group", 1) == 1 {
        let [o, i] = [w.dims[0], w.dims[1]];
        let y = b.dense(&node.name, x, Weight::new(vec![o, i], w.floats())?, bias)?;
        return Ok(Val::Act {
            act: y,
            dims: vec![1, o, 1, 1],
        });
    }
    let weight = Weight::new(w.dims.clone(), w.floats())?;
    let geometry = ConvGeometry {
        stride,
        padding,
        dilation,
        groups,
    };
    let y = b.conv2d(&node.name, x, weight, bias, geometry)?;
    Ok(Val::Act {
        dims: [vec![1], y.shape.clone()].concat(),
        act: y,
    })
}

/// Explicit `pads` (`[top, left, bottom, right]` in ONNX's begin-then-end order) or `auto_pad`.
fn padding(
    node: &Node<'_>,
    [h, w]: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> Result<[usize; 4]> {
    let auto = node.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    match auto.as_str() {
        "NOTSET" => node.sizes("pads", [0; 4], 0),
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let upper = auto == "SAME_UPPER";
            let [t, bo] = same_padding(h, kernel[0], stride[0], dilation[0], upper);
            let [l, r] = same_padding(w, kernel[1], stride[1], dilation[1], upper);
            Ok([t, l, bo, r])
        }
        other => Err(node.fail(format!("auto_pad {other:?} is not an ONNX value"))),
    }
}

/// One image's features as ONNX sees them: a row `[1, F]` (the batch of one first). `Gemm`,
/// `MatMul` and `Softmax` read their input so; anything else would mix images or features.
fn row(node: &Node<'_>, dims: &[usize]) -> Result<()> {
    match dims {
        [1, _] => Ok(()),
        _ => Err(node.fail(format!(
            "expects one image's features as a row [1, F], not {dims:?}"
        ))),
    }
}

/// A column `[F, 1]` (F > 1): the same values as the row `[1, F]`, from a `Reshape` or
/// `Flatten`, which only `Gemm` with `transA` = 1 reads back as a row.
fn is_column(dims: &[usize]) -> bool {
    matches!(dims, [f, 1] if *f > 1)
}

/// `Y = alpha · A' · B' + beta · C`, with A the image's features: alpha is folded into the
/// weight and beta into the bias, so the `.cxrm` node is one `dense` layer.
fn gemm(node: &Node<'_>, values: &HashMap<String, Val>, b: &mut GraphBuilder) -> Result<Val> {
    node.only(&["alpha", "beta", "transA", "transB"])?;
    let (x, dims) = activation(node, values, 0)?;
    // transA = 1 transposes A; for one image that is meaningful only when A is a column
    // [K, 1], and then it is a reshape to the row [1, K] (the values keep their order).
    if node.int("transA", 0) != 0 {
        if !matches!(dims, [_, 1]) {
            return Err(node.fail(format!(
                "transA = 1 needs A as a column [K, 1] (one image's features); A is {dims:?}"
            )));
        }
    } else {
        row(node, dims)?;
    }
    let w = constant(node, values, 1)?;
    if w.dims.len() != 2 {
        return Err(node.fail(format!("B must be 2-D, not {:?}", w.dims)));
    }
    let w = if node.int("transB", 0) != 0 {
        w.clone()
    } else {
        w.transposed().ok_or_else(|| node.fail("B must be 2-D"))?
    };
    let alpha = node.float("alpha", 1.0);
    let beta = node.float("beta", 1.0);
    let scaled: Vec<f32> = w.floats().iter().map(|&v| v * alpha).collect();
    let out = w.dims[0];
    let bias = match input(node, values, 2)? {
        None => None,
        Some(_) => Some(gemm_bias(node, constant(node, values, 2)?, out, beta)?),
    };
    let y = b.dense(&node.name, x, Weight::new(w.dims.clone(), scaled)?, bias)?;
    Ok(Val::Act {
        dims: vec![1, out],
        act: y,
    })
}

/// `beta · C`, with C broadcast to the output row `[1, out]` as ONNX allows: a scalar, one
/// value, `[out]` or `[1, out]`.
fn gemm_bias(node: &Node<'_>, c: &Const, out: usize, beta: f32) -> Result<Vec<f32>> {
    let leading_ones = c.dims.iter().rev().skip(1).all(|&d| d == 1);
    let values = c.floats();
    let values = match values.len() {
        1 if leading_ones => vec![values[0]; out],
        n if n == out && leading_ones => values,
        _ => {
            return Err(node.fail(format!(
                "C of shape {:?} does not broadcast to the output [1, {out}]",
                c.dims
            )));
        }
    };
    Ok(values.iter().map(|&v| v * beta).collect())
}

fn matmul(node: &Node<'_>, values: &HashMap<String, Val>, b: &mut GraphBuilder) -> Result<Val> {
    let (x, dims) = activation(node, values, 0)?;
    row(node, dims)?;
    let w = constant(node, values, 1)?
        .transposed()
        .ok_or_else(|| node.fail("the second input must be a 2-D constant"))?;
    let out = w.dims[0];
    let y = b.dense(
        &node.name,
        x,
        Weight::new(w.dims.clone(), w.floats())?,
        None,
    )?;
    Ok(Val::Act {
        dims: vec![1, out],
        act: y,
    })
}

fn add(node: &Node<'_>, values: &HashMap<String, Val>, b: &mut GraphBuilder) -> Result<Val> {
    match (required(node, values, 0)?, required(node, values, 1)?) {
        (Val::Act { act: a, dims }, Val::Act { act: c, dims: dc }) => {
            // A column and a row hold the same values, but ONNX broadcasts their sum to a
            // matrix.
            if is_column(dims) != is_column(dc) {
                return Err(node.fail(format!("adds {dims:?} and {dc:?}")));
            }
            let dims = dims.clone();
            Ok(Val::Act {
                act: b.add(&node.name, a, c)?,
                dims,
            })
        }
        (Val::Act { act, dims }, Val::Const(k)) | (Val::Const(k), Val::Act { act, dims }) => {
            // A bias after MatMul (or a Conv without one): per output channel.
            let per_channel = k.dims.iter().filter(|&&d| d != 1).count() <= 1;
            if per_channel && b.fold_bias(act, &k.floats())? {
                Ok(Val::Act {
                    act: act.clone(),
                    dims: dims.clone(),
                })
            } else {
                Err(node.fail(
                    "adding a constant is supported only as the bias of the Conv, Gemm or MatMul \
                     just before it",
                ))
            }
        }
        (Val::Const(_), Val::Const(_)) => unreachable!("folded before"),
        _ => Err(node.fail("adds the output of a Pad; only a Conv may follow a Pad")),
    }
}

/// A product of two computed values: equal shapes, or a feature map scaled per channel by a
/// `[N, C, 1, 1]` value (squeeze-and-excite; a swish is `x · sigmoid(x)`).
fn mul(node: &Node<'_>, values: &HashMap<String, Val>, b: &mut GraphBuilder) -> Result<Val> {
    let (Val::Act { act: a, dims: da }, Val::Act { act: c, dims: dc }) =
        (required(node, values, 0)?, required(node, values, 1)?)
    else {
        return Err(
            node.fail("only products of two computed values are supported (not of a constant)")
        );
    };
    if is_column(da) != is_column(dc) {
        return Err(node.fail(format!("multiplies {da:?} and {dc:?}")));
    }
    let dims = if da.len() >= dc.len() && da.iter().product::<usize>() >= dc.iter().product() {
        da.clone()
    } else {
        dc.clone()
    };
    Ok(Val::Act {
        act: b.mul(&node.name, a, c)?,
        dims,
    })
}

/// `Concat` of computed values along axis 1: channels of `[N, C, H, W]`, or the features of
/// `[N, F]`. (A `Concat` of constants is folded before it gets here.)
fn concat(node: &Node<'_>, values: &HashMap<String, Val>, b: &mut GraphBuilder) -> Result<Val> {
    node.only(&["axis"])?;
    let parts: Vec<(&crate::interop::builder::Act, &[usize])> = (0..node.proto.input.len())
        .map(|i| activation(node, values, i))
        .collect::<Result<_>>()?;
    let rank = parts[0].1.len() as i64;
    let axis = node.int("axis", 1);
    if parts.iter().any(|(_, d)| is_column(d)) {
        return Err(node.fail("Concat of columns [F, 1]: only of rows or feature maps"));
    }
    if axis != 1 && axis != 1 - rank {
        return Err(node.fail(format!(
            "Concat along axis {axis}: only along the channels (axis 1) is supported"
        )));
    }
    let acts: Vec<&crate::interop::builder::Act> = parts.iter().map(|(a, _)| *a).collect();
    let y = b.concat(&node.name, &acts)?;
    let mut dims = parts[0].1.to_vec();
    dims[1] = parts.iter().map(|(_, d)| d[1]).sum();
    Ok(Val::Act { act: y, dims })
}

fn batch_norm(node: &Node<'_>, values: &HashMap<String, Val>, b: &mut GraphBuilder) -> Result<Val> {
    node.only(&["epsilon", "momentum", "spatial", "training_mode"])?;
    if node.int("training_mode", 0) != 0 {
        return Err(node.fail("training_mode = 1 cannot be run for inference"));
    }
    let (x, dims) = activation(node, values, 0)?;
    let p = |i| constant(node, values, i).map(Const::floats);
    let params = [p(1)?, p(2)?, p(3)?, p(4)?];
    let epsilon = node.float("epsilon", 1e-5) as f64;
    let dims = dims.to_vec();
    Ok(Val::Act {
        act: b.batch_norm(&node.name, x, params, epsilon)?,
        dims,
    })
}

fn unary(
    node: &Node<'_>,
    values: &HashMap<String, Val>,
    b: &mut GraphBuilder,
    op: &str,
) -> Result<Val> {
    let (x, dims) = activation(node, values, 0)?;
    let dims = dims.to_vec();
    Ok(Val::Act {
        act: b.unary(&node.name, op, x)?,
        dims,
    })
}

/// `Clip(0, 6)` is `relu6` and `Clip(0, ∞)` is `relu`; bounds are inputs from opset 11,
/// attributes before.
fn clip(node: &Node<'_>, values: &HashMap<String, Val>, b: &mut GraphBuilder) -> Result<Val> {
    let bound = |i: usize, key: &str, default: f32| -> Result<f32> {
        if node.opset < 11 {
            return Ok(node.float(key, default));
        }
        match input(node, values, i)? {
            None => Ok(default),
            Some(_) => constant(node, values, i)?
                .scalar()
                .ok_or_else(|| node.fail(format!("{key} must be one value"))),
        }
    };
    let lo = bound(1, "min", f32::NEG_INFINITY)?;
    let hi = bound(2, "max", f32::INFINITY)?;
    match (lo, hi) {
        (0.0, 6.0) => unary(node, values, b, "relu6"),
        (0.0, f32::INFINITY) => unary(node, values, b, "relu"),
        _ => Err(node.fail(format!(
            "Clip({lo}, {hi}): only Clip(0, 6) (relu6) and Clip(0, inf) (relu) are supported"
        ))),
    }
}

fn pool(node: &Node<'_>, values: &HashMap<String, Val>, b: &mut GraphBuilder) -> Result<Val> {
    let max = node.proto.op_type == "MaxPool";
    node.only(&[
        "auto_pad",
        "ceil_mode",
        "count_include_pad",
        "dilations",
        "kernel_shape",
        "pads",
        "storage_order",
        "strides",
    ])?;
    // A zero Pad before the pooling stays zeros the window sees (in a max or a mean), where
    // the pooling's own padding would not be: it becomes a `pad` node.
    let (x, dims, zero_pad) = match required(node, values, 0)? {
        Val::Padded { act, dims, pad } => (act, dims.as_slice(), *pad),
        _ => {
            let (x, dims) = activation(node, values, 0)?;
            (x, dims, [0; 4])
        }
    };
    if dims.len() != 4 {
        return Err(node.fail(format!("expects [N, C, H, W], not {dims:?}")));
    }
    let kernel: [usize; 2] = node.sizes("kernel_shape", [0, 0], 1)?;
    if kernel == [0, 0] {
        return Err(node.fail("kernel_shape is required"));
    }
    if node.sizes("dilations", [1, 1], 1)? != [1, 1] {
        return Err(node.fail("dilated pooling is not supported"));
    }
    let stride = node.sizes("strides", [1, 1], 1)?;
    let (h, w) = (dims[2], dims[3]);
    let mut pads = padding(node, [h, w], kernel, stride, [1, 1])?;
    if node.int("ceil_mode", 0) != 0 {
        ceil_mode_pads(&mut pads, [h, w], kernel, stride);
        if !max && pads != padding(node, [h, w], kernel, stride, [1, 1])? {
            return Err(node.fail("ceil_mode on AveragePool is not supported"));
        }
    }
    // count_include_pad = 1 averages the padded zeros too, over the whole window: exactly a
    // `pad` node of zeros followed by an unpadded `avg_pool2d` (which averages only positions
    // inside its input, spec §7).
    let include_pad = !max && node.int("count_include_pad", 0) != 0;
    let (before, pads) = if include_pad {
        ([0, 1, 2, 3].map(|i| zero_pad[i] + pads[i]), [0; 4])
    } else {
        (zero_pad, pads)
    };
    let padded_act;
    let x = if before == [0; 4] {
        x
    } else {
        padded_act = b.pad(&format!("{}_pad", node.name), x, before)?;
        &padded_act
    };
    let op = if max { "max_pool2d" } else { "avg_pool2d" };
    let y = b.pool(&node.name, op, x, kernel, stride, pads)?;
    Ok(Val::Act {
        dims: [vec![1], y.shape.clone()].concat(),
        act: y,
    })
}

/// `ceil_mode`: pad the end so that flooring gives the ceiling; a last window that would
/// start in the end padding is dropped, as ONNX and PyTorch do.
fn ceil_mode_pads(pads: &mut [usize; 4], len: [usize; 2], kernel: [usize; 2], stride: [usize; 2]) {
    for axis in 0..2 {
        let padded = len[axis] + pads[axis] + pads[axis + 2];
        let Some(span) = padded.checked_sub(kernel[axis]) else {
            continue;
        };
        let mut out = span.div_ceil(stride[axis]) + 1;
        if (out - 1) * stride[axis] >= len[axis] + pads[axis] {
            out -= 1;
        }
        let need = (out - 1) * stride[axis] + kernel[axis];
        pads[axis + 2] += need.saturating_sub(padded);
    }
}

/// A zero `Pad` of H and W (ONNX pads: begins then ends, per axis `[N, C, H, W]`): kept aside
/// for the `Conv` that reads it. Pads before opset 11 are an attribute, after an input.
fn pad(node: &Node<'_>, values: &HashMap<String, Val>) -> Result<Val> {
    node.only(&["mode", "pads", "value"])?;
    let mode = node.string("mode").unwrap_or_else(|| "constant".into());
    if mode != "constant" {
        return Err(node.fail(format!(
            "mode {mode:?}: only constant (zero) padding is supported"
        )));
    }
    let (pads, value) = if node.opset >= 11 {
        let p = constant(node, values, 1)?
            .ints()
            .ok_or_else(|| node.fail("pads must be integers"))?;
        let v = match input(node, values, 2)? {
            Some(_) => constant(node, values, 2)?.scalar().unwrap_or(0.0),
            None => 0.0,
        };
        if input(node, values, 3)?.is_some() {
            return Err(node.fail("padding chosen axes (the axes input) is not supported"));
        }
        (p, v)
    } else {
        (
            node.ints("pads").unwrap_or_default().to_vec(),
            node.float("value", 0.0),
        )
    };
    if value != 0.0 {
        return Err(node.fail(format!(
            "padding with {value}: only zero padding is supported"
        )));
    }
    let (x, dims) = activation(node, values, 0)?;
    let [0, 0, t, l, 0, 0, bo, r] = pads[..] else {
        return Err(node.fail(format!(
            "pads {pads:?}: only zero padding of H and W of [N, C, H, W] is supported"
        )));
    };
    let pad = [t, l, bo, r].map(|p| usize::try_from(p).unwrap_or(usize::MAX));
    if pad.iter().any(|&p| p > 1 << 16) || dims.len() != 4 {
        return Err(node.fail(format!("pads {pads:?} on {dims:?} are not supported")));
    }
    let mut padded = dims.to_vec();
    padded[2] += pad[0] + pad[2];
    padded[3] += pad[1] + pad[3];
    Ok(Val::Padded {
        act: x.clone(),
        dims: padded,
        pad,
    })
}

/// An op's `axes`: an attribute before opset `since`, the second input from it on (as
/// `Squeeze` changed at 13 and `ReduceMean` at 18). Absent: none listed.
fn axes(node: &Node<'_>, values: &HashMap<String, Val>, since: i64) -> Result<Vec<i64>> {
    if node.opset < since {
        return Ok(node.ints("axes").unwrap_or_default().to_vec());
    }
    match input(node, values, 1)? {
        Some(_) => constant(node, values, 1)?
            .ints()
            .ok_or_else(|| node.fail("bad axes")),
        None => Ok(Vec::new()),
    }
}

/// `ReduceMean` over the spatial axes is global average pooling (the opset-18 exporters write
/// it so). Its axes are an attribute before opset 18 and an input from 18.
fn reduce_mean(
    node: &Node<'_>,
    values: &HashMap<String, Val>,
    b: &mut GraphBuilder,
) -> Result<Val> {
    node.only(&["axes", "keepdims", "noop_with_empty_axes"])?;
    let (x, dims) = activation(node, values, 0)?;
    let mut axes: Vec<i64> = axes(node, values, 18)?
        .iter()
        .map(|&a| if a < 0 { a + dims.len() as i64 } else { a })
        .collect();
    axes.sort_unstable();
    if dims.len() != 4 || axes != [2, 3] {
        return Err(node.fail(format!(
            "ReduceMean over axes {axes:?} of {dims:?}: only the mean over H and W (global \
             average pooling) is supported"
        )));
    }
    let c = dims[1];
    let y = b.unary(&node.name, "global_avg_pool", x)?;
    let dims = if node.int("keepdims", 1) != 0 {
        vec![1, c, 1, 1]
    } else {
        vec![1, c]
    };
    Ok(Val::Act { act: y, dims })
}

/// `Flatten`, and `Reshape`/`Squeeze` where they only flatten `[N, C, H, W]` to the row
/// `[N, C·H·W]` (or to the column `[C·H·W, 1]`, for a `Gemm` with `transA` = 1). Either keeps
/// the values in their order, so the `.cxrm` value is the flattened vector.
fn to_vector(node: &Node<'_>, values: &HashMap<String, Val>, b: &mut GraphBuilder) -> Result<Val> {
    let (x, dims) = activation(node, values, 0)?;
    let target: Vec<usize> = match node.proto.op_type.as_str() {
        "Flatten" => {
            node.only(&["axis"])?;
            let rank = dims.len() as i64;
            let axis = node.int("axis", 1);
            let axis = if axis < 0 { axis + rank } else { axis };
            if !(0..=rank).contains(&axis) {
                return Err(node.fail(format!("Flatten axis {axis} of {dims:?}")));
            }
            let (outer, inner) = dims.split_at(axis as usize);
            vec![outer.iter().product(), inner.iter().product()]
        }
        "Reshape" => {
            let shape = constant(node, values, 1)?
                .ints()
                .ok_or_else(|| node.fail("the shape must be integers"))?;
            reshape_target(node, dims, &shape)?
        }
        _ => {
            node.only(&["axes"])?;
            let rank = dims.len() as i64;
            let axes: Vec<usize> = axes(node, values, 13)?
                .iter()
                .map(|&a| (if a < 0 { a + rank } else { a }) as usize)
                .collect();
            dims.iter()
                .enumerate()
                .filter(|&(i, &d)| !(d == 1 && (axes.is_empty() && i > 0 || axes.contains(&i))))
                .map(|(_, &d)| d)
                .collect()
        }
    };
    if target == dims {
        return Ok(Val::Act {
            act: x.clone(),
            dims: target,
        });
    }
    let total: usize = dims.iter().product();
    if !(target == [1, total] || target == [total, 1]) {
        return Err(node.fail(format!(
            "{:?} to {target:?}: only flattening [N, C, H, W] to [N, C·H·W] (or to a column \
             [C·H·W, 1]) is supported",
            dims
        )));
    }
    let act = if x.shape.len() == 1 {
        x.clone()
    } else {
        b.unary(&node.name, "flatten", x)?
    };
    Ok(Val::Act { act, dims: target })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_follows_onnx_rules() {
        assert_eq!(reshape_dims(&[1, 8, 2, 2], &[1, -1]), Some(vec![1, 32]));
        assert_eq!(reshape_dims(&[1, 8, 2, 2], &[0, -1]), Some(vec![1, 32]));
        assert_eq!(reshape_dims(&[1, 8, 2, 2], &[-1, 32]), Some(vec![1, 32]));
        assert_eq!(reshape_dims(&[1, 8], &[3, -1]), None);
        assert_eq!(reshape_dims(&[1, 8], &[-1, -1]), None);
    }

    #[test]
    fn hostile_reshape_targets_are_refused_not_wrapped() {
        // Dims whose product overflows, whether or not a -1 is left to fill.
        let huge = 1i64 << 40;
        assert_eq!(reshape_dims(&[1, 8], &[huge, huge, -1]), None);
        assert_eq!(reshape_dims(&[1, 8], &[huge, huge, 8]), None);
        // A 0 past the input's rank copies nothing; a negative dim other than -1 is no dim.
        assert_eq!(reshape_dims(&[8], &[0, -1]), Some(vec![8, 1]));
        assert_eq!(reshape_dims(&[8], &[-1, 0]), None);
        assert_eq!(reshape_dims(&[1, 8], &[-2, -4]), None);
    }
}
