/* Kernel parameter structs, shared by the CUDA kernels and (through bindgen) the Rust launcher.
 * Plain C, fixed-width types only, so that both sides agree on the layout byte for byte.
 * Regenerate the Rust mirror (src/cuda/params.rs) with `cargo test --test bindings -- --ignored`
 * after editing this file (needs libclang); the test fails if the committed mirror is stale. */
#ifndef COSIM_PARAMS_H
#define COSIM_PARAMS_H

#include <stdint.h>

/* Largest tensor rank the plans and kernels accept. */
#define COSIM_MAX_DIMS 8

/* How the index of one output vector maps to element offsets in the two inputs: a row-major
 * multi-index over `size[0..ndim]`, with per-input element strides (0 = broadcast). */
typedef struct cosim_index {
    int64_t size[COSIM_MAX_DIMS];
    int64_t stride1[COSIM_MAX_DIMS];
    int64_t stride2[COSIM_MAX_DIMS];
    int32_t ndim;
    int32_t _pad;
} cosim_index;

/* Cosine along one (possibly broadcast) dim. The output is `[outer..., inner]`, contiguous;
 * `outer` indexes the dims before the innermost kept dim, `inner` is that innermost dim. */
typedef struct cosim_along_params {
    cosim_index outer;
    int64_t outer_count;
    int64_t inner;
    int64_t inner_stride1;
    int64_t inner_stride2;
    int64_t reduce_len;
    int64_t reduce_stride1;
    int64_t reduce_stride2;
    /* With splits > 1, split y = blockIdx.y·blockDim.y + threadIdx.y sums steps
     * [y·chunk, (y+1)·chunk) of the reduced axis into partials laid out [split][3][output],
     * and cosim_along_finish_* combines them (few outputs, long reductions: every SM busy). */
    int64_t splits;
    int64_t chunk;
    double eps;
} cosim_along_params;

/* Cosine of rows that are contiguous in the inputs: row r starts at the offsets that
 * `rows` gives for r, and has `row_len` elements; the input named by `constant_input` (1 or
 * 2; 0: none) instead holds one value per row, repeated (reduced-axis stride 0). With
 * `splits` > 1 each row is cut into `splits` chunks of `chunk` elements whose partial sums
 * are combined by a second kernel. With `reweight_input` (1 or 2; 0: none), that input's
 * rows are also written, scaled by their similarity, contiguously into `weighted`. */
typedef struct cosim_rows_params {
    cosim_index rows;
    int64_t row_count;
    int64_t row_len;
    int64_t splits;
    int64_t chunk;
    double eps;
    int32_t reweight_input;
    int32_t constant_input;
} cosim_rows_params;

/* One set of vectors of a pairwise problem: element k of vector i of batch b lies at
 * b·batch_stride + i·vec_stride + k·comp_stride. `cols` = 1 when the vectors are the
 * columns of a [D, count] matrix (vec_stride 1), 0 for rows (comp_stride 1). `vec` = 1 when
 * 4-element vector loads are aligned for every vector (base pointer and the contiguous
 * stride line up). */
typedef struct cosim_pair_set {
    int64_t count;
    int64_t batch_stride;
    int64_t vec_stride;
    int64_t comp_stride;
    int32_t cols;
    int32_t vec;
} cosim_pair_set;

/* A pairwise problem: `batch` matrices S[b, i, j] = cos(a_i, b_j) over vectors of `d`
 * components. A launch covers rows [row0, row0 + rows) of a's vectors; `k` is the top-k
 * length. */
typedef struct cosim_pair_params {
    cosim_pair_set a;
    cosim_pair_set b;
    int64_t batch;
    int64_t d;
    int64_t k;
    int64_t row0;
    int64_t rows;
    double eps;
} cosim_pair_params;

/* The gradient of one set of a pairwise problem ("mine": a's vectors for dA, b's for dB),
 * before its projection step: W[v, k] = inv_mine[v] · Σ_j G[v, j] · inv_other[j] · other_j[k]
 * for mine's vectors [prod.row0, prod.row0 + prod.rows) and batches [batch0, batch0 +
 * gridDim.z). `prod` is that product as the forward's tile kernels read it: prod.a is G seen
 * as vectors v with components j (rows of G for dA, its columns for dB), prod.b the other set
 * seen as vectors k with components j, prod.d the other set's count. `w` is W's layout, which
 * is mine's (batch_stride 0: one W summed over the batches, `accumulate` on the later ones).
 * With `splits` > 1 the sum over j is cut into spans of `span` components: grid z is then
 * batches × splits, and split s writes its partial W at w + s·split_stride (the projection
 * kernel adds the partials), so that few long products still fill the GPU. */
typedef struct cosim_pair_grad_params {
    cosim_pair_params prod;
    cosim_pair_set w;
    int64_t d;
    int64_t inv_mine_batch;
    int64_t inv_other_batch;
    int64_t batch0;
    int64_t splits;
    int64_t span;
    int64_t split_stride;
    int32_t accumulate;
    int32_t _pad;
} cosim_pair_grad_params;

#endif
