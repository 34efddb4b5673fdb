//! What runs the chunk pairs of one device: the [`Runner`] of a backend, what every pair
//! computes ([`Task`]) and hands back ([`PairOut`]), and [`serial`], the runner for a backend
//! without a pipeline of its own (the CPU). A runner's contract: the results of
//! `work.jobs` come back in order, each pair whole.

use super::sets::{PairJob, Sets};
use crate::cpu;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::pairwise::{MatrixBlock, PairPlan, SetScores, TopK};

/// What every chunk pair computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// The pair's matrix `[a.len(), b.len()]`.
    Matrix,
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

impl Task {
    /// The lengths of a pair's results: values, indices, column maxima.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the GPU pipeline
    pub fn result_lens(self, rows: usize, cols: usize) -> (usize, usize, usize) {
        match self {
            Task::Matrix => (rows * cols, 0, 0),
            Task::TopK(k) => {
                let n = rows * k.min(cols);
                (n, n, 0)
            }
            Task::Argmax => (rows, rows, 0),
            Task::RowMean => (rows, 0, 0),
            Task::Mean => (1, 0, 0),
            Task::Greedy => (rows, 0, cols),
        }
    }
}

/// A chunk pair's results, borrowed from the runner's buffers.
#[derive(Clone, Copy, Debug)]
pub struct PairOut<'r, T> {
    /// The task's values, as [`Task`] lists them.
    pub values: &'r [T],
    /// Top-k and argmax: the chunk-local column of every value; empty otherwise.
    pub indices: &'r [u32],
    /// Greedy: every column's best value; empty otherwise.
    pub cols: &'r [T],
}

/// Where a runner hands each pair's results: the pair's index in [`PairWork::jobs`], and
/// its results.
pub type Done<'f, T> = dyn FnMut(usize, PairOut<'_, T>) -> Result<()> + 'f;

/// The chunk pairs of one task, for a runner.
pub struct PairWork<'w, T> {
    pub sets: &'w Sets<'w, T>,
    pub task: Task,
    /// The largest chunks: what a runner's buffers must hold.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the GPU pipeline
    pub chunks: super::Chunks,
    /// The pairs, in the order their results must come back.
    pub jobs: &'w [PairJob],
    /// Asked before each pair is started: an error (the caller stopped, another device
    /// failed) ends the run.
    pub go_on: &'w (dyn Fn() -> Result<()> + Sync),
}

/// A backend's calls on host buffers (the inputs go in as slices and the results come back
/// as host vectors; a GPU runner uploads and downloads), and its runner of chunk pairs.
pub trait Runner<T: Element>: Sync {
    /// The whole matrix, into `out`.
    fn matrix_into(&self, plan: &PairPlan, a: &[T], b: &[T], out: &mut [T]) -> Result<()>;
    /// Whether this backend computes on host memory (the CPU): then a matrix block is
    /// computed in place, without a runner's buffers.
    fn on_host(&self) -> bool {
        false
    }
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
    fn top_k(&self, plan: &PairPlan, a: &[T], b: &[T], k: usize) -> Result<TopK<Vec<T>, Vec<u32>>>;
    /// Every row's best value and its column.
    fn argmax(&self, plan: &PairPlan, a: &[T], b: &[T]) -> Result<TopK<Vec<T>, Vec<u32>>>;
    /// Every row's mean.
    fn row_mean(&self, plan: &PairPlan, a: &[T], b: &[T]) -> Result<Vec<T>>;
    /// Every matrix's mean.
    fn mean(&self, plan: &PairPlan, a: &[T], b: &[T]) -> Result<Vec<T>>;
    /// Greedy matching: precision, recall and f1 per batch.
    fn greedy(
        &self,
        plan: &PairPlan,
        a: &[T],
        b: &[T],
        wa: Option<&[T]>,
        wb: Option<&[T]>,
    ) -> Result<SetScores<Vec<T>>>;
    /// Device bytes this backend may fill (its free memory, within the caller's budget);
    /// `None` for host memory, which the engine does not size.
    fn usable_bytes(&self, budget: Option<usize>) -> Result<Option<usize>>;
    /// Device bytes one pair of `task` on `plan` allocates besides its inputs.
    fn pair_bytes(&self, plan: &PairPlan, task: Task) -> usize;
    /// Device bytes the whole call of `task` on `plan` allocates besides its inputs (a
    /// matrix in blocks of `budget`).
    fn whole_bytes(&self, plan: &PairPlan, task: Task, budget: usize) -> usize;
    /// How fast this device is against others (its share of a corpus split across devices).
    fn weight(&self) -> usize;
    /// Runs the pairs of `work` and hands each pair's results to `done`, in the order of
    /// `work.jobs`; by default one pair after another through the calls above.
    ///
    /// # Errors
    /// Backend failures, and whatever `done` or `work.go_on` returns.
    fn run_pairs(&self, work: &PairWork<'_, T>, done: &mut Done<'_, T>) -> Result<()> {
        serial(self, work, done)
    }
}

/// Runs `work`'s pairs one after another through `runner`'s calls on host buffers.
///
/// # Errors
/// Backend failures, and whatever `done` or `work.go_on` returns.
pub fn serial<T: Element, R: Runner<T> + ?Sized>(
    runner: &R,
    work: &PairWork<'_, T>,
    done: &mut Done<'_, T>,
) -> Result<()> {
    let sets = work.sets;
    let mut block = Vec::new();
    for (i, job) in work.jobs.iter().enumerate() {
        (work.go_on)()?;
        let plan = sets.pair_plan(job)?;
        let (a, b) = (sets.a_chunk(job), sets.b_chunk(job));
        let whole = |values, indices| PairOut {
            values,
            indices,
            cols: &[],
        };
        match work.task {
            Task::Matrix => {
                block.clear();
                block.resize(job.a.len() * job.b.len(), T::from_f64(0.0));
                runner.matrix_into(&plan, &a, &b, &mut block)?;
                done(i, whole(&block, &[]))?;
            }
            Task::TopK(k) => {
                let t = runner.top_k(&plan, &a, &b, k.min(job.b.len()))?;
                done(i, whole(&t.values, &t.indices))?;
            }
            Task::Argmax => {
                let t = runner.argmax(&plan, &a, &b)?;
                done(i, whole(&t.values, &t.indices))?;
            }
            Task::RowMean => done(i, whole(&runner.row_mean(&plan, &a, &b)?, &[]))?,
            Task::Mean => done(i, whole(&runner.mean(&plan, &a, &b)?, &[]))?,
            Task::Greedy => {
                let rows = runner.argmax(&plan, &a, &b)?;
                let swapped = sets.swapped_plan(job)?;
                let cols = runner.argmax(&swapped, &b, &a)?;
                done(
                    i,
                    PairOut {
                        values: &rows.values,
                        indices: &[],
                        cols: &cols.values,
                    },
                )?;
            }
        }
    }
    Ok(())
}

/// The CPU: `cosim::cpu`'s pairwise functions.
pub struct CpuRunner;

impl<T: Element> Runner<T> for CpuRunner {
    fn matrix_into(&self, plan: &PairPlan, a: &[T], b: &[T], out: &mut [T]) -> Result<()> {
        cpu::pairwise_similarity_into(plan, out, a, b).map(|_| ())
    }

    fn on_host(&self) -> bool {
        true
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

    fn top_k(&self, plan: &PairPlan, a: &[T], b: &[T], k: usize) -> Result<TopK<Vec<T>, Vec<u32>>> {
        cpu::pairwise_top_k(plan, a, b, k)
    }

    fn argmax(&self, plan: &PairPlan, a: &[T], b: &[T]) -> Result<TopK<Vec<T>, Vec<u32>>> {
        cpu::pairwise_argmax(plan, a, b)
    }

    fn row_mean(&self, plan: &PairPlan, a: &[T], b: &[T]) -> Result<Vec<T>> {
        cpu::pairwise_row_mean(plan, a, b).map(|s| s.values)
    }

    fn mean(&self, plan: &PairPlan, a: &[T], b: &[T]) -> Result<Vec<T>> {
        cpu::pairwise_mean(plan, a, b).map(|s| s.values)
    }

    fn greedy(
        &self,
        plan: &PairPlan,
        a: &[T],
        b: &[T],
        wa: Option<&[T]>,
        wb: Option<&[T]>,
    ) -> Result<SetScores<Vec<T>>> {
        cpu::set_similarity(plan, a, b, wa, wb)
    }

    fn usable_bytes(&self, _budget: Option<usize>) -> Result<Option<usize>> {
        Ok(None)
    }

    fn pair_bytes(&self, _plan: &PairPlan, _task: Task) -> usize {
        0
    }

    fn whole_bytes(&self, _plan: &PairPlan, _task: Task, _budget: usize) -> usize {
        0
    }

    fn weight(&self) -> usize {
        1
    }
}

/// Checks that a runner hands results back as its contract says: pair by pair in order,
/// and every pair.
#[derive(Debug)]
pub struct InOrder {
    next: usize,
    total: usize,
}

impl InOrder {
    pub fn new(total: usize) -> InOrder {
        InOrder { next: 0, total }
    }

    /// The job of pair `i`, or an internal error unless `i` is the pair due; the pair is
    /// then marked done.
    pub fn take<'j>(&mut self, i: usize, jobs: &'j [PairJob]) -> Result<&'j PairJob> {
        let job = jobs.get(i).filter(|_| i == self.next).ok_or_else(|| {
            Error::Internal(format!(
                "chunk pair {i}'s results came back when pair {} was due",
                self.next
            ))
        })?;
        self.next += 1;
        Ok(job)
    }

    /// An internal error unless every pair came back.
    pub fn all_done(&self) -> Result<()> {
        if self.next == self.total {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "{} of {} chunk pairs came back",
                self.next, self.total
            )))
        }
    }
}

/// An internal error unless a chunk pair's result has the length its pair implies.
///
/// # Errors
/// When the lengths differ.
pub fn expect_len(got: usize, want: usize, what: &str) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "a chunk pair's {what} hold {got} values, not {want}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_must_come_back_in_order_and_all() {
        let job = |batch| PairJob {
            batch,
            a: 0..1,
            b: 0..1,
        };
        let jobs = [job(0), job(1), job(2)];
        let mut o = InOrder::new(3);
        assert!(o.take(1, &jobs).is_err());
        assert_eq!(o.take(0, &jobs).unwrap(), &jobs[0]);
        assert!(o.take(0, &jobs).is_err());
        assert!(o.take(2, &jobs).is_err());
        o.take(1, &jobs).unwrap();
        assert!(o.all_done().is_err());
        assert!(o.take(3, &jobs).is_err());
        o.take(2, &jobs).unwrap();
        o.all_done().unwrap();
    }
}
