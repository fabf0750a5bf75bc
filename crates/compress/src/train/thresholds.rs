//! Batch norms folded into sign thresholds (spec §7, `sign`): a binary layer's input is
//! `sign(batch_norm(x))`, and since a batch norm is an increasing (or, where `gamma < 0`,
//! decreasing) affine map per channel, only where it crosses zero matters. With
//! `s = sqrt(var + epsilon)`:
//!
//! - `gamma > 0`: `sign(bn(x)) = sign(x − τ)` at `τ = mean − beta · s / gamma`;
//! - `gamma < 0`: the same `τ`, negated (`bn(x) ≥ 0` exactly where `x ≤ τ`), which is folded
//!   into the weights of the layers the sign feeds: the weights reading that channel change
//!   sign, so their products are unchanged;
//! - `gamma = 0`: `bn(x) = beta` everywhere, so `τ = −∞` when `beta ≥ 0` (always `+1`) and
//!   `+∞` otherwise.
//!
//! The file then stores one threshold per channel instead of four batch-norm numbers. The two
//! forms differ only for inputs within rounding of `τ` (and at `x = τ` exactly when `gamma < 0`).

use super::NamedTensor;
use cxrm_format::container::graph::{Graph, Node};
use cxrm_format::container::op::{DEFAULT_EPSILON, Op};
use std::collections::HashSet;

/// `graph` and `tensors` with every batch norm that feeds only a threshold-less `sign` folded
/// into that sign's threshold. Batch norms that cannot be folded (read by other nodes, or
/// with a `gamma < 0` channel while the sign feeds something other than a weighted `conv2d`
/// or `dense`) are left as they are.
pub fn fold_sign_thresholds(graph: &Graph, tensors: &[NamedTensor]) -> (Graph, Vec<NamedTensor>) {
    let mut graph = graph.clone();
    let mut tensors = tensors.to_vec();
    while let Some(fold) = next_fold(&graph, &tensors) {
        apply(&mut graph, &mut tensors, fold);
    }
    (graph, tensors)
}

/// One batch norm to fold: its node, the sign it feeds, the thresholds and which channels flip.
struct Fold {
    bn: usize,
    sign: usize,
    threshold: Vec<f32>,
    flipped: Vec<bool>,
}

fn readers<'g>(graph: &'g Graph, name: &str) -> Vec<&'g Node> {
    graph
        .nodes
        .iter()
        .filter(|n| n.inputs.iter().any(|i| i == name))
        .collect()
}

fn next_fold(graph: &Graph, tensors: &[NamedTensor]) -> Option<Fold> {
    let values = |name: &str| tensors.iter().find(|t| t.name == name).map(|t| &t.values);
    graph.nodes.iter().enumerate().find_map(|(si, sign)| {
        if sign.op != "sign" || !sign.weights.is_empty() || sign.inputs.len() != 1 {
            return None;
        }
        let bi = graph.nodes.iter().position(|n| n.name == sign.inputs[0])?;
        let bn = &graph.nodes[bi];
        let Ok(Op::BatchNorm { epsilon }) = Op::parse(bn) else {
            return None;
        };
        if readers(graph, &bn.name).len() != 1 {
            return None;
        }
        let [g, b, m, v] = &bn.weights[..] else {
            return None;
        };
        let (gamma, beta, mean, var) = (values(g)?, values(b)?, values(m)?, values(v)?);
        let eps = if epsilon.is_finite() {
            epsilon
        } else {
            DEFAULT_EPSILON
        };
        let mut threshold = Vec::with_capacity(gamma.len());
        let mut flipped = Vec::with_capacity(gamma.len());
        for c in 0..gamma.len() {
            let (g, b) = (gamma[c] as f64, beta[c] as f64);
            let s = (var[c] as f64 + eps).sqrt();
            let t = if g == 0.0 {
                if b >= 0.0 {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }
            } else {
                mean[c] as f64 - b * s / g
            };
            threshold.push(t as f32);
            flipped.push(g < 0.0);
        }
        let flips = flipped.iter().any(|&f| f);
        let weighted = readers(graph, &sign.name).iter().all(|r| {
            matches!(r.op.as_str(), "conv2d" | "dense")
                && r.inputs.len() == 1
                && !r.weights.is_empty()
                && !matches!(Op::parse(r), Ok(Op::Conv2d(c)) if c.groups != 1)
        });
        (!flips || weighted).then_some(Fold {
            bn: bi,
            sign: si,
            threshold,
            flipped,
        })
    })
}

fn apply(graph: &mut Graph, tensors: &mut Vec<NamedTensor>, fold: Fold) {
    let sign_name = graph.nodes[fold.sign].name.clone();
    // Negate, in every layer the sign feeds, the weights that read a flipped channel.
    let weights: Vec<String> = readers(graph, &sign_name)
        .iter()
        .map(|r| r.weights[0].clone())
        .collect();
    let channels = fold.flipped.len();
    for w in weights {
        let Some(t) = tensors.iter_mut().find(|t| t.name == w) else {
            continue;
        };
        // Conv `[O, C, kh, kw]` reads channel `c` in a block of `kh·kw`; dense `[O, N]` reads
        // feature `c` at column `c`.
        let cols = t.values.len() / t.shape.first().copied().unwrap_or(1).max(1);
        let block = (cols / channels.max(1)).max(1);
        for row in t.values.chunks_mut(cols.max(1)) {
            for (c, _) in fold.flipped.iter().enumerate().filter(|(_, f)| **f) {
                row[c * block..(c + 1) * block]
                    .iter_mut()
                    .for_each(|v| *v = -*v);
            }
        }
    }
    let bn = graph.nodes[fold.bn].clone();
    let threshold = format!("{sign_name}.threshold");
    tensors.push(NamedTensor::new(
        &threshold,
        vec![fold.threshold.len()],
        fold.threshold,
    ));
    let sign = &mut graph.nodes[fold.sign];
    sign.inputs = bn.inputs.clone();
    sign.weights = vec![threshold];
    graph.nodes.remove(fold.bn);
    let used: HashSet<&str> = graph
        .nodes
        .iter()
        .flat_map(|n| n.weights.iter().map(String::as_str))
        .collect();
    let orphans: Vec<String> = bn
        .weights
        .iter()
        .filter(|w| !used.contains(w.as_str()))
        .cloned()
        .collect();
    tensors.retain(|t| !orphans.contains(&t.name));
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxrm_format::container::graph::INPUT;
    use cxrm_format::container::value::Value;

    /// `batch_norm → sign → dense` on 4 features, with each kind of gamma.
    fn model() -> (Graph, Vec<NamedTensor>) {
        let graph = Graph {
            nodes: vec![
                Node::new("bn", "batch_norm", &[INPUT], &["g", "b", "m", "v"])
                    .attr("epsilon", Value::Float(1e-5)),
                Node::new("s", "sign", &["bn"], &[]),
                Node::new("fc", "dense", &["s"], &["w"]),
            ],
        };
        let t = |n: &str, shape: Vec<usize>, v: Vec<f32>| NamedTensor::new(n, shape, v);
        let tensors = vec![
            t("g", vec![4], vec![2.0, -0.5, 0.0, 0.0]),
            t("b", vec![4], vec![0.3, 0.2, 1.0, -1.0]),
            t("m", vec![4], vec![0.1, -0.4, 5.0, 5.0]),
            t("v", vec![4], vec![4.0, 0.25, 1.0, 1.0]),
            t(
                "w",
                vec![2, 4],
                vec![1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0],
            ),
        ];
        (graph, tensors)
    }

    /// The graph computed directly: `w · sign(bn(x))` or `w · sign(x − τ)`.
    fn run(graph: &Graph, tensors: &[NamedTensor], x: &[f32]) -> Vec<f32> {
        let get = |n: &str| &tensors.iter().find(|t| t.name == n).unwrap().values;
        let mut h: Vec<f32> = x.to_vec();
        for node in &graph.nodes {
            match node.op.as_str() {
                "batch_norm" => {
                    let [g, b, m, v] = [0, 1, 2, 3].map(|i| get(&node.weights[i]));
                    for c in 0..h.len() {
                        h[c] = (h[c] - m[c]) / (v[c] + 1e-5).sqrt() * g[c] + b[c];
                    }
                }
                "sign" => {
                    let t = node.weights.first().map(|w| get(w));
                    for c in 0..h.len() {
                        let tau = t.map_or(0.0, |t| t[c]);
                        h[c] = if h[c] >= tau { 1.0 } else { -1.0 };
                    }
                }
                "dense" => {
                    let w = get(&node.weights[0]);
                    h = w
                        .chunks(h.len())
                        .map(|r| r.iter().zip(&h).map(|(a, b)| a * b).sum())
                        .collect();
                }
                _ => unreachable!(),
            }
        }
        h
    }

    #[test]
    fn the_folded_sign_gives_the_batch_norms_signs() {
        let (graph, tensors) = model();
        let (folded, kept) = fold_sign_thresholds(&graph, &tensors);
        let ops: Vec<&str> = folded.nodes.iter().map(|n| n.op.as_str()).collect();
        assert_eq!(ops, ["sign", "dense"]);
        assert_eq!(folded.nodes[0].inputs, [INPUT]);
        let names: Vec<&str> = kept.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["w", "s.threshold"],
            "the batch norm's tensors are gone"
        );
        let tau = &kept[1].values;
        assert_eq!(tau[2], f32::NEG_INFINITY);
        assert_eq!(tau[3], f32::INFINITY);
        // Inputs on a grid that never lands on a threshold.
        for i in 0..2000 {
            let x: Vec<f32> = (0..4)
                .map(|c| ((i * 7 + c * 13) % 97) as f32 / 8.0 - 6.03)
                .collect();
            assert_eq!(run(&folded, &kept, &x), run(&graph, &tensors, &x), "{x:?}");
        }
    }

    #[test]
    fn a_batch_norm_read_elsewhere_or_flipping_into_a_non_weighted_reader_stays() {
        let (mut graph, tensors) = model();
        graph.nodes.push(Node::new("other", "relu", &["bn"], &[]));
        assert_eq!(fold_sign_thresholds(&graph, &tensors).0, graph);
        let (mut graph, tensors) = model();
        graph.nodes[2] = Node::new("fc", "relu", &["s"], &[]);
        assert_eq!(
            fold_sign_thresholds(&graph, &tensors).0,
            graph,
            "gamma < 0 cannot flip"
        );
    }
}
