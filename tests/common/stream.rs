//! The streaming engine against the whole calls: every operation of `cosim::stream` on
//! devices given by the caller, in chunks forced small, compared with the CPU backend's whole
//! result (bit for bit for the matrix, top-k and argmax on the CPU; within rounding for the
//! means and the greedy scores), for both layouts, batched and shared sets, ties across chunk
//! and shard borders, NaN, and k wider than a chunk.

use super::pairwise::set_shape;
use super::*;
use cosim::cpu;
use cosim::pairwise::{Layout, PairPlan};
use cosim::stream::{PairStream, StreamElement};
use cosim::Device;

/// How the stream's results must match the whole ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exact {
    /// Matrix, top-k and argmax bit for bit, indices equal (the CPU, f32 and f64).
    Bits,
    /// Values within the dtype's tolerance, indices equal (a GPU against the CPU).
    Close,
}

/// Sets with vector 5 of every batch of b a copy of vector 12 (ties across chunk and shard
/// borders), and a NaN in vector 9 of the first batch of b.
pub fn sets<T: Element>(
    r: &mut SmallRng,
    (ba, bb): (Option<usize>, Option<usize>),
    (la, lb): (Layout, Layout),
    (n, m, d): (usize, usize, usize),
) -> (Vec<usize>, Vec<T>, Vec<usize>, Vec<T>) {
    let (sa, sb) = (set_shape(ba, n, d, la), set_shape(bb, m, d, lb));
    let a: Vec<T> = random_input(r, &sa);
    let mut b: Vec<T> = random_input(r, &sb);
    let count = sb.iter().product::<usize>() / (m * d);
    let at = |bt: usize, v: usize, c: usize| match lb {
        Layout::Rows => bt * m * d + v * d + c,
        Layout::Cols => bt * m * d + c * m + v,
    };
    for bt in 0..count {
        for c in 0..d {
            b[at(bt, 5, c)] = b[at(bt, 12, c)];
        }
    }
    b[at(0, 9, 1)] = T::from_f64(f64::NAN);
    (sa, a, sb, b)
}

fn agree<T: Element>(got: &[T], want: &[T], exact: Exact, what: &str) {
    match exact {
        Exact::Bits => assert!(same_bits(got, want), "{what}: {got:?} vs {want:?}"),
        Exact::Close => assert_close(got, &to_f64s(want), what),
    }
}

/// Every operation of a stream of `plan` on `devices`, in chunks of `per` vectors, against
/// the CPU's whole calls.
#[allow(clippy::too_many_arguments)]
pub fn check_stream<T: StreamElement>(
    devices: &[Device],
    plan: &PairPlan,
    a: &[T],
    b: &[T],
    per: usize,
    exact: Exact,
    indices: bool,
    what: &str,
) -> anyhow::Result<()> {
    let bytes = per * plan.d * std::mem::size_of::<T>();
    let stream = || -> cosim::Result<PairStream<'_, T>> {
        Ok(PairStream::new(plan, a, b)?.on(devices)?.chunk_bytes(bytes))
    };
    // The matrix, in blocks of at most 2 rows, in order.
    let whole = cpu::pairwise_similarity(plan, a, b)?;
    let mut got = Vec::new();
    let mut next = (0, 0);
    stream()?
        .block_bytes(2 * plan.m * std::mem::size_of::<T>())
        .matrix(|blk| {
            assert_eq!((blk.batch, blk.row), next, "{what}: matrix block order");
            assert!(
                blk.rows <= 2 && blk.values.len() == blk.rows * plan.m,
                "{what}"
            );
            next = if blk.row + blk.rows == plan.n {
                (blk.batch + 1, 0)
            } else {
                (blk.batch, blk.row + blk.rows)
            };
            got.extend_from_slice(blk.values);
            Ok::<_, cosim::Error>(())
        })?;
    agree(&got, &whole.values, exact, &format!("{what}: matrix"));
    for k in [1, 3, per + 2, plan.m] {
        let k = k.min(plan.m);
        let want = cpu::pairwise_top_k(plan, a, b, k)?;
        let t = stream()?.top_k(k)?;
        assert_eq!(t.shape, want.shape, "{what}");
        agree(&t.values, &want.values, exact, &format!("{what}: top-{k}"));
        if indices {
            assert_eq!(t.indices, want.indices, "{what}: top-{k} indices");
        }
    }
    let want = cpu::pairwise_argmax(plan, a, b)?;
    let t = stream()?.argmax()?;
    assert_eq!(t.shape, want.shape, "{what}");
    agree(&t.values, &want.values, exact, &format!("{what}: argmax"));
    if indices {
        assert_eq!(t.indices, want.indices, "{what}: argmax indices");
    }
    let want = cpu::pairwise_row_mean(plan, a, b)?;
    let got = stream()?.row_mean()?;
    assert_eq!(got.shape, want.shape);
    assert_close(
        &got.values,
        &to_f64s(&want.values),
        &format!("{what}: row mean"),
    );
    let want = cpu::pairwise_mean(plan, a, b)?;
    let got = stream()?.mean()?;
    assert_eq!(got.shape, want.shape);
    assert_close(
        &got.values,
        &to_f64s(&want.values),
        &format!("{what}: mean"),
    );
    let mut r = rng(7);
    let wa: Vec<T> = random_in(&mut r, plan.a_vectors(), 0.5, 2.0);
    let wb: Vec<T> = random_in(&mut r, plan.b_vectors(), 0.5, 2.0);
    for (wa, wb) in [(None, None), (Some(&wa[..]), Some(&wb[..]))] {
        let want = cpu::set_similarity(plan, a, b, wa, wb)?;
        let got = stream()?.set_similarity(wa, wb)?;
        assert_eq!(got.shape, want.shape);
        for (g, w, name) in [
            (&got.precision, &want.precision, "precision"),
            (&got.recall, &want.recall, "recall"),
            (&got.f1, &want.f1, "f1"),
        ] {
            assert_close(g, &to_f64s(w), &format!("{what}: greedy {name}"));
        }
    }
    Ok(())
}

/// [`check_stream`] over layouts, batchings and chunks of `pers` vectors.
pub fn battery<T: StreamElement>(
    devices: &[Device],
    seed: u64,
    exact: Exact,
    indices: bool,
    pers: &[usize],
) -> anyhow::Result<()> {
    let mut r = rng(seed);
    let layouts = [Layout::Rows, Layout::Cols];
    let batches = [
        (None, None),
        (Some(2), Some(2)),
        (Some(2), None),
        (None, Some(2)),
    ];
    for &bt in &batches {
        for &la in &layouts {
            for &lb in &layouts {
                let (sa, a, sb, b) = sets::<T>(&mut r, bt, (la, lb), (7, 23, 5));
                let plan = PairPlan::new(&sa, la, &sb, lb)?;
                for &per in pers {
                    let what = format!(
                        "{} on {} device(s): {sa:?} {la:?} × {sb:?} {lb:?}, chunks of {per}",
                        T::NAME,
                        devices.len()
                    );
                    check_stream(devices, &plan, &a, &b, per, exact, indices, &what)?;
                }
            }
        }
    }
    Ok(())
}
