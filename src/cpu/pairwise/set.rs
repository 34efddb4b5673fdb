//! One set of a [`PairPlan`] with its buffer, checked against each other once, so that the
//! passes after it index batches, vectors and components with plain (bounds-checked) slices.

use crate::element::Element;
use crate::error::{Error, Result};
use crate::pairwise::{Layout, PairPlan};

/// Which of the plan's two sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// A set's buffer and its geometry: `own_batches` contiguous batches of `count` vectors of
/// `d` components each, `[count, d]` row-major for [`Layout::Rows`], `[d, count]` for
/// [`Layout::Cols`].
#[derive(Clone, Copy, Debug)]
pub struct Set<'a, T> {
    pub data: &'a [T],
    pub layout: Layout,
    pub count: usize,
    pub d: usize,
    /// Batches held: 1 for a set shared by every batch, else the plan's batch count.
    pub own_batches: usize,
}

impl<'a, T: Element> Set<'a, T> {
    /// The plan's set `side` over `data`.
    ///
    /// # Errors
    /// [`Error::LenMismatch`] if `data` does not hold exactly the set the plan describes (the
    /// plan's public fields may have been edited after [`PairPlan::new`] checked them).
    pub fn new(plan: &PairPlan, side: Side, data: &'a [T]) -> Result<Self> {
        let (what, layout, count, strides) = match side {
            Side::A => ("a", plan.a_layout, plan.n, plan.a),
            Side::B => ("b", plan.b_layout, plan.m, plan.b),
        };
        let own_batches = if strides.batch == 0 { 1 } else { plan.batch };
        let mut shape = match layout {
            Layout::Rows => vec![count, plan.d],
            Layout::Cols => vec![plan.d, count],
        };
        if strides.batch != 0 {
            shape.insert(0, own_batches);
        }
        let expected = crate::plan::numel(&shape)?;
        // With d = 0 the element count can be small while vectors × batches overflow.
        crate::plan::numel(&[own_batches, count])?;
        if data.len() != expected || count == 0 || own_batches == 0 {
            return Err(Error::LenMismatch {
                what,
                len: data.len(),
                shape,
                expected,
            });
        }
        Ok(Set {
            data,
            layout,
            count,
            d: plan.d,
            own_batches,
        })
    }

    /// Which of the set's own batches matrix `batch` uses (0 for a shared set).
    #[inline]
    pub fn own(&self, batch: usize) -> usize {
        if self.own_batches == 1 {
            0
        } else {
            batch
        }
    }

    /// The elements of own batch `own`.
    #[inline]
    pub fn batch(&self, own: usize) -> &'a [T] {
        let len = self.count * self.d;
        &self.data[own * len..(own + 1) * len]
    }

    /// Vector `i` of a batch of a [`Layout::Rows`] set.
    #[inline]
    pub fn vector<'s>(&self, batch: &'s [T], i: usize) -> &'s [T] {
        &batch[i * self.d..(i + 1) * self.d]
    }

    /// Component `k` of every vector of a batch of a [`Layout::Cols`] set.
    #[inline]
    pub fn component<'s>(&self, batch: &'s [T], k: usize) -> &'s [T] {
        &batch[k * self.count..(k + 1) * self.count]
    }
}
