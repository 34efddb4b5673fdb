//! The one formula: turning the three sums of a vector pair into a cosine. The CUDA kernels
//! implement the same steps in `kernels/common.cuh` (`cosim_finish`).

use crate::element::Accum;

/// `dot / (max(‖x1‖, eps) · max(‖x2‖, eps))`, each norm clamped on its own (PyTorch ≥ 2.1).
///
/// A zero vector gives 0 even with eps = 0; NaN in the sums comes out as NaN; the result is
/// clamped to [−1, 1] so rounding can never produce 1.0000001, without turning NaN into a bound.
#[inline]
pub fn finish<A: Accum>(dot: A, nsq1: A, nsq2: A, eps: A) -> A {
    if dot == A::ZERO {
        return A::ZERO;
    }
    let r = dot / (nsq1.sqrt().max(eps) * nsq2.sqrt().max(eps));
    clamp_unit(r)
}

/// Clamps to [−1, 1], keeping NaN (unlike `fmaxf`/`fminf`, which would return a bound).
#[inline]
pub fn clamp_unit<A: Accum>(r: A) -> A {
    let one = A::ONE;
    let minus_one = A::ZERO - one;
    if r > one {
        one
    } else if r < minus_one {
        minus_one
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_vector_is_zero_even_without_eps() {
        assert_eq!(finish(0.0f32, 0.0, 4.0, 0.0), 0.0);
        assert_eq!(finish(0.0f64, 0.0, 0.0, 1e-8), 0.0);
    }

    #[test]
    fn nan_survives_the_clamp() {
        assert!(finish(f32::NAN, 1.0, 1.0, 1e-8).is_nan());
        assert!(clamp_unit(f64::NAN).is_nan());
        // fmaxf-style clamping would have returned -1 here.
        assert_eq!(f32::NAN.max(-1.0), -1.0);
    }

    #[test]
    fn clamps_rounding_overshoot() {
        assert_eq!(finish(1.0000001f32, 1.0, 1.0, 1e-8), 1.0);
        assert_eq!(finish(-1.5f64, 1.0, 1.0, 1e-8), -1.0);
    }

    #[test]
    fn each_norm_clamped_on_its_own() {
        // ‖x1‖ = 1e-10 < eps, ‖x2‖ = 1: dot / (eps · 1), not dot / max(1e-10, eps).
        let got = finish(1e-10f64, 1e-20, 1.0, 1e-8);
        assert!((got - 1e-2).abs() < 1e-15, "{got}");
    }
}
