use crate::Failure;
use cxrm::format::container::table::TensorRecord;
use cxrm::format::encoding::StageId;
use cxrm::format::encoding::stream::StreamStats;
use cxrm::format::text::escape;
use cxrm::{Cxrm, ReadOptions, Value};
use serde_json::json;
use std::path::PathBuf;

/// Show a file's header, metadata, graph and per-tensor storage.
#[derive(clap::Args)]
#[command(
    after_help = "Reads the header, table, metadata and graph, and the symbol streams of sparse and codebook
tensors (to report their entropy); dense payloads are never read. Files that need encodings
this build cannot decode are listed as such.

Examples:
  cxrm inspect model.cxrm
  cxrm inspect model.cxrm --json | jq '.totals.ratio'"
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
    let details = details(&file);
    if args.json {
        print_json(&args, &file, &metadata, graph.as_ref(), &details);
    } else {
        print_text(&args, &file, &metadata, graph.as_ref(), &details);
    }
    Ok(())
}

/// What decoding an encoded tensor's streams (or factors) shows.
struct Detail {
    sparsity: Option<f64>,
    bits: Option<u8>,
    streams: Vec<StreamStats>,
    /// `[r]` for lowrank, `[r_out, r_in]` for tucker.
    ranks: Vec<usize>,
    error: Option<String>,
}

impl Detail {
    /// A tensor whose decoding failed: only the error to show.
    fn failed(e: cxrm::Error) -> Detail {
        Detail {
            sparsity: None,
            bits: None,
            streams: Vec::new(),
            ranks: Vec::new(),
            error: Some(e.to_string()),
        }
    }
}

/// Details for sparse, codebook and factored tensors; `None` for the rest (nothing to look
/// inside).
fn details(file: &Cxrm<'_>) -> Vec<Option<Detail>> {
    file.tensors()
        .iter()
        .map(|t| {
            let repr = t.stages[0].id()?;
            if !repr.implemented() {
                return None;
            }
            if matches!(repr, StageId::LowRank | StageId::Tucker | StageId::Binary) {
                use cxrm::format::encoding::Factored;
                return Some(match file.read_factored(t) {
                    Ok(f) => Detail {
                        sparsity: None,
                        bits: None,
                        streams: Vec::new(),
                        ranks: match f {
                            Some(Factored::LowRank(l)) => vec![l.rank],
                            Some(Factored::Tucker(t)) => vec![t.rank_out, t.rank_in],
                            _ => Vec::new(),
                        },
                        error: None,
                    },
                    Err(e) => Detail::failed(e),
                });
            }
            if !matches!(repr, StageId::Sparse | StageId::Codebook) {
                return None;
            }
            Some(match file.decode_detailed(t) {
                Ok(d) => Detail {
                    sparsity: d.nnz.map(|nnz| {
                        if t.elements == 0 {
                            0.0
                        } else {
                            1.0 - nnz as f64 / t.elements as f64
                        }
                    }),
                    bits: d.codebook.map(|c| c.bits),
                    streams: d.stream_stats(),
                    ranks: Vec::new(),
                    error: None,
                },
                Err(e) => Detail::failed(e),
            })
        })
        .collect()
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

fn print_json(
    args: &Args,
    file: &Cxrm<'_>,
    metadata: &cxrm::Map,
    graph: Option<&cxrm::Graph>,
    details: &[Option<Detail>],
) {
    let h = file.header();
    let tensors: Vec<_> = file
        .tensors()
        .iter()
        .zip(details)
        .map(|(t, d)| {
            let streams: Vec<_> = d
                .iter()
                .flat_map(|d| &d.streams)
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
                "encoding": t.stages.iter().map(|s| cxrm::format::encoding::stage_name(s.code)).collect::<Vec<_>>(),
                "stored_bytes": t.extent.length,
                "bits_per_weight": t.bits_per_weight(),
                "ratio": t.ratio_vs_f32(),
                "offset": t.extent.offset,
                "sparsity": d.as_ref().and_then(|d| d.sparsity),
                "codebook_bits": d.as_ref().and_then(|d| d.bits),
                "ranks": d.as_ref().map(|d| d.ranks.clone()).filter(|r| !r.is_empty()),
                "streams": streams,
                "decode_error": d.as_ref().and_then(|d| d.error.clone()),
            })
        })
        .collect();
    let tot = totals(file);
    let doc = json!({
        "file": args.file.display().to_string(),
        "file_bytes": file.file_len(),
        "version": format!("{}.{}", h.version_major, h.version_minor),
        "must_understand": cxrm::format::encoding::mask_names(h.must_understand),
        "missing_encodings": file.missing_encodings(),
        "sections": file.sections().iter().map(|s| json!({
            "kind": s.kind, "name": s.kind_name(), "required": s.required(), "bytes": s.extent.length,
        })).collect::<Vec<_>>(),
        "metadata": cxrm::format::json::map_to_json(metadata),
        "graph": graph.map(cxrm::format::json::graph_to_json),
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
            println!(
                "  {}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * (N - 1))
            );
        }
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i >= right_from {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        println!("  {}", cells.join("  ").trim_end());
    }
}

fn print_text(
    args: &Args,
    file: &Cxrm<'_>,
    metadata: &cxrm::Map,
    graph: Option<&cxrm::Graph>,
    details: &[Option<Detail>],
) {
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
        cxrm::format::encoding::mask_names(h.must_understand).join(", ")
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
            let weights = if n.weights.is_empty() {
                String::new()
            } else {
                format!("weights {} ", escape(&n.weights.join(", ")))
            };
            let line = format!(
                "  {:<14} {:<16} <- {:<18} {}{}",
                escape(&n.name),
                escape(&n.op),
                escape(&n.inputs.join(", ")),
                weights,
                attrs.join(" ")
            );
            println!("{}", line.trim_end());
        }
    }

    let tot = totals(file);
    let mut rows: Vec<[String; 9]> = vec![
        [
            "name", "shape", "dtype", "encoding", "sparsity", "bits", "stored B", "bits/w",
            "vs f32",
        ]
        .map(String::from),
    ];
    for (t, d) in file.tensors().iter().zip(details) {
        rows.push([
            escape(t.name),
            shape(t),
            t.dtype.name().to_string(),
            t.chain_name(),
            d.as_ref()
                .and_then(|d| d.sparsity)
                .map_or_else(|| "-".into(), |s| format!("{:.1}%", s * 100.0)),
            d.as_ref()
                .and_then(|d| d.bits)
                .map_or_else(|| "-".into(), |b| b.to_string()),
            t.extent.length.to_string(),
            opt(t.bits_per_weight(), ""),
            opt(t.ratio_vs_f32(), "x"),
        ]);
    }
    rows.push([
        format!("total ({} tensors)", file.tensors().len()),
        format!("{} params", tot.params),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        tot.stored.to_string(),
        opt(
            (tot.params > 0).then(|| tot.stored as f64 * 8.0 / tot.params as f64),
            "",
        ),
        opt(ratio(tot.params, tot.stored), "x"),
    ]);
    println!("\ntensors");
    table(&rows, 4, true);

    let mut stream_rows: Vec<[String; 8]> = vec![
        [
            "tensor", "stream", "coding", "width", "symbols", "entropy", "code", "stored",
        ]
        .map(String::from),
    ];
    for (t, d) in file.tensors().iter().zip(details) {
        let Some(d) = d else { continue };
        if let Some(e) = &d.error {
            println!("\n  {}: cannot decode: {}", escape(t.name), escape(e));
        }
        for s in &d.streams {
            stream_rows.push([
                escape(t.name),
                s.name.to_string(),
                s.coding.name().to_string(),
                s.width.to_string(),
                s.count.to_string(),
                format!("{:.3}", s.entropy),
                s.code_bits_per_symbol
                    .map_or_else(|| "-".into(), |b| format!("{b:.3}")),
                format!("{:.3}", s.bits_per_symbol),
            ]);
        }
    }
    if stream_rows.len() > 1 {
        println!(
            "\nsymbol streams, bits per symbol: entropy of the symbols, the Huffman code alone, stored (with tables)"
        );
        table(&stream_rows, 3, false);
    }
    let factored: Vec<String> = file
        .tensors()
        .iter()
        .zip(details)
        .filter_map(|(t, d)| {
            let d = d.as_ref()?;
            (!d.ranks.is_empty()).then(|| {
                let ranks: Vec<String> = d.ranks.iter().map(usize::to_string).collect();
                format!(
                    "  {} {} rank {}",
                    escape(t.name),
                    t.chain_name(),
                    ranks.join(" x ")
                )
            })
        })
        .collect();
    if !factored.is_empty() {
        println!("\nfactored tensors (rank; out x in for tucker)");
        for line in factored {
            println!("{line}");
        }
    }
    println!(
        "\nwhole file {} bytes (with header, table, sections and alignment): {} vs the {} bytes of f32 weights",
        file.file_len(),
        opt(ratio(tot.params, file.file_len()), "x"),
        tot.params * 4,
    );
}
