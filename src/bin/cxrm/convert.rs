use crate::Failure;
use std::path::PathBuf;

/// Decode every tensor to dense and write a safetensors file.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  cxrm convert model.cxrm -o model.safetensors")]
pub struct Args {
    /// The .cxrm file to read.
    input: PathBuf,
    /// The safetensors file to write (atomically; never over the input or a non-regular file;
    /// `-` for standard output).
    #[arg(short, long)]
    output: PathBuf,
    /// Replace OUTPUT even if it is read-only.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let mapped = cxrm::Mapped::open(&args.input)?;
    let file = mapped.parse()?;
    let output =
        cxrm::format::container::output::Output::from_inputs([&args.input]).force(args.force);
    let n = cxrm::compress::interop::safetensors::write_safetensors(&file, &args.output, &output)?;
    crate::report_written(
        &args.output,
        format!(
            "wrote {}: {n} tensors, decoded to dense",
            crate::shown_output(&args.output)
        ),
    );
    Ok(())
}
