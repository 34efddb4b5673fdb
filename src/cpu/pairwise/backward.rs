//! The gradient of the pairwise matrix on the CPU. With `S_ij = ⟨a_i, b_j⟩ · ia_i · ib_j`
//! (`ia = 1 / max(‖a‖, eps)`) and upstream gradient `G`:
//! `dA_i = ia_i · (g_i − ⟨â_i, g_i⟩ · â_i)` with `g_i = Σ_j G_ij · ib_j · b_j` and `â = ia·a`,
//! and the symmetric form for B. Where a norm is clamped to eps it is a constant (no
//! projection term); a zero vector with eps = 0 has `ia = 0` and gets 0, as its row of the
//! forward is 0. The forward's clamp to [−1, 1] (rounding only) is passed through. A set
//! shared by every batch gets the sum over the batches. Inverse norms are the only extra
//! memory besides one D-vector per task: no normalised copies and no copy of `G`.
//!
//! Each side is one parallel pass over its vectors, each vector summing its column (or row)
//! of `G` against the other set in the accumulator type: O(B·N·M·D), not yet tiled for GEMM
//! speed.

use super::norms::inv_norms;
use super::set::Set;
use crate::element::{Accum, Element};
use crate::pairwise::PairPlan;
use rayon::prelude::*;

/// Element `k` of vector `i` of own batch `own` of a set, in the accumulator type.
#[inline(always)]
fn at<T: Element>(
    set: &Set<'_, T>,
    vec: usize,
    comp: usize,
    own: usize,
    i: usize,
    k: usize,
) -> T::Acc {
    set.data[own * set.count * set.d + i * vec + k * comp].to_acc()
}

/// Which set a gradient is of.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Of {
    A,
    B,
}

/// The gradient of one set (`Of::A`: `a`, the rows of the matrix), shaped and laid out like
/// that set.
pub fn gradient<T: Element>(
    plan: &PairPlan,
    a: &Set<'_, T>,
    b: &Set<'_, T>,
    grad: &[T],
    of: Of,
) -> Vec<T> {
    let (mine, other, mine_strides, other_strides) = match of {
        Of::A => (a, b, plan.a, plan.b),
        Of::B => (b, a, plan.b, plan.a),
    };
    let eps = T::Acc::from_f64(plan.eps);
    let inv_mine = inv_norms(mine, plan.eps);
    let inv_other = inv_norms(other, plan.eps);
    let (n, m, d) = (plan.n, plan.m, plan.d);
    // G's entry for (my vector i, the other's vector j) of batch bb.
    let g_at = |bb: usize, i: usize, j: usize| -> T::Acc {
        let (r, c) = match of {
            Of::A => (i, j),
            Of::B => (j, i),
        };
        grad[(bb * n + r) * m + c].to_acc()
    };
    let mut out = vec![T::default(); mine.data.len()];
    let mut rows = vec![T::Acc::ZERO; mine.count * d];
    for own in 0..mine.own_batches {
        // The batches that read this own batch: all of them for a shared set.
        let batches: Vec<usize> = (0..plan.batch).filter(|&bb| mine.own(bb) == own).collect();
        rows.par_chunks_mut(d.max(1))
            .enumerate()
            .for_each(|(i, row)| {
                row.fill(T::Acc::ZERO);
                let ia = inv_mine[own * mine.count + i];
                let x = |k| at(mine, mine_strides.vec, mine_strides.comp, own, i, k);
                #[allow(clippy::eq_op)]
                if (0..d).any(|k| x(k) != x(k)) {
                    // A NaN component: its row of the forward is NaN, and so is its gradient
                    // (its clamped norm would otherwise hide it).
                    let nan = (0..d).map(x).find(|v| v != v).unwrap_or(T::Acc::ZERO);
                    row.fill(nan);
                    return;
                }
                let clamped = ia == T::Acc::ZERO || ia * eps >= T::Acc::ONE;
                let mut g = vec![T::Acc::ZERO; d];
                for &bb in &batches {
                    let ob = other.own(bb);
                    g.fill(T::Acc::ZERO);
                    for j in 0..other.count {
                        let w = g_at(bb, i, j) * inv_other[ob * other.count + j];
                        for (k, gk) in g.iter_mut().enumerate() {
                            *gk = *gk
                                + w * at(other, other_strides.vec, other_strides.comp, ob, j, k);
                        }
                    }
                    let proj = if clamped {
                        T::Acc::ZERO
                    } else {
                        // ⟨â, g⟩ · ia: the projection onto â, scaled back to a's units.
                        let dot = (0..d).fold(T::Acc::ZERO, |s, k| s + x(k) * g[k]);
                        dot * ia * ia
                    };
                    for (k, r) in row.iter_mut().enumerate() {
                        *r = *r + ia * (g[k] - proj * x(k));
                    }
                }
            });
        let base = own * mine.count * d;
        for i in 0..mine.count {
            for k in 0..d {
                out[base + i * mine_strides.vec + k * mine_strides.comp] =
                    T::from_acc(rows[i * d + k]);
            }
        }
    }
    out
}
