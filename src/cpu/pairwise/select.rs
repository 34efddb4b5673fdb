//! Reductions of the matrix that never store it: per-row top-k (argmax is k = 1) and the row
//! and column maxima of greedy matching. Each task computes tiles of its rows
//! ([`Ctx::visit_rows`]) and folds them into per-row state as they come.

use super::matrix::{Ctx, Scratch, TILE_BYTES};
use crate::cpu::sums::simd_dispatch;
use crate::element::{Accum, Element};
use crate::pairwise::outranks;
use rayon::prelude::*;
use std::cmp::Ordering;
use std::sync::Mutex;

/// Does `v` rank above `w` when `v`'s column comes after `w`'s? Only if it is larger, or NaN
/// over a number ([`outranks`] with the index tie-break already decided).
#[inline(always)]
pub fn beats<A: Accum>(v: A, w: A) -> bool {
    v > w || (is_nan(v) && !is_nan(w))
}

/// NaN test for any accumulator type.
#[inline(always)]
#[allow(clippy::eq_op)] // x != x is the generic NaN test
fn is_nan<A: Accum>(v: A) -> bool {
    v != v
}

/// [`outranks`] as an ordering of (value, column) pairs: the best first.
fn order<A: Accum>(x: &(A, u32), y: &(A, u32)) -> Ordering {
    let (xv, xi, yv, yi) = (x.0.to_f64(), x.1 as usize, y.0.to_f64(), y.1 as usize);
    if outranks(xv, xi, yv, yi) {
        Ordering::Less
    } else if outranks(yv, yi, xv, xi) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// The running top-k of one row, fed columns left to right: candidates that beat the k-th
/// best so far are appended; when the buffer fills up, a linear-time selection keeps the k
/// best and raises the bar.
struct RowTopK<A> {
    k: usize,
    cand: Vec<(A, u32)>,
    /// The k-th best value once `k` are known: a later column enters only if it beats it.
    bar: Option<A>,
}

impl<A: Accum> RowTopK<A> {
    fn new(k: usize) -> Self {
        RowTopK {
            k,
            cand: Vec::with_capacity(capacity(k)),
            bar: None,
        }
    }

    fn reset(&mut self) {
        self.cand.clear();
        self.bar = None;
    }

    /// Offers columns `c0..c0 + values.len()` (callers guarantee they fit in u32).
    #[inline]
    fn offer(&mut self, values: &[A], c0: usize) {
        let cap = capacity(self.k);
        for (j, &v) in values.iter().enumerate() {
            if let Some(bar) = self.bar {
                if !beats(v, bar) {
                    continue;
                }
            }
            self.cand.push((v, (c0 + j) as u32));
            if self.cand.len() >= cap {
                self.keep_best();
            }
        }
    }

    /// Keeps the k best candidates (in no particular order) and sets the bar to the worst.
    fn keep_best(&mut self) {
        if self.cand.len() > self.k {
            self.cand.select_nth_unstable_by(self.k - 1, order);
            self.cand.truncate(self.k);
        }
        if self.cand.len() == self.k {
            let worst = self.cand.iter().copied().reduce(|x, y| {
                if order(&x, &y) == Ordering::Greater {
                    x
                } else {
                    y
                }
            });
            self.bar = worst.map(|w| w.0);
        }
    }

    /// Writes the k best, sorted by [`outranks`].
    fn finish<T: Element<Acc = A>>(&mut self, values: &mut [T], indices: &mut [u32]) {
        self.keep_best();
        self.cand.sort_unstable_by(order);
        for ((v, i), &(cv, ci)) in values.iter_mut().zip(indices.iter_mut()).zip(&self.cand) {
            *v = T::from_acc(cv);
            *i = ci;
        }
    }
}

/// Candidates a row holds before selecting: amortises each selection over at least k (and
/// 32) new candidates.
fn capacity(k: usize) -> usize {
    (2 * k).max(k + 32)
}

/// Per-row top-k of every matrix: `values` and `indices` are `[batch, n, k]`.
pub fn top_k<T: Element>(ctx: &Ctx<'_, T>, k: usize, values: &mut [T], indices: &mut [u32]) {
    let n = ctx.n;
    let state = capacity(k) * std::mem::size_of::<(T::Acc, u32)>();
    let r = ctx
        .rows_per_task(n, ctx.batch)
        .min((TILE_BYTES / state).max(1));
    let cols = ctx.tile_cols(r);
    values
        .par_chunks_mut(n * k)
        .zip(indices.par_chunks_mut(n * k))
        .enumerate()
        .for_each(|(batch, (vb, ib))| {
            vb.par_chunks_mut(r * k)
                .zip(ib.par_chunks_mut(r * k))
                .enumerate()
                .for_each_init(
                    || (Scratch::default(), Vec::<RowTopK<T::Acc>>::new()),
                    |(scr, tops), (t, (v, ix))| {
                        let rows = v.len() / k;
                        if tops.len() < rows {
                            tops.resize_with(rows, || RowTopK::new(k));
                        }
                        let tops = &mut tops[..rows];
                        tops.iter_mut().for_each(RowTopK::reset);
                        ctx.visit_rows(scr, batch, t * r, rows, cols, |tile, c0, w| {
                            for (top, row) in tops.iter_mut().zip(tile.chunks(w)) {
                                top.offer(row, c0);
                            }
                        });
                        for ((top, v), ix) in
                            tops.iter_mut().zip(v.chunks_mut(k)).zip(ix.chunks_mut(k))
                        {
                            top.finish(v, ix);
                        }
                    },
                );
        });
}

/// The row maxima `[batch, n]` and column maxima `[batch, m]` of every matrix, in the
/// accumulator type, NaN above everything (as [`outranks`] ranks).
pub fn maxima<T: Element>(ctx: &Ctx<'_, T>) -> (Vec<T::Acc>, Vec<T::Acc>) {
    let (n, m) = (ctx.n, ctx.m);
    let low = T::Acc::from_f64(f64::NEG_INFINITY);
    let mut rows_max = vec![low; ctx.batch * n];
    let cols_max: Vec<Mutex<Vec<T::Acc>>> =
        (0..ctx.batch).map(|_| Mutex::new(vec![low; m])).collect();
    let r = ctx.rows_per_task(n, ctx.batch);
    let cols = ctx.tile_cols(r);
    rows_max
        .par_chunks_mut(n)
        .enumerate()
        .for_each(|(batch, rb)| {
            rb.par_chunks_mut(r).enumerate().for_each_init(
                || (Scratch::default(), Vec::new()),
                |(scr, local), (t, rmax)| {
                    local.clear();
                    local.resize(m, low);
                    ctx.visit_rows(scr, batch, t * r, rmax.len(), cols, |tile, c0, w| {
                        fold_maxima::<T>(tile, w, rmax, &mut local[c0..c0 + w]);
                    });
                    // A poisoned lock only means another task panicked; its partial maxima
                    // are still maxima.
                    let mut global = cols_max[batch].lock().unwrap_or_else(|e| e.into_inner());
                    for (g, &v) in global.iter_mut().zip(local.iter()) {
                        if beats(v, *g) {
                            *g = v;
                        }
                    }
                },
            );
        });
    let cols_max = cols_max
        .into_iter()
        .flat_map(|c| c.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    (rows_max, cols_max)
}

/// Lanes of the row-maximum loop.
const MAX_LANES: usize = 16;

simd_dispatch!(fold_maxima<T>(tile: &[T::Acc], width: usize, rows_max: &mut [T::Acc], cols_max: &mut [T::Acc]) -> () {
    // NaN is rare: one pass finds it, and only then the NaN-aware loop runs; otherwise plain
    // comparisons, which vectorise (a NaN never passes `>`, so it cannot hide in them).
    let has_nan = tile.iter().fold(false, |acc, &v| acc | is_nan(v));
    for (rm, row) in rows_max.iter_mut().zip(tile.chunks(width)) {
        if has_nan {
            for (cm, &v) in cols_max.iter_mut().zip(row) {
                if beats(v, *rm) {
                    *rm = v;
                }
                if beats(v, *cm) {
                    *cm = v;
                }
            }
            continue;
        }
        for (cm, &v) in cols_max.iter_mut().zip(row) {
            *cm = if v > *cm { v } else { *cm };
        }
        let mut lanes = [*rm; MAX_LANES];
        let mut it = row.chunks_exact(MAX_LANES);
        for xs in &mut it {
            for (l, &v) in lanes.iter_mut().zip(xs) {
                *l = if v > *l { v } else { *l };
            }
        }
        for &v in it.remainder() {
            lanes[0] = if v > lanes[0] { v } else { lanes[0] };
        }
        // A NaN already in `rm` (an earlier tile) stays: NaN > x and x > NaN are both false.
        if !is_nan(*rm) {
            *rm = lanes.iter().copied().fold(*rm, |m, v| if v > m { v } else { m });
        }
    }
});
