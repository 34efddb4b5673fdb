//! The gradient of the pairwise matrix on the CPU. With `S_ij = ⟨a_i, b_j⟩ · ia_i · ib_j`
//! (`ia = 1 / max(‖a‖, eps)`) and upstream gradient `G`:
//! `dA_i = ia_i · (g_i − ⟨â_i, g_i⟩ · â_i)` with `g_i = Σ_j G_ij · ib_j · b_j` and `â = ia·a`,
//! and the symmetric form for B. Where a norm is clamped to eps it is a constant (no
//! projection term); a zero vector with eps = 0 has `ia = 0` and gets 0, as its row of the
//! forward is 0; a vector with a NaN component gets NaN throughout (its clamped norm would
//! otherwise hide it). The forward's clamp to [−1, 1] (rounding only) is passed through. A
//! set shared by every batch gets the sum over the batches.
//!
//! Each side is one GEMM-shaped pass: tasks of up to [`MAX_TASK_ROWS`] of "my" vectors run in
//! parallel, each accumulating `P = Σ_batches G · diag(ib) · B` for its vectors with
//! `matrixmultiply` (single-threaded per task), the left operand a tile of `G` (or `Gᵀ` for
//! B, read row by row and handed to GEMM with transposed strides) scaled by the other side's
//! inverse norms, the right operand the other set read in place through GEMM's strides
//! (converted to f32 in chunks for f16/bf16). Then per vector `W = ia · (P − ⟨x, P⟩ · ia² · x)`.
//! As the projection is linear in `g`, summing `g` over the batches first gives the sum of the
//! per-batch gradients. Scratch per thread: the `G` tile ([`G_TILE_BYTES`]), the task's own
//! vectors gathered row-major, and for f16/bf16 a converted chunk of the other set
//! ([`CONVERT_BYTES`]). `P` accumulates in the output itself for an f32/f64 set in rows, else
//! in one accumulator-typed buffer the size of the gradient, converted (or transposed) into
//! place at the end. No normalised copies of A or B and no copy of `G`.

use super::matrix::{cast_mut, gemm, CONVERT_BYTES};
use super::norms::inv_norms;
use super::set::Set;
use crate::element::{Accum, Element};
use crate::pairwise::{Layout, PairPlan};
use rayon::prelude::*;

/// Most of "my" vectors one task computes: GEMM packs the other set once per tile, so tasks
/// should be long enough to amortise that, yet numerous enough to keep every thread busy.
const MAX_TASK_ROWS: usize = 256;
/// Bytes of the scaled `G` tile one task holds (GEMM packs it in blocks, so it need not stay
/// in L2; larger tiles mean fewer GEMM calls over the accumulated `P`).
const G_TILE_BYTES: usize = 4 << 20;

/// Which set a gradient is of.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Of {
    A,
    B,
}

/// One side's gradient problem: "my" set (whose gradient it is), the other set, both sets'
/// inverse norms and `G`.
struct Job<'a, T: Element> {
    mine: &'a Set<'a, T>,
    other: &'a Set<'a, T>,
    /// `[own batches of mine, mine.count]`.
    inv_mine: Vec<T::Acc>,
    /// `[own batches of other, other.count]`.
    inv_other: Vec<T::Acc>,
    grad: &'a [T],
    of: Of,
    eps: T::Acc,
    batch: usize,
    /// Columns of `G` (the plan's `m`).
    m: usize,
    /// Entries of `G` per batch (`n · m`).
    per_batch: usize,
    /// Other vectors per GEMM call.
    cols: usize,
}

/// Per-thread buffers, reused from task to task.
struct Scratch<A> {
    /// The scaled tile of `G`.
    g: Vec<A>,
    /// A chunk of the other set converted to the accumulator type (f16/bf16 only).
    other: Vec<A>,
    /// The task's own vectors, row-major in the accumulator type.
    x: Vec<A>,
}

impl<A> Default for Scratch<A> {
    fn default() -> Self {
        Scratch {
            g: Vec::new(),
            other: Vec::new(),
            x: Vec::new(),
        }
    }
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
    let (mine, other) = match of {
        Of::A => (a, b),
        Of::B => (b, a),
    };
    let d = plan.d;
    let mut out = vec![T::default(); mine.data.len()];
    if out.is_empty() {
        return out;
    }
    let (inv_mine, inv_other) =
        rayon::join(|| inv_norms(mine, plan.eps), || inv_norms(other, plan.eps));
    // Tasks: at least four per thread where the vectors allow, at most MAX_TASK_ROWS each.
    let threads = rayon::current_num_threads().max(1);
    let per_own = (4 * threads).div_ceil(mine.own_batches);
    let rows = mine.count.div_ceil(per_own).clamp(1, MAX_TASK_ROWS);
    let sz = std::mem::size_of::<T::Acc>();
    let mut cols = G_TILE_BYTES / (rows * sz);
    if T::as_acc_slice(&[]).is_none() {
        cols = cols.min(CONVERT_BYTES / (d * sz));
    }
    let job = Job {
        mine,
        other,
        inv_mine,
        inv_other,
        grad,
        of,
        eps: T::Acc::from_f64(plan.eps),
        batch: plan.batch,
        m: plan.m,
        per_batch: plan.n * plan.m,
        cols: cols.clamp(1, other.count),
    };
    let batch_len = mine.count * d;
    let run = |acc: &mut [T::Acc]| {
        acc.par_chunks_mut(batch_len)
            .enumerate()
            .for_each(|(own, ab)| {
                ab.par_chunks_mut(rows * d)
                    .enumerate()
                    .for_each_init(Scratch::default, |scr, (t, p)| {
                        job.block(scr, own, t * rows, p)
                    });
            });
    };
    match (mine.layout, cast_mut::<T, T::Acc>(&mut out)) {
        // f32/f64 in rows: P accumulates in the output itself.
        (Layout::Rows, Some(acc)) => run(acc),
        (layout, _) => {
            let mut acc = vec![T::Acc::ZERO; out.len()];
            run(&mut acc);
            out.par_chunks_mut(batch_len)
                .zip(acc.par_chunks(batch_len))
                .for_each(|(ob, ab)| match layout {
                    Layout::Rows => ob
                        .iter_mut()
                        .zip(ab)
                        .for_each(|(o, &v)| *o = T::from_acc(v)),
                    Layout::Cols => {
                        ob.par_chunks_mut(mine.count)
                            .enumerate()
                            .for_each(|(k, comp)| {
                                for (o, v) in comp.iter_mut().zip(ab[k..].iter().step_by(d)) {
                                    *o = T::from_acc(*v);
                                }
                            })
                    }
                });
        }
    }
    out
}

impl<T: Element> Job<'_, T> {
    /// The gradients of my vectors `i0..i0 + p.len() / d` of own batch `own`, into `p`
    /// (row-major, one vector per row).
    fn block(&self, scr: &mut Scratch<T::Acc>, own: usize, i0: usize, p: &mut [T::Acc]) {
        let (d, count) = (self.mine.d, self.other.count);
        let rows = p.len() / d;
        let Scratch { g, other, x } = scr;
        p.fill(T::Acc::ZERO);
        // The batches that read this own batch: all of them for a shared set.
        let batches = if self.mine.own_batches == 1 {
            0..self.batch
        } else {
            own..own + 1
        };
        for bb in batches {
            let ob = self.other.own(bb);
            let xo = self.other.batch(ob);
            let inv = &self.inv_other[ob * count..(ob + 1) * count];
            for c0 in (0..count).step_by(self.cols) {
                let w = self.cols.min(count - c0);
                let (rsg, csg) = self.scaled_tile(g, bb, i0, rows, c0, &inv[c0..c0 + w]);
                let (od, rso, cso) = other_chunk(self.other, xo, c0, w, other);
                let (a, b) = ((&g[..rows * w], rsg, csg), (od, rso, cso));
                gemm((rows, w, d), a, b, true, p, d);
            }
        }
        self.project(x, own, i0, p);
    }

    /// Fills `buf` with the `rows × inv.len()` tile of `G` of batch `bb` for my vectors from
    /// `i0` and the other's from `c0`, each entry times the other vector's inverse norm;
    /// returns the tile's (row, column) strides. For `Of::B` the tile is a block of `G`'s
    /// rows, so it is stored transposed (each row of `G` read contiguously).
    fn scaled_tile(
        &self,
        buf: &mut Vec<T::Acc>,
        bb: usize,
        i0: usize,
        rows: usize,
        c0: usize,
        inv: &[T::Acc],
    ) -> (isize, isize) {
        let (m, w) = (self.m, inv.len());
        if buf.len() < rows * w {
            buf.resize(rows * w, T::Acc::ZERO);
        }
        let g = &self.grad[bb * self.per_batch..(bb + 1) * self.per_batch];
        match self.of {
            Of::A => {
                for (r, dst) in buf.chunks_mut(w).take(rows).enumerate() {
                    T::to_acc_slice(&g[(i0 + r) * m + c0..][..w], dst);
                    dst.iter_mut().zip(inv).for_each(|(x, &s)| *x = *x * s);
                }
                (w as isize, 1)
            }
            Of::B => {
                for (j, dst) in buf.chunks_mut(rows).take(w).enumerate() {
                    T::to_acc_slice(&g[(c0 + j) * m + i0..][..rows], dst);
                    let s = inv[j];
                    dst.iter_mut().for_each(|x| *x = *x * s);
                }
                (1, rows as isize)
            }
        }
    }

    /// `P` → gradient in place for my vectors `i0..` of own batch `own`: `ia · (P − ⟨x, P⟩ ·
    /// ia² · x)`, or `ia · P` for a clamped norm, or all NaN for a vector holding NaN. The
    /// vectors are first gathered into `x`, row-major in the accumulator type, so that a set
    /// in columns is read a run of vectors at a time rather than one component per line.
    fn project(&self, x: &mut Vec<T::Acc>, own: usize, i0: usize, p: &mut [T::Acc]) {
        let (set, d) = (self.mine, self.mine.d);
        let rows = p.len() / d;
        let xs = set.batch(own);
        x.resize(rows * d, T::Acc::ZERO);
        match set.layout {
            Layout::Rows => T::to_acc_slice(&xs[i0 * d..(i0 + rows) * d], x),
            Layout::Cols => {
                for k in 0..d {
                    let comp = &set.component(xs, k)[i0..i0 + rows];
                    for (xr, &v) in x.chunks_mut(d).zip(comp) {
                        xr[k] = v.to_acc();
                    }
                }
            }
        }
        let inv = &self.inv_mine[own * set.count + i0..][..rows];
        for ((row, xr), &ia) in p.chunks_mut(d).zip(x.chunks(d)).zip(inv) {
            if let Some(&nan) = xr.iter().find(|v| v.to_f64().is_nan()) {
                row.fill(nan);
                continue;
            }
            if ia == T::Acc::ZERO || ia * self.eps >= T::Acc::ONE {
                row.iter_mut().for_each(|v| *v = *v * ia);
                continue;
            }
            let dot = xr
                .iter()
                .zip(&*row)
                .fold(T::Acc::ZERO, |s, (&a, &b)| s + a * b);
            // ⟨â, g⟩ · ia: the projection onto â, scaled back to the vector's units.
            let proj = dot * ia * ia;
            for (v, &xk) in row.iter_mut().zip(xr) {
                *v = ia * (*v - proj * xk);
            }
        }
    }
}

/// Vectors `c0..c0 + w` of batch `xs` of `set` as GEMM's right operand (`w × d`): the span of
/// the batch they cover (read in place for f32/f64, else converted into `buf` in the set's
/// layout) and the strides of vectors and components in it.
fn other_chunk<'s, T: Element>(
    set: &Set<'_, T>,
    xs: &'s [T],
    c0: usize,
    w: usize,
    buf: &'s mut Vec<T::Acc>,
) -> (&'s [T::Acc], isize, isize) {
    let d = set.d;
    if let Some(data) = T::as_acc_slice(xs) {
        // Slice lengths never exceed isize::MAX, so neither do these strides.
        return match set.layout {
            Layout::Rows => (&data[c0 * d..(c0 + w) * d], d as isize, 1),
            Layout::Cols => (
                &data[c0..(d - 1) * set.count + c0 + w],
                1,
                set.count as isize,
            ),
        };
    }
    buf.resize(w * d, T::Acc::ZERO);
    match set.layout {
        Layout::Rows => {
            T::to_acc_slice(&xs[c0 * d..(c0 + w) * d], buf);
            (buf, d as isize, 1)
        }
        Layout::Cols => {
            for (k, dst) in buf.chunks_mut(w).enumerate() {
                T::to_acc_slice(&set.component(xs, k)[c0..c0 + w], dst);
            }
            (buf, 1, w as isize)
        }
    }
}
