//! How much device memory a pairwise call allocates: the one place that knows the pairwise
//! functions' allocation rules, read by the streaming engine ([`crate::stream`]) to size its
//! chunks against a device's free memory, so no caller re-derives them.

use super::pairwise::{PairElement, GRID_YZ, TILE};
use super::Cuda;
use crate::pairwise::{PairOp, PairPlan};

impl Cuda {
    /// Device bytes that the call computing `op` on `plan` (with `T` elements) allocates:
    /// its outputs and every scratch buffer (inverse norms, keys, mean vectors, top-k lists),
    /// not the inputs. It is an upper bound of what is live at once, and what the call's own
    /// allocation rules give, not an estimate.
    pub fn pair_workspace_bytes<T: PairElement>(&self, plan: &PairPlan, op: PairOp) -> usize {
        let e = std::mem::size_of::<T>();
        let rows = plan.batch.saturating_mul(plan.n);
        let cols = plan.batch.saturating_mul(plan.m);
        // Every call but top-k's (which counts its own) computes both sets' inverse norms.
        let norms = 4usize.saturating_mul(plan.a_vectors().saturating_add(plan.b_vectors()));
        // Buffers of at least one element each (the driver refuses 0-byte allocations).
        let buf = |len: usize, size: usize| len.max(1).saturating_mul(size);
        let mean_vector = |batched: bool| {
            let batches = if batched { plan.batch } else { 1 };
            buf(batches.saturating_mul(plan.d), 4)
        };
        match op {
            PairOp::Matrix => buf(rows.saturating_mul(plan.m), e).saturating_add(norms),
            PairOp::MatrixBlocks { budget } => {
                let per_block = plan.rows_per_block(budget, e).min(GRID_YZ * TILE);
                buf(per_block.saturating_mul(plan.m), e).saturating_add(norms)
            }
            PairOp::TopK(k) => {
                let out = rows.saturating_mul(k);
                buf(out, e)
                    .saturating_add(buf(out, 4))
                    .saturating_add(self.top_k_scratch_bytes(plan, k))
            }
            PairOp::Argmax => buf(rows, e)
                .saturating_add(buf(rows, 4))
                .saturating_add(buf(rows, 8))
                .saturating_add(norms),
            PairOp::RowMean => buf(rows, e)
                .saturating_add(norms)
                .saturating_add(mean_vector(plan.b.batch != 0)),
            PairOp::Mean => buf(plan.batch, e)
                .saturating_add(norms)
                .saturating_add(mean_vector(plan.a.batch != 0))
                .saturating_add(mean_vector(plan.b.batch != 0)),
            PairOp::SetSimilarity => buf(plan.batch, e)
                .saturating_mul(3)
                .saturating_add(norms)
                .saturating_add(buf(rows, 4))
                .saturating_add(buf(cols, 4)),
        }
    }
}
