//! `cosim::candle` on CPU tensors: every op against cosim's own CPU backend (the same data,
//! read as candle holds it) and against candle's composed ops in f64, for every dtype, with
//! broadcast, offset, transposed and strided views; the error paths; and the backward that
//! must refuse rather than return a zero gradient.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var, D};
use cosim::candle::{self as cc, Pairwise};
use cosim::pairwise::{Layout, PairPlan};
use cosim::{bf16, f16, Element};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const DTYPES: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];

/// Fresh normal values (never zeros) of `dims`, in `dtype`.
fn randn(dims: &[usize], dtype: DType) -> Result<Tensor> {
    Ok(Tensor::randn(0f32, 1.0, dims, &Device::Cpu)?.to_dtype(dtype)?)
}

/// The tolerance of a result against an f64 reference of the same inputs.
fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        DType::F32 => 2e-6,
        DType::F16 => 2e-3,
        _ => 1e-2,
    }
}

/// A tensor's values as f64, row-major.
fn vals(x: &Tensor) -> Result<Vec<f64>> {
    Ok(x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// Shapes equal and every value within `tol`.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) -> Result<()> {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    for (i, (g, w)) in vals(got)?.iter().zip(vals(want)?).enumerate() {
        assert!(
            (g - w).abs() <= tol || (g.is_nan() && w.is_nan()),
            "{what}: element {i}: {g} vs {w} (tol {tol})"
        );
    }
    Ok(())
}

/// cosim's CPU backend on the contiguous data of `x1` and `x2` (their full logical shapes):
/// the reference the candle path must match. `op` is called for the pair's element type.
fn cpu_ref(x1: &Tensor, x2: &Tensor, op: &RefOp) -> Result<Tensor> {
    let (v, shape) = cpu_ref_raw(x1, x2, op)?;
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// A cosim CPU call on a [`Pair`], its values as f64 with their shape.
type RefOp<'f> = dyn Fn(Pair<'_>) -> cosim::Result<(Vec<f64>, Vec<usize>)> + 'f;

/// Two inputs of one element type, with their shapes.
enum Pair<'a> {
    F32(&'a [f32], &'a [usize], &'a [f32], &'a [usize]),
    F64(&'a [f64], &'a [usize], &'a [f64], &'a [usize]),
    F16(&'a [f16], &'a [usize], &'a [f16], &'a [usize]),
    BF16(&'a [bf16], &'a [usize], &'a [bf16], &'a [usize]),
}

/// Calls a generic body for whichever element type a [`Pair`] holds.
macro_rules! on_pair {
    ($p:expr, |$a:ident, $s1:ident, $b:ident, $s2:ident| $body:expr) => {
        match $p {
            Pair::F32($a, $s1, $b, $s2) => $body,
            Pair::F64($a, $s1, $b, $s2) => $body,
            Pair::F16($a, $s1, $b, $s2) => $body,
            Pair::BF16($a, $s1, $b, $s2) => $body,
        }
    };
}

fn f64s<T: Element>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// `Σ x1·x2 / (max(‖x1‖, eps) · max(‖x2‖, eps))` along `dim` with candle's own broadcasting
/// ops in f64: the composed formula, written here without cosim.
fn composed_along(x1: &Tensor, x2: &Tensor, dim: isize, eps: f64) -> Result<Tensor> {
    let (a, b) = (x1.to_dtype(DType::F64)?, x2.to_dtype(DType::F64)?);
    let rank = a.rank().max(b.rank());
    let dim = if dim < 0 {
        (rank as isize + dim) as usize
    } else {
        dim as usize
    };
    let shape = cosim::plan::broadcast(a.dims(), b.dims())?.0;
    let (a, b) = (a.broadcast_as(shape.clone())?, b.broadcast_as(shape)?);
    let dot = (&a * &b)?.sum(dim)?;
    let na = a.sqr()?.sum(dim)?.sqrt()?.maximum(eps)?;
    let nb = b.sqr()?.sum(dim)?.sqrt()?.maximum(eps)?;
    Ok((dot / (na * nb)?)?.clamp(-1.0, 1.0)?)
}

#[test]
fn cosine_similarity_matches_cpu_and_composed_ops() -> Result<()> {
    let cases: &[(&[usize], &[usize], isize)] = &[
        (&[2, 3, 4], &[2, 3, 4], 1),
        (&[4, 5], &[5], -1),
        (&[2, 1, 6], &[3, 6], -1),
        (&[3, 7, 5], &[1, 7, 1], 1),
        (&[6], &[6], 0),
        (&[2, 3, 4, 5], &[1, 3, 1, 5], -3),
        (&[1, 3, 2, 2, 3], &[2, 3, 1, 1, 3], 0),
        (&[5, 1], &[5, 1], 1),
    ];
    for &dtype in &DTYPES {
        for &(s1, s2, dim) in cases {
            let (x1, x2) = (randn(s1, dtype)?, randn(s2, dtype)?);
            let got = cc::cosine_similarity(&x1, &x2, dim, None)?;
            assert_eq!(got.dtype(), dtype);
            let want = cpu_ref(&x1, &x2, &|p| {
                on_pair!(p, |a, s1, b, s2| cosim::cpu::cosine_similarity(
                    a, s1, b, s2, dim, None
                )
                .map(|s| (f64s(&s.values), s.shape)))
            })?;
            let what = format!("{dtype:?} {s1:?} {s2:?} dim {dim}");
            // The same data through the same backend: equal.
            assert_close(&what, &got, &want, 0.0)?;
            assert_close(
                &what,
                &got,
                &composed_along(&x1, &x2, dim, 1e-8)?,
                tol(dtype),
            )?;
        }
    }
    Ok(())
}

/// A random view of logical shape `dims`: contiguous, the tail of a bigger tensor (an
/// offset), the transpose of a tensor of the swapped shape (strided, copied), or a broadcast
/// of size-1 dims.
fn random_view(r: &mut SmallRng, dims: &[usize], dtype: DType) -> Result<Tensor> {
    let rank = dims.len();
    Ok(match r.random_range(0..4) {
        1 if rank > 0 => {
            let mut big = dims.to_vec();
            big[0] += 2;
            randn(&big, dtype)?.narrow(0, 2, dims[0])?
        }
        2 if rank >= 2 => {
            let mut swapped = dims.to_vec();
            swapped.swap(rank - 1, rank - 2);
            randn(&swapped, dtype)?.transpose(rank - 1, rank - 2)?
        }
        3 => {
            let ones: Vec<usize> = dims
                .iter()
                .map(|&n| if r.random_bool(0.5) { 1 } else { n })
                .collect();
            randn(&ones, dtype)?.broadcast_as(dims)?
        }
        _ => randn(dims, dtype)?,
    })
}

#[test]
fn random_shapes_and_views_against_the_composed_formula() -> Result<()> {
    let mut r = SmallRng::seed_from_u64(0xc05e);
    for case in 0..200 {
        let dtype = DTYPES[case % 4];
        let rank = r.random_range(1..=4);
        let full: Vec<usize> = (0..rank).map(|_| r.random_range(1..=5)).collect();
        // x2 broadcasts: some dims 1, some leading dims dropped.
        let drop_lead = r.random_range(0..rank);
        let s2: Vec<usize> = full[drop_lead..]
            .iter()
            .map(|&n| if r.random_bool(0.3) { 1 } else { n })
            .collect();
        let s1: Vec<usize> = full
            .iter()
            .map(|&n| if r.random_bool(0.2) { 1 } else { n })
            .collect();
        let dim = r.random_range(-(rank as i64)..rank as i64) as isize;
        let x1 = random_view(&mut r, &s1, dtype)?;
        let x2 = random_view(&mut r, &s2, dtype)?;
        let eps = [None, Some(0.0), Some(0.5)][case % 3];
        let got = cc::cosine_similarity(&x1, &x2, dim, eps)?;
        let want = composed_along(&x1, &x2, dim, eps.unwrap_or(1e-8))?;
        let what = format!("case {case}: {dtype:?} {s1:?} {s2:?} dim {dim} eps {eps:?}");
        assert_close(&what, &got, &want, tol(dtype))?;
    }
    Ok(())
}

#[test]
fn views_are_read_in_place_or_copied_with_the_same_result() -> Result<()> {
    for &dtype in &DTYPES {
        let t = tol(dtype);
        let big = randn(&[7, 4, 6], dtype)?;
        let y = randn(&[3, 4, 6], dtype)?;
        // A start offset (narrow of dim 0), read in place.
        let x = big.narrow(0, 2, 3)?;
        assert!(x.layout().start_offset() > 0);
        let got = cc::cosine_similarity(&x, &y, 1, None)?;
        assert_close("offset", &got, &composed_along(&x, &y, 1, 1e-8)?, t)?;
        // A broadcast view (stride 0), read as size 1.
        let p = randn(&[1, 4, 1], dtype)?.broadcast_as((3, 4, 6))?;
        assert!(p.stride().contains(&0));
        let got = cc::cosine_similarity(&p, &y, 1, None)?;
        assert_close("broadcast", &got, &composed_along(&p, &y, 1, 1e-8)?, t)?;
        // Both broadcast along one dim: copied, not lost. Along a kept dim the result would
        // lose it; along the reduced dim the clamp (eps 10, past every norm) would see norms
        // 2x smaller.
        let q = randn(&[1, 4, 6], dtype)?.broadcast_as((3, 4, 6))?;
        let r = randn(&[1, 4, 6], dtype)?.broadcast_as((3, 4, 6))?;
        let got = cc::cosine_similarity(&q, &r, 2, None)?;
        assert_close("both broadcast", &got, &composed_along(&q, &r, 2, 1e-8)?, t)?;
        let got = cc::cosine_similarity(&q, &r, 0, Some(10.0))?;
        assert_close(
            "both broadcast, reduced",
            &got,
            &composed_along(&q, &r, 0, 10.0)?,
            t,
        )?;
        // A transpose and a step: copied.
        let tr = randn(&[6, 4, 3], dtype)?.permute((2, 1, 0))?;
        assert!(!tr.is_contiguous());
        let got = cc::cosine_similarity(&tr, &y, -2, None)?;
        assert_close("transpose", &got, &composed_along(&tr, &y, -2, 1e-8)?, t)?;
        let narrowed = big.narrow(2, 1, 4)?;
        let y4 = randn(&[7, 4, 4], dtype)?;
        let got = cc::cosine_similarity(&narrowed, &y4, 2, None)?;
        assert_close(
            "inner narrow",
            &got,
            &composed_along(&narrowed, &y4, 2, 1e-8)?,
            t,
        )?;
    }
    Ok(())
}

#[test]
fn channel_similarity_and_reweight_match_cpu() -> Result<()> {
    for &dtype in &DTYPES {
        let x = randn(&[2, 3, 4, 5], dtype)?;
        let y = randn(&[2, 3, 4, 5], dtype)?;
        let proto = randn(&[1, 3, 4, 5], dtype)?;
        for other in [&y, &proto] {
            let got = cc::channel_similarity(&x, other, 2, None)?;
            let want = cpu_ref(&x, other, &|p| {
                on_pair!(p, |a, s1, b, s2| cosim::cpu::channel_similarity(
                    a, s1, b, s2, 2, None
                )
                .map(|s| (f64s(&s.values), s.shape)))
            })?;
            assert_close("channels", &got, &want, 0.0)?;
            let flat = |t: &Tensor| t.broadcast_as(x.dims()).and_then(|t| t.flatten_from(2));
            let composed = composed_along(&flat(&x)?, &flat(other)?, 2, 1e-8)?;
            assert_close("channels composed", &got, &composed, tol(dtype))?;

            let (weighted, sims) = cc::reweight_channels(&x, other, 2, None)?;
            let want_w = cpu_ref(&x, other, &|p| {
                on_pair!(p, |a, s1, b, s2| cosim::cpu::reweight_channels(
                    a, s1, b, s2, 2, None
                )
                .map(|r| (f64s(&r.weighted), r.weighted_shape)))
            })?;
            assert_close("weighted", &weighted, &want_w, 0.0)?;
            assert_close("reweight sims", &sims, &want, 0.0)?;
        }
    }
    Ok(())
}

/// Unit vectors along `dim` in f64 (norm clamped to 1e-8).
fn normalized(x: &Tensor, dim: usize) -> Result<Tensor> {
    let x = x.to_dtype(DType::F64)?;
    let n = x.sqr()?.sum_keepdim(dim)?.sqrt()?.maximum(1e-8)?;
    Ok(x.broadcast_div(&n)?)
}

/// The matrix of two row sets with candle's matmul, in f64.
fn composed_matrix(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a, b) = (normalized(a, a.rank() - 1)?, normalized(b, b.rank() - 1)?);
    let b = b.transpose(D::Minus1, D::Minus2)?;
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    Ok(if a.rank() == b.rank() {
        a.matmul(&b)?
    } else {
        a.broadcast_matmul(&b)?
    })
}

#[test]
fn pairwise_matrix_in_every_layout_and_view() -> Result<()> {
    for &dtype in &DTYPES {
        let t = tol(dtype);
        let a = randn(&[5, 7], dtype)?;
        let b = randn(&[9, 7], dtype)?;
        let want = composed_matrix(&a, &b)?;
        assert_close("rows", &cc::pairwise_similarity(&a, &b)?, &want, t)?;
        // b held as [D, M] (columns), and as the transposed view of that: both in place.
        let b_cols = b.t()?.contiguous()?;
        let s = Pairwise::new(Layout::Rows, Layout::Cols).similarity(&a, &b_cols)?;
        assert_close("cols", &s, &want, t)?;
        let b_view = b_cols.t()?;
        assert!(!b_view.is_contiguous());
        assert_close(
            "transposed view",
            &cc::pairwise_similarity(&a, &b_view)?,
            &want,
            t,
        )?;
        // Rows taken from the middle of a bigger set (an offset), and a strided view (copied).
        let big = randn(&[12, 7], dtype)?;
        let mid = big.narrow(0, 3, 5)?;
        let want_mid = composed_matrix(&mid, &b)?;
        assert_close("offset", &cc::pairwise_similarity(&mid, &b)?, &want_mid, t)?;
        let wide = randn(&[5, 10], dtype)?.narrow(1, 2, 7)?;
        let want_wide = composed_matrix(&wide, &b)?;
        assert_close(
            "narrowed D",
            &cc::pairwise_similarity(&wide, &b)?,
            &want_wide,
            t,
        )?;
        // Batched sets, a shared set, and a broadcast batch (one set for all, in place).
        let ab = randn(&[3, 5, 7], dtype)?;
        let bb = randn(&[3, 9, 7], dtype)?;
        let want_b = composed_matrix(&ab, &bb)?;
        assert_close("batched", &cc::pairwise_similarity(&ab, &bb)?, &want_b, t)?;
        let want_shared = composed_matrix(&ab, &b)?;
        assert_close(
            "shared b",
            &cc::pairwise_similarity(&ab, &b)?,
            &want_shared,
            t,
        )?;
        let b3 = b.unsqueeze(0)?.broadcast_as((3, 9, 7))?;
        assert_close(
            "broadcast batch",
            &cc::pairwise_similarity(&ab, &b3)?,
            &want_shared,
            t,
        )?;
        // Both batches broadcast: still a batched result.
        let a3 = a.unsqueeze(0)?.broadcast_as((3, 5, 7))?;
        let s = cc::pairwise_similarity(&a3, &b3)?;
        assert_eq!(s.dims(), &[3, 5, 9]);
        assert_close("both broadcast", &s.get(1)?, &want, t)?;
        // [B, D, N] maps against [B, D, M] maps, as bmm(x.transpose(1, 2), y) users hold.
        let xa = randn(&[2, 7, 5], dtype)?;
        let xb = randn(&[2, 7, 9], dtype)?;
        let s = Pairwise::new(Layout::Cols, Layout::Cols).similarity(&xa, &xb)?;
        let want_maps = composed_matrix(&xa.transpose(1, 2)?, &xb.transpose(1, 2)?)?;
        assert_close("maps", &s, &want_maps, t)?;
    }
    Ok(())
}

/// cosim's CPU pairwise result on the contiguous data of two row sets.
fn pair_ref<R>(
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(&PairPlan, Pair<'_>) -> cosim::Result<R>,
) -> Result<R> {
    let plan = PairPlan::new(a.dims(), Layout::Rows, b.dims(), Layout::Rows)?;
    cpu_ref_raw(a, b, |p| f(&plan, p))
}

fn cpu_ref_raw<R>(a: &Tensor, b: &Tensor, f: impl Fn(Pair<'_>) -> cosim::Result<R>) -> Result<R> {
    let (d1, d2) = (a.dims().to_vec(), b.dims().to_vec());
    let x = a.contiguous()?.flatten_all()?;
    let y = b.contiguous()?.flatten_all()?;
    Ok(match a.dtype() {
        DType::F32 => f(Pair::F32(&x.to_vec1()?, &d1, &y.to_vec1()?, &d2))?,
        DType::F64 => f(Pair::F64(&x.to_vec1()?, &d1, &y.to_vec1()?, &d2))?,
        DType::F16 => f(Pair::F16(&x.to_vec1()?, &d1, &y.to_vec1()?, &d2))?,
        _ => f(Pair::BF16(&x.to_vec1()?, &d1, &y.to_vec1()?, &d2))?,
    })
}

#[test]
fn top_k_and_argmax_match_cpu_and_a_full_sort() -> Result<()> {
    for &dtype in &DTYPES {
        for (sa, sb, k) in [
            (&[6usize, 8][..], &[40usize, 8][..], 5),
            (&[2, 3, 16], &[2, 30, 16], 30),
            (&[4, 3], &[1, 3], 1),
        ] {
            let (a, b) = (randn(sa, dtype)?, randn(sb, dtype)?);
            let (values, indices) = cc::pairwise_top_k(&a, &b, k)?;
            assert_eq!(indices.dtype(), DType::U32);
            let (want_v, want_i, want_shape) = pair_ref(&a, &b, |plan, p| {
                on_pair!(p, |x, _s1, y, _s2| cosim::cpu::pairwise_top_k(
                    plan, x, y, k
                )
                .map(|t| (f64s(&t.values), t.indices, t.shape)))
            })?;
            assert_eq!(values.dims(), &want_shape[..]);
            assert_eq!(vals(&values)?, want_v, "{dtype:?} top-k values");
            assert_eq!(
                indices.flatten_all()?.to_vec1::<u32>()?,
                want_i,
                "{dtype:?} indices"
            );
            // candle's own full sort of the f64 matrix gives the same values.
            let sorted = composed_matrix(&a, &b)?.sort_last_dim(false)?.0;
            let best = sorted.narrow(D::Minus1, 0, k)?;
            assert_close("sorted", &values, &best, tol(dtype))?;

            let (v, i) = cc::pairwise_argmax(&a, &b)?;
            assert_eq!(v.dims(), &values.dims()[..values.rank() - 1]);
            assert_close(
                "argmax",
                &v,
                &values.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?,
                0.0,
            )?;
            let first = indices.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?;
            assert_eq!(
                i.flatten_all()?.to_vec1::<u32>()?,
                first.flatten_all()?.to_vec1::<u32>()?
            );
        }
    }
    Ok(())
}

#[test]
fn means_and_set_scores_match_cpu() -> Result<()> {
    for &dtype in &DTYPES {
        let (a, b) = (randn(&[2, 6, 10], dtype)?, randn(&[2, 11, 10], dtype)?);
        let got = cc::pairwise_row_mean(&a, &b)?;
        let want = pair_ref(&a, &b, |plan, p| {
            on_pair!(p, |x, _s1, y, _s2| cosim::cpu::pairwise_row_mean(
                plan, x, y
            )
            .map(|s| (f64s(&s.values), s.shape)))
        })?;
        assert_eq!(got.dims(), &want.1[..]);
        assert_eq!(vals(&got)?, want.0, "{dtype:?} row means");
        let mean = cc::pairwise_mean(&a, &b)?;
        let composed = composed_matrix(&a, &b)?.mean((1, 2))?;
        assert_close("mean", &mean, &composed, tol(dtype))?;
        // An unbatched mean is a scalar.
        assert_eq!(
            cc::pairwise_mean(&a.get(0)?, &b.get(0)?)?.dims(),
            &[] as &[usize]
        );

        let wa = randn(&[2, 6], dtype)?.abs()?;
        let wb = randn(&[22], dtype)?.abs()?;
        let scores = Pairwise::default().set_similarity(&a, &b, Some(&wa), Some(&wb))?;
        let want = pair_ref(&a, &b, |plan, p| {
            let (wa, wb) = (&wa, &wb);
            on_pair!(p, |x, _s1, y, _s2| {
                let w = |t: &Tensor| {
                    t.flatten_all()
                        .and_then(|t| t.to_dtype(DType::F64))
                        .and_then(|t| t.to_vec1::<f64>())
                        .unwrap_or_default()
                };
                let wa: Vec<_> = w(wa).iter().map(|&v| Element::from_f64(v)).collect();
                let wb: Vec<_> = w(wb).iter().map(|&v| Element::from_f64(v)).collect();
                cosim::cpu::set_similarity(plan, x, y, Some(&wa), Some(&wb))
                    .map(|s| (f64s(&s.precision), f64s(&s.recall), f64s(&s.f1), s.shape))
            })
        })?;
        assert_eq!(scores.shape, want.3);
        assert_eq!(vals(&scores.precision)?, want.0);
        assert_eq!(vals(&scores.recall)?, want.1);
        assert_eq!(vals(&scores.f1)?, want.2);
        // Unweighted, unbatched: scalars, and identical sets score 1.
        let same = cc::set_similarity(&a.get(0)?, &a.get(0)?)?;
        assert_eq!(same.f1.dims(), &[] as &[usize]);
        assert!((same.f1.to_dtype(DType::F64)?.to_scalar::<f64>()? - 1.0).abs() <= tol(dtype));
    }
    Ok(())
}

/// The message of an error, for checking what it says.
fn message<T: std::fmt::Debug>(r: candle_core::Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_gets_cosims_message() -> Result<()> {
    let x = randn(&[2, 3, 4], DType::F32)?;
    let m = message(cc::cosine_similarity(
        &x,
        &randn(&[2, 5, 4], DType::F32)?,
        1,
        None,
    ));
    assert!(m.contains("do not broadcast"), "{m}");
    let m = message(cc::cosine_similarity(&x, &x, 3, None));
    assert!(m.contains("dim 3 is out of range"), "{m}");
    let m = message(cc::cosine_similarity(&x, &x, 1, Some(-1.0)));
    assert!(m.contains("eps must be >= 0"), "{m}");
    let m = message(cc::cosine_similarity(&x, &x.to_dtype(DType::F16)?, 1, None));
    assert!(m.contains("one dtype") && m.contains("F16"), "{m}");
    let ints = Tensor::zeros((2, 3, 4), DType::U32, &Device::Cpu)?;
    let m = message(cc::cosine_similarity(&ints, &ints, 1, None));
    assert!(
        m.contains("f32, f64, f16 or bf16") && m.contains("U32"),
        "{m}"
    );
    let m = message(cc::channel_similarity(&x, &x, 3, None));
    assert!(m.contains("flatten_from 3"), "{m}");

    let (a, b) = (randn(&[4, 8], DType::F32)?, randn(&[6, 8], DType::F32)?);
    let m = message(cc::pairwise_similarity(
        &randn(&[2, 2, 4, 8], DType::F32)?,
        &b,
    ));
    assert!(m.contains("set a has shape [2, 2, 4, 8]"), "{m}");
    let m = message(cc::pairwise_similarity(&a, &randn(&[6, 9], DType::F32)?));
    assert!(m.contains("vector lengths"), "{m}");
    let m = message(cc::pairwise_similarity(
        &randn(&[2, 4, 8], DType::F32)?,
        &randn(&[3, 6, 8], DType::F32)?,
    ));
    assert!(m.contains("batch sizes"), "{m}");
    for k in [0, 7] {
        let m = message(cc::pairwise_top_k(&a, &b, k));
        assert!(m.contains(&format!("k = {k} is out of range")), "{m}");
    }
    let w = randn(&[5], DType::F32)?;
    let m = message(Pairwise::default().set_similarity(&a, &b, Some(&w), None));
    assert!(m.contains("weights of a has 5 elements"), "{m}");
    let m =
        message(Pairwise::default().set_similarity(&a, &b, Some(&w.to_dtype(DType::F64)?), None));
    assert!(m.contains("one dtype"), "{m}");
    Ok(())
}

#[test]
fn pairwise_reductions_refuse_backward_instead_of_a_zero_gradient() -> Result<()> {
    let a = Var::from_tensor(&randn(&[4, 8], DType::F32)?)?;
    let b = randn(&[6, 8], DType::F32)?;
    for (name, out) in [
        (
            "cosim::pairwise_argmax",
            cc::pairwise_argmax(a.as_tensor(), &b)?.0,
        ),
        (
            "cosim::pairwise_top_k",
            cc::pairwise_top_k(a.as_tensor(), &b, 2)?.0,
        ),
        (
            "cosim::pairwise_mean",
            cc::pairwise_mean(a.as_tensor(), &b)?,
        ),
    ] {
        let m = message(out.sum_all()?.backward());
        assert!(
            m.contains(name) && m.contains("not differentiable yet"),
            "{m}"
        );
    }
    // Without a variable in the graph nothing is asked of the backward.
    let plain = cc::pairwise_similarity(&a.as_tensor().detach(), &b)?;
    assert!(plain.sum_all()?.backward()?.get(a.as_tensor()).is_none());
    Ok(())
}

/// The gradients of both variables through `f`, for the loss `Σ w · f(x, y)`.
fn grads(
    x: &Var,
    y: &Var,
    w: &Tensor,
    f: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let out = f(x.as_tensor(), y.as_tensor())?;
    let store = (out * w)?.sum_all()?.backward()?;
    let g = |v: &Var| {
        store
            .get(v.as_tensor())
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no gradient"))
    };
    Ok((g(x)?, g(y)?))
}

#[test]
fn backward_through_cosim_equals_backward_through_composed_ops() -> Result<()> {
    for dtype in [DType::F64, DType::F32] {
        let t = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
        // Along dim 1 of [3, 5, 4] against a broadcast [1, 5, 1] prototype (a view, read in
        // place), whose gradient is summed by candle over the broadcast.
        let x = Var::from_tensor(&randn(&[3, 5, 4], dtype)?)?;
        let p = Var::from_tensor(&randn(&[1, 5, 1], dtype)?)?;
        let w = randn(&[3, 4], dtype)?;
        let (gx, gp) = grads(&x, &p, &w, |a, b| {
            cc::cosine_similarity(a, &b.broadcast_as(a.dims())?, 1, None)
        })?;
        let composed = |a: &Tensor, b: &Tensor| -> candle_core::Result<Tensor> {
            let b = b.broadcast_as(a.dims())?;
            let dot = (a * &b)?.sum(1)?;
            let na = a.sqr()?.sum(1)?.sqrt()?.maximum(1e-8)?;
            let nb = b.sqr()?.sum(1)?.sqrt()?.maximum(1e-8)?;
            dot / (na * nb)?
        };
        let (wx, wp) = grads(&x, &p, &w, composed)?;
        assert_close("along dx", &gx, &wx, t)?;
        assert_close("along dprototype", &gp, &wp, t)?;
        // cosim broadcasting by shape (no candle broadcast op): the same gradients.
        let (gx2, gp2) = grads(&x, &p, &w, |a, b| cc::cosine_similarity(a, b, 1, None))?;
        assert_close("along dx, cosim broadcast", &gx2, &wx, t)?;
        assert_close("along dp, cosim broadcast", &gp2, &wp, t)?;

        // Per channel, and the reweighting's two outputs.
        let y = Var::from_tensor(&randn(&[3, 5, 4], dtype)?)?;
        let wc = randn(&[3, 5], dtype)?;
        let (gx, gy) = grads(&x, &y, &wc, |a, b| cc::channel_similarity(a, b, 2, None))?;
        let flat = |a: &Tensor, b: &Tensor| -> candle_core::Result<Tensor> {
            let dot = (a * b)?.sum(2)?;
            let na = a.sqr()?.sum(2)?.sqrt()?.maximum(1e-8)?;
            let nb = b.sqr()?.sum(2)?.sqrt()?.maximum(1e-8)?;
            dot / (na * nb)?
        };
        let (wx, wy) = grads(&x, &y, &wc, flat)?;
        assert_close("channels dx", &gx, &wx, t)?;
        assert_close("channels dy", &gy, &wy, t)?;
        let ww = randn(&[3, 5, 4], dtype)?;
        let loss = |weighted: Tensor, sims: Tensor| -> candle_core::Result<Tensor> {
            (weighted * &ww)?.sum_all()? + (sims * &wc)?.sum_all()?
        };
        let one = Tensor::ones((), dtype, &Device::Cpu)?;
        let (gx, gy) = grads(&x, &y, &one, |a, b| {
            let (weighted, sims) = cc::reweight_channels(a, b, 2, None)?;
            loss(weighted, sims)
        })?;
        let (wx, wy) = grads(&x, &y, &one, |a, b| {
            let sims = flat(a, b)?;
            loss(b.broadcast_mul(&sims.unsqueeze(2)?)?, sims)
        })?;
        assert_close("reweight dx", &gx, &wx, t)?;
        assert_close("reweight dy", &gy, &wy, t)?;
    }
    Ok(())
}

#[test]
fn pairwise_matrix_backward_equals_candles_matmul() -> Result<()> {
    type Op = Box<dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>>;
    for dtype in [DType::F64, DType::F32] {
        let t = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
        let a = Var::from_tensor(&randn(&[2, 5, 7], dtype)?)?;
        let b = Var::from_tensor(&randn(&[9, 7], dtype)?)?;
        let w = randn(&[2, 5, 9], dtype)?;
        let composed = |x: &Tensor, y: &Tensor| -> candle_core::Result<Tensor> {
            let unit = |v: &Tensor| -> candle_core::Result<Tensor> {
                v.broadcast_div(&v.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-8)?)
            };
            unit(x)?.broadcast_matmul(&unit(y)?.t()?)
        };
        let (wa, wb) = grads(&a, &b, &w, composed)?;
        // Rows against a shared set; b as [D, M] columns; a broadcast batch (summed by
        // candle over the broadcast).
        let cases: [(&str, Op); 3] = [
            ("rows, shared b", Box::new(cc::pairwise_similarity)),
            (
                "b as columns",
                Box::new(|x, y| {
                    Pairwise::new(Layout::Rows, Layout::Cols).similarity(x, &y.t()?.contiguous()?)
                }),
            ),
            (
                "broadcast batch",
                Box::new(|x, y| {
                    cc::pairwise_similarity(x, &y.unsqueeze(0)?.broadcast_as((2, 9, 7))?)
                }),
            ),
        ];
        for (what, f) in cases {
            let (ga, gb) = grads(&a, &b, &w, f)?;
            assert_close(&format!("{what} da"), &ga, &wa, t)?;
            assert_close(&format!("{what} db"), &gb, &wb, t)?;
        }
    }
    Ok(())
}
