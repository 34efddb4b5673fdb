//! A pairwise job split along its second set (the corpus, `b`): contiguous shards of `b`'s
//! vectors, each run anywhere (another GPU, another machine, another time) as an ordinary
//! pairwise problem on its slice of `b`, and the per-shard top-k or argmax lists merged into
//! the whole result.
//!
//! The merge is exact: every shard's list holds its `min(k, m_s)` best columns of each row,
//! sorted in the ranking order of [`crate::pairwise::outranks`] (larger first, NaN first,
//! ties to the lower column); with each shard's columns made global by its offset, the first
//! `k` of their merge in that order are the whole row's first `k`, ties across shard borders
//! included. For f32 and f64 that is bit for bit the unsharded result. For f16 and bf16 the
//! backends rank their f32 sums before rounding, while a merge can only compare the rounded
//! values: values equal once rounded may come in another order (or, at the k-th place, be
//! another column of that value).
//!
//! The same merge combines the chunks of one run (a set of `b` larger than a device, cut
//! into column blocks): [`merge_sorted`] adds one chunk's lists to the rows' best so far.

use crate::element::Element;
use crate::error::{Error, Result};
use crate::pairwise::{outranks, Layout};
use std::ops::Range;

/// Shard `index` of `count` equal (to within one vector) contiguous shards of a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Shard `index` of `count`.
    ///
    /// # Errors
    /// [`Error::BadShard`] unless `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if index >= count {
            return Err(Error::BadShard {
                spec: format!("{index}/{count}"),
                why: "the shard index must be below the number of shards (0-based)",
            });
        }
        Ok(Shard { index, count })
    }

    /// A shard written `I/N` (0-based `I` of `N`), as on the command line.
    ///
    /// # Errors
    /// [`Error::BadShard`] for anything else.
    pub fn parse(spec: &str) -> Result<Shard> {
        let bad = |why| Error::BadShard {
            spec: spec.to_owned(),
            why,
        };
        let (i, n) = spec
            .split_once('/')
            .ok_or_else(|| bad("write a shard as I/N, e.g. 0/4 for the first of four"))?;
        let num = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| bad("I and N must be integers"))
        };
        Shard::new(num(i)?, num(n)?)
    }

    /// The vectors `[start, end)` of a set of `m` this shard covers: shard `i` starts at
    /// `⌊i·m / count⌋`, so the shards tile `0..m` in order and differ by at most one vector.
    pub fn range(&self, m: usize) -> Range<usize> {
        let at = |i: usize| ((i as u128 * m as u128) / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }
}

/// Vectors `range` of every batch of a set (`shape` `[B?, count, D]` for rows, `[B?, D,
/// count]` for columns), as a set of its own with its shape: the shard's input. A rows set
/// without a batch dim is a sub-slice (borrowed); otherwise the vectors are gathered.
///
/// # Errors
/// [`Error::PairShape`] for a shape that is not a set, [`Error::LenMismatch`] for a buffer
/// of the wrong length, [`Error::BadShard`] for a range past the set's vectors.
pub fn slice_set<'a, T: Copy>(
    x: &'a [T],
    shape: &[usize],
    layout: Layout,
    range: Range<usize>,
) -> Result<(std::borrow::Cow<'a, [T]>, Vec<usize>)> {
    let (batch, inner) = match shape.len() {
        2 => (None, shape),
        3 => (Some(shape[0]), &shape[1..]),
        _ => {
            return Err(Error::PairShape {
                which: "b",
                shape: shape.to_vec(),
                layout,
            })
        }
    };
    let (count, d) = match layout {
        Layout::Rows => (inner[0], inner[1]),
        Layout::Cols => (inner[1], inner[0]),
    };
    let len = batch.unwrap_or(1) * count * d;
    if x.len() != len {
        return Err(Error::LenMismatch {
            what: "b",
            len: x.len(),
            shape: shape.to_vec(),
            expected: len,
        });
    }
    if range.start > range.end || range.end > count {
        return Err(Error::BadShard {
            spec: format!("{range:?}"),
            why: "the range lies outside the set's vectors",
        });
    }
    let mut out_shape = shape.to_vec();
    let at = out_shape.len() - if layout == Layout::Rows { 2 } else { 1 };
    out_shape[at] = range.len();
    if count * d == 0 {
        return Ok((Vec::new().into(), out_shape));
    }
    if batch.is_none() && layout == Layout::Rows {
        return Ok((x[range.start * d..range.end * d].into(), out_shape));
    }
    let mut out = Vec::with_capacity(batch.unwrap_or(1) * range.len() * d);
    for b in x.chunks(count * d).take(batch.unwrap_or(1)) {
        match layout {
            Layout::Rows => out.extend_from_slice(&b[range.start * d..range.end * d]),
            Layout::Cols => {
                for c in b.chunks(count) {
                    out.extend_from_slice(&c[range.clone()]);
                }
            }
        }
    }
    Ok((out.into(), out_shape))
}

/// One part's top lists, to be merged: `values` and `indices` hold `rows` lists of equal
/// length, each sorted in ranking order, the indices counted from `offset` (the part's first
/// column in the whole set).
#[derive(Clone, Copy, Debug)]
pub struct Part<'a, T> {
    pub values: &'a [T],
    pub indices: &'a [u32],
    pub offset: usize,
}

/// The first `k` of each row across `parts` (its lists merged in ranking order, indices made
/// global): `(values, indices)`, `rows` lists of `min(k, Σ part lengths)` each.
///
/// # Errors
/// [`Error::ShardMismatch`] when a part's values and indices differ in length or do not make
/// `rows` equal lists, or there are no parts; [`Error::IndexOverflow`] when a global index
/// passes `u32`.
pub fn merge_rows<T: Element>(
    rows: usize,
    k: usize,
    parts: &[Part<'_, T>],
) -> Result<(Vec<T>, Vec<u32>)> {
    if parts.is_empty() {
        return Err(Error::ShardMismatch("there are no parts to merge".into()));
    }
    let mut lens = Vec::with_capacity(parts.len());
    for (p, part) in parts.iter().enumerate() {
        let n = part.values.len();
        if part.indices.len() != n || (rows == 0 && n != 0) || (rows > 0 && n % rows != 0) {
            return Err(Error::ShardMismatch(format!(
                "part {p} holds {n} values and {} indices, not {rows} equal lists",
                part.indices.len()
            )));
        }
        let top = part.offset as u64 + part.indices.iter().max().map_or(0, |&i| i as u64);
        if top >= 1u64 << 32 {
            return Err(Error::IndexOverflow {
                m: top as usize + 1,
            });
        }
        lens.push(n / rows.max(1));
    }
    let kk = k.min(lens.iter().sum());
    let mut values = Vec::with_capacity(rows * kk);
    let mut indices = Vec::with_capacity(rows * kk);
    let (mut best, mut scratch) = (Vec::with_capacity(kk), Vec::with_capacity(kk));
    for r in 0..rows {
        best.clear();
        for (part, &len) in parts.iter().zip(&lens) {
            let span = r * len..(r + 1) * len;
            merge_sorted(
                &mut best,
                &part.values[span.clone()],
                &part.indices[span],
                part.offset,
                kk,
                &mut scratch,
            );
        }
        for &(v, i) in &best {
            values.push(v);
            indices.push(i);
        }
    }
    Ok((values, indices))
}

/// Merges one sorted list (`values`, `indices` counted from `offset`) into a row's sorted
/// best list, keeping its first `k` in ranking order (values compared as `T` widened to f64,
/// equal values to the lower global index); `scratch` is reused between calls. Indices past
/// `u32` saturate: callers check them first ([`merge_rows`] does).
pub fn merge_sorted<T: Element>(
    row: &mut Vec<(T, u32)>,
    values: &[T],
    indices: &[u32],
    offset: usize,
    k: usize,
    scratch: &mut Vec<(T, u32)>,
) {
    let offset = u32::try_from(offset).unwrap_or(u32::MAX);
    scratch.clear();
    let mut new = values
        .iter()
        .zip(indices)
        .map(|(&v, &i)| (v, i.saturating_add(offset)))
        .peekable();
    let mut old = row.iter().copied().peekable();
    while scratch.len() < k {
        let next = match (old.peek(), new.peek()) {
            (Some(&(v, i)), Some(&(w, j))) => {
                if outranks(v.to_f64(), i as usize, w.to_f64(), j as usize) {
                    old.next()
                } else {
                    new.next()
                }
            }
            (Some(_), None) => old.next(),
            (None, _) => new.next(),
        };
        match next {
            Some(e) => scratch.push(e),
            None => break,
        }
    }
    std::mem::swap(row, scratch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_set_in_order() {
        for (m, n) in [(10, 3), (3, 5), (0, 2), (1 << 20, 7)] {
            let mut next = 0;
            for i in 0..n {
                let r = Shard::new(i, n).map(|s| s.range(m)).unwrap_or(0..0);
                assert_eq!(r.start, next);
                assert!(r.len() == m / n || r.len() == m / n + 1, "{m} {n} {r:?}");
                next = r.end;
            }
            assert_eq!(next, m);
        }
        assert_eq!(Shard::parse("1/4").ok(), Some(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "1", "a/2", "1/0", "-1/2", ""] {
            assert!(
                matches!(Shard::parse(bad), Err(Error::BadShard { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn merge_keeps_the_order_and_the_lower_index_on_ties() {
        let (mut row, mut scratch) = (vec![(0.5f32, 2), (0.1, 0)], Vec::new());
        merge_sorted(&mut row, &[0.5, 0.3], &[0, 1], 4, 3, &mut scratch);
        assert_eq!(row, vec![(0.5, 2), (0.5, 4), (0.3, 5)]);
        merge_sorted(&mut row, &[f32::NAN], &[0], 9, 2, &mut scratch);
        assert!(row[0].0.is_nan() && row[0].1 == 9 && row[1] == (0.5, 2));
        // Rows of two parts, the second's lists shorter (a shard narrower than k).
        let (v, i) = merge_rows(
            2,
            3,
            &[
                Part {
                    values: &[0.9f32, 0.1, 0.4, 0.3],
                    indices: &[1, 0, 0, 1],
                    offset: 0,
                },
                Part {
                    values: &[0.2f32, 0.4],
                    indices: &[0, 0],
                    offset: 2,
                },
            ],
        )
        .unwrap_or_default();
        assert_eq!(v, vec![0.9, 0.2, 0.1, 0.4, 0.4, 0.3]);
        assert_eq!(i, vec![1, 2, 0, 0, 2, 1]);
        let bad = Part {
            values: &[1.0f32; 3],
            indices: &[0; 3],
            offset: 0,
        };
        assert!(matches!(
            merge_rows(2, 1, &[bad]),
            Err(Error::ShardMismatch(_))
        ));
        let far = Part {
            values: &[1.0f32],
            indices: &[1],
            offset: u32::MAX as usize,
        };
        assert!(matches!(
            merge_rows(1, 1, &[far]),
            Err(Error::IndexOverflow { .. })
        ));
    }
}
