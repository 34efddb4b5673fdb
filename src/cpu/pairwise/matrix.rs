//! Tiles of the similarity matrix: dot products by `matrixmultiply`'s GEMM (single-threaded
//! per tile; rayon runs tiles of rows in parallel), read in either layout in place through
//! GEMM's arbitrary strides, then an epilogue that scales by the inverse norms and clamps.
//!
//! f32 and f64 inputs are read where they lie. f16 and bf16 tiles are converted to f32 first,
//! per task: the task's rows of `a` (rows × D) once, and `b` in chunks of columns (at most
//! [`CONVERT_BYTES`] each) per task; so a thread holds at most
//! `rows × D + CONVERT_BYTES + TILE_BYTES` bytes of scratch, and `b` is never copied whole.

use super::norms::inv_norms;
use super::set::Set;
use crate::cosine::clamp_unit;
use crate::cpu::sums::simd_dispatch;
use crate::element::{Accum, Element};
use crate::pairwise::{Layout, PairPlan};
use rayon::prelude::*;
use std::any::TypeId;

/// Bytes of accumulator-typed dot products one task holds between GEMM and its consumer
/// (reductions; the matrix of f16/bf16 before conversion): small enough to stay in a 1 MiB
/// L2 between the GEMM that writes it, the epilogue and the reduction (greedy matching on
/// 10400 × 10400 × 784, 2 cores: 2.31 s with 8 MiB tiles, 2.22 s with 1 MiB; one run each).
pub const TILE_BYTES: usize = 1 << 20;
/// Bytes of converted `b` (f16/bf16 → f32) one task holds at a time.
pub const CONVERT_BYTES: usize = 4 << 20;
/// Most rows one task computes: GEMM re-packs `b` for each task, so tasks should not be too
/// short, but there must be enough of them to keep every thread busy.
const MAX_TASK_ROWS: usize = 256;
/// Fewest columns per tile (unless `m` is smaller), so that GEMM's kernels run full width.
const MIN_TILE_COLS: usize = 64;

/// A validated pairwise problem ready to run: the two sets and their inverse norms.
pub struct Ctx<'a, T: Element> {
    pub a: Set<'a, T>,
    pub b: Set<'a, T>,
    /// `[own batches of a, n]`.
    inv_a: Vec<T::Acc>,
    /// `[own batches of b, m]`.
    inv_b: Vec<T::Acc>,
    pub batch: usize,
    pub n: usize,
    pub m: usize,
    pub d: usize,
}

/// Per-thread buffers, reused from task to task.
pub struct Scratch<A> {
    a: Vec<A>,
    b: Vec<A>,
    c: Vec<A>,
}

impl<A> Default for Scratch<A> {
    fn default() -> Self {
        Scratch {
            a: Vec::new(),
            b: Vec::new(),
            c: Vec::new(),
        }
    }
}

impl<'a, T: Element> Ctx<'a, T> {
    /// Computes the inverse norms of both sets (each in one parallel pass).
    pub fn new(plan: &PairPlan, a: Set<'a, T>, b: Set<'a, T>) -> Self {
        let (inv_a, inv_b) = rayon::join(|| inv_norms(&a, plan.eps), || inv_norms(&b, plan.eps));
        Ctx {
            a,
            b,
            inv_a,
            inv_b,
            batch: plan.batch,
            n: plan.n,
            m: plan.m,
            d: plan.d,
        }
    }

    /// Inverse norms of the vectors of `a` that matrix `batch` uses.
    pub fn inv_a(&self, batch: usize) -> &[T::Acc] {
        let own = self.a.own(batch);
        &self.inv_a[own * self.n..(own + 1) * self.n]
    }

    /// Inverse norms of the vectors of `b` that matrix `batch` uses.
    pub fn inv_b(&self, batch: usize) -> &[T::Acc] {
        let own = self.b.own(batch);
        &self.inv_b[own * self.m..(own + 1) * self.m]
    }

    /// Rows per task when `batches` matrices run side by side: at least four tasks per
    /// thread where the rows allow, at most [`MAX_TASK_ROWS`].
    pub fn rows_per_task(&self, rows: usize, batches: usize) -> usize {
        let threads = rayon::current_num_threads().max(1);
        let per_batch = (4 * threads).div_ceil(batches.max(1));
        rows.div_ceil(per_batch).clamp(1, MAX_TASK_ROWS)
    }

    /// Columns per tile for tasks of `rows` rows that hand tiles to a consumer.
    pub fn tile_cols(&self, rows: usize) -> usize {
        let sz = std::mem::size_of::<T::Acc>();
        let mut cols = TILE_BYTES / (rows * sz).max(1);
        if T::as_acc_slice(&[]).is_none() {
            cols = cols.min(CONVERT_BYTES / (self.d * sz).max(1));
        }
        cols.max(MIN_TILE_COLS).min(self.m)
    }

    /// Rows `row0..row0 + out.len() / m` of matrix `batch`, row-major, in parallel.
    pub fn fill_block(&self, batch: usize, row0: usize, out: &mut [T], batches: usize) {
        let rows = out.len() / self.m;
        let r = self.rows_per_task(rows, batches);
        out.par_chunks_mut(r * self.m)
            .enumerate()
            .for_each_init(Scratch::default, |scr, (t, o)| {
                self.fill_rows(scr, batch, row0 + t * r, o)
            });
    }

    /// Rows `row0..row0 + out.len() / m` of matrix `batch` on this thread.
    fn fill_rows(&self, scr: &mut Scratch<T::Acc>, batch: usize, row0: usize, out: &mut [T]) {
        let rows = out.len() / self.m;
        let (inv_a, inv_b) = (&self.inv_a(batch)[row0..row0 + rows], self.inv_b(batch));
        if let Some(out) = cast_mut::<T, T::Acc>(out) {
            // f32/f64: GEMM writes the output itself, the epilogue rescales it in place.
            let xa = self.a.batch(self.a.own(batch));
            let xb = self.b.batch(self.b.own(batch));
            let ao = operand(&self.a, xa, row0, rows, &mut scr.a);
            let bo = operand(&self.b, xb, 0, self.m, &mut scr.b);
            dots(&ao, &bo, out, self.m);
            epilogue::<T>(out, self.m, inv_a, inv_b);
            return;
        }
        let m = self.m;
        let cols = self.tile_cols(rows);
        self.visit_rows(scr, batch, row0, rows, cols, |tile, c0, cols| {
            for (o, t) in out.chunks_mut(m).zip(tile.chunks(cols)) {
                for (o, &t) in o[c0..c0 + cols].iter_mut().zip(t) {
                    *o = T::from_acc(t);
                }
            }
        });
    }

    /// The similarities of rows `row0..row0 + rows` of matrix `batch`, in the accumulator
    /// type (scaled and clamped), in tiles of `cols` columns, left to right: calls
    /// `visit(tile, c0, width)` with `tile` holding `rows × width` values row-major for
    /// columns `c0..c0 + width`.
    pub fn visit_rows(
        &self,
        scr: &mut Scratch<T::Acc>,
        batch: usize,
        row0: usize,
        rows: usize,
        cols: usize,
        mut visit: impl FnMut(&[T::Acc], usize, usize),
    ) {
        let Scratch {
            a: sa,
            b: sb,
            c: sc,
        } = scr;
        let (inv_a, inv_b) = (&self.inv_a(batch)[row0..row0 + rows], self.inv_b(batch));
        let xa = self.a.batch(self.a.own(batch));
        let xb = self.b.batch(self.b.own(batch));
        let ao = operand(&self.a, xa, row0, rows, sa);
        let cols = cols.max(1);
        for c0 in (0..self.m).step_by(cols) {
            let w = cols.min(self.m - c0);
            let bo = operand(&self.b, xb, c0, w, sb);
            sc.resize(rows * w, T::Acc::ZERO);
            let tile = &mut sc[..rows * w];
            dots(&ao, &bo, tile, w);
            epilogue::<T>(tile, w, inv_a, &inv_b[c0..c0 + w]);
            visit(tile, c0, w);
        }
    }
}

simd_dispatch!(epilogue<T>(tile: &mut [T::Acc], width: usize, inv_a: &[T::Acc], inv_b: &[T::Acc]) -> () {
    // Rows of dot products → similarities, in place; branch-free so that it vectorises.
    for (row, &ia) in tile.chunks_mut(width).zip(inv_a) {
        for (x, &ib) in row.iter_mut().zip(inv_b) {
            *x = finish(*x, ia, ib);
        }
    }
});

/// The matrix entry from its dot product and the two inverse norms: 0 when the dot is 0,
/// else `dot · ia · ib` clamped to [−1, 1] (NaN kept).
#[inline(always)]
pub fn finish<A: Accum>(dot: A, ia: A, ib: A) -> A {
    if dot == A::ZERO {
        A::ZERO
    } else {
        clamp_unit(dot * ia * ib)
    }
}

/// Vectors `first..first + len` of one batch of a set, in the accumulator type.
struct Operand<'s, A> {
    data: &'s [A],
    layout: Layout,
    /// Vectors in `data` (the column count of a `[d, count]` buffer).
    count: usize,
    d: usize,
    first: usize,
    len: usize,
}

impl<A> Operand<'_, A> {
    /// Flat index of component `k` of vector `i`.
    fn index(&self, i: usize, k: usize) -> usize {
        match self.layout {
            Layout::Rows => i * self.d + k,
            Layout::Cols => k * self.count + i,
        }
    }

    /// The elements the operand spans (bounds-checked), and the strides of its vectors and
    /// components within them. Needs `len ≥ 1` and `d ≥ 1`.
    fn strided(&self) -> (&[A], isize, isize) {
        let start = self.index(self.first, 0);
        let end = self.index(self.first + self.len - 1, self.d - 1);
        // Slice lengths never exceed isize::MAX, so neither do these strides.
        let (vs, cs) = match self.layout {
            Layout::Rows => (self.d as isize, 1),
            Layout::Cols => (1, self.count as isize),
        };
        (&self.data[start..=end], vs, cs)
    }
}

/// Vectors `v0..v0 + len` of batch `xs` of `set`: in place for f32/f64, else converted into
/// `buf` in the same layout (only the `len` vectors).
fn operand<'s, T: Element>(
    set: &Set<'_, T>,
    xs: &'s [T],
    v0: usize,
    len: usize,
    buf: &'s mut Vec<T::Acc>,
) -> Operand<'s, T::Acc> {
    let d = set.d;
    if let Some(data) = T::as_acc_slice(xs) {
        return Operand {
            data,
            layout: set.layout,
            count: set.count,
            d,
            first: v0,
            len,
        };
    }
    buf.resize(len * d, T::Acc::ZERO);
    match set.layout {
        Layout::Rows => T::to_acc_slice(&xs[v0 * d..(v0 + len) * d], buf),
        Layout::Cols => {
            for (k, dst) in buf.chunks_mut(len.max(1)).enumerate().take(d) {
                let row = set.component(xs, k);
                T::to_acc_slice(&row[v0..v0 + len], dst);
            }
        }
    }
    Operand {
        data: buf,
        layout: set.layout,
        count: len,
        d,
        first: 0,
        len,
    }
}

/// `c[r·ldc + j] = Σ_k a_r[k] · b_j[k]` for every vector `a_r` of `a` and `b_j` of `b`.
fn dots<A: Accum>(a: &Operand<'_, A>, b: &Operand<'_, A>, c: &mut [A], ldc: usize) {
    let (rows, cols, d) = (a.len, b.len, a.d);
    if rows == 0 || cols == 0 {
        return;
    }
    if d == 0 {
        return gemm((rows, 0, cols), (&[], 0, 0), (&[], 0, 0), false, c, ldc);
    }
    let (ad, rsa, csa) = a.strided();
    // b is the d × cols right operand: element (k, j) is component k of vector j.
    let (bd, csb, rsb) = b.strided();
    gemm(
        (rows, d, cols),
        (ad, rsa, csa),
        (bd, rsb, csb),
        false,
        c,
        ldc,
    );
}

/// `c = a · b`, or with `accumulate` `c += a · b`, for the `rows × k` matrix `a` and the
/// `k × cols` matrix `b`, each given with its (row, column) strides (non-negative), and `c`
/// with rows `ldc` apart: `matrixmultiply`'s sgemm or dgemm for the accumulator type. The
/// forward's products and the backward's are this one call.
pub(super) fn gemm<A: Accum>(
    (rows, k, cols): (usize, usize, usize),
    (a, rsa, csa): (&[A], isize, isize),
    (b, rsb, csb): (&[A], isize, isize),
    accumulate: bool,
    c: &mut [A],
    ldc: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    let c = &mut c[..(rows - 1) * ldc + cols];
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(ldc) {
                let n = cols.min(row.len());
                row[..n].fill(A::ZERO);
            }
        }
        return;
    }
    // The last element each operand reads: bounds-checked here, so the GEMM stays in bounds.
    let last =
        |r: usize, q: usize, rs: isize, cs: isize| (r - 1) * rs as usize + (q - 1) * cs as usize;
    let (a, b) = (
        &a[..=last(rows, k, rsa, csa)],
        &b[..=last(k, cols, rsb, csb)],
    );
    let rsc = ldc as isize;
    if TypeId::of::<A>() == TypeId::of::<f32>() {
        if let (Some(a), Some(b), Some(c)) = (cast::<A, f32>(a), cast::<A, f32>(b), cast_mut(c)) {
            // SAFETY: element (r, q) of A is read at r·rsa + q·csa ≤ last(rows, k) < a.len(),
            // likewise (q, j) of B within `b` (both sliced to their last element above, with
            // non-negative strides); C is accessed at r·ldc + j < (rows − 1)·ldc + cols =
            // c.len(), and only written when beta = 0. `c` is a unique borrow, so it overlaps
            // neither input.
            unsafe {
                matrixmultiply::sgemm(
                    rows,
                    k,
                    cols,
                    1.0,
                    a.as_ptr(),
                    rsa,
                    csa,
                    b.as_ptr(),
                    rsb,
                    csb,
                    if accumulate { 1.0 } else { 0.0 },
                    c.as_mut_ptr(),
                    rsc,
                    1,
                )
            };
        }
        return;
    }
    if TypeId::of::<A>() == TypeId::of::<f64>() {
        if let (Some(a), Some(b), Some(c)) = (cast::<A, f64>(a), cast::<A, f64>(b), cast_mut(c)) {
            // SAFETY: as for sgemm above.
            unsafe {
                matrixmultiply::dgemm(
                    rows,
                    k,
                    cols,
                    1.0,
                    a.as_ptr(),
                    rsa,
                    csa,
                    b.as_ptr(),
                    rsb,
                    csb,
                    if accumulate { 1.0 } else { 0.0 },
                    c.as_mut_ptr(),
                    rsc,
                    1,
                )
            };
        }
        return;
    }
    // Every accumulator is f32 or f64; this plain loop only keeps the function total.
    let at =
        |x: &[A], i: usize, j: usize, rs: isize, cs: isize| x[i * rs as usize + j * cs as usize];
    for r in 0..rows {
        for j in 0..cols {
            let s = (0..k).fold(A::ZERO, |s, q| {
                s + at(a, r, q, rsa, csa) * at(b, q, j, rsb, csb)
            });
            let o = &mut c[r * ldc + j];
            *o = if accumulate { *o + s } else { s };
        }
    }
}

/// The slice as `[B]` when `A` is `B`.
pub fn cast<A: 'static, B: 'static>(s: &[A]) -> Option<&[B]> {
    if TypeId::of::<A>() == TypeId::of::<B>() {
        // SAFETY: A and B are the same type, so the slice is a valid `[B]` of the same length.
        Some(unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<B>(), s.len()) })
    } else {
        None
    }
}

/// The mutable slice as `[B]` when `A` is `B`.
pub fn cast_mut<A: 'static, B: 'static>(s: &mut [A]) -> Option<&mut [B]> {
    if TypeId::of::<A>() == TypeId::of::<B>() {
        // SAFETY: A and B are the same type; the new slice takes over the unique borrow.
        Some(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<B>(), s.len()) })
    } else {
        None
    }
}
