//! Gradients of the along, per-channel and reweighting similarities on the CPU: one pass over
//! the outputs for their sums (dot and norms, recomputed as the forward does), then one pass
//! that writes both input gradients. Both passes go in parallel blocks of consecutive
//! outputs; along a strided reduced axis (dim=1 of NCHW) a block steps the axis outermost, so
//! that its outputs' elements are read side by side, as the forward reads them. A dense input
//! (no broadcast) gets each gradient element written once, in place; a broadcast one gets its
//! sums per thread in the accumulator type, added up after.

use crate::element::{Accum, Element};
use crate::plan::{Plan, Walk};
use rayon::prelude::*;

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

/// Consecutive outputs one task handles.
const BLOCK: usize = 64;
/// Most bytes of per-thread partial sums for a broadcast input's gradient; past it the
/// blocks are summed in order on one thread.
const PARTIALS: usize = 64 << 20;

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

/// dot, ‖x1‖², ‖x2‖² and `Σ_k w·x2` (with `w`, the reweighting's upstream gradient laid out
/// `[output, k]`) of every output, in blocks, then `f(output, sums)` for each.
fn sums_then<T: Element, R: Send>(
    plan: &Plan,
    x1: &[T],
    x2: &[T],
    w: Option<&[T]>,
    f: impl Fn(usize, [T::Acc; 4]) -> R + Sync,
) -> Vec<R> {
    let red = plan.reduce;
    let blocks = plan.out_len().div_ceil(BLOCK);
    let parts: Vec<Vec<R>> = (0..blocks)
        .into_par_iter()
        .map(|c| {
            let first = c * BLOCK;
            let offs = block_offsets(plan, first, BLOCK.min(plan.out_len() - first));
            let mut s = vec![[T::Acc::ZERO; 4]; offs.len()];
            visit(plan, &offs, |j, k, o1, o2| {
                let (a, b) = (
                    x1[o1 + k * red.stride1].to_acc(),
                    x2[o2 + k * red.stride2].to_acc(),
                );
                let t = &mut s[j];
                t[0] = t[0] + a * b;
                t[1] = t[1] + a * a;
                t[2] = t[2] + b * b;
                if let Some(w) = w {
                    t[3] = t[3] + w[(first + j) * red.len + k].to_acc() * b;
                }
            });
            s.into_iter()
                .enumerate()
                .map(|(j, t)| f(first + j, t))
                .collect()
        })
        .collect();
    parts.into_iter().flatten().collect()
}

/// The coefficients of every output, from the upstream gradient `g(o)` of output `o`.
pub(crate) fn coefs<T: Element>(
    plan: &Plan,
    x1: &[T],
    x2: &[T],
    g: impl Fn(usize) -> T::Acc + Sync,
) -> Vec<Coef<T::Acc>> {
    let eps = T::Acc::from_f64(plan.eps);
    sums_then(plan, x1, x2, None, |o, [dot, n1, n2, _]| {
        coef(dot, n1, n2, eps, g(o))
    })
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

/// Which input a gradient is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Input {
    First,
    Second,
}

/// A pointer that parallel tasks write through at disjoint indices.
#[derive(Clone, Copy)]
struct Disjoint<T>(*mut T);
// SAFETY: only used by `gradient` for dense inputs, where every index is written by exactly
// one task (see there); the pointee type is plain data.
unsafe impl<T: Send> Send for Disjoint<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Disjoint<T> {}

impl<T> Disjoint<T> {
    /// Writes element `i`.
    ///
    /// # Safety
    /// `i` is inside the buffer, which outlives the call, and no other thread accesses
    /// element `i` meanwhile.
    unsafe fn write(self, i: usize, v: T) {
        // SAFETY: as the caller promises.
        unsafe { *self.0.add(i) = v };
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
        let out = Disjoint(g.as_mut_ptr());
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

/// Both input gradients of a similarity (no extra terms).
pub(crate) fn both<T: Element>(
    plan: &Plan,
    x1: &[T],
    x2: &[T],
    coefs: &[Coef<T::Acc>],
) -> (Vec<T>, Vec<T>) {
    let red = plan.reduce;
    let at1 = |o1: usize, k: usize| x1[o1 + k * red.stride1].to_acc();
    let at2 = |o2: usize, k: usize| x2[o2 + k * red.stride2].to_acc();
    let g1 = gradient(plan, Input::First, coefs, |_, k, o1, o2, c| {
        c.a * at2(o2, k) + c.b1 * at1(o1, k)
    });
    let g2 = gradient(plan, Input::Second, coefs, |_, k, o1, o2, c| {
        c.a * at1(o1, k) + c.b2 * at2(o2, k)
    });
    (g1, g2)
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
    sums_then(plan, x, y, Some(grad_weighted), |o, [dot, n1, n2, gy]| {
        let sim = T::from_acc(crate::cosine::finish(dot, n1, n2, eps)).to_acc();
        let g = gy + grad_similarity.map_or(T::Acc::ZERO, |gs| gs[o].to_acc());
        (coef(dot, n1, n2, eps, g), sim)
    })
    .into_iter()
    .unzip()
}
