// Cosine along a strided (possibly broadcast) axis: one thread computes V adjacent outputs
// of the innermost kept axis, so a warp reads 32·V consecutive elements of each input per
// step of the reduced axis (coalesced, 16-byte loads when V > 1).

#include "common.cuh"

namespace cosim {

// Inner-axis access: MODE_SCALAR uses the general strides (V = 1); the vector modes need
// inner strides (1, 1), (0, 1) or (1, 0): a 0 means that input is the same for the V outputs.
enum Mode { MODE_SCALAR = 0, MODE_VEC = 1, MODE_VEC_BCAST1 = 2, MODE_VEC_BCAST2 = 3 };

template <typename T, int V, int MODE>
__device__ __forceinline__ void along(const cosim_along_params& p, const T* __restrict__ x1,
                                      const T* __restrict__ x2, T* __restrict__ out,
                                      acc_t<T>* __restrict__ partials) {
    using A = acc_t<T>;
    const int64_t inner_v = p.inner / V;
    const int64_t total = p.outer_count * inner_v;
    const int64_t outputs = p.outer_count * p.inner;
    const A eps = (A)p.eps;
    // This thread's share of the reduced axis (all of it when splits == 1). Splits run along
    // y (blocks and threads), so that a block holds several splits of few outputs.
    const int64_t split = (int64_t)blockIdx.y * blockDim.y + threadIdx.y;
    if (split >= p.splits) return;
    const int64_t k0 = split * p.chunk;
    const int64_t k1 = min(p.reduce_len, k0 + p.chunk);
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += step) {
        int64_t o, iv;
        if (total <= 0xffffffffll) {
            o = (uint32_t)t / (uint32_t)inner_v;
            iv = (uint32_t)t - (uint32_t)o * (uint32_t)inner_v;
        } else {
            o = t / inner_v;
            iv = t - o * inner_v;
        }
        int64_t off1, off2;
        outer_offsets(p.outer, o, off1, off2);
        const int64_t i = iv * V;
        const T* a = x1 + off1 + i * p.inner_stride1 + k0 * p.reduce_stride1;
        const T* b = x2 + off2 + i * p.inner_stride2 + k0 * p.reduce_stride2;
        Sums<A> s[V];
#pragma unroll
        for (int j = 0; j < V; ++j) s[j] = Sums<A>::zero();
#pragma unroll 4
        for (int64_t k = k0; k < k1; ++k) {
            if constexpr (MODE == MODE_SCALAR) {
                s[0].add(to_acc(a[0]), to_acc(b[0]));
            } else {
                const Pack<T, V> va = MODE == MODE_VEC_BCAST1 ? splat<T, V>(a) : load_pack<T, V>(a);
                const Pack<T, V> vb = MODE == MODE_VEC_BCAST2 ? splat<T, V>(b) : load_pack<T, V>(b);
#pragma unroll
                for (int j = 0; j < V; ++j) s[j].add(to_acc(va.v[j]), to_acc(vb.v[j]));
            }
            a += p.reduce_stride1;
            b += p.reduce_stride2;
        }
        const int64_t first = o * p.inner + i;
        if (p.splits > 1) {
            A* dst = partials + split * 3 * outputs + first;
#pragma unroll
            for (int j = 0; j < V; ++j) {
                dst[j] = s[j].dot;
                dst[outputs + j] = s[j].n1;
                dst[2 * outputs + j] = s[j].n2;
            }
        } else {
            Pack<T, V> r;
#pragma unroll
            for (int j = 0; j < V; ++j) r.v[j] = from_acc<T>(finish(s[j], eps));
            store_pack<T, V>(out + first, r);
        }
    }
}

// Combines the per-split partial sums: one warp per output, its lanes striding over the
// splits (there are many splits exactly when there are few outputs).
template <typename T>
__device__ __forceinline__ void along_finish(const cosim_along_params& p,
                                             const acc_t<T>* __restrict__ partials,
                                             T* __restrict__ out) {
    using A = acc_t<T>;
    const int64_t outputs = p.outer_count * p.inner;
    const int64_t warps = ((int64_t)gridDim.x * blockDim.x) / 32;
    const int lane = threadIdx.x % 32;
    for (int64_t o = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; o < outputs; o += warps) {
        Sums<A> s = Sums<A>::zero();
        for (int64_t k = lane; k < p.splits; k += 32) {
            const A* q = partials + k * 3 * outputs + o;
            s.dot += q[0];
            s.n1 += q[outputs];
            s.n2 += q[2 * outputs];
        }
        s = group_sum<32>(s);
        if (lane == 0) out[o] = from_acc<T>(finish(s, (A)p.eps));
    }
}

}  // namespace cosim

#define COSIM_ALONG_MODE(NAME, T, SUFFIX, V, MODE)                                               \
    extern "C" __global__ void cosim_along_##NAME##_##SUFFIX(                                    \
        cosim_along_params p, const T* x1, const T* x2, T* out, cosim::acc_t<T>* partials) {     \
        cosim::along<T, V, MODE>(p, x1, x2, out, partials);                                      \
    }

#define COSIM_ALONG(NAME, T)                                                                     \
    COSIM_ALONG_MODE(NAME, T, s, 1, cosim::MODE_SCALAR)                                          \
    COSIM_ALONG_MODE(NAME, T, v, cosim::vec_width<T>(), cosim::MODE_VEC)                         \
    COSIM_ALONG_MODE(NAME, T, vb1, cosim::vec_width<T>(), cosim::MODE_VEC_BCAST1)                \
    COSIM_ALONG_MODE(NAME, T, vb2, cosim::vec_width<T>(), cosim::MODE_VEC_BCAST2)                \
    extern "C" __global__ void cosim_along_finish_##NAME(                                        \
        cosim_along_params p, const cosim::acc_t<T>* partials, T* out) {                         \
        cosim::along_finish<T>(p, partials, out);                                                \
    }

COSIM_ALONG(f32, float)
COSIM_ALONG(f64, double)
COSIM_ALONG(f16, __half)
COSIM_ALONG(bf16, __nv_bfloat16)
