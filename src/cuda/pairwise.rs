//! Pairwise similarity on the GPU (`kernels/pairwise.cu`): the same names and semantics as
//! the CPU backend's pairwise functions, on device buffers. Extra device memory is O(N + M)
//! (inverse norms, per-row or per-column keys), plus the top-k lists (`8·k` bytes per row,
//! computed in chunks of at most [`TOPK_SCRATCH_BYTES`]) — never an N × M matrix unless the
//! matrix is what was asked for.
//!
//! The GPU kernels are built for f32, f16 and bf16 ([`PairElement`]); f64 pairwise runs on the
//! CPU backend. The product kernels come in two arithmetics, chosen by the plan's
//! [`Precision`]: `Exact` (FFMA in f32) and `Fast` (tensor cores through WMMA: TF32 inputs
//! for f32, f16/bf16 inputs for the half types, f32 accumulation either way). Norms, means
//! and the epilogues are the same f32 code for both.

use super::params::{cosim_pair_params, cosim_pair_set};
use super::{oom, Cuda, CudaElement, Family};
use crate::error::{Error, Result};
use crate::pairwise::{Layout, MatrixBlock, PairPlan, Precision, SetStrides};
use crate::Similarity;
use cudarc::driver::{
    CudaSlice, CudaView, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};

/// Element types of the GPU pairwise kernels: f32, f16, bf16.
pub trait PairElement: CudaElement + sealed::Sealed {}
impl PairElement for f32 {}
impl PairElement for half::f16 {}
impl PairElement for half::bf16 {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// Most device memory the top-k lists take at once; larger problems run in row chunks.
pub const TOPK_SCRATCH_BYTES: usize = 256 << 20;
/// Rows and columns of one tile of the product kernels.
pub(super) const TILE: usize = 128;
/// Threads per block of every pairwise kernel.
const THREADS: u32 = 256;
/// Largest grid y/z dimension.
pub(super) const GRID_YZ: usize = 65535;

// SAFETY: `#[repr(C)]` plain-integer/float structs mirrored by bindgen from kernels/params.h
// (layout tests there), passed to kernels by value.
unsafe impl DeviceRepr for cosim_pair_params {}
// SAFETY: as above.
unsafe impl DeviceRepr for cosim_pair_set {}

pub(super) fn cfg(grid: (u32, u32, u32)) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(super) fn tiles(n: usize) -> usize {
    n.div_ceil(TILE)
}
/// Kernel name suffix of the two layouts and the arithmetic: `rr`, `rc`, `cr`, `cc`, with
/// `_tc` for tensor cores.
pub(super) fn layouts(plan: &PairPlan) -> String {
    let l = match (plan.a_layout, plan.b_layout) {
        (Layout::Rows, Layout::Rows) => "rr",
        (Layout::Rows, Layout::Cols) => "rc",
        (Layout::Cols, Layout::Rows) => "cr",
        (Layout::Cols, Layout::Cols) => "cc",
    };
    match plan.precision {
        Precision::Exact => l.to_owned(),
        Precision::Fast => format!("{l}_tc"),
    }
}

/// A set's kernel description; `vec` when 4-element loads are aligned for every vector.
pub(super) fn set_params(
    s: &SetStrides,
    count: usize,
    layout: Layout,
    ptr: u64,
    elem: usize,
) -> cosim_pair_set {
    let contiguous_ok = match layout {
        Layout::Rows => s.vec.is_multiple_of(4),
        Layout::Cols => s.comp.is_multiple_of(4),
    };
    cosim_pair_set {
        count: count as i64,
        batch_stride: s.batch as i64,
        vec_stride: s.vec as i64,
        comp_stride: s.comp as i64,
        cols: i32::from(layout == Layout::Cols),
        vec: i32::from(contiguous_ok && ptr.is_multiple_of(4 * elem as u64)),
    }
}

/// How many batches a set's own data covers (1 when it is shared).
pub(super) fn own_batches(s: &SetStrides, batch: usize) -> usize {
    if s.batch == 0 {
        1
    } else {
        batch
    }
}

/// Device pointers of the two inputs and their inverse norms, for one launch.
#[derive(Clone, Copy)]
pub(super) struct Inputs {
    pub(super) a: u64,
    pub(super) b: u64,
    pub(super) inv_a: u64,
    pub(super) inv_b: u64,
}

impl Inputs {
    /// The same inputs seen from batch `bb` (for launches that cover one batch).
    pub(super) fn at_batch<T>(self, plan: &PairPlan, bb: usize) -> Inputs {
        let e = std::mem::size_of::<T>() as u64;
        let (ia, ib) = (
            if plan.a.batch == 0 { 0 } else { bb * plan.n },
            if plan.b.batch == 0 { 0 } else { bb * plan.m },
        );
        Inputs {
            a: self.a + (bb * plan.a.batch) as u64 * e,
            b: self.b + (bb * plan.b.batch) as u64 * e,
            inv_a: self.inv_a + ia as u64 * 4,
            inv_b: self.inv_b + ib as u64 * 4,
        }
    }
}

impl Cuda {
    pub(super) fn zeroed<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
        what: &'static str,
    ) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(oom(what, len.max(1) * std::mem::size_of::<T>()))
    }

    /// Kernel parameters of `plan` for rows [row0, row0 + rows) and `batch` batches, with the
    /// sets' alignment judged on the pointers the launch will use.
    pub(super) fn pair_params<T>(
        &self,
        plan: &PairPlan,
        ptr: Inputs,
        batch: usize,
        row0: usize,
        rows: usize,
        k: usize,
    ) -> cosim_pair_params {
        let e = std::mem::size_of::<T>();
        cosim_pair_params {
            a: set_params(&plan.a, plan.n, plan.a_layout, ptr.a, e),
            b: set_params(&plan.b, plan.m, plan.b_layout, ptr.b, e),
            batch: batch as i64,
            d: plan.d as i64,
            k: k as i64,
            row0: row0 as i64,
            rows: rows as i64,
            eps: plan.eps,
        }
    }

    /// Inverse norms of both sets (one f32 per vector of each), on this stream.
    pub(super) fn inverse_norms<T: PairElement>(
        &self,
        plan: &PairPlan,
        a: u64,
        b: u64,
    ) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
        let inv_a = self.zeroed::<f32>(plan.a_vectors(), "inverse norms of a")?;
        let inv_b = self.zeroed::<f32>(plan.b_vectors(), "inverse norms of b")?;
        let e = std::mem::size_of::<T>();
        let f = self
            .kernels
            .function(Family::Pairwise, &format!("cosim_pair_norms_{}", T::NAME))?;
        for (s, count, layout, ptr, inv) in [
            (&plan.a, plan.n, plan.a_layout, a, &inv_a),
            (&plan.b, plan.m, plan.b_layout, b, &inv_b),
        ] {
            let sp = set_params(s, count, layout, ptr, e);
            let batches = own_batches(s, plan.batch);
            let vectors = batches * count;
            let threads = if layout == Layout::Rows {
                vectors * 32
            } else {
                vectors
            };
            let grid = super::grid_for(threads, self.sms);
            let (pi, _gi) = inv.device_ptr(&self.stream);
            let (d, nb) = (plan.d as i64, batches as i64);
            // SAFETY: signature (cosim_pair_set, int64 d, int64 batches, double eps, const T*,
            // float*); reads the `batches` batches of the set the validated plan describes and
            // writes one float per vector, which `inv` holds (a_vectors / b_vectors).
            unsafe {
                self.stream
                    .launch_builder(&f)
                    .arg(&sp)
                    .arg(&d)
                    .arg(&nb)
                    .arg(&plan.eps)
                    .arg(&ptr)
                    .arg(&pi)
                    .launch(cfg((grid, 1, 1)))
            }?;
        }
        Ok((inv_a, inv_b))
    }

    /// Both sets' inverse norms, and the pointers a launch takes. The norms live on this
    /// stream only, so their buffers (returned, to be kept alive) need no stream guards.
    pub(super) fn with_norms<T: PairElement>(
        &self,
        plan: &PairPlan,
        pa: u64,
        pb: u64,
    ) -> Result<(Inputs, [CudaSlice<f32>; 2])> {
        let (inv_a, inv_b) = self.inverse_norms::<T>(plan, pa, pb)?;
        let ptr = Inputs {
            a: pa,
            b: pb,
            inv_a: inv_a.device_ptr(&self.stream).0,
            inv_b: inv_b.device_ptr(&self.stream).0,
        };
        Ok((ptr, [inv_a, inv_b]))
    }

    /// Checks the inputs against the plan and the device.
    pub(super) fn pair_inputs<T: PairElement>(
        &self,
        plan: &PairPlan,
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
    ) -> Result<()> {
        plan.check_inputs(a.len(), b.len())?;
        if plan.m > u32::MAX as usize {
            return Err(Error::IndexOverflow { m: plan.m });
        }
        if plan.d > i32::MAX as usize {
            return Err(Error::PairTooLarge {
                what: "components per vector (the kernels count them in 32 bits)",
                count: plan.d,
            });
        }
        self.check_device("a", a)?;
        self.check_device("b", b)
    }

    /// The full matrix `[B, N, M]` on the device; see [`crate::cpu::pairwise_similarity`].
    /// Extra device memory: the inverse norms, 4·(N + M) bytes per batch.
    ///
    /// # Errors
    /// As the CPU version; also [`Error::WrongDevice`], [`Error::OutOfMemory`], driver errors.
    pub fn pairwise_similarity<T: PairElement>(
        &self,
        plan: &PairPlan,
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
    ) -> Result<Similarity<CudaSlice<T>>> {
        self.pair_inputs(plan, a, b)?;
        let shape = plan.matrix_shape();
        let mut values = self.alloc::<T>(shape.iter().product(), "the similarity matrix")?;
        self.pairwise_similarity_into(plan, &mut values, a, b)?;
        Ok(Similarity { values, shape })
    }

    /// [`Cuda::pairwise_similarity`] into a caller's buffer; returns the shape.
    ///
    /// # Errors
    /// As [`Cuda::pairwise_similarity`], and if `out` has the wrong length (nothing written).
    pub fn pairwise_similarity_into<T: PairElement>(
        &self,
        plan: &PairPlan,
        out: &mut impl DevicePtrMut<T>,
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
    ) -> Result<Vec<usize>> {
        self.pair_inputs(plan, a, b)?;
        let shape = plan.matrix_shape();
        plan.check_out("out", out.len(), &shape)?;
        self.check_device("out", out)?;
        let s = &self.stream;
        let (pa, _ga) = a.device_ptr(s);
        let (pb, _gb) = b.device_ptr(s);
        let (po, _go) = out.device_ptr_mut(s);
        let (ptr, _norms) = self.with_norms::<T>(plan, pa, pb)?;
        let row_bytes = (plan.m * std::mem::size_of::<T>()) as u64;
        if plan.batch <= GRID_YZ && tiles(plan.n) <= GRID_YZ {
            self.matrix_launch::<T>(plan, ptr, plan.batch, 0, plan.n, po)?;
        } else {
            let chunk = GRID_YZ * TILE;
            for bb in 0..plan.batch {
                let p = ptr.at_batch::<T>(plan, bb);
                for row0 in (0..plan.n).step_by(chunk) {
                    let rows = chunk.min(plan.n - row0);
                    let o = po + (bb * plan.n + row0) as u64 * row_bytes;
                    self.matrix_launch::<T>(plan, p, 1, row0, rows, o)?;
                }
            }
        }
        Ok(shape)
    }

    /// Rows [row0, row0 + rows) of `batch` matrices into `out` (`[batch, rows, M]`).
    fn matrix_launch<T: PairElement>(
        &self,
        plan: &PairPlan,
        ptr: Inputs,
        batch: usize,
        row0: usize,
        rows: usize,
        out: u64,
    ) -> Result<()> {
        let f = self.kernels.function(
            Family::Pairwise,
            &format!("cosim_pair_matrix_{}_{}", T::NAME, layouts(plan)),
        )?;
        let p = self.pair_params::<T>(plan, ptr, batch, row0, rows, 0);
        let grid = (tiles(plan.m) as u32, tiles(rows) as u32, batch as u32);
        // SAFETY: signature (cosim_pair_params, const T*, const T*, const float*, const float*,
        // T*); the kernel reads vectors of `batch` batches inside the validated sets and their
        // inverse norms, and writes batch·rows·M values, which `out` holds from its pointer on.
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(&p)
                .arg(&ptr.a)
                .arg(&ptr.b)
                .arg(&ptr.inv_a)
                .arg(&ptr.inv_b)
                .arg(&out)
                .launch(cfg(grid))
        }?;
        Ok(())
    }

    /// The matrix in blocks of whole rows of at most `budget_bytes` (at least one row), each
    /// computed into one reused device buffer and handed to `f` with its batch and first row;
    /// see [`crate::cpu::pairwise_similarity_blocks`]. `f` runs after the block is queued, not
    /// finished: copy it on this handle's stream (as [`Cuda::download`] does).
    ///
    /// # Errors
    /// As [`Cuda::pairwise_similarity`]; an error from `f` stops the iteration and is returned.
    pub fn pairwise_similarity_blocks<T: PairElement, E: From<Error>>(
        &self,
        plan: &PairPlan,
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
        budget_bytes: usize,
        mut f: impl FnMut(MatrixBlock<CudaView<'_, T>>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.pair_inputs(plan, a, b)?;
        let per_block = plan
            .rows_per_block(budget_bytes, std::mem::size_of::<T>())
            .min(GRID_YZ * TILE);
        let s = &self.stream;
        let (pa, _ga) = a.device_ptr(s);
        let (pb, _gb) = b.device_ptr(s);
        let (ptr, _norms) = self.with_norms::<T>(plan, pa, pb)?;
        let mut block = self.alloc::<T>(per_block * plan.m, "a block of the matrix")?;
        for bb in 0..plan.batch {
            let p = ptr.at_batch::<T>(plan, bb);
            for row0 in (0..plan.n).step_by(per_block) {
                let rows = per_block.min(plan.n - row0);
                {
                    let (po, _go) = block.device_ptr_mut(s);
                    self.matrix_launch::<T>(plan, p, 1, row0, rows, po)?;
                }
                let values = block.slice(..rows * plan.m);
                f(MatrixBlock {
                    batch: bb,
                    row: row0,
                    rows,
                    values,
                })?;
            }
        }
        Ok(())
    }
}
