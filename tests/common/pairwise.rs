//! Independent f64 reference of pairwise similarity (SPEC §2). It does not use cosim's
//! `PairPlan`: it reads each set's vectors out of its buffer from the shape and layout
//! itself, pairs the batches itself (a set without a batch dim is used by every batch), and
//! computes everything brute force in f64 on the materialised matrix.

use super::cosine_f64;
use cosim::pairwise::Layout;
use cosim::Element;
use std::cmp::Ordering;

/// A set as the reference sees it: `vecs[batch][i][k]`, and whether it had a batch dim.
#[derive(Clone, Debug)]
pub struct RefSet {
    pub vecs: Vec<Vec<Vec<f64>>>,
    pub batched: bool,
}

impl RefSet {
    /// Reads `x` of `shape` (`[N, D]`/`[B, N, D]` for rows, `[D, N]`/`[B, D, N]` for
    /// columns) element by element.
    pub fn read<T: Element>(x: &[T], shape: &[usize], layout: Layout) -> RefSet {
        let (batches, rest) = match shape.len() {
            2 => (1, shape),
            3 => (shape[0], &shape[1..]),
            r => panic!("reference: rank {r}"),
        };
        let (count, d) = match layout {
            Layout::Rows => (rest[0], rest[1]),
            Layout::Cols => (rest[1], rest[0]),
        };
        assert_eq!(
            x.len(),
            batches * count * d,
            "reference: buffer of {shape:?}"
        );
        let vecs = (0..batches)
            .map(|b| {
                (0..count)
                    .map(|i| {
                        (0..d)
                            .map(|k| {
                                let within = match layout {
                                    // Row i, column k of a [count, d] matrix.
                                    Layout::Rows => i * d + k,
                                    // Row k, column i of a [d, count] matrix.
                                    Layout::Cols => k * count + i,
                                };
                                x[b * count * d + within].to_f64()
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        RefSet {
            vecs,
            batched: shape.len() == 3,
        }
    }

    /// The vectors matrix `b` uses.
    pub fn batch(&self, b: usize) -> &[Vec<f64>] {
        if self.batched {
            &self.vecs[b]
        } else {
            &self.vecs[0]
        }
    }

    pub fn count(&self) -> usize {
        self.vecs[0].len()
    }
}

/// The reference matrices `s[b][i][j]`, computed brute force in f64.
#[derive(Clone, Debug)]
pub struct RefMatrix {
    pub s: Vec<Vec<Vec<f64>>>,
    /// Whether the result carries a batch dim.
    pub batched: bool,
}

impl RefMatrix {
    pub fn new(a: &RefSet, b: &RefSet, eps: f64) -> RefMatrix {
        let batches = match (a.batched, b.batched) {
            (true, true) => {
                assert_eq!(a.vecs.len(), b.vecs.len(), "reference: batch sizes");
                a.vecs.len()
            }
            (true, false) => a.vecs.len(),
            (false, true) => b.vecs.len(),
            (false, false) => 1,
        };
        let s = (0..batches)
            .map(|bi| {
                a.batch(bi)
                    .iter()
                    .map(|x| b.batch(bi).iter().map(|y| cosine(x, y, eps)).collect())
                    .collect()
            })
            .collect();
        RefMatrix {
            s,
            batched: a.batched || b.batched,
        }
    }

    /// Reads both sets and computes the matrices.
    pub fn of<T: Element>(
        a: &[T],
        a_shape: &[usize],
        a_layout: Layout,
        b: &[T],
        b_shape: &[usize],
        b_layout: Layout,
        eps: f64,
    ) -> RefMatrix {
        RefMatrix::new(
            &RefSet::read(a, a_shape, a_layout),
            &RefSet::read(b, b_shape, b_layout),
            eps,
        )
    }

    pub fn batches(&self) -> usize {
        self.s.len()
    }
    pub fn n(&self) -> usize {
        self.s[0].len()
    }
    pub fn m(&self) -> usize {
        self.s[0][0].len()
    }

    /// The leading dims of every result: `[B]` when batched, else none.
    pub fn lead(&self) -> Vec<usize> {
        if self.batched {
            vec![self.batches()]
        } else {
            vec![]
        }
    }

    /// All entries, row-major `[B, N, M]`.
    pub fn flat(&self) -> Vec<f64> {
        self.s.iter().flatten().flatten().copied().collect()
    }

    /// The mean of every entry of each matrix.
    pub fn means(&self) -> Vec<f64> {
        self.s
            .iter()
            .map(|m| m.iter().flatten().sum::<f64>() / (self.n() * self.m()) as f64)
            .collect()
    }

    /// The mean of each row, `[B, N]` flat.
    pub fn row_means(&self) -> Vec<f64> {
        self.s
            .iter()
            .flatten()
            .map(|r| r.iter().sum::<f64>() / r.len() as f64)
            .collect()
    }

    /// Row `i` of matrix `b`, ranked: (value, column) best first — larger first, NaN above
    /// everything, equal values by the lower column.
    pub fn ranked(&self, b: usize, i: usize) -> Vec<(f64, usize)> {
        let mut r: Vec<(f64, usize)> = self.s[b][i].iter().copied().zip(0..).collect();
        r.sort_by(|x, y| rank_order(*x, *y));
        r
    }

    /// Greedy-match (precision, recall, f1) of each matrix, brute force: maxima over the
    /// materialised rows and columns (NaN wins), weighted means.
    pub fn greedy(&self, wa: Option<&[Vec<f64>]>, wb: Option<&[Vec<f64>]>) -> Vec<[f64; 3]> {
        (0..self.batches())
            .map(|b| {
                let m = &self.s[b];
                let row_max: Vec<f64> = m.iter().map(|r| max_nan(r.iter().copied())).collect();
                let col_max: Vec<f64> = (0..self.m())
                    .map(|j| max_nan(m.iter().map(|r| r[j])))
                    .collect();
                let wmean = |x: &[f64], w: Option<&[f64]>| match w {
                    None => x.iter().sum::<f64>() / x.len() as f64,
                    Some(w) => {
                        x.iter().zip(w).map(|(x, w)| x * w).sum::<f64>() / w.iter().sum::<f64>()
                    }
                };
                let p = wmean(&row_max, wa.map(|w| &w[b][..]));
                let r = wmean(&col_max, wb.map(|w| &w[b][..]));
                let f = if p + r == 0.0 {
                    0.0
                } else {
                    2.0 * p * r / (p + r)
                };
                [p, r, f]
            })
            .collect()
    }
}

/// Per-vector weights of a set, split per batch the way the reference pairs them: `w` has
/// one value per vector of the set (all its batches); matrix `b` uses its own batch's.
pub fn split_weights(w: &[f64], set: &RefSet, batches: usize) -> Vec<Vec<f64>> {
    let n = set.count();
    (0..batches)
        .map(|b| {
            let own = if set.batched { b } else { 0 };
            w[own * n..(own + 1) * n].to_vec()
        })
        .collect()
}

/// Maximum with NaN above everything.
fn max_nan(x: impl Iterator<Item = f64>) -> f64 {
    x.fold(f64::NEG_INFINITY, |m, v| {
        if v.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(v)
        }
    })
}

/// Best first: NaN above everything, larger first, −0 equal to +0, then the lower index.
pub fn rank_order(x: (f64, usize), y: (f64, usize)) -> Ordering {
    let by_value = match (x.0.is_nan(), y.0.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        // Descending; partial_cmp treats -0 == +0.
        (false, false) => y.0.partial_cmp(&x.0).unwrap_or(Ordering::Equal),
    };
    by_value.then(x.1.cmp(&y.1))
}

/// The cosine of two f64 vectors by SPEC §2's formula.
pub fn cosine(x: &[f64], y: &[f64], eps: f64) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
    let nx: f64 = x.iter().map(|a| a * a).sum();
    let ny: f64 = y.iter().map(|a| a * a).sum();
    cosine_f64(dot, nx, ny, eps)
}

/// The shape of a set of `count` vectors of `d` components in `layout`, with an optional
/// batch dim.
pub fn set_shape(batch: Option<usize>, count: usize, d: usize, layout: Layout) -> Vec<usize> {
    let mut s = match layout {
        Layout::Rows => vec![count, d],
        Layout::Cols => vec![d, count],
    };
    if let Some(b) = batch {
        s.insert(0, b);
    }
    s
}
