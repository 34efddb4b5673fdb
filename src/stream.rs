//! The streaming engine: pairwise jobs on host-resident sets of any size, on the CPU, one
//! GPU, or several, with the library sizing its own work.
//!
//! A [`PairStream`] takes the two sets as host slices (a memory-mapped file is one: its
//! pages are read as chunks are staged, never loaded whole) and runs every pairwise
//! operation on them: the matrix handed block by block to a caller's sink
//! ([`PairStream::matrix`]), top-k, argmax, row means, means and greedy matching.
//!
//! - **Sizing.** A job that fits a device (its sets, and what the call allocates, from
//!   [`crate::cuda::Cuda::pair_workspace_bytes`]) within 90% of its free memory, or a
//!   caller's [`PairStream::memory_budget`], runs whole; else its sets are cut into chunks
//!   of whole vectors (A's chunks are blocks of rows of the matrix, B's blocks of columns),
//!   as large as fit two at a time, and every chunk pair runs. On the CPU a job runs whole
//!   unless [`PairStream::chunk_bytes`] forces chunks (which is how the tests check the
//!   merges against whole runs).
//! - **The GPU pipeline.** Per device, two slots on two streams with pinned staging: while
//!   one slot's pair computes, the next pair's chunks are read (and a cols-layout chunk
//!   gathered), staged and uploaded, a chunk already on the device is not uploaded again,
//!   and results come back one pair later.
//! - **Several devices.** For the reductions, B is cut into contiguous shards, one per
//!   device, sized by the devices' SM counts; every device runs its shard against all of A
//!   on its own thread, and the per-row results are merged as chunk results are (see
//!   `reduce`): top-k and argmax by the ranking order of [`crate::pairwise::outranks`]
//!   with global indices, exactly the whole result in f32 and f64; means and maxima
//!   combined in f64. For the matrix, row blocks go to the devices in turn and reach the
//!   sink in order.
//! - **The elementwise family** ([`elementwise`]: cosine along a dim, per-channel
//!   similarity, reweighting) on inputs larger than a GPU runs in blocks of rows along dim
//!   0, through the same kind of two-stream pipeline.
//! - **Progress and cancellation.** [`PairStream::on_progress`] sees every finished chunk
//!   pair and may stop the run: the call then returns [`Error::Cancelled`], and the matrix
//!   sink is not called again.
//!
//! ```
//! use cosim::pairwise::{Layout, PairPlan};
//! use cosim::stream::PairStream;
//! // 3 queries and 5 keys of 2 components, in chunks of 2 vectors (forced).
//! let q = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
//! let k = [1.0f32, 0.1, 0.0, 2.0, -1.0, 0.0, 3.0, 3.0, 0.5, 0.0];
//! let plan = PairPlan::new(&[3, 2], Layout::Rows, &[5, 2], Layout::Rows)?;
//! let top = PairStream::new(&plan, &q, &k)?.chunk_bytes(16).top_k(2)?;
//! assert_eq!(top.indices, vec![4, 0, 1, 3, 3, 0]);
//! # Ok::<(), cosim::Error>(())
//! ```

mod blocks;
mod chunks;
mod control;
#[cfg(feature = "cuda")]
mod gpu;
mod matrix;
#[cfg(feature = "cuda")]
mod pair_pipeline;
#[cfg(feature = "cuda")]
mod pinned;
#[cfg(feature = "cuda")]
mod pipeline;
mod reduce;
mod runner;
mod sets;
mod sizing;

pub use blocks::{elementwise, Computed, Elementwise};
pub use chunks::Chunks;
pub use control::{OnProgress, Progress};
pub use sizing::MAX_CHUNK_BYTES;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::pairwise::{MatrixBlock, PairPlan, SetScores, TopK};
use crate::{Device, Similarity};
use control::{first_error, Control};
use reduce::{Partial, Want, Whole};
use runner::Runner;
use sets::Sets;
use sizing::{Cut, Limits};
use std::ops::Range;

/// Element types the engine streams: f32, f16 and bf16 on every device, f64 on the CPU (the
/// GPU's pairwise kernels take no f64).
pub trait StreamElement: Element + Send + Sync + sealed::Sealed {}
impl StreamElement for f32 {}
impl StreamElement for f64 {}
impl StreamElement for half::f16 {}
impl StreamElement for half::bf16 {}

mod sealed {
    use super::runner::{CpuRunner, Runner};
    use crate::{Device, Result};

    /// The runner of a device for an element type.
    pub trait Sealed: crate::Element {
        fn runner(device: &Device) -> Result<Box<dyn Runner<Self> + '_>>;
    }

    macro_rules! on_every_device {
        ($($t:ty),*) => {$(
            impl Sealed for $t {
                fn runner(device: &Device) -> Result<Box<dyn Runner<Self> + '_>> {
                    match device {
                        Device::Cpu => Ok(Box::new(CpuRunner)),
                        #[cfg(feature = "cuda")]
                        Device::Cuda(c) => Ok(Box::new(super::gpu::CudaRunner(c))),
                    }
                }
            }
        )*};
    }
    on_every_device!(f32, half::f16, half::bf16);

    impl Sealed for f64 {
        fn runner(device: &Device) -> Result<Box<dyn Runner<Self> + '_>> {
            match device {
                Device::Cpu => Ok(Box::new(CpuRunner)),
                #[cfg(feature = "cuda")]
                Device::Cuda(_) => Err(crate::Error::Unsupported(
                    "the GPU's pairwise kernels take f16, bf16 and f32: stream f64 sets on \
                     Device::Cpu, or convert them to f32"
                        .into(),
                )),
            }
        }
    }
}

/// The default bytes of whole rows per matrix block handed to the sink.
pub const DEFAULT_BLOCK_BYTES: usize = 256 << 20;
/// Matrix blocks are cut to an eighth of the rows when they stay at least this large.
const OVERLAP_BLOCK_BYTES: usize = 16 << 20;

/// A pairwise job on host-resident sets, to be run by one of its operations.
pub struct PairStream<'a, T> {
    plan: &'a PairPlan,
    a: &'a [T],
    b: &'a [T],
    devices: Vec<Device>,
    limits: Limits,
    progress: Option<OnProgress<'a>>,
}

impl<'a, T: StreamElement> PairStream<'a, T> {
    /// The job of `plan` on the sets `a` and `b`, on the CPU until [`PairStream::on`] says
    /// otherwise.
    ///
    /// # Errors
    /// [`Error::LenMismatch`] when a buffer does not hold what the plan's shapes promise.
    pub fn new(plan: &'a PairPlan, a: &'a [T], b: &'a [T]) -> Result<PairStream<'a, T>> {
        plan.check_inputs(a.len(), b.len())?;
        Ok(PairStream {
            plan,
            a,
            b,
            devices: vec![Device::Cpu],
            limits: Limits {
                chunk_bytes: None,
                memory: None,
                block_bytes: DEFAULT_BLOCK_BYTES,
            },
            progress: None,
        })
    }

    /// Runs on these devices (several GPUs share the work; see the module's docs).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for an empty list, or a GPU for an element type it does not
    /// take (f64).
    pub fn on(mut self, devices: &[Device]) -> Result<PairStream<'a, T>> {
        if devices.is_empty() {
            return Err(Error::Unsupported(
                "a stream needs at least one device".into(),
            ));
        }
        for d in devices {
            T::runner(d)?;
        }
        self.devices = devices.to_vec();
        Ok(self)
    }

    /// Each device's part takes at most `bytes` of its memory (inputs, results and scratch of
    /// both pipeline slots), instead of 90% of its free memory.
    pub fn memory_budget(mut self, bytes: usize) -> PairStream<'a, T> {
        self.limits.memory = Some(bytes);
        self
    }

    /// Cuts the sets into chunks of at most `bytes` each (at least one vector), on any
    /// device, whatever fits: for tests, and for a caller who sizes chunks itself.
    pub fn chunk_bytes(mut self, bytes: usize) -> PairStream<'a, T> {
        self.limits.chunk_bytes = Some(bytes.max(1));
        self
    }

    /// The matrix is handed over in blocks of whole rows of at most `bytes` (at least one
    /// row); [`DEFAULT_BLOCK_BYTES`] by default.
    pub fn block_bytes(mut self, bytes: usize) -> PairStream<'a, T> {
        self.limits.block_bytes = bytes.max(1);
        self
    }

    /// Calls `f` after every chunk pair; `f` returning `Break` stops the run.
    pub fn on_progress(mut self, f: OnProgress<'a>) -> PairStream<'a, T> {
        self.progress = Some(f);
        self
    }

    /// The matrix `[B?, N, M]`, handed to `sink` block by block in order (batch by batch,
    /// whole rows, at most [`PairStream::block_bytes`] each, and no more than an eighth of
    /// the rows where that still makes blocks of 16 MiB), on the caller's thread while the
    /// devices compute the next blocks: a sink that writes a file overlaps the computation.
    ///
    /// # Errors
    /// Device failures, [`Error::Cancelled`], and whatever `sink` returns (which stops the
    /// run: `sink` is not called again).
    pub fn matrix<E: From<Error>>(
        &self,
        mut sink: impl FnMut(MatrixBlock<&[T]>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let plan = self.plan;
        let runners = self.runners()?;
        let sets = Sets::new(plan, self.a, self.b);
        let e = std::mem::size_of::<T>();
        // An eighth of the rows (blocks of at least 16 MiB), so that the sink's work on one
        // block overlaps the next one's computation.
        let overlap = plan
            .n
            .div_ceil(8)
            .max(plan.rows_per_block(OVERLAP_BLOCK_BYTES, e));
        let cap = plan.rows_per_block(self.limits.block_bytes, e).min(overlap);
        let mut cuts = Vec::with_capacity(runners.len());
        for r in &runners {
            let cut = sizing::cut(
                &**r,
                &sets,
                runner::Task::Matrix,
                plan.m,
                false,
                cap,
                &self.limits,
            )?;
            cuts.push(chunks_of(cut, plan.n, plan.m));
        }
        let a_chunk = cuts.iter().map(|c| c.a).min().unwrap_or(1).max(1);
        let rows = plan.batch * plan.n.div_ceil(a_chunk);
        let total = cuts
            .iter()
            .enumerate()
            .map(|(w, c)| rows_of(rows, w, cuts.len()) * plan.m.div_ceil(c.b.max(1)))
            .sum();
        let control = Control::new(total, self.progress);
        let shares: Vec<matrix::Share<'_, T>> = runners
            .iter()
            .zip(&cuts)
            .map(|(r, c)| matrix::Share {
                runner: &**r,
                b_chunk: c.b,
            })
            .collect();
        matrix::run(&sets, &shares, a_chunk, &control, &mut sink)
    }

    /// The `k` best of every row, `[B?, N, k]`, sorted by `outranks` with global column
    /// indices; as [`crate::cpu::pairwise_top_k`].
    ///
    /// # Errors
    /// [`Error::BadK`], device failures, [`Error::Cancelled`].
    pub fn top_k(&self, k: usize) -> Result<TopK<Vec<T>, Vec<u32>>> {
        self.plan.check_k(k)?;
        match self.reduce(Want::Best(k), false, (None, None))? {
            Whole::Best { values, indices } => Ok(TopK {
                values,
                indices,
                shape: self.plan.top_k_shape(k),
            }),
            _ => Err(Error::Internal("top-k came back as another result".into())),
        }
    }

    /// Every row's best value and column, `[B?, N]`; as [`crate::cpu::pairwise_argmax`].
    ///
    /// # Errors
    /// Device failures, [`Error::Cancelled`].
    pub fn argmax(&self) -> Result<TopK<Vec<T>, Vec<u32>>> {
        match self.reduce(Want::Best(1), true, (None, None))? {
            Whole::Best { values, indices } => Ok(TopK {
                values,
                indices,
                shape: self.plan.row_shape(),
            }),
            _ => Err(Error::Internal("argmax came back as another result".into())),
        }
    }

    /// Every row's mean, `[B?, N]`; as [`crate::cpu::pairwise_row_mean`], up to rounding.
    ///
    /// # Errors
    /// Device failures, [`Error::Cancelled`].
    pub fn row_mean(&self) -> Result<Similarity<Vec<T>>> {
        match self.reduce(Want::RowMean, false, (None, None))? {
            Whole::Values(values) => Ok(Similarity {
                values,
                shape: self.plan.row_shape(),
            }),
            _ => Err(Error::Internal(
                "row means came back as another result".into(),
            )),
        }
    }

    /// Every matrix's mean, `[B?]`; as [`crate::cpu::pairwise_mean`], up to rounding.
    ///
    /// # Errors
    /// Device failures, [`Error::Cancelled`].
    pub fn mean(&self) -> Result<Similarity<Vec<T>>> {
        match self.reduce(Want::Mean, false, (None, None))? {
            Whole::Values(values) => Ok(Similarity {
                values,
                shape: self.plan.batch_shape(),
            }),
            _ => Err(Error::Internal("means came back as another result".into())),
        }
    }

    /// Greedy matching scores per batch; as [`crate::cpu::set_similarity`], up to rounding.
    ///
    /// # Errors
    /// Weights of the wrong length, device failures, [`Error::Cancelled`].
    pub fn set_similarity(&self, wa: Option<&[T]>, wb: Option<&[T]>) -> Result<SetScores<Vec<T>>> {
        self.plan
            .check_weights(wa.map(<[T]>::len), wb.map(<[T]>::len))?;
        match self.reduce(Want::Greedy, false, (wa, wb))? {
            Whole::Scores(s) => Ok(s),
            _ => Err(Error::Internal(
                "set scores came back as another result".into(),
            )),
        }
    }

    /// How each device's part of a reduction would be cut: its shard of B and its chunks
    /// (`None`: run whole).
    ///
    /// # Errors
    /// As the reductions' sizing: driver errors, nothing fitting.
    pub fn chunking(&self, k: Option<usize>) -> Result<Vec<(Range<usize>, Option<Chunks>)>> {
        let runners = self.runners()?;
        let sets = Sets::new(self.plan, self.a, self.b);
        let task = k.map_or(runner::Task::Argmax, runner::Task::TopK);
        let parts = self.parts(&runners, &sets, task)?;
        Ok(parts
            .into_iter()
            .map(|(_, range, cut)| match cut {
                Cut::Whole => (range, None),
                Cut::Chunks(c) => (range, Some(c)),
            })
            .collect())
    }

    /// A runner for every device.
    fn runners(&self) -> Result<Vec<Box<dyn Runner<T> + '_>>> {
        self.devices.iter().map(T::runner).collect()
    }

    /// The devices that get a shard of B (those whose share is not empty), each with its
    /// shard and its cut.
    fn parts<'r>(
        &self,
        runners: &'r [Box<dyn Runner<T> + 'r>],
        sets: &Sets<'_, T>,
        task: runner::Task,
    ) -> Result<Vec<DevicePart<'r, T>>> {
        let weights: Vec<usize> = runners.iter().map(|r| r.weight().max(1)).collect();
        let shards = shards(&weights, self.plan.m);
        let alone = shards.iter().filter(|r| !r.is_empty()).count() == 1;
        let mut parts = Vec::new();
        for (r, range) in runners.iter().zip(shards) {
            if range.is_empty() {
                continue;
            }
            let cut = sizing::cut(
                &**r,
                sets,
                task,
                range.len(),
                alone,
                usize::MAX,
                &self.limits,
            )?;
            parts.push((&**r, range, cut));
        }
        Ok(parts)
    }

    /// Runs a reduction on every device's part and combines them.
    fn reduce(
        &self,
        want: Want,
        argmax: bool,
        weights: (Option<&[T]>, Option<&[T]>),
    ) -> Result<Whole<T>> {
        let plan = self.plan;
        let runners = self.runners()?;
        let sets = Sets::new(plan, self.a, self.b);
        let task = want.task(argmax);
        let parts = self.parts(&runners, &sets, task)?;
        if let [(r, _, Cut::Whole)] = parts[..] {
            let control = Control::new(1, self.progress);
            control.go_on()?;
            let (a, b) = (self.a, self.b);
            let whole = match want {
                Want::Best(k) => {
                    let t = if argmax {
                        r.argmax(plan, a, b)?
                    } else {
                        r.top_k(plan, a, b, k)?
                    };
                    Whole::Best {
                        values: t.values,
                        indices: t.indices,
                    }
                }
                Want::RowMean => Whole::Values(r.row_mean(plan, a, b)?),
                Want::Mean => Whole::Values(r.mean(plan, a, b)?),
                Want::Greedy => Whole::Scores(r.greedy(plan, a, b, weights.0, weights.1)?),
            };
            control.pair_done()?;
            return Ok(whole);
        }
        let mut total = 0usize;
        for (_, range, cut) in &parts {
            let c = chunks_of(*cut, plan.n, range.len());
            total += plan.batch * plan.n.div_ceil(c.a) * range.len().div_ceil(c.b);
        }
        let control = Control::new(total, self.progress);
        let run = |(r, range, cut): &DevicePart<'_, T>| {
            let c = chunks_of(*cut, plan.n, range.len());
            // A panic (in a backend or the caller's callback) stops the other devices too.
            let part = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                reduce::part(*r, &sets, want, argmax, range.clone(), c, &control)
            }))
            .unwrap_or_else(|_| Err(Error::Internal("a device's worker panicked".into())));
            if part.is_err() {
                control.stop();
            }
            part
        };
        let results: Vec<Result<Partial<T>>> = if parts.len() == 1 {
            vec![run(&parts[0])]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = parts.iter().map(|p| s.spawn(|| run(p))).collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::Internal("a device's worker panicked".into()))
                        })
                    })
                    .collect()
            })
        };
        let partials = first_error(results)?;
        let widths: Vec<usize> = parts.iter().map(|(_, r, _)| r.len()).collect();
        reduce::combine(plan, want, partials, &widths, weights)
    }
}

/// A device's part of a reduction: its runner, its shard of B, its cut.
type DevicePart<'r, T> = (&'r dyn Runner<T>, Range<usize>, Cut);

/// The chunks of a cut (a whole part is one chunk of each set).
fn chunks_of(cut: Cut, n: usize, m: usize) -> Chunks {
    match cut {
        Cut::Whole => Chunks {
            a: n.max(1),
            b: m.max(1),
        },
        Cut::Chunks(c) => Chunks {
            a: c.a.max(1),
            b: c.b.max(1),
        },
    }
}

/// How many of `rows` row blocks device `w` of `devices` gets (block `i` goes to device
/// `i mod devices`).
fn rows_of(rows: usize, w: usize, devices: usize) -> usize {
    (rows + devices - 1 - w) / devices
}

/// Contiguous shards of `0..m`, one per weight, sized in proportion to the weights (a shard
/// may be empty when `m` is smaller than the count).
fn shards(weights: &[usize], m: usize) -> Vec<Range<usize>> {
    let total: u128 = weights.iter().map(|&w| w as u128).sum::<u128>().max(1);
    let mut acc = 0u128;
    let mut start = 0usize;
    weights
        .iter()
        .map(|&w| {
            acc += w as u128;
            let end = ((acc * m as u128) / total) as usize;
            let r = start..end;
            start = end;
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_set_by_weight() {
        assert_eq!(shards(&[1], 7), vec![0..7]);
        assert_eq!(shards(&[1, 1], 7), vec![0..3, 3..7]);
        assert_eq!(shards(&[132, 66], 9), vec![0..6, 6..9]);
        assert_eq!(shards(&[1, 1, 1], 2), vec![0..0, 0..1, 1..2]);
        for (rows, devices) in [(7, 3), (1, 2), (6, 2)] {
            let sum: usize = (0..devices).map(|w| rows_of(rows, w, devices)).sum();
            assert_eq!(sum, rows);
        }
        assert_eq!(rows_of(7, 0, 3), 3);
        assert_eq!(rows_of(7, 2, 3), 2);
    }
}
