//! `cosim info`: what this build and this machine offer: features, the kernels and the nvcc
//! that built them, the CUDA devices found, and what `--device auto` would pick.

use crate::error::Result;
use crate::options::GlobalOpts;
use std::fmt::Write as _;

const EXAMPLES: &str = "\
Example:
  cosim info";

pub const LONG_ABOUT: &str = "Prints this build's features, whether the CUDA kernels were \
    built (for which architectures, by which nvcc), the CUDA devices found with their compute \
    capability, and the device `--device auto` picks (and why not the GPU).";

/// Arguments of `cosim info` (none besides the global options).
#[derive(clap::Args, Debug)]
#[command(long_about = LONG_ABOUT, after_help = EXAMPLES)]
pub struct InfoArgs {}

/// Runs `cosim info`; it reports problems rather than failing on them.
///
/// # Errors
/// Only if stdout cannot be written.
pub fn run(_g: &GlobalOpts) -> Result<()> {
    let mut o = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(o, "cosim {}", env!("CARGO_PKG_VERSION"));
    let features: Vec<&str> = [("cuda", cfg!(feature = "cuda")), ("cli", true)]
        .iter()
        .filter(|f| f.1)
        .map(|f| f.0)
        .collect();
    let _ = writeln!(o, "features: {}", features.join(", "));
    let _ = writeln!(o, "CPU: {} threads", rayon::current_num_threads());
    cuda_lines(&mut o);
    let (dev, why) = cosim::Device::auto();
    let _ = match why {
        Some(e) => writeln!(o, "--device auto: {} (GPU not used: {e})", dev.describe()),
        None => writeln!(o, "--device auto: {}", dev.describe()),
    };
    crate::print_stdout(&o)
}

#[cfg(feature = "cuda")]
fn cuda_lines(o: &mut String) {
    use cosim::cudarc::driver::CudaContext;
    let _ = match cosim::cuda::build_info() {
        Some(b) => writeln!(
            o,
            "CUDA kernels: built for {} by CUDA {} ({}); they need a driver for CUDA {} or newer",
            b.archs,
            b.cuda,
            b.nvcc,
            b.cuda.split('.').next().unwrap_or(b.cuda)
        ),
        None => writeln!(
            o,
            "CUDA kernels: not built (nvcc was not found at build time; rebuild with NVCC=/path/to/nvcc)"
        ),
    };
    let _ = match cosim::cuda::driver_version() {
        Ok((major, minor)) => writeln!(o, "CUDA driver: for CUDA {major}.{minor}"),
        Err(e) => writeln!(o, "CUDA driver: {e}"),
    };
    let count = match cosim::cuda::device_count() {
        Ok(n) => n,
        Err(e) => {
            let _ = writeln!(o, "CUDA devices: none usable: {e}");
            return;
        }
    };
    let _ = writeln!(o, "CUDA devices: {count}");
    for i in 0..count {
        let line = CudaContext::new(i).and_then(|ctx| {
            let (major, minor) = ctx.compute_capability()?;
            Ok(format!(
                "{} (compute capability {major}.{minor})",
                ctx.name()?
            ))
        });
        let _ = match line {
            Ok(l) => writeln!(o, "  cuda:{i}: {l}"),
            Err(e) => writeln!(o, "  cuda:{i}: cannot be opened ({e})"),
        };
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_lines(o: &mut String) {
    let _ = writeln!(o, "CUDA: not in this build (the `cuda` feature is off)");
}
