//! `cosim pairwise` on sets too large for the GPU: the sets are cut into chunks of whole
//! vectors (set A's chunks are blocks of rows of the matrix, set B's blocks of columns), a
//! runner computes every chunk pair, and the per-pair results are merged on the host.
//!
//! Every chunk pair is a plain (unbatched) [`PairPlan`] on the chunk's own buffer; a batched
//! job is run batch by batch. A chunk of a rows-layout set (`[N, D]`) is a contiguous slice
//! of the input; a chunk of a cols-layout set (`[D, N]`) is not, so its columns are gathered
//! into a contiguous `[D, n_c]` buffer.
//!
//! The pairs are listed batch by batch, A's chunks outside, B's inside, and a runner
//! ([`Backend::run_pairs`]) hands their results back in that order: [`serial`] one pair after
//! another through the backend's whole-set calls (the CPU), or the GPU's pipeline
//! (`crate::pipeline`), which stages and uploads the next pair's chunks while the current
//! pair computes.
//!
//! The merges:
//! - matrix: each chunk of A's row block `[rows, M]` is assembled on the host from its
//!   pieces and handed on (to the streamed `.npy`);
//! - top-k and argmax: the top `min(k, m_c)` of every chunk of B (indices offset by the
//!   chunk's start) are merged per row by [`cosim::shard::merge_sorted`], in [`outranks`] order (values compared as the
//!   library's `T` widened to f64, equal values to the lower global index): exactly the
//!   whole result in f32; in f16 and bf16 the same values, but a whole run ranks its f32
//!   sums, so indices of values equal once rounded may come in another order (or, at the
//!   k-th place, be another column of that value);
//! - row mean: `Σ_c m_c · rowmean_c / M`, mean: `Σ n_a · m_b · mean / (N · M)` (in f64):
//!   the per-chunk means combined, equal to the whole result up to rounding;
//! - greedy: row maxima from `pairwise_argmax` on every chunk pair, column maxima from
//!   `pairwise_argmax` on the swapped pair (B's chunk against A's), the maxima taken across
//!   chunks, then the weighted means in f64 as the CPU backend forms them. The maxima are of
//!   the results in `T` (the library's CPU backend takes them in its accumulator type, the
//!   same for f32 and f64, wider for f16 and bf16).

mod pairs;
#[cfg(feature = "cuda")]
pub mod pipeline;

use pairs::expect_len;
pub use pairs::{serial, Done, PairOp, PairWork};

use crate::dtype::Compute;
use crate::error::{CliError, Result};
use crate::pairwise::Backend;
use cosim::pairwise::{f1, outranks, PairPlan, SetScores, TopK};
use cosim::shard::merge_sorted;
use cosim::Element;
use pairs::{PairJob, PairOut, Sets};
use std::ops::Range;

/// Vectors per chunk of each set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunks {
    /// Vectors of A (rows of the matrix) per chunk.
    pub a: usize,
    /// Vectors of B (columns of the matrix) per chunk.
    pub b: usize,
}

impl Chunks {
    /// Chunks of whole vectors of at most `bytes` each (at least one vector), with
    /// `elem_bytes` per value; `None` when each set fits in one chunk (then the job runs
    /// whole). `rows_cap` further limits A's chunks (the matrix mode's `--budget`, so that
    /// an assembled row block stays within it). A set's chunks are the fewest the limit
    /// allows, each as small as that count allows (100 vectors at most 99 per chunk: 50 and
    /// 50, not 99 and 1), so that a runner's fixed-size buffers are nearly full on every pair.
    pub fn plan(
        plan: &PairPlan,
        bytes: usize,
        elem_bytes: usize,
        rows_cap: Option<usize>,
    ) -> Option<Chunks> {
        let vec_bytes = plan.d.saturating_mul(elem_bytes).max(1);
        let per = (bytes / vec_bytes).max(1);
        if per >= plan.n && per >= plan.m {
            return None;
        }
        let cap = rows_cap.unwrap_or(usize::MAX).max(1);
        Some(Chunks {
            a: even(plan.n, per.min(cap)),
            b: even(plan.m, per),
        })
    }
}

/// The size of the fewest chunks of at most `per` (≥ 1) that cover `total`, made even.
fn even(total: usize, per: usize) -> usize {
    let per = per.max(1);
    let count = total.div_ceil(per).max(1);
    total.div_ceil(count).max(1)
}

/// The consecutive ranges of at most `per` (≥ 1) of `0..total`.
fn ranges(total: usize, per: usize) -> impl Iterator<Item = Range<usize>> {
    let per = per.max(1);
    (0..total)
        .step_by(per)
        .map(move |s| s..(s + per).min(total))
}

/// A job run chunk pair by chunk pair on a backend.
pub struct Chunked<'a, T> {
    plan: &'a PairPlan,
    sets: Sets<'a, T>,
    chunks: Chunks,
    backend: &'a dyn Backend<T>,
    /// Called after each chunk pair with (pairs done, pairs in all).
    on_pair: &'a dyn Fn(usize, usize),
}

impl<'a, T: Compute> Chunked<'a, T> {
    /// The job of `plan` on the whole sets `a` and `b`, in `chunks`.
    ///
    /// # Errors
    /// A library refusal if the buffers do not hold what the plan's shapes promise.
    pub fn new(
        plan: &'a PairPlan,
        a: &'a [T],
        b: &'a [T],
        chunks: Chunks,
        backend: &'a dyn Backend<T>,
        on_pair: &'a dyn Fn(usize, usize),
    ) -> cosim::Result<Chunked<'a, T>> {
        plan.check_inputs(a.len(), b.len())?;
        Ok(Chunked {
            plan,
            sets: Sets::new(plan, a, b),
            chunks,
            backend,
            on_pair,
        })
    }

    /// Every chunk pair: batch by batch, A's chunks outside, B's inside.
    fn jobs(&self) -> Vec<PairJob> {
        let mut jobs = Vec::new();
        for batch in 0..self.plan.batch {
            for a in ranges(self.plan.n, self.chunks.a) {
                for b in ranges(self.plan.m, self.chunks.b) {
                    jobs.push(PairJob {
                        batch,
                        a: a.clone(),
                        b,
                    });
                }
            }
        }
        jobs
    }

    /// Runs `op` on every chunk pair through the backend's runner, handing each pair's
    /// results to `merge` with its job, and checks that they come back in order, each pair
    /// whole, and all of them.
    fn run(
        &self,
        op: PairOp,
        merge: &mut dyn FnMut(&PairJob, PairOut<'_, T>) -> Result<()>,
    ) -> Result<()> {
        let jobs = self.jobs();
        let mut order = InOrder::new(jobs.len());
        let work = PairWork {
            sets: &self.sets,
            op,
            chunks: self.chunks,
            jobs: &jobs,
        };
        self.backend.run_pairs(&work, &mut |i, out| {
            let job = order.check(i, &jobs)?;
            merge(job, out)?;
            if out.last {
                (self.on_pair)(order.finish_pair(), jobs.len());
            }
            Ok(())
        })?;
        order.all_done()
    }

    /// The matrix: for every batch and every chunk of A, its row block `[rows, M]`
    /// assembled from the pieces of every chunk of B, handed to `f` in order.
    ///
    /// # Errors
    /// Library and device failures, and whatever `f` returns.
    pub fn matrix(&self, budget: usize, f: &mut dyn FnMut(&[T]) -> Result<()>) -> Result<()> {
        let m = self.plan.m;
        let mut block = Vec::new();
        self.run(PairOp::Matrix { budget }, &mut |job, out| {
            if job.b.start == 0 && out.row == 0 {
                block.clear();
                block.resize(job.a.len() * m, T::round_f64(0.0));
            }
            let width = job.b.len();
            if out.values.len() % width.max(1) != 0 {
                return Err(CliError::runtime(
                    "internal: a matrix piece is not whole rows",
                ));
            }
            for (r, piece) in out.values.chunks(width.max(1)).enumerate() {
                let at = (out.row + r) * m + job.b.start;
                block
                    .get_mut(at..at + width)
                    .ok_or_else(|| {
                        CliError::runtime("internal: a matrix piece falls outside its block")
                    })?
                    .copy_from_slice(piece);
            }
            if out.last && job.b.end == m {
                f(&block)?;
            }
            Ok(())
        })
    }

    /// The top `k` of every row (`Some(k)`, shape `[B?, N, k]`), or each row's argmax
    /// (`None`, shape `[B?, N]`), merged across the chunks of B in [`outranks`] order.
    ///
    /// # Errors
    /// Library and device failures; an index past `u32` (refused by the library first).
    pub fn best(&self, k: Option<usize>) -> Result<TopK<Vec<T>, Vec<u32>>> {
        let plan = self.plan;
        let (shape, kk, op) = match k {
            Some(k) => (plan.top_k_shape(k), k, PairOp::TopK(k)),
            None => (plan.row_shape(), 1, PairOp::Argmax),
        };
        let len = plan.batch * plan.n * kk;
        let mut values = Vec::with_capacity(len);
        let mut indices = Vec::with_capacity(len);
        let mut merged = Vec::with_capacity(kk);
        // The best so far of every row of the current chunk of A, sorted, global indices.
        let mut best: Vec<Vec<(T, u32)>> = Vec::new();
        self.run(op, &mut |job, out| {
            if job.b.start == 0 {
                best.clear();
                best.resize_with(job.a.len(), || Vec::with_capacity(kk));
            }
            let kc = kk.min(job.b.len());
            let offset = job.b.start;
            if u32::try_from(offset).is_err() {
                return Err(CliError::runtime("a column index does not fit in 32 bits"));
            }
            if out.values.len() != job.a.len() * kc || out.indices.len() != out.values.len() {
                return Err(CliError::runtime(
                    "internal: a chunk pair's top list has the wrong length",
                ));
            }
            for (row, (v, i)) in best
                .iter_mut()
                .zip(out.values.chunks(kc).zip(out.indices.chunks(kc)))
            {
                merge_sorted(row, v, i, offset, kk, &mut merged);
            }
            if job.b.end == plan.m {
                for (v, i) in best.iter().flatten() {
                    values.push(*v);
                    indices.push(*i);
                }
            }
            Ok(())
        })?;
        if values.len() != len {
            return Err(CliError::runtime(
                "internal: the merged top-k has the wrong length",
            ));
        }
        Ok(TopK {
            values,
            indices,
            shape,
        })
    }

    /// Each row's mean, `[B?, N]`: `Σ_c m_c · rowmean_c / M` over the chunks of B, in f64.
    ///
    /// # Errors
    /// Library and device failures.
    pub fn row_mean(&self) -> Result<Vec<T>> {
        let plan = self.plan;
        let mut out = Vec::with_capacity(plan.batch * plan.n);
        let mut acc = Vec::new();
        self.run(PairOp::RowMean, &mut |job, r| {
            if job.b.start == 0 {
                acc.clear();
                acc.resize(job.a.len(), 0f64);
            }
            expect_len(r.values.len(), job.a.len(), "row means")?;
            let w = job.b.len() as f64;
            for (s, v) in acc.iter_mut().zip(r.values) {
                *s += w * v.to_f64();
            }
            if job.b.end == plan.m {
                let m = plan.m as f64;
                out.extend(acc.iter().map(|&s| T::round_f64(s / m)));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The mean of every matrix, `[B?]`: `Σ n_a · m_b · mean / (N · M)` over the chunk
    /// pairs, in f64.
    ///
    /// # Errors
    /// Library and device failures.
    pub fn mean(&self) -> Result<Vec<T>> {
        let plan = self.plan;
        let mut out = Vec::with_capacity(plan.batch);
        let mut acc = 0f64;
        self.run(PairOp::Mean, &mut |job, r| {
            if job.a.start == 0 && job.b.start == 0 {
                acc = 0.0;
            }
            expect_len(r.values.len(), 1, "mean")?;
            let w = (job.a.len() * job.b.len()) as f64;
            acc += r.values.iter().map(|v| w * v.to_f64()).sum::<f64>();
            if job.a.end == plan.n && job.b.end == plan.m {
                out.push(T::round_f64(acc / (plan.n as f64 * plan.m as f64)));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Greedy matching: the row maxima and column maxima of every chunk pair, taken across
    /// chunks, then precision, recall and f1 per batch as [`cosim::cpu::set_similarity`]
    /// forms them. The weights, when given, hold one value per vector of their set (all
    /// batches of it).
    ///
    /// # Errors
    /// Library and device failures.
    pub fn greedy(&self, wa: Option<&[T]>, wb: Option<&[T]>) -> Result<SetScores<Vec<T>>> {
        let plan = self.plan;
        let (n, m) = (plan.n, plan.m);
        plan.check_weights(wa.map(<[T]>::len), wb.map(<[T]>::len))?;
        let mut s = SetScores {
            precision: Vec::with_capacity(plan.batch),
            recall: Vec::with_capacity(plan.batch),
            f1: Vec::with_capacity(plan.batch),
            shape: plan.batch_shape(),
        };
        let mut rows = vec![f64::NEG_INFINITY; n];
        let mut cols = vec![f64::NEG_INFINITY; m];
        self.run(PairOp::Greedy, &mut |job, r| {
            if job.a.start == 0 && job.b.start == 0 {
                rows.fill(f64::NEG_INFINITY);
                cols.fill(f64::NEG_INFINITY);
            }
            expect_len(r.values.len(), job.a.len(), "row maxima")?;
            expect_len(r.cols.len(), job.b.len(), "column maxima")?;
            max_into(&mut rows[job.a.clone()], r.values);
            max_into(&mut cols[job.b.clone()], r.cols);
            if job.a.end == n && job.b.end == m {
                let own = |stride: usize, count: usize| {
                    if stride == 0 {
                        0
                    } else {
                        job.batch * count
                    }
                };
                let p = weighted_mean(&rows, wa.map(|w| &w[own(plan.a.batch, n)..][..n]));
                let r = weighted_mean(&cols, wb.map(|w| &w[own(plan.b.batch, m)..][..m]));
                s.precision.push(<T as Element>::from_f64(p));
                s.recall.push(<T as Element>::from_f64(r));
                s.f1.push(<T as Element>::from_f64(f1(p, r)));
            }
            Ok(())
        })?;
        Ok(s)
    }
}

/// Checks that a runner hands results back as its contract says: pair by pair in order,
/// each pair whole (its pieces in a row), and every pair.
#[derive(Debug)]
struct InOrder {
    next: usize,
    total: usize,
}

impl InOrder {
    fn new(total: usize) -> InOrder {
        InOrder { next: 0, total }
    }

    /// The job of pair `i`, or an internal error unless `i` is the pair due.
    fn check<'j>(&self, i: usize, jobs: &'j [PairJob]) -> Result<&'j PairJob> {
        jobs.get(i).filter(|_| i == self.next).ok_or_else(|| {
            CliError::runtime(format!(
                "internal: chunk pair {i}'s results came back when pair {} was due",
                self.next
            ))
        })
    }

    /// Marks the pair due as whole; returns the pairs done.
    fn finish_pair(&mut self) -> usize {
        self.next += 1;
        self.next
    }

    /// An internal error unless every pair came back.
    fn all_done(&self) -> Result<()> {
        if self.next == self.total {
            Ok(())
        } else {
            Err(CliError::runtime(format!(
                "internal: {} of {} chunk pairs came back",
                self.next, self.total
            )))
        }
    }
}

/// Replaces each maximum in `max` by the matching value of `values` when that one ranks
/// higher ([`outranks`]: larger, or NaN).
fn max_into<T: Element>(max: &mut [f64], values: &[T]) {
    for (m, v) in max.iter_mut().zip(values) {
        let v = v.to_f64();
        if outranks(v, 0, *m, 1) {
            *m = v;
        }
    }
}

/// `Σ w_i x_i / Σ w_i` (the plain mean without weights), summed in f64, as the library's
/// CPU backend does.
fn weighted_mean<T: Element>(x: &[f64], w: Option<&[T]>) -> f64 {
    match w {
        None => x.iter().sum::<f64>() / x.len() as f64,
        Some(w) => {
            let (s, ws) = x.iter().zip(w).fold((0.0, 0.0), |(s, ws), (&v, w)| {
                let w = w.to_f64();
                (s + w * v, ws + w)
            });
            s / ws
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cosim::pairwise::Layout;

    #[test]
    fn results_must_come_back_in_order_and_all() {
        let job = |batch| PairJob {
            batch,
            a: 0..1,
            b: 0..1,
        };
        let jobs = [job(0), job(1), job(2)];
        let mut o = InOrder::new(3);
        assert!(o.check(1, &jobs).is_err());
        assert_eq!(o.check(0, &jobs).unwrap(), &jobs[0]);
        // A matrix pair in pieces: the same pair again until its last piece.
        assert!(o.check(0, &jobs).is_ok());
        assert_eq!(o.finish_pair(), 1);
        assert!(o.check(0, &jobs).is_err());
        assert!(o.check(2, &jobs).is_err());
        assert!(o.check(1, &jobs).is_ok());
        o.finish_pair();
        assert!(o.all_done().is_err());
        assert!(o.check(3, &jobs).is_err());
        o.check(2, &jobs).unwrap();
        o.finish_pair();
        o.all_done().unwrap();
        assert!(o.check(3, &jobs).is_err());
    }

    #[test]
    fn ranges_cover_with_a_short_last() {
        let r: Vec<_> = ranges(7, 3).collect();
        assert_eq!(r, vec![0..3, 3..6, 6..7]);
        assert_eq!(ranges(2, 5).collect::<Vec<_>>(), vec![0..2]);
    }

    #[test]
    fn chunks_hold_whole_vectors_evenly() {
        let p = PairPlan::new(&[5, 4], Layout::Rows, &[4, 7], Layout::Cols).unwrap();
        // 2 vectors of 16 bytes fit: 5 -> 2, 2, 1 (already even); 7 -> 4 chunks of 2.
        assert_eq!(Chunks::plan(&p, 32, 4, None), Some(Chunks { a: 2, b: 2 }));
        // 3 fit: 5 -> 3, 2; 7 -> 3 chunks of 3 (3, 3, 1).
        assert_eq!(Chunks::plan(&p, 48, 4, None), Some(Chunks { a: 3, b: 3 }));
        // 4 fit: 5 -> 2 chunks of 3; 7 -> 2 chunks of 4.
        assert_eq!(Chunks::plan(&p, 64, 4, None), Some(Chunks { a: 3, b: 4 }));
        assert_eq!(Chunks::plan(&p, 1, 4, None), Some(Chunks { a: 1, b: 1 }));
        assert_eq!(Chunks::plan(&p, 1 << 20, 4, None), None);
        assert_eq!(Chunks::plan(&p, 1 << 20, 4, Some(2)), None);
        assert_eq!(
            Chunks::plan(&p, 16 * 5, 4, Some(2)),
            Some(Chunks { a: 2, b: 4 })
        );
    }

    #[test]
    fn even_chunks_are_the_fewest_and_within_the_limit() {
        for total in 1..60 {
            for per in 1..20 {
                let e = even(total, per);
                let count = total.div_ceil(per);
                assert!(e <= per && e >= 1, "{total} {per} {e}");
                assert_eq!(total.div_ceil(e), count, "{total} {per} {e}");
            }
        }
        assert_eq!(even(7, 3), 3);
        assert_eq!(even(10, 4), 4);
        assert_eq!(even(9, 4), 3);
        assert_eq!(even(100, 99), 50);
    }
}
