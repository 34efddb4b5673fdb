//! The GPU's runner of chunk pairs, on the two-slot pipeline ([`super::pipeline`]): each
//! slot holds a chunk of each set and one pair's results. A slot keeps the chunks it last uploaded and uploads only a chunk it does not hold: A's
//! chunk once per slot for each row of chunk pairs, B's on most pairs (never when B is one
//! chunk).

use super::pinned::download_front;
use super::pipeline::{self, Results, Staged, TwoSlots};
use super::runner::{expect_len, Done, PairOut, PairWork, Task};
use super::sets::ChunkKey;
use crate::cuda::{Cuda, PairElement};
use crate::error::Result;
use cudarc::driver::{CudaContext, CudaStream};
use std::sync::Arc;

/// Runs `work`'s chunk pairs, two at a time on two new streams of `cuda`'s device, with
/// buffers for the largest pair, handing each pair's results to `done` in the order of
/// `work.jobs`.
///
/// # Errors
/// Out of device or pinned host memory, library and device failures, and whatever `done`
/// or `work.go_on` returns. The context must track events (the caller checks).
pub fn run<T: PairElement>(
    cuda: &Cuda,
    work: &PairWork<'_, T>,
    done: &mut Done<'_, T>,
) -> Result<()> {
    let ctx = cuda.stream().context().clone();
    let mut slots = [Slot::new(cuda, &ctx, work)?, Slot::new(cuda, &ctx, work)?];
    pipeline::run(
        &mut Pairs { work, done },
        &mut slots,
        work.jobs.len(),
        work.go_on,
    )
}

/// The pairs of one run and where their results go.
struct Pairs<'w, 'd, 'f, T> {
    work: &'w PairWork<'w, T>,
    done: &'d mut Done<'f, T>,
}

impl<T: PairElement> TwoSlots for Pairs<'_, '_, '_, T> {
    type Slot = Slot<T>;

    fn launch(&mut self, slot: &mut Slot<T>, i: usize) -> Result<()> {
        slot.launch(self.work, i)
    }

    fn hand_back(&mut self, slot: &mut Slot<T>, i: usize) -> Result<()> {
        let job = &self.work.jobs[i];
        let (nv, ni, nc) = self.work.task.result_lens(job.a.len(), job.b.len());
        (self.done)(
            i,
            PairOut {
                values: slot.values.take(nv)?,
                indices: slot.indices.take(ni)?,
                cols: slot.cols.take(nc)?,
            },
        )
    }
}

/// One slot of the pipeline.
struct Slot<T: PairElement> {
    cuda: Cuda,
    stream: Arc<CudaStream>,
    a: Staged<T, ChunkKey>,
    b: Staged<T, ChunkKey>,
    values: Results<T>,
    indices: Results<u32>,
    cols: Results<T>,
}

impl<T: PairElement> Slot<T> {
    /// A slot on a new stream, with buffers for the largest chunk pair of `work`.
    fn new(cuda: &Cuda, ctx: &Arc<CudaContext>, work: &PairWork<'_, T>) -> Result<Slot<T>> {
        let stream = ctx.new_stream()?;
        let (ca, cb, d) = (work.chunks.a, work.chunks.b, work.sets.plan().d);
        let (nv, ni, nc) = work.task.result_lens(ca, cb);
        let into = matches!(work.task, Task::Matrix | Task::TopK(_));
        Ok(Slot {
            // The caller's top-k scratch limit, which the sizing counted on.
            cuda: Cuda::with_stream(stream.clone())?
                .with_top_k_scratch_limit(cuda.top_k_scratch_limit()),
            a: Staged::new(ctx, &stream, ca * d)?,
            b: Staged::new(ctx, &stream, cb * d)?,
            values: Results::new(ctx, &stream, nv, into)?,
            indices: Results::new(ctx, &stream, ni, into)?,
            cols: Results::new(ctx, &stream, nc, false)?,
            stream,
        })
    }

    /// Stages pair `i`'s chunks (those not already on the device), queues its computation
    /// and the copies of its results to the pinned buffers.
    fn launch(&mut self, work: &PairWork<'_, T>, i: usize) -> Result<()> {
        let (sets, job) = (work.sets, &work.jobs[i]);
        let s = &self.stream;
        self.a
            .stage(s, sets.a_key(job), |dst| sets.copy_a(job, dst))?;
        self.b
            .stage(s, sets.b_key(job), |dst| sets.copy_b(job, dst))?;
        let plan = sets.pair_plan(job)?;
        let (rows, cols, d) = (job.a.len(), job.b.len(), sets.plan().d);
        let a = self.a.dev.slice(..rows * d);
        let b = self.b.dev.slice(..cols * d);
        let c = &self.cuda;
        match work.task {
            Task::Matrix => {
                let n = rows * cols;
                c.pairwise_similarity_into(&plan, &mut self.values.dev.slice_mut(..n), &a, &b)?;
                download_front(s, &self.values.dev.slice(..n), &mut self.values.host)?;
            }
            Task::TopK(k) => {
                let kc = k.min(cols);
                let n = rows * kc;
                c.pairwise_top_k_into(
                    &plan,
                    &mut self.values.dev.slice_mut(..n),
                    &mut self.indices.dev.slice_mut(..n),
                    &a,
                    &b,
                    kc,
                )?;
                download_front(s, &self.values.dev.slice(..n), &mut self.values.host)?;
                download_front(s, &self.indices.dev.slice(..n), &mut self.indices.host)?;
            }
            Task::Argmax => {
                let t = c.pairwise_argmax(&plan, &a, &b)?;
                expect_len(t.values.len(), rows, "row maxima")?;
                expect_len(t.indices.len(), rows, "row maxima's indices")?;
                download_front(s, &t.values, &mut self.values.host)?;
                download_front(s, &t.indices, &mut self.indices.host)?;
            }
            Task::RowMean => {
                let m = c.pairwise_row_mean(&plan, &a, &b)?;
                expect_len(m.values.len(), rows, "row means")?;
                download_front(s, &m.values, &mut self.values.host)?;
            }
            Task::Mean => {
                let m = c.pairwise_mean(&plan, &a, &b)?;
                expect_len(m.values.len(), 1, "mean")?;
                download_front(s, &m.values, &mut self.values.host)?;
            }
            Task::Greedy => {
                let r = c.pairwise_argmax(&plan, &a, &b)?;
                expect_len(r.values.len(), rows, "row maxima")?;
                download_front(s, &r.values, &mut self.values.host)?;
                let swapped = sets.swapped_plan(job)?;
                let t = c.pairwise_argmax(&swapped, &b, &a)?;
                expect_len(t.values.len(), cols, "column maxima")?;
                download_front(s, &t.values, &mut self.cols.host)?;
            }
        }
        // Buffers the calls allocated (argmax's, the means') are freed in stream order after
        // the copies above (with the driver's memory pools, which every GPU the kernels are
        // built for has; without them a free would wait for the stream).
        Ok(())
    }
}
