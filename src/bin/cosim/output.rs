//! Result files written atomically: into a temporary file in the output's directory, renamed
//! over the output name only when complete. A failure drops (deletes) the temporary file, and
//! Ctrl-C deletes the ones still open before exiting, so no half-written output is ever left.

use crate::dtype::Compute;
use crate::error::{CliError, Result};
use crate::npy;
use crate::options::GlobalOpts;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tempfile::NamedTempFile;

/// Temporary files not yet renamed or deleted, for the Ctrl-C handler.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// On Ctrl-C, SIGTERM or SIGHUP, deletes the pending temporary files and exits with 130.
pub fn install_interrupt_cleanup() {
    // Failing to install (another handler exists) only loses the cleanup, not correctness:
    // the temporary files never carry the output's name.
    let _ = ctrlc::set_handler(|| {
        for path in pending().drain(..) {
            let _ = std::fs::remove_file(path);
        }
        eprintln!("error: interrupted; no output written");
        std::process::exit(130);
    });
}

/// An output file being written.
pub struct Output {
    path: PathBuf,
    temp: Option<NamedTempFile>,
    force: bool,
    quiet: bool,
    /// What was written, for the line printed on success: `float32 [8, 32, 32]`.
    written: String,
}

impl Output {
    /// Refuses an existing `path` unless `force`, and creates the temporary file next to it
    /// (so that a directory we cannot write to is reported before any work is done).
    ///
    /// # Errors
    /// A usage error naming `path`: it exists (without `force`), is a directory, or its
    /// directory is missing or not writable.
    pub fn create(path: &Path, g: &GlobalOpts) -> Result<Output> {
        let force = g.force;
        if path.is_dir() {
            return Err(CliError::file(
                path,
                "is a directory; give a file name to write",
            ));
        }
        if !force && path.symlink_metadata().is_ok() {
            return Err(CliError::file(
                path,
                "already exists; pass --force to overwrite it",
            ));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(CliError::file(
                path,
                format!("cannot write in {}: no such directory", dir.display()),
            ));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        #[cfg(unix)]
        {
            // Like any new file (the umask applies), not tempfile's private 0600.
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let temp = builder
            .tempfile_in(dir)
            .map_err(|e| CliError::file(path, format!("cannot write in {}: {e}", dir.display())))?;
        pending().push(temp.path().to_owned());
        Ok(Output {
            path: path.to_owned(),
            temp: Some(temp),
            force,
            quiet: g.quiet,
            written: String::new(),
        })
    }

    /// The name the result gets.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `values` with `shape` as a `.npy` file into the temporary file.
    ///
    /// # Errors
    /// A runtime error naming the output if writing fails (disk full, I/O error).
    pub fn write_npy<T: Compute>(&mut self, shape: &[usize], values: &[T]) -> Result<()> {
        let fail = |e: std::io::Error| {
            CliError::runtime(format!("{}: writing failed: {e}", self.path.display()))
        };
        let Some(temp) = self.temp.as_mut() else {
            return Err(CliError::runtime(format!(
                "{}: already written",
                self.path.display()
            )));
        };
        let mut w = BufWriter::with_capacity(1 << 20, temp.as_file_mut());
        npy::write(&mut w, shape, values).map_err(fail)?;
        w.flush().map_err(fail)?;
        drop(w);
        temp.as_file().sync_all().map_err(fail)?;
        self.written = format!("{} {shape:?}", npy::stored_dtype(T::DTYPE).numpy_name());
        Ok(())
    }

    /// Renames the temporary file to the output name (refusing to replace a file that
    /// appeared meanwhile, unless `--force`), and says so on stderr unless `--quiet`.
    ///
    /// # Errors
    /// A runtime error naming the output if the rename fails (the temporary file is deleted).
    pub fn commit(mut self) -> Result<()> {
        let Some(temp) = self.temp.take() else {
            return Ok(());
        };
        let temp_path = temp.path().to_owned();
        let done = if self.force {
            temp.persist(&self.path)
        } else {
            temp.persist_noclobber(&self.path)
        };
        pending().retain(|p| p != &temp_path);
        if done.is_ok() && !self.quiet {
            eprintln!("wrote {}: {}", self.path.display(), self.written);
        }
        done.map(drop).map_err(|e| {
            let code = if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                crate::error::EXIT_USAGE
            } else {
                crate::error::EXIT_RUNTIME
            };
            CliError {
                code,
                message: format!(
                    "{}: cannot rename the result into place: {}",
                    self.path.display(),
                    e.error
                ),
            }
        })
    }
}

impl Drop for Output {
    /// An output never committed: its temporary file is deleted (by `NamedTempFile`).
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let p = temp.path().to_owned();
            drop(temp);
            pending().retain(|q| q != &p);
        }
    }
}
