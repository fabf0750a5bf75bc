use crate::preprocessing::PreprocessArgs;
use crate::{Failure, process};
use cxrm::format::container::output::Output;
use std::path::PathBuf;

/// Import a model trained elsewhere (ONNX, Keras 3) as a runnable .cxrm file with dense weights.
#[derive(clap::Args)]
#[command(
    after_help = "The graph is translated node by node; constant subgraphs are folded, and an
operator the runtime cannot run is refused with the node, op and opset (exit 1, nothing
written). The written file is loaded by the runtime before it replaces anything. The
preprocessing flags record how images must be prepared (spec §6.1); pick the ones the
model was trained with. A Keras model's leading Rescaling/Normalization layers become the
preprocessing, and Keras models default to Pillow's nearest resize (load_img's default).

Examples:
  cxrm import resnet.onnx -o resnet.cxrm --resize bilinear --crop-from 256x256 \\
      --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --classes-file labels.txt
  cxrm import xception.keras -o xray.cxrm --classes NORMAL,PNEUMONIA
  cxrm import xray.onnx -o xray.cxrm --input 150x150x3 --resize nearest \\
      --scale 1/127.5 --offset -1 --classes NORMAL,PNEUMONIA"
)]
pub struct Args {
    /// The model to import (.onnx, or .keras from Keras 3).
    model: PathBuf,
    /// The .cxrm file to write (`-` for standard output).
    #[arg(short, long)]
    output: PathBuf,
    /// Replace OUTPUT even if it is read-only.
    #[arg(long)]
    force: bool,
    /// Class names, one per line (the same as --classes).
    #[arg(long, value_name = "FILE")]
    classes_file: Option<PathBuf>,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

pub fn run(mut args: Args) -> Result<(), Failure> {
    let shown = cxrm::format::text::escape_path(&args.model);
    // The importers hold the model and its decoded weights in memory: about three times its
    // size, checked against the memory budget before anything is read.
    let size = std::fs::metadata(&args.model).map_or(0, |m| m.len());
    cxrm::format::budget::Budget::default().check(
        || format!("importing {shown} ({size} bytes)"),
        size.saturating_mul(3),
    )?;
    let bytes = cxrm::format::container::input::read_regular(&args.model)?;
    if let Some(path) = &args.classes_file {
        let text = cxrm::format::container::input::read_regular(path)?;
        let text = String::from_utf8(text).map_err(|_| {
            Failure::Usage(format!(
                "{}: not UTF-8 text",
                cxrm::format::text::escape_path(path)
            ))
        })?;
        args.preprocess.classes = Some(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        );
    }
    // A model that cannot be imported is a bad input file: exit 1, like an invalid .cxrm.
    let invalid = |e: cxrm::Error| Failure::Invalid(cxrm::Error::Model(format!("{shown}: {e}")));
    // A .keras file is a zip; anything else is read as ONNX's protobuf.
    let mut imported = if bytes.starts_with(b"PK\x03\x04") {
        cxrm::compress::interop::keras::import(&bytes, args.preprocess.input_shape)
    } else {
        cxrm::compress::interop::onnx::import(&bytes, args.preprocess.input_shape)
    }
    .map_err(invalid)?;
    args.preprocess.apply(&mut imported.metadata)?;
    let nodes = imported.graph.nodes.len();
    let params = imported.parameters();
    let folded: Vec<String> = imported
        .folded
        .iter()
        .map(|(op, n)| format!("{n} {op}"))
        .collect();
    // The file is built once, in memory: it must pass `verify` and load in this build's
    // runtime before those same bytes are written.
    let file_bytes = imported.into_writer()?.to_bytes()?;
    let file = cxrm::format::container::reader::Cxrm::parse(&file_bytes)?;
    file.verify().map_err(|e| {
        Failure::Usage(format!(
            "the file written would not be valid, so it was not kept: {e}"
        ))
    })?;
    let model = process::loading(|| cxrm::runtime::Model::load(&file)).map_err(invalid)?;
    let output = Output::from_inputs([&args.model]).force(args.force);
    output.write(
        &args.output,
        |w| std::io::Write::write_all(w, &file_bytes),
        |_| Ok(()),
    )?;
    let written = file_bytes.len();
    crate::report_written(
        &args.output,
        format!(
            "wrote {}: {nodes} nodes, {params} parameters, input {}x{}x{}, {} outputs, {written} bytes{}",
            crate::shown_output(&args.output),
            model.input.channels,
            model.input.height,
            model.input.width,
            model.num_classes(),
            if folded.is_empty() {
                String::new()
            } else {
                format!("; folded away: {}", folded.join(", "))
            }
        ),
    );
    Ok(())
}
