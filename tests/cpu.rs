//! Behaviour tests of the CPU backend against the independent f64 reference in
//! `tests/common` (SPEC §2): random batteries per dtype, shapes large enough for the
//! multithreaded and split paths, edge cases, errors, the PyTorch forum thread
//! "cosine similarity between two feature maps", and channel reweighting.

#[macro_use]
mod common;

use anyhow::{ensure, Result};
use common::*;
use cosim::{bf16, cpu, f16, Element, Error};
use rand::rngs::SmallRng;
use rand::Rng;

/// The eps the library uses when given `None` (PyTorch's default), written out independently.
const EPS: f64 = 1e-8;

// ---------------------------------------------------------------------------------------------
// Random batteries
// ---------------------------------------------------------------------------------------------

/// Random pair of shapes that broadcast: rank 1..=5, sizes 1..=7 (sometimes one long dim of
/// 1000 or 4097), some dims of one input turned into 1, sometimes leading dims dropped.
fn random_shapes(r: &mut SmallRng) -> (Vec<usize>, Vec<usize>) {
    let rank = r.random_range(1..=5usize);
    let mut full: Vec<usize> = (0..rank)
        .map(|_| {
            if r.random_bool(0.2) {
                1
            } else {
                r.random_range(1..=7)
            }
        })
        .collect();
    if r.random_bool(0.08) {
        // A long reduction or kept dim; keep the others small so the case stays cheap.
        let long = r.random_range(0..rank);
        for d in full.iter_mut() {
            *d = (*d).min(2);
        }
        full[long] = if r.random_bool(0.5) { 1000 } else { 4097 };
    }
    let (mut s1, mut s2) = (full.clone(), full);
    for i in 0..rank {
        match r.random_range(0..6) {
            0 => s1[i] = 1,
            1 => s2[i] = 1,
            _ => {}
        }
    }
    if r.random_bool(0.25) {
        let drop = r.random_range(0..=rank);
        let s = if r.random_bool(0.5) { &mut s1 } else { &mut s2 };
        s.drain(..drop);
    }
    (s1, s2)
}

/// A random eps: mostly the default, sometimes 0, sometimes large enough to clamp norms.
fn random_eps(r: &mut SmallRng) -> Option<f64> {
    match r.random_range(0..6) {
        0 => Some(0.0),
        1 => Some(r.random_range(0.5..4.0)),
        2 => Some(1e-6),
        _ => None,
    }
}

/// A poison value for `_into` outputs: NaN or 12345.0 (an impossible cosine either way).
fn poison_for(case: usize) -> f64 {
    if case.is_multiple_of(2) {
        f64::NAN
    } else {
        12345.0
    }
}

/// `cosine_similarity` and `cosine_similarity_into` on random shapes, dims and eps.
fn battery_along<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    for case in 0..300 {
        let (s1, s2) = random_shapes(&mut r);
        let rank = s1.len().max(s2.len());
        let dim = r.random_range(-(rank as i64)..rank as i64) as isize;
        let eps = random_eps(&mut r);
        let x1: Vec<T> = random_input(&mut r, &s1);
        let x2: Vec<T> = random_input(&mut r, &s2);
        let what = format!(
            "along case {case} (seed {seed}): x1 {s1:?}, x2 {s2:?}, dim {dim}, eps {eps:?}"
        );
        let (want, want_shape) = reference_along(&x1, &s1, &x2, &s2, dim, eps.unwrap_or(EPS));

        let got = cpu::cosine_similarity(&x1, &s1, &x2, &s2, dim, eps)
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        ensure!(
            got.shape == want_shape,
            "{what}: shape {:?}, want {want_shape:?}",
            got.shape
        );
        assert_close(&got.values, &want, &what);
        assert_unit_bounded(&got.values, &what);

        let mut out: Vec<T> = poisoned(want.len(), poison_for(case));
        let shape = cpu::cosine_similarity_into(&mut out, &x1, &s1, &x2, &s2, dim, eps)
            .map_err(|e| anyhow::anyhow!("{what} (_into): {e}"))?;
        ensure!(shape == want_shape, "{what} (_into): shape {shape:?}");
        assert_close(&out, &want, &format!("{what} (_into)"));
    }
    Ok(())
}
per_dtype!(random_along, battery_along, 1000);

/// True if the padded `shape` is size 1 along some, but not all, of the dims `from..` of
/// `bshape` that are not 1: the library's documented PartialFlattenBroadcast refusal.
fn partly_broadcast(shape: &[usize], bshape: &[usize], from: usize) -> bool {
    let pad = bshape.len() - shape.len();
    let own = |i: usize| if i < pad { 1 } else { shape[i - pad] };
    let live: Vec<usize> = (from..bshape.len()).filter(|&i| bshape[i] != 1).collect();
    let ones = live.iter().filter(|&&i| own(i) == 1).count();
    ones != 0 && ones != live.len()
}

/// `channel_similarity(_into)` and `reweight_channels(_into)` on random shapes and
/// `flatten_from`; part-broadcast flattened blocks must be refused.
fn battery_flattened<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    let (mut valid, mut refused) = (0, 0);
    for case in 0..300 {
        let (s1, s2) = random_shapes(&mut r);
        let bshape = broadcast_shape(&s1, &s2).expect("generated shapes broadcast");
        let from = r.random_range(0..bshape.len());
        let eps = random_eps(&mut r);
        let x1: Vec<T> = random_input(&mut r, &s1);
        let x2: Vec<T> = random_input(&mut r, &s2);
        let what = format!(
            "flattened case {case} (seed {seed}): x1 {s1:?}, x2 {s2:?}, from {from}, eps {eps:?}"
        );
        let res = cpu::channel_similarity(&x1, &s1, &x2, &s2, from, eps);
        if partly_broadcast(&s1, &bshape, from) || partly_broadcast(&s2, &bshape, from) {
            let e = res.err();
            ensure!(
                matches!(e, Some(Error::PartialFlattenBroadcast { .. })),
                "{what}: expected a PartialFlattenBroadcast error, got {e:?}"
            );
            refused += 1;
            continue;
        }
        valid += 1;
        let (want, want_shape) = reference_flattened(&x1, &s1, &x2, &s2, from, eps.unwrap_or(EPS));
        let got = res.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        ensure!(
            got.shape == want_shape,
            "{what}: shape {:?}, want {want_shape:?}",
            got.shape
        );
        assert_close(&got.values, &want, &what);
        assert_unit_bounded(&got.values, &what);

        let mut out: Vec<T> = poisoned(want.len(), poison_for(case));
        let shape = cpu::channel_similarity_into(&mut out, &x1, &s1, &x2, &s2, from, eps)?;
        ensure!(shape == want_shape, "{what} (_into): shape {shape:?}");
        assert_close(&out, &want, &format!("{what} (_into)"));

        // Reweighting y = x2 by the same similarities.
        let want_w = weighted_reference(&x2, &s2, &bshape, &want);
        let rw = cpu::reweight_channels(&x1, &s1, &x2, &s2, from, eps)?;
        ensure!(
            rw.weighted_shape == bshape,
            "{what}: weighted shape {:?}",
            rw.weighted_shape
        );
        ensure!(
            rw.similarity_shape == want_shape,
            "{what}: similarity shape {:?}",
            rw.similarity_shape
        );
        assert_close(
            &rw.similarity,
            &want,
            &format!("{what} (reweight similarity)"),
        );
        check_weighted(
            &rw.weighted,
            &rw.similarity,
            &x2,
            &s2,
            &bshape,
            &want_w,
            &format!("{what} (reweight)"),
        );

        let mut w: Vec<T> = poisoned(want_w.len(), poison_for(case + 1));
        let mut s: Vec<T> = poisoned(want.len(), poison_for(case));
        let (ws, ss) = cpu::reweight_channels_into(&mut w, &mut s, &x1, &s1, &x2, &s2, from, eps)?;
        ensure!(
            ws == bshape && ss == want_shape,
            "{what} (reweight _into): shapes {ws:?} {ss:?}"
        );
        assert_close(&s, &want, &format!("{what} (reweight _into similarity)"));
        check_weighted(
            &w,
            &s,
            &x2,
            &s2,
            &bshape,
            &want_w,
            &format!("{what} (reweight _into)"),
        );
    }
    // Both branches must have been exercised, or the battery proves little.
    ensure!(
        valid >= 100 && refused >= 10,
        "valid {valid}, refused {refused}"
    );
    Ok(())
}
per_dtype!(random_flattened, battery_flattened, 2000);

/// Checks a reweighted tensor two ways. Exactly: `weighted == y · sim` elementwise in `T`'s
/// arithmetic, with `sim` the similarity the call returned (the documented contract; the
/// product of two `T` values is exact in f64, so rounding it once to `T` is `T`'s product).
/// Approximately: against `y_f64 · reference_sim`, allowing the rounding of `sim` (scaled by
/// |y|) plus the rounding of the product.
fn check_weighted<T: Element>(
    weighted: &[T],
    sims: &[T],
    y: &[T],
    shape_y: &[usize],
    bshape: &[usize],
    want: &[f64],
    what: &str,
) {
    let my = materialise(y, shape_y, bshape);
    assert_eq!(weighted.len(), my.len(), "{what}: weighted length");
    let row = if sims.is_empty() {
        1
    } else {
        (my.len() / sims.len()).max(1)
    };
    let exact: Vec<T> = my
        .iter()
        .enumerate()
        .map(|(i, &v)| T::from_f64(v * sims[i / row].to_f64()))
        .collect();
    if let Some(i) = (0..exact.len()).find(|&i| !same_bits(&weighted[i..=i], &exact[i..=i])) {
        panic!(
            "{what} [{}]: weighted[{i}] = {:?}, but y · sim = {:?} · {:?} = {:?}",
            T::NAME,
            weighted[i],
            my[i],
            sims[i / row],
            exact[i]
        );
    }
    let scale: Vec<f64> = my
        .iter()
        .zip(want)
        .map(|(y, w)| y.abs() + w.abs().max(1.0))
        .collect();
    assert_close_scaled(
        weighted,
        want,
        &scale,
        &format!("{what}: weighted vs reference"),
    );
}

/// `y` (of `shape_y`) broadcast to `bshape`, each flattened row scaled by its similarity.
fn weighted_reference<T: Element>(
    y: &[T],
    shape_y: &[usize],
    bshape: &[usize],
    sims: &[f64],
) -> Vec<f64> {
    let my = materialise(y, shape_y, bshape);
    let row = if sims.is_empty() {
        0
    } else {
        my.len() / sims.len()
    };
    my.iter()
        .enumerate()
        .map(|(i, &v)| v * sims[i / row])
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Large shapes: the multithreaded, split-row and blocked strided paths
// ---------------------------------------------------------------------------------------------

/// Compares `cosine_similarity` with the reference for one shape pair, on random inputs.
fn check_along<T: Element>(seed: u64, s1: &[usize], s2: &[usize], dim: isize) -> Result<()> {
    let mut r = rng(seed);
    let x1: Vec<T> = random_input(&mut r, s1);
    let x2: Vec<T> = random_input(&mut r, s2);
    check_along_on(&x1, s1, &x2, s2, dim, None)
}

/// Compares `cosine_similarity` (and its `_into` twin) with the reference on given inputs.
fn check_along_on<T: Element>(
    x1: &[T],
    s1: &[usize],
    x2: &[T],
    s2: &[usize],
    dim: isize,
    eps: Option<f64>,
) -> Result<()> {
    let what = format!("x1 {s1:?}, x2 {s2:?}, dim {dim}, eps {eps:?}");
    let (want, want_shape) = reference_along(x1, s1, x2, s2, dim, eps.unwrap_or(EPS));
    let got = cpu::cosine_similarity(x1, s1, x2, s2, dim, eps)?;
    ensure!(
        got.shape == want_shape,
        "{what}: shape {:?}, want {want_shape:?}",
        got.shape
    );
    assert_close(&got.values, &want, &what);
    assert_unit_bounded(&got.values, &what);
    let mut out: Vec<T> = poisoned(want.len(), f64::NAN);
    cpu::cosine_similarity_into(&mut out, x1, s1, x2, s2, dim, eps)?;
    assert_close(&out, &want, &format!("{what} (_into)"));
    Ok(())
}

/// Two rows of 2^16: few long rows are split across threads. Correlated rows (cos near ±1)
/// make accumulation errors visible.
fn split_rows<T: Element>(seed: u64) -> Result<()> {
    let n = 1 << 16;
    let mut r = rng(seed);
    let a = to_f64s(&random_vec::<T>(&mut r, 2 * n));
    let noise = to_f64s(&random_vec::<T>(&mut r, 2 * n));
    let x1: Vec<T> = from_f64s(&a);
    // Row 0 of x2 follows x1, row 1 opposes it.
    let x2: Vec<T> = from_f64s(
        &(0..2 * n)
            .map(|i| {
                if i < n {
                    a[i] + 0.1 * noise[i]
                } else {
                    -a[i] + 0.1 * noise[i]
                }
            })
            .collect::<Vec<_>>(),
    );
    check_along_on(&x1, &[2, n], &x2, &[2, n], -1, None)?;
    check_along_on(&x1, &[2, n], &x2, &[2, n], 1, None)?;
    // And the same values as a single row of 2^17.
    check_along_on(&x1, &[2 * n], &x2, &[2 * n], 0, None)?;
    let got = cpu::cosine_similarity(&x1, &[2, n], &x2, &[2, n], 1, None)?;
    ensure!(
        got.values[0].to_f64() > 0.95 && got.values[1].to_f64() < -0.95,
        "{:?}",
        got.values
    );
    Ok(())
}
per_dtype!(large_split_rows, split_rows, 3000);

/// NCHW along the channels with more pixels than one block: [2, 64, 33, 17], dim 1.
fn nchw_channels<T: Element>(seed: u64) -> Result<()> {
    check_along::<T>(seed, &[2, 64, 33, 17], &[2, 64, 33, 17], 1)?;
    check_along::<T>(seed + 10, &[2, 64, 33, 17], &[2, 64, 33, 17], -3)
}
per_dtype!(large_nchw_channels, nchw_channels, 3100);

/// A strided reduction against a broadcast prototype: [3, 5, 300] vs [1, 5, 1], dim 1.
fn prototype_broadcast<T: Element>(seed: u64) -> Result<()> {
    check_along::<T>(seed, &[3, 5, 300], &[1, 5, 1], 1)?;
    check_along::<T>(seed + 10, &[1, 5, 1], &[3, 5, 300], 1)?;
    check_along::<T>(seed + 20, &[3, 5, 300], &[5, 1], -2)
}
per_dtype!(large_prototype_broadcast, prototype_broadcast, 3200);

/// Many short rows (the parallel row path) and many strided outputs over a long reduction.
fn many_rows<T: Element>(seed: u64) -> Result<()> {
    check_along::<T>(seed, &[5000, 37], &[5000, 37], -1)?;
    check_along::<T>(seed + 10, &[3, 1000, 300], &[3, 1000, 300], 1)?;
    check_along::<T>(seed + 20, &[5000, 37], &[37], 1)
}
per_dtype!(large_many_rows, many_rows, 3300);

/// One input holds one value per output vector (its reduced dim has size 1) while the other
/// is contiguous: short rows, long split rows, either side constant, flattened channels.
fn constant_per_row<T: Element>(seed: u64) -> Result<()> {
    check_along::<T>(seed, &[5, 1000], &[5, 1], 1)?;
    check_along::<T>(seed + 1, &[7, 1], &[7, 33], -1)?;
    check_along::<T>(seed + 2, &[1, 70_000], &[1, 1], 1)?;
    check_along::<T>(seed + 3, &[1, 1], &[2, 70_000], 1)?;
    let mut r = rng(seed + 4);
    let (s1, s2) = ([2usize, 3, 7, 9], [2usize, 3, 1, 1]);
    let (x1, x2): (Vec<T>, Vec<T>) = (random_input(&mut r, &s1), random_input(&mut r, &s2));
    let (want, _) = reference_flattened(&x1, &s1, &x2, &s2, 2, EPS);
    assert_close(
        &cpu::channel_similarity(&x1, &s1, &x2, &s2, 2, None)?.values,
        &want,
        "constant channels",
    );
    // Products stay elementwise: an infinite constant against a zero element gives NaN.
    let a = [T::from_f64(0.0), T::from_f64(1.0)];
    let inf = [T::from_f64(f64::INFINITY)];
    let got = cpu::cosine_similarity(&a, &[1, 2], &inf, &[1, 1], 1, None)?;
    ensure!(got.values[0].to_f64().is_nan(), "{:?}", got.values);
    Ok(())
}

per_dtype!(large_constant_per_row, constant_per_row, 3400);

/// Rank 8, the most the plans take, with broadcasting on both sides and every dim reduced.
fn rank_eight<T: Element>(seed: u64) -> Result<()> {
    let (s1, s2) = ([2usize, 1, 3, 2, 1, 2, 3, 2], [1usize, 2, 3, 1, 2, 2, 1, 2]);
    for dim in -8..8 {
        check_along::<T>(seed + (dim + 8) as u64, &s1, &s2, dim)?;
    }
    let e = cpu::cosine_similarity(&[0.0f32; 512], &[2; 9], &[0.0f32; 512], &[2; 9], 0, None);
    ensure!(matches!(e, Err(cosim::Error::RankTooLarge { .. })), "{e:?}");
    Ok(())
}

per_dtype!(edge_rank_eight, rank_eight, 3500);

/// Per-channel similarity of maps large enough for several threads: [4, 8, 64, 64].
#[test]
fn large_flattened_channels() -> Result<()> {
    let mut r = rng(3400);
    let s = [4, 8, 64, 64];
    let x1: Vec<f32> = random_input(&mut r, &s);
    let x2: Vec<f32> = random_input(&mut r, &s);
    let (want, want_shape) = reference_flattened(&x1, &s, &x2, &s, 2, EPS);
    let got = cpu::channel_similarity(&x1, &s, &x2, &s, 2, None)?;
    ensure!(got.shape == want_shape && want_shape == [4, 8]);
    assert_close(&got.values, &want, "channel_similarity [4, 8, 64, 64]");
    Ok(())
}

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

// ---------------------------------------------------------------------------------------------
// The PyTorch forum thread "cosine similarity between two feature maps"
// ---------------------------------------------------------------------------------------------

/// `x1, x2 = abs(randn(1, 2, 20, 20))`, dim 1: one value per pixel, shape [1, 20, 20].
#[test]
fn forum_dim1_gives_one_value_per_pixel() -> Result<()> {
    let mut r = rng(5000);
    let s = [1, 2, 20, 20];
    let x1: Vec<f32> = random_in(&mut r, 800, 0.0, 2.0);
    let x2: Vec<f32> = random_in(&mut r, 800, 0.0, 2.0);
    let got = cpu::cosine_similarity(&x1, &s, &x2, &s, 1, None)?;
    ensure!(got.shape == [1, 20, 20], "{:?}", got.shape);
    let (want, _) = reference_along(&x1, &s, &x2, &s, 1, EPS);
    assert_close(&got.values, &want, "forum [1, 2, 20, 20] dim 1");
    // Nonnegative vectors: cosines in [0, 1].
    ensure!(got.values.iter().all(|v| (0.0..=1.0).contains(v)));
    // Not all one value: a per-pixel answer, not a broadcast scalar.
    ensure!(got.values.iter().any(|v| (v - got.values[0]).abs() > 1e-3));
    Ok(())
}

/// Positive [2, 20, 20] inputs, dim 0: shape [20, 20], every value in (0, 1].
#[test]
fn forum_dim0_over_a_batch_of_two() -> Result<()> {
    let mut r = rng(5100);
    let s = [2, 20, 20];
    let x1: Vec<f32> = random_in(&mut r, 800, 0.01, 2.0);
    let x2: Vec<f32> = random_in(&mut r, 800, 0.01, 2.0);
    let got = cpu::cosine_similarity(&x1, &s, &x2, &s, 0, None)?;
    ensure!(got.shape == [20, 20], "{:?}", got.shape);
    let (want, _) = reference_along(&x1, &s, &x2, &s, 0, EPS);
    assert_close(&got.values, &want, "forum [2, 20, 20] dim 0");
    ensure!(
        got.values.iter().all(|&v| v > 0.0 && v <= 1.0),
        "{:?}",
        got.values
    );
    Ok(())
}

/// The thread's surprise: [1, 2, 20, 20] with dim 0 reduces a size-1 dim, so every output is
/// the cosine of two length-1 positive vectors: all ones, shape [2, 20, 20].
#[test]
fn forum_dim0_of_size_one_is_all_ones() -> Result<()> {
    let mut r = rng(5200);
    let s = [1, 2, 20, 20];
    let x1: Vec<f32> = random_in(&mut r, 800, 0.01, 2.0);
    let x2: Vec<f32> = random_in(&mut r, 800, 0.01, 2.0);
    let got = cpu::cosine_similarity(&x1, &s, &x2, &s, 0, None)?;
    ensure!(got.shape == [2, 20, 20], "{:?}", got.shape);
    assert_close(&got.values, &[1.0; 800], "forum [1, 2, 20, 20] dim 0");
    ensure!(got.values.iter().all(|&v| v <= 1.0));
    // With signed inputs the answer is the sign of the product instead.
    let y1: Vec<f32> = random_input(&mut r, &s);
    let got = cpu::cosine_similarity(&y1, &s, &x2, &s, 0, None)?;
    let want: Vec<f64> = y1.iter().map(|&v| f64::from(v).signum()).collect();
    assert_close(&got.values, &want, "signed [1, 2, 20, 20] dim 0");
    Ok(())
}

/// The thread's equivalence: dim 1 on NCHW equals dim −1 on the rows of
/// `x.permute(0, 2, 3, 1).reshape(-1, C)`, viewed back as [N, H, W].
#[test]
fn forum_permute_view_equals_dim1() -> Result<()> {
    for (seed, s) in [
        (5300, [1usize, 2, 20, 20]),
        (5301, [2, 3, 5, 4]),
        (5302, [3, 19, 7, 6]),
    ] {
        let mut r = rng(seed);
        let [n, c, h, w] = s;
        let x1: Vec<f32> = random_input(&mut r, &s);
        let x2: Vec<f32> = random_input(&mut r, &s);
        let permute = |x: &[f32]| -> Vec<f32> {
            let mut rows = Vec::with_capacity(x.len());
            for ni in 0..n {
                for hi in 0..h {
                    for wi in 0..w {
                        for ci in 0..c {
                            rows.push(x[ravel(&[ni, ci, hi, wi], &s)]);
                        }
                    }
                }
            }
            rows
        };
        let (r1, r2) = (permute(&x1), permute(&x2));
        let res1 = cpu::cosine_similarity(&x1, &s, &x2, &s, 1, None)?;
        let res2 = cpu::cosine_similarity(&r1, &[n * h * w, c], &r2, &[n * h * w, c], -1, None)?;
        ensure!(res1.shape == [n, h, w] && res2.shape == [n * h * w]);
        let what = format!("{s:?}: dim 1 vs permuted rows");
        assert_close(&res1.values, &to_f64s(&res2.values), &what);
        let (want, _) = reference_along(&x1, &s, &x2, &s, 1, EPS);
        assert_close(&res2.values, &want, &what);
    }
    Ok(())
}

/// `x1 = linspace(0, 1, 2·H·W).view(1, 2, H, W)`, `x2 = linspace(1, 2, …)` = x1 + 1.
///
/// Bound: for a nonnegative nonzero a ∈ ℝ^C, b = a + 𝟙 is a positive combination of a and 𝟙,
/// so angle(a, b) ≤ angle(a, 𝟙), and cos(a, 𝟙) = Σa / (√C ‖a‖) ≥ 1/√C because Σa ≥ ‖a‖₂ for
/// a ≥ 0. Hence cos(a, a + 𝟙) ∈ [1/√C, 1]: [0.7071, 1] for the thread's C = 2.
#[test]
fn forum_linspace_bounded() -> Result<()> {
    for (c, h, w) in [(2usize, 20usize, 20usize), (3, 8, 8), (16, 4, 5)] {
        let n = c * h * w;
        let lin = |lo: f64, hi: f64| -> Vec<f32> {
            (0..n)
                .map(|i| (lo + (hi - lo) * i as f64 / (n - 1) as f64) as f32)
                .collect()
        };
        let (x1, x2) = (lin(0.0, 1.0), lin(1.0, 2.0));
        let s = [1, c, h, w];
        let got = cpu::cosine_similarity(&x1, &s, &x2, &s, 1, None)?;
        ensure!(got.shape == [1, h, w]);
        let (want, _) = reference_along(&x1, &s, &x2, &s, 1, EPS);
        assert_close(&got.values, &want, &format!("linspace C = {c}"));
        let lo = 1.0 / (c as f64).sqrt() - 2e-6;
        ensure!(
            got.values.iter().all(|&v| f64::from(v) >= lo && v <= 1.0),
            "C = {c}: values outside [1/√C, 1]: {:?}",
            got.values
        );
        // Pixel 0 is a = (0, t, 2t, …) with t = h·w/(n−1): check it in closed form.
        let t = (h * w) as f64 / (n - 1) as f64;
        let a: Vec<f64> = (0..c).map(|k| k as f64 * t).collect();
        let dot: f64 = a.iter().map(|x| x * (x + 1.0)).sum();
        let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nb = a.iter().map(|x| (x + 1.0) * (x + 1.0)).sum::<f64>().sqrt();
        assert_close(&got.values[..1], &[dot / (na * nb)], "linspace pixel 0");
    }
    // The bound is tight: a = (0, 1e-3) against a + 1 gives about 0.7075 for C = 2.
    let (a, b) = ([0.0f64, 1e-3], [1.0f64, 1.001]);
    let got = cpu::cosine_similarity(&a, &[2], &b, &[2], 0, None)?;
    let v = got.values[0];
    ensure!(v >= 0.5f64.sqrt() && v < 0.7080, "{v}");
    Ok(())
}

/// The per-channel question: [1, 2, 10, 10] maps → [1, 2] via `channel_similarity`, equal to
/// the reference and to `cosine_similarity` on the `view(1, 2, 100)`, dim 2.
#[test]
fn forum_per_channel() -> Result<()> {
    let mut r = rng(5400);
    let s = [1, 2, 10, 10];
    let x1: Vec<f32> = random_input(&mut r, &s);
    let x2: Vec<f32> = random_input(&mut r, &s);
    let got = cpu::channel_similarity(&x1, &s, &x2, &s, 2, None)?;
    ensure!(got.shape == [1, 2], "{:?}", got.shape);
    let (want, _) = reference_flattened(&x1, &s, &x2, &s, 2, EPS);
    assert_close(&got.values, &want, "per channel [1, 2, 10, 10]");
    let viewed = cpu::cosine_similarity(&x1, &[1, 2, 100], &x2, &[1, 2, 100], 2, None)?;
    ensure!(viewed.shape == [1, 2]);
    assert_close(&viewed.values, &want, "view(1, 2, 100), dim 2");
    // The reference itself, written out for channel 1: the second half of each buffer.
    let (a, b) = (to_f64s(&x1[100..]), to_f64s(&x2[100..]));
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let n1 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let n2 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert_close(&got.values[1..], &[dot / (n1 * n2)], "channel 1 by hand");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// reweight_channels
// ---------------------------------------------------------------------------------------------

/// Checks `reweight_channels` (and `_into`) on given inputs against the reference:
/// similarity = reference_flattened, weighted = y_f64 · similarity.
fn check_reweight<T: Element>(
    x: &[T],
    sx: &[usize],
    y: &[T],
    sy: &[usize],
    from: usize,
) -> Result<()> {
    let what = format!("reweight x {sx:?}, y {sy:?}, from {from}");
    let bshape = broadcast_shape(sx, sy).expect("shapes broadcast");
    let (sim, sim_shape) = reference_flattened(x, sx, y, sy, from, EPS);
    let want_w = weighted_reference(y, sy, &bshape, &sim);
    let got = cpu::reweight_channels(x, sx, y, sy, from, None)?;
    ensure!(
        got.weighted_shape == bshape,
        "{what}: weighted shape {:?}",
        got.weighted_shape
    );
    ensure!(
        got.similarity_shape == sim_shape,
        "{what}: similarity shape {:?}",
        got.similarity_shape
    );
    assert_close(&got.similarity, &sim, &format!("{what}: similarity"));
    check_weighted(
        &got.weighted,
        &got.similarity,
        y,
        sy,
        &bshape,
        &want_w,
        &what,
    );
    let mut w: Vec<T> = poisoned(want_w.len(), f64::NAN);
    let mut s: Vec<T> = poisoned(sim.len(), 12345.0);
    let (ws, ss) = cpu::reweight_channels_into(&mut w, &mut s, x, sx, y, sy, from, None)?;
    ensure!(
        ws == bshape && ss == sim_shape,
        "{what} (_into): {ws:?} {ss:?}"
    );
    assert_close(&s, &sim, &format!("{what} (_into): similarity"));
    check_weighted(&w, &s, y, sy, &bshape, &want_w, &format!("{what} (_into)"));
    Ok(())
}

/// Same-shape NCHW maps, per channel and over everything past N.
fn reweight_same_shape<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    let s = [2, 3, 4, 5];
    let x: Vec<T> = random_input(&mut r, &s);
    let y: Vec<T> = random_input(&mut r, &s);
    check_reweight(&x, &s, &y, &s, 2)?;
    check_reweight(&x, &s, &y, &s, 1)?;
    check_reweight(&x, &s, &y, &s, 0)?;
    // Large enough for the parallel paths.
    let s = [4, 16, 32, 32];
    let x: Vec<T> = random_input(&mut r, &s);
    let y: Vec<T> = random_input(&mut r, &s);
    check_reweight(&x, &s, &y, &s, 2)
}
per_dtype!(reweight_same, reweight_same_shape, 6000);

/// Broadcasting: a prototype x [1, C, H, W] against y [N, C, H, W], the reverse, and y
/// constant per channel ([N, C, 1, 1], broadcast over the whole flattened block).
fn reweight_broadcast<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    let (n, c, h, w) = (3, 4, 5, 6);
    let big = [n, c, h, w];
    let proto = [1, c, h, w];
    let xb: Vec<T> = random_input(&mut r, &big);
    let yb: Vec<T> = random_input(&mut r, &big);
    let xp: Vec<T> = random_input(&mut r, &proto);
    check_reweight(&xp, &proto, &yb, &big, 2)?;
    check_reweight(&xb, &big, &xp, &proto, 2)?;
    check_reweight(&xp, &[c, h, w], &yb, &big, 2)?;
    let yc: Vec<T> = random_input(&mut r, &[n, c, 1, 1]);
    check_reweight(&xb, &big, &yc, &[n, c, 1, 1], 2)?;

    // Prototype case by hand: sim[n, c] = cos(x[0, c], y[n, c]), weighted = y · sim[n, c].
    let got = cpu::reweight_channels(&xp, &proto, &yb, &big, 2, None)?;
    ensure!(got.similarity_shape == [n, c] && got.weighted_shape == big);
    let hw = h * w;
    for ni in 0..n {
        for ci in 0..c {
            let a = to_f64s(&xp[ci * hw..(ci + 1) * hw]);
            let off = (ni * c + ci) * hw;
            let b = to_f64s(&yb[off..off + hw]);
            let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let cos = dot
                / (a.iter().map(|x| x * x).sum::<f64>().sqrt()
                    * b.iter().map(|x| x * x).sum::<f64>().sqrt());
            let what = format!("prototype n {ni} c {ci}");
            assert_close(&got.similarity[ni * c + ci..][..1], &[cos], &what);
            // weighted = y · (returned similarity), rounded once to T.
            let sim = got.similarity[ni * c + ci].to_f64();
            let want: Vec<T> = b.iter().map(|v| T::from_f64(v * sim)).collect();
            ensure!(
                same_bits(&got.weighted[off..off + hw], &want),
                "{what}: weighted"
            );
        }
    }
    Ok(())
}
per_dtype!(reweight_broadcasting, reweight_broadcast, 6100);
