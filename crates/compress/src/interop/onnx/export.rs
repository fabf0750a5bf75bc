//! `cxrm export MODEL.cxrm -o MODEL.onnx`: any `.cxrm` model as an ONNX graph (opset 17), so
//! it runs in onnxruntime and everything else that reads ONNX.
//!
//! Weights are decoded to dense f32, except the factored ones: a low-rank layer becomes its two
//! factor products and a Tucker-2 layer its three (two 1×1 convolutions around the core), so
//! ONNX runtimes keep the factored speed. XNOR layers are spelled out with standard operators:
//! the input's signs (`+1` where `x ≥ 0`), the product with the decoded binary weights, times
//! `K`, the mean of `|x|` over each receptive field. The metadata, preprocessing included,
//! goes into `metadata_props` as `cxrm:KEY` = the value's JSON text, which `cxrm import` reads
//! back.

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto::Dimension, tensor_shape_proto::dimension,
    type_proto,
};
use cxrm_format::container::graph::{INPUT, Node};
use cxrm_format::container::op::{Conv2d, Op};
use cxrm_format::container::reader::Cxrm;
use cxrm_format::container::value::Value;
use cxrm_format::encoding::Factored;
use cxrm_format::error::{Error, Result};

/// The opset the exporter writes.
pub const OPSET: i64 = 17;

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

/// The graph being written.
struct Writer {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Writer {
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        let out = format!("{name}:out");
        self.nodes.push(NodeProto {
            name: name.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    fn ints(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }

    fn tensor(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }

    fn conv(
        &mut self,
        name: &str,
        x: &str,
        w: &str,
        b: Option<&str>,
        g: &Conv2d,
        kernel: [usize; 2],
    ) -> String {
        let mut inputs = vec![x, w];
        inputs.extend(b);
        let attrs = vec![
            attr_ints("kernel_shape", &kernel),
            attr_ints("strides", &g.stride),
            attr_ints("pads", &g.padding),
            attr_ints("dilations", &g.dilation),
            attr_int("group", g.groups as i64),
        ];
        self.node("Conv", name, &inputs, attrs)
    }

    fn gemm(&mut self, name: &str, x: &str, w: &str, b: Option<&str>) -> String {
        let mut inputs = vec![x, w];
        inputs.extend(b);
        self.node("Gemm", name, &inputs, vec![attr_int("transB", 1)])
    }
}

/// A weight as the file stores it: dense values, or factors kept apart.
enum Weight {
    Dense(Vec<usize>, Vec<f32>),
    LowRank(cxrm_format::encoding::lowrank::LowRank, Vec<usize>),
    Tucker(cxrm_format::encoding::tucker::Tucker, Vec<usize>),
}

fn weight(file: &Cxrm<'_>, name: &str) -> Result<Weight> {
    let record = file.tensor(name)?;
    let shape: Vec<usize> = record.shape.iter().map(|&d| d as usize).collect();
    match file.read_factored(record)? {
        Some(Factored::LowRank(l)) => Ok(Weight::LowRank(l, shape)),
        Some(Factored::Tucker(t)) => Ok(Weight::Tucker(t, shape)),
        Some(Factored::Binary(b)) => Ok(Weight::Dense(shape, b.to_f32())),
        None => {
            let data = file.decode_record(record)?;
            let values = data.to_f64_vec().into_iter().map(|v| v as f32).collect();
            Ok(Weight::Dense(shape, values))
        }
    }
}

fn dense_values(file: &Cxrm<'_>, name: &str) -> Result<Vec<f32>> {
    let data = file.decode_record(file.tensor(name)?)?;
    Ok(data.to_f64_vec().into_iter().map(|v| v as f32).collect())
}

/// `[rows, cols]` row-major, transposed.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|k| v[(k % rows) * cols + k / rows])
        .collect()
}

/// Export a model file as an ONNX model's bytes.
pub fn export(file: &Cxrm<'_>) -> Result<Vec<u8>> {
    use prost::Message;
    let graph = file
        .graph()?
        .ok_or_else(|| Error::Usage("the file has no graph to export".into()))?;
    let metadata = file.metadata()?;
    let spec = cxrm_format::container::input_spec::InputSpec::from_metadata(&metadata)?;
    let mut w = Writer {
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    // ONNX value names: the input, then each node's output.
    let mut names: std::collections::HashMap<String, String> = Default::default();
    names.insert(INPUT.into(), INPUT.into());
    let mut spatial: std::collections::HashMap<String, bool> = Default::default();
    spatial.insert(INPUT.into(), true);
    for node in &graph.nodes {
        let op = Op::parse(node)?;
        let x = node
            .inputs
            .first()
            .map(|i| names[i].clone())
            .unwrap_or_default();
        let (out, is_spatial) = node_to_onnx(file, &mut w, node, &op, &x, &names, &spatial)?;
        names.insert(node.name.clone(), out);
        spatial.insert(node.name.clone(), is_spatial);
    }
    let last = graph
        .nodes
        .last()
        .ok_or_else(|| Error::Usage("the graph has no nodes".into()))?;
    let output = names[&last.name].clone();
    let dim = |v: dimension::Value| Dimension {
        value: Some(v),
        ..Default::default()
    };
    let tensor_type = |dims: Vec<Dimension>| TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: DataType::Float as i32,
            shape: Some(TensorShapeProto { dim: dims }),
        })),
        ..Default::default()
    };
    let batch = || dim(dimension::Value::DimParam("batch".into()));
    let input = ValueInfoProto {
        name: INPUT.into(),
        r#type: Some(tensor_type(vec![
            batch(),
            dim(dimension::Value::DimValue(spec.channels as i64)),
            dim(dimension::Value::DimValue(spec.height as i64)),
            dim(dimension::Value::DimValue(spec.width as i64)),
        ])),
        ..Default::default()
    };
    let output = ValueInfoProto {
        name: output,
        r#type: Some(tensor_type(vec![
            batch(),
            dim(dimension::Value::DimParam("classes".into())),
        ])),
        ..Default::default()
    };
    let metadata_props = metadata
        .iter()
        .map(|(k, v)| StringStringEntryProto {
            key: format!("cxrm:{k}"),
            value: match v {
                Value::String(s) => s.clone(),
                other => cxrm_format::json::value_to_json(other).to_string(),
            },
        })
        .collect();
    let name = cxrm_format::container::value::get(&metadata, "model.name")
        .and_then(Value::as_str)
        .unwrap_or("cxrm-model")
        .to_string();
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "cxrm".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(GraphProto {
            name,
            node: w.nodes,
            initializer: w.initializers,
            input: vec![input],
            output: vec![output],
            ..Default::default()
        }),
        metadata_props,
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

/// One `.cxrm` node as ONNX nodes; returns its output's name and whether it is `[N, C, H, W]`.
fn node_to_onnx(
    file: &Cxrm<'_>,
    w: &mut Writer,
    node: &Node,
    op: &Op,
    x: &str,
    names: &std::collections::HashMap<String, String>,
    spatial: &std::collections::HashMap<String, bool>,
) -> Result<(String, bool)> {
    let n = node.name.as_str();
    let x_spatial = node.inputs.first().is_some_and(|i| spatial[i]);
    let bias = |w: &mut Writer| -> Result<Option<String>> {
        match node.weights.get(1) {
            Some(b) => {
                let v = dense_values(file, b)?;
                Ok(Some(w.tensor(&format!("{n}.bias"), &[v.len()], &v)))
            }
            None => Ok(None),
        }
    };
    let weight_name = node.weights.first().map(String::as_str).unwrap_or("");
    Ok(match op {
        Op::Conv2d(g) => {
            let b = bias(w)?;
            let out = match weight(file, weight_name)? {
                Weight::Dense(shape, v) => {
                    let t = w.tensor(&format!("{n}.weight"), &shape, &v);
                    w.conv(n, x, &t, b.as_deref(), g, [shape[2], shape[3]])
                }
                Weight::LowRank(l, shape) => {
                    // W = U·V, V's rows as filters with the layer's geometry, U as a 1×1.
                    let (o, c, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
                    let v = w.tensor(&format!("{n}.v"), &[l.rank, c, kh, kw], &l.v);
                    let inner = w.conv(&format!("{n}.v"), x, &v, None, g, [kh, kw]);
                    let u = w.tensor(&format!("{n}.u"), &[o, l.rank, 1, 1], &l.u);
                    let one = Conv2d {
                        stride: [1, 1],
                        padding: [0; 4],
                        dilation: [1, 1],
                        groups: 1,
                    };
                    w.conv(n, &inner, &u, b.as_deref(), &one, [1, 1])
                }
                Weight::Tucker(t, shape) => {
                    let (o, c, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
                    let one = Conv2d {
                        stride: [1, 1],
                        padding: [0; 4],
                        dilation: [1, 1],
                        groups: 1,
                    };
                    let u_in = transpose(&t.u_in, c, t.rank_in);
                    let a = w.tensor(&format!("{n}.u_in"), &[t.rank_in, c, 1, 1], &u_in);
                    let first = w.conv(&format!("{n}.u_in"), x, &a, None, &one, [1, 1]);
                    let core = w.tensor(
                        &format!("{n}.core"),
                        &[t.rank_out, t.rank_in, kh, kw],
                        &t.core,
                    );
                    let mid = w.conv(&format!("{n}.core"), &first, &core, None, g, [kh, kw]);
                    let u = w.tensor(&format!("{n}.u_out"), &[o, t.rank_out, 1, 1], &t.u_out);
                    w.conv(n, &mid, &u, b.as_deref(), &one, [1, 1])
                }
            };
            (out, true)
        }
        Op::Dense => {
            let b = bias(w)?;
            let out = match weight(file, weight_name)? {
                Weight::Dense(shape, v) => {
                    let t = w.tensor(&format!("{n}.weight"), &shape, &v);
                    w.gemm(n, x, &t, b.as_deref())
                }
                Weight::LowRank(l, _) => {
                    let v = w.tensor(&format!("{n}.v"), &[l.rank, l.cols], &l.v);
                    let inner = w.gemm(&format!("{n}.v"), x, &v, None);
                    let u = w.tensor(&format!("{n}.u"), &[l.rows, l.rank], &l.u);
                    w.gemm(n, &inner, &u, b.as_deref())
                }
                Weight::Tucker(t, _) => {
                    let a = w.tensor(
                        &format!("{n}.u_in"),
                        &[t.rank_in, t.inp],
                        &transpose(&t.u_in, t.inp, t.rank_in),
                    );
                    let first = w.gemm(&format!("{n}.u_in"), x, &a, None);
                    let core = w.tensor(&format!("{n}.core"), &[t.rank_out, t.rank_in], &t.core);
                    let mid = w.gemm(&format!("{n}.core"), &first, &core, None);
                    let u = w.tensor(&format!("{n}.u_out"), &[t.out, t.rank_out], &t.u_out);
                    w.gemm(n, &mid, &u, b.as_deref())
                }
            };
            (out, false)
        }
        Op::XnorConv2d(g) => {
            let Weight::Dense(shape, v) = weight(file, weight_name)? else {
                return Err(Error::Usage(format!(
                    "{n}: factored XNOR weights cannot be exported"
                )));
            };
            let (c, kh, kw) = (shape[1], shape[2], shape[3]);
            let signs = signs(w, n, x);
            let wt = w.tensor(&format!("{n}.weight"), &shape, &v);
            let product = w.conv(&format!("{n}.product"), &signs, &wt, None, g, [kh, kw]);
            // K: the mean of |x| over each receptive field, all channels, padding counting 0.
            let abs = w.node("Abs", &format!("{n}.abs"), &[x], vec![]);
            let ones = vec![1.0 / (c * kh * kw) as f32; c * kh * kw];
            let k_w = w.tensor(&format!("{n}.k"), &[1, c, kh, kw], &ones);
            let single = Conv2d { groups: 1, ..*g };
            let k = w.conv(&format!("{n}.k"), &abs, &k_w, None, &single, [kh, kw]);
            let scaled = w.node("Mul", &format!("{n}.scaled"), &[&product, &k], vec![]);
            let out = match node.weights.get(1) {
                Some(b) => {
                    let v = dense_values(file, b)?;
                    let b4 = w.tensor(&format!("{n}.bias"), &[1, v.len(), 1, 1], &v);
                    w.node("Add", n, &[&scaled, &b4], vec![])
                }
                None => w.node("Identity", n, &[&scaled], vec![]),
            };
            (out, true)
        }
        Op::XnorDense => {
            let Weight::Dense(shape, v) = weight(file, weight_name)? else {
                return Err(Error::Usage(format!(
                    "{n}: factored XNOR weights cannot be exported"
                )));
            };
            let signs = signs(w, n, x);
            let wt = w.tensor(&format!("{n}.weight"), &shape, &v);
            let product = w.gemm(&format!("{n}.product"), &signs, &wt, None);
            let abs = w.node("Abs", &format!("{n}.abs"), &[x], vec![]);
            let k = w.node(
                "ReduceMean",
                &format!("{n}.k"),
                &[&abs],
                vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)],
            );
            let scaled = w.node("Mul", &format!("{n}.scaled"), &[&product, &k], vec![]);
            let out = match bias(w)? {
                Some(b) => w.node("Add", n, &[&scaled, &b], vec![]),
                None => w.node("Identity", n, &[&scaled], vec![]),
            };
            (out, false)
        }
        Op::Sign => {
            let threshold = match node.weights.first() {
                Some(t) => {
                    let v = dense_values(file, t)?;
                    // Per channel of a map, per element of a vector.
                    let shape = if x_spatial {
                        vec![1, v.len(), 1, 1]
                    } else {
                        vec![1, v.len()]
                    };
                    w.tensor(&format!("{n}.threshold"), &shape, &v)
                }
                None => w.tensor(&format!("{n}.zero"), &[], &[0.0]),
            };
            let signs = signs_at(w, n, x, &threshold);
            (w.node("Identity", n, &[&signs], vec![]), x_spatial)
        }
        Op::BatchNorm { epsilon } => {
            let p: Vec<String> = ["gamma", "beta", "mean", "var"]
                .iter()
                .zip(&node.weights)
                .map(|(role, t)| {
                    let v = dense_values(file, t)?;
                    Ok(w.tensor(&format!("{n}.{role}"), &[v.len()], &v))
                })
                .collect::<Result<_>>()?;
            let inputs: Vec<&str> = std::iter::once(x)
                .chain(p.iter().map(String::as_str))
                .collect();
            let out = w.node(
                "BatchNormalization",
                n,
                &inputs,
                vec![attr_float("epsilon", *epsilon as f32)],
            );
            (out, x_spatial)
        }
        Op::Relu => (w.node("Relu", n, &[x], vec![]), x_spatial),
        Op::Relu6 => {
            let lo = w.tensor(&format!("{n}.min"), &[], &[0.0]);
            let hi = w.tensor(&format!("{n}.max"), &[], &[6.0]);
            (w.node("Clip", n, &[x, &lo, &hi], vec![]), x_spatial)
        }
        Op::Softmax => (
            w.node("Softmax", n, &[x], vec![attr_int("axis", -1)]),
            false,
        ),
        Op::Flatten => (w.node("Flatten", n, &[x], vec![attr_int("axis", 1)]), false),
        Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
            let (kind, extra) = match op {
                Op::MaxPool2d(_) => ("MaxPool", vec![]),
                _ => ("AveragePool", vec![attr_int("count_include_pad", 0)]),
            };
            let mut attrs = vec![
                attr_ints("kernel_shape", &p.kernel),
                attr_ints("strides", &p.stride),
                attr_ints("pads", &p.padding),
            ];
            attrs.extend(extra);
            (w.node(kind, n, &[x], attrs), true)
        }
        Op::GlobalAvgPool => {
            let pooled = w.node("GlobalAveragePool", &format!("{n}.pool"), &[x], vec![]);
            (
                w.node("Flatten", n, &[&pooled], vec![attr_int("axis", 1)]),
                false,
            )
        }
        Op::Add => {
            let b = &names[&node.inputs[1]];
            (w.node("Add", n, &[x, b], vec![]), x_spatial)
        }
        Op::Concat => {
            let inputs: Vec<&str> = node.inputs.iter().map(|i| names[i].as_str()).collect();
            (
                w.node("Concat", n, &inputs, vec![attr_int("axis", 1)]),
                x_spatial,
            )
        }
        Op::Sigmoid => (w.node("Sigmoid", n, &[x], vec![]), x_spatial),
        Op::HardSwish => (w.node("HardSwish", n, &[x], vec![]), x_spatial),
        Op::Mul => {
            let b = names[&node.inputs[1]].clone();
            let b = if x_spatial && !spatial[&node.inputs[1]] {
                // A per-channel scale [N, C] broadcast over [N, C, H, W].
                let shape = w.ints(&format!("{n}.scale_shape"), &[0, -1, 1, 1]);
                w.node("Reshape", &format!("{n}.scale"), &[&b, &shape], vec![])
            } else {
                b
            };
            (w.node("Mul", n, &[x, &b], vec![]), x_spatial)
        }
        Op::Pad {
            padding: [t, l, b, r],
        } => {
            let pads = w.ints(
                &format!("{n}.pads"),
                &[0, 0, *t as i64, *l as i64, 0, 0, *b as i64, *r as i64],
            );
            (w.node("Pad", n, &[x, &pads], vec![]), true)
        }
    })
}

/// `+1` where `x ≥ 0` (NaN included, as XNOR-Net's binarisation in spec §7), else `−1`.
fn signs(w: &mut Writer, n: &str, x: &str) -> String {
    let zero = w.tensor(&format!("{n}.zero"), &[], &[0.0]);
    signs_at(w, n, x, &zero)
}

/// `+1` where `x ≥ threshold`, else `−1` (NaN included, as spec §7 says: `GreaterOrEqual` is
/// false for NaN).
fn signs_at(w: &mut Writer, n: &str, x: &str, threshold: &str) -> String {
    let plus = w.tensor(&format!("{n}.plus"), &[], &[1.0]);
    let minus = w.tensor(&format!("{n}.minus"), &[], &[-1.0]);
    let at_least = w.node(
        "GreaterOrEqual",
        &format!("{n}.at_least"),
        &[x, threshold],
        vec![],
    );
    w.node(
        "Where",
        &format!("{n}.signs"),
        &[&at_least, &plus, &minus],
        vec![],
    )
}
