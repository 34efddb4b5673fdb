//! `cosim demo`: the PyTorch forum thread "cosine similarity between two feature maps",
//! answered live: every question of the thread, its answer computed on the chosen device
//! (the GPU when usable, else the CPU), shapes and values printed.

use crate::error::{CliError, Result};
use crate::options::GlobalOpts;
use cosim::{f16, Device};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt::Write as _;

pub const LONG_ABOUT: &str = "\
Answers the PyTorch forum thread \"cosine similarity between two feature maps\" live: each
question of the thread, the call that answers it, and the result's shape and first values.
Computed on --device (the GPU when usable, else the CPU); --dtype does not apply.";

/// Arguments of `cosim demo` (none besides the global options).
#[derive(clap::Args, Debug)]
#[command(long_about = LONG_ABOUT, after_help = "Example:\n  cosim demo --device cpu")]
pub struct DemoArgs {}

fn abs_random(rng: &mut SmallRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-2.0f32..2.0).abs())
        .collect()
}

/// `label: shape [..], first values [..]`.
fn show(label: &str, values: &[f32], shape: &[usize]) -> String {
    let preview: Vec<String> = values.iter().take(6).map(|v| format!("{v:.4}")).collect();
    let more = if values.len() > preview.len() {
        ", …"
    } else {
        ""
    };
    format!(
        "   {label}: shape {shape:?}, values [{}{more}]\n",
        preview.join(", ")
    )
}

/// Runs `cosim demo`: prints the walkthrough on stdout.
///
/// # Errors
/// If the device fails (exit code 1) or stdout cannot be written.
pub fn run(g: &GlobalOpts) -> Result<()> {
    let dev = g.device()?;
    let text = walkthrough(&dev).map_err(|e| CliError::runtime(format!("demo: {e}")))?;
    crate::print_stdout(&text)
}

fn walkthrough(dev: &Device) -> Result<String, Box<dyn std::error::Error>> {
    let mut o = String::new();
    let mut rng = SmallRng::seed_from_u64(2019);
    let s = [1usize, 2, 20, 20];
    let x1 = abs_random(&mut rng, 800);
    let x2 = abs_random(&mut rng, 800);

    writeln!(
        o,
        "Q1. Two feature maps of shape [1, 2, 20, 20]: one similarity per pixel?"
    )?;
    let per_pixel = dev.cosine_similarity(&x1, &s, &x2, &s, 1, None)?;
    o += &show(
        "cosine_similarity(x1, x2, dim=1)",
        &per_pixel.values,
        &per_pixel.shape,
    );

    writeln!(o, "\nQ2. Why does dim=0 give a tensor of ones?")?;
    let d0 = dev.cosine_similarity(&x1, &s, &x2, &s, 0, None)?;
    let ones = d0.values.iter().filter(|&&v| v == 1.0).count();
    o += &show("dim=0", &d0.values, &d0.shape);
    writeln!(
        o,
        "   dim 0 has size 1: each 'vector' is one positive number, so all {ones} of {} values are 1.",
        d0.values.len()
    )?;

    writeln!(
        o,
        "\nQ3. Is dim=1 the same as x.permute(0, 2, 3, 1).reshape(-1, C) and dim=-1?"
    )?;
    let rows = |x: &[f32]| -> Vec<f32> { (0..400).flat_map(|p| [x[p], x[400 + p]]).collect() };
    let by_rows = dev.cosine_similarity(&rows(&x1), &[400, 2], &rows(&x2), &[400, 2], -1, None)?;
    let max_diff = per_pixel
        .values
        .iter()
        .zip(&by_rows.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    writeln!(
        o,
        "   yes: shape {:?} vs {:?}, max |difference| = {max_diff:e}",
        per_pixel.shape, by_rows.shape
    )?;

    writeln!(
        o,
        "\nQ4. x1 = linspace(0, 1), x2 = linspace(1, 2) as [1, 2, 20, 20]: why all in [0.7071, 1]?"
    )?;
    let lin = |lo: f32, hi: f32| -> Vec<f32> {
        (0..800)
            .map(|i| lo + (hi - lo) * i as f32 / 799.0)
            .collect()
    };
    let l = dev.cosine_similarity(&lin(0.0, 1.0), &s, &lin(1.0, 2.0), &s, 1, None)?;
    let (lo, hi) = l
        .values
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    writeln!(
        o,
        "   min {lo:.4}, max {hi:.4}: for a ≥ 0, cos(a, a + 1) ≥ cos(a, 1) ≥ 1/√C = 0.7071 when C = 2."
    )?;

    writeln!(
        o,
        "\nQ5. One similarity per channel, each [20, 20] map flattened (view(N, C, -1), dim=2)?"
    )?;
    let ch = dev.channel_similarity(&x1, &s, &x2, &s, 2, None)?;
    o += &show("channel_similarity(flatten_from=2)", &ch.values, &ch.shape);
    let rw = dev.reweight_channels(&x1, &s, &x2, &s, 2, None)?;
    let scale: Vec<String> = rw.similarity.iter().map(|v| format!("{v:.4}")).collect();
    writeln!(
        o,
        "   reweight_channels: x2's channels scaled by [{}]; weighted shape {:?}",
        scale.join(", "),
        rw.weighted_shape
    )?;

    writeln!(
        o,
        "\nQ6. PyTorch gives NaN for a zero vector in f16, and values like 1.0000001. Here?"
    )?;
    let z = [f16::ZERO; 4];
    let one = [f16::ONE; 4];
    let zr = dev.cosine_similarity(&z, &[4], &one, &[4], 0, None)?;
    let same: Vec<f32> = (0..4096).map(|i| 0.1 + (i as f32).sin().abs()).collect();
    let sr = dev.cosine_similarity(&same, &[4096], &same, &[4096], 0, None)?;
    let (z0, s0) = (zr.values.first(), sr.values.first());
    if let (Some(z0), Some(s0)) = (z0, s0) {
        writeln!(
            o,
            "   zero vector in f16 → {z0}; a 4096-long vector with itself → {s0} (clamped to ≤ 1)"
        )?;
    }
    Ok(o)
}
