//! The gradient of the pairwise matrix on the GPU (`kernels/pair_backward.cu`), with the
//! semantics of [`crate::cpu::pairwise_similarity_backward`]. Per set, two kernels:
//! `W = ia ∘ (G · (ib ∘ B))` (and `ib ∘ (Gᵀ · (ia ∘ A))` for B) on the forward's tile
//! machinery, G and the sets read in place in their layouts, the inverse norms folded into
//! the loads and the epilogue; then the projection `W − ia² ⟨a, W⟩ a` per vector. The plan's
//! [`Precision`](crate::pairwise::Precision) picks FFMA or tensor cores for the products, as
//! in the forward.
//!
//! Extra device memory: the inverse norms (4 bytes per vector of each set) and, for f16 and
//! bf16, one f32 `W` the size of the larger set (reused for both); f32 gradients are
//! computed in place. A product whose tiles do not fill the GPU (few vectors in one set,
//! many in the other) splits its long sum into up to 32 spans whose partial Ws (f32, each the
//! size of the short set; 256 MiB at most) are added by the projection: deterministic, no
//! atomics.

use super::kernels::Family;
use super::launch::grid_for;
use super::pairwise::{cfg, set_params, tiles, PairElement, GRID_YZ, TILE};
use super::params::{cosim_pair_grad_params, cosim_pair_params, cosim_pair_set};
use super::Cuda;
use crate::error::{Error, Result};
use crate::pairwise::{Layout, PairPlan, SetStrides};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, PushKernelArg};

/// Fewest reduced components one span of a split product sums.
const SPLIT_MIN: usize = 2048;
/// Most spans a product splits into (each is a partial W in scratch).
const MAX_SPLITS: usize = 32;
/// Most scratch bytes the partial Ws of a split product take.
const SPLIT_SCRATCH_BYTES: usize = 256 << 20;

// SAFETY: `#[repr(C)]` plain-integer/float struct mirrored by bindgen from kernels/params.h
// (layout tests there), passed to kernels by value.
unsafe impl DeviceRepr for cosim_pair_grad_params {}

/// One set's side of the gradient: its own description, the other's, and where G's entry
/// for (mine v, other j) lies.
struct Side {
    /// This set's strides, count and layout (W and the gradient share them).
    mine: (SetStrides, usize, Layout),
    /// The other set's strides, count and layout.
    other: (SetStrides, usize, Layout),
    /// G seen as mine's vectors with the other's vectors as components: G's rows for A
    /// (layout Rows), its columns for B (Cols).
    g_layout: Layout,
}

impl Side {
    fn of_a(plan: &PairPlan) -> Side {
        Side {
            mine: (plan.a, plan.n, plan.a_layout),
            other: (plan.b, plan.m, plan.b_layout),
            g_layout: Layout::Rows,
        }
    }

    fn of_b(plan: &PairPlan) -> Side {
        Side {
            mine: (plan.b, plan.m, plan.b_layout),
            other: (plan.a, plan.n, plan.a_layout),
            g_layout: Layout::Cols,
        }
    }

    /// The kernel name's layout part: G's view, then the other set's view as the product's
    /// second operand (its components k are that operand's vectors, so the layout flips).
    fn kernel(&self, plan: &PairPlan, elem: &str) -> String {
        let g = if self.g_layout == Layout::Cols {
            'c'
        } else {
            'r'
        };
        let y = if self.other.2 == Layout::Rows {
            'c'
        } else {
            'r'
        };
        let tc = match plan.precision {
            crate::pairwise::Precision::Exact => "",
            crate::pairwise::Precision::Fast => "_tc",
        };
        format!("cosim_pair_grad_{elem}_{g}{y}{tc}")
    }
}

/// Device pointers of one gradient computation.
#[derive(Clone, Copy)]
struct Ptrs {
    grad: u64,
    mine: u64,
    other: u64,
    inv_mine: u64,
    inv_other: u64,
    w: u64,
    out: u64,
}

impl Cuda {
    /// Gradients of [`Cuda::pairwise_similarity`] given `grad` (`[B?, N, M]`, the upstream
    /// gradient of the matrix): `(ga, gb)`, shaped and laid out like `a` and `b`. See
    /// [`crate::cpu::pairwise_similarity_backward`] for the semantics; the products run in
    /// the plan's precision. With [`Precision::Fast`](crate::pairwise::Precision::Fast)
    /// (tensor cores: TF32 or f16/bf16 inputs, f32 sums) the tests allow 1e-2 of the largest
    /// gradient element and saw, on the emulated driver's TF32 rounding, 2.7e-4 (f32), 4.9e-4
    /// (f16) and 3.9e-3 (bf16, about its own rounding) — not yet a GPU reading.
    ///
    /// # Errors
    /// As the forward, and [`Error::OutLenMismatch`] if `grad` is not shaped like the matrix;
    /// [`Error::PairTooLarge`] past 2³¹ − 1 vectors in a set (the products sum over them in
    /// 32-bit counts); device errors.
    pub fn pairwise_similarity_backward<T: PairElement>(
        &self,
        plan: &PairPlan,
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
        grad: &impl DevicePtr<T>,
    ) -> Result<(CudaSlice<T>, CudaSlice<T>)> {
        self.pair_grad_inputs(plan, a, b, grad)?;
        let mut ga = self.alloc::<T>(plan.a_vectors() * plan.d, "the gradient of a")?;
        let mut gb = self.alloc::<T>(plan.b_vectors() * plan.d, "the gradient of b")?;
        self.pairwise_similarity_backward_into(plan, &mut ga, &mut gb, a, b, grad)?;
        Ok((ga, gb))
    }

    /// [`Cuda::pairwise_similarity_backward`] into caller's buffers, each the length of its
    /// set.
    ///
    /// # Errors
    /// As [`Cuda::pairwise_similarity_backward`], and if `ga` or `gb` has the wrong length or
    /// lives on another device (nothing written).
    pub fn pairwise_similarity_backward_into<T: PairElement>(
        &self,
        plan: &PairPlan,
        ga: &mut impl DevicePtrMut<T>,
        gb: &mut impl DevicePtrMut<T>,
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
        grad: &impl DevicePtr<T>,
    ) -> Result<()> {
        self.pair_grad_inputs(plan, a, b, grad)?;
        plan.check_out("ga", ga.len(), plan.a_shape())?;
        plan.check_out("gb", gb.len(), plan.b_shape())?;
        let (la, lb) = (plan.a_vectors() * plan.d, plan.b_vectors() * plan.d);
        self.check_device("ga", ga)?;
        self.check_device("gb", gb)?;
        let s = &self.stream;
        let (pa, _a) = a.device_ptr(s);
        let (pb, _b) = b.device_ptr(s);
        let (pg, _g) = grad.device_ptr(s);
        let (pga, _ga) = ga.device_ptr_mut(s);
        let (pgb, _gb) = gb.device_ptr_mut(s);
        let (inv_a, inv_b) = self.inverse_norms::<T>(plan, pa, pb)?;
        let (pia, _ia) = inv_a.device_ptr(s);
        let (pib, _ib) = inv_b.device_ptr(s);
        let sides = [
            (Side::of_a(plan), la, pa, pb, pia, pib, pga),
            (Side::of_b(plan), lb, pb, pa, pib, pia, pgb),
        ];
        // f32 gradients of one split hold their own W; otherwise the sides share one f32
        // scratch for W's partials.
        let half = std::mem::size_of::<T>() != 4;
        let splits = sides
            .each_ref()
            .map(|(side, ..)| self.grad_splits(plan, side));
        let scratch_len = sides
            .iter()
            .zip(splits)
            .map(|((_, len, ..), sp)| if half || sp > 1 { sp * len } else { 0 })
            .max()
            .unwrap_or(0);
        let scratch: Option<CudaSlice<f32>> = if scratch_len > 0 {
            Some(self.alloc::<f32>(scratch_len, "the f32 partial gradients (W)")?)
        } else {
            None
        };
        let pw = scratch.as_ref().map(|w| w.device_ptr(s));
        for ((side, len, mine, other, inv_mine, inv_other, out), sp) in
            sides.into_iter().zip(splits)
        {
            let w = match &pw {
                Some((p, _)) if half || sp > 1 => *p,
                _ => out,
            };
            let ptr = Ptrs {
                grad: pg,
                mine,
                other,
                inv_mine,
                inv_other,
                w,
                out,
            };
            self.grad_side::<T>(plan, &side, ptr, (sp, len))?;
        }
        Ok(())
    }

    /// Validates a backward call's inputs.
    fn pair_grad_inputs<T: PairElement>(
        &self,
        plan: &PairPlan,
        a: &impl DevicePtr<T>,
        b: &impl DevicePtr<T>,
        grad: &impl DevicePtr<T>,
    ) -> Result<()> {
        self.pair_inputs(plan, a, b)?;
        plan.check_out("grad", grad.len(), &plan.matrix_shape())?;
        self.check_device("grad", grad)?;
        for count in [plan.n, plan.m] {
            if count > i32::MAX as usize {
                return Err(Error::PairTooLarge {
                    what: "vectors in a set (the gradient's products count them in 32 bits)",
                    count,
                });
            }
        }
        Ok(())
    }

    /// Into how many spans a side's product splits its sum ([`split_count`]).
    fn grad_splits(&self, plan: &PairPlan, side: &Side) -> usize {
        let (mine, count, _) = side.mine;
        let batches = if mine.batch == 0 { 1 } else { plan.batch };
        let blocks = tiles(plan.d) * tiles(count) * batches;
        split_count(blocks, side.other.1, batches * count * plan.d, self.sms)
    }

    /// One set's gradient: W by the product kernel (its sum cut into `splits` spans, the
    /// partials `stride` apart), then the projection, into `ptr.out`.
    fn grad_side<T: PairElement>(
        &self,
        plan: &PairPlan,
        side: &Side,
        ptr: Ptrs,
        (splits, stride): (usize, usize),
    ) -> Result<()> {
        let (mine, count, layout) = side.mine;
        let (other, other_count, other_layout) = side.other;
        let d = plan.d;
        if count == 0 || d == 0 {
            return Ok(());
        }
        let e = std::mem::size_of::<T>();
        let (n, m) = (plan.n, plan.m);
        // G as mine's vectors with the other's as components.
        let g_strides = match side.g_layout {
            Layout::Rows => SetStrides {
                batch: n * m,
                vec: m,
                comp: 1,
            },
            Layout::Cols => SetStrides {
                batch: n * m,
                vec: 1,
                comp: m,
            },
        };
        // The other set with its components as vectors: vector and component strides swap.
        let y_strides = SetStrides {
            batch: other.batch,
            vec: other.comp,
            comp: other.vec,
        };
        let y_layout = match other_layout {
            Layout::Rows => Layout::Cols,
            Layout::Cols => Layout::Rows,
        };
        let w_set = cosim_pair_set {
            count: count as i64,
            batch_stride: mine.batch as i64,
            vec_stride: mine.vec as i64,
            comp_stride: mine.comp as i64,
            cols: i32::from(layout == Layout::Cols),
            vec: 0,
        };
        let f = self
            .kernels
            .function(Family::PairBackward, &side.kernel(plan, T::NAME))?;
        let shared = mine.batch == 0;
        let own = if shared { 1 } else { plan.batch };
        // Spans of whole tiles (so that every span's loads stay aligned), and their count.
        let span = other_count.div_ceil(splits).next_multiple_of(TILE);
        let splits = other_count.div_ceil(span).max(1);
        let params =
            |batch0: usize, row0: usize, rows: usize, accumulate: bool| cosim_pair_grad_params {
                prod: cosim_pair_params {
                    a: set_params(&g_strides, count, side.g_layout, ptr.grad, e),
                    b: set_params(&y_strides, d, y_layout, ptr.other, e),
                    batch: 1,
                    d: other_count as i64,
                    k: 0,
                    row0: row0 as i64,
                    rows: rows as i64,
                    eps: plan.eps,
                },
                w: w_set,
                d: d as i64,
                inv_mine_batch: if shared { 0 } else { count as i64 },
                inv_other_batch: if other.batch == 0 {
                    0
                } else {
                    other_count as i64
                },
                batch0: batch0 as i64,
                splits: splits as i64,
                span: span as i64,
                split_stride: stride as i64,
                accumulate: i32::from(accumulate),
                _pad: 0,
            };
        // Launches over (batches, rows) within the grid's y and z limits; a shared set sums
        // its batches one launch after another.
        let batch_runs: Vec<(usize, usize)> = if shared {
            (0..plan.batch).map(|bb| (bb, 1)).collect()
        } else {
            let per = GRID_YZ / splits;
            (0..plan.batch)
                .step_by(per)
                .map(|b0| (b0, per.min(plan.batch - b0)))
                .collect()
        };
        let chunk = GRID_YZ * TILE;
        for &(batch0, batches) in &batch_runs {
            for row0 in (0..count).step_by(chunk) {
                let rows = chunk.min(count - row0);
                let q = params(batch0, row0, rows, shared && batch0 > 0);
                let grid = (
                    tiles(d) as u32,
                    tiles(rows) as u32,
                    (batches * splits) as u32,
                );
                // SAFETY: signature (cosim_pair_grad_params, const T* g, const T* y, const
                // float* inv_other, const float* inv_mine, float* w). The views describe G
                // (validated as [B, N, M]) and the other set (validated by the plan) within
                // their buffers, for batches [batch0, batch0 + batches) < B and reduced spans
                // [s·span, min((s+1)·span, count)); the inverse norms hold one float per
                // vector of each set's own batches; each of the `splits` partial Ws has mine's
                // layout and length, `stride` apart (the gradient itself for one f32 split,
                // or scratch of splits·stride floats), and the grid covers mine's vectors
                // [row0, row0 + rows) × its d components × batches × splits.
                unsafe {
                    self.stream
                        .launch_builder(&f)
                        .arg(&q)
                        .arg(&ptr.grad)
                        .arg(&ptr.other)
                        .arg(&ptr.inv_other)
                        .arg(&ptr.inv_mine)
                        .arg(&ptr.w)
                        .launch(cfg(grid))
                }?;
            }
        }
        let f = self.kernels.function(
            Family::PairBackward,
            &format!("cosim_pair_grad_project_{}", T::NAME),
        )?;
        let sp = set_params(&mine, count, layout, ptr.mine, e);
        let vectors = own * count;
        let threads = if layout == Layout::Rows {
            vectors * 32
        } else {
            vectors
        };
        let (d64, own64, sp64, st64) = (d as i64, own as i64, splits as i64, stride as i64);
        // SAFETY: signature (cosim_pair_set, int64 d, int64 batches, double eps, const T* x,
        // const float* inv, const float* w, int64 splits, int64 stride, T* out): reads and
        // writes the `own` batches of mine's layout, inside the set, the gradient and each of
        // the W partials (all that length, `stride` apart), and one inverse norm per vector.
        // W may be the gradient itself (one split); each element is read then written by the
        // one thread that owns its vector.
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(&sp)
                .arg(&d64)
                .arg(&own64)
                .arg(&plan.eps)
                .arg(&ptr.mine)
                .arg(&ptr.inv_mine)
                .arg(&ptr.w)
                .arg(&sp64)
                .arg(&st64)
                .arg(&ptr.out)
                .launch(cfg((grid_for(threads, self.sms), 1, 1)))
        }?;
        Ok(())
    }
}

/// Spans for a product of `blocks` tiles summing over `reduced` components into a W of `len`
/// elements, on `sms` SMs: enough for two blocks per SM when the tiles are fewer, each span
/// at least [`SPLIT_MIN`] components, the partials within [`SPLIT_SCRATCH_BYTES`].
fn split_count(blocks: usize, reduced: usize, len: usize, sms: usize) -> usize {
    let want = 2 * sms;
    if blocks >= want {
        return 1;
    }
    want.div_ceil(blocks.max(1))
        .min(reduced / SPLIT_MIN)
        .min(MAX_SPLITS)
        .min(SPLIT_SCRATCH_BYTES / 4 / len.max(1))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_sums_of_few_tiles_split_within_their_limits() {
        // Enough tiles, or a short sum: one span.
        assert_eq!(split_count(264, 1 << 20, 1000, 132), 1);
        assert_eq!(split_count(1, 4095, 1000, 132), 1);
        // 1024 queries × 768 (48 tiles) against a million keys: 264 / 48 → 6 spans.
        assert_eq!(split_count(48, 1 << 20, 1024 * 768, 132), 6);
        // One tile: bounded by the sum's length, then by the most spans.
        assert_eq!(split_count(1, 9000, 30, 132), 4);
        assert_eq!(split_count(1, 1 << 24, 30, 132), MAX_SPLITS);
        // Scratch: 256 MiB of partials at most.
        assert_eq!(split_count(1, 1 << 24, 16 << 20, 132), 4);
        assert_eq!(split_count(1, 1 << 24, 128 << 20, 132), 1);
    }
}
