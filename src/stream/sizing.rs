//! How large the chunks of one device's part are: the library's own allocation rules
//! ([`Runner::pair_bytes`], [`Runner::whole_bytes`], from `Cuda::pair_workspace_bytes`)
//! against the device's free memory or the caller's budget, or the chunk size a caller
//! forces.

use super::chunks::Chunks;
use super::runner::{Runner, Task};
use super::sets::Sets;
use crate::element::Element;
use crate::error::{Error, Result};

/// Pinned host staging per chunk is at most this large (each of a device's two slots holds
/// one chunk of each set, in device memory and in pinned host memory).
pub const MAX_CHUNK_BYTES: usize = 256 << 20;

/// What a caller set about sizes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Chunks of at most this many bytes per set, on any device.
    pub chunk_bytes: Option<usize>,
    /// Device memory a device's part may take (else its free memory).
    pub memory: Option<usize>,
    /// The matrix: bytes of whole rows per block handed to the sink.
    pub block_bytes: usize,
}

/// A device's part of a job: whole in one call, or in chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    Whole,
    Chunks(Chunks),
}

/// The cut of a part: `sets` (the whole job's) with B's vectors limited to `m` of them (the
/// part's shard), for `task`; `whole_ok` when the part may run as one call on the whole
/// plan, `rows_cap` the most vectors of A per chunk.
///
/// # Errors
/// [`Error::OutOfMemory`] when not even a pair of one-vector chunks fits; driver errors
/// reading the free memory.
pub fn cut<T: Element>(
    runner: &dyn Runner<T>,
    sets: &Sets<'_, T>,
    task: Task,
    m: usize,
    whole_ok: bool,
    rows_cap: usize,
    limits: &Limits,
) -> Result<Cut> {
    let plan = sets.plan();
    let n = plan.n;
    let vector = plan.d.saturating_mul(std::mem::size_of::<T>()).max(1);
    if let Some(bytes) = limits.chunk_bytes {
        let per = (bytes / vector).max(1);
        if whole_ok && per >= n && per >= m {
            return Ok(Cut::Whole);
        }
        return Ok(Cut::Chunks(Chunks::even(n, m, per, rows_cap)));
    }
    let Some(usable) = runner.usable_bytes(limits.memory)? else {
        if whole_ok {
            return Ok(Cut::Whole);
        }
        return Ok(Cut::Chunks(Chunks::even(n, m, n.max(m), rows_cap)));
    };
    let e = std::mem::size_of::<T>();
    if whole_ok {
        let inputs = (plan.a_vectors().saturating_add(plan.b_vectors()))
            .saturating_mul(plan.d)
            .saturating_mul(e);
        let need = inputs.saturating_add(runner.whole_bytes(plan, task, limits.block_bytes));
        if need <= usable {
            return Ok(Cut::Whole);
        }
    }
    // Two slots, each with a chunk of each set and one pair's results and scratch.
    let need = |per: usize| -> Result<usize> {
        let c = Chunks::even(n, m, per, rows_cap);
        let pair = sets.chunk_plan(c.a, c.b)?;
        let chunks = (c.a + c.b).saturating_mul(vector);
        Ok(2 * chunks.saturating_add(runner.pair_bytes(&pair, task)))
    };
    let smallest = need(1)?;
    if smallest > usable {
        return Err(Error::OutOfMemory {
            what: "two pairs of one-vector chunks (the device's part of a streamed job)",
            bytes: smallest,
        });
    }
    // The largest `per` that fits (`need` grows with it), within the pinned staging cap.
    let (mut lo, mut hi) = (1, n.max(m).min((MAX_CHUNK_BYTES / vector).max(1)));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if need(mid)? <= usable {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(Cut::Chunks(Chunks::even(n, m, lo, rows_cap)))
}
