//! How the engine reads a chunk of each set: a chunk is a range of whole vectors of one
//! batch. A chunk of a rows-layout set (`[N, D]`) is a contiguous slice of the input; a chunk
//! of a cols-layout set (`[D, N]`) is not, so its columns are gathered into a contiguous
//! `[D, n_c]` buffer.

use crate::error::{Error, Result};
use crate::pairwise::{Layout, PairPlan};
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

/// One chunk pair: vectors `a` of A and `b` of B, in `batch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairJob {
    pub batch: usize,
    pub a: Range<usize>,
    pub b: Range<usize>,
}

/// The sets of a streamed job, read chunk by chunk.
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

    /// The whole job's plan.
    pub fn plan(&self) -> &'a PairPlan {
        self.plan
    }

    /// The plan of a pair: A's chunk against B's, with the job's eps and precision.
    ///
    /// # Errors
    /// A refusal of the pair's plan (none is expected: the chunks come from a valid plan).
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

    /// The plan of a pair of chunks of `na` vectors of A and `nb` of B.
    ///
    /// # Errors
    /// As [`Sets::pair_plan`].
    pub fn chunk_plan(&self, na: usize, nb: usize) -> Result<PairPlan> {
        self.plan_of(&self.a, na, &self.b, nb)
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
    /// [`Error::Internal`] when `dst` is too short for the chunk.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the GPU pipeline
    pub fn copy_a(&self, job: &PairJob, dst: &mut [T]) -> Result<()> {
        self.a
            .copy_into(job.batch, &job.a, dst)
            .ok_or_else(|| Error::Internal("a staging buffer is too short for a's chunk".into()))
    }

    /// Writes B's chunk of a pair into the front of `dst`, as [`Sets::copy_a`].
    ///
    /// # Errors
    /// As [`Sets::copy_a`].
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the GPU pipeline
    pub fn copy_b(&self, job: &PairJob, dst: &mut [T]) -> Result<()> {
        self.b
            .copy_into(job.batch, &job.b, dst)
            .ok_or_else(|| Error::Internal("a staging buffer is too short for b's chunk".into()))
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
