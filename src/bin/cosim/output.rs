//! Result files written atomically: into a temporary file in the output's directory, renamed
//! over the output name only when complete. A failure drops (deletes) the temporary file, and
//! Ctrl-C deletes the ones still open before exiting, so no half-written output is ever left.
//!
//! A result is written whole ([`Output::write_npy`]), streamed piece by piece when it is larger
//! than memory ([`Output::npy_stream`]: the header for the full shape, then the values as they
//! are computed), or as an `.npz` archive of several arrays ([`Output::npz`]). Only an output
//! whose writing finished can be committed.

use crate::dtype::Compute;
use crate::error::{CliError, Result};
use crate::npy::{self, Stored};
use crate::options::GlobalOpts;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use tempfile::NamedTempFile;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// The write buffer of result files.
const BUFFER_BYTES: usize = 1 << 20;

/// Temporary files not yet renamed or deleted, for the Ctrl-C handler.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Ctrl-C, SIGTERM and SIGHUP received so far.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);
/// Whether the running work stops by itself at the next step once interrupted (a streamed
/// job polls [`interrupted`] from its progress callback).
static COOPERATIVE: AtomicBool = AtomicBool::new(false);

/// On Ctrl-C, SIGTERM or SIGHUP: during cooperative work (see [`Cooperative`]) the first
/// one only asks it to stop, which it does after its current step, leaving no output; else
/// (or on a second one) deletes the pending temporary files and exits with 130 at once.
pub fn install_interrupt_cleanup() {
    // Failing to install (another handler exists) only loses the cleanup, not correctness:
    // the temporary files never carry the output's name.
    let _ = ctrlc::set_handler(|| {
        let n = INTERRUPTS.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 && COOPERATIVE.load(Ordering::SeqCst) {
            eprintln!("\ninterrupted: stopping after the current chunk pair (again to stop now)");
            return;
        }
        for path in pending().drain(..) {
            let _ = std::fs::remove_file(path);
        }
        eprintln!("error: interrupted; no output written");
        std::process::exit(130);
    });
}

/// Whether Ctrl-C (or SIGTERM, SIGHUP) has been received.
pub fn interrupted() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

/// While alive, an interrupt asks the work to stop instead of ending the process.
pub struct Cooperative;

impl Cooperative {
    pub fn start() -> Cooperative {
        COOPERATIVE.store(true, Ordering::SeqCst);
        Cooperative
    }
}

impl Drop for Cooperative {
    fn drop(&mut self) {
        COOPERATIVE.store(false, Ordering::SeqCst);
    }
}

/// An output file being written.
pub struct Output {
    path: PathBuf,
    temp: Option<NamedTempFile>,
    force: bool,
    quiet: bool,
    /// What was written, for the line printed on success (`float32 [8, 32, 32]`); `None`
    /// until a whole result is in the temporary file, and then the output cannot be committed.
    written: Option<String>,
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
            written: None,
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
        let mut s = self.npy_stream::<T>(shape)?;
        s.append(values)?;
        s.finish()
    }

    /// Starts a `.npy` file of `shape` in `T` whose values are then appended in C order, in
    /// pieces of any size, by [`NpyStream::append`]: a result larger than memory is written as
    /// it is computed. The output can be committed only after [`NpyStream::finish`].
    ///
    /// # Errors
    /// A usage error naming the output if `shape` holds more elements than memory addresses;
    /// a runtime error if the header cannot be written or the output was already written.
    pub fn npy_stream<T: Compute>(&mut self, shape: &[usize]) -> Result<NpyStream<'_, T>> {
        let Some(total) = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
            return Err(CliError::usage(format!(
                "{}: shape {shape:?} is too large to write",
                self.path.display()
            )));
        };
        let (mut w, path, written) = self.parts()?;
        npy::write_header(&mut w, Stored::of::<T>(), shape).map_err(|e| write_failed(path, e))?;
        Ok(NpyStream {
            w,
            path,
            written,
            shape: shape.to_vec(),
            remaining: total,
            _t: PhantomData,
        })
    }

    /// Starts an `.npz` archive (a zip of `.npy` files, stored uncompressed, as
    /// `numpy.savez` writes it) into the temporary file; arrays are added by
    /// [`NpzWriter::values`] and [`NpzWriter::indices`]. The output can be committed only
    /// after [`NpzWriter::finish`].
    ///
    /// # Errors
    /// A runtime error naming the output if it was already written.
    pub fn npz(&mut self) -> Result<NpzWriter<'_>> {
        let (w, path, written) = self.parts()?;
        Ok(NpzWriter {
            zip: ZipWriter::new(w),
            path,
            written,
            parts: Vec::new(),
        })
    }

    /// A buffered writer on the temporary file, emptied, the output's name, and the
    /// description to fill in when the result is complete.
    #[allow(clippy::type_complexity)]
    fn parts(&mut self) -> Result<(BufWriter<&mut File>, &Path, &mut Option<String>)> {
        let Output {
            path,
            temp,
            written,
            ..
        } = self;
        let Some(temp) = temp.as_mut() else {
            return Err(CliError::runtime(format!(
                "{}: already committed",
                path.display()
            )));
        };
        if written.is_some() {
            return Err(CliError::runtime(format!(
                "{}: already written",
                path.display()
            )));
        }
        // Start from an empty file, even after an abandoned attempt.
        let file = temp.as_file_mut();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .map_err(|e| write_failed(path, e))?;
        let w = BufWriter::with_capacity(BUFFER_BYTES, file);
        Ok((w, path.as_path(), written))
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
        let Some(written) = self.written.take() else {
            // Dropping `temp` deletes it: an unfinished result never gets the output's name.
            let temp_path = temp.path().to_owned();
            drop(temp);
            pending().retain(|p| p != &temp_path);
            return Err(CliError::runtime(format!(
                "{}: the result was not completely written; nothing saved",
                self.path.display()
            )));
        };
        let temp_path = temp.path().to_owned();
        let done = if self.force {
            temp.persist(&self.path)
        } else {
            temp.persist_noclobber(&self.path)
        };
        pending().retain(|p| p != &temp_path);
        if done.is_ok() && !self.quiet {
            eprintln!("wrote {}: {written}", self.path.display());
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

/// `<path>: writing failed: <why>` (a runtime error: the disk, not the input).
fn write_failed(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::runtime(format!("{}: writing failed: {e}", path.display()))
}

/// Flushes `w` and makes its file durable.
fn flush_and_sync(w: BufWriter<&mut File>, path: &Path) -> Result<()> {
    let file = w.into_inner().map_err(|e| write_failed(path, e.error()))?;
    file.sync_all().map_err(|e| write_failed(path, e))
}

/// A `.npy` file being written into an [`Output`]: the header for the whole shape is
/// written, values are appended in C order as they come ([`NpyStream::append`]), and
/// [`NpyStream::finish`] checks that they all came. Unfinished, the output cannot be
/// committed, so an interrupted stream never leaves a truncated file.
pub struct NpyStream<'a, T> {
    w: BufWriter<&'a mut File>,
    path: &'a Path,
    written: &'a mut Option<String>,
    shape: Vec<usize>,
    /// Values still to come.
    remaining: usize,
    _t: PhantomData<T>,
}

impl<T: Compute> NpyStream<'_, T> {
    /// Appends the next `values` in C order.
    ///
    /// # Errors
    /// A runtime error naming the output if writing fails, or if more values come than the
    /// shape holds.
    pub fn append(&mut self, values: &[T]) -> Result<()> {
        if values.len() > self.remaining {
            return Err(CliError::runtime(format!(
                "{}: more values than its shape {:?} holds",
                self.path.display(),
                self.shape
            )));
        }
        npy::write_values(&mut self.w, values).map_err(|e| write_failed(self.path, e))?;
        self.remaining -= values.len();
        Ok(())
    }

    /// Flushes the file and marks the output complete (ready to commit).
    ///
    /// # Errors
    /// A runtime error naming the output if values are missing or writing fails.
    pub fn finish(self) -> Result<()> {
        if self.remaining != 0 {
            return Err(CliError::runtime(format!(
                "{}: {} values of shape {:?} were never computed",
                self.path.display(),
                self.remaining,
                self.shape
            )));
        }
        flush_and_sync(self.w, self.path)?;
        *self.written = Some(format!(
            "{} {:?}",
            Stored::of::<T>().numpy_name(),
            self.shape
        ));
        Ok(())
    }
}

/// An `.npz` archive being written into an [`Output`]: each array is one uncompressed entry
/// `<name>.npy`, which `numpy.load(path)[name]` reads.
pub struct NpzWriter<'a> {
    zip: ZipWriter<BufWriter<&'a mut File>>,
    path: &'a Path,
    written: &'a mut Option<String>,
    /// `name dtype [shape]` of each array added, for the line printed on success.
    parts: Vec<String>,
}

impl<'a> NpzWriter<'a> {
    /// Adds `values` (C order, `shape`) as the array `name`, stored as [`Stored::of::<T>`].
    ///
    /// # Errors
    /// A runtime error naming the output if writing fails.
    pub fn values<T: Compute>(&mut self, name: &str, shape: &[usize], values: &[T]) -> Result<()> {
        self.entry(name, Stored::of::<T>(), shape, values.len(), |w| {
            npy::write_values(w, values)
        })
    }

    /// Adds the library's `u32` column indices as the int64 array `name` (NumPy's index type).
    ///
    /// # Errors
    /// A runtime error naming the output if writing fails.
    pub fn indices(&mut self, name: &str, shape: &[usize], indices: &[u32]) -> Result<()> {
        self.entry(name, Stored::I64, shape, indices.len(), |w| {
            npy::write_indices(w, indices)
        })
    }

    /// One entry: the `.npy` header, then `len` values written by `data`.
    fn entry(
        &mut self,
        name: &str,
        stored: Stored,
        shape: &[usize],
        len: usize,
        data: impl FnOnce(&mut ZipWriter<BufWriter<&'a mut File>>) -> std::io::Result<()>,
    ) -> Result<()> {
        let path = self.path;
        let mut header = Vec::new();
        npy::write_header(&mut header, stored, shape).map_err(|e| write_failed(path, e))?;
        let bytes =
            (header.len() as u64).saturating_add((len as u64).saturating_mul(stored.size as u64));
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .unix_permissions(0o644)
            .large_file(bytes >= u64::from(u32::MAX));
        self.zip
            .start_file(format!("{name}.npy"), options)
            .map_err(|e| write_failed(path, e))?;
        self.zip
            .write_all(&header)
            .and_then(|()| data(&mut self.zip))
            .map_err(|e| write_failed(path, e))?;
        self.parts
            .push(format!("{name} {} {shape:?}", stored.numpy_name()));
        Ok(())
    }

    /// Writes the archive's directory, flushes the file and marks the output complete.
    ///
    /// # Errors
    /// A runtime error naming the output if writing fails.
    pub fn finish(self) -> Result<()> {
        let w = self.zip.finish().map_err(|e| write_failed(self.path, e))?;
        flush_and_sync(w, self.path)?;
        *self.written = Some(self.parts.join(", "));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Output;
    use crate::options::{DeviceArg, GlobalOpts};

    fn opts() -> GlobalOpts {
        GlobalOpts {
            device: DeviceArg::Cpu,
            dtype: None,
            quiet: true,
            force: false,
            block_bytes: None,
        }
    }

    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|d| d.count())
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn a_stream_is_committed_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        // Two of the six values: commit refuses, and the temporary file is gone.
        let mut out = Output::create(&path, &opts()).unwrap();
        let mut s = out.npy_stream::<f32>(&[2, 3]).unwrap();
        s.append(&[1.0, 2.0]).unwrap();
        assert!(
            s.append(&[0.0; 5]).is_err(),
            "more values than the shape holds"
        );
        drop(s);
        assert!(out.commit().is_err());
        assert_eq!(files(dir.path()), 0);
        // All six in pieces: the file is the whole array.
        let mut out = Output::create(&path, &opts()).unwrap();
        let mut s = out.npy_stream::<f32>(&[2, 3]).unwrap();
        for piece in [&[1.0f32, 2.0][..], &[3.0], &[4.0, 5.0, 6.0]] {
            s.append(piece).unwrap();
        }
        s.finish().unwrap();
        out.commit().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            (bytes.len() - 24) % 64,
            0,
            "a 64-byte aligned header, then 24 bytes"
        );
        let data: Vec<f32> = bytes[bytes.len() - 24..]
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(data, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(files(dir.path()), 1);
    }

    #[test]
    fn an_unfinished_npz_is_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.npz");
        let mut out = Output::create(&path, &opts()).unwrap();
        let mut z = out.npz().unwrap();
        z.values("values", &[2], &[1.0f32, 2.0]).unwrap();
        drop(z);
        assert!(out.commit().is_err());
        assert_eq!(files(dir.path()), 0);
    }

    #[test]
    fn an_abandoned_attempt_leaves_no_trace_in_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.npy");
        let mut out = Output::create(&path, &opts()).unwrap();
        let mut s = out.npy_stream::<f32>(&[1000]).unwrap();
        s.append(&[7.0; 600]).unwrap();
        drop(s);
        out.write_npy(&[2], &[1.0f64, 2.0]).unwrap();
        out.commit().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((bytes.len() - 16) % 64, 0, "header, then two f64 only");
        assert_eq!(&bytes[bytes.len() - 8..], &2.0f64.to_ne_bytes());
    }
}
