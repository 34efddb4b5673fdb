//! The streaming engine on the GPU (`cargo bench --bench stream`): top-10 of host-resident
//! queries Q [n, 768] against a host-resident corpus K [4 Mi, 768] (f32: 12 GiB; bf16: 6 GiB)
//! through `cosim::stream::PairStream`, run whole (K uploaded once per call, the device
//! holding it) and in chunks forced to an eighth of the corpus (staged through pinned
//! buffers on two streams), exact arithmetic:
//! - n = 8192 (compute-bound): the chunked run's throughput against the whole run's (target
//!   ≥ 90%);
//! - n = 1024 (host→device-bound): the corpus bytes per second the chunked run moves, next to
//!   a bare pinned host→device copy measured in the same run (target ≥ 85% of it);
//! - with several GPUs, the chunked n = 8192 case on all of them (the scaling line).
//!
//! Each time is the best of 2 (the calls are seconds long). Flags: `--keys N` (corpus size),
//! `--json PATH`. Without a usable GPU it says so and exits 0: nothing here runs on the CPU.

use cosim::pairwise::{Layout, PairPlan};
use cosim::stream::{PairStream, StreamElement};
use cosim::Device;
use rayon::prelude::*;
use serde_json::json;
use std::time::Instant;

const D: usize = 768;

/// Deterministic pseudo-random values in [-1, 1), filled in parallel.
fn random<T: cosim::Element + Send>(n: usize, seed: u64) -> Vec<T> {
    let mut v = vec![T::from_f64(0.0); n];
    v.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut s = (seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
            for x in chunk {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *x = T::from_f64((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0);
            }
        });
    v
}

/// Best wall time of `runs` calls, in seconds.
fn best(runs: usize, mut f: impl FnMut() -> cosim::Result<()>) -> cosim::Result<f64> {
    let mut t = f64::INFINITY;
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        t = t.min(start.elapsed().as_secs_f64());
    }
    Ok(t)
}

/// A bare pinned host→device copy of `bytes`, in GB/s (best of 3).
fn pinned_copy_gbs(cuda: &cosim::cuda::Cuda, bytes: usize) -> cosim::Result<f64> {
    let stream = cuda.stream();
    let ctx = stream.context();
    // SAFETY: the buffer is written (zeroed) by the host before any copy reads it.
    let mut host = unsafe { ctx.alloc_pinned::<u8>(bytes) }?;
    host.as_mut_slice()?.fill(1);
    let mut dev = stream.alloc_zeros::<u8>(bytes)?;
    let t = best(3, || {
        stream.memcpy_htod(&host, &mut dev)?;
        Ok(stream.synchronize()?)
    })?;
    Ok(bytes as f64 / t / 1e9)
}

#[allow(clippy::too_many_arguments)]
fn case<T: StreamElement>(
    rows: &mut Vec<serde_json::Value>,
    devices: &[Device],
    name: &str,
    n: usize,
    keys: &[T],
    m: usize,
    pinned_gbs: f64,
) -> cosim::Result<()> {
    let q: Vec<T> = random(n * D, 7 + n as u64);
    let plan = PairPlan::new(&[n, D], Layout::Rows, &[m, D], Layout::Rows)?;
    let corpus = m * D * std::mem::size_of::<T>();
    let flop = 2.0 * (n * m * D) as f64;
    let whole = best(2, || {
        PairStream::new(&plan, &q, keys)?
            .on(&devices[..1])?
            .top_k(10)
            .map(|_| ())
    })?;
    let chunked = best(2, || {
        PairStream::new(&plan, &q, keys)?
            .on(&devices[..1])?
            .chunk_bytes(corpus / 8)
            .top_k(10)
            .map(|_| ())
    })?;
    let line = |label: &str, t: f64| {
        println!(
            "{name} n={n} {label:>8}: {t:7.3} s  {:6.2} TFLOP/s  corpus {:6.2} GB/s",
            flop / t / 1e12,
            corpus as f64 / t / 1e9
        )
    };
    line("whole", whole);
    line("chunked", chunked);
    let corpus_gbs = corpus as f64 / chunked / 1e9;
    println!(
        "{name} n={n}: chunked {:.1}% of whole's throughput; chunked moves the corpus at {:.1}% of a bare pinned copy ({pinned_gbs:.1} GB/s)",
        100.0 * whole / chunked,
        100.0 * corpus_gbs / pinned_gbs
    );
    let mut row = json!({
        "case": format!("top-10 {name} Q [{n}, {D}] vs K [{m}, {D}]"),
        "whole_s": whole, "chunked_s": chunked,
        "chunked_vs_whole": whole / chunked,
        "chunked_corpus_gbs": corpus_gbs, "pinned_copy_gbs": pinned_gbs,
    });
    if devices.len() > 1 && n >= 8192 {
        let all = best(2, || {
            PairStream::new(&plan, &q, keys)?
                .on(devices)?
                .chunk_bytes(corpus / 8)
                .top_k(10)
                .map(|_| ())
        })?;
        println!(
            "{name} n={n} on {} GPUs (chunked): {all:.3} s, {:.2}× one GPU",
            devices.len(),
            chunked / all
        );
        row["all_devices_s"] = json!(all);
        row["devices"] = json!(devices.len());
    }
    rows.push(row);
    Ok(())
}

fn main() -> cosim::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let m: usize = flag("--keys")
        .and_then(|s| s.parse().ok())
        .unwrap_or(4 << 20);
    let first = match cosim::cuda::Cuda::new(0) {
        Ok(c) => c,
        Err(e) => {
            println!("stream benchmark: no usable GPU ({e}); nothing measured");
            return Ok(());
        }
    };
    let count = cosim::cuda::device_count()?;
    let mut devices = vec![Device::Cuda(first.clone())];
    for i in 1..count {
        devices.push(Device::Cuda(cosim::cuda::Cuda::new(i)?));
    }
    println!("{} GPU(s): {}", count, devices[0].describe());
    let pinned_gbs = pinned_copy_gbs(&first, 1 << 30)?;
    println!("bare pinned host->device copy of 1 GiB: {pinned_gbs:.1} GB/s");
    let mut rows = Vec::new();
    let keys: Vec<f32> = random(m * D, 1);
    for n in [8192, 1024] {
        case(&mut rows, &devices, "f32", n, &keys, m, pinned_gbs)?;
    }
    let keys: Vec<cosim::bf16> = keys.iter().map(|&x| cosim::bf16::from_f32(x)).collect();
    for n in [8192, 1024] {
        case(&mut rows, &devices, "bf16", n, &keys, m, pinned_gbs)?;
    }
    if let Some(path) = flag("--json") {
        let doc = json!({ "device": devices[0].describe(), "pinned_copy_gbs": pinned_gbs, "cases": rows });
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap_or_default())
            .map_err(|e| cosim::Error::Unsupported(format!("writing {path}: {e}")))?;
    }
    Ok(())
}
