//! Behaviour tests of the CPU backend's pairwise similarity against the independent f64
//! reference in `tests/common/pairwise.rs`: a battery of random sizes (odd N, M, D including
//! 1, 3, 127, 1000, 4097), both layouts of each set, batched and shared sets, all four
//! dtypes, every entry point; then ties, NaN, zero vectors, the seed's bmm example, blocks,
//! and every error path (with outputs left untouched).

#[macro_use]
mod common;

use anyhow::{ensure, Result};
use common::pairwise::{set_shape, split_weights, RefMatrix, RefSet};
use common::*;
use cosim::pairwise::{Layout, PairPlan, Precision, TopK};
use cosim::{bf16, cpu, f16, Element, Error};
use rand::rngs::SmallRng;
use rand::Rng;

/// PyTorch's default eps, written out independently of the library.
const EPS: f64 = 1e-8;

/// One pairwise problem: two sets, their layouts, and which carry a batch dim.
#[derive(Clone, Debug)]
struct Case {
    a_shape: Vec<usize>,
    a_layout: Layout,
    b_shape: Vec<usize>,
    b_layout: Layout,
}

impl Case {
    fn new(
        n: usize,
        m: usize,
        d: usize,
        layouts: (Layout, Layout),
        batches: (Option<usize>, Option<usize>),
    ) -> Case {
        Case {
            a_shape: set_shape(batches.0, n, d, layouts.0),
            a_layout: layouts.0,
            b_shape: set_shape(batches.1, m, d, layouts.1),
            b_layout: layouts.1,
        }
    }

    fn plan(&self) -> Result<PairPlan> {
        Ok(PairPlan::new(
            &self.a_shape,
            self.a_layout,
            &self.b_shape,
            self.b_layout,
        )?)
    }

    fn inputs<T: Element>(&self, r: &mut SmallRng) -> (Vec<T>, Vec<T>) {
        (
            random_input(r, &self.a_shape),
            random_input(r, &self.b_shape),
        )
    }

    fn reference<T: Element>(&self, a: &[T], b: &[T], eps: f64) -> RefMatrix {
        RefMatrix::of(
            a,
            &self.a_shape,
            self.a_layout,
            b,
            &self.b_shape,
            self.b_layout,
            eps,
        )
    }
}

const LAYOUTS: [(Layout, Layout); 4] = [
    (Layout::Rows, Layout::Rows),
    (Layout::Cols, Layout::Rows),
    (Layout::Rows, Layout::Cols),
    (Layout::Cols, Layout::Cols),
];

/// (n, m, d) of the battery: odd sizes, the D values, small enough for a debug build.
const SIZES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (3, 5, 3),
    (127, 3, 127),
    (5, 127, 1000),
    (3, 2, 4097),
    (17, 127, 16),
    (1000, 3, 3),
    (3, 1000, 5),
    (2, 300, 4097), // f16/bf16: several column tiles of converted b per task
    (64, 65, 127),
];

/// Which sets have a batch dim: none, both, only a (b shared), only b (a shared).
fn batching(i: usize, r: &mut SmallRng) -> (Option<usize>, Option<usize>) {
    let b = r.random_range(1..=3);
    match i % 4 {
        0 => (None, None),
        1 => (Some(b), Some(b)),
        2 => (Some(b), None),
        _ => (None, Some(b)),
    }
}

// ---------------------------------------------------------------------------------------------
// The battery: every entry point on every case
// ---------------------------------------------------------------------------------------------

fn battery<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    for (ci, &(n, m, d)) in SIZES.iter().enumerate() {
        // Two cases per size, with different layouts and batching.
        for rep in 0..2 {
            let i = 2 * ci + rep;
            let mut bt = batching(i + seed as usize, &mut r);
            if n * m * d > 200_000 {
                // Keep the expensive sizes unbatched (still with a batch dim on one side).
                bt = (bt.0.map(|_| 1), bt.1.map(|_| 1));
            }
            let case = Case::new(n, m, d, LAYOUTS[(i + rep) % 4], bt);
            check_case::<T>(&case, &mut r, i).map_err(|e| anyhow::anyhow!("{case:?}: {e}"))?;
        }
    }
    Ok(())
}

fn check_case<T: Element>(case: &Case, r: &mut SmallRng, i: usize) -> Result<()> {
    let what = format!("{case:?}");
    let eps = if i.is_multiple_of(3) { 0.0 } else { EPS };
    let plan = case.plan()?.eps(Some(eps))?;
    let (a, b) = case.inputs::<T>(r);
    let want = case.reference(&a, &b, eps);
    let (n, m) = (want.n(), want.m());
    let lead = want.lead();
    let with = |tail: &[usize]| [&lead[..], tail].concat();

    // The matrix, allocated and into a poisoned buffer.
    let s = cpu::pairwise_similarity(&plan, &a, &b)?;
    ensure!(s.shape == with(&[n, m]), "{what}: shape {:?}", s.shape);
    assert_close(&s.values, &want.flat(), &what);
    assert_unit_bounded(&s.values, &what);
    let mut out: Vec<T> = poisoned(s.values.len(), poison_for(i));
    let shape = cpu::pairwise_similarity_into(&plan, &mut out, &a, &b)?;
    ensure!(
        shape == s.shape && same_bits(&out, &s.values),
        "{what}: _into"
    );
    // Precision::Fast computes the same on the CPU.
    let fast = cpu::pairwise_similarity(&plan.clone().precision(Precision::Fast), &a, &b)?;
    ensure!(same_bits(&fast.values, &s.values), "{what}: Fast differs");

    // Blocks of a few rows (a single row when budget is tiny), concatenated.
    let budget = [1, 3 * m * std::mem::size_of::<T>(), usize::MAX][i % 3];
    let mut cat = Vec::new();
    cpu::pairwise_similarity_blocks(&plan, &a, &b, budget, |blk| {
        cat.extend_from_slice(blk.values);
        Ok::<(), Error>(())
    })?;
    ensure!(
        same_bits(&cat, &s.values),
        "{what}: blocks differ from the matrix"
    );

    // Top-k for k = 1, a middle k, and k = M, plus the _into form.
    for k in [1, (m / 2).max(1), m] {
        let t = cpu::pairwise_top_k(&plan, &a, &b, k)?;
        check_top_k(&t, &want, k, &format!("{what} k={k}"));
        let mut v: Vec<T> = poisoned(t.values.len(), poison_for(i));
        let mut ix = vec![u32::MAX; t.indices.len()];
        let shape = cpu::pairwise_top_k_into(&plan, &mut v, &mut ix, &a, &b, k)?;
        ensure!(
            shape == t.shape && same_bits(&v, &t.values) && ix == t.indices,
            "{what}: top_k_into"
        );
    }
    // Argmax: top-1 without the k dim.
    let am = cpu::pairwise_argmax(&plan, &a, &b)?;
    ensure!(am.shape == with(&[n]), "{what}: argmax shape");
    let t1 = cpu::pairwise_top_k(&plan, &a, &b, 1)?;
    ensure!(
        same_bits(&am.values, &t1.values) && am.indices == t1.indices,
        "{what}: argmax differs from top-1"
    );

    // Means by the identity against the brute-force means of the reference matrix.
    let rm = cpu::pairwise_row_mean(&plan, &a, &b)?;
    ensure!(rm.shape == with(&[n]), "{what}: row mean shape");
    assert_close(&rm.values, &want.row_means(), &format!("{what} row mean"));
    let mean = cpu::pairwise_mean(&plan, &a, &b)?;
    ensure!(mean.shape == lead, "{what}: mean shape");
    assert_close(&mean.values, &want.means(), &format!("{what} mean"));

    // Greedy set scores, without and with weights.
    check_greedy::<T>(&plan, case, &a, &b, &want, None, &what)?;
    let wa = random_in::<T>(r, plan.a_vectors(), 0.1, 3.0);
    let wb = random_in::<T>(r, plan.b_vectors(), 0.1, 3.0);
    check_greedy(&plan, case, &a, &b, &want, Some((&wa, &wb)), &what)?;
    Ok(())
}

fn poison_for(case: usize) -> f64 {
    if case.is_multiple_of(2) {
        f64::NAN
    } else {
        12345.0
    }
}

fn check_greedy<T: Element>(
    plan: &PairPlan,
    case: &Case,
    a: &[T],
    b: &[T],
    want: &RefMatrix,
    weights: Option<(&[T], &[T])>,
    what: &str,
) -> Result<()> {
    let got = cpu::set_similarity(plan, a, b, weights.map(|w| w.0), weights.map(|w| w.1))?;
    ensure!(got.shape == want.lead(), "{what}: set scores shape");
    let sa = RefSet::read(a, &case.a_shape, case.a_layout);
    let sb = RefSet::read(b, &case.b_shape, case.b_layout);
    let split = |w: &[T], s: &RefSet| split_weights(&to_f64s(w), s, want.batches());
    let (wa, wb) = match weights {
        Some((wa, wb)) => (Some(split(wa, &sa)), Some(split(wb, &sb))),
        None => (None, None),
    };
    let ref_scores = want.greedy(wa.as_deref(), wb.as_deref());
    let pick = |c: usize| ref_scores.iter().map(|s| s[c]).collect::<Vec<f64>>();
    let w = if weights.is_some() {
        "weighted"
    } else {
        "plain"
    };
    assert_close(&got.precision, &pick(0), &format!("{what} {w} precision"));
    assert_close(&got.recall, &pick(1), &format!("{what} {w} recall"));
    assert_close(&got.f1, &pick(2), &format!("{what} {w} f1"));
    Ok(())
}

/// Checks a top-k result against the sorted reference: shape; distinct indices in range;
/// each value equal (within tolerance) to the reference entry at its index; values sorted;
/// entries exactly equal in the reference (duplicate vectors, NaN) ordered by index; and as a
/// set, the reference's top k up to entries within tolerance of the k-th.
fn check_top_k<T: Element>(got: &TopK<Vec<T>, Vec<u32>>, want: &RefMatrix, k: usize, what: &str) {
    let (n, m) = (want.n(), want.m());
    assert_eq!(got.shape, [&want.lead()[..], &[n, k]].concat(), "{what}");
    let tol = 4.0 * tolerance::<T>();
    // NaN ranks above every number.
    let score = |v: f64| if v.is_nan() { f64::INFINITY } else { v };
    for b in 0..want.batches() {
        for i in 0..n {
            let at = (b * n + i) * k;
            let (vals, idx) = (&got.values[at..at + k], &got.indices[at..at + k]);
            let row = &want.s[b][i];
            let ctx = format!("{what} batch {b} row {i}: got {idx:?}");
            let mut seen = vec![false; m];
            for (p, (&v, &j)) in vals.iter().zip(idx).enumerate() {
                let j = j as usize;
                assert!(
                    j < m && !seen[j],
                    "{ctx}: index {j} repeated or out of range"
                );
                seen[j] = true;
                assert_close(&[v], &[row[j]], &format!("{ctx}: value {p}"));
                if p > 0 {
                    let (prev, pj) = (vals[p - 1].to_f64(), idx[p - 1] as usize);
                    assert!(score(prev) >= score(v.to_f64()), "{ctx}: not sorted at {p}");
                    let exact_tie = row[pj].to_bits() == row[j].to_bits()
                        || (row[pj].is_nan() && row[j].is_nan());
                    assert!(!exact_tie || pj < j, "{ctx}: tie not by lower index at {p}");
                }
            }
            let ranked = want.ranked(b, i);
            let kth = score(ranked[k - 1].0);
            for &j in idx {
                assert!(
                    score(row[j as usize]) >= kth - tol,
                    "{ctx}: {j} is not among the top {k}"
                );
            }
            for &(v, j) in &ranked {
                if score(v) > kth + tol {
                    assert!(seen[j], "{ctx}: missing {j} (value {v})");
                }
            }
        }
    }
}

per_dtype!(battery_all_entry_points, battery, 100);

// ---------------------------------------------------------------------------------------------
// Ranking: exact ties, NaN, k at the limits
// ---------------------------------------------------------------------------------------------

/// b made of a few distinct vectors, each repeated at several columns: every row has exact
/// ties, which must come out by the lower index; compared index for index with the reference.
fn ties<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    let (n, d, distinct) = (9, 24, 4);
    let protos: Vec<Vec<T>> = (0..distinct).map(|_| random_vec(&mut r, d)).collect();
    let picks: Vec<usize> = (0..37).map(|_| r.random_range(0..distinct)).collect();
    let m = picks.len();
    for (li, &(la, lb)) in LAYOUTS.iter().enumerate() {
        let case = Case::new(n, m, d, (la, lb), (None, None));
        let a: Vec<T> = random_input(&mut r, &case.a_shape);
        let rows: Vec<&Vec<T>> = picks.iter().map(|&p| &protos[p]).collect();
        let b: Vec<T> = match lb {
            Layout::Rows => rows.iter().flat_map(|v| v.iter().copied()).collect(),
            Layout::Cols => (0..d)
                .flat_map(|k| rows.iter().map(move |v| v[k]))
                .collect(),
        };
        let want = case.reference(&a, &b, EPS);
        let plan = case.plan()?;
        for k in [1, 5, m] {
            let got = cpu::pairwise_top_k(&plan, &a, &b, k)?;
            check_top_k(&got, &want, k, &format!("ties layout {li} k={k}"));
            for i in 0..n {
                let ranked: Vec<u32> = want.ranked(0, i)[..k].iter().map(|x| x.1 as u32).collect();
                ensure!(
                    got.indices[i * k..(i + 1) * k] == ranked[..],
                    "ties layout {li} k={k} row {i}: got {:?}, want {ranked:?}",
                    &got.indices[i * k..(i + 1) * k]
                );
            }
        }
        let am = cpu::pairwise_argmax(&plan, &a, &b)?;
        for i in 0..n {
            ensure!(
                am.indices[i] as usize == want.ranked(0, i)[0].1,
                "argmax tie row {i}"
            );
        }
        // Precision and recall see the duplicates too.
        let s = cpu::set_similarity(&plan, &a, &b, None, None)?;
        let g = want.greedy(None, None);
        assert_close(&s.precision, &[g[0][0]], "ties precision");
        assert_close(&s.recall, &[g[0][1]], "ties recall");
    }
    Ok(())
}

per_dtype!(top_k_exact_ties_by_lower_index, ties, 200);

/// A NaN in a vector of b makes its column NaN in every row, ranked first (lower index
/// first); a NaN in a vector of a makes its whole row NaN; set scores become NaN.
fn nan_ranks_first<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    let (n, m, d) = (4, 11, 7);
    let case = Case::new(n, m, d, (Layout::Rows, Layout::Cols), (None, None));
    let (mut a, mut b) = case.inputs::<T>(&mut r);
    let nan = T::from_f64(f64::NAN);
    // Column 6 and 2 of b ([D, M]: component 3 of vectors 6 and 2), row 1 of a.
    b[3 * m + 6] = nan;
    b[m + 2] = nan;
    a[d + 4] = nan;
    let want = case.reference(&a, &b, EPS);
    let plan = case.plan()?;
    for k in [1, 2, 3, m] {
        let got = cpu::pairwise_top_k(&plan, &a, &b, k)?;
        check_top_k(&got, &want, k, &format!("nan k={k}"));
        for i in 0..n {
            let idx = &got.indices[i * k..(i + 1) * k];
            let expect: &[u32] = if i == 1 { &[0, 1, 2] } else { &[2, 6, 0] };
            let head = k.min(if i == 1 { 3 } else { 2 });
            ensure!(idx[..head] == expect[..head], "nan row {i} k={k}: {idx:?}");
            ensure!(
                got.values[i * k].to_f64().is_nan(),
                "nan row {i}: first value"
            );
        }
    }
    let s = cpu::set_similarity(&plan, &a, &b, None, None)?;
    ensure!(s.precision[0].to_f64().is_nan() && s.recall[0].to_f64().is_nan());
    let m_ = cpu::pairwise_mean(&plan, &a, &b)?;
    ensure!(m_.values[0].to_f64().is_nan(), "mean with NaN input");
    Ok(())
}

per_dtype!(top_k_nan_first, nan_ranks_first, 300);

#[test]
fn k_limits() -> Result<()> {
    let case = Case::new(3, 4, 5, (Layout::Rows, Layout::Rows), (None, None));
    let (a, b) = case.inputs::<f32>(&mut rng(7));
    let plan = case.plan()?;
    ensure!(cpu::pairwise_top_k(&plan, &a, &b, 4)?.shape == vec![3, 4]);
    for k in [0, 5] {
        let mut v: Vec<f32> = poisoned(3 * k, 7.0);
        let mut ix = vec![9u32; 3 * k];
        let e = cpu::pairwise_top_k(&plan, &a, &b, k).unwrap_err();
        ensure!(matches!(e, Error::BadK { k: kk, m: 4 } if kk == k), "{e}");
        let e = cpu::pairwise_top_k_into(&plan, &mut v, &mut ix, &a, &b, k).unwrap_err();
        ensure!(matches!(e, Error::BadK { .. }), "{e}");
        ensure!(v.iter().all(|&x| x == 7.0) && ix.iter().all(|&x| x == 9));
    }
    Ok(())
}

/// k larger than a column tile of f16 (several tiles per row), and a large k.
#[test]
fn top_k_across_column_tiles() -> Result<()> {
    let case = Case::new(3, 700, 4097, (Layout::Cols, Layout::Rows), (None, None));
    let (a, b) = case.inputs::<f16>(&mut rng(11));
    let want = case.reference(&a, &b, EPS);
    let plan = case.plan()?;
    for k in [1, 10, 300, 700] {
        check_top_k(
            &cpu::pairwise_top_k(&plan, &a, &b, k)?,
            &want,
            k,
            &format!("k={k}"),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The seed's bmm example, zero vectors, means
// ---------------------------------------------------------------------------------------------

/// The seed's code: `x, y` of shape `[B, D, N]`, normalised along D, then
/// `bmm(x.transpose(1, 2), y)` → `[B, N, M]`. Reproduced here with explicit loops in f64.
fn seed_bmm<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    let (bs, d, n, m) = (3, 33, 17, 9);
    let x: Vec<T> = random_input(&mut r, &[bs, d, n]);
    let y: Vec<T> = random_input(&mut r, &[bs, d, m]);
    // F.normalize(x, dim=1): each column divided by max(‖column‖, eps).
    let normalise = |t: &[T], cols: usize| -> Vec<f64> {
        let mut out = to_f64s(t);
        for b in 0..bs {
            for j in 0..cols {
                let at = |k: usize| b * d * cols + k * cols + j;
                let norm = (0..d).map(|k| out[at(k)].powi(2)).sum::<f64>().sqrt();
                for k in 0..d {
                    out[at(k)] /= norm.max(EPS);
                }
            }
        }
        out
    };
    let (xn, yn) = (normalise(&x, n), normalise(&y, m));
    let mut want = vec![0.0; bs * n * m];
    for b in 0..bs {
        for i in 0..n {
            for j in 0..m {
                // bmm(xᵀ, y)[b, i, j] = Σ_k xᵀ[b, i, k] · y[b, k, j] = Σ_k x[b, k, i] · y[b, k, j].
                want[(b * n + i) * m + j] = (0..d)
                    .map(|k| xn[b * d * n + k * n + i] * yn[b * d * m + k * m + j])
                    .sum();
            }
        }
    }
    let plan = PairPlan::new(&[bs, d, n], Layout::Cols, &[bs, d, m], Layout::Cols)?;
    let got = cpu::pairwise_similarity(&plan, &x, &y)?;
    ensure!(got.shape == vec![bs, n, m]);
    assert_close(&got.values, &want, "seed bmm");
    Ok(())
}

per_dtype!(seed_bmm_example, seed_bmm, 400);

/// Zero vectors give 0 everywhere, with the default eps and with eps = 0 (not NaN).
fn zero_vectors<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    let (n, m, d) = (3, 4, 6);
    for eps in [Some(EPS), Some(0.0), None] {
        let case = Case::new(n, m, d, (Layout::Rows, Layout::Cols), (None, None));
        let (mut a, mut b) = case.inputs::<T>(&mut r);
        a[d..2 * d].fill(T::default()); // vector 1 of a
        for k in 0..d {
            b[k * m + 3] = T::default(); // vector 3 of b
        }
        let plan = case.plan()?.eps(eps)?;
        let s = cpu::pairwise_similarity(&plan, &a, &b)?;
        let want = case.reference(&a, &b, eps.unwrap_or(EPS));
        assert_close(&s.values, &want.flat(), "zero vectors");
        for j in 0..m {
            ensure!(
                s.values[m + j].to_f64() == 0.0,
                "row of the zero vector: {:?}",
                s.values
            );
        }
        for i in 0..n {
            ensure!(
                s.values[i * m + 3].to_f64() == 0.0,
                "column of the zero vector"
            );
        }
        let rm = cpu::pairwise_row_mean(&plan, &a, &b)?;
        ensure!(rm.values[1].to_f64() == 0.0, "row mean of the zero vector");
        let t = cpu::pairwise_top_k(&plan, &a, &b, m)?;
        ensure!(t.values[m..2 * m].iter().all(|v| v.to_f64() == 0.0));
        ensure!(
            t.indices[m..2 * m] == [0, 1, 2, 3],
            "all-zero row ranks by index"
        );
        let g = cpu::set_similarity(&plan, &a, &b, None, None)?;
        ensure!(!g.f1[0].to_f64().is_nan(), "f1 with zero vectors");
    }
    // Everything zero: every result 0.
    let plan = PairPlan::new(&[2, 3], Layout::Rows, &[3, 4], Layout::Cols)?.eps(Some(0.0))?;
    let (a, b) = (vec![T::default(); 6], vec![T::default(); 12]);
    ensure!(cpu::pairwise_similarity(&plan, &a, &b)?
        .values
        .iter()
        .all(|v| v.to_f64() == 0.0));
    ensure!(cpu::pairwise_mean(&plan, &a, &b)?.values[0].to_f64() == 0.0);
    let g = cpu::set_similarity(&plan, &a, &b, None, None)?;
    ensure!(g.precision[0].to_f64() == 0.0 && g.f1[0].to_f64() == 0.0);
    Ok(())
}

per_dtype!(zero_vectors_give_zero, zero_vectors, 500);

/// Zero-length vectors (D = 0): every similarity is 0.
#[test]
fn zero_length_vectors() -> Result<()> {
    let plan = PairPlan::new(&[3, 0], Layout::Rows, &[0, 2], Layout::Cols)?;
    let (a, b): (Vec<f32>, Vec<f32>) = (vec![], vec![]);
    let s = cpu::pairwise_similarity(&plan, &a, &b)?;
    ensure!(s.shape == vec![3, 2] && s.values.iter().all(|&v| v == 0.0));
    let t = cpu::pairwise_top_k(&plan, &a, &b, 2)?;
    ensure!(t.indices == vec![0, 1, 0, 1, 0, 1]);
    ensure!(cpu::pairwise_mean(&plan, &a, &b)?.values == vec![0.0]);
    ensure!(cpu::pairwise_row_mean(&plan, &a, &b)?.values == vec![0.0; 3]);
    ensure!(cpu::set_similarity(&plan, &a, &b, None, None)?.f1 == vec![0.0]);
    Ok(())
}

/// Means on larger sets, where the identity and the brute force sum very differently.
fn means_large<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    for (li, &layouts) in LAYOUTS.iter().enumerate() {
        let case = Case::new(300, 257, 31, layouts, (Some(2), [None, Some(2)][li % 2]));
        let (a, b) = case.inputs::<T>(&mut r);
        let want = case.reference(&a, &b, EPS);
        let plan = case.plan()?;
        assert_close(
            &cpu::pairwise_mean(&plan, &a, &b)?.values,
            &want.means(),
            "mean",
        );
        assert_close(
            &cpu::pairwise_row_mean(&plan, &a, &b)?.values,
            &want.row_means(),
            "row mean",
        );
    }
    Ok(())
}

per_dtype!(mean_identity_vs_brute_force, means_large, 600);

// ---------------------------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------------------------

#[test]
fn blocks_in_order_and_single_rows() -> Result<()> {
    let case = Case::new(7, 5, 9, (Layout::Cols, Layout::Rows), (Some(2), None));
    let (a, b) = case.inputs::<f32>(&mut rng(21));
    let plan = case.plan()?;
    let full = cpu::pairwise_similarity(&plan, &a, &b)?;
    for (budget, per) in [(0, 1), (1, 1), (5 * 4, 1), (3 * 5 * 4 + 3, 3), (1 << 30, 7)] {
        let mut seen = Vec::new();
        let mut cat = Vec::new();
        cpu::pairwise_similarity_blocks(&plan, &a, &b, budget, |blk| {
            ensure!(blk.values.len() == blk.rows * 5 && blk.rows <= per);
            seen.push((blk.batch, blk.row, blk.rows));
            cat.extend_from_slice(blk.values);
            Ok(())
        })?;
        let want: Vec<(usize, usize, usize)> = (0..2)
            .flat_map(|bt| (0..7).step_by(per).map(move |r| (bt, r, per.min(7 - r))))
            .collect();
        ensure!(seen == want, "budget {budget}: {seen:?}");
        ensure!(same_bits(&cat, &full.values), "budget {budget}: values");
    }
    Ok(())
}

#[test]
fn blocks_callback_error_stops() -> Result<()> {
    let case = Case::new(6, 4, 3, (Layout::Rows, Layout::Rows), (None, None));
    let (a, b) = case.inputs::<f64>(&mut rng(22));
    let plan = case.plan()?;
    let mut calls = 0;
    let r = cpu::pairwise_similarity_blocks(&plan, &a, &b, 1, |_| {
        calls += 1;
        if calls == 2 {
            anyhow::bail!("disk full");
        }
        Ok(())
    });
    ensure!(calls == 2, "{calls} calls");
    ensure!(r.unwrap_err().to_string() == "disk full");
    // A validation error comes back through E::from, before any call.
    let mut calls = 0;
    let r = cpu::pairwise_similarity_blocks(&plan, &a[1..], &b, 1, |_| {
        calls += 1;
        Ok::<(), anyhow::Error>(())
    });
    let e = r.unwrap_err();
    ensure!(calls == 0 && e.downcast_ref::<Error>().is_some(), "{e}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors: returned, never a panic, outputs untouched
// ---------------------------------------------------------------------------------------------

#[test]
fn plan_errors() {
    let rows = Layout::Rows;
    let cols = Layout::Cols;
    let e = PairPlan::new(&[4], rows, &[3, 4], rows).unwrap_err();
    assert!(matches!(e, Error::PairShape { which: "a", .. }), "{e}");
    let e = PairPlan::new(&[2, 3, 4, 5], rows, &[3, 4], rows).unwrap_err();
    assert!(matches!(e, Error::PairShape { which: "a", .. }), "{e}");
    let e = PairPlan::new(&[3, 4], rows, &[4, 3], rows).unwrap_err();
    assert!(e.to_string().contains("vector lengths"), "{e}");
    let e = PairPlan::new(&[3, 4], rows, &[5, 3], cols).unwrap_err();
    assert!(e.to_string().contains("vector lengths"), "{e}");
    let e = PairPlan::new(&[2, 3, 4], rows, &[3, 5, 4], rows).unwrap_err();
    assert!(e.to_string().contains("batch sizes"), "{e}");
    let e = PairPlan::new(&[0, 4], rows, &[3, 4], rows).unwrap_err();
    assert!(matches!(e, Error::EmptySet { which: "a", .. }), "{e}");
    let e = PairPlan::new(&[3, 4], rows, &[4, 0], cols).unwrap_err();
    assert!(matches!(e, Error::EmptySet { which: "b", .. }), "{e}");
    for eps in [-1.0, f64::NAN] {
        let p = PairPlan::new(&[3, 4], rows, &[5, 4], rows).unwrap();
        assert!(matches!(p.eps(Some(eps)), Err(Error::BadEps(_))));
    }
}

/// Every entry point with a bad input: the error comes back and the output buffers keep
/// their poison.
#[test]
fn call_errors_leave_outputs_untouched() -> Result<()> {
    let case = Case::new(3, 4, 5, (Layout::Rows, Layout::Cols), (Some(2), None));
    let (a, b) = case.inputs::<f32>(&mut rng(31));
    let plan = case.plan()?;
    let mut bad_eps = plan.clone();
    bad_eps.eps = f64::NAN;
    let mut edited = plan.clone();
    edited.n = 2; // public fields edited after validation: the buffers no longer fit
    let wa = vec![1.0f32; plan.a_vectors()];
    let wb = vec![1.0f32; plan.b_vectors()];
    let (mlen, klen) = (2 * 3 * 4, 2 * 3 * 2);
    let b_long = [&b[..], &[0.0]].concat();
    type Call<'x> = (&'x str, &'x PairPlan, &'x [f32], &'x [f32], usize, usize);
    let calls: Vec<Call> = vec![
        // (what, plan, a, b, matrix out len, top-k out len)
        ("short a", &plan, &a[1..], &b, mlen, klen),
        ("long b", &plan, &a, &b_long, mlen, klen),
        ("bad eps", &bad_eps, &a, &b, mlen, klen),
        ("edited plan", &edited, &a, &b, mlen, klen),
        ("short out", &plan, &a, &b, mlen - 1, klen - 1),
        ("long out", &plan, &a, &b, mlen + 1, klen + 1),
    ];
    for (what, p, a, b, ml, kl) in calls {
        let mut out: Vec<f32> = poisoned(ml, 7.0);
        ensure!(
            cpu::pairwise_similarity_into(p, &mut out, a, b).is_err(),
            "{what}"
        );
        ensure!(out.iter().all(|&x| x == 7.0), "{what}: out written");
        let (mut v, mut ix) = (poisoned::<f32>(kl, 7.0), vec![9u32; kl]);
        ensure!(
            cpu::pairwise_top_k_into(p, &mut v, &mut ix, a, b, 2).is_err(),
            "{what}"
        );
        ensure!(
            v.iter().all(|&x| x == 7.0) && ix.iter().all(|&x| x == 9),
            "{what}: top-k"
        );
        if ml != mlen {
            continue; // the remaining entry points allocate their outputs
        }
        let mut called = false;
        let r = cpu::pairwise_similarity_blocks(p, a, b, 16, |_| {
            called = true;
            Ok::<(), Error>(())
        });
        ensure!(r.is_err() && !called, "{what}: blocks");
        ensure!(cpu::pairwise_similarity(p, a, b).is_err(), "{what}");
        ensure!(cpu::pairwise_top_k(p, a, b, 2).is_err(), "{what}");
        ensure!(cpu::pairwise_argmax(p, a, b).is_err(), "{what}");
        ensure!(cpu::pairwise_row_mean(p, a, b).is_err(), "{what}");
        ensure!(cpu::pairwise_mean(p, a, b).is_err(), "{what}");
        ensure!(
            cpu::set_similarity(p, a, b, Some(&wa), Some(&wb)).is_err(),
            "{what}"
        );
    }
    // Error kinds.
    let e = cpu::pairwise_similarity(&plan, &a[1..], &b).unwrap_err();
    ensure!(matches!(e, Error::LenMismatch { what: "a", .. }), "{e}");
    let e = cpu::pairwise_similarity(&bad_eps, &a, &b).unwrap_err();
    ensure!(matches!(e, Error::BadEps(_)), "{e}");
    let e = cpu::pairwise_similarity(&edited, &a, &b).unwrap_err();
    ensure!(matches!(e, Error::LenMismatch { .. }), "{e}");
    let mut out = vec![0f32; mlen + 1];
    let e = cpu::pairwise_similarity_into(&plan, &mut out, &a, &b).unwrap_err();
    ensure!(
        matches!(e, Error::OutLenMismatch { what: "out", .. }),
        "{e}"
    );
    // Weights of the wrong length: one per vector of all of a (2 batches × 3), of b (4).
    for (wa_len, wb_len) in [(3, 4), (6, 5), (7, 4)] {
        let (wa, wb) = (vec![1.0f32; wa_len], vec![1.0f32; wb_len]);
        let e = cpu::set_similarity(&plan, &a, &b, Some(&wa), Some(&wb)).unwrap_err();
        ensure!(matches!(e, Error::OutLenMismatch { .. }), "{e}");
        let e = cpu::set_similarity(&plan, &a, &b, Some(&wa), None);
        ensure!(e.is_err() == (wa_len != 6));
    }
    ensure!(cpu::set_similarity(&plan, &a, &b, Some(&wa), Some(&wb)).is_ok());
    Ok(())
}

/// A set without a batch dim shared by a batched one equals that set repeated per batch.
#[test]
fn shared_set_equals_repeated() -> Result<()> {
    let mut r = rng(41);
    let (bs, n, m, d) = (3, 5, 6, 7);
    let a: Vec<f64> = random_input(&mut r, &[bs, d, n]);
    let b: Vec<f64> = random_input(&mut r, &[m, d]);
    let shared = PairPlan::new(&[bs, d, n], Layout::Cols, &[m, d], Layout::Rows)?;
    let b3: Vec<f64> = (0..bs).flat_map(|_| b.iter().copied()).collect();
    let full = PairPlan::new(&[bs, d, n], Layout::Cols, &[bs, m, d], Layout::Rows)?;
    let x = cpu::pairwise_similarity(&shared, &a, &b)?;
    let y = cpu::pairwise_similarity(&full, &a, &b3)?;
    ensure!(x == y);
    let wb: Vec<f64> = random_in(&mut r, m, 0.5, 2.0);
    let wb3: Vec<f64> = (0..bs).flat_map(|_| wb.iter().copied()).collect();
    let x = cpu::set_similarity(&shared, &a, &b, None, Some(&wb))?;
    let y = cpu::set_similarity(&full, &a, &b3, None, Some(&wb3))?;
    ensure!(x == y);
    Ok(())
}

/// Zero-length vectors allow sets of any size in empty buffers: results too large to index
/// or to allocate are errors, not panics or aborts.
#[test]
fn huge_empty_sets_are_errors() -> Result<()> {
    let (a, b): (Vec<f32>, Vec<f32>) = (vec![], vec![]);
    let m = (1usize << 32) + 1;
    let plan = PairPlan::new(&[1, 0], Layout::Rows, &[m, 0], Layout::Rows)?;
    let e = cpu::pairwise_top_k(&plan, &a, &b, 1).unwrap_err();
    ensure!(matches!(e, Error::IndexOverflow { .. }), "{e}");
    let e = cpu::pairwise_argmax(&plan, &a, &b).unwrap_err();
    ensure!(matches!(e, Error::IndexOverflow { .. }), "{e}");
    let big = 1usize << 33;
    let plan = PairPlan::new(&[big, 0], Layout::Rows, &[0, big], Layout::Cols)?;
    let e = cpu::pairwise_similarity(&plan, &a, &b).unwrap_err();
    ensure!(matches!(e, Error::SizeOverflow { .. }), "{e}");
    let plan = PairPlan::new(&[1 << 62, 0], Layout::Rows, &[4, 0], Layout::Rows)?;
    let e = cpu::pairwise_top_k(&plan, &a, &b, 4).unwrap_err();
    ensure!(matches!(e, Error::SizeOverflow { .. }), "{e}");
    let e = cpu::pairwise_row_mean(&plan, &a, &b).unwrap_err();
    ensure!(matches!(e, Error::SizeOverflow { .. }), "{e}");
    let e = cpu::pairwise_mean(&plan, &a, &b).unwrap_err();
    ensure!(matches!(e, Error::SizeOverflow { .. }), "{e}");
    Ok(())
}
