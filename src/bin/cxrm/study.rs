use crate::Failure;
use crate::progress::TrainProgress;
use cxrm::compress::study::{self, StudyEvent, StudyOptions};
use std::path::PathBuf;

/// Train the baselines, compress them every way cxrm knows, evaluate every written file.
#[derive(clap::Args)]
#[command(
    after_help = "With no --data, runs on the bundled MNIST subset (fixtures/data/mnist: 3,600 training,
400 validation and 1,000 test images). --data mnist or fashion-mnist uses the full set from
../shared/data when present. Each model is written to OUT/MODEL.METHOD.cxrm and evaluated
from that file by the runtime on the test split; OUT/results.json and
OUT/accuracy_vs_size.svg hold the results.

Examples:
  cxrm study
  cxrm study --data mnist --out study-mnist
  cxrm study --data fashion-mnist --epochs 10
  cxrm study --data mnist --out study-mnist --resume   (retrain nothing already trained)"
)]
pub struct Args {
    /// mnist, fashion-mnist, bundled or a path (default: bundled, the MNIST subset in
    /// fixtures/data/mnist).
    #[arg(long)]
    data: Option<String>,
    #[arg(long, default_value = "study")]
    out: PathBuf,
    /// Two epochs per phase: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Baseline epochs (retraining phases get two thirds each).
    #[arg(long)]
    epochs: Option<usize>,
    /// Reuse OUT's baselines, separable twin and student-alone files when they record the
    /// same network, data and training settings; compression rows are always rerun.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let opts = StudyOptions {
        data: args.data,
        out: args.out,
        quick: args.quick,
        seed: args.seed,
        epochs: args.epochs,
        resume: args.resume,
    };
    let mut progress = TrainProgress::new(false);
    let started = std::time::Instant::now();
    let result = study::run(&opts, &mut |e| match e {
        StudyEvent::Begin { what, index, total } => {
            progress.println(&format!("[{index}/{total}] {what}"))
        }
        StudyEvent::Train(e) => progress.event(e),
        StudyEvent::Reused(path) => progress.println(&format!("  reusing {path} (--resume)")),
        StudyEvent::Row(r) => progress.println(&format!(
            "  -> {}: {} bytes, {:.1}x, test accuracy {:.4} ({:.0} s)",
            r.file, r.stored_bytes, r.ratio, r.accuracy, r.seconds
        )),
    })?;
    drop(progress);
    println!(
        "\ncxrm study on {} ({} training, {} test images), {:.0} s\n",
        result.data,
        result.train_images,
        result.test_images,
        started.elapsed().as_secs_f64()
    );
    print!("{}", study::table(&result));
    println!(
        "\nratio: the reference network's f32 weights / the file's size. Accuracy: each file, through the runtime.\nwrote {}/results.json and {}/accuracy_vs_size.svg",
        opts.out.display(),
        opts.out.display()
    );
    Ok(())
}
