use crate::Failure;
use cxrm::interop::safetensors::{PackOptions, add_safetensors};
use std::path::PathBuf;

/// Pack a safetensors file (plus an optional graph) into a .cxrm file.
#[derive(clap::Args)]
#[command(
    after_help = "The graph file is JSON: an array of nodes, or {\"nodes\": [...], \"metadata\": {...}}.\nA node is {\"name\", \"op\", \"inputs\": [...], \"weights\": [...], attributes...} (spec/cxrm.md §7).\n\nExamples:\n  cxrm pack model.safetensors -o model.cxrm\n  cxrm pack model.safetensors -o model.cxrm --graph graph.json --zstd 19 --meta model.name=lenet-5"
)]
pub struct Args {
    /// The safetensors file to read.
    input: PathBuf,
    /// The .cxrm file to write (atomically).
    #[arg(short, long)]
    output: PathBuf,
    /// A JSON graph description to store as the graph section.
    #[arg(long)]
    graph: Option<PathBuf>,
    /// Compress each tensor with zstd at this level (1-22) where that makes it smaller.
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(i32).range(1..=22))]
    zstd: Option<i32>,
    /// Metadata KEY=VALUE; VALUE is read as JSON when it parses (numbers, arrays), else as a string.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let input = cxrm::Mapped::open(&args.input)?;
    let mut writer = cxrm::Writer::new();
    let options = PackOptions {
        zstd_level: args.zstd,
    };
    let n = add_safetensors(&mut writer, input.bytes(), &options)?;
    if let Some(path) = &args.graph {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
        let (graph, metadata) = cxrm::json::graph_from_json(&json)?;
        for (k, v) in metadata {
            writer.set_metadata(k, v);
        }
        writer.set_graph(graph);
    }
    for kv in &args.meta {
        let (key, raw) = kv
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("--meta {kv:?}: expected KEY=VALUE")))?;
        writer.set_metadata(key, cxrm::json::value_from_text(raw));
    }
    let size = writer.write(&args.output)?;
    let f32_bytes: u64 = {
        let mapped = cxrm::Mapped::open(&args.output)?;
        let file = mapped.parse()?;
        file.tensors().iter().map(|t| t.elements * 4).sum()
    };
    println!(
        "wrote {}: {n} tensors, {size} bytes ({:.2}x smaller than f32 weights)",
        args.output.display(),
        f32_bytes as f64 / size.max(1) as f64
    );
    Ok(())
}
