//! Timing GPU work for benchmarks on any driver: CUDA events where the driver has the event
//! timer that cudarc's CUDA 13 bindings call (`cuEventElapsedTime_v2`, drivers for CUDA 12.8
//! and newer), the host clock between two synchronisations elsewhere, never a panic over a
//! missing entry point.

use super::{driver_version, Cuda};
use crate::error::Error;
use cudarc::driver::sys::CUevent_flags;
use std::time::Instant;

/// How [`Cuda::time_ms`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// CUDA events recorded on the stream around the work: the GPU's own time.
    Events,
    /// The host clock from a synchronised stream to the end of the work: adds the latency of
    /// the first launch (a few µs). Used on drivers older than CUDA 12.8, which lack
    /// `cuEventElapsedTime_v2`.
    Host,
}

impl Cuda {
    /// The clock [`Cuda::time_ms`] uses with this driver.
    pub fn clock(&self) -> Clock {
        match driver_version() {
            Ok(v) if v >= (12, 8) => Clock::Events,
            _ => Clock::Host,
        }
    }

    /// Milliseconds that the work `f` queues on this handle's stream takes, measured with
    /// [`Cuda::clock`]. Waits for the stream.
    ///
    /// # Errors
    /// What `f` returns, or a driver error.
    pub fn time_ms<E: From<Error>>(&self, f: impl FnOnce() -> Result<(), E>) -> Result<f64, E> {
        let s = &self.stream;
        let sync = |r: Result<(), cudarc::driver::DriverError>| r.map_err(|e| E::from(e.into()));
        match self.clock() {
            Clock::Events => {
                let ctx = s.context();
                let event = || {
                    ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                        .map_err(|e| E::from(e.into()))
                };
                let (a, b) = (event()?, event()?);
                sync(a.record(s))?;
                f()?;
                sync(b.record(s))?;
                sync(b.synchronize())?;
                Ok(f64::from(a.elapsed_ms(&b).map_err(|e| E::from(e.into()))?))
            }
            Clock::Host => {
                sync(s.synchronize())?;
                let t = Instant::now();
                f()?;
                sync(s.synchronize())?;
                Ok(t.elapsed().as_secs_f64() * 1e3)
            }
        }
    }
}
