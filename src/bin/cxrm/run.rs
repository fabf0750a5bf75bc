use crate::{Failure, process};
use cxrm::format::text::escape;
use cxrm::runtime::{Model, preprocess};
use serde_json::json;
use std::path::PathBuf;

/// Classify images with a model file: the file's graph, weights and preprocessing metadata are
/// all it needs.
#[derive(clap::Args)]
#[command(
    after_help = "Each image is decoded (PNG or JPEG), converted to the model's channels, resized and
scaled as the file's metadata records (input.shape, input.resize, input.crop_from,
input.channel_order, input.scale, input.offset, input.mean, input.std; see spec §6.1).

Examples:
  cxrm run model.cxrm digit.png
  cxrm run xray.cxrm scans/*.jpeg --json"
)]
pub struct Args {
    /// The .cxrm model.
    model: PathBuf,
    /// Images to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// One JSON document: per image `image`, `class`, `probabilities` (in class order), `top`
    /// (the three most probable), and `logits` (the graph's output before softmax; null when
    /// the graph itself ends in softmax).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: crate::RuntimeArgs,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let mapped = cxrm::Mapped::open(&args.model)?;
    let file = mapped.parse()?;
    let model = process::loading(|| Model::load_with(&file, args.runtime.options()))?;
    let names = model.class_names();
    let mut results = Vec::new();
    for path in &args.images {
        let x = preprocess::load(path, &model.input)?;
        let batch = cxrm::runtime::model::batch_of_one(x);
        let c = model.classify(batch.view(), 3)?.remove(0);
        let best = c
            .best
            .ok_or_else(|| Failure::Usage("the model has no classes".into()))?;
        let name = |class: usize| escape(&names[class]);
        if args.json {
            // JSON escapes control characters itself.
            let image = path.display().to_string();
            let top: Vec<_> = c
                .top
                .iter()
                .map(|r| json!({"class": names[r.class], "probability": r.probability}))
                .collect();
            results.push(json!({
                "image": image,
                "class": names[best.class],
                "probabilities": c.probabilities,
                "top": top,
                "logits": c.logits,
            }));
        } else {
            let top: Vec<String> = c
                .top
                .iter()
                .map(|r| format!("{} {:.4}", name(r.class), r.probability))
                .collect();
            println!(
                "{}: {} (p = {:.4}); top: {}",
                cxrm::format::text::escape_path(path),
                name(best.class),
                best.probability,
                top.join(", ")
            );
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).expect("serialisable")
        );
    }
    Ok(())
}
