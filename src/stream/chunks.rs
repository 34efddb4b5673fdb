//! How a job is cut: chunks of whole vectors of each set ([`Chunks`]), the ranges they
//! make, and the list of chunk pairs a worker runs.

use super::sets::PairJob;
use std::ops::Range;

/// Vectors per chunk of each set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunks {
    /// Vectors of A (rows of the matrix) per chunk.
    pub a: usize,
    /// Vectors of B (columns of the matrix) per chunk.
    pub b: usize,
}

impl Chunks {
    /// Chunks of whole vectors of at most `per` vectors each (at least one), of sets of `n`
    /// and `m` vectors; `rows_cap` further limits A's chunks (a matrix's row blocks). A
    /// set's chunks are the fewest the limit allows, each as small as that count allows (100
    /// vectors at most 99 per chunk: 50 and 50, not 99 and 1), so that a runner's
    /// fixed-size buffers are nearly full on every pair.
    pub fn even(n: usize, m: usize, per: usize, rows_cap: usize) -> Chunks {
        Chunks {
            a: even(n, per.min(rows_cap.max(1))),
            b: even(m, per),
        }
    }
}

/// The size of the fewest chunks of at most `per` (≥ 1) that cover `total`, made even.
pub fn even(total: usize, per: usize) -> usize {
    let per = per.max(1);
    let count = total.div_ceil(per).max(1);
    total.div_ceil(count).max(1)
}

/// The consecutive ranges of at most `per` (≥ 1) of `range`.
pub fn ranges(range: Range<usize>, per: usize) -> impl Iterator<Item = Range<usize>> {
    let per = per.max(1);
    let end = range.end;
    range.step_by(per).map(move |s| s..(s + per).min(end))
}

/// One row of chunk pairs: a chunk of A in a batch, against every chunk of B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub batch: usize,
    pub a: Range<usize>,
}

/// Every row of chunk pairs of a job of `batch` batches of `n` vectors of A: batch by
/// batch, A's chunks in order.
pub fn rows(batch: usize, n: usize, per: usize) -> Vec<Row> {
    (0..batch)
        .flat_map(|b| ranges(0..n, per).map(move |a| Row { batch: b, a }))
        .collect()
}

/// The chunk pairs of `rows` against B's chunks of `b` (at most `per` vectors each), in
/// the order their results come back: rows outside, B's chunks inside.
pub fn jobs<'r>(
    rows: impl IntoIterator<Item = &'r Row>,
    b: Range<usize>,
    per: usize,
) -> Vec<PairJob> {
    let mut jobs = Vec::new();
    for r in rows {
        for b in ranges(b.clone(), per) {
            jobs.push(PairJob {
                batch: r.batch,
                a: r.a.clone(),
                b,
            });
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_with_a_short_last() {
        let r: Vec<_> = ranges(0..7, 3).collect();
        assert_eq!(r, vec![0..3, 3..6, 6..7]);
        assert_eq!(ranges(0..2, 5).collect::<Vec<_>>(), vec![0..2]);
        assert_eq!(ranges(4..9, 2).collect::<Vec<_>>(), vec![4..6, 6..8, 8..9]);
        assert_eq!(ranges(3..3, 2).count(), 0);
    }

    #[test]
    fn chunks_hold_whole_vectors_evenly() {
        // 2 vectors of 16 bytes fit: 5 -> 2, 2, 1 (already even); 7 -> 4 chunks of 2.
        assert_eq!(
            Chunks::even(5, 7, 32 / 16, usize::MAX),
            Chunks { a: 2, b: 2 }
        );
        // 3 fit: 5 -> 3, 2; 7 -> 3 chunks of 3 (3, 3, 1).
        assert_eq!(
            Chunks::even(5, 7, 48 / 16, usize::MAX),
            Chunks { a: 3, b: 3 }
        );
        // 4 fit: 5 -> 2 chunks of 3; 7 -> 2 chunks of 4.
        assert_eq!(
            Chunks::even(5, 7, 64 / 16, usize::MAX),
            Chunks { a: 3, b: 4 }
        );
        assert_eq!(
            Chunks::even(5, 7, 1 / 16, usize::MAX),
            Chunks { a: 1, b: 1 }
        );
        assert_eq!(Chunks::even(5, 7, (1 << 20) / 16, 2), Chunks { a: 2, b: 7 });
    }

    #[test]
    fn even_chunks_are_the_fewest_and_within_the_limit() {
        for total in 1..60 {
            for per in 1..20 {
                let e = even(total, per);
                let count = total.div_ceil(per);
                assert!(e <= per && e >= 1, "{total} {per} {e}");
                assert_eq!(total.div_ceil(e), count, "{total} {per} {e}");
            }
        }
        assert_eq!(even(100, 99), 50);
    }

    #[test]
    fn jobs_run_rows_outside_and_b_inside() {
        let r = rows(2, 3, 2);
        assert_eq!(r.len(), 4);
        let j = jobs(&r[1..2], 5..9, 3);
        assert_eq!(
            j,
            vec![
                PairJob {
                    batch: 0,
                    a: 2..3,
                    b: 5..8
                },
                PairJob {
                    batch: 0,
                    a: 2..3,
                    b: 8..9
                }
            ]
        );
    }
}
