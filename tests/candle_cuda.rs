//! `cosim::candle` on CUDA tensors against the same ops on CPU tensors (tests/candle.rs checks
//! those against cosim's CPU backend and candle's composed ops). Needs a GPU: candle's CUDA
//! device loads cuBLAS and cuRAND, which the emulated driver cannot host.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use cosim::candle::{self as cc, Pairwise};
use cosim::pairwise::Layout;

fn gpu() -> Result<Device> {
    Ok(Device::new_cuda(0)?)
}

/// Fresh normal values of `dims` in `dtype`, on the CPU.
fn randn(dims: &[usize], dtype: DType) -> Result<Tensor> {
    Ok(Tensor::randn(0f32, 1.0, dims, &Device::Cpu)?.to_dtype(dtype)?)
}

fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        DType::F32 => 2e-6,
        DType::F16 => 2e-3,
        _ => 1e-2,
    }
}

/// The CUDA result (back on the host) equals the CPU result within `tol`.
fn assert_close(what: &str, cuda: &Tensor, cpu: &Tensor, tol: f64) -> Result<()> {
    assert!(cuda.device().is_cuda(), "{what}: the result left the GPU");
    assert_eq!(cuda.dims(), cpu.dims(), "{what}: shape");
    let g = cuda.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let c = cpu.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    for (i, (g, c)) in g.iter().zip(&c).enumerate() {
        assert!(
            (g - c).abs() <= tol,
            "{what}: element {i}: cuda {g} vs cpu {c}"
        );
    }
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn elementwise_ops_match_the_cpu() -> Result<()> {
    let dev = gpu()?;
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        let t = tol(dtype);
        let (x, y) = (randn(&[4, 16, 9, 7], dtype)?, randn(&[4, 16, 9, 7], dtype)?);
        let proto = randn(&[1, 16, 1, 1], dtype)?;
        let (gx, gy, gp) = (
            x.to_device(&dev)?,
            y.to_device(&dev)?,
            proto.to_device(&dev)?,
        );
        for dim in [1, -1, 0] {
            let c = cc::cosine_similarity(&x, &y, dim, None)?;
            assert_close("along", &cc::cosine_similarity(&gx, &gy, dim, None)?, &c, t)?;
        }
        let c = cc::cosine_similarity(&x, &proto, 1, None)?;
        assert_close(
            "prototype",
            &cc::cosine_similarity(&gx, &gp, 1, None)?,
            &c,
            t,
        )?;
        // Views: an offset, a broadcast, a transpose (copied).
        let (off, goff) = (x.narrow(0, 1, 2)?, gx.narrow(0, 1, 2)?);
        let c = cc::cosine_similarity(&off, &y.narrow(0, 0, 2)?, 1, None)?;
        let g = cc::cosine_similarity(&goff, &gy.narrow(0, 0, 2)?, 1, None)?;
        assert_close("offset", &g, &c, t)?;
        let b = proto.broadcast_as(x.dims())?;
        let gb = gp.broadcast_as(x.dims())?;
        assert_close(
            "broadcast view",
            &cc::cosine_similarity(&gx, &gb, 1, None)?,
            &cc::cosine_similarity(&x, &b, 1, None)?,
            t,
        )?;
        let tr = x.transpose(2, 3)?;
        let gtr = gx.transpose(2, 3)?;
        assert_close(
            "transpose",
            &cc::cosine_similarity(&gtr, &gtr, 1, None)?,
            &cc::cosine_similarity(&tr, &tr, 1, None)?,
            t,
        )?;
        let c = cc::channel_similarity(&x, &y, 2, None)?;
        assert_close(
            "channels",
            &cc::channel_similarity(&gx, &gy, 2, None)?,
            &c,
            t,
        )?;
        let (cw, cs) = cc::reweight_channels(&x, &y, 2, None)?;
        let (gw, gs) = cc::reweight_channels(&gx, &gy, 2, None)?;
        assert_close("weighted", &gw, &cw, t)?;
        assert_close("reweight sims", &gs, &cs, t)?;
    }
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn pairwise_ops_match_the_cpu() -> Result<()> {
    let dev = gpu()?;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let t = tol(dtype);
        let (a, b) = (randn(&[3, 37, 24], dtype)?, randn(&[3, 200, 24], dtype)?);
        let (ga, gb) = (a.to_device(&dev)?, b.to_device(&dev)?);
        let c = cc::pairwise_similarity(&a, &b)?;
        assert_close("matrix", &cc::pairwise_similarity(&ga, &gb)?, &c, t)?;
        // b as [B, D, M] columns, and as its transposed view.
        let gbc = gb.transpose(1, 2)?.contiguous()?;
        let cols = Pairwise::new(Layout::Rows, Layout::Cols);
        assert_close("cols", &cols.similarity(&ga, &gbc)?, &c, t)?;
        assert_close(
            "view",
            &cc::pairwise_similarity(&ga, &gbc.transpose(1, 2)?)?,
            &c,
            t,
        )?;
        // A shared set, and a broadcast batch.
        let b0 = b.get(0)?;
        let gb0 = gb.get(0)?;
        let c0 = cc::pairwise_similarity(&a, &b0)?;
        assert_close("shared", &cc::pairwise_similarity(&ga, &gb0)?, &c0, t)?;
        let gb3 = gb0.unsqueeze(0)?.broadcast_as((3, 200, 24))?;
        assert_close(
            "broadcast batch",
            &cc::pairwise_similarity(&ga, &gb3)?,
            &c0,
            t,
        )?;

        let (cv, ci) = cc::pairwise_top_k(&a, &b, 7)?;
        let (gv, gi) = cc::pairwise_top_k(&ga, &gb, 7)?;
        assert_close("top-k values", &gv, &cv, t)?;
        assert!(gi.device().is_cuda());
        if dtype == DType::F32 {
            // Random f32 data: no near-ties, so the GPU ranks as the CPU.
            let (g, c) = (
                gi.flatten_all()?.to_vec1::<u32>()?,
                ci.flatten_all()?.to_vec1::<u32>()?,
            );
            assert_eq!(g, c, "top-k indices");
        }
        let (cv, _) = cc::pairwise_argmax(&a, &b)?;
        let (gv, _) = cc::pairwise_argmax(&ga, &gb)?;
        assert_close("argmax", &gv, &cv, t)?;
        let c = cc::pairwise_row_mean(&a, &b)?;
        assert_close("row means", &cc::pairwise_row_mean(&ga, &gb)?, &c, t)?;
        let c = cc::pairwise_mean(&a, &b)?;
        assert_close("mean", &cc::pairwise_mean(&ga, &gb)?, &c, t)?;
        let w = randn(&[3 * 37], dtype)?.abs()?;
        let c = Pairwise::default().set_similarity(&a, &b, Some(&w), None)?;
        let g = Pairwise::default().set_similarity(&ga, &gb, Some(&w.to_device(&dev)?), None)?;
        assert_close("precision", &g.precision, &c.precision, t)?;
        assert_close("recall", &g.recall, &c.recall, t)?;
        assert_close("f1", &g.f1, &c.f1, t)?;
    }
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn cuda_errors_are_clear() -> Result<()> {
    let dev = gpu()?;
    let a = randn(&[4, 8], DType::F32)?;
    let ga = a.to_device(&dev)?;
    let e = cc::pairwise_similarity(&ga, &a).expect_err("mixed devices");
    assert!(e.to_string().to_lowercase().contains("device"), "{e}");
    let g64 = ga.to_dtype(DType::F64)?;
    let e = cc::pairwise_similarity(&g64, &g64).expect_err("f64 pairwise on CUDA");
    assert!(e.to_string().contains("f64 runs on the CPU"), "{e}");
    let w = randn(&[4], DType::F32)?;
    let e = Pairwise::default()
        .set_similarity(&ga, &ga, Some(&w), None)
        .expect_err("weights on the CPU");
    assert!(e.to_string().contains("weights are on"), "{e}");
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn backward_on_cuda_tensors_matches_the_cpu() -> Result<()> {
    use candle_core::Var;
    let dev = gpu()?;
    for dtype in [DType::F32, DType::F64] {
        let t = if dtype == DType::F64 { 1e-12 } else { 2e-5 };
        let (x, p) = (randn(&[4, 16, 9, 7], dtype)?, randn(&[1, 16, 1, 1], dtype)?);
        let w = randn(&[4, 9, 7], dtype)?;
        let wc = randn(&[4, 16], dtype)?;
        let run = |on: &Device| -> Result<Vec<Tensor>> {
            let (vx, vp) = (
                Var::from_tensor(&x.to_device(on)?)?,
                Var::from_tensor(&p.to_device(on)?)?,
            );
            let (w, wc) = (w.to_device(on)?, wc.to_device(on)?);
            let s = cc::cosine_similarity(vx.as_tensor(), vp.as_tensor(), 1, None)?;
            let c = cc::channel_similarity(
                vx.as_tensor(),
                &vp.as_tensor().broadcast_as(x.dims())?,
                2,
                None,
            )?;
            let loss = ((s * w)?.sum_all()? + (c * wc)?.sum_all()?)?;
            let g = loss.backward()?;
            let get = |v: &Var| {
                g.get(v.as_tensor())
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("no gradient"))
            };
            Ok(vec![get(&vx)?, get(&vp)?])
        };
        let (on_gpu, on_cpu) = (run(&dev)?, run(&Device::Cpu)?);
        assert_close("dx", &on_gpu[0], &on_cpu[0], t)?;
        assert_close("dp", &on_gpu[1], &on_cpu[1], t)?;
    }
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn pairwise_backward_on_cuda_tensors_matches_the_cpu() -> Result<()> {
    use candle_core::Var;
    let dev = gpu()?;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let t = if dtype == DType::F32 { 2e-5 } else { 2e-2 };
        let (a, b) = (randn(&[2, 37, 19], dtype)?, randn(&[41, 19], dtype)?);
        let w = randn(&[2, 37, 41], dtype)?;
        // A batched set against a shared one, and b read as [D, M] columns (a transposed
        // view, read in place in the other layout).
        let run = |on: &Device, cols: bool| -> Result<Vec<Tensor>> {
            let (va, vb) = (
                Var::from_tensor(&a.to_device(on)?)?,
                Var::from_tensor(&b.to_device(on)?)?,
            );
            let s = if cols {
                Pairwise::new(Layout::Rows, Layout::Cols)
                    .similarity(va.as_tensor(), &vb.as_tensor().t()?)?
            } else {
                cc::pairwise_similarity(va.as_tensor(), vb.as_tensor())?
            };
            let g = (s * w.to_device(on)?)?.sum_all()?.backward()?;
            let get = |v: &Var| {
                g.get(v.as_tensor())
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("no gradient"))
            };
            Ok(vec![get(&va)?, get(&vb)?])
        };
        for cols in [false, true] {
            let (on_gpu, on_cpu) = (run(&dev, cols)?, run(&Device::Cpu, cols)?);
            assert_close(
                &format!("{dtype:?} cols {cols} da"),
                &on_gpu[0],
                &on_cpu[0],
                t,
            )?;
            assert_close(
                &format!("{dtype:?} cols {cols} db"),
                &on_gpu[1],
                &on_cpu[1],
                t,
            )?;
        }
    }
    Ok(())
}

#[test]
#[ignore = "needs a CUDA device"]
fn reweight_backward_on_cuda_tensors_matches_the_cpu() -> Result<()> {
    use candle_core::Var;
    let dev = gpu()?;
    let (x, y) = (
        randn(&[3, 8, 5, 7], DType::F32)?,
        randn(&[1, 8, 5, 7], DType::F32)?,
    );
    let (ww, ws) = (
        randn(&[3, 8, 5, 7], DType::F32)?,
        randn(&[3, 8], DType::F32)?,
    );
    let run = |on: &Device| -> Result<Vec<Tensor>> {
        let (vx, vy) = (
            Var::from_tensor(&x.to_device(on)?)?,
            Var::from_tensor(&y.to_device(on)?)?,
        );
        let (weighted, sims) = cc::reweight_channels(vx.as_tensor(), vy.as_tensor(), 2, None)?;
        let loss = ((weighted * ww.to_device(on)?)?.sum_all()?
            + (sims * ws.to_device(on)?)?.sum_all()?)?;
        let g = loss.backward()?;
        let get = |v: &Var| {
            g.get(v.as_tensor())
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no gradient"))
        };
        Ok(vec![get(&vx)?, get(&vy)?])
    };
    let (on_gpu, on_cpu) = (run(&dev)?, run(&Device::Cpu)?);
    assert_close("dx", &on_gpu[0], &on_cpu[0], 2e-5)?;
    assert_close("dy", &on_gpu[1], &on_cpu[1], 2e-5)?;
    Ok(())
}
