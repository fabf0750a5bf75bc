//! The text view of a [`Summary`]: what `cxrm inspect` prints without `--json`. It sits beside
//! the JSON view ([`crate::json::summary_to_json`]) so that both render the one report value,
//! and a tool other than the CLI can print the same tables.

use super::summary::Summary;
use super::value::Value;
use crate::text::escape;

/// A metadata or attribute value as one short line: strings quoted and escaped, arrays cut
/// after their first few items so that a long one cannot flood the report.
pub fn show_value(v: &Value) -> String {
    const SHOWN: usize = 8;
    match v {
        Value::String(s) => format!("\"{}\"", escape(s)),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f}"),
        Value::Bool(b) => b.to_string(),
        Value::Array(_, items) => {
            let mut parts: Vec<String> = items.iter().take(SHOWN).map(show_value).collect();
            if items.len() > SHOWN {
                parts.push(format!("… ({} items)", items.len()));
            }
            format!("[{}]", parts.join(", "))
        }
    }
}

fn opt(v: Option<f64>, suffix: &str) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.2}{suffix}"))
}

fn dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

/// Rows as aligned columns, appended to `out`; columns from `right_from` on are right-aligned.
fn table<const N: usize>(
    out: &mut Vec<String>,
    rows: &[[String; N]],
    right_from: usize,
    rule_before_last: bool,
) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for (r, row) in rows.iter().enumerate() {
        if rule_before_last && r + 1 == rows.len() {
            let width = widths.iter().sum::<usize>() + 2 * (N - 1);
            out.push(format!("  {}", "-".repeat(width)));
        }
        let cells: Vec<String> = (0..N)
            .map(|i| {
                let (cell, w) = (&row[i], widths[i]);
                if i >= right_from {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push(format!("  {}", cells.join("  ").trim_end()));
    }
}

impl Summary {
    /// The report as aligned text, every line ending in a newline. `file` is the path as it
    /// should be shown, already escaped (see [`crate::text::escape_path`]).
    pub fn to_text(&self, file: &str) -> String {
        let mut out = Vec::new();
        self.header_text(file, &mut out);
        self.tensors_text(&mut out);
        self.streams_text(&mut out);
        out.push(format!(
            "\nwhole file {} bytes (with header, table, sections and alignment): {} vs the {} bytes of f32 weights",
            self.file_bytes,
            opt(self.totals.file_ratio, "x"),
            self.totals.f32_bytes,
        ));
        let mut text = out.join("\n");
        text.push('\n');
        text
    }

    /// File, format, sections, metadata and the graph's nodes.
    fn header_text(&self, file: &str, out: &mut Vec<String>) {
        out.push(format!("file       {file} ({} bytes)", self.file_bytes));
        let used = self.must_understand.join(", ");
        out.push(format!(
            "format     cxrm {}, encodings used: {used}",
            self.version()
        ));
        if !self.missing_encodings.is_empty() {
            let missing = self.missing_encodings.join(", ");
            out.push(format!("           (this build cannot decode: {missing})"));
        }
        let sections: Vec<String> = self
            .sections
            .iter()
            .map(|s| format!("{} ({} B)", s.name, s.bytes))
            .collect();
        let sections = Some(sections.join(", ")).filter(|s| !s.is_empty());
        out.push(format!(
            "sections   {}",
            sections.as_deref().unwrap_or("none")
        ));
        if !self.metadata.is_empty() {
            out.push("\nmetadata".into());
            for (k, v) in &self.metadata {
                out.push(format!("  {} = {}", escape(k), show_value(v)));
            }
        }
        if let Some(g) = &self.graph {
            out.push(format!("\ngraph ({} nodes)", g.nodes.len()));
            for n in &g.nodes {
                let attrs: Vec<String> = n
                    .attrs
                    .iter()
                    .map(|(k, v)| format!("{}={}", escape(k), show_value(v)))
                    .collect();
                let weights = if n.weights.is_empty() {
                    String::new()
                } else {
                    format!("weights {} ", escape(&n.weights.join(", ")))
                };
                let (name, op) = (escape(&n.name), escape(&n.op));
                let inputs = escape(&n.inputs.join(", "));
                let line = format!(
                    "  {name:<14} {op:<16} <- {inputs:<18} {weights}{}",
                    attrs.join(" ")
                );
                out.push(line.trim_end().to_string());
            }
        }
    }

    /// One row per tensor, then the totals.
    fn tensors_text(&self, out: &mut Vec<String>) {
        let header = [
            "name", "shape", "dtype", "encoding", "sparsity", "bits", "stored B", "bits/w",
            "vs f32",
        ];
        let mut rows = vec![header.map(String::from)];
        for t in &self.tensors {
            let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
            rows.push([
                escape(&t.name),
                format!("[{}]", shape.join(", ")),
                t.dtype.name().to_string(),
                t.chain(),
                dash(t.sparsity.map(|s| format!("{:.1}%", s * 100.0))),
                dash(t.codebook_bits.map(|b| b.to_string())),
                t.stored_bytes.to_string(),
                opt(t.bits_per_weight, ""),
                opt(t.ratio, "x"),
            ]);
        }
        let tot = &self.totals;
        let mut total: [String; 9] = Default::default();
        total[0] = format!("total ({} tensors)", tot.tensors);
        total[1] = format!("{} params", tot.params);
        total[6] = tot.stored_bytes.to_string();
        total[7] = opt(tot.bits_per_weight, "");
        total[8] = opt(tot.ratio, "x");
        rows.push(total);
        out.push("\ntensors".into());
        table(out, &rows, 4, true);
    }

    /// Decode errors, the symbol streams read by `summary(true)`, and factored tensors' ranks.
    fn streams_text(&self, out: &mut Vec<String>) {
        let header = [
            "tensor", "stream", "coding", "width", "symbols", "entropy", "code", "stored",
        ];
        let mut rows = vec![header.map(String::from)];
        for t in &self.tensors {
            if let Some(e) = &t.decode_error {
                out.push(format!(
                    "\n  {}: cannot decode: {}",
                    escape(&t.name),
                    escape(e)
                ));
            }
            for st in &t.streams {
                rows.push([
                    escape(&t.name),
                    st.name.to_string(),
                    st.coding.name().to_string(),
                    st.width.to_string(),
                    st.count.to_string(),
                    format!("{:.3}", st.entropy),
                    dash(st.code_bits_per_symbol.map(|b| format!("{b:.3}"))),
                    format!("{:.3}", st.bits_per_symbol),
                ]);
            }
        }
        if rows.len() > 1 {
            out.push(
                "\nsymbol streams, bits per symbol: entropy of the symbols, the Huffman code alone, stored (with tables)"
                    .into(),
            );
            table(out, &rows, 3, false);
        }
        let factored: Vec<&_> = self
            .tensors
            .iter()
            .filter(|t| !t.ranks.is_empty())
            .collect();
        if !factored.is_empty() {
            out.push("\nfactored tensors (rank; out x in for tucker)".into());
            for t in factored {
                let ranks: Vec<String> = t.ranks.iter().map(usize::to_string).collect();
                out.push(format!(
                    "  {} {} rank {}",
                    escape(&t.name),
                    t.chain(),
                    ranks.join(" x ")
                ));
            }
        }
        let coded: Vec<&_> = self
            .tensors
            .iter()
            .filter(|t| t.miracle.is_some())
            .collect();
        if !coded.is_empty() {
            out.push("\nMIRACLE tensors (one sample index per block)".into());
            for t in coded {
                let m = t.miracle.expect("filtered");
                let shared = m
                    .shared_values
                    .map(|v| format!(", {} weights sharing {v} hashed values", t.elements))
                    .unwrap_or_default();
                out.push(format!(
                    "  {}: {} blocks of {} bits = {} bits, {} bits per weight{shared}",
                    escape(&t.name),
                    m.blocks,
                    m.index_bits,
                    m.coded_bits,
                    dash(m.bits_per_weight(t.elements).map(|b| format!("{b:.4}"))),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::value::ValueType;

    #[test]
    fn long_arrays_are_cut_and_strings_escaped() {
        let items = (0..10).map(Value::Int).collect();
        assert_eq!(
            show_value(&Value::Array(ValueType::Int, items)),
            "[0, 1, 2, 3, 4, 5, 6, 7, … (10 items)]"
        );
        assert_eq!(
            show_value(&Value::String("a\u{1b}[2J".into())),
            "\"a\\u{1b}[2J\""
        );
    }
}
