//! The chunked path's pairs: how a chunk of each set is read ([`Sets`]), what every pair
//! computes ([`PairOp`]) and hands back ([`PairOut`]), and the runner without a pipeline of
//! its own ([`serial`]). A runner's contract: the results of `work.jobs` come back in order,
//! each pair's pieces in a row, the last marked.

use super::Chunks;
use crate::dtype::Compute;
use crate::error::{CliError, Result};
use crate::pairwise::Backend;
use cosim::pairwise::{Layout, PairPlan};
use std::borrow::Cow;
use std::ops::Range;

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
    /// The shape of a chunk of `len` vectors.
    fn shape(&self, len: usize) -> Vec<usize> {
        match self.layout {
            Layout::Rows => vec![len, self.d],
            Layout::Cols => vec![self.d, len],
        }
    }

    /// Vectors `r` of `batch`: a slice of the input for rows, a copy `[D, r.len()]` for
    /// columns.
    fn chunk(&self, batch: usize, r: &Range<usize>) -> Cow<'a, [T]> {
        let off = batch * self.batch_stride;
        let d = self.d;
        match self.layout {
            Layout::Rows => Cow::Borrowed(&self.data[off + r.start * d..off + r.end * d]),
            Layout::Cols => {
                let mut v = Vec::with_capacity(d * r.len());
                for k in 0..d {
                    let s = off + k * self.count;
                    v.extend_from_slice(&self.data[s + r.start..s + r.end]);
                }
                Cow::Owned(v)
            }
        }
    }

    /// Writes vectors `r` of `batch` into the front of `dst` as [`SetView::chunk`] lays
    /// them out; `None` when `dst` is shorter than the chunk.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the GPU pipeline
    fn copy_into(&self, batch: usize, r: &Range<usize>, dst: &mut [T]) -> Option<()> {
        let off = batch * self.batch_stride;
        let (d, n) = (self.d, r.len());
        let dst = dst.get_mut(..d * n)?;
        match self.layout {
            Layout::Rows => {
                dst.copy_from_slice(&self.data[off + r.start * d..off + r.end * d]);
            }
            Layout::Cols => {
                for (k, row) in dst.chunks_exact_mut(n.max(1)).enumerate().take(d) {
                    let s = off + k * self.count;
                    row.copy_from_slice(&self.data[s + r.start..s + r.end]);
                }
            }
        }
        Some(())
    }

    /// What identifies a chunk's contents: its batch's offset (0 for every batch of a
    /// shared set) and its vectors.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the GPU pipeline
    fn key(&self, batch: usize, r: &Range<usize>) -> ChunkKey {
        (batch * self.batch_stride, r.start, r.end)
    }
}

/// What identifies a chunk's contents (see [`Sets::a_key`]).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the GPU pipeline
pub type ChunkKey = (usize, usize, usize);

/// What every chunk pair computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairOp {
    /// The pair's matrix `[a.len(), b.len()]`, in blocks of whole rows of at most `budget`
    /// bytes when the runner cuts it (the GPU computes a pair whole: `Chunks::plan`'s
    /// `rows_cap` keeps it within the budget).
    Matrix { budget: usize },
    /// The top `min(k, b.len())` of every row, sorted, with chunk-local column indices.
    TopK(usize),
    /// Every row's best value and chunk-local column.
    Argmax,
    /// Every row's mean.
    RowMean,
    /// The pair's mean.
    Mean,
    /// Every row's best value (in `values`) and every column's (in `cols`).
    Greedy,
}

/// One chunk pair: vectors `a` of A and `b` of B, in `batch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairJob {
    pub batch: usize,
    pub a: Range<usize>,
    pub b: Range<usize>,
}

/// A chunk pair's results (or a piece of them), borrowed from the runner's buffers.
#[derive(Clone, Copy, Debug)]
pub struct PairOut<'r, T> {
    /// [`PairOp::Matrix`]: the pair's row that `values` starts at (0 otherwise).
    pub row: usize,
    /// Whether this is the pair's last piece (always, except for a matrix in blocks).
    pub last: bool,
    /// The op's values, as [`PairOp`] lists them.
    pub values: &'r [T],
    /// Top-k and argmax: the chunk-local column of every value; empty otherwise.
    pub indices: &'r [u32],
    /// Greedy: every column's best value; empty otherwise.
    pub cols: &'r [T],
}

impl<'r, T> PairOut<'r, T> {
    /// A pair's results in one piece.
    pub fn whole(values: &'r [T], indices: &'r [u32], cols: &'r [T]) -> PairOut<'r, T> {
        PairOut {
            row: 0,
            last: true,
            values,
            indices,
            cols,
        }
    }
}

/// Where a runner hands each pair's results: the pair's index in [`PairWork::jobs`], and
/// its results.
pub type Done<'f, T> = dyn FnMut(usize, PairOut<'_, T>) -> Result<()> + 'f;

/// The sets of a chunked job, read chunk by chunk.
pub struct Sets<'a, T> {
    plan: &'a PairPlan,
    a: SetView<'a, T>,
    b: SetView<'a, T>,
}

impl<'a, T: Copy> Sets<'a, T> {
    /// The sets `a` and `b` as `plan` reads them (their lengths already checked).
    pub fn new(plan: &'a PairPlan, a: &'a [T], b: &'a [T]) -> Sets<'a, T> {
        let view = |data, layout, count, batch_stride| SetView {
            data,
            layout,
            count,
            d: plan.d,
            batch_stride,
        };
        Sets {
            plan,
            a: view(a, plan.a_layout, plan.n, plan.a.batch),
            b: view(b, plan.b_layout, plan.m, plan.b.batch),
        }
    }

    /// Components per vector.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the GPU pipeline
    pub fn d(&self) -> usize {
        self.plan.d
    }

    /// The plan of a pair: A's chunk against B's, with the job's eps and precision.
    ///
    /// # Errors
    /// A library refusal (none is expected: the chunks come from a valid plan).
    pub fn pair_plan(&self, job: &PairJob) -> Result<PairPlan> {
        self.plan_of(&self.a, job.a.len(), &self.b, job.b.len())
    }

    /// The swapped plan of a pair: B's chunk against A's (greedy's column maxima).
    ///
    /// # Errors
    /// As [`Sets::pair_plan`].
    pub fn swapped_plan(&self, job: &PairJob) -> Result<PairPlan> {
        self.plan_of(&self.b, job.b.len(), &self.a, job.a.len())
    }

    fn plan_of(
        &self,
        x: &SetView<'a, T>,
        nx: usize,
        y: &SetView<'a, T>,
        ny: usize,
    ) -> Result<PairPlan> {
        Ok(
            PairPlan::new(&x.shape(nx), x.layout, &y.shape(ny), y.layout)?
                .eps(Some(self.plan.eps))?
                .precision(self.plan.precision),
        )
    }

    /// A's chunk of a pair, contiguous: borrowed for rows, gathered for columns.
    pub fn a_chunk(&self, job: &PairJob) -> Cow<'a, [T]> {
        self.a.chunk(job.batch, &job.a)
    }

    /// B's chunk of a pair, as [`Sets::a_chunk`].
    pub fn b_chunk(&self, job: &PairJob) -> Cow<'a, [T]> {
        self.b.chunk(job.batch, &job.b)
    }

    /// Writes A's chunk of a pair into the front of `dst`, laid out as [`Sets::a_chunk`].
    ///
    /// # Errors
    /// When `dst` is too short for the chunk (a runner's buffer sized wrong).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the GPU pipeline
    pub fn copy_a(&self, job: &PairJob, dst: &mut [T]) -> Result<()> {
        self.a.copy_into(job.batch, &job.a, dst).ok_or_else(|| {
            CliError::runtime("internal: a staging buffer is too short for set a's chunk")
        })
    }

    /// Writes B's chunk of a pair into the front of `dst`, as [`Sets::copy_a`].
    ///
    /// # Errors
    /// As [`Sets::copy_a`].
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the GPU pipeline
    pub fn copy_b(&self, job: &PairJob, dst: &mut [T]) -> Result<()> {
        self.b.copy_into(job.batch, &job.b, dst).ok_or_else(|| {
            CliError::runtime("internal: a staging buffer is too short for set b's chunk")
        })
    }

    /// What A's chunk of a pair holds: equal keys, equal contents (a runner keeps a chunk
    /// on the device while the next pair needs the same one).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the GPU pipeline
    pub fn a_key(&self, job: &PairJob) -> ChunkKey {
        self.a.key(job.batch, &job.a)
    }

    /// What B's chunk of a pair holds, as [`Sets::a_key`].
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the GPU pipeline
    pub fn b_key(&self, job: &PairJob) -> ChunkKey {
        self.b.key(job.batch, &job.b)
    }
}

/// The chunk pairs of one operation, for a runner.
pub struct PairWork<'w, T> {
    pub sets: &'w Sets<'w, T>,
    pub op: PairOp,
    /// The largest chunks: what a runner's buffers must hold.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the GPU pipeline
    pub chunks: Chunks,
    /// The pairs, in the order their results must come back.
    pub jobs: &'w [PairJob],
}

/// Runs `work`'s pairs one after another through `backend`'s calls on host buffers, handing
/// each pair's results to `done` as they come: the runner of a backend without a pipeline of
/// its own.
///
/// # Errors
/// Library and device failures, and whatever `done` returns.
pub fn serial<T: Compute, B: Backend<T> + ?Sized>(
    backend: &B,
    work: &PairWork<'_, T>,
    done: &mut Done<'_, T>,
) -> Result<()> {
    let sets = work.sets;
    for (i, job) in work.jobs.iter().enumerate() {
        let plan = sets.pair_plan(job)?;
        let (a, b) = (sets.a_chunk(job), sets.b_chunk(job));
        match work.op {
            PairOp::Matrix { budget } => {
                backend.matrix_blocks(&plan, &a, &b, budget, &mut |blk| {
                    let last = blk.row + blk.rows == plan.n;
                    done(
                        i,
                        PairOut {
                            row: blk.row,
                            last,
                            ..PairOut::whole(blk.values, &[], &[])
                        },
                    )
                })?;
            }
            PairOp::TopK(k) => {
                let t = backend.top_k(&plan, &a, &b, k.min(job.b.len()))?;
                done(i, PairOut::whole(&t.values, &t.indices, &[]))?;
            }
            PairOp::Argmax => {
                let t = backend.argmax(&plan, &a, &b)?;
                done(i, PairOut::whole(&t.values, &t.indices, &[]))?;
            }
            PairOp::RowMean => done(
                i,
                PairOut::whole(&backend.row_mean(&plan, &a, &b)?, &[], &[]),
            )?,
            PairOp::Mean => done(i, PairOut::whole(&backend.mean(&plan, &a, &b)?, &[], &[]))?,
            PairOp::Greedy => {
                let rows = backend.argmax(&plan, &a, &b)?;
                let swapped = sets.swapped_plan(job)?;
                let cols = backend.argmax(&swapped, &b, &a)?;
                done(i, PairOut::whole(&rows.values, &[], &cols.values))?;
            }
        }
    }
    Ok(())
}

/// An internal error unless a chunk pair's result has the length its pair implies.
///
/// # Errors
/// When the lengths differ.
pub fn expect_len(got: usize, want: usize, what: &str) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(CliError::runtime(format!(
            "internal: a chunk pair's {what} hold {got} values, not {want}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(&*v.chunk(0, &(1..3)), &[1, 2, 11, 12][..]);
        assert_eq!(v.shape(2), vec![2, 2]);
        let mut dst = [-1; 5];
        assert_eq!(v.copy_into(0, &(1..3), &mut dst), Some(()));
        assert_eq!(dst, [1, 2, 11, 12, -1]);
        assert_eq!(v.copy_into(0, &(0..3), &mut dst), None);
    }

    #[test]
    fn chunks_copy_what_they_borrow_and_keys_tell_batches_apart() {
        // Two batches of [N=3, D=2] rows.
        let x: Vec<i32> = (0..12).collect();
        let v = SetView {
            data: &x[..],
            layout: Layout::Rows,
            count: 3,
            d: 2,
            batch_stride: 6,
        };
        let mut dst = [0; 4];
        v.copy_into(1, &(1..3), &mut dst).unwrap();
        assert_eq!(&*v.chunk(1, &(1..3)), &dst[..]);
        assert_eq!(dst, [8, 9, 10, 11]);
        assert_ne!(v.key(0, &(1..3)), v.key(1, &(1..3)));
        assert_ne!(v.key(0, &(0..2)), v.key(0, &(0..3)));
        let shared = SetView {
            batch_stride: 0,
            ..v
        };
        assert_eq!(shared.key(0, &(1..3)), shared.key(1, &(1..3)));
    }
}
