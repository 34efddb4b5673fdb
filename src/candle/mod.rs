//! cosim's similarities on [`candle_core::Tensor`]s, CPU and CUDA (feature `candle`; CUDA
//! tensors with `candle-cuda`). Semantics are cosim's (see the crate docs and [`crate::cpu`]);
//! dtypes f32, f64, f16 and bf16 (the pairwise ops on CUDA: f32, f16, bf16).
//!
//! - **On CUDA** the kernels run on candle's own stream (`CudaDevice::cuda_stream`), read
//!   candle's buffers in place, allocate their outputs on that stream and return candle
//!   tensors: no host round trip and no synchronisation. The kernels are loaded once per
//!   stream.
//! - **Views** read in place: contiguous tensors, tensors with a start offset (`narrow` of the
//!   first dim, `get`), broadcast views (stride 0, as `broadcast_as` makes: cosim broadcasts
//!   those dims itself), and for the pairwise sets a transpose of a contiguous set (read in the
//!   other [`Layout`]) and a broadcast batch dim (one set shared by every batch). Any other
//!   strided view (a step, a narrowed inner dim, a permutation of other dims) is copied once
//!   with `contiguous()` first; so is the rare pair of views that are both broadcast along
//!   one dim, which cosim's broadcasting would lose.
//! - **Graphs**: every op is a candle `CustomOp2`, so it sits in a graph like candle's own
//!   ops. `backward()` through [`cosine_similarity`], [`channel_similarity`] and
//!   [`reweight_channels`] gives cosim's gradients on CPU and CUDA tensors
//!   ([`crate::cpu::cosine_similarity_backward`] and its twins), and through the pairwise
//!   matrix ([`pairwise_similarity`], [`Pairwise::similarity`]; on CUDA in the plan's
//!   precision, [`crate::cuda::Cuda::pairwise_similarity_backward`]); through the pairwise
//!   reductions (top-k, argmax, means, set scores) it returns an error that says it is not
//!   differentiable yet, never a zero gradient. Top-k and argmax indices are plain u32
//!   tensors.
//! - **Errors** are candle errors carrying cosim's message.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! # fn main() -> candle_core::Result<()> {
//! let q = Tensor::new(&[[1.0f32, 0.0], [0.0, 1.0]], &Device::Cpu)?;
//! let keys = Tensor::new(&[[1.0f32, 1.0], [0.0, 2.0], [-1.0, 0.0]], &Device::Cpu)?;
//! let (values, indices) = cosim::candle::pairwise_top_k(&q, &keys, 2)?;
//! assert_eq!(indices.to_vec2::<u32>()?, [[0, 1], [1, 0]]);
//! assert!((values.to_vec2::<f32>()?[0][0] - 0.5f32.sqrt()).abs() < 1e-6);
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "candle-cuda")]
mod cuda;
mod op;
mod views;

use crate::pairwise::{Layout, PairPlan, Precision, SetScores};
use crate::plan::{broadcast, numel, Plan};
use candle_core::op::BackpropOp;
use candle_core::{DType, Result, Tensor};
use op::{mixed, unsupported, wrap, CosimOp, Kind, PairWhat, Slot};

/// Errors unless both tensors have one dtype that cosim computes in.
fn check_dtypes(what: &str, x1: &Tensor, x2: &Tensor) -> Result<()> {
    if x1.dtype() != x2.dtype() {
        return Err(mixed(what, x1.dtype(), x2.dtype()));
    }
    match x1.dtype() {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => Ok(()),
        d => Err(unsupported(d, what)),
    }
}

/// A tensor cosim reads in place, and the shape it reads it as: the tensor itself when its
/// view is dense up to broadcast dims, else a contiguous copy.
fn dense(x: &Tensor) -> Result<(Tensor, Vec<usize>)> {
    match views::dense_shape(x.dims(), x.stride()) {
        Some(shape) => Ok((x.clone(), shape)),
        None => {
            let c = x.contiguous()?;
            let shape = c.dims().to_vec();
            Ok((c, shape))
        }
    }
}

/// The two inputs of an elementwise-broadcasting op as cosim reads them: in place where their
/// views allow, with broadcast dims that only the other input sizes (else both copied).
fn dense_pair(x1: &Tensor, x2: &Tensor) -> Result<(Tensor, Vec<usize>, Tensor, Vec<usize>)> {
    let (t1, s1) = dense(x1)?;
    let (t2, s2) = dense(x2)?;
    let logical = broadcast(x1.dims(), x2.dims()).map_err(wrap)?.0;
    if broadcast(&s1, &s2).map_err(wrap)?.0 == logical {
        return Ok((t1, s1, t2, s2));
    }
    // Both broadcast along one dim: reading them as size 1 would lose it.
    let (c1, c2) = (x1.contiguous()?, x2.contiguous()?);
    let (s1, s2) = (c1.dims().to_vec(), c2.dims().to_vec());
    Ok((c1, s1, c2, s2))
}

/// Runs `kind` on the two inputs as cosim reads them; returns the op's output and the slot
/// where top-k and argmax leave their indices.
fn apply(
    name: &'static str,
    t1: &Tensor,
    t2: &Tensor,
    kind: Kind,
    lens: (usize, usize),
) -> Result<(Tensor, Slot)> {
    let op = CosimOp::new(name, kind, lens);
    let slot = op.indices.clone();
    Ok((t1.apply_op2(t2, op)?, slot))
}

/// `cosine_similarity(x1, x2, dim, eps)` as [`crate::cpu::cosine_similarity`]: the shapes
/// broadcast, the result has the broadcast shape without `dim` (negative counts from the
/// end); `eps` defaults to 1e-8.
///
/// # Errors
/// cosim's shape and eps errors; mixed or unsupported dtypes; inputs on two devices.
pub fn cosine_similarity(x1: &Tensor, x2: &Tensor, dim: isize, eps: Option<f64>) -> Result<Tensor> {
    const NAME: &str = "cosim::cosine_similarity";
    check_dtypes(NAME, x1, x2)?;
    Plan::along(x1.dims(), x2.dims(), dim, eps).map_err(wrap)?;
    let (t1, shape1, t2, shape2) = dense_pair(x1, x2)?;
    let lens = (numel(&shape1).map_err(wrap)?, numel(&shape2).map_err(wrap)?);
    let kind = Kind::Along {
        shape1,
        shape2,
        dim,
        eps,
    };
    Ok(apply(NAME, &t1, &t2, kind, lens)?.0)
}

/// Per-channel cosine of maps flattened from `flatten_from` (`[N, C, H, W]` with 2 gives
/// `[N, C]`), as [`crate::cpu::channel_similarity`].
///
/// # Errors
/// As [`cosine_similarity`]; also a `flatten_from` out of range or a broadcast along part of
/// the flattened dims.
pub fn channel_similarity(
    x1: &Tensor,
    x2: &Tensor,
    flatten_from: usize,
    eps: Option<f64>,
) -> Result<Tensor> {
    const NAME: &str = "cosim::channel_similarity";
    check_dtypes(NAME, x1, x2)?;
    Plan::flattened(x1.dims(), x2.dims(), flatten_from, eps).map_err(wrap)?;
    let (t1, shape1, t2, shape2) = dense_pair(x1, x2)?;
    let lens = (numel(&shape1).map_err(wrap)?, numel(&shape2).map_err(wrap)?);
    let kind = Kind::Channels {
        shape1,
        shape2,
        flatten_from,
        eps,
    };
    Ok(apply(NAME, &t1, &t2, kind, lens)?.0)
}

/// `y` reweighted per channel by its similarity to `x`, as [`crate::cpu::reweight_channels`]:
/// returns (weighted tensor of the broadcast shape, similarities `broadcast[..flatten_from]`).
/// Both come from one op (on CUDA one buffer, written in place); they are views of it.
///
/// # Errors
/// As [`channel_similarity`].
pub fn reweight_channels(
    x: &Tensor,
    y: &Tensor,
    flatten_from: usize,
    eps: Option<f64>,
) -> Result<(Tensor, Tensor)> {
    const NAME: &str = "cosim::reweight_channels";
    check_dtypes(NAME, x, y)?;
    let plan = Plan::flattened(x.dims(), y.dims(), flatten_from, eps).map_err(wrap)?;
    let (t1, shape1, t2, shape2) = dense_pair(x, y)?;
    let lens = (numel(&shape1).map_err(wrap)?, numel(&shape2).map_err(wrap)?);
    let kind = Kind::Reweight {
        shape1,
        shape2,
        flatten_from,
        eps,
    };
    let packed = apply(NAME, &t1, &t2, kind, lens)?.0;
    let (w, s) = (plan.out_len() * plan.reduce.len, plan.out_len());
    let weighted = packed.narrow(0, 0, w)?.reshape(plan.weighted_shape())?;
    let similarity = packed.narrow(0, w, s)?.reshape(plan.out_shape)?;
    Ok((weighted, similarity))
}

/// How the two sets of the pairwise ops are laid out, with the norm clamp and the matrix
/// precision. The default is two row sets (`[N, D]`, `[B, N, D]`), eps 1e-8, exact.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use cosim::candle::Pairwise;
/// use cosim::pairwise::Layout;
/// # fn main() -> candle_core::Result<()> {
/// // 8 query vectors [8, 16] against 2 batches of [16, 100] maps (vectors in columns).
/// let q = Tensor::randn(0f32, 1.0, (8, 16), &Device::Cpu)?;
/// let maps = Tensor::randn(0f32, 1.0, (2, 16, 100), &Device::Cpu)?;
/// let s = Pairwise::new(Layout::Rows, Layout::Cols).similarity(&q, &maps)?;
/// assert_eq!(s.dims(), &[2, 8, 100]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pairwise {
    pub a_layout: Layout,
    pub b_layout: Layout,
    /// The clamp of each norm; `None` is 1e-8.
    pub eps: Option<f64>,
    pub precision: Precision,
}

impl Default for Pairwise {
    fn default() -> Pairwise {
        Pairwise::new(Layout::Rows, Layout::Rows)
    }
}

/// A pairwise set as cosim reads it: the tensor (itself, or a copy) and its view.
struct Set {
    tensor: Tensor,
    view: views::SetView,
}

impl Set {
    fn new(x: &Tensor, layout: Layout) -> Result<Set> {
        if let Some(view) = views::set_view(x.dims(), x.stride(), layout) {
            return Ok(Set {
                tensor: x.clone(),
                view,
            });
        }
        Set::copied(x, layout)
    }

    fn copied(x: &Tensor, layout: Layout) -> Result<Set> {
        let tensor = x.contiguous()?;
        let view = views::set_view(tensor.dims(), tensor.stride(), layout).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "cosim: cannot read the set of shape {:?}",
                x.dims()
            ))
        })?;
        Ok(Set { tensor, view })
    }
}

impl Pairwise {
    /// Sets in these layouts, eps 1e-8, exact.
    pub fn new(a_layout: Layout, b_layout: Layout) -> Pairwise {
        Pairwise {
            a_layout,
            b_layout,
            eps: None,
            precision: Precision::Exact,
        }
    }

    /// With another norm clamp (`None`: 1e-8).
    pub fn eps(mut self, eps: Option<f64>) -> Pairwise {
        self.eps = eps;
        self
    }

    /// With another precision of the matrix kernels ([`Precision::Fast`]: tensor cores).
    pub fn precision(mut self, precision: Precision) -> Pairwise {
        self.precision = precision;
        self
    }

    fn plan(&self, a: (&[usize], Layout), b: (&[usize], Layout)) -> Result<PairPlan> {
        Ok(PairPlan::new(a.0, a.1, b.0, b.1)
            .and_then(|p| p.eps(self.eps))
            .map_err(wrap)?
            .precision(self.precision))
    }

    /// Runs one pairwise result: validates against the tensors' own shapes, then reads them
    /// in place where their views allow.
    fn run(
        &self,
        name: &'static str,
        a: &Tensor,
        b: &Tensor,
        what: impl FnOnce(&PairPlan) -> Result<PairWhat>,
    ) -> Result<(Tensor, Slot)> {
        check_dtypes(name, a, b)?;
        let logical = self.plan((a.dims(), self.a_layout), (b.dims(), self.b_layout))?;
        let what = what(&logical)?;
        let (mut sa, sb) = (Set::new(a, self.a_layout)?, Set::new(b, self.b_layout)?);
        let batched = |sa: &Set, sb: &Set| sa.view.shape.len() == 3 || sb.view.shape.len() == 3;
        if logical.batched && !batched(&sa, &sb) {
            // Both batch dims were broadcasts: keep one set's batch by copying it.
            sa = Set::copied(a, self.a_layout)?;
        }
        let plan = self.plan(
            (&sa.view.shape, sa.view.layout),
            (&sb.view.shape, sb.view.layout),
        )?;
        let lens = (
            numel(&sa.view.shape).map_err(wrap)?,
            numel(&sb.view.shape).map_err(wrap)?,
        );
        apply(
            name,
            &sa.tensor,
            &sb.tensor,
            Kind::Pair {
                plan,
                what,
                declared: (self.a_layout, self.b_layout),
            },
            lens,
        )
    }

    /// The index tensor a top-k or argmax op left behind.
    fn indices(name: &str, slot: &Slot) -> Result<Tensor> {
        let taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (storage, shape) = taken.ok_or_else(|| {
            candle_core::Error::Msg(format!("{name}: the op returned no indices"))
        })?;
        Ok(Tensor::from_storage(
            storage,
            shape,
            BackpropOp::none(),
            false,
        ))
    }

    /// The full matrix `[B?, N, M]`, as [`crate::cpu::pairwise_similarity`].
    ///
    /// # Errors
    /// cosim's set errors (rank, empty set, vector lengths or batch sizes that differ), dtypes,
    /// devices.
    pub fn similarity(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(self
            .run("cosim::pairwise_similarity", a, b, |_| Ok(PairWhat::Matrix))?
            .0)
    }

    /// The `k` best columns of every row, `[B?, N, k]`: (values, u32 indices), sorted best
    /// first, ties to the lower index, as [`crate::cpu::pairwise_top_k`].
    ///
    /// # Errors
    /// As [`Pairwise::similarity`], and unless 1 ≤ k ≤ M.
    pub fn top_k(&self, a: &Tensor, b: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
        const NAME: &str = "cosim::pairwise_top_k";
        let (values, slot) = self.run(NAME, a, b, |p| {
            p.check_k(k).map_err(wrap)?;
            Ok(PairWhat::TopK(k))
        })?;
        Ok((values, Pairwise::indices(NAME, &slot)?))
    }

    /// The best column of every row, `[B?, N]`: (values, u32 indices).
    ///
    /// # Errors
    /// As [`Pairwise::similarity`].
    pub fn argmax(&self, a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
        const NAME: &str = "cosim::pairwise_argmax";
        let (values, slot) = self.run(NAME, a, b, |_| Ok(PairWhat::Argmax))?;
        Ok((values, Pairwise::indices(NAME, &slot)?))
    }

    /// The mean of every row of the matrix, `[B?, N]`, without forming it.
    ///
    /// # Errors
    /// As [`Pairwise::similarity`].
    pub fn row_mean(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(self
            .run("cosim::pairwise_row_mean", a, b, |_| Ok(PairWhat::RowMean))?
            .0)
    }

    /// The mean of every matrix, `[B]` or a scalar, in O((N + M)·D).
    ///
    /// # Errors
    /// As [`Pairwise::similarity`].
    pub fn mean(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(self
            .run("cosim::pairwise_mean", a, b, |_| Ok(PairWhat::Mean))?
            .0)
    }

    /// Greedy best-match precision, recall and F1 (BERTScore's), one per batch, with optional
    /// per-vector weights (one per vector of each set, any shape holding that many), as
    /// [`crate::cpu::set_similarity`]. The three tensors are views of one `[3, B?]` result.
    ///
    /// # Errors
    /// As [`Pairwise::similarity`]; weights of the wrong length, dtype or device.
    pub fn set_similarity(
        &self,
        a: &Tensor,
        b: &Tensor,
        a_weights: Option<&Tensor>,
        b_weights: Option<&Tensor>,
    ) -> Result<SetScores<Tensor>> {
        const NAME: &str = "cosim::set_similarity";
        let weights = |w: Option<&Tensor>| -> Result<Option<Tensor>> {
            let Some(w) = w else { return Ok(None) };
            if w.dtype() != a.dtype() {
                return Err(mixed(NAME, a.dtype(), w.dtype()));
            }
            if !w.device().same_device(a.device()) {
                return Err(candle_core::Error::Msg(format!(
                    "{NAME}: the weights are on {:?} but the sets on {:?}",
                    w.device().location(),
                    a.device().location()
                )));
            }
            Ok(Some(w.flatten_all()?.contiguous()?))
        };
        let (wa, wb) = (weights(a_weights)?, weights(b_weights)?);
        let (packed, _) = self.run(NAME, a, b, |p| {
            p.check_weights(
                wa.as_ref().map(Tensor::elem_count),
                wb.as_ref().map(Tensor::elem_count),
            )
            .map_err(wrap)?;
            Ok(PairWhat::Sets(wa.clone(), wb.clone()))
        })?;
        Ok(SetScores {
            precision: packed.get(0)?,
            recall: packed.get(1)?,
            f1: packed.get(2)?,
            shape: packed.dims()[1..].to_vec(),
        })
    }
}

/// The matrix `[B?, N, M]` of two row sets (`[N, D]` or `[B, N, D]`); other layouts, eps and
/// precision through [`Pairwise`].
///
/// # Errors
/// As [`Pairwise::similarity`].
pub fn pairwise_similarity(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Pairwise::default().similarity(a, b)
}

/// Top-k of two row sets: (values, u32 indices) `[B?, N, k]`; see [`Pairwise::top_k`].
///
/// # Errors
/// As [`Pairwise::top_k`].
pub fn pairwise_top_k(a: &Tensor, b: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    Pairwise::default().top_k(a, b, k)
}

/// Argmax of two row sets: (values, u32 indices) `[B?, N]`; see [`Pairwise::argmax`].
///
/// # Errors
/// As [`Pairwise::argmax`].
pub fn pairwise_argmax(a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    Pairwise::default().argmax(a, b)
}

/// Row means of the matrix of two row sets, `[B?, N]`; see [`Pairwise::row_mean`].
///
/// # Errors
/// As [`Pairwise::row_mean`].
pub fn pairwise_row_mean(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Pairwise::default().row_mean(a, b)
}

/// The mean of the matrix of two row sets, `[B]` or a scalar; see [`Pairwise::mean`].
///
/// # Errors
/// As [`Pairwise::mean`].
pub fn pairwise_mean(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Pairwise::default().mean(a, b)
}

/// Greedy precision, recall and F1 of two row sets, unweighted; see
/// [`Pairwise::set_similarity`].
///
/// # Errors
/// As [`Pairwise::set_similarity`].
pub fn set_similarity(a: &Tensor, b: &Tensor) -> Result<SetScores<Tensor>> {
    Pairwise::default().set_similarity(a, b, None, None)
}
