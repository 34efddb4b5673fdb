//! The command's error: one line for the user and the exit code it maps to (2 for usage and
//! input problems, 1 for runtime failures such as device errors).

use std::fmt;
use std::path::Path;

/// Exit code for a bad command line, an unreadable or invalid input, or an output we refuse.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for a failure while running: the device, or writing a result.
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code after Ctrl-C (or SIGTERM, SIGHUP), as shells report a SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// A failure to report: printed as `error: <message>` on one line, then the process exits
/// with `code`.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

/// Shorthand for results of the command.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    /// A usage or input error (exit code 2).
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    /// A runtime failure (exit code 1).
    pub fn runtime(message: impl Into<String>) -> CliError {
        CliError {
            code: EXIT_RUNTIME,
            message: message.into(),
        }
    }

    /// A usage error about `path`: `<path>: <message>`.
    pub fn file(path: &Path, message: impl fmt::Display) -> CliError {
        CliError::usage(format!("{}: {message}", path.display()))
    }

    /// The message on one line (multi-line library or OS messages are joined).
    pub fn line(&self) -> String {
        self.message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<cosim::Error> for CliError {
    /// Library refusals (shapes, dims, eps) are input errors; device failures are runtime ones.
    fn from(e: cosim::Error) -> CliError {
        if matches!(e, cosim::Error::Cancelled) {
            // The only caller that stops the library's work is the interrupt handler.
            return CliError {
                code: EXIT_INTERRUPTED,
                message: "interrupted; no output written".into(),
            };
        }
        CliError {
            code: library_code(&e),
            message: e.to_string(),
        }
    }
}

#[cfg(feature = "cuda")]
impl From<cosim::cudarc::driver::DriverError> for CliError {
    /// A driver failure (out of pinned memory, a failed copy): a runtime failure.
    fn from(e: cosim::cudarc::driver::DriverError) -> CliError {
        cosim::Error::from(e).into()
    }
}

/// The exit code a library error maps to.
pub fn library_code(e: &cosim::Error) -> u8 {
    use cosim::Error as E;
    match e {
        E::Broadcast { .. }
        | E::DimOutOfRange { .. }
        | E::FlattenOutOfRange { .. }
        | E::PartialFlattenBroadcast { .. }
        | E::RankTooLarge { .. }
        | E::SizeOverflow { .. }
        | E::LenMismatch { .. }
        | E::OutLenMismatch { .. }
        | E::BadEps(_)
        | E::PairShape { .. }
        | E::EmptySet { .. }
        | E::PairMismatch { .. }
        | E::BadK { .. }
        | E::IndexOverflow { .. } => EXIT_USAGE,
        _ => EXIT_RUNTIME,
    }
}

impl From<anyhow::Error> for CliError {
    /// Failures inside the benchmark suite are runtime failures.
    fn from(e: anyhow::Error) -> CliError {
        CliError::runtime(format!("{e:#}"))
    }
}
