//! Timing GPU work for benchmarks on any driver: CUDA events where the driver has the event
//! timer that cudarc's CUDA 13 bindings call (`cuEventElapsedTime_v2`, drivers for CUDA 12.8
//! and newer), the host clock between two synchronisations elsewhere, never a panic over a
//! missing entry point.

use super::{driver_version, Cuda};
use crate::error::Error;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaStream;
use std::sync::Arc;
use std::time::Instant;

/// How [`time_ms`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// CUDA events recorded on the stream around the work: the GPU's own time.
    Events,
    /// The host clock from a synchronised stream to the end of the work: adds the latency of
    /// the first launch (a few µs). Used on drivers older than CUDA 12.8, which lack
    /// `cuEventElapsedTime_v2`.
    Host,
}

/// The clock [`time_ms`] uses with this machine's driver.
pub fn clock() -> Clock {
    match driver_version() {
        Ok(v) if v >= (12, 8) => Clock::Events,
        _ => Clock::Host,
    }
}

/// Milliseconds that the work `f` queues on `stream` takes, measured with [`clock`]. Waits
/// for the stream.
///
/// # Errors
/// What `f` returns, or a driver error.
pub fn time_ms<E: From<Error>>(
    stream: &Arc<CudaStream>,
    f: impl FnOnce() -> Result<(), E>,
) -> Result<f64, E> {
    let s = stream;
    let driver = |e: cudarc::driver::DriverError| E::from(e.into());
    match clock() {
        Clock::Events => {
            let ctx = s.context();
            let event = || {
                ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(driver)
            };
            let (a, b) = (event()?, event()?);
            a.record(s).map_err(driver)?;
            f()?;
            b.record(s).map_err(driver)?;
            b.synchronize().map_err(driver)?;
            Ok(f64::from(a.elapsed_ms(&b).map_err(driver)?))
        }
        Clock::Host => {
            s.synchronize().map_err(driver)?;
            let t = Instant::now();
            f()?;
            s.synchronize().map_err(driver)?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        }
    }
}

impl Cuda {
    /// The clock [`Cuda::time_ms`] uses with this driver.
    pub fn clock(&self) -> Clock {
        clock()
    }

    /// Milliseconds that the work `f` queues on this handle's stream takes ([`time_ms`]).
    ///
    /// # Errors
    /// What `f` returns, or a driver error.
    pub fn time_ms<E: From<Error>>(&self, f: impl FnOnce() -> Result<(), E>) -> Result<f64, E> {
        time_ms(&self.stream, f)
    }
}
