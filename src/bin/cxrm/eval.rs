use crate::{Failure, process};
use cxrm::runtime::Model;
use cxrm::runtime::data::{self, Dataset};
use cxrm::runtime::metrics::Evaluation;
use serde_json::json;
use std::path::PathBuf;

/// Evaluate a model file on a labelled test set.
#[derive(clap::Args)]
#[command(
    after_help = "DATA is `mnist` or `fashion-mnist` (their 10,000-image test split, from ../shared/data or the
bundled subset in fixtures/data), `bundled` (always the bundled MNIST subset), a directory of
IDX files (t10k-*), or a class-per-folder image tree (ROOT/CLASS/*.png|jpg; for a
Kaggle-style tree with test/ the test split is used). Folders are matched to the model's
classes (model.classes) by name, ignoring case; a folder that names no class is refused.

Examples:
  cxrm eval lenet5.cxrm --data mnist
  cxrm eval xray.cxrm --data chest_xray/ --json"
)]
pub struct Args {
    /// The .cxrm model.
    model: PathBuf,
    /// mnist, fashion-mnist, or a path.
    #[arg(long)]
    data: String,
    /// Evaluate only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// One JSON document with at least `accuracy` (0-1), `n` and `skipped`.
    #[arg(long)]
    json: bool,
    /// What an image that cannot be decoded, or a truncated one, does: `fail` stops with an
    /// error naming it; `skip` leaves it out and lists it.
    #[arg(long, value_name = "WHAT", default_value = "fail", value_parser = ["fail", "skip"])]
    bad_images: String,
    #[command(flatten)]
    runtime: crate::RuntimeArgs,
}

pub fn evaluate(
    model: &Model<'_>,
    data: &Dataset,
    limit: Option<usize>,
    batch: usize,
    progress: bool,
) -> Result<Evaluation, Failure> {
    let n = limit.map_or(data.len(), |l| l.min(data.len()));
    let bar = if progress {
        indicatif::ProgressBar::new(n as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "eval {bar:40} {pos}/{len} images, {per_sec}, eta {eta}",
        )
        .expect("valid template"),
    );
    let e = cxrm::runtime::batch::evaluate(model, data, n, batch, &mut |k| bar.inc(k as u64))?;
    bar.finish_and_clear();
    Ok(e)
}

pub fn run(args: Args) -> Result<(), Failure> {
    let mapped = cxrm::Mapped::open(&args.model)?;
    let file = mapped.parse()?;
    let model = process::loading(|| Model::load_with(&file, args.runtime.options()))?;
    let bad = if args.bad_images == "skip" {
        data::BadImages::Skip
    } else {
        data::BadImages::Fail
    };
    let loaded = data::Source::parse(&args.data)?.test_set(&model, bad)?;
    let data = &loaded.data;
    let e = evaluate(&model, data, args.limit, args.batch, !args.json)?;
    let names = &data.classes;
    let skipped: Vec<_> = loaded
        .skipped
        .iter()
        .map(|(path, why)| json!({"path": path.display().to_string(), "error": why}))
        .collect();
    if args.json {
        let doc = json!({
            "model": args.model.display().to_string(),
            "data": args.data,
            "n": e.n,
            "accuracy": e.accuracy,
            "roc_auc": e.roc_auc,
            "classes": names,
            "precision": e.precision,
            "recall": e.recall,
            "confusion": e.confusion,
            "skipped": skipped,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("serialisable")
        );
        return Ok(());
    }
    println!(
        "{} on {} ({} images)",
        cxrm::format::text::escape_path(&args.model),
        cxrm::format::text::escape(&args.data),
        e.n
    );
    if !loaded.skipped.is_empty() {
        println!("skipped {} unreadable images:", loaded.skipped.len());
        for (_, why) in &loaded.skipped {
            println!("  {}", cxrm::format::text::escape(why));
        }
    }
    println!(
        "accuracy   {:.4}  (error {:.2}%)",
        e.accuracy,
        (1.0 - e.accuracy) * 100.0
    );
    match e.roc_auc {
        Some(auc) if names.len() == 2 => println!(
            "ROC AUC    {auc:.4}  (score: P({}))",
            cxrm::format::text::escape(&names[1])
        ),
        Some(auc) => println!("ROC AUC    {auc:.4}  (mean one-vs-rest)"),
        None => println!("ROC AUC    undefined (a class has no examples)"),
    }
    let fmt = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.4}"));
    println!(
        "\n  {:<14} {:>9} {:>9} {:>7}",
        "class", "precision", "recall", "count"
    );
    for (c, name) in names.iter().enumerate() {
        println!(
            "  {:<14} {:>9} {:>9} {:>7}",
            cxrm::format::text::escape(name),
            fmt(e.precision[c]),
            fmt(e.recall[c]),
            e.confusion[c].iter().sum::<u64>()
        );
    }
    println!("\nconfusion matrix (rows: true class, columns: predicted)");
    let width = e
        .confusion
        .iter()
        .flatten()
        .max()
        .map_or(1, |m| m.to_string().len())
        .max(3);
    print!("  {:<14}", "");
    for c in 0..names.len() {
        print!(" {c:>width$}");
    }
    println!();
    for (c, row) in e.confusion.iter().enumerate() {
        print!(
            "  {:<14}",
            format!("{c} {}", cxrm::format::text::escape(&names[c]))
                .chars()
                .take(14)
                .collect::<String>()
        );
        for v in row {
            print!(" {v:>width$}");
        }
        println!();
    }
    Ok(())
}
