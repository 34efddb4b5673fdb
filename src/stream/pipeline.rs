//! The GPU's two-slot pipeline, shared by the pairwise chunk pairs
//! ([`super::pair_pipeline`]) and the elementwise row blocks ([`super::blocks`]): two
//! slots, each with its own stream, pinned staging buffers and device buffers for one item.
//! While one slot's item computes, the host stages the other slot's next item (reading the
//! memory-mapped inputs, gathering what is not contiguous) and queues its upload, so disk
//! reads and host→device copies overlap the kernels; results come back through pinned
//! buffers one item later, in order.
//!
//! The pinned buffers rely on cudarc's event tracking (on unless a caller turns it off) to
//! wait for the copies from and to them.

use super::pinned::pinned;
use crate::error::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DeviceRepr, PinnedHostSlice, ValidAsZeroBits,
};
use std::sync::Arc;

/// What a two-slot pipeline runs: items launched on a slot, handed back from it later.
pub trait TwoSlots {
    type Slot;
    /// Stages item `i`'s inputs, and queues its computation and the copies of its results
    /// on `slot`'s stream.
    ///
    /// # Errors
    /// Library and device failures.
    fn launch(&mut self, slot: &mut Self::Slot, i: usize) -> Result<()>;
    /// Waits for item `i`'s results on `slot` and hands them on.
    ///
    /// # Errors
    /// Device failures, and whatever the receiver of the results returns.
    fn hand_back(&mut self, slot: &mut Self::Slot, i: usize) -> Result<()>;
}

/// Runs items `0..count` on the two slots (item `i` on slot `i mod 2`), asking `go_on`
/// before each: an item is handed back before its slot's buffers are reused (two items
/// later), while the other slot's item keeps computing; every item is handed back in order.
///
/// # Errors
/// Whatever `work` or `go_on` returns; the run stops there.
pub fn run<W: TwoSlots>(
    work: &mut W,
    slots: &mut [W::Slot; 2],
    count: usize,
    go_on: &dyn Fn() -> Result<()>,
) -> Result<()> {
    let mut pending: [Option<usize>; 2] = [None, None];
    for i in 0..count {
        go_on()?;
        let k = i % 2;
        if let Some(p) = pending[k].take() {
            work.hand_back(&mut slots[k], p)?;
        }
        work.launch(&mut slots[k], i)?;
        pending[k] = Some(i);
    }
    for i in count.saturating_sub(2)..count {
        if let Some(p) = pending[i % 2].take() {
            work.hand_back(&mut slots[i % 2], p)?;
        }
    }
    Ok(())
}

/// One input's buffers in a slot: pinned staging and the device buffer it is uploaded to.
pub struct Staged<T: DeviceRepr + ValidAsZeroBits, K> {
    host: PinnedHostSlice<T>,
    pub dev: CudaSlice<T>,
    /// What the device buffer holds, or will once its queued upload is done.
    holds: Option<K>,
}

impl<T: DeviceRepr + ValidAsZeroBits, K: PartialEq> Staged<T, K> {
    /// Buffers for up to `len` elements.
    ///
    /// # Errors
    /// Out of pinned host or device memory.
    pub fn new(
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        len: usize,
    ) -> Result<Staged<T, K>> {
        Ok(Staged {
            host: pinned(ctx, len, true)?,
            dev: stream.alloc_zeros::<T>(len.max(1))?,
            holds: None,
        })
    }

    /// Makes the device buffer hold `key`'s contents: unless it already does, waits until
    /// the pinned buffer's previous upload is done, lets `fill` write the contents into it
    /// and queues their upload on `stream` (after the slot's previous item, which read the
    /// old contents).
    ///
    /// # Errors
    /// Whatever `fill` returns; driver failures.
    pub fn stage(
        &mut self,
        stream: &Arc<CudaStream>,
        key: K,
        fill: impl FnOnce(&mut [T]) -> Result<()>,
    ) -> Result<()> {
        if self.holds.as_ref() == Some(&key) {
            return Ok(());
        }
        self.holds = None;
        fill(self.host.as_mut_slice()?)?;
        stream.memcpy_htod(&self.host, &mut self.dev)?;
        self.holds = Some(key);
        Ok(())
    }
}

/// A kind of result: a device buffer the `_into` calls write and the pinned host buffer it
/// comes back through.
pub struct Results<E: DeviceRepr + ValidAsZeroBits> {
    pub dev: CudaSlice<E>,
    pub host: PinnedHostSlice<E>,
}

impl<E: DeviceRepr + ValidAsZeroBits> Results<E> {
    /// Room for `len` results, on the device too when `device` (else the results come from
    /// buffers the calls allocate).
    ///
    /// # Errors
    /// Out of pinned host or device memory.
    pub fn new(
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
    ///
    /// # Errors
    /// [`Error::Internal`] past the buffer.
    pub fn take(&self, len: usize) -> Result<&[E]> {
        self.host
            .as_slice()?
            .get(..len)
            .ok_or_else(|| Error::Internal("results overflow their pinned buffer".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the driver does with each item.
    struct Log(Vec<String>);

    impl TwoSlots for Log {
        type Slot = char;
        fn launch(&mut self, slot: &mut char, i: usize) -> Result<()> {
            self.0.push(format!("launch {i} on {slot}"));
            Ok(())
        }
        fn hand_back(&mut self, slot: &mut char, i: usize) -> Result<()> {
            self.0.push(format!("back {i} from {slot}"));
            Ok(())
        }
    }

    #[test]
    fn items_alternate_slots_and_come_back_in_order_before_reuse() {
        for count in 0..6 {
            let mut log = Log(Vec::new());
            run(&mut log, &mut ['x', 'y'], count, &|| Ok(())).unwrap();
            let backs: Vec<usize> = log
                .0
                .iter()
                .filter_map(|l| l.strip_prefix("back ")?.split(' ').next()?.parse().ok())
                .collect();
            assert_eq!(backs, (0..count).collect::<Vec<_>>(), "{:?}", log.0);
            for i in 2..count {
                let back = log
                    .0
                    .iter()
                    .position(|l| l.starts_with(&format!("back {} ", i - 2)));
                let launch = log
                    .0
                    .iter()
                    .position(|l| l.starts_with(&format!("launch {i} ")));
                assert!(back < launch, "{:?}", log.0);
            }
        }
        let mut log = Log(Vec::new());
        run(&mut log, &mut ['x', 'y'], 3, &|| Ok(())).unwrap();
        assert_eq!(
            log.0[..3],
            ["launch 0 on x", "launch 1 on y", "back 0 from x"]
        );
        let stop = run(&mut Log(Vec::new()), &mut ['x', 'y'], 3, &|| {
            Err(Error::Cancelled)
        });
        assert!(matches!(stop, Err(Error::Cancelled)));
    }
}
