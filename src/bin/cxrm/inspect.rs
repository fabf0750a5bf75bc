use crate::Failure;
use cxrm::ReadOptions;
use std::io::Write;
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
    if args.json {
        // JSON escapes control characters itself; the path goes in as it is.
        let file = args.file.display().to_string();
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        cxrm::format::json::write_summary_json(&summary, &file, &mut out)
            .and_then(|()| writeln!(out))
            .and_then(|()| out.flush())
            .map_err(|e| Failure::Usage(format!("cannot write the report: {e}")))?;
    } else {
        print!(
            "{}",
            summary.to_text(&cxrm::format::text::escape_path(&args.file))
        );
    }
    Ok(())
}
