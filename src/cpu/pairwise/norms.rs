//! The O(N·D) passes over one set: inverse norms, and the matrix-vector products behind the
//! mean identities. Each reads the set once, in its own layout, in parallel.

use super::set::Set;
use crate::cpu::sums::{as_acc, simd_dispatch, CHUNK};
use crate::element::{Accum, Element};
use crate::pairwise::{inv_norm, Layout};
use rayon::prelude::*;

/// Vectors one task handles; for column sets also the width of the running sums, which
/// stay in L1 (4 KiB of f32) while each component row streams past.
const VEC_BLOCK: usize = 1024;
/// Independent partial sums of the dot-product loops: four AVX-512 registers of f32.
const LANES: usize = 64;

/// `1 / max(‖v‖, eps)` of every vector of every batch the set owns, `[own_batches, count]`
/// ([`crate::pairwise::inv_norm`], squared norms summed in the accumulator type).
pub fn inv_norms<T: Element>(set: &Set<'_, T>, eps: f64) -> Vec<T::Acc> {
    let mut out = vec![T::Acc::ZERO; set.own_batches * set.count];
    let inv = |s: T::Acc| T::Acc::from_f64(inv_norm(s.to_f64(), eps));
    out.par_chunks_mut(set.count)
        .enumerate()
        .for_each(|(own, ob)| {
            let xs = set.batch(own);
            ob.par_chunks_mut(VEC_BLOCK)
                .enumerate()
                .for_each(|(blk, o)| {
                    let i0 = blk * VEC_BLOCK;
                    match set.layout {
                        Layout::Rows => {
                            for (i, o) in o.iter_mut().enumerate() {
                                *o = inv(sumsq(set.vector(xs, i0 + i)));
                            }
                        }
                        Layout::Cols => {
                            o.fill(T::Acc::ZERO);
                            for k in 0..set.d {
                                let row = set.component(xs, k);
                                add_squares(&row[i0..i0 + o.len()], o);
                            }
                            for o in o.iter_mut() {
                                *o = inv(*o);
                            }
                        }
                    }
                });
        });
    out
}

/// `y[i] = Σ_k x_i[k] · v[k]` for every vector `x_i` of batch `own` of the set.
pub fn matvec<T: Element>(set: &Set<'_, T>, own: usize, v: &[T::Acc], y: &mut [T::Acc]) {
    let xs = set.batch(own);
    y.par_chunks_mut(VEC_BLOCK)
        .enumerate()
        .for_each(|(blk, o)| {
            let i0 = blk * VEC_BLOCK;
            match set.layout {
                Layout::Rows => {
                    for (i, o) in o.iter_mut().enumerate() {
                        *o = dot(set.vector(xs, i0 + i), v);
                    }
                }
                Layout::Cols => {
                    o.fill(T::Acc::ZERO);
                    for (k, &vk) in v.iter().enumerate().take(set.d) {
                        let row = set.component(xs, k);
                        axpy(&row[i0..i0 + o.len()], vk, o);
                    }
                }
            }
        });
}

/// `z[k] = Σ_i w[i] · x_i[k]` over the vectors of batch `own` of the set (`z` has `d`
/// values, `w` one per vector).
pub fn weighted_sum<T: Element>(set: &Set<'_, T>, own: usize, w: &[T::Acc], z: &mut [T::Acc]) {
    let xs = set.batch(own);
    match set.layout {
        Layout::Rows => {
            // Partial sums per block of vectors, added up at the end (blocked summation).
            let d = set.d;
            let total = w
                .par_chunks(VEC_BLOCK)
                .enumerate()
                .map(|(blk, wb)| {
                    let mut part = vec![T::Acc::ZERO; d];
                    for (i, &wi) in wb.iter().enumerate() {
                        axpy(set.vector(xs, blk * VEC_BLOCK + i), wi, &mut part);
                    }
                    part
                })
                .reduce(
                    || vec![T::Acc::ZERO; d],
                    |mut x, y| {
                        for (x, y) in x.iter_mut().zip(y) {
                            *x = *x + y;
                        }
                        x
                    },
                );
            z.copy_from_slice(&total);
        }
        Layout::Cols => {
            z.par_iter_mut()
                .enumerate()
                .for_each(|(k, zk)| *zk = dot(set.component(xs, k), w));
        }
    }
}

/// Pairwise sum of fixed lanes.
#[inline(always)]
fn tree<A: Accum>(mut v: [A; LANES]) -> A {
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for l in 0..n {
            v[l] = v[l] + v[l + n];
        }
    }
    v[0]
}

simd_dispatch!(sumsq<T>(x: &[T]) -> T::Acc {
    let mut acc = [T::Acc::ZERO; LANES];
    let mut buf = [T::Acc::ZERO; CHUNK];
    for c in x.chunks(CHUNK) {
        let c = as_acc(c, &mut buf);
        let mut it = c.chunks_exact(LANES);
        for xs in &mut it {
            for (a, &x) in acc.iter_mut().zip(xs) {
                *a = *a + x * x;
            }
        }
        for (a, &x) in acc.iter_mut().zip(it.remainder()) {
            *a = *a + x * x;
        }
    }
    tree(acc)
});

simd_dispatch!(dot<T>(x: &[T], v: &[T::Acc]) -> T::Acc {
    let mut acc = [T::Acc::ZERO; LANES];
    let mut buf = [T::Acc::ZERO; CHUNK];
    for (c, vc) in x.chunks(CHUNK).zip(v.chunks(CHUNK)) {
        let c = as_acc(c, &mut buf);
        let mut it = c.chunks_exact(LANES);
        let mut iv = vc.chunks_exact(LANES);
        for (xs, vs) in (&mut it).zip(&mut iv) {
            for ((a, &x), &y) in acc.iter_mut().zip(xs).zip(vs) {
                *a = *a + x * y;
            }
        }
        for ((a, &x), &y) in acc.iter_mut().zip(it.remainder()).zip(iv.remainder()) {
            *a = *a + x * y;
        }
    }
    tree(acc)
});

simd_dispatch!(axpy<T>(x: &[T], s: T::Acc, acc: &mut [T::Acc]) -> () {
    let mut buf = [T::Acc::ZERO; CHUNK];
    for (c, ac) in x.chunks(CHUNK).zip(acc.chunks_mut(CHUNK)) {
        let c = as_acc(c, &mut buf);
        for (a, &x) in ac.iter_mut().zip(c) {
            *a = *a + s * x;
        }
    }
});

simd_dispatch!(add_squares<T>(x: &[T], acc: &mut [T::Acc]) -> () {
    let mut buf = [T::Acc::ZERO; CHUNK];
    for (c, ac) in x.chunks(CHUNK).zip(acc.chunks_mut(CHUNK)) {
        let c = as_acc(c, &mut buf);
        for (a, &x) in ac.iter_mut().zip(c) {
            *a = *a + x * x;
        }
    }
});
