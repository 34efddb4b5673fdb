//! The floating types the command computes in, how input dtypes promote to one of them
//! (PyTorch's rules), and the element trait the subcommands are generic over.

use cosim::{bf16, f16, AnyElement};
use std::fmt;

/// A type to compute (and write results) in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Dtype {
    F16,
    Bf16,
    F32,
    F64,
}

impl Dtype {
    /// PyTorch's promotion of two floating types: the wider one; f16 with bf16 gives f32.
    pub fn promote(self, other: Dtype) -> Dtype {
        use Dtype::*;
        match (self, other) {
            (a, b) if a == b => a,
            (F64, _) | (_, F64) => F64,
            _ => F32,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        })
    }
}

/// An element type the command computes in: both backends accept it, it can be viewed in
/// place in a memory-mapped file (plain old data), and it prints as its shortest exact decimal.
pub trait Compute: AnyElement + bytemuck::Pod + fmt::Display {
    const DTYPE: Dtype;
    /// Rounds an f64 to this type once (no detour through f32 for the half types, unlike
    /// `Element::from_f64`).
    fn round_f64(v: f64) -> Self;
}

impl Compute for f16 {
    const DTYPE: Dtype = Dtype::F16;
    fn round_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
}

impl Compute for bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
    fn round_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
}

impl Compute for f32 {
    const DTYPE: Dtype = Dtype::F32;
    fn round_f64(v: f64) -> Self {
        v as f32
    }
}

impl Compute for f64 {
    const DTYPE: Dtype = Dtype::F64;
    fn round_f64(v: f64) -> Self {
        v
    }
}

/// Calls `$body` with `$T` bound to the Rust type of a [`Dtype`] value.
macro_rules! with_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::dtype::Dtype::F16 => {
                type $T = cosim::f16;
                $body
            }
            $crate::dtype::Dtype::Bf16 => {
                type $T = cosim::bf16;
                $body
            }
            $crate::dtype::Dtype::F32 => {
                type $T = f32;
                $body
            }
            $crate::dtype::Dtype::F64 => {
                type $T = f64;
                $body
            }
        }
    };
}
pub(crate) use with_dtype;

#[cfg(test)]
mod tests {
    use super::Dtype::*;

    #[test]
    fn promotion_follows_pytorch() {
        assert_eq!(F16.promote(F16), F16);
        assert_eq!(F16.promote(Bf16), F32);
        assert_eq!(Bf16.promote(F32), F32);
        assert_eq!(F32.promote(F64), F64);
        assert_eq!(F16.promote(F64), F64);
    }
}
