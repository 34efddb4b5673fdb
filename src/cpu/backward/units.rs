//! The vectorised units of the CPU gradients (src/cpu/backward.rs): one input's pieces of a
//! unit ([`Side`]: the forward's `Lane`), where its gradient terms go ([`Sink`], [`Disjoint`]), the lane sums, and
//! the four kernels compiled per instruction set: sums and gradients, along a strided axis
//! and along contiguous rows.

use super::*;
pub(crate) use crate::cpu::sums::Lane as Side;

/// A pointer that parallel tasks write through at disjoint indices.
#[derive(Clone, Copy)]
pub(crate) struct Disjoint<T> {
    pub(super) ptr: *mut T,
    pub(super) len: usize,
}
// SAFETY: only used for dense gradients, where every index is written by exactly one task
// (see `Plan::reads_each_once` and the callers); the pointee type is plain data.
unsafe impl<T: Send> Send for Disjoint<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Disjoint<T> {}

impl<T> Disjoint<T> {
    pub(super) fn new(v: &mut [T]) -> Self {
        Disjoint {
            ptr: v.as_mut_ptr(),
            len: v.len(),
        }
    }

    /// Writes element `i` (nothing if it is out of range, which a valid plan never asks).
    ///
    /// # Safety
    /// The buffer outlives the call, and no other thread accesses element `i` meanwhile.
    #[inline(always)]
    pub(super) unsafe fn write(self, i: usize, v: T) {
        debug_assert!(i < self.len);
        if i < self.len {
            // SAFETY: in range (checked), and exclusive as the caller promises.
            unsafe { *self.ptr.add(i) = v };
        }
    }

    /// Elements `p..p + n` (empty if out of range, which a valid plan never asks).
    ///
    /// # Safety
    /// The buffer outlives `'s`, and no other thread accesses those elements meanwhile.
    #[inline(always)]
    pub(super) unsafe fn slice<'s>(self, p: usize, n: usize) -> &'s mut [T] {
        debug_assert!(p + n <= self.len);
        if p + n > self.len {
            return &mut [];
        }
        // SAFETY: in range (checked), initialised (a Vec's elements), and exclusive as the
        // caller promises.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(p), n) }
    }
}

/// Where one input's gradient terms go: written in place (a dense input, each element once)
/// or added into one thread's partial sums (a broadcast input).
pub(crate) enum Sink<'a, T: Element> {
    Dense(Disjoint<T>),
    Partial(&'a mut [T::Acc]),
}

impl<T: Element> Sink<'_, T> {
    /// Stores the terms `t` of gradient elements `p + i·step`.
    #[inline(always)]
    pub(super) fn put(&mut self, p: usize, step: usize, t: &[T::Acc]) {
        match self {
            Sink::Dense(out) => {
                if step == 1 {
                    // SAFETY: the unit owning these elements is the only one writing them
                    // (dense input), and the gradient outlives the parallel loop.
                    let dst = unsafe { out.slice(p, t.len()) };
                    for (d, &v) in dst.iter_mut().zip(t) {
                        *d = T::from_acc(v);
                    }
                } else {
                    for (i, &v) in t.iter().enumerate() {
                        // SAFETY: as above.
                        unsafe { out.write(p + i * step, T::from_acc(v)) };
                    }
                }
            }
            Sink::Partial(acc) => match step {
                0 if !t.is_empty() => acc[p] = acc[p] + hsum(t),
                0 => {}
                1 => {
                    for (a, &v) in acc[p..p + t.len()].iter_mut().zip(t) {
                        *a = *a + v;
                    }
                }
                s => {
                    for (i, &v) in t.iter().enumerate() {
                        acc[p + i * s] = acc[p + i * s] + v;
                    }
                }
            },
        }
    }
}

impl<T: Element> Sink<'_, T> {
    /// Stores the terms `a·other + b·own` of gradient elements `p + i·step`: straight into a
    /// dense gradient's contiguous elements, otherwise through `t` and [`Sink::put`].
    #[inline(always)]
    pub(super) fn emit(
        &mut self,
        p: usize,
        step: usize,
        t: &mut [T::Acc],
        (a, b): (&[T::Acc], &[T::Acc]),
        (other, own): (&[T::Acc], &[T::Acc]),
    ) {
        if let (Sink::Dense(out), 1) = (&*self, step) {
            // SAFETY: as in `put`.
            let dst = unsafe { out.slice(p, own.len()) };
            let co = a.iter().zip(b);
            for (d, ((&a, &b), (&o, &s))) in dst.iter_mut().zip(co.zip(other.iter().zip(own))) {
                *d = T::from_acc(a * o + b * s);
            }
        } else {
            terms(t, a, b, other, own);
            self.put(p, step, t);
        }
    }
}

/// `K` pieces of `n` elements of a task's scratch.
#[inline(always)]
pub(super) fn parts<A, const K: usize>(s: &mut [A], n: usize) -> [&mut [A]; K] {
    debug_assert!(K * n <= s.len());
    let mut it = s.chunks_mut(n.max(1));
    std::array::from_fn(|_| it.next().unwrap_or_default())
}

/// `s` as a fixed-size array of [`LANES`] (always, for a `chunks_exact(LANES)` piece).
#[inline(always)]
pub(super) fn fixed<A>(s: &[A]) -> Option<&[A; LANES]> {
    s.try_into().ok()
}

/// Pairwise sum of the lanes, for accuracy and a short dependency chain.
#[inline(always)]
pub(super) fn tree<A: Accum>(mut v: [A; LANES]) -> A {
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            v[i] = v[i] + v[i + w];
        }
    }
    v[0]
}

/// The sum of `t`, in [`LANES`] partial sums.
#[inline(always)]
pub(super) fn hsum<A: Accum>(t: &[A]) -> A {
    let mut l = [A::ZERO; LANES];
    let mut c = t.chunks_exact(LANES);
    for x in (&mut c).filter_map(fixed) {
        for (l, &x) in l.iter_mut().zip(x) {
            *l = *l + x;
        }
    }
    for (l, &x) in l.iter_mut().zip(c.remainder()) {
        *l = *l + x;
    }
    tree(l)
}

/// Adds `a·b`, `a·a` and `b·b` of two equal-length slices into per-lane partial sums.
#[inline(always)]
pub(super) fn lanes3<A: Accum>(a: &[A], b: &[A], s: &mut [[A; LANES]; 3]) {
    let [d, s1, s2] = s;
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        let (Some(xa), Some(xb)) = (fixed(xa), fixed(xb)) else {
            continue; // unreachable: chunks_exact yields LANES elements
        };
        let acc = d.iter_mut().zip(s1.iter_mut()).zip(s2.iter_mut());
        for (((d, s1), s2), (&x, &y)) in acc.zip(xa.iter().zip(xb)) {
            *d = *d + x * y;
            *s1 = *s1 + x * x;
            *s2 = *s2 + y * y;
        }
    }
    for (l, (&x, &y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        d[l] = d[l] + x * y;
        s1[l] = s1[l] + x * x;
        s2[l] = s2[l] + y * y;
    }
}

/// Adds `a·b` of two equal-length slices into per-lane partial sums.
#[inline(always)]
pub(super) fn lanes1<A: Accum>(a: &[A], b: &[A], d: &mut [A; LANES]) {
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        let (Some(xa), Some(xb)) = (fixed(xa), fixed(xb)) else {
            continue; // unreachable, as above
        };
        for (d, (&x, &y)) in d.iter_mut().zip(xa.iter().zip(xb)) {
            *d = *d + x * y;
        }
    }
    for (l, (&x, &y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        d[l] = d[l] + x * y;
    }
}

/// `t = a·other + b·own`, elementwise (the gradient terms of one input, `own`).
#[inline(always)]
pub(super) fn terms<A: Accum>(t: &mut [A], a: &[A], b: &[A], other: &[A], own: &[A]) {
    let co = a.iter().zip(b);
    for (t, ((&a, &b), (&o, &s))) in t.iter_mut().zip(co.zip(other.iter().zip(own))) {
        *t = a * o + b * s;
    }
}

simd_dispatch!(along_sums<T>(x1: Side<'_, T>, x2: Side<'_, T>, w: Option<Side<'_, T>>, len: usize, scratch: &mut [T::Acc], out: &mut [[T::Acc; 4]]) -> () {
    // dot, ‖x1‖², ‖x2‖², Σ w·x2 of a block of outputs, the reduced axis stepped outermost.
    let n = out.len();
    let [d, s1, s2, sw, ba, bb, bw, a1, a2, a3, b1, b2, b3, ..] = parts::<_, 16>(scratch, n);
    for s in [&mut *d, &mut *s1, &mut *s2, &mut *sw] {
        s.fill(T::Acc::ZERO);
    }
    // Four steps per pass over the sums (without `w`): a quarter of their load/store traffic.
    let quads = if w.is_none() { len / 4 * 4 } else { 0 };
    for k in (0..quads).step_by(4) {
        let (x0, x1_, x2_, x3) = (x1.load(k, n, ba), x1.load(k + 1, n, a1), x1.load(k + 2, n, a2), x1.load(k + 3, n, a3));
        let (y0, y1, y2, y3) = (x2.load(k, n, bb), x2.load(k + 1, n, b1), x2.load(k + 2, n, b2), x2.load(k + 3, n, b3));
        let xs = x0.iter().zip(x1_).zip(x2_.iter().zip(x3));
        let ys = y0.iter().zip(y1).zip(y2.iter().zip(y3));
        let acc = d.iter_mut().zip(s1.iter_mut()).zip(s2.iter_mut());
        for ((((d, s1), s2), ((&p0, &p1), (&p2, &p3))), ((&q0, &q1), (&q2, &q3))) in acc.zip(xs).zip(ys) {
            *d = *d + (p0 * q0 + p1 * q1) + (p2 * q2 + p3 * q3);
            *s1 = *s1 + (p0 * p0 + p1 * p1) + (p2 * p2 + p3 * p3);
            *s2 = *s2 + (q0 * q0 + q1 * q1) + (q2 * q2 + q3 * q3);
        }
    }
    for k in quads..len {
        let (a, b) = (x1.load(k, n, ba), x2.load(k, n, bb));
        let acc = d.iter_mut().zip(s1.iter_mut()).zip(s2.iter_mut());
        for (((d, s1), s2), (&x, &y)) in acc.zip(a.iter().zip(b)) {
            *d = *d + x * y;
            *s1 = *s1 + x * x;
            *s2 = *s2 + y * y;
        }
        if let Some(w) = &w {
            let v = w.load(k, n, bw);
            for ((s, &g), &y) in sw.iter_mut().zip(v).zip(b) {
                *s = *s + g * y;
            }
        }
    }
    for (j, o) in out.iter_mut().enumerate() {
        *o = [d[j], s1[j], s2[j], sw[j]];
    }
});

simd_dispatch!(along_grads<T>(x1: Side<'_, T>, x2: Side<'_, T>, len: usize, coefs: &[Coef<T::Acc>], scratch: &mut [T::Acc], g1: &mut Sink<'_, T>, g2: &mut Sink<'_, T>) -> () {
    // Both gradients of a block of outputs, the reduced axis stepped outermost.
    let n = coefs.len();
    let [ca, cb1, cb2, ba, bb, t, _, _] = parts::<_, 8>(scratch, n);
    for (((c, a), b1), b2) in coefs.iter().zip(ca.iter_mut()).zip(cb1.iter_mut()).zip(cb2.iter_mut()) {
        (*a, *b1, *b2) = (c.a, c.b1, c.b2);
    }
    for k in 0..len {
        let (a, b) = (x1.load(k, n, ba), x2.load(k, n, bb));
        g1.emit(x1.at(k), x1.inner_stride, t, (ca, cb1), (b, a));
        g2.emit(x2.at(k), x2.inner_stride, t, (ca, cb2), (a, b));
    }
});

simd_dispatch!(row_sums<T>(x1: &[T], x2: &[T], w: Option<&[T]>, outer: &[Axis], red: Axis, first: usize, ks: (usize, usize), scratch: &mut [T::Acc], out: &mut [[T::Acc; 4]]) -> () {
    // The sums of rows `first..first + out.len()` over steps `ks.0..ks.1`, in chunks.
    let z = T::Acc::ZERO;
    let [ba, bb, bw, ..] = parts::<_, 8>(scratch, CHUNK);
    let mut walk = Walk::new(outer, first);
    for (r, o) in out.iter_mut().enumerate() {
        let (b1, b2) = walk.offsets();
        walk.advance();
        let (mut s, mut sw) = ([[z; LANES]; 3], [z; LANES]);
        let mut k = ks.0;
        while k < ks.1 {
            let m = CHUNK.min(ks.1 - k);
            let side = |data, base, inner_stride| Side { data, base, inner_stride, reduce_stride: 0 };
            let a = side(x1, b1 + k * red.stride1, red.stride1).load(0, m, ba);
            let b = side(x2, b2 + k * red.stride2, red.stride2).load(0, m, bb);
            lanes3(a, b, &mut s);
            if let Some(w) = w {
                lanes1(side(w, (first + r) * red.len + k, 1).load(0, m, bw), b, &mut sw);
            }
            k += m;
        }
        let [d, s1, s2] = s;
        *o = [tree(d), tree(s1), tree(s2), tree(sw)];
    }
});

simd_dispatch!(row_grads<T>(x1: &[T], x2: &[T], outer: &[Axis], red: Axis, first: usize, ks: (usize, usize), coefs: &[Coef<T::Acc>], scratch: &mut [T::Acc], g1: &mut Sink<'_, T>, g2: &mut Sink<'_, T>) -> () {
    // Both gradients of rows `first..first + coefs.len()` at steps `ks.0..ks.1`, in chunks.
    let [ba, bb, t, ..] = parts::<_, 8>(scratch, CHUNK);
    let mut walk = Walk::new(outer, first);
    for c in coefs {
        let (b1, b2) = walk.offsets();
        walk.advance();
        let mut k = ks.0;
        while k < ks.1 {
            let m = CHUNK.min(ks.1 - k);
            let (p1, p2) = (b1 + k * red.stride1, b2 + k * red.stride2);
            let a = Side { data: x1, base: p1, inner_stride: red.stride1, reduce_stride: 0 }.load(0, m, ba);
            let b = Side { data: x2, base: p2, inner_stride: red.stride2, reduce_stride: 0 }.load(0, m, bb);
            let t = &mut t[..m];
            for (t, (&x, &y)) in t.iter_mut().zip(a.iter().zip(b)) {
                *t = c.a * y + c.b1 * x;
            }
            g1.put(p1, red.stride1, t);
            for (t, (&x, &y)) in t.iter_mut().zip(a.iter().zip(b)) {
                *t = c.a * x + c.b2 * y;
            }
            g2.put(p2, red.stride2, t);
            k += m;
        }
    }
});
