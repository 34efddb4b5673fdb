//! The three sums (x1·x2, ‖x1‖², ‖x2‖²) over vectors on the CPU. The loops are written so
//! that LLVM vectorises them, and compiled three times (AVX-512, AVX2+FMA, baseline) with the
//! widest one the CPU supports picked at run time: the crate is built for baseline x86-64.

use crate::element::{Accum, Element};
use crate::plan::{Axis, Walk};

/// Lanes of independent partial sums for long vectors: four AVX-512 registers of f32 per
/// sum, so that the add latency is hidden; short vectors use 16 to keep the final tree cheap.
const LANES_LONG: usize = 64;
const LANES_SHORT: usize = 16;
/// Elements converted to the accumulator type at a time (half types), on the stack.
pub const CHUNK: usize = 1024;
/// Outputs one along-axis task computes: their sums stay on the stack (48 KiB for f32), and
/// each step of the reduced axis reads 16 KiB of each input contiguously, which the
/// hardware prefetchers follow far better than many short pieces.
pub const ALONG: usize = 4096;

/// Dot product and squared norms of a pair of vectors.
#[derive(Clone, Copy, Debug)]
pub struct Sums<A> {
    pub dot: A,
    pub n1: A,
    pub n2: A,
}

impl<A: Accum> Sums<A> {
    pub const ZERO: Self = Sums {
        dot: A::ZERO,
        n1: A::ZERO,
        n2: A::ZERO,
    };

    #[inline(always)]
    pub fn add(self, o: Self) -> Self {
        Sums {
            dot: self.dot + o.dot,
            n1: self.n1 + o.n1,
            n2: self.n2 + o.n2,
        }
    }

    /// The cosine these sums describe.
    #[inline]
    pub fn cosine(self, eps: A) -> A {
        crate::cosine::finish(self.dot, self.n1, self.n2, eps)
    }
}

/// Runs `$body` (an expression using only inlined generic code) compiled for the best
/// instruction set this CPU has.
macro_rules! simd_dispatch {
    ($name:ident < $t:ident > ( $($arg:ident : $ty:ty),* ) -> $ret:ty $body:block) => {
        #[allow(clippy::too_many_arguments)]
        pub fn $name<$t: Element>($($arg: $ty),*) -> $ret {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<$t: Element>($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                fn avx512<$t: Element>($($arg: $ty),*) -> $ret { body::<$t>($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2<$t: Element>($($arg: $ty),*) -> $ret { body::<$t>($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F, checked just above.
                    return unsafe { avx512::<$t>($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                    return unsafe { avx2::<$t>($($arg),*) };
                }
            }
            body::<$t>($($arg),*)
        }
    };
}

pub(crate) use simd_dispatch;

/// `f(acc_view)`: the slice in the accumulator type, converted through `buf` if needed.
#[inline(always)]
pub fn as_acc<'a, T: Element>(src: &'a [T], buf: &'a mut [T::Acc; CHUNK]) -> &'a [T::Acc] {
    match T::as_acc_slice(src) {
        Some(s) => s,
        None => {
            let dst = &mut buf[..src.len()];
            T::to_acc_slice(src, dst);
            dst
        }
    }
}

/// Adds the sums of two equal-length accumulator slices into per-lane partials.
#[inline(always)]
fn lanes<A: Accum, const LANES: usize>(
    a: &[A],
    b: &[A],
    d: &mut [A; LANES],
    s1: &mut [A; LANES],
    s2: &mut [A; LANES],
) {
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        // Fixed-size arrays and zipped iterators: one vector op per accumulator and chunk.
        let (xa, xb): (&[A; LANES], &[A; LANES]) = match (xa.try_into(), xb.try_into()) {
            (Ok(xa), Ok(xb)) => (xa, xb),
            _ => continue, // unreachable: chunks_exact yields LANES elements
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

simd_dispatch!(contiguous<T>(a: &[T], b: &[T]) -> Sums<T::Acc> {
    contiguous_inline(a, b)
});

simd_dispatch!(with_constant<T>(a: &[T], c: T) -> Sums<T::Acc> {
    with_constant_inline(a, c)
});

/// Sums of the pair (a, c repeated a.len() times); products taken elementwise so that
/// NaN/inf behave exactly as with an expanded vector.
#[inline(always)]
fn with_constant_inline<T: Element>(a: &[T], c: T) -> Sums<T::Acc> {
    let y = c.to_acc();
    let z = T::Acc::ZERO;
    let (mut d, mut s1) = ([z; LANES_SHORT], [z; LANES_SHORT]);
    let mut buf = [z; CHUNK];
    for chunk in a.chunks(CHUNK) {
        let v = as_acc(chunk, &mut buf);
        let mut it = v.chunks_exact(LANES_SHORT);
        for xs in &mut it {
            for ((d, s1), &x) in d.iter_mut().zip(s1.iter_mut()).zip(xs) {
                *d = *d + x * y;
                *s1 = *s1 + x * x;
            }
        }
        for ((d, s1), &x) in d.iter_mut().zip(s1.iter_mut()).zip(it.remainder()) {
            *d = *d + x * y;
            *s1 = *s1 + x * x;
        }
    }
    let n2 = if a.is_empty() {
        z
    } else {
        y * y * T::Acc::from_f64(a.len() as f64)
    };
    Sums {
        dot: tree(d),
        n1: tree(s1),
        n2,
    }
}

/// Sums of one output vector: both inputs contiguous (`constant` 0), or input `constant`
/// (1 or 2) holding one value repeated.
#[inline(always)]
fn row_sums<T: Element>(
    x1: &[T],
    b1: usize,
    x2: &[T],
    b2: usize,
    len: usize,
    constant: u8,
) -> Sums<T::Acc> {
    match constant {
        1 => {
            let s = with_constant_inline(&x2[b2..b2 + len], x1[b1]);
            Sums {
                dot: s.dot,
                n1: s.n2,
                n2: s.n1,
            }
        }
        2 => with_constant_inline(&x1[b1..b1 + len], x2[b2]),
        _ => contiguous_inline(&x1[b1..b1 + len], &x2[b2..b2 + len]),
    }
}

simd_dispatch!(rows<T>(x1: &[T], x2: &[T], axes: &[Axis], first: usize, len: usize, constant: u8, eps: T::Acc, out: &mut [T]) -> () {
    // Sums of 16 rows first, then their 16 cosines together: the square roots and divisions
    // vectorise instead of each row waiting on its own.
    const GROUP: usize = 16;
    let mut walk = Walk::new(axes, first);
    let z = T::Acc::ZERO;
    for group in out.chunks_mut(GROUP) {
        let (mut d, mut s1, mut s2) = ([z; GROUP], [z; GROUP], [z; GROUP]);
        for ((d, s1), s2) in d.iter_mut().zip(s1.iter_mut()).zip(s2.iter_mut()).take(group.len()) {
            let (b1, b2) = walk.offsets();
            let s = row_sums(x1, b1, x2, b2, len, constant);
            (*d, *s1, *s2) = (s.dot, s.n1, s.n2);
            walk.advance();
        }
        let mut c = [z; GROUP];
        for (c, ((&d, &s1), &s2)) in c.iter_mut().zip(d.iter().zip(&s1).zip(&s2)) {
            *c = crate::cosine::finish(d, s1, s2, eps);
        }
        for (o, &c) in group.iter_mut().zip(&c) {
            *o = T::from_acc(c);
        }
    }
});

#[inline(always)]
fn contiguous_inline<T: Element>(a: &[T], b: &[T]) -> Sums<T::Acc> {
    if a.len() >= 4 * LANES_LONG {
        contiguous_lanes::<T, LANES_LONG>(a, b)
    } else {
        contiguous_lanes::<T, LANES_SHORT>(a, b)
    }
}

#[inline(always)]
fn contiguous_lanes<T: Element, const LANES: usize>(a: &[T], b: &[T]) -> Sums<T::Acc> {
    let z = T::Acc::ZERO;
    let (mut d, mut s1, mut s2) = ([z; LANES], [z; LANES], [z; LANES]);
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    if let (Some(a), Some(b)) = (T::as_acc_slice(a), T::as_acc_slice(b)) {
        lanes(a, b, &mut d, &mut s1, &mut s2);
    } else {
        let (mut ba, mut bb) = ([z; CHUNK], [z; CHUNK]);
        for (ca, cb) in a.chunks(CHUNK).zip(b.chunks(CHUNK)) {
            let (va, vb) = (as_acc(ca, &mut ba), as_acc(cb, &mut bb));
            lanes(va, vb, &mut d, &mut s1, &mut s2);
        }
    }
    Sums {
        dot: tree(d),
        n1: tree(s1),
        n2: tree(s2),
    }
}

/// One input's access along the inner axis of a block of outputs.
#[derive(Clone, Copy)]
pub struct Lane<'a, T> {
    pub data: &'a [T],
    pub base: usize,
    pub inner_stride: usize,
    pub reduce_stride: usize,
}

impl<'a, T: Element> Lane<'a, T> {
    /// Whether [`Lane::load`] hands out the input itself (unit stride, f32/f64) and needs no
    /// buffer; constant lanes (stride 0) are never loaded, their callers read one value.
    fn in_place(&self) -> bool {
        self.inner_stride == 0
            || (self.inner_stride == 1 && T::as_acc_slice(&self.data[..0]).is_some())
    }

    /// Index of output 0's element `k` of the reduced axis.
    #[inline(always)]
    pub fn at(&self, k: usize) -> usize {
        self.base + k * self.reduce_stride
    }

    /// Elements `k` of the reduced axis for outputs `0..n`, in the accumulator type: the
    /// input itself when [`Lane::in_place`], otherwise converted, repeated (a constant lane)
    /// or gathered into `buf`.
    #[inline(always)]
    pub fn load<'b>(&self, k: usize, n: usize, buf: &'b mut [T::Acc]) -> &'b [T::Acc]
    where
        'a: 'b,
    {
        let p = self.at(k);
        if n == 0 {
            return &buf[..0];
        }
        match self.inner_stride {
            0 => {
                buf[..n].fill(self.data[p].to_acc());
                &buf[..n]
            }
            1 => match T::as_acc_slice(&self.data[p..p + n]) {
                Some(s) => s,
                None => {
                    T::to_acc_slice(&self.data[p..p + n], &mut buf[..n]);
                    &buf[..n]
                }
            },
            s => {
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    *b = self.data[p + i * s].to_acc();
                }
                &buf[..n]
            }
        }
    }
}

simd_dispatch!(along_block<T>(x1: Lane<'_, T>, x2: Lane<'_, T>, len: usize, eps: T::Acc, out: &mut [T]) -> () {
    let n = out.len();
    let z = T::Acc::ZERO;
    let (mut d, mut s1, mut s2) = ([z; ALONG], [z; ALONG], [z; ALONG]);
    let (d, s1, s2) = (&mut d[..n], &mut s1[..n], &mut s2[..n]);
    // Conversion buffers, only for lanes that cannot be read in place (half types, strides).
    let mut store = vec![z; if x1.in_place() && x2.in_place() { 0 } else { 8 * n }];
    let mut chunks = store.chunks_mut(n.max(1));
    let mut bufs: [&mut [T::Acc]; 8] = std::array::from_fn(|_| chunks.next().unwrap_or_default());
    let [ba0, ba1, ba2, ba3, bb0, bb1, bb2, bb3] = &mut bufs;
    // Four steps of the reduced axis per pass over the accumulators: a quarter of their
    // load/store traffic.
    let quads = len / 4 * 4;
    // One input constant along the block (broadcast: inner stride 0), e.g. every pixel against
    // one prototype: its squares sum to one scalar, and it is never expanded.
    let constant = match (x1.inner_stride, x2.inner_stride) {
        (_, 0) => Some((x1, x2, &mut *s1, &mut *s2)),
        (0, _) => Some((x2, x1, &mut *s2, &mut *s1)),
        _ => None,
    };
    if let Some((var, con, svar, scon_slot)) = constant {
        let y = |k: usize| con.data[con.base + k * con.reduce_stride].to_acc();
        let mut scon = z;
        for k in (0..quads).step_by(4) {
            let (a0, a1) = (var.load(k, n, ba0), var.load(k + 1, n, ba1));
            let (a2, a3) = (var.load(k + 2, n, ba2), var.load(k + 3, n, ba3));
            let (y0, y1, y2, y3) = (y(k), y(k + 1), y(k + 2), y(k + 3));
            scon = scon + (y0 * y0 + y1 * y1) + (y2 * y2 + y3 * y3);
            let a = a0.iter().zip(a1).zip(a2.iter().zip(a3));
            for ((d, s), ((&x0, &x1), (&x2, &x3))) in d.iter_mut().zip(svar.iter_mut()).zip(a) {
                *d = *d + (x0 * y0 + x1 * y1) + (x2 * y2 + x3 * y3);
                *s = *s + (x0 * x0 + x1 * x1) + (x2 * x2 + x3 * x3);
            }
        }
        for k in quads..len {
            let (a, y) = (var.load(k, n, ba0), y(k));
            scon = scon + y * y;
            for ((d, s), &x) in d.iter_mut().zip(svar.iter_mut()).zip(a) {
                *d = *d + x * y;
                *s = *s + x * x;
            }
        }
        scon_slot.fill(scon);
    } else {
        for k in (0..quads).step_by(4) {
            let (a0, a1) = (x1.load(k, n, ba0), x1.load(k + 1, n, ba1));
            let (a2, a3) = (x1.load(k + 2, n, ba2), x1.load(k + 3, n, ba3));
            let (b0, b1) = (x2.load(k, n, bb0), x2.load(k + 1, n, bb1));
            let (b2, b3) = (x2.load(k + 2, n, bb2), x2.load(k + 3, n, bb3));
            let a = a0.iter().zip(a1).zip(a2.iter().zip(a3));
            let b = b0.iter().zip(b1).zip(b2.iter().zip(b3));
            let acc = d.iter_mut().zip(s1.iter_mut()).zip(s2.iter_mut());
            for ((((d, s1), s2), ((&x0, &x1), (&x2, &x3))), ((&y0, &y1), (&y2, &y3))) in acc.zip(a).zip(b) {
                *d = *d + (x0 * y0 + x1 * y1) + (x2 * y2 + x3 * y3);
                *s1 = *s1 + (x0 * x0 + x1 * x1) + (x2 * x2 + x3 * x3);
                *s2 = *s2 + (y0 * y0 + y1 * y1) + (y2 * y2 + y3 * y3);
            }
        }
        for k in quads..len {
            let (a, b) = (x1.load(k, n, ba0), x2.load(k, n, bb0));
            let acc = d.iter_mut().zip(s1.iter_mut()).zip(s2.iter_mut());
            for (((d, s1), s2), (&x, &y)) in acc.zip(a.iter().zip(b)) {
                *d = *d + x * y;
                *s1 = *s1 + x * x;
                *s2 = *s2 + y * y;
            }
        }
    }
    for (o, ((&d, &s1), &s2)) in out.iter_mut().zip(d.iter().zip(s1.iter()).zip(s2.iter())) {
        *o = T::from_acc(crate::cosine::finish(d, s1, s2, eps));
    }
});

/// Pairwise sum of the lanes, for accuracy and a short dependency chain.
#[inline(always)]
fn tree<A: Accum, const LANES: usize>(mut v: [A; LANES]) -> A {
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            v[i] = v[i] + v[i + w];
        }
    }
    v[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_matches_naive() {
        let a: Vec<f64> = (0..37).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..37).map(|i| (i as f64 * 0.11).cos()).collect();
        let s = contiguous(&a, &b);
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((s.dot - dot).abs() < 1e-12);
        let n1: f64 = a.iter().map(|x| x * x).sum();
        assert!((s.n1 - n1).abs() < 1e-12);
    }

    #[test]
    fn half_types_convert_in_chunks() {
        let a: Vec<half::f16> = (0..1000)
            .map(|i| half::f16::from_f32((i as f32 * 0.01).sin()))
            .collect();
        let b: Vec<half::f16> = (0..1000)
            .map(|i| half::f16::from_f32((i as f32 * 0.03).cos()))
            .collect();
        let s = contiguous(&a, &b);
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x.to_f64() * y.to_f64()).sum();
        assert!(
            (s.dot as f64 - dot).abs() < 1e-4 * dot.abs().max(1.0),
            "{} vs {dot}",
            s.dot
        );
    }
}
