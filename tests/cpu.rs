//! Behaviour tests of the CPU backend against the independent f64 reference in
//! `tests/common` (SPEC §2): random batteries per dtype, shapes large enough for the
//! multithreaded and split paths (edge cases and errors: tests/cpu_edges.rs), the PyTorch forum thread
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
