use crate::{Failure, process};
use std::path::PathBuf;

/// Full structural validation: every offset, CRC, section and tensor decode.
#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 valid, 1 invalid (the message names the field and byte offset), 2 usage or I/O error,\n3 valid but not runnable by this build (with --runnable).\n\nExamples:\n  cxrm verify model.cxrm\n  cxrm verify model.cxrm --runnable"
)]
pub struct Args {
    /// The .cxrm file to check.
    file: PathBuf,
    /// Also check that this build's runtime can run the model: every op known, every
    /// attribute known, shapes that fit, and the input metadata readable. A file that is valid
    /// but not runnable exits with 3.
    #[arg(long)]
    runnable: bool,
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
    if args.runnable {
        let model = process::loading(|| cxrm::runtime::Model::load(&file)).map_err(|e| {
            Failure::NotRunnable(format!(
                "{} is valid, but this build cannot run it: {e}",
                cxrm::format::text::escape_path(&args.file)
            ))
        })?;
        println!(
            "runnable: {} layers, input {}x{}x{}, {} outputs",
            model.layer_info().len(),
            model.input.channels,
            model.input.height,
            model.input.width,
            model.num_classes()
        );
    }
    Ok(())
}
