//! Which candle views cosim reads in place, and as what: a view is a shape, strides and a
//! start offset into its storage; cosim reads dense row-major buffers whose shapes broadcast,
//! and pairwise sets in either layout. Pure functions of dims and strides, tested here.

use crate::pairwise::Layout;

/// The shape cosim reads a view as, in place from its start offset, when the view is
/// row-major apart from broadcast dims (stride 0), which become size 1 (cosim broadcasts them
/// back). `None` when the view must be copied first (a transpose, a step).
pub(crate) fn dense_shape(dims: &[usize], strides: &[usize]) -> Option<Vec<usize>> {
    let shape: Vec<usize> = dims
        .iter()
        .zip(strides)
        .map(|(&n, &s)| if s == 0 { n.min(1) } else { n })
        .collect();
    let mut expect = 1usize;
    for (&n, &s) in shape.iter().zip(strides).rev() {
        // A dim of size 1 (or 0) is never stepped along: its stride does not matter.
        if n > 1 && s != expect {
            return None;
        }
        expect = expect.saturating_mul(n);
    }
    Some(shape)
}

/// How a pairwise set is read in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SetView {
    /// The set's shape in `layout` (`[B?, N, D]` for rows, `[B?, D, N]` for columns).
    pub shape: Vec<usize>,
    pub layout: Layout,
    /// The batch dim was a broadcast (stride 0) and was dropped: one set for every batch.
    pub shared: bool,
}

/// How to read a pairwise set of logical shape `dims` (`[B?, N, D]` or `[B?, D, N]` as
/// `declared` says) in place: in the declared layout when its strides are that layout's, in
/// the other one when they are the other's (a transposed view of a contiguous tensor), with a
/// broadcast batch dim dropped. `None` when neither fits (the set must be copied), and for
/// ranks other than 2 and 3 (which the plan refuses).
pub(crate) fn set_view(dims: &[usize], strides: &[usize], declared: Layout) -> Option<SetView> {
    let r = dims.len();
    if !(2..=3).contains(&r) {
        return None;
    }
    let (count_axis, d_axis) = match declared {
        Layout::Rows => (r - 2, r - 1),
        Layout::Cols => (r - 1, r - 2),
    };
    let (n, d) = (dims[count_axis], dims[d_axis]);
    let (sn, sd) = (strides[count_axis], strides[d_axis]);
    let rows = (d <= 1 || sd == 1) && (n <= 1 || sn == d);
    let cols = (n <= 1 || sn == 1) && (d <= 1 || sd == n);
    let layout = match declared {
        Layout::Rows if rows => Layout::Rows,
        Layout::Cols if cols => Layout::Cols,
        _ if rows => Layout::Rows,
        _ if cols => Layout::Cols,
        _ => return None,
    };
    let inner = match layout {
        Layout::Rows => [n, d],
        Layout::Cols => [d, n],
    };
    let (mut shape, mut shared) = (inner.to_vec(), false);
    if r == 3 {
        let (b, sb) = (dims[0], strides[0]);
        if b > 1 && sb == 0 {
            shared = true;
        } else if b > 1 && sb != n * d {
            return None;
        } else {
            shape.insert(0, b);
        }
    }
    Some(SetView {
        shape,
        layout,
        shared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_views() {
        // Contiguous, and contiguous with size-1 dims of any stride.
        assert_eq!(dense_shape(&[2, 3, 4], &[12, 4, 1]), Some(vec![2, 3, 4]));
        assert_eq!(dense_shape(&[2, 1, 4], &[4, 99, 1]), Some(vec![2, 1, 4]));
        // Broadcast dims become 1, anywhere.
        assert_eq!(dense_shape(&[2, 3, 4], &[4, 0, 1]), Some(vec![2, 1, 4]));
        assert_eq!(dense_shape(&[5, 3], &[0, 1]), Some(vec![1, 3]));
        assert_eq!(dense_shape(&[5, 3], &[0, 0]), Some(vec![1, 1]));
        assert_eq!(dense_shape(&[], &[]), Some(vec![]));
        // A transpose, a step, a narrowed inner dim: copied.
        assert_eq!(dense_shape(&[3, 2], &[1, 3]), None);
        assert_eq!(dense_shape(&[4], &[2]), None);
        assert_eq!(dense_shape(&[2, 3], &[8, 1]), None);
        // Empty dims never step.
        assert_eq!(dense_shape(&[0, 3], &[3, 1]), Some(vec![0, 3]));
    }

    #[test]
    fn set_views() {
        let v = |shape: &[usize], layout, shared| {
            Some(SetView {
                shape: shape.to_vec(),
                layout,
                shared,
            })
        };
        // [N, D] row-major: rows; its transpose view [N, D] with strides (1, N): the
        // contiguous [D, N] read as columns.
        assert_eq!(
            set_view(&[5, 3], &[3, 1], Layout::Rows),
            v(&[5, 3], Layout::Rows, false)
        );
        assert_eq!(
            set_view(&[5, 3], &[1, 5], Layout::Rows),
            v(&[3, 5], Layout::Cols, false)
        );
        // Declared columns [D, N]: contiguous is columns, a transpose is rows.
        assert_eq!(
            set_view(&[3, 5], &[5, 1], Layout::Cols),
            v(&[3, 5], Layout::Cols, false)
        );
        assert_eq!(
            set_view(&[3, 5], &[1, 3], Layout::Cols),
            v(&[5, 3], Layout::Rows, false)
        );
        // Batched, transposed per batch: [B, N, D] with strides (N·D, 1, N).
        assert_eq!(
            set_view(&[2, 5, 3], &[15, 1, 5], Layout::Rows),
            v(&[2, 3, 5], Layout::Cols, false)
        );
        // A broadcast batch: one set for all batches.
        assert_eq!(
            set_view(&[4, 5, 3], &[0, 3, 1], Layout::Rows),
            v(&[5, 3], Layout::Rows, true)
        );
        // A batch of one keeps its dim whatever its stride.
        assert_eq!(
            set_view(&[1, 5, 3], &[7, 3, 1], Layout::Rows),
            v(&[1, 5, 3], Layout::Rows, false)
        );
        // Rows of a wider tensor (narrowed D), a strided batch, a broadcast vector: copied.
        assert_eq!(set_view(&[5, 3], &[4, 1], Layout::Rows), None);
        assert_eq!(set_view(&[2, 5, 3], &[16, 3, 1], Layout::Rows), None);
        assert_eq!(set_view(&[5, 3], &[0, 1], Layout::Rows), None);
        // One vector, or one component: both layouts fit, the declared one is kept.
        assert_eq!(
            set_view(&[1, 3], &[3, 1], Layout::Rows),
            v(&[1, 3], Layout::Rows, false)
        );
        assert_eq!(
            set_view(&[3, 1], &[1, 1], Layout::Cols),
            v(&[3, 1], Layout::Cols, false)
        );
        // Ranks the plan refuses.
        assert_eq!(set_view(&[3], &[1], Layout::Rows), None);
    }
}
