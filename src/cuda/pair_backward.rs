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
//! computed in place.

use super::kernels::Family;
use super::launch::grid_for;
use super::pairwise::{cfg, set_params, tiles, PairElement, GRID_YZ, TILE};
use super::params::{cosim_pair_grad_params, cosim_pair_params, cosim_pair_set};
use super::Cuda;
use crate::error::{Error, Result};
use crate::pairwise::{Layout, PairPlan, SetStrides};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, PushKernelArg};

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
    /// the plan's precision.
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
        // f32 gradients hold their own W; the half types share one f32 W.
        let half = std::mem::size_of::<T>() != 4;
        let scratch: Option<CudaSlice<f32>> = if half {
            Some(self.alloc::<f32>(la.max(lb), "the f32 partial gradient (W)")?)
        } else {
            None
        };
        let pw = scratch.as_ref().map(|w| w.device_ptr(s));
        for (side, mine, other, inv_mine, inv_other, out) in [
            (Side::of_a(plan), pa, pb, pia, pib, pga),
            (Side::of_b(plan), pb, pa, pib, pia, pgb),
        ] {
            let w = pw.as_ref().map_or(out, |(p, _)| *p);
            let ptr = Ptrs {
                grad: pg,
                mine,
                other,
                inv_mine,
                inv_other,
                w,
                out,
            };
            self.grad_side::<T>(plan, &side, ptr)?;
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

    /// One set's gradient: W by the product kernel, then the projection, into `ptr.out`.
    fn grad_side<T: PairElement>(&self, plan: &PairPlan, side: &Side, ptr: Ptrs) -> Result<()> {
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
                accumulate: i32::from(accumulate),
                _pad: 0,
            };
        // Launches over (batches, rows) within the grid's y and z limits; a shared set sums
        // its batches one launch after another.
        let batch_runs: Vec<(usize, usize)> = if shared {
            (0..plan.batch).map(|bb| (bb, 1)).collect()
        } else {
            (0..plan.batch)
                .step_by(GRID_YZ)
                .map(|b0| (b0, GRID_YZ.min(plan.batch - b0)))
                .collect()
        };
        let chunk = GRID_YZ * TILE;
        for &(batch0, batches) in &batch_runs {
            for row0 in (0..count).step_by(chunk) {
                let rows = chunk.min(count - row0);
                let q = params(batch0, row0, rows, shared && batch0 > 0);
                let grid = (tiles(d) as u32, tiles(rows) as u32, batches as u32);
                // SAFETY: signature (cosim_pair_grad_params, const T* g, const T* y, const
                // float* inv_other, const float* inv_mine, float* w). The views describe G
                // (validated as [B, N, M]) and the other set (validated by the plan) within
                // their buffers, for batches [batch0, batch0 + batches) < B; the inverse norms
                // hold one float per vector of each set's own batches; W has mine's layout
                // and length (the gradient itself, or scratch of at least that length), and
                // the grid covers mine's vectors [row0, row0 + rows) × its d components.
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
        let (d64, own64) = (d as i64, own as i64);
        // SAFETY: signature (cosim_pair_set, int64 d, int64 batches, double eps, const T* x,
        // const float* inv, const float* w, T* out): reads and writes the `own` batches of
        // mine's layout, inside the set, W and the gradient (all that length), and one inverse
        // norm per vector. W may be the gradient itself; each element is read then written by
        // the one thread that owns its vector.
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
                .arg(&ptr.out)
                .launch(cfg((grid_for(threads, self.sms), 1, 1)))
        }?;
        Ok(())
    }
}
