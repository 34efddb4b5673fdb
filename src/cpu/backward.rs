//! Gradients of the along, per-channel and reweighting similarities on the CPU, in two passes
//! that read the inputs as the forward does: one for each output's sums (dot and norms,
//! recomputed), one that writes both input gradients from the per-output coefficients.
//!
//! Both passes go in parallel units of work with vectorisable inner loops, compiled per
//! instruction set (`simd_dispatch`). Along a strided reduced axis (dim=1 of NCHW) a unit is
//! a block of up to [`NB`] consecutive outputs of the innermost kept axis, stepped along the
//! reduced axis outermost: every step reads (and, in the second pass, writes) one contiguous
//! piece per input, and the block's sums and coefficients stay in L1. Along contiguous rows
//! (reduced axis innermost) a unit is a group of rows, or a segment of one long row, walked
//! in chunks of [`CHUNK`]. A dense input (no broadcast) gets each gradient element written
//! once, in place; a broadcast one gets its sums per thread in the accumulator type, added up
//! after (an input constant along a block, e.g. a `[1, C, 1, 1]` prototype, adds one sum per
//! step).

use super::sums::{simd_dispatch, CHUNK};
use crate::element::{Accum, Element};
use crate::plan::{offsets, Axis, Plan, Walk};
use rayon::prelude::*;

mod units;

use units::*;

/// What one output contributes to the gradients of its vector pair `(x1, x2)`:
/// `g1 += a·x2 + b1·x1` and `g2 += a·x1 + b2·x2`, from the upstream gradient `g` of
/// `cos = dot / (c1·c2)`, `ci = max(‖xi‖, eps)`:
/// `a = g / (c1·c2)`, `bi = −g·cos / ‖xi‖²` where `‖xi‖ > eps` and 0 where the norm is
/// clamped (a constant there, as PyTorch's autograd takes it). Where `c1·c2 = 0` (a zero
/// vector with eps = 0, whose forward is 0 by cosim's rule) all three are 0. The forward's
/// clamp to [−1, 1] only removes rounding overshoot: its derivative is taken as 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Coef<A> {
    pub a: A,
    pub b1: A,
    pub b2: A,
}

/// Consecutive outputs one task of the generic [`gradient`] handles.
const BLOCK: usize = 64;
/// Most bytes of per-thread partial sums for a broadcast input's gradient; past it the
/// units are summed in order on one thread.
const PARTIALS: usize = 64 << 20;
/// Outputs of one along-axis unit: its sums or coefficients and the pieces it reads per step
/// (4 KiB each in f32) stay in L1, while each step still reads long contiguous pieces.
const NB: usize = 2048;
/// Scratch of one task, in accumulator elements: sixteen arrays of a unit's outputs (along) or
/// of a chunk (rows).
const SCRATCH: usize = 16 * if NB > CHUNK { NB } else { CHUNK };
/// Longest piece of a row one unit handles: longer rows are split across units, so that a
/// few long rows still use every thread.
const SEG: usize = 1 << 16;
/// Elements of work a unit should have at least: shorter units are grouped.
const UNIT_WORK: usize = 1 << 14;
/// Independent partial sums along a row (a vector register of f32 with AVX-512).
const LANES: usize = 16;

/// How a plan's outputs split into units of work.
#[derive(Clone, Copy)]
enum Layout<'p> {
    /// A strided reduced axis: for each index of the `rest` axes, `blocks` units of up to
    /// [`NB`] consecutive outputs along the innermost kept axis.
    Along {
        rest: &'p [Axis],
        inner: Axis,
        blocks: usize,
    },
    /// Contiguous (or constant) rows: `per` whole rows a unit when `segs` is 1, otherwise
    /// each row split into `segs` units of up to [`SEG`] steps.
    Rows { per: usize, segs: usize },
}

/// One along-axis unit: its first output, output count and the two inputs' sides.
type AlongUnit<'a, T> = (usize, usize, Side<'a, T>, Side<'a, T>);

impl<'p> Layout<'p> {
    fn of(plan: &'p Plan) -> Self {
        let red = plan.reduce;
        if red.stride1 <= 1 && red.stride2 <= 1 {
            let segs = red.len.div_ceil(SEG).max(1);
            let per = if segs > 1 {
                1
            } else {
                (UNIT_WORK / red.len.max(1)).max(1)
            };
            Layout::Rows { per, segs }
        } else {
            let (rest, inner) = plan.split_inner();
            Layout::Along {
                rest,
                inner,
                blocks: inner.len.div_ceil(NB),
            }
        }
    }

    /// Number of units, and how many consecutive ones a task takes at least.
    fn units(&self, plan: &Plan) -> (usize, usize) {
        let out = plan.out_len();
        match *self {
            Layout::Along { inner, blocks, .. } => {
                let work = NB.min(inner.len) * plan.reduce.len;
                (
                    out / inner.len.max(1) * blocks,
                    (UNIT_WORK / work.max(1)).max(1),
                )
            }
            Layout::Rows { segs: 1, per } => (out.div_ceil(per), 1),
            Layout::Rows { segs, .. } => (out * segs, 1),
        }
    }

    /// Along-axis unit `u` of a plan (reduced axis `red`) over inputs `x1`, `x2`.
    #[inline]
    fn along<'a, T: Element>(
        rest: &[Axis],
        inner: Axis,
        blocks: usize,
        red: Axis,
        u: usize,
        (x1, x2): (&'a [T], &'a [T]),
    ) -> AlongUnit<'a, T> {
        let (r, i0) = (u / blocks, u % blocks * NB);
        let (o1, o2) = offsets(rest, r);
        let side = |data, base, inner_stride, reduce_stride| Side {
            data,
            base,
            inner_stride,
            reduce_stride,
        };
        (
            r * inner.len + i0,
            NB.min(inner.len - i0),
            side(x1, o1 + i0 * inner.stride1, inner.stride1, red.stride1),
            side(x2, o2 + i0 * inner.stride2, inner.stride2, red.stride2),
        )
    }
}

/// Steps `.0..ks.1` of segment `g` of a row of `len`.
fn segment(g: usize, len: usize) -> (usize, usize) {
    (g * SEG, ((g + 1) * SEG).min(len))
}

/// dot, ‖x1‖², ‖x2‖² and `Σ_k w·x2` (with `w`, the reweighting's upstream gradient laid out
/// `[output, k]`) of every output.
fn sums<T: Element>(plan: &Plan, x1: &[T], x2: &[T], w: Option<&[T]>) -> Vec<[T::Acc; 4]> {
    let z = T::Acc::ZERO;
    let out_len = plan.out_len();
    let mut sums = vec![[z; 4]; out_len];
    let red = plan.reduce;
    if out_len == 0 || red.len == 0 {
        return sums;
    }
    let init = || vec![z; SCRATCH];
    match Layout::of(plan) {
        Layout::Along {
            rest,
            inner,
            blocks,
        } => {
            // Each run of inner.len outputs (one index of the rest axes) in `blocks` pieces,
            // numbered as `Layout::along` numbers its units.
            sums.par_chunks_mut(inner.len)
                .enumerate()
                .flat_map(|(r, run)| {
                    run.par_chunks_mut(NB)
                        .enumerate()
                        .map(move |(b, s)| (r * blocks + b, s))
                })
                .for_each_init(init, |scr, (u, s)| {
                    let (first, n, s1, s2) = Layout::along(rest, inner, blocks, red, u, (x1, x2));
                    debug_assert_eq!(n, s.len());
                    let w = w.map(|data| Side {
                        data,
                        base: first * red.len,
                        inner_stride: red.len,
                        reduce_stride: 1,
                    });
                    along_sums(s1, s2, w, red.len, scr, s);
                });
        }
        Layout::Rows { per, segs: 1 } => {
            sums.par_chunks_mut(per)
                .enumerate()
                .for_each_init(init, |scr, (c, s)| {
                    let ks = (0, red.len);
                    row_sums(x1, x2, w, &plan.outer, red, c * per, ks, scr, s)
                });
        }
        Layout::Rows { segs, .. } => {
            let mut parts = vec![[z; 4]; out_len * segs];
            parts
                .par_chunks_mut(1)
                .enumerate()
                .for_each_init(init, |scr, (u, s)| {
                    let (row, ks) = (u / segs, segment(u % segs, red.len));
                    row_sums(x1, x2, w, &plan.outer, red, row, ks, scr, s)
                });
            for (s, p) in sums.iter_mut().zip(parts.chunks(segs)) {
                for q in p {
                    for (a, &b) in s.iter_mut().zip(q) {
                        *a = *a + b;
                    }
                }
            }
        }
    }
    sums
}

/// One task's scratch and partial sums of the broadcast inputs' gradients (empty for dense).
type State<A> = (Vec<A>, Vec<A>, Vec<A>);

/// Both input gradients, shaped like the inputs, from every output's coefficients: element
/// `(o, k)` of `x1` receives `a·x2 + b1·x1`, of `x2` `a·x1 + b2·x2`, summed over the outputs
/// that read it.
fn gradients<T: Element>(
    plan: &Plan,
    x1: &[T],
    x2: &[T],
    coefs: &[Coef<T::Acc>],
) -> (Vec<T>, Vec<T>) {
    let (len1, len2, red) = (plan.len1, plan.len2, plan.reduce);
    if coefs.is_empty() || red.len == 0 || coefs.len() != plan.out_len() {
        return (vec![T::default(); len1], vec![T::default(); len2]);
    }
    let z = T::Acc::ZERO;
    let (dense1, dense2) = (plan.reads_each_once(len1), plan.reads_each_once(len2));
    let mut g1 = vec![T::default(); if dense1 { len1 } else { 0 }];
    let mut g2 = vec![T::default(); if dense2 { len2 } else { 0 }];
    let d1 = dense1.then(|| Disjoint::new(&mut g1));
    let d2 = dense2.then(|| Disjoint::new(&mut g2));
    let (n1, n2) = (if dense1 { 0 } else { len1 }, if dense2 { 0 } else { len2 });
    let lay = Layout::of(plan);
    let (units, mut min) = lay.units(plan);
    let out_len = coefs.len();
    let run = |st: &mut State<T::Acc>, u: usize| {
        let (scr, p1, p2) = st;
        let mut k1 = d1.map_or(Sink::Partial(&mut p1[..]), Sink::Dense);
        let mut k2 = d2.map_or(Sink::Partial(&mut p2[..]), Sink::Dense);
        match lay {
            Layout::Along {
                rest,
                inner,
                blocks,
            } => {
                let (first, n, s1, s2) = Layout::along(rest, inner, blocks, red, u, (x1, x2));
                let c = &coefs[first..first + n];
                along_grads(s1, s2, red.len, c, scr, &mut k1, &mut k2);
            }
            Layout::Rows { per, segs: 1 } => {
                let first = u * per;
                let c = &coefs[first..(first + per).min(out_len)];
                let ks = (0, red.len);
                row_grads(
                    x1,
                    x2,
                    &plan.outer,
                    red,
                    first,
                    ks,
                    c,
                    scr,
                    &mut k1,
                    &mut k2,
                );
            }
            Layout::Rows { segs, .. } => {
                let (row, ks) = (u / segs, segment(u % segs, red.len));
                let c = &coefs[row..row + 1];
                row_grads(x1, x2, &plan.outer, red, row, ks, c, scr, &mut k1, &mut k2);
            }
        }
    };
    let init = || (vec![z; SCRATCH], vec![z; n1], vec![z; n2]);
    let threads = rayon::current_num_threads();
    let (p1, p2) = if n1 + n2 == 0 {
        (0..units)
            .into_par_iter()
            .with_min_len(min)
            .for_each_init(init, run);
        (Vec::new(), Vec::new())
    } else if (n1 + n2) * std::mem::size_of::<T::Acc>() * threads <= PARTIALS {
        // Few enough tasks that their partial sums cost little to clear and add up.
        min = min.max(units.div_ceil(4 * threads));
        let add = |x: &mut Vec<T::Acc>, y: Vec<T::Acc>| {
            for (a, b) in x.iter_mut().zip(y) {
                *a = *a + b;
            }
        };
        let (_, p1, p2) = (0..units)
            .into_par_iter()
            .with_min_len(min)
            .fold(init, |mut st, u| {
                run(&mut st, u);
                st
            })
            .reduce(
                || (Vec::new(), vec![z; n1], vec![z; n2]),
                |mut x, y| {
                    add(&mut x.1, y.1);
                    add(&mut x.2, y.2);
                    x
                },
            );
        (p1, p2)
    } else {
        let mut st = init();
        for u in 0..units {
            run(&mut st, u);
        }
        (st.1, st.2)
    };
    let finish = |dense: bool, g: Vec<T>, p: Vec<T::Acc>| {
        if dense {
            g
        } else {
            p.into_iter().map(T::from_acc).collect()
        }
    };
    (finish(dense1, g1, p1), finish(dense2, g2, p2))
}

/// The coefficients of every output, from the upstream gradient `g(o)` of output `o`.
pub(crate) fn coefs<T: Element>(
    plan: &Plan,
    x1: &[T],
    x2: &[T],
    g: impl Fn(usize) -> T::Acc + Sync,
) -> Vec<Coef<T::Acc>> {
    let eps = T::Acc::from_f64(plan.eps);
    sums(plan, x1, x2, None)
        .into_par_iter()
        .enumerate()
        .map(|(o, [dot, n1, n2, _])| coef(dot, n1, n2, eps, g(o)))
        .collect()
}

/// [`Coef`] of one output from its sums (`n1`, `n2`: squared norms).
#[inline]
pub(crate) fn coef<A: Accum>(dot: A, n1: A, n2: A, eps: A, g: A) -> Coef<A> {
    let (r1, r2) = (n1.sqrt(), n2.sqrt());
    let den = r1.max(eps) * r2.max(eps);
    if den == A::ZERO {
        return Coef {
            a: A::ZERO,
            b1: A::ZERO,
            b2: A::ZERO,
        };
    }
    let cos = dot / den;
    #[allow(clippy::eq_op)]
    if cos != cos {
        // NaN in the sums (a NaN element: `max` would have hidden it in the norm) makes every
        // gradient of the pair NaN, as the forward is.
        return Coef {
            a: cos,
            b1: cos,
            b2: cos,
        };
    }
    let a = g / den;
    let b = |r: A, nsq: A| {
        if r > eps {
            A::ZERO - a * den * cos / nsq
        } else {
            A::ZERO
        }
    };
    Coef {
        a,
        b1: b(r1, n1),
        b2: b(r2, n2),
    }
}

/// Both input gradients of a similarity (no extra terms).
pub(crate) fn both<T: Element>(
    plan: &Plan,
    x1: &[T],
    x2: &[T],
    coefs: &[Coef<T::Acc>],
) -> (Vec<T>, Vec<T>) {
    gradients(plan, x1, x2, coefs)
}

/// The reweighting's coefficients: `weighted = y · sim` (per channel, `sim` rounded to `T` as
/// the forward uses it) sends `Σ_k gw·y` (plus the similarities' own upstream gradient) into
/// the similarity; returns the coefficients and the similarities.
pub(crate) fn reweight_coefs<T: Element>(
    plan: &Plan,
    x: &[T],
    y: &[T],
    grad_weighted: &[T],
    grad_similarity: Option<&[T]>,
) -> (Vec<Coef<T::Acc>>, Vec<T::Acc>) {
    let eps = T::Acc::from_f64(plan.eps);
    sums(plan, x, y, Some(grad_weighted))
        .into_par_iter()
        .enumerate()
        .map(|(o, [dot, n1, n2, gy])| {
            let sim = T::from_acc(crate::cosine::finish(dot, n1, n2, eps)).to_acc();
            let g = gy + grad_similarity.map_or(T::Acc::ZERO, |gs| gs[o].to_acc());
            (coef(dot, n1, n2, eps, g), sim)
        })
        .unzip()
}

/// Which input a gradient is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Input {
    First,
    Second,
}

/// The input offsets of outputs `first..first + n`.
fn block_offsets(plan: &Plan, first: usize, n: usize) -> Vec<(usize, usize)> {
    let mut w = Walk::new(&plan.outer, first);
    (0..n)
        .map(|_| {
            let o = w.offsets();
            w.advance();
            o
        })
        .collect()
}

/// Calls `f(j, k, o1, o2)` for every output `j` of a block (offsets `offs`) and step `k` of
/// the reduced axis: `k` outermost along a strided axis (the block's elements side by side),
/// innermost along contiguous rows.
#[inline(always)]
fn visit(plan: &Plan, offs: &[(usize, usize)], mut f: impl FnMut(usize, usize, usize, usize)) {
    let red = plan.reduce;
    if red.stride1 <= 1 && red.stride2 <= 1 {
        for (j, &(o1, o2)) in offs.iter().enumerate() {
            for k in 0..red.len {
                f(j, k, o1, o2);
            }
        }
    } else {
        for k in 0..red.len {
            for (j, &(o1, o2)) in offs.iter().enumerate() {
                f(j, k, o1, o2);
            }
        }
    }
}

/// The gradient of one input, shaped like it, in `T`: element `off(o) + k·stride` of the
/// input (its element `k` of output `o`'s vector) receives `term(o, k, off1, off2, coef)`,
/// summed over every output that reads it.
pub(crate) fn gradient<T: Element>(
    plan: &Plan,
    which: Input,
    coefs: &[Coef<T::Acc>],
    term: impl Fn(usize, usize, usize, usize, &Coef<T::Acc>) -> T::Acc + Sync,
) -> Vec<T> {
    let red = plan.reduce;
    let (len, stride) = match which {
        Input::First => (plan.len1, red.stride1),
        Input::Second => (plan.len2, red.stride2),
    };
    let own = move |o1: usize, o2: usize| match which {
        Input::First => o1,
        Input::Second => o2,
    };
    let blocks = coefs.len().div_ceil(BLOCK);
    // One block's terms, each handed to `put(element, value)` (generic, so inlined).
    fn block<A: Accum>(
        plan: &Plan,
        coefs: &[Coef<A>],
        c: usize,
        own: impl Fn(usize, usize) -> usize,
        stride: usize,
        term: &impl Fn(usize, usize, usize, usize, &Coef<A>) -> A,
        mut put: impl FnMut(usize, A),
    ) {
        let first = c * BLOCK;
        let offs = block_offsets(plan, first, BLOCK.min(coefs.len() - first));
        visit(plan, &offs, |j, k, o1, o2| {
            let o = first + j;
            put(own(o1, o2) + k * stride, term(o, k, o1, o2, &coefs[o]));
        });
    }
    if plan.reads_each_once(len) {
        // Dense: the plan's map (output, k) → element is one to one (no broadcast, so its
        // strides are a permutation of the input's own), so the blocks write disjoint
        // elements, and every element is written.
        let mut g = vec![T::default(); len];
        let out = Disjoint::new(&mut g);
        (0..blocks).into_par_iter().for_each(|c| {
            block(plan, coefs, c, own, stride, &term, |i, v| {
                debug_assert!(i < len);
                // SAFETY: i < len (an element of the input, the plan having been checked
                // against its length), and no other task writes index i (see above); `g`
                // outlives the parallel loop and is not read during it.
                unsafe { out.write(i, T::from_acc(v)) };
            });
        });
        return g;
    }
    let threads = rayon::current_num_threads();
    let sums = if len * std::mem::size_of::<T::Acc>() * threads <= PARTIALS {
        (0..blocks)
            .into_par_iter()
            .fold(
                || vec![T::Acc::ZERO; len],
                |mut acc, c| {
                    block(plan, coefs, c, own, stride, &term, |i, v| {
                        acc[i] = acc[i] + v
                    });
                    acc
                },
            )
            .reduce(
                || vec![T::Acc::ZERO; len],
                |mut x, y| {
                    for (a, b) in x.iter_mut().zip(y) {
                        *a = *a + b;
                    }
                    x
                },
            )
    } else {
        let mut acc = vec![T::Acc::ZERO; len];
        for c in 0..blocks {
            block(plan, coefs, c, own, stride, &term, |i, v| {
                acc[i] = acc[i] + v
            });
        }
        acc
    };
    sums.into_iter().map(T::from_acc).collect()
}
