//! A pairwise top-k / argmax split into shards of b, each run as its own problem on its slice
//! of b, and merged with `cosim::shard::merge_rows`: bit for bit the unsharded result (f32
//! and f64), for both layouts, batched and shared sets, ties across shard borders, NaN, k
//! wider than a shard, more shards than vectors.

mod common;

use anyhow::Result;
use common::pairwise::set_shape;
use common::*;
use cosim::cpu;
use cosim::pairwise::{Layout, PairPlan};
use cosim::shard::{merge_rows, Part, Shard};
use cosim::Element;

/// Vectors `range` of every batch of set `x` (shape `shape`, `layout`), as a set of its own.
fn slice_set<T: Element>(
    x: &[T],
    shape: &[usize],
    layout: Layout,
    range: std::ops::Range<usize>,
) -> (Vec<T>, Vec<usize>) {
    let (batch, inner) = match shape.len() {
        3 => (shape[0], &shape[1..]),
        _ => (1, shape),
    };
    let (count, d) = match layout {
        Layout::Rows => (inner[0], inner[1]),
        Layout::Cols => (inner[1], inner[0]),
    };
    let mut out = Vec::new();
    for b in 0..batch {
        let base = &x[b * count * d..(b + 1) * count * d];
        match layout {
            Layout::Rows => out.extend_from_slice(&base[range.start * d..range.end * d]),
            Layout::Cols => {
                for k in 0..d {
                    out.extend_from_slice(&base[k * count + range.start..k * count + range.end]);
                }
            }
        }
    }
    let mut s = shape.to_vec();
    let last = s.len() - if layout == Layout::Rows { 2 } else { 1 };
    s[last] = range.len();
    (out, s)
}

/// The top `k` (argmax for `None`) of `a` against `b` whole, and through `shards` shards of
/// b merged: equal bit for bit.
fn check<T: Element>(
    a: (&[T], &[usize], Layout),
    b: (&[T], &[usize], Layout),
    k: Option<usize>,
    shards: usize,
    what: &str,
) -> Result<()> {
    let plan = PairPlan::new(a.1, a.2, b.1, b.2)?;
    let whole = match k {
        Some(k) => cpu::pairwise_top_k(&plan, a.0, b.0, k)?,
        None => cpu::pairwise_argmax(&plan, a.0, b.0)?,
    };
    let mut lists = Vec::new();
    for i in 0..shards {
        let range = Shard::new(i, shards)?.range(plan.m);
        if range.is_empty() {
            continue;
        }
        let (bs, shape) = slice_set(b.0, b.1, b.2, range.clone());
        let p = PairPlan::new(a.1, a.2, &shape, b.2)?;
        let t = match k {
            Some(k) => cpu::pairwise_top_k(&p, a.0, &bs, k.min(range.len()))?,
            None => cpu::pairwise_argmax(&p, a.0, &bs)?,
        };
        lists.push((t, range.start));
    }
    let parts: Vec<Part<'_, T>> = lists
        .iter()
        .map(|(t, offset)| Part {
            values: &t.values,
            indices: &t.indices,
            offset: *offset,
        })
        .collect();
    let rows = plan.batch * plan.n;
    let (values, indices) = merge_rows(rows, k.unwrap_or(1), &parts)?;
    assert!(same_bits(&values, &whole.values), "{what}: values");
    assert_eq!(indices, whole.indices, "{what}: indices");
    // The order of the parts does not matter (ties go to the lower global index).
    let reversed: Vec<_> = parts.iter().rev().copied().collect();
    let (values, indices) = merge_rows(rows, k.unwrap_or(1), &reversed)?;
    assert!(
        same_bits(&values, &whole.values),
        "{what}, reversed: values"
    );
    assert_eq!(indices, whole.indices, "{what}, reversed: indices");
    Ok(())
}

fn battery<T: Element>(seed: u64) -> Result<()> {
    let mut r = rng(seed);
    let layouts = [Layout::Rows, Layout::Cols];
    let batches = [
        (None, None),
        (Some(2), Some(2)),
        (Some(3), None),
        (None, Some(2)),
    ];
    for &(ba, bb) in &batches {
        for &la in &layouts {
            for &lb in &layouts {
                let (n, m, d) = (7, 23, 5);
                let (sa, sb) = (set_shape(ba, n, d, la), set_shape(bb, m, d, lb));
                let a: Vec<T> = random_input(&mut r, &sa);
                let mut b: Vec<T> = random_input(&mut r, &sb);
                // Ties across shard borders: vector 5 of every batch of b is a copy of
                // vector 12 (4 shards of 23 start at 0, 5, 11, 17).
                let count = sb.iter().product::<usize>() / (m * d);
                for bt in 0..count {
                    for c in 0..d {
                        let at = |v: usize| match lb {
                            Layout::Rows => bt * m * d + v * d + c,
                            Layout::Cols => bt * m * d + c * m + v,
                        };
                        b[at(5)] = b[at(12)];
                    }
                }
                for (k, shards) in [
                    (Some(1), 2),
                    (Some(3), 4),
                    (Some(8), 4),
                    (Some(23), 5),
                    (None, 3),
                    (Some(2), 30),
                ] {
                    let what = format!(
                        "{} {sa:?} {la:?} × {sb:?} {lb:?} k {k:?} shards {shards}",
                        T::NAME
                    );
                    check((&a, &sa, la), (&b, &sb, lb), k, shards, &what)?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn sharded_top_k_and_argmax_equal_the_whole_bit_for_bit() -> Result<()> {
    battery::<f32>(41)?;
    battery::<f64>(42)
}

#[test]
fn nan_and_exact_ties_rank_across_shards() -> Result<()> {
    // b's vectors: 0 and 3 equal, 2 holds a NaN; shards [0, 2) and [2, 4).
    let a = [1.0f32, 0.5];
    let b = [2.0f32, 1.0, -1.0, 0.0, f32::NAN, 1.0, 2.0, 1.0];
    for k in [Some(1), Some(2), Some(4), None] {
        check(
            (&a, &[1, 2], Layout::Rows),
            (&b, &[4, 2], Layout::Rows),
            k,
            2,
            "nan",
        )?;
    }
    Ok(())
}
