// Shared device code: element types and their accumulators, 16-byte vector loads, the
// outer-index walk, warp/block sums, and the cosine finish (the twin of src/cosine.rs).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "params.h"

namespace cosim {

// Accumulator per element type: f32 for f32/f16/bf16, f64 for f64 (SPEC §2).
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <typename T> using acc_t = typename Acc<T>::type;

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_acc(acc_t<T> x);
template <> __device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <> __device__ __forceinline__ double from_acc<double>(double x) { return x; }
template <> __device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// Elements in one 16-byte vector.
template <typename T> __host__ __device__ constexpr int vec_width() { return 16 / (int)sizeof(T); }

// V consecutive elements, loaded or stored as one 16-byte transaction when V > 1.
template <typename T, int V> struct alignas(V * sizeof(T)) Pack {
    T v[V];
};

// V elements as one 16-byte load through the read-only path; with ONCE, marked "streaming,
// read once" (ld.global.cs: evict-first in L1 and L2), for data that must not push out what
// is about to be read again.
template <typename T, int V, bool ONCE = false>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
    Pack<T, V> r;
    if constexpr (V * sizeof(T) == 16) {
        const uint4* q = reinterpret_cast<const uint4*>(p);
        const uint4 raw = ONCE ? __ldcs(q) : __ldg(q);
        r = *reinterpret_cast<const Pack<T, V>*>(&raw);
    } else {
#pragma unroll
        for (int i = 0; i < V; ++i) r.v[i] = p[i];
    }
    return r;
}

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> splat(const T* p) {
    Pack<T, V> r;
    const T x = __ldg(p);
#pragma unroll
    for (int i = 0; i < V; ++i) r.v[i] = x;
    return r;
}

// V elements as one 16-byte store; with ONCE, streaming (st.global.cs: evict-first), for
// output nobody reads back here.
template <typename T, int V, bool ONCE = false>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& x) {
    if constexpr (ONCE && V * sizeof(T) == 16) {
        __stcs(reinterpret_cast<uint4*>(p), *reinterpret_cast<const uint4*>(&x));
    } else {
        *reinterpret_cast<Pack<T, V>*>(p) = x;
    }
}

// Element offsets of outer index `o` in the two inputs (row-major over idx.size).
__device__ __forceinline__ void outer_offsets(const cosim_index& idx, int64_t o, int64_t& off1,
                                              int64_t& off2) {
    off1 = 0;
    off2 = 0;
    for (int d = idx.ndim - 1; d > 0; --d) {
        const int64_t q = o / idx.size[d];
        const int64_t i = o - q * idx.size[d];
        off1 += i * idx.stride1[d];
        off2 += i * idx.stride2[d];
        o = q;
    }
    if (idx.ndim > 0) {
        off1 += o * idx.stride1[0];
        off2 += o * idx.stride2[0];
    }
}

// dot, ‖x1‖², ‖x2‖² of one vector pair (or a part of it).
template <typename A> struct Sums {
    A dot, n1, n2;
    static __device__ __forceinline__ Sums zero() { return Sums{A(0), A(0), A(0)}; }
    __device__ __forceinline__ void add(A x, A y) {
        dot = fma(x, y, dot);
        n1 = fma(x, x, n1);
        n2 = fma(y, y, n2);
    }
    __device__ __forceinline__ void add(const Sums& o) {
        dot += o.dot;
        n1 += o.n1;
        n2 += o.n2;
    }
};

// Sum over the lanes of aligned groups of G lanes (G a power of two ≤ 32); every lane of
// the warp must call it.
template <int G, typename A> __device__ __forceinline__ Sums<A> group_sum(Sums<A> s) {
#pragma unroll
    for (int m = G / 2; m > 0; m /= 2) {
        s.dot += __shfl_xor_sync(0xffffffffu, s.dot, m);
        s.n1 += __shfl_xor_sync(0xffffffffu, s.n1, m);
        s.n2 += __shfl_xor_sync(0xffffffffu, s.n2, m);
    }
    return s;
}

// Sum over the block; the result is valid in thread 0. `scratch` holds 32 entries and must
// not be in use by other threads (callers __syncthreads() before reusing it).
template <typename A> __device__ __forceinline__ Sums<A> block_sum(Sums<A> s, Sums<A>* scratch) {
    s = group_sum<32>(s);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) scratch[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < (int)(blockDim.x / 32) ? scratch[lane] : Sums<A>::zero();
        s = group_sum<32>(s);
    }
    return s;
}

__device__ __forceinline__ float sqrt_acc(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_acc(double x) { return sqrt(x); }

// dot / (max(‖x1‖, eps) · max(‖x2‖, eps)); zero dot → 0 (so a zero vector gives 0 even with
// eps = 0); clamped to [-1, 1] with comparisons, which keep NaN (fminf/fmaxf would not).
template <typename A> __device__ __forceinline__ A finish(const Sums<A>& s, A eps) {
    if (s.dot == A(0)) return A(0);
    const A r = s.dot / (fmax(sqrt_acc(s.n1), eps) * fmax(sqrt_acc(s.n2), eps));
    return r > A(1) ? A(1) : (r < A(-1) ? A(-1) : r);
}

}  // namespace cosim
