//! `cosim`: cosine similarity on NumPy `.npy` files, on the GPU or the CPU.
//!
//! One module per subcommand (`along`, `channels`, `pairwise`, `demo`, `info`, `bench`); the
//! shared parts are `npy` (reading and writing files), `inputs` (two inputs and their compute
//! type), `blocks` (whole or in blocks of rows, streamed through the GPU when too large for
//! it), `output` (atomic result files: `.npy` whole or streamed block by block, `.npz`),
//! `options` (global flags, device choice), `dtype`, `progress` and `error` (one-line
//! messages, exit codes).

mod along;
mod bench;
mod channels;
mod demo;
mod dtype;
mod error;
mod info;
mod inputs;
mod npy;
mod options;
mod output;
mod pairwise;
#[cfg(feature = "cuda")]
mod progress;
mod shards;
mod suite;

use clap::{Parser, Subcommand};
use error::{CliError, Result};
use std::io::Write;
use std::process::ExitCode;

const LONG_ABOUT: &str = "\
Cosine similarity on NumPy .npy files: on the GPU with cosim's CUDA kernels when one is usable,
otherwise on all CPU cores. Semantics follow torch.nn.functional.cosine_similarity (>= 2.1):
broadcasting, negative dims, eps clamping each norm, plus fixes: a zero vector gives 0 (also in
f16), results are clamped to [-1, 1], NaN in gives NaN out.

`along` and `channels` compare two arrays element for element (one vector with the vector at
the same place); `pairwise` compares every vector of one set with every vector of another
(S[i, j] = cos(a_i, b_j)) and writes the matrix block by block, its top-k or argmax, row
means, the mean, or BERTScore-style greedy matching scores.

Inputs may be float16, float32, float64 (integers and bool are converted to f32), in C or
Fortran order; large files are memory-mapped. Results are .npy files (.npz for several
arrays) in the compute type, written to a temporary file and renamed when complete; existing
files are kept unless --force.

Exit codes: 0 success, 2 usage or input error, 1 runtime failure (device, I/O).";

const EXAMPLES: &str = "\
Examples:
  cosim demo                                             # the PyTorch forum thread, answered live
  cosim along x.npy y.npy --dim 1 -o per_pixel.npy       # [N,C,H,W] x2 -> [N,H,W]
  cosim channels x.npy y.npy --flatten-from 2 -o per_channel.npy --reweight weighted.npy
  cosim pairwise q.npy k.npy -o sim.npy                  # [N,D] x [M,D] -> [N,M], streamed to disk
  cosim pairwise q.npy k.npy --top-k 10 -o top.npz       # values + indices, [N,10]
  cosim pairwise a.npy b.npy --greedy                    # two sets -> precision, recall, F1
  cosim info                                             # devices, kernels, nvcc
  cosim --device cpu --dtype f64 along a.npy b.npy --dim -1 -o rows.npy

Run `cosim <command> --help` for each command's details and examples.";

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "cosim",
    version,
    about = "Cosine similarity on .npy files, on the GPU or the CPU",
    long_about = LONG_ABOUT,
    after_help = EXAMPLES
)]
struct Cli {
    #[command(flatten)]
    global: options::GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

/// The subcommands; each has its own module.
#[derive(Subcommand, Debug)]
enum Command {
    // Each variant's doc comment is its one-line summary; `long_about` keeps the module's
    // long help (a doc comment alone would replace it).
    /// Cosine similarity along one dim (torch's cosine_similarity)
    #[command(long_about = along::LONG_ABOUT)]
    Along(along::AlongArgs),
    /// Per-channel similarity of flattened maps, optionally reweighting the second input
    #[command(long_about = channels::LONG_ABOUT)]
    Channels(channels::ChannelsArgs),
    /// Every vector of one set against every vector of another: matrix, top-k, argmax, means,
    /// greedy matching (BERTScore)
    #[command(long_about = pairwise::LONG_ABOUT)]
    Pairwise(pairwise::PairwiseArgs),
    /// Joins the shards of a `pairwise --top-k/--argmax --shard I/N` job into the whole result
    #[command(long_about = shards::LONG_ABOUT)]
    Merge(shards::MergeArgs),
    /// The PyTorch forum thread on feature-map similarity, answered live
    #[command(long_about = demo::LONG_ABOUT)]
    Demo(demo::DemoArgs),
    /// Devices, compute capability, kernels and the nvcc that built them
    #[command(long_about = info::LONG_ABOUT)]
    Info(info::InfoArgs),
    /// The library's benchmark suite (build with --release)
    #[command(long_about = bench::LONG_ABOUT)]
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with code 2 (0 for --help and --version).
    let cli = Cli::parse();
    output::install_interrupt_cleanup();
    let g = &cli.global;
    let done = match &cli.command {
        Command::Along(a) => along::run(a, g),
        Command::Channels(a) => channels::run(a, g),
        Command::Pairwise(a) => pairwise::run(a, g),
        Command::Merge(a) => shards::run(a, g),
        Command::Demo(_) => demo::run(g),
        Command::Info(_) => info::run(g),
        Command::Bench(a) => bench::run(a, g),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.line());
            ExitCode::from(e.code)
        }
    }
}

/// Writes `text` to stdout; a closed pipe (`cosim demo | head`) is not an error.
pub fn print_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::runtime(format!("writing to stdout: {e}")))
        }
        _ => Ok(()),
    }
}
