//! Criterion benchmarks (`cargo bench --bench criterion`): the CPU backend on moderate shapes,
//! and the CUDA backend when a GPU and the kernels are present, timed with CUDA events through
//! `iter_custom`. Throughput is effective bytes (inputs read once + output written). The
//! roofline comparisons with ceilings live in `benches/cosim_bench.rs`.

use cosim::cpu;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A case: name, shape1, shape2, dim (None = per channel, flatten_from 2).
type Case = (
    &'static str,
    &'static [usize],
    &'static [usize],
    Option<isize>,
);

const CASES: &[Case] = &[
    ("dim1_nchw", &[8, 256, 32, 32], &[8, 256, 32, 32], Some(1)),
    (
        "dim1_prototype",
        &[8, 256, 32, 32],
        &[1, 256, 1, 1],
        Some(1),
    ),
    ("per_channel", &[8, 256, 32, 32], &[8, 256, 32, 32], None),
    ("short_rows", &[1 << 16, 64], &[1 << 16, 64], Some(1)),
    ("long_rows", &[2, 1 << 21], &[2, 1 << 21], Some(1)),
];

fn input(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                - 0.5
        })
        .collect()
}

fn bytes(s1: &[usize], s2: &[usize], dim: Option<isize>) -> u64 {
    let (n1, n2) = (s1.iter().product::<usize>(), s2.iter().product::<usize>());
    let out = match dim {
        Some(_) => n1.max(n2) / s1[1].max(s2[1]),
        None => s1[0] * s1[1],
    };
    ((n1 + n2 + out) * 4) as u64
}

fn cpu_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu");
    for &(name, s1, s2, dim) in CASES {
        let (a, b) = (input(s1.iter().product(), 1), input(s2.iter().product(), 2));
        g.throughput(Throughput::Bytes(bytes(s1, s2, dim)));
        g.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| match dim {
                Some(d) => cpu::cosine_similarity(&a, s1, &b, s2, d, None),
                None => cpu::channel_similarity(&a, s1, &b, s2, 2, None),
            })
        });
    }
    g.finish();
}

#[cfg(feature = "cuda")]
fn cuda_benches(c: &mut Criterion) {
    use std::time::Duration;
    let Ok(gpu) = cosim::cuda::Cuda::new(0) else {
        eprintln!("criterion: no usable GPU, CUDA benchmarks skipped");
        return;
    };
    let mut g = c.benchmark_group("cuda");
    for &(name, s1, s2, dim) in CASES {
        let mut run = || -> cosim::Result<()> {
            let a = gpu.upload(&input(s1.iter().product(), 1))?;
            let b = gpu.upload(&input(s2.iter().product(), 2))?;
            let plan = match dim {
                Some(d) => cosim::plan::Plan::along(s1, s2, d, None)?,
                None => cosim::plan::Plan::flattened(s1, s2, 2, None)?,
            };
            let mut out = gpu.stream().alloc_zeros::<f32>(plan.out_len())?;
            g.throughput(Throughput::Bytes(bytes(s1, s2, dim)));
            g.bench_function(BenchmarkId::from_parameter(name), |bench| {
                bench.iter_custom(|iters| {
                    let mut time = || -> cosim::Result<Duration> {
                        let ms = gpu.time_ms(|| {
                            for _ in 0..iters {
                                match dim {
                                    Some(d) => gpu.cosine_similarity_into(
                                        &mut out, &a, s1, &b, s2, d, None,
                                    )?,
                                    None => gpu.channel_similarity_into(
                                        &mut out, &a, s1, &b, s2, 2, None,
                                    )?,
                                };
                            }
                            Ok::<(), cosim::Error>(())
                        })?;
                        Ok(Duration::from_secs_f64(ms * 1e-3))
                    };
                    time().unwrap_or_else(|e| panic!("CUDA benchmark {name}: {e}"))
                })
            });
            Ok(())
        };
        if let Err(e) = run() {
            eprintln!("criterion: CUDA case {name} failed: {e}");
        }
    }
    g.finish();
}

#[cfg(not(feature = "cuda"))]
fn cuda_benches(_: &mut Criterion) {}

criterion_group!(benches, cpu_benches, cuda_benches);
criterion_main!(benches);
