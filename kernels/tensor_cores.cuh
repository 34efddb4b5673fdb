// Tensor-core tiles for the pairwise product kernels (kernels/tiles.cuh, Precision::Fast).
#pragma once

#include <mma.h>

namespace cosim {
namespace pair {

// ---- Tensor cores (Precision::Fast): WMMA on TF32 (f32 inputs) or f16/bf16 with f32
// accumulation, one mma k-step per shared slice; 8 warps as 2 × 4, each 64 × 32 of the tile.
// The accumulators go through shared memory (32 rows at a time) into the same per-thread
// 8 × 8 layout as the FFMA path, so every epilogue serves both.

// Shared element and mma shape per input type: f32 → TF32 (k = 8), halves → k = 16.
template <typename T> struct Tc {
    using S = T;
    using Frag = T;
    static constexpr int K = 16;
    static constexpr int LD = BM + 8;  // ldm a multiple of 16 bytes; fragment bases 32-byte aligned
};
template <> struct Tc<float> {
    using S = float;
    using Frag = nvcuda::wmma::precision::tf32;
    static constexpr int K = 8;
    static constexpr int LD = LDS;  // ldm a multiple of 16 bytes; fragment bases 32-byte aligned
};

template <typename T> struct TcSlices {
    typename Tc<T>::S a[2][Tc<T>::K][Tc<T>::LD];
    typename Tc<T>::S b[2][Tc<T>::K][Tc<T>::LD];
};

// 32 rows of accumulators on their way from fragments to threads.
constexpr int STAGE_ROWS = 32;
using Stage = float[STAGE_ROWS][LDS];

// Shared bytes a product kernel needs, for either path.
template <typename T>
__host__ __device__ constexpr size_t tile_smem() {
    return sizeof(Slices) > sizeof(TcSlices<T>)
               ? (sizeof(Slices) > sizeof(Stage) ? sizeof(Slices) : sizeof(Stage))
               : (sizeof(TcSlices<T>) > sizeof(Stage) ? sizeof(TcSlices<T>) : sizeof(Stage));
}

// Stores 8 consecutive components (two reader loads) of a slice into tensor-core shared
// memory, half `h` of a 16-deep slice (h = 0 only for TF32).
template <typename S, int LD, bool COLS>
__device__ __forceinline__ void store_slice_tc(S (*slice)[LD], int h, const float r[4]) {
    const int t = threadIdx.x;
    if constexpr (!COLS) {
#pragma unroll
        for (int q = 0; q < 4; ++q) slice[h * 8 + (t % 2) * 4 + q][t / 2] = from_acc<S>(r[q]);
    } else {
#pragma unroll
        for (int q = 0; q < 4; ++q) slice[h * 8 + t / 32][(t % 32) * 4 + q] = from_acc<S>(r[q]);
    }
}

template <typename T, bool AC, bool BC, bool SB = false>
__device__ __forceinline__ void tile_dots_tc(const cosim_pair_params& p, const T* a, const T* b,
                                             int64_t row0, int64_t col0,
                                             float (&acc)[TM][TN], unsigned char* raw,
                                             const float* scale_b = nullptr) {
    namespace wmma = nvcuda::wmma;
    using S = typename Tc<T>::S;
    using F = typename Tc<T>::Frag;
    constexpr int K = Tc<T>::K, LD = Tc<T>::LD, NL = K / 8;
    TcSlices<T>& sm = *reinterpret_cast<TcSlices<T>*>(raw);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int warp = threadIdx.x / 32, wr = warp / 4, wc = warp % 4;
    const int ktiles = (int)((p.d + K - 1) / K);
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
    if (ktiles == 0) return;
    wmma::fragment<wmma::accumulator, 16, 16, K, float> c[4][2];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(c[i][j], 0.0f);
    SliceReader<T, AC> read_a(p.a, a, p.d, row0);
    SliceReader<T, BC, SB> read_b(p.b, b, p.d, col0, scale_b);
    float ra[NL][4], rb[NL][4];
#pragma unroll
    for (int h = 0; h < NL; ++h) {
        read_a.load(ra[h]);
        read_b.load(rb[h]);
        store_slice_tc<S, LD, AC>(sm.a[0], h, ra[h]);
        store_slice_tc<S, LD, BC>(sm.b[0], h, rb[h]);
    }
    __syncthreads();
    for (int kt = 0; kt < ktiles; ++kt) {
        const int cur = kt & 1;
        const bool more = kt + 1 < ktiles;
        if (more) {
#pragma unroll
            for (int h = 0; h < NL; ++h) {
                read_a.load(ra[h]);
                read_b.load(rb[h]);
            }
        }
        wmma::fragment<wmma::matrix_a, 16, 16, K, F, wmma::col_major> fa[4];
        wmma::fragment<wmma::matrix_b, 16, 16, K, F, wmma::row_major> fb[2];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            wmma::load_matrix_sync(fa[i], &sm.a[cur][0][wr * 64 + i * 16], LD);
            if constexpr (sizeof(S) == 4)
#pragma unroll
                for (int e = 0; e < fa[i].num_elements; ++e)
                    fa[i].x[e] = wmma::__float_to_tf32(fa[i].x[e]);
        }
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            wmma::load_matrix_sync(fb[j], &sm.b[cur][0][wc * 32 + j * 16], LD);
            if constexpr (sizeof(S) == 4)
#pragma unroll
                for (int e = 0; e < fb[j].num_elements; ++e)
                    fb[j].x[e] = wmma::__float_to_tf32(fb[j].x[e]);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::mma_sync(c[i][j], fa[i], fb[j], c[i][j]);
        if (more) {
#pragma unroll
            for (int h = 0; h < NL; ++h) {
                store_slice_tc<S, LD, AC>(sm.a[cur ^ 1], h, ra[h]);
                store_slice_tc<S, LD, BC>(sm.b[cur ^ 1], h, rb[h]);
            }
        }
        __syncthreads();
    }
    // Rows [32q, 32q + 32) of the tile: fragments i = 2(q % 2), +1 of the warps with
    // wr = q / 2, read back by the threads with ty / 4 = q.
    Stage& stage = *reinterpret_cast<Stage*>(raw);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        if (wr == q / 2) {
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 2; ++j)
                    wmma::store_matrix_sync(&stage[i * 16][wc * 32 + j * 16],
                                            c[(q % 2) * 2 + i][j], LDS, wmma::mem_row_major);
        }
        __syncthreads();
        if (ty / 4 == q) {
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = stage[(ty % 4) * TM + i][tx * TN + j];
        }
        __syncthreads();
    }
}

}  // namespace pair
}  // namespace cosim
