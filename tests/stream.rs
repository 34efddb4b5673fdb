//! `cosim::stream` on the CPU, one worker and two (the shards of b, as several GPUs take
//! them), in chunks forced small, against the CPU backend's whole calls; progress,
//! cancellation and a failing sink.

mod common;

use anyhow::Result;
use common::stream::{battery, sets, Exact};
use common::*;
use cosim::pairwise::{Layout, PairPlan};
use cosim::stream::{PairStream, Progress};
use cosim::{Device, Error};
use std::ops::ControlFlow;
use std::sync::Mutex;

/// Chunks of 1 vector, of 3, and of 8 (A whole, B in 3).
const ALL: &[usize] = &[1, 3, 8];

#[test]
fn streamed_results_equal_the_whole_calls_on_one_cpu() -> Result<()> {
    battery::<f32>(&[Device::Cpu], 51, Exact::Bits, true, ALL)?;
    battery::<f64>(&[Device::Cpu], 52, Exact::Bits, true, ALL)
}

#[test]
fn streamed_results_equal_the_whole_calls_on_two_cpu_workers() -> Result<()> {
    battery::<f32>(&[Device::Cpu, Device::Cpu], 53, Exact::Bits, true, ALL)?;
    battery::<f64>(
        &[Device::Cpu, Device::Cpu, Device::Cpu],
        54,
        Exact::Bits,
        true,
        ALL,
    )
}

#[test]
fn half_types_stream_the_same_values() -> Result<()> {
    // Indices of values equal once rounded may come in another order (module docs).
    battery::<cosim::f16>(&[Device::Cpu, Device::Cpu], 55, Exact::Bits, false, ALL)?;
    battery::<cosim::bf16>(&[Device::Cpu], 56, Exact::Bits, false, ALL)
}

#[test]
fn a_job_that_fits_runs_whole_and_forced_chunks_are_counted() -> Result<()> {
    let mut r = rng(57);
    let (sa, a, sb, b) = sets::<f32>(
        &mut r,
        (None, None),
        (Layout::Rows, Layout::Rows),
        (7, 23, 5),
    );
    let plan = PairPlan::new(&sa, Layout::Rows, &sb, Layout::Rows)?;
    let s = PairStream::new(&plan, &a, &b)?;
    assert_eq!(s.chunking(Some(3))?, vec![(0..23, None)]);
    let s = s.chunk_bytes(3 * 5 * 4).on(&[Device::Cpu, Device::Cpu])?;
    let cuts = s.chunking(Some(3))?;
    assert_eq!(cuts.len(), 2);
    assert_eq!(cuts[0].0, 0..11);
    assert_eq!(cuts[1].0, 11..23);
    assert!(cuts
        .iter()
        .all(|(_, c)| c.is_some_and(|c| c.a <= 3 && c.b <= 3)));
    // Progress: every pair once, the last one is the total. 7 rows in chunks of 3 (3
    // chunks) against 11 and 12 vectors in chunks of 3 (4 chunks each): 24 pairs.
    let seen = Mutex::new(Vec::new());
    let record = |p: Progress| {
        seen.lock().unwrap().push(p);
        ControlFlow::Continue(())
    };
    s.on_progress(&record).top_k(3)?;
    let mut seen = seen.into_inner().unwrap();
    seen.sort_by_key(|p| p.done);
    assert_eq!(seen.len(), 24);
    assert!(seen
        .iter()
        .enumerate()
        .all(|(i, p)| p.done == i + 1 && p.total == 24));
    Ok(())
}

#[test]
fn a_stopped_run_returns_cancelled_and_hands_nothing_more() -> Result<()> {
    let mut r = rng(58);
    let (sa, a, sb, b) = sets::<f32>(
        &mut r,
        (Some(2), None),
        (Layout::Cols, Layout::Rows),
        (9, 23, 5),
    );
    let plan = PairPlan::new(&sa, Layout::Cols, &sb, Layout::Rows)?;
    let stop_at_3 = |p: Progress| {
        if p.done >= 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    for devices in [&[Device::Cpu][..], &[Device::Cpu, Device::Cpu]] {
        let s = || -> cosim::Result<PairStream<'_, f32>> {
            Ok(PairStream::new(&plan, &a, &b)?
                .on(devices)?
                .chunk_bytes(2 * 5 * 4)
                .on_progress(&stop_at_3))
        };
        assert!(matches!(s()?.top_k(4), Err(Error::Cancelled)));
        assert!(matches!(s()?.row_mean(), Err(Error::Cancelled)));
        assert!(matches!(
            s()?.set_similarity(None, None),
            Err(Error::Cancelled)
        ));
        // The matrix: rows of 2 against b in chunks of 2 (12 pairs a row block): the run
        // stops inside the first block, which never reaches the sink.
        let mut blocks = 0;
        let r = s()?.matrix(|_| {
            blocks += 1;
            Ok::<_, Error>(())
        });
        assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        assert_eq!(blocks, 0);
    }
    Ok(())
}

#[test]
fn a_failing_sink_stops_the_matrix() -> Result<()> {
    let mut r = rng(59);
    let (sa, a, sb, b) = sets::<f32>(
        &mut r,
        (None, None),
        (Layout::Rows, Layout::Rows),
        (40, 30, 4),
    );
    let plan = PairPlan::new(&sa, Layout::Rows, &sb, Layout::Rows)?;
    for devices in [&[Device::Cpu][..], &[Device::Cpu, Device::Cpu]] {
        let mut calls = 0;
        let r = PairStream::new(&plan, &a, &b)?
            .on(devices)?
            .block_bytes(30 * 4)
            .matrix(|blk| {
                calls += 1;
                if blk.row == 2 {
                    return Err(anyhow::anyhow!("disk full"));
                }
                Ok(())
            });
        assert_eq!(r.unwrap_err().to_string(), "disk full");
        assert_eq!(calls, 3);
    }
    Ok(())
}

#[test]
fn bad_input_is_refused_before_any_work() -> Result<()> {
    let plan = PairPlan::new(&[3, 2], Layout::Rows, &[4, 2], Layout::Rows)?;
    let (a, b) = (vec![1.0f32; 6], vec![1.0f32; 8]);
    assert!(matches!(
        PairStream::new(&plan, &a[..5], &b),
        Err(Error::LenMismatch { .. })
    ));
    let s = PairStream::new(&plan, &a, &b)?;
    assert!(matches!(s.top_k(5), Err(Error::BadK { .. })));
    assert!(matches!(s.top_k(0), Err(Error::BadK { .. })));
    assert!(s.set_similarity(Some(&[1.0; 2]), None).is_err());
    assert!(matches!(
        PairStream::new(&plan, &a, &b)?.on(&[]),
        Err(Error::Unsupported(_))
    ));
    Ok(())
}
