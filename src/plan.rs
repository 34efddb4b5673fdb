//! Shapes → a validated plan: broadcasting, dim wrapping and the canonical iteration space that
//! both backends execute. All of cosim's shape semantics live here, once.

use crate::error::{Error, Result};

/// Largest rank accepted; mirrors `COSIM_MAX_DIMS` in `kernels/params.h`.
pub const MAX_DIMS: usize = 8;

/// PyTorch's default eps for `cosine_similarity`.
pub const DEFAULT_EPS: f64 = 1e-8;

/// One axis of an iteration space: its length and the element stride of each input along it
/// (0 where that input is broadcast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axis {
    pub len: usize,
    pub stride1: usize,
    pub stride2: usize,
}

/// How a backend should walk a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Every reduced vector is contiguous in both inputs: one row per output.
    Rows,
    /// The reduced vectors are strided: threads run along the innermost kept axis.
    Along,
}

/// A validated cosine-similarity problem: `out[o] = cos(x1[off1(o) + k·rs1], x2[off2(o) + k·rs2])`
/// over `k < reduce.len`, for every output index `o` of the row-major, contiguous output.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The shape of the result, as the user sees it.
    pub out_shape: Vec<usize>,
    /// The two input shapes broadcast together.
    pub broadcast_shape: Vec<usize>,
    /// The kept axes, merged where both inputs allow and without size-1 axes; row-major,
    /// outermost first. The output is contiguous over them.
    pub outer: Vec<Axis>,
    /// The reduced axis.
    pub reduce: Axis,
    /// The clamp applied to each norm.
    pub eps: f64,
    /// Element counts the two inputs must have.
    pub len1: usize,
    pub len2: usize,
}

/// Checked product of a shape.
pub fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::SizeOverflow {
            shape: shape.to_vec(),
        })
}

/// Row-major contiguous element strides of a shape.
fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc = acc.saturating_mul(d);
    }
    strides
}

/// Validates eps (default 1e-8): a number ≥ 0.
pub fn check_eps(eps: Option<f64>) -> Result<f64> {
    let eps = eps.unwrap_or(DEFAULT_EPS);
    if eps.is_nan() || eps < 0.0 {
        return Err(Error::BadEps(eps));
    }
    Ok(eps)
}

/// NumPy broadcasting of two shapes: the result shape and each input's strides against it
/// (0 along broadcast dims).
pub fn broadcast(
    shape1: &[usize],
    shape2: &[usize],
) -> Result<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    for s in [shape1, shape2] {
        if s.len() > MAX_DIMS {
            return Err(Error::RankTooLarge { shape: s.to_vec() });
        }
        numel(s)?;
    }
    let rank = shape1.len().max(shape2.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut v = vec![1; rank - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (p1, p2) = (pad(shape1), pad(shape2));
    let (c1, c2) = (contiguous_strides(&p1), contiguous_strides(&p2));
    let mut shape = Vec::with_capacity(rank);
    let mut st1 = Vec::with_capacity(rank);
    let mut st2 = Vec::with_capacity(rank);
    for d in 0..rank {
        let (a, b) = (p1[d], p2[d]);
        let size = match (a, b) {
            _ if a == b => a,
            (1, _) => b,
            (_, 1) => a,
            _ => {
                return Err(Error::Broadcast {
                    shape1: shape1.to_vec(),
                    shape2: shape2.to_vec(),
                    dim: d,
                    rank,
                    size1: a,
                    size2: b,
                })
            }
        };
        shape.push(size);
        st1.push(if a == 1 { 0 } else { c1[d] });
        st2.push(if b == 1 { 0 } else { c2[d] });
    }
    numel(&shape)?;
    Ok((shape, st1, st2))
}

/// Wraps a PyTorch-style dim (negative counts from the end) against `rank`; a rank-0 shape
/// accepts dims −1 and 0, as in PyTorch.
pub fn wrap_dim(dim: isize, shape: &[usize]) -> Result<usize> {
    let r = shape.len().max(1) as isize;
    if dim < -r || dim >= r {
        return Err(Error::DimOutOfRange {
            dim,
            rank: shape.len(),
            shape: shape.to_vec(),
        });
    }
    Ok(if dim < 0 {
        (dim + r) as usize
    } else {
        dim as usize
    })
}

/// Merges adjacent axes that both inputs traverse with one stride, and drops size-1 axes.
fn merge_axes(axes: impl IntoIterator<Item = Axis>) -> Vec<Axis> {
    let mut out: Vec<Axis> = Vec::new();
    for a in axes.into_iter().filter(|a| a.len != 1) {
        if let Some(last) = out.last_mut() {
            if last.len != 0
                && a.len != 0
                && last.stride1 == a.stride1 * a.len
                && last.stride2 == a.stride2 * a.len
            {
                last.len *= a.len;
                last.stride1 = a.stride1;
                last.stride2 = a.stride2;
                continue;
            }
        }
        out.push(a);
    }
    out
}

impl Plan {
    /// `cosine_similarity(x1, x2, dim, eps)` with PyTorch semantics: broadcast the shapes, wrap
    /// `dim` against the broadcast rank, reduce along it.
    pub fn along(shape1: &[usize], shape2: &[usize], dim: isize, eps: Option<f64>) -> Result<Plan> {
        let eps = check_eps(eps)?;
        let (shape, st1, st2) = broadcast(shape1, shape2)?;
        let d = wrap_dim(dim, &shape)?;
        let (reduce, kept) = if shape.is_empty() {
            // A scalar is a vector of length one.
            (
                Axis {
                    len: 1,
                    stride1: 1,
                    stride2: 1,
                },
                Vec::new(),
            )
        } else {
            let reduce = Axis {
                len: shape[d],
                stride1: st1[d],
                stride2: st2[d],
            };
            let kept = (0..shape.len())
                .filter(|&i| i != d)
                .map(|i| Axis {
                    len: shape[i],
                    stride1: st1[i],
                    stride2: st2[i],
                })
                .collect::<Vec<_>>();
            (reduce, kept)
        };
        let out_shape = kept.iter().map(|a| a.len).collect();
        Ok(Plan::finish(
            out_shape, shape, kept, reduce, eps, shape1, shape2,
        ))
    }

    /// Per-channel cosine of flattened maps (`view(N, C, -1)` then dim=2, without the view):
    /// broadcast the shapes, keep dims `..flatten_from`, flatten the rest into one vector.
    pub fn flattened(
        shape1: &[usize],
        shape2: &[usize],
        flatten_from: usize,
        eps: Option<f64>,
    ) -> Result<Plan> {
        let eps = check_eps(eps)?;
        let (shape, st1, st2) = broadcast(shape1, shape2)?;
        if flatten_from >= shape.len() {
            return Err(Error::FlattenOutOfRange {
                from: flatten_from,
                shape,
            });
        }
        let tail = flatten_from..shape.len();
        let len = numel(&shape[tail.clone()])?;
        let flat_stride = |strides: &[usize], input: u8, own: &[usize]| -> Result<usize> {
            // Either the whole flattened block is broadcast (stride 0), or it is contiguous.
            if len == 0 {
                return Ok(1); // an empty vector reads nothing: any stride will do
            }
            let live: Vec<usize> = tail.clone().filter(|&i| shape[i] != 1).collect();
            if live.iter().all(|&i| strides[i] == 0) {
                return Ok(if len <= 1 { 1 } else { 0 });
            }
            let merged = merge_axes(live.iter().map(|&i| Axis {
                len: shape[i],
                stride1: strides[i],
                stride2: strides[i],
            }));
            match merged.as_slice() {
                [a] if a.stride1 != 0 => Ok(a.stride1),
                _ => Err(Error::PartialFlattenBroadcast {
                    input,
                    shape: own.to_vec(),
                    broadcast: shape.clone(),
                    from: flatten_from,
                }),
            }
        };
        let reduce = Axis {
            len,
            stride1: flat_stride(&st1, 1, shape1)?,
            stride2: flat_stride(&st2, 2, shape2)?,
        };
        let kept: Vec<Axis> = (0..flatten_from)
            .map(|i| Axis {
                len: shape[i],
                stride1: st1[i],
                stride2: st2[i],
            })
            .collect();
        let out_shape = shape[..flatten_from].to_vec();
        Ok(Plan::finish(
            out_shape, shape, kept, reduce, eps, shape1, shape2,
        ))
    }

    fn finish(
        out_shape: Vec<usize>,
        broadcast_shape: Vec<usize>,
        kept: Vec<Axis>,
        mut reduce: Axis,
        eps: f64,
        shape1: &[usize],
        shape2: &[usize],
    ) -> Plan {
        // A reduced axis of one element reads only its first element: any stride will do, and
        // stride 1 lets the contiguous-row kernels take it.
        if reduce.len <= 1 {
            reduce.stride1 = 1;
            reduce.stride2 = 1;
        }
        // An empty reduction reads nothing: zero strides keep every offset inside the
        // (possibly empty) inputs, so no backend needs a special case for it.
        let mut kept = kept;
        if reduce.len == 0 {
            for a in &mut kept {
                a.stride1 = 0;
                a.stride2 = 0;
            }
        }
        // Shapes were validated by `broadcast`, so these products cannot overflow.
        let len1 = shape1.iter().product();
        let len2 = shape2.iter().product();
        Plan {
            out_shape,
            broadcast_shape,
            outer: merge_axes(kept),
            reduce,
            eps,
            len1,
            len2,
        }
    }

    /// Shape of a reweighted tensor: the broadcast shape (kept dims, then the flattened ones).
    pub fn weighted_shape(&self) -> Vec<usize> {
        self.broadcast_shape.clone()
    }

    /// Whether an input of `len` elements is dense in this plan: read by exactly one output
    /// at exactly one step of the reduction, element for element (it is broadcast nowhere), so
    /// its gradient is written once per element rather than summed.
    pub fn reads_each_once(&self, len: usize) -> bool {
        self.reduce.len > 0 && len == self.out_len() * self.reduce.len
    }

    /// Number of output elements.
    pub fn out_len(&self) -> usize {
        self.out_shape.iter().product()
    }

    /// Which kernel family fits: contiguous rows, or strided vectors along an axis.
    pub fn strategy(&self) -> Strategy {
        if self.reduce.stride1 == 1 && self.reduce.stride2 == 1 {
            Strategy::Rows
        } else {
            Strategy::Along
        }
    }

    /// The innermost kept axis (the one threads run along), and the axes outside it.
    pub fn split_inner(&self) -> (&[Axis], Axis) {
        match self.outer.split_last() {
            Some((inner, rest)) => (rest, *inner),
            None => (
                &[],
                Axis {
                    len: 1,
                    stride1: 0,
                    stride2: 0,
                },
            ),
        }
    }

    /// Errors unless the two input buffers have the lengths their shapes promise.
    pub fn check_inputs(
        &self,
        len1: usize,
        len2: usize,
        shape1: &[usize],
        shape2: &[usize],
    ) -> Result<()> {
        for (what, len, expected, shape) in [
            ("x1", len1, self.len1, shape1),
            ("x2", len2, self.len2, shape2),
        ] {
            if len != expected {
                return Err(Error::LenMismatch {
                    what,
                    len,
                    shape: shape.to_vec(),
                    expected,
                });
            }
        }
        Ok(())
    }

    /// Errors unless an output buffer holds exactly the result.
    pub fn check_out(&self, what: &'static str, len: usize) -> Result<()> {
        check_out_len(what, len, &self.out_shape)
    }
}

/// Errors unless `len` is the element count of `shape`.
pub fn check_out_len(what: &'static str, len: usize, shape: &[usize]) -> Result<()> {
    let expected: usize = shape.iter().product();
    if len != expected {
        return Err(Error::OutLenMismatch {
            what,
            len,
            shape: shape.to_vec(),
            expected,
        });
    }
    Ok(())
}

/// Offsets of output vector `o` in the two inputs, for the row-major multi-index over `axes`.
#[inline]
pub fn offsets(axes: &[Axis], mut o: usize) -> (usize, usize) {
    let (mut off1, mut off2) = (0, 0);
    for a in axes.iter().rev() {
        let i = o % a.len;
        o /= a.len;
        off1 += i * a.stride1;
        off2 += i * a.stride2;
    }
    (off1, off2)
}

/// Offsets of consecutive output vectors, advanced by carrying through the multi-index
/// instead of dividing for every vector.
#[derive(Clone, Debug)]
pub struct Walk<'a> {
    axes: &'a [Axis],
    idx: [usize; MAX_DIMS],
    off: (usize, usize),
}

impl<'a> Walk<'a> {
    /// Starts at output vector `start`.
    pub fn new(axes: &'a [Axis], start: usize) -> Walk<'a> {
        let mut idx = [0; MAX_DIMS];
        let mut o = start;
        for (d, a) in axes.iter().enumerate().rev() {
            idx[d] = o % a.len.max(1);
            o /= a.len.max(1);
        }
        Walk {
            axes,
            idx,
            off: offsets(axes, start),
        }
    }

    /// Offsets of the current vector in the two inputs.
    #[inline(always)]
    pub fn offsets(&self) -> (usize, usize) {
        self.off
    }

    /// Moves to the next output vector.
    #[inline(always)]
    pub fn advance(&mut self) {
        for (d, a) in self.axes.iter().enumerate().rev() {
            self.idx[d] += 1;
            self.off.0 += a.stride1;
            self.off.1 += a.stride2;
            if self.idx[d] < a.len {
                return;
            }
            self.idx[d] = 0;
            self.off.0 -= a.stride1 * a.len;
            self.off.1 -= a.stride2 * a.len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ax(len: usize, stride1: usize, stride2: usize) -> Axis {
        Axis {
            len,
            stride1,
            stride2,
        }
    }

    #[test]
    fn broadcast_table() {
        let cases: &[(&[usize], &[usize], &[usize])] = &[
            (&[], &[], &[]),
            (&[3], &[], &[3]),
            (&[2, 3], &[3], &[2, 3]),
            (&[2, 1], &[1, 3], &[2, 3]),
            (&[64, 256, 128, 128], &[1, 256, 1, 1], &[64, 256, 128, 128]),
            (&[0, 3], &[1, 3], &[0, 3]),
            (&[0], &[1], &[0]),
            (&[5, 1, 4], &[3, 1], &[5, 3, 4]),
        ];
        for (a, b, want) in cases {
            let (s, _, _) = broadcast(a, b).unwrap();
            assert_eq!(&s, want, "{a:?} vs {b:?}");
            let (s, _, _) = broadcast(b, a).unwrap();
            assert_eq!(&s, want, "{b:?} vs {a:?}");
        }
    }

    #[test]
    fn broadcast_strides() {
        let (_, s1, s2) = broadcast(&[2, 1, 4], &[3, 1]).unwrap();
        assert_eq!(s1, vec![4, 0, 1]);
        assert_eq!(s2, vec![0, 1, 0]);
    }

    #[test]
    fn broadcast_errors_name_both_shapes_and_the_dim() {
        let e = broadcast(&[2, 3], &[4, 3]).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(
            e,
            Error::Broadcast {
                dim: 0,
                size1: 2,
                size2: 4,
                ..
            }
        ));
        assert!(
            msg.contains("[2, 3]") && msg.contains("[4, 3]") && msg.contains("dim 0"),
            "{msg}"
        );
        assert!(matches!(
            broadcast(&[0], &[3]),
            Err(Error::Broadcast { .. })
        ));
        assert!(matches!(
            broadcast(&[1; 9], &[1]),
            Err(Error::RankTooLarge { .. })
        ));
        assert!(matches!(
            broadcast(&[usize::MAX, 2], &[1]),
            Err(Error::SizeOverflow { .. })
        ));
    }

    #[test]
    fn dim_wrapping() {
        let s = [2, 3, 4];
        assert_eq!(wrap_dim(0, &s).unwrap(), 0);
        assert_eq!(wrap_dim(2, &s).unwrap(), 2);
        assert_eq!(wrap_dim(-1, &s).unwrap(), 2);
        assert_eq!(wrap_dim(-3, &s).unwrap(), 0);
        let e = wrap_dim(3, &s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "dim 3 is out of range for the broadcast shape [2, 3, 4] (expected -3..=2)"
        );
        assert!(wrap_dim(-4, &s).is_err());
        // Rank 0 behaves as rank 1, like PyTorch.
        assert_eq!(wrap_dim(0, &[]).unwrap(), 0);
        assert_eq!(wrap_dim(-1, &[]).unwrap(), 0);
        assert!(wrap_dim(1, &[]).is_err());
    }

    #[test]
    fn eps_validation() {
        assert_eq!(check_eps(None).unwrap(), 1e-8);
        assert_eq!(check_eps(Some(0.0)).unwrap(), 0.0);
        assert!(matches!(check_eps(Some(-1e-3)), Err(Error::BadEps(_))));
        assert!(matches!(check_eps(Some(f64::NAN)), Err(Error::BadEps(_))));
        assert!(Plan::along(&[2], &[2], 0, Some(-1.0)).is_err());
    }

    #[test]
    fn nchw_dim1_is_strided_along_merged_pixels() {
        let p = Plan::along(&[64, 256, 128, 128], &[64, 256, 128, 128], 1, None).unwrap();
        assert_eq!(p.out_shape, vec![64, 128, 128]);
        assert_eq!(p.reduce, ax(256, 16384, 16384));
        assert_eq!(
            p.outer,
            vec![ax(64, 256 * 16384, 256 * 16384), ax(16384, 1, 1)]
        );
        assert_eq!(p.strategy(), Strategy::Along);
        let (rest, inner) = p.split_inner();
        assert_eq!(inner, ax(16384, 1, 1));
        assert_eq!(rest.len(), 1);
    }

    #[test]
    fn prototype_broadcast_keeps_stride_zero() {
        let p = Plan::along(&[64, 256, 128, 128], &[1, 256, 1, 1], 1, None).unwrap();
        assert_eq!(p.reduce, ax(256, 16384, 1));
        assert_eq!(p.outer, vec![ax(64, 256 * 16384, 0), ax(16384, 1, 0)]);
        assert_eq!((p.len1, p.len2), (64 * 256 * 128 * 128, 256));
    }

    #[test]
    fn last_dim_is_rows() {
        let p = Plan::along(&[8, 1 << 25], &[8, 1 << 25], -1, None).unwrap();
        assert_eq!(p.strategy(), Strategy::Rows);
        assert_eq!(p.outer, vec![ax(8, 1 << 25, 1 << 25)]);
        assert_eq!(p.out_shape, vec![8]);
    }

    #[test]
    fn rank0_and_rank1() {
        let p = Plan::along(&[], &[], 0, None).unwrap();
        assert_eq!(p.out_shape, Vec::<usize>::new());
        assert_eq!(p.out_len(), 1);
        assert_eq!(p.reduce.len, 1);
        let p = Plan::along(&[5], &[5], -1, None).unwrap();
        assert_eq!(p.out_shape, Vec::<usize>::new());
        assert_eq!(p.reduce, ax(5, 1, 1));
        // A rank-0 input broadcasts against a vector.
        let p = Plan::along(&[], &[5], 0, None).unwrap();
        assert_eq!(p.reduce, ax(5, 0, 1));
        assert_eq!(p.strategy(), Strategy::Along);
    }

    #[test]
    fn size_zero_dims() {
        let p = Plan::along(&[0, 3], &[0, 3], 1, None).unwrap();
        assert_eq!(p.out_shape, vec![0]);
        assert_eq!(p.out_len(), 0);
        let p = Plan::along(&[3, 0], &[3, 0], 1, None).unwrap();
        assert_eq!(p.out_shape, vec![3]);
        assert_eq!(p.reduce.len, 0);
    }

    #[test]
    fn flattened_per_channel() {
        let p = Plan::flattened(&[4, 3, 10, 10], &[4, 3, 10, 10], 2, None).unwrap();
        assert_eq!(p.out_shape, vec![4, 3]);
        assert_eq!(p.reduce, ax(100, 1, 1));
        assert_eq!(p.outer, vec![ax(12, 100, 100)]);
        assert_eq!(p.strategy(), Strategy::Rows);
        // A whole broadcast channel is a constant vector.
        let p = Plan::flattened(&[4, 3, 10, 10], &[4, 3, 1, 1], 2, None).unwrap();
        assert_eq!(p.reduce, ax(100, 1, 0));
        // Part-broadcast flattened dims have no single stride.
        let e = Plan::flattened(&[4, 3, 10, 10], &[4, 3, 1, 10], 2, None).unwrap_err();
        assert!(
            matches!(e, Error::PartialFlattenBroadcast { input: 2, .. }),
            "{e}"
        );
        assert!(matches!(
            Plan::flattened(&[4, 3], &[4, 3], 2, None),
            Err(Error::FlattenOutOfRange { from: 2, .. })
        ));
        // Size-1 dims inside the flattened block are fine.
        let p = Plan::flattened(&[2, 3, 1, 5], &[2, 3, 1, 5], 2, None).unwrap();
        assert_eq!(p.reduce, ax(5, 1, 1));
    }

    #[test]
    fn offsets_follow_row_major_order() {
        let axes = [ax(2, 100, 0), ax(3, 10, 1)];
        let got: Vec<_> = (0..6).map(|o| offsets(&axes, o)).collect();
        assert_eq!(
            got,
            vec![(0, 0), (10, 1), (20, 2), (100, 0), (110, 1), (120, 2)]
        );
    }

    #[test]
    fn walk_matches_offsets() {
        let axes = [ax(3, 100, 0), ax(1, 7, 7), ax(4, 10, 1)];
        for start in 0..12 {
            let mut w = Walk::new(&axes, start);
            for o in start..12 {
                assert_eq!(w.offsets(), offsets(&axes, o), "start {start}, o {o}");
                w.advance();
            }
        }
        let mut w = Walk::new(&[], 0);
        w.advance();
        assert_eq!(w.offsets(), (0, 0));
    }

    #[test]
    fn length_checks() {
        let p = Plan::along(&[2, 3], &[3], 1, None).unwrap();
        assert!(p.check_inputs(6, 3, &[2, 3], &[3]).is_ok());
        let e = p.check_inputs(5, 3, &[2, 3], &[3]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x1 has 5 elements but its shape [2, 3] holds 6"
        );
        assert!(p.check_out("out", 2).is_ok());
        assert!(matches!(
            p.check_out("out", 3),
            Err(Error::OutLenMismatch { .. })
        ));
    }
}
