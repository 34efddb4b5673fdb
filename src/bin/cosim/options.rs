//! Options every subcommand takes (`--device`, `--dtype`, `--quiet`, `--force`), and picking
//! the device they name.

use crate::dtype::Dtype;
use crate::error::{CliError, Result};
use cosim::Device;
use std::fmt;
use std::str::FromStr;

/// Where to compute, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    /// The GPU when it can be used, else the CPU.
    Auto,
    Cpu,
    /// CUDA devices by ordinal (`cuda:0,1`; one for every subcommand but `pairwise`).
    Cuda(Vec<usize>),
    /// Every CUDA device of the machine (`cuda:all`).
    CudaAll,
}

impl FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceArg::Auto),
            "cpu" => Ok(DeviceArg::Cpu),
            "cuda" => Ok(DeviceArg::Cuda(vec![0])),
            "cuda:all" => Ok(DeviceArg::CudaAll),
            _ => {
                let bad = || {
                    format!("'{s}' is not a device: use auto, cpu, cuda, cuda:N, cuda:N,M,… or cuda:all")
                };
                let list = s.strip_prefix("cuda:").ok_or_else(bad)?;
                let mut ordinals = Vec::new();
                for n in list.split(',') {
                    let n: usize = n.trim().parse().map_err(|_| bad())?;
                    if ordinals.contains(&n) {
                        return Err(format!("'{s}' names device {n} twice"));
                    }
                    ordinals.push(n);
                }
                Ok(DeviceArg::Cuda(ordinals))
            }
        }
    }
}

impl fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceArg::Auto => f.write_str("auto"),
            DeviceArg::Cpu => f.write_str("cpu"),
            DeviceArg::Cuda(n) => {
                let list: Vec<String> = n.iter().map(usize::to_string).collect();
                write!(f, "cuda:{}", list.join(","))
            }
            DeviceArg::CudaAll => f.write_str("cuda:all"),
        }
    }
}

/// Options shared by all subcommands.
#[derive(clap::Args, Clone, Debug)]
pub struct GlobalOpts {
    /// Where to compute: auto (the GPU when usable, else the CPU), cpu, cuda or cuda:N;
    /// `pairwise` also takes several GPUs: cuda:0,1 or cuda:all.
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
    /// A runtime error (exit code 1) if an explicitly requested CUDA device cannot be used; a
    /// usage error for a list of several (only `pairwise` takes them).
    pub fn device(&self) -> Result<Device> {
        let several = match &self.device {
            DeviceArg::Cuda(list) => list.len() > 1,
            DeviceArg::CudaAll => true,
            DeviceArg::Auto | DeviceArg::Cpu => false,
        };
        if several {
            return Err(CliError::usage(format!(
                "--device {}: only `cosim pairwise` runs on several devices; name one",
                self.device
            )));
        }
        self.devices()?
            .pop()
            .ok_or_else(|| CliError::runtime("internal: no device"))
    }

    /// The devices `--device` names (several for `cuda:0,1` and `cuda:all`), said on stderr
    /// as [`GlobalOpts::device`] says them.
    ///
    /// # Errors
    /// A runtime error (exit code 1) if a named CUDA device cannot be used.
    pub fn devices(&self) -> Result<Vec<Device>> {
        let (devices, why_not_gpu) = match &self.device {
            DeviceArg::Auto => {
                let (d, why) = Device::auto();
                (vec![d], why.map(|e| e.to_string()))
            }
            DeviceArg::Cpu => (vec![Device::Cpu], None),
            DeviceArg::Cuda(list) => (list.iter().map(|&n| cuda(n)).collect::<Result<_>>()?, None),
            DeviceArg::CudaAll => (every_cuda()?, None),
        };
        if !self.quiet {
            for d in &devices {
                match &why_not_gpu {
                    Some(why) => eprintln!("device: {} (GPU not used: {why})", d.describe()),
                    None => eprintln!("device: {}", d.describe()),
                }
            }
        }
        Ok(devices)
    }
}

/// Every CUDA device of the machine.
#[cfg(feature = "cuda")]
fn every_cuda() -> Result<Vec<Device>> {
    let count = cosim::cuda::device_count()
        .map_err(|e| CliError::runtime(format!("--device cuda:all: {e}")))?;
    if count == 0 {
        return Err(CliError::runtime("--device cuda:all: no CUDA device found"));
    }
    (0..count).map(cuda).collect()
}

#[cfg(not(feature = "cuda"))]
fn every_cuda() -> Result<Vec<Device>> {
    Err(CliError::runtime(
        "--device cuda:all: this cosim was built without the `cuda` feature",
    ))
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
        assert_eq!("cuda".parse(), Ok(DeviceArg::Cuda(vec![0])));
        assert_eq!("cuda:3".parse(), Ok(DeviceArg::Cuda(vec![3])));
        assert_eq!("cuda:0,1".parse(), Ok(DeviceArg::Cuda(vec![0, 1])));
        assert_eq!("cuda:all".parse(), Ok(DeviceArg::CudaAll));
        assert_eq!(DeviceArg::Cuda(vec![2, 0]).to_string(), "cuda:2,0");
        assert!("cuda:0,0".parse::<DeviceArg>().is_err());
        assert!("cuda:0,".parse::<DeviceArg>().is_err());
        assert!("gpu".parse::<DeviceArg>().is_err());
        assert!("cuda:x".parse::<DeviceArg>().is_err());
    }
}
