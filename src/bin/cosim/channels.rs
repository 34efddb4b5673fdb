//! `cosim channels`: per-channel cosine similarity of flattened maps, and optionally the
//! second input reweighted per channel by it.

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
Per-channel cosine similarity of flattened maps: the dims from --flatten-from on form one
vector, so [N, C, H, W] with --flatten-from 2 gives [N, C], as
cosine_similarity(a.view(N, C, -1), b.view(N, C, -1), dim=2) does in PyTorch (without a view).

With --reweight W.npy, also writes B scaled per channel by its similarity to the same channel
of A (W = B * sim, same shape as the broadcast inputs), computed in one pass.";

const EXAMPLES: &str = "\
Examples:
  # One similarity per channel of two [N, C, H, W] maps -> [N, C]
  cosim channels x.npy y.npy --flatten-from 2 -o per_channel.npy

  # ... and y with each channel scaled by that similarity -> weighted.npy [N, C, H, W]
  cosim channels x.npy y.npy --flatten-from 2 -o per_channel.npy --reweight weighted.npy

  # One similarity per sample of [N, T, D] sequences, flattening T and D
  cosim channels a.npy b.npy --flatten-from 1 -o per_sample.npy";

/// Arguments of `cosim channels`.
#[derive(clap::Args, Debug)]
#[command(long_about = LONG_ABOUT, after_help = EXAMPLES)]
pub struct ChannelsArgs {
    /// First input (.npy: float16/32/64; integers and bool are converted to f32)
    #[arg(value_name = "A.npy")]
    pub a: PathBuf,
    /// Second input; its shape broadcasts against the first (a flattened block whole or not at all)
    #[arg(value_name = "B.npy")]
    pub b: PathBuf,
    /// First dim of the flattened vectors; the result keeps the dims before it
    #[arg(long, default_value_t = 2)]
    pub flatten_from: usize,
    /// Each norm is clamped to at least eps [default: 1e-8]
    #[arg(long, allow_negative_numbers = true)]
    pub eps: Option<f64>,
    /// Where to write the similarities: the broadcast shape up to --flatten-from
    #[arg(short, long, value_name = "OUT.npy")]
    pub output: PathBuf,
    /// Also write B reweighted per channel by its similarity to A
    #[arg(long, value_name = "W.npy")]
    pub reweight: Option<PathBuf>,
}

/// Runs `cosim channels`.
///
/// # Errors
/// Input and usage errors (exit code 2) before any work; device failures (exit code 1).
pub fn run(args: &ChannelsArgs, g: &GlobalOpts) -> Result<()> {
    let inputs = Inputs::open(&args.a, &args.b, g)?;
    Plan::flattened(
        &inputs.a.shape,
        &inputs.b.shape,
        args.flatten_from,
        args.eps,
    )
    .map_err(|e| inputs.refusal(e))?;
    if args.reweight.as_ref() == Some(&args.output) {
        return Err(crate::error::CliError::file(
            &args.output,
            "given both as -o and --reweight; name two different files",
        ));
    }
    let out = Output::create(&args.output, g)?;
    let weighted = match &args.reweight {
        Some(p) => Some(Output::create(p, g)?),
        None => None,
    };
    let device = g.device()?;
    with_dtype!(inputs.dtype, T => compute::<T>(&inputs, args, &device, out, weighted, g))
}

fn compute<T: Compute>(
    inputs: &Inputs,
    args: &ChannelsArgs,
    device: &Device,
    mut out: Output,
    mut weighted: Option<Output>,
    g: &GlobalOpts,
) -> Result<()> {
    let progress = Progress::start(g.quiet);
    progress.phase("reading inputs");
    let (a, b) = (inputs.a.values::<T>(), inputs.b.values::<T>());
    progress.phase(format!("computing on {}", device.describe()));
    let from = args.flatten_from;
    let op = match weighted {
        Some(_) => Elementwise::Reweight(from),
        None => Elementwise::Channels(from),
    };
    let r = elementwise(
        device,
        op,
        (&a, &inputs.a.shape),
        (&b, &inputs.b.shape),
        args.eps,
        g.block_bytes,
    )
    .map_err(|e| inputs.refusal(e))?;
    progress.phase(format!("writing {}", out.path().display()));
    out.write_npy(&r.shape, &r.values)?;
    if let (Some(w), Some((values, shape))) = (weighted.as_mut(), &r.weighted) {
        progress.phase(format!("writing {}", w.path().display()));
        w.write_npy(shape, values)?;
    }
    drop(progress);
    out.commit()?;
    match weighted {
        Some(w) => w.commit(),
        None => Ok(()),
    }
}
