//! Top-10 search of a query set against a corpus stored as `.npy`, larger than a memory
//! budget you force, through `cosim::stream`: on every GPU of the machine when one is usable,
//! else on the CPU. The corpus is memory-mapped, never read whole: its chunks are staged as
//! the devices need them.
//!
//! ```sh
//! cargo run --release --example search                      # a random 128 MiB corpus
//! cargo run --release --example search -- keys.npy queries.npy --budget 64M
//! ```
//! Both files hold float32 `[count, D]` in C order. `--budget` (bytes, with K, M or G) is the
//! memory each device's part may take; by default an eighth of the corpus, so the corpus is
//! always streamed in chunks.

use anyhow::{bail, Context, Result};
use cosim::pairwise::{Layout, PairPlan};
use cosim::stream::{PairStream, Progress};
use cosim::{cpu, Device};
use memmap2::Mmap;
use npyz::WriterBuilder;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// A float32 `[count, D]` `.npy` file, memory-mapped.
struct Mapped {
    map: Mmap,
    offset: usize,
    shape: Vec<usize>,
}

impl Mapped {
    fn open(path: &Path) -> Result<Mapped> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: read-only and private; the example does not guard against another process
        // rewriting the file while it runs.
        let map = unsafe { Mmap::map(&file) }?;
        let npy = npyz::NpyFile::new(&map[..])
            .with_context(|| format!("{}: not a .npy", path.display()))?;
        if npy.dtype() != npyz::DType::new_scalar("<f4".parse()?) || npy.order() != npyz::Order::C {
            bail!("{}: must hold float32 in C order", path.display());
        }
        let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
        if shape.len() != 2 {
            bail!("{}: must be [count, D], not {shape:?}", path.display());
        }
        let offset = map.len() - npy.into_inner().len();
        Ok(Mapped { map, offset, shape })
    }

    fn values(&self) -> Result<&[f32]> {
        let n = self.shape.iter().product::<usize>() * 4;
        let bytes = self
            .map
            .get(self.offset..self.offset + n)
            .context("truncated .npy")?;
        bytemuck::try_cast_slice(bytes).map_err(|e| anyhow::anyhow!("misaligned data: {e:?}"))
    }
}

/// Writes `count` random vectors of `d` as float32 `.npy`.
fn random_npy(path: &Path, count: usize, d: usize, seed: u64) -> Result<()> {
    let mut r = SmallRng::seed_from_u64(seed);
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[count as u64, d as u64])
        .writer(std::io::BufWriter::new(std::fs::File::create(path)?))
        .begin_nd()?;
    for _ in 0..count * d {
        w.push(&r.random_range(-1.0f32..1.0))?;
    }
    w.finish()?;
    Ok(())
}

fn parse_bytes(s: &str) -> Result<usize> {
    let (num, shift) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    Ok(num
        .parse::<usize>()
        .context("--budget takes bytes, e.g. 64M")?
        << shift)
}

/// Every CUDA device when the first is usable, else the CPU.
fn devices() -> Vec<Device> {
    match Device::auto() {
        (Device::Cpu, why) => {
            if let Some(why) = why {
                println!("GPU not used: {why}");
            }
            vec![Device::Cpu]
        }
        #[cfg(feature = "cuda")]
        (first, _) => {
            let count = cosim::cuda::device_count().unwrap_or(1);
            let mut all = vec![first];
            all.extend((1..count).filter_map(|i| cosim::cuda::Cuda::new(i).ok().map(Device::Cuda)));
            all
        }
    }
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut budget = None;
    if let Some(at) = args.iter().position(|a| a == "--budget") {
        budget = Some(parse_bytes(
            args.get(at + 1).context("--budget needs a value")?,
        )?);
        args.drain(at..at + 2);
    }
    let dir = tempfile::tempdir()?;
    let (corpus_path, queries_path) = match &args[..] {
        [c, q] => (PathBuf::from(c), PathBuf::from(q)),
        [] => {
            let (c, q) = (dir.path().join("keys.npy"), dir.path().join("queries.npy"));
            println!("writing a random corpus [131072, 256] and queries [1024, 256] (float32)");
            random_npy(&c, 131_072, 256, 1)?;
            random_npy(&q, 1024, 256, 2)?;
            (c, q)
        }
        _ => bail!("usage: search [KEYS.npy QUERIES.npy] [--budget BYTES]"),
    };
    let (corpus, queries) = (Mapped::open(&corpus_path)?, Mapped::open(&queries_path)?);
    let (keys, qs) = (corpus.values()?, queries.values()?);
    let plan = PairPlan::new(&queries.shape, Layout::Rows, &corpus.shape, Layout::Rows)?;
    let corpus_bytes = keys.len() * 4;
    let budget = budget.unwrap_or((corpus_bytes / 8).max(1 << 20));
    let devices = devices();
    for d in &devices {
        println!("device: {}", d.describe());
    }
    let gpu = !matches!(devices[0], Device::Cpu);
    let done = AtomicUsize::new(0);
    let progress = |p: Progress| {
        // A line at every tenth of the pairs.
        let tenth = p.done * 10 / p.total.max(1);
        if done.fetch_max(tenth, Ordering::Relaxed) < tenth {
            println!("  {} of {} chunk pairs", p.done, p.total);
        }
        ControlFlow::Continue(())
    };
    let mut stream = PairStream::new(&plan, qs, keys)?
        .on(&devices)?
        .on_progress(&progress);
    // A GPU's part fits its budget (the library sizes the chunks); the CPU is given chunks
    // of a quarter of it per set (two sets, in two slots' worth).
    stream = if gpu {
        stream.memory_budget(budget)
    } else {
        stream.chunk_bytes(budget / 4)
    };
    for (shard, chunks) in stream.chunking(Some(10))? {
        println!("  corpus vectors {shard:?}: chunks {chunks:?}");
    }
    let (n, m, d) = (plan.n, plan.m, plan.d);
    println!(
        "top-10 of {n} queries in {m} keys of {d} ({:.1} MiB, budget {:.2} MiB)",
        corpus_bytes as f64 / 1048576.0,
        budget as f64 / 1048576.0
    );
    let start = Instant::now();
    let top = stream.top_k(10)?;
    let s = start.elapsed().as_secs_f64();
    println!(
        "{s:.3} s: {:.1} GFLOP/s, corpus read at {:.2} GB/s",
        2.0 * (n * m * d) as f64 / s / 1e9,
        corpus_bytes as f64 / s / 1e9
    );
    // Query 0 alone on the CPU, unchunked: the same ten keys.
    let one = PairPlan::new(&[1, d], Layout::Rows, &corpus.shape, Layout::Rows)?;
    let want = cpu::pairwise_top_k(&one, &qs[..d], keys, 10)?;
    if want.indices != top.indices[..10] {
        bail!(
            "query 0: {:?}, but alone it finds {:?}",
            &top.indices[..10],
            want.indices
        );
    }
    println!(
        "query 0: keys {:?} (checked against the CPU)",
        &top.indices[..10]
    );
    Ok(())
}
