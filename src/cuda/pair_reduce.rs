//! The pairwise reductions on the GPU: argmax, greedy set scores (row and column maxima of
//! the tiles), and the means through the mean identity, with the semantics of
//! [`crate::cpu`]'s.

use super::pairwise::{
    cfg, layouts, own_batches, set_params, tiles, Inputs, PairElement, GRID_YZ, TILE,
};
use super::params::cosim_pair_params;
use super::{Cuda, Family};
use crate::error::Result;
use crate::pairwise::{Layout, PairPlan, SetScores, SetStrides, TopK};
use crate::Similarity;
use cudarc::driver::{CudaSlice, DevicePtr, PushKernelArg};

impl Cuda {
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
