//! The three sums (x1·x2, ‖x1‖², ‖x2‖²) over vectors on the CPU, written so that LLVM
//! vectorises the contiguous case.

use crate::element::{Accum, Element};

/// Lanes of independent partial sums: enough for two AVX-512 registers of f32.
const LANES: usize = 16;

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

/// Sums over two contiguous vectors of equal length.
#[inline]
pub fn contiguous<T: Element>(a: &[T], b: &[T]) -> Sums<T::Acc> {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let z = T::Acc::ZERO;
    let (mut d, mut s1, mut s2) = ([z; LANES], [z; LANES], [z; LANES]);
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            let (x, y) = (xa[l].to_acc(), xb[l].to_acc());
            d[l] = d[l] + x * y;
            s1[l] = s1[l] + x * x;
            s2[l] = s2[l] + y * y;
        }
    }
    for (xa, xb) in ca.remainder().iter().zip(cb.remainder()) {
        let (x, y) = (xa.to_acc(), xb.to_acc());
        d[0] = d[0] + x * y;
        s1[0] = s1[0] + x * x;
        s2[0] = s2[0] + y * y;
    }
    Sums {
        dot: tree(d),
        n1: tree(s1),
        n2: tree(s2),
    }
}

/// Pairwise sum of the lanes, for accuracy and a short dependency chain.
#[inline(always)]
fn tree<A: Accum>(mut v: [A; LANES]) -> A {
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
}
