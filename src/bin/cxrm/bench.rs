use crate::profile;
use crate::{Failure, process};
use cxrm::runtime::ndarray::Array4;
use cxrm::runtime::{Model, RuntimeOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Time a model file: load, latency at batch 1, throughput at a larger batch.
#[derive(clap::Args)]
#[command(
    after_help = "Inputs are deterministic pseudo-random values of the model's input shape. Load time covers
mapping the file, checking header and table, and resolving every weight the graph uses.
For comparisons quote ratios measured in the same run: machines are shared and noisy.

Examples:
  cxrm bench model.cxrm
  cxrm bench dc.cxrm --batch 64 --dense-kernels
  cxrm bench model.cxrm --threads 1
  cxrm bench model.cxrm --batch 16 --batch-iters 20 --json"
)]
pub struct Args {
    /// The .cxrm model.
    model: PathBuf,
    /// Batch size for the throughput measurement.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Timed runs at batch 1.
    #[arg(long, default_value_t = 200)]
    iters: usize,
    /// Timed runs at the throughput batch.
    #[arg(long, default_value_t = 10)]
    batch_iters: usize,
    /// Print the figures as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Run every layer through dense kernels, even when its weights are mostly zero.
    #[arg(long)]
    dense_kernels: bool,
    /// Also time each layer over this many batch-1 passes: the median per layer, summed by
    /// kind of layer (1×1, k×k and depthwise convolutions, pooling, …), with the products'
    /// multiply-adds per second, and the slowest layers.
    #[arg(long, value_name = "PASSES")]
    profile: Option<usize>,
    #[command(flatten)]
    runtime: crate::RuntimeArgs,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(args: Args) -> Result<(), Failure> {
    if let Some(unknown) = cxrm_runtime::cpu::cap_error() {
        eprintln!("warning: {unknown}; the kernels follow the CPU");
    }
    let defaults = args.runtime.options();
    let options = RuntimeOptions {
        sparse_below_density: if args.dense_kernels {
            0.0
        } else {
            defaults.sparse_below_density
        },
        ..defaults
    };
    // How far apart two CPUs are, around the timed runs: a split pass's parts meet in the
    // caches, and a host that moves the CPUs apart slows it (docs/performance/threads.md).
    let round_trip_ns = || cxrm_runtime::parallel::cpu_round_trip().map(|t| t.as_secs_f64() * 1e9);
    let trip_before = round_trip_ns();
    let mut loads = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mapped = cxrm::Mapped::open(&args.model)?;
        let file = mapped.parse()?;
        let model = process::loading(|| Model::load_with(&file, options))?;
        loads.push(t.elapsed());
        drop(model);
    }
    loads.sort();
    let mapped = cxrm::Mapped::open(&args.model)?;
    let file = mapped.parse()?;
    let model = process::loading(|| Model::load_with(&file, options))?;
    let s = &model.input;
    let mut rng = cxrm::format::lcg::Lcg(12345);
    let mut input =
        |n: usize| Array4::from_shape_fn((n, s.channels, s.height, s.width), |_| rng.centred());
    let one = input(1);
    for _ in 0..10 {
        model.forward(one.view())?;
    }
    let mut lat = Vec::with_capacity(args.iters);
    let before = model.layer_passes();
    for _ in 0..args.iters.max(1) {
        let t = Instant::now();
        model.forward(one.view())?;
        lat.push(t.elapsed());
    }
    let after = model.layer_passes();
    let (one_thread, split) = (
        after.one_thread - before.one_thread,
        after.split - before.split,
    );
    // The mean counts every stall; the median shows a typical pass.
    let mean = lat.iter().sum::<Duration>() / lat.len() as u32;
    lat.sort();
    let big = input(args.batch.max(1));
    model.forward(big.view())?;
    let rounds = args.batch_iters.max(1);
    let t = Instant::now();
    for _ in 0..rounds {
        model.forward(big.view())?;
    }
    let per_batch = t.elapsed() / rounds as u32;
    let trip_after = round_trip_ns();
    let weights = model.weight_bytes();
    let profile = match args.profile {
        Some(passes) => Some(profile::measure(&model, one.view(), passes)?),
        None => None,
    };
    if args.json {
        let doc = serde_json::json!({
            "model": args.model.display().to_string(),
            "file_bytes": file.file_len(),
            "threads": model.threads(),
            "instruction_set": cxrm_runtime::cpu::level().name(),
            "cpu_round_trip_ns": [trip_before, trip_after],
            "load_ms": ms(loads[2]),
            "batch1_median_ms": ms(percentile(&lat, 0.5)),
            "batch1_p95_ms": ms(percentile(&lat, 0.95)),
            "batch1_mean_ms": ms(mean),
            "batch1_runs": lat.len(),
            "batch1_split_runs": split,
            "batch1_one_thread_runs": one_thread,
            "batch": args.batch,
            "batch_ms": ms(per_batch),
            "batch_runs": rounds,
            "images_per_s": args.batch as f64 / per_batch.as_secs_f64(),
            "weights_mapped_bytes": weights.mapped,
            "weights_owned_bytes": weights.owned,
            "peak_activation_bytes_per_image": model.peak_bytes_per_image,
            "arena_bytes_per_image": model.arena_bytes_per_image,
            "profile": profile.as_ref().map(profile::Profile::to_json),
        });
        println!("{doc}");
        return Ok(());
    }
    println!(
        "model      {} ({} bytes)",
        args.model.display(),
        file.file_len()
    );
    println!(
        "layers     {}",
        model
            .layer_info()
            .iter()
            .map(|l| if l.kernel.is_empty() {
                l.op.to_string()
            } else {
                format!(
                    "{}[{}{}]",
                    l.op,
                    l.kernel,
                    if l.weights_borrowed { ",mapped" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("threads    {}", model.threads());
    println!("kernels    {}", cxrm_runtime::cpu::level().name());
    if let (Some(before), Some(after)) = (trip_before, trip_after) {
        println!(
            "cores      a cache line's round trip between two CPUs {before:.0} ns before the runs, {after:.0} ns after"
        );
    }
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "memory     weights {:.1} MB mapped + {:.1} MB own copies; activations {:.1} MB live at most, {:.1} MB arena per image",
        mb(weights.mapped),
        mb(weights.owned),
        mb(model.peak_bytes_per_image),
        mb(model.arena_bytes_per_image)
    );
    println!("load       {:.3} ms (median of 5)", ms(loads[2]));
    // With several threads, how many runs split: the default count's choice shows here.
    let how = if split + one_thread > 0 {
        format!("; {split} split over the threads, {one_thread} on one")
    } else {
        String::new()
    };
    println!(
        "batch 1    median {:.3} ms, p95 {:.3} ms, mean {:.3} ms ({} runs{how})",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.95)),
        ms(mean),
        lat.len()
    );
    println!(
        "batch {:<4} {:.3} ms per batch, {:.0} images/s",
        args.batch,
        ms(per_batch),
        args.batch as f64 / per_batch.as_secs_f64()
    );
    if let Some(profile) = &profile {
        profile.print(15);
    }
    Ok(())
}
