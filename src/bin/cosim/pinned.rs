//! Page-locked host buffers for the GPU pipelines (`blocks` and `pipeline`): copies from
//! them run asynchronously, so staging the next piece of work overlaps the current one.

use cosim::cudarc::driver::{CudaContext, DeviceRepr, PinnedHostSlice, ValidAsZeroBits};
use std::sync::Arc;

/// A pinned host buffer of `len` elements (at least one), zeroed. `write_combined` suits a
/// buffer the host only writes and the GPU only reads (uploads): faster to copy from, slow
/// for the host to read.
///
/// # Errors
/// The driver's refusal (out of pinned memory).
pub fn pinned<T: DeviceRepr + ValidAsZeroBits>(
    ctx: &Arc<CudaContext>,
    len: usize,
    write_combined: bool,
) -> cosim::Result<PinnedHostSlice<T>> {
    let flags = if write_combined {
        cosim::cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED
    } else {
        0
    };
    // SAFETY: the allocation is uninitialised; it is zeroed through a raw pointer below
    // before any reference to its elements exists.
    let mut h = unsafe { ctx.alloc_pinned_with_flags::<T>(len.max(1), flags) }?;
    let p = h.as_mut_ptr()?;
    // SAFETY: `p` points to `len.max(1)` elements just allocated and owned by `h`.
    unsafe { std::ptr::write_bytes(p, 0, len.max(1)) };
    Ok(h)
}
