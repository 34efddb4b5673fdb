//! The CUDA pairwise kernels against the CPU backend (itself checked against an independent
//! f64 reference in tests/pairwise_cpu.rs), on every layout pair, batched and shared sets,
//! tile edges, misaligned pointers (scalar loads), ties and NaN. Outputs are poisoned before
//! every launch so that an unwritten element shows.
//!
//! Every test needs a GPU: they are `#[ignore]`d and run on the device with
//! `cargo test -- --include-ignored` (scripts/device-run.sh).

mod common;

use anyhow::Result;
use common::*;
use cosim::cpu;
use cosim::cuda::{Cuda, PairElement};
use cosim::cudarc::driver::CudaSlice;
use cosim::pairwise::{Layout, PairPlan, Precision};
use cosim::{bf16, f16, Error};
use rand::rngs::SmallRng;
use std::io::Write;

const NEEDS: &str = "needs a CUDA device";

fn gpu() -> Cuda {
    Cuda::new(0).unwrap_or_else(|e| panic!("{NEEDS}: {e}"))
}

/// A device copy of `host` starting `shift` elements into its allocation (shift 1 defeats
/// the 4-element vector loads); the allocation is returned and the data is `.slice(shift..)`.
fn upload_shifted<T: PairElement>(cuda: &Cuda, host: &[T], shift: usize) -> Result<CudaSlice<T>> {
    let mut padded = vec![T::from_f64(7.0); shift];
    padded.extend_from_slice(host);
    Ok(cuda.upload(&padded)?)
}

/// Shape of a set of `count` vectors of `d` in `layout`, with an optional batch.
fn set_shape(batch: Option<usize>, count: usize, d: usize, layout: Layout) -> Vec<usize> {
    let mut s: Vec<usize> = batch.into_iter().collect();
    match layout {
        Layout::Rows => s.extend([count, d]),
        Layout::Cols => s.extend([d, count]),
    }
    s
}

const LAYOUTS: [(Layout, Layout); 4] = [
    (Layout::Rows, Layout::Rows),
    (Layout::Rows, Layout::Cols),
    (Layout::Cols, Layout::Rows),
    (Layout::Cols, Layout::Cols),
];

/// One random problem: the plan and both sets on the host.
struct Problem<T> {
    plan: PairPlan,
    a: Vec<T>,
    b: Vec<T>,
}

#[allow(clippy::too_many_arguments)]
fn problem<T: PairElement>(
    r: &mut SmallRng,
    batch_a: Option<usize>,
    batch_b: Option<usize>,
    n: usize,
    m: usize,
    d: usize,
    (la, lb): (Layout, Layout),
) -> Result<Problem<T>> {
    let (sa, sb) = (set_shape(batch_a, n, d, la), set_shape(batch_b, m, d, lb));
    let plan = PairPlan::new(&sa, la, &sb, lb)?;
    Ok(Problem {
        plan,
        a: random_input(r, &sa),
        b: random_input(r, &sb),
    })
}

/// The GPU matrix (into a poisoned, optionally misaligned buffer) equals the CPU one.
fn check_matrix<T: PairElement>(
    cuda: &Cuda,
    p: &Problem<T>,
    shift: usize,
    what: &str,
) -> Result<()> {
    let want = cpu::pairwise_similarity(&p.plan, &p.a, &p.b)?;
    let (da, db) = (
        upload_shifted(cuda, &p.a, shift)?,
        upload_shifted(cuda, &p.b, shift)?,
    );
    let mut out = cuda.upload(&poisoned::<T>(want.values.len() + shift, f64::NAN))?;
    let shape = cuda.pairwise_similarity_into(
        &p.plan,
        &mut out.slice_mut(shift..),
        &da.slice(shift..),
        &db.slice(shift..),
    )?;
    assert_eq!(shape, want.shape, "{what}");
    let got = cuda.download(&out)?;
    assert_close(&got[shift..], &to_f64s(&want.values), what);
    assert_unit_bounded(&got[shift..], what);
    Ok(())
}

/// GPU top-k against the CPU's: values position by position, each index pointing at a column
/// whose (CPU) similarity is that value, distinct indices, and for exactly equal values the
/// lower index first.
fn check_top_k<T: PairElement>(cuda: &Cuda, p: &Problem<T>, k: usize, what: &str) -> Result<()> {
    check_top_k_tol(cuda, p, k, tolerance::<T>(), what)
}

/// [`check_top_k`] with an absolute tolerance `tol` on values (for tensor-core results, the
/// exact CPU ranking may differ where values are within `tol`, so positions are compared by
/// value only).
fn check_top_k_tol<T: PairElement>(
    cuda: &Cuda,
    p: &Problem<T>,
    k: usize,
    tol: f64,
    what: &str,
) -> Result<()> {
    let want = cpu::pairwise_top_k(&p.plan, &p.a, &p.b, k)?;
    let matrix = cpu::pairwise_similarity(&p.plan, &p.a, &p.b)?.values;
    let (da, db) = (cuda.upload(&p.a)?, cuda.upload(&p.b)?);
    let mut values = cuda.upload(&poisoned::<T>(want.values.len(), -777.0))?;
    let mut indices = cuda.upload(&vec![u32::MAX; want.values.len()])?;
    let shape = cuda.pairwise_top_k_into(&p.plan, &mut values, &mut indices, &da, &db, k)?;
    assert_eq!(shape, want.shape, "{what}");
    let (gv, gi) = (cuda.download(&values)?, cuda.download(&indices)?);
    let worst = max_error(&gv, &want.values);
    assert!(
        worst <= tol,
        "{what}: top-k values off by {worst:e} > {tol:e}"
    );
    let m = p.plan.m;
    for (row, (vals, idxs)) in gv.chunks(k).zip(gi.chunks(k)).enumerate() {
        let mut seen = std::collections::HashSet::new();
        for q in 0..k {
            let j = idxs[q] as usize;
            assert!(j < m, "{what}: row {row} position {q}: index {j} ≥ M = {m}");
            assert!(seen.insert(j), "{what}: row {row}: index {j} twice");
            let s = matrix[row * m + j].to_f64();
            let v = vals[q].to_f64();
            assert!(
                (s - v).abs() <= tol || (s.is_nan() && v.is_nan()),
                "{what}: row {row} position {q}: index {j} has similarity {s}, value says {v}"
            );
            if q > 0 {
                let u = vals[q - 1].to_f64();
                assert!(
                    u >= v || u.is_nan(),
                    "{what}: row {row} not sorted at {q}: {u} < {v}"
                );
                // Ties are broken by index among equal f32 sums; f16/bf16 values equal once
                // rounded may come from different sums, ranked by those, so only f32 shows ties.
                if u == v && std::mem::size_of::<T>() == 4 {
                    assert!(
                        idxs[q - 1] < idxs[q],
                        "{what}: row {row} tie at {q} not by index"
                    );
                }
            }
        }
    }
    Ok(())
}

/// Largest |got − want| (NaN only matching NaN; a mismatch counts as infinite).
fn max_error<T: PairElement>(got: &[T], want: &[T]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            let (g, w) = (g.to_f64(), w.to_f64());
            match (g.is_nan(), w.is_nan()) {
                (true, true) => 0.0,
                (false, false) => (g - w).abs(),
                _ => f64::INFINITY,
            }
        })
        .fold(0.0, f64::max)
}

fn battery<T: PairElement>(seed: u64) -> Result<()> {
    let cuda = gpu();
    let mut r = rng(seed);
    let sizes = [
        (1, 1, 1),
        (3, 5, 7),
        (127, 129, 64),
        (128, 128, 128),
        (129, 257, 3),
        (200, 130, 127),
        (33, 1000, 20),
        (5, 7, 4097),
        (4, 4, 0),
    ];
    for (case, &(n, m, d)) in sizes.iter().enumerate() {
        for layouts in LAYOUTS {
            for (ba, bb) in [
                (None, None),
                (Some(3), Some(3)),
                (None, Some(2)),
                (Some(2), None),
            ] {
                let p = problem::<T>(&mut r, ba, bb, n, m, d, layouts)?;
                for shift in [0, 1] {
                    let what = format!(
                        "matrix n {n} m {m} d {d} {layouts:?} batches {ba:?}/{bb:?} shift {shift}"
                    );
                    check_matrix(&cuda, &p, shift, &what)?;
                }
                let k = [1, 3, 16, 17, 33][case % 5].min(m);
                check_top_k(
                    &cuda,
                    &p,
                    k,
                    &format!("top-{k} n {n} m {m} d {d} {layouts:?}"),
                )?;
                check_reductions(
                    &cuda,
                    &p,
                    &format!("reductions n {n} m {m} d {d} {layouts:?}"),
                )?;
            }
        }
    }
    Ok(())
}

/// argmax, row mean, mean and set scores against the CPU.
fn check_reductions<T: PairElement>(cuda: &Cuda, p: &Problem<T>, what: &str) -> Result<()> {
    let (da, db) = (cuda.upload(&p.a)?, cuda.upload(&p.b)?);
    let am = cuda.pairwise_argmax(&p.plan, &da, &db)?;
    let want = cpu::pairwise_argmax(&p.plan, &p.a, &p.b)?;
    assert_eq!(am.shape, want.shape, "{what}");
    assert_close(&cuda.download(&am.values)?, &to_f64s(&want.values), what);
    let top1 = cpu::pairwise_top_k(&p.plan, &p.a, &p.b, 1)?;
    assert_close(&top1.values, &to_f64s(&want.values), what);

    // Means through the identity: sums in a different order on each side.
    let mean_tol = |x: &[T]| -> Vec<f64> { vec![4.0; x.len()] };
    let rm = cuda.pairwise_row_mean(&p.plan, &da, &db)?;
    let want = cpu::pairwise_row_mean(&p.plan, &p.a, &p.b)?;
    assert_eq!(rm.shape, want.shape, "{what}");
    let got = cuda.download(&rm.values)?;
    assert_close_scaled(&got, &to_f64s(&want.values), &mean_tol(&got), what);
    let mn = cuda.pairwise_mean(&p.plan, &da, &db)?;
    let want = cpu::pairwise_mean(&p.plan, &p.a, &p.b)?;
    assert_eq!(mn.shape, want.shape, "{what}");
    let got = cuda.download(&mn.values)?;
    assert_close_scaled(&got, &to_f64s(&want.values), &mean_tol(&got), what);

    let mut r = rng(p.plan.n as u64 * 31 + p.plan.m as u64);
    let wa: Vec<T> = random_in(&mut r, p.plan.a_vectors(), 0.1, 2.0);
    let wb: Vec<T> = random_in(&mut r, p.plan.b_vectors(), 0.1, 2.0);
    let (dwa, dwb) = (cuda.upload(&wa)?, cuda.upload(&wb)?);
    for weighted in [false, true] {
        let got = if weighted {
            cuda.set_similarity(&p.plan, &da, &db, Some(&dwa), Some(&dwb))?
        } else {
            cuda.set_similarity(&p.plan, &da, &db, None, None)?
        };
        let want = if weighted {
            cpu::set_similarity(&p.plan, &p.a, &p.b, Some(&wa), Some(&wb))?
        } else {
            cpu::set_similarity(&p.plan, &p.a, &p.b, None, None)?
        };
        assert_eq!(got.shape, want.shape, "{what}");
        for (name, g, w) in [
            ("precision", &got.precision, &want.precision),
            ("recall", &got.recall, &want.recall),
            ("f1", &got.f1, &want.f1),
        ] {
            let g = cuda.download(g)?;
            let w = to_f64s(w);
            assert_close_scaled(
                &g,
                &w,
                &mean_tol(&g),
                &format!("{what} {name} weighted {weighted}"),
            );
        }
    }
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn battery_f32() -> Result<()> {
    battery::<f32>(301)
}

#[test]
#[ignore = "needs a CUDA device"]
fn battery_f16() -> Result<()> {
    battery::<f16>(302)
}

#[test]
#[ignore = "needs a CUDA device"]
fn battery_bf16() -> Result<()> {
    battery::<bf16>(303)
}

#[test]
#[ignore = "needs a CUDA device"]
fn blocks_concatenate_to_the_matrix() -> Result<()> {
    let cuda = gpu();
    let mut r = rng(310);
    let p = problem::<f32>(
        &mut r,
        Some(2),
        None,
        300,
        77,
        33,
        (Layout::Cols, Layout::Rows),
    )?;
    let full = cpu::pairwise_similarity(&p.plan, &p.a, &p.b)?.values;
    let (da, db) = (cuda.upload(&p.a)?, cuda.upload(&p.b)?);
    for budget in [1, 77 * 4 * 7, 1 << 30] {
        let mut got = Vec::new();
        let mut next = (0, 0);
        cuda.pairwise_similarity_blocks(&p.plan, &da, &db, budget, |blk| -> Result<(), Error> {
            assert_eq!((blk.batch, blk.row), next, "blocks out of order");
            next = if blk.row + blk.rows == 300 {
                (blk.batch + 1, 0)
            } else {
                (blk.batch, blk.row + blk.rows)
            };
            got.extend(cuda.download(&blk.values)?);
            Ok(())
        })?;
        assert_close(&got, &to_f64s(&full), &format!("blocks, budget {budget}"));
    }
    // An error from the callback stops the iteration and comes back.
    let mut calls = 0;
    let e = cuda
        .pairwise_similarity_blocks(&p.plan, &da, &db, 1, |_| {
            calls += 1;
            Err(Error::BadK { k: 0, m: 0 })
        })
        .unwrap_err();
    assert!(matches!(e, Error::BadK { .. }) && calls == 1);
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn top_k_ties_nan_and_large_k() -> Result<()> {
    let cuda = gpu();
    let mut r = rng(320);
    // Duplicate vectors in b: exactly equal similarities, ranked by the lower index.
    let (n, m, d) = (70, 300, 24);
    let mut p = problem::<f32>(&mut r, None, None, n, m, d, (Layout::Rows, Layout::Rows))?;
    for j in (0..m).step_by(3) {
        let src = (j + 150) % m;
        let v: Vec<f32> = p.b[src * d..(src + 1) * d].to_vec();
        p.b[j * d..(j + 1) * d].copy_from_slice(&v);
    }
    // A NaN in one a-vector: its row is all NaN, ranked by index.
    p.a[5 * d + 3] = f32::NAN;
    for k in [1, 2, 16, 40, 300] {
        check_top_k(&cuda, &p, k, &format!("ties/NaN top-{k}"))?;
    }
    // k far beyond the per-row queue and the 32-entry list chunks.
    let p = problem::<f32>(
        &mut r,
        None,
        None,
        90,
        5000,
        16,
        (Layout::Cols, Layout::Cols),
    )?;
    check_top_k(&cuda, &p, 1024, "top-1024")?;
    Ok(())
}

/// Copies vector `src` of an unbatched set of `count` vectors over vector `dst`.
fn copy_vector<T: Copy>(
    x: &mut [T],
    layout: Layout,
    count: usize,
    d: usize,
    src: usize,
    dst: usize,
) {
    for k in 0..d {
        let (from, to) = match layout {
            Layout::Rows => (src * d + k, dst * d + k),
            Layout::Cols => (k * count + src, k * count + dst),
        };
        x[to] = x[from];
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn top_k_of_few_rows_splits_the_columns() -> Result<()> {
    // Fewer row blocks than SMs: the columns are split into segments, each with its own
    // lists, merged after. Exact ties between segments (b's vectors copied 7000 columns
    // away) must still rank the lower index first.
    let cuda = gpu();
    let mut r = rng(340);
    let ((n, m, d), wide, fast_m) = if emulated(&cuda) {
        // Warp-wide list inserts are the emulator's slowest path: fewer rows and columns,
        // still 7 segments of 1152 columns and a k wider than one.
        emulator_note(
            "top_k_of_few_rows_splits_the_columns",
            "9 rows x 8000 columns with k up to 1200 (not 37 x 20011 up to 2000); fast case 20000 columns",
        );
        ((9, 8000, 40), 1200, 20_000)
    } else {
        ((37, 20_011, 40), 2000, 50_000)
    };
    for (la, lb) in LAYOUTS {
        let mut p = problem::<f32>(&mut r, None, None, n, m, d, (la, lb))?;
        for j in (0..m).step_by(5) {
            copy_vector(&mut p.b, lb, m, d, (j + 7000) % m, j);
        }
        // `wide` is wider than a segment (about 1100 columns): lists partly empty.
        for k in [1, 10, 300, wide] {
            check_top_k(&cuda, &p, k, &format!("few rows {la:?}/{lb:?} top-{k}"))?;
        }
    }
    // Batches (one shared set and two batched), halves, and tensor cores.
    let p = problem::<bf16>(&mut r, Some(3), None, 50, 30_000, 64, LAYOUTS[0])?;
    check_top_k(&cuda, &p, 16, "bf16 [3, 50] x shared [30000] top-16")?;
    let p = problem::<f16>(&mut r, Some(2), Some(2), 20, 9000, 33, LAYOUTS[2])?;
    check_top_k(&cuda, &p, 5, "f16 [2, 20] x [2, 9000] top-5")?;
    let mut p = problem::<f32>(&mut r, None, None, 64, fast_m, 128, LAYOUTS[0])?;
    p.plan = p.plan.precision(Precision::Fast);
    check_top_k_tol(&cuda, &p, 10, 5e-3, "fast f32 few rows top-10")
}

/// More batches than a grid's y or z may hold (65535): the launches are split, and every
/// launch stays within the limit (the emulated driver refuses one past it, as a GPU does).
#[test]
#[ignore = "needs a CUDA device"]
fn batches_past_the_grid_limit() -> Result<()> {
    let cuda = gpu();
    let mut r = rng(340);
    // One past the limit: launched whole, z would be 65536.
    let batch = 65_536;
    let p = problem::<f32>(&mut r, Some(batch), None, 3, 5, 4, LAYOUTS[2])?;
    let what = format!("{batch} batches");
    check_matrix(&cuda, &p, 0, &what)?;
    if !emulated(&cuda) {
        check_top_k(&cuda, &p, 2, &what)?;
        check_reductions(&cuda, &p, &what)?;
    } else {
        // A launch per batch costs the emulator a millisecond or so.
        emulator_note(
            "batches_past_the_grid_limit",
            "the matrix only (not top-k and the reductions)",
        );
    }
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn top_k_in_chunks_past_the_scratch_budget() -> Result<()> {
    // 8·k bytes per row: 40000 rows × k = 1024 is 312 MiB of lists, over the 256 MiB budget,
    // so the rows are done in chunks.
    let mut cuda = gpu();
    let mut r = rng(330);
    let (mut n, mut m, k) = (40_000, 1100, 1024);
    assert!(n * k * 8 > cuda.top_k_scratch_limit());
    if emulated(&cuda) {
        // The same chunked path at a size the emulator runs in seconds: a limit that takes
        // 3 chunks of rows, the last one short.
        (n, m) = (300, 1030);
        cuda = cuda.with_top_k_scratch_limit(128 * k * 8 + 5);
        emulator_note(
            "top_k_in_chunks_past_the_scratch_budget",
            "300 rows, a 1 MiB list limit (3 chunks) instead of 40000 rows past 256 MiB",
        );
    }
    let p = problem::<f32>(&mut r, None, None, n, m, 8, (Layout::Rows, Layout::Rows))?;
    check_top_k(&cuda, &p, k, "chunked top-1024")
}

#[test]
#[ignore = "needs a CUDA device"]
fn zero_vectors_and_eps_zero() -> Result<()> {
    let cuda = gpu();
    let mut r = rng(340);
    let mut p = problem::<f32>(&mut r, None, None, 9, 11, 6, (Layout::Rows, Layout::Cols))?;
    p.a[..6].fill(0.0);
    for j in 0..6 {
        p.b[j * 11 + 4] = 0.0;
    }
    p.plan = p.plan.clone().eps(Some(0.0))?;
    check_matrix(&cuda, &p, 0, "zero vectors, eps 0")?;
    let (da, db) = (cuda.upload(&p.a)?, cuda.upload(&p.b)?);
    let m = cuda.download(&cuda.pairwise_similarity(&p.plan, &da, &db)?.values)?;
    assert!(
        m[..11].iter().all(|&v| v == 0.0),
        "zero vector's row: {:?}",
        &m[..11]
    );
    assert!((0..9).all(|i| m[i * 11 + 4] == 0.0));
    check_reductions(&cuda, &p, "zero vectors, eps 0")
}

#[test]
#[ignore = "needs a CUDA device"]
fn errors_change_nothing() -> Result<()> {
    let cuda = gpu();
    let mut r = rng(350);
    let p = problem::<f32>(&mut r, None, None, 4, 6, 5, (Layout::Rows, Layout::Rows))?;
    let (da, db) = (cuda.upload(&p.a)?, cuda.upload(&p.b)?);
    let short = cuda.upload(&p.b[..29])?;
    assert!(matches!(
        cuda.pairwise_similarity(&p.plan, &da, &short),
        Err(Error::LenMismatch { what: "b", .. })
    ));
    let mut values = cuda.upload(&[5.0f32; 8])?;
    let mut indices = cuda.upload(&[9u32; 8])?;
    for k in [0, 7] {
        let e = cuda.pairwise_top_k_into(&p.plan, &mut values, &mut indices, &da, &db, k);
        assert!(matches!(e, Err(Error::BadK { .. })), "{e:?}");
    }
    // 8 outputs are not 4 rows × 3.
    let e = cuda.pairwise_top_k_into(&p.plan, &mut values, &mut indices, &da, &db, 3);
    assert!(matches!(e, Err(Error::OutLenMismatch { .. })), "{e:?}");
    assert_eq!(cuda.download(&values)?, vec![5.0; 8]);
    assert_eq!(cuda.download(&indices)?, vec![9; 8]);
    let w = cuda.upload(&[1.0f32; 3])?;
    let e = cuda.set_similarity(&p.plan, &da, &db, Some(&w), None);
    assert!(matches!(e, Err(Error::OutLenMismatch { .. })), "{e:?}");
    let mut out = cuda.upload(&[3.0f32; 23])?;
    assert!(cuda
        .pairwise_similarity_into(&p.plan, &mut out, &da, &db)
        .is_err());
    assert_eq!(cuda.download(&out)?, vec![3.0; 23]);
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn seed_bmm_shape_matches_the_cpu() -> Result<()> {
    // The seed's normalise + bmm(x.transpose(1, 2), y) on [B, D, N] maps, smaller.
    let cuda = gpu();
    let mut r = rng(360);
    let p = problem::<f32>(
        &mut r,
        Some(2),
        Some(2),
        512,
        384,
        96,
        (Layout::Cols, Layout::Cols),
    )?;
    check_matrix(&cuda, &p, 0, "seed bmm shape")
}

/// Every pairwise kernel once on a small problem (two row tiles, three column tiles, a top-k
/// longer than the per-row queue): the case compute-sanitizer runs (scripts/device-run.sh).
#[test]
#[ignore = "needs a CUDA device"]
fn small_every_kernel() -> Result<()> {
    let cuda = gpu();
    let mut r = rng(370);
    for layouts in [(Layout::Rows, Layout::Cols), (Layout::Cols, Layout::Rows)] {
        let p = problem::<f16>(&mut r, Some(2), None, 130, 300, 9, layouts)?;
        check_matrix(&cuda, &p, 1, "small matrix")?;
        check_top_k(&cuda, &p, 20, "small top-20")?;
        check_reductions(&cuda, &p, "small reductions")?;
    }
    // Few rows against 2100 columns: the top-k's column segments and their merge.
    let p = problem::<f32>(&mut r, None, None, 5, 2100, 9, (Layout::Rows, Layout::Rows))?;
    check_top_k(&cuda, &p, 20, "small split top-20")
}

/// Precision::Fast (tensor cores) against the exact CPU result: the error this mode is
/// documented with. TF32 keeps 10 bits of each f32 input; f16/bf16 products are exact in f32,
/// so the half types only differ by summation order.
fn fast_mode<T: PairElement>(bound: f64, seed: u64) -> Result<()> {
    let cuda = gpu();
    let mut r = rng(seed);
    let mut worst: f64 = 0.0;
    for (layouts, (n, m, d)) in [
        ((Layout::Rows, Layout::Rows), (300, 500, 768)),
        ((Layout::Cols, Layout::Cols), (129, 257, 100)),
        ((Layout::Rows, Layout::Cols), (64, 64, 13)),
    ] {
        let mut p = problem::<T>(&mut r, Some(2), None, n, m, d, layouts)?;
        p.plan = p.plan.clone().precision(Precision::Fast);
        let want = cpu::pairwise_similarity(&p.plan, &p.a, &p.b)?;
        let (da, db) = (cuda.upload(&p.a)?, cuda.upload(&p.b)?);
        let got = cuda.download(&cuda.pairwise_similarity(&p.plan, &da, &db)?.values)?;
        let e = max_error(&got, &want.values);
        worst = worst.max(e);
        assert!(
            e <= bound,
            "fast {} {layouts:?}: max |error| {e:e} > {bound:e}",
            T::NAME
        );
        assert_unit_bounded(&got, "fast matrix");
        check_top_k_tol(&cuda, &p, 10, bound, &format!("fast top-10 {layouts:?}"))?;
    }
    // Past the harness's capture, so that every run's log shows it.
    let _ = writeln!(
        std::io::stderr(),
        "Precision::Fast {}: max |error| vs exact {worst:e}",
        T::NAME
    );
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn fast_mode_f32_tf32() -> Result<()> {
    fast_mode::<f32>(5e-3, 380)
}

#[test]
#[ignore = "needs a CUDA device"]
fn fast_mode_halves() -> Result<()> {
    fast_mode::<f16>(tolerance::<f16>(), 381)?;
    fast_mode::<bf16>(tolerance::<bf16>(), 382)
}
