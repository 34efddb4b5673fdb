// Cosine of rows that are contiguous in the inputs (the reduced dim is innermost, or the
// flattened per-channel maps), or contiguous in one input and one repeated value in the other
// (params.h: constant_input). Three shapes of work:
//  - group: G lanes per row (G = 4..32), for short rows; many rows per warp in flight;
//  - block: one block per (row, split); with one split it finishes the row itself, with
//    more it leaves partial sums for `rows_finish` (few long rows: keeps every SM busy);
//  - scale: weighted[r, j] = y[r, j] · sim[r], when reweighting could not be fused.
// With p.reweight_input = 1 or 2, the group and single-split block kernels also write that
// input's row scaled by the row's similarity (rounded to T first, so weighted == y · sim).

#include "common.cuh"

namespace cosim {

template <typename T>
__device__ __forceinline__ const T* reweight_source(const cosim_rows_params& p, const T* x1,
                                                    const T* x2, int64_t off1, int64_t off2) {
    return p.reweight_input == 1 ? x1 + off1 : x2 + off2;
}

// weighted[j] = y[j·y_stride] · s for the part of a row [begin, end) that this thread's lane
// (index `lane` of `width` lanes) covers, V elements at a time.
template <typename T, int V>
__device__ __forceinline__ void scale_row(const T* y, int64_t y_stride, T* w, int64_t begin,
                                          int64_t end, int lane, int width, acc_t<T> s) {
    for (int64_t j = begin + (int64_t)lane * V; j < end; j += (int64_t)width * V) {
        Pack<T, V> r;
        if (V > 1 && y_stride == 1) {
            const Pack<T, V> v = load_pack<T, V>(y + j);
#pragma unroll
            for (int q = 0; q < V; ++q) r.v[q] = from_acc<T>(to_acc(v.v[q]) * s);
        } else {
#pragma unroll
            for (int q = 0; q < V; ++q) r.v[q] = from_acc<T>(to_acc(y[(j + q) * y_stride]) * s);
        }
        store_pack<T, V, true>(w + j, r);
    }
}

// Sums over the part [begin, end) of a row that this lane (index `lane` of `width` lanes)
// covers, V elements at a time. With `constant` = 1 or 2, that input is one value repeated
// (read once). Four vector pairs are loaded per step before any is used; ptxas schedules
// two of them ahead of the first FMA (sm_90 SASS), so each thread keeps 2×32 bytes in flight
// instead of one pair's 32 — with ~1500 resident threads, ~100 KB per SM, several times what
// HBM latency × bandwidth asks for.
template <typename T, int V, bool ONCE_A = false>
__device__ __forceinline__ Sums<acc_t<T>> row_sums(const T* a, const T* b, int constant,
                                                   int64_t begin, int64_t end, int lane,
                                                   int width) {
    Sums<acc_t<T>> s = Sums<acc_t<T>>::zero();
    const int64_t step = (int64_t)width * V;
    int64_t j = begin + (int64_t)lane * V;
    if (constant != 0) {
        // One side is a splat: only the other is streamed.
        const Pack<T, V> c = splat<T, V>(constant == 1 ? a : b);
        const T* v = constant == 1 ? b : a;
        for (; j + 3 * step < end; j += 4 * step) {
            Pack<T, V> x[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) x[u] = load_pack<T, V>(v + j + u * step);
#pragma unroll
            for (int u = 0; u < 4; ++u)
#pragma unroll
                for (int q = 0; q < V; ++q)
                    if (constant == 1) s.add(to_acc(c.v[q]), to_acc(x[u].v[q]));
                    else s.add(to_acc(x[u].v[q]), to_acc(c.v[q]));
        }
        for (; j < end; j += step) {
            const Pack<T, V> x = load_pack<T, V>(v + j);
#pragma unroll
            for (int q = 0; q < V; ++q)
                if (constant == 1) s.add(to_acc(c.v[q]), to_acc(x.v[q]));
                else s.add(to_acc(x.v[q]), to_acc(c.v[q]));
        }
        return s;
    }
    for (; j + 3 * step < end; j += 4 * step) {
        Pack<T, V> va[4], vb[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            va[u] = load_pack<T, V, ONCE_A>(a + j + u * step);
            vb[u] = load_pack<T, V>(b + j + u * step);
        }
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
            for (int q = 0; q < V; ++q) s.add(to_acc(va[u].v[q]), to_acc(vb[u].v[q]));
    }
    for (; j < end; j += step) {
        const Pack<T, V> va = load_pack<T, V, ONCE_A>(a + j);
        const Pack<T, V> vb = load_pack<T, V>(b + j);
#pragma unroll
        for (int q = 0; q < V; ++q) s.add(to_acc(va.v[q]), to_acc(vb.v[q]));
    }
    return s;
}

// Element stride of the reweighted input along its row: 0 when it is the constant one.
__device__ __forceinline__ int64_t reweight_stride(const cosim_rows_params& p) {
    return p.constant_input == p.reweight_input ? 0 : 1;
}

// G lanes per row. All groups of a warp walk the same sequence of row bases, so the warp
// stays converged for the shuffles; rows past the end contribute nothing and store nothing.
template <typename T, int V, int G>
__device__ __forceinline__ void rows_group(const cosim_rows_params& p, const T* __restrict__ x1,
                                           const T* __restrict__ x2, T* __restrict__ out,
                                           T* __restrict__ weighted) {
    using A = acc_t<T>;
    const A eps = (A)p.eps;
    const int lane = threadIdx.x % G;
    const int64_t groups_per_block = blockDim.x / G;
    const int64_t first = (int64_t)blockIdx.x * groups_per_block + threadIdx.x / G;
    const int64_t step = (int64_t)gridDim.x * groups_per_block;
    const int64_t warp_first = first - (threadIdx.x % 32) / G;
    for (int64_t base = warp_first; base < p.row_count; base += step) {
        const int64_t r = base + (threadIdx.x % 32) / G;
        const bool live = r < p.row_count;
        int64_t off1 = 0, off2 = 0;
        if (live) outer_offsets(p.rows, r, off1, off2);
        Sums<A> s = live ? row_sums<T, V>(x1 + off1, x2 + off2, p.constant_input, 0, p.row_len, lane, G)
                         : Sums<A>::zero();
        s = group_sum<G>(s);
        if (!live) continue;
        const T sim = from_acc<T>(finish(s, eps));
        if (lane == 0) out[r] = sim;
        if (p.reweight_input != 0) {
            scale_row<T, V>(reweight_source(p, x1, x2, off1, off2), reweight_stride(p),
                            weighted + r * p.row_len, 0, p.row_len, lane, G, to_acc(sim));
        }
    }
}

// One block per (row, split) work item, grid-striding over them.
template <typename T, int V>
__device__ __forceinline__ void rows_block(const cosim_rows_params& p, const T* __restrict__ x1,
                                           const T* __restrict__ x2, T* __restrict__ out,
                                           T* __restrict__ weighted,
                                           acc_t<T>* __restrict__ partials) {
    using A = acc_t<T>;
    __shared__ Sums<A> scratch[32];
    __shared__ A shared_sim;
    const A eps = (A)p.eps;
    const int64_t items = p.row_count * p.splits;
    for (int64_t w = blockIdx.x; w < items; w += gridDim.x) {
        const int64_t r = w / p.splits;
        const int64_t split = w - r * p.splits;
        const int64_t begin = split * p.chunk;
        const int64_t end = min(p.row_len, begin + p.chunk);
        int64_t off1, off2;
        outer_offsets(p.rows, r, off1, off2);
        // Fused reweighting reads y's row again right after: x is read once and marked so,
        // which leaves L2 to the y rows of the resident blocks.
        Sums<A> s = p.reweight_input == 2 && p.splits == 1
                        ? row_sums<T, V, true>(x1 + off1, x2 + off2, p.constant_input, begin, end,
                                               threadIdx.x, blockDim.x)
                        : row_sums<T, V>(x1 + off1, x2 + off2, p.constant_input, begin, end,
                                         threadIdx.x, blockDim.x);
        s = block_sum(s, scratch);
        if (p.splits > 1) {
            if (threadIdx.x == 0) {
                partials[3 * w + 0] = s.dot;
                partials[3 * w + 1] = s.n1;
                partials[3 * w + 2] = s.n2;
            }
        } else {
            if (threadIdx.x == 0) {
                const T sim = from_acc<T>(finish(s, eps));
                out[r] = sim;
                shared_sim = to_acc(sim);
            }
            if (p.reweight_input != 0) {
                __syncthreads();
                scale_row<T, V>(reweight_source(p, x1, x2, off1, off2), reweight_stride(p),
                                weighted + r * p.row_len, 0, p.row_len, threadIdx.x, blockDim.x,
                                shared_sim);
            }
        }
        __syncthreads();
    }
}

// Combines the split partial sums of each row: one warp per row.
template <typename T>
__device__ __forceinline__ void rows_finish(const cosim_rows_params& p, const acc_t<T>* partials,
                                            T* __restrict__ out) {
    using A = acc_t<T>;
    const int64_t warps = ((int64_t)gridDim.x * blockDim.x) / 32;
    const int lane = threadIdx.x % 32;
    for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; r < p.row_count; r += warps) {
        Sums<A> s = Sums<A>::zero();
        for (int64_t k = lane; k < p.splits; k += 32) {
            const A* q = partials + 3 * (r * p.splits + k);
            s.dot += q[0];
            s.n1 += q[1];
            s.n2 += q[2];
        }
        s = group_sum<32>(s);
        if (lane == 0) out[r] = from_acc<T>(finish(s, (A)p.eps));
    }
}

// weighted[r, j] = y[off_y(r) + j·y_stride] · sim[r] over every element: the reweighting
// pass when it could not be fused into the similarity kernel.
template <typename T>
__device__ __forceinline__ void scale(const cosim_rows_params p, int64_t y_stride, const T* x1,
                                      const T* x2, const T* __restrict__ sim, T* __restrict__ weighted) {
    const int64_t total = p.row_count * p.row_len;
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += step) {
        const int64_t r = t / p.row_len;
        const int64_t j = t - r * p.row_len;
        int64_t off1, off2;
        outer_offsets(p.rows, r, off1, off2);
        const T* y = reweight_source(p, x1, x2, off1, off2);
        weighted[t] = from_acc<T>(to_acc(y[j * y_stride]) * to_acc(sim[r]));
    }
}

}  // namespace cosim

#define COSIM_ROWS_GROUP(NAME, T, G)                                                                \
    extern "C" __global__ void cosim_rows_g##G##_##NAME##_s(cosim_rows_params p, const T* x1,       \
                                                             const T* x2, T* out, T* weighted) {     \
        cosim::rows_group<T, 1, G>(p, x1, x2, out, weighted);                                       \
    }                                                                                               \
    extern "C" __global__ void cosim_rows_g##G##_##NAME##_v(cosim_rows_params p, const T* x1,       \
                                                             const T* x2, T* out, T* weighted) {     \
        cosim::rows_group<T, cosim::vec_width<T>(), G>(p, x1, x2, out, weighted);                   \
    }

#define COSIM_ROWS(NAME, T)                                                                         \
    COSIM_ROWS_GROUP(NAME, T, 4)                                                                    \
    COSIM_ROWS_GROUP(NAME, T, 8)                                                                    \
    COSIM_ROWS_GROUP(NAME, T, 16)                                                                   \
    COSIM_ROWS_GROUP(NAME, T, 32)                                                                   \
    extern "C" __global__ void cosim_rows_block_##NAME##_s(cosim_rows_params p, const T* x1,        \
                                                            const T* x2, T* out, T* weighted,        \
                                                            cosim::acc_t<T>* partials) {             \
        cosim::rows_block<T, 1>(p, x1, x2, out, weighted, partials);                                \
    }                                                                                               \
    extern "C" __global__ void cosim_rows_block_##NAME##_v(cosim_rows_params p, const T* x1,        \
                                                            const T* x2, T* out, T* weighted,        \
                                                            cosim::acc_t<T>* partials) {             \
        cosim::rows_block<T, cosim::vec_width<T>()>(p, x1, x2, out, weighted, partials);            \
    }                                                                                               \
    extern "C" __global__ void cosim_rows_finish_##NAME(cosim_rows_params p,                        \
                                                         const cosim::acc_t<T>* partials, T* out) {  \
        cosim::rows_finish<T>(p, partials, out);                                                    \
    }                                                                                               \
    extern "C" __global__ void cosim_scale_##NAME(cosim_rows_params p, int64_t y_stride,            \
                                                   const T* x1, const T* x2, const T* sim,           \
                                                   T* weighted) {                                   \
        cosim::scale<T>(p, y_stride, x1, x2, sim, weighted);                                        \
    }

COSIM_ROWS(f32, float)
COSIM_ROWS(f64, double)
COSIM_ROWS(f16, __half)
COSIM_ROWS(bf16, __nv_bfloat16)
