//! `cxrm`: the command-line front end. One module per subcommand; each is thin and calls the
//! library. Exit status: 0 success, 1 invalid file (or failed check), 2 usage or I/O error,
//! 3 a valid file that this build cannot run (`verify --runnable` only).

mod bench;
#[cfg(feature = "train")]
mod compress;
mod convert;
mod eval;
mod export;
mod import;
mod inspect;
mod pack;
mod preprocessing;
mod process;
mod profile;
#[cfg(feature = "train")]
mod progress;
mod run;
#[cfg(feature = "train")]
mod study;
#[cfg(feature = "train")]
mod train;
mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cxrm",
    version,
    about = "A file format and toolchain for compressed convolutional networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The most memory one tensor's decoding or one forward pass may take, e.g. 512M or 4G
    /// (default: what the machine can give). A file that needs more fails with exit 2.
    #[arg(long, global = true, value_parser = process::parse_memory)]
    max_memory: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    Inspect(inspect::Args),
    Verify(verify::Args),
    Pack(pack::Args),
    Convert(convert::Args),
    Import(import::Args),
    Export(export::Args),
    Run(run::Args),
    Eval(eval::Args),
    Bench(bench::Args),
    #[cfg(feature = "train")]
    Train(train::Args),
    #[cfg(feature = "train")]
    Compress(compress::Args),
    #[cfg(feature = "train")]
    Study(study::Args),
}

/// How a command that runs a model runs it.
#[derive(clap::Args)]
pub struct RuntimeArgs {
    /// Threads for each forward pass: 0 for one per core, 1 for no extra threads. Results are
    /// the same for every count.
    #[arg(long, default_value_t = 0, value_parser = process::parse_threads)]
    threads: usize,
    /// Run stride-1 3×3 convolutions as direct products instead of by Winograd's F(4×4, 3×3),
    /// which takes 4× fewer multiply-adds and rounds a little more (docs/performance.md).
    #[arg(long)]
    no_winograd: bool,
    /// Leave the threads to the scheduler instead of keeping each on a CPU of its own (which
    /// the default count does), for machines where several such programs run at once.
    #[arg(long)]
    no_pin: bool,
}

impl RuntimeArgs {
    pub fn options(&self) -> cxrm::runtime::RuntimeOptions {
        cxrm::runtime::RuntimeOptions {
            threads: self.threads,
            winograd: !self.no_winograd,
            pin_threads: !self.no_pin,
            ..Default::default()
        }
    }
}

/// A command's failure, already classified for the exit status.
pub enum Failure {
    /// The file is invalid (exit 1).
    Invalid(cxrm::Error),
    /// Bad arguments, missing files, I/O (exit 2).
    Usage(String),
    /// A valid file that this build's runtime cannot run (exit 3, `verify --runnable`).
    NotRunnable(String),
}

impl From<cxrm::Error> for Failure {
    fn from(e: cxrm::Error) -> Self {
        match e {
            cxrm::Error::Format(_) => Failure::Invalid(e),
            other => Failure::Usage(other.to_string()),
        }
    }
}

fn main() -> ExitCode {
    // `cxrm inspect big.cxrm | head` must end quietly, as other Unix tools do, not panic on
    // the closed pipe: restore the default SIGPIPE action that Rust's runtime replaces.
    #[cfg(unix)]
    // SAFETY: called before any other thread exists; SIG_DFL is a valid action for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    #[cfg(unix)]
    process::on_sigbus_exit_2();
    let cli = Cli::parse();
    if let Some(bytes) = cli.max_memory {
        cxrm::format::budget::Budget::set_process_default(bytes);
    }
    let result = match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Pack(a) => pack::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Import(a) => import::run(a),
        Command::Export(a) => export::run(a),
        Command::Run(a) => run::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(a) => bench::run(a),
        #[cfg(feature = "train")]
        Command::Train(a) => train::run(a),
        #[cfg(feature = "train")]
        Command::Compress(a) => compress::run(a),
        #[cfg(feature = "train")]
        Command::Study(a) => study::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Names and paths inside messages are escaped where they are written; this only
        // catches a control character that slipped through, without escaping twice.
        Err(Failure::Invalid(e)) => {
            eprintln!("cxrm: {}", cxrm::format::text::sanitize(&e.to_string()));
            ExitCode::from(1)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("cxrm: {}", cxrm::format::text::sanitize(&msg));
            ExitCode::from(2)
        }
        Err(Failure::NotRunnable(msg)) => {
            eprintln!("cxrm: {}", cxrm::format::text::sanitize(&msg));
            ExitCode::from(3)
        }
    }
}

/// How an output path is named in messages: `-` is standard output.
fn shown_output(path: &std::path::Path) -> String {
    if cxrm::format::container::output::is_stdout(path) {
        "standard output".into()
    } else {
        cxrm::format::text::escape_path(path)
    }
}

/// Tell the user what was written: on standard output, or on standard error when the file
/// itself went to standard output.
fn report_written(path: &std::path::Path, line: String) {
    if cxrm::format::container::output::is_stdout(path) {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}
