//! NumPy `.npy` files: headers parsed by `npyz`, data read from a memory map (large files) and
//! used in place when it already is what we compute in, otherwise converted in parallel;
//! Fortran-order arrays transposed into C order; results written as C-order `.npy`: a header,
//! then the values in one piece or in blocks as they are computed.

use crate::dtype::{Compute, Dtype};
use crate::error::{CliError, Result};
use memmap2::Mmap;
use npyz::{DType, Endianness, Order, TypeChar, WriterBuilder};
use rayon::prelude::*;
use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Files at least this large are memory-mapped instead of read into a buffer.
const MMAP_MIN_BYTES: u64 = 1 << 20;
/// Elements converted per parallel task.
const CHUNK: usize = 1 << 16;

/// What a file's elements are, as its header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    pub kind: Kind,
    /// Bytes per element.
    pub size: usize,
    pub big_endian: bool,
}

/// The element kinds we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Float,
    Int,
    Uint,
    Bool,
}

impl Source {
    /// The type computed in when `--dtype` is not given: floats as themselves, integers and
    /// bools as f32 (PyTorch's promotion to the default float type).
    pub fn natural(&self) -> Dtype {
        match (self.kind, self.size) {
            (Kind::Float, 2) => Dtype::F16,
            (Kind::Float, 8) => Dtype::F64,
            _ => Dtype::F32,
        }
    }

    /// Whether the values are not floating point (and so are converted, with a note).
    pub fn is_integral(&self) -> bool {
        self.kind != Kind::Float
    }

    /// The NumPy name: float32, int64, uint8, bool.
    pub fn name(&self) -> String {
        match self.kind {
            Kind::Float => format!("float{}", self.size * 8),
            Kind::Int => format!("int{}", self.size * 8),
            Kind::Uint => format!("uint{}", self.size * 8),
            Kind::Bool => "bool".into(),
        }
    }

    /// Whether the bytes are exactly `T`'s in-memory representation.
    fn is_native<T: Compute>(&self) -> bool {
        let same = matches!(
            (T::DTYPE, self.kind, self.size),
            (Dtype::F16, Kind::Float, 2)
                | (Dtype::F32, Kind::Float, 4)
                | (Dtype::F64, Kind::Float, 8)
        );
        same && self.big_endian == cfg!(target_endian = "big")
    }
}

/// A file's bytes: memory-mapped, or read whole when small.
enum Bytes {
    Mapped(Mmap),
    Read(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Read(v) => v,
        }
    }
}

/// An opened `.npy` file: header checked, data not yet converted.
pub struct NpyInput {
    pub path: PathBuf,
    /// The array's shape (in C order, whatever the file's order).
    pub shape: Vec<usize>,
    pub source: Source,
    fortran: bool,
    bytes: Bytes,
    /// Where the data starts in `bytes`.
    offset: usize,
    len: usize,
}

impl NpyInput {
    /// Opens `path`, parses and checks its header, and checks that the data is all there.
    ///
    /// # Errors
    /// A usage error naming the file if it cannot be read, is not a `.npy` file, has a dtype
    /// we do not read, or is shorter than its header says.
    pub fn open(path: &Path) -> Result<NpyInput> {
        let fail = |msg: String| CliError::file(path, msg);
        let mut file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        if meta.is_dir() {
            return Err(fail("is a directory, not a .npy file".into()));
        }
        let bytes = if meta.len() >= MMAP_MIN_BYTES {
            // SAFETY: the map is read-only and private to this process. Another process that
            // truncates or rewrites the file while we read it could change what we see (or
            // fault on pages that no longer exist); like NumPy's mmap_mode, we accept that
            // for inputs the user hands us.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| fail(format!("cannot map: {e}")))?;
            Bytes::Mapped(map)
        } else {
            let mut v = Vec::with_capacity(meta.len() as usize);
            file.read_to_end(&mut v)
                .map_err(|e| fail(format!("cannot read: {e}")))?;
            Bytes::Read(v)
        };
        NpyInput::parse(path, bytes)
    }

    /// An array held in memory (an entry of an `.npz` archive), `label` naming it in messages.
    ///
    /// # Errors
    /// As [`NpyInput::open`].
    pub fn from_vec(label: &Path, bytes: Vec<u8>) -> Result<NpyInput> {
        NpyInput::parse(label, Bytes::Read(bytes))
    }

    fn parse(path: &Path, bytes: Bytes) -> Result<NpyInput> {
        let fail = |msg: String| CliError::file(path, msg);
        let all = bytes.as_slice();
        let npy =
            npyz::NpyFile::new(all).map_err(|e| fail(format!("not a valid .npy file ({e})")))?;
        let dtype = npy.dtype();
        let fortran = npy.order() == Order::Fortran;
        let shape: Vec<usize> = npy
            .shape()
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| fail("shape does not fit in memory addresses".into()))?;
        let offset = all.len() - npy.into_inner().len();
        let source = source_of(&dtype).map_err(fail)?;
        let len = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|n| n.checked_mul(source.size).is_some())
            .ok_or_else(|| fail(format!("shape {shape:?} is too large")))?;
        let have = all.len() - offset;
        if have < len * source.size {
            return Err(fail(format!(
                "truncated: the header says {shape:?} of {} ({} bytes) but {have} bytes follow it",
                source.name(),
                len * source.size
            )));
        }
        // Fortran and C order only differ when more than one dim is longer than 1.
        let fortran = fortran && shape.iter().filter(|&&d| d > 1).count() > 1;
        Ok(NpyInput {
            path: path.to_owned(),
            shape,
            source,
            fortran,
            bytes,
            offset,
            len,
        })
    }

    /// The values as `T` in C order: the file's own bytes when they already are (no copy),
    /// otherwise converted (and transposed from Fortran order).
    pub fn values<T: Compute>(&self) -> Cow<'_, [T]> {
        let data = &self.bytes.as_slice()[self.offset..self.offset + self.len * self.source.size];
        let in_place = if self.source.is_native::<T>() {
            bytemuck::try_cast_slice::<u8, T>(data).ok()
        } else {
            None
        };
        let c_order: Cow<'_, [T]> = match in_place {
            Some(v) => Cow::Borrowed(v),
            None => Cow::Owned(convert(self.source, data, self.len)),
        };
        if self.fortran {
            Cow::Owned(fortran_to_c(&c_order, &self.shape))
        } else {
            c_order
        }
    }

    /// `path [shape] dtype`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} {:?} {}",
            self.path.display(),
            self.shape,
            self.source.name()
        )
    }
}

/// The element kind of a header's dtype, or why we do not read it.
fn source_of(dtype: &DType) -> std::result::Result<Source, String> {
    let DType::Plain(ts) = dtype else {
        return Err(format!(
            "unsupported dtype {} (a structured or nested dtype); cosim reads float16/32/64, integers and bool",
            dtype.descr()
        ));
    };
    let size = ts.size_field() as usize;
    let kind = match (ts.type_char(), size) {
        (TypeChar::Float, 2 | 4 | 8) => Kind::Float,
        (TypeChar::Int, 1 | 2 | 4 | 8) => Kind::Int,
        (TypeChar::Uint, 1 | 2 | 4 | 8) => Kind::Uint,
        (TypeChar::Bool, 1) => Kind::Bool,
        _ => {
            return Err(format!(
                "unsupported dtype '{ts}'; cosim reads float16/32/64, integers and bool"
            ))
        }
    };
    Ok(Source {
        kind,
        size,
        big_endian: ts.endianness() == Endianness::Big,
    })
}

/// Converts `n` elements of `src` layout in `bytes` to `T`, in parallel.
fn convert<T: Compute>(src: Source, bytes: &[u8], n: usize) -> Vec<T> {
    let mut out = vec![T::round_f64(0.0); n];
    let be = src.big_endian;
    match (src.kind, src.size) {
        (Kind::Float, 2) => each::<T, 2>(bytes, &mut out, move |b| {
            cosim::f16::from_bits(if be {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            })
            .to_f64()
        }),
        (Kind::Float, 4) => each::<T, 4>(bytes, &mut out, move |b| {
            (if be {
                f32::from_be_bytes(b)
            } else {
                f32::from_le_bytes(b)
            }) as f64
        }),
        (Kind::Float, _) => each::<T, 8>(bytes, &mut out, move |b| {
            if be {
                f64::from_be_bytes(b)
            } else {
                f64::from_le_bytes(b)
            }
        }),
        (Kind::Bool, _) => each::<T, 1>(bytes, &mut out, |b| f64::from(u8::from(b[0] != 0))),
        (Kind::Int, 1) => each::<T, 1>(bytes, &mut out, |b| i8::from_le_bytes(b) as f64),
        (Kind::Uint, 1) => each::<T, 1>(bytes, &mut out, |b| b[0] as f64),
        (Kind::Int, 2) => each::<T, 2>(bytes, &mut out, move |b| {
            (if be {
                i16::from_be_bytes(b)
            } else {
                i16::from_le_bytes(b)
            }) as f64
        }),
        (Kind::Uint, 2) => each::<T, 2>(bytes, &mut out, move |b| {
            (if be {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }) as f64
        }),
        (Kind::Int, 4) => each::<T, 4>(bytes, &mut out, move |b| {
            (if be {
                i32::from_be_bytes(b)
            } else {
                i32::from_le_bytes(b)
            }) as f64
        }),
        (Kind::Uint, 4) => each::<T, 4>(bytes, &mut out, move |b| {
            (if be {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }) as f64
        }),
        (Kind::Int, _) => each::<T, 8>(bytes, &mut out, move |b| {
            (if be {
                i64::from_be_bytes(b)
            } else {
                i64::from_le_bytes(b)
            }) as f64
        }),
        (Kind::Uint, _) => each::<T, 8>(bytes, &mut out, move |b| {
            (if be {
                u64::from_be_bytes(b)
            } else {
                u64::from_le_bytes(b)
            }) as f64
        }),
    }
    out
}

/// `out[i] = T::round_f64(f(element i))` over `N`-byte elements, in parallel chunks.
fn each<T: Compute, const N: usize>(
    bytes: &[u8],
    out: &mut [T],
    f: impl Fn([u8; N]) -> f64 + Sync,
) {
    let (elems, _) = bytes.as_chunks::<N>();
    out.par_chunks_mut(CHUNK)
        .zip(elems.par_chunks(CHUNK))
        .for_each(|(o, e)| {
            for (d, &s) in o.iter_mut().zip(e) {
                *d = T::round_f64(f(s));
            }
        });
}

/// The C-order copy of an array stored in Fortran order (first index fastest) with `shape`.
fn fortran_to_c<T: Copy>(src: &[T], shape: &[usize]) -> Vec<T> {
    let rank = shape.len();
    let mut stride = vec![1usize; rank];
    for k in 1..rank {
        stride[k] = stride[k - 1] * shape[k - 1];
    }
    let mut out = Vec::with_capacity(src.len());
    let mut idx = vec![0usize; rank];
    let mut off = 0usize;
    for _ in 0..src.len() {
        out.push(src[off]);
        // Advance the C-order index (last dim fastest) and the Fortran offset with it.
        for k in (0..rank).rev() {
            idx[k] += 1;
            off += stride[k];
            if idx[k] < shape[k] {
                break;
            }
            off -= stride[k] * shape[k];
            idx[k] = 0;
        }
    }
    out
}

/// An element type as stored in a `.npy` file: its NumPy type character and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    /// `f` (floating) or `i` (signed integer).
    pub kind: char,
    /// Bytes per element.
    pub size: usize,
}

impl Stored {
    /// How a result computed in `T` is stored ([`stored_dtype`]: bf16 as f32).
    pub fn of<T: Compute>() -> Stored {
        let size = match stored_dtype(T::DTYPE) {
            Dtype::F16 => 2,
            Dtype::F64 => 8,
            _ => 4,
        };
        Stored { kind: 'f', size }
    }

    /// int64, the type NumPy gives indices.
    pub const I64: Stored = Stored { kind: 'i', size: 8 };

    /// The NumPy name: float32, int64.
    pub fn numpy_name(self) -> String {
        match self.kind {
            'f' => format!("float{}", self.size * 8),
            _ => format!("int{}", self.size * 8),
        }
    }
}

/// Writes the header of a C-order `.npy` file of `shape` in `stored` (native byte order);
/// the values follow, `shape`'s product of them, written by [`write_values`] or
/// [`write_indices`] (in one piece or in several, in C order).
pub fn write_header(w: &mut impl Write, stored: Stored, shape: &[usize]) -> io::Result<()> {
    let endian = if cfg!(target_endian = "big") {
        '>'
    } else {
        '<'
    };
    let ts: npyz::TypeStr = format!("{endian}{}{}", stored.kind, stored.size)
        .parse()
        .map_err(|e| io::Error::other(format!("{e}")))?;
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    npyz::WriteOptions::new_header_only()
        .dtype(DType::Plain(ts))
        .shape(&dims)
        .writer(&mut *w)
        .write_header_only()
        .map(drop)
}

/// Writes values after a header from [`write_header`] with [`Stored::of::<T>`]: as they are,
/// or (bf16) widened to f32 in chunks.
pub fn write_values<T: Compute>(w: &mut impl Write, values: &[T]) -> io::Result<()> {
    if stored_dtype(T::DTYPE) == T::DTYPE {
        w.write_all(bytemuck::cast_slice(values))
    } else {
        for chunk in values.chunks(CHUNK) {
            let wide: Vec<f32> = chunk.iter().map(|v| v.to_f64() as f32).collect();
            w.write_all(bytemuck::cast_slice(&wide))?;
        }
        Ok(())
    }
}

/// Writes the library's `u32` column indices as int64 (NumPy's index type), after a header
/// from [`write_header`] with [`Stored::I64`], converting in chunks.
pub fn write_indices(w: &mut impl Write, indices: &[u32]) -> io::Result<()> {
    for chunk in indices.chunks(CHUNK) {
        let wide: Vec<i64> = chunk.iter().map(|&i| i64::from(i)).collect();
        w.write_all(bytemuck::cast_slice(&wide))?;
    }
    Ok(())
}

/// The dtype a result computed in `d` is stored as in a `.npy` file.
pub fn stored_dtype(d: Dtype) -> Dtype {
    match d {
        Dtype::Bf16 => Dtype::F32,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::fortran_to_c;

    #[test]
    fn fortran_order_is_transposed() {
        // A [2, 3] array [[0, 1, 2], [3, 4, 5]] stored first-index-fastest.
        let f = [0, 3, 1, 4, 2, 5];
        assert_eq!(fortran_to_c(&f, &[2, 3]), vec![0, 1, 2, 3, 4, 5]);
        // [2, 2, 2]: element (i, j, k) at i + 2j + 4k.
        let f: Vec<usize> = (0..8).collect();
        let c = fortran_to_c(&f, &[2, 2, 2]);
        let want: Vec<usize> = (0..8)
            .map(|n| (n >> 2) + 2 * ((n >> 1) & 1) + 4 * (n & 1))
            .collect();
        assert_eq!(c, want);
    }
}
