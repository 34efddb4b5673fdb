//! Per-row top-k on the GPU: the swept top-k kernels of `kernels/pairwise.cu`, launched in
//! row chunks within the scratch limit and, when rows are too few to fill the GPU, in column
//! segments whose lists are merged on the device.

use super::pairwise::{cfg, layouts, tiles, Inputs, PairElement, GRID_YZ, TILE};
use super::{Cuda, Family};
use crate::error::Result;
use crate::pairwise::{PairPlan, TopK};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, PushKernelArg};

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

impl Cuda {
    /// Per-row top-k (values and column indices, sorted, ties to the lower index); see
    /// [`crate::cpu::pairwise_top_k`]. Never forms the matrix: each block of 128 rows sweeps
    /// every column tile, keeping its rows' lists (8·k bytes per row, chunked to at most
    /// [`Cuda::top_k_scratch_limit`]). When there are too few blocks of rows to fill the GPU (fewer
    /// than about 17k rows on an H200), each block sweeps a segment of the columns instead,
    /// with lists of its own, and the segments' lists are merged after (same result).
    ///
    /// # Errors
    /// As the CPU version ([`Error::BadK`](crate::Error::BadK) unless 1 ≤ k ≤ M), plus device errors.
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
    pub(super) fn keys_finish<T: PairElement>(
        &self,
        count: usize,
        keys: u64,
        pv: u64,
        px: u64,
    ) -> Result<()> {
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
}

#[cfg(test)]
mod tests {
    use super::{topk_launch_rows, topk_segments, TILE};
    use crate::cuda::TOPK_SCRATCH_BYTES;

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
