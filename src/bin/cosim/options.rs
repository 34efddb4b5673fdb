//! Options every subcommand takes (`--device`, `--dtype`, `--quiet`, `--force`), and picking
//! the device they name.

use crate::dtype::Dtype;
use crate::error::{CliError, Result};
use cosim::Device;
use std::fmt;
use std::str::FromStr;

/// Where to compute, as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    /// The GPU when it can be used, else the CPU.
    Auto,
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
}

impl FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceArg::Auto),
            "cpu" => Ok(DeviceArg::Cpu),
            "cuda" => Ok(DeviceArg::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceArg::Cuda)
                .ok_or_else(|| format!("'{s}' is not a device: use auto, cpu, cuda or cuda:N")),
        }
    }
}

impl fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceArg::Auto => f.write_str("auto"),
            DeviceArg::Cpu => f.write_str("cpu"),
            DeviceArg::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Options shared by all subcommands.
#[derive(clap::Args, Clone, Debug)]
pub struct GlobalOpts {
    /// Where to compute: auto (the GPU when usable, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceArg,
    /// Compute in this type (inputs are converted; results are written in it, bf16 as f32).
    /// Default: the inputs' type, promoted as PyTorch does (integers become f32).
    #[arg(long, global = true, value_enum, value_name = "TYPE")]
    pub dtype: Option<Dtype>,
    /// Print nothing on stderr but errors: no device line, notes or progress.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Overwrite output files that already exist.
    #[arg(long, global = true)]
    pub force: bool,
    /// Run in blocks of rows of at most this many bytes, on any device (for tests; blocks
    /// are otherwise used only when a job does not fit in the GPU's memory). `pairwise`
    /// cuts each set into chunks of whole vectors of at most this many bytes instead.
    #[arg(long, global = true, hide = true, value_name = "BYTES")]
    pub block_bytes: Option<usize>,
}

impl GlobalOpts {
    /// Prints a note on stderr unless `--quiet`.
    pub fn note(&self, message: impl fmt::Display) {
        if !self.quiet {
            eprintln!("note: {message}");
        }
    }

    /// The device `--device` names, saying on stderr which one is used (and, for `auto`, why
    /// not the GPU).
    ///
    /// # Errors
    /// A runtime error (exit code 1) if an explicitly requested CUDA device cannot be used.
    pub fn device(&self) -> Result<Device> {
        let (device, why_not_gpu) = match self.device {
            DeviceArg::Auto => {
                let (d, why) = Device::auto();
                (d, why.map(|e| e.to_string()))
            }
            DeviceArg::Cpu => (Device::Cpu, None),
            DeviceArg::Cuda(n) => (cuda(n)?, None),
        };
        if !self.quiet {
            match why_not_gpu {
                Some(why) => eprintln!("device: {} (GPU not used: {why})", device.describe()),
                None => eprintln!("device: {}", device.describe()),
            }
        }
        Ok(device)
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device> {
    cosim::cuda::Cuda::new(ordinal)
        .map(Device::Cuda)
        .map_err(|e| CliError::runtime(format!("--device cuda:{ordinal}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda(ordinal: usize) -> Result<Device> {
    Err(CliError::runtime(format!(
        "--device cuda:{ordinal}: this cosim was built without the `cuda` feature"
    )))
}

#[cfg(test)]
mod tests {
    use super::DeviceArg;

    #[test]
    fn device_names_parse() {
        assert_eq!("auto".parse(), Ok(DeviceArg::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceArg::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceArg::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceArg::Cuda(3)));
        assert!("gpu".parse::<DeviceArg>().is_err());
        assert!("cuda:x".parse::<DeviceArg>().is_err());
    }
}
