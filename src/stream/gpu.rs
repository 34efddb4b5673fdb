//! The CUDA runner: host buffers uploaded, `Cuda`'s pairwise calls, results downloaded; its
//! chunk pairs through the two-stream pipeline ([`super::pair_pipeline`]), and its sizes from
//! [`Cuda::pair_workspace_bytes`] against the device's free memory.

use super::pair_pipeline;
use super::runner::{serial, Done, PairWork, Runner, Task};
use crate::cuda::{Cuda, PairElement};
use crate::error::Result;
use crate::pairwise::{MatrixBlock, PairOp, PairPlan, SetScores, TopK};

/// Of the free device memory, the engine fills at most this share (the rest is the
/// allocator's slack and other users').
const FREE_SHARE: (usize, usize) = (9, 10);

/// A CUDA device running the pairwise kernels on host buffers.
pub struct CudaRunner<'c>(pub &'c Cuda);

impl<T: PairElement> Runner<T> for CudaRunner<'_> {
    fn matrix_into(&self, plan: &PairPlan, a: &[T], b: &[T], out: &mut [T]) -> Result<()> {
        let c = self.0;
        let (da, db) = (c.upload(a)?, c.upload(b)?);
        let m = c.download(&c.pairwise_similarity(plan, &da, &db)?.values)?;
        plan.check_out("out", out.len(), &plan.matrix_shape())?;
        out.copy_from_slice(&m);
        Ok(())
    }

    fn matrix_blocks(
        &self,
        plan: &PairPlan,
        a: &[T],
        b: &[T],
        budget: usize,
        f: &mut dyn FnMut(MatrixBlock<&[T]>) -> Result<()>,
    ) -> Result<()> {
        let c = self.0;
        let (da, db) = (c.upload(a)?, c.upload(b)?);
        c.pairwise_similarity_blocks(plan, &da, &db, budget, |blk| {
            // On the handle's stream, after the block's kernel: the copy waits for it.
            let values = c.download(&blk.values)?;
            f(MatrixBlock {
                batch: blk.batch,
                row: blk.row,
                rows: blk.rows,
                values: &values,
            })
        })
    }

    fn top_k(&self, plan: &PairPlan, a: &[T], b: &[T], k: usize) -> Result<TopK<Vec<T>, Vec<u32>>> {
        let c = self.0;
        let (da, db) = (c.upload(a)?, c.upload(b)?);
        let t = c.pairwise_top_k(plan, &da, &db, k)?;
        Ok(TopK {
            values: c.download(&t.values)?,
            indices: c.download(&t.indices)?,
            shape: t.shape,
        })
    }

    fn argmax(&self, plan: &PairPlan, a: &[T], b: &[T]) -> Result<TopK<Vec<T>, Vec<u32>>> {
        let c = self.0;
        let (da, db) = (c.upload(a)?, c.upload(b)?);
        let t = c.pairwise_argmax(plan, &da, &db)?;
        Ok(TopK {
            values: c.download(&t.values)?,
            indices: c.download(&t.indices)?,
            shape: t.shape,
        })
    }

    fn row_mean(&self, plan: &PairPlan, a: &[T], b: &[T]) -> Result<Vec<T>> {
        let c = self.0;
        let (da, db) = (c.upload(a)?, c.upload(b)?);
        c.download(&c.pairwise_row_mean(plan, &da, &db)?.values)
    }

    fn mean(&self, plan: &PairPlan, a: &[T], b: &[T]) -> Result<Vec<T>> {
        let c = self.0;
        let (da, db) = (c.upload(a)?, c.upload(b)?);
        c.download(&c.pairwise_mean(plan, &da, &db)?.values)
    }

    fn greedy(
        &self,
        plan: &PairPlan,
        a: &[T],
        b: &[T],
        wa: Option<&[T]>,
        wb: Option<&[T]>,
    ) -> Result<SetScores<Vec<T>>> {
        let c = self.0;
        let (da, db) = (c.upload(a)?, c.upload(b)?);
        let wa = wa.map(|w| c.upload(w)).transpose()?;
        let wb = wb.map(|w| c.upload(w)).transpose()?;
        let s = c.set_similarity(plan, &da, &db, wa.as_ref(), wb.as_ref())?;
        Ok(SetScores {
            precision: c.download(&s.precision)?,
            recall: c.download(&s.recall)?,
            f1: c.download(&s.f1)?,
            shape: s.shape,
        })
    }

    fn usable_bytes(&self, budget: Option<usize>) -> Result<Option<usize>> {
        let ctx = self.0.stream().context();
        ctx.bind_to_thread()?;
        let (free, _) = ctx.mem_get_info()?;
        let free = free / FREE_SHARE.1 * FREE_SHARE.0;
        Ok(Some(budget.map_or(free, |b| b.min(free))))
    }

    fn pair_bytes(&self, plan: &PairPlan, task: Task) -> usize {
        let c = self.0;
        match task {
            Task::Matrix => c.pair_workspace_bytes::<T>(plan, PairOp::Matrix),
            Task::TopK(k) => c.pair_workspace_bytes::<T>(plan, PairOp::TopK(k.min(plan.m))),
            Task::Argmax => c.pair_workspace_bytes::<T>(plan, PairOp::Argmax),
            Task::RowMean => c.pair_workspace_bytes::<T>(plan, PairOp::RowMean),
            Task::Mean => c.pair_workspace_bytes::<T>(plan, PairOp::Mean),
            Task::Greedy => {
                // The row maxima's argmax, then the swapped pair's: the same norms and keys
                // with the sets' roles exchanged.
                let mut swapped = plan.clone();
                std::mem::swap(&mut swapped.n, &mut swapped.m);
                c.pair_workspace_bytes::<T>(plan, PairOp::Argmax)
                    .saturating_add(c.pair_workspace_bytes::<T>(&swapped, PairOp::Argmax))
            }
        }
    }

    fn whole_bytes(&self, plan: &PairPlan, task: Task, budget: usize) -> usize {
        let op = match task {
            Task::Matrix => PairOp::MatrixBlocks { budget },
            Task::TopK(k) => PairOp::TopK(k),
            Task::Argmax => PairOp::Argmax,
            Task::RowMean => PairOp::RowMean,
            Task::Mean => PairOp::Mean,
            Task::Greedy => PairOp::SetSimilarity,
        };
        // Set similarity's weights go up too: one value per vector of each set.
        let weights = match task {
            Task::Greedy => (plan.a_vectors() + plan.b_vectors()) * std::mem::size_of::<T>(),
            _ => 0,
        };
        self.0
            .pair_workspace_bytes::<T>(plan, op)
            .saturating_add(weights)
    }

    fn weight(&self) -> usize {
        self.0.multiprocessors()
    }

    /// Chunk pairs through the two-stream pipeline, or one after another on a context
    /// without event tracking (which the pipeline's pinned buffers need).
    fn run_pairs(&self, work: &PairWork<'_, T>, done: &mut Done<'_, T>) -> Result<()> {
        self.0.stream().context().bind_to_thread()?;
        if !self.0.stream().context().is_event_tracking() {
            return serial(self, work, done);
        }
        pair_pipeline::run(self.0, work, done)
    }
}
