//! Gradients of the along, per-channel and reweighting similarities on the CPU: one pass over
//! the outputs for their sums (dot and norms, recomputed as the forward does), then one pass
//! that writes both input gradients. Inputs read once per pass; outputs written in parallel
//! where no input is broadcast (each gradient element then belongs to one output), summed
//! over the broadcast dims in the accumulator type where one is.

use crate::element::{Accum, Element};
use crate::plan::{offsets, Plan};
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

/// The coefficients of every output, from the upstream gradient `g(o)` of output `o`.
pub(crate) fn coefs<T: Element>(
    plan: &Plan,
    x1: &[T],
    x2: &[T],
    g: impl Fn(usize) -> T::Acc + Sync,
) -> Vec<Coef<T::Acc>> {
    let eps = T::Acc::from_f64(plan.eps);
    let red = plan.reduce;
    (0..plan.out_len())
        .into_par_iter()
        .with_min_len(64)
        .map(|o| {
            let (o1, o2) = offsets(&plan.outer, o);
            let (mut dot, mut n1, mut n2) = (T::Acc::ZERO, T::Acc::ZERO, T::Acc::ZERO);
            for k in 0..red.len {
                let (a, b) = (
                    x1[o1 + k * red.stride1].to_acc(),
                    x2[o2 + k * red.stride2].to_acc(),
                );
                dot = dot + a * b;
                n1 = n1 + a * a;
                n2 = n2 + b * b;
            }
            coef(dot, n1, n2, eps, g(o))
        })
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

/// Which input a gradient is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Input {
    First,
    Second,
}

/// The gradient of one input, shaped like it, in `T`: element `off(o) + k·stride` of the
/// input (its element `k` of output `o`'s vector) receives `term(o, k, off1, off2, coef)`,
/// summed over every output that reads it.
///
/// A dense input (no broadcast: each element read by exactly one output) gets its values
/// computed in parallel, one output's vector per task, then placed (in place when the
/// vectors are already in the input's order, as for contiguous rows). A broadcast input's
/// sums are accumulated in the accumulator type, in output order.
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
    let own = |(o1, o2): (usize, usize)| match which {
        Input::First => o1,
        Input::Second => o2,
    };
    if red.len > 0 && len == coefs.len() * red.len {
        let mut vals = vec![T::default(); len];
        vals.par_chunks_mut(red.len)
            .zip(coefs.par_iter())
            .enumerate()
            .with_min_len(16)
            .for_each(|(o, (v, c))| {
                let (o1, o2) = offsets(&plan.outer, o);
                for (k, v) in v.iter_mut().enumerate() {
                    *v = T::from_acc(term(o, k, o1, o2, c));
                }
            });
        let in_order = (stride == 1 || red.len == 1)
            && (0..coefs.len()).all(|o| own(offsets(&plan.outer, o)) == o * red.len);
        if in_order {
            return vals;
        }
        let mut g = vec![T::default(); len];
        for (o, v) in vals.chunks(red.len).enumerate() {
            let base = own(offsets(&plan.outer, o));
            for (k, &x) in v.iter().enumerate() {
                g[base + k * stride] = x;
            }
        }
        return g;
    }
    let mut sums = vec![T::Acc::ZERO; len];
    for (o, c) in coefs.iter().enumerate() {
        let (o1, o2) = offsets(&plan.outer, o);
        let base = own((o1, o2));
        for k in 0..red.len {
            let j = base + k * stride;
            sums[j] = sums[j] + term(o, k, o1, o2, c);
        }
    }
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
    let red = plan.reduce;
    (0..plan.out_len())
        .into_par_iter()
        .with_min_len(16)
        .map(|o| {
            let (o1, o2) = offsets(&plan.outer, o);
            let (mut dot, mut n1, mut n2, mut gy) =
                (T::Acc::ZERO, T::Acc::ZERO, T::Acc::ZERO, T::Acc::ZERO);
            for k in 0..red.len {
                let (a, b) = (
                    x[o1 + k * red.stride1].to_acc(),
                    y[o2 + k * red.stride2].to_acc(),
                );
                dot = dot + a * b;
                n1 = n1 + a * a;
                n2 = n2 + b * b;
                gy = gy + grad_weighted[o * red.len + k].to_acc() * b;
            }
            let sim = T::from_acc(crate::cosine::finish(dot, n1, n2, eps)).to_acc();
            let g = gy + grad_similarity.map_or(T::Acc::ZERO, |gs| gs[o].to_acc());
            (coef(dot, n1, n2, eps, g), sim)
        })
        .unzip()
}
