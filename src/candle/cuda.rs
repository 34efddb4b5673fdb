//! The CUDA forward of cosim's candle ops: the inputs are read in place from candle's
//! buffers, the kernels run on candle's own stream through a [`Cuda`] handle kept per stream,
//! and the outputs are new buffers allocated on that stream: no host round trip, no
//! synchronisation.

use super::op::{by_dtype, wrap, CandleElement, CosimOp, Kind, PairWhat};
use crate::cuda::{Cuda, Loaded, PairElement};
use crate::pairwise::PairPlan;
use candle_core::backend::BackendStorage;
use candle_core::cuda::CudaDType;
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Shape, Storage, Tensor};
use cudarc::driver::{CudaSlice, CudaStream, CudaView};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The two inputs of an op, as views of candle's buffers.
pub struct Inputs<'a, T> {
    pub a: CudaView<'a, T>,
    pub b: CudaView<'a, T>,
    pub device: &'a CudaDevice,
    pub op: &'a CosimOp,
}

/// An op's output buffer and shape.
pub type Output<T> = crate::Similarity<CudaSlice<T>>;

/// The handle for candle's stream of `device`. Its kernels are loaded once per stream and
/// kept while candle's stream lives (the cache holds the stream weakly; the modules, and with
/// them the context, are released at the first call after the stream is gone).
fn handle(device: &CudaDevice) -> candle_core::Result<Cuda> {
    type Cache = Mutex<Vec<(Weak<CudaStream>, Loaded)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let stream = device.cuda_stream();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    cache.retain(|(s, _)| s.strong_count() > 0);
    if let Some((_, loaded)) = cache
        .iter()
        .find(|(s, _)| std::ptr::eq(s.as_ptr(), Arc::as_ptr(&stream)))
    {
        return Ok(Cuda::from_loaded(stream, loaded.clone()));
    }
    let cuda = Cuda::with_stream(stream.clone()).map_err(wrap)?;
    cache.push((Arc::downgrade(&stream), cuda.loaded()));
    Ok(cuda)
}

/// `[offset, offset + len)` of a candle CUDA buffer.
fn input<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    len: usize,
) -> candle_core::Result<CudaView<'a, T>> {
    let all = s.as_cuda_slice::<T>()?;
    all.try_slice(l.start_offset()..l.start_offset() + len)
        .ok_or_else(|| candle_core::Error::Msg("cosim: a view reaches past its storage".into()))
}

/// `CustomOp2::cuda_fwd` of every op.
pub(crate) fn forward(
    op: &CosimOp,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    by_dtype!((s1.dtype(), s2.dtype()), op.name, T => run::<T>(op, s1, l1, s2, l2))
}

fn run<T: CandleElement>(
    op: &CosimOp,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let device = &s1.device;
    let cuda = handle(device)?;
    let io = Inputs {
        a: input::<T>(s1, l1, op.lens.0)?,
        b: input::<T>(s2, l2, op.lens.1)?,
        device,
        op,
    };
    let out = match &op.kind {
        Kind::Along {
            shape1,
            shape2,
            dim,
            eps,
        } => cuda
            .cosine_similarity(&io.a, shape1, &io.b, shape2, *dim, *eps)
            .map_err(wrap)?,
        Kind::Channels {
            shape1,
            shape2,
            flatten_from,
            eps,
        } => cuda
            .channel_similarity(&io.a, shape1, &io.b, shape2, *flatten_from, *eps)
            .map_err(wrap)?,
        Kind::Reweight {
            shape1,
            shape2,
            flatten_from,
            eps,
        } => {
            // Both results in one buffer, written by the kernels in place (no copy).
            let plan =
                crate::plan::Plan::flattened(shape1, shape2, *flatten_from, *eps).map_err(wrap)?;
            let (w, s) = (plan.out_len() * plan.reduce.len, plan.out_len());
            let mut values = alloc::<T>(&cuda, w + s)?;
            let (mut wv, mut rest) = values.split_at_mut(w);
            let mut sv = rest.slice_mut(0..s);
            cuda.reweight_channels_into(
                &mut wv,
                &mut sv,
                &io.a,
                shape1,
                &io.b,
                shape2,
                *flatten_from,
                *eps,
            )
            .map_err(wrap)?;
            Output {
                values,
                shape: vec![w + s],
            }
        }
        Kind::Pair { plan, what, .. } => T::pair(&cuda, plan, what, io)?,
    };
    Ok((
        T::wrap_cuda_slice(out.values, device.clone()),
        Shape::from(out.shape),
    ))
}

/// An output buffer of `len` elements (at least one is allocated: the driver refuses empty
/// allocations; candle's storage may be longer than its tensor) that a kernel writes whole.
fn alloc<T: CandleElement>(cuda: &Cuda, len: usize) -> candle_core::Result<CudaSlice<T>> {
    // SAFETY: every caller hands the buffer to a kernel that writes all `len` elements
    // before anything reads them (the `_into` functions' contract).
    unsafe { cuda.stream().alloc::<T>(len.max(1)) }.map_err(|e| wrap(e.into()))
}

/// The pairwise ops on CUDA, for the element types the pairwise kernels are built for.
pub(crate) fn pair<T: CandleElement + PairElement>(
    cuda: &Cuda,
    plan: &PairPlan,
    what: &PairWhat,
    io: Inputs<'_, T>,
) -> candle_core::Result<Output<T>> {
    let (a, b) = (&io.a, &io.b);
    Ok(match what {
        PairWhat::Matrix => cuda.pairwise_similarity(plan, a, b).map_err(wrap)?,
        PairWhat::RowMean => cuda.pairwise_row_mean(plan, a, b).map_err(wrap)?,
        PairWhat::Mean => cuda.pairwise_mean(plan, a, b).map_err(wrap)?,
        PairWhat::TopK(_) | PairWhat::Argmax => {
            let t = match what {
                PairWhat::TopK(k) => cuda.pairwise_top_k(plan, a, b, *k),
                _ => cuda.pairwise_argmax(plan, a, b),
            }
            .map_err(wrap)?;
            let indices = u32::wrap_cuda_slice(t.indices, io.device.clone());
            io.op.put_indices(Storage::Cuda(indices), &t.shape);
            Output {
                values: t.values,
                shape: t.shape,
            }
        }
        PairWhat::Sets(wa, wb) => {
            let wa = wa.as_ref().map(|w| weights::<T>(cuda, w)).transpose()?;
            let wb = wb.as_ref().map(|w| weights::<T>(cuda, w)).transpose()?;
            let s = cuda
                .set_similarity(plan, a, b, wa.as_ref(), wb.as_ref())
                .map_err(wrap)?;
            // Three results of B values each into one [3, B?] buffer: 3·B values copied.
            let n = plan.batch;
            let mut values = alloc::<T>(cuda, 3 * n)?;
            let stream = cuda.stream();
            for (i, part) in [&s.precision, &s.recall, &s.f1].into_iter().enumerate() {
                stream
                    .memcpy_dtod(part, &mut values.slice_mut(i * n..(i + 1) * n))
                    .map_err(|e| wrap(e.into()))?;
            }
            let mut shape = vec![3];
            shape.extend(&s.shape);
            Output { values, shape }
        }
    })
}

/// A device copy of a weight tensor's elements (one value per vector, small next to the
/// sets), as [`Cuda::set_similarity`] takes them.
fn weights<T: CandleElement>(cuda: &Cuda, w: &Tensor) -> candle_core::Result<CudaSlice<T>> {
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        return Err(candle_core::Error::Msg(
            "cosim: set_similarity's weights must be on the inputs' device".into(),
        ));
    };
    let view = input::<T>(s, layout, layout.shape().elem_count())?;
    cuda.stream().clone_dtod(&view).map_err(|e| wrap(e.into()))
}

/// The pairwise kernels are built for f32, f16 and bf16.
macro_rules! pair_backend {
    ($($t:ty),*) => {$(
        impl super::op::Backend for $t {
            fn pair(
                cuda: &Cuda,
                plan: &PairPlan,
                what: &PairWhat,
                io: Inputs<'_, Self>,
            ) -> candle_core::Result<Output<Self>> {
                pair::<$t>(cuda, plan, what, io)
            }

            fn pair_backward(
                cuda: &Cuda,
                plan: &PairPlan,
                a: &CudaView<'_, Self>,
                b: &CudaView<'_, Self>,
                grad: &CudaView<'_, Self>,
            ) -> candle_core::Result<(CudaSlice<Self>, CudaSlice<Self>)> {
                cuda.pairwise_similarity_backward(plan, a, b, grad).map_err(wrap)
            }
        }
    )*};
}
pair_backend!(f32, half::f16, half::bf16);

impl super::op::Backend for f64 {
    fn pair(
        _: &Cuda,
        _: &PairPlan,
        _: &PairWhat,
        io: Inputs<'_, Self>,
    ) -> candle_core::Result<Output<Self>> {
        Err(candle_core::Error::Msg(format!(
            "{}: the pairwise ops on CUDA take f32, f16 or bf16 tensors (f64 runs on the CPU)",
            io.op.name
        )))
    }

    fn pair_backward(
        _: &Cuda,
        _: &PairPlan,
        _: &CudaView<'_, Self>,
        _: &CudaView<'_, Self>,
        _: &CudaView<'_, Self>,
    ) -> candle_core::Result<(CudaSlice<Self>, CudaSlice<Self>)> {
        Err(candle_core::Error::Msg(
            "cosim: the pairwise gradients on CUDA take f32, f16 or bf16 tensors (f64 runs on \
             the CPU)"
                .into(),
        ))
    }
}

/// `CustomOp2::bwd` on CUDA tensors: the along, per-channel and reweighting ops through
/// [`Cuda::cosine_similarity_backward`] and its twins, the pairwise matrix through
/// [`Cuda::pairwise_similarity_backward`], on candle's stream. The inputs are read at
/// their logical shapes (`contiguous()`: a broadcast view is expanded on the device, and its
/// gradient comes back at its logical shape for candle to sum).
pub(crate) fn backward(
    op: &CosimOp,
    arg1: &Tensor,
    arg2: &Tensor,
    grad: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let dtypes = (arg1.dtype(), arg2.dtype());
    by_dtype!(dtypes, op.name, T => backward_t::<T>(op, arg1, arg2, grad))
}

fn backward_t<T: CandleElement>(
    op: &CosimOp,
    arg1: &Tensor,
    arg2: &Tensor,
    grad: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (a, b, g) = (arg1.contiguous()?, arg2.contiguous()?, grad.contiguous()?);
    let candle_core::Device::Cuda(device) = a.device() else {
        return Err(candle_core::Error::Msg(format!(
            "{}: not a CUDA tensor",
            op.name
        )));
    };
    let cuda = handle(device)?;
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let (sg, lg) = g.storage_and_layout();
    let (Storage::Cuda(sa), Storage::Cuda(sb), Storage::Cuda(sg)) = (&*sa, &*sb, &*sg) else {
        return Err(candle_core::Error::Msg(format!(
            "{}: the inputs and the gradient must be on one CUDA device",
            op.name
        )));
    };
    let va = input::<T>(sa, la, a.elem_count())?;
    let vb = input::<T>(sb, lb, b.elem_count())?;
    let vg = input::<T>(sg, lg, g.elem_count())?;
    let tensor = |g: CudaSlice<T>, dims: &[usize]| {
        let storage = Storage::Cuda(T::wrap_cuda_slice(g, device.clone()));
        Tensor::from_storage(storage, dims, candle_core::op::BackpropOp::none(), false)
    };
    let pair_tensors = |(g1, g2)| Ok((tensor(g1, a.dims()), tensor(g2, b.dims())));
    let (g1, g2) = match &op.kind {
        Kind::Along { dim, eps, .. } => {
            cuda.cosine_similarity_backward(&va, a.dims(), &vb, b.dims(), *dim, *eps, &vg)
        }
        Kind::Channels {
            flatten_from, eps, ..
        } => {
            cuda.channel_similarity_backward(&va, a.dims(), &vb, b.dims(), *flatten_from, *eps, &vg)
        }
        Kind::Reweight {
            flatten_from, eps, ..
        } => {
            // The op's output packs the weighted tensor, then the similarities.
            let plan = crate::plan::Plan::flattened(a.dims(), b.dims(), *flatten_from, *eps)
                .map_err(wrap)?;
            let w = plan.out_len() * plan.reduce.len;
            let (gw, gs) = (vg.slice(0..w), vg.slice(w..));
            cuda.reweight_channels_backward(
                &va,
                a.dims(),
                &vb,
                b.dims(),
                *flatten_from,
                *eps,
                &gw,
                Some(&gs),
            )
        }
        Kind::Pair { plan, declared, .. } => {
            // The matrix (bwd refuses the other pairwise results before this).
            let logical = super::op::logical_plan(plan, *declared, a.dims(), b.dims())?;
            return pair_tensors(T::pair_backward(&cuda, &logical, &va, &vb, &vg)?);
        }
    }
    .map_err(wrap)?;
    pair_tensors((g1, g2))
}
