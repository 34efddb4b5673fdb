//! The CPU backend: multithreaded (rayon, all cores) and vectorised. It is the fallback on
//! machines without a GPU and the baseline the CUDA kernels are measured against. Each
//! function has a twin of the same name on [`crate::cuda::Cuda`].
//!
//! Pairwise similarity ([`pairwise_similarity`] and its reductions) executes a
//! [`PairPlan`](crate::pairwise::PairPlan): inverse norms in one pass per set; dot products by
//! `matrixmultiply`'s GEMM in parallel tasks of up to 256 rows, both layouts read in place
//! through strides; an epilogue that scales and clamps; top-k, argmax and set scores consumed
//! tile by tile, so that the `N × M` matrix is never held unless it is the result; means by
//! the O((N+M)·D) identity. Scratch is bounded per thread (a few MiB: 1 MiB tiles, at most
//! 4 MiB of converted f16/bf16 input, GEMM's packing buffers). f16/bf16 inputs are converted
//! to f32 tile by tile. [`Precision`](crate::pairwise::Precision) is ignored: the CPU always
//! computes exactly. The CUDA twins (f32, f16, bf16) are on [`crate::cuda::Cuda`].

mod backward;
mod exec;
mod pairwise;
mod sums;

pub use pairwise::{
    pairwise_argmax, pairwise_mean, pairwise_row_mean, pairwise_similarity,
    pairwise_similarity_backward, pairwise_similarity_blocks, pairwise_similarity_into,
    pairwise_top_k, pairwise_top_k_into, set_similarity,
};

use crate::element::Element;
use crate::plan::{check_out_len, Plan};
use crate::{Result, Reweighted, Similarity};

/// `torch.nn.functional.cosine_similarity(x1, x2, dim, eps)` on row-major host buffers:
/// broadcasts the shapes, reduces along `dim` (negative counts from the end), and returns the
/// broadcast shape without `dim`.
///
/// # Errors
/// If a buffer's length is not the product of its shape, the shapes do not broadcast, `dim`
/// is out of range, or eps is negative or NaN.
///
/// ```
/// // One value per pixel of a [1, 2, 2, 2] (N, C, H, W) pair.
/// let x1 = [1.0f32, 0.0, 3.0, 1.0, 0.0, 1.0, 4.0, 1.0];
/// let x2 = [1.0f32, 1.0, 3.0, -1.0, 0.0, 1.0, 4.0, 1.0];
/// let s = cosim::cpu::cosine_similarity(&x1, &[1, 2, 2, 2], &x2, &[1, 2, 2, 2], 1, None)?;
/// assert_eq!(s.shape, vec![1, 2, 2]);
/// assert_eq!(s.values[0], 1.0);
/// # Ok::<(), cosim::Error>(())
/// ```
pub fn cosine_similarity<T: Element>(
    x1: &[T],
    shape1: &[usize],
    x2: &[T],
    shape2: &[usize],
    dim: isize,
    eps: Option<f64>,
) -> Result<Similarity<Vec<T>>> {
    let plan = Plan::along(shape1, shape2, dim, eps)?;
    run(plan, x1, shape1, x2, shape2)
}

/// [`cosine_similarity`] into a caller's buffer of the result's length; returns the shape.
///
/// # Errors
/// As [`cosine_similarity`], and if `out` has the wrong length (then nothing is written).
pub fn cosine_similarity_into<T: Element>(
    out: &mut [T],
    x1: &[T],
    shape1: &[usize],
    x2: &[T],
    shape2: &[usize],
    dim: isize,
    eps: Option<f64>,
) -> Result<Vec<usize>> {
    let plan = Plan::along(shape1, shape2, dim, eps)?;
    run_into(plan, out, x1, shape1, x2, shape2)
}

/// Per-channel cosine of flattened maps: dims `flatten_from..` of the broadcast shape form
/// one vector, the result has shape `broadcast[..flatten_from]`. For NCHW maps,
/// `flatten_from = 2` gives `[N, C]`, as `cosine_similarity(x.view(N, C, -1), y.view(N, C, -1), dim=2)`.
///
/// # Errors
/// As [`cosine_similarity`]; also if `flatten_from` is not below the broadcast rank, or one
/// input is broadcast along part (not all) of the flattened dims.
pub fn channel_similarity<T: Element>(
    x1: &[T],
    shape1: &[usize],
    x2: &[T],
    shape2: &[usize],
    flatten_from: usize,
    eps: Option<f64>,
) -> Result<Similarity<Vec<T>>> {
    let plan = Plan::flattened(shape1, shape2, flatten_from, eps)?;
    run(plan, x1, shape1, x2, shape2)
}

/// [`channel_similarity`] into a caller's buffer; returns the shape.
///
/// # Errors
/// As [`channel_similarity`], and if `out` has the wrong length.
pub fn channel_similarity_into<T: Element>(
    out: &mut [T],
    x1: &[T],
    shape1: &[usize],
    x2: &[T],
    shape2: &[usize],
    flatten_from: usize,
    eps: Option<f64>,
) -> Result<Vec<usize>> {
    let plan = Plan::flattened(shape1, shape2, flatten_from, eps)?;
    run_into(plan, out, x1, shape1, x2, shape2)
}

/// Reweights each channel of `y` by its similarity to the same channel of `x`:
/// `weighted[n, c, …] = y[n, c, …] · cos(x[n, c, :], y[n, c, :])` with the maps flattened
/// from `flatten_from`, using the similarity as returned (rounded to `T`), so that the weighted
/// tensor is exactly `y · sim` elementwise in `T`'s arithmetic. Returns the weighted
/// tensor (broadcast shape) and the similarities (`broadcast[..flatten_from]`).
///
/// # Errors
/// As [`channel_similarity`].
pub fn reweight_channels<T: Element>(
    x: &[T],
    shape_x: &[usize],
    y: &[T],
    shape_y: &[usize],
    flatten_from: usize,
    eps: Option<f64>,
) -> Result<Reweighted<Vec<T>>> {
    let plan = Plan::flattened(shape_x, shape_y, flatten_from, eps)?;
    plan.check_inputs(x.len(), y.len(), shape_x, shape_y)?;
    let mut weighted = vec![T::default(); plan.out_len() * plan.reduce.len];
    let mut sims = vec![T::default(); plan.out_len()];
    exec::reweight(&plan, x, y, 2, &mut weighted, &mut sims);
    Ok(Reweighted {
        weighted_shape: plan.weighted_shape(),
        weighted,
        similarity: sims,
        similarity_shape: plan.out_shape,
    })
}

/// [`reweight_channels`] into caller buffers; returns the weighted and similarity shapes.
///
/// # Errors
/// As [`reweight_channels`], and if an output has the wrong length (nothing is written).
#[allow(clippy::too_many_arguments)]
pub fn reweight_channels_into<T: Element>(
    weighted: &mut [T],
    similarity: &mut [T],
    x: &[T],
    shape_x: &[usize],
    y: &[T],
    shape_y: &[usize],
    flatten_from: usize,
    eps: Option<f64>,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let plan = Plan::flattened(shape_x, shape_y, flatten_from, eps)?;
    plan.check_inputs(x.len(), y.len(), shape_x, shape_y)?;
    let wshape = plan.weighted_shape();
    check_out_len("weighted", weighted.len(), &wshape)?;
    plan.check_out("similarity", similarity.len())?;
    exec::reweight(&plan, x, y, 2, weighted, similarity);
    Ok((wshape, plan.out_shape))
}

fn run<T: Element>(
    plan: Plan,
    x1: &[T],
    shape1: &[usize],
    x2: &[T],
    shape2: &[usize],
) -> Result<Similarity<Vec<T>>> {
    let mut values = vec![T::default(); plan.out_len()];
    let shape = run_into(plan, &mut values, x1, shape1, x2, shape2)?;
    Ok(Similarity { values, shape })
}

fn run_into<T: Element>(
    plan: Plan,
    out: &mut [T],
    x1: &[T],
    shape1: &[usize],
    x2: &[T],
    shape2: &[usize],
) -> Result<Vec<usize>> {
    plan.check_inputs(x1.len(), x2.len(), shape1, shape2)?;
    plan.check_out("out", out.len())?;
    exec::similarity(&plan, x1, x2, out);
    Ok(plan.out_shape)
}

/// Gradients of [`cosine_similarity`]: given `grad`, the upstream gradient of its result
/// (shaped like it), returns the gradients of `x1` and `x2`, shaped like them.
///
/// The derivative of `Σ x1·x2 / (max(‖x1‖, eps) · max(‖x2‖, eps))` as PyTorch's autograd takes
/// it: where a norm is clamped to eps it is a constant; an input broadcast against the other
/// gets its gradient summed over the dims it was broadcast along. Where PyTorch's answer is
/// infinite or NaN (a zero vector with eps = 0, whose forward is 0 by cosim's rule) both
/// gradients of that output's vectors get 0 from it. The forward's clamp to [−1, 1] only
/// removes rounding overshoot and is passed through. NaN in gives NaN out. Sums accumulate as
/// in the forward (f32 for f16/bf16/f32, f64 for f64).
///
/// ```
/// // d cos(x, y) / dx at x = (1, 0), y = (1, 1): (0, 1/2) / √2.
/// let (gx, gy) = cosim::cpu::cosine_similarity_backward(
///     &[1.0f64, 0.0], &[2], &[1.0, 1.0], &[2], 0, None, &[1.0])?;
/// assert!((gx[0]).abs() < 1e-15 && (gx[1] - 0.5f64.sqrt()).abs() < 1e-15);
/// assert_eq!(gy.len(), 2);
/// # Ok::<(), cosim::Error>(())
/// ```
///
/// # Errors
/// As [`cosine_similarity`], and [`crate::Error::OutLenMismatch`] if `grad` is not shaped like
/// the result.
#[allow(clippy::too_many_arguments)]
pub fn cosine_similarity_backward<T: Element>(
    x1: &[T],
    shape1: &[usize],
    x2: &[T],
    shape2: &[usize],
    dim: isize,
    eps: Option<f64>,
    grad: &[T],
) -> Result<(Vec<T>, Vec<T>)> {
    let plan = Plan::along(shape1, shape2, dim, eps)?;
    run_backward(&plan, x1, shape1, x2, shape2, grad)
}

/// Gradients of [`channel_similarity`]; the semantics of [`cosine_similarity_backward`].
///
/// # Errors
/// As [`channel_similarity`], and if `grad` is not shaped like the result.
#[allow(clippy::too_many_arguments)]
pub fn channel_similarity_backward<T: Element>(
    x1: &[T],
    shape1: &[usize],
    x2: &[T],
    shape2: &[usize],
    flatten_from: usize,
    eps: Option<f64>,
    grad: &[T],
) -> Result<(Vec<T>, Vec<T>)> {
    let plan = Plan::flattened(shape1, shape2, flatten_from, eps)?;
    run_backward(&plan, x1, shape1, x2, shape2, grad)
}

/// Gradients of [`reweight_channels`]: given the upstream gradient of the weighted tensor
/// (`grad_weighted`, shaped like it) and optionally of the similarities, returns the
/// gradients of `x` and `y`. `weighted = y · sim` gives `y` the direct term `grad_weighted ·
/// sim` besides what flows through the similarity, `Σ grad_weighted · y` per channel; the
/// semantics otherwise as [`cosine_similarity_backward`].
///
/// # Errors
/// As [`reweight_channels`], and if a gradient is not shaped like its result.
#[allow(clippy::too_many_arguments)]
pub fn reweight_channels_backward<T: Element>(
    x: &[T],
    shape_x: &[usize],
    y: &[T],
    shape_y: &[usize],
    flatten_from: usize,
    eps: Option<f64>,
    grad_weighted: &[T],
    grad_similarity: Option<&[T]>,
) -> Result<(Vec<T>, Vec<T>)> {
    use backward::{gradient, Input};
    let plan = Plan::flattened(shape_x, shape_y, flatten_from, eps)?;
    plan.check_inputs(x.len(), y.len(), shape_x, shape_y)?;
    check_out_len("grad_weighted", grad_weighted.len(), &plan.weighted_shape())?;
    if let Some(gs) = grad_similarity {
        plan.check_out("grad_similarity", gs.len())?;
    }
    let (coefs, sims) = backward::reweight_coefs(&plan, x, y, grad_weighted, grad_similarity);
    let red = plan.reduce;
    let at_x = |o1: usize, k: usize| x[o1 + k * red.stride1].to_acc();
    let at_y = |o2: usize, k: usize| y[o2 + k * red.stride2].to_acc();
    let gx = gradient(&plan, Input::First, &coefs, |_, k, o1, o2, c| {
        c.a * at_y(o2, k) + c.b1 * at_x(o1, k)
    });
    let gy = gradient(&plan, Input::Second, &coefs, |o, k, o1, o2, c| {
        c.a * at_x(o1, k) + c.b2 * at_y(o2, k) + grad_weighted[o * red.len + k].to_acc() * sims[o]
    });
    Ok((gx, gy))
}

fn run_backward<T: Element>(
    plan: &Plan,
    x1: &[T],
    shape1: &[usize],
    x2: &[T],
    shape2: &[usize],
    grad: &[T],
) -> Result<(Vec<T>, Vec<T>)> {
    plan.check_inputs(x1.len(), x2.len(), shape1, shape2)?;
    plan.check_out("grad", grad.len())?;
    let coefs = backward::coefs(plan, x1, x2, |o| grad[o].to_acc());
    Ok(backward::both(plan, x1, x2, &coefs))
}
