//! The one candle `CustomOp2` behind every function of [`crate::candle`]: what to compute
//! ([`Kind`]), the CPU forward through [`crate::cpu`], the dtype dispatch, and the backward
//! that says plainly that there is none yet.

use crate::element::Element;
use crate::pairwise::PairPlan;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Shape, Storage, Tensor, WithDType};
use std::sync::{Arc, Mutex};

/// Runs `$body` with `$t` the element type of `$dtypes` (one dtype, or two that must be
/// equal), or returns the error naming op `$name`'s unsupported or mixed dtypes: the one
/// dtype dispatch of every forward and backward.
macro_rules! by_dtype {
    ($dtypes:expr, $name:expr, $t:ident => $body:expr) => {{
        let (d1, d2): (DType, DType) = $dtypes;
        match d1 {
            _ if d1 != d2 => Err($crate::candle::op::mixed($name, d1, d2)),
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::F64 => {
                type $t = f64;
                $body
            }
            DType::F16 => {
                type $t = half::f16;
                $body
            }
            DType::BF16 => {
                type $t = half::bf16;
                $body
            }
            d => Err($crate::candle::op::unsupported(d, $name)),
        }
    }};
}
#[cfg(feature = "candle-cuda")]
pub(crate) use by_dtype;

/// What one op computes, with the shapes cosim reads its two inputs as (see `views`).
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Along {
        shape1: Vec<usize>,
        shape2: Vec<usize>,
        dim: isize,
        eps: Option<f64>,
    },
    Channels {
        shape1: Vec<usize>,
        shape2: Vec<usize>,
        flatten_from: usize,
        eps: Option<f64>,
    },
    /// Output: the weighted tensor then the similarities, packed in one 1-d buffer.
    Reweight {
        shape1: Vec<usize>,
        shape2: Vec<usize>,
        flatten_from: usize,
        eps: Option<f64>,
    },
    Pair {
        /// The plan of the views as read (a transposed view read in the other layout, a
        /// broadcast batch dropped).
        plan: PairPlan,
        what: PairWhat,
        /// The layouts the caller declared for the two tensors, at their own shapes (the
        /// backward reads them so).
        declared: (crate::pairwise::Layout, crate::pairwise::Layout),
    },
}

/// Which pairwise result.
#[derive(Clone, Debug)]
pub(crate) enum PairWhat {
    Matrix,
    /// Values are the op's output; the u32 indices come back through [`CosimOp::indices`].
    TopK(usize),
    Argmax,
    RowMean,
    Mean,
    /// Output `[3, B?]`: precision, recall, F1. The weights are contiguous 1-d tensors of the
    /// inputs' dtype and device.
    Sets(Option<Tensor>, Option<Tensor>),
}

/// Element types of cosim's candle ops: f32, f64, f16, bf16 (pairwise on CUDA: not f64).
pub trait CandleElement: Element + WithDType + Backend {}
impl<T: Element + WithDType + Backend> CandleElement for T {}
pub(crate) use backend::Backend;

#[cfg(feature = "candle-cuda")]
mod backend {
    /// The CUDA side of an element type (the pairwise kernels are not built for f64).
    pub trait Backend: crate::cuda::CudaElement + candle_core::cuda::CudaDType {
        fn pair(
            cuda: &crate::cuda::Cuda,
            plan: &crate::pairwise::PairPlan,
            what: &super::PairWhat,
            io: crate::candle::cuda::Inputs<'_, Self>,
        ) -> candle_core::Result<crate::candle::cuda::Output<Self>>;

        /// The pairwise matrix's gradients `(ga, gb)` for `plan` (the sets' logical shapes).
        fn pair_backward(
            cuda: &crate::cuda::Cuda,
            plan: &crate::pairwise::PairPlan,
            a: &cudarc::driver::CudaView<'_, Self>,
            b: &cudarc::driver::CudaView<'_, Self>,
            grad: &cudarc::driver::CudaView<'_, Self>,
        ) -> candle_core::Result<(
            cudarc::driver::CudaSlice<Self>,
            cudarc::driver::CudaSlice<Self>,
        )>;
    }
}

#[cfg(not(feature = "candle-cuda"))]
mod backend {
    /// No CUDA tensors in this build: nothing more is asked of an element type.
    pub trait Backend {}
    impl<T> Backend for T {}
}

/// A cosim computation as a candle op.
pub(crate) struct CosimOp {
    /// `cosim::<name>`, as candle reports the op.
    pub name: &'static str,
    pub kind: Kind,
    /// Elements each input is read over, from its layout's start offset.
    pub lens: (usize, usize),
    /// Top-k and argmax put their index tensor's storage here.
    pub indices: Slot,
}

/// Where an op leaves a second output (top-k's and argmax's indices): storage and shape.
pub(crate) type Slot = Arc<Mutex<Option<(Storage, Vec<usize>)>>>;

/// A cosim error as a candle error, its message kept.
pub(crate) fn wrap(e: crate::Error) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// The error for a dtype cosim has no kernels for.
pub(crate) fn unsupported(dtype: DType, what: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{what} takes f32, f64, f16 or bf16 tensors, not {dtype:?}"
    ))
}

/// The error for inputs of two dtypes.
pub(crate) fn mixed(what: &str, d1: DType, d2: DType) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{what} takes tensors of one dtype, not {d1:?} and {d2:?}"
    ))
}

/// The elements `[offset, offset + len)` of a CPU storage, typed.
fn cpu_input<'a, T: CandleElement>(
    s: &'a CpuStorage,
    l: &Layout,
    len: usize,
) -> candle_core::Result<&'a [T]> {
    let all = T::cpu_storage_as_slice(s)?;
    all.get(l.start_offset()..l.start_offset() + len)
        .ok_or_else(|| candle_core::Error::Msg("cosim: a view reaches past its storage".into()))
}

/// A weight tensor's elements on the CPU (the public function made it contiguous).
fn cpu_weights<'a, T: CandleElement>(
    guard: &'a Option<(candle_core::StorageRef<'_>, &Layout)>,
) -> candle_core::Result<Option<&'a [T]>> {
    match guard {
        None => Ok(None),
        Some((s, l)) => match &**s {
            Storage::Cpu(c) => cpu_input::<T>(c, l, l.shape().elem_count()).map(Some),
            _ => Err(candle_core::Error::Msg(
                "cosim: set_similarity's weights must be on the inputs' device".into(),
            )),
        },
    }
}

impl CosimOp {
    pub(crate) fn new(name: &'static str, kind: Kind, lens: (usize, usize)) -> CosimOp {
        CosimOp {
            name,
            kind,
            lens,
            indices: Arc::default(),
        }
    }

    fn cpu<T: CandleElement>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use crate::cpu;
        let a = cpu_input::<T>(s1, l1, self.lens.0)?;
        let b = cpu_input::<T>(s2, l2, self.lens.1)?;
        let (values, shape) = match &self.kind {
            Kind::Along {
                shape1,
                shape2,
                dim,
                eps,
            } => {
                let s = cpu::cosine_similarity(a, shape1, b, shape2, *dim, *eps).map_err(wrap)?;
                (s.values, s.shape)
            }
            Kind::Channels {
                shape1,
                shape2,
                flatten_from,
                eps,
            } => {
                let s = cpu::channel_similarity(a, shape1, b, shape2, *flatten_from, *eps)
                    .map_err(wrap)?;
                (s.values, s.shape)
            }
            Kind::Reweight {
                shape1,
                shape2,
                flatten_from,
                eps,
            } => {
                let r = cpu::reweight_channels(a, shape1, b, shape2, *flatten_from, *eps)
                    .map_err(wrap)?;
                let mut packed = r.weighted;
                packed.extend_from_slice(&r.similarity);
                let len = packed.len();
                (packed, vec![len])
            }
            Kind::Pair { plan, what, .. } => match what {
                PairWhat::Matrix => {
                    let s = cpu::pairwise_similarity(plan, a, b).map_err(wrap)?;
                    (s.values, s.shape)
                }
                PairWhat::TopK(k) => {
                    let t = cpu::pairwise_top_k(plan, a, b, *k).map_err(wrap)?;
                    self.put_indices(Storage::Cpu(CpuStorage::U32(t.indices)), &t.shape);
                    (t.values, t.shape)
                }
                PairWhat::Argmax => {
                    let t = cpu::pairwise_argmax(plan, a, b).map_err(wrap)?;
                    self.put_indices(Storage::Cpu(CpuStorage::U32(t.indices)), &t.shape);
                    (t.values, t.shape)
                }
                PairWhat::RowMean => {
                    let s = cpu::pairwise_row_mean(plan, a, b).map_err(wrap)?;
                    (s.values, s.shape)
                }
                PairWhat::Mean => {
                    let s = cpu::pairwise_mean(plan, a, b).map_err(wrap)?;
                    (s.values, s.shape)
                }
                PairWhat::Sets(wa, wb) => {
                    let ga = wa.as_ref().map(Tensor::storage_and_layout);
                    let gb = wb.as_ref().map(Tensor::storage_and_layout);
                    let s = cpu::set_similarity(plan, a, b, cpu_weights(&ga)?, cpu_weights(&gb)?)
                        .map_err(wrap)?;
                    let mut packed = s.precision;
                    packed.extend(s.recall);
                    packed.extend(s.f1);
                    let mut shape = vec![3];
                    shape.extend(&s.shape);
                    (packed, shape)
                }
            },
        };
        Ok((T::to_cpu_storage_owned(values), Shape::from(shape)))
    }

    /// Keeps the index storage of top-k or argmax for the caller of the op.
    pub(crate) fn put_indices(&self, storage: Storage, shape: &[usize]) {
        let mut slot = self.indices.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some((storage, shape.to_vec()));
    }
}

impl candle_core::CustomOp2 for CosimOp {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        by_dtype!((s1.dtype(), s2.dtype()), self.name, T => self.cpu::<T>(s1, l1, s2, l2))
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::forward(self, s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        arg1: &Tensor,
        arg2: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let not_yet = |what: &str| {
            Err(candle_core::Error::Msg(format!(
                "{} is not differentiable yet{what} (cosim's backward for it is still to \
                 come): detach its inputs, or train through candle's composed ops",
                self.name
            )))
        };
        if matches!(&self.kind, Kind::Pair { what, .. } if !matches!(what, PairWhat::Matrix)) {
            return not_yet("");
        }
        if arg1.device().is_cuda() {
            #[cfg(feature = "candle-cuda")]
            {
                let (g1, g2) = super::cuda::backward(self, arg1, arg2, grad_res)?;
                return Ok((Some(g1), Some(g2)));
            }
            #[cfg(not(feature = "candle-cuda"))]
            return not_yet(" on CUDA tensors");
        }
        if !arg1.device().is_cpu() {
            return not_yet(" on this device");
        }
        let dtypes = (arg1.dtype(), arg2.dtype());
        let (g1, g2) = by_dtype!(dtypes, self.name, T => self.cpu_bwd::<T>(arg1, arg2, grad_res))?;
        Ok((Some(g1), Some(g2)))
    }
}

impl CosimOp {
    /// The gradients of both inputs of an along, per-channel or reweighting op on the CPU.
    /// The inputs are read at their own (logical) shapes: a broadcast view is expanded, and
    /// its gradient comes back at its logical shape for candle to sum over the broadcast.
    fn cpu_bwd<T: CandleElement>(
        &self,
        arg1: &Tensor,
        arg2: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        use crate::cpu;
        let data = |t: &Tensor| t.contiguous()?.flatten_all()?.to_vec1::<T>();
        let (x1, x2, g) = (data(arg1)?, data(arg2)?, data(grad)?);
        let (s1, s2) = (arg1.dims(), arg2.dims());
        let (g1, g2) = match &self.kind {
            Kind::Along { dim, eps, .. } => {
                cpu::cosine_similarity_backward(&x1, s1, &x2, s2, *dim, *eps, &g)
            }
            Kind::Channels {
                flatten_from, eps, ..
            } => cpu::channel_similarity_backward(&x1, s1, &x2, s2, *flatten_from, *eps, &g),
            Kind::Reweight {
                flatten_from, eps, ..
            } => {
                // The op's output packs the weighted tensor, then the similarities.
                let plan =
                    crate::plan::Plan::flattened(s1, s2, *flatten_from, *eps).map_err(wrap)?;
                let w = plan.out_len() * plan.reduce.len;
                let (gw, gs) = g.split_at(w.min(g.len()));
                cpu::reweight_channels_backward(&x1, s1, &x2, s2, *flatten_from, *eps, gw, Some(gs))
            }
            Kind::Pair { plan, declared, .. } => {
                // The matrix (the other pairwise results refused above).
                let logical = logical_plan(plan, *declared, s1, s2)?;
                cpu::pairwise_similarity_backward(&logical, &x1, &x2, &g)
            }
        }
        .map_err(wrap)?;
        let device = arg1.device();
        Ok((
            Tensor::from_vec(g1, s1, device)?,
            Tensor::from_vec(g2, s2, device)?,
        ))
    }
}

/// The plan of a pairwise op's backward: the tensors' own (logical, contiguous) shapes in
/// their declared layouts, with the forward's eps and precision.
pub(crate) fn logical_plan(
    plan: &crate::pairwise::PairPlan,
    declared: (crate::pairwise::Layout, crate::pairwise::Layout),
    s1: &[usize],
    s2: &[usize],
) -> candle_core::Result<crate::pairwise::PairPlan> {
    crate::pairwise::PairPlan::new(s1, declared.0, s2, declared.1)
        .and_then(|p| p.eps(Some(plan.eps)))
        .map(|p| p.precision(plan.precision))
        .map_err(wrap)
}
