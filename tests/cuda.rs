//! The CUDA backend against the independent f64 reference (tests/common), on the same kinds of
//! cases as tests/cpu.rs plus shapes chosen to reach every kernel variant (vector/scalar,
//! broadcast splats, lanes-per-row groups, block rows with and without splits, reweighting
//! fused and unfused, misaligned pointers, 64-bit offsets). Outputs are poisoned before
//! every launch so that an unwritten element shows.
//!
//! Every test needs a GPU: they are `#[ignore]`d and run on the device with
//! `cargo test -- --include-ignored` (scripts/device-run.sh).

mod common;

use anyhow::Result;
use common::*;
use cosim::cuda::{Cuda, CudaElement};
use cosim::cudarc::driver::{CudaSlice, CudaView};
use cosim::{bf16, f16};
use rand::rngs::SmallRng;
use rand::Rng;

const NEEDS: &str = "needs a CUDA device";

fn gpu() -> Cuda {
    Cuda::new(0).unwrap_or_else(|e| panic!("{NEEDS}: {e}"))
}

/// A device copy of `host`, starting `shift` elements into its allocation (shift 1 makes
/// the pointer misaligned for 16-byte vectors); the allocation is returned to keep it alive.
fn upload_shifted<T: CudaElement>(cuda: &Cuda, host: &[T], shift: usize) -> Result<CudaSlice<T>> {
    let mut padded = vec![T::from_f64(7.0); shift];
    padded.extend_from_slice(host);
    Ok(cuda.upload(&padded)?)
}

fn view<T>(buf: &CudaSlice<T>, shift: usize) -> CudaView<'_, T> {
    buf.slice(shift..)
}

/// Poison values that make an unwritten output element obvious.
fn poison(case: usize) -> f64 {
    [f64::NAN, 12345.0, -777.0][case % 3]
}

#[allow(clippy::too_many_arguments)]
fn check_along<T: CudaElement>(
    cuda: &Cuda,
    r: &mut SmallRng,
    s1: &[usize],
    s2: &[usize],
    dim: isize,
    eps: Option<f64>,
    shift: usize,
    case: usize,
) -> Result<()> {
    let (h1, h2) = (random_input::<T>(r, s1), random_input::<T>(r, s2));
    let (d1, d2) = (
        upload_shifted(cuda, &h1, shift)?,
        upload_shifted(cuda, &h2, 0)?,
    );
    let (want, shape) = reference_along(&h1, s1, &h2, s2, dim, eps.unwrap_or(1e-8));
    // The output is shifted too: its own alignment decides the vector stores.
    let mut out = cuda.upload(&poisoned::<T>(want.len() + shift, poison(case)))?;
    let mut out_view = out.slice_mut(shift..);
    let got_shape =
        cuda.cosine_similarity_into(&mut out_view, &view(&d1, shift), s1, &d2, s2, dim, eps)?;
    assert_eq!(got_shape, shape, "{s1:?} vs {s2:?} dim {dim}");
    let got = cuda.download(&out)?;
    let what =
        format!("cuda along {s1:?} vs {s2:?} dim {dim} eps {eps:?} shift {shift} case {case}");
    assert_close(&got[shift..], &want, &what);
    assert_unit_bounded(&got[shift..], &what);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn check_flat<T: CudaElement>(
    cuda: &Cuda,
    r: &mut SmallRng,
    s1: &[usize],
    s2: &[usize],
    from: usize,
    shift: usize,
    case: usize,
) -> Result<()> {
    let (h1, h2) = (random_input::<T>(r, s1), random_input::<T>(r, s2));
    let (d1, d2) = (
        upload_shifted(cuda, &h1, 0)?,
        upload_shifted(cuda, &h2, shift)?,
    );
    let (want, shape) = reference_flattened(&h1, s1, &h2, s2, from, 1e-8);
    let mut out = cuda.upload(&poisoned::<T>(want.len().max(1), poison(case)))?;
    let mut out_view = out.slice_mut(..want.len());
    let got_shape =
        cuda.channel_similarity_into(&mut out_view, &d1, s1, &view(&d2, shift), s2, from, None)?;
    assert_eq!(got_shape, shape);
    let got = cuda.download(&out)?;
    assert_close(
        &got[..want.len()],
        &want,
        &format!("cuda channels {s1:?} vs {s2:?} from {from} shift {shift} case {case}"),
    );
    Ok(())
}

/// Reweighting: similarities against the reference, and the weighted tensor exactly equal
/// to y · sim in T's arithmetic (the documented contract), both outputs poisoned first.
/// `shift` moves y and the weighted output off 16-byte alignment.
fn check_reweight<T: CudaElement>(
    cuda: &Cuda,
    r: &mut SmallRng,
    (sx, sy): (&[usize], &[usize]),
    from: usize,
    shift: usize,
    case: usize,
) -> Result<()> {
    let (hx, hy) = (random_input::<T>(r, sx), random_input::<T>(r, sy));
    let (dx, dy) = (cuda.upload(&hx)?, upload_shifted(cuda, &hy, shift)?);
    let (want, sim_shape) = reference_flattened(&hx, sx, &hy, sy, from, 1e-8);
    let bshape = broadcast_shape(sx, sy).expect("valid shapes");
    let n = numel(&bshape);
    let mut w = cuda.upload(&poisoned::<T>(n + shift, poison(case)))?;
    let mut s = cuda.upload(&poisoned::<T>(want.len(), poison(case + 1)))?;
    let mut w_view = w.slice_mut(shift..);
    let y_view = view(&dy, shift);
    let (wshape, sshape) =
        cuda.reweight_channels_into(&mut w_view, &mut s, &dx, sx, &y_view, sy, from, None)?;
    assert_eq!(
        (wshape.as_slice(), sshape.as_slice()),
        (bshape.as_slice(), sim_shape.as_slice())
    );
    let (w, s) = (cuda.download(&w)?[shift..].to_vec(), cuda.download(&s)?);
    let what = format!("cuda reweight {sx:?} vs {sy:?} from {from} shift {shift} case {case}");
    assert_close(&s, &want, &what);
    let y = materialise(&hy, sy, &bshape);
    let len = n / want.len().max(1);
    for (i, (wi, yi)) in w.iter().zip(&y).enumerate() {
        let expect = T::from_acc(T::from_f64(*yi).to_acc() * s[i / len].to_acc());
        assert!(
            same_bits(&[*wi], &[expect]),
            "{what}: weighted[{i}] = {wi:?}, want y·sim = {expect:?}"
        );
    }
    Ok(())
}

fn random_shapes(r: &mut SmallRng) -> (Vec<usize>, Vec<usize>) {
    let rank = r.random_range(1..=5usize);
    let mut s: Vec<usize> = (0..rank).map(|_| r.random_range(1..=7usize)).collect();
    if r.random_bool(0.25) {
        let d = r.random_range(0..rank);
        s[d] = [33, 130, 1000][r.random_range(0..3)];
    }
    let mut s2 = s.clone();
    for d in s2.iter_mut() {
        if r.random_bool(0.2) {
            *d = 1;
        }
    }
    if r.random_bool(0.2) {
        let drop = r.random_range(0..rank);
        s2.drain(..drop);
    }
    if r.random_bool(0.5) {
        (s, s2)
    } else {
        (s2, s)
    }
}

fn battery<T: CudaElement>(seed: u64) -> Result<()> {
    let cuda = gpu();
    let mut r = rng(seed);
    for case in 0..150 {
        let (s1, s2) = random_shapes(&mut r);
        let rank = s1.len().max(s2.len()) as isize;
        let dim = r.random_range(-(rank as i64)..rank as i64) as isize;
        let eps = if r.random_bool(0.2) { Some(0.5) } else { None };
        let shift = usize::from(r.random_bool(0.2));
        check_along::<T>(&cuda, &mut r, &s1, &s2, dim, eps, shift, case)?;
        let from = r.random_range(0..rank as usize);
        let bshape = broadcast_shape(&s1, &s2).expect("broadcastable");
        if cosim::plan::Plan::flattened(&s1, &s2, from, None).is_ok() && from < bshape.len() {
            check_flat::<T>(&cuda, &mut r, &s1, &s2, from, shift, case)?;
        }
    }
    Ok(())
}

/// Shapes that reach each kernel variant and launch path.
fn variants<T: CudaElement>(seed: u64) -> Result<()> {
    let cuda = gpu();
    let mut r = rng(seed);
    let along: &[(&[usize], &[usize], isize)] = &[
        (&[3, 16, 8, 8], &[3, 16, 8, 8], 1), // vector
        (&[3, 16, 8, 8], &[1, 16, 1, 1], 1), // vector, x2 splat
        (&[1, 16, 1, 1], &[3, 16, 8, 8], 1), // vector, x1 splat
        (&[3, 5, 7], &[3, 5, 7], 1),         // scalar: odd inner
        (&[2, 3, 4, 5], &[2, 3, 4, 5], 0),   // scalar, outermost dim
        (&[4, 6, 5], &[6, 1], -2),           // broadcast inside the kept dims
        (&[2, 256, 32, 32], &[2, 256, 32, 32], 1),
        (&[64, 2, 64, 64], &[64, 2, 64, 64], 1), // the seed's C = 2
        (&[5, 3], &[5, 1], 1),                   // x2 broadcast along the reduced dim
        (&[5, 1000], &[5, 1], 1),                // one value per row in x2: rows + splat
        (&[7, 1], &[7, 33], -1),                 // one value per row in x1
        (&[1, 1], &[3, 100_000], 1),             // long constant rows, split
        (&[1 << 16, 16], &[1 << 16, 16], 0),     // few outputs, long reduction: split along
        (&[40_000, 3], &[40_000, 3], 0),         // the same, scalar
        (&[3000, 2, 8], &[1, 2, 8], 0),          // split along with a broadcast input
        (&[2, 1, 3, 2, 1, 2, 3, 2], &[1, 2, 3, 1, 2, 2, 1, 2], 3), // rank 8, both broadcast
        (&[2, 1, 3, 2, 1, 2, 3, 2], &[1, 2, 3, 1, 2, 2, 1, 2], -1),
    ];
    let mut case = 0;
    for (s1, s2, dim) in along {
        for shift in [0, 1] {
            check_along::<T>(&cuda, &mut r, s1, s2, *dim, None, shift, case)?;
            case += 1;
        }
    }
    // Rows: lanes-per-row groups (4..32), block rows, split rows; vector and scalar.
    let rows: &[&[usize]] = &[
        &[37, 8],
        &[37, 24],
        &[37, 64],
        &[37, 200],
        &[37, 1000],
        &[37, 2048],
        &[37, 2049],
        &[1100, 2100],
        &[3, 100_000],
        &[2, 1 << 20],
        &[1, (1 << 20) + 3],
        &[6, 7, 4096],
    ];
    for s in rows {
        for shift in [0, 1] {
            check_along::<T>(&cuda, &mut r, s, s, -1, None, shift, case)?;
            case += 1;
        }
    }
    check_along::<T>(&cuda, &mut r, &[9, 3000], &[3000], 1, None, 0, case)?; // one row vs many
    let flat: &[(&[usize], &[usize], usize)] = &[
        (&[4, 8, 5, 5], &[4, 8, 5, 5], 2),
        (&[4, 8, 16, 16], &[1, 8, 16, 16], 2),
        (&[2, 3, 64, 64], &[2, 3, 64, 64], 1),
        (&[2, 3, 7, 9], &[2, 3, 1, 1], 2), // whole channel broadcast: strided path
    ];
    for (s1, s2, from) in flat {
        for shift in [0, 1] {
            check_flat::<T>(&cuda, &mut r, s1, s2, *from, shift, case)?;
            case += 1;
        }
    }
    Ok(())
}

fn reweights<T: CudaElement>(seed: u64) -> Result<()> {
    let cuda = gpu();
    let mut r = rng(seed);
    let cases: &[(&[usize], &[usize], usize)] = &[
        (&[4, 8, 5, 5], &[4, 8, 5, 5], 2),         // group kernel, scalar
        (&[4, 8, 16, 16], &[4, 8, 16, 16], 2),     // group kernel, vector
        (&[1, 8, 16, 16], &[4, 8, 16, 16], 2),     // x broadcast over the batch
        (&[2, 600, 48, 48], &[2, 600, 48, 48], 2), // block rows, fused
        (&[1, 2, 1024, 1024], &[1, 2, 1024, 1024], 2), // split rows, then the scale kernel
        (&[2, 3, 1, 1], &[2, 3, 5, 5], 2),         // x constant per channel: along + scale
        (&[2, 3, 5, 5], &[2, 3, 1, 1], 2),         // y constant per channel
    ];
    for (case, (sx, sy, from)) in cases.iter().enumerate() {
        for shift in [0, 1] {
            check_reweight::<T>(&cuda, &mut r, (sx, sy), *from, shift, 2 * case + shift)?;
        }
    }
    Ok(())
}

/// Zero vectors, norms below eps, NaN, size-0 dims, rank 0 on the device.
fn edges<T: CudaElement>() -> Result<()> {
    let cuda = gpu();
    let z = T::from_f64(0.0);
    let one = T::from_f64(1.0);
    let nan = T::from_f64(f64::NAN);
    // Rows [3, 4] (rows kernel) and the same data transposed [4, 3] dim 0 (along kernel).
    let x1 = [z, z, z, z, one, z, nan, z, one, one, one, one];
    let x2 = [one, one, one, one, one, one, one, one, z, z, z, z];
    for (s, dim) in [([3usize, 4], 1isize), ([4, 3], 0)] {
        let (a, b) = if dim == 1 {
            (x1.to_vec(), x2.to_vec())
        } else {
            let t = |v: &[T]| (0..12).map(|i| v[(i % 3) * 4 + i / 3]).collect::<Vec<_>>();
            (t(&x1), t(&x2))
        };
        for eps in [None, Some(0.0)] {
            let (da, db) = (cuda.upload(&a)?, cuda.upload(&b)?);
            let got = cuda.cosine_similarity(&da, &s, &db, &s, dim, eps)?;
            let got = cuda.download(&got.values)?;
            let what = format!("edges {s:?} dim {dim} eps {eps:?}");
            assert_eq!(got[0].to_f64(), 0.0, "{what}: zero vector");
            assert!(got[1].to_f64().is_nan(), "{what}: NaN row");
            assert_eq!(got[2].to_f64(), 0.0, "{what}: zero other vector");
        }
    }
    // Norm below eps: [1e-9, 0]·[1, 0] = 1e-9 / (1e-8 · 1) = 0.1 (f32/f64 only: 1e-9 is
    // below f16's range and bf16 rounds it).
    if T::NAME == "f32" || T::NAME == "f64" {
        let a = cuda.upload(&[T::from_f64(1e-9), z])?;
        let b = cuda.upload(&[one, z])?;
        let got = cuda.download(&cuda.cosine_similarity(&a, &[2], &b, &[2], 0, None)?.values)?;
        assert_close(&got, &[0.1], "norm below eps");
    }
    // Size-0 dims and rank 0.
    let e = cuda.upload::<T>(&[])?;
    let s = cuda.cosine_similarity(&e, &[0, 3], &e, &[0, 3], 1, None)?;
    assert_eq!((s.shape, s.values.len()), (vec![0], 0));
    let s = cuda.cosine_similarity(&e, &[3, 0], &e, &[3, 0], 1, None)?;
    assert_eq!(cuda.download(&s.values)?, vec![z; 3]);
    let (a, b) = (
        cuda.upload(&[T::from_f64(2.0)])?,
        cuda.upload(&[T::from_f64(-3.0)])?,
    );
    let s = cuda.cosine_similarity(&a, &[], &b, &[], 0, None)?;
    assert_eq!(s.shape, Vec::<usize>::new());
    assert_eq!(cuda.download(&s.values)?[0].to_f64(), -1.0);
    // Identical long vectors: never above 1.
    let mut r = rng(9);
    let h = random_input::<T>(&mut r, &[4, 4099]);
    let d = cuda.upload(&h)?;
    let got = cuda.download(
        &cuda
            .cosine_similarity(&d, &[4, 4099], &d, &[4, 4099], 1, None)?
            .values,
    )?;
    assert_unit_bounded(&got, "identical rows");
    Ok(())
}

macro_rules! per_dtype {
    ($name:ident, $f:ident, $seed:expr) => {
        mod $name {
            use super::*;
            #[test]
            #[ignore = "needs a CUDA device"]
            fn f32() -> Result<()> {
                $f::<f32>($seed)
            }
            #[test]
            #[ignore = "needs a CUDA device"]
            fn f64() -> Result<()> {
                $f::<f64>($seed + 1)
            }
            #[test]
            #[ignore = "needs a CUDA device"]
            fn f16() -> Result<()> {
                $f::<f16>($seed + 2)
            }
            #[test]
            #[ignore = "needs a CUDA device"]
            fn bf16() -> Result<()> {
                $f::<bf16>($seed + 3)
            }
        }
    };
}

per_dtype!(random_battery, battery, 100);
per_dtype!(kernel_variants, variants, 200);
per_dtype!(reweighting, reweights, 300);

fn edges_seeded<T: CudaElement>(_seed: u64) -> Result<()> {
    edges::<T>()
}
per_dtype!(edge_cases, edges_seeded, 400);

#[test]
#[ignore = "needs a CUDA device"]
fn scratch_is_reported_and_empty_outputs_need_none() -> Result<()> {
    let cuda = gpu();
    let p = cosim::plan::Plan::along(&[0, 4096], &[0, 4096], 1, None)?;
    assert_eq!(cuda.scratch_bytes::<f32>(&p), 0);
    let p = cosim::plan::Plan::along(&[8, 1 << 25], &[8, 1 << 25], 1, None)?;
    let bytes = cuda.scratch_bytes::<f32>(&p);
    assert!(bytes > 0 && bytes < 1 << 20, "{bytes}");
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn errors_change_nothing() -> Result<()> {
    let cuda = gpu();
    let a = cuda.upload(&[1.0f32; 6])?;
    let mut out = cuda.upload(&[5.0f32; 3])?;
    // Wrong output length, shapes that do not broadcast, dim out of range, bad eps.
    assert!(cuda
        .cosine_similarity_into(&mut out, &a, &[2, 3], &a, &[2, 3], 1, None)
        .is_err());
    assert!(cuda
        .cosine_similarity_into(&mut out, &a, &[2, 3], &a, &[3, 2], 1, None)
        .is_err());
    assert!(cuda
        .cosine_similarity_into(&mut out, &a, &[3, 2], &a, &[3, 2], 2, None)
        .is_err());
    assert!(cuda
        .cosine_similarity_into(&mut out, &a, &[3, 2], &a, &[3, 2], 1, Some(-1.0))
        .is_err());
    assert!(cuda
        .cosine_similarity_into(&mut out, &a, &[7], &a, &[7], 0, None)
        .is_err());
    assert_eq!(cuda.download(&out)?, vec![5.0f32; 3]);
    Ok(())
}

/// Deterministic fast fill for the multi-GiB inputs below (the seeded `rand` path would take
/// minutes).
fn big_random(n: usize, seed: u64) -> Vec<f16> {
    use rayon::prelude::*;
    let mut v = vec![f16::ZERO; n];
    v.par_chunks_mut(1 << 20)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut s = (seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
            for x in chunk {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *x = f16::from_f32(((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0);
            }
        });
    v
}

/// Inputs past 2^31 elements (offsets that need 64 bits), along a strided dim and along
/// split rows, against the CPU backend (itself checked against the reference in tests/cpu.rs).
#[test]
#[ignore = "needs a CUDA device"]
fn beyond_2_pow_31_elements() -> Result<()> {
    let cuda = gpu();
    if emulated(&cuda) {
        // 64-bit offsets need more than 2^31 elements per input: 8.6 GB of f16 in all.
        emulator_note(
            "beyond_2_pow_31_elements",
            "skipped (needs 2 × 4.3 GB of inputs)",
        );
        return Ok(());
    }
    for (shape, dim) in [
        (vec![300usize, 1 << 23], 0isize),
        (vec![2, (1usize << 30) + 8], 1),
    ] {
        let n: usize = shape.iter().product();
        assert!(n > 1 << 31);
        let (h1, h2) = (big_random(n, 1), big_random(n, 2));
        let want = cosim::cpu::cosine_similarity(&h1, &shape, &h2, &shape, dim, None)?;
        let (d1, d2) = (cuda.upload(&h1)?, cuda.upload(&h2)?);
        drop((h1, h2));
        let got = cuda.cosine_similarity(&d1, &shape, &d2, &shape, dim, None)?;
        let got = cuda.download(&got.values)?;
        let want: Vec<f64> = want.values.iter().map(|v| v.to_f64()).collect();
        // Both sides round to f16; allow the two roundings.
        assert_close_scaled(
            &got,
            &want,
            &vec![2.0; want.len()],
            &format!("{shape:?} dim {dim}"),
        );
    }
    Ok(())
}

/// Runs everywhere: without a driver the handle is a clear error, never a panic; with one
/// (and the kernels built) it opens.
#[test]
fn new_is_an_error_without_a_driver_and_works_with_one() {
    match (cosim::cuda::driver_present(), Cuda::new(0)) {
        (false, Err(e)) => assert!(matches!(e, cosim::Error::NoDriver), "{e}"),
        (false, Ok(_)) => panic!("opened a device without a driver"),
        (true, r) => {
            if cosim::cuda::kernels_built() {
                if let Err(e) = r {
                    // A driver without a usable device is an error, not a panic.
                    assert!(
                        matches!(
                            e,
                            cosim::Error::NoDevice { .. }
                                | cosim::Error::Driver(_)
                                | cosim::Error::KernelLoad { .. }
                        ),
                        "{e}"
                    );
                }
            } else {
                assert!(matches!(r, Err(cosim::Error::KernelsNotBuilt)));
            }
        }
    }
}

/// An output larger than the device's free memory is `Error::OutOfMemory` (never a panic),
/// and the handle works after it. The inputs are tiny: [n, 1, 1] against [1, m, 1] along the
/// last dim broadcasts to an [n, m] result.
#[test]
#[ignore = "needs a CUDA device"]
fn an_output_past_free_memory_is_out_of_memory() -> Result<()> {
    let cuda = gpu();
    cuda.stream().context().bind_to_thread()?;
    let (free, _total) = cosim::cudarc::driver::result::mem_get_info()?;
    let n = 1 << 16;
    let m = (free / 4 + (64 << 20)).div_ceil(n);
    let (x1, x2) = (
        cuda.upload(&vec![1.0f32; n])?,
        cuda.upload(&vec![2.0f32; m])?,
    );
    let e = cuda
        .cosine_similarity(&x1, &[n, 1, 1], &x2, &[1, m, 1], 2, None)
        .unwrap_err();
    assert!(
        matches!(e, cosim::Error::OutOfMemory { bytes, .. } if bytes == n * m * 4),
        "{e:?}"
    );
    let (y1, y2) = (x1.slice(..4), x2.slice(..3));
    let s = cuda.cosine_similarity(&y1, &[4, 1, 1], &y2, &[1, 3, 1], 2, None)?;
    assert_eq!(cuda.download(&s.values)?, vec![1.0f32; 12]);
    Ok(())
}

/// Every device of the machine opens and computes, each on its own memory and stream
/// (tools/cuda-emu/test.sh runs it with two emulated devices).
#[test]
#[ignore = "needs a CUDA device"]
fn every_device_computes() -> Result<()> {
    let count = cosim::cuda::device_count()?;
    assert!(count >= 1);
    let mut r = rng(900);
    let shape = [5, 33, 7];
    let (h1, h2) = (
        random_input::<f32>(&mut r, &shape),
        random_input::<f32>(&mut r, &shape),
    );
    let (want, _) = reference_along(&h1, &shape, &h2, &shape, 1, 1e-8);
    let gpus = (0..count).map(Cuda::new).collect::<Result<Vec<_>, _>>()?;
    let outs = gpus
        .iter()
        .map(|g| {
            let (d1, d2) = (g.upload(&h1)?, g.upload(&h2)?);
            Ok(g.cosine_similarity(&d1, &shape, &d2, &shape, 1, None)?)
        })
        .collect::<Result<Vec<_>>>()?;
    for (i, (g, s)) in gpus.iter().zip(&outs).enumerate() {
        assert_close(&g.download(&s.values)?, &want, &format!("device {i}"));
    }
    Ok(())
}

/// Benchmarks time on any driver: CUDA events from CUDA 12.8 (cudarc's CUDA 13 bindings call
/// `cuEventElapsedTime_v2`), the host clock before (tools/cuda-emu/test.sh also runs this with
/// an emulated CUDA 12.4 driver).
#[test]
#[ignore = "needs a CUDA device"]
fn timing_on_any_driver() -> Result<()> {
    use cosim::cuda::{clock, time_ms, Clock};
    let driver = cosim::cuda::driver_version()?;
    let want = if driver >= (12, 8) {
        Clock::Events
    } else {
        Clock::Host
    };
    assert_eq!(clock(), want, "driver {driver:?}");
    let ctx = cosim::cudarc::driver::CudaContext::new(0)?;
    let s = ctx.default_stream();
    let mut buf = s.alloc_zeros::<f32>(1 << 20)?;
    let ms = time_ms(&s, || Ok::<(), anyhow::Error>(s.memset_zeros(&mut buf)?))?;
    assert!(ms.is_finite() && ms >= 0.0, "{ms} ms");
    Ok(())
}

/// A driver of an older major CUDA than the kernels' refuses them, and the error names both
/// versions and the ways out; any other driver loads them (tools/cuda-emu/test.sh runs this
/// with an emulated CUDA 12.4 driver too).
#[test]
#[ignore = "needs a CUDA device"]
fn a_driver_too_old_for_the_kernels_says_so() -> Result<()> {
    let built = cosim::cuda::build_info().expect("kernels built").cuda;
    let (major, minor) = cosim::cuda::driver_version()?;
    let kernels_major: u32 = built.split('.').next().unwrap_or("0").parse()?;
    match Cuda::new(0) {
        Ok(_) => assert!(
            major >= kernels_major,
            "CUDA {built} kernels loaded on a {major}.{minor} driver"
        ),
        Err(e) => {
            assert!(major < kernels_major, "{e}");
            let m = e.to_string();
            assert!(matches!(e, cosim::Error::KernelLoad { .. }), "{m}");
            for part in [
                format!("built by CUDA {built}"),
                format!("this driver supports CUDA {major}.{minor}"),
                "update the NVIDIA driver".to_string(),
                "NVCC=".to_string(),
            ] {
                assert!(m.contains(&part), "{m} lacks {part:?}");
            }
        }
    }
    Ok(())
}
