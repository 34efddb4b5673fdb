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
use crate::pairwise::{Layout, MatrixBlock, PairPlan, Precision, SetScores, SetStrides, TopK};
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

/// The matrices and rows of each top-k launch: all of them in one when their lists fit in
/// `limit` bytes (and the grid), else one matrix and as many rows as fit at a time.
fn topk_launch_rows(plan: &PairPlan, k: usize, limit: usize) -> (usize, usize) {
    let row_bytes = 8 * k.max(1);
    if plan.batch * plan.n * row_bytes <= limit && plan.batch <= GRID_YZ {
        (plan.batch, plan.n)
    } else {
        (1, (limit / row_bytes).clamp(1, plan.n.max(1)))
    }
}

/// Column segments of a top-k launch of `blocks` row blocks (one block of 128 rows runs per
/// SM at a time): too few blocks to fill the `sms` SMs are each split across columns, as
/// many segments as fit in one wave (at most 32, each at least 8 column tiles wide, their
/// lists of `list_bytes` each within `limit` bytes), and the segments' lists merged after.
/// Returns the segments and the columns per segment (a multiple of the tile).
fn topk_segments(
    blocks: usize,
    sms: usize,
    m: usize,
    list_bytes: usize,
    limit: usize,
) -> (usize, usize) {
    let want = (sms / blocks.max(1))
        .min(m / (8 * TILE))
        .min(limit / list_bytes.max(1))
        .clamp(1, 32);
    let span = m.div_ceil(want).div_ceil(TILE).max(1) * TILE;
    (m.div_ceil(span).max(1), span)
}

/// Kernel name suffix of the two layouts and the arithmetic: `rr`, `rc`, `cr`, `cc`, with
/// `_tc` for tensor cores.
fn layouts(plan: &PairPlan) -> String {
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
fn own_batches(s: &SetStrides, batch: usize) -> usize {
    if s.batch == 0 {
        1
    } else {
        batch
    }
}

/// Device pointers of the two inputs and their inverse norms, for one launch.
#[derive(Clone, Copy)]
struct Inputs {
    a: u64,
    b: u64,
    inv_a: u64,
    inv_b: u64,
}

impl Inputs {
    /// The same inputs seen from batch `bb` (for launches that cover one batch).
    fn at_batch<T>(self, plan: &PairPlan, bb: usize) -> Inputs {
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
    fn pair_params<T>(
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
    fn with_norms<T: PairElement>(
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

    /// Per-row top-k (values and column indices, sorted, ties to the lower index); see
    /// [`crate::cpu::pairwise_top_k`]. Never forms the matrix: each block of 128 rows sweeps
    /// every column tile, keeping its rows' lists (8·k bytes per row, chunked to at most
    /// [`Cuda::top_k_scratch_limit`]). When there are too few blocks of rows to fill the GPU (fewer
    /// than about 17k rows on an H200), each block sweeps a segment of the columns instead,
    /// with lists of its own, and the segments' lists are merged after (same result).
    ///
    /// # Errors
    /// As the CPU version ([`Error::BadK`] unless 1 ≤ k ≤ M), plus device errors.
    pub fn pairwise_top_k<T: PairElement>(
        &self,
        plan: &PairPlan,
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
        k: usize,
    ) -> Result<TopK<CudaSlice<T>, CudaSlice<u32>>> {
        self.pair_inputs(plan, a, b)?;
        plan.check_k(k)?;
        let shape = plan.top_k_shape(k);
        let len = shape.iter().product();
        let mut values = self.alloc::<T>(len, "top-k values")?;
        let mut indices = self.alloc::<u32>(len, "top-k indices")?;
        self.pairwise_top_k_into(plan, &mut values, &mut indices, a, b, k)?;
        Ok(TopK {
            values,
            indices,
            shape,
        })
    }

    /// [`Cuda::pairwise_top_k`] into caller buffers; returns the shape.
    ///
    /// # Errors
    /// As [`Cuda::pairwise_top_k`], and if an output has the wrong length (nothing written).
    pub fn pairwise_top_k_into<T: PairElement>(
        &self,
        plan: &PairPlan,
        values: &mut impl DevicePtrMut<T>,
        indices: &mut impl DevicePtrMut<u32>,
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
        k: usize,
    ) -> Result<Vec<usize>> {
        self.pair_inputs(plan, a, b)?;
        plan.check_k(k)?;
        let shape = plan.top_k_shape(k);
        plan.check_out("values", values.len(), &shape)?;
        plan.check_out("indices", indices.len(), &shape)?;
        self.check_device("values", values)?;
        self.check_device("indices", indices)?;
        let s = &self.stream;
        let (pa, _ga) = a.device_ptr(s);
        let (pb, _gb) = b.device_ptr(s);
        let (pv, _gv) = values.device_ptr_mut(s);
        let (px, _gx) = indices.device_ptr_mut(s);
        let (ptr, _norms) = self.with_norms::<T>(plan, pa, pb)?;
        let e = std::mem::size_of::<T>() as u64;
        let (batch, chunk) = topk_launch_rows(plan, k, self.topk_scratch);
        if (batch, chunk) == (plan.batch, plan.n) {
            self.topk_launch::<T>(plan, ptr, plan.batch, 0, plan.n, k, (pv, px))?;
        } else {
            for bb in 0..plan.batch {
                let p = ptr.at_batch::<T>(plan, bb);
                for row0 in (0..plan.n).step_by(chunk) {
                    let rows = chunk.min(plan.n - row0);
                    let first = ((bb * plan.n + row0) * k) as u64;
                    let out = (pv + first * e, px + first * 4);
                    self.topk_launch::<T>(plan, p, 1, row0, rows, k, out)?;
                }
            }
        }
        Ok(shape)
    }

    /// Device memory [`Cuda::pairwise_top_k`] allocates for `plan` and `k` besides its
    /// outputs: the inverse norms (4 bytes per vector of each set) and the lists (8 bytes per
    /// kept key, per column segment; at most [`Cuda::top_k_scratch_limit`], or one row's list
    /// where a row's list alone is larger).
    pub fn top_k_scratch_bytes(&self, plan: &PairPlan, k: usize) -> usize {
        let limit = self.topk_scratch;
        let (batch, rows) = topk_launch_rows(plan, k, limit);
        let count = batch * rows * k;
        let (splits, _) = topk_segments(tiles(rows) * batch, self.sms, plan.m, 8 * count, limit);
        4 * (plan.a_vectors() + plan.b_vectors()) + 8 * count * splits
    }

    /// Top-k of rows [row0, row0 + rows) of `batch` matrices, into values/indices laid out
    /// `[batch, rows, k]` from the given pointers.
    #[allow(clippy::too_many_arguments)]
    fn topk_launch<T: PairElement>(
        &self,
        plan: &PairPlan,
        ptr: Inputs,
        batch: usize,
        row0: usize,
        rows: usize,
        k: usize,
        (pv, px): (u64, u64),
    ) -> Result<()> {
        let s = &self.stream;
        let count = batch * rows * k;
        let (splits, col_span) = topk_segments(
            tiles(rows) * batch,
            self.sms,
            plan.m,
            8 * count,
            self.topk_scratch,
        );
        let lists = self.zeroed::<u64>(count * splits, "top-k lists")?;
        let (pl, _gl) = lists.device_ptr(s);
        let f = self.kernels.function(
            Family::Pairwise,
            &format!("cosim_pair_topk_{}_{}", T::NAME, layouts(plan)),
        )?;
        let p = self.pair_params::<T>(plan, ptr, batch, row0, rows, k);
        let span = col_span as i64;
        // SAFETY: signature (cosim_pair_params, const T*, const T*, const float*, const float*,
        // uint64*, int64 col_span); reads inside the validated sets, and each block keeps the
        // lists of its 128 rows and its segment of `col_span` columns (blockIdx.z) in `lists`
        // (splits·batch·rows·k keys, zeroed: the empty key).
        unsafe {
            s.launch_builder(&f)
                .arg(&p)
                .arg(&ptr.a)
                .arg(&ptr.b)
                .arg(&ptr.inv_a)
                .arg(&ptr.inv_b)
                .arg(&pl)
                .arg(&span)
                .launch(cfg((tiles(rows) as u32, batch as u32, splits as u32)))
        }?;
        if splits == 1 {
            return self.keys_finish::<T>(count, pl, pv, px);
        }
        let f = self.kernels.function(
            Family::Pairwise,
            &format!("cosim_pair_topk_merge_{}", T::NAME),
        )?;
        let (n, kk, sp) = ((batch * rows) as i64, k as i64, splits as i32);
        // SAFETY: signature (int64 rows, int64 k, int32 splits, const uint64*, T*, uint32*);
        // reads the splits·rows·k keys just filled, writes rows·k values and indices, which
        // the outputs hold.
        unsafe {
            s.launch_builder(&f)
                .arg(&n)
                .arg(&kk)
                .arg(&sp)
                .arg(&pl)
                .arg(&pv)
                .arg(&px)
                .launch(cfg((super::grid_for(batch * rows * 32, self.sms), 1, 1)))
        }?;
        Ok(())
    }

    /// 64-bit rank keys → values and column indices, for `count` keys.
    fn keys_finish<T: PairElement>(&self, count: usize, keys: u64, pv: u64, px: u64) -> Result<()> {
        let f = self.kernels.function(
            Family::Pairwise,
            &format!("cosim_pair_keys_finish_{}", T::NAME),
        )?;
        let n = count as i64;
        // SAFETY: signature (int64 count, const uint64*, T*, uint32*); reads `count` keys the
        // product kernel filled, writes `count` values and indices, which the outputs hold.
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(&n)
                .arg(&keys)
                .arg(&pv)
                .arg(&px)
                .launch(cfg((super::grid_for(count, self.sms), 1, 1)))
        }?;
        Ok(())
    }

    /// Per-row maximum and its column (ties to the lower index), shape `[B, N]`; see
    /// [`crate::cpu::pairwise_argmax`]. Extra memory: 8 bytes per row.
    ///
    /// # Errors
    /// As the CPU version, plus device errors.
    pub fn pairwise_argmax<T: PairElement>(
        &self,
        plan: &PairPlan,
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
    ) -> Result<TopK<CudaSlice<T>, CudaSlice<u32>>> {
        self.pair_inputs(plan, a, b)?;
        let shape = plan.row_shape();
        let count = plan.batch * plan.n;
        let values = self.alloc::<T>(count, "argmax values")?;
        let indices = self.alloc::<u32>(count, "argmax indices")?;
        let s = &self.stream;
        let (pa, _ga) = a.device_ptr(s);
        let (pb, _gb) = b.device_ptr(s);
        let (ptr, _norms) = self.with_norms::<T>(plan, pa, pb)?;
        let best = self.zeroed::<u64>(count, "argmax keys")?;
        {
            let (pk, _gk) = best.device_ptr(s);
            self.tiles_launch::<T>("argmax", plan, ptr, &[pk])?;
            let (pv, _gv) = values.device_ptr(s);
            let (px, _gx) = indices.device_ptr(s);
            self.keys_finish::<T>(count, pk, pv, px)?;
        }
        Ok(TopK {
            values,
            indices,
            shape,
        })
    }

    /// A product kernel with an atomic epilogue (`argmax`, `greedy`) over the whole matrix,
    /// its outputs (`extra` pointers) indexed by absolute row and column; launched in row
    /// chunks and per batch where the grid limits ask for it.
    fn tiles_launch<T: PairElement>(
        &self,
        epilogue: &str,
        plan: &PairPlan,
        ptr: Inputs,
        extra: &[u64],
    ) -> Result<()> {
        let f = self.kernels.function(
            Family::Pairwise,
            &format!("cosim_pair_{epilogue}_{}_{}", T::NAME, layouts(plan)),
        )?;
        let launch = |p: &cosim_pair_params, ptr: Inputs, extra: &[u64], grid| {
            let mut lb = self.stream.launch_builder(&f);
            lb.arg(p)
                .arg(&ptr.a)
                .arg(&ptr.b)
                .arg(&ptr.inv_a)
                .arg(&ptr.inv_b);
            for x in extra {
                lb.arg(x);
            }
            // SAFETY: signature (cosim_pair_params, const T*, const T*, const float*,
            // const float*, keys...): argmax takes one uint64 key per row of every batch,
            // greedy one uint32 per row and one per column of every batch, which the callers'
            // zeroed buffers hold; the kernel reads inside the validated sets.
            unsafe { lb.launch(cfg(grid)) }.map(drop)
        };
        let chunk = GRID_YZ * TILE;
        if plan.batch <= GRID_YZ {
            for row0 in (0..plan.n).step_by(chunk) {
                let rows = chunk.min(plan.n - row0);
                let p = self.pair_params::<T>(plan, ptr, plan.batch, row0, rows, 0);
                let grid = (tiles(plan.m) as u32, tiles(rows) as u32, plan.batch as u32);
                launch(&p, ptr, extra, grid)?;
            }
        } else {
            // One batch per launch: offset the inputs and the keys to that batch.
            for bb in 0..plan.batch {
                let pb = ptr.at_batch::<T>(plan, bb);
                let keys: Vec<u64> = match extra {
                    [rows] => vec![rows + (bb * plan.n * 8) as u64],
                    [rows, cols] => vec![
                        rows + (bb * plan.n * 4) as u64,
                        cols + (bb * plan.m * 4) as u64,
                    ],
                    _ => extra.to_vec(),
                };
                for row0 in (0..plan.n).step_by(chunk) {
                    let rows = chunk.min(plan.n - row0);
                    let p = self.pair_params::<T>(plan, pb, 1, row0, rows, 0);
                    launch(&p, pb, &keys, (tiles(plan.m) as u32, tiles(rows) as u32, 1))?;
                }
            }
        }
        Ok(())
    }

    /// Greedy best-match scores (BERTScore's precision, recall, F1), one per batch; see
    /// [`crate::cpu::set_similarity`]. Extra memory: 4 bytes per vector of each set.
    ///
    /// # Errors
    /// As the CPU version, plus device errors.
    pub fn set_similarity<T: PairElement>(
        &self,
        plan: &PairPlan,
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
        a_weights: Option<&CudaSlice<T>>,
        b_weights: Option<&CudaSlice<T>>,
    ) -> Result<SetScores<CudaSlice<T>>> {
        self.pair_inputs(plan, a, b)?;
        plan.check_weights(a_weights.map(|w| w.len()), b_weights.map(|w| w.len()))?;
        for (what, w) in [("weights of a", a_weights), ("weights of b", b_weights)] {
            if let Some(w) = w {
                self.check_device(what, w)?;
            }
        }
        let shape = plan.batch_shape();
        let out = |what| self.alloc::<T>(plan.batch, what);
        let (precision, recall, f1) = (out("precision")?, out("recall")?, out("F1")?);
        let s = &self.stream;
        let (pa, _ga) = a.device_ptr(s);
        let (pb, _gb) = b.device_ptr(s);
        let (ptr, _norms) = self.with_norms::<T>(plan, pa, pb)?;
        let rowmax = self.zeroed::<u32>(plan.batch * plan.n, "row maxima")?;
        let colmax = self.zeroed::<u32>(plan.batch * plan.m, "column maxima")?;
        {
            let (pr, _gr) = rowmax.device_ptr(s);
            let (pc, _gc) = colmax.device_ptr(s);
            self.tiles_launch::<T>("greedy", plan, ptr, &[pr, pc])?;
            let wa = a_weights.map(|w| w.device_ptr(s));
            let wb = b_weights.map(|w| w.device_ptr(s));
            let (pwa, pwb) = (
                wa.as_ref().map_or(0, |w| w.0),
                wb.as_ref().map_or(0, |w| w.0),
            );
            let (pp, _gp) = precision.device_ptr(s);
            let (prc, _grc) = recall.device_ptr(s);
            let (pf, _gf) = f1.device_ptr(s);
            let p = self.pair_params::<T>(plan, ptr, plan.batch, 0, plan.n, 0);
            let f = self.kernels.function(
                Family::Pairwise,
                &format!("cosim_pair_greedy_finish_{}", T::NAME),
            )?;
            for b0 in (0..plan.batch).step_by(GRID_YZ) {
                let nb = GRID_YZ.min(plan.batch - b0);
                let (wa0, wb0) = (
                    if pwa != 0 && plan.a.batch != 0 {
                        pwa + (b0 * plan.n) as u64 * std::mem::size_of::<T>() as u64
                    } else {
                        pwa
                    },
                    if pwb != 0 && plan.b.batch != 0 {
                        pwb + (b0 * plan.m) as u64 * std::mem::size_of::<T>() as u64
                    } else {
                        pwb
                    },
                );
                let e = std::mem::size_of::<T>() as u64;
                let (r0, c0) = (pr + (b0 * plan.n * 4) as u64, pc + (b0 * plan.m * 4) as u64);
                let outs = (pp + b0 as u64 * e, prc + b0 as u64 * e, pf + b0 as u64 * e);
                // SAFETY: signature (cosim_pair_params, const uint32* rowmax, const uint32*
                // colmax, const T* wa, const T* wb, T*, T*, T*); block bb reads the n row and m
                // column maxima of batch b0 + bb and that batch's weights (null: unweighted;
                // lengths checked against the plan), and writes one value of each output.
                unsafe {
                    s.launch_builder(&f)
                        .arg(&p)
                        .arg(&r0)
                        .arg(&c0)
                        .arg(&wa0)
                        .arg(&wb0)
                        .arg(&outs.0)
                        .arg(&outs.1)
                        .arg(&outs.2)
                        .launch(cfg((nb as u32, 1, 1)))
                }?;
            }
        }
        Ok(SetScores {
            precision,
            recall,
            f1,
            shape,
        })
    }

    /// The mean of each set's normalised vectors, `[own batches, D]` (zeroed, then summed).
    fn mean_vector<T: PairElement>(
        &self,
        plan: &PairPlan,
        s: &SetStrides,
        count: usize,
        layout: Layout,
        x: u64,
        inv: u64,
    ) -> Result<CudaSlice<f32>> {
        let batches = own_batches(s, plan.batch);
        let u = self.zeroed::<f32>(batches * plan.d, "a mean vector")?;
        if plan.d == 0 {
            return Ok(u);
        }
        let sp = set_params(s, count, layout, x, std::mem::size_of::<T>());
        let f = self
            .kernels
            .function(Family::Pairwise, &format!("cosim_pair_colsum_{}", T::NAME))?;
        let (pu, gu) = u.device_ptr(&self.stream);
        let d = plan.d as i64;
        for b0 in (0..batches).step_by(GRID_YZ) {
            let nb = GRID_YZ.min(batches - b0);
            let e = std::mem::size_of::<T>() as u64;
            let (x0, i0, u0) = (
                x + (b0 * s.batch) as u64 * e,
                inv + (b0 * count * 4) as u64,
                pu + (b0 * plan.d * 4) as u64,
            );
            // SAFETY: signature (cosim_pair_set, int64 d, const T*, const float*, float*); block
            // (x, y) reads 128 vectors of batch b0 + y and their inverse norms, and adds into
            // the d floats of that batch's mean vector, which `u` holds.
            unsafe {
                self.stream
                    .launch_builder(&f)
                    .arg(&sp)
                    .arg(&d)
                    .arg(&x0)
                    .arg(&i0)
                    .arg(&u0)
                    .launch(cfg((tiles(count) as u32, nb as u32, 1)))
            }?;
        }
        drop(gu);
        Ok(u)
    }

    /// The mean of each row of the matrix, `[B, N]`, via `<â_i, mean_j b̂_j>` without forming
    /// the matrix; see [`crate::cpu::pairwise_row_mean`].
    ///
    /// # Errors
    /// As the CPU version, plus device errors.
    pub fn pairwise_row_mean<T: PairElement>(
        &self,
        plan: &PairPlan,
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
    ) -> Result<Similarity<CudaSlice<T>>> {
        self.pair_inputs(plan, a, b)?;
        let shape = plan.row_shape();
        let out = self.alloc::<T>(plan.batch * plan.n, "row means")?;
        let s = &self.stream;
        let (pa, _ga) = a.device_ptr(s);
        let (pb, _gb) = b.device_ptr(s);
        let (ptr, _norms) = self.with_norms::<T>(plan, pa, pb)?;
        {
            let ub = self.mean_vector::<T>(plan, &plan.b, plan.m, plan.b_layout, pb, ptr.inv_b)?;
            let (pu, _gu) = ub.device_ptr(s);
            let (po, _go) = out.device_ptr(s);
            let f = self
                .kernels
                .function(Family::Pairwise, &format!("cosim_pair_rowdot_{}", T::NAME))?;
            let p = self.pair_params::<T>(plan, ptr, plan.batch, 0, plan.n, 0);
            let rows = plan.batch * plan.n;
            let threads = if plan.a_layout == Layout::Rows {
                rows * 32
            } else {
                rows
            };
            let ub_batched = i32::from(plan.b.batch != 0);
            // SAFETY: signature (cosim_pair_params, const T*, const float* inv_a, const float*
            // ub, int32, T*); reads a's vectors and norms and b's mean vectors (one per batch,
            // or one), writes batch·n values, which `out` holds.
            unsafe {
                s.launch_builder(&f)
                    .arg(&p)
                    .arg(&pa)
                    .arg(&ptr.inv_a)
                    .arg(&pu)
                    .arg(&ub_batched)
                    .arg(&po)
                    .launch(cfg((super::grid_for(threads, self.sms), 1, 1)))
            }?;
        }
        Ok(Similarity { values: out, shape })
    }

    /// The mean of each whole matrix, `[B]` (or a scalar), via `<mean_i â_i, mean_j b̂_j>` in
    /// O((N + M)·D); see [`crate::cpu::pairwise_mean`].
    ///
    /// # Errors
    /// As the CPU version, plus device errors.
    pub fn pairwise_mean<T: PairElement>(
        &self,
        plan: &PairPlan,
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
    ) -> Result<Similarity<CudaSlice<T>>> {
        self.pair_inputs(plan, a, b)?;
        let shape = plan.batch_shape();
        let out = self.alloc::<T>(plan.batch, "means")?;
        let s = &self.stream;
        let (pa, _ga) = a.device_ptr(s);
        let (pb, _gb) = b.device_ptr(s);
        let (ptr, _norms) = self.with_norms::<T>(plan, pa, pb)?;
        {
            let ua = self.mean_vector::<T>(plan, &plan.a, plan.n, plan.a_layout, pa, ptr.inv_a)?;
            let ub = self.mean_vector::<T>(plan, &plan.b, plan.m, plan.b_layout, pb, ptr.inv_b)?;
            let (pua, _gua) = ua.device_ptr(s);
            let (pub_, _gub) = ub.device_ptr(s);
            let (po, _go) = out.device_ptr(s);
            let f = self
                .kernels
                .function(Family::Pairwise, &format!("cosim_pair_meandot_{}", T::NAME))?;
            let d = plan.d as i64;
            let (ua_b, ub_b) = (i32::from(plan.a.batch != 0), i32::from(plan.b.batch != 0));
            let e = std::mem::size_of::<T>() as u64;
            for b0 in (0..plan.batch).step_by(GRID_YZ) {
                let nb = GRID_YZ.min(plan.batch - b0);
                let off = |p: u64, batched: i32| {
                    p + if batched != 0 {
                        (b0 * plan.d * 4) as u64
                    } else {
                        0
                    }
                };
                let (x, y, o) = (off(pua, ua_b), off(pub_, ub_b), po + b0 as u64 * e);
                // SAFETY: signature (int64 d, const float* ua, int32, const float* ub, int32,
                // T*); block bb reads d floats of each mean vector of batch b0 + bb (or the
                // shared one) and writes one value.
                unsafe {
                    s.launch_builder(&f)
                        .arg(&d)
                        .arg(&x)
                        .arg(&ua_b)
                        .arg(&y)
                        .arg(&ub_b)
                        .arg(&o)
                        .launch(cfg((nb as u32, 1, 1)))
                }?;
            }
        }
        Ok(Similarity { values: out, shape })
    }
}

#[cfg(test)]
mod tests {
    use super::{topk_launch_rows, topk_segments, TILE, TOPK_SCRATCH_BYTES};

    const L: usize = TOPK_SCRATCH_BYTES;
    use crate::pairwise::{Layout, PairPlan};

    #[test]
    fn top_k_runs_whole_or_in_row_chunks_within_the_budget() {
        let rows =
            |a: &[usize], m: usize| PairPlan::new(a, Layout::Rows, &[m, 8], Layout::Rows).unwrap();
        assert_eq!(topk_launch_rows(&rows(&[3, 1000, 8], 50), 10, L), (3, 1000));
        // 40000 rows × 8·1024 bytes is over the budget: 32768 rows at a time.
        let p = rows(&[40_000, 8], 1100);
        assert_eq!(
            topk_launch_rows(&p, 1024, L),
            (1, TOPK_SCRATCH_BYTES / 8192)
        );
        assert_eq!(topk_launch_rows(&rows(&[5, 30_000, 8], 1100), 1024, L).0, 1);
    }

    #[test]
    fn top_k_splits_columns_only_to_fill_one_wave() {
        // 8 row blocks on 132 SMs, a million columns: 16 segments, 128 blocks in one wave.
        assert_eq!(topk_segments(8, 132, 1_000_000, 80, L), (16, 62_592));
        // Enough row blocks, or too few columns for two segments of 8 tiles: no split.
        assert_eq!(topk_segments(132, 132, 1_000_000, 80, L).0, 1);
        assert_eq!(topk_segments(67, 132, 1_000_000, 80, L).0, 1);
        assert_eq!(topk_segments(1, 132, 2047, 80, L).0, 1);
        assert_eq!(topk_segments(1, 132, 2048, 80, L), (2, 1024));
        // The lists of all segments stay within the scratch budget.
        assert_eq!(
            topk_segments(1, 132, 1 << 30, TOPK_SCRATCH_BYTES / 3, L).0,
            3
        );
        assert_eq!(topk_segments(1, 132, 1 << 30, TOPK_SCRATCH_BYTES, L).0, 1);
        // At most 32 segments.
        assert_eq!(topk_segments(1, 1000, 1 << 30, 8, L).0, 32);
    }

    #[test]
    fn top_k_segments_tile_the_columns() {
        for m in [1, 127, 128, 1000, 2048, 4100, 10_007, 65_536, 1_000_003] {
            for blocks in [1, 2, 3, 7, 40, 200] {
                for sms in [1, 2, 64, 132] {
                    let (splits, span) = topk_segments(blocks, sms, m, 8 * 10, L);
                    assert_eq!(span % TILE, 0, "{m} {blocks} {sms}");
                    assert!((1..=32).contains(&splits));
                    assert!(splits * span >= m && (splits - 1) * span < m.max(1));
                    assert!(splits == 1 || (splits * blocks <= sms && span >= 8 * TILE));
                }
            }
        }
    }
}
