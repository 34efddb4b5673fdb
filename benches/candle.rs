//! cosim through candle on the GPU: the same calls on candle tensors (`cosim::candle`) and on
//! the raw `CudaSlice`s under them (`cosim::cuda::Cuda` on candle's stream), so the wrapper's
//! overhead shows (target ≤ 2%), and the best candle-only composition of each, or why it
//! cannot run. Cases: pairwise top-10 of 65536 × 65536 × 768 f32, and `dim=1` of
//! [64, 256, 128, 128] f32. Medians of `REPS` runs after 2 warm-ups, timed on candle's stream
//! with `cosim::cuda::time_ms`.
//!
//! `cargo bench --bench candle --features candle-cuda` (needs a GPU; candle's CUDA backend
//! needs cuBLAS and cuRAND).

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use cosim::cuda::Cuda;
use cosim::pairwise::{Layout, PairPlan};

const REPS: usize = 10;

/// Median milliseconds of `f` on the handle's (candle's) stream; its results are dropped.
fn time<T>(cuda: &Cuda, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    for _ in 0..2 {
        f()?;
    }
    let mut ms = (0..REPS)
        .map(|_| cuda.time_ms(|| f().map(drop)))
        .collect::<Result<Vec<_>>>()?;
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}

/// The raw buffer of a contiguous candle CUDA tensor, for the same call without the wrapper.
fn with_slice<R>(
    t: &Tensor,
    f: impl FnOnce(&cosim::cudarc::driver::CudaSlice<f32>) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cuda(s) = &*storage else {
        anyhow::bail!("not a CUDA tensor");
    };
    anyhow::ensure!(
        layout.start_offset() == 0 && t.is_contiguous(),
        "not a whole contiguous tensor"
    );
    f(s.as_cuda_slice::<f32>()?)
}

fn report(what: &str, ms: Result<f64>, unit: &str, amount: f64) {
    match ms {
        Ok(ms) => println!(
            "{what:<44} {ms:>10.3} ms  {:>8.1} {unit}",
            amount / ms * 1e-6
        ),
        Err(e) => println!("{what:<44} cannot run: {e:#}"),
    }
}

fn main() -> Result<()> {
    let dev = Device::new_cuda(0).context("candle's CUDA device")?;
    let Device::Cuda(cd) = &dev else {
        unreachable!()
    };
    let cuda = Cuda::with_stream(cd.cuda_stream())?;
    println!("{} (timed with {:?})", cuda.describe()?, cuda.clock());

    // dim=1 of [64, 256, 128, 128]: read x1, x2, write the [64, 128, 128] result.
    let shape = [64usize, 256, 128, 128];
    let x1 = Tensor::randn(0f32, 1.0, &shape[..], &dev)?;
    let x2 = Tensor::randn(0f32, 1.0, &shape[..], &dev)?;
    let n: usize = shape.iter().product();
    let bytes = (2 * n + n / 256) as f64 * 4.0;
    report(
        "dim=1 [64,256,128,128] cosim::candle",
        time(&cuda, || {
            Ok(cosim::candle::cosine_similarity(&x1, &x2, 1, None)?)
        }),
        "GB/s",
        bytes * 1e-3,
    );
    report(
        "dim=1 [64,256,128,128] raw CudaSlice",
        with_slice(&x1, |a| {
            with_slice(&x2, |b| {
                time(&cuda, || {
                    Ok(cuda.cosine_similarity(a, &shape, b, &shape, 1, None)?)
                })
            })
        }),
        "GB/s",
        bytes * 1e-3,
    );
    report(
        "dim=1 [64,256,128,128] candle composed",
        time(&cuda, || {
            let dot = (&x1 * &x2)?.sum(1)?;
            let n1 = x1.sqr()?.sum(1)?.sqrt()?.maximum(1e-8)?;
            let n2 = x2.sqr()?.sum(1)?.sqrt()?.maximum(1e-8)?;
            Ok((dot / (n1 * n2)?)?)
        }),
        "GB/s (cosim's bytes)",
        bytes * 1e-3,
    );
    drop((x1, x2));

    // Top-10 of 65536 queries against 65536 keys of 768: 2·N·M·D flops of products.
    let (nq, nk, d, k) = (65536usize, 65536usize, 768usize, 10usize);
    let q = Tensor::randn(0f32, 1.0, (nq, d), &dev)?;
    let keys = Tensor::randn(0f32, 1.0, (nk, d), &dev)?;
    let flops = 2.0 * (nq * nk * d) as f64;
    report(
        "top-10 65536x65536x768 cosim::candle",
        time(&cuda, || Ok(cosim::candle::pairwise_top_k(&q, &keys, k)?)),
        "GFLOP/s",
        flops * 1e-3,
    );
    let plan = PairPlan::new(&[nq, d], Layout::Rows, &[nk, d], Layout::Rows)?;
    report(
        "top-10 65536x65536x768 raw CudaSlice",
        with_slice(&q, |a| {
            with_slice(&keys, |b| {
                time(&cuda, || Ok(cuda.pairwise_top_k(&plan, a, b, k)?))
            })
        }),
        "GFLOP/s",
        flops * 1e-3,
    );
    report(
        "top-10 candle normalise+matmul+arg_sort",
        time(&cuda, || {
            let unit = |x: &Tensor| -> candle_core::Result<Tensor> {
                x.broadcast_div(&x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-8)?)
            };
            let s = unit(&q)?.matmul(&unit(&keys)?.t()?)?;
            let idx = s.arg_sort_last_dim(false)?.narrow(D::Minus1, 0, k)?;
            Ok((
                s.gather(&idx.contiguous()?, D::Minus1)?,
                idx.to_dtype(DType::U32)?,
            ))
        }),
        "GFLOP/s",
        flops * 1e-3,
    );
    Ok(())
}
