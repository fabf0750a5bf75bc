use crate::Failure;
use std::path::PathBuf;

/// Full structural validation: every offset, CRC, section and tensor decode.
#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 valid, 1 invalid (the message names the field and byte offset), 2 usage or I/O error.\n\nExample:\n  cxrm verify model.cxrm"
)]
pub struct Args {
    /// The .cxrm file to check.
    file: PathBuf,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let mapped = cxrm::Mapped::open(&args.file)?;
    let file = mapped.parse()?;
    let report = file.verify()?;
    println!(
        "{}: valid .cxrm {}.{}: {} tensors ({} stored bytes, {} decoded), {} sections, {} metadata entries, {} graph nodes; every CRC matches",
        cxrm::format::text::escape_path(&args.file),
        file.header().version_major,
        file.header().version_minor,
        report.tensors,
        report.stored_bytes,
        report.decoded_bytes,
        report.sections,
        report.metadata_entries,
        report.graph_nodes
    );
    Ok(())
}
