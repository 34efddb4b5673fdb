//! The backends of `cosim pairwise`: the [`Backend`] trait (the pairwise functions on host
//! buffers), the CPU's, and the GPU's (`gpu`: uploads, the library's CUDA calls, downloads,
//! and the chunk sizes that fit the device).

use crate::chunks::{Done, PairWork};
use crate::dtype::Compute;
use crate::error::Result;
use cosim::pairwise::{MatrixBlock, PairPlan, SetScores, TopK};
use cosim::{cpu, Device};

/// The pairwise functions of one backend, on host buffers: the inputs go in as slices and
/// the results come back as host vectors (a GPU backend uploads and downloads). The
/// chunked path ([`crate::chunks`]) runs its chunk pairs through [`Backend::run_pairs`].
pub trait Backend<T> {
    /// `CPU` or the GPU's name, for the progress line.
    fn name(&self) -> String;
    /// The matrix in blocks of whole rows of at most `budget` bytes, handed to `f` in order.
    fn matrix_blocks(
        &self,
        plan: &PairPlan,
        a: &[T],
        b: &[T],
        budget: usize,
        f: &mut dyn FnMut(MatrixBlock<&[T]>) -> Result<()>,
    ) -> Result<()>;
    /// The `k` best of every row, sorted by `outranks`.
    fn top_k(
        &self,
        plan: &PairPlan,
        a: &[T],
        b: &[T],
        k: usize,
    ) -> cosim::Result<TopK<Vec<T>, Vec<u32>>>;
    /// Every row's best value and its column.
    fn argmax(&self, plan: &PairPlan, a: &[T], b: &[T]) -> cosim::Result<TopK<Vec<T>, Vec<u32>>>;
    /// Every row's mean.
    fn row_mean(&self, plan: &PairPlan, a: &[T], b: &[T]) -> cosim::Result<Vec<T>>;
    /// Every matrix's mean.
    fn mean(&self, plan: &PairPlan, a: &[T], b: &[T]) -> cosim::Result<Vec<T>>;
    /// Greedy matching: precision, recall and f1 per batch.
    fn greedy(
        &self,
        plan: &PairPlan,
        a: &[T],
        b: &[T],
        wa: Option<&[T]>,
        wb: Option<&[T]>,
    ) -> cosim::Result<SetScores<Vec<T>>>;
    /// Runs the chunked path's chunk pairs and hands each pair's results to `done`, in the
    /// order of `work.jobs`; by default one pair after another through the calls above
    /// ([`crate::chunks::serial`]).
    ///
    /// # Errors
    /// Library and device failures, and whatever `done` returns.
    fn run_pairs(&self, work: &PairWork<'_, T>, done: &mut Done<'_, T>) -> Result<()>
    where
        T: Compute,
    {
        crate::chunks::serial(self, work, done)
    }
}

/// The CPU backend: `cosim::cpu`'s pairwise functions.
pub struct Cpu;

impl<T: Compute> Backend<T> for Cpu {
    fn name(&self) -> String {
        Device::Cpu.describe()
    }

    fn matrix_blocks(
        &self,
        plan: &PairPlan,
        a: &[T],
        b: &[T],
        budget: usize,
        f: &mut dyn FnMut(MatrixBlock<&[T]>) -> Result<()>,
    ) -> Result<()> {
        cpu::pairwise_similarity_blocks(plan, a, b, budget, f)
    }

    fn top_k(
        &self,
        plan: &PairPlan,
        a: &[T],
        b: &[T],
        k: usize,
    ) -> cosim::Result<TopK<Vec<T>, Vec<u32>>> {
        cpu::pairwise_top_k(plan, a, b, k)
    }

    fn argmax(&self, plan: &PairPlan, a: &[T], b: &[T]) -> cosim::Result<TopK<Vec<T>, Vec<u32>>> {
        cpu::pairwise_argmax(plan, a, b)
    }

    fn row_mean(&self, plan: &PairPlan, a: &[T], b: &[T]) -> cosim::Result<Vec<T>> {
        cpu::pairwise_row_mean(plan, a, b).map(|s| s.values)
    }

    fn mean(&self, plan: &PairPlan, a: &[T], b: &[T]) -> cosim::Result<Vec<T>> {
        cpu::pairwise_mean(plan, a, b).map(|s| s.values)
    }

    fn greedy(
        &self,
        plan: &PairPlan,
        a: &[T],
        b: &[T],
        wa: Option<&[T]>,
        wb: Option<&[T]>,
    ) -> cosim::Result<SetScores<Vec<T>>> {
        cpu::set_similarity(plan, a, b, wa, wb)
    }
}

/// The CUDA backend: inputs uploaded once per call, `cosim::cuda::Cuda`'s pairwise
/// functions, results downloaded; the matrix block by block.
#[cfg(feature = "cuda")]
pub mod gpu {
    use super::Backend;
    use crate::chunks::pipeline::Pipeline;
    use crate::chunks::{Done, PairWork};
    use crate::dtype::Compute;
    use crate::error::Result;
    use crate::options::GlobalOpts;
    use crate::pairwise::Mode;
    use cosim::cuda::{Cuda, PairElement};
    use cosim::pairwise::{MatrixBlock, PairPlan, SetScores, TopK};
    use cosim::Device;

    /// A CUDA device running the pairwise kernels, and the options its notes obey.
    pub struct Gpu<'a>(pub &'a Cuda, pub &'a GlobalOpts);

    /// Chunks on the GPU are at most this large per set (each of the pipeline's two slots
    /// holds one of each set, in device memory and in pinned host memory).
    const GPU_CHUNK_BYTES: usize = 256 << 20;

    /// The bytes per chunk of each set when the job would not fit in the GPU's free memory
    /// (80% of it, as `blocks.rs` counts); `None` (run whole) when it fits or the free
    /// memory cannot be read. The job is estimated, not measured: both sets as uploaded,
    /// the mode's outputs (the matrix: one block of at most `budget` bytes), and the
    /// library's per-vector scratch (inverse norms, maxima: 8 bytes per vector of each
    /// set and batch, plus 4 bytes per component of a mean vector).
    pub fn chunk_bytes(
        c: &Cuda,
        plan: &PairPlan,
        mode: Mode<'_>,
        budget: usize,
        elem: usize,
    ) -> Option<usize> {
        let (free, _) = c.stream().context().mem_get_info().ok()?;
        let usable = free / 10 * 8;
        let sets = (plan.a_vectors() + plan.b_vectors())
            .saturating_mul(plan.d)
            .saturating_mul(elem);
        let (rows, cols) = (plan.batch * plan.n, plan.batch * plan.m);
        let outputs = match mode {
            Mode::Matrix(_) => budget.min(rows.saturating_mul(plan.m).saturating_mul(elem)),
            Mode::TopK(k, _) => rows.saturating_mul(k).saturating_mul(elem + 4),
            Mode::Argmax(_) => rows * (elem + 4),
            Mode::RowMean(_) => rows * elem,
            Mode::Mean(_) => plan.batch * elem,
            Mode::Greedy(_) => (rows + cols) * 4 + 3 * plan.batch * elem,
        };
        // Norms and keys, mean vectors, and top-k's lists (8 bytes per entry, chunked by
        // the library to at most TOPK_SCRATCH_BYTES).
        let lists = match mode {
            Mode::TopK(k, _) => rows
                .saturating_mul(k)
                .saturating_mul(8)
                .min(cosim::cuda::TOPK_SCRATCH_BYTES),
            _ => 0,
        };
        let scratch = (rows + cols) * 8 + 2 * plan.batch * plan.d * 4 + lists;
        let job = sets.saturating_add(outputs).saturating_add(scratch);
        if job <= usable {
            return None;
        }
        // The pipeline's two slots each hold a chunk of each set and one pair's outputs and
        // scratch: a matrix piece of at most `budget` bytes, or top-k's lists (at most
        // TOPK_SCRATCH_BYTES); and per vector of A's chunk, its results (top-k: k values and
        // indices). Two thirds of what is left go to the four chunks and the results, the
        // rest is kept for the per-vector scratch and allocator slack.
        let per_slot = match mode {
            Mode::Matrix(_) => budget,
            Mode::TopK(..) => cosim::cuda::TOPK_SCRATCH_BYTES,
            _ => 0,
        };
        let per_vector = match mode {
            Mode::TopK(k, _) => k.saturating_mul(elem + 4),
            Mode::Argmax(_) => elem + 4,
            Mode::RowMean(_) | Mode::Greedy(_) => elem,
            Mode::Matrix(_) | Mode::Mean(_) => 0,
        };
        let vector = plan.d.saturating_mul(elem).max(1) as f64;
        let left = usable.saturating_sub(2 * per_slot) as f64 * 2.0 / 3.0;
        let chunk = left / (4.0 + 2.0 * per_vector as f64 / vector);
        Some((chunk as usize).clamp(1, GPU_CHUNK_BYTES))
    }

    impl<T: Compute + PairElement> Backend<T> for Gpu<'_> {
        fn name(&self) -> String {
            Device::Cuda(self.0.clone()).describe()
        }

        /// Chunk pairs run through the two-stream pipeline ([`crate::chunks::pipeline`]), or
        /// one after another (with a note) when its buffers cannot be had.
        fn run_pairs(&self, work: &PairWork<'_, T>, done: &mut Done<'_, T>) -> Result<()> {
            match Pipeline::new(self.0, work) {
                Ok(p) => p.run(work, done),
                Err(e) => {
                    self.1.note(format!(
                        "no two-stream pipeline for the chunks ({e}): running them one after \
                         another"
                    ));
                    crate::chunks::serial(self, work, done)
                }
            }
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

        fn top_k(
            &self,
            plan: &PairPlan,
            a: &[T],
            b: &[T],
            k: usize,
        ) -> cosim::Result<TopK<Vec<T>, Vec<u32>>> {
            let c = self.0;
            let (da, db) = (c.upload(a)?, c.upload(b)?);
            let t = c.pairwise_top_k(plan, &da, &db, k)?;
            Ok(TopK {
                values: c.download(&t.values)?,
                indices: c.download(&t.indices)?,
                shape: t.shape,
            })
        }

        fn argmax(
            &self,
            plan: &PairPlan,
            a: &[T],
            b: &[T],
        ) -> cosim::Result<TopK<Vec<T>, Vec<u32>>> {
            let c = self.0;
            let (da, db) = (c.upload(a)?, c.upload(b)?);
            let t = c.pairwise_argmax(plan, &da, &db)?;
            Ok(TopK {
                values: c.download(&t.values)?,
                indices: c.download(&t.indices)?,
                shape: t.shape,
            })
        }

        fn row_mean(&self, plan: &PairPlan, a: &[T], b: &[T]) -> cosim::Result<Vec<T>> {
            let c = self.0;
            let (da, db) = (c.upload(a)?, c.upload(b)?);
            c.download(&c.pairwise_row_mean(plan, &da, &db)?.values)
        }

        fn mean(&self, plan: &PairPlan, a: &[T], b: &[T]) -> cosim::Result<Vec<T>> {
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
        ) -> cosim::Result<SetScores<Vec<T>>> {
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
    }
}
