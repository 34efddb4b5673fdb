//! `cosim along`: cosine similarity along one dim of two broadcasting arrays.

use crate::dtype::{with_dtype, Compute};
use crate::error::Result;
use crate::inputs::Inputs;
use crate::options::GlobalOpts;
use crate::output::Output;
use crate::progress::Progress;
use cosim::plan::Plan;
use cosim::stream::{elementwise, Elementwise};
use cosim::Device;
use std::path::PathBuf;

pub const LONG_ABOUT: &str = "\
Cosine similarity along one dim, as torch.nn.functional.cosine_similarity(a, b, dim, eps).

The two shapes broadcast first (NumPy rules: a size-1 dim stretches), then `--dim` picks the
dim of the broadcast shape to reduce; the result has the broadcast shape without it.
cos = sum(a*b) / (max(|a|, eps) * max(|b|, eps)); a zero vector gives 0, NaN stays NaN, and
results are clamped to [-1, 1]. Sums accumulate in f32 (f64 for f64 inputs).";

const EXAMPLES: &str = "\
Examples:
  # One value per pixel of two NCHW feature maps [N, C, H, W] -> [N, H, W]
  cosim along x.npy y.npy --dim 1 -o per_pixel.npy

  # Every pixel against one prototype: [N, C, H, W] vs [1, C, 1, 1]
  cosim along x.npy proto.npy --dim 1 -o vs_proto.npy

  # Rows of two [N, D] embedding tables (last dim), on the CPU, in f64
  cosim along a.npy b.npy --dim -1 --device cpu --dtype f64 -o rows.npy";

/// Arguments of `cosim along`.
#[derive(clap::Args, Debug)]
#[command(long_about = LONG_ABOUT, after_help = EXAMPLES)]
pub struct AlongArgs {
    /// First input (.npy: float16/32/64; integers and bool are converted to f32)
    #[arg(value_name = "A.npy")]
    pub a: PathBuf,
    /// Second input; its shape broadcasts against the first
    #[arg(value_name = "B.npy")]
    pub b: PathBuf,
    /// The dim to reduce, of the broadcast shape; negative counts from the end
    #[arg(long, allow_negative_numbers = true)]
    pub dim: isize,
    /// Each norm is clamped to at least eps [default: 1e-8]
    #[arg(long, allow_negative_numbers = true)]
    pub eps: Option<f64>,
    /// Where to write the result: the broadcast shape without --dim
    #[arg(short, long, value_name = "OUT.npy")]
    pub output: PathBuf,
}

/// Runs `cosim along`.
///
/// # Errors
/// Input and usage errors (exit code 2) before any work; device failures (exit code 1).
pub fn run(args: &AlongArgs, g: &GlobalOpts) -> Result<()> {
    let inputs = Inputs::open(&args.a, &args.b, g)?;
    Plan::along(&inputs.a.shape, &inputs.b.shape, args.dim, args.eps)
        .map_err(|e| inputs.refusal(e))?;
    let out = Output::create(&args.output, g)?;
    let device = g.device()?;
    with_dtype!(inputs.dtype, T => compute::<T>(&inputs, args, &device, out, g))
}

fn compute<T: Compute>(
    inputs: &Inputs,
    args: &AlongArgs,
    device: &Device,
    mut out: Output,
    g: &GlobalOpts,
) -> Result<()> {
    let progress = Progress::start(g.quiet);
    progress.phase("reading inputs");
    let (a, b) = (inputs.a.values::<T>(), inputs.b.values::<T>());
    progress.phase(format!("computing on {}", device.describe()));
    let op = Elementwise::Along(args.dim);
    let s = elementwise(
        device,
        op,
        (&a, &inputs.a.shape),
        (&b, &inputs.b.shape),
        args.eps,
        g.block_bytes,
    )
    .map_err(|e| inputs.refusal(e))?;
    progress.phase(format!("writing {}", out.path().display()));
    out.write_npy(&s.shape, &s.values)?;
    drop(progress);
    out.commit()
}
