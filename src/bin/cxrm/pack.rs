use crate::Failure;
use cxrm::compress::interop::safetensors::Pack;
use cxrm::compress::methods::deep_compression::plan::ModelPlan;
use cxrm::format::container::output::Output;
use cxrm::format::encoding::codebook::Init;
use std::path::PathBuf;

/// Pack a safetensors file (plus an optional graph) into a .cxrm file, optionally applying
/// Deep Compression's storage steps (prune, quantize, Huffman) to the weights.
#[derive(clap::Args)]
#[command(
    after_help = "The graph file is JSON: an array of nodes, or {\"nodes\": [...], \"metadata\": {...}}.
A node is {\"name\", \"op\", \"inputs\": [...], \"weights\": [...], attributes...} (spec/cxrm.md §7).

Per-layer values: a bare value applies to every weight; conv=V (rank-4 weights), fc=V
(rank-2 weights) and NAME=V (one tensor) override it, e.g. --bits conv=8,fc=5.
Pruning, quantization and Huffman apply to f32 weights of rank 2 or more; biases stay dense.
This packs existing weights; `cxrm compress` adds the retraining the paper pairs with them.

Examples:
  cxrm pack model.safetensors -o model.cxrm
  cxrm pack model.safetensors -o model.cxrm --graph graph.json --zstd 19 --meta model.name=lenet-5
  cxrm pack model.safetensors -o dc.cxrm --prune 0.9 --bits 5 --huffman
  cxrm pack model.safetensors -o dc.cxrm --prune conv=0.6,fc=0.92 --bits conv=8,fc=5 --huffman"
)]
pub struct Args {
    /// The safetensors file to read.
    input: PathBuf,
    /// The .cxrm file to write (atomically; never over an input or a non-regular file; `-` for
    /// standard output).
    #[arg(short, long)]
    output: PathBuf,
    /// Replace OUTPUT even if it is read-only.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    preprocess: crate::preprocessing::PreprocessArgs,
    /// A JSON graph description to store as the graph section.
    #[arg(long)]
    graph: Option<PathBuf>,
    /// Compress with zstd at this level (1-22) wherever that makes a tensor smaller.
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(i32).range(1..=22))]
    zstd: Option<i32>,
    /// Metadata KEY=VALUE; VALUE is read as JSON when it parses (numbers, arrays), else as a string.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Magnitude-prune weights to this sparsity (0-1), per layer, stored as sparse indices.
    #[arg(long, value_name = "SPARSITY")]
    prune: Option<String>,
    /// Prune each layer to its own sparsity, or all pruned layers against one global threshold.
    #[arg(long, value_enum, default_value = "layer")]
    prune_scope: ScopeArg,
    /// Quantize weights to a k-means codebook of 2^BITS centroids (1-8), per layer.
    #[arg(long, value_name = "BITS")]
    bits: Option<String>,
    /// Gap width of the relative sparse index (2-16), per layer; `auto` (default) picks each
    /// tensor's smallest (the paper used conv=8,fc=5).
    #[arg(long, value_name = "BITS", default_value = "auto")]
    index_bits: String,
    /// Huffman-code the index streams (the encoder uses zstd instead where that is smaller).
    #[arg(long)]
    huffman: bool,
    /// k-means initialisation.
    #[arg(long, value_enum, default_value = "linear")]
    init: InitArg,
    /// Seed for --init random.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Store centroids as f32 or f16.
    #[arg(long, value_enum, default_value = "f32")]
    centroids: CentroidArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScopeArg {
    Layer,
    Global,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum InitArg {
    Linear,
    Density,
    Random,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CentroidArg {
    F32,
    F16,
}

fn plan(args: &Args) -> Result<ModelPlan, Failure> {
    let index_bits = (args.index_bits != "auto").then_some(args.index_bits.as_str());
    let plan = ModelPlan {
        zstd_level: args.zstd,
        huffman: args.huffman,
        init: match args.init {
            InitArg::Linear => Init::Linear,
            InitArg::Density => Init::Density,
            InitArg::Random => Init::Random(args.seed),
        },
        centroid_dtype: match args.centroids {
            CentroidArg::F32 => cxrm::DType::F32,
            CentroidArg::F16 => cxrm::DType::F16,
        },
        ..Default::default()
    }
    .with_rules(args.prune.as_deref(), args.bits.as_deref(), index_bits)?;
    Ok(match args.prune_scope {
        ScopeArg::Layer => plan,
        ScopeArg::Global => plan.global()?,
    })
}

pub fn run(args: Args) -> Result<(), Failure> {
    let plan = plan(&args)?;
    let input = cxrm::Mapped::open(&args.input)?;
    let mut pack = Pack::new(input.bytes(), &plan)?;
    if let Some(path) = &args.graph {
        let shown = cxrm::format::text::escape_path(path);
        let text = cxrm::format::container::input::read_regular(path)?;
        let json: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| Failure::Usage(format!("{shown}: {e}")))?;
        // The graph is the user's JSON, not a .cxrm file: its errors are usage errors that
        // name the JSON file, not a byte offset of a file that does not exist yet.
        let in_json = |e: cxrm::Error| Failure::Usage(format!("{shown}: {}", e.without_offset()));
        let (graph, metadata) = cxrm::format::json::graph_from_json(&json).map_err(in_json)?;
        graph
            .check(&|w| pack.writer.has_tensor(w), &|_| 0)
            .map_err(in_json)?;
        // A graph this build could not run is refused now, not when someone runs the file:
        // an unknown op, or a misspelt attribute that would fall back to its default.
        for node in &graph.nodes {
            cxrm::format::container::op::Op::parse(node)
                .map_err(|e| Failure::Usage(format!("{shown}: {e}")))?;
        }
        for (k, v) in metadata {
            pack.writer.set_metadata(k, v);
        }
        pack.writer.set_graph(graph);
    }
    pack.set_provenance(&plan, args.prune.as_deref(), args.bits.as_deref());
    for kv in &args.meta {
        let (key, raw) = kv
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("--meta {kv:?}: expected KEY=VALUE")))?;
        pack.writer
            .set_metadata(key, cxrm::format::json::value_from_text(raw));
    }
    let mut meta = pack.writer.metadata().clone();
    args.preprocess.apply(&mut meta)?;
    for (k, v) in meta {
        pack.writer.set_metadata(k, v);
    }
    let inputs = std::iter::once(&args.input).chain(&args.graph);
    let output = Output::from_inputs(inputs).force(args.force);
    let packed = pack.write(&args.output, &output)?;
    crate::report_written(
        &args.output,
        format!(
            "wrote {}: {} tensors, {} bytes ({:.2}x smaller than f32 weights)",
            crate::shown_output(&args.output),
            packed.tensors,
            packed.bytes,
            packed.ratio()
        ),
    );
    Ok(())
}
