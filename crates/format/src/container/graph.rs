//! The graph section (spec §7): the model's layers in execution order.

use super::value::{self, Map, Value};
use crate::cursor::Cursor;
use crate::error::{Error, ErrorCode, Result};
use crate::limits::Limits;
use std::collections::HashSet;

/// The name by which a node refers to the model's input.
pub const INPUT: &str = "input";

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: String,
    pub inputs: Vec<String>,
    /// Tensor names, in the order the op defines (e.g. weight, bias).
    pub weights: Vec<String>,
    /// Every other key of the node map.
    pub attrs: Map,
}

impl Node {
    pub fn new(
        name: impl Into<String>,
        op: impl Into<String>,
        inputs: &[&str],
        weights: &[&str],
    ) -> Node {
        Node {
            name: name.into(),
            op: op.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            weights: weights.iter().map(|s| s.to_string()).collect(),
            attrs: Vec::new(),
        }
    }

    pub fn attr(mut self, key: impl Into<String>, value: Value) -> Node {
        self.attrs.push((key.into(), value));
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        value::get(&self.attrs, key)
    }

    fn to_map(&self) -> Map {
        let mut map: Map = vec![
            ("name".into(), Value::String(self.name.clone())),
            ("op".into(), Value::String(self.op.clone())),
            ("inputs".into(), Value::strings(self.inputs.iter().cloned())),
        ];
        if !self.weights.is_empty() {
            map.push((
                "weights".into(),
                Value::strings(self.weights.iter().cloned()),
            ));
        }
        map.extend(self.attrs.iter().cloned());
        map
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
}

impl Graph {
    /// The binary layers (spec §7): XNOR-Net's `xnor_conv2d` and `xnor_dense`, and each
    /// `conv2d` or `dense` whose input is a `sign`. Their weights are `±α` per output channel
    /// when trained as binary layers.
    pub fn binary_layers(&self) -> Vec<&Node> {
        let signs: HashSet<&str> = self
            .nodes
            .iter()
            .filter(|n| n.op == "sign")
            .map(|n| n.name.as_str())
            .collect();
        self.nodes
            .iter()
            .filter(|n| match n.op.as_str() {
                "xnor_conv2d" | "xnor_dense" => true,
                "conv2d" | "dense" => n.inputs.first().is_some_and(|i| signs.contains(i.as_str())),
                _ => false,
            })
            .collect()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.nodes.len() as u32).to_le_bytes());
        for node in &self.nodes {
            value::write_map(&node.to_map(), &mut out);
        }
        out
    }

    /// Check references: inputs name earlier nodes (or the input), weights name tensors.
    /// `at(i)` gives the file offset of node `i` for error messages.
    pub fn check(
        &self,
        has_tensor: &dyn Fn(&str) -> bool,
        at: &dyn Fn(usize) -> u64,
    ) -> Result<()> {
        let mut earlier: HashSet<&str> = HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let bad = |detail: String| {
                Error::format(
                    ErrorCode::BadGraph,
                    format!("graph.node[{i}]"),
                    at(i),
                    detail,
                )
            };
            let shown = crate::text::escape(&node.name);
            if node.name == INPUT {
                return Err(bad(format!("a node may not be called {INPUT:?}")));
            }
            for input in &node.inputs {
                if input != INPUT && !earlier.contains(input.as_str()) {
                    return Err(bad(format!(
                        "node {shown} reads {:?}, which is not an earlier node",
                        crate::text::escape(input)
                    )));
                }
            }
            for weight in &node.weights {
                if !has_tensor(weight) {
                    return Err(bad(format!(
                        "node {shown} uses tensor {:?}, which the file does not have",
                        crate::text::escape(weight)
                    )));
                }
            }
            if !earlier.insert(&node.name) {
                return Err(Error::format(
                    ErrorCode::DuplicateName,
                    format!("graph.node[{i}].name"),
                    at(i),
                    format!("node name {shown} appears twice"),
                ));
            }
        }
        Ok(())
    }

    /// Parse a graph section's bytes; `base` is the section's file offset. Returns the graph and
    /// each node's file offset.
    pub fn parse(bytes: &[u8], base: u64, limits: &Limits) -> Result<(Graph, Vec<u64>)> {
        let mut c = Cursor::new(bytes, base);
        let count = c.u32(|| "graph.node_count".into())?;
        if count > limits.graph_nodes {
            return Err(Error::format(
                ErrorCode::LimitExceeded,
                "graph.node_count",
                base,
                format!("{count} nodes exceed the limit of {}", limits.graph_nodes),
            ));
        }
        let mut nodes = Vec::with_capacity((count as usize).min(c.remaining() / 4));
        let mut offsets = Vec::with_capacity(nodes.capacity());
        for i in 0..count {
            let at = c.offset();
            let what = format!("graph.node[{i}]");
            let mut map = value::read_map(&mut c, limits, &what)?;
            nodes.push(node_from_map(&mut map, &what, at)?);
            offsets.push(at);
        }
        if !c.is_empty() {
            return Err(Error::format(
                ErrorCode::BadLayout,
                "graph",
                c.offset(),
                "bytes left over after the last node",
            ));
        }
        Ok((Graph { nodes }, offsets))
    }
}

fn node_from_map(map: &mut Map, what: &str, at: u64) -> Result<Node> {
    let bad = |detail: String| Error::format(ErrorCode::BadGraph, what, at, detail);
    let mut take = |key: &str| {
        map.iter()
            .position(|(k, _)| k == key)
            .map(|i| map.remove(i).1)
    };
    let string = |v: Option<Value>, key: &str| match v {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("{key:?} must be a string"))),
        None => Err(bad(format!("missing {key:?}"))),
    };
    let strings = |v: Option<Value>, key: &str| match v {
        None => Ok(Vec::new()),
        Some(Value::Array(crate::ValueType::String, items)) => Ok(items
            .into_iter()
            .filter_map(|x| match x {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect()),
        Some(_) => Err(bad(format!("{key:?} must be an array of strings"))),
    };
    let name = string(take("name"), "name")?;
    let op = string(take("op"), "op")?;
    let inputs = match take("inputs") {
        None => return Err(bad("missing \"inputs\"".into())),
        v => strings(v, "inputs")?,
    };
    let weights = strings(take("weights"), "weights")?;
    Ok(Node {
        name,
        op,
        inputs,
        weights,
        attrs: std::mem::take(map),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenet_like() -> Graph {
        Graph {
            nodes: vec![
                Node::new("conv1", "conv2d", &[INPUT], &["conv1.w", "conv1.b"])
                    .attr("stride", Value::ints([1, 1])),
                Node::new("relu1", "relu", &["conv1"], &[]),
                Node::new("fc", "dense", &["relu1"], &["fc.w"]),
            ],
        }
    }

    #[test]
    fn round_trips_and_checks_references() {
        let g = lenet_like();
        let bytes = g.to_bytes();
        let (back, offsets) = Graph::parse(&bytes, 1000, &Limits::SPEC).unwrap();
        assert_eq!(back, g);
        assert_eq!(offsets[0], 1004);
        let all = |_: &str| true;
        back.check(&all, &|_| 0).unwrap();
        let none = |n: &str| n != "fc.w";
        assert_eq!(
            back.check(&none, &|_| 0).unwrap_err().code(),
            Some(ErrorCode::BadGraph)
        );
    }

    #[test]
    fn rejects_forward_references_and_missing_keys() {
        let mut g = lenet_like();
        g.nodes[1].inputs = vec!["fc".into()];
        assert_eq!(
            g.check(&|_| true, &|_| 0).unwrap_err().code(),
            Some(ErrorCode::BadGraph)
        );

        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        value::write_map(
            &vec![("name".into(), Value::String("x".into()))],
            &mut bytes,
        );
        assert_eq!(
            Graph::parse(&bytes, 0, &Limits::SPEC).unwrap_err().code(),
            Some(ErrorCode::BadGraph)
        );
    }
}
