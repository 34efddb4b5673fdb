//! Gradients of the along, per-channel and reweighting similarities on the CPU: against
//! central finite differences of the forward in f64 on random shapes (broadcasting both ways,
//! negative dims, size-1 reduced dims, rank 1..5), against the analytic gradient of the
//! composed formula written here with plain loops, every dtype against the f64 gradient, and
//! the edges: norms below eps, zero vectors, NaN, bad input.

mod common;

use anyhow::Result;
use common::random_broadcast_case;
use cosim::cpu;
use cosim::pairwise::Layout;
use cosim::{bf16, f16, Element, Error};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn random(r: &mut SmallRng, n: usize) -> Vec<f64> {
    // Away from zero, so no vector is near the eps kink by chance.
    (0..n)
        .map(|_| {
            let v: f64 = r.random_range(0.2..1.5);
            if r.random_bool(0.5) {
                v
            } else {
                -v
            }
        })
        .collect()
}

/// `Σ grad · f(x1, x2)` differentiated by central differences, for each element of both inputs.
fn finite_differences(
    x1: &[f64],
    x2: &[f64],
    grad: &[f64],
    f: impl Fn(&[f64], &[f64]) -> Vec<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let h = 1e-6;
    let loss = |a: &[f64], b: &[f64]| -> f64 { f(a, b).iter().zip(grad).map(|(v, g)| v * g).sum() };
    let diff = |which: usize| -> Vec<f64> {
        let n = if which == 1 { x1.len() } else { x2.len() };
        (0..n)
            .map(|j| {
                let (mut a, mut b) = (x1.to_vec(), x2.to_vec());
                let v = if which == 1 { &mut a } else { &mut b };
                v[j] += h;
                let up = loss(&a, &b);
                let v = if which == 1 { &mut a } else { &mut b };
                v[j] -= 2.0 * h;
                (up - loss(&a, &b)) / (2.0 * h)
            })
            .collect()
    };
    (diff(1), diff(2))
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}: element {i}: {g} vs {w} (tol {tol} × {scale})"
        );
    }
}

#[test]
fn along_matches_finite_differences_on_random_shapes() -> Result<()> {
    let mut r = SmallRng::seed_from_u64(12);
    for case in 0..150 {
        let (s1, s2, dim) = random_broadcast_case(&mut r, 5, 4);
        let eps = [None, Some(0.0), Some(1e-3)][case % 3];
        let x1 = random(&mut r, s1.iter().product());
        let x2 = random(&mut r, s2.iter().product());
        let out = cpu::cosine_similarity(&x1, &s1, &x2, &s2, dim, eps)?;
        let grad = random(&mut r, out.values.len());
        let (g1, g2) = cpu::cosine_similarity_backward(&x1, &s1, &x2, &s2, dim, eps, &grad)?;
        let (f1, f2) = finite_differences(&x1, &x2, &grad, |a, b| {
            cpu::cosine_similarity(a, &s1, b, &s2, dim, eps)
                .map(|s| s.values)
                .unwrap_or_default()
        });
        let what = format!("case {case}: {s1:?} {s2:?} dim {dim} eps {eps:?}");
        assert_close(&format!("{what} g1"), &g1, &f1, 1e-7);
        assert_close(&format!("{what} g2"), &g2, &f2, 1e-7);
    }
    Ok(())
}

/// The analytic gradient of `Σ_k x1·x2 / (max(‖x1‖, eps) · max(‖x2‖, eps))` for rank-3 shapes
/// (size-1 dims broadcast) reduced along `dim`, with plain loops: every broadcast position
/// adds its terms at the input elements it reads.
fn reference_3d(
    x1: &[f64],
    s1: [usize; 3],
    x2: &[f64],
    s2: [usize; 3],
    dim: usize,
    eps: f64,
    grad: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let full: Vec<usize> = (0..3).map(|i| s1[i].max(s2[i])).collect();
    let at = |s: [usize; 3], p: [usize; 3]| -> usize {
        let q: Vec<usize> = (0..3).map(|i| if s[i] == 1 { 0 } else { p[i] }).collect();
        (q[0] * s[1] + q[1]) * s[2] + q[2]
    };
    let (mut g1, mut g2) = (vec![0.0; x1.len()], vec![0.0; x2.len()]);
    let kept: Vec<usize> = (0..3).filter(|&i| i != dim).collect();
    let mut o = 0;
    for i in 0..full[kept[0]] {
        for j in 0..full[kept[1]] {
            let pos = |k: usize| {
                let mut p = [0; 3];
                p[kept[0]] = i;
                p[kept[1]] = j;
                p[dim] = k;
                p
            };
            let n = full[dim];
            let (mut dot, mut n1, mut n2) = (0.0, 0.0, 0.0);
            for k in 0..n {
                let (a, b) = (x1[at(s1, pos(k))], x2[at(s2, pos(k))]);
                dot += a * b;
                n1 += a * a;
                n2 += b * b;
            }
            let (c1, c2) = (n1.sqrt().max(eps), n2.sqrt().max(eps));
            let cos = dot / (c1 * c2);
            for k in 0..n {
                let (a, b) = (x1[at(s1, pos(k))], x2[at(s2, pos(k))]);
                let d1 = b / (c1 * c2) - if n1.sqrt() > eps { cos * a / n1 } else { 0.0 };
                let d2 = a / (c1 * c2) - if n2.sqrt() > eps { cos * b / n2 } else { 0.0 };
                g1[at(s1, pos(k))] += grad[o] * d1;
                g2[at(s2, pos(k))] += grad[o] * d2;
            }
            o += 1;
        }
    }
    (g1, g2)
}

#[test]
fn along_matches_the_composed_formula_and_every_dtype_the_f64_gradient() -> Result<()> {
    let mut r = SmallRng::seed_from_u64(34);
    let cases: &[([usize; 3], [usize; 3], usize, f64)] = &[
        ([3, 5, 4], [3, 5, 4], 1, 1e-8),
        ([3, 5, 4], [1, 5, 1], 1, 1e-8),
        ([3, 1, 4], [3, 5, 4], 2, 1e-8),
        ([2, 7, 3], [2, 7, 1], 0, 1e-8),
        // Every norm below eps: both clamped (constants), cos = dot / eps².
        ([2, 3, 4], [2, 3, 4], 2, 10.0),
        // Reduced dim of size 1.
        ([4, 1, 3], [4, 1, 3], 1, 1e-8),
    ];
    for &(s1, s2, dim, eps) in cases {
        let x1 = random(&mut r, s1.iter().product());
        let x2 = random(&mut r, s2.iter().product());
        let out: usize = (0..3)
            .filter(|&i| i != dim)
            .map(|i| s1[i].max(s2[i]))
            .product();
        let grad = random(&mut r, out);
        let (w1, w2) = reference_3d(&x1, s1, &x2, s2, dim, eps, &grad);
        let d = dim as isize;
        let (g1, g2) = cpu::cosine_similarity_backward(&x1, &s1, &x2, &s2, d, Some(eps), &grad)?;
        let what = format!("{s1:?} {s2:?} dim {dim} eps {eps}");
        assert_close(&format!("{what} f64 g1"), &g1, &w1, 1e-12);
        assert_close(&format!("{what} f64 g2"), &g2, &w2, 1e-12);
        // Each dtype on its own rounded inputs, against the f64 gradient of those inputs.
        #[allow(clippy::too_many_arguments)]
        fn typed<T: Element>(
            x1: &[f64],
            s1: &[usize],
            x2: &[f64],
            s2: &[usize],
            d: isize,
            eps: f64,
            grad: &[f64],
            tol: f64,
            what: &str,
        ) -> Result<()> {
            let cast = |v: &[f64]| v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>();
            let back = |v: &[T]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
            let (a, b, g) = (cast(x1), cast(x2), cast(grad));
            let (g1, g2) = cpu::cosine_similarity_backward(&a, s1, &b, s2, d, Some(eps), &g)?;
            let (w1, w2) = cpu::cosine_similarity_backward(
                &back(&a),
                s1,
                &back(&b),
                s2,
                d,
                Some(eps),
                &back(&g),
            )?;
            assert_close(&format!("{what} {} g1", T::NAME), &back(&g1), &w1, tol);
            assert_close(&format!("{what} {} g2", T::NAME), &back(&g2), &w2, tol);
            Ok(())
        }
        typed::<f32>(&x1, &s1, &x2, &s2, d, eps, &grad, 1e-5, &what)?;
        typed::<f16>(&x1, &s1, &x2, &s2, d, eps, &grad, 1e-2, &what)?;
        typed::<bf16>(&x1, &s1, &x2, &s2, d, eps, &grad, 3e-2, &what)?;
    }
    Ok(())
}

#[test]
fn zero_vectors_and_nan() -> Result<()> {
    // A zero vector with eps = 0: its forward is 0 by cosim's rule, its gradients 0 (PyTorch:
    // NaN); the other output's gradients are untouched by it.
    let x1 = [0.0f64, 0.0, 1.0, 2.0];
    let x2 = [3.0f64, 4.0, 2.0, -1.0];
    let (g1, g2) =
        cpu::cosine_similarity_backward(&x1, &[2, 2], &x2, &[2, 2], 1, Some(0.0), &[1.0, 1.0])?;
    assert_eq!(&g1[..2], &[0.0, 0.0]);
    assert_eq!(&g2[..2], &[0.0, 0.0]);
    assert!(g1[2..].iter().chain(&g2[2..]).all(|v| v.is_finite()));
    // With eps > 0 the zero vector's norm is clamped: finite gradient y / (eps·‖y‖).
    let (g1, _) =
        cpu::cosine_similarity_backward(&x1, &[2, 2], &x2, &[2, 2], 1, Some(1e-3), &[1.0, 0.0])?;
    assert!((g1[0] - 3.0 / (1e-3 * 5.0)).abs() < 1e-9 && (g1[1] - 4.0 / (1e-3 * 5.0)).abs() < 1e-9);
    // NaN in gives NaN out, for that output's vectors only.
    let x1 = [f32::NAN, 1.0, 1.0, 2.0];
    let x2 = [3.0f32, 4.0, 2.0, -1.0];
    let (g1, g2) =
        cpu::cosine_similarity_backward(&x1, &[2, 2], &x2, &[2, 2], 1, None, &[1.0, 1.0])?;
    assert!(g1[..2].iter().chain(&g2[..2]).all(|v| v.is_nan()));
    assert!(g1[2..].iter().chain(&g2[2..]).all(|v| v.is_finite()));
    Ok(())
}

#[test]
fn channels_and_reweight_match_finite_differences() -> Result<()> {
    let mut r = SmallRng::seed_from_u64(56);
    let shapes: &[(&[usize], &[usize], usize)] = &[
        (&[2, 3, 2, 3], &[2, 3, 2, 3], 2),
        (&[2, 3, 2, 3], &[1, 3, 2, 3], 2),
        (&[2, 3, 4], &[2, 3, 1], 2),
        (&[3, 5], &[3, 5], 1),
        (&[2, 2, 3, 2], &[2, 1, 1, 1], 2),
    ];
    for &(sx, sy, from) in shapes {
        let x = random(&mut r, sx.iter().product());
        let y = random(&mut r, sy.iter().product());
        let out = cpu::channel_similarity(&x, sx, &y, sy, from, None)?;
        let grad = random(&mut r, out.values.len());
        let (g1, g2) = cpu::channel_similarity_backward(&x, sx, &y, sy, from, None, &grad)?;
        let (f1, f2) = finite_differences(&x, &y, &grad, |a, b| {
            cpu::channel_similarity(a, sx, b, sy, from, None)
                .map(|s| s.values)
                .unwrap_or_default()
        });
        assert_close(&format!("channels {sx:?} {sy:?} gx"), &g1, &f1, 1e-7);
        assert_close(&format!("channels {sx:?} {sy:?} gy"), &g2, &f2, 1e-7);

        // Reweighting: the loss Σ gw·weighted + Σ gs·sim, both outputs differentiated at once.
        let rw = cpu::reweight_channels(&x, sx, &y, sy, from, None)?;
        let gw = random(&mut r, rw.weighted.len());
        let gs = random(&mut r, rw.similarity.len());
        for with_sims in [false, true] {
            let gs_opt = with_sims.then_some(&gs[..]);
            let (g1, g2) =
                cpu::reweight_channels_backward(&x, sx, &y, sy, from, None, &gw, gs_opt)?;
            let mut upstream = gw.clone();
            upstream.extend(if with_sims {
                gs.clone()
            } else {
                vec![0.0; gs.len()]
            });
            let (f1, f2) = finite_differences(&x, &y, &upstream, |a, b| {
                cpu::reweight_channels(a, sx, b, sy, from, None)
                    .map(|r| [r.weighted, r.similarity].concat())
                    .unwrap_or_default()
            });
            let what = format!("reweight {sx:?} {sy:?} sims {with_sims}");
            assert_close(&format!("{what} gx"), &g1, &f1, 1e-7);
            assert_close(&format!("{what} gy"), &g2, &f2, 1e-7);
        }
    }
    Ok(())
}

#[test]
fn bad_input_is_refused() {
    let x = [1.0f32; 6];
    let e =
        cpu::cosine_similarity_backward(&x, &[2, 3], &x, &[2, 3], 1, None, &[1.0; 3]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::OutLenMismatch {
                what: "grad",
                len: 3,
                ..
            }
        ),
        "{e}"
    );
    let e =
        cpu::cosine_similarity_backward(&x, &[2, 3], &x, &[3, 2], 1, None, &[1.0; 2]).unwrap_err();
    assert!(matches!(e, Error::Broadcast { .. }), "{e}");
    let e = cpu::channel_similarity_backward(&x, &[2, 3], &x[..5], &[2, 3], 1, None, &[1.0; 2])
        .unwrap_err();
    assert!(matches!(e, Error::LenMismatch { .. }), "{e}");
    let e = cpu::reweight_channels_backward(&x, &[2, 3], &x, &[2, 3], 1, None, &[1.0; 5], None)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::OutLenMismatch {
                what: "grad_weighted",
                ..
            }
        ),
        "{e}"
    );
    let e = cpu::reweight_channels_backward(
        &x,
        &[2, 3],
        &x,
        &[2, 3],
        1,
        None,
        &[1.0; 6],
        Some(&[1.0; 3]),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::OutLenMismatch {
                what: "grad_similarity",
                ..
            }
        ),
        "{e}"
    );
}

/// Shapes of a pairwise pair in its layouts: (a shape, b shape).
fn pair_shapes(
    (batch_a, batch_b): (Option<usize>, Option<usize>),
    (n, m, d): (usize, usize, usize),
    (la, lb): (Layout, Layout),
) -> (Vec<usize>, Vec<usize>) {
    let set = |batch: Option<usize>, count: usize, layout: Layout| {
        let inner = match layout {
            Layout::Rows => vec![count, d],
            Layout::Cols => vec![d, count],
        };
        batch.map_or(inner.clone(), |b| [vec![b], inner].concat())
    };
    (set(batch_a, n, la), set(batch_b, m, lb))
}

#[test]
fn pairwise_matrix_matches_finite_differences() -> Result<()> {
    use cosim::pairwise::PairPlan;
    let mut r = SmallRng::seed_from_u64(78);
    let batches = [
        (None, None),
        (Some(2), Some(2)),
        (Some(3), None),
        (None, Some(2)),
    ];
    let sizes = [(1, 1, 1), (3, 1, 3), (1, 4, 2), (3, 5, 4), (4, 3, 7)];
    let layouts = [
        (Layout::Rows, Layout::Rows),
        (Layout::Rows, Layout::Cols),
        (Layout::Cols, Layout::Rows),
        (Layout::Cols, Layout::Cols),
    ];
    let mut case = 0;
    for &bt in &batches {
        for &size in &sizes {
            for &ly in &layouts {
                case += 1;
                let eps = [None, Some(0.0), Some(2.0)][case % 3];
                let (sa, sb) = pair_shapes(bt, size, ly);
                let plan = PairPlan::new(&sa, ly.0, &sb, ly.1)?.eps(eps)?;
                let a = random(&mut r, sa.iter().product());
                let b = random(&mut r, sb.iter().product());
                let grad = random(&mut r, plan.matrix_shape().iter().product());
                let (ga, gb) = cpu::pairwise_similarity_backward(&plan, &a, &b, &grad)?;
                let (fa, fb) = finite_differences(&a, &b, &grad, |x, y| {
                    cpu::pairwise_similarity(&plan, x, y)
                        .map(|s| s.values)
                        .unwrap_or_default()
                });
                let what = format!("case {case}: {sa:?} {ly:?} {sb:?} eps {eps:?}");
                assert_close(&format!("{what} da"), &ga, &fa, 1e-7);
                assert_close(&format!("{what} db"), &gb, &fb, 1e-7);
            }
        }
    }
    Ok(())
}

#[test]
fn pairwise_dtypes_edges_and_bad_input() -> Result<()> {
    use cosim::pairwise::PairPlan;
    let mut r = SmallRng::seed_from_u64(90);
    let plan = PairPlan::new(&[2, 6, 9], Layout::Rows, &[9, 11], Layout::Cols)?;
    let a = random(&mut r, 2 * 6 * 9);
    let b = random(&mut r, 9 * 11);
    let grad = random(&mut r, 2 * 6 * 11);
    fn typed<T: Element>(plan: &PairPlan, a: &[f64], b: &[f64], g: &[f64], tol: f64) -> Result<()> {
        let cast = |v: &[f64]| v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>();
        let back = |v: &[T]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
        let (a, b, g) = (cast(a), cast(b), cast(g));
        let (ga, gb) = cpu::pairwise_similarity_backward(plan, &a, &b, &g)?;
        let (wa, wb) = cpu::pairwise_similarity_backward(plan, &back(&a), &back(&b), &back(&g))?;
        assert_close(&format!("{} da", T::NAME), &back(&ga), &wa, tol);
        assert_close(&format!("{} db", T::NAME), &back(&gb), &wb, tol);
        Ok(())
    }
    typed::<f32>(&plan, &a, &b, &grad, 1e-5)?;
    typed::<f16>(&plan, &a, &b, &grad, 1e-2)?;
    typed::<bf16>(&plan, &a, &b, &grad, 3e-2)?;
    // A zero vector with eps = 0 gets 0; a NaN component makes its vector's gradient NaN and
    // reaches every vector of the other set through G.
    let plan0 = PairPlan::new(&[2, 2], Layout::Rows, &[2, 2], Layout::Rows)?.eps(Some(0.0))?;
    let (ga, gb) = cpu::pairwise_similarity_backward(
        &plan0,
        &[0.0f64, 0.0, 1.0, 2.0],
        &[3.0, 4.0, 1.0, -1.0],
        &[1.0; 4],
    )?;
    assert_eq!(&ga[..2], &[0.0, 0.0]);
    assert!(ga.iter().chain(&gb).all(|v| v.is_finite()));
    let (ga, gb) = cpu::pairwise_similarity_backward(
        &plan0,
        &[f64::NAN, 0.0, 1.0, 2.0],
        &[3.0, 4.0, 1.0, -1.0],
        &[1.0; 4],
    )?;
    assert!(ga[..2].iter().chain(&gb).all(|v| v.is_nan()) && ga[2..].iter().all(|v| v.is_finite()));
    let e =
        cpu::pairwise_similarity_backward(&plan0, &[1.0f64; 4], &[1.0; 4], &[1.0; 3]).unwrap_err();
    assert!(
        matches!(e, Error::OutLenMismatch { what: "grad", .. }),
        "{e}"
    );
    let e =
        cpu::pairwise_similarity_backward(&plan0, &[1.0f64; 3], &[1.0; 4], &[1.0; 4]).unwrap_err();
    assert!(matches!(e, Error::LenMismatch { .. }), "{e}");
    Ok(())
}
