//! JSON views of metadata values, graphs and file summaries: what `inspect --json` prints and
//! what `pack --graph` reads. Kept apart from the container so the reader needs no JSON crate.

use crate::container::graph::{Graph, Node};
use crate::container::summary::Summary;
use crate::container::value::{Map, Value, ValueType};
use crate::error::{Error, Result};
use serde_json::{Map as JsonMap, Value as Json, json};

pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::String(s) => Json::String(s.clone()),
        Value::Int(i) => json!(i),
        // JSON has no NaN or infinity; spell them out rather than lose them.
        Value::Float(f) if f.is_finite() => json!(f),
        Value::Float(f) => Json::String(format!("{f}")),
        Value::Bool(b) => Json::Bool(*b),
        Value::Array(_, items) => Json::Array(items.iter().map(value_to_json).collect()),
    }
}

pub fn map_to_json(map: &Map) -> Json {
    Json::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

/// The document `cxrm inspect --json` prints for the file at `file` (fields documented in
/// docs/cli.md).
pub fn summary_to_json(s: &Summary, file: &str) -> Json {
    let mut doc = summary_without_tensors(s, file);
    doc["tensors"] = Json::Array(s.tensors.iter().map(tensor_summary_to_json).collect());
    doc
}

/// [`summary_to_json`] pretty-printed to `out`, byte for byte what `to_string_pretty` gives,
/// but one tensor at a time: a file may list 2^20 tensors, and the whole document as one
/// JSON value would take gigabytes.
pub fn write_summary_json(
    s: &Summary,
    file: &str,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&summary_without_tensors(s, file))?;
    // Top-level keys are indented by two spaces; nothing nested can match this line.
    let slot = "\n  \"tensors\": []";
    let at = text.find(slot).expect("the document has a tensors key") + slot.len() - 2;
    out.write_all(&text.as_bytes()[..at])?;
    if s.tensors.is_empty() {
        out.write_all(b"[]")?;
    } else {
        out.write_all(b"[\n")?;
        for (i, t) in s.tensors.iter().enumerate() {
            if i > 0 {
                out.write_all(b",\n")?;
            }
            let one = serde_json::to_string_pretty(&tensor_summary_to_json(t))?;
            for (j, line) in one.lines().enumerate() {
                if j > 0 {
                    out.write_all(b"\n")?;
                }
                out.write_all(b"    ")?;
                out.write_all(line.as_bytes())?;
            }
        }
        out.write_all(b"\n  ]")?;
    }
    out.write_all(&text.as_bytes()[at + 2..])
}

fn tensor_summary_to_json(t: &crate::container::summary::TensorSummary) -> Json {
    let streams: Vec<Json> = t
        .streams
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "coding": s.coding.name(),
                "width": s.width,
                "symbols": s.count,
                "bytes": s.data_bytes,
                "entropy": s.entropy,
                "bits_per_symbol": s.bits_per_symbol,
                "code_bits_per_symbol": s.code_bits_per_symbol,
            })
        })
        .collect();
    json!({
        "name": t.name,
        "shape": t.shape,
        "dtype": t.dtype.name(),
        "encoding": t.encoding,
        "stored_bytes": t.stored_bytes,
        "bits_per_weight": t.bits_per_weight,
        "ratio": t.ratio,
        "offset": t.offset,
        "sparsity": t.sparsity,
        "codebook_bits": t.codebook_bits,
        "ranks": (!t.ranks.is_empty()).then_some(&t.ranks),
        "miracle": t.miracle.map(|m| json!({
            "blocks": m.blocks,
            "index_bits": m.index_bits,
            "coded_bits": m.coded_bits,
            "coded_bits_per_weight": m.bits_per_weight(t.elements),
            "shared_values": m.shared_values,
        })),
        "streams": streams,
        "decode_error": t.decode_error,
    })
}

/// The summary document with an empty `tensors` array, in the key order of the full one.
fn summary_without_tensors(s: &Summary, file: &str) -> Json {
    let sections: Vec<Json> = s
        .sections
        .iter()
        .map(|s| json!({"kind": s.kind, "name": s.name, "required": s.required, "bytes": s.bytes}))
        .collect();
    let totals = &s.totals;
    json!({
        "file": file,
        "file_bytes": s.file_bytes,
        "version": s.version(),
        "must_understand": s.must_understand,
        "missing_encodings": s.missing_encodings,
        "sections": sections,
        "metadata": map_to_json(&s.metadata),
        "graph": s.graph.as_ref().map(graph_to_json),
        "tensors": [],
        "totals": {
            "tensors": totals.tensors,
            "params": totals.params,
            "stored_bytes": totals.stored_bytes,
            "f32_bytes": totals.f32_bytes,
            "ratio": totals.ratio,
            "file_ratio": totals.file_ratio,
        },
    })
}

/// JSON to a typed value. Arrays must be homogeneous; ints mixed with floats become floats.
pub fn json_to_value(j: &Json, at: &str) -> Result<Value> {
    let bad = |what: &str| Error::Usage(format!("{at}: {what}"));
    Ok(match j {
        Json::String(s) => Value::String(s.clone()),
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().ok_or_else(|| bad("number out of range"))?),
        },
        Json::Array(items) => {
            let mut values = items
                .iter()
                .enumerate()
                .map(|(i, x)| json_to_value(x, &format!("{at}[{i}]")))
                .collect::<Result<Vec<_>>>()?;
            let has_float = values.iter().any(|v| matches!(v, Value::Float(_)));
            if has_float {
                for v in &mut values {
                    if let Value::Int(i) = v {
                        *v = Value::Float(*i as f64);
                    }
                }
            }
            let elem = values.first().map_or(ValueType::Int, Value::value_type);
            if values.iter().any(|v| v.value_type() != elem) {
                return Err(bad("array elements must all be of one type"));
            }
            Value::Array(elem, values)
        }
        Json::Null | Json::Object(_) => {
            return Err(bad("null and objects have no .cxrm value type"));
        }
    })
}

/// A value given as text (a `--meta KEY=VALUE` argument, a safetensors `__metadata__` entry):
/// JSON when it parses as a number, bool or array, otherwise the text itself.
pub fn value_from_text(text: &str) -> Value {
    match serde_json::from_str::<Json>(text) {
        Ok(j @ (Json::Number(_) | Json::Bool(_) | Json::Array(_))) => {
            json_to_value(&j, "").unwrap_or_else(|_| Value::String(text.to_string()))
        }
        _ => Value::String(text.to_string()),
    }
}

pub fn json_to_map(j: &Json, at: &str) -> Result<Map> {
    let obj = j
        .as_object()
        .ok_or_else(|| Error::Usage(format!("{at}: expected an object")))?;
    obj.iter()
        .map(|(k, v)| Ok((k.clone(), json_to_value(v, &format!("{at}.{k}"))?)))
        .collect()
}

pub fn graph_to_json(g: &Graph) -> Json {
    Json::Array(
        g.nodes
            .iter()
            .map(|n| {
                let mut o = JsonMap::new();
                o.insert("name".into(), json!(n.name));
                o.insert("op".into(), json!(n.op));
                o.insert("inputs".into(), json!(n.inputs));
                o.insert("weights".into(), json!(n.weights));
                for (k, v) in &n.attrs {
                    o.insert(k.clone(), value_to_json(v));
                }
                Json::Object(o)
            })
            .collect(),
    )
}

/// A graph description: `[node, ...]` or `{"nodes": [node, ...], "metadata": {...}}`.
/// Returns the graph and the metadata given beside it (empty if none).
pub fn graph_from_json(j: &Json) -> Result<(Graph, Map)> {
    let (nodes, metadata) = match j {
        Json::Array(nodes) => (nodes, Vec::new()),
        Json::Object(o) => (
            o.get("nodes")
                .and_then(Json::as_array)
                .ok_or_else(|| Error::Usage("graph JSON: expected \"nodes\": [...]".into()))?,
            match o.get("metadata") {
                Some(m) => json_to_map(m, "metadata")?,
                None => Vec::new(),
            },
        ),
        _ => {
            return Err(Error::Usage(
                "graph JSON: expected an array of nodes or an object with \"nodes\"".into(),
            ));
        }
    };
    let mut graph = Graph::default();
    for (i, n) in nodes.iter().enumerate() {
        let at = format!("nodes[{i}]");
        let mut map = json_to_map(n, &at)?;
        let mut take_str = |key: &str| -> Result<String> {
            let pos = map
                .iter()
                .position(|(k, _)| k == key)
                .ok_or_else(|| Error::Usage(format!("{at}: missing {key:?}")))?;
            match map.remove(pos).1 {
                Value::String(s) => Ok(s),
                _ => Err(Error::Usage(format!("{at}.{key}: expected a string"))),
            }
        };
        let name = take_str("name")?;
        let op = take_str("op")?;
        let mut take_list = |key: &str| -> Result<Vec<String>> {
            let Some(pos) = map.iter().position(|(k, _)| k == key) else {
                return Ok(Vec::new());
            };
            match map.remove(pos).1 {
                Value::Array(_, items) => items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(Error::Usage(format!("{at}.{key}: expected strings"))),
                    })
                    .collect(),
                _ => Err(Error::Usage(format!("{at}.{key}: expected an array"))),
            }
        };
        let inputs = take_list("inputs")?;
        let weights = take_list("weights")?;
        graph.nodes.push(Node {
            name,
            op,
            inputs,
            weights,
            attrs: map,
        });
    }
    Ok((graph, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streamed_summary_is_the_pretty_document_byte_for_byte() {
        use crate::{Cxrm, DType, Writer};
        for tensors in [0usize, 1, 3] {
            let mut w = Writer::new();
            // A nested "tensors": [] must not be taken for the top-level slot.
            w.set_metadata("tensors", Value::ints([]));
            for i in 0..tensors {
                let bytes = [i as f32, 2.0].map(f32::to_le_bytes).concat();
                w.add_dense(&format!("t{i}"), DType::F32, &[2], bytes)
                    .unwrap();
            }
            let bytes = w.to_bytes().unwrap();
            let summary = Cxrm::parse(&bytes).unwrap().summary(true).unwrap();
            let whole = serde_json::to_string_pretty(&summary_to_json(&summary, "f")).unwrap();
            let mut streamed = Vec::new();
            write_summary_json(&summary, "f", &mut streamed).unwrap();
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                whole,
                "{tensors} tensors"
            );
        }
    }

    #[test]
    fn graph_json_round_trips() {
        let j = json!({"nodes": [
            {"name": "c", "op": "conv2d", "inputs": ["input"], "weights": ["w"], "stride": [2, 2], "eps": 1e-5},
            {"name": "r", "op": "relu", "inputs": ["c"]}
        ], "metadata": {"model.classes": ["a", "b"]}});
        let (g, meta) = graph_from_json(&j).unwrap();
        assert_eq!(g.nodes[0].get("stride"), Some(&Value::ints([2, 2])));
        assert_eq!(meta[0].1, Value::strings(["a", "b"]));
        let back = graph_from_json(&graph_to_json(&g)).unwrap().0;
        assert_eq!(back, g);
    }

    #[test]
    fn text_values_are_typed_when_they_are_json() {
        assert_eq!(value_from_text("3"), Value::Int(3));
        assert_eq!(value_from_text("[1,2]"), Value::ints([1, 2]));
        assert_eq!(value_from_text("lenet-5"), Value::String("lenet-5".into()));
        assert_eq!(
            value_from_text("\"quoted\""),
            Value::String("\"quoted\"".into())
        );
        assert_eq!(
            value_from_text("[1,\"a\"]"),
            Value::String("[1,\"a\"]".into())
        );
    }

    #[test]
    fn mixed_arrays_are_rejected_and_numbers_widen() {
        assert!(json_to_value(&json!([1, "a"]), "x").is_err());
        assert_eq!(
            json_to_value(&json!([1, 0.5]), "x").unwrap(),
            Value::floats([1.0, 0.5])
        );
    }
}
