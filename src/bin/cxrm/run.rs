use crate::Failure;
use cxrm::runtime::{Model, preprocess};
use serde_json::json;
use std::path::PathBuf;

/// Classify images with a model file: the file's graph, weights and preprocessing metadata are
/// all it needs.
#[derive(clap::Args)]
#[command(
    after_help = "Each image is decoded (PNG or JPEG), converted to the model's channels, resized and
normalised as the file's metadata records (input.shape, input.mean, input.std).

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
    /// One JSON document: per image `image`, `class` and `probabilities` (in class order).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: crate::RuntimeArgs,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let mapped = cxrm::Mapped::open(&args.model)?;
    let file = mapped.parse()?;
    let model = Model::load_with(&file, args.runtime.options())?;
    let names = crate::eval::class_names(&model);
    let mut results = Vec::new();
    for path in &args.images {
        let x = preprocess::load(path, &model.input)?;
        let probs = model.predict(cxrm::runtime::model::batch_of_one(x).view())?;
        let p: Vec<f32> = probs.row(0).to_vec();
        let best = p
            .iter()
            .enumerate()
            .fold(0, |b, (i, &v)| if v > p[b] { i } else { b });
        if args.json {
            results.push(json!({"image": path.display().to_string(), "class": names[best], "probabilities": p}));
        } else {
            let top: Vec<String> = {
                let mut order: Vec<usize> = (0..p.len()).collect();
                order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
                order
                    .iter()
                    .take(3)
                    .map(|&i| format!("{} {:.4}", cxrm::format::text::escape(&names[i]), p[i]))
                    .collect()
            };
            println!(
                "{}: {} (p = {:.4}); top: {}",
                path.display(),
                cxrm::format::text::escape(&names[best]),
                p[best],
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
