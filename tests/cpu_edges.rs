//! Edge cases and errors of the CPU backend against the independent f64 reference in
//! `tests/common` (SPEC §2): zero vectors, norms below eps, NaN, size-0 dims, rank 0 and 8,
//! the [-1, 1] clamp, negative dims; every refusal with its message and nothing written.

#[macro_use]
mod common;

use anyhow::{ensure, Result};
use common::*;
use cosim::{bf16, cpu, f16, Element, Error};
use rand::Rng;

/// The eps the library uses when given `None` (PyTorch's default), written out independently.
const EPS: f64 = 1e-8;

// ---------------------------------------------------------------------------------------------
// Edge cases
// ---------------------------------------------------------------------------------------------

/// Zero vectors give exactly 0 (not NaN, also for f16), with the default eps and with eps 0.
fn zero_vectors<T: Element>(_seed: u64) -> Result<()> {
    let z = from_f64s::<T>(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let v = from_f64s::<T>(&[1.0, -2.0, 0.5, 0.0, 0.0, 0.0]);
    for eps in [None, Some(0.0)] {
        for (a, b) in [(&z, &v), (&v, &z), (&z, &z)] {
            let got = cpu::cosine_similarity(a, &[2, 3], b, &[2, 3], 1, eps)?;
            ensure!(got.shape == [2], "{:?}", got.shape);
            ensure!(
                got.values.iter().all(|x| x.to_f64() == 0.0),
                "{} eps {eps:?}: {:?}",
                T::NAME,
                got.values
            );
        }
        // Zero vectors strided along dim 0.
        let got = cpu::cosine_similarity(&z, &[2, 3], &v, &[2, 3], 0, eps)?;
        ensure!(
            got.values.iter().all(|x| x.to_f64() == 0.0),
            "{:?}",
            got.values
        );
        let got = cpu::channel_similarity(&z, &[2, 3], &v, &[2, 3], 1, eps)?;
        ensure!(
            got.values.iter().all(|x| x.to_f64() == 0.0),
            "{:?}",
            got.values
        );
    }
    // Orthogonal nonzero vectors also give 0 with eps 0.
    let a = from_f64s::<T>(&[1.0, 0.0]);
    let b = from_f64s::<T>(&[0.0, 3.0]);
    let got = cpu::cosine_similarity(&a, &[2], &b, &[2], 0, Some(0.0))?;
    ensure!(got.values[0].to_f64() == 0.0, "{:?}", got.values);
    Ok(())
}
per_dtype!(edge_zero_vectors, zero_vectors, 0);

/// Each norm is clamped to eps on its own: [1e-9, 0]·[1, 0] = 1e-9 / (1e-8 · 1) = 0.1.
#[test]
fn edge_norms_below_eps() -> Result<()> {
    fn run<T: Element>() -> Result<()> {
        let cases: [(&[f64], &[f64], f64); 3] = [
            // ‖x1‖ = 1e-9 clamps to 1e-8, ‖x2‖ = 1.
            (&[1e-9, 0.0], &[1.0, 0.0], 1e-9 / (1e-8 * 1.0)),
            // Both clamp: 2e-18 / (1e-8 · 1e-8) = 0.02 (the old max(‖x1‖‖x2‖, eps) gives 2e-10).
            (&[1e-9, 1e-9], &[2e-9, 0.0], 2e-18 / (1e-8 * 1e-8)),
            // Opposite signs keep the sign.
            (&[-3e-9, 0.0], &[5.0, 0.0], -3e-9 * 5.0 / (1e-8 * 5.0)),
        ];
        for (a, b, expect) in cases {
            let (x1, x2) = (from_f64s::<T>(a), from_f64s::<T>(b));
            // Expected from the rounded inputs with the clamped-norm rule, checked against the
            // hand value above.
            let (a, b) = (to_f64s(&x1), to_f64s(&x2));
            let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let n1 = a.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-8);
            let n2 = b.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-8);
            let want = dot / (n1 * n2);
            ensure!(
                (want - expect).abs() <= 0.02 * expect.abs(),
                "{} {want} vs {expect}",
                T::NAME
            );
            let got = cpu::cosine_similarity(&x1, &[2], &x2, &[2], 0, None)?;
            assert_close(&got.values, &[want], &format!("{a:?} vs {b:?}"));
            check_along_on(&x1, &[2], &x2, &[2], -1, None)?;
        }
        Ok(())
    }
    // f16 cannot hold 1e-9 (its smallest subnormal is 6e-8), so its case is scaled below.
    run::<f32>()?;
    run::<f64>()?;
    run::<bf16>()?;
    // f16 with a larger eps: [1e-3, 0]·[1, 0] with eps 0.1 gives 1e-3 / 0.1 = 0.01.
    let (x1, x2) = (
        from_f64s::<f16>(&[1e-3, 0.0]),
        from_f64s::<f16>(&[1.0, 0.0]),
    );
    let want = x1[0].to_f64() / 0.1;
    let got = cpu::cosine_similarity(&x1, &[2], &x2, &[2], 0, Some(0.1))?;
    assert_close(&got.values, &[want], "f16 norm below eps 0.1");
    ensure!((want - 0.01).abs() < 1e-4);
    Ok(())
}

/// A NaN input element makes exactly the outputs whose vectors contain it NaN.
fn nan_propagates<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    let s = [4, 3, 5];
    let mut x1: Vec<T> = random_input(&mut r, &s);
    let x2: Vec<T> = random_input(&mut r, &s);
    x1[ravel(&[1, 2, 3], &s)] = T::from_f64(f64::NAN);
    // dim 1: only output [1, 3] sees the NaN.
    let got = cpu::cosine_similarity(&x1, &s, &x2, &s, 1, None)?;
    for (o, v) in got.values.iter().enumerate() {
        let is_hit = o == ravel(&[1, 3], &[4, 5]);
        ensure!(
            v.to_f64().is_nan() == is_hit,
            "{} output {o} = {v:?}",
            T::NAME
        );
    }
    check_along_on(&x1, &s, &x2, &s, 1, None)?;
    // dim -1: only output [1, 2] sees it; dim 0: only [2, 3].
    check_along_on(&x1, &s, &x2, &s, -1, None)?;
    check_along_on(&x1, &s, &x2, &s, 0, None)?;
    let got = cpu::cosine_similarity(&x1, &s, &x2, &s, 0, None)?;
    ensure!(got.values.iter().filter(|v| v.to_f64().is_nan()).count() == 1);
    // NaN against a zero vector is still NaN (0 · NaN is NaN, not a zero dot).
    let z = from_f64s::<T>(&[0.0, 0.0]);
    let n = from_f64s::<T>(&[f64::NAN, 1.0]);
    let got = cpu::cosine_similarity(&n, &[2], &z, &[2], 0, None)?;
    ensure!(got.values[0].to_f64().is_nan(), "{:?}", got.values);
    // Through the flattened path too.
    let got = cpu::channel_similarity(&x1, &s, &x2, &s, 1, None)?;
    let nan: Vec<bool> = got.values.iter().map(|v| v.to_f64().is_nan()).collect();
    ensure!(nan == [false, true, false, false], "{nan:?}");
    Ok(())
}
per_dtype!(edge_nan, nan_propagates, 4000);

/// Size-0 dims that the library handles: empty outputs, and empty reductions along the last
/// dim (empty sums give 0).
fn size_zero<T: Element>(_seed: u64) -> Result<()> {
    let e: Vec<T> = Vec::new();
    let got = cpu::cosine_similarity(&e, &[0, 3], &e, &[0, 3], 1, None)?;
    ensure!(got.shape == [0] && got.values.is_empty(), "{got:?}");
    let got = cpu::cosine_similarity(&e, &[3, 0], &e, &[3, 0], 1, None)?;
    ensure!(got.shape == [3], "{got:?}");
    ensure!(got.values.iter().all(|v| v.to_f64() == 0.0), "{got:?}");
    let got = cpu::cosine_similarity(&e, &[3, 0], &e, &[3, 0], 0, None)?;
    ensure!(got.shape == [0] && got.values.is_empty(), "{got:?}");
    // A size-0 dim broadcasts against 1, not against 2.
    let one = from_f64s::<T>(&[1.0, 2.0, 3.0]);
    let got = cpu::cosine_similarity(&e, &[0, 3], &one, &[1, 3], 1, None)?;
    ensure!(got.shape == [0], "{got:?}");
    let err = cpu::cosine_similarity(&e, &[0, 3], &e, &[2, 0], 1, None).unwrap_err();
    ensure!(matches!(err, Error::Broadcast { .. }), "{err:?}");
    // _into with an empty reduction writes the zeros over a poisoned buffer.
    let mut out: Vec<T> = poisoned(3, f64::NAN);
    cpu::cosine_similarity_into(&mut out, &e, &[3, 0], &e, &[3, 0], 1, None)?;
    ensure!(out.iter().all(|v| v.to_f64() == 0.0), "{out:?}");
    // Per channel: no channels at all, and channels over one empty flattened dim.
    let got = cpu::channel_similarity(&e, &[0, 3, 4, 4], &e, &[0, 3, 4, 4], 2, None)?;
    ensure!(got.shape == [0, 3] && got.values.is_empty(), "{got:?}");
    let got = cpu::channel_similarity(&e, &[2, 3, 0], &e, &[2, 3, 0], 2, None)?;
    ensure!(got.shape == [2, 3], "{got:?}");
    ensure!(got.values.iter().all(|v| v.to_f64() == 0.0), "{got:?}");
    Ok(())
}
per_dtype!(edge_size_zero, size_zero, 0);

/// An empty reduction along a dim that has non-empty kept dims after it: `[0, 3]` dim 0 is
/// three empty vectors, so three zeros (PyTorch: `tensor([0., 0., 0.])`).
#[test]
fn edge_size_zero_reduction_before_kept_dims() -> Result<()> {
    let e: Vec<f32> = Vec::new();
    let got = cpu::cosine_similarity(&e, &[0, 3], &e, &[0, 3], 0, None)?;
    ensure!(got.shape == [3] && got.values == [0.0; 3], "{got:?}");
    let got = cpu::cosine_similarity(&e, &[2, 0, 3], &e, &[2, 0, 3], 1, None)?;
    ensure!(got.shape == [2, 3] && got.values == [0.0; 6], "{got:?}");
    let x2 = [1.0f32, 2.0, 3.0];
    let got = cpu::cosine_similarity(&e, &[0, 3], &x2, &[3], 0, None)?;
    ensure!(got.shape == [3] && got.values == [0.0; 3], "{got:?}");
    Ok(())
}

/// Per-channel cosine over maps with a size-0 dim: `view(N, C, -1)` of an empty map is a
/// vector of length 0, so each channel gives 0 (SPEC §2: size-0 dims allowed, empty sum = 0).
#[test]
fn edge_size_zero_flattened_maps() -> Result<()> {
    let e: Vec<f32> = Vec::new();
    let got = cpu::channel_similarity(&e, &[2, 3, 0, 4], &e, &[2, 3, 0, 4], 2, None)?;
    ensure!(got.shape == [2, 3], "{got:?}");
    ensure!(got.values.iter().all(|v| *v == 0.0), "{got:?}");
    let got = cpu::channel_similarity(&e, &[2, 0, 3], &e, &[2, 0, 3], 1, None)?;
    ensure!(got.shape == [2] && got.values == [0.0, 0.0], "{got:?}");
    let got = cpu::channel_similarity(&e, &[0, 3], &e, &[0, 3], 0, None)?;
    ensure!(got.shape.is_empty() && got.values == [0.0], "{got:?}");
    let got = cpu::reweight_channels(&e, &[2, 3, 0, 4], &e, &[2, 3, 0, 4], 2, None)?;
    ensure!(
        got.weighted.is_empty() && got.weighted_shape == [2, 3, 0, 4],
        "{got:?}"
    );
    ensure!(got.similarity == [0.0; 6], "{got:?}");
    Ok(())
}

/// Every shape of rank 1..=3 with sizes in {0, 1, 2} that holds a 0, against itself and
/// against a copy with one dim turned into 1, along every dim and flattened from every dim.
#[test]
fn edge_size_zero_exhaustive() -> Result<()> {
    let mut shapes: Vec<Vec<usize>> = Vec::new();
    for rank in 1..=3u32 {
        for code in 0..3usize.pow(rank) {
            let s: Vec<usize> = (0..rank as usize)
                .map(|i| code / 3usize.pow(i as u32) % 3)
                .collect();
            if s.contains(&0) {
                shapes.push(s);
            }
        }
    }
    let mut r = rng(4050);
    for s1 in &shapes {
        let mut partners = vec![s1.clone()];
        for i in 0..s1.len() {
            let mut s2 = s1.clone();
            s2[i] = 1;
            partners.push(s2);
        }
        for s2 in &partners {
            let x1: Vec<f32> = random_input(&mut r, s1);
            let x2: Vec<f32> = random_input(&mut r, s2);
            let rank = s1.len() as isize;
            for dim in -rank..rank {
                let what = format!("x1 {s1:?}, x2 {s2:?}, dim {dim}");
                let (want, want_shape) = reference_along(&x1, s1, &x2, s2, dim, EPS);
                let got = std::panic::catch_unwind(|| {
                    cpu::cosine_similarity(&x1, s1, &x2, s2, dim, None)
                })
                .map_err(|_| anyhow::anyhow!("{what}: panicked"))?
                .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
                ensure!(got.shape == want_shape, "{what}: shape {:?}", got.shape);
                assert_close(&got.values, &want, &what);
            }
            let bshape = broadcast_shape(s1, s2).expect("broadcasts");
            for from in 0..s1.len() {
                if partly_broadcast(s2, &bshape, from) {
                    continue;
                }
                let what = format!("x1 {s1:?}, x2 {s2:?}, flatten_from {from}");
                let (want, want_shape) = reference_flattened(&x1, s1, &x2, s2, from, EPS);
                let got = cpu::channel_similarity(&x1, s1, &x2, s2, from, None)
                    .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
                ensure!(got.shape == want_shape, "{what}: shape {:?}", got.shape);
                assert_close(&got.values, &want, &what);
            }
        }
    }
    Ok(())
}

/// Rank 0: scalars are length-1 vectors (2 vs −3 → −1), dims −1 and 0 only; rank 1 → [].
fn rank0_and_rank1<T: Element>(seed: u64) -> Result<()> {
    let (a, b) = (from_f64s::<T>(&[2.0]), from_f64s::<T>(&[-3.0]));
    for dim in [0, -1] {
        let got = cpu::cosine_similarity(&a, &[], &b, &[], dim, None)?;
        ensure!(got.shape.is_empty() && got.values.len() == 1, "{got:?}");
        ensure!(
            got.values[0].to_f64() == -1.0,
            "{} dim {dim}: {got:?}",
            T::NAME
        );
    }
    let got = cpu::cosine_similarity(&a, &[], &a, &[], 0, None)?;
    ensure!(got.values[0].to_f64() == 1.0, "{got:?}");
    for dim in [1, -2] {
        let e = cpu::cosine_similarity(&a, &[], &b, &[], dim, None).unwrap_err();
        ensure!(matches!(e, Error::DimOutOfRange { .. }), "{e}");
    }
    // A scalar against a rank-0 shape given as [1] and as [1, 1].
    check_along_on(&a, &[], &b, &[1], 0, None)?;
    check_along_on(&a, &[], &b, &[1, 1], -1, None)?;
    // Rank 1: one output of shape [].
    let mut r = rng(seed);
    let v: Vec<T> = random_input(&mut r, &[5]);
    let w: Vec<T> = random_input(&mut r, &[5]);
    for dim in [0, -1] {
        check_along_on(&v, &[5], &w, &[5], dim, None)?;
    }
    // A scalar broadcasts against a vector: cos(c·1, w) = sign(c) Σw / (√5 ‖w‖).
    let (wf, c) = (to_f64s(&w), a[0].to_f64());
    let want = c.signum() * wf.iter().sum::<f64>()
        / (5f64.sqrt() * wf.iter().map(|x| x * x).sum::<f64>().sqrt());
    let got = cpu::cosine_similarity(&a, &[], &w, &[5], 0, None)?;
    ensure!(got.shape.is_empty(), "{got:?}");
    assert_close(&got.values, &[want], "scalar vs [5]");
    check_along_on(&w, &[5], &b, &[], -1, None)
}
per_dtype!(edge_rank0_rank1, rank0_and_rank1, 4100);

/// A size-1 reduced dim (C = 1): each output is sign(x1·x2), or 0 where either is 0.
fn channel_of_one<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    let s = [2, 1, 3, 3];
    let mut x1: Vec<T> = random_input(&mut r, &s);
    let x2: Vec<T> = random_input(&mut r, &s);
    x1[4] = T::from_f64(0.0);
    let got = cpu::cosine_similarity(&x1, &s, &x2, &s, 1, None)?;
    ensure!(got.shape == [2, 3, 3], "{:?}", got.shape);
    for (i, v) in got.values.iter().enumerate() {
        let p = x1[i].to_f64() * x2[i].to_f64();
        let want = if p == 0.0 { 0.0 } else { p.signum() };
        // Exactly ±1 would be ideal; allow the dtype's rounding.
        ensure!(
            (v.to_f64() - want).abs() <= tolerance::<T>() && v.to_f64().abs() <= 1.0,
            "{} output {i}: {v:?}, want {want}",
            T::NAME
        );
    }
    check_along_on(&x1, &s, &x2, &s, 1, None)
}
per_dtype!(edge_channel_of_one, channel_of_one, 4200);

/// Identical (and opposite) vectors of many elements: the clamp keeps |cos| ≤ 1 exactly.
fn never_above_one<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    for n in [3, 17, 1000, 4097, 1 << 16] {
        let x: Vec<T> = random_vec(&mut r, n);
        let neg: Vec<T> = x.iter().map(|v| T::from_f64(-v.to_f64())).collect();
        let same = cpu::cosine_similarity(&x, &[n], &x, &[n], 0, None)?;
        let opp = cpu::cosine_similarity(&x, &[n], &neg, &[n], 0, None)?;
        let (s, o) = (same.values[0].to_f64(), opp.values[0].to_f64());
        ensure!(
            s <= 1.0 && s >= 1.0 - tolerance::<T>(),
            "{} n {n}: cos(x, x) = {s}",
            T::NAME
        );
        ensure!(
            o >= -1.0 && o <= -1.0 + tolerance::<T>(),
            "{} n {n}: cos(x, -x) = {o}",
            T::NAME
        );
        // Strided: the same vectors as a column.
        let col = cpu::cosine_similarity(&x, &[n, 1], &x, &[n, 1], 0, None)?;
        let c = col.values[0].to_f64();
        ensure!(
            c <= 1.0 && c >= 1.0 - tolerance::<T>(),
            "{} n {n}: column {c}",
            T::NAME
        );
    }
    // Many copies of one value: every partial sum is exact, any overshoot is the division's.
    let x = vec![T::from_f64(0.1); 4097];
    let same = cpu::cosine_similarity(&x, &[4097], &x, &[4097], 0, None)?;
    ensure!(same.values[0].to_f64() <= 1.0, "{:?}", same.values);
    Ok(())
}
per_dtype!(edge_never_above_one, never_above_one, 4300);

/// Pairs of identical 2-vectors whose cosine, computed plainly in the accumulator type as
/// `dot / (√n1 · √n2)`, rounds above 1 (PyTorch's 1.0000001): the library must return at most
/// exactly 1 for them, and 1 within rounding.
#[test]
fn edge_clamps_rounding_overshoot() -> Result<()> {
    let mut r = rng(4350);
    // f32: collect rows [a, b] for which the plain formula overshoots.
    let mut rows32: Vec<f32> = Vec::new();
    let mut rows64: Vec<f64> = Vec::new();
    for _ in 0..20_000 {
        let (a, b): (f32, f32) = (r.random_range(-2.0..2.0), r.random_range(-2.0..2.0));
        let n = a * a + b * b;
        if n / (n.sqrt() * n.sqrt()) > 1.0 {
            rows32.extend([a, b]);
        }
        let (a, b): (f64, f64) = (r.random_range(-2.0..2.0), r.random_range(-2.0..2.0));
        let n = a * a + b * b;
        if n / (n.sqrt() * n.sqrt()) > 1.0 {
            rows64.extend([a, b]);
        }
    }
    ensure!(
        rows32.len() >= 20 && rows64.len() >= 20,
        "too few overshooting inputs found"
    );
    let k = rows32.len() / 2;
    for dim in [1, -1] {
        let got = cpu::cosine_similarity(&rows32, &[k, 2], &rows32, &[k, 2], dim, None)?;
        ensure!(
            got.values.iter().all(|&v| v <= 1.0),
            "f32: {:?}",
            got.values
        );
        assert_close(&got.values, &vec![1.0; k], "f32 overshooting rows");
    }
    // The same rows as columns (the strided path).
    let cols: Vec<f32> = (0..2)
        .flat_map(|j| rows32.iter().skip(j).step_by(2).copied())
        .collect();
    let got = cpu::cosine_similarity(&cols, &[2, k], &cols, &[2, k], 0, None)?;
    ensure!(
        got.values.iter().all(|&v| v <= 1.0),
        "f32 columns: {:?}",
        got.values
    );
    let k = rows64.len() / 2;
    let got = cpu::cosine_similarity(&rows64, &[k, 2], &rows64, &[k, 2], 1, None)?;
    ensure!(
        got.values.iter().all(|&v| v <= 1.0),
        "f64: {:?}",
        got.values
    );
    assert_close(&got.values, &vec![1.0; k], "f64 overshooting rows");
    // And the negated pairs never go below -1.
    let neg: Vec<f64> = rows64.iter().map(|v| -v).collect();
    let got = cpu::cosine_similarity(&rows64, &[k, 2], &neg, &[k, 2], 1, None)?;
    ensure!(
        got.values.iter().all(|&v| v >= -1.0),
        "f64 negated: {:?}",
        got.values
    );
    Ok(())
}

/// Broadcasting against the broadcast rank: x1 [3] vs x2 [2, 3] accepts dim −2 (x1 stretched
/// along the reduced dim) and dim 1.
#[test]
fn edge_dim_wraps_against_broadcast_rank() -> Result<()> {
    let mut r = rng(4400);
    let x1: Vec<f64> = random_input(&mut r, &[3]);
    let x2: Vec<f64> = random_input(&mut r, &[2, 3]);
    for dim in [-2, -1, 0, 1] {
        check_along_on(&x1, &[3], &x2, &[2, 3], dim, None)?;
    }
    // dim -2 reduces over x2's rows against the constant x1[j]: sign(x1[j]) · Σ x2[:, j] / (√2 ‖x2[:, j]‖).
    let got = cpu::cosine_similarity(&x1, &[3], &x2, &[2, 3], -2, None)?;
    ensure!(got.shape == [3]);
    let want: Vec<f64> = (0..3)
        .map(|j| {
            let (a, b) = (x2[j], x2[3 + j]);
            x1[j].signum() * (a + b) / (2f64.sqrt() * (a * a + b * b).sqrt())
        })
        .collect();
    assert_close(&got.values, &want, "x1 [3] vs x2 [2, 3], dim -2");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors: refused with a message, nothing written
// ---------------------------------------------------------------------------------------------

/// Shapes that do not broadcast: the message names both shapes and the mismatching dim.
#[test]
fn error_shapes_do_not_broadcast() {
    let (a, b) = (vec![0.5f32; 30], vec![0.5f32; 12]);
    let e = cpu::cosine_similarity(&a, &[5, 2, 3], &b, &[4, 3], 0, None).unwrap_err();
    assert!(matches!(e, Error::Broadcast { .. }), "{e:?}");
    let msg = e.to_string();
    for part in ["[5, 2, 3]", "[4, 3]", "dim 1"] {
        assert!(msg.contains(part), "message {msg:?} lacks {part:?}");
    }
    let e = cpu::channel_similarity(&a, &[5, 2, 3], &b, &[4, 3], 1, None).unwrap_err();
    assert!(matches!(e, Error::Broadcast { .. }), "{e:?}");
    let e = cpu::reweight_channels(&a, &[5, 2, 3], &b, &[4, 3], 1, None).unwrap_err();
    assert!(matches!(e, Error::Broadcast { .. }), "{e:?}");
    // Trailing-dim mismatch in same-rank shapes.
    let e = cpu::cosine_similarity(&a[..6], &[2, 3], &b[..4], &[2, 2], 0, None).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("[2, 3]") && msg.contains("[2, 2]") && msg.contains("dim 1"),
        "{msg}"
    );
}

/// `dim` outside −rank..rank of the broadcast shape.
#[test]
fn error_dim_out_of_range() {
    let a = vec![1.0f64; 6];
    for dim in [2, 3, -3, isize::MIN, isize::MAX] {
        let e = cpu::cosine_similarity(&a, &[2, 3], &a, &[2, 3], dim, None).unwrap_err();
        assert!(matches!(e, Error::DimOutOfRange { .. }), "dim {dim}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("dim {dim}")) && msg.contains("[2, 3]"),
            "{msg}"
        );
    }
    // x1 alone has rank 1, but the broadcast rank is 2: dim -2 is fine, -3 is not.
    assert!(cpu::cosine_similarity(&a[..3], &[3], &a, &[2, 3], -2, None).is_ok());
    let e = cpu::cosine_similarity(&a[..3], &[3], &a, &[2, 3], -3, None).unwrap_err();
    assert!(matches!(e, Error::DimOutOfRange { .. }), "{e:?}");
}

/// A buffer whose length is not the product of its shape.
#[test]
fn error_buffer_length_mismatch() {
    let a = [1.0f32; 7];
    let e = cpu::cosine_similarity(&a[..5], &[2, 3], &a[..6], &[2, 3], 1, None).unwrap_err();
    assert!(matches!(e, Error::LenMismatch { what: "x1", .. }), "{e:?}");
    assert!(e.to_string().contains("[2, 3]"), "{e}");
    let e = cpu::cosine_similarity(&a[..6], &[2, 3], &a[..7], &[2, 3], 1, None).unwrap_err();
    assert!(matches!(e, Error::LenMismatch { what: "x2", .. }), "{e:?}");
    let e = cpu::channel_similarity(&a[..6], &[2, 3], &a[..5], &[2, 3], 1, None).unwrap_err();
    assert!(matches!(e, Error::LenMismatch { what: "x2", .. }), "{e:?}");
    let e = cpu::reweight_channels(&a[..7], &[2, 3], &a[..6], &[2, 3], 1, None).unwrap_err();
    assert!(matches!(e, Error::LenMismatch { what: "x1", .. }), "{e:?}");
    // Rank 0 holds one element.
    let e = cpu::cosine_similarity(&a[..2], &[], &a[..1], &[], 0, None).unwrap_err();
    assert!(matches!(e, Error::LenMismatch { .. }), "{e:?}");
}

/// eps must be a number ≥ 0.
#[test]
fn error_bad_eps() {
    let a = vec![1.0f32; 6];
    for eps in [-1.0, -1e-12, f64::NAN, f64::NEG_INFINITY] {
        let e = cpu::cosine_similarity(&a, &[2, 3], &a, &[2, 3], 1, Some(eps)).unwrap_err();
        assert!(matches!(e, Error::BadEps(_)), "eps {eps}: {e:?}");
        let e = cpu::channel_similarity(&a, &[2, 3], &a, &[2, 3], 1, Some(eps)).unwrap_err();
        assert!(matches!(e, Error::BadEps(_)), "eps {eps}: {e:?}");
        let e = cpu::reweight_channels(&a, &[2, 3], &a, &[2, 3], 1, Some(eps)).unwrap_err();
        assert!(matches!(e, Error::BadEps(_)), "eps {eps}: {e:?}");
    }
}

/// `flatten_from` must leave at least one dim to flatten.
#[test]
fn error_flatten_from_out_of_range() {
    let a = vec![1.0f32; 6];
    for from in [2, 3, 100] {
        let e = cpu::channel_similarity(&a, &[2, 3], &a, &[2, 3], from, None).unwrap_err();
        assert!(
            matches!(e, Error::FlattenOutOfRange { .. }),
            "from {from}: {e:?}"
        );
        let e = cpu::reweight_channels(&a, &[2, 3], &a, &[2, 3], from, None).unwrap_err();
        assert!(
            matches!(e, Error::FlattenOutOfRange { .. }),
            "from {from}: {e:?}"
        );
    }
    // Against the broadcast rank: x1 [3] vs x2 [2, 3] accepts 1 but not 2.
    assert!(cpu::channel_similarity(&a[..3], &[3], &a, &[2, 3], 1, None).is_ok());
    assert!(cpu::channel_similarity(&a[..3], &[3], &a, &[2, 3], 2, None).is_err());
    // Rank 0 has nothing to flatten.
    assert!(cpu::channel_similarity(&a[..1], &[], &a[..1], &[], 0, None).is_err());
}

/// `_into` refusals leave the caller's buffers exactly as they were.
#[test]
fn error_into_leaves_buffer_untouched() {
    let x = vec![0.25f32; 24];
    let s = [2, 3, 4];
    for poison in [f64::NAN, 12345.0] {
        for len in [0, 7, 9] {
            // The result has 2·4 = 8 elements.
            let mut out: Vec<f32> = poisoned(len, poison);
            let before = out.clone();
            let e = cpu::cosine_similarity_into(&mut out, &x, &s, &x, &s, 1, None).unwrap_err();
            assert!(matches!(e, Error::OutLenMismatch { .. }), "{e:?}");
            assert!(same_bits(&out, &before), "len {len}: {out:?}");
        }
        // Right length, but an invalid call otherwise.
        let mut out: Vec<f32> = poisoned(8, poison);
        let before = out.clone();
        assert!(cpu::cosine_similarity_into(&mut out, &x[..23], &s, &x, &s, 1, None).is_err());
        assert!(cpu::cosine_similarity_into(&mut out, &x, &s, &x, &s, 1, Some(-1.0)).is_err());
        assert!(same_bits(&out, &before), "{out:?}");

        // channel_similarity_into: the result [2, 3] has 6 elements.
        let mut out: Vec<f32> = poisoned(5, poison);
        let before = out.clone();
        let e = cpu::channel_similarity_into(&mut out, &x, &s, &x, &s, 2, None).unwrap_err();
        assert!(matches!(e, Error::OutLenMismatch { .. }), "{e:?}");
        assert!(same_bits(&out, &before), "{out:?}");

        // reweight_channels_into: weighted 24, similarity 6; either wrong refuses both.
        for (wl, sl) in [(23, 6), (24, 5), (24, 7), (0, 0)] {
            let mut w: Vec<f32> = poisoned(wl, poison);
            let mut sim: Vec<f32> = poisoned(sl, poison);
            let (wb, sb) = (w.clone(), sim.clone());
            let e =
                cpu::reweight_channels_into(&mut w, &mut sim, &x, &s, &x, &s, 2, None).unwrap_err();
            assert!(matches!(e, Error::OutLenMismatch { .. }), "{e:?}");
            assert!(
                same_bits(&w, &wb) && same_bits(&sim, &sb),
                "({wl}, {sl}): {w:?} {sim:?}"
            );
        }
    }
}

/// One input broadcast along part of the flattened dims has no single flattened stride.
#[test]
fn error_partial_flatten_broadcast() {
    let a = vec![1.0f32; 2 * 3 * 4 * 5];
    let b = vec![1.0f32; 2 * 3 * 5];
    let e = cpu::channel_similarity(&a, &[2, 3, 4, 5], &b, &[2, 3, 1, 5], 2, None).unwrap_err();
    assert!(
        matches!(e, Error::PartialFlattenBroadcast { input: 2, .. }),
        "{e:?}"
    );
    // The same shapes are fine when only the last dim is flattened.
    assert!(cpu::channel_similarity(&a, &[2, 3, 4, 5], &b, &[2, 3, 1, 5], 3, None).is_ok());
}
