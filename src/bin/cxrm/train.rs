use crate::Failure;
use crate::progress::TrainProgress;
use cxrm::compress::train::{ARCH_NAMES, Arch, TrainData, TrainOptions};
use std::path::PathBuf;

/// Train a network from scratch and write it as a dense .cxrm model.
#[derive(clap::Args)]
#[command(
    after_help = "DATA is mnist or fashion-mnist (the full set from ../shared/data when present, else
the bundled subset), bundled (the MNIST subset in fixtures/data/mnist), a directory of IDX files (train-*), or a class-per-folder image tree
(its train/ split for a Kaggle-style tree, resized to --size with Pillow's bilinear filter,
grey or, with --channels 3, RGB). A --val-fraction of the
training images, picked by --seed, is held out; the epoch with the best validation
accuracy is kept. Same --seed, same file.

Examples:
  cxrm train --arch lenet-5 --data mnist --epochs 15 -o lenet5.cxrm
  cxrm train --arch vgg-small --data chest_xray/ --size 64 -o xray.cxrm"
)]
pub struct Args {
    #[arg(long, help = format!("Architecture: {ARCH_NAMES}"))]
    pub arch: String,
    /// mnist, fashion-mnist, bundled, or a path.
    #[arg(long, default_value = "mnist")]
    pub data: String,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Adam's initial learning rate (cosine schedule to zero).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// L2 weight decay added to the gradients (Adam's coupled form).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Shift each training image randomly by up to N pixels (augmentation).
    #[arg(long, default_value_t = 0)]
    pub shift: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Use only the first N training images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Input size for image folders (square).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Channels for image folders: 1 (grey) or 3 (RGB).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub channels: u8,
    #[arg(short, long)]
    pub output: PathBuf,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    pub fn options(&self) -> TrainOptions {
        TrainOptions {
            epochs: self.epochs,
            batch_size: self.batch,
            lr: self.lr,
            weight_decay: self.weight_decay,
            shift: self.shift,
            seed: self.seed,
        }
    }
}

pub fn load_data(
    data: &str,
    val_fraction: f64,
    seed: u64,
    limit: Option<usize>,
    input: &cxrm::runtime::InputSpec,
    classes: Option<&[String]>,
) -> Result<TrainData, Failure> {
    if !(0.0..1.0).contains(&val_fraction) || val_fraction == 0.0 {
        return Err(Failure::Usage("--val-fraction must be in (0, 1)".into()));
    }
    if input.channels == 2 {
        return Err(Failure::Usage("--channels must be 1 or 3".into()));
    }
    Ok(TrainData::load(
        data,
        val_fraction,
        seed,
        limit,
        input,
        classes,
    )?)
}

pub fn run(args: Args) -> Result<(), Failure> {
    let arch = Arch::parse(&args.arch)?;
    let data = load_data(
        &args.data,
        args.val_fraction,
        args.seed,
        args.limit,
        &cxrm::runtime::InputSpec::new(args.channels.into(), args.size, args.size),
        None,
    )?;
    let mut progress = TrainProgress::new(args.quiet);
    progress.println(&format!(
        "training {} on {} ({} images, {} held out for validation)",
        arch.name(),
        args.data,
        data.train.len(),
        data.val.len()
    ));
    let model =
        cxrm::compress::train::train(&arch, &data, &args.options(), &mut |e| progress.event(e))?;
    drop(progress);
    let bytes = model.write(&args.output, &|_| None)?;
    println!(
        "wrote {}: {} parameters, {bytes} bytes, validation accuracy {:.4}",
        args.output.display(),
        model.params(),
        model.val_accuracy().unwrap_or(f64::NAN)
    );
    Ok(())
}
