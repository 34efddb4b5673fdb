//! The CUDA gradients of the along and per-channel similarities against the CPU gradients
//! (tests/backward_cpu.rs checks those against finite differences and the composed formula)
//! on random shapes with broadcasting both ways, every dtype, views at an offset, and the
//! edges. Needs a GPU (or the emulated driver: tools/cuda-emu/test.sh).

mod common;

use anyhow::Result;
use common::*;
use cosim::cpu;
use cosim::cuda::{Cuda, CudaElement};
use cosim::{bf16, f16, Element};

fn gpu() -> Cuda {
    Cuda::new(0).unwrap_or_else(|e| panic!("needs a CUDA device: {e}"))
}

/// The GPU gradients equal the CPU ones within the dtype's tolerance, scaled by the largest
/// gradient (both sum in the accumulator type, in different orders).
fn assert_grads<T: Element>(what: &str, got: &[T], want: &[T]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let tol = match T::NAME {
        "f64" => 1e-12,
        "f32" => 2e-5,
        _ => 2e-2,
    };
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.to_f64().abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.to_f64(), w.to_f64());
        let ok = (g - w).abs() <= tol * scale || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}: element {i}: cuda {g} vs cpu {w}");
    }
}

fn battery<T: CudaElement>(seed: u64) -> Result<()> {
    let cuda = gpu();
    let mut r = rng(seed);
    for case in 0..60 {
        let (s1, s2, dim) = random_broadcast_case(&mut r, 5, 6);
        let eps = [None, Some(0.0), Some(0.5)][case % 3];
        let x1: Vec<T> = away_from_zero(&mut r, s1.iter().product());
        let x2: Vec<T> = away_from_zero(&mut r, s2.iter().product());
        let out = cpu::cosine_similarity(&x1, &s1, &x2, &s2, dim, eps)?;
        let grad: Vec<T> = random_vec(&mut r, out.values.len());
        let (w1, w2) = cpu::cosine_similarity_backward(&x1, &s1, &x2, &s2, dim, eps, &grad)?;
        let (d1, d2, dg) = (cuda.upload(&x1)?, cuda.upload(&x2)?, cuda.upload(&grad)?);
        let (g1, g2) = cuda.cosine_similarity_backward(&d1, &s1, &d2, &s2, dim, eps, &dg)?;
        let what = format!(
            "{} case {case}: {s1:?} {s2:?} dim {dim} eps {eps:?}",
            T::NAME
        );
        assert_grads(&format!("{what} g1"), &cuda.download(&g1)?, &w1);
        assert_grads(&format!("{what} g2"), &cuda.download(&g2)?, &w2);
    }
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn along_matches_the_cpu_on_random_shapes() -> Result<()> {
    battery::<f32>(1)?;
    battery::<f64>(2)?;
    battery::<f16>(3)?;
    battery::<bf16>(4)
}

#[test]
#[ignore = "needs a CUDA device"]
fn channels_and_views_match_the_cpu() -> Result<()> {
    let cuda = gpu();
    let mut r = rng(5);
    // NCHW maps per channel, against a same-shape map and a [1, C, H, W] prototype (its
    // gradient summed over N with atomics); dim=1 per pixel (strided reduction).
    for (sx, sy) in [
        (vec![3usize, 8, 5, 7], vec![3usize, 8, 5, 7]),
        (vec![3, 8, 5, 7], vec![1, 8, 5, 7]),
        (vec![3, 8, 5, 7], vec![3, 8, 1, 1]),
    ] {
        let x: Vec<f32> = random_input(&mut r, &sx);
        let y: Vec<f32> = random_input(&mut r, &sy);
        let (dx, dy) = (cuda.upload(&x)?, cuda.upload(&y)?);
        let out = cpu::channel_similarity(&x, &sx, &y, &sy, 2, None)?;
        let grad: Vec<f32> = random_vec(&mut r, out.values.len());
        let (w1, w2) = cpu::channel_similarity_backward(&x, &sx, &y, &sy, 2, None, &grad)?;
        let (g1, g2) =
            cuda.channel_similarity_backward(&dx, &sx, &dy, &sy, 2, None, &cuda.upload(&grad)?)?;
        assert_grads(&format!("channels {sy:?} gx"), &cuda.download(&g1)?, &w1);
        assert_grads(&format!("channels {sy:?} gy"), &cuda.download(&g2)?, &w2);
        let out = cpu::cosine_similarity(&x, &sx, &y, &sy, 1, None)?;
        let grad: Vec<f32> = random_vec(&mut r, out.values.len());
        let (w1, w2) = cpu::cosine_similarity_backward(&x, &sx, &y, &sy, 1, None, &grad)?;
        // The inputs as views one element into their buffers (unaligned for vector loads).
        let (px, py) = (
            cuda.upload(&[[0.0f32].as_slice(), &x].concat())?,
            cuda.upload(&[[0.0f32].as_slice(), &y].concat())?,
        );
        let (vx, vy) = (px.slice(1..), py.slice(1..));
        let (g1, g2) =
            cuda.cosine_similarity_backward(&vx, &sx, &vy, &sy, 1, None, &cuda.upload(&grad)?)?;
        assert_grads(&format!("dim 1 {sy:?} gx"), &cuda.download(&g1)?, &w1);
        assert_grads(&format!("dim 1 {sy:?} gy"), &cuda.download(&g2)?, &w2);
    }
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn edges_match_the_cpu_and_bad_input_is_refused() -> Result<()> {
    let cuda = gpu();
    // A zero vector with eps = 0, a NaN, and an ordinary pair.
    let x1 = [0.0f32, 0.0, f32::NAN, 1.0, 1.0, 2.0];
    let x2 = [3.0f32, 4.0, 2.0, -1.0, 0.5, 0.25];
    let grad = [1.0f32, 1.0, 1.0];
    let (w1, w2) =
        cpu::cosine_similarity_backward(&x1, &[3, 2], &x2, &[3, 2], 1, Some(0.0), &grad)?;
    let (d1, d2, dg) = (cuda.upload(&x1)?, cuda.upload(&x2)?, cuda.upload(&grad)?);
    let (g1, g2) =
        cuda.cosine_similarity_backward(&d1, &[3, 2], &d2, &[3, 2], 1, Some(0.0), &dg)?;
    assert_grads("edges g1", &cuda.download(&g1)?, &w1);
    assert_grads("edges g2", &cuda.download(&g2)?, &w2);
    assert_eq!(&cuda.download(&g1)?[..2], &[0.0, 0.0]);
    // Empty inputs, an input no output reads (a broadcast against a size-0 dim): zeros.
    let (e1, e2) = (cuda.upload(&[0.0f32; 0])?, cuda.upload(&[2.0f32, 3.0])?);
    let (g1, g2) = cuda.cosine_similarity_backward(
        &e1,
        &[0, 2],
        &e2,
        &[1, 2],
        1,
        None,
        &cuda.upload(&[0.0f32; 0])?,
    )?;
    assert_eq!((g1.len(), cuda.download(&g2)?), (0, vec![0.0, 0.0]));
    let e = cuda
        .cosine_similarity_backward(
            &d1,
            &[3, 2],
            &d2,
            &[3, 2],
            1,
            None,
            &cuda.upload(&[1.0f32; 2])?,
        )
        .unwrap_err();
    assert!(
        matches!(e, cosim::Error::OutLenMismatch { what: "grad", .. }),
        "{e}"
    );
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn reweight_matches_the_cpu() -> Result<()> {
    let cuda = gpu();
    let mut r = rng(6);
    for (sx, sy) in [
        (vec![3usize, 8, 5, 7], vec![3usize, 8, 5, 7]),
        (vec![3, 8, 5, 7], vec![1, 8, 5, 7]),
        (vec![1, 8, 5, 7], vec![3, 8, 5, 7]),
    ] {
        let x: Vec<f32> = away_from_zero(&mut r, sx.iter().product());
        let y: Vec<f32> = away_from_zero(&mut r, sy.iter().product());
        let fwd = cpu::reweight_channels(&x, &sx, &y, &sy, 2, None)?;
        let gw: Vec<f32> = random_vec(&mut r, fwd.weighted.len());
        let gs: Vec<f32> = random_vec(&mut r, fwd.similarity.len());
        let (dx, dy, dgw, dgs) = (
            cuda.upload(&x)?,
            cuda.upload(&y)?,
            cuda.upload(&gw)?,
            cuda.upload(&gs)?,
        );
        for with_sims in [false, true] {
            let (w1, w2) = cpu::reweight_channels_backward(
                &x,
                &sx,
                &y,
                &sy,
                2,
                None,
                &gw,
                with_sims.then_some(&gs[..]),
            )?;
            let (g1, g2) = cuda.reweight_channels_backward(
                &dx,
                &sx,
                &dy,
                &sy,
                2,
                None,
                &dgw,
                with_sims.then_some(&dgs),
            )?;
            let what = format!("reweight {sx:?} {sy:?} sims {with_sims}");
            assert_grads(&format!("{what} gx"), &cuda.download(&g1)?, &w1);
            assert_grads(&format!("{what} gy"), &cuda.download(&g2)?, &w2);
        }
    }
    let e = cuda
        .reweight_channels_backward(
            &cuda.upload(&[1.0f32; 6])?,
            &[2, 3],
            &cuda.upload(&[1.0f32; 6])?,
            &[2, 3],
            1,
            None,
            &cuda.upload(&[1.0f32; 5])?,
            None::<&cosim::cudarc::driver::CudaSlice<f32>>,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            cosim::Error::OutLenMismatch {
                what: "grad_weighted",
                ..
            }
        ),
        "{e}"
    );
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn into_forms_write_every_element_and_refuse_wrong_outputs() -> Result<()> {
    let cuda = gpu();
    let mut r = rng(7);
    // Dense inputs (written directly) and a broadcast prototype (summed, then cast), into
    // poisoned buffers.
    let (sx, sp) = (vec![3usize, 8, 5, 7], vec![1usize, 8, 1, 1]);
    let x: Vec<f32> = away_from_zero(&mut r, sx.iter().product());
    let p: Vec<f32> = away_from_zero(&mut r, sp.iter().product());
    let (dx, dp) = (cuda.upload(&x)?, cuda.upload(&p)?);
    let out = cpu::cosine_similarity(&x, &sx, &p, &sp, 1, None)?;
    let grad: Vec<f32> = random_vec(&mut r, out.values.len());
    let dg = cuda.upload(&grad)?;
    let (w1, w2) = cpu::cosine_similarity_backward(&x, &sx, &p, &sp, 1, None, &grad)?;
    let mut g1 = cuda.upload(&poisoned::<f32>(x.len(), f64::NAN))?;
    let mut g2 = cuda.upload(&poisoned::<f32>(p.len(), f64::NAN))?;
    cuda.cosine_similarity_backward_into(&mut g1, &mut g2, &dx, &sx, &dp, &sp, 1, None, &dg)?;
    assert_grads("into g1", &cuda.download(&g1)?, &w1);
    assert_grads("into g2", &cuda.download(&g2)?, &w2);
    let (w1, w2) = cpu::channel_similarity_backward(&x, &sx, &x, &sx, 2, None, &grad[..24])?;
    let mut g2 = cuda.upload(&poisoned::<f32>(x.len(), f64::NAN))?;
    let dgc = cuda.upload(&grad[..24])?;
    cuda.channel_similarity_backward_into(&mut g1, &mut g2, &dx, &sx, &dx, &sx, 2, None, &dgc)?;
    assert_grads("channels into g1", &cuda.download(&g1)?, &w1);
    assert_grads("channels into g2", &cuda.download(&g2)?, &w2);
    let fwd = cpu::reweight_channels(&x, &sx, &x, &sx, 2, None)?;
    let gw: Vec<f32> = random_vec(&mut r, fwd.weighted.len());
    let (w1, w2) = cpu::reweight_channels_backward(&x, &sx, &x, &sx, 2, None, &gw, None)?;
    let mut gx = cuda.upload(&poisoned::<f32>(x.len(), f64::NAN))?;
    cuda.reweight_channels_backward_into(
        &mut gx,
        &mut g2,
        &dx,
        &sx,
        &dx,
        &sx,
        2,
        None,
        &cuda.upload(&gw)?,
        None::<&cosim::cudarc::driver::CudaSlice<f32>>,
    )?;
    assert_grads("reweight into gx", &cuda.download(&gx)?, &w1);
    assert_grads("reweight into gy", &cuda.download(&g2)?, &w2);
    // An output of the wrong length: refused, nothing written.
    let mut short = cuda.upload(&[5.0f32; 7])?;
    let mut g1 = cuda.upload(&poisoned::<f32>(x.len(), 9.0))?;
    let e = cuda
        .cosine_similarity_backward_into(&mut g1, &mut short, &dx, &sx, &dp, &sp, 1, None, &dg)
        .unwrap_err();
    assert!(
        matches!(e, cosim::Error::OutLenMismatch { what: "g2", .. }),
        "{e}"
    );
    assert_eq!(cuda.download(&g1)?, vec![9.0f32; x.len()]);
    assert_eq!(cuda.download(&short)?, vec![5.0f32; 7]);
    Ok(())
}
