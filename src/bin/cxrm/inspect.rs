use crate::Failure;
use cxrm::ReadOptions;
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
        print!("{}", summary.to_text(&file));
    }
    Ok(())
}
