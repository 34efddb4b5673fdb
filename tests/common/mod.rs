//! Shared helpers for the behaviour tests of every backend: seeded random inputs, an
//! independent f64 reference of cosim's semantics (SPEC §2), and per-dtype tolerances.
//!
//! The reference deliberately does not use `cosim::plan`: it materialises the broadcast inputs
//! with explicit multi-index loops and applies the formula in f64, so a bug in the plan (strides,
//! axis merging, dim wrapping) cannot hide by being shared with the code under test.
#![allow(dead_code)]

pub mod pairwise;
pub mod stream;

use cosim::Element;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Runs a generic `fn(seed) -> Result<()>` once per element type, as four tests in a module
/// (the test file imports `Result`, `f16` and `bf16`; `#[macro_use] mod common;`).
#[allow(unused_macros)]
macro_rules! per_dtype {
    ($name:ident, $body:ident, $seed:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn t_f32() -> Result<()> {
                $body::<f32>($seed)
            }
            #[test]
            fn t_f64() -> Result<()> {
                $body::<f64>($seed + 1)
            }
            #[test]
            fn t_f16() -> Result<()> {
                $body::<f16>($seed + 2)
            }
            #[test]
            fn t_bf16() -> Result<()> {
                $body::<bf16>($seed + 3)
            }
        }
    };
}

/// A deterministic RNG for one test (or one case of a battery).
pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// Two shapes of rank 1..=`max_rank` (sizes 1..=`max_size`) that broadcast: each has size-1
/// dims the other sizes, the second may lack leading dims; and a dim of the broadcast rank,
/// negative half the time.
pub fn random_broadcast_case(
    r: &mut SmallRng,
    max_rank: usize,
    max_size: usize,
) -> (Vec<usize>, Vec<usize>, isize) {
    let rank = r.random_range(1..=max_rank);
    let full: Vec<usize> = (0..rank).map(|_| r.random_range(1..=max_size)).collect();
    let ones = |r: &mut SmallRng, dims: &[usize]| -> Vec<usize> {
        dims.iter()
            .map(|&n| if r.random_bool(0.25) { 1 } else { n })
            .collect()
    };
    let s1 = ones(r, &full);
    let lead = r.random_range(0..rank);
    let s2 = ones(r, &full[lead..]);
    let d = r.random_range(0..rank) as isize;
    (
        s1,
        s2,
        if r.random_bool(0.5) {
            d - rank as isize
        } else {
            d
        },
    )
}

/// Element count of a shape (1 for rank 0).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// `n` values uniform in [-2, 2], rounded to `T`; never all zeros.
pub fn random_vec<T: Element>(rng: &mut SmallRng, n: usize) -> Vec<T> {
    let mut v: Vec<T> = (0..n)
        .map(|_| T::from_f64(rng.random_range(-2.0..=2.0)))
        .collect();
    if !v.is_empty() && v.iter().all(|x| x.to_f64() == 0.0) {
        v[0] = T::from_f64(1.0);
    }
    v
}

/// A random buffer holding exactly the elements of `shape`.
pub fn random_input<T: Element>(rng: &mut SmallRng, shape: &[usize]) -> Vec<T> {
    random_vec(rng, numel(shape))
}

/// `n` values uniform in [lo, hi], rounded to `T` (e.g. strictly positive inputs).
pub fn random_in<T: Element>(rng: &mut SmallRng, n: usize, lo: f64, hi: f64) -> Vec<T> {
    (0..n)
        .map(|_| T::from_f64(rng.random_range(lo..=hi)))
        .collect()
}

/// Converts a buffer to f64 (exact for every element type).
pub fn to_f64s<T: Element>(x: &[T]) -> Vec<f64> {
    x.iter().map(|v| v.to_f64()).collect()
}

/// Rounds f64 values to `T`.
pub fn from_f64s<T: Element>(x: &[f64]) -> Vec<T> {
    x.iter().map(|&v| T::from_f64(v)).collect()
}

/// NumPy broadcasting of two shapes, or `None` if they do not broadcast.
pub fn broadcast_shape(s1: &[usize], s2: &[usize]) -> Option<Vec<usize>> {
    let rank = s1.len().max(s2.len());
    let get = |s: &[usize], i: usize| -> usize {
        // Dim `i` of the broadcast rank; missing leading dims count as 1.
        let pad = rank - s.len();
        if i < pad {
            1
        } else {
            s[i - pad]
        }
    };
    (0..rank)
        .map(|i| {
            let (a, b) = (get(s1, i), get(s2, i));
            if a == b || b == 1 {
                Some(a)
            } else if a == 1 {
                Some(b)
            } else {
                None
            }
        })
        .collect()
}

/// Row-major multi-index of flat index `flat` in `shape`.
pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        idx[i] = flat % d;
        flat /= d;
    }
    idx
}

/// Row-major flat index of a multi-index.
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| {
        assert!(i < d, "index {idx:?} out of shape {shape:?}");
        acc * d + i
    })
}

/// `x` (of `shape`) broadcast to `bshape` and written out in full as f64, element by element:
/// the element at broadcast multi-index `i` is `x[j]` where `j` drops the leading padded dims
/// and is 0 along every dim where `shape` has size 1.
pub fn materialise<T: Element>(x: &[T], shape: &[usize], bshape: &[usize]) -> Vec<f64> {
    assert_eq!(x.len(), numel(shape), "buffer of shape {shape:?}");
    assert!(shape.len() <= bshape.len());
    let pad = bshape.len() - shape.len();
    (0..numel(bshape))
        .map(|flat| {
            let full = unravel(flat, bshape);
            let own: Vec<usize> = shape
                .iter()
                .enumerate()
                .map(|(i, &d)| if d == 1 { 0 } else { full[pad + i] })
                .collect();
            x[ravel(&own, shape)].to_f64()
        })
        .collect()
}

/// SPEC §2's formula in f64: `dot / (max(‖x1‖, eps) · max(‖x2‖, eps))`, a zero dot gives 0,
/// NaN propagates, and the result is clamped to [-1, 1] without swallowing NaN.
pub fn cosine_f64(dot: f64, nsq1: f64, nsq2: f64, eps: f64) -> f64 {
    if dot.is_nan() || nsq1.is_nan() || nsq2.is_nan() {
        return f64::NAN;
    }
    if dot == 0.0 {
        return 0.0;
    }
    let n1 = nsq1.sqrt();
    let n2 = nsq2.sqrt();
    let n1 = if n1 < eps { eps } else { n1 };
    let n2 = if n2 < eps { eps } else { n2 };
    // NaN was returned above; f64::clamp would keep it anyway.
    (dot / (n1 * n2)).clamp(-1.0, 1.0)
}

/// Cosine of two f64 vectors read with a stride: element `k` of vector 1 is
/// `a[base_a + k * stride]`, likewise for vector 2 (both from arrays of one shape).
fn strided_cosine(a: &[f64], b: &[f64], base: usize, stride: usize, len: usize, eps: f64) -> f64 {
    let (mut dot, mut n1, mut n2) = (0.0, 0.0, 0.0);
    for k in 0..len {
        let (x, y) = (a[base + k * stride], b[base + k * stride]);
        dot += x * y;
        n1 += x * x;
        n2 += y * y;
    }
    cosine_f64(dot, n1, n2, eps)
}

/// Independent reference of `cosine_similarity(x1, x2, dim, eps)`: broadcast, wrap `dim`
/// against the broadcast rank (rank 0 is a length-1 vector accepting dims -1 and 0), reduce.
/// Returns the values (f64, row-major) and the output shape (broadcast shape without `dim`).
///
/// Panics if the shapes do not broadcast or `dim` is out of range: call it on valid inputs.
pub fn reference_along<T: Element>(
    x1: &[T],
    shape1: &[usize],
    x2: &[T],
    shape2: &[usize],
    dim: isize,
    eps: f64,
) -> (Vec<f64>, Vec<usize>) {
    let bshape = broadcast_shape(shape1, shape2)
        .unwrap_or_else(|| panic!("reference: {shape1:?} and {shape2:?} do not broadcast"));
    let m1 = materialise(x1, shape1, &bshape);
    let m2 = materialise(x2, shape2, &bshape);
    if bshape.is_empty() {
        assert!(dim == 0 || dim == -1, "reference: dim {dim} for rank 0");
        return (
            vec![cosine_f64(m1[0] * m2[0], m1[0] * m1[0], m2[0] * m2[0], eps)],
            vec![],
        );
    }
    let rank = bshape.len() as isize;
    assert!(
        -rank <= dim && dim < rank,
        "reference: dim {dim} for {bshape:?}"
    );
    let d = if dim < 0 { dim + rank } else { dim } as usize;
    // View the contiguous broadcast array as [outer, len, inner].
    let outer: usize = numel(&bshape[..d]);
    let len = bshape[d];
    let inner: usize = numel(&bshape[d + 1..]);
    let mut values = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            values.push(strided_cosine(
                &m1,
                &m2,
                o * len * inner + i,
                inner,
                len,
                eps,
            ));
        }
    }
    let mut out_shape = bshape.clone();
    out_shape.remove(d);
    (values, out_shape)
}

/// Independent reference of `channel_similarity(x1, x2, flatten_from, eps)`: the broadcast
/// inputs reshaped to `[prod(b[..from]), prod(b[from..])]`, one cosine per row. Returns the
/// values and the shape `b[..from]`.
pub fn reference_flattened<T: Element>(
    x1: &[T],
    shape1: &[usize],
    x2: &[T],
    shape2: &[usize],
    flatten_from: usize,
    eps: f64,
) -> (Vec<f64>, Vec<usize>) {
    let bshape = broadcast_shape(shape1, shape2)
        .unwrap_or_else(|| panic!("reference: {shape1:?} and {shape2:?} do not broadcast"));
    assert!(
        flatten_from < bshape.len(),
        "reference: flatten_from {flatten_from} for {bshape:?}"
    );
    let m1 = materialise(x1, shape1, &bshape);
    let m2 = materialise(x2, shape2, &bshape);
    let rows = numel(&bshape[..flatten_from]);
    let len = numel(&bshape[flatten_from..]);
    let values = (0..rows)
        .map(|r| strided_cosine(&m1, &m2, r * len, 1, len, eps))
        .collect();
    (values, bshape[..flatten_from].to_vec())
}

/// Absolute tolerance of one output element of type `T` against the f64 reference:
/// - f32: 2e-6 (f32 accumulation and the final rounding, 2^-25 ≈ 3e-8, near 1);
/// - f64: 1e-12;
/// - f16: 1e-3 (11-bit significand: output rounding alone is up to 2^-12 ≈ 2.4e-4 near 1);
/// - bf16: 4e-3 — bf16's 8-bit significand makes its output rounding alone up to
///   2^-9 ≈ 2e-3 for values in [0.5, 1).
///
/// For values above 1 in magnitude (reweighted tensors) the tolerance scales with |want|,
/// since the rounding of the output does.
pub fn tolerance<T: Element>() -> f64 {
    match T::NAME {
        "f32" => 2e-6,
        "f64" => 1e-12,
        "f16" => 1e-3,
        "bf16" => 4e-3,
        other => panic!("no tolerance for element type {other}"),
    }
}

/// Asserts `got` matches the f64 reference `want` element by element within
/// [`tolerance::<T>()`], NaN matching only NaN. `what` names the case (shapes, dim, seed) and
/// is printed with the first mismatch, its index, and the values.
pub fn assert_close<T: Element>(got: &[T], want: &[f64], what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what} [{}]: result has {} elements, reference {}",
        T::NAME,
        got.len(),
        want.len()
    );
    let tol = tolerance::<T>();
    let mismatches = got
        .iter()
        .zip(want)
        .filter(|(g, &w)| !close(g.to_f64(), w, tol))
        .count();
    if let Some(i) = (0..got.len()).find(|&i| !close(got[i].to_f64(), want[i], tol)) {
        panic!(
            "{what} [{}]: {mismatches} of {} elements differ; first at flat index {i}: got {:?} \
             ({}), want {} (|diff| {:e}, tolerance {:e})",
            T::NAME,
            got.len(),
            got[i],
            got[i].to_f64(),
            want[i],
            (got[i].to_f64() - want[i]).abs(),
            tol * want[i].abs().max(1.0),
        );
    }
}

/// NaN matches NaN only; otherwise `|got - want| <= tol · max(1, |want|)`.
fn close(got: f64, want: f64, tol: f64) -> bool {
    close_abs(got, want, tol * want.abs().max(1.0))
}

/// NaN matches NaN only; otherwise `|got - want| <= allowed`.
fn close_abs(got: f64, want: f64, allowed: f64) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    (got - want).abs() <= allowed
}

/// As [`assert_close`], with element `i` allowed `tolerance::<T>() · scale[i]`: for results
/// that carry more than one rounding, each scaled by the magnitude it applies to.
pub fn assert_close_scaled<T: Element>(got: &[T], want: &[f64], scale: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what} [{}]: lengths", T::NAME);
    assert_eq!(scale.len(), want.len(), "{what}: scale length");
    let tol = tolerance::<T>();
    if let Some(i) = (0..got.len()).find(|&i| !close_abs(got[i].to_f64(), want[i], tol * scale[i]))
    {
        panic!(
            "{what} [{}]: first mismatch at flat index {i}: got {:?} ({}), want {} (|diff| {:e}, \
             tolerance {:e})",
            T::NAME,
            got[i],
            got[i].to_f64(),
            want[i],
            (got[i].to_f64() - want[i]).abs(),
            tol * scale[i],
        );
    }
}

/// Asserts every value is NaN or within [-1, 1] exactly (the clamp of SPEC §2).
pub fn assert_unit_bounded<T: Element>(got: &[T], what: &str) {
    if let Some((i, v)) = got.iter().enumerate().find(|(_, v)| v.to_f64().abs() > 1.0) {
        panic!(
            "{what} [{}]: element {i} = {v:?} exceeds 1 in magnitude",
            T::NAME
        );
    }
}

/// A buffer of `n` copies of `poison`, to show any element an `_into` call fails to write.
pub fn poisoned<T: Element>(n: usize, poison: f64) -> Vec<T> {
    vec![T::from_f64(poison); n]
}

/// True if `a` and `b` hold bit-for-bit the same values (NaN equal to NaN).
pub fn same_bits<T: Element>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let (x, y) = (x.to_f64(), y.to_f64());
            x.to_bits() == y.to_bits()
        })
}

/// The name the emulated driver of tools/cuda-emu gives its devices.
pub const EMULATOR: &str = "cosim CUDA emulator";

/// Whether `cuda` runs on the emulated driver (tools/cuda-emu), where a test too large to
/// emulate runs smaller or is skipped, saying so through [`emulator_note`].
#[cfg(feature = "cuda")]
pub fn emulated(cuda: &cosim::cuda::Cuda) -> bool {
    cuda.describe().is_ok_and(|d| d.contains(EMULATOR))
}

/// One line on stderr past the test harness's capture (which only takes `print!`-style
/// macros), so that tools/cuda-emu/test.sh lists every test that was skipped or shrunk.
pub fn emulator_note(test: &str, what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "cuda-emu note: {test}: {what}");
}

/// Values of magnitude 0.5..2, either sign, for gradient tests: where a gradient is exactly
/// 0 (an input broadcast along the reduced dim, vectors of one component: the cosine does not
/// change with the vector's size) it comes out as rounding residue of terms ~1/‖v‖, which
/// stays within the dtype's tolerance when no vector is near 0.
pub fn away_from_zero<T: Element>(r: &mut SmallRng, n: usize) -> Vec<T> {
    (0..n)
        .map(|_| {
            let v: f64 = r.random_range(0.5..2.0);
            T::from_f64(if r.random_bool(0.5) { v } else { -v })
        })
        .collect()
}

/// Compares `cosine_similarity` with the reference for one shape pair, on random inputs.
pub fn check_along<T: Element>(
    seed: u64,
    s1: &[usize],
    s2: &[usize],
    dim: isize,
) -> anyhow::Result<()> {
    let mut r = rng(seed);
    let x1: Vec<T> = random_input(&mut r, s1);
    let x2: Vec<T> = random_input(&mut r, s2);
    check_along_on(&x1, s1, &x2, s2, dim, None)
}

/// Compares `cosine_similarity` (and its `_into` twin) with the reference on given inputs.
pub fn check_along_on<T: Element>(
    x1: &[T],
    s1: &[usize],
    x2: &[T],
    s2: &[usize],
    dim: isize,
    eps: Option<f64>,
) -> anyhow::Result<()> {
    let what = format!("x1 {s1:?}, x2 {s2:?}, dim {dim}, eps {eps:?}");
    let (want, want_shape) =
        reference_along(x1, s1, x2, s2, dim, eps.unwrap_or(cosim::DEFAULT_EPS));
    let got = cosim::cpu::cosine_similarity(x1, s1, x2, s2, dim, eps)?;
    anyhow::ensure!(
        got.shape == want_shape,
        "{what}: shape {:?}, want {want_shape:?}",
        got.shape
    );
    assert_close(&got.values, &want, &what);
    assert_unit_bounded(&got.values, &what);
    let mut out: Vec<T> = poisoned(want.len(), f64::NAN);
    cosim::cpu::cosine_similarity_into(&mut out, x1, s1, x2, s2, dim, eps)?;
    assert_close(&out, &want, &format!("{what} (_into)"));
    Ok(())
}

/// True if the padded `shape` is size 1 along some, but not all, of the dims `from..` of
/// `bshape` that are not 1: the library's documented PartialFlattenBroadcast refusal.
pub fn partly_broadcast(shape: &[usize], bshape: &[usize], from: usize) -> bool {
    let pad = bshape.len() - shape.len();
    let own = |i: usize| if i < pad { 1 } else { shape[i - pad] };
    let live: Vec<usize> = (from..bshape.len()).filter(|&i| bshape[i] != 1).collect();
    let ones = live.iter().filter(|&&i| own(i) == 1).count();
    ones != 0 && ones != live.len()
}
