//! The CUDA backend: hand-written kernels (`kernels/*.cu`) launched through cudarc on a
//! stream the caller chooses. Functions mirror [`crate::cpu`] by name; inputs and outputs are
//! device buffers (`CudaSlice`/`CudaView`), and no host round trip or extra copy happens.
//! The only device memory allocated besides outputs is a few KiB of partial sums when a few
//! long rows are split across SMs ([`Cuda::scratch_bytes`] says how much).
//!
//! Every call is asynchronous on the handle's stream, like cudarc's own operations.
//!
//! ```no_run
//! use cosim::cuda::Cuda;
//! # fn main() -> Result<(), cosim::Error> {
//! let gpu = Cuda::new(0)?; // Err(NoDriver / NoDevice / KernelsNotBuilt) where it cannot run
//! let (n, c, h, w) = (8, 64, 32, 32);
//! let x = gpu.upload(&vec![1.0f32; n * c * h * w])?;
//! let proto = gpu.upload(&vec![0.5f32; c])?;
//! // Every pixel against one prototype: [8, 64, 32, 32] vs [1, 64, 1, 1], dim 1 → [8, 32, 32].
//! let s = gpu.cosine_similarity(&x, &[n, c, h, w], &proto, &[1, c, 1, 1], 1, None)?;
//! assert_eq!(s.shape, vec![n, h, w]);
//! let host = gpu.download(&s.values)?; // waits for the stream
//! assert!(host.iter().all(|&v| (v - 1.0).abs() < 1e-6));
//! # Ok(())
//! # }
//! ```

mod backward;
mod kernels;
mod launch;
mod pair_backward;
mod pair_reduce;
mod pair_topk;
mod pair_workspace;
mod pairwise;
mod timing;
#[rustfmt::skip]
#[allow(non_camel_case_types, non_upper_case_globals, dead_code, clippy::all)]
mod params;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::plan::{check_out_len, Plan};
use crate::{Reweighted, Similarity};
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, DeviceSlice,
    DriverError, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use kernels::{Family, Kernels};
use launch::{grid_for, plan_launch, scale_params, Buffers, Launch, BLOCK};
use std::sync::Arc;

pub use kernels::{build_info, built as kernels_built, KernelBuild};
pub use pairwise::{PairElement, TOPK_SCRATCH_BYTES};
pub use timing::{clock, time_ms, Clock};

// SAFETY: both are `#[repr(C)]` structs of plain integers and floats, mirrored by bindgen from
// kernels/params.h (layout asserted at compile time there), passed to kernels by value.
unsafe impl DeviceRepr for params::cosim_along_params {}
// SAFETY: as above.
unsafe impl DeviceRepr for params::cosim_rows_params {}

/// Element types the CUDA kernels are built for: f32, f64, f16, bf16.
pub trait CudaElement: Element + DeviceRepr + ValidAsZeroBits {}
impl<T: Element + DeviceRepr + ValidAsZeroBits> CudaElement for T {}

/// A CUDA device, its stream, and the kernels loaded into its context.
#[derive(Clone)]
pub struct Cuda {
    stream: Arc<CudaStream>,
    kernels: Arc<Kernels>,
    sms: usize,
    /// Most device memory for top-k's lists at a time (rows are done in chunks past it).
    topk_scratch: usize,
}

/// What a handle loaded for its context (the kernels) and read of its device (the SM
/// count), to make handles for other streams of that context without loading again.
#[cfg(feature = "candle-cuda")]
#[derive(Clone)]
pub(crate) struct Loaded {
    kernels: Arc<Kernels>,
    sms: usize,
}

#[cfg(feature = "candle-cuda")]
impl Cuda {
    /// The kernels and device facts of this handle.
    pub(crate) fn loaded(&self) -> Loaded {
        Loaded {
            kernels: self.kernels.clone(),
            sms: self.sms,
        }
    }

    /// A handle on `stream`, which must belong to the context `loaded` came from.
    pub(crate) fn from_loaded(stream: Arc<CudaStream>, loaded: Loaded) -> Cuda {
        Cuda {
            stream,
            kernels: loaded.kernels,
            sms: loaded.sms,
            topk_scratch: TOPK_SCRATCH_BYTES,
        }
    }
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cuda")
            .field("ordinal", &self.stream.context().ordinal())
            .field("sms", &self.sms)
            .finish()
    }
}

/// Whether libcuda can be loaded on this machine. cudarc panics on first use without it, so
/// every entry point checks this first.
pub fn driver_present() -> bool {
    use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
    // libcuda.so (the driver's link), libcuda.so.1 (its soname, all a driver-only install
    // has), nvcuda.dll on Windows.
    [
        format!("{DLL_PREFIX}cuda{DLL_SUFFIX}"),
        format!("{DLL_PREFIX}cuda{DLL_SUFFIX}.1"),
        format!("{DLL_PREFIX}nvcuda{DLL_SUFFIX}"),
    ]
    .into_iter()
    // SAFETY: opens libcuda by the names cudarc loads it by, and closes it again; loading
    // the driver library runs only its own initialisers (as cudarc's loading does).
    .any(|path| unsafe { libloading::Library::new(path) }.is_ok())
}

/// Number of CUDA devices, or why there are none to use.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(Error::NoDriver);
    }
    Ok(CudaContext::device_count()?.max(0) as usize)
}

/// The CUDA version the installed driver supports, as (major, minor): (13, 0) for a driver
/// of CUDA 13.0 (R580). Kernels built by a newer major CUDA than this do not load.
///
/// # Errors
/// [`Error::NoDriver`], or the driver's error.
pub fn driver_version() -> Result<(u32, u32)> {
    if !driver_present() {
        return Err(Error::NoDriver);
    }
    let mut v = 0i32;
    // SAFETY: libcuda is present (checked above); cuDriverGetVersion only writes one int and
    // may be called before cuInit.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }.result()?;
    let v = v.max(0) as u32;
    Ok((v / 1000, v % 1000 / 10))
}

fn oom(what: &'static str, bytes: usize) -> impl Fn(DriverError) -> Error {
    move |e| {
        if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            Error::OutOfMemory { what, bytes }
        } else {
            Error::Driver(e)
        }
    }
}

impl Cuda {
    /// Opens device `ordinal` on its default stream and loads the kernels (once per context).
    ///
    /// # Errors
    /// [`Error::NoDriver`], [`Error::NoDevice`], [`Error::KernelsNotBuilt`], or a driver error.
    pub fn new(ordinal: usize) -> Result<Cuda> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::NoDevice { ordinal, count });
        }
        if !kernels::built() {
            return Err(Error::KernelsNotBuilt);
        }
        let ctx = CudaContext::new(ordinal)?;
        Cuda::with_stream(ctx.default_stream())
    }

    /// A handle that runs its work on `stream` (for example one shared with candle or with
    /// the caller's other work).
    ///
    /// # Errors
    /// [`Error::KernelsNotBuilt`] or a driver error while loading the modules.
    pub fn with_stream(stream: Arc<CudaStream>) -> Result<Cuda> {
        let ctx = stream.context();
        let kernels = Kernels::for_context(ctx)?;
        let sms = ctx.attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )?;
        Ok(Cuda {
            stream,
            kernels,
            sms: sms.max(1) as usize,
            topk_scratch: TOPK_SCRATCH_BYTES,
        })
    }

    /// This handle, with top-k's lists (8·k bytes per row and column segment) kept within
    /// `bytes` of device memory: rows are done in chunks that fit, and columns are split into
    /// fewer segments. One row's list is always allowed, however large. The default is
    /// [`TOPK_SCRATCH_BYTES`].
    pub fn with_top_k_scratch_limit(mut self, bytes: usize) -> Cuda {
        self.topk_scratch = bytes;
        self
    }

    /// The most device memory top-k's lists take at a time (see
    /// [`Cuda::with_top_k_scratch_limit`]).
    pub fn top_k_scratch_limit(&self) -> usize {
        self.topk_scratch
    }

    /// The device's streaming multiprocessors.
    pub fn multiprocessors(&self) -> usize {
        self.sms
    }

    /// The stream all work of this handle is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device's name and compute capability.
    pub fn describe(&self) -> Result<String> {
        let ctx = self.stream.context();
        let (major, minor) = ctx.compute_capability()?;
        Ok(format!(
            "{} (sm_{major}{minor}, {} SMs)",
            ctx.name()?,
            self.sms
        ))
    }

    /// Copies a host slice (any device-representable type: elements, u32 indices) to a new
    /// device buffer on this handle's stream.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        if host.is_empty() {
            return self.empty();
        }
        Ok(self.stream.clone_htod(host)?)
    }

    /// A device buffer of length 0. The driver refuses 0-byte allocations on some devices,
    /// so this holds a 1-element allocation and exposes none of it.
    fn empty<T: DeviceRepr>(&self) -> Result<CudaSlice<T>> {
        // SAFETY: the one element is never read: the slice made from it has length 0.
        let one = unsafe { self.stream.alloc::<T>(1) }.map_err(oom("an empty buffer", 1))?;
        let ptr = one.leak();
        // SAFETY: `ptr` is a live allocation of one T made on this stream, owned by nobody
        // after `leak`; the new slice owns (and frees) it and claims 0 ≤ 1 elements of it.
        Ok(unsafe { self.stream.upgrade_device_ptr(ptr, 0) })
    }

    /// Copies a device buffer back to the host (waits for the stream).
    pub fn download<T: DeviceRepr>(&self, dev: &impl DevicePtr<T>) -> Result<Vec<T>> {
        if dev.len() == 0 {
            return Ok(Vec::new());
        }
        Ok(self.stream.clone_dtoh(dev)?)
    }

    /// Device memory the computation of `plan` allocates besides its outputs, at most (it
    /// depends on buffer alignment: misaligned buffers take scalar loads and more splits).
    pub fn scratch_bytes<T: CudaElement>(&self, plan: &Plan) -> usize {
        [true, false]
            .into_iter()
            .map(|aligned| {
                let b = Buffers {
                    elem_bytes: std::mem::size_of::<T>(),
                    x1_aligned: aligned,
                    x2_aligned: aligned,
                    out_aligned: aligned,
                    reweight: None,
                };
                plan_launch(plan, b, self.sms).scratch_bytes(std::mem::size_of::<T::Acc>())
            })
            .max()
            .unwrap_or(0)
    }

    /// `cosine_similarity(x1, x2, dim, eps)` on device buffers; see
    /// [`crate::cpu::cosine_similarity`] for the semantics. Returns a new device buffer.
    ///
    /// # Errors
    /// As the CPU version; also [`Error::WrongDevice`], [`Error::OutOfMemory`], driver errors.
    pub fn cosine_similarity<T: CudaElement>(
        &self,
        x1: &impl DevicePtr<T>,
        shape1: &[usize],
        x2: &impl DevicePtr<T>,
        shape2: &[usize],
        dim: isize,
        eps: Option<f64>,
    ) -> Result<Similarity<CudaSlice<T>>> {
        let plan = Plan::along(shape1, shape2, dim, eps)?;
        self.run(plan, x1, shape1, x2, shape2)
    }

    /// [`Cuda::cosine_similarity`] into a caller's device buffer; returns the result's shape.
    ///
    /// # Errors
    /// As [`Cuda::cosine_similarity`], and if `out` has the wrong length (nothing is written).
    #[allow(clippy::too_many_arguments)]
    pub fn cosine_similarity_into<T: CudaElement>(
        &self,
        out: &mut impl DevicePtrMut<T>,
        x1: &impl DevicePtr<T>,
        shape1: &[usize],
        x2: &impl DevicePtr<T>,
        shape2: &[usize],
        dim: isize,
        eps: Option<f64>,
    ) -> Result<Vec<usize>> {
        let plan = Plan::along(shape1, shape2, dim, eps)?;
        self.run_into(plan, out, x1, shape1, x2, shape2)
    }

    /// Per-channel cosine of flattened maps; see [`crate::cpu::channel_similarity`].
    ///
    /// # Errors
    /// As the CPU version; also device errors as [`Cuda::cosine_similarity`].
    pub fn channel_similarity<T: CudaElement>(
        &self,
        x1: &impl DevicePtr<T>,
        shape1: &[usize],
        x2: &impl DevicePtr<T>,
        shape2: &[usize],
        flatten_from: usize,
        eps: Option<f64>,
    ) -> Result<Similarity<CudaSlice<T>>> {
        let plan = Plan::flattened(shape1, shape2, flatten_from, eps)?;
        self.run(plan, x1, shape1, x2, shape2)
    }

    /// [`Cuda::channel_similarity`] into a caller's device buffer; returns the shape.
    ///
    /// # Errors
    /// As [`Cuda::channel_similarity`], and if `out` has the wrong length.
    #[allow(clippy::too_many_arguments)]
    pub fn channel_similarity_into<T: CudaElement>(
        &self,
        out: &mut impl DevicePtrMut<T>,
        x1: &impl DevicePtr<T>,
        shape1: &[usize],
        x2: &impl DevicePtr<T>,
        shape2: &[usize],
        flatten_from: usize,
        eps: Option<f64>,
    ) -> Result<Vec<usize>> {
        let plan = Plan::flattened(shape1, shape2, flatten_from, eps)?;
        self.run_into(plan, out, x1, shape1, x2, shape2)
    }

    /// Reweights each channel of `y` by its similarity to the same channel of `x`; see
    /// [`crate::cpu::reweight_channels`]. For contiguous channels the similarity and the
    /// weighted tensor come from one kernel: x and y are read once from DRAM, y's second read
    /// mostly hits L2.
    ///
    /// # Errors
    /// As the CPU version; also device errors as [`Cuda::cosine_similarity`].
    pub fn reweight_channels<T: CudaElement>(
        &self,
        x: &impl DevicePtr<T>,
        shape_x: &[usize],
        y: &impl DevicePtr<T>,
        shape_y: &[usize],
        flatten_from: usize,
        eps: Option<f64>,
    ) -> Result<Reweighted<CudaSlice<T>>> {
        let plan = Plan::flattened(shape_x, shape_y, flatten_from, eps)?;
        plan.check_inputs(x.len(), y.len(), shape_x, shape_y)?;
        let mut weighted =
            self.alloc::<T>(plan.out_len() * plan.reduce.len, "the weighted tensor")?;
        let mut sims = self.alloc::<T>(plan.out_len(), "the similarities")?;
        let (weighted_shape, similarity_shape) =
            self.reweight_inner(&plan, &mut weighted, &mut sims, x, y)?;
        Ok(Reweighted {
            weighted,
            weighted_shape,
            similarity: sims,
            similarity_shape,
        })
    }

    /// [`Cuda::reweight_channels`] into caller buffers; returns (weighted shape, similarity shape).
    ///
    /// # Errors
    /// As [`Cuda::reweight_channels`], and if an output has the wrong length.
    #[allow(clippy::too_many_arguments)]
    pub fn reweight_channels_into<T: CudaElement>(
        &self,
        weighted: &mut impl DevicePtrMut<T>,
        similarity: &mut impl DevicePtrMut<T>,
        x: &impl DevicePtr<T>,
        shape_x: &[usize],
        y: &impl DevicePtr<T>,
        shape_y: &[usize],
        flatten_from: usize,
        eps: Option<f64>,
    ) -> Result<(Vec<usize>, Vec<usize>)> {
        let plan = Plan::flattened(shape_x, shape_y, flatten_from, eps)?;
        plan.check_inputs(x.len(), y.len(), shape_x, shape_y)?;
        self.reweight_inner(&plan, weighted, similarity, x, y)
    }

    fn alloc<T: DeviceRepr>(&self, len: usize, what: &'static str) -> Result<CudaSlice<T>> {
        if len == 0 {
            return self.empty();
        }
        // SAFETY: every element of the buffer is written by the kernel that it is passed to
        // before anyone can read it (the launches cover all outputs).
        unsafe { self.stream.alloc::<T>(len) }.map_err(oom(what, len * std::mem::size_of::<T>()))
    }

    /// Split partial sums: `bytes` of device scratch, or nothing when no split needs it.
    fn scratch(&self, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
        if bytes == 0 {
            return Ok(None);
        }
        // SAFETY: the kernels write every partial before the finish kernels read it.
        let buf = unsafe { self.stream.alloc::<u8>(bytes) };
        Ok(Some(buf.map_err(oom("split partial sums", bytes))?))
    }

    fn check_device<T>(&self, what: &'static str, buf: &impl DeviceSlice<T>) -> Result<()> {
        let (mine, theirs) = (self.stream.context(), buf.stream().context());
        if mine.cu_ctx() != theirs.cu_ctx() {
            return Err(Error::WrongDevice {
                what,
                buffer: theirs.ordinal(),
                handle: mine.ordinal(),
            });
        }
        Ok(())
    }

    fn run<T: CudaElement>(
        &self,
        plan: Plan,
        x1: &impl DevicePtr<T>,
        shape1: &[usize],
        x2: &impl DevicePtr<T>,
        shape2: &[usize],
    ) -> Result<Similarity<CudaSlice<T>>> {
        plan.check_inputs(x1.len(), x2.len(), shape1, shape2)?;
        let mut values = self.alloc::<T>(plan.out_len(), "the result")?;
        let shape = self.run_into(plan, &mut values, x1, shape1, x2, shape2)?;
        Ok(Similarity { values, shape })
    }

    fn run_into<T: CudaElement>(
        &self,
        plan: Plan,
        out: &mut impl DevicePtrMut<T>,
        x1: &impl DevicePtr<T>,
        shape1: &[usize],
        x2: &impl DevicePtr<T>,
        shape2: &[usize],
    ) -> Result<Vec<usize>> {
        plan.check_inputs(x1.len(), x2.len(), shape1, shape2)?;
        plan.check_out("out", out.len())?;
        self.check_device("x1", x1)?;
        self.check_device("x2", x2)?;
        self.check_device("out", out)?;
        if plan.out_len() > 0 {
            self.launch(&plan, out, x1, x2, None::<&mut CudaSlice<T>>)?;
        }
        Ok(plan.out_shape)
    }

    fn reweight_inner<T: CudaElement>(
        &self,
        plan: &Plan,
        weighted: &mut impl DevicePtrMut<T>,
        sims: &mut impl DevicePtrMut<T>,
        x: &impl DevicePtr<T>,
        y: &impl DevicePtr<T>,
    ) -> Result<(Vec<usize>, Vec<usize>)> {
        let wshape = plan.weighted_shape();
        check_out_len("weighted", weighted.len(), &wshape)?;
        plan.check_out("similarity", sims.len())?;
        self.check_device("x", x)?;
        self.check_device("y", y)?;
        self.check_device("weighted", weighted)?;
        self.check_device("similarity", sims)?;
        if plan.out_len() > 0 {
            self.launch(plan, sims, x, y, Some(weighted))?;
        }
        Ok((wshape, plan.out_shape.clone()))
    }

    /// Queues the kernels of `plan`; with `weighted`, also writes input 2 scaled per output.
    fn launch<T: CudaElement, W: DevicePtrMut<T>>(
        &self,
        plan: &Plan,
        out: &mut impl DevicePtrMut<T>,
        x1: &impl DevicePtr<T>,
        x2: &impl DevicePtr<T>,
        weighted: Option<&mut W>,
    ) -> Result<()> {
        let s = &self.stream;
        let (p1, _g1) = x1.device_ptr(s);
        let (p2, _g2) = x2.device_ptr(s);
        let (po, _go) = out.device_ptr_mut(s);
        let (pw, _gw) = match weighted {
            Some(w) => {
                let (p, g) = w.device_ptr_mut(s);
                (p, Some(g))
            }
            None => (0, None),
        };
        let aligned = |p: u64| p.is_multiple_of(16);
        let buf = Buffers {
            elem_bytes: std::mem::size_of::<T>(),
            x1_aligned: aligned(p1),
            x2_aligned: aligned(p2),
            out_aligned: aligned(po),
            reweight: (pw != 0).then(|| (2, aligned(pw))),
        };
        let ptrs = Ptrs {
            x1: p1,
            x2: p2,
            out: po,
            weighted: pw,
        };
        let launch = plan_launch(plan, buf, self.sms);
        let partials = self.scratch(launch.scratch_bytes(std::mem::size_of::<T::Acc>()))?;
        let (pp, _gp) = match &partials {
            Some(b) => {
                let (p, g) = b.device_ptr(s);
                (p, Some(g))
            }
            None => (0, None),
        };
        // Reweighting left for the scale kernel: its parameters and the input's vector stride.
        let scale_after = match launch {
            Launch::Along {
                name_suffix,
                grid,
                block,
                params,
            } => {
                self.launch_along::<T>(name_suffix, grid, block, &params, ptrs, pp)?;
                (pw != 0).then(|| (scale_params(plan), plan.reduce.stride2 as i64))
            }
            Launch::Rows {
                kind,
                vector,
                grid,
                params,
            } => {
                self.launch_rows::<T>(kind, vector, grid, &params, ptrs, pp)?;
                // Split rows leave reweighting to the scale kernel; the reweighted input is x2,
                // with stride 0 when it is the constant one.
                (pw != 0 && params.splits > 1)
                    .then(|| (params, i64::from(params.constant_input != 2)))
            }
        };
        if let Some((params, y_stride)) = scale_after {
            let f = self
                .kernels
                .function(Family::Rows, &format!("cosim_scale_{}", T::NAME))?;
            let grid = grid_for((params.row_count * params.row_len) as usize, self.sms);
            // SAFETY: signature (cosim_rows_params, int64, const T*, const T*, const T*, T*);
            // reads input 2 at the plan's offsets and the similarities just written (same
            // stream), writes row_count·row_len weighted elements, which `weighted` holds.
            unsafe {
                s.launch_builder(&f)
                    .arg(&params)
                    .arg(&y_stride)
                    .arg(&ptrs.x1)
                    .arg(&ptrs.x2)
                    .arg(&ptrs.out)
                    .arg(&ptrs.weighted)
                    .launch(cfg_1d(grid))
            }?;
        }
        Ok(())
    }

    /// The along kernel, and with splits the kernel that combines their partial sums.
    fn launch_along<T: CudaElement>(
        &self,
        suffix: &str,
        grid: (u32, u32),
        block: (u32, u32),
        params: &params::cosim_along_params,
        p: Ptrs,
        partials: u64,
    ) -> Result<()> {
        let s = &self.stream;
        let f = self
            .kernels
            .function(Family::Along, &format!("cosim_along_{}_{suffix}", T::NAME))?;
        let cfg = LaunchConfig {
            grid_dim: (grid.0, grid.1, 1),
            block_dim: (block.0, block.1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the signature is (cosim_along_params, const T*, const T*, T*, acc*); the
        // plan was validated against both input lengths and the output length, and the kernel
        // reads and writes only inside them; with splits > 1 it writes 3·splits·outputs
        // accumulators to `partials`, which holds exactly that many, and nothing to `out`.
        unsafe {
            s.launch_builder(&f)
                .arg(params)
                .arg(&p.x1)
                .arg(&p.x2)
                .arg(&p.out)
                .arg(&partials)
                .launch(cfg)
        }?;
        if params.splits > 1 {
            let f = self
                .kernels
                .function(Family::Along, &format!("cosim_along_finish_{}", T::NAME))?;
            let outputs = (params.outer_count * params.inner) as usize;
            // SAFETY: signature (cosim_along_params, const acc*, T*); reads the partials
            // written just above on the same stream, writes every output (one warp per output;
            // BLOCK is a multiple of 32).
            unsafe {
                s.launch_builder(&f)
                    .arg(params)
                    .arg(&partials)
                    .arg(&p.out)
                    .launch(cfg_1d(grid_for(outputs * 32, self.sms)))
            }?;
        }
        Ok(())
    }

    /// A row kernel, and with splits the kernel that combines their partial sums.
    fn launch_rows<T: CudaElement>(
        &self,
        kind: &str,
        vector: bool,
        grid: u32,
        params: &params::cosim_rows_params,
        p: Ptrs,
        partials: u64,
    ) -> Result<()> {
        let s = &self.stream;
        let (ty, v) = (T::NAME, if vector { "v" } else { "s" });
        if kind != "block" {
            let f = self
                .kernels
                .function(Family::Rows, &format!("cosim_rows_{kind}_{ty}_{v}"))?;
            // SAFETY: signature (cosim_rows_params, const T*, const T*, T*, T*); rows and
            // lengths come from the validated plan; `weighted` is written only when
            // reweight_input != 0, and then holds row_count·row_len elements.
            return Ok(unsafe {
                s.launch_builder(&f)
                    .arg(params)
                    .arg(&p.x1)
                    .arg(&p.x2)
                    .arg(&p.out)
                    .arg(&p.weighted)
                    .launch(cfg_1d(grid))
            }
            .map(drop)?);
        }
        let f = self
            .kernels
            .function(Family::Rows, &format!("cosim_rows_block_{ty}_{v}"))?;
        // SAFETY: signature (cosim_rows_params, const T*, const T*, T*, T*, acc*); as for the
        // group kernels, with `weighted` written only when splits == 1; `partials` holds
        // 3·rows·splits accumulators whenever splits > 1.
        unsafe {
            s.launch_builder(&f)
                .arg(params)
                .arg(&p.x1)
                .arg(&p.x2)
                .arg(&p.out)
                .arg(&p.weighted)
                .arg(&partials)
                .launch(cfg_1d(grid))
        }?;
        if params.splits > 1 {
            let f = self
                .kernels
                .function(Family::Rows, &format!("cosim_rows_finish_{ty}"))?;
            let grid = grid_for(params.row_count as usize * 32, self.sms);
            // SAFETY: signature (cosim_rows_params, const acc*, T*); reads the partials written
            // above (same stream) and writes row_count outputs.
            unsafe {
                s.launch_builder(&f)
                    .arg(params)
                    .arg(&partials)
                    .arg(&p.out)
                    .launch(cfg_1d(grid))
            }?;
        }
        Ok(())
    }
}

/// Device pointers of one launch (0 for an absent weighted output).
#[derive(Clone, Copy)]
struct Ptrs {
    x1: u64,
    x2: u64,
    out: u64,
    weighted: u64,
}

/// `grid` blocks of BLOCK threads.
fn cfg_1d(grid: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}
