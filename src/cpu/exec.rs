//! Executes a [`Plan`] on the CPU: rayon over output blocks, vectorisable inner loops.

use super::sums::{self, Sums};
use crate::element::{Accum, Element};
use crate::plan::{offsets, Plan, Strategy};
use rayon::prelude::*;

/// Outputs computed together along a strided axis: their sums stay on the stack.
const ALONG_BLOCK: usize = sums::ALONG;
/// Rows at least this long, when there are few of them, are split across threads.
const SPLIT_ROW_MIN: usize = 1 << 15;
/// Elements of a split row that one task sums (256 KiB of f32 per input).
const SPLIT_CHUNK: usize = 1 << 16;
/// Elements of short rows that one task handles.
const ROWS_TASK: usize = 1 << 14;

/// The similarity of every output vector, written in the output type, computed in parallel.
pub fn similarity<T: Element>(plan: &Plan, x1: &[T], x2: &[T], out: &mut [T]) {
    if out.is_empty() {
        return;
    }
    let eps = T::Acc::from_f64(plan.eps);
    let red = plan.reduce;
    // One input holding one value per output vector while the other is contiguous: rows.
    let constant = match (red.stride1, red.stride2) {
        (0, 1) => 1,
        (1, 0) => 2,
        _ => 0,
    };
    match plan.strategy() {
        Strategy::Along if constant == 0 => along(plan, x1, x2, eps, out),
        _ => {
            let len = red.len;
            let threads = rayon::current_num_threads();
            if out.len() >= 4 * threads || len < SPLIT_ROW_MIN {
                let rows_per_task = (ROWS_TASK / len.max(1)).max(1);
                out.par_chunks_mut(rows_per_task)
                    .enumerate()
                    .for_each(|(c, oc)| {
                        let first = c * rows_per_task;
                        sums::rows(x1, x2, &plan.outer, first, len, constant, eps, oc)
                    });
            } else {
                for (r, o) in out.iter_mut().enumerate() {
                    let (b1, b2) = offsets(&plan.outer, r);
                    let s = match constant {
                        0 => x1[b1..b1 + len]
                            .par_chunks(SPLIT_CHUNK)
                            .zip(x2[b2..b2 + len].par_chunks(SPLIT_CHUNK))
                            .map(|(ca, cb)| sums::contiguous(ca, cb))
                            .reduce(|| Sums::ZERO, Sums::add),
                        1 => {
                            let s = x2[b2..b2 + len]
                                .par_chunks(SPLIT_CHUNK)
                                .map(|c| sums::with_constant(c, x1[b1]))
                                .reduce(|| Sums::ZERO, Sums::add);
                            Sums {
                                dot: s.dot,
                                n1: s.n2,
                                n2: s.n1,
                            }
                        }
                        _ => x1[b1..b1 + len]
                            .par_chunks(SPLIT_CHUNK)
                            .map(|c| sums::with_constant(c, x2[b2]))
                            .reduce(|| Sums::ZERO, Sums::add),
                    };
                    *o = T::from_acc(s.cosine(eps));
                }
            }
        }
    }
}

/// Strided reductions: blocks of outputs along the innermost kept axis.
fn along<T: Element>(plan: &Plan, x1: &[T], x2: &[T], eps: T::Acc, out: &mut [T]) {
    let red = plan.reduce;
    let (rest, inner) = plan.split_inner();
    out.par_chunks_mut(inner.len)
        .enumerate()
        .for_each(|(o, orow)| {
            let (b1, b2) = offsets(rest, o);
            orow.par_chunks_mut(ALONG_BLOCK)
                .enumerate()
                .for_each(|(blk, oblk)| {
                    let i0 = blk * ALONG_BLOCK;
                    let lane = |data, base, inner_stride, reduce_stride| sums::Lane {
                        data,
                        base,
                        inner_stride,
                        reduce_stride,
                    };
                    sums::along_block::<T>(
                        lane(x1, b1 + i0 * inner.stride1, inner.stride1, red.stride1),
                        lane(x2, b2 + i0 * inner.stride2, inner.stride2, red.stride2),
                        red.len,
                        eps,
                        oblk,
                    );
                });
        });
}

/// Similarities, plus input `y` (1 or 2) scaled per output vector by its similarity: the
/// weighted tensor has the broadcast shape, i.e. `[outputs, plan.reduce.len]` row-major.
pub fn reweight<T: Element>(
    plan: &Plan,
    x1: &[T],
    x2: &[T],
    y: u8,
    weighted: &mut [T],
    sims: &mut [T],
) {
    similarity(plan, x1, x2, sims);
    let red = plan.reduce;
    if red.len == 0 {
        return;
    }
    let (src, stride) = if y == 1 {
        (x1, red.stride1)
    } else {
        (x2, red.stride2)
    };
    weighted
        .par_chunks_mut(red.len)
        .enumerate()
        .for_each(|(o, row)| {
            let (b1, b2) = offsets(&plan.outer, o);
            let base = if y == 1 { b1 } else { b2 };
            // The returned (rounded) similarity, so that weighted == y · sim holds exactly.
            let s = sims[o].to_acc();
            for (k, w) in row.iter_mut().enumerate() {
                *w = T::from_acc(src[base + k * stride].to_acc() * s);
            }
        });
}
