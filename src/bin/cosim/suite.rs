//! The benchmark suite, run by `cosim bench` and by `cargo bench --bench cosim_bench` (which
//! includes this file):
//! - CPU backend: each op's effective GB/s next to this machine's read and copy bandwidth,
//!   measured in the same run on buffers far larger than the caches (median wall time);
//! - CUDA backend, when a GPU and the kernels are present: each op timed with CUDA events
//!   (warm-up, median of ≥ 20), next to a device-to-device copy measured in the same run,
//!   with the device memory each op allocates besides its output.
//!
//! Effective bytes = bytes of both inputs read once + bytes written. [`SuiteOptions`] holds
//! the flags: `--json PATH` (also writes a markdown table next to it, PATH with .md),
//! `--label TEXT` (a line heading both files: date, machine, commit), `--cpu-only`, `--gpu-only`.

use cosim::{cpu, f16, Element};
use rayon::prelude::*;
use serde_json::json;
use std::time::Instant;

#[derive(Clone, Debug)]
struct Row {
    backend: &'static str,
    case: String,
    dtype: &'static str,
    ms: f64,
    bytes: f64,
    ceiling_gbps: f64,
    ceiling_name: &'static str,
    extra_bytes: usize,
}

impl Row {
    fn gbps(&self) -> f64 {
        self.bytes / (self.ms * 1e-3) / 1e9
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Deterministic pseudo-random values in [-1, 1), filled in parallel.
fn random<T: Element>(n: usize, seed: u64) -> Vec<T> {
    let mut v = vec![T::default(); n];
    v.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut s = seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for x in chunk {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *x = T::from_f64((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0);
            }
        });
    v
}

fn time_cpu(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// Sums two buffers side by side, as the ops read their two inputs: 64 independent lanes
/// (four AVX-512 registers), compiled for the widest vector unit the CPU has, like the
/// library's own loops, so that only memory bandwidth limits it.
fn read_sum(a: &[f32], b: &[f32]) -> f32 {
    #[inline(always)]
    fn body(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; 64];
        for (x, y) in a.chunks_exact(64).zip(b.chunks_exact(64)) {
            for l in 0..64 {
                acc[l] += x[l] + y[l];
            }
        }
        acc.iter().sum()
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(a: &[f32], b: &[f32]) -> f32 {
            body(a, b)
        }
        #[target_feature(enable = "avx2")]
        fn avx2(a: &[f32], b: &[f32]) -> f32 {
            body(a, b)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512(a, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { avx2(a, b) };
        }
    }
    body(a, b)
}

/// Read bandwidth with two interleaved input streams per thread, the access pattern of the
/// ops here: median GB/s of summing two 256 MiB buffers side by side.
fn read_ceiling(a: &[f32], b: &[f32]) -> f64 {
    let mut sink = 0f32;
    let ms = time_cpu(11, || {
        sink += a
            .par_chunks(1 << 16)
            .zip(b.par_chunks(1 << 16))
            .map(|(x, y)| read_sum(x, y))
            .sum::<f32>();
    });
    std::hint::black_box(sink);
    8.0 * a.len() as f64 / (ms * 1e-3) / 1e9
}

fn cpu_section(rows: &mut Vec<Row>) {
    let n = 1usize << 26; // 256 MiB of f32
    let src = random::<f32>(n, 1);
    let mut dst = vec![0f32; n];
    let copy_ms = time_cpu(11, || {
        dst.par_chunks_mut(1 << 16)
            .zip(src.par_chunks(1 << 16))
            .for_each(|(d, s)| d.copy_from_slice(s))
    });
    let copy = 2.0 * 4.0 * n as f64 / (copy_ms * 1e-3) / 1e9;
    let read = read_ceiling(&src, &dst);
    println!(
        "CPU: {} threads, copy {copy:.1} GB/s (read+write), read {read:.1} GB/s (two streams)",
        rayon::current_num_threads()
    );
    rows.push(Row {
        backend: "cpu",
        case: "copy (read+write), 256 MiB".into(),
        dtype: "f32",
        ms: copy_ms,
        bytes: 8.0 * n as f64,
        ceiling_gbps: read,
        ceiling_name: "read",
        extra_bytes: 0,
    });
    const NCHW: &[usize] = &[16, 256, 64, 64];
    let cases: &[(&str, &[usize], &[usize], Op)] = &[
        ("dim=1 [16,256,64,64]", NCHW, NCHW, Op::Along(1)),
        (
            "dim=1 [16,256,64,64] vs prototype [1,256,1,1]",
            NCHW,
            &[1, 256, 1, 1],
            Op::Along(1),
        ),
        (
            "per channel [16,256,64,64] flatten_from=2",
            NCHW,
            NCHW,
            Op::Flat(2),
        ),
        (
            "rows [2^18, 64] dim=1",
            &[1 << 18, 64],
            &[1 << 18, 64],
            Op::Along(1),
        ),
        (
            "long rows [2, 2^24] dim=1",
            &[2, 1 << 24],
            &[2, 1 << 24],
            Op::Along(1),
        ),
        (
            "backward dim=1 [16,256,64,64]",
            NCHW,
            NCHW,
            Op::AlongBack(1),
        ),
        (
            "backward dim=1 [16,256,64,64] vs prototype [1,256,1,1]",
            NCHW,
            &[1, 256, 1, 1],
            Op::AlongBack(1),
        ),
        (
            "backward per channel [16,256,64,64] flatten_from=2",
            NCHW,
            NCHW,
            Op::FlatBack(2),
        ),
    ];
    // This machine's bandwidth drifts with its neighbours (seen: 20 to 45 GB/s within
    // minutes): each case is judged against the read ceiling measured right before and right
    // after it, the larger of the two.
    let ceiling = || read_ceiling(&src, &dst);
    for &(name, s1, s2, op) in cases {
        cpu_case::<f32>(rows, name, s1, s2, op, &ceiling);
    }
    cpu_case::<f16>(
        rows,
        "dim=1 [16,256,64,64]",
        NCHW,
        NCHW,
        Op::Along(1),
        &ceiling,
    );
}

#[derive(Clone, Copy)]
enum Op {
    Along(isize),
    Flat(usize),
    /// Only in the GPU cases.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Reweight(usize),
    /// The gradients of `Along` / `Flat`: reads x1, x2 and the upstream gradient, writes both
    /// input gradients (the bytes counted; the inputs are read twice, the second time mostly
    /// from cache for short vectors).
    AlongBack(isize),
    FlatBack(usize),
}

impl Op {
    /// The forward plan of the op.
    fn plan(self, s1: &[usize], s2: &[usize]) -> cosim::Result<cosim::plan::Plan> {
        match self {
            Op::Along(d) | Op::AlongBack(d) => cosim::plan::Plan::along(s1, s2, d, None),
            Op::Flat(f) | Op::Reweight(f) | Op::FlatBack(f) => {
                cosim::plan::Plan::flattened(s1, s2, f, None)
            }
        }
    }

    /// Elements the op reads and writes besides the two inputs (read once each).
    fn other_elements(self, plan: &cosim::plan::Plan, n1: usize, n2: usize) -> usize {
        match self {
            Op::Along(_) | Op::Flat(_) => plan.out_len(),
            Op::Reweight(_) => plan.out_len() * (1 + plan.reduce.len),
            Op::AlongBack(_) | Op::FlatBack(_) => plan.out_len() + n1 + n2,
        }
    }
}

fn cpu_case<T: Element>(
    rows: &mut Vec<Row>,
    case: &str,
    s1: &[usize],
    s2: &[usize],
    op: Op,
    ceiling: &dyn Fn() -> f64,
) {
    let (n1, n2) = (s1.iter().product::<usize>(), s2.iter().product::<usize>());
    let (a, b) = (random::<T>(n1, 2), random::<T>(n2, 3));
    let sz = std::mem::size_of::<T>() as f64;
    let Ok(plan) = op.plan(s1, s2) else {
        println!("cpu {case}: not a valid case");
        return;
    };
    let grad = random::<T>(plan.out_len(), 4);
    let before = ceiling();
    let ms = time_cpu(11, || {
        let ok = match op {
            Op::Along(d) => cpu::cosine_similarity(&a, s1, &b, s2, d, None).is_ok(),
            Op::Flat(f) => cpu::channel_similarity(&a, s1, &b, s2, f, None).is_ok(),
            Op::Reweight(f) => cpu::reweight_channels(&a, s1, &b, s2, f, None).is_ok(),
            Op::AlongBack(d) => {
                cpu::cosine_similarity_backward(&a, s1, &b, s2, d, None, &grad).is_ok()
            }
            Op::FlatBack(f) => {
                cpu::channel_similarity_backward(&a, s1, &b, s2, f, None, &grad).is_ok()
            }
        };
        std::hint::black_box(ok);
    });
    let out_len = op.other_elements(&plan, n1, n2);
    let read = before.max(ceiling());
    let row = Row {
        backend: "cpu",
        case: case.into(),
        dtype: T::NAME,
        ms,
        bytes: (n1 + n2 + out_len) as f64 * sz,
        ceiling_gbps: read,
        ceiling_name: "read",
        extra_bytes: 0,
    };
    println!(
        "cpu {:<50} {:>5} {:9.3} ms {:7.1} GB/s {:5.1}% of read ({read:.1} GB/s around it)",
        row.case,
        row.dtype,
        row.ms,
        row.gbps(),
        100.0 * row.gbps() / read
    );
    rows.push(row);
}

#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use cosim::cuda::{Cuda, CudaElement};
    use cosim::plan::Plan;
    use cosim::{bf16, f16};
    use cudarc::driver::CudaSlice;

    /// (name, dtype, shape1, shape2, op).
    type GpuCase = (
        &'static str,
        &'static str,
        &'static [usize],
        &'static [usize],
        Op,
    );

    const WARMUP: usize = 3;
    const REPS: usize = 25;

    /// Median milliseconds of `f` queued on the handle's stream, timed with [`Cuda::time_ms`]
    /// (CUDA events, or the host clock on drivers before CUDA 12.8).
    fn time_gpu(cuda: &Cuda, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
        for _ in 0..WARMUP {
            f()?;
        }
        let mut ms = Vec::with_capacity(REPS);
        for _ in 0..REPS {
            ms.push(cuda.time_ms(&mut f)?);
        }
        Ok(median(ms))
    }

    pub fn section(rows: &mut Vec<Row>, ordinal: usize) -> anyhow::Result<()> {
        let cuda = match Cuda::new(ordinal) {
            Ok(c) => c,
            Err(e) => {
                println!("GPU section skipped: {e}");
                return Ok(());
            }
        };
        println!("GPU: {} (timed with {:?})", cuda.describe()?, cuda.clock());
        // Ceiling: device-to-device copy of 2 GiB.
        let n = 1usize << 29;
        let src: CudaSlice<f32> = cuda.upload(&random::<f32>(n, 4))?;
        let mut dst = cuda.stream().alloc_zeros::<f32>(n)?;
        let s = cuda.stream().clone();
        let copy_ms = time_gpu(&cuda, || Ok(s.memcpy_dtod(&src, &mut dst)?))?;
        let copy = 8.0 * n as f64 / (copy_ms * 1e-3) / 1e9;
        println!("device copy: {copy:.0} GB/s (read+write)");
        rows.push(Row {
            backend: "cuda",
            case: "device copy (read+write), 2 GiB".into(),
            dtype: "f32",
            ms: copy_ms,
            bytes: 8.0 * n as f64,
            ceiling_gbps: copy,
            ceiling_name: "copy",
            extra_bytes: 0,
        });
        drop((src, dst));
        const NCHW: &[usize] = &[64, 256, 128, 128];
        // (name, dtype, shape1, shape2, op): the targets, and the paths they take.
        let cases: &[GpuCase] = &[
            ("dim=1 [64,256,128,128]", "f32", NCHW, NCHW, Op::Along(1)),
            ("dim=1 [64,256,128,128]", "f16", NCHW, NCHW, Op::Along(1)),
            ("dim=1 [64,256,128,128]", "bf16", NCHW, NCHW, Op::Along(1)),
            (
                "dim=1 [256,2,512,512]",
                "f32",
                &[256, 2, 512, 512],
                &[256, 2, 512, 512],
                Op::Along(1),
            ),
            (
                "per channel [64,256,128,128] flatten_from=2",
                "f32",
                NCHW,
                NCHW,
                Op::Flat(2),
            ),
            (
                "long rows [8, 2^25] dim=1",
                "f32",
                &[8, 1 << 25],
                &[8, 1 << 25],
                Op::Along(1),
            ),
            (
                "short rows [2^22, 64] dim=1",
                "f32",
                &[1 << 22, 64],
                &[1 << 22, 64],
                Op::Along(1),
            ),
            (
                "dim=1 [64,256,128,128] vs prototype [1,256,1,1]",
                "f32",
                NCHW,
                &[1, 256, 1, 1],
                Op::Along(1),
            ),
            (
                "per channel vs one value per channel [64,256,1,1]",
                "f32",
                NCHW,
                &[64, 256, 1, 1],
                Op::Flat(2),
            ),
            (
                "column-wise [2^20, 64] dim=0 (split reduction)",
                "f32",
                &[1 << 20, 64],
                &[1 << 20, 64],
                Op::Along(0),
            ),
            (
                "reweight channels [64,256,128,128]",
                "f32",
                NCHW,
                NCHW,
                Op::Reweight(2),
            ),
            (
                "backward dim=1 [64,256,128,128]",
                "f32",
                NCHW,
                NCHW,
                Op::AlongBack(1),
            ),
            (
                "backward dim=1 [64,256,128,128] vs prototype [1,256,1,1]",
                "f32",
                NCHW,
                &[1, 256, 1, 1],
                Op::AlongBack(1),
            ),
            (
                "backward per channel [64,256,128,128] flatten_from=2",
                "f32",
                NCHW,
                NCHW,
                Op::FlatBack(2),
            ),
            (
                "dim=1 [32,256,128,128]",
                "f64",
                &[32, 256, 128, 128],
                &[32, 256, 128, 128],
                Op::Along(1),
            ),
        ];
        for &(name, dtype, s1, s2, op) in cases {
            match dtype {
                "f16" => case::<f16>(&cuda, rows, name, s1, s2, op, copy)?,
                "bf16" => case::<bf16>(&cuda, rows, name, s1, s2, op, copy)?,
                "f64" => case::<f64>(&cuda, rows, name, s1, s2, op, copy)?,
                _ => case::<f32>(&cuda, rows, name, s1, s2, op, copy)?,
            }
        }
        Ok(())
    }

    fn case<T: CudaElement>(
        cuda: &Cuda,
        rows: &mut Vec<Row>,
        name: &str,
        s1: &[usize],
        s2: &[usize],
        op: Op,
        copy: f64,
    ) -> anyhow::Result<()> {
        let (n1, n2) = (s1.iter().product::<usize>(), s2.iter().product::<usize>());
        let a = cuda.upload(&random::<T>(n1, 5))?;
        let b = cuda.upload(&random::<T>(n2, 6))?;
        let sz = std::mem::size_of::<T>();
        let plan: Plan = op.plan(s1, s2)?;
        let written = op.other_elements(&plan, n1, n2);
        let grad = cuda.upload(&random::<T>(plan.out_len(), 7))?;
        let mut out = cuda.stream().alloc_zeros::<T>(plan.out_len())?;
        let mut weighted = cuda.stream().alloc_zeros::<T>(
            if matches!(op, Op::Reweight(_)) {
                plan.out_len() * plan.reduce.len
            } else {
                0
            }
            .max(1),
        )?;
        let ms = time_gpu(cuda, || {
            let r = match op {
                Op::Along(d) => cuda
                    .cosine_similarity_into(&mut out, &a, s1, &b, s2, d, None)
                    .map(drop),
                Op::Flat(f) => cuda
                    .channel_similarity_into(&mut out, &a, s1, &b, s2, f, None)
                    .map(drop),
                Op::Reweight(f) => cuda
                    .reweight_channels_into(&mut weighted, &mut out, &a, s1, &b, s2, f, None)
                    .map(drop),
                Op::AlongBack(d) => cuda
                    .cosine_similarity_backward(&a, s1, &b, s2, d, None, &grad)
                    .map(drop),
                Op::FlatBack(f) => cuda
                    .channel_similarity_backward(&a, s1, &b, s2, f, None, &grad)
                    .map(drop),
            };
            Ok(r?)
        })?;
        let row = Row {
            backend: "cuda",
            case: name.into(),
            dtype: T::NAME,
            ms,
            bytes: ((n1 + n2 + written) * sz) as f64,
            ceiling_gbps: copy,
            ceiling_name: "copy",
            extra_bytes: match op {
                // A broadcast input's gradient is summed in accumulator-type scratch.
                Op::AlongBack(_) | Op::FlatBack(_) => [n1, n2]
                    .iter()
                    .filter(|&&n| !plan.reads_each_once(n))
                    .map(|n| n * std::mem::size_of::<T::Acc>())
                    .sum(),
                _ => cuda.scratch_bytes::<T>(&plan),
            },
        };
        println!(
            "cuda {:<50} {:>5} {:9.3} ms {:7.0} GB/s {:5.1}% of copy, extra device memory {} B",
            row.case,
            row.dtype,
            row.ms,
            row.gbps(),
            100.0 * row.gbps() / copy,
            row.extra_bytes
        );
        rows.push(row);
        Ok(())
    }
}

/// What to run and where to write the results.
#[derive(Clone, Debug, Default)]
pub struct SuiteOptions {
    /// Write the rows as JSON here, and a markdown table next to it (same path, .md).
    pub json: Option<String>,
    /// A line heading both files: date, machine, commit.
    pub label: String,
    /// Skip the GPU section.
    pub cpu_only: bool,
    /// Skip the CPU section.
    pub gpu_only: bool,
    /// The CUDA device to measure.
    pub ordinal: usize,
}

/// Runs the suite: prints one line per case, and writes the files `opts` asks for.
///
/// # Errors
/// A device failure during the GPU section, or a file that cannot be written.
pub fn run(opts: &SuiteOptions) -> anyhow::Result<()> {
    let json_path = opts.json.clone();
    let label = opts.label.clone();
    let mut rows = Vec::new();
    if !opts.gpu_only {
        cpu_section(&mut rows);
    }
    #[cfg(feature = "cuda")]
    if !opts.cpu_only {
        gpu::section(&mut rows, opts.ordinal)?;
    }
    #[cfg(not(feature = "cuda"))]
    if opts.gpu_only && !opts.cpu_only {
        println!(
            "GPU section skipped: built without the `cuda` feature (device {})",
            opts.ordinal
        );
    }
    if let Some(path) = json_path {
        let items: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"backend": r.backend, "case": r.case, "dtype": r.dtype, "median_ms": r.ms,
                       "effective_bytes": r.bytes, "gbps": r.gbps(), "ceiling": r.ceiling_name,
                       "ceiling_gbps": r.ceiling_gbps, "pct_of_ceiling": 100.0 * r.gbps() / r.ceiling_gbps,
                       "extra_device_bytes": r.extra_bytes})
            })
            .collect();
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json!({"label": label, "rows": items}))?,
        )?;
        let mut md = format!("{label}\n\n");
        md += &String::from("| backend | case | dtype | median ms | GB/s | ceiling GB/s | % of ceiling | extra memory (host for cpu, device for cuda) |\n|---|---|---|---:|---:|---:|---:|---:|\n");
        for r in &rows {
            md += &format!(
                "| {} | {} | {} | {:.3} | {:.1} | {:.1} | {:.1}% of {} | {} B |\n",
                r.backend,
                r.case,
                r.dtype,
                r.ms,
                r.gbps(),
                r.ceiling_gbps,
                100.0 * r.gbps() / r.ceiling_gbps,
                r.ceiling_name,
                r.extra_bytes
            );
        }
        std::fs::write(std::path::Path::new(&path).with_extension("md"), md)?;
    }
    Ok(())
}
