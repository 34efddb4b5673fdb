//! Element types cosim accepts, and the precision each one accumulates in.

use half::{bf16, f16};
use std::ops::{Add, Div, Mul, Sub};

/// A floating accumulator: f32 for f32/f16/bf16 inputs, f64 for f64 inputs.
pub trait Accum:
    Copy
    + Send
    + Sync
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn sqrt(self) -> Self;
    /// The larger of two values; a NaN `self` yields `other`, as CUDA's `fmaxf` does.
    fn max(self, other: Self) -> Self;
}

impl Accum for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn max(self, other: Self) -> Self {
        f32::max(self, other)
    }
}

impl Accum for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn max(self, other: Self) -> Self {
        f64::max(self, other)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An input/output element type: f32, f64, f16 or bf16.
pub trait Element:
    Copy + Send + Sync + Default + PartialEq + std::fmt::Debug + sealed::Sealed + 'static
{
    /// What sums are accumulated in (SPEC §2: f32 for half types and f32, f64 for f64).
    type Acc: Accum;
    /// Short name, also the suffix of the CUDA kernels for this type.
    const NAME: &'static str;
    fn to_acc(self) -> Self::Acc;
    fn from_acc(v: Self::Acc) -> Self;
    /// The slice itself when `Self` is its own accumulator (f32, f64): no conversion needed.
    fn as_acc_slice(s: &[Self]) -> Option<&[Self::Acc]>;
    /// Converts `src` into `dst` (same length), vectorised where the type allows.
    fn to_acc_slice(src: &[Self], dst: &mut [Self::Acc]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_acc();
        }
    }
    /// Conversion for tests and references.
    fn to_f64(self) -> f64 {
        self.to_acc().to_f64()
    }
    fn from_f64(v: f64) -> Self {
        Self::from_acc(Self::Acc::from_f64(v))
    }
}

impl Element for f32 {
    type Acc = f32;
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn to_acc(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_acc(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn as_acc_slice(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
}

impl Element for f64 {
    type Acc = f64;
    const NAME: &'static str = "f64";
    #[inline(always)]
    fn to_acc(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_acc(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn as_acc_slice(s: &[Self]) -> Option<&[f64]> {
        Some(s)
    }
}

impl Element for f16 {
    type Acc = f32;
    const NAME: &'static str = "f16";
    #[inline(always)]
    fn to_acc(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn from_acc(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn as_acc_slice(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn to_acc_slice(src: &[Self], dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            unsafe { f16_to_f32_avx512(src, dst) };
            return;
        }
        // F16C/NEON when the CPU has it (half detects at run time), 8 at a time.
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
    }
}

impl Element for bf16 {
    type Acc = f32;
    const NAME: &'static str = "bf16";
    #[inline(always)]
    fn to_acc(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn from_acc(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn as_acc_slice(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn to_acc_slice(src: &[Self], dst: &mut [f32]) {
        // bf16 → f32 is a 16-bit shift; this loop vectorises.
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits((s.to_bits() as u32) << 16);
        }
    }
}

/// f16 → f32, 16 at a time with AVX-512's `vcvtph2ps` (exact, like every f16 → f32
/// conversion); the tail goes through `half`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn f16_to_f32_avx512(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm512_cvtph_ps, _mm512_storeu_ps};
    let n = src.len().min(dst.len());
    let whole = n / 16 * 16;
    for (s, d) in src[..whole]
        .chunks_exact(16)
        .zip(dst[..whole].chunks_exact_mut(16))
    {
        // SAFETY: `s` holds 16 f16 (32 bytes) and `d` 16 f32 (64 bytes); both intrinsics use
        // unaligned accesses, and AVX-512F is enabled for this function.
        unsafe {
            let h = _mm256_loadu_si256(s.as_ptr().cast::<__m256i>());
            _mm512_storeu_ps(d.as_mut_ptr(), _mm512_cvtph_ps(h));
        }
    }
    half::slice::HalfFloatSliceExt::convert_to_f32_slice(&src[whole..n], &mut dst[whole..n]);
}
