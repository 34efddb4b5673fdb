//! Page-locked host buffers for the GPU pipeline: copies from them run asynchronously, so
//! staging the next piece of work overlaps the current one.

use crate::error::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaStream, DevicePtr, DeviceRepr, HostSlice, PinnedHostSlice, ValidAsZeroBits,
};
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
) -> Result<PinnedHostSlice<T>> {
    let flags = if write_combined {
        cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED
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

/// Queues a copy of all of `src` into the front of `dst` on `stream`. cudarc's
/// `memcpy_dtoh` copies `dst.len()` elements, reading past the end of a shorter source (the
/// emulated driver refuses that; a GPU may read a neighbour's memory or fault).
///
/// # Errors
/// The driver's, or an internal error if `dst` is shorter than `src`.
pub fn download_front<E: DeviceRepr>(
    stream: &Arc<CudaStream>,
    src: &impl DevicePtr<E>,
    dst: &mut PinnedHostSlice<E>,
) -> Result<()> {
    let n = src.len();
    if dst.len() < n {
        return Err(Error::Internal(
            "a result longer than its pinned buffer".into(),
        ));
    }
    stream.context().bind_to_thread()?;
    let (from, _read) = src.device_ptr(stream);
    // SAFETY: the slice is used only by the copy queued on `stream` below; its guard records
    // the pinned buffer's event after it, so a later host access waits for the copy.
    let (to, _written) = unsafe { dst.stream_synced_mut_slice(stream) };
    // SAFETY: `to[..n]` is valid pinned host memory for n elements and `from` holds n
    // elements of the same type on `stream`'s device; both stay alive until the guards above
    // have recorded the copy's completion events.
    unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut to[..n], from, stream.cu_stream()) }?;
    Ok(())
}
