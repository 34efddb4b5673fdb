//! The matrix, streamed: row blocks `[rows, M]` (a chunk of A against all of B) computed by
//! the devices' workers, each on its own thread, and handed to the caller's sink on the
//! caller's thread, in order. Row block `i` goes to device `i mod D`; each worker sends its
//! blocks through a channel of one, so a device computes its next block while the sink
//! takes the last one (a file written while the next block computes), and at most two
//! blocks per device (one being filled, one waiting) besides the sink's are held.

use super::chunks::{self, Chunks, Row};
use super::control::{first_error, Control};
use super::runner::{InOrder, PairWork, Runner, Task};
use super::sets::{PairJob, Sets};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::pairwise::MatrixBlock;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};

/// Where the row blocks go.
pub type Sink<'s, T, E> = dyn FnMut(MatrixBlock<&[T]>) -> std::result::Result<(), E> + 's;

/// One device's share: its runner and its chunks of B (A's chunks are the rows, shared).
pub struct Share<'r, T: Element> {
    pub runner: &'r dyn Runner<T>,
    pub b_chunk: usize,
}

/// Streams every row block of `sets`' matrix (A in chunks of `a_chunk`) to `sink`.
///
/// # Errors
/// The first device failure, [`Error::Cancelled`], or whatever `sink` returns.
pub fn run<T: Element + Send, E: From<Error>>(
    sets: &Sets<'_, T>,
    shares: &[Share<'_, T>],
    a_chunk: usize,
    control: &Control<'_>,
    sink: &mut Sink<'_, T, E>,
) -> std::result::Result<(), E> {
    let plan = sets.plan();
    let rows = chunks::rows(plan.batch, plan.n, a_chunk);
    let devices = shares.len().max(1);
    std::thread::scope(|s| {
        let mut blocks = Vec::with_capacity(devices);
        let mut spare = Vec::with_capacity(devices);
        let mut workers = Vec::with_capacity(devices);
        for (w, share) in shares.iter().enumerate() {
            let (tx, rx) = sync_channel::<Vec<T>>(1);
            let (give, back) = channel::<Vec<T>>();
            blocks.push(rx);
            spare.push(give);
            let mine: Vec<Row> = rows.iter().skip(w).step_by(devices).cloned().collect();
            let chunks = Chunks {
                a: a_chunk,
                b: share.b_chunk,
            };
            workers.push(s.spawn(move || {
                let r = worker(sets, share.runner, &mine, chunks, control, &tx, &back);
                if r.is_err() {
                    control.stop();
                }
                r
            }));
        }
        let delivered = deliver(&rows, &blocks, &spare, plan.m, control, sink);
        // The workers stop at their next pair once the run has stopped; a worker blocked on
        // its channel wakes when the receivers go.
        if delivered.is_err() {
            control.stop();
        }
        drop(blocks);
        let joined: Vec<Result<()>> = workers
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Internal("a device's worker panicked".into())))
            })
            .collect();
        match delivered {
            Err(Delivery::Sink(e)) => Err(e),
            Err(Delivery::Stopped) => {
                first_error(joined).map_err(E::from)?;
                Err(E::from(Error::Cancelled))
            }
            Err(Delivery::Worker) => {
                first_error(joined).map_err(E::from)?;
                Err(E::from(Error::Internal(
                    "a device's worker stopped sending row blocks".into(),
                )))
            }
            Ok(()) => first_error(joined).map(|_| ()).map_err(E::from),
        }
    })
}

/// Why delivering stopped.
enum Delivery<E> {
    /// The sink failed.
    Sink(E),
    /// A worker stopped sending (its error is in its result).
    Worker,
    /// The run was stopped (the caller's progress callback): no block is handed on after.
    Stopped,
}

/// Hands every row block to `sink` in order, taking block `i` from worker `i mod D`, and
/// gives each buffer back to its worker.
fn deliver<T: Element, E>(
    rows: &[Row],
    blocks: &[Receiver<Vec<T>>],
    spare: &[std::sync::mpsc::Sender<Vec<T>>],
    m: usize,
    control: &Control<'_>,
    sink: &mut Sink<'_, T, E>,
) -> std::result::Result<(), Delivery<E>> {
    for (i, row) in rows.iter().enumerate() {
        let w = i % blocks.len().max(1);
        let block = blocks[w].recv();
        // A block sent just before the run stopped is not handed on.
        control.go_on().map_err(|_| Delivery::Stopped)?;
        let block = block.map_err(|_| Delivery::Worker)?;
        if block.len() != row.a.len() * m {
            return Err(Delivery::Worker);
        }
        sink(MatrixBlock {
            batch: row.batch,
            row: row.a.start,
            rows: row.a.len(),
            values: &block,
        })
        .map_err(Delivery::Sink)?;
        // A worker that has finished no longer takes buffers back.
        let _ = spare[w].send(block);
    }
    Ok(())
}

/// A host backend's rows, each block computed in place (B whole).
fn on_host<T: Element>(
    sets: &Sets<'_, T>,
    runner: &dyn Runner<T>,
    rows: &[Row],
    control: &Control<'_>,
    tx: &SyncSender<Vec<T>>,
    back: &Receiver<Vec<T>>,
) -> Result<()> {
    let m = sets.plan().m;
    for row in rows {
        control.go_on()?;
        let job = PairJob {
            batch: row.batch,
            a: row.a.clone(),
            b: 0..m,
        };
        let mut block = back.try_recv().unwrap_or_default();
        // A recycled block of the right length is overwritten whole: no need to clear it.
        if block.len() != row.a.len() * m {
            block.clear();
            block.resize(row.a.len() * m, T::from_f64(0.0));
        }
        let plan = sets.pair_plan(&job)?;
        runner.matrix_into(&plan, &sets.a_chunk(&job), &sets.b_chunk(&job), &mut block)?;
        tx.send(block).map_err(|_| Error::Cancelled)?;
        control.pair_done()?;
    }
    Ok(())
}

/// One device's rows: every chunk pair of its row blocks, each block assembled from the
/// pieces of B's chunks and sent when whole.
fn worker<T: Element>(
    sets: &Sets<'_, T>,
    runner: &dyn Runner<T>,
    rows: &[Row],
    chunks: Chunks,
    control: &Control<'_>,
    tx: &SyncSender<Vec<T>>,
    back: &Receiver<Vec<T>>,
) -> Result<()> {
    let m = sets.plan().m;
    if runner.on_host() && chunks.b >= m {
        return on_host(sets, runner, rows, control, tx, back);
    }
    let jobs = chunks::jobs(rows, 0..m, chunks.b);
    let go_on = || control.go_on();
    let work = PairWork {
        sets,
        task: Task::Matrix,
        chunks,
        jobs: &jobs,
        go_on: &go_on,
    };
    let mut order = InOrder::new(jobs.len());
    let mut block: Vec<T> = Vec::new();
    runner.run_pairs(&work, &mut |i, out| {
        let job = order.take(i, &jobs)?;
        let width = job.b.len();
        if job.b.start == 0 {
            block = back.try_recv().unwrap_or_default();
            // Every piece of the row is written: a recycled block of its length needs no
            // clearing.
            if block.len() != job.a.len() * m {
                block.clear();
                block.resize(job.a.len() * m, T::from_f64(0.0));
            }
        }
        if out.values.len() != job.a.len() * width {
            return Err(Error::Internal("a matrix piece is not its pair's".into()));
        }
        for (r, piece) in out.values.chunks(width.max(1)).enumerate() {
            let at = r * m + job.b.start;
            block
                .get_mut(at..at + width)
                .ok_or_else(|| Error::Internal("a matrix piece falls outside its block".into()))?
                .copy_from_slice(piece);
        }
        if job.b.end == m {
            // The receiver is gone only once the run has stopped.
            tx.send(std::mem::take(&mut block))
                .map_err(|_| Error::Cancelled)?;
        }
        control.pair_done()
    })?;
    order.all_done()
}
