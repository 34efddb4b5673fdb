//! The CUDA gradient of the pairwise matrix against the CPU gradient (tests/backward_cpu.rs
//! checks that one against finite differences): both layouts, batched and shared sets, sizes
//! 1, 3, 127 and 1000 in each of N, M, D and past one tile, long sums split into spans, every dtype, misaligned views,
//! tensor cores within their error, the edges, bad input. Outputs are poisoned before each
//! call. Needs a GPU (or the emulated driver: tools/cuda-emu/test.sh).

mod common;

use anyhow::Result;
use common::pairwise::set_shape;
use common::*;
use cosim::cpu;
use cosim::cuda::{Cuda, PairElement};
use cosim::pairwise::{Layout, PairPlan, Precision};
use cosim::{bf16, f16, Element};

fn gpu() -> Cuda {
    Cuda::new(0).unwrap_or_else(|e| panic!("needs a CUDA device: {e}"))
}

/// Every element of `got` within `tol · max(1, max|want|)` of `want` (NaN where `want` is
/// NaN): the backends sum in f32 in different orders, and a gradient's elements are
/// differences of terms as large as the largest (an exactly-zero gradient, as for D = 1,
/// comes out as rounding residue of O(1) terms on both). Returns the largest error seen,
/// relative to that scale.
fn assert_grads<T: Element>(what: &str, got: &[T], want: &[T], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.to_f64().abs()));
    let mut worst = 0.0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.to_f64(), w.to_f64());
        let ok = (g - w).abs() <= tol * scale || (g.is_nan() && w.is_nan());
        assert!(
            ok,
            "{what}: element {i}: cuda {g} vs cpu {w} (scale {scale})"
        );
        if !g.is_nan() {
            worst = worst.max((g - w).abs() / scale);
        }
    }
    worst
}

/// The rounding tolerance of the exact products per dtype (scaled as in [`assert_grads`]).
fn exact_tol<T: Element>() -> f64 {
    match T::NAME {
        "f32" => 2e-5,
        _ => 2e-2,
    }
}

const LAYOUTS: [(Layout, Layout); 4] = [
    (Layout::Rows, Layout::Rows),
    (Layout::Rows, Layout::Cols),
    (Layout::Cols, Layout::Rows),
    (Layout::Cols, Layout::Cols),
];

/// One problem's GPU gradients (into poisoned buffers, views `shift` elements into their
/// allocations) against the CPU's; returns the largest error relative to the scale.
fn check<T: PairElement>(
    cuda: &Cuda,
    plan: &PairPlan,
    (a, b, g): (&[T], &[T], &[T]),
    shift: usize,
    tol: f64,
    what: &str,
) -> Result<f64> {
    let (wa, wb) = cpu::pairwise_similarity_backward(plan, a, b, g)?;
    let up = |x: &[T]| {
        let mut padded = vec![T::from_f64(7.0); shift];
        padded.extend_from_slice(x);
        cuda.upload(&padded)
    };
    let (da, db, dg) = (up(a)?, up(b)?, up(g)?);
    let mut ga = cuda.upload(&poisoned::<T>(a.len() + shift, f64::NAN))?;
    let mut gb = cuda.upload(&poisoned::<T>(b.len() + shift, f64::NAN))?;
    cuda.pairwise_similarity_backward_into(
        plan,
        &mut ga.slice_mut(shift..),
        &mut gb.slice_mut(shift..),
        &da.slice(shift..),
        &db.slice(shift..),
        &dg.slice(shift..),
    )?;
    let (ga, gb) = (cuda.download(&ga)?, cuda.download(&gb)?);
    assert!(
        same_bits(&ga[..shift], &poisoned::<T>(shift, f64::NAN)),
        "{what}: wrote before ga"
    );
    let ea = assert_grads(&format!("{what} da"), &ga[shift..], &wa, tol);
    let eb = assert_grads(&format!("{what} db"), &gb[shift..], &wb, tol);
    Ok(ea.max(eb))
}

fn battery<T: PairElement>(cuda: &Cuda, seed: u64) -> Result<()> {
    let mut r = rng(seed);
    let batches = [
        (None, None),
        (Some(2), Some(2)),
        (Some(3), None),
        (None, Some(2)),
    ];
    // (N, M, D): 1, 3, 127 and 1000 in each place, and more than one tile each way.
    let sizes = [
        (1, 1, 1),
        (3, 1, 3),
        (1, 3, 127),
        (127, 3, 1),
        (3, 1000, 3),
        (1000, 3, 3),
        (3, 3, 1000),
        (130, 129, 131),
        // Long sums over few tiles: the products split them into spans (4 here).
        (5, 9000, 6),
        (9000, 5, 6),
    ];
    let mut case = 0;
    for &(ba, bb) in &batches {
        for &(n, m, d) in &sizes {
            for &(la, lb) in &LAYOUTS {
                case += 1;
                // Large shapes once per layout, not for every batching.
                if n * m * d > 100_000 && ba.is_some() {
                    continue;
                }
                let eps = [None, Some(0.0), Some(1.5)][case % 3];
                let (sa, sb) = (set_shape(ba, n, d, la), set_shape(bb, m, d, lb));
                let plan = PairPlan::new(&sa, la, &sb, lb)?.eps(eps)?;
                let a: Vec<T> = away_from_zero(&mut r, sa.iter().product());
                let b: Vec<T> = away_from_zero(&mut r, sb.iter().product());
                let g: Vec<T> = random_vec(&mut r, plan.matrix_shape().iter().product());
                let shift = case % 2;
                let what = format!(
                    "{} case {case}: {sa:?} {la:?} × {sb:?} {lb:?} eps {eps:?} shift {shift}",
                    T::NAME
                );
                check(cuda, &plan, (&a, &b, &g), shift, exact_tol::<T>(), &what)?;
            }
        }
    }
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn pairwise_matches_the_cpu_in_every_layout_batching_and_dtype() -> Result<()> {
    let cuda = gpu();
    battery::<f32>(&cuda, 21)?;
    battery::<f16>(&cuda, 22)?;
    battery::<bf16>(&cuda, 23)
}

/// Tensor cores: TF32 (10-bit mantissa) or half inputs with f32 sums, within 1e-2 of the
/// exact gradient's scale (the forward's Fast error is ~3e-4 of a unit similarity; the
/// gradient sums M such products, with errors of either sign).
#[test]
#[ignore = "needs a CUDA device"]
fn fast_mode_is_within_its_error() -> Result<()> {
    fn run<T: PairElement>(cuda: &Cuda, seed: u64) -> Result<()> {
        let mut r = rng(seed);
        let mut worst = 0.0f64;
        for (case, &(la, lb)) in LAYOUTS.iter().enumerate() {
            let (ba, bb) = [(None, None), (Some(2), None)][case % 2];
            let (sa, sb) = (set_shape(ba, 131, 70, la), set_shape(bb, 133, 70, lb));
            let plan = PairPlan::new(&sa, la, &sb, lb)?.precision(Precision::Fast);
            let a: Vec<T> = random_input(&mut r, &sa);
            let b: Vec<T> = random_input(&mut r, &sb);
            let g: Vec<T> = random_vec(&mut r, plan.matrix_shape().iter().product());
            let what = format!("fast {} {sa:?} {la:?} × {sb:?} {lb:?}", T::NAME);
            worst = worst.max(check(cuda, &plan, (&a, &b, &g), 0, 1e-2, &what)?);
        }
        // The error seen, for the docs (on the emulator: its TF32 rounding, exact products).
        eprintln!(
            "fast mode, {}: largest error {worst:.1e} of the gradient's scale",
            T::NAME
        );
        Ok(())
    }
    let cuda = gpu();
    run::<f32>(&cuda, 31)?;
    run::<f16>(&cuda, 32)?;
    run::<bf16>(&cuda, 33)
}

#[test]
#[ignore = "needs a CUDA device"]
fn edges_match_the_cpu_and_bad_input_is_refused() -> Result<()> {
    let cuda = gpu();
    let plan0 = PairPlan::new(&[3, 2], Layout::Rows, &[2, 2], Layout::Rows)?.eps(Some(0.0))?;
    let b = [3.0f32, 4.0, 1.0, -1.0];
    let g = [1.0f32, -2.0, 0.5, 1.0, 2.0, -1.0];
    // A zero vector with eps = 0 (gradient 0), a NaN component (its vector's gradient NaN,
    // and through G every vector of b's), and an ordinary vector.
    for a in [
        [0.0f32, 0.0, 1.0, 2.0, -1.0, 0.5],
        [f32::NAN, 0.0, 1.0, 2.0, -1.0, 0.5],
    ] {
        check(
            &cuda,
            &plan0,
            (&a, &b, &g),
            0,
            2e-5,
            &format!("edges {a:?}"),
        )?;
    }
    // Norms below eps: constants, no projection term.
    let clamped = PairPlan::new(&[3, 2], Layout::Rows, &[2, 2], Layout::Cols)?.eps(Some(4.5))?;
    let a = [0.5f32, 1.0, 3.0, 4.0, -2.0, 0.25];
    check(&cuda, &clamped, (&a, &b, &g), 0, 2e-5, "clamped")?;
    // Bad input: G of the wrong length, an output of the wrong length; nothing written.
    let (da, db) = (cuda.upload(&a)?, cuda.upload(&b)?);
    let mut ga = cuda.upload(&[9.0f32; 6])?;
    let mut gb = cuda.upload(&[9.0f32; 4])?;
    let e = cuda
        .pairwise_similarity_backward_into(
            &plan0,
            &mut ga,
            &mut gb,
            &da,
            &db,
            &cuda.upload(&[1.0f32; 5])?,
        )
        .unwrap_err();
    assert!(
        matches!(e, cosim::Error::OutLenMismatch { what: "grad", .. }),
        "{e}"
    );
    let mut short = cuda.upload(&[9.0f32; 3])?;
    let e = cuda
        .pairwise_similarity_backward_into(&plan0, &mut ga, &mut short, &da, &db, &cuda.upload(&g)?)
        .unwrap_err();
    assert!(
        matches!(e, cosim::Error::OutLenMismatch { what: "gb", .. }),
        "{e}"
    );
    assert_eq!(cuda.download(&ga)?, vec![9.0; 6]);
    assert_eq!(cuda.download(&gb)?, vec![9.0; 4]);
    let e = cuda
        .pairwise_similarity_backward(&plan0, &db, &db, &cuda.upload(&g)?)
        .unwrap_err();
    assert!(
        matches!(e, cosim::Error::LenMismatch { what: "a", .. }),
        "{e}"
    );
    Ok(())
}
