//! Pairwise similarity on the CPU: executes a [`PairPlan`] on host buffers, in either layout
//! in place, multithreaded (rayon) and without ever holding the `N × M` matrix unless it is
//! the result.
//!
//! How each result is computed (the semantics are those of [`crate::pairwise`]):
//! - inverse norms of both sets in one parallel pass each (squared norms summed in
//!   `T::Acc`: f32 for f16/bf16/f32, f64 for f64);
//! - dot products by `matrixmultiply`'s GEMM (sgemm for f16/bf16/f32, dgemm for f64), one
//!   single-threaded GEMM per task of up to 256 rows, reading both layouts through strides
//!   (no transposed or normalised copies), then an epilogue that scales by the inverse norms
//!   and clamps. f32/f64 outputs are written by GEMM directly. f16/bf16 inputs are converted
//!   to f32 per task: its rows of `a` (`rows × D` values) and `b` in chunks of at most 4 MiB;
//!   f16/bf16 results pass through an f32 tile of at most 1 MiB. Scratch per thread is thus
//!   bounded (at most about 5 MiB, plus `256 × D` f32 for half inputs), whatever N and M are;
//!   besides it, the inverse norms (N + M values in `T::Acc`) and GEMM's packing buffers
//!   (about 1 MiB per thread).
//! - top-k, argmax and set scores consume those tiles (at most 1 MiB per thread, so that
//!   they stay in L2) as they are computed: per-row bounded selection (candidates of at most
//!   1 MiB per task),
//!   per-task column maxima (M values) merged at the end; never an `N × M` buffer;
//! - the means use the identity `mean_ij ⟨â_i, b̂_j⟩ = ⟨mean_i â_i, mean_j b̂_j⟩`: O((N+M)·D).
//!
//! [`PairPlan::precision`] is ignored: the CPU always computes exactly ([`Precision::Fast`]
//! gives the same results as [`Precision::Exact`]).
//!
//! [`Precision::Fast`]: crate::pairwise::Precision::Fast
//! [`Precision::Exact`]: crate::pairwise::Precision::Exact

mod backward;
mod matrix;
mod norms;
mod select;
mod set;

use crate::element::{Accum, Element};
use crate::error::{Error, Result};
use crate::pairwise::{f1, MatrixBlock, PairPlan, SetScores, TopK};
use crate::plan::{check_eps, numel};
use crate::Similarity;
use matrix::Ctx;
use rayon::prelude::*;
use set::{Set, Side};

/// Checks the plan against the buffers (lengths, eps) and computes the inverse norms.
fn prepare<'a, T: Element>(plan: &PairPlan, a: &'a [T], b: &'a [T]) -> Result<Checked<'a, T>> {
    plan.check_inputs(a.len(), b.len())?;
    check_eps(Some(plan.eps))?;
    // Every function holds the inverse norms of both sets.
    out_len::<T::Acc>(&[plan.a_vectors()])?;
    out_len::<T::Acc>(&[plan.b_vectors()])?;
    Ok(Checked {
        a: Set::new(plan, Side::A, a)?,
        b: Set::new(plan, Side::B, b)?,
    })
}

/// Two sets that fit the plan; nothing computed yet.
struct Checked<'a, T> {
    a: Set<'a, T>,
    b: Set<'a, T>,
}

/// Elements of a result of `shape`, if a buffer of them can exist.
fn out_len<T>(shape: &[usize]) -> Result<usize> {
    let len = numel(shape)?;
    let bytes = len.checked_mul(std::mem::size_of::<T>());
    if bytes.is_none_or(|b| b > isize::MAX as usize) {
        return Err(Error::SizeOverflow {
            shape: shape.to_vec(),
        });
    }
    Ok(len)
}

/// Errors unless every column index of `b` fits the `u32` indices of top-k and argmax.
fn check_indices(plan: &PairPlan) -> Result<()> {
    if u32::try_from(plan.m.saturating_sub(1)).is_err() {
        return Err(Error::IndexOverflow { m: plan.m });
    }
    Ok(())
}

/// The cosine similarity of every pair, `S[b, i, j] = cos(a_i, b_j)`, shape
/// [`PairPlan::matrix_shape`] (`[B, N, M]` or `[N, M]`), row-major.
///
/// Each value is `clamp(dot(a_i, b_j) · inv_a[i] · inv_b[j])` to [−1, 1] (NaN kept), 0 when
/// the dot product is 0, with `inv = `[`inv_norm`]`(‖v‖², eps)` — so a zero vector gives 0
/// even with eps = 0. Sums accumulate in f32 (f64 for f64 inputs); the result is in `T`.
/// The only memory besides the result is the inverse norms (N + M values) and scratch per
/// thread, at most about 5 MiB (plus `256 · D` f32 for f16/bf16 inputs), whatever N and M
/// are.
///
/// # Errors
/// [`Error::LenMismatch`] if `a` or `b` does not hold what the plan's shapes promise,
/// [`Error::BadEps`] for a negative or NaN eps, [`Error::SizeOverflow`] if the matrix cannot
/// be allocated in this address space.
///
/// ```
/// use cosim::cpu;
/// use cosim::pairwise::{Layout, PairPlan};
/// // Two query embeddings against three keys, D = 2, both sets one vector per row.
/// let a = [1.0f32, 0.0, 0.0, 2.0];
/// let b = [3.0f32, 0.0, 1.0, 1.0, 0.0, -1.0];
/// let plan = PairPlan::new(&[2, 2], Layout::Rows, &[3, 2], Layout::Rows)?;
/// let s = cpu::pairwise_similarity(&plan, &a, &b)?;
/// assert_eq!(s.shape, vec![2, 3]);
/// let h = std::f32::consts::FRAC_1_SQRT_2;
/// assert_eq!(s.values, vec![1.0, h, 0.0, 0.0, h, -1.0]);
///
/// // The same b stored one vector per column ([D, M], as `bmm(x.transpose(1, 2), y)` users
/// // hold it): read in place, the same matrix.
/// let b_cols = [3.0f32, 1.0, 0.0, 0.0, 1.0, -1.0];
/// let plan = PairPlan::new(&[2, 2], Layout::Rows, &[2, 3], Layout::Cols)?;
/// assert_eq!(cpu::pairwise_similarity(&plan, &a, &b_cols)?, s);
/// # Ok::<(), cosim::Error>(())
/// ```
///
/// [`inv_norm`]: crate::pairwise::inv_norm
pub fn pairwise_similarity<T: Element>(
    plan: &PairPlan,
    a: &[T],
    b: &[T],
) -> Result<Similarity<Vec<T>>> {
    let sets = prepare(plan, a, b)?;
    let shape = plan.matrix_shape();
    let mut values = vec![T::default(); out_len::<T>(&shape)?];
    matrix(plan, sets, &mut values);
    Ok(Similarity { values, shape })
}

/// [`pairwise_similarity`] into a caller's buffer of the matrix's length; returns the shape.
///
/// # Errors
/// As [`pairwise_similarity`], and [`Error::OutLenMismatch`] if `out` has the wrong length.
/// Nothing is written when an error is returned.
pub fn pairwise_similarity_into<T: Element>(
    plan: &PairPlan,
    out: &mut [T],
    a: &[T],
    b: &[T],
) -> Result<Vec<usize>> {
    let sets = prepare(plan, a, b)?;
    let shape = plan.matrix_shape();
    out_len::<T>(&shape)?;
    plan.check_out("out", out.len(), &shape)?;
    matrix(plan, sets, out);
    Ok(shape)
}

fn matrix<T: Element>(plan: &PairPlan, sets: Checked<'_, T>, out: &mut [T]) {
    let ctx = Ctx::new(plan, sets.a, sets.b);
    let per_batch = ctx.n * ctx.m;
    out.par_chunks_mut(per_batch)
        .enumerate()
        .for_each(|(batch, ob)| ctx.fill_block(batch, 0, ob, ctx.batch));
}

/// The matrix of [`pairwise_similarity`] in blocks of whole rows, for matrices too large to
/// hold: each block holds at most `budget_bytes` of values (at least one row), and is handed
/// to `f` as soon as it is computed, in order (batch by batch, rows ascending). One block is
/// allocated, reused for every block; besides it only the inverse norms (N + M values) and
/// the bounded per-thread scratch of [`pairwise_similarity`]. `f` may write the block to
/// disk, reduce it, or copy what it needs. An error returned by `f` stops the computation and
/// is returned.
///
/// # Errors
/// As [`pairwise_similarity`] (converted with `E::from`, before `f` is first called), or the
/// first error `f` returns.
///
/// ```
/// use cosim::cpu;
/// use cosim::pairwise::{Layout, PairPlan};
/// let (a, b) = (vec![1.0f32; 5 * 4], vec![2.0f32; 7 * 4]);
/// let plan = PairPlan::new(&[5, 4], Layout::Rows, &[7, 4], Layout::Rows)?;
/// let mut rows = 0;
/// // At most 2 rows of 7 f32 per block: blocks of rows 0..2, 2..4, 4..5.
/// cpu::pairwise_similarity_blocks(&plan, &a, &b, 2 * 7 * 4, |blk| {
///     assert_eq!((blk.batch, blk.row), (0, rows));
///     assert!(blk.values.iter().all(|&s| s == 1.0));
///     rows += blk.rows;
///     Ok::<(), cosim::Error>(())
/// })?;
/// assert_eq!(rows, 5);
/// # Ok::<(), cosim::Error>(())
/// ```
pub fn pairwise_similarity_blocks<T: Element, E: From<Error>>(
    plan: &PairPlan,
    a: &[T],
    b: &[T],
    budget_bytes: usize,
    mut f: impl FnMut(MatrixBlock<&[T]>) -> Result<(), E>,
) -> Result<(), E> {
    let sets = prepare(plan, a, b)?;
    let per_block = plan.rows_per_block(budget_bytes, std::mem::size_of::<T>());
    let len = out_len::<T>(&[per_block, plan.m])?;
    let ctx = Ctx::new(plan, sets.a, sets.b);
    let mut buf = vec![T::default(); len];
    for batch in 0..ctx.batch {
        for row in (0..ctx.n).step_by(per_block) {
            let rows = per_block.min(ctx.n - row);
            let values = &mut buf[..rows * ctx.m];
            ctx.fill_block(batch, row, values, 1);
            f(MatrixBlock {
                batch,
                row,
                rows,
                values,
            })?;
        }
    }
    Ok(())
}

/// The `k` most similar vectors of `b` for every vector of `a`: per row of the matrix, the
/// values and column indices of its `k` largest entries, shape [`PairPlan::top_k_shape`]
/// (`[B, N, k]` or `[N, k]`), sorted by [`outranks`]: descending, NaN first, ties to the lower
/// index. The matrix is never stored: each thread selects from tiles of its rows as they are
/// computed. Selection compares the accumulator values (f32, f64 for f64); the values
/// returned are then rounded to `T`, so two of them can compare equal in `T` in either index
/// order.
///
/// # Errors
/// As [`pairwise_similarity`]; [`Error::BadK`] unless `1 <= k <= M`; [`Error::IndexOverflow`]
/// if `b` holds more than 2^32 vectors.
///
/// [`outranks`]: crate::pairwise::outranks
pub fn pairwise_top_k<T: Element>(
    plan: &PairPlan,
    a: &[T],
    b: &[T],
    k: usize,
) -> Result<TopK<Vec<T>, Vec<u32>>> {
    let sets = prepare(plan, a, b)?;
    plan.check_k(k)?;
    check_indices(plan)?;
    let shape = plan.top_k_shape(k);
    let len = out_len::<T>(&shape)?;
    out_len::<u32>(&shape)?;
    let (mut values, mut indices) = (vec![T::default(); len], vec![0u32; len]);
    select::top_k(
        &Ctx::new(plan, sets.a, sets.b),
        k,
        &mut values,
        &mut indices,
    );
    Ok(TopK {
        values,
        indices,
        shape,
    })
}

/// [`pairwise_top_k`] into caller buffers of the result's length; returns the shape.
///
/// # Errors
/// As [`pairwise_top_k`], and [`Error::OutLenMismatch`] if `values` or `indices` has the
/// wrong length. Nothing is written when an error is returned.
pub fn pairwise_top_k_into<T: Element>(
    plan: &PairPlan,
    values: &mut [T],
    indices: &mut [u32],
    a: &[T],
    b: &[T],
    k: usize,
) -> Result<Vec<usize>> {
    let sets = prepare(plan, a, b)?;
    plan.check_k(k)?;
    check_indices(plan)?;
    let shape = plan.top_k_shape(k);
    out_len::<T>(&shape)?;
    plan.check_out("values", values.len(), &shape)?;
    plan.check_out("indices", indices.len(), &shape)?;
    select::top_k(&Ctx::new(plan, sets.a, sets.b), k, values, indices);
    Ok(shape)
}

/// Each row's maximum and its column: the most similar vector of `b` for every vector of
/// `a`, shape [`PairPlan::row_shape`] (`[B, N]` or `[N]`). The same order as
/// [`pairwise_top_k`] with k = 1 (NaN first, ties to the lower index).
///
/// # Errors
/// As [`pairwise_top_k`] (k = 1 is always valid).
pub fn pairwise_argmax<T: Element>(
    plan: &PairPlan,
    a: &[T],
    b: &[T],
) -> Result<TopK<Vec<T>, Vec<u32>>> {
    let sets = prepare(plan, a, b)?;
    check_indices(plan)?;
    let shape = plan.row_shape();
    let len = out_len::<T>(&shape)?;
    let (mut values, mut indices) = (vec![T::default(); len], vec![0u32; len]);
    select::top_k(
        &Ctx::new(plan, sets.a, sets.b),
        1,
        &mut values,
        &mut indices,
    );
    Ok(TopK {
        values,
        indices,
        shape,
    })
}

/// The mean of each row of the matrix, shape [`PairPlan::row_shape`]: how similar each
/// vector of `a` is to `b` on average. Computed without the matrix, in O((N + M)·D), by
/// `mean_j ⟨â_i, b̂_j⟩ = ⟨â_i, mean_j b̂_j⟩` (`v̂ = v · inv_norm(v)`), the result clamped to
/// [−1, 1] (NaN kept). It can differ from the mean of [`pairwise_similarity`]'s entries by
/// rounding (about 1e-6 in f32), and the entries are not clamped one by one inside the mean
/// (nor is a 0 dot product special): only the mean is.
///
/// # Errors
/// As [`pairwise_similarity`].
pub fn pairwise_row_mean<T: Element>(
    plan: &PairPlan,
    a: &[T],
    b: &[T],
) -> Result<Similarity<Vec<T>>> {
    let sets = prepare(plan, a, b)?;
    let shape = plan.row_shape();
    let mut values = vec![T::default(); out_len::<T>(&shape)?];
    let ctx = Ctx::new(plan, sets.a, sets.b);
    let mean_b = mean_vectors(&ctx.b, &ctx, Side::B);
    let (n, d) = (ctx.n, ctx.d);
    values
        .par_chunks_mut(n)
        .enumerate()
        .for_each(|(batch, out)| {
            let mb = &mean_b[ctx.b.own(batch) * d..][..d];
            let mut y = vec![T::Acc::ZERO; n];
            norms::matvec(&ctx.a, ctx.a.own(batch), mb, &mut y);
            for ((o, &y), &ia) in out.iter_mut().zip(&y).zip(ctx.inv_a(batch)) {
                *o = T::from_acc(crate::cosine::clamp_unit(y * ia));
            }
        });
    Ok(Similarity { values, shape })
}

/// The mean of all entries of each matrix, shape [`PairPlan::batch_shape`] (`[B]`, or `[]`
/// for one number): "how similar are these two sets on average". Computed in O((N + M)·D)
/// by `mean_ij ⟨â_i, b̂_j⟩ = ⟨mean_i â_i, mean_j b̂_j⟩`, the result clamped to [−1, 1]; as
/// for [`pairwise_row_mean`], it can differ from the brute-force mean by rounding and no
/// per-entry clamping happens inside it.
///
/// # Errors
/// As [`pairwise_similarity`].
pub fn pairwise_mean<T: Element>(plan: &PairPlan, a: &[T], b: &[T]) -> Result<Similarity<Vec<T>>> {
    let sets = prepare(plan, a, b)?;
    let shape = plan.batch_shape();
    out_len::<T>(&shape)?;
    let ctx = Ctx::new(plan, sets.a, sets.b);
    let (mean_a, mean_b) = rayon::join(
        || mean_vectors(&ctx.a, &ctx, Side::A),
        || mean_vectors(&ctx.b, &ctx, Side::B),
    );
    let d = ctx.d;
    let values = (0..ctx.batch)
        .map(|batch| {
            let ma = &mean_a[ctx.a.own(batch) * d..][..d];
            let mb = &mean_b[ctx.b.own(batch) * d..][..d];
            let dot = ma
                .iter()
                .zip(mb)
                .fold(T::Acc::ZERO, |s, (&x, &y)| s + x * y);
            T::from_acc(crate::cosine::clamp_unit(dot))
        })
        .collect();
    Ok(Similarity { values, shape })
}

/// `mean_i v̂_i` of every own batch of a set, `[own_batches, d]`.
fn mean_vectors<T: Element>(set: &Set<'_, T>, ctx: &Ctx<'_, T>, side: Side) -> Vec<T::Acc> {
    let d = set.d;
    let mut out = vec![T::Acc::ZERO; set.own_batches * d];
    let scale = T::Acc::from_f64(1.0 / set.count as f64);
    for (own, z) in out.chunks_mut(d.max(1)).enumerate().take(set.own_batches) {
        // A batch that uses this own batch; its inverse norms are the own batch's.
        let inv = match side {
            Side::A => ctx.inv_a(own),
            Side::B => ctx.inv_b(own),
        };
        norms::weighted_sum(set, own, inv, z);
        for z in z.iter_mut() {
            *z = *z * scale;
        }
    }
    out
}

/// Greedy best-match scores of two sets, as BERTScore computes them, one per batch (shape
/// [`PairPlan::batch_shape`]: `[B]`, or `[]` for one number), with `a` the candidate and `b`
/// the reference:
/// - **precision**: how well `a` is covered by `b` — the mean over the vectors of `a` of
///   their best similarity to any vector of `b` (the mean of the matrix's row maxima);
/// - **recall**: how well `b` is covered by `a` — the same over the vectors of `b` (the mean
///   of the column maxima);
/// - **f1**: `2PR / (P + R)` ([`f1`](crate::pairwise::f1)), the one number for "how similar
///   are these two sets", symmetric in `a` and `b`.
///
/// With weights (one per vector of each set, [`PairPlan::a_vectors`] and
/// [`PairPlan::b_vectors`] long; e.g. BERTScore's idf weights), the means are weighted:
/// `P = Σ_i w_a[i] · rowmax_i / Σ_i w_a[i]`, likewise R with `w_b` (weights summing to 0
/// give NaN). A shared set's weights apply in every batch. The maxima follow
/// [`outranks`](crate::pairwise::outranks) (a NaN entry makes its row's and column's maximum
/// NaN); they are taken over the accumulator values, and the means (O(N + M)) are summed in
/// f64. The matrix is never stored.
///
/// For the plain mean similarity of all pairs, see [`pairwise_mean`], which is O((N+M)·D).
///
/// # Errors
/// As [`pairwise_similarity`], and [`Error::OutLenMismatch`] if a weights slice has the
/// wrong length.
///
/// ```
/// use cosim::cpu;
/// use cosim::pairwise::{Layout, PairPlan};
/// // The seed's question: two texts embedded as (sentences, tokens, dim) = (200, 52, 784)
/// // token embeddings; how similar are the two texts? Every token of one text is a vector
/// // of its set ([200 · 52, 784], the same row-major buffer), and one call answers it.
/// // (Here 2 sentences, so that the example runs quickly; the call is the same.)
/// let (sentences, tokens, dim) = (2, 52, 784);
/// let len = sentences * tokens * dim;
/// let x: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
/// let y: Vec<f32> = (0..len).map(|i| ((i * 104729) % 997) as f32 / 498.5 - 1.0).collect();
/// let set = [sentences * tokens, dim];
/// let plan = PairPlan::new(&set, Layout::Rows, &set, Layout::Rows)?;
/// let s = cpu::set_similarity(&plan, &x, &y, None, None)?;
/// assert_eq!(s.shape, Vec::<usize>::new()); // one number each: precision, recall, f1
/// let f1 = s.f1[0];
/// assert!(-1.0 <= f1 && f1 <= 1.0);
/// // Identical sets match perfectly: every token finds itself.
/// let same = cpu::set_similarity(&plan, &x, &x, None, None)?;
/// assert!((same.f1[0] - 1.0).abs() < 1e-6);
/// // The other one-number answer, the mean similarity of all pairs, in O((N+M)·D):
/// let mean = cpu::pairwise_mean(&plan, &x, &y)?.values[0];
/// assert!(mean <= f1);
/// // Per sentence pair instead ([200] scores): give both sets their batch dim,
/// // PairPlan::new(&[sentences, tokens, dim], Layout::Rows, &[sentences, tokens, dim], Layout::Rows).
/// # Ok::<(), cosim::Error>(())
/// ```
pub fn set_similarity<T: Element>(
    plan: &PairPlan,
    a: &[T],
    b: &[T],
    a_weights: Option<&[T]>,
    b_weights: Option<&[T]>,
) -> Result<SetScores<Vec<T>>> {
    let sets = prepare(plan, a, b)?;
    plan.check_weights(a_weights.map(<[T]>::len), b_weights.map(<[T]>::len))?;
    let shape = plan.batch_shape();
    out_len::<T>(&shape)?;
    // The row and column maxima of every matrix are held: [B, N] and [B, M].
    out_len::<T::Acc>(&[plan.batch, plan.n])?;
    out_len::<T::Acc>(&[plan.batch, plan.m])?;
    let ctx = Ctx::new(plan, sets.a, sets.b);
    let (rows_max, cols_max) = select::maxima(&ctx);
    let (n, m) = (ctx.n, ctx.m);
    let mut scores = SetScores {
        precision: Vec::with_capacity(ctx.batch),
        recall: Vec::with_capacity(ctx.batch),
        f1: Vec::with_capacity(ctx.batch),
        shape,
    };
    for batch in 0..ctx.batch {
        let p = weighted_mean(
            &rows_max[batch * n..][..n],
            a_weights.map(|w| &w[ctx.a.own(batch) * n..][..n]),
        );
        let r = weighted_mean(
            &cols_max[batch * m..][..m],
            b_weights.map(|w| &w[ctx.b.own(batch) * m..][..m]),
        );
        scores.precision.push(T::from_f64(p));
        scores.recall.push(T::from_f64(r));
        scores.f1.push(T::from_f64(f1(p, r)));
    }
    Ok(scores)
}

/// `Σ w_i x_i / Σ w_i` (the plain mean without weights), summed in f64.
fn weighted_mean<A: Accum, T: Element>(x: &[A], w: Option<&[T]>) -> f64 {
    match w {
        None => x.iter().map(|v| v.to_f64()).sum::<f64>() / x.len() as f64,
        Some(w) => {
            let (s, ws) = x.iter().zip(w).fold((0.0, 0.0), |(s, ws), (v, w)| {
                let w = w.to_f64();
                (s + w * v.to_f64(), ws + w)
            });
            s / ws
        }
    }
}

/// Gradients of [`pairwise_similarity`]: given `grad`, the upstream gradient of the matrix
/// (`[B?, N, M]`), returns the gradients of `a` and `b`, shaped and laid out like them:
/// `dA_i = ia_i · (g_i − ⟨â_i, g_i⟩ · â_i)` with `g_i = Σ_j G_ij · ib_j · b_j` and the
/// symmetric form for B. A norm clamped to eps is a constant; a zero vector with eps = 0 gets
/// 0 (its row of the matrix is 0); NaN in gives NaN out; a set shared by every batch gets the
/// sum over the batches. No normalised copies and no copy of `grad`; extra memory: the
/// inverse norms, a 4 MiB tile of `grad` per thread, and for a set in columns or of f16/bf16
/// one accumulator-typed buffer the size of its gradient. Exact in the accumulator type ([`crate::pairwise::Precision`] is
/// ignored, as in the forward); two GEMM-shaped passes through `matrixmultiply`, as the
/// forward (src/cpu/pairwise/backward.rs).
///
/// # Errors
/// As [`pairwise_similarity`], and [`Error::OutLenMismatch`] if `grad` is not shaped like the
/// matrix.
pub fn pairwise_similarity_backward<T: Element>(
    plan: &PairPlan,
    a: &[T],
    b: &[T],
    grad: &[T],
) -> Result<(Vec<T>, Vec<T>)> {
    let sets = prepare(plan, a, b)?;
    plan.check_out("grad", grad.len(), &plan.matrix_shape())?;
    let ga = backward::gradient(plan, &sets.a, &sets.b, grad, backward::Of::A);
    let gb = backward::gradient(plan, &sets.a, &sets.b, grad, backward::Of::B);
    Ok((ga, gb))
}
