//! The library's error type: every way a call can fail, each with a message that names the
//! offending values, so that a caller can show it as is.

use crate::plan::MAX_DIMS;

/// Why a cosim call refused or failed. Nothing is written to an output when one is returned
/// for a validation error (every variant above [`Error::NoDriver`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The two input shapes do not broadcast against each other.
    #[error("shapes {shape1:?} and {shape2:?} do not broadcast: at dim {dim} (of the broadcast rank {rank}) the sizes are {size1} and {size2}")]
    Broadcast {
        shape1: Vec<usize>,
        shape2: Vec<usize>,
        dim: usize,
        rank: usize,
        size1: usize,
        size2: usize,
    },
    /// `dim` is outside `-rank..rank` of the broadcast shape.
    #[error("dim {dim} is out of range for the broadcast shape {shape:?} (expected {lo}..={hi})", lo = -(*rank as isize).max(1), hi = (*rank as isize).max(1) - 1)]
    DimOutOfRange {
        dim: isize,
        rank: usize,
        shape: Vec<usize>,
    },
    /// `flatten_from` does not leave a dim to keep and a dim to flatten.
    #[error("flatten_from {from} is out of range for the broadcast shape {shape:?} (expected 0..{rank})", rank = shape.len())]
    FlattenOutOfRange { from: usize, shape: Vec<usize> },
    /// One input is broadcast along some, but not all, of the flattened dims, so its flattened
    /// vector has no single stride.
    #[error("input {input} (shape {shape:?}) is broadcast along part of the flattened dims {from}.. of {broadcast:?}; broadcast all of them or none")]
    PartialFlattenBroadcast {
        input: u8,
        shape: Vec<usize>,
        broadcast: Vec<usize>,
        from: usize,
    },
    /// A shape has more dims than the kernels index.
    #[error("shape {shape:?} has rank {rank}, more than the supported {MAX_DIMS}", rank = shape.len())]
    RankTooLarge { shape: Vec<usize> },
    /// The element count of a shape does not fit in memory addresses.
    #[error("shape {shape:?} has more elements than fit in usize")]
    SizeOverflow { shape: Vec<usize> },
    /// A buffer's length does not match the product of the shape it came with.
    #[error("{what} has {len} elements but its shape {shape:?} holds {expected}")]
    LenMismatch {
        what: &'static str,
        len: usize,
        shape: Vec<usize>,
        expected: usize,
    },
    /// An output buffer passed to an `_into` function has the wrong length.
    #[error("{what} has {len} elements but the result has shape {shape:?} ({expected} elements)")]
    OutLenMismatch {
        what: &'static str,
        len: usize,
        shape: Vec<usize>,
        expected: usize,
    },
    /// A pairwise set is not `[N, D]`/`[D, N]` or `[B, N, D]`/`[B, D, N]`.
    #[error("set {which} has shape {shape:?}; with layout {layout:?} it must be {form} or [B, {form_inner}]", form = layout_form(*layout), form_inner = &layout_form(*layout)[1..layout_form(*layout).len() - 1])]
    PairShape {
        which: &'static str,
        shape: Vec<usize>,
        layout: crate::pairwise::Layout,
    },
    /// A pairwise set holds no vectors.
    #[error("set {which} (shape {shape:?}) holds no vectors")]
    EmptySet {
        which: &'static str,
        shape: Vec<usize>,
    },
    /// The two sets of a pairwise call do not fit together.
    #[error("the {what} of the two sets differ: a has shape {a_shape:?} ({a_layout:?}), b has shape {b_shape:?} ({b_layout:?})")]
    PairMismatch {
        what: &'static str,
        a_shape: Vec<usize>,
        a_layout: crate::pairwise::Layout,
        b_shape: Vec<usize>,
        b_layout: crate::pairwise::Layout,
    },
    /// Top-k needs `1 <= k <= M`.
    #[error("k = {k} is out of range: top-k needs 1 <= k <= {m}, the number of vectors in b")]
    BadK { k: usize, m: usize },
    /// A pairwise problem exceeds what the kernels index.
    #[error("too many {what}: {count}")]
    PairTooLarge { what: &'static str, count: usize },
    /// Top-k and argmax return `u32` column indices, which cannot name every vector of `b`.
    #[error("top-k and argmax return u32 column indices, but b holds {m} vectors (at most 2^32 are supported)")]
    IndexOverflow { m: usize },
    /// A shard spec that names no shard.
    #[error("shard {spec:?}: {why}")]
    BadShard { spec: String, why: &'static str },
    /// Parts of one result (shards, chunks) that do not fit together.
    #[error("the parts do not belong together: {0}")]
    ShardMismatch(String),
    /// eps must be a number ≥ 0.
    #[error("eps must be >= 0 and not NaN, got {0}")]
    BadEps(f64),
    /// libcuda could not be loaded: no NVIDIA driver on this machine.
    #[error("no CUDA driver found (libcuda.so could not be loaded); use the CPU backend (cosim::cpu) on this machine")]
    NoDriver,
    /// The driver is there but the device is not.
    #[error("CUDA device {ordinal} is not available ({count} device(s) found)")]
    NoDevice { ordinal: usize, count: usize },
    /// The crate was built without nvcc, so it holds no kernels.
    #[error("cosim was built without its CUDA kernels because nvcc was not found at build time; install nvcc (scripts/install-nvcc.sh prints a path) and rebuild with NVCC=/path/to/nvcc")]
    KernelsNotBuilt,
    /// A device buffer lives in another CUDA context than the handle.
    #[error("{what} belongs to CUDA device {buffer} but the handle runs on device {handle}")]
    WrongDevice {
        what: &'static str,
        buffer: usize,
        handle: usize,
    },
    /// The device ran out of memory for an output or a scratch buffer.
    #[error("CUDA device out of memory while allocating {bytes} bytes for {what}")]
    OutOfMemory { what: &'static str, bytes: usize },
    /// A caller's progress callback asked the streaming engine to stop; nothing was handed
    /// on after that.
    #[error("stopped by the caller before the work was done")]
    Cancelled,
    /// An operation this build or this device cannot run.
    #[error("{0}")]
    Unsupported(String),
    /// A broken promise inside cosim (a bug): please report it with the message.
    #[error("internal error in cosim: {0}")]
    Internal(String),
    /// A kernel module did not load, most often because the driver is older than the CUDA
    /// that built the kernels.
    #[cfg(feature = "cuda")]
    #[error("loading cosim's {family} kernels failed ({source}): they were built by CUDA {kernels_cuda} and this driver supports CUDA {driver_cuda}{hint}", hint = load_hint(kernels_cuda, driver_cuda))]
    KernelLoad {
        family: &'static str,
        kernels_cuda: &'static str,
        driver_cuda: String,
        source: cudarc::driver::DriverError,
    },
    /// Any other failure reported by the CUDA driver.
    #[cfg(feature = "cuda")]
    #[error("CUDA driver error: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
}

/// What to do about a kernel module that did not load, from the two CUDA versions ("13.0").
#[cfg(feature = "cuda")]
fn load_hint(kernels: &str, driver: &str) -> String {
    let major = |v: &str| v.split('.').next().and_then(|m| m.parse::<u32>().ok());
    match (major(kernels), major(driver)) {
        (Some(k), Some(d)) if d < k => format!(
            "; a CUDA {d} driver cannot load CUDA {k} code: update the NVIDIA driver to one for CUDA {kernels} or newer, or rebuild cosim with a CUDA {d} nvcc (NVCC=/path/to/nvcc cargo build)"
        ),
        _ => String::new(),
    }
}

/// How a layout names the dims of an unbatched set, for messages.
fn layout_form(layout: crate::pairwise::Layout) -> &'static str {
    match layout {
        crate::pairwise::Layout::Rows => "[N, D]",
        crate::pairwise::Layout::Cols => "[D, N]",
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
