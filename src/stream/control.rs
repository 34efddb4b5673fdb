//! Progress and cancellation: every device's worker reports each finished chunk pair here,
//! the caller's callback sees the count and may stop the run, and a worker that fails stops
//! the others.

use crate::error::{Error, Result};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How far a streamed job is: chunk pairs done of all (a job run whole is one pair).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

/// A caller's progress callback: called after every chunk pair, from whichever thread ran
/// it; `ControlFlow::Break(())` stops the job with [`Error::Cancelled`].
pub type OnProgress<'a> = &'a (dyn Fn(Progress) -> ControlFlow<()> + Sync);

/// The shared state of one run's workers.
pub struct Control<'a> {
    total: usize,
    done: AtomicUsize,
    stopped: AtomicBool,
    on: Option<OnProgress<'a>>,
}

impl<'a> Control<'a> {
    pub fn new(total: usize, on: Option<OnProgress<'a>>) -> Control<'a> {
        Control {
            total,
            done: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            on,
        }
    }

    /// [`Error::Cancelled`] once the run is stopped (by the caller or a failed worker).
    pub fn go_on(&self) -> Result<()> {
        if self.stopped.load(Ordering::Acquire) {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Stops every worker at its next pair.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// Counts a finished pair and tells the caller, who may stop the run.
    ///
    /// # Errors
    /// [`Error::Cancelled`] when the callback asks to stop, or the run was stopped.
    pub fn pair_done(&self) -> Result<()> {
        let done = self.done.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(on) = self.on {
            if on(Progress {
                done,
                total: self.total,
            })
            .is_break()
            {
                self.stop();
            }
        }
        self.go_on()
    }
}

/// The error of a run from its workers' results, in device order: the first that is not
/// [`Error::Cancelled`] (a failure stops the others, which then report a cancellation), else
/// the cancellation.
pub fn first_error<R>(results: Vec<Result<R>>) -> Result<Vec<R>> {
    let mut oks = Vec::with_capacity(results.len());
    let mut cancelled = None;
    for r in results {
        match r {
            Ok(v) => oks.push(v),
            Err(Error::Cancelled) => cancelled = Some(Error::Cancelled),
            Err(e) => return Err(e),
        }
    }
    match cancelled {
        Some(e) => Err(e),
        None => Ok(oks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callback_stops_the_run_and_failures_outrank_cancellations() {
        let stop_at_two = |p: Progress| {
            if p.done >= 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let c = Control::new(5, Some(&stop_at_two));
        assert!(c.go_on().is_ok());
        assert!(c.pair_done().is_ok());
        assert!(matches!(c.pair_done(), Err(Error::Cancelled)));
        assert!(matches!(c.go_on(), Err(Error::Cancelled)));
        let r: Vec<Result<u8>> = vec![
            Err(Error::Cancelled),
            Err(Error::BadK { k: 0, m: 1 }),
            Ok(1),
        ];
        assert!(matches!(first_error(r), Err(Error::BadK { .. })));
        let r: Vec<Result<u8>> = vec![Ok(1), Err(Error::Cancelled)];
        assert!(matches!(first_error(r), Err(Error::Cancelled)));
        assert_eq!(first_error(vec![Ok(1u8), Ok(2)]).unwrap(), vec![1, 2]);
    }
}
