//! `cosim bench`: the library's benchmark suite ([`crate::suite`]), the same one
//! `cargo bench --bench cosim_bench` runs.

use crate::error::{CliError, Result};
use crate::options::{DeviceArg, GlobalOpts};
use crate::suite::{self, SuiteOptions};

pub const LONG_ABOUT: &str = "\
Runs the benchmark suite: on the CPU, each op's effective bandwidth (both inputs read once plus
the output written) next to this machine's read bandwidth measured around it; on the GPU (when
usable), each op timed with CUDA events next to a device-to-device copy, with the extra device
memory each op allocates. Buffers are large (hundreds of MiB): build with --release.";

const EXAMPLES: &str = "\
Examples:
  cargo run --release -- bench --device cpu
  cosim bench --json results.json --label \"$(date -I) $(hostname) $(git rev-parse --short HEAD)\"";

/// Arguments of `cosim bench`.
#[derive(clap::Args, Debug)]
#[command(long_about = LONG_ABOUT, after_help = EXAMPLES)]
pub struct BenchArgs {
    /// Also write the results as JSON here, and a markdown table next to it (.md)
    #[arg(long, value_name = "PATH")]
    pub json: Option<String>,
    /// A line heading both files (date, machine, commit)
    #[arg(long, default_value = "")]
    pub label: String,
}

/// Runs `cosim bench`: `--device cpu` measures the CPU only, `--device cuda[:N]` the GPU
/// only, `auto` both (the GPU section says why it is skipped when it is).
///
/// # Errors
/// A device failure during the GPU section (exit code 1), or a file that cannot be written.
pub fn run(args: &BenchArgs, g: &GlobalOpts) -> Result<()> {
    let (cpu_only, gpu_only, ordinal) = match &g.device {
        DeviceArg::Auto => (false, false, 0),
        DeviceArg::Cpu => (true, false, 0),
        DeviceArg::Cuda(n) => {
            g.device()?; // a clear error, exit code 1, when that GPU cannot be used
            (false, true, n.first().copied().unwrap_or(0))
        }
        DeviceArg::CudaAll => {
            return Err(CliError::usage(
                "--device cuda:all: the benchmark suite measures one device; name it (cuda:N)",
            ))
        }
    };
    suite::run(&SuiteOptions {
        json: args.json.clone(),
        label: args.label.clone(),
        cpu_only,
        gpu_only,
        ordinal,
    })?;
    Ok(())
}
