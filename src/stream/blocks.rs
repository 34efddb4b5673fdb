//! The elementwise family (cosine along a dim, per-channel similarity, reweighting) on host
//! inputs too large for the GPU's memory, run in blocks of rows along dim 0 of the broadcast
//! shape: each block's rows of the inputs are staged in pinned host buffers and copied up on
//! one of two streams while the other stream computes, and its results copied back the same
//! way. An input broadcast along dim 0 (size 1 there, or of lower rank) goes up once, whole.
//!
//! The cut itself ([`Blocks`]) is plain arithmetic, run on the CPU too when a caller forces
//! blocks there, which is how the tests check that a blocked job gives exactly what the
//! whole job gives.

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::{cpu, AnyElement, Device};
use std::ops::Range;

/// What an elementwise job computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elementwise {
    /// Cosine along a dim.
    Along(isize),
    /// Per channel, flattened from a dim.
    Channels(usize),
    /// Per channel, and the second input reweighted by it.
    Reweight(usize),
}

/// A job's results: the similarities, and the weighted tensor for [`Elementwise::Reweight`].
#[derive(Clone, Debug, PartialEq)]
pub struct Computed<T> {
    pub values: Vec<T>,
    pub shape: Vec<usize>,
    pub weighted: Option<(Vec<T>, Vec<usize>)>,
}

/// Blocks on the GPU are at most this large per slot (two slots are in flight).
#[cfg(feature = "cuda")]
const GPU_BLOCK_BYTES: usize = 256 << 20;

/// Runs `op` on the inputs `a` (shape `sa`) and `b` (shape `sb`) on `device`: whole, or in blocks
/// of rows along dim 0 when the GPU could not hold it (its inputs, outputs and the call's
/// scratch, from [`crate::cuda::Cuda::scratch_bytes`], against 80% of its free memory), or
/// when `block_bytes` forces blocks of at most that many bytes, on any device.
///
/// # Errors
/// As the whole calls ([`crate::cpu::cosine_similarity`] and its siblings);
/// [`Error::Unsupported`] when one row of dim 0 alone is larger than a block may be; device
/// failures.
#[allow(clippy::too_many_arguments)]
pub fn elementwise<T: AnyElement>(
    device: &Device,
    op: Elementwise,
    (a, sa): (&[T], &[usize]),
    (b, sb): (&[T], &[usize]),
    eps: Option<f64>,
    block_bytes: Option<usize>,
) -> Result<Computed<T>> {
    let plan = match op {
        Elementwise::Along(dim) => Plan::along(sa, sb, dim, eps),
        Elementwise::Channels(from) | Elementwise::Reweight(from) => {
            Plan::flattened(sa, sb, from, eps)
        }
    }?;
    plan.check_inputs(a.len(), b.len(), sa, sb)?;
    let budget = match block_bytes {
        Some(n) => Some(n),
        None => gpu_budget::<T>(device, op, &plan, a.len(), b.len())?,
    };
    let elem = std::mem::size_of::<T>();
    let blocks = budget.and_then(|bytes| Blocks::plan(op, &plan, sa, sb, bytes, elem));
    let Some(blocks) = blocks else {
        return whole(device, op, (a, sa), (b, sb), eps);
    };
    if blocks.per_block == 0 {
        return Err(Error::Unsupported(format!(
            "one row of dim 0 of {sa:?} vs {sb:?} needs {} bytes, more than a block may hold",
            blocks.row_bytes(elem)
        )));
    }
    let mut values = vec![T::from_f64(0.0); plan.out_len()];
    let mut weighted = match op {
        Elementwise::Reweight(_) => Some(vec![T::from_f64(0.0); plan.out_len() * plan.reduce.len]),
        _ => None,
    };
    match device {
        Device::Cpu => on_cpu(&blocks, op, a, b, eps, &mut values, weighted.as_deref_mut()),
        #[cfg(feature = "cuda")]
        Device::Cuda(c) => gpu::run(
            c,
            &blocks,
            op,
            a,
            b,
            eps,
            &mut values,
            weighted.as_deref_mut(),
        ),
    }?;
    Ok(Computed {
        values,
        weighted: weighted.map(|w| (w, plan.weighted_shape())),
        shape: plan.out_shape,
    })
}

/// The whole job in one call on `device`.
fn whole<T: AnyElement>(
    device: &Device,
    op: Elementwise,
    (a, sa): (&[T], &[usize]),
    (b, sb): (&[T], &[usize]),
    eps: Option<f64>,
) -> Result<Computed<T>> {
    Ok(match op {
        Elementwise::Along(dim) => {
            let s = device.cosine_similarity(a, sa, b, sb, dim, eps)?;
            Computed {
                values: s.values,
                shape: s.shape,
                weighted: None,
            }
        }
        Elementwise::Channels(from) => {
            let s = device.channel_similarity(a, sa, b, sb, from, eps)?;
            Computed {
                values: s.values,
                shape: s.shape,
                weighted: None,
            }
        }
        Elementwise::Reweight(from) => {
            let r = device.reweight_channels(a, sa, b, sb, from, eps)?;
            Computed {
                values: r.similarity,
                shape: r.similarity_shape,
                weighted: Some((r.weighted, r.weighted_shape)),
            }
        }
    })
}

/// The bytes per block slot when the job does not fit in the GPU's free memory; `None`
/// (run whole) on the CPU or when it fits.
#[allow(unused_variables)]
#[cfg_attr(not(feature = "cuda"), allow(clippy::extra_unused_type_parameters))]
fn gpu_budget<T: AnyElement>(
    device: &Device,
    op: Elementwise,
    plan: &Plan,
    len_a: usize,
    len_b: usize,
) -> Result<Option<usize>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(c) = device {
        let ctx = c.stream().context();
        ctx.bind_to_thread()?;
        let (free, _) = ctx.mem_get_info()?;
        let usable = free / 10 * 8;
        let weighted = match op {
            Elementwise::Reweight(_) => plan.out_len() * plan.reduce.len,
            _ => 0,
        };
        let job = (len_a + len_b + plan.out_len() + weighted)
            .saturating_mul(std::mem::size_of::<T>())
            .saturating_add(c.scratch_bytes::<T>(plan));
        if job <= usable {
            return Ok(None);
        }
        // Whatever goes up whole stays resident; two slots share the rest, less the scratch
        // of each slot's call.
        let whole = (len_a + len_b) * std::mem::size_of::<T>();
        let rest = usable
            .saturating_sub(whole)
            .saturating_sub(2 * c.scratch_bytes::<T>(plan));
        return Ok(Some((rest / 2).min(GPU_BLOCK_BYTES)));
    }
    Ok(None)
}

/// One input's part in the blocks: cut along dim 0, or sent whole with every block.
#[derive(Clone, Debug)]
struct Part {
    shape: Vec<usize>,
    /// Elements per row of dim 0 when cut; `None` when broadcast along dim 0.
    row: Option<usize>,
}

impl Part {
    fn new(shape: &[usize], rank: usize, rows: usize) -> Part {
        let cut = shape.len() == rank && shape.first() == Some(&rows) && rows > 1;
        Part {
            shape: shape.to_vec(),
            row: cut.then(|| shape[1..].iter().product()),
        }
    }

    /// The elements and shape of rows `r` (all of it when not cut).
    fn block(&self, len: usize, r: &Range<usize>) -> (Range<usize>, Vec<usize>) {
        match self.row {
            Some(row) => {
                let mut shape = self.shape.clone();
                shape[0] = r.len();
                (r.start * row..r.end * row, shape)
            }
            None => (0..len, self.shape.clone()),
        }
    }

    fn row_len(&self) -> usize {
        self.row.unwrap_or(0)
    }
}

/// A job cut into blocks of rows along dim 0 of the broadcast shape.
#[derive(Clone, Debug)]
pub struct Blocks {
    /// Rows of dim 0.
    rows: usize,
    /// Rows per block (0 when not even one row fits the budget).
    pub per_block: usize,
    a: Part,
    b: Part,
    /// Output elements per row: similarities, and weighted values (0 unless reweighting).
    out_row: usize,
    weighted_row: usize,
}

impl Blocks {
    /// The cut of `op` into blocks of at most `budget` bytes; `None` when dim 0 is reduced
    /// (or flattened), has one row, or no input is cut along it.
    fn plan(
        op: Elementwise,
        plan: &Plan,
        sa: &[usize],
        sb: &[usize],
        budget: usize,
        elem: usize,
    ) -> Option<Blocks> {
        let shape = &plan.broadcast_shape;
        let rows = *shape.first()?;
        let keeps_dim0 = match op {
            Elementwise::Along(dim) => crate::plan::wrap_dim(dim, shape).ok()? != 0,
            Elementwise::Channels(from) | Elementwise::Reweight(from) => from > 0,
        };
        let (a, b) = (
            Part::new(sa, shape.len(), rows),
            Part::new(sb, shape.len(), rows),
        );
        if !keeps_dim0 || rows < 2 || (a.row.is_none() && b.row.is_none()) {
            return None;
        }
        let out_row = plan.out_len() / rows;
        let weighted_row = match op {
            Elementwise::Reweight(_) => out_row * plan.reduce.len,
            _ => 0,
        };
        let mut blocks = Blocks {
            rows,
            per_block: 0,
            a,
            b,
            out_row,
            weighted_row,
        };
        blocks.per_block = (budget / blocks.row_bytes(elem).max(1)).min(rows);
        Some(blocks)
    }

    /// Bytes one row of dim 0 takes in a block: the cut inputs' rows and the outputs'.
    fn row_bytes(&self, elem: usize) -> usize {
        (self.a.row_len() + self.b.row_len() + self.out_row + self.weighted_row) * elem
    }

    /// The row ranges of the blocks, in order.
    fn ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let step = self.per_block.max(1);
        (0..self.rows)
            .step_by(step)
            .map(move |r| r..(r + step).min(self.rows))
    }
}

/// The blocks run one after the other on the CPU (for checking the cut; the CPU itself has
/// no need for blocks).
fn on_cpu<T: AnyElement>(
    blocks: &Blocks,
    op: Elementwise,
    a: &[T],
    b: &[T],
    eps: Option<f64>,
    values: &mut [T],
    mut weighted: Option<&mut [T]>,
) -> Result<()> {
    for r in blocks.ranges() {
        let (ra, sa) = blocks.a.block(a.len(), &r);
        let (rb, sb) = blocks.b.block(b.len(), &r);
        let (xa, xb) = (&a[ra], &b[rb]);
        let out = &mut values[r.start * blocks.out_row..r.end * blocks.out_row];
        match (op, weighted.as_deref_mut()) {
            (Elementwise::Along(dim), _) => {
                cpu::cosine_similarity_into(out, xa, &sa, xb, &sb, dim, eps)?;
            }
            (Elementwise::Channels(from), _) | (Elementwise::Reweight(from), None) => {
                cpu::channel_similarity_into(out, xa, &sa, xb, &sb, from, eps)?;
            }
            (Elementwise::Reweight(from), Some(w)) => {
                let w = &mut w[r.start * blocks.weighted_row..r.end * blocks.weighted_row];
                cpu::reweight_channels_into(w, out, xa, &sa, xb, &sb, from, eps)?;
            }
        }
    }
    Ok(())
}

/// The blocks on the GPU, on the two-slot pipeline ([`super::pipeline`]): each slot holds
/// one block's rows of the cut inputs and its results; an input broadcast along dim 0 goes
/// up once and both slots read it.
#[cfg(feature = "cuda")]
mod gpu {
    use super::super::pipeline::{self, Results, Staged, TwoSlots};
    use super::{Blocks, Elementwise};
    use crate::cuda::Cuda;
    use crate::error::{Error, Result};
    use crate::AnyElement;
    use cudarc::driver::{CudaSlice, CudaStream};
    use std::ops::Range;
    use std::sync::Arc;

    /// One slot: its stream, the cut inputs' staging (`None` for an input sent whole), and
    /// the results.
    struct Slot<T: AnyElement> {
        cuda: Cuda,
        stream: Arc<CudaStream>,
        a: Option<Staged<T, usize>>,
        b: Option<Staged<T, usize>>,
        out: Results<T>,
        weighted: Option<Results<T>>,
    }

    /// The blocks of one job and where their results go.
    struct Rows<'a, T: AnyElement> {
        blocks: &'a Blocks,
        ranges: Vec<Range<usize>>,
        op: Elementwise,
        a: &'a [T],
        b: &'a [T],
        whole_a: CudaSlice<T>,
        whole_b: CudaSlice<T>,
        eps: Option<f64>,
        values: &'a mut [T],
        weighted: Option<&'a mut [T]>,
    }

    #[allow(clippy::too_many_arguments)]
    pub fn run<T: AnyElement>(
        cuda: &Cuda,
        blocks: &Blocks,
        op: Elementwise,
        a: &[T],
        b: &[T],
        eps: Option<f64>,
        values: &mut [T],
        weighted: Option<&mut [T]>,
    ) -> Result<()> {
        let ctx = cuda.stream().context().clone();
        let n = blocks.per_block;
        // Inputs broadcast along dim 0 go up once and are read by both streams.
        let whole_a = cuda.upload(if blocks.a.row.is_none() { a } else { &[] })?;
        let whole_b = cuda.upload(if blocks.b.row.is_none() { b } else { &[] })?;
        cuda.stream().synchronize()?;
        let slot = || -> Result<Slot<T>> {
            let stream = ctx.new_stream()?;
            let cut = |row: Option<usize>| -> Result<Option<Staged<T, usize>>> {
                row.map(|row| Staged::new(&ctx, &stream, n * row))
                    .transpose()
            };
            Ok(Slot {
                cuda: Cuda::with_stream(stream.clone())?,
                a: cut(blocks.a.row)?,
                b: cut(blocks.b.row)?,
                out: Results::new(&ctx, &stream, n * blocks.out_row, true)?,
                weighted: match op {
                    Elementwise::Reweight(_) => {
                        Some(Results::new(&ctx, &stream, n * blocks.weighted_row, true)?)
                    }
                    _ => None,
                },
                stream,
            })
        };
        let mut slots = [slot()?, slot()?];
        let ranges: Vec<Range<usize>> = blocks.ranges().collect();
        let count = ranges.len();
        let mut rows = Rows {
            blocks,
            ranges,
            op,
            a,
            b,
            whole_a,
            whole_b,
            eps,
            values,
            weighted,
        };
        pipeline::run(&mut rows, &mut slots, count, &|| Ok(()))
    }

    /// Copies a block's rows of a cut input into the front of its staging buffer.
    fn copy_rows<T: AnyElement>(dst: &mut [T], rows: &[T]) -> Result<()> {
        dst.get_mut(..rows.len())
            .ok_or_else(|| Error::Internal("a block's rows overflow their staging buffer".into()))?
            .copy_from_slice(rows);
        Ok(())
    }

    impl<T: AnyElement> TwoSlots for Rows<'_, T> {
        type Slot = Slot<T>;

        fn launch(&mut self, slot: &mut Slot<T>, i: usize) -> Result<()> {
            let (blocks, r) = (self.blocks, self.ranges[i].clone());
            let (ra, sa) = blocks.a.block(self.a.len(), &r);
            let (rb, sb) = blocks.b.block(self.b.len(), &r);
            let s = &slot.stream;
            let xa = match &mut slot.a {
                Some(st) => {
                    let rows = &self.a[ra.clone()];
                    st.stage(s, i, |dst| copy_rows(dst, rows))?;
                    st.dev.slice(0..ra.len())
                }
                None => self.whole_a.slice(..),
            };
            let xb = match &mut slot.b {
                Some(st) => {
                    let rows = &self.b[rb.clone()];
                    st.stage(s, i, |dst| copy_rows(dst, rows))?;
                    st.dev.slice(0..rb.len())
                }
                None => self.whole_b.slice(..),
            };
            let (c, eps) = (&slot.cuda, self.eps);
            let mut out = slot.out.dev.slice_mut(0..r.len() * blocks.out_row);
            match (self.op, slot.weighted.as_mut()) {
                (Elementwise::Along(dim), _) => {
                    c.cosine_similarity_into(&mut out, &xa, &sa, &xb, &sb, dim, eps)?;
                }
                (Elementwise::Channels(from), _) | (Elementwise::Reweight(from), None) => {
                    c.channel_similarity_into(&mut out, &xa, &sa, &xb, &sb, from, eps)?;
                }
                (Elementwise::Reweight(from), Some(w)) => {
                    let mut wv = w.dev.slice_mut(0..r.len() * blocks.weighted_row);
                    c.reweight_channels_into(&mut wv, &mut out, &xa, &sa, &xb, &sb, from, eps)?;
                    s.memcpy_dtoh(&w.dev, &mut w.host)?;
                }
            }
            s.memcpy_dtoh(&slot.out.dev, &mut slot.out.host)?;
            Ok(())
        }

        fn hand_back(&mut self, slot: &mut Slot<T>, i: usize) -> Result<()> {
            let (blocks, r) = (self.blocks, &self.ranges[i]);
            let n = r.len() * blocks.out_row;
            self.values[r.start * blocks.out_row..r.end * blocks.out_row]
                .copy_from_slice(slot.out.take(n)?);
            if let (Some(w), Some(res)) = (self.weighted.as_deref_mut(), &slot.weighted) {
                let n = r.len() * blocks.weighted_row;
                w[r.start * blocks.weighted_row..r.end * blocks.weighted_row]
                    .copy_from_slice(res.take(n)?);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(op: Elementwise, sa: &[usize], sb: &[usize], budget: usize) -> Option<Blocks> {
        let plan = match op {
            Elementwise::Along(d) => Plan::along(sa, sb, d, None),
            Elementwise::Channels(f) | Elementwise::Reweight(f) => Plan::flattened(sa, sb, f, None),
        }
        .ok()?;
        Blocks::plan(op, &plan, sa, sb, budget, 8)
    }

    #[test]
    fn cuts_along_dim0_unless_it_is_reduced() {
        let b = blocks(Elementwise::Along(1), &[10, 4, 5], &[10, 4, 5], 8 * 3 * 45).unwrap();
        // A row: 20 + 20 inputs + 5 outputs = 45 elements of 8 bytes; three fit.
        assert_eq!(b.per_block, 3);
        let r: Vec<_> = b.ranges().collect();
        assert_eq!(r, vec![0..3, 3..6, 6..9, 9..10]);
        assert!(blocks(Elementwise::Along(0), &[10, 4], &[10, 4], 1 << 20).is_none());
        assert!(blocks(Elementwise::Along(-3), &[10, 4, 5], &[10, 4, 5], 1 << 20).is_none());
        assert!(blocks(Elementwise::Channels(0), &[10, 4], &[10, 4], 1 << 20).is_none());
        assert!(blocks(Elementwise::Along(1), &[1, 4], &[1, 4], 1 << 20).is_none());
    }

    #[test]
    fn a_broadcast_input_goes_whole() {
        let b = blocks(Elementwise::Along(1), &[6, 4, 5], &[1, 4, 1], 1 << 20).unwrap();
        assert!(b.a.row == Some(20) && b.b.row.is_none());
        let (r, s) = b.b.block(4, &(2..4));
        assert_eq!((r, s), (0..4, vec![1, 4, 1]));
        let (r, s) = b.a.block(120, &(2..4));
        assert_eq!((r, s), (40..80, vec![2, 4, 5]));
        // Lower rank broadcasts too.
        let b = blocks(Elementwise::Along(-1), &[6, 4, 5], &[5], 1 << 20).unwrap();
        assert!(b.b.row.is_none());
        // Nothing to cut: both broadcast along dim 0.
        assert!(blocks(Elementwise::Along(1), &[1, 4], &[4], 1 << 20).is_none());
    }
}
