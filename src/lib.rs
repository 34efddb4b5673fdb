//! # cosim — cosine similarity on NVIDIA GPUs, and on the CPU
//!
//! Hand-written CUDA kernels launched through safe [`cudarc`] wrappers ([`cuda::Cuda`]), and
//! a multithreaded CPU backend ([`cpu`]) with the same function names. Semantics follow
//! PyTorch's `torch.nn.functional.cosine_similarity` (≥ 2.1), with deliberate fixes:
//!
//! - `cos(x1, x2) = Σ x1·x2 / (max(‖x1‖, eps) · max(‖x2‖, eps))`, eps = 1e-8 by default;
//! - shapes broadcast like NumPy; `dim` may be negative; rank 0..=8; size-0 dims allowed;
//! - sums accumulate in f32 for f16/bf16/f32 and in f64 for f64; output in the input type;
//! - a zero vector gives 0 (PyTorch gives NaN for f16), NaN in gives NaN out;
//! - results are clamped to [−1, 1] (PyTorch can return 1.0000001).
//!
//! ```
//! use cosim::cpu;
//! // Two [1, 2, 2] maps, cosine along the channel dim: one value per pixel.
//! let a = [1.0f32, 2.0, 3.0, 4.0, 0.0, 0.0, 1.0, 1.0];
//! let b = [2.0f32, 4.0, -3.0, 4.0, 0.0, 1.0, 1.0, -1.0];
//! let s = cpu::cosine_similarity(&a, &[1, 2, 2, 2], &b, &[1, 2, 2, 2], 1, None)?;
//! assert_eq!(s.shape, vec![1, 2, 2]);
//! assert_eq!(s.values[0], 1.0);
//! # Ok::<(), cosim::Error>(())
//! ```

#[cfg(feature = "candle")]
pub mod candle;
pub mod cosine;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod device;
mod element;
mod error;
pub mod pairwise;
pub mod plan;
pub mod shard;
pub mod stream;

/// The cudarc this crate is built against, for creating buffers and streams that match.
#[cfg(feature = "cuda")]
pub use cudarc;
pub use device::{AnyElement, Device};
pub use element::{Accum, Element};
pub use error::{Error, Result};
pub use half::{bf16, f16};
pub use plan::{DEFAULT_EPS, MAX_DIMS};

/// A result and its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Similarity<V> {
    pub values: V,
    pub shape: Vec<usize>,
}

/// A reweighted tensor and the per-channel similarities that weighted it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reweighted<V> {
    /// `y` scaled per channel; the broadcast shape of the two inputs.
    pub weighted: V,
    pub weighted_shape: Vec<usize>,
    /// One cosine per channel; the broadcast shape up to the flattened dims.
    pub similarity: V,
    pub similarity_shape: Vec<usize>,
}
