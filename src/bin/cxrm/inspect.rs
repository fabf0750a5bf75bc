use crate::Failure;
use cxrm::format::container::summary::Summary;
use cxrm::format::text::escape;
use cxrm::{ReadOptions, Value};
use std::path::PathBuf;

/// Show a file's header, metadata, graph and per-tensor storage.
#[derive(clap::Args)]
#[command(
    after_help = "Reads the header, table, metadata and graph; sparsity, codebook bits and ranks come from the
stage parameters, so no payload is read unless --streams asks for the symbol streams'
entropy. Files that need encodings this build cannot decode are listed as such.

Examples:
  cxrm inspect model.cxrm
  cxrm inspect model.cxrm --json | jq '.totals.ratio'"
)]
pub struct Args {
    /// The .cxrm file to inspect.
    file: PathBuf,
    /// Print one JSON document instead of tables (fields documented in docs/cli.md).
    #[arg(long)]
    json: bool,
    /// Also read the symbol streams of sparse and codebook tensors, and the factors of
    /// factored ones: each stream's entropy and cost, and whether every tensor decodes.
    #[arg(long)]
    streams: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let mapped = cxrm::Mapped::open(&args.file)?;
    let options = ReadOptions {
        allow_unknown_encodings: true,
        ..Default::default()
    };
    let summary = mapped.parse_with(&options)?.summary(args.streams)?;
    let file = cxrm::format::text::escape_path(&args.file);
    if args.json {
        let doc = cxrm::format::json::summary_to_json(&summary, &file);
        let text = serde_json::to_string_pretty(&doc).expect("JSON values serialise");
        println!("{text}");
    } else {
        print_text(&file, &summary);
    }
    Ok(())
}

fn show_value(v: &Value) -> String {
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

/// Print rows as aligned columns; columns from `right_from` on are right-aligned.
fn table<const N: usize>(rows: &[[String; N]], right_from: usize, rule_before_last: bool) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for (r, row) in rows.iter().enumerate() {
        if rule_before_last && r + 1 == rows.len() {
            let width = widths.iter().sum::<usize>() + 2 * (N - 1);
            println!("  {}", "-".repeat(width));
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
        println!("  {}", cells.join("  ").trim_end());
    }
}

fn print_text(file: &str, s: &Summary) {
    println!("file       {file} ({} bytes)", s.file_bytes);
    let used = s.must_understand.join(", ");
    println!("format     cxrm {}, encodings used: {used}", s.version());
    if !s.missing_encodings.is_empty() {
        let missing = s.missing_encodings.join(", ");
        println!("           (this build cannot decode: {missing})");
    }
    let sections: Vec<String> = s
        .sections
        .iter()
        .map(|s| format!("{} ({} B)", s.name, s.bytes))
        .collect();
    let sections = Some(sections.join(", ")).filter(|s| !s.is_empty());
    println!("sections   {}", sections.as_deref().unwrap_or("none"));
    if !s.metadata.is_empty() {
        println!("\nmetadata");
        for (k, v) in &s.metadata {
            println!("  {} = {}", escape(k), show_value(v));
        }
    }
    if let Some(g) = &s.graph {
        println!("\ngraph ({} nodes)", g.nodes.len());
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
            let (name, op, inputs) = (escape(&n.name), escape(&n.op), escape(&n.inputs.join(", ")));
            let line = format!(
                "  {name:<14} {op:<16} <- {inputs:<18} {weights}{}",
                attrs.join(" ")
            );
            println!("{}", line.trim_end());
        }
    }

    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let header = [
        "name", "shape", "dtype", "encoding", "sparsity", "bits", "stored B", "bits/w", "vs f32",
    ];
    let mut rows = vec![header.map(String::from)];
    for t in &s.tensors {
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
    let tot = &s.totals;
    let mut total: [String; 9] = Default::default();
    total[0] = format!("total ({} tensors)", tot.tensors);
    total[1] = format!("{} params", tot.params);
    total[6] = tot.stored_bytes.to_string();
    total[7] = opt(tot.bits_per_weight, "");
    total[8] = opt(tot.ratio, "x");
    rows.push(total);
    println!("\ntensors");
    table(&rows, 4, true);

    let header = [
        "tensor", "stream", "coding", "width", "symbols", "entropy", "code", "stored",
    ];
    let mut stream_rows = vec![header.map(String::from)];
    for t in &s.tensors {
        if let Some(e) = &t.decode_error {
            println!("\n  {}: cannot decode: {}", escape(&t.name), escape(e));
        }
        for st in &t.streams {
            stream_rows.push([
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
    if stream_rows.len() > 1 {
        println!(
            "\nsymbol streams, bits per symbol: entropy of the symbols, the Huffman code alone, stored (with tables)"
        );
        table(&stream_rows, 3, false);
    }
    let factored: Vec<&_> = s.tensors.iter().filter(|t| !t.ranks.is_empty()).collect();
    if !factored.is_empty() {
        println!("\nfactored tensors (rank; out x in for tucker)");
        for t in factored {
            let ranks: Vec<String> = t.ranks.iter().map(usize::to_string).collect();
            println!(
                "  {} {} rank {}",
                escape(&t.name),
                t.chain(),
                ranks.join(" x ")
            );
        }
    }
    println!(
        "\nwhole file {} bytes (with header, table, sections and alignment): {} vs the {} bytes of f32 weights",
        s.file_bytes,
        opt(tot.file_ratio, "x"),
        tot.f32_bytes,
    );
}
