//! Low-rank compression with fine-tuning: each eligible layer is replaced by its truncated
//! SVD (Denton et al. 2014: a convolution with `r` filters, then a 1×1 one) or, for
//! convolutions under `Tucker`, by Tucker-2 (Kim et al. 2016: 1×1 to `r_in` channels, the core's
//! window to `r_out`, 1×1 back out), the rank keeping a given share of the spectrum's energy.
//! The network with the split layers is then fine-tuned end to end, as both papers do, and
//! written back in its original graph with each split weight stored `lowrank` or `tucker`.
//!
//! The split layers are ordinary graph nodes while they train, so the trainer needs no
//! special layer: the rewrite is undone only when the file is written.

use crate::methods::factorize::store::{
    self as factorize, low_rank_saves, rank_for_energy, tucker_saves,
};
use crate::train::net::Net;
use crate::train::{
    Event, NamedTensor, TrainData, TrainOptions, TrainedModel, device, finish, set_meta,
};
use cxrm_format::container::graph::{Graph, Node};
use cxrm_format::container::value::Value;
use cxrm_format::container::writer::Writer;
use cxrm_format::dtype::DType;
use cxrm_format::encoding::{Encoded, lowrank, tucker};
use cxrm_format::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factorization {
    /// Every eligible layer as two SVD factors.
    LowRank,
    /// Convolutions as Tucker-2, dense layers as two SVD factors.
    Tucker,
}

impl Factorization {
    pub fn name(self) -> &'static str {
        match self {
            Factorization::LowRank => "lowrank",
            Factorization::Tucker => "tucker",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FactorizeOptions {
    pub method: Factorization,
    /// Share of `Σ σ²` each layer's ranks keep (per unfolding for Tucker-2).
    pub energy: f64,
    /// The fine-tuning after the split.
    pub retrain: TrainOptions,
}

/// What happened to one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorReport {
    pub layer: String,
    pub shape: Vec<usize>,
    /// `[r]` for SVD factors, `[r_out, r_in]` for Tucker-2.
    pub ranks: Vec<usize>,
    pub params: usize,
    pub factored_params: usize,
}

/// One line of a report: layer, shape, ranks and the parameters before and after.
impl std::fmt::Display for FactorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<16} {:?} ranks {:?}: {} -> {} parameters",
            self.layer, self.shape, self.ranks, self.params, self.factored_params
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Split {
    LowRank { rank: usize },
    Tucker { rank_out: usize, rank_in: usize },
}

/// One layer to split: its node, weight tensor, weight shape and how.
#[derive(Debug, Clone)]
struct Plan {
    node: String,
    weight: String,
    shape: Vec<usize>,
    split: Split,
}

/// A fine-tuned factorized model: the split network as trained, and how to fold it back.
#[derive(Debug, Clone)]
pub struct Factorized {
    /// The network with each split layer as separate nodes (runnable as it is).
    pub expanded: TrainedModel,
    /// The original graph, which the file keeps.
    graph: Graph,
    plans: Vec<Plan>,
}

impl Factorized {
    /// Parameters of the stored model (the factors, not the rebuilt weights).
    pub fn params(&self) -> usize {
        self.expanded.params()
    }

    /// The file: the original graph, each split weight stored `lowrank` or `tucker` (f32
    /// factors), everything else dense.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let get = |name: &str| {
            self.expanded
                .tensors
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| Error::Model(format!("factor {name:?} is missing")))
        };
        let mut w = Writer::new();
        for (k, v) in &self.expanded.metadata {
            w.set_metadata(k.clone(), v.clone());
        }
        w.set_graph(self.graph.clone());
        let mut written = std::collections::HashSet::new();
        for node in &self.graph.nodes {
            for name in &node.weights {
                if !written.insert(name.clone()) {
                    continue;
                }
                let plan = self.plans.iter().find(|p| &p.weight == name);
                let (shape, encoded): (Vec<usize>, Encoded<'static>) = match plan {
                    Some(p) => (p.shape.clone(), fold(p, &get)?),
                    None => {
                        let t = get(name)?;
                        (
                            t.shape.clone(),
                            cxrm_format::encoding::dense::encode(
                                bytemuck::cast_slice(&t.values).to_vec().into(),
                            ),
                        )
                    }
                };
                let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
                w.add_tensor(name, DType::F32, &shape, encoded)?;
            }
        }
        w.to_bytes()
    }

    pub fn write(&self, path: &std::path::Path) -> Result<u64> {
        let bytes = self.to_bytes()?;
        cxrm_format::container::writer::write_atomically(path, |w| {
            std::io::Write::write_all(w, &bytes)
        })?;
        Ok(bytes.len() as u64)
    }
}

/// The factors of one split layer, from the trained expanded tensors, as its stored encoding.
fn fold<'t>(p: &Plan, get: &dyn Fn(&str) -> Result<&'t NamedTensor>) -> Result<Encoded<'static>> {
    let (out, inp) = (p.shape[0], p.shape[1]);
    let spatial: usize = p.shape[2..].iter().product();
    Ok(match p.split {
        Split::LowRank { rank } => lowrank::encode(
            &lowrank::LowRank {
                rows: out,
                cols: inp * spatial,
                rank,
                u: get(&format!("{}.u", p.weight))?.values.clone(),
                v: get(&format!("{}.v", p.weight))?.values.clone(),
            },
            DType::F32,
        ),
        Split::Tucker { rank_out, rank_in } => {
            let u_in_t = &get(&format!("{}.in", p.weight))?.values;
            tucker::encode(
                &tucker::Tucker {
                    out,
                    inp,
                    spatial,
                    rank_out,
                    rank_in,
                    u_out: get(&format!("{}.out", p.weight))?.values.clone(),
                    core: get(&format!("{}.core", p.weight))?.values.clone(),
                    u_in: transpose(u_in_t, rank_in, inp),
                },
                DType::F32,
            )
        }
    })
}

fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

/// Which layers to split and at what ranks: every `conv2d` with groups 1 and every `dense`
/// layer but the output layer, when the ranks that keep `energy` store fewer numbers.
fn plan(model: &TrainedModel, opts: &FactorizeOptions) -> Result<Vec<Plan>> {
    let last = model
        .graph
        .nodes
        .iter()
        .rposition(|n| n.op == "dense" || n.op == "conv2d");
    let mut plans = Vec::new();
    for (k, node) in model.graph.nodes.iter().enumerate() {
        let groups = node.get("groups").and_then(Value::as_int).unwrap_or(1);
        if Some(k) == last || !(node.op == "dense" || node.op == "conv2d" && groups == 1) {
            continue;
        }
        let Some(name) = node.weights.first() else {
            continue;
        };
        let t = model
            .tensors
            .iter()
            .find(|t| &t.name == name)
            .ok_or_else(|| Error::Model(format!("tensor {name:?} is missing")))?;
        let (out, inp) = (t.shape[0], t.shape[1]);
        let spatial: usize = t.shape[2..].iter().product();
        let split = if opts.method == Factorization::Tucker && spatial > 1 {
            let (s_out, s_in) = factorize::tucker_spectra(&t.values, out, inp)?;
            let (ro, ri) = (
                rank_for_energy(&s_out, opts.energy),
                rank_for_energy(&s_in, opts.energy),
            );
            tucker_saves(out, inp, spatial, ro, ri).then_some(Split::Tucker {
                rank_out: ro,
                rank_in: ri,
            })
        } else {
            let cols = inp * spatial;
            let s = factorize::svd(&t.values, out, cols)?.s;
            let r = rank_for_energy(&s, opts.energy);
            low_rank_saves(out, cols, r).then_some(Split::LowRank { rank: r })
        };
        if let Some(split) = split {
            plans.push(Plan {
                node: node.name.clone(),
                weight: name.clone(),
                shape: t.shape.clone(),
                split,
            });
        }
    }
    Ok(plans)
}

/// The graph and tensors with each planned layer split into its factor layers, initialised
/// from the decomposition.
fn expand(
    model: &TrainedModel,
    plans: &[Plan],
) -> Result<(Graph, Vec<NamedTensor>, Vec<FactorReport>)> {
    let mut nodes = Vec::new();
    let mut tensors: Vec<NamedTensor> = Vec::new();
    let mut reports = Vec::new();
    let taken: std::collections::HashSet<&str> =
        model.graph.nodes.iter().map(|n| n.name.as_str()).collect();
    for node in &model.graph.nodes {
        let Some(p) = plans.iter().find(|p| p.node == node.name) else {
            nodes.push(node.clone());
            continue;
        };
        let w = &model
            .tensors
            .iter()
            .find(|t| t.name == p.weight)
            .expect("planned")
            .values;
        let (out, inp) = (p.shape[0], p.shape[1]);
        let spatial: usize = p.shape[2..].iter().product();
        let conv = node.op == "conv2d";
        let fresh = |suffix: &str| {
            let name = format!("{}.{suffix}", node.name);
            if taken.contains(name.as_str()) {
                Err(Error::Model(format!(
                    "node name {name:?} is taken; cannot split {}",
                    node.name
                )))
            } else {
                Ok(name)
            }
        };
        // The last factor layer keeps the node's name, bias and consumers; earlier ones take
        // its input and (for the window-bearing one) its stride, padding and dilation.
        let mut last = Node::new(node.name.clone(), node.op.clone(), &[], &[]);
        last.weights = node.weights.clone();
        let (factored, ranks) = match p.split {
            Split::LowRank { rank } => {
                let lr = factorize::svd(w, out, inp * spatial)?.truncate(rank);
                let mut first = node.clone();
                first.name = fresh("v")?;
                first.weights = vec![format!("{}.v", p.weight)];
                last.inputs = vec![first.name.clone()];
                last.weights[0] = format!("{}.u", p.weight);
                let (v_shape, u_shape) = if conv {
                    let mut v = p.shape.clone();
                    v[0] = rank;
                    (v, vec![out, rank, 1, 1])
                } else {
                    (vec![rank, inp], vec![out, rank])
                };
                tensors.push(NamedTensor::new(&first.weights[0], v_shape, lr.v));
                tensors.push(NamedTensor::new(&last.weights[0], u_shape, lr.u));
                nodes.push(first);
                (rank * (out + inp * spatial), vec![rank])
            }
            Split::Tucker { rank_out, rank_in } => {
                let t = factorize::tucker2(w, out, inp, rank_out, rank_in)?;
                let (ro, ri) = (t.rank_out, t.rank_in);
                let mut first = Node::new(fresh("in")?, "conv2d", &[], &[]);
                first.inputs = node.inputs.clone();
                first.weights = vec![format!("{}.in", p.weight)];
                let mut core = node.clone();
                core.name = fresh("core")?;
                core.inputs = vec![first.name.clone()];
                core.weights = vec![format!("{}.core", p.weight)];
                last.inputs = vec![core.name.clone()];
                last.weights[0] = format!("{}.out", p.weight);
                let mut core_shape = p.shape.clone();
                core_shape[0] = ro;
                core_shape[1] = ri;
                tensors.push(NamedTensor::new(
                    &first.weights[0],
                    vec![ri, inp, 1, 1],
                    transpose(&t.u_in, inp, ri),
                ));
                tensors.push(NamedTensor::new(&core.weights[0], core_shape, t.core));
                tensors.push(NamedTensor::new(
                    &last.weights[0],
                    vec![out, ro, 1, 1],
                    t.u_out,
                ));
                nodes.push(first);
                nodes.push(core);
                (out * ro + ro * ri * spatial + inp * ri, vec![ro, ri])
            }
        };
        nodes.push(last);
        reports.push(FactorReport {
            layer: node.name.clone(),
            shape: p.shape.clone(),
            ranks,
            params: w.len(),
            factored_params: factored,
        });
    }
    for t in &model.tensors {
        if !plans.iter().any(|p| p.weight == t.name) {
            tensors.push(t.clone());
        }
    }
    Ok((Graph { nodes }, tensors, reports))
}

/// Split `model`'s layers by SVD or Tucker-2, fine-tune the split network on `data`, and
/// return it with a report per split layer.
pub fn factorize(
    model: &TrainedModel,
    data: &TrainData,
    opts: &FactorizeOptions,
    on: &mut dyn FnMut(Event),
) -> Result<(Factorized, Vec<FactorReport>)> {
    if !(opts.energy > 0.0 && opts.energy <= 1.0) {
        return Err(Error::Usage(format!(
            "energy must be in (0, 1], not {}",
            opts.energy
        )));
    }
    let plans = plan(model, opts)?;
    if plans.is_empty() {
        return Err(Error::Usage(format!(
            "no layer of {} gets smaller at {:.0}% energy",
            model
                .meta("model.name")
                .and_then(Value::as_str)
                .unwrap_or("the model"),
            opts.energy * 100.0
        )));
    }
    let (graph, tensors, reports) = expand(model, &plans)?;
    for r in &reports {
        on(Event::Note(format!(
            "{}: {:?} at ranks {:?}, {} -> {} parameters",
            r.layer, r.shape, r.ranks, r.params, r.factored_params
        )));
    }
    let mut metadata = model.metadata.clone();
    let mut net = Net::new(graph, tensors, &device())?;
    let dense = |_: &NamedTensor| None;
    crate::train::fine_tune(
        &mut net,
        data,
        &opts.retrain,
        &format!("fine-tune {}", opts.method.name()),
        &mut metadata,
        &dense,
        on,
    )?;
    set_meta(
        &mut metadata,
        "compress.method",
        Value::String(opts.method.name().into()),
    );
    set_meta(&mut metadata, "compress.energy", Value::Float(opts.energy));
    set_meta(
        &mut metadata,
        "compress.retrain_epochs",
        Value::Int(opts.retrain.epochs as i64),
    );
    let ranks: Vec<String> = reports
        .iter()
        .map(|r| format!("{}={:?}", r.layer, r.ranks))
        .collect();
    set_meta(
        &mut metadata,
        "compress.ranks",
        Value::String(ranks.join(" ")),
    );
    let expanded = finish(&net, metadata);
    Ok((
        Factorized {
            expanded,
            graph: model.graph.clone(),
            plans,
        },
        reports,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{Arch, tests::mnist};

    #[test]
    fn split_layers_fold_back_to_the_same_network() {
        let data = mnist(300);
        let arch = Arch::parse("lenet-5").unwrap();
        let quick = TrainOptions {
            epochs: 1,
            ..Default::default()
        };
        let base = crate::train::train(&arch, &data, &quick, &mut |_| {}).unwrap();
        for method in [Factorization::LowRank, Factorization::Tucker] {
            let opts = FactorizeOptions {
                method,
                energy: 0.8,
                retrain: TrainOptions {
                    epochs: 1,
                    ..Default::default()
                },
            };
            let (f, reports) = factorize(&base, &data, &opts, &mut |_| {}).unwrap();
            assert!(!reports.is_empty());
            assert!(f.params() < base.params(), "{method:?} saves parameters");
            // The folded file computes what the trained split network computes.
            let folded = f.to_bytes().unwrap();
            let file = cxrm_format::Cxrm::parse(&folded).unwrap();
            assert_eq!(file.graph().unwrap().unwrap(), base.graph);
            let chains: Vec<String> = file.tensors().iter().map(|t| t.chain_name()).collect();
            assert!(chains.iter().any(|c| c == method.name()), "{chains:?}");
            let expanded = f.expanded.to_bytes(&|_| None).unwrap();
            let run = |bytes: &[u8]| {
                let file = cxrm_format::Cxrm::parse(bytes).unwrap();
                let model = cxrm_runtime::Model::load(&file).unwrap();
                let d = &data.val;
                let spec = &model.input;
                let x = cxrm_runtime::preprocess::normalise(&d.pixels[..d.height * d.width], spec);
                model
                    .forward(x.insert_axis(cxrm_runtime::ndarray::Axis(0)).view())
                    .unwrap()
            };
            let (a, b) = (run(&folded), run(&expanded));
            for (x, y) in a.iter().zip(b.iter()) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{a:?} vs {b:?}");
            }
        }
    }
}
