//! The reductions of a streamed job (top-k, argmax, row means, means, greedy matching): what
//! one device's part collects from its chunk pairs ([`part`]), and how the parts of several
//! devices (contiguous shards of B) combine into the whole result ([`combine`]).
//!
//! - top-k and argmax: the top `min(k, m_c)` of every chunk of B (indices made global by
//!   the chunk's start) are merged per row by [`crate::shard::merge_sorted`] in `outranks`
//!   order, then the devices' lists by [`crate::shard::merge_rows`]: exactly the whole
//!   result in f32 and f64; in f16 and bf16 the same values, but a whole run ranks its f32
//!   sums, so indices of values equal once rounded may come in another order (or, at the
//!   k-th place, be another column of that value);
//! - row mean: `Σ_c m_c · rowmean_c / M`, mean: `Σ n_a · m_b · mean / (N · M)`, summed in
//!   f64 in chunk order, then device order: equal to the whole result up to rounding;
//! - greedy: row maxima from an argmax of every chunk pair, column maxima from an argmax of
//!   the swapped pair, the maxima taken across chunks and devices, then the (weighted) means
//!   in f64 as the CPU backend forms them.

use super::chunks::{self, Chunks};
use super::control::Control;
use super::runner::{expect_len, InOrder, PairWork, Runner, Task};
use super::sets::Sets;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::pairwise::{f1, outranks, PairPlan, SetScores};
use crate::shard::{merge_rows, merge_sorted, Part};
use std::ops::Range;

/// What a reduction collects from each pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The `k` best of every row (argmax: 1, without the k dim).
    Best(usize),
    RowMean,
    Mean,
    Greedy,
}

impl Want {
    pub fn task(self, argmax: bool) -> Task {
        match self {
            Want::Best(_) if argmax => Task::Argmax,
            Want::Best(k) => Task::TopK(k),
            Want::RowMean => Task::RowMean,
            Want::Mean => Task::Mean,
            Want::Greedy => Task::Greedy,
        }
    }
}

/// One device's part: its shard of B (`b`) against all of A.
pub enum Partial<T> {
    /// `batch · n` sorted lists of the shard's best, `min(k, shard)` each, global indices.
    Best { values: Vec<T>, indices: Vec<u32> },
    /// Per row, `Σ_c m_c · rowmean_c` over the shard's chunks.
    RowSums(Vec<f64>),
    /// Per batch, `Σ n_a · m_b · mean` over the shard's pairs.
    Sums(Vec<f64>),
    /// Row maxima over the shard (`batch · n`), and the shard's column maxima
    /// (`batch · shard`).
    Greedy { rows: Vec<f64>, cols: Vec<f64> },
}

/// Runs one device's part: every chunk pair of A against the chunks of `b` (B's vectors),
/// in `chunks`, collecting `want`.
///
/// # Errors
/// Backend failures, a stopped run, a runner breaking its contract.
#[allow(clippy::too_many_arguments)]
pub fn part<T: Element>(
    runner: &dyn Runner<T>,
    sets: &Sets<'_, T>,
    want: Want,
    argmax: bool,
    b: Range<usize>,
    chunks: Chunks,
    control: &Control<'_>,
) -> Result<Partial<T>> {
    let plan = sets.plan();
    let n = plan.n;
    let rows = chunks::rows(plan.batch, n, chunks.a);
    let jobs = chunks::jobs(&rows, b.clone(), chunks.b);
    let go_on = || control.go_on();
    let work = PairWork {
        sets,
        task: want.task(argmax),
        chunks,
        jobs: &jobs,
        go_on: &go_on,
    };
    let mut order = InOrder::new(jobs.len());
    let width = b.len();
    let rows_all = plan.batch * n;
    let mut out = match want {
        Want::Best(k) => Partial::Best {
            values: Vec::with_capacity(rows_all * k.min(width)),
            indices: Vec::with_capacity(rows_all * k.min(width)),
        },
        Want::RowMean => Partial::RowSums(Vec::with_capacity(rows_all)),
        Want::Mean => Partial::Sums(Vec::with_capacity(plan.batch)),
        Want::Greedy => Partial::Greedy {
            rows: vec![f64::NEG_INFINITY; rows_all],
            cols: vec![f64::NEG_INFINITY; plan.batch * width],
        },
    };
    // The best so far of every row of the current chunk of A (top-k), or its sums.
    let mut best: Vec<Vec<(T, u32)>> = Vec::new();
    let mut merged = Vec::new();
    let mut acc: Vec<f64> = Vec::new();
    runner.run_pairs(&work, &mut |i, r| {
        let job = order.take(i, &jobs)?;
        let (first, last) = (job.b.start == b.start, job.b.end == b.end);
        match (&mut out, want) {
            (Partial::Best { values, indices }, Want::Best(k)) => {
                let kc = k.min(job.b.len());
                if first {
                    best.clear();
                    best.resize_with(job.a.len(), || Vec::with_capacity(k));
                }
                if u32::try_from(job.b.end).is_err() {
                    return Err(Error::IndexOverflow { m: job.b.end });
                }
                expect_len(r.values.len(), job.a.len() * kc, "best values")?;
                expect_len(r.indices.len(), r.values.len(), "best indices")?;
                for (row, (v, x)) in best
                    .iter_mut()
                    .zip(r.values.chunks(kc.max(1)).zip(r.indices.chunks(kc.max(1))))
                {
                    merge_sorted(row, v, x, job.b.start, k.min(width), &mut merged);
                }
                if last {
                    for (v, x) in best.iter().flatten() {
                        values.push(*v);
                        indices.push(*x);
                    }
                }
            }
            (Partial::RowSums(sums), _) => {
                if first {
                    acc.clear();
                    acc.resize(job.a.len(), 0.0);
                }
                expect_len(r.values.len(), job.a.len(), "row means")?;
                let w = job.b.len() as f64;
                for (s, v) in acc.iter_mut().zip(r.values) {
                    *s += w * v.to_f64();
                }
                if last {
                    sums.extend_from_slice(&acc);
                }
            }
            (Partial::Sums(sums), _) => {
                if first && job.a.start == 0 {
                    acc.clear();
                    acc.push(0.0);
                }
                expect_len(r.values.len(), 1, "mean")?;
                let w = (job.a.len() * job.b.len()) as f64;
                acc[0] += r.values.iter().map(|v| w * v.to_f64()).sum::<f64>();
                if last && job.a.end == n {
                    sums.push(acc[0]);
                }
            }
            (Partial::Greedy { rows, cols }, _) => {
                expect_len(r.values.len(), job.a.len(), "row maxima")?;
                expect_len(r.cols.len(), job.b.len(), "column maxima")?;
                let at = job.batch * n;
                max_into(&mut rows[at + job.a.start..at + job.a.end], r.values);
                let at = job.batch * width + (job.b.start - b.start);
                max_into(&mut cols[at..at + job.b.len()], r.cols);
            }
            _ => return Err(Error::Internal("a reduction met another's part".into())),
        }
        control.pair_done()
    })?;
    order.all_done()?;
    Ok(out)
}

/// The whole result of `want` from the devices' parts, in device (shard) order.
pub enum Whole<T> {
    Best { values: Vec<T>, indices: Vec<u32> },
    Values(Vec<T>),
    Scores(SetScores<Vec<T>>),
}

/// Combines the parts of the shards of B, in order (`widths`: each shard's vectors).
///
/// # Errors
/// [`Error::Internal`] for parts that do not match; index overflow.
pub fn combine<T: Element>(
    plan: &PairPlan,
    want: Want,
    parts: Vec<Partial<T>>,
    widths: &[usize],
    weights: (Option<&[T]>, Option<&[T]>),
) -> Result<Whole<T>> {
    let rows = plan.batch * plan.n;
    let mismatch = || Error::Internal("the devices' parts are of different kinds".into());
    match want {
        Want::Best(k) => {
            let mut lists = Vec::with_capacity(parts.len());
            for p in &parts {
                match p {
                    Partial::Best { values, indices } => lists.push(Part {
                        values,
                        indices,
                        offset: 0,
                    }),
                    _ => return Err(mismatch()),
                }
            }
            let (values, indices) = merge_rows(rows, k, &lists)?;
            Ok(Whole::Best { values, indices })
        }
        Want::RowMean | Want::Mean => {
            let (len, scale) = match want {
                Want::RowMean => (rows, plan.m as f64),
                _ => (plan.batch, plan.n as f64 * plan.m as f64),
            };
            let mut sum = vec![0f64; len];
            for p in parts {
                let (Partial::RowSums(s) | Partial::Sums(s)) = p else {
                    return Err(mismatch());
                };
                expect_len(s.len(), len, "sums")?;
                sum.iter_mut().zip(s).for_each(|(t, v)| *t += v);
            }
            Ok(Whole::Values(
                sum.iter().map(|&s| T::from_f64(s / scale)).collect(),
            ))
        }
        Want::Greedy => {
            let mut row_max = vec![f64::NEG_INFINITY; rows];
            let mut col_max = vec![f64::NEG_INFINITY; plan.batch * plan.m];
            let mut start = 0;
            for (p, &w) in parts.into_iter().zip(widths) {
                let Partial::Greedy { rows: r, cols: c } = p else {
                    return Err(mismatch());
                };
                expect_len(r.len(), rows, "row maxima")?;
                expect_len(c.len(), plan.batch * w, "column maxima")?;
                max_into(&mut row_max, &r);
                for (bb, shard) in c.chunks(w.max(1)).enumerate().take(plan.batch) {
                    let at = bb * plan.m + start;
                    col_max[at..at + w].copy_from_slice(shard);
                }
                start += w;
            }
            Ok(Whole::Scores(scores(plan, &row_max, &col_max, weights)))
        }
    }
}

/// Precision, recall and f1 per batch from every row's and column's maximum, weighted as
/// [`crate::cpu::set_similarity`] weighs them.
fn scores<T: Element>(
    plan: &PairPlan,
    rows: &[f64],
    cols: &[f64],
    (wa, wb): (Option<&[T]>, Option<&[T]>),
) -> SetScores<Vec<T>> {
    let (n, m) = (plan.n, plan.m);
    let mut s = SetScores {
        precision: Vec::with_capacity(plan.batch),
        recall: Vec::with_capacity(plan.batch),
        f1: Vec::with_capacity(plan.batch),
        shape: plan.batch_shape(),
    };
    for bb in 0..plan.batch {
        let own = |stride: usize, count: usize| if stride == 0 { 0 } else { bb * count };
        let p = weighted_mean(
            &rows[bb * n..(bb + 1) * n],
            wa.map(|w| &w[own(plan.a.batch, n)..][..n]),
        );
        let r = weighted_mean(
            &cols[bb * m..(bb + 1) * m],
            wb.map(|w| &w[own(plan.b.batch, m)..][..m]),
        );
        s.precision.push(T::from_f64(p));
        s.recall.push(T::from_f64(r));
        s.f1.push(T::from_f64(f1(p, r)));
    }
    s
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
