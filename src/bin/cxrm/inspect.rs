use crate::Failure;
use cxrm::container::table::TensorRecord;
use cxrm::text::escape;
use cxrm::{Cxrm, ReadOptions, Value};
use serde_json::json;
use std::path::PathBuf;

/// Show a file's header, metadata, graph and per-tensor storage.
#[derive(clap::Args)]
#[command(
    after_help = "Opens the file without decoding payloads, so it works on files of any size and on files\nthat need encodings this build cannot decode (they are listed as such).\n\nExamples:\n  cxrm inspect model.cxrm\n  cxrm inspect model.cxrm --json | jq '.totals.ratio'"
)]
pub struct Args {
    /// The .cxrm file to inspect.
    file: PathBuf,
    /// Print one JSON document instead of tables (fields documented in README.md).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let mapped = cxrm::Mapped::open(&args.file)?;
    let options = ReadOptions {
        allow_unknown_encodings: true,
        ..Default::default()
    };
    let file = mapped.parse_with(&options)?;
    let metadata = file.metadata()?;
    let graph = file.graph()?;
    if args.json {
        print_json(&args, &file, &metadata, graph.as_ref());
    } else {
        print_text(&args, &file, &metadata, graph.as_ref());
    }
    Ok(())
}

struct Totals {
    params: u64,
    stored: u64,
}

fn totals(file: &Cxrm<'_>) -> Totals {
    Totals {
        params: file.tensors().iter().map(|t| t.elements).sum(),
        stored: file.tensors().iter().map(|t| t.extent.length).sum(),
    }
}

fn ratio(params: u64, stored: u64) -> Option<f64> {
    (stored > 0).then(|| params as f64 * 4.0 / stored as f64)
}

fn print_json(args: &Args, file: &Cxrm<'_>, metadata: &cxrm::Map, graph: Option<&cxrm::Graph>) {
    let h = file.header();
    let tensors: Vec<_> = file
        .tensors()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "shape": t.shape,
                "dtype": t.dtype.name(),
                "encoding": t.stages.iter().map(|s| cxrm::encoding::stage_name(s.code)).collect::<Vec<_>>(),
                "stored_bytes": t.extent.length,
                "bits_per_weight": t.bits_per_weight(),
                "ratio": t.ratio_vs_f32(),
                "offset": t.extent.offset,
            })
        })
        .collect();
    let tot = totals(file);
    let doc = json!({
        "file": args.file.display().to_string(),
        "file_bytes": file.file_len(),
        "version": format!("{}.{}", h.version_major, h.version_minor),
        "must_understand": cxrm::encoding::mask_names(h.must_understand),
        "missing_encodings": file.missing_encodings(),
        "sections": file.sections().iter().map(|s| json!({
            "kind": s.kind, "name": s.kind_name(), "required": s.required(), "bytes": s.extent.length,
        })).collect::<Vec<_>>(),
        "metadata": cxrm::json::map_to_json(metadata),
        "graph": graph.map(cxrm::json::graph_to_json),
        "tensors": tensors,
        "totals": {
            "tensors": file.tensors().len(),
            "params": tot.params,
            "stored_bytes": tot.stored,
            "f32_bytes": tot.params * 4,
            "ratio": ratio(tot.params, tot.stored),
            "file_ratio": ratio(tot.params, file.file_len()),
        },
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("JSON values serialise")
    );
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

fn shape(t: &TensorRecord<'_>) -> String {
    format!(
        "[{}]",
        t.shape
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn opt(v: Option<f64>, suffix: &str) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.2}{suffix}"))
}

fn print_text(args: &Args, file: &Cxrm<'_>, metadata: &cxrm::Map, graph: Option<&cxrm::Graph>) {
    let h = file.header();
    println!(
        "file       {} ({} bytes)",
        args.file.display(),
        file.file_len()
    );
    println!(
        "format     cxrm {}.{}, encodings used: {}",
        h.version_major,
        h.version_minor,
        cxrm::encoding::mask_names(h.must_understand).join(", ")
    );
    let missing = file.missing_encodings();
    if !missing.is_empty() {
        println!(
            "           (this build cannot decode: {})",
            missing.join(", ")
        );
    }
    let sections: Vec<String> = file
        .sections()
        .iter()
        .map(|s| format!("{} ({} B)", s.kind_name(), s.extent.length))
        .collect();
    println!(
        "sections   {}",
        if sections.is_empty() {
            "none".into()
        } else {
            sections.join(", ")
        }
    );

    if !metadata.is_empty() {
        println!("\nmetadata");
        for (k, v) in metadata {
            println!("  {} = {}", escape(k), show_value(v));
        }
    }
    if let Some(g) = graph {
        println!("\ngraph ({} nodes)", g.nodes.len());
        for n in &g.nodes {
            let attrs: Vec<String> = n
                .attrs
                .iter()
                .map(|(k, v)| format!("{}={}", escape(k), show_value(v)))
                .collect();
            let line = format!(
                "  {:<14} {:<16} <- {:<18} {}{}",
                escape(&n.name),
                escape(&n.op),
                escape(&n.inputs.join(", ")),
                if n.weights.is_empty() {
                    String::new()
                } else {
                    format!("weights {} ", escape(&n.weights.join(", ")))
                },
                attrs.join(" ")
            );
            println!("{}", line.trim_end());
        }
    }

    let rows: Vec<[String; 7]> = file
        .tensors()
        .iter()
        .map(|t| {
            [
                escape(t.name),
                shape(t),
                t.dtype.name().to_string(),
                t.chain_name(),
                t.extent.length.to_string(),
                opt(t.bits_per_weight(), ""),
                opt(t.ratio_vs_f32(), "x"),
            ]
        })
        .collect();
    let tot = totals(file);
    let header = [
        "name", "shape", "dtype", "encoding", "stored B", "bits/w", "vs f32",
    ]
    .map(String::from);
    let footer = [
        format!("total ({} tensors)", rows.len()),
        format!("{} params", tot.params),
        String::new(),
        String::new(),
        tot.stored.to_string(),
        opt(
            (tot.params > 0).then(|| tot.stored as f64 * 8.0 / tot.params as f64),
            "",
        ),
        opt(ratio(tot.params, tot.stored), "x"),
    ];
    let mut widths = [0usize; 7];
    for row in std::iter::once(&header)
        .chain(&rows)
        .chain(std::iter::once(&footer))
    {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String; 7]| {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i >= 4 {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        println!("  {}", cells.join("  ").trim_end());
    };
    println!("\ntensors");
    line(&header);
    for row in &rows {
        line(row);
    }
    println!("  {}", "-".repeat(widths.iter().sum::<usize>() + 12));
    line(&footer);
    println!(
        "\nwhole file {} bytes (with header, table, sections and alignment): {} vs the {} bytes of f32 weights",
        file.file_len(),
        opt(ratio(tot.params, file.file_len()), "x"),
        tot.params * 4,
    );
}
