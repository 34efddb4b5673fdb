//! Launch sizing: which kernel variant a plan takes on a device, with what grid, and how much
//! scratch memory it needs. Pure functions of the plan, pointer alignment and SM count.

use super::params::{cosim_along_params, cosim_index, cosim_rows_params};
use crate::plan::{Axis, Plan, Strategy};

/// Threads per block of every kernel.
pub const BLOCK: u32 = 256;
/// Resident 256-thread blocks per SM that grid-stride loops aim for.
const BLOCKS_PER_SM: usize = 8;

/// How one plan runs on the device.
#[derive(Clone, Debug)]
pub enum Launch {
    Along {
        name_suffix: &'static str,
        /// Blocks (x over outputs, y over splits of the reduced axis).
        grid: (u32, u32),
        /// Threads per block (x × y = BLOCK).
        block: (u32, u32),
        params: cosim_along_params,
    },
    Rows {
        /// Kernel name stem: "g4".."g32" (lanes per row) or "block".
        kind: &'static str,
        vector: bool,
        grid: u32,
        params: cosim_rows_params,
    },
}

/// What launch sizing needs to know about the buffers: element size and whether each
/// pointer is 16-byte aligned.
#[derive(Clone, Copy, Debug)]
pub struct Buffers {
    pub elem_bytes: usize,
    pub x1_aligned: bool,
    pub x2_aligned: bool,
    pub out_aligned: bool,
    /// Reweighting: which input (1 or 2), and whether the weighted output is aligned.
    pub reweight: Option<(u8, bool)>,
}

fn index(axes: &[Axis]) -> cosim_index {
    let mut idx = cosim_index {
        ndim: axes.len() as i32,
        ..Default::default()
    };
    for (d, a) in axes.iter().enumerate() {
        idx.size[d] = a.len as i64;
        idx.stride1[d] = a.stride1 as i64;
        idx.stride2[d] = a.stride2 as i64;
    }
    idx
}

/// Blocks for `threads` threads, capped at four rounds of resident blocks (the kernels
/// grid-stride over the rest).
pub fn grid_for(threads: usize, sms: usize) -> u32 {
    let blocks = threads
        .div_ceil(BLOCK as usize)
        .clamp(1, sms * BLOCKS_PER_SM * 4);
    blocks as u32
}

/// Which input (1 or 2), if any, holds one value per output vector (reduced-axis stride 0)
/// while the other is contiguous: such plans run on the row kernels with a splat.
fn constant_input(plan: &Plan) -> Option<u8> {
    match (plan.reduce.stride1, plan.reduce.stride2) {
        (0, 1) => Some(1),
        (1, 0) => Some(2),
        _ => None,
    }
}

/// Chooses kernel and grid for `plan` on a device with `sms` multiprocessors.
pub fn plan_launch(plan: &Plan, buf: Buffers, sms: usize) -> Launch {
    match (plan.strategy(), constant_input(plan)) {
        (Strategy::Along, None) => along(plan, buf, sms),
        (Strategy::Along, Some(c)) => rows(plan, buf, sms, c),
        (Strategy::Rows, _) => rows(plan, buf, sms, 0),
    }
}

fn along(plan: &Plan, buf: Buffers, sms: usize) -> Launch {
    let vec = 16 / buf.elem_bytes;
    let (rest, inner) = plan.split_inner();
    let outer_count: usize = rest.iter().map(|a| a.len).product();
    // An input is read as 16-byte vectors when it runs along the inner axis; then its base
    // and every other stride must keep vectors aligned.
    let fits = |stride_inner: usize, aligned: bool, strides: Vec<usize>| {
        stride_inner == 0
            || (stride_inner == 1 && aligned && strides.iter().all(|s| s.is_multiple_of(vec)))
    };
    let strides = |f: fn(&Axis) -> usize| -> Vec<usize> {
        rest.iter().chain([&plan.reduce]).map(f).collect()
    };
    let ok1 = fits(inner.stride1, buf.x1_aligned, strides(|a| a.stride1));
    let ok2 = fits(inner.stride2, buf.x2_aligned, strides(|a| a.stride2));
    let vector = ok1 && ok2 && buf.out_aligned && inner.len.is_multiple_of(vec) && vec > 1;
    let suffix = match (vector, inner.stride1, inner.stride2) {
        (true, 1, 1) => "v",
        (true, 0, 1) => "vb1",
        (true, 1, 0) => "vb2",
        _ => "s",
    };
    let v = if suffix == "s" { 1 } else { vec };
    let threads = outer_count * (inner.len / v);
    // Few outputs with a long reduction: split the reduced axis so that about two blocks' worth
    // of threads per SM have work, each split walking at least 16 steps. A block then holds
    // `by` splits of `bx` threads' outputs instead of idling most of its lanes.
    let len = plan.reduce.len;
    let target = sms * 2 * BLOCK as usize;
    let mut splits = 1;
    if threads > 0 && threads < target && len >= 64 {
        splits = target.div_ceil(threads).min(len / 16);
    }
    let chunk = len.div_ceil(splits.max(1)).max(1);
    let splits = len.div_ceil(chunk).max(1);
    let (block, grid) = if splits > 1 {
        let bx = threads.next_power_of_two().min(BLOCK as usize);
        let by = BLOCK as usize / bx;
        let gy = splits.div_ceil(by).min(65_535);
        (
            (bx as u32, by as u32),
            (threads.div_ceil(bx) as u32, gy as u32),
        )
    } else {
        ((BLOCK, 1), (grid_for(threads, sms), 1))
    };
    // The grid's y extent must cover every split.
    let splits = splits.min(grid.1 as usize * block.1 as usize);
    let chunk = len.div_ceil(splits).max(1);
    let splits = len.div_ceil(chunk).max(1);
    let params = cosim_along_params {
        outer: index(rest),
        outer_count: outer_count as i64,
        inner: inner.len as i64,
        inner_stride1: inner.stride1 as i64,
        inner_stride2: inner.stride2 as i64,
        reduce_len: len as i64,
        reduce_stride1: plan.reduce.stride1 as i64,
        reduce_stride2: plan.reduce.stride2 as i64,
        splits: splits as i64,
        chunk: chunk as i64,
        eps: plan.eps,
    };
    Launch::Along {
        name_suffix: suffix,
        grid,
        block,
        params,
    }
}

/// Parameters of the backward kernels (`kernels/backward.cu`) for `plan`: one thread per
/// output, scalar loads, the reduced axis whole.
pub fn backward_params(plan: &Plan) -> cosim_along_params {
    let (rest, inner) = plan.split_inner();
    let len = plan.reduce.len;
    cosim_along_params {
        outer: index(rest),
        outer_count: rest.iter().map(|a| a.len).product::<usize>() as i64,
        inner: inner.len as i64,
        inner_stride1: inner.stride1 as i64,
        inner_stride2: inner.stride2 as i64,
        reduce_len: len as i64,
        reduce_stride1: plan.reduce.stride1 as i64,
        reduce_stride2: plan.reduce.stride2 as i64,
        splits: 1,
        chunk: len.max(1) as i64,
        eps: plan.eps,
    }
}

/// Row kernels; `constant` (1 or 2) names an input that holds one value per row.
fn rows(plan: &Plan, buf: Buffers, sms: usize, constant: u8) -> Launch {
    let vec = 16 / buf.elem_bytes;
    let len = plan.reduce.len;
    let rows = plan.out_len();
    // Vector loads need every row start aligned in each streamed (non-constant) input.
    let streamed = |input: u8, aligned: bool, stride: fn(&Axis) -> usize| {
        input == constant || (aligned && plan.outer.iter().all(|a| stride(a).is_multiple_of(vec)))
    };
    let weighted_ok = buf.reweight.is_none_or(|(_, aligned)| aligned);
    let vector = vec > 1
        && len.is_multiple_of(vec)
        && streamed(1, buf.x1_aligned, |a| a.stride1)
        && streamed(2, buf.x2_aligned, |a| a.stride2)
        && weighted_ok;
    let v = if vector { vec } else { 1 };
    let steps = len.div_ceil(v);
    let mut params = cosim_rows_params {
        rows: index(&plan.outer),
        row_count: rows as i64,
        row_len: len as i64,
        splits: 1,
        chunk: len as i64,
        eps: plan.eps,
        reweight_input: buf.reweight.map_or(0, |(y, _)| y as i32),
        constant_input: constant as i32,
    };
    if steps <= 32 * 8 {
        // Short rows: G lanes per row, G the power of two that gives each lane ~4 steps.
        let g = steps.div_ceil(4).next_power_of_two().clamp(4, 32);
        let kind = match g {
            4 => "g4",
            8 => "g8",
            16 => "g16",
            _ => "g32",
        };
        return Launch::Rows {
            kind,
            vector,
            grid: grid_for(rows * g, sms),
            params,
        };
    }
    // Long rows: a block per row, split when there are too few rows to fill the GPU, each
    // split still giving every thread at least 4 vector steps.
    let target = sms * BLOCKS_PER_SM;
    let mut splits = 1;
    if rows > 0 && rows < target {
        let max_splits = steps.div_ceil(BLOCK as usize * 4).max(1);
        splits = target.div_ceil(rows).min(max_splits);
    }
    let chunk = len.div_ceil(splits).div_ceil(v) * v;
    let splits = len.div_ceil(chunk).max(1);
    params.splits = splits as i64;
    params.chunk = chunk as i64;
    let items = rows * splits;
    Launch::Rows {
        kind: "block",
        vector,
        grid: items.clamp(1, sms * BLOCKS_PER_SM * 4) as u32,
        params,
    }
}

/// Row parameters for the scale kernel that reweights input 2 after the similarities of
/// `plan` are written (row r = output r, row_len = the reduced length).
pub fn scale_params(plan: &Plan) -> cosim_rows_params {
    cosim_rows_params {
        rows: index(&plan.outer),
        row_count: plan.out_len() as i64,
        row_len: plan.reduce.len as i64,
        splits: 1,
        chunk: plan.reduce.len as i64,
        eps: plan.eps,
        reweight_input: 2,
        constant_input: 0,
    }
}

impl Launch {
    /// Device scratch the launch needs beyond its outputs: split partial sums.
    pub fn scratch_bytes(&self, acc_bytes: usize) -> usize {
        match self {
            Launch::Rows { params, .. } if params.splits > 1 => {
                (params.row_count * params.splits) as usize * 3 * acc_bytes
            }
            Launch::Along { params, .. } if params.splits > 1 => {
                (params.outer_count * params.inner * params.splits) as usize * 3 * acc_bytes
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bufs(elem_bytes: usize) -> Buffers {
        Buffers {
            elem_bytes,
            x1_aligned: true,
            x2_aligned: true,
            out_aligned: true,
            reweight: None,
        }
    }

    #[test]
    fn nchw_dim1_takes_the_vector_along_kernel() {
        let p = Plan::along(&[64, 256, 128, 128], &[64, 256, 128, 128], 1, None).unwrap();
        match plan_launch(&p, bufs(4), 132) {
            Launch::Along {
                name_suffix,
                grid,
                block,
                params,
            } => {
                assert_eq!(name_suffix, "v");
                assert_eq!(params.outer_count, 64);
                assert_eq!(params.inner, 16384);
                assert_eq!(
                    (grid, block),
                    (((64 * 16384 / 4 / 256) as u32, 1), (256, 1))
                );
            }
            l => panic!("{l:?}"),
        }
        // Misaligned base pointer → scalar path.
        let mut b = bufs(4);
        b.x2_aligned = false;
        assert!(matches!(
            plan_launch(&p, b, 132),
            Launch::Along {
                name_suffix: "s",
                ..
            }
        ));
    }

    #[test]
    fn prototype_broadcast_splats_x2() {
        let p = Plan::along(&[64, 256, 128, 128], &[1, 256, 1, 1], 1, None).unwrap();
        assert!(matches!(
            plan_launch(&p, bufs(2), 132),
            Launch::Along {
                name_suffix: "vb2",
                ..
            }
        ));
    }

    #[test]
    fn odd_inner_is_scalar() {
        let p = Plan::along(&[3, 5, 7], &[3, 5, 7], 1, None).unwrap();
        assert!(matches!(
            plan_launch(&p, bufs(4), 132),
            Launch::Along {
                name_suffix: "s",
                ..
            }
        ));
    }

    #[test]
    fn short_rows_use_groups() {
        let p = Plan::along(&[1 << 22, 64], &[1 << 22, 64], 1, None).unwrap();
        match plan_launch(&p, bufs(4), 132) {
            Launch::Rows {
                kind,
                vector,
                params,
                ..
            } => {
                assert_eq!((kind, vector), ("g4", true));
                assert_eq!(params.splits, 1);
            }
            l => panic!("{l:?}"),
        }
        let p = Plan::along(&[10, 1000], &[10, 1000], 1, None).unwrap();
        assert!(matches!(
            plan_launch(&p, bufs(4), 132),
            Launch::Rows {
                kind: "g32",
                vector: true,
                ..
            }
        ));
        let p = Plan::along(&[10, 1001], &[10, 1001], 1, None).unwrap();
        assert!(matches!(
            plan_launch(&p, bufs(4), 132),
            Launch::Rows {
                kind: "block",
                vector: false,
                ..
            }
        ));
    }

    #[test]
    fn few_long_rows_split() {
        let p = Plan::along(&[8, 1 << 25], &[8, 1 << 25], 1, None).unwrap();
        let l = plan_launch(&p, bufs(4), 132);
        match &l {
            Launch::Rows { kind, params, .. } => {
                assert_eq!(*kind, "block");
                assert!(params.splits > 1);
                assert_eq!(params.chunk % 4, 0);
                assert!(params.chunk * params.splits >= 1 << 25);
                assert!(params.chunk * (params.splits - 1) < 1 << 25);
            }
            l => panic!("{l:?}"),
        }
        assert!(l.scratch_bytes(4) > 0 && l.scratch_bytes(4) < 1 << 20);
    }

    #[test]
    fn empty_outputs_need_no_scratch() {
        let p = Plan::along(&[0, 4096], &[0, 4096], 1, None).unwrap();
        assert_eq!(plan_launch(&p, bufs(4), 132).scratch_bytes(4), 0);
        let p = Plan::along(&[0, 64], &[0, 64], 0, None).unwrap();
        assert_eq!(plan_launch(&p, bufs(4), 132).scratch_bytes(4), 0);
    }

    #[test]
    fn few_outputs_split_the_reduced_axis() {
        // Column-wise cosine of an embedding matrix: 64 outputs, 2^20 steps each.
        let p = Plan::along(&[1 << 20, 64], &[1 << 20, 64], 0, None).unwrap();
        match plan_launch(&p, bufs(4), 132) {
            Launch::Along {
                name_suffix,
                grid,
                block,
                params,
            } => {
                assert_eq!(name_suffix, "v");
                assert!(params.splits > 1000, "{}", params.splits);
                assert!(params.chunk * params.splits >= 1 << 20);
                assert!(params.chunk * (params.splits - 1) < 1 << 20);
                assert!(params.chunk >= 16);
                // 16 threads of outputs × 16 splits per block; every split has a thread.
                assert_eq!(block, (16, 16));
                assert_eq!(grid.0, 1);
                assert!(i64::from(grid.1 * block.1) >= params.splits);
            }
            l => panic!("{l:?}"),
        }
        // Plenty of outputs: no split.
        let p = Plan::along(&[64, 256, 128, 128], &[64, 256, 128, 128], 1, None).unwrap();
        assert!(
            matches!(plan_launch(&p, bufs(4), 132), Launch::Along { params, .. } if params.splits == 1)
        );
    }

    #[test]
    fn one_value_per_row_takes_the_row_kernels() {
        let p = Plan::flattened(&[64, 256, 128, 128], &[64, 256, 1, 1], 2, None).unwrap();
        match plan_launch(&p, bufs(4), 132) {
            Launch::Rows {
                kind,
                vector,
                params,
                ..
            } => {
                assert_eq!((kind, vector, params.constant_input), ("block", true, 2));
            }
            l => panic!("{l:?}"),
        }
        // The constant input's alignment does not matter; the streamed one's does.
        let mut b = bufs(4);
        b.x2_aligned = false;
        assert!(matches!(
            plan_launch(&p, b, 132),
            Launch::Rows { vector: true, .. }
        ));
        b.x1_aligned = false;
        assert!(matches!(
            plan_launch(&p, b, 132),
            Launch::Rows { vector: false, .. }
        ));
        let p = Plan::along(&[1000, 1], &[1000, 512], 1, None).unwrap();
        assert!(
            matches!(plan_launch(&p, bufs(4), 132), Launch::Rows { params, .. } if params.constant_input == 1)
        );
    }

    #[test]
    fn many_long_rows_do_not_split() {
        let p = Plan::flattened(&[64, 256, 128, 128], &[64, 256, 128, 128], 2, None).unwrap();
        match plan_launch(&p, bufs(4), 132) {
            Launch::Rows { kind, params, .. } => {
                assert_eq!((kind, params.splits), ("block", 1));
            }
            l => panic!("{l:?}"),
        }
    }
}
