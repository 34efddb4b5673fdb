// The tile machinery of the pairwise product kernels, shared by the forward
// (kernels/pairwise.cu) and the gradients (kernels/pair_backward.cu): a block computes a
// 128 × 128 tile of dot products between two sets of vectors described by cosim_pair_set
// (rows or columns, any strides), 8 × 8 per thread, from double-buffered shared k-slices,
// by FFMA or (Precision::Fast) tensor cores. A reader may scale each component of the
// second operand by a per-component factor as it loads it (the gradients fold the inverse
// norms of the reduced set in there).
#pragma once

#include "common.cuh"

namespace cosim {
namespace pair {

constexpr int BM = 128, BN = 128, BK = 8, TM = 8, TN = 8, THREADS = 256;
// Row stride of a shared k-slice: 4 floats of padding keep the transposed stores of the row
// layout off each other's banks while rows stay 16-byte aligned.
constexpr int LDS = BM + 4;
constexpr unsigned FULL = 0xffffffffu;

// Offset of a set's inverse norms for batch bb (a shared set has one copy).
__device__ __forceinline__ int64_t inv_base(const cosim_pair_set& s, int64_t bb) {
    return s.batch_stride != 0 ? bb * s.count : 0;
}

// Four consecutive elements as floats, in one vector load (16 B for f32, 8 B for halves).
__device__ __forceinline__ void load4(const float* p, float r[4]) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(p));
    r[0] = v.x, r[1] = v.y, r[2] = v.z, r[3] = v.w;
}
__device__ __forceinline__ void load4(const __half* p, float r[4]) {
    const uint2 raw = __ldg(reinterpret_cast<const uint2*>(p));
    const __half2* h = reinterpret_cast<const __half2*>(&raw);
    const float2 lo = __half22float2(h[0]), hi = __half22float2(h[1]);
    r[0] = lo.x, r[1] = lo.y, r[2] = hi.x, r[3] = hi.y;
}
__device__ __forceinline__ void load4(const __nv_bfloat16* p, float r[4]) {
    const uint2 raw = __ldg(reinterpret_cast<const uint2*>(p));
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
    const float2 lo = __bfloat1622float2(h[0]), hi = __bfloat1622float2(h[1]);
    r[0] = lo.x, r[1] = lo.y, r[2] = hi.x, r[3] = hi.y;
}

// Reads this thread's 4 elements of each BK × 128 slice (components k0.., vectors v0..) of
// a set whose batch starts at `x`, zeros outside the set. Rows: 2 threads per vector, 4
// consecutive components each; columns: 32 threads per component, 4 consecutive vectors each
// (both read memory contiguously across the warp). The pointer and bounds are worked out
// once per tile, so a slice costs one compare and one load. With SCALED, component k of
// every vector is multiplied by scale[k] as it is loaded.
template <typename T, bool COLS, bool SCALED = false>
struct SliceReader {
    const T* p;         // this thread's first element of the next slice
    const float* sc;    // SCALED: the scale of this thread's first component of the next slice
    int64_t step;       // elements from one slice to the next (columns; rows step BK)
    int kleft;          // components left from this thread's first one in the next slice
    int live;           // vectors of this thread inside the set: 0..4 (rows: 0 or 4)
    bool fast;          // all 4 inside and vector loads aligned

    __device__ __forceinline__ SliceReader(const cosim_pair_set& s, const T* x, int64_t d,
                                           int64_t v0, const float* scale = nullptr) {
        const int t = threadIdx.x;
        bool aligned = true;
        int kk;
        if constexpr (!COLS) {
            const int64_t v = v0 + t / 2;
            kk = (t % 2) * 4;
            live = v < s.count ? 4 : 0;
            p = x + (live ? v : 0) * s.vec_stride + kk;
            step = BK;
            kleft = (int)d - kk;
        } else {
            const int64_t v = v0 + (t % 32) * 4;
            kk = t / 32;
            const int64_t n = s.count - v;
            live = n <= 0 ? 0 : (n >= 4 ? 4 : (int)n);
            p = x + (int64_t)kk * s.comp_stride + (live ? v : 0);
            step = BK * s.comp_stride;
            kleft = (int)d - kk;
            // `vec` says the set's base and component stride are aligned; the first vector
            // must be too, and a launch may start at any row (row chunks, budgeted blocks).
            aligned = v % 4 == 0;
        }
        fast = s.vec != 0 && live == 4 && aligned;
        sc = SCALED ? scale + kk : nullptr;
    }

    // The next slice.
    __device__ __forceinline__ void load(float r[4]) {
        if constexpr (!COLS) {
            if (fast && kleft > 0) {
                load4(p, r);
            } else {
#pragma unroll
                for (int i = 0; i < 4; ++i) r[i] = live && i < kleft ? to_acc(p[i]) : 0.0f;
            }
            p += BK;
        } else {
            if (fast && kleft > 0) {
                load4(p, r);
            } else {
#pragma unroll
                for (int i = 0; i < 4; ++i) r[i] = kleft > 0 && i < live ? to_acc(p[i]) : 0.0f;
            }
            p += step;
        }
        if constexpr (SCALED) {
            if constexpr (!COLS) {
#pragma unroll
                for (int i = 0; i < 4; ++i) r[i] *= i < kleft ? __ldg(sc + i) : 0.0f;
            } else {
                const float f = kleft > 0 ? __ldg(sc) : 0.0f;
#pragma unroll
                for (int i = 0; i < 4; ++i) r[i] *= f;
            }
            sc += BK;
        }
        kleft -= BK;
    }
};

// Stores what a SliceReader loaded into a k-major shared slice [BK][LDS].
template <bool COLS>
__device__ __forceinline__ void store_slice(float (*slice)[LDS], const float r[4]) {
    const int t = threadIdx.x;
    if constexpr (!COLS) {
#pragma unroll
        for (int q = 0; q < 4; ++q) slice[(t % 2) * 4 + q][t / 2] = r[q];
    } else {
        *reinterpret_cast<float4*>(&slice[t / 32][(t % 32) * 4]) =
            make_float4(r[0], r[1], r[2], r[3]);
    }
}

struct Slices {
    float a[2][BK][LDS];
    float b[2][BK][LDS];
};

// acc[i][j] = dot(a_{row0 + ty·8 + i}, b_{col0 + tx·8 + j}) for this thread (ty = t / 16,
// tx = t % 16), zeros outside the sets; AC/BC: the sets' layouts are columns. Ends with a
// __syncthreads (the slices are free again). With SB, b's component k is scaled by
// scale_b[k] (SliceReader).
template <typename T, bool AC, bool BC, bool SB = false>
__device__ __forceinline__ void tile_dots(const cosim_pair_params& p, const T* a, const T* b,
                                          int64_t row0, int64_t col0, float (&acc)[TM][TN],
                                          Slices& sm, const float* scale_b = nullptr) {
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int ktiles = (int)((p.d + BK - 1) / BK);
    if (ktiles == 0) return;
    SliceReader<T, AC> read_a(p.a, a, p.d, row0);
    SliceReader<T, BC, SB> read_b(p.b, b, p.d, col0, scale_b);
    float ra[4], rb[4];
    read_a.load(ra);
    read_b.load(rb);
    store_slice<AC>(sm.a[0], ra);
    store_slice<BC>(sm.b[0], rb);
    __syncthreads();
    for (int kt = 0; kt < ktiles; ++kt) {
        const int cur = kt & 1;
        const bool more = kt + 1 < ktiles;
        if (more) {
            read_a.load(ra);
            read_b.load(rb);
        }
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            float fa[TM], fb[TN];
            const float4 a0 = *reinterpret_cast<const float4*>(&sm.a[cur][k][ty * TM]);
            const float4 a1 = *reinterpret_cast<const float4*>(&sm.a[cur][k][ty * TM + 4]);
            const float4 b0 = *reinterpret_cast<const float4*>(&sm.b[cur][k][tx * TN]);
            const float4 b1 = *reinterpret_cast<const float4*>(&sm.b[cur][k][tx * TN + 4]);
            fa[0] = a0.x, fa[1] = a0.y, fa[2] = a0.z, fa[3] = a0.w;
            fa[4] = a1.x, fa[5] = a1.y, fa[6] = a1.z, fa[7] = a1.w;
            fb[0] = b0.x, fb[1] = b0.y, fb[2] = b0.z, fb[3] = b0.w;
            fb[4] = b1.x, fb[5] = b1.y, fb[6] = b1.z, fb[7] = b1.w;
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(fa[i], fb[j], acc[i][j]);
        }
        if (more) {
            store_slice<AC>(sm.a[cur ^ 1], ra);
            store_slice<BC>(sm.b[cur ^ 1], rb);
        }
        __syncthreads();
    }
}

}  // namespace pair
}  // namespace cosim

#if __has_include(<mma.h>)
#define COSIM_TENSOR_CORES 1
#include "tensor_cores.cuh"
#else
// Only a CPU emulation of the FFMA kernels lacks mma.h (nvcc always has it).
#define COSIM_TENSOR_CORES 0
namespace cosim::pair {
template <typename T>
__host__ __device__ constexpr size_t tile_smem() {
    return sizeof(Slices);
}
}  // namespace cosim::pair
#endif

namespace cosim {
namespace pair {

// The tile's dot products by FFMA (exact) or tensor cores (TC), in the same per-thread layout.
// With SB, b's components are scaled by scale_b as they are read (SliceReader).
template <typename T, bool AC, bool BC, bool TC, bool SB = false>
__device__ __forceinline__ void dots(const cosim_pair_params& p, const T* a, const T* b,
                                     int64_t row0, int64_t col0, float (&acc)[TM][TN],
                                     unsigned char* raw, const float* scale_b = nullptr) {
#if COSIM_TENSOR_CORES
    if constexpr (TC) {
        tile_dots_tc<T, AC, BC, SB>(p, a, b, row0, col0, acc, raw, scale_b);
    } else
#endif
    {
        tile_dots<T, AC, BC, SB>(p, a, b, row0, col0, acc, *reinterpret_cast<Slices*>(raw),
                                 scale_b);
    }
}

}  // namespace pair
}  // namespace cosim
