//! A device-agnostic entry on host buffers: the GPU when one is usable and the kernels are
//! built, the CPU otherwise. Convenient for examples, tools and tests; code that keeps its
//! data on the GPU should call [`crate::cuda::Cuda`] directly and skip the copies.

use crate::{cpu, Result, Reweighted, Similarity};

/// Element types that both backends of this build accept.
#[cfg(feature = "cuda")]
pub trait AnyElement: crate::cuda::CudaElement {}
#[cfg(feature = "cuda")]
impl<T: crate::cuda::CudaElement> AnyElement for T {}
/// Element types that both backends of this build accept.
#[cfg(not(feature = "cuda"))]
pub trait AnyElement: crate::Element {}
#[cfg(not(feature = "cuda"))]
impl<T: crate::Element> AnyElement for T {}

/// Where computations run.
#[derive(Clone, Debug)]
pub enum Device {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(crate::cuda::Cuda),
}

impl Device {
    /// GPU 0 when it can be used, otherwise the CPU together with the reason the GPU was not.
    pub fn auto() -> (Device, Option<crate::Error>) {
        #[cfg(feature = "cuda")]
        {
            match crate::cuda::Cuda::new(0) {
                Ok(c) => (Device::Cuda(c), None),
                Err(e) => (Device::Cpu, Some(e)),
            }
        }
        #[cfg(not(feature = "cuda"))]
        {
            (Device::Cpu, None)
        }
    }

    /// A line saying what this device is.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => format!("CPU ({} threads)", rayon::current_num_threads()),
            #[cfg(feature = "cuda")]
            Device::Cuda(c) => c
                .describe()
                .map(|d| format!("CUDA {d}"))
                .unwrap_or_else(|e| format!("CUDA device ({e})")),
        }
    }

    /// [`cpu::cosine_similarity`] on this device; host buffers in and out.
    ///
    /// # Errors
    /// As [`cpu::cosine_similarity`], plus device errors on the GPU.
    pub fn cosine_similarity<T: AnyElement>(
        &self,
        x1: &[T],
        shape1: &[usize],
        x2: &[T],
        shape2: &[usize],
        dim: isize,
        eps: Option<f64>,
    ) -> Result<Similarity<Vec<T>>> {
        match self {
            Device::Cpu => cpu::cosine_similarity(x1, shape1, x2, shape2, dim, eps),
            #[cfg(feature = "cuda")]
            Device::Cuda(c) => {
                let plan = crate::plan::Plan::along(shape1, shape2, dim, eps);
                gpu::similarity(c, plan, (x1, shape1), (x2, shape2), |a, b| {
                    c.cosine_similarity(a, shape1, b, shape2, dim, eps)
                })
            }
        }
    }

    /// [`cpu::channel_similarity`] on this device; host buffers in and out.
    ///
    /// # Errors
    /// As [`cpu::channel_similarity`], plus device errors on the GPU.
    pub fn channel_similarity<T: AnyElement>(
        &self,
        x1: &[T],
        shape1: &[usize],
        x2: &[T],
        shape2: &[usize],
        flatten_from: usize,
        eps: Option<f64>,
    ) -> Result<Similarity<Vec<T>>> {
        match self {
            Device::Cpu => cpu::channel_similarity(x1, shape1, x2, shape2, flatten_from, eps),
            #[cfg(feature = "cuda")]
            Device::Cuda(c) => {
                let plan = crate::plan::Plan::flattened(shape1, shape2, flatten_from, eps);
                gpu::similarity(c, plan, (x1, shape1), (x2, shape2), |a, b| {
                    c.channel_similarity(a, shape1, b, shape2, flatten_from, eps)
                })
            }
        }
    }

    /// [`cpu::reweight_channels`] on this device; host buffers in and out.
    ///
    /// # Errors
    /// As [`cpu::reweight_channels`], plus device errors on the GPU.
    pub fn reweight_channels<T: AnyElement>(
        &self,
        x: &[T],
        shape_x: &[usize],
        y: &[T],
        shape_y: &[usize],
        flatten_from: usize,
        eps: Option<f64>,
    ) -> Result<Reweighted<Vec<T>>> {
        match self {
            Device::Cpu => cpu::reweight_channels(x, shape_x, y, shape_y, flatten_from, eps),
            #[cfg(feature = "cuda")]
            Device::Cuda(c) => {
                let plan = crate::plan::Plan::flattened(shape_x, shape_y, flatten_from, eps);
                let (a, b) = gpu::upload(c, plan, (x, shape_x), (y, shape_y))?;
                let r = c.reweight_channels(&a, shape_x, &b, shape_y, flatten_from, eps)?;
                Ok(Reweighted {
                    weighted: c.download(&r.weighted)?,
                    weighted_shape: r.weighted_shape,
                    similarity: c.download(&r.similarity)?,
                    similarity_shape: r.similarity_shape,
                })
            }
        }
    }
}

/// Host-buffer calls on the GPU: validate, upload, compute, download.
#[cfg(feature = "cuda")]
mod gpu {
    use super::AnyElement;
    use crate::cuda::Cuda;
    use crate::plan::Plan;
    use crate::{Result, Similarity};
    use cudarc::driver::CudaSlice;

    /// Both inputs on the device, after checking them against `plan` (so that a bad call
    /// copies nothing).
    pub fn upload<T: AnyElement>(
        c: &Cuda,
        plan: Result<Plan>,
        (x1, shape1): (&[T], &[usize]),
        (x2, shape2): (&[T], &[usize]),
    ) -> Result<(CudaSlice<T>, CudaSlice<T>)> {
        plan?.check_inputs(x1.len(), x2.len(), shape1, shape2)?;
        Ok((c.upload(x1)?, c.upload(x2)?))
    }

    /// `f` on the uploaded inputs, its result copied back.
    pub fn similarity<T: AnyElement>(
        c: &Cuda,
        plan: Result<Plan>,
        x1: (&[T], &[usize]),
        x2: (&[T], &[usize]),
        f: impl FnOnce(&CudaSlice<T>, &CudaSlice<T>) -> Result<Similarity<CudaSlice<T>>>,
    ) -> Result<Similarity<Vec<T>>> {
        let (a, b) = upload(c, plan, x1, x2)?;
        let s = f(&a, &b)?;
        Ok(Similarity {
            values: c.download(&s.values)?,
            shape: s.shape,
        })
    }
}
