use crate::Failure;
use cxrm::format::container::output::Output;
use std::path::PathBuf;

/// Write a .cxrm model as an ONNX model (opset 17), to run in onnxruntime or anything that
/// reads ONNX.
#[derive(clap::Args)]
#[command(
    after_help = "Weights are decoded to dense f32, except low-rank and Tucker layers, which become
their factor products (two or three Conv/Gemm nodes) so that ONNX runtimes keep the factored
speed. XNOR layers are spelled out with standard operators (signs, product, times K). The
metadata, preprocessing included, goes into metadata_props as cxrm:KEY; `cxrm import` reads it
back.

Example:
  cxrm export model.cxrm -o model.onnx"
)]
pub struct Args {
    /// The .cxrm model.
    model: PathBuf,
    /// The .onnx file to write (`-` for standard output).
    #[arg(short, long)]
    output: PathBuf,
    /// Replace OUTPUT even if it is read-only.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let mapped = cxrm::Mapped::open(&args.model)?;
    let file = mapped.parse()?;
    let bytes = cxrm::compress::interop::onnx::export::export(&file)?;
    let output = Output::from_inputs([&args.model]).force(args.force);
    output.write(
        &args.output,
        |w| std::io::Write::write_all(w, &bytes),
        |_| Ok(()),
    )?;
    crate::report_written(
        &args.output,
        format!(
            "wrote {}: ONNX opset {}, {} bytes",
            crate::shown_output(&args.output),
            cxrm::compress::interop::onnx::export::OPSET,
            bytes.len()
        ),
    );
    Ok(())
}
