//! `cosim pairwise` on sets too large for the GPU: the sets are cut into chunks of whole
//! vectors (set A's chunks are blocks of rows of the matrix, set B's blocks of columns), the
//! library runs on every chunk pair, one pair after another, and the per-pair results are
//! merged on the host.
//!
//! Every chunk pair is a plain (unbatched) [`PairPlan`] built on the chunk's own buffer; a
//! batched job is run batch by batch. A chunk of a rows-layout set (`[N, D]`) is a contiguous
//! slice of the input and is used in place; a chunk of a cols-layout set (`[D, N]`) is not
//! contiguous, so its columns are copied into a contiguous `[D, n_c]` host buffer first.
//!
//! The merges:
//! - matrix: each chunk of A's row block `[rows, M]` is assembled on the host from its
//!   pieces and appended to the streamed `.npy`;
//! - top-k and argmax: the top `min(k, m_c)` of every chunk of B (indices offset by the
//!   chunk's start) are merged per row in [`outranks`] order (values compared as the
//!   library's `T` widened to f64, equal values to the lower global index): exactly the
//!   whole result;
//! - row mean: `Σ_c m_c · rowmean_c / M`, mean: `Σ n_a · m_b · mean / (N · M)` (in f64):
//!   the per-chunk means combined, equal to the whole result up to rounding;
//! - greedy: row maxima from `pairwise_argmax` on every chunk pair, column maxima from
//!   `pairwise_argmax` on the swapped pair (B's chunk against A's), the maxima taken across
//!   chunks, then the weighted means in f64 as the CPU backend forms them. The maxima are of
//!   the results in `T` (the library's CPU backend takes them in its accumulator type, the
//!   same for f32 and f64, wider for f16 and bf16).
//!
//! Chunk pairs run one after another: host→device copies do not overlap compute yet.

use crate::dtype::Compute;
use crate::error::{CliError, Result};
use crate::pairwise::Backend;
use cosim::pairwise::{f1, outranks, Layout, PairPlan, SetScores, TopK};
use cosim::Element;
use std::borrow::Cow;
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
    /// an assembled row block stays within it).
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
        Some(Chunks {
            a: per.min(plan.n).min(rows_cap.unwrap_or(usize::MAX)).max(1),
            b: per.min(plan.m),
        })
    }
}

/// The consecutive ranges of at most `per` (≥ 1) of `0..total`.
fn ranges(total: usize, per: usize) -> impl Iterator<Item = Range<usize>> {
    let per = per.max(1);
    (0..total)
        .step_by(per)
        .map(move |s| s..(s + per).min(total))
}

/// One set, as the plan reads it.
struct SetView<'a, T> {
    data: &'a [T],
    layout: Layout,
    /// Vectors per batch.
    count: usize,
    d: usize,
    /// Elements between batches; 0 for a set shared by all batches.
    batch_stride: usize,
}

impl<'a, T: Copy> SetView<'a, T> {
    /// Vectors `r` of `batch`: a slice of the input for rows, a copy `[D, r.len()]` for
    /// columns; and the chunk's shape.
    fn chunk(&self, batch: usize, r: &Range<usize>) -> (Cow<'a, [T]>, Vec<usize>) {
        let off = batch * self.batch_stride;
        let d = self.d;
        match self.layout {
            Layout::Rows => (
                Cow::Borrowed(&self.data[off + r.start * d..off + r.end * d]),
                vec![r.len(), d],
            ),
            Layout::Cols => {
                let mut v = Vec::with_capacity(d * r.len());
                for k in 0..d {
                    let s = off + k * self.count;
                    v.extend_from_slice(&self.data[s + r.start..s + r.end]);
                }
                (Cow::Owned(v), vec![d, r.len()])
            }
        }
    }
}

/// One chunk pair, ready for a library call.
struct Pair<'a, T: Clone> {
    plan: PairPlan,
    a: Cow<'a, [T]>,
    b: Cow<'a, [T]>,
    /// The chunks' shapes, for the swapped plan (B's chunk as the rows: greedy's column
    /// maxima).
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
}

/// A job run chunk pair by chunk pair on a backend.
pub struct Chunked<'a, T> {
    plan: &'a PairPlan,
    a: SetView<'a, T>,
    b: SetView<'a, T>,
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
        let view = |data, layout, count, batch_stride| SetView {
            data,
            layout,
            count,
            d: plan.d,
            batch_stride,
        };
        Ok(Chunked {
            plan,
            a: view(a, plan.a_layout, plan.n, plan.a.batch),
            b: view(b, plan.b_layout, plan.m, plan.b.batch),
            chunks,
            backend,
            on_pair,
        })
    }

    /// Chunk pairs in all (over all batches).
    fn pairs(&self) -> usize {
        let a = self.plan.n.div_ceil(self.chunks.a);
        let b = self.plan.m.div_ceil(self.chunks.b);
        self.plan.batch * a * b
    }

    /// A's chunks of one batch.
    fn a_ranges(&self) -> impl Iterator<Item = Range<usize>> {
        ranges(self.plan.n, self.chunks.a)
    }

    /// B's chunks of one batch.
    fn b_ranges(&self) -> impl Iterator<Item = Range<usize>> {
        ranges(self.plan.m, self.chunks.b)
    }

    /// The chunk pair (vectors `ra` of A, `rb` of B) of `batch`, with its plan.
    fn pair(&self, batch: usize, ra: &Range<usize>, rb: &Range<usize>) -> Result<Pair<'a, T>> {
        let (a, a_shape) = self.a.chunk(batch, ra);
        let (b, b_shape) = self.b.chunk(batch, rb);
        let plan = self.chunk_plan(&a_shape, self.plan.a_layout, &b_shape, self.plan.b_layout)?;
        Ok(Pair {
            plan,
            a,
            b,
            a_shape,
            b_shape,
        })
    }

    /// A plan for two chunks with the job's eps and precision.
    fn chunk_plan(
        &self,
        a_shape: &[usize],
        la: Layout,
        b_shape: &[usize],
        lb: Layout,
    ) -> Result<PairPlan> {
        Ok(PairPlan::new(a_shape, la, b_shape, lb)?
            .eps(Some(self.plan.eps))?
            .precision(self.plan.precision))
    }

    /// The matrix: for every batch and every chunk of A, its row block `[rows, M]`
    /// assembled from the pieces of every chunk of B, handed to `f` in order.
    ///
    /// # Errors
    /// Library and device failures, and whatever `f` returns.
    pub fn matrix(&self, budget: usize, f: &mut dyn FnMut(&[T]) -> Result<()>) -> Result<()> {
        let (m, total) = (self.plan.m, self.pairs());
        let mut done = 0;
        for batch in 0..self.plan.batch {
            for ra in self.a_ranges() {
                let mut block = vec![T::round_f64(0.0); ra.len() * m];
                for rb in self.b_ranges() {
                    let p = self.pair(batch, &ra, &rb)?;
                    let width = rb.len();
                    self.backend
                        .matrix_blocks(&p.plan, &p.a, &p.b, budget, &mut |blk| {
                            for (r, piece) in blk.values.chunks(width.max(1)).enumerate() {
                                let at = (blk.row + r) * m + rb.start;
                                block[at..at + width].copy_from_slice(piece);
                            }
                            Ok(())
                        })?;
                    done += 1;
                    (self.on_pair)(done, total);
                }
                f(&block)?;
            }
        }
        Ok(())
    }

    /// The top `k` of every row (`Some(k)`, shape `[B?, N, k]`), or each row's argmax
    /// (`None`, shape `[B?, N]`), merged across the chunks of B in [`outranks`] order.
    ///
    /// # Errors
    /// Library and device failures; an index past `u32` (refused by the library first).
    pub fn best(&self, k: Option<usize>) -> Result<TopK<Vec<T>, Vec<u32>>> {
        let (plan, total) = (self.plan, self.pairs());
        let (shape, kk) = match k {
            Some(k) => (plan.top_k_shape(k), k),
            None => (plan.row_shape(), 1),
        };
        let len = plan.batch * plan.n * kk;
        let mut values = Vec::with_capacity(len);
        let mut indices = Vec::with_capacity(len);
        let mut done = 0;
        let mut merged = Vec::with_capacity(kk);
        for batch in 0..plan.batch {
            for ra in self.a_ranges() {
                // The best so far of every row of this chunk of A, sorted, global indices.
                let mut best: Vec<Vec<(T, u32)>> = vec![Vec::with_capacity(kk); ra.len()];
                for rb in self.b_ranges() {
                    let p = self.pair(batch, &ra, &rb)?;
                    let kc = kk.min(rb.len());
                    let t = match k {
                        Some(_) => self.backend.top_k(&p.plan, &p.a, &p.b, kc)?,
                        None => self.backend.argmax(&p.plan, &p.a, &p.b)?,
                    };
                    let offset = u32::try_from(rb.start)
                        .map_err(|_| CliError::runtime("a column index does not fit in 32 bits"))?;
                    for (row, (v, i)) in best
                        .iter_mut()
                        .zip(t.values.chunks(kc).zip(t.indices.chunks(kc)))
                    {
                        merge_sorted(row, v, i, offset, kk, &mut merged);
                    }
                    done += 1;
                    (self.on_pair)(done, total);
                }
                for row in best {
                    for (v, i) in row {
                        values.push(v);
                        indices.push(i);
                    }
                }
            }
        }
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
        let (plan, total) = (self.plan, self.pairs());
        let mut out = Vec::with_capacity(plan.batch * plan.n);
        let mut done = 0;
        for batch in 0..plan.batch {
            for ra in self.a_ranges() {
                let mut acc = vec![0f64; ra.len()];
                for rb in self.b_ranges() {
                    let p = self.pair(batch, &ra, &rb)?;
                    let v = self.backend.row_mean(&p.plan, &p.a, &p.b)?;
                    let w = rb.len() as f64;
                    for (s, v) in acc.iter_mut().zip(v) {
                        *s += w * v.to_f64();
                    }
                    done += 1;
                    (self.on_pair)(done, total);
                }
                let m = plan.m as f64;
                out.extend(acc.iter().map(|&s| T::round_f64(s / m)));
            }
        }
        Ok(out)
    }

    /// The mean of every matrix, `[B?]`: `Σ n_a · m_b · mean / (N · M)` over the chunk
    /// pairs, in f64.
    ///
    /// # Errors
    /// Library and device failures.
    pub fn mean(&self) -> Result<Vec<T>> {
        let (plan, total) = (self.plan, self.pairs());
        let mut out = Vec::with_capacity(plan.batch);
        let mut done = 0;
        for batch in 0..plan.batch {
            let mut acc = 0f64;
            for ra in self.a_ranges() {
                for rb in self.b_ranges() {
                    let p = self.pair(batch, &ra, &rb)?;
                    let v = self.backend.mean(&p.plan, &p.a, &p.b)?;
                    let w = (ra.len() * rb.len()) as f64;
                    acc += v.iter().map(|v| w * v.to_f64()).sum::<f64>();
                    done += 1;
                    (self.on_pair)(done, total);
                }
            }
            out.push(T::round_f64(acc / (plan.n as f64 * plan.m as f64)));
        }
        Ok(out)
    }

    /// Greedy matching: the row maxima (argmax of every chunk pair) and column maxima
    /// (argmax of every swapped chunk pair), taken across chunks, then precision, recall
    /// and f1 per batch as [`cosim::cpu::set_similarity`] forms them. The weights, when
    /// given, hold one value per vector of their set (all batches of it).
    ///
    /// # Errors
    /// Library and device failures.
    pub fn greedy(&self, wa: Option<&[T]>, wb: Option<&[T]>) -> Result<SetScores<Vec<T>>> {
        let (plan, total) = (self.plan, self.pairs());
        let (n, m) = (plan.n, plan.m);
        plan.check_weights(wa.map(<[T]>::len), wb.map(<[T]>::len))?;
        let mut s = SetScores {
            precision: Vec::with_capacity(plan.batch),
            recall: Vec::with_capacity(plan.batch),
            f1: Vec::with_capacity(plan.batch),
            shape: plan.batch_shape(),
        };
        let mut done = 0;
        for batch in 0..plan.batch {
            let mut rows = vec![f64::NEG_INFINITY; n];
            let mut cols = vec![f64::NEG_INFINITY; m];
            for ra in self.a_ranges() {
                for rb in self.b_ranges() {
                    let p = self.pair(batch, &ra, &rb)?;
                    let t = self.backend.argmax(&p.plan, &p.a, &p.b)?;
                    max_into(&mut rows[ra.clone()], &t.values);
                    let swapped =
                        self.chunk_plan(&p.b_shape, plan.b_layout, &p.a_shape, plan.a_layout)?;
                    let t = self.backend.argmax(&swapped, &p.b, &p.a)?;
                    max_into(&mut cols[rb.clone()], &t.values);
                    done += 1;
                    (self.on_pair)(done, total);
                }
            }
            let own = |stride: usize, count: usize| if stride == 0 { 0 } else { batch * count };
            let p = weighted_mean(&rows, wa.map(|w| &w[own(plan.a.batch, n)..][..n]));
            let r = weighted_mean(&cols, wb.map(|w| &w[own(plan.b.batch, m)..][..m]));
            s.precision.push(<T as Element>::from_f64(p));
            s.recall.push(<T as Element>::from_f64(r));
            s.f1.push(<T as Element>::from_f64(f1(p, r)));
        }
        Ok(s)
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

/// Merges a chunk's sorted top list (`values`, chunk-local `indices` + `offset`) into a
/// row's sorted best list, keeping the first `k` in [`outranks`] order; `scratch` is reused.
fn merge_sorted<T: Element>(
    row: &mut Vec<(T, u32)>,
    values: &[T],
    indices: &[u32],
    offset: u32,
    k: usize,
    scratch: &mut Vec<(T, u32)>,
) {
    scratch.clear();
    let mut new = values
        .iter()
        .zip(indices)
        .map(|(&v, &i)| (v, i.saturating_add(offset)))
        .peekable();
    let mut old = row.iter().copied().peekable();
    while scratch.len() < k {
        let next = match (old.peek(), new.peek()) {
            (Some(&(v, i)), Some(&(w, j))) => {
                if outranks(v.to_f64(), i as usize, w.to_f64(), j as usize) {
                    old.next()
                } else {
                    new.next()
                }
            }
            (Some(_), None) => old.next(),
            (None, _) => new.next(),
        };
        match next {
            Some(e) => scratch.push(e),
            None => break,
        }
    }
    std::mem::swap(row, scratch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_with_a_short_last() {
        let r: Vec<_> = ranges(7, 3).collect();
        assert_eq!(r, vec![0..3, 3..6, 6..7]);
        assert_eq!(ranges(2, 5).collect::<Vec<_>>(), vec![0..2]);
    }

    #[test]
    fn merge_keeps_the_order_and_the_lower_index_on_ties() {
        let mut row = vec![(0.5f32, 1u32), (0.25, 0)];
        let mut scratch = Vec::new();
        merge_sorted(&mut row, &[0.5, 0.3], &[0, 1], 4, 3, &mut scratch);
        assert_eq!(row, vec![(0.5, 1), (0.5, 4), (0.3, 5)]);
        merge_sorted(&mut row, &[f32::NAN], &[0], 9, 2, &mut scratch);
        assert!(row[0].0.is_nan() && row[0].1 == 9 && row[1] == (0.5, 1));
    }

    #[test]
    fn chunks_hold_whole_vectors() {
        let p = PairPlan::new(&[5, 4], Layout::Rows, &[4, 7], Layout::Cols).unwrap();
        assert_eq!(Chunks::plan(&p, 32, 4, None), Some(Chunks { a: 2, b: 2 }));
        assert_eq!(Chunks::plan(&p, 1, 4, None), Some(Chunks { a: 1, b: 1 }));
        assert_eq!(Chunks::plan(&p, 1 << 20, 4, None), None);
        assert_eq!(Chunks::plan(&p, 1 << 20, 4, Some(2)), None);
        assert_eq!(
            Chunks::plan(&p, 16 * 5, 4, Some(2)),
            Some(Chunks { a: 2, b: 5 })
        );
    }

    #[test]
    fn a_cols_chunk_is_copied_contiguous() {
        // [D=2, N=3] columns: vector j is (x[j], x[3 + j]).
        let x = [0, 1, 2, 10, 11, 12];
        let v = SetView {
            data: &x[..],
            layout: Layout::Cols,
            count: 3,
            d: 2,
            batch_stride: 0,
        };
        let (c, shape) = v.chunk(0, &(1..3));
        assert_eq!((&*c, shape), (&[1, 2, 11, 12][..], vec![2, 2]));
    }
}
