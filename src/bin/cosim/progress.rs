//! A spinner on stderr naming the current phase (reading, computing, writing) and the time
//! spent, shown only once the work has run for a second, and never when stderr is not a
//! terminal or with `--quiet`. The library's calls report no progress of their own, so this
//! tells phases apart rather than counting elements.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Work shorter than this shows no spinner.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// The spinner of one command; cleared when dropped.
pub struct Progress {
    bar: ProgressBar,
    stop: Option<mpsc::Sender<()>>,
    shower: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts timing; the spinner appears after [`SHOW_AFTER`] if stderr is a terminal and
    /// `quiet` is off.
    pub fn start(quiet: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
            bar.set_style(style);
        }
        if quiet || !std::io::stderr().is_terminal() {
            return Progress {
                bar,
                stop: None,
                shower: None,
            };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let shown = bar.clone();
        let shower = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(SHOW_AFTER) {
                shown.set_draw_target(ProgressDrawTarget::stderr());
                shown.enable_steady_tick(Duration::from_millis(100));
            }
        });
        Progress {
            bar,
            stop: Some(stop),
            shower: Some(shower),
        }
    }

    /// Names the phase now running.
    pub fn phase(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.shower.take() {
            let _ = h.join();
        }
        self.bar.finish_and_clear();
    }
}
