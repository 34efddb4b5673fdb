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
        pub fn $name<$t: Element>($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn body<$t: Element>($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512<$t: Element>($($arg: $ty),*) -> $ret { body::<$t>($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
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
        for l in 0..LANES {
            let (x, y) = (xa[l], xb[l]);
            d[l] = d[l] + x * y;
            s1[l] = s1[l] + x * x;
            s2[l] = s2[l] + y * y;
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

simd_dispatch!(rows<T>(x1: &[T], x2: &[T], axes: &[Axis], first: usize, len: usize, eps: T::Acc, out: &mut [T]) -> () {
    let mut walk = Walk::new(axes, first);
    for o in out.iter_mut() {
        let (b1, b2) = walk.offsets();
        *o = T::from_acc(contiguous_inline(&x1[b1..b1 + len], &x2[b2..b2 + len]).cosine(eps));
        walk.advance();
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

impl<T: Element> Lane<'_, T> {
    /// Elements `k` of the reduced axis for outputs `0..n`, in the accumulator type.
    #[inline(always)]
    fn load<'b>(&'b self, k: usize, n: usize, buf: &'b mut [T::Acc; ALONG]) -> &'b [T::Acc] {
        let p = self.base + k * self.reduce_stride;
        match self.inner_stride {
            1 => match T::as_acc_slice(&self.data[p..p + n]) {
                Some(s) => s,
                None => {
                    T::to_acc_slice(&self.data[p..p + n], &mut buf[..n]);
                    &buf[..n]
                }
            },
            0 => {
                let v = self.data[p].to_acc();
                buf[..n].fill(v);
                &buf[..n]
            }
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
    let (mut ba, mut bb) = ([z; ALONG], [z; ALONG]);
    for k in 0..len {
        let (a, b) = (x1.load(k, n, &mut ba), x2.load(k, n, &mut bb));
        // Zipped iterators: no bounds checks, so the loop vectorises.
        let acc = d.iter_mut().zip(s1.iter_mut()).zip(s2.iter_mut());
        for (((d, s1), s2), (&x, &y)) in acc.zip(a.iter().zip(b)) {
            *d = *d + x * y;
            *s1 = *s1 + x * x;
            *s2 = *s2 + y * y;
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
