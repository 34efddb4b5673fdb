//! Gradients of the along, per-channel and reweighting similarities on the GPU (`kernels/backward.cu`):
//! one pass that reads both inputs twice (sums, then gradients; the second read mostly from
//! L2 for short vectors) and the upstream gradient once, and writes both input gradients.
//! The semantics are [`crate::cpu::cosine_similarity_backward`]'s. Extra device memory: for
//! an input broadcast against the other, its gradient's sums in the accumulator type (4 or 8
//! bytes per element of that input), atomically added; none otherwise.

use super::kernels::Family;
use super::launch::{backward_params, grid_for, BLOCK};
use super::{cfg_1d, Cuda, CudaElement};
use crate::error::Result;
use crate::plan::{check_out_len, Plan};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

impl Cuda {
    /// Gradients of [`Cuda::cosine_similarity`] given `grad`, the upstream gradient of its
    /// result: `(g1, g2)`, shaped like `x1` and `x2`. See
    /// [`crate::cpu::cosine_similarity_backward`] for the semantics.
    ///
    /// # Errors
    /// As the forward, and [`crate::Error::OutLenMismatch`] if `grad` is not shaped like the
    /// result; device errors.
    #[allow(clippy::too_many_arguments)]
    pub fn cosine_similarity_backward<T: CudaElement>(
        &self,
        x1: &impl DevicePtr<T>,
        shape1: &[usize],
        x2: &impl DevicePtr<T>,
        shape2: &[usize],
        dim: isize,
        eps: Option<f64>,
        grad: &impl DevicePtr<T>,
    ) -> Result<(CudaSlice<T>, CudaSlice<T>)> {
        let plan = Plan::along(shape1, shape2, dim, eps)?;
        let (mut g1, mut g2) = self.grad_buffers::<T>(&plan)?;
        let up = Upstream::similarity(grad);
        self.backward_into(&plan, (&mut g1, &mut g2), (x1, shape1), (x2, shape2), up)?;
        Ok((g1, g2))
    }

    /// [`Cuda::cosine_similarity_backward`] into caller's buffers shaped like `x1` and `x2`.
    ///
    /// # Errors
    /// As [`Cuda::cosine_similarity_backward`], and if `g1` or `g2` has the wrong length or
    /// lives on another device (nothing written).
    #[allow(clippy::too_many_arguments)]
    pub fn cosine_similarity_backward_into<T: CudaElement>(
        &self,
        g1: &mut impl DevicePtrMut<T>,
        g2: &mut impl DevicePtrMut<T>,
        x1: &impl DevicePtr<T>,
        shape1: &[usize],
        x2: &impl DevicePtr<T>,
        shape2: &[usize],
        dim: isize,
        eps: Option<f64>,
        grad: &impl DevicePtr<T>,
    ) -> Result<()> {
        let plan = Plan::along(shape1, shape2, dim, eps)?;
        let up = Upstream::similarity(grad);
        self.backward_into(&plan, (g1, g2), (x1, shape1), (x2, shape2), up)
    }

    /// Gradients of [`Cuda::channel_similarity`]; see [`Cuda::cosine_similarity_backward`].
    ///
    /// # Errors
    /// As [`Cuda::cosine_similarity_backward`].
    #[allow(clippy::too_many_arguments)]
    pub fn channel_similarity_backward<T: CudaElement>(
        &self,
        x1: &impl DevicePtr<T>,
        shape1: &[usize],
        x2: &impl DevicePtr<T>,
        shape2: &[usize],
        flatten_from: usize,
        eps: Option<f64>,
        grad: &impl DevicePtr<T>,
    ) -> Result<(CudaSlice<T>, CudaSlice<T>)> {
        let plan = Plan::flattened(shape1, shape2, flatten_from, eps)?;
        let (mut g1, mut g2) = self.grad_buffers::<T>(&plan)?;
        let up = Upstream::similarity(grad);
        self.backward_into(&plan, (&mut g1, &mut g2), (x1, shape1), (x2, shape2), up)?;
        Ok((g1, g2))
    }

    /// [`Cuda::channel_similarity_backward`] into caller's buffers shaped like `x1` and `x2`.
    ///
    /// # Errors
    /// As [`Cuda::cosine_similarity_backward_into`].
    #[allow(clippy::too_many_arguments)]
    pub fn channel_similarity_backward_into<T: CudaElement>(
        &self,
        g1: &mut impl DevicePtrMut<T>,
        g2: &mut impl DevicePtrMut<T>,
        x1: &impl DevicePtr<T>,
        shape1: &[usize],
        x2: &impl DevicePtr<T>,
        shape2: &[usize],
        flatten_from: usize,
        eps: Option<f64>,
        grad: &impl DevicePtr<T>,
    ) -> Result<()> {
        let plan = Plan::flattened(shape1, shape2, flatten_from, eps)?;
        let up = Upstream::similarity(grad);
        self.backward_into(&plan, (g1, g2), (x1, shape1), (x2, shape2), up)
    }

    /// Gradients of [`Cuda::reweight_channels`] given the upstream gradient of the weighted
    /// tensor and, optionally, of the similarities (`None::<&CudaSlice<T>>` without one):
    /// `(gx, gy)`. See [`crate::cpu::reweight_channels_backward`] for the semantics.
    ///
    /// # Errors
    /// As [`Cuda::reweight_channels`], and if a gradient is not shaped like its result.
    #[allow(clippy::too_many_arguments)]
    pub fn reweight_channels_backward<T: CudaElement, G: DevicePtr<T>>(
        &self,
        x: &impl DevicePtr<T>,
        shape_x: &[usize],
        y: &impl DevicePtr<T>,
        shape_y: &[usize],
        flatten_from: usize,
        eps: Option<f64>,
        grad_weighted: &impl DevicePtr<T>,
        grad_similarity: Option<&G>,
    ) -> Result<(CudaSlice<T>, CudaSlice<T>)> {
        let plan = Plan::flattened(shape_x, shape_y, flatten_from, eps)?;
        let (mut gx, mut gy) = self.grad_buffers::<T>(&plan)?;
        let up = Upstream::reweight(grad_weighted, grad_similarity);
        self.backward_into(&plan, (&mut gx, &mut gy), (x, shape_x), (y, shape_y), up)?;
        Ok((gx, gy))
    }

    /// [`Cuda::reweight_channels_backward`] into caller's buffers shaped like `x` and `y`.
    ///
    /// # Errors
    /// As [`Cuda::reweight_channels_backward`], and if `gx` or `gy` has the wrong length or
    /// lives on another device (nothing written).
    #[allow(clippy::too_many_arguments)]
    pub fn reweight_channels_backward_into<T: CudaElement, G: DevicePtr<T>>(
        &self,
        gx: &mut impl DevicePtrMut<T>,
        gy: &mut impl DevicePtrMut<T>,
        x: &impl DevicePtr<T>,
        shape_x: &[usize],
        y: &impl DevicePtr<T>,
        shape_y: &[usize],
        flatten_from: usize,
        eps: Option<f64>,
        grad_weighted: &impl DevicePtr<T>,
        grad_similarity: Option<&G>,
    ) -> Result<()> {
        let plan = Plan::flattened(shape_x, shape_y, flatten_from, eps)?;
        let up = Upstream::reweight(grad_weighted, grad_similarity);
        self.backward_into(&plan, (gx, gy), (x, shape_x), (y, shape_y), up)
    }

    /// Two gradient buffers the size of the plan's inputs, written whole by the launch.
    fn grad_buffers<T: CudaElement>(&self, plan: &Plan) -> Result<(CudaSlice<T>, CudaSlice<T>)> {
        Ok((
            self.alloc::<T>(plan.len1, "the gradient of x1")?,
            self.alloc::<T>(plan.len2, "the gradient of x2")?,
        ))
    }

    /// The backward launch into `g1`, `g2` (each the length of its input, written whole).
    fn backward_into<T: CudaElement, G: DevicePtr<T>, W: DevicePtr<T>>(
        &self,
        plan: &Plan,
        (g1, g2): (&mut impl DevicePtrMut<T>, &mut impl DevicePtrMut<T>),
        (x1, shape1): (&impl DevicePtr<T>, &[usize]),
        (x2, shape2): (&impl DevicePtr<T>, &[usize]),
        up: Upstream<'_, G, W>,
    ) -> Result<()> {
        plan.check_inputs(x1.len(), x2.len(), shape1, shape2)?;
        let (grad, grad_w) = (up.grad, up.weighted);
        if let Some(g) = grad {
            plan.check_out(up.name, g.len())?;
            self.check_device(up.name, g)?;
        }
        if let Some(w) = grad_w {
            check_out_len("grad_weighted", w.len(), &plan.weighted_shape())?;
            self.check_device("grad_weighted", w)?;
        }
        self.check_device("x1", x1)?;
        self.check_device("x2", x2)?;
        let (w1, w2) = match up.weighted {
            Some(_) => ("gx", "gy"),
            None => ("g1", "g2"),
        };
        check_out_len(w1, g1.len(), shape1)?;
        check_out_len(w2, g2.len(), shape2)?;
        self.check_device(w1, g1)?;
        self.check_device(w2, g2)?;
        let (outputs, red) = (plan.out_len(), plan.reduce.len);
        // Sums in the accumulator type (f32, or f64 for f64), as bytes.
        let acc = std::mem::size_of::<T::Acc>();
        let sums = |len: usize, what| -> Result<Option<CudaSlice<u8>>> {
            if plan.reads_each_once(len) || len == 0 {
                return Ok(None);
            }
            self.zeroed::<u8>(len * acc, what).map(Some)
        };
        let (s1, s2) = (
            sums(plan.len1, "x1's gradient sums")?,
            sums(plan.len2, "x2's gradient sums")?,
        );
        let s = &self.stream;
        let (pg1, _d) = g1.device_ptr_mut(s);
        let (pg2, _e) = g2.device_ptr_mut(s);
        if outputs > 0 && red > 0 {
            let f = self
                .kernels
                .function(Family::Backward, &format!("cosim_backward_{}", T::NAME))?;
            let p = backward_params(plan);
            let (p1, _a) = x1.device_ptr(s);
            let (p2, _b) = x2.device_ptr(s);
            let (pg, _c) = optional_ptr(grad, s);
            let (pw, _w) = optional_ptr(grad_w, s);
            let (ps1, _f) = optional_ptr(s1.as_ref(), s);
            let (ps2, _g) = optional_ptr(s2.as_ref(), s);
            let cfg = LaunchConfig {
                grid_dim: (grid_for(outputs, self.sms), 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: signature (cosim_along_params, const T* x1, const T* x2, const T* grad,
            // const T* grad_w, T* g1, T* g2, acc* sum1, acc* sum2). The plan was validated
            // against both input lengths, grad's (one per output, or null) and grad_w's (the
            // weighted shape: reduce_len per output, or null). The kernel reads and writes
            // inside x1's and x2's extents, which g1, g2 and the sums have; a null sum pointer
            // makes it write that gradient directly, which happens only for dense inputs
            // (each element once).
            unsafe {
                s.launch_builder(&f)
                    .arg(&p)
                    .arg(&p1)
                    .arg(&p2)
                    .arg(&pg)
                    .arg(&pw)
                    .arg(&pg1)
                    .arg(&pg2)
                    .arg(&ps1)
                    .arg(&ps2)
                    .launch(cfg)
            }?;
        }
        for (sum, pg, n) in [(&s1, pg1, plan.len1), (&s2, pg2, plan.len2)] {
            let Some(sum) = sum else { continue };
            let f = self.kernels.function(
                Family::Backward,
                &format!("cosim_backward_cast_{}", T::NAME),
            )?;
            let (ps, _a) = sum.device_ptr(s);
            let n64 = n as i64;
            // SAFETY: signature (const acc*, T*, int64 n): reads n sums, writes n elements;
            // both buffers hold n (checked above; the sums were zeroed and, for inputs no
            // output reads, stay 0: their gradient is 0).
            unsafe {
                s.launch_builder(&f)
                    .arg(&ps)
                    .arg(&pg)
                    .arg(&n64)
                    .launch(cfg_1d(grid_for(n, self.sms)))
            }?;
        }
        Ok(())
    }
}

/// The upstream gradients of one backward: the similarities' (`grad`, named `name` in
/// errors) and, for the reweighting, the weighted tensor's; at least one is given.
struct Upstream<'a, G, W> {
    name: &'static str,
    grad: Option<&'a G>,
    weighted: Option<&'a W>,
}

impl<'a, T, G: DevicePtr<T>> Upstream<'a, G, CudaSlice<T>> {
    fn similarity(grad: &'a G) -> Self {
        Upstream {
            name: "grad",
            grad: Some(grad),
            weighted: None,
        }
    }
}

impl<'a, G, W> Upstream<'a, G, W> {
    fn reweight(weighted: &'a W, grad_similarity: Option<&'a G>) -> Self {
        Upstream {
            name: "grad_similarity",
            grad: grad_similarity,
            weighted: Some(weighted),
        }
    }
}

/// A device pointer for an optional buffer (null without one), and the guard that orders the
/// buffer's use on `stream`.
fn optional_ptr<'a, T, B: DevicePtr<T>>(
    buf: Option<&'a B>,
    stream: &'a cudarc::driver::CudaStream,
) -> (u64, Option<cudarc::driver::SyncOnDrop<'a>>) {
    buf.map_or((0, None), |b| {
        let (p, guard) = b.device_ptr(stream);
        (p, Some(guard))
    })
}
