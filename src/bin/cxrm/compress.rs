use crate::Failure;
use crate::progress::TrainProgress;
use cxrm::compress::methods::bwn::BwnOptions;
use cxrm::compress::methods::miracle::MiracleOptions;
use cxrm::compress::methods::{Method, compress};
use cxrm::compress::train::{
    ARCH_NAMES, Arch, DeepOptions, DistillOptions, Factorization, FactorizeOptions, TrainOptions,
    TrainedModel,
};
use std::path::PathBuf;

/// Compress a trained model with retraining, and write the result.
#[derive(clap::Args)]
#[command(long_about = cxrm::compress::methods::HELP, after_help = "The model's training data is used (--data overrides); choices are made on a validation split.

Examples:
  cxrm compress base.cxrm --method deep-compression --data mnist -o dc.cxrm
  cxrm compress base.cxrm --method deep-compression --keep fc=0.06,conv=0.3 --bits conv=8,fc=5 -o dc.cxrm
  cxrm compress base.cxrm --method distill --student cnn-5-13-125 --temperature 4 -o student.cxrm
  cxrm compress base.cxrm --method bwn --epochs 10 -o bwn.cxrm
  cxrm compress base.cxrm --method tucker --energy 0.5 --epochs 6 -o tucker.cxrm
  cxrm compress base.cxrm --method miracle --target-kb 3 --bits-per-block 16 --epochs 10 -o miracle.cxrm")]
pub struct Args {
    /// The trained model (.cxrm with a graph).
    pub model: PathBuf,
    #[arg(long, value_parser = ["deep-compression", "bwn", "distill", "lowrank", "tucker", "miracle"])]
    pub method: String,
    /// mnist, fashion-mnist or a path; default: the data the model was trained on.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(short, long)]
    pub output: PathBuf,
    /// Epochs of each retraining phase (deep-compression), of the fine-tuning (bwn, lowrank,
    /// tucker), of the student (distill), or of the variational training (miracle).
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    /// deep-compression: fraction of weights kept per layer (`0.1`, `conv=0.3,fc=0.08`,
    /// `NAME=…`); default 15/sqrt(n), at least 8%.
    #[arg(long)]
    pub keep: Option<String>,
    /// deep-compression: codebook bits. Default: the paper's conv=8,fc=5, and also conv=6,fc=4;
    /// the smaller file is kept when its validation accuracy is within 0.1 point of the
    /// uncompressed model's.
    #[arg(long)]
    pub bits: Option<String>,
    /// deep-compression: pruning steps, each followed by retraining.
    #[arg(long, default_value_t = 3)]
    pub prune_steps: usize,
    /// Learning rate of the retraining phases (deep-compression) or of the student (distill).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// deep-compression: learning rate of the centroid fine-tuning (default: --lr).
    #[arg(long)]
    pub quantize_lr: Option<f64>,
    /// deep-compression: L2 penalty while retraining after each pruning step (Han et al. 2015
    /// retrain with L2 regularization); the centroid fine-tuning has none.
    #[arg(long, default_value_t = cxrm::compress::train::RETRAIN_WEIGHT_DECAY)]
    pub weight_decay: f32,
    /// lowrank, tucker: share of each layer's spectral energy (Σσ²) the ranks keep (the
    /// study's setting; trained layers' spectra are flat, so 0.9 saves little).
    #[arg(long, default_value_t = 0.5)]
    pub energy: f64,
    /// miracle: bits per block (C): each block's KL goal, and 2^C candidates scored per block.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=24))]
    pub bits_per_block: u8,
    /// miracle: the size of the whole code in KB (1,024 bytes), which sets the number of
    /// blocks.
    #[arg(long, default_value_t = 3.0)]
    pub target_kb: f64,
    /// miracle: training steps on the weights not yet coded after each group of blocks.
    #[arg(long, default_value_t = 50)]
    pub iters_between: usize,
    /// miracle: groups the blocks are coded in.
    #[arg(long, default_value_t = 20)]
    pub coding_rounds: usize,
    /// miracle: weights sharing values through the hashing trick (spec §5.13): `auto` (the
    /// paper's LeNet-5 factors: a weight tensor holding over half the network's weights shares
    /// each value among 50, over 5% among 2), `off`, or `NAME=G,...`.
    #[arg(long, default_value = "auto")]
    pub hash: cxrm::compress::methods::miracle::HashPlan,
    /// miracle: epochs of plain training of the hashed weights' shared values before the
    /// variational phase (default: half of --epochs when a tensor is hashed).
    #[arg(long)]
    pub pretrain_epochs: Option<usize>,
    #[arg(long, help = format!("distill: the student architecture ({ARCH_NAMES})"))]
    pub student: Option<String>,
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f64,
    /// distill: weight of the soft (teacher) term.
    #[arg(long, default_value_t = 0.9)]
    pub alpha: f64,
    /// Random shifts of up to N pixels while retraining or distilling (default: as the model was
    /// trained, its `train.shift`). The teacher is run on each shifted image, so its soft
    /// targets always describe what the student sees.
    #[arg(long)]
    pub shift: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let mapped = cxrm::Mapped::open(&args.model)?;
    let file = mapped.parse()?;
    let base = TrainedModel::from_file(&file)?;
    let data_name = args
        .data
        .as_deref()
        .or(base.trained_on())
        .ok_or_else(|| Failure::Usage("the model does not record its data; pass --data".into()))?
        .to_string();
    // Retraining sees images exactly as the model's file says (channels, resize, pixel
    // arithmetic), and image folders are labelled by the model's classes.
    let input = base.input_spec()?;
    let classes = base.classes();
    let mut data = crate::train::load_data(
        &data_name,
        args.val_fraction,
        args.seed,
        args.limit,
        &input,
        classes.as_deref(),
    )?;
    data.spec = input;
    let mut progress = TrainProgress::new(args.quiet);
    let shift = args.shift.unwrap_or_else(|| base.trained_shift());
    let opts = TrainOptions::retraining(args.epochs, args.lr, shift, args.seed);
    let before = file.file_len();
    let method = match args.method.as_str() {
        "deep-compression" => {
            let quantize = TrainOptions {
                lr: args.quantize_lr.unwrap_or(args.lr),
                ..opts.clone()
            };
            let retrain = TrainOptions {
                weight_decay: args.weight_decay,
                ..opts
            };
            Method::DeepCompression(
                DeepOptions {
                    prune_steps: args.prune_steps,
                    ..DeepOptions::paper_defaults(retrain, quantize)
                }
                .with_rules(args.keep.as_deref(), args.bits.as_deref())?,
            )
        }
        "bwn" => Method::Bwn(BwnOptions { retrain: opts }),
        method @ ("lowrank" | "tucker") => Method::Factorize(FactorizeOptions {
            method: if method == "lowrank" {
                Factorization::LowRank
            } else {
                Factorization::Tucker
            },
            energy: args.energy,
            retrain: opts,
        }),
        "miracle" => {
            if !(args.target_kb > 0.0 && args.target_kb.is_finite()) {
                return Err(Failure::Usage(format!(
                    "--target-kb {}: a positive size",
                    args.target_kb
                )));
            }
            Method::Miracle(MiracleOptions {
                bits_per_block: args.bits_per_block,
                target_kb: args.target_kb,
                iters_between: args.iters_between,
                rounds: args.coding_rounds,
                hash: args.hash.clone(),
                pretrain_epochs: args.pretrain_epochs,
                ..MiracleOptions::defaults(opts)
            })
        }
        _ => {
            let student = args
                .student
                .as_deref()
                .ok_or_else(|| Failure::Usage("distill needs --student ARCH".into()))?;
            Method::Distill(DistillOptions {
                student: Arch::parse(student)?,
                temperature: args.temperature,
                alpha: args.alpha,
                train: opts,
            })
        }
    };
    let done = compress(&base, &data, &method, &args.output, &mut |e| {
        progress.event(e)
    })?;
    drop(progress);
    done.report.iter().for_each(|line| println!("  {line}"));
    let (model, written) = (done.model, done.bytes);
    println!(
        "wrote {}: {written} bytes ({:.1}x smaller than {}), {} parameters, validation accuracy {:.4}",
        args.output.display(),
        before as f64 / written as f64,
        args.model.display(),
        model.params(),
        model.val_accuracy().unwrap_or(f64::NAN)
    );
    Ok(())
}
