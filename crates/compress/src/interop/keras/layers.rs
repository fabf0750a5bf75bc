//! Keras layers into `.cxrm` nodes. Keras is channels-last (NHWC); `.cxrm` is NCHW, so kernels
//! are transposed (HWIO → OIHW, depthwise `(kh, kw, C, M)` → `(C·M, 1, kh, kw)`, dense
//! `(in, out)` → `(out, in)`), and a `Dense` after a `Flatten` of a feature map gets its rows
//! reordered from Keras's H, W, C order to `.cxrm`'s C, H, W.
//!
//! Pixel arithmetic at the very start of a model (`Rescaling`, `Normalization`) becomes the
//! file's preprocessing (spec §6.1) instead of graph nodes. `ZeroPadding2D` before a
//! convolution becomes that convolution's padding; TensorFlow's "same" padding is resolved from
//! the inferred shapes, with the odd pixel at the end.

use super::archive::{Archive, group_names};
use crate::interop::builder::{Act, ConvGeometry, GraphBuilder, Weight, same_padding};
use cxrm_format::error::{Error, Result};
use serde_json::Value as Json;
use std::collections::HashMap;

/// Per-channel pixel arithmetic gathered from the model's first layers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pixels {
    pub scale: Option<Vec<f64>>,
    pub offset: Option<Vec<f64>>,
    pub mean: Option<Vec<f64>>,
    pub std: Option<Vec<f64>>,
}

/// A Keras tensor during translation.
#[derive(Debug, Clone)]
pub enum Tensor {
    /// The model input, possibly through `Rescaling`/`Normalization`: not a graph value yet.
    Pixels(Pixels),
    /// A graph value. `pad` is a pending `ZeroPadding2D` (top, left, bottom, right) for the
    /// next convolution; `hwc` is set on vectors flattened from a `[C, H, W]` map, whose
    /// Keras order is H, W, C.
    Value {
        act: Act,
        pad: [usize; 4],
        hwc: Option<[usize; 3]>,
    },
}

/// The translation of a whole model.
pub struct Translator<'a> {
    archive: &'a Archive,
    pub builder: GraphBuilder,
    input: Act,
    /// The preprocessing the graph input was taken with, once some layer used it.
    pub pixels: Option<Pixels>,
}

type Key = (String, usize);

fn fail(layer: &str, class: &str, what: impl std::fmt::Display) -> Error {
    Error::Usage(format!(
        "layer {} ({class}): {what}",
        cxrm_format::text::escape(layer)
    ))
}

fn usize_list(v: &Json) -> Option<Vec<usize>> {
    match v {
        Json::Array(a) => a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect(),
        Json::Number(n) => n.as_u64().map(|n| vec![n as usize]),
        _ => None,
    }
}

/// A `[h, w]` pair from an int or a list of two.
fn pair(v: &Json) -> Option<[usize; 2]> {
    match usize_list(v)?[..] {
        [a] => Some([a, a]),
        [a, b] => Some([a, b]),
        _ => None,
    }
}

fn floats(v: &Json) -> Option<Vec<f64>> {
    match v {
        Json::Array(a) => a.iter().map(Json::as_f64).collect(),
        Json::Number(n) => n.as_f64().map(|x| vec![x]),
        _ => None,
    }
}

/// The `[layer, node, tensor]` references of one call's arguments, in Keras 3's form
/// (`{"args": [...]}` with `keras_history`) or Keras 2's (`[["name", node, tensor, {}], ...]`).
fn call_inputs(node: &Json) -> Vec<Key> {
    fn history(t: &Json, out: &mut Vec<Key>) {
        match t {
            Json::Object(o) => {
                if let Some(h) = o
                    .get("config")
                    .and_then(|c| c.get("keras_history"))
                    .and_then(Json::as_array)
                    && let (Some(name), Some(k)) = (
                        h.first().and_then(Json::as_str),
                        h.get(1).and_then(Json::as_u64),
                    )
                {
                    out.push((name.to_string(), k as usize));
                }
            }
            Json::Array(items) => {
                // Keras 2: ["name", node, tensor, {}]
                if let (Some(name), Some(k)) = (
                    items.first().and_then(Json::as_str),
                    items.get(1).and_then(Json::as_u64),
                ) {
                    out.push((name.to_string(), k as usize));
                } else {
                    for i in items {
                        history(i, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    match node.get("args") {
        Some(args) => history(args, &mut out),
        None => history(node, &mut out),
    }
    out
}

/// A Keras kernel `[kh, kw, a, b]` (channels last) as `[rows, kh, kw]` planes, channels
/// first: entry `(y, x, i, j)` goes to plane `row(i, j)`. For a convolution (HWIO) the row is
/// `o·I + i` (OIHW); for a depthwise kernel `(kh, kw, C, M)` it is `c·M + m`.
fn to_channels_first(
    k: &[f32],
    [kh, kw, a, b]: [usize; 4],
    row: impl Fn(usize, usize) -> usize,
) -> Vec<f32> {
    let mut out = vec![0f32; k.len()];
    for y in 0..kh {
        for x in 0..kw {
            for i in 0..a {
                for j in 0..b {
                    out[(row(i, j) * kh + y) * kw + x] = k[((y * kw + x) * a + i) * b + j];
                }
            }
        }
    }
    out
}

/// The tensor `key` names. A nested model starts life with a node of its own (node 0), so a
/// reference to its first call may count that node (`[name, 1, 0]`) or not (`[name, 0, 0]`),
/// depending on where Keras wrote it; its loader subtracts one for models, and so does this.
fn lookup(
    tensors: &HashMap<Key, Tensor>,
    models: &std::collections::HashSet<String>,
    key: &Key,
) -> Option<Tensor> {
    tensors.get(key).cloned().or_else(|| {
        if !models.contains(&key.0) {
            return None;
        }
        let earlier = (key.0.clone(), key.1.checked_sub(1)?);
        tensors.get(&earlier).cloned()
    })
}

/// The `[layer, node]` references of a model's `input_layers` or `output_layers`.
fn endpoints(v: &Json) -> Vec<Key> {
    match v.as_array() {
        Some(a) if a.first().is_some_and(Json::is_string) => {
            vec![(
                a[0].as_str().unwrap_or_default().to_string(),
                a.get(1).and_then(Json::as_u64).unwrap_or(0) as usize,
            )]
        }
        Some(a) => a.iter().flat_map(endpoints).collect(),
        None => Vec::new(),
    }
}

impl<'a> Translator<'a> {
    pub fn new(archive: &'a Archive, input: [usize; 3]) -> Translator<'a> {
        let (builder, input) = GraphBuilder::new(input);
        Translator {
            archive,
            builder,
            input,
            pixels: None,
        }
    }

    /// Translate a `Functional` or `Sequential` model whose inputs are `inputs`; returns its
    /// outputs. `prefix` is its HDF5 group (empty for the top model).
    pub fn model(
        &mut self,
        model: &Json,
        prefix: &str,
        inputs: Vec<Tensor>,
    ) -> Result<Vec<Tensor>> {
        let class = model.get("class_name").and_then(Json::as_str).unwrap_or("");
        let config = model
            .get("config")
            .ok_or_else(|| Error::Usage("a model without config".into()))?;
        let layers = config
            .get("layers")
            .and_then(Json::as_array)
            .ok_or_else(|| Error::Usage(format!("model {class:?} lists no layers")))?;
        let classes: Vec<&str> = layers
            .iter()
            .map(|l| l.get("class_name").and_then(Json::as_str).unwrap_or(""))
            .collect();
        let sequential = class == "Sequential";
        let groups = group_names(prefix, &classes, sequential);
        let mut tensors: HashMap<Key, Tensor> = HashMap::new();
        let models: std::collections::HashSet<String> = layers
            .iter()
            .filter(|l| {
                matches!(
                    l.get("class_name").and_then(Json::as_str),
                    Some("Functional" | "Sequential" | "Model")
                )
            })
            .filter_map(|l| {
                l.get("name")
                    .or_else(|| l.get("config").and_then(|c| c.get("name")))
                    .and_then(Json::as_str)
                    .map(str::to_string)
            })
            .collect();
        if sequential {
            let mut x = inputs
                .into_iter()
                .next()
                .ok_or_else(|| Error::Usage("a Sequential model without input".into()))?;
            for (layer, group) in layers.iter().zip(&groups) {
                if layer.get("class_name").and_then(Json::as_str) == Some("InputLayer") {
                    continue;
                }
                x = self.layer(layer, group.as_deref(), vec![x])?;
            }
            return Ok(vec![x]);
        }
        let input_keys = endpoints(config.get("input_layers").unwrap_or(&Json::Null));
        if input_keys.len() != inputs.len() {
            return Err(Error::Usage(format!(
                "a model with {} inputs called with {}",
                input_keys.len(),
                inputs.len()
            )));
        }
        for (key, t) in input_keys.into_iter().zip(inputs) {
            tensors.insert(key, t);
        }
        for (layer, group) in layers.iter().zip(&groups) {
            let name = layer
                .get("name")
                .or_else(|| layer.get("config").and_then(|c| c.get("name")))
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string();
            if layer.get("class_name").and_then(Json::as_str) == Some("InputLayer") {
                continue;
            }
            let calls = layer
                .get("inbound_nodes")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default();
            for (k, call) in calls.iter().enumerate() {
                let args: Vec<Tensor> = call_inputs(call)
                    .into_iter()
                    .map(|key| {
                        lookup(&tensors, &models, &key).ok_or_else(|| {
                            Error::Usage(format!(
                                "layer {} reads {}, which no earlier layer computes",
                                cxrm_format::text::escape(&name),
                                cxrm_format::text::escape(&key.0)
                            ))
                        })
                    })
                    .collect::<Result<_>>()?;
                let out = self.layer(layer, group.as_deref(), args)?;
                tensors.insert((name.clone(), k), out);
            }
        }
        endpoints(config.get("output_layers").unwrap_or(&Json::Null))
            .into_iter()
            .map(|key| {
                lookup(&tensors, &models, &key).ok_or_else(|| {
                    Error::Usage(format!(
                        "the model's output {} is never computed",
                        cxrm_format::text::escape(&key.0)
                    ))
                })
            })
            .collect()
    }

    /// The graph value of `t`: the input itself once the preprocessing is settled.
    fn value(
        &mut self,
        t: Tensor,
        layer: &str,
        class: &str,
    ) -> Result<(Act, [usize; 4], Option<[usize; 3]>)> {
        match t {
            Tensor::Value { act, pad, hwc } => Ok((act, pad, hwc)),
            Tensor::Pixels(p) => {
                match &self.pixels {
                    Some(q) if *q != p => {
                        return Err(fail(
                            layer,
                            class,
                            "the model uses its input with two different preprocessings",
                        ));
                    }
                    _ => self.pixels = Some(p),
                }
                Ok((self.input.clone(), [0; 4], None))
            }
        }
    }

    /// The graph value of `t`, a pending `ZeroPadding2D` made a `pad` node (before a
    /// convolution it is absorbed instead; before pooling the zeros must take part).
    fn plain(&mut self, t: Tensor, layer: &str, class: &str) -> Result<Act> {
        let (act, pad, _) = self.value(t, layer, class)?;
        if pad == [0; 4] {
            return Ok(act);
        }
        self.builder.pad(&format!("{layer}_pad"), &act, pad)
    }

    fn out(act: Act) -> Tensor {
        Tensor::Value {
            act,
            pad: [0; 4],
            hwc: None,
        }
    }

    /// One call of one layer.
    fn layer(&mut self, layer: &Json, group: Option<&str>, args: Vec<Tensor>) -> Result<Tensor> {
        let class = layer.get("class_name").and_then(Json::as_str).unwrap_or("");
        let c = layer.get("config").cloned().unwrap_or(Json::Null);
        let name = c
            .get("name")
            .and_then(Json::as_str)
            .or_else(|| layer.get("name").and_then(Json::as_str))
            .unwrap_or(class)
            .to_string();
        let name = name.as_str();
        let group = group.unwrap_or("");
        let one = |args: Vec<Tensor>| -> Result<Tensor> {
            let n = args.len();
            args.into_iter()
                .next()
                .filter(|_| n == 1)
                .ok_or_else(|| fail(name, class, format!("takes one input, got {n}")))
        };
        let data_format = c.get("data_format").and_then(Json::as_str);
        if data_format.is_some_and(|f| f != "channels_last") {
            return Err(fail(
                name,
                class,
                "only data_format channels_last is supported",
            ));
        }
        match class {
            "Rescaling" | "Normalization" => {
                let Tensor::Pixels(mut p) = one(args)? else {
                    return Err(fail(
                        name,
                        class,
                        "is supported only at the start of the model, where it becomes the \
                         file's preprocessing",
                    ));
                };
                if class == "Rescaling" {
                    if p.scale.is_some() || p.mean.is_some() {
                        return Err(fail(name, class, "a second Rescaling is not supported"));
                    }
                    p.scale =
                        Some(floats(&c["scale"]).ok_or_else(|| fail(name, class, "bad scale"))?);
                    p.offset = Some(floats(&c["offset"]).unwrap_or_else(|| vec![0.0]));
                } else {
                    if p.mean.is_some() {
                        return Err(fail(name, class, "a second Normalization is not supported"));
                    }
                    let (mean, var) = match (floats(&c["mean"]), floats(&c["variance"])) {
                        (Some(m), Some(v)) => (m, v),
                        _ => {
                            let vars = self.archive.variables(group, 2)?;
                            (
                                vars[0].1.iter().map(|&x| x as f64).collect(),
                                vars[1].1.iter().map(|&x| x as f64).collect(),
                            )
                        }
                    };
                    if c.get("invert").and_then(Json::as_bool) == Some(true) {
                        return Err(fail(name, class, "invert = true is not supported"));
                    }
                    // Keras divides by max(sqrt(variance), 1e-7), in float32.
                    let std = var
                        .iter()
                        .map(|&v| ((v as f32).sqrt()).max(1e-7) as f64)
                        .collect();
                    p.mean = Some(mean);
                    p.std = Some(std);
                }
                Ok(Tensor::Pixels(p))
            }
            "Conv2D" | "DepthwiseConv2D" | "SeparableConv2D" => {
                self.conv(layer, &c, class, name, group, one(args)?)
            }
            "Dense" => {
                let (x, pad, hwc) = self.value(one(args)?, name, class)?;
                if pad != [0; 4] {
                    return Err(fail(name, class, "follows a ZeroPadding2D"));
                }
                let use_bias = c.get("use_bias").and_then(Json::as_bool).unwrap_or(true);
                let vars = self.archive.variables(group, 1 + use_bias as usize)?;
                let (kshape, k) = &vars[0];
                let [inp, out] = kshape[..] else {
                    return Err(fail(
                        name,
                        class,
                        format!("kernel shape {kshape:?} is not [in, out]"),
                    ));
                };
                // Row r of `.cxrm`'s weight is output r; column j the input in C, H, W order.
                let mut w = vec![0f32; inp * out];
                for i in 0..inp {
                    let j = match hwc {
                        // Keras's H, W, C position `(h·W + w)·C + c` is `c·H·W + h·W + w` here.
                        Some([ch, h, wd]) => (i % ch) * (h * wd) + i / ch,
                        None => i,
                    };
                    for o in 0..out {
                        w[o * inp + j] = k[i * out + o];
                    }
                }
                let bias = use_bias.then(|| vars[1].1.clone());
                let y = self
                    .builder
                    .dense(name, &x, Weight::new(vec![out, inp], w)?, bias)?;
                self.activation(&c, class, name, y)
            }
            "BatchNormalization" => {
                let x = self.plain(one(args)?, name, class)?;
                let axis = c.get("axis").and_then(Json::as_i64).unwrap_or(-1);
                let rank = x.shape.len() as i64 + 1;
                if axis != -1 && axis != rank - 1 {
                    return Err(fail(
                        name,
                        class,
                        format!("axis {axis}: only the channel axis is supported"),
                    ));
                }
                let center = c.get("center").and_then(Json::as_bool).unwrap_or(true);
                let scale = c.get("scale").and_then(Json::as_bool).unwrap_or(true);
                let n = 2 + center as usize + scale as usize;
                let mut vars = self
                    .archive
                    .variables(group, n)?
                    .into_iter()
                    .map(|(_, v)| v);
                let channels = x.shape[0];
                let gamma = if scale {
                    vars.next().unwrap_or_default()
                } else {
                    vec![1.0; channels]
                };
                let beta = if center {
                    vars.next().unwrap_or_default()
                } else {
                    vec![0.0; channels]
                };
                let mean = vars.next().unwrap_or_default();
                let var = vars.next().unwrap_or_default();
                let eps = c.get("epsilon").and_then(Json::as_f64).unwrap_or(1e-3);
                let y = self
                    .builder
                    .batch_norm(name, &x, [gamma, beta, mean, var], eps)?;
                Ok(Self::out(y))
            }
            "Activation" => {
                let x = one(args)?;
                let (act, pad, hwc) = self.value(x, name, class)?;
                let kind = c
                    .get("activation")
                    .and_then(Json::as_str)
                    .unwrap_or("linear");
                if kind == "linear" {
                    return Ok(Tensor::Value { act, pad, hwc });
                }
                let y = self.activation(&c, class, name, act)?;
                Ok(y)
            }
            "ReLU" => {
                let x = self.plain(one(args)?, name, class)?;
                let max = c.get("max_value").and_then(Json::as_f64);
                let slope = c
                    .get("negative_slope")
                    .and_then(Json::as_f64)
                    .unwrap_or(0.0);
                let threshold = c.get("threshold").and_then(Json::as_f64).unwrap_or(0.0);
                if slope != 0.0 || threshold != 0.0 {
                    return Err(fail(name, class, "negative_slope and threshold must be 0"));
                }
                let op = match max {
                    None => "relu",
                    Some(6.0) => "relu6",
                    Some(m) => {
                        return Err(fail(
                            name,
                            class,
                            format!("max_value {m}: only none or 6 are supported"),
                        ));
                    }
                };
                Ok(Self::out(self.builder.unary(name, op, &x)?))
            }
            "Concatenate" => {
                let axis = c.get("axis").and_then(Json::as_i64).unwrap_or(-1);
                let parts: Vec<Act> = args
                    .into_iter()
                    .map(|t| self.plain(t, name, class))
                    .collect::<Result<_>>()?;
                // Keras's last axis is the channels of an H, W, C map, or a vector's features.
                let rank = parts.first().map_or(1, |p| p.shape.len() as i64 + 1);
                if axis != -1 && axis != rank - 1 {
                    return Err(fail(
                        name,
                        class,
                        format!("axis {axis}: only the channel axis is supported"),
                    ));
                }
                let refs: Vec<&Act> = parts.iter().collect();
                Ok(Self::out(self.builder.concat(name, &refs)?))
            }
            "Multiply" => {
                let mut xs = args.into_iter();
                let (Some(a), Some(b), None) = (xs.next(), xs.next(), xs.next()) else {
                    return Err(fail(name, class, "multiplies exactly two inputs"));
                };
                let (a, b) = (self.plain(a, name, class)?, self.plain(b, name, class)?);
                Ok(Self::out(self.builder.mul(name, &a, &b)?))
            }
            "Add" => {
                let mut xs = args.into_iter();
                let first = xs.next().ok_or_else(|| fail(name, class, "adds nothing"))?;
                let mut sum = self.plain(first, name, class)?;
                let mut any = false;
                for t in xs {
                    let x = self.plain(t, name, class)?;
                    sum = self.builder.add(name, &sum, &x)?;
                    any = true;
                }
                if !any {
                    return Err(fail(name, class, "needs two inputs"));
                }
                Ok(Self::out(sum))
            }
            "MaxPooling2D" | "AveragePooling2D" => {
                let x = self.plain(one(args)?, name, class)?;
                let kernel =
                    pair(&c["pool_size"]).ok_or_else(|| fail(name, class, "bad pool_size"))?;
                let stride = match &c["strides"] {
                    Json::Null => kernel,
                    v => pair(v).ok_or_else(|| fail(name, class, "bad strides"))?,
                };
                let padding = self.padding(&c, &x, kernel, stride, [1, 1], name, class)?;
                let op = if class == "MaxPooling2D" {
                    "max_pool2d"
                } else {
                    "avg_pool2d"
                };
                Ok(Self::out(
                    self.builder.pool(name, op, &x, kernel, stride, padding)?,
                ))
            }
            "GlobalAveragePooling2D" => {
                let x = self.plain(one(args)?, name, class)?;
                // With keepdims the result is [1, 1, C]; the `.cxrm` vector [C] stands for it,
                // and a 1×1 convolution or a Multiply after it reads it as such.
                Ok(Self::out(self.builder.unary(
                    name,
                    "global_avg_pool",
                    &x,
                )?))
            }
            "Flatten" => {
                let x = self.plain(one(args)?, name, class)?;
                if x.shape.len() == 1 {
                    return Ok(Self::out(x));
                }
                let hwc = match x.shape[..] {
                    [ch, h, w] if h * w > 1 => Some([ch, h, w]),
                    _ => None,
                };
                let y = self.builder.unary(name, "flatten", &x)?;
                Ok(Tensor::Value {
                    act: y,
                    pad: [0; 4],
                    hwc,
                })
            }
            "Dropout" | "SpatialDropout2D" | "GaussianDropout" | "GaussianNoise" => one(args),
            "ZeroPadding2D" => {
                let (act, pad, hwc) = self.value(one(args)?, name, class)?;
                let p = &c["padding"];
                let [t, b, l, r] = match p {
                    Json::Array(a) if a.len() == 2 && a.iter().all(Json::is_array) => {
                        let h = pair(&a[0]).ok_or_else(|| fail(name, class, "bad padding"))?;
                        let w = pair(&a[1]).ok_or_else(|| fail(name, class, "bad padding"))?;
                        [h[0], h[1], w[0], w[1]]
                    }
                    v => {
                        let [h, w] = pair(v).ok_or_else(|| fail(name, class, "bad padding"))?;
                        [h, h, w, w]
                    }
                };
                let pad = [pad[0] + t, pad[1] + l, pad[2] + b, pad[3] + r];
                Ok(Tensor::Value { act, pad, hwc })
            }
            "Functional" | "Sequential" | "Model" => {
                let mut outs = self.model(layer, group, args)?;
                if outs.len() != 1 {
                    return Err(fail(
                        name,
                        class,
                        "nested models with several outputs are not supported",
                    ));
                }
                Ok(outs.remove(0))
            }
            other => Err(fail(
                name,
                other,
                "this layer class is not supported by cxrm import",
            )),
        }
    }

    /// A fused `activation` of Conv2D/Dense/Activation.
    fn activation(&mut self, c: &Json, class: &str, name: &str, y: Act) -> Result<Tensor> {
        let kind = c
            .get("activation")
            .and_then(Json::as_str)
            .unwrap_or("linear");
        let op = match kind {
            "linear" => return Ok(Self::out(y)),
            "relu" => "relu",
            "relu6" => "relu6",
            "softmax" => "softmax",
            "sigmoid" => "sigmoid",
            // Keras 3 saves hard_swish and swish under their canonical names.
            "hard_silu" | "hard_swish" => "hard_swish",
            "silu" | "swish" => {
                let s = self
                    .builder
                    .unary(&format!("{name}_sigmoid"), "sigmoid", &y)?;
                return Ok(Self::out(self.builder.mul(
                    &format!("{name}_{kind}"),
                    &y,
                    &s,
                )?));
            }
            other => {
                return Err(fail(
                    name,
                    class,
                    format!("activation {other:?} is not supported"),
                ));
            }
        };
        let node = format!("{name}_{kind}");
        Ok(Self::out(self.builder.unary(&node, op, &y)?))
    }

    #[allow(clippy::too_many_arguments)]
    fn padding(
        &self,
        c: &Json,
        x: &Act,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        name: &str,
        class: &str,
    ) -> Result<[usize; 4]> {
        let (h, w) = match x.shape[..] {
            [_, h, w] => (h, w),
            _ => {
                return Err(fail(
                    name,
                    class,
                    format!("needs a feature map, not {:?}", x.shape),
                ));
            }
        };
        match c.get("padding").and_then(Json::as_str).unwrap_or("valid") {
            "valid" => Ok([0; 4]),
            "same" => {
                let [t, b] = same_padding(h, kernel[0], stride[0], dilation[0], true);
                let [l, r] = same_padding(w, kernel[1], stride[1], dilation[1], true);
                Ok([t, l, b, r])
            }
            other => Err(fail(
                name,
                class,
                format!("padding {other:?} is not supported"),
            )),
        }
    }

    /// A 1×1 `Conv2D` of a pooled `[1, 1, C]` value (squeeze-and-excite): a dense layer on
    /// the `.cxrm` vector `[C]`.
    fn conv_on_vector(
        &mut self,
        c: &Json,
        class: &str,
        name: &str,
        group: &str,
        x: &Act,
    ) -> Result<Tensor> {
        let use_bias = c.get("use_bias").and_then(Json::as_bool).unwrap_or(true);
        let vars = self.archive.variables(group, 1 + use_bias as usize)?;
        let (kshape, k) = &vars[0];
        let [1, 1, kin, kout] = kshape[..] else {
            return Err(fail(
                name,
                class,
                format!("a {kshape:?} kernel on a pooled vector (only 1x1 is)"),
            ));
        };
        let mut w = vec![0f32; kin * kout];
        for i in 0..kin {
            for o in 0..kout {
                w[o * kin + i] = k[i * kout + o];
            }
        }
        let bias = use_bias.then(|| vars[1].1.clone());
        let y = self
            .builder
            .dense(name, x, Weight::new(vec![kout, kin], w)?, bias)?;
        self.activation(c, class, name, y)
    }

    fn conv(
        &mut self,
        _layer: &Json,
        c: &Json,
        class: &str,
        name: &str,
        group: &str,
        x: Tensor,
    ) -> Result<Tensor> {
        let (x, zero_pad, _) = self.value(x, name, class)?;
        if x.shape.len() == 1 && class == "Conv2D" && zero_pad == [0; 4] {
            return self.conv_on_vector(c, class, name, group, &x);
        }
        let [ch, h, w] = match x.shape[..] {
            [a, b, d] => [a, b, d],
            _ => {
                return Err(fail(
                    name,
                    class,
                    format!("needs a feature map, not {:?}", x.shape),
                ));
            }
        };
        let stride = pair(&c["strides"]).unwrap_or([1, 1]);
        let dilation = pair(&c["dilation_rate"]).unwrap_or([1, 1]);
        let use_bias = c.get("use_bias").and_then(Json::as_bool).unwrap_or(true);
        let n_vars = match class {
            "SeparableConv2D" => 2,
            _ => 1,
        } + use_bias as usize;
        let vars = self.archive.variables(group, n_vars)?;
        let (kshape, k) = &vars[0];
        let [kh, kw, kin, kout] = kshape[..] else {
            return Err(fail(
                name,
                class,
                format!("kernel shape {kshape:?} is not 4-D"),
            ));
        };
        // "same" is resolved on the input as the convolution sees it, padding included.
        let padded = Act {
            node: x.node.clone(),
            shape: vec![
                ch,
                h + zero_pad[0] + zero_pad[2],
                w + zero_pad[1] + zero_pad[3],
            ],
        };
        let same = self.padding(c, &padded, [kh, kw], stride, dilation, name, class)?;
        let padding = [
            same[0] + zero_pad[0],
            same[1] + zero_pad[1],
            same[2] + zero_pad[2],
            same[3] + zero_pad[3],
        ];
        let bias = use_bias.then(|| vars[n_vars - 1].1.clone());
        let y = match class {
            "Conv2D" => {
                let groups = c.get("groups").and_then(Json::as_u64).unwrap_or(1) as usize;
                // HWIO → OIHW.
                let oihw = to_channels_first(k, [kh, kw, kin, kout], |i, o| o * kin + i);
                let g = ConvGeometry {
                    stride,
                    padding,
                    dilation,
                    groups,
                };
                self.builder.conv2d(
                    name,
                    &x,
                    Weight::new(vec![kout, kin, kh, kw], oihw)?,
                    bias,
                    g,
                )?
            }
            _ => {
                // Depthwise (kh, kw, C, M) → (C·M, 1, kh, kw); output channel c·M + m.
                let m = kout;
                let dw = to_channels_first(k, [kh, kw, kin, m], |c, mm| c * m + mm);
                let g = ConvGeometry {
                    stride,
                    padding,
                    dilation,
                    groups: kin,
                };
                let depthwise_bias = if class == "DepthwiseConv2D" {
                    bias.clone()
                } else {
                    None
                };
                let dname = if class == "SeparableConv2D" {
                    format!("{name}_depthwise")
                } else {
                    name.to_string()
                };
                let d = self.builder.conv2d(
                    &dname,
                    &x,
                    Weight::new(vec![kin * m, 1, kh, kw], dw)?,
                    depthwise_bias,
                    g,
                )?;
                if class == "DepthwiseConv2D" {
                    d
                } else {
                    // Pointwise (1, 1, C·M, out) → (out, C·M, 1, 1).
                    let (pshape, p) = &vars[1];
                    let [1, 1, pin, pout] = pshape[..] else {
                        return Err(fail(
                            name,
                            class,
                            format!("pointwise kernel shape {pshape:?}"),
                        ));
                    };
                    let mut pw = vec![0f32; p.len()];
                    for i in 0..pin {
                        for o in 0..pout {
                            pw[o * pin + i] = p[i * pout + o];
                        }
                    }
                    let g = ConvGeometry::default();
                    self.builder.conv2d(
                        &format!("{name}_pointwise"),
                        &d,
                        Weight::new(vec![pout, pin, 1, 1], pw)?,
                        bias,
                        g,
                    )?
                }
            }
        };
        self.activation(c, class, name, y)
    }

    /// The model input as a tensor of the translation.
    pub fn input_tensor() -> Tensor {
        Tensor::Pixels(Pixels::default())
    }

    /// The graph value a model output ends as.
    pub fn output_act(&mut self, t: Tensor) -> Result<Act> {
        match t {
            Tensor::Value {
                act,
                pad: [0, 0, 0, 0],
                ..
            } => Ok(act),
            Tensor::Value { .. } => Err(Error::Usage("the model ends in a ZeroPadding2D".into())),
            Tensor::Pixels(_) => Err(Error::Usage("the model's output is its input".into())),
        }
    }
}
