//! The two input files of a similarity subcommand, and the type to compute them in.

use crate::dtype::Dtype;
use crate::error::{library_code, CliError, Result};
use crate::npy::NpyInput;
use crate::options::GlobalOpts;
use std::path::Path;

/// Two opened inputs and the type they are computed in.
pub struct Inputs {
    pub a: NpyInput,
    pub b: NpyInput,
    pub dtype: Dtype,
}

impl Inputs {
    /// Opens both files and picks the compute type: `--dtype`, else the inputs' types promoted
    /// as PyTorch does (an integer array takes the other's floating type, two give f32; f16
    /// with f32 gives f32). Notes every conversion on stderr.
    ///
    /// # Errors
    /// As [`NpyInput::open`], for either file.
    pub fn open(a: &Path, b: &Path, g: &GlobalOpts) -> Result<Inputs> {
        let (a, b) = (NpyInput::open(a)?, NpyInput::open(b)?);
        let (na, nb) = (a.source.natural(), b.source.natural());
        // An integer array takes the other input's floating type, as in PyTorch
        // (int64 with float16 gives float16); two integer arrays give f32.
        let dtype = g
            .dtype
            .unwrap_or(match (a.source.is_integral(), b.source.is_integral()) {
                (true, false) => nb,
                (false, true) => na,
                _ => na.promote(nb),
            });
        for x in [&a, &b] {
            if x.source.is_integral() {
                g.note(format!(
                    "{} holds {}; computing in {dtype} (integers convert to floating point, as in PyTorch)",
                    x.path.display(),
                    x.source.name()
                ));
            }
        }
        if g.dtype.is_none() && na != nb && !a.source.is_integral() && !b.source.is_integral() {
            g.note(format!(
                "{} and {} differ; computing in {dtype}",
                a.describe(),
                b.describe()
            ));
        }
        if dtype == Dtype::Bf16 {
            g.note(
                "NumPy has no bfloat16: results computed in bf16 are written as float32 (exactly)",
            );
        }
        Ok(Inputs { a, b, dtype })
    }

    /// A library refusal (shapes, dim, eps) with both files and shapes named.
    pub fn refusal(&self, e: cosim::Error) -> CliError {
        if matches!(e, cosim::Error::Cancelled) {
            return e.into(); // an interrupt, not the inputs' fault
        }
        CliError {
            code: library_code(&e),
            message: format!("{} vs {}: {e}", self.a.describe(), self.b.describe()),
        }
    }
}
