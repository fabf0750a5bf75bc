//! The `.cxrm` side of every importer: a graph built node by node, each node's output shape
//! inferred as it is added (spec §7's arithmetic), weights checked against those shapes, and
//! names made unique. The importers (ONNX, Keras) translate their own operators into these
//! calls and never write graph maps or tensors themselves.

use cxrm_format::container::graph::{Graph, INPUT, Node};
use cxrm_format::container::op::ints_value;
use cxrm_format::container::value::Value;
use cxrm_format::error::{Error, Result};
use std::collections::HashSet;

/// A value flowing through the graph: the node that gives it (or the model input) and its
/// shape for one image (`[C, H, W]` or `[F]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Act {
    pub node: String,
    pub shape: Vec<usize>,
}

/// A weight on its way into the file: row-major f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct Weight {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl Weight {
    pub fn new(shape: Vec<usize>, values: Vec<f32>) -> Result<Weight> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(values.len()) {
            return Err(Error::Usage(format!(
                "a weight of shape {shape:?} needs {} values, it has {}",
                n.map_or_else(|| "too many".into(), |n| n.to_string()),
                values.len()
            )));
        }
        Ok(Weight { shape, values })
    }
}

/// A convolution's geometry, as the importers find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub stride: [usize; 2],
    /// Top, left, bottom, right.
    pub padding: [usize; 4],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Default for ConvGeometry {
    fn default() -> Self {
        ConvGeometry {
            stride: [1, 1],
            padding: [0; 4],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

/// Output length of a window slid along one axis (spec §7), or `None` when it does not fit.
pub fn window_output(
    len: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad: [usize; 2],
) -> Option<usize> {
    let span = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    let padded = len.checked_add(pad[0])?.checked_add(pad[1])?;
    (padded >= span && stride > 0).then(|| (padded - span) / stride + 1)
}

/// TensorFlow's and ONNX's "same" padding for one axis: the output is `ceil(len / stride)`,
/// and the total padding is split with the odd pixel at the end (`SAME_UPPER`, TensorFlow) or
/// at the start (`SAME_LOWER`).
pub fn same_padding(
    len: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    upper: bool,
) -> [usize; 2] {
    let out = len.div_ceil(stride.max(1));
    let span = dilation * (kernel.saturating_sub(1)) + 1;
    let total = ((out.saturating_sub(1)) * stride + span).saturating_sub(len);
    let small = total / 2;
    if upper {
        [small, total - small]
    } else {
        [total - small, small]
    }
}

/// A graph under construction.
pub struct GraphBuilder {
    nodes: Vec<Node>,
    tensors: Vec<(String, Weight)>,
    names: HashSet<String>,
    input: Vec<usize>,
}

impl GraphBuilder {
    /// A graph whose input is one `[C, H, W]` image; returns the builder and the input value.
    pub fn new(input: [usize; 3]) -> (GraphBuilder, Act) {
        let mut names = HashSet::new();
        names.insert(INPUT.to_string());
        let b = GraphBuilder {
            nodes: Vec::new(),
            tensors: Vec::new(),
            names,
            input: input.to_vec(),
        };
        let x = Act {
            node: INPUT.into(),
            shape: input.to_vec(),
        };
        (b, x)
    }

    /// How many nodes the graph has so far.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The input shape `[C, H, W]`.
    pub fn input_shape(&self) -> &[usize] {
        &self.input
    }

    /// A node or tensor name based on `base`, made unique (`base`, `base_1`, …) and kept
    /// within the spec's name limits.
    fn unique(&mut self, base: &str) -> String {
        let mut base: String = base
            .chars()
            .map(|c| if c.is_control() { '_' } else { c })
            .collect();
        if base.is_empty() {
            base = "node".into();
        }
        while base.len() > 900 {
            base.pop();
        }
        let mut name = base.clone();
        let mut k = 1;
        while !self.names.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }

    fn push(&mut self, node: Node, shape: Vec<usize>) -> Result<Act> {
        if shape.contains(&0) {
            return Err(Error::Usage(format!(
                "{} ({}) would give an empty output {shape:?}",
                cxrm_format::text::escape(&node.name),
                node.op
            )));
        }
        let act = Act {
            node: node.name.clone(),
            shape,
        };
        self.nodes.push(node);
        Ok(act)
    }

    fn weight(&mut self, node: &str, role: &str, w: Weight) -> String {
        let name = self.unique(&format!("{node}.{role}"));
        self.tensors.push((name.clone(), w));
        name
    }

    fn fail(name: &str, op: &str, what: String) -> Error {
        Error::Usage(format!(
            "{} ({op}): {what}",
            cxrm_format::text::escape(name)
        ))
    }

    fn spatial(x: &Act, name: &str, op: &str) -> Result<[usize; 3]> {
        match x.shape[..] {
            [c, h, w] => Ok([c, h, w]),
            _ => Err(Self::fail(
                name,
                op,
                format!("needs a [C, H, W] input, not {:?}", x.shape),
            )),
        }
    }

    /// A convolution, weight `[O, I / groups, kh, kw]`.
    pub fn conv2d(
        &mut self,
        name: &str,
        x: &Act,
        weight: Weight,
        bias: Option<Vec<f32>>,
        g: ConvGeometry,
    ) -> Result<Act> {
        let [c, h, w] = Self::spatial(x, name, "conv2d")?;
        let [o, i, kh, kw] = weight.shape[..] else {
            return Err(Self::fail(
                name,
                "conv2d",
                format!("weight shape {:?} is not 4-D", weight.shape),
            ));
        };
        if g.groups == 0 || c % g.groups != 0 || o % g.groups != 0 || i * g.groups != c {
            return Err(Self::fail(
                name,
                "conv2d",
                format!(
                    "weight {:?} with groups {} does not fit {c} input channels",
                    weight.shape, g.groups
                ),
            ));
        }
        let oh = window_output(
            h,
            kh,
            g.stride[0],
            g.dilation[0],
            [g.padding[0], g.padding[2]],
        );
        let ow = window_output(
            w,
            kw,
            g.stride[1],
            g.dilation[1],
            [g.padding[1], g.padding[3]],
        );
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(Self::fail(
                name,
                "conv2d",
                format!("a {kh}x{kw} kernel does not fit a {h}x{w} input"),
            ));
        };
        let node_name = self.unique(name);
        let mut weights = vec![self.weight(&node_name, "weight", weight)];
        if let Some(b) = bias {
            weights.push(self.bias(&node_name, b, o)?);
        }
        let mut node = Node::new(&node_name, "conv2d", &[&x.node], &[]);
        node.weights = weights;
        if g.stride != [1, 1] {
            node = node.attr("stride", ints_value(&g.stride));
        }
        if g.padding != [0; 4] {
            node = node.attr("padding", ints_value(&g.padding));
        }
        if g.dilation != [1, 1] {
            node = node.attr("dilation", ints_value(&g.dilation));
        }
        if g.groups != 1 {
            node = node.attr("groups", Value::Int(g.groups as i64));
        }
        self.push(node, vec![o, oh, ow])
    }

    fn bias(&mut self, node: &str, b: Vec<f32>, len: usize) -> Result<String> {
        if b.len() != len {
            return Err(Self::fail(
                node,
                "bias",
                format!("has {} values for {len} outputs", b.len()),
            ));
        }
        Ok(self.weight(node, "bias", Weight::new(vec![len], b)?))
    }

    /// A fully connected layer, weight `[out, in]`, on a vector.
    pub fn dense(
        &mut self,
        name: &str,
        x: &Act,
        weight: Weight,
        bias: Option<Vec<f32>>,
    ) -> Result<Act> {
        let [out, inp] = weight.shape[..] else {
            return Err(Self::fail(
                name,
                "dense",
                format!("weight shape {:?} is not 2-D", weight.shape),
            ));
        };
        if x.shape != [inp] {
            return Err(Self::fail(
                name,
                "dense",
                format!(
                    "weight [{out}, {inp}] does not take an input of shape {:?}",
                    x.shape
                ),
            ));
        }
        let node_name = self.unique(name);
        let mut weights = vec![self.weight(&node_name, "weight", weight)];
        if let Some(b) = bias {
            weights.push(self.bias(&node_name, b, out)?);
        }
        let mut node = Node::new(&node_name, "dense", &[&x.node], &[]);
        node.weights = weights;
        self.push(node, vec![out])
    }

    /// Give the node that produced `x` a bias, if it is a convolution or dense layer without
    /// one and nothing else reads it yet: how `MatMul` + `Add` and `Conv` + `Add` fold.
    pub fn fold_bias(&mut self, x: &Act, bias: &[f32]) -> Result<bool> {
        let channels = x.shape[0];
        let read_elsewhere = self.nodes.iter().any(|n| n.inputs.contains(&x.node));
        let Some(pos) = self.nodes.iter().position(|n| n.name == x.node) else {
            return Ok(false);
        };
        let node = &self.nodes[pos];
        if read_elsewhere
            || !matches!(node.op.as_str(), "conv2d" | "dense")
            || node.weights.len() != 1
            || (bias.len() != channels && bias.len() != 1)
        {
            return Ok(false);
        }
        let values = if bias.len() == 1 {
            vec![bias[0]; channels]
        } else {
            bias.to_vec()
        };
        let node_name = node.name.clone();
        let b = self.bias(&node_name, values, channels)?;
        self.nodes[pos].weights.push(b);
        Ok(true)
    }

    /// Batch normalisation per channel.
    pub fn batch_norm(
        &mut self,
        name: &str,
        x: &Act,
        [gamma, beta, mean, var]: [Vec<f32>; 4],
        epsilon: f64,
    ) -> Result<Act> {
        let c = x.shape[0];
        if [&gamma, &beta, &mean, &var].iter().any(|v| v.len() != c) {
            return Err(Self::fail(
                name,
                "batch_norm",
                format!("parameters do not have {c} values each"),
            ));
        }
        let node_name = self.unique(name);
        let mut node = Node::new(&node_name, "batch_norm", &[&x.node], &[]);
        for (role, v) in [
            ("gamma", gamma),
            ("beta", beta),
            ("mean", mean),
            ("var", var),
        ] {
            node.weights
                .push(self.weight(&node_name, role, Weight::new(vec![c], v)?));
        }
        if epsilon != cxrm_format::container::op::DEFAULT_EPSILON {
            node = node.attr("epsilon", Value::Float(epsilon));
        }
        self.push(node, x.shape.clone())
    }

    /// An element-wise op or one without parameters: `relu`, `relu6`, `softmax`, `flatten`,
    /// `global_avg_pool`.
    pub fn unary(&mut self, name: &str, op: &str, x: &Act) -> Result<Act> {
        let shape = match op {
            "relu" | "relu6" | "sigmoid" | "hard_swish" => x.shape.clone(),
            "softmax" if x.shape.len() == 1 => x.shape.clone(),
            "flatten" => vec![x.shape.iter().product()],
            "global_avg_pool" => vec![Self::spatial(x, name, op)?[0]],
            _ => {
                return Err(Self::fail(
                    name,
                    op,
                    format!("cannot take an input of shape {:?}", x.shape),
                ));
            }
        };
        let node_name = self.unique(name);
        self.push(Node::new(&node_name, op, &[&x.node], &[]), shape)
    }

    /// `max_pool2d` or `avg_pool2d`.
    pub fn pool(
        &mut self,
        name: &str,
        op: &str,
        x: &Act,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> Result<Act> {
        let [c, h, w] = Self::spatial(x, name, op)?;
        let oh = window_output(h, kernel[0], stride[0], 1, [padding[0], padding[2]]);
        let ow = window_output(w, kernel[1], stride[1], 1, [padding[1], padding[3]]);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(Self::fail(
                name,
                op,
                format!(
                    "a {}x{} window does not fit a {h}x{w} input",
                    kernel[0], kernel[1]
                ),
            ));
        };
        let node_name = self.unique(name);
        let mut node = Node::new(&node_name, op, &[&x.node], &[])
            .attr("kernel", ints_value(&kernel))
            .attr("stride", ints_value(&stride));
        if padding != [0; 4] {
            node = node.attr("padding", ints_value(&padding));
        }
        self.push(node, vec![c, oh, ow])
    }

    /// The element-wise product of two values of equal shape, or a `[C, H, W]` map with each
    /// channel scaled by a `[C]` vector (squeeze-and-excite).
    pub fn mul(&mut self, name: &str, a: &Act, b: &Act) -> Result<Act> {
        let (a, b) = if a.shape.len() < b.shape.len() {
            (b, a)
        } else {
            (a, b)
        };
        let channel_scale = b.shape.len() == 1 && a.shape.len() == 3 && a.shape[0] == b.shape[0];
        if a.shape != b.shape && !channel_scale {
            return Err(Self::fail(
                name,
                "mul",
                format!("multiplies shapes {:?} and {:?}", a.shape, b.shape),
            ));
        }
        let node_name = self.unique(name);
        self.push(
            Node::new(&node_name, "mul", &[&a.node, &b.node], &[]),
            a.shape.clone(),
        )
    }

    /// Two or more values joined along their first axis: feature maps of equal H and W along
    /// the channels, or vectors end to end.
    pub fn concat(&mut self, name: &str, parts: &[&Act]) -> Result<Act> {
        let first = parts
            .first()
            .ok_or_else(|| Self::fail(name, "concat", "joins nothing".into()))?;
        if parts.len() < 2
            || parts
                .iter()
                .any(|p| p.shape.len() != first.shape.len() || p.shape[1..] != first.shape[1..])
        {
            let shapes: Vec<&Vec<usize>> = parts.iter().map(|p| &p.shape).collect();
            return Err(Self::fail(
                name,
                "concat",
                format!("joins shapes {shapes:?}: two or more vectors, or maps of equal H and W"),
            ));
        }
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        let node_name = self.unique(name);
        let inputs: Vec<&str> = parts.iter().map(|p| p.node.as_str()).collect();
        self.push(Node::new(&node_name, "concat", &inputs, &[]), shape)
    }

    /// Zeros around each channel of a feature map: top, left, bottom, right.
    pub fn pad(&mut self, name: &str, x: &Act, padding: [usize; 4]) -> Result<Act> {
        let [c, h, w] = Self::spatial(x, name, "pad")?;
        let node_name = self.unique(name);
        let node =
            Node::new(&node_name, "pad", &[&x.node], &[]).attr("padding", ints_value(&padding));
        self.push(
            node,
            vec![c, h + padding[0] + padding[2], w + padding[1] + padding[3]],
        )
    }

    /// The sum of two values of equal shape.
    pub fn add(&mut self, name: &str, a: &Act, b: &Act) -> Result<Act> {
        if a.shape != b.shape {
            return Err(Self::fail(
                name,
                "add",
                format!("adds shapes {:?} and {:?}", a.shape, b.shape),
            ));
        }
        let node_name = self.unique(name);
        self.push(
            Node::new(&node_name, "add", &[&a.node, &b.node], &[]),
            a.shape.clone(),
        )
    }

    /// The finished graph and its weights, checking that `output` is the last node (the
    /// model's output, spec §7).
    pub fn finish(self, output: &Act) -> Result<(Graph, Vec<(String, Weight)>)> {
        match self.nodes.last() {
            Some(last) if last.name == output.node => {}
            _ => {
                return Err(Error::Usage(format!(
                    "the model's output {} is not its last layer",
                    cxrm_format::text::escape(&output.node)
                )));
            }
        }
        if output.shape.len() != 1 {
            return Err(Error::Usage(format!(
                "the model's output has shape {:?}; a classifier gives one vector per image",
                output.shape
            )));
        }
        Ok((Graph { nodes: self.nodes }, self.tensors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_where_each_framework_does() {
        // 150 wide, 3x3, stride 2: out 75, total pad 1 (TensorFlow pads after).
        assert_eq!(same_padding(150, 3, 2, 1, true), [0, 1]);
        assert_eq!(same_padding(150, 3, 2, 1, false), [1, 0]);
        assert_eq!(same_padding(75, 3, 1, 1, true), [1, 1]);
        assert_eq!(same_padding(74, 1, 2, 1, true), [0, 0]);
        assert_eq!(window_output(150, 3, 2, 1, [0, 1]), Some(75));
        assert_eq!(window_output(2, 3, 1, 1, [0, 0]), None);
    }

    #[test]
    fn shapes_follow_the_ops_and_names_stay_unique() {
        let (mut b, x) = GraphBuilder::new([3, 8, 8]);
        let w = Weight::new(vec![4, 3, 3, 3], vec![0.0; 108]).unwrap();
        let g = ConvGeometry {
            padding: [1; 4],
            ..Default::default()
        };
        let y = b.conv2d("c", &x, w.clone(), None, g).unwrap();
        assert_eq!(y.shape, [4, 8, 8]);
        let y2 = b.conv2d("c", &x, w, Some(vec![0.0; 4]), g).unwrap();
        assert_eq!(y2.node, "c_1");
        let s = b.add("sum", &y, &y2).unwrap();
        let p = b
            .pool("p", "max_pool2d", &s, [2, 2], [2, 2], [0; 4])
            .unwrap();
        assert_eq!(p.shape, [4, 4, 4]);
        let f = b.unary("f", "flatten", &p).unwrap();
        let d = b
            .dense(
                "fc",
                &f,
                Weight::new(vec![2, 64], vec![0.0; 128]).unwrap(),
                None,
            )
            .unwrap();
        assert!(b.fold_bias(&d, &[1.0, 2.0]).unwrap());
        assert!(!b.fold_bias(&d, &[1.0, 2.0]).unwrap(), "only once");
        let (graph, tensors) = b.finish(&d).unwrap();
        assert_eq!(graph.nodes.len(), 6);
        assert_eq!(tensors.len(), 5);
        assert!(
            Weight::new(vec![2, 2], vec![0.0; 3]).is_err(),
            "values must fill the shape"
        );
    }
}
