// The gradient of the pairwise matrix S[b, i, j] = ⟨a_i, b_j⟩ · ia_i · ib_j (ia = 1 / max(‖a_i‖,
// eps), the forward's inverse norms) for an upstream gradient G [B, N, M]:
//   dA_i = W_i − ia_i² · ⟨a_i, W_i⟩ · a_i,   W_i = ia_i · Σ_j G_ij · ib_j · b_j,
// and the symmetric form for B (src/cpu/pairwise/backward.rs states the rules: a clamped norm
// is a constant, so its vector keeps W; a zero vector with eps = 0 has ia = 0 and gets 0; a
// NaN component makes its vector's gradient NaN; a set shared by every batch gets the sum
// over the batches). Two kernels per set:
//  - cosim_pair_grad_*: W by the forward's tile machinery (kernels/tiles.cuh), G read in place
//    as the first operand and the other set as the second, its inverse norms folded into the
//    second operand's loads (so tensor cores see normalised values) and ia into the epilogue;
//    W is f32, written in the set's own layout (for f32 inputs into the gradient itself);
//  - cosim_pair_grad_project_*: per vector, ⟨a_i, W_i⟩ and the projection, in place.
// No normalised copy of a set, no copy of G; extra memory is the inverse norms and, for the
// half types, one f32 W.

#include "tiles.cuh"

namespace cosim {
namespace pair {

// W for one tile: rows are mine's vectors, columns its components; grid (component tiles,
// vector tiles, batches).
template <typename T, bool GC, bool YC, bool TC>
__device__ void pair_grad(const cosim_pair_grad_params& q, const T* g, const T* y,
                          const float* inv_other, const float* inv_mine, float* w) {
    __shared__ __align__(128) unsigned char raw[tile_smem<T>()];
    // This block's batch and span of the reduced components [j0, j0 + p.d).
    const int64_t split = blockIdx.z % q.splits;
    const int64_t bb = q.batch0 + blockIdx.z / q.splits;
    const int64_t j0 = split * q.span;
    cosim_pair_params p = q.prod;
    p.d = min(q.span, q.prod.d - j0);
    const int64_t row0 = p.row0 + (int64_t)blockIdx.y * BM, col0 = (int64_t)blockIdx.x * BN;
    float acc[TM][TN];
    dots<T, GC, YC, TC, true>(p, g + bb * p.a.batch_stride + j0 * p.a.comp_stride,
                              y + bb * p.b.batch_stride + j0 * p.b.comp_stride, row0, col0, acc,
                              raw, inv_other + bb * q.inv_other_batch + j0);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int64_t end = p.row0 + p.rows;
    const int64_t own = q.w.batch_stride != 0 ? bb : 0;
    const float* im = inv_mine + own * q.inv_mine_batch;
    float* wb = w + split * q.split_stride + own * q.w.batch_stride;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int64_t v = row0 + ty * TM + i;
        if (v >= end) break;
        const float s = im[v];
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int64_t k = col0 + tx * TN + j;
            if (k < q.d) {
                float* o = wb + v * q.w.vec_stride + k * q.w.comp_stride;
                const float x = s * acc[i][j];
                *o = q.accumulate ? *o + x : x;
            }
        }
    }
}

// Is ia a clamped (or zero-vector) norm, a constant of the gradient? The rule of
// src/cpu/pairwise/backward.rs.
__device__ __forceinline__ bool clamped(float ia, float eps) {
    return ia == 0.0f || ia * eps >= 1.0f;
}

// W at offset o: the sum of the `splits` partials `stride` apart.
__device__ __forceinline__ float w_at(const float* w, int64_t o, int64_t splits, int64_t stride) {
    float r = w[o];
    for (int64_t s = 1; s < splits; ++s) r += w[o + s * stride];
    return r;
}

// out_v = W_v − ia_v² · ⟨x_v, W_v⟩ · x_v (W_v where ia_v is clamped; NaN where x_v has a NaN)
// for every vector of the `batches` batches mine owns: a warp per vector for rows, a thread
// per vector for columns (coalesced either way). W is the sum of `splits` partials `stride`
// apart; `out` may be `w` itself (f32, one split).
template <typename T>
__device__ void pair_grad_project(cosim_pair_set s, int64_t d, int64_t batches, double eps,
                                  const T* x, const float* inv, const float* w, int64_t splits,
                                  int64_t stride, T* out) {
    const int64_t total = batches * s.count;
    const int64_t gtid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    const int64_t gstride = (int64_t)gridDim.x * blockDim.x;
    const float e = (float)eps;
    const float qnan = __uint_as_float(0x7fc00000u);
    if (!s.cols) {
        const int lane = threadIdx.x % 32;
        for (int64_t v = gtid / 32; v < total; v += gstride / 32) {
            const int64_t base = (v / s.count) * s.batch_stride + (v % s.count) * s.vec_stride;
            float dot = 0.0f;
            bool nan = false;
            for (int64_t k = lane; k < d; k += 32) {
                const float xk = to_acc(x[base + k]);
                dot = fmaf(xk, w_at(w, base + k, splits, stride), dot);
                nan |= isnan(xk);
            }
            for (int o = 16; o > 0; o /= 2) dot += __shfl_xor_sync(FULL, dot, o);
            nan = __ballot_sync(FULL, nan) != 0;
            const float ia = inv[v];
            const float c = clamped(ia, e) ? 0.0f : ia * ia * dot;
            for (int64_t k = lane; k < d; k += 32) {
                const float r = nan ? qnan : w_at(w, base + k, splits, stride) - c * to_acc(x[base + k]);
                out[base + k] = from_acc<T>(r);
            }
        }
    } else {
        for (int64_t v = gtid; v < total; v += gstride) {
            const int64_t base = (v / s.count) * s.batch_stride + (v % s.count);
            float dot = 0.0f;
            bool nan = false;
            for (int64_t k = 0; k < d; ++k) {
                const float xk = to_acc(x[base + k * s.comp_stride]);
                dot = fmaf(xk, w_at(w, base + k * s.comp_stride, splits, stride), dot);
                nan |= isnan(xk);
            }
            const float ia = inv[v];
            const float c = clamped(ia, e) ? 0.0f : ia * ia * dot;
            for (int64_t k = 0; k < d; ++k) {
                const int64_t o = base + k * s.comp_stride;
                out[o] = from_acc<T>(nan ? qnan : w_at(w, o, splits, stride) - c * to_acc(x[o]));
            }
        }
    }
}

}  // namespace pair
}  // namespace cosim

using namespace cosim;
using namespace cosim::pair;

// W's kernel for one element type, G's view (r: G's rows, for dA; c: its columns, for dB),
// the other set's view (r/c) and the arithmetic ("": FFMA, "_tc": tensor cores).
#define PAIR_GRAD_KERNEL(T, NAME, GC, YC, L, TC, SUF)                                          \
    extern "C" __global__ void __launch_bounds__(THREADS, 1)                                   \
        cosim_pair_grad_##NAME##_##L##SUF(cosim_pair_grad_params q, const T* g, const T* y,    \
                                          const float* inv_other, const float* inv_mine,       \
                                          float* w) {                                          \
        pair_grad<T, GC, YC, TC>(q, g, y, inv_other, inv_mine, w);                             \
    }

#define PAIR_GRAD_LAYOUTS(T, NAME, TC, SUF)                                                    \
    PAIR_GRAD_KERNEL(T, NAME, false, false, rr, TC, SUF)                                       \
    PAIR_GRAD_KERNEL(T, NAME, false, true, rc, TC, SUF)                                        \
    PAIR_GRAD_KERNEL(T, NAME, true, false, cr, TC, SUF)                                        \
    PAIR_GRAD_KERNEL(T, NAME, true, true, cc, TC, SUF)

#if COSIM_TENSOR_CORES
#define PAIR_GRAD_TC(T, NAME) PAIR_GRAD_LAYOUTS(T, NAME, true, _tc)
#else
#define PAIR_GRAD_TC(T, NAME)
#endif

#define PAIR_GRAD_KERNELS(T, NAME)                                                             \
    PAIR_GRAD_LAYOUTS(T, NAME, false, )                                                        \
    PAIR_GRAD_TC(T, NAME)                                                                      \
    extern "C" __global__ void cosim_pair_grad_project_##NAME(                                 \
        cosim_pair_set s, int64_t d, int64_t batches, double eps, const T* x, const float* inv, \
        const float* w, int64_t splits, int64_t stride, T* out) {                              \
        pair_grad_project<T>(s, d, batches, eps, x, inv, w, splits, stride, out);              \
    }

PAIR_GRAD_KERNELS(float, f32)
PAIR_GRAD_KERNELS(__half, f16)
PAIR_GRAD_KERNELS(__nv_bfloat16, bf16)
