//! Pairwise similarity between two sets of vectors, `S[i, j] = cos(a_i, b_j)`: the sets'
//! shapes and layouts, validated once into a [`PairPlan`] that both backends execute, and the
//! semantics every pairwise result shares (inverse norms, ranking order, set scores).
//!
//! A set is `[N, D]` (one vector per row, [`Layout::Rows`], as embeddings are stored) or
//! `[D, N]` (one vector per column, [`Layout::Cols`], the `[B, D, N]` maps that
//! `bmm(x.transpose(1, 2), y)` users hold), optionally with a leading batch dim `[B, …]`.
//! Neither layout is ever copied or transposed. A set without a batch dim is shared by every
//! batch of the other set.

use crate::error::{Error, Result};
use crate::plan::{check_eps, check_out_len, numel};

/// Which axis of a set's shape holds the vector components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[N, D]` or `[B, N, D]`: vector `i` is row `i`.
    Rows,
    /// `[D, N]` or `[B, D, N]`: vector `i` is column `i`.
    Cols,
}

/// How the dot products of the matrix kernels are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Exact arithmetic in the accumulator type (FFMA for f32, f16 and bf16; f64 for f64):
    /// matches an f64 reference to about 1e-6 for f32.
    #[default]
    Exact,
    /// Tensor cores where the backend has them (TF32 for f32 inputs, f16/bf16 with f32
    /// accumulation for half inputs); the CPU backend computes `Fast` exactly.
    Fast,
}

/// Where element `k` of vector `i` of batch `b` lies: `b·batch + i·vec + k·comp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetStrides {
    /// Stride between batches; 0 when the set is shared by all batches.
    pub batch: usize,
    /// Stride between vectors: `D` for rows, 1 for columns.
    pub vec: usize,
    /// Stride between the components of one vector: 1 for rows, `N` for columns.
    pub comp: usize,
}

impl SetStrides {
    /// Offset of element `k` of vector `i` of batch `b`.
    #[inline]
    pub fn at(&self, b: usize, i: usize, k: usize) -> usize {
        b * self.batch + i * self.vec + k * self.comp
    }
}

/// A validated pairwise problem: `batch` independent `n × m` matrices over vectors of length
/// `d`. Build it with [`PairPlan::new`], then hand it and the buffers to a backend.
#[derive(Clone, Debug, PartialEq)]
pub struct PairPlan {
    /// Number of matrices (1 when neither set has a batch dim).
    pub batch: usize,
    /// Whether results carry a leading batch dim (either set had one).
    pub batched: bool,
    /// Vectors in the first set (rows of the matrix).
    pub n: usize,
    /// Vectors in the second set (columns of the matrix).
    pub m: usize,
    /// Components per vector.
    pub d: usize,
    pub a: SetStrides,
    pub b: SetStrides,
    pub a_layout: Layout,
    pub b_layout: Layout,
    /// The clamp applied to each norm.
    pub eps: f64,
    pub precision: Precision,
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
    a_len: usize,
    b_len: usize,
}

/// One set's shape read against its layout: (batch if any, count, components).
fn read_set(which: &'static str, shape: &[usize], layout: Layout) -> Result<SetShape> {
    let (batch, rest) = match shape.len() {
        2 => (None, shape),
        3 => (Some(shape[0]), &shape[1..]),
        _ => {
            return Err(Error::PairShape {
                which,
                shape: shape.to_vec(),
                layout,
            })
        }
    };
    let (count, d) = match layout {
        Layout::Rows => (rest[0], rest[1]),
        Layout::Cols => (rest[1], rest[0]),
    };
    if count == 0 || batch == Some(0) {
        return Err(Error::EmptySet {
            which,
            shape: shape.to_vec(),
        });
    }
    let len = numel(shape)?;
    let strides = match layout {
        Layout::Rows => SetStrides {
            batch: count * d,
            vec: d,
            comp: 1,
        },
        Layout::Cols => SetStrides {
            batch: count * d,
            vec: 1,
            comp: count,
        },
    };
    Ok(SetShape {
        batch,
        count,
        d,
        len,
        strides,
    })
}

struct SetShape {
    batch: Option<usize>,
    count: usize,
    d: usize,
    len: usize,
    strides: SetStrides,
}

impl PairPlan {
    /// Validates two sets: rank 2 or 3 as `layout` says, non-empty, the same vector length,
    /// and equal batch sizes (or one set without a batch dim, shared by all). eps is the
    /// default 1e-8 and precision [`Precision::Exact`]; see [`PairPlan::eps`] and
    /// [`PairPlan::precision`].
    ///
    /// # Errors
    /// [`Error::PairShape`] for a rank other than 2 or 3, [`Error::EmptySet`] for a set
    /// without vectors, [`Error::PairMismatch`] when the vector lengths or batch sizes differ.
    ///
    /// ```
    /// use cosim::pairwise::{Layout, PairPlan};
    /// // 4096 query embeddings of 768 against 8 batches of 768-channel maps with 1024 pixels.
    /// let p = PairPlan::new(&[4096, 768], Layout::Rows, &[8, 768, 1024], Layout::Cols)?;
    /// assert_eq!(p.matrix_shape(), vec![8, 4096, 1024]);
    /// # Ok::<(), cosim::Error>(())
    /// ```
    pub fn new(
        a_shape: &[usize],
        a_layout: Layout,
        b_shape: &[usize],
        b_layout: Layout,
    ) -> Result<PairPlan> {
        let sa = read_set("a", a_shape, a_layout)?;
        let sb = read_set("b", b_shape, b_layout)?;
        let mismatch = |what: &'static str| Error::PairMismatch {
            what,
            a_shape: a_shape.to_vec(),
            a_layout,
            b_shape: b_shape.to_vec(),
            b_layout,
        };
        if sa.d != sb.d {
            return Err(mismatch("vector lengths"));
        }
        let batch = match (sa.batch, sb.batch) {
            (Some(x), Some(y)) if x != y => return Err(mismatch("batch sizes")),
            (Some(x), _) | (None, Some(x)) => x,
            (None, None) => 1,
        };
        let (mut a, mut b) = (sa.strides, sb.strides);
        if sa.batch.is_none() {
            a.batch = 0;
        }
        if sb.batch.is_none() {
            b.batch = 0;
        }
        Ok(PairPlan {
            batch,
            batched: sa.batch.is_some() || sb.batch.is_some(),
            n: sa.count,
            m: sb.count,
            d: sa.d,
            a,
            b,
            a_layout,
            b_layout,
            eps: crate::DEFAULT_EPS,
            precision: Precision::Exact,
            a_shape: a_shape.to_vec(),
            b_shape: b_shape.to_vec(),
            a_len: sa.len,
            b_len: sb.len,
        })
    }

    /// The plan with another norm clamp (`None`: the default 1e-8).
    ///
    /// # Errors
    /// [`Error::BadEps`] if eps is negative or NaN.
    pub fn eps(mut self, eps: Option<f64>) -> Result<PairPlan> {
        self.eps = check_eps(eps)?;
        Ok(self)
    }

    /// The plan with another [`Precision`].
    pub fn precision(mut self, precision: Precision) -> PairPlan {
        self.precision = precision;
        self
    }

    fn lead(&self) -> Vec<usize> {
        if self.batched {
            vec![self.batch]
        } else {
            vec![]
        }
    }

    /// `[B, N, M]`, or `[N, M]` without a batch dim.
    pub fn matrix_shape(&self) -> Vec<usize> {
        let mut s = self.lead();
        s.extend([self.n, self.m]);
        s
    }

    /// One value per row: `[B, N]` or `[N]` (row max, argmax, row mean).
    pub fn row_shape(&self) -> Vec<usize> {
        let mut s = self.lead();
        s.push(self.n);
        s
    }

    /// `k` values per row: `[B, N, k]` or `[N, k]`.
    pub fn top_k_shape(&self, k: usize) -> Vec<usize> {
        let mut s = self.lead();
        s.extend([self.n, k]);
        s
    }

    /// One value per matrix: `[B]`, or `[]` (a scalar) without a batch dim.
    pub fn batch_shape(&self) -> Vec<usize> {
        self.lead()
    }

    /// Vectors in all of the first set: the length of its weights.
    pub fn a_vectors(&self) -> usize {
        if self.a.batch == 0 {
            self.n
        } else {
            self.batch * self.n
        }
    }

    /// Vectors in all of the second set: the length of its weights.
    pub fn b_vectors(&self) -> usize {
        if self.b.batch == 0 {
            self.m
        } else {
            self.batch * self.m
        }
    }

    /// The first set's shape, as given (its gradient's shape too).
    pub fn a_shape(&self) -> &[usize] {
        &self.a_shape
    }

    /// The second set's shape, as given.
    pub fn b_shape(&self) -> &[usize] {
        &self.b_shape
    }

    /// Errors unless the two buffers hold what their shapes promise.
    pub fn check_inputs(&self, a_len: usize, b_len: usize) -> Result<()> {
        for (what, len, expected, shape) in [
            ("a", a_len, self.a_len, &self.a_shape),
            ("b", b_len, self.b_len, &self.b_shape),
        ] {
            if len != expected {
                return Err(Error::LenMismatch {
                    what,
                    len,
                    shape: shape.clone(),
                    expected,
                });
            }
        }
        Ok(())
    }

    /// Errors unless `1 <= k <= m`.
    pub fn check_k(&self, k: usize) -> Result<()> {
        if k == 0 || k > self.m {
            return Err(Error::BadK { k, m: self.m });
        }
        Ok(())
    }

    /// Errors unless per-vector weights, when given, have one value per vector of each set.
    pub fn check_weights(&self, a_weights: Option<usize>, b_weights: Option<usize>) -> Result<()> {
        for (what, len, expected) in [
            ("weights of a", a_weights, self.a_vectors()),
            ("weights of b", b_weights, self.b_vectors()),
        ] {
            match len {
                Some(len) if len != expected => {
                    return Err(Error::OutLenMismatch {
                        what,
                        len,
                        shape: vec![expected],
                        expected,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Errors unless `len` is the element count of `shape` (for an output buffer).
    pub fn check_out(&self, what: &'static str, len: usize, shape: &[usize]) -> Result<()> {
        check_out_len(what, len, shape)
    }

    /// How many matrix rows fit in a block of at most `budget_bytes` with `elem_bytes` per
    /// value (at least 1, at most `n`), for computing a matrix too large to hold at once.
    pub fn rows_per_block(&self, budget_bytes: usize, elem_bytes: usize) -> usize {
        let row = self.m.saturating_mul(elem_bytes).max(1);
        (budget_bytes / row).clamp(1, self.n)
    }
}

/// `1 / max(‖v‖, eps)` from the squared norm, or 0 when that maximum is 0 (a zero vector with
/// eps = 0), so that a zero vector's similarities are 0 rather than NaN. Every pairwise result
/// scales dot products by these: `S[i, j] = clamp(dot · inv_a[i] · inv_b[j])`, 0 when the dot
/// is 0.
#[inline]
pub fn inv_norm(norm_sq: f64, eps: f64) -> f64 {
    let n = norm_sq.sqrt().max(eps);
    if n == 0.0 {
        0.0
    } else {
        1.0 / n
    }
}

/// The ranking order of top-k and argmax: does value `v` at column `i` come before `w` at `j`?
/// Larger first, NaN above everything (as `torch.topk`), −0 equal to +0, and ties (including
/// NaN with NaN) broken by the lower column index.
#[inline]
pub fn outranks(v: f64, i: usize, w: f64, j: usize) -> bool {
    match (v.is_nan(), w.is_nan()) {
        (true, true) => i < j,
        (true, false) => true,
        (false, true) => false,
        (false, false) => v > w || (v == w && i < j),
    }
}

/// BERTScore's F1 from greedy-match precision and recall: `2PR / (P + R)`, 0 when P + R is 0.
#[inline]
pub fn f1(precision: f64, recall: f64) -> f64 {
    let s = precision + recall;
    if s == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / s
    }
}

/// Top-k per row: values sorted by [`outranks`] and their column indices, shape
/// `[B, N, k]` (or `[B, N]` for argmax, where k = 1 is dropped from the shape).
#[derive(Clone, Debug, PartialEq)]
pub struct TopK<V, I> {
    pub values: V,
    pub indices: I,
    pub shape: Vec<usize>,
}

/// Greedy best-match scores of two sets, one per batch (shape `[B]` or `[]`), as BERTScore
/// computes them with `a` the candidate and `b` the reference:
/// - `precision`: the (weighted) mean over the vectors of `a` of their best similarity in `b`
///   (the mean of the row maxima of the matrix);
/// - `recall`: the same over the vectors of `b` (the mean of the column maxima);
/// - `f1`: `2PR / (P + R)`.
#[derive(Clone, Debug, PartialEq)]
pub struct SetScores<V> {
    pub precision: V,
    pub recall: V,
    pub f1: V,
    pub shape: Vec<usize>,
}

/// A pairwise operation, as the sizing functions name it (the device memory a call takes
/// depends on which result it computes: `Cuda::pair_workspace_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairOp {
    /// The whole matrix `[B, N, M]`.
    Matrix,
    /// The matrix in blocks of whole rows of at most `budget` bytes each.
    MatrixBlocks { budget: usize },
    /// The `k` best of every row.
    TopK(usize),
    /// Every row's best.
    Argmax,
    /// Every row's mean.
    RowMean,
    /// Every matrix's mean.
    Mean,
    /// Greedy matching scores (precision, recall, F1).
    SetSimilarity,
}

/// One finished block of rows of a matrix computed block by block.
#[derive(Debug)]
pub struct MatrixBlock<V> {
    /// Which matrix of the batch.
    pub batch: usize,
    /// First row of the block; the block holds rows `row..row + rows`.
    pub row: usize,
    pub rows: usize,
    /// `rows × m` values, row-major.
    pub values: V,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_cols_strides() {
        let p = PairPlan::new(&[3, 5], Layout::Rows, &[5, 7], Layout::Cols).unwrap();
        assert_eq!((p.batch, p.batched, p.n, p.m, p.d), (1, false, 3, 7, 5));
        assert_eq!(
            p.a,
            SetStrides {
                batch: 0,
                vec: 5,
                comp: 1
            }
        );
        assert_eq!(
            p.b,
            SetStrides {
                batch: 0,
                vec: 1,
                comp: 7
            }
        );
        assert_eq!(p.b.at(0, 2, 3), 3 * 7 + 2);
        assert_eq!(p.matrix_shape(), vec![3, 7]);
        assert_eq!(p.batch_shape(), Vec::<usize>::new());
        assert!(p.check_inputs(15, 35).is_ok());
        assert!(matches!(
            p.check_inputs(15, 34),
            Err(Error::LenMismatch { what: "b", .. })
        ));
    }

    #[test]
    fn batches_and_shared_sets() {
        let p = PairPlan::new(&[4, 6, 2], Layout::Cols, &[9, 6], Layout::Rows).unwrap();
        assert_eq!((p.batch, p.batched, p.n, p.m, p.d), (4, true, 2, 9, 6));
        assert_eq!(
            p.a,
            SetStrides {
                batch: 12,
                vec: 1,
                comp: 2
            }
        );
        assert_eq!(p.b.batch, 0);
        assert_eq!(p.matrix_shape(), vec![4, 2, 9]);
        assert_eq!(p.top_k_shape(3), vec![4, 2, 3]);
        assert_eq!(p.row_shape(), vec![4, 2]);
        assert_eq!((p.a_vectors(), p.b_vectors()), (8, 9));
        let e = PairPlan::new(&[4, 6, 2], Layout::Cols, &[3, 9, 6], Layout::Rows).unwrap_err();
        assert!(e.to_string().contains("batch sizes"), "{e}");
    }

    #[test]
    fn bad_shapes_are_errors() {
        let e = PairPlan::new(&[3], Layout::Rows, &[3, 3], Layout::Rows).unwrap_err();
        assert!(matches!(e, Error::PairShape { which: "a", .. }), "{e}");
        assert!(
            e.to_string().ends_with("must be [N, D] or [B, N, D]"),
            "{e}"
        );
        let e = PairPlan::new(&[3, 4], Layout::Rows, &[3, 4], Layout::Cols).unwrap_err();
        assert!(e.to_string().contains("vector lengths"), "{e}");
        let e = PairPlan::new(&[3, 4], Layout::Rows, &[4, 0], Layout::Cols).unwrap_err();
        assert!(matches!(e, Error::EmptySet { which: "b", .. }), "{e}");
        let e = PairPlan::new(&[0, 3, 4], Layout::Rows, &[3, 4], Layout::Rows).unwrap_err();
        assert!(matches!(e, Error::EmptySet { which: "a", .. }), "{e}");
        // Zero-length vectors are fine: every similarity is 0.
        let p = PairPlan::new(&[3, 0], Layout::Rows, &[0, 2], Layout::Cols).unwrap();
        assert_eq!(
            (p.n, p.m, p.d, p.a_vectors(), p.b_vectors()),
            (3, 2, 0, 3, 2)
        );
    }

    #[test]
    fn k_eps_weights_and_blocks() {
        let p = PairPlan::new(&[3, 4], Layout::Rows, &[5, 4], Layout::Rows).unwrap();
        assert!(p.check_k(1).is_ok() && p.check_k(5).is_ok());
        assert!(matches!(p.check_k(0), Err(Error::BadK { k: 0, m: 5 })));
        assert!(matches!(p.check_k(6), Err(Error::BadK { k: 6, m: 5 })));
        assert!(matches!(p.clone().eps(Some(-1.0)), Err(Error::BadEps(_))));
        assert_eq!(p.clone().eps(Some(0.5)).unwrap().eps, 0.5);
        assert!(p.check_weights(Some(3), None).is_ok());
        assert!(p.check_weights(None, Some(4)).is_err());
        assert_eq!(p.rows_per_block(40, 4), 2);
        assert_eq!(p.rows_per_block(1, 4), 1);
        assert_eq!(p.rows_per_block(1 << 30, 4), 3);
    }

    #[test]
    fn ranking_order() {
        assert!(outranks(2.0, 5, 1.0, 0));
        assert!(outranks(1.0, 0, 1.0, 1) && !outranks(1.0, 1, 1.0, 0));
        assert!(outranks(0.0, 0, -0.0, 1) && outranks(-0.0, 0, 0.0, 1));
        assert!(outranks(f64::NAN, 9, f64::INFINITY, 0));
        assert!(!outranks(1.0, 0, f64::NAN, 9));
        assert!(outranks(f64::NAN, 1, f64::NAN, 2));
    }

    #[test]
    fn norms_and_f1() {
        assert_eq!(inv_norm(4.0, 1e-8), 0.5);
        assert_eq!(inv_norm(0.0, 0.5), 2.0);
        assert_eq!(inv_norm(0.0, 0.0), 0.0);
        assert_eq!(f1(0.0, 0.0), 0.0);
        assert!((f1(0.5, 1.0) - 2.0 / 3.0).abs() < 1e-15);
    }
}
