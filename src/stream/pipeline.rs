//! The GPU's runner of chunk pairs: two slots, each with
//! its own stream, pinned staging buffers and device buffers for one chunk pair. While one
//! slot's pair computes, the host stages the other slot's chunks (reading the memory-mapped
//! inputs, gathering a cols-layout set's columns) and queues their upload, so disk reads
//! and host→device copies overlap the kernels. Results come back through pinned buffers
//! one pair later, in order.
//!
//! A slot keeps the chunks it last uploaded and uploads only a chunk it does not hold: A's
//! chunk once per slot for each row of chunk pairs, B's on most pairs (never when B is one
//! chunk).
//!
//! The pinned buffers rely on cudarc's event tracking (on unless a caller turns it off) to
//! wait for the copies from and to them.

use super::pinned::{download_front, pinned};
use super::runner::{expect_len, Done, PairOut, PairWork, Task};
use super::sets::ChunkKey;
use crate::cuda::{Cuda, PairElement};
use crate::error::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DeviceRepr, PinnedHostSlice, ValidAsZeroBits,
};
use std::sync::Arc;

/// The pipeline's two slots, with buffers for the largest chunk pair of one operation.
pub struct Pipeline<T: PairElement> {
    slots: [Slot<T>; 2],
}

impl<T: PairElement> Pipeline<T> {
    /// Two streams on `cuda`'s device and the slots' buffers for `work`.
    ///
    /// # Errors
    /// Out of device or pinned host memory, a driver failure. The context must track events
    /// (the caller checks).
    pub fn new(cuda: &Cuda, work: &PairWork<'_, T>) -> Result<Pipeline<T>> {
        let ctx = cuda.stream().context().clone();
        Ok(Pipeline {
            slots: [Slot::new(&ctx, work)?, Slot::new(&ctx, work)?],
        })
    }

    /// Runs `work`'s chunk pairs, two at a time on the two streams, handing each pair's
    /// results to `done` in the order of `work.jobs`.
    ///
    /// # Errors
    /// Library and device failures, and whatever `done` returns.
    pub fn run(mut self, work: &PairWork<'_, T>, done: &mut Done<'_, T>) -> Result<()> {
        for i in 0..work.jobs.len() {
            (work.go_on)()?;
            let slot = &mut self.slots[i % 2];
            // This slot's previous pair (two back) is handed back before its buffers are
            // reused; the other slot's pair (one back) keeps computing meanwhile.
            slot.hand_back(work, done)?;
            slot.launch(work, i)?;
        }
        self.slots.sort_by_key(|s| s.pending);
        for slot in &mut self.slots {
            slot.hand_back(work, done)?;
        }
        Ok(())
    }
}

/// One chunk's buffers in a slot.
struct Staged<T: PairElement> {
    host: PinnedHostSlice<T>,
    dev: CudaSlice<T>,
    /// The chunk the device buffer holds, or will once its queued upload is done.
    holds: Option<ChunkKey>,
}

impl<T: PairElement> Staged<T> {
    /// Buffers for chunks of up to `len` elements.
    fn new(ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>, len: usize) -> Result<Staged<T>> {
        Ok(Staged {
            host: pinned(ctx, len, true)?,
            dev: stream.alloc_zeros::<T>(len.max(1))?,
            holds: None,
        })
    }

    /// Makes the device buffer hold chunk `key`: unless it already does, waits until the
    /// pinned buffer's previous upload is done, lets `fill` write the chunk into it and
    /// queues its upload on `stream` (after the slot's previous pair, which read the old
    /// chunk).
    fn stage(
        &mut self,
        stream: &Arc<CudaStream>,
        key: ChunkKey,
        fill: impl FnOnce(&mut [T]) -> Result<()>,
    ) -> Result<()> {
        if self.holds == Some(key) {
            return Ok(());
        }
        self.holds = None;
        fill(self.host.as_mut_slice()?)?;
        stream.memcpy_htod(&self.host, &mut self.dev)?;
        self.holds = Some(key);
        Ok(())
    }
}

/// A kind of result: a device buffer the `_into` calls write (matrix and top-k only) and
/// the pinned host buffer it comes back through.
struct Results<E: DeviceRepr + ValidAsZeroBits> {
    dev: CudaSlice<E>,
    host: PinnedHostSlice<E>,
}

impl<E: DeviceRepr + ValidAsZeroBits> Results<E> {
    /// Room for `len` results, on the device too when `device`.
    fn new(
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        len: usize,
        device: bool,
    ) -> Result<Results<E>> {
        Ok(Results {
            dev: stream.alloc_zeros::<E>(if device { len.max(1) } else { 1 })?,
            host: pinned(ctx, len, false)?,
        })
    }

    /// The first `len` results that came back, once their copy is done.
    fn take(&self, len: usize) -> Result<&[E]> {
        self.host
            .as_slice()?
            .get(..len)
            .ok_or_else(|| Error::Internal("a chunk pair's results overflow their buffer".into()))
    }
}

/// One slot of the pipeline.
struct Slot<T: PairElement> {
    cuda: Cuda,
    stream: Arc<CudaStream>,
    a: Staged<T>,
    b: Staged<T>,
    values: Results<T>,
    indices: Results<u32>,
    cols: Results<T>,
    /// The pair this slot launched and has not handed back.
    pending: Option<usize>,
}

impl<T: PairElement> Slot<T> {
    /// A slot on a new stream, with buffers for the largest chunk pair of `work`.
    fn new(ctx: &Arc<CudaContext>, work: &PairWork<'_, T>) -> Result<Slot<T>> {
        let stream = ctx.new_stream()?;
        let (ca, cb, d) = (work.chunks.a, work.chunks.b, work.sets.plan().d);
        let (nv, ni, nc) = work.task.result_lens(ca, cb);
        let into = matches!(work.task, Task::Matrix | Task::TopK(_));
        Ok(Slot {
            cuda: Cuda::with_stream(stream.clone())?,
            a: Staged::new(ctx, &stream, ca * d)?,
            b: Staged::new(ctx, &stream, cb * d)?,
            values: Results::new(ctx, &stream, nv, into)?,
            indices: Results::new(ctx, &stream, ni, into)?,
            cols: Results::new(ctx, &stream, nc, false)?,
            stream,
            pending: None,
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
        self.pending = Some(i);
        Ok(())
    }

    /// Waits for this slot's pending pair's results and hands them to `done`.
    fn hand_back(&mut self, work: &PairWork<'_, T>, done: &mut Done<'_, T>) -> Result<()> {
        let Some(i) = self.pending.take() else {
            return Ok(());
        };
        let job = &work.jobs[i];
        let (nv, ni, nc) = work.task.result_lens(job.a.len(), job.b.len());
        done(
            i,
            PairOut {
                values: self.values.take(nv)?,
                indices: self.indices.take(ni)?,
                cols: self.cols.take(nc)?,
            },
        )
    }
}
