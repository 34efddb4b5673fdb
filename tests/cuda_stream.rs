//! `cosim::stream` on CUDA devices: the two-stream pipeline and the shards of b across
//! devices, in chunks forced small and in chunks sized by a memory budget, against the CPU
//! backend's whole calls; a device that runs out of memory mid-way; f64 refused on a GPU.
//! Two devices are two handles on GPU 0 (two workers, two pipelines on one device) and, where
//! the machine has them, GPUs 0 and 1.

mod common;

use anyhow::Result;
use common::stream::{battery, sets, Exact};
use common::*;
use cosim::cuda::Cuda;
use cosim::pairwise::{Layout, PairPlan};
use cosim::stream::{elementwise, Elementwise, PairStream, Progress};
use cosim::{cpu, Device, Error};
use std::ops::ControlFlow;
use std::sync::Mutex;

const NEEDS: &str = "needs a CUDA device";

/// One test at a time: one of them takes all of the device's memory for a while.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn gpu(ordinal: usize) -> Device {
    Device::Cuda(Cuda::new(ordinal).unwrap_or_else(|e| panic!("{NEEDS}: {e}")))
}

/// Two devices: GPUs 0 and 1 when there are two, else two handles on GPU 0.
fn two_gpus() -> Vec<Device> {
    let count = cosim::cuda::device_count().unwrap_or(0);
    vec![gpu(0), gpu(if count >= 2 { 1 } else { 0 })]
}

#[test]
#[ignore = "needs a CUDA device"]
fn streams_on_one_gpu_equal_the_whole_calls() -> Result<()> {
    let _alone = alone();
    battery::<f32>(&[gpu(0)], 61, Exact::Close, true, &[8])?;
    battery::<cosim::f16>(&[gpu(0)], 62, Exact::Close, false, &[8])?;
    battery::<cosim::bf16>(&[gpu(0)], 63, Exact::Close, false, &[8])
}

#[test]
#[ignore = "needs a CUDA device"]
fn streams_on_two_gpus_equal_the_whole_calls() -> Result<()> {
    let _alone = alone();
    battery::<f32>(&two_gpus(), 64, Exact::Close, true, &[8])?;
    // A GPU and the CPU share a job too (the CPU's share is by its weight, small).
    battery::<f32>(&[gpu(0), Device::Cpu], 65, Exact::Close, true, &[8])
}

#[test]
#[ignore = "needs a CUDA device"]
fn a_memory_budget_sizes_the_chunks() -> Result<()> {
    let _alone = alone();
    let mut r = rng(66);
    let (sa, a, sb, b) = sets::<f32>(
        &mut r,
        (None, None),
        (Layout::Rows, Layout::Cols),
        (300, 500, 40),
    );
    let plan = PairPlan::new(&sa, Layout::Rows, &sb, Layout::Cols)?;
    let s = PairStream::new(&plan, &a, &b)?.on(&[gpu(0)])?;
    assert_eq!(
        s.chunking(Some(5))?,
        vec![(0..500, None)],
        "the job fits whole"
    );
    // 100 KiB hold two slots of some tens of vectors of each set and their results, not the
    // job (whose inputs alone take 125 KiB).
    let budget = 100 << 10;
    let s = s.memory_budget(budget);
    let cuts = s.chunking(Some(5))?;
    let c = cuts[0].1.expect("chunked");
    assert!(c.a < 300 && c.b < 500 && c.a > 10 && c.b > 10, "{c:?}");
    let what = format!("budget {budget} bytes, chunks {c:?}");
    let stream = || -> cosim::Result<PairStream<'_, f32>> {
        Ok(PairStream::new(&plan, &a, &b)?
            .on(&[gpu(0)])?
            .memory_budget(budget))
    };
    let t = stream()?.top_k(5)?;
    let want = cpu::pairwise_top_k(&plan, &a, &b, 5)?;
    assert_close(&t.values, &to_f64s(&want.values), &what);
    assert_eq!(t.indices, want.indices, "{what}");
    let m = stream()?.row_mean()?;
    let want = cpu::pairwise_row_mean(&plan, &a, &b)?;
    assert_close(&m.values, &to_f64s(&want.values), &what);
    let s = stream()?.set_similarity(None, None)?;
    let want = cpu::set_similarity(&plan, &a, &b, None, None)?;
    assert_close(&s.f1, &to_f64s(&want.f1), &what);
    let mut got = Vec::new();
    stream()?.matrix(|blk| {
        got.extend_from_slice(blk.values);
        Ok::<_, Error>(())
    })?;
    assert_close(
        &got,
        &to_f64s(&cpu::pairwise_similarity(&plan, &a, &b)?.values),
        &what,
    );
    // Not even one pair of single-vector chunks fits.
    let s = PairStream::new(&plan, &a, &b)?
        .on(&[gpu(0)])?
        .memory_budget(100);
    assert!(matches!(s.top_k(5), Err(Error::OutOfMemory { .. })));
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn a_device_out_of_memory_mid_way_fails_clearly() -> Result<()> {
    let _alone = alone();
    // Row means of long vectors: every pair allocates an 80 KB mean vector.
    let d = 20_000;
    let mut r = rng(67);
    let (sa, a, sb, b) = sets::<f32>(
        &mut r,
        (None, None),
        (Layout::Rows, Layout::Rows),
        (8, 40, d),
    );
    let plan = PairPlan::new(&sa, Layout::Rows, &sb, Layout::Rows)?;
    let device = gpu(0);
    let Device::Cuda(cuda) = &device else {
        unreachable!()
    };
    // After the first pair, another user takes all of the device's free memory.
    let hog = Mutex::new(None);
    let pairs = Mutex::new(0);
    let take_memory = |p: Progress| {
        *pairs.lock().unwrap() = p.done;
        let mut h = hog.lock().unwrap();
        if p.done == 1 && h.is_none() {
            let ctx = cuda.stream().context();
            ctx.bind_to_thread().unwrap();
            let (free, _) = ctx.mem_get_info().unwrap();
            // SAFETY: the buffer is never read; it only holds memory.
            *h = Some(unsafe { cuda.stream().alloc::<u8>(free) }.unwrap());
            cuda.stream().synchronize().unwrap();
        }
        ControlFlow::Continue(())
    };
    let stream = || -> cosim::Result<PairStream<'_, f32>> {
        Ok(PairStream::new(&plan, &a, &b)?
            .on(std::slice::from_ref(&device))?
            .chunk_bytes(4 * d * 4))
    };
    let e = stream()?
        .on_progress(&take_memory)
        .row_mean()
        .expect_err("out of memory");
    assert!(
        matches!(e, Error::OutOfMemory { .. } | Error::Driver(_)),
        "{e}"
    );
    assert!(e.to_string().contains("memory"), "{e}");
    // One pair of the 20 ran, and at most the other slot's one after it.
    assert!(
        *pairs.lock().unwrap() <= 2,
        "{} pairs",
        pairs.lock().unwrap()
    );
    *hog.lock().unwrap() = None;
    // The device works again once the memory is back.
    let got = stream()?.row_mean()?;
    let want = cpu::pairwise_row_mean(&plan, &a, &b)?;
    assert_close(&got.values, &to_f64s(&want.values), "row means after");
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn f64_is_refused_on_a_gpu_and_blocks_of_rows_match_the_whole() -> Result<()> {
    let _alone = alone();
    let plan = PairPlan::new(&[3, 2], Layout::Rows, &[4, 2], Layout::Rows)?;
    let (a, b) = (vec![1.0f64; 6], vec![1.0f64; 8]);
    let r = PairStream::new(&plan, &a, &b)?.on(&[gpu(0)]);
    assert!(matches!(r, Err(Error::Unsupported(_))));
    // The elementwise family in blocks of rows on the GPU.
    let mut r = rng(68);
    let (sa, sb) = ([9, 6, 5], [9, 6, 5]);
    let x: Vec<f32> = random_input(&mut r, &sa);
    let y: Vec<f32> = random_input(&mut r, &sb);
    for op in [
        Elementwise::Along(1),
        Elementwise::Channels(1),
        Elementwise::Reweight(1),
    ] {
        let want = elementwise(&Device::Cpu, op, (&x, &sa), (&y, &sb), None, None)?;
        let got = elementwise(&gpu(0), op, (&x, &sa), (&y, &sb), None, Some(2 * 60 * 4))?;
        assert_eq!(got.shape, want.shape);
        assert_close(&got.values, &to_f64s(&want.values), &format!("{op:?}"));
        if let (Some((g, gs)), Some((w, ws))) = (&got.weighted, &want.weighted) {
            assert_eq!(gs, ws);
            assert_close(g, &to_f64s(w), &format!("{op:?} weighted"));
        }
    }
    Ok(())
}
