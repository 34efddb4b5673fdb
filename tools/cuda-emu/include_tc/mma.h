// Emulated nvcuda::wmma for the CPU fiber harness (tc build only).
// Every lane's fragment holds the WHOLE tile (element layout is opaque to correct code).
// All operations are warp-collective points: all 32 lanes must arrive at the same op with the
// same pointer / ldm / layout / fragment contents (checked), else EMU FATAL.
// Documented requirements checked: pointer 32-byte aligned, ldm multiple of 16 bytes
// (8 for 16-bit elements, 4 for float).
// mma: D = A*B + C; products exact, the K products and C summed in double, rounded once to
// float (a "wide accumulator" model). __float_to_tf32: round to 10 explicit mantissa bits,
// nearest, ties AWAY from zero (as cvt.rna.tf32.f32); low 13 bits zeroed.
#pragma once
#include "shim.h"

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision { struct tf32 {}; }

template <class T> struct storage { using type = T; };
template <> struct storage<precision::tf32> { using type = float; };

template <class Use, int M, int N, int K> struct dims;
template <int M, int N, int K> struct dims<matrix_a, M, N, K> { static constexpr int R = M, C = K; };
template <int M, int N, int K> struct dims<matrix_b, M, N, K> { static constexpr int R = K, C = N; };
template <int M, int N, int K> struct dims<accumulator, M, N, K> { static constexpr int R = M, C = N; };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    using element_type = T;
    using storage_element_type = typename storage<T>::type;
    static constexpr int rows = dims<Use, M, N, K>::R, cols = dims<Use, M, N, K>::C;
    static constexpr int num_elements = rows * cols;
    storage_element_type x[num_elements];  // row-major tile: x[r * cols + c]
};

inline float __float_to_tf32(float f) {
    if (!std::isfinite(f)) return f;
    uint32_t u = __f2u(f);
    u += 0x1000u;  // half ulp of a 10-bit mantissa: ties away from zero (magnitude rounding)
    u &= 0xffffe000u;
    return __u2f(u);
}
}  // namespace wmma
}  // namespace nvcuda

namespace emu {
enum { OP_WMMA_LOAD = 20, OP_WMMA_STORE, OP_WMMA_MMA, OP_WMMA_FILL };
inline unsigned long long wmma_hash(const void* p, size_t n) {
    const unsigned char* c = (const unsigned char*)p;
    unsigned long long h = 1469598103934665603ull;
    for (size_t i = 0; i < n; ++i) h = (h ^ c[i]) * 1099511628211ull;
    return h;
}
// Phase 1 of a warp-collective wmma op: every lane posts (opcode, key); all must agree.
inline void wmma_arrive(int opcode, unsigned long long key, const char* what) {
    if (blockDim.x % 32) die("block not a multiple of 32");
    const int t = emu::linear_tid(), lane = t % 32;
    Warp& w = g_block->warps[t / 32];
    if (w.exited) die((std::string(what) + ": some lanes of the warp exited").c_str());
    const unsigned long long n = w.seq[lane]++, stamp = n << 8 | (unsigned)opcode;
    unsigned long long* val = w.vals[n & 1];
    unsigned long long* op = w.ops[n & 1];
    val[lane] = key;
    op[lane] = stamp;
    w.bar.wait(what);
    for (int i = 0; i < 32; ++i) {
        if (op[i] != stamp) die((std::string(what) + ": lanes of a warp in different warp ops (or some exited)").c_str());
        if (val[i] != val[0])
            die((std::string(what) + ": lanes disagree (pointer/ldm/layout/fragment contents differ)").c_str());
    }
}
inline void wmma_leave(const char* what) { g_block->warps[emu::linear_tid() / 32].bar.wait(what); }
inline void wmma_check_mem(const void* p, unsigned ldm, size_t esize, int rows_or_cols, const char* what) {
    char buf[200];
    if ((uintptr_t)p % 32) { snprintf(buf, sizeof buf, "%s: pointer %p not 256-bit (32-byte) aligned (addr %% 32 = %u)", what, p, (unsigned)((uintptr_t)p % 32)); die(buf); }
    const unsigned need = esize == 2 ? 8 : 4;
    if (ldm % need) { snprintf(buf, sizeof buf, "%s: ldm %u not a multiple of %u (element size %zu)", what, ldm, need, esize); die(buf); }
    if ((int)ldm < rows_or_cols) { snprintf(buf, sizeof buf, "%s: ldm %u smaller than the tile's leading extent %d", what, ldm, rows_or_cols); die(buf); }
}
}  // namespace emu

namespace nvcuda {
namespace wmma {
template <class L> constexpr bool is_col = std::is_same_v<L, col_major>;

template <class Use, int M, int N, int K, class T, class L, class P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm) {
    using F = fragment<Use, M, N, K, T, L>;
    using S = typename F::storage_element_type;
    static_assert(std::is_same_v<std::remove_cv_t<P>, S>, "load_matrix_sync: pointer type != fragment storage type");
    static_assert(!std::is_same_v<L, void>, "matrix_a/b need a layout");
    constexpr bool col = is_col<L>;
    emu::wmma_check_mem(p, ldm, sizeof(S), col ? F::rows : F::cols, "load_matrix_sync");
    emu::wmma_arrive(emu::OP_WMMA_LOAD, (unsigned long long)(uintptr_t)p * 31 + ldm * 7 + col, "load_matrix_sync");
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = col ? p[r + (size_t)c * ldm] : p[(size_t)r * ldm + c];
    emu::wmma_leave("load_matrix_sync (2)");
}

template <int M, int N, int K, class T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t lay) {
    using F = fragment<accumulator, M, N, K, T>;
    const bool col = lay == mem_col_major;
    emu::wmma_check_mem(p, ldm, sizeof(T), col ? F::rows : F::cols, "load_matrix_sync(acc)");
    emu::wmma_arrive(emu::OP_WMMA_LOAD, (unsigned long long)(uintptr_t)p * 31 + ldm * 7 + col, "load_matrix_sync(acc)");
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = col ? p[r + (size_t)c * ldm] : p[(size_t)r * ldm + c];
    emu::wmma_leave("load_matrix_sync(acc) (2)");
}

template <int M, int N, int K, class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t lay) {
    using F = fragment<accumulator, M, N, K, T>;
    const bool col = lay == mem_col_major;
    emu::wmma_check_mem(p, ldm, sizeof(T), col ? F::rows : F::cols, "store_matrix_sync");
    emu::wmma_arrive(emu::OP_WMMA_STORE,
                     ((unsigned long long)(uintptr_t)p * 31 + ldm * 7 + col) ^ emu::wmma_hash(f.x, sizeof f.x),
                     "store_matrix_sync");
    const int lane = emu::linear_tid() % 32;
    for (int e = lane; e < F::num_elements; e += 32) {  // each lane writes its share
        const int r = e / F::cols, c = e % F::cols;
        (col ? p[r + (size_t)c * ldm] : p[(size_t)r * ldm + c]) = f.x[e];
    }
    emu::wmma_leave("store_matrix_sync (2)");
}

template <class Use, int M, int N, int K, class T, class L, class V>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
    using S = typename fragment<Use, M, N, K, T, L>::storage_element_type;
    S s;
    if constexpr (std::is_same_v<S, V>) s = v; else s = (S)v;
    emu::wmma_arrive(emu::OP_WMMA_FILL, emu::wmma_hash(&s, sizeof s), "fill_fragment");
    for (auto& e : f.x) e = s;
    emu::wmma_leave("fill_fragment (2)");
}

inline double wmma_d(float x) { return x; }
inline double wmma_d(__half x) { return __half2float(x); }
inline double wmma_d(__nv_bfloat16 x) { return __bfloat162float(x); }
inline bool wmma_is_tf32(float x) { return (__f2u(x) & 0x1fffu) == 0 || !std::isfinite(x); }

template <int M, int N, int K, class T, class LA, class LB, class TC>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
                     const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, TC>& c) {
    static_assert(std::is_same_v<TC, float>, "f32 accumulators only");
    unsigned long long h = emu::wmma_hash(a.x, sizeof a.x) ^ (emu::wmma_hash(b.x, sizeof b.x) * 3) ^
                           (emu::wmma_hash(c.x, sizeof c.x) * 5);
    emu::wmma_arrive(emu::OP_WMMA_MMA, h, "mma_sync");
    // Every lane holds the same fragments (checked above): lane 0 computes for the warp.
    static_assert(M * N <= 256, "accumulator tile larger than the warp's scratch");
    const int t = emu::linear_tid();
    emu::Warp& w = emu::g_block->warps[t / 32];
    if (t % 32 == 0) {
        if constexpr (std::is_same_v<T, precision::tf32>) {
            static int strict = [] { const char* e = getenv("EMU_TF32_STRICT"); return e ? atoi(e) : 1; }();
            if (strict) {
                for (float v : a.x) if (!wmma_is_tf32(v)) emu::die("mma_sync: tf32 matrix_a element not converted by __float_to_tf32");
                for (float v : b.x) if (!wmma_is_tf32(v)) emu::die("mma_sync: tf32 matrix_b element not converted by __float_to_tf32");
            }
        }
        for (int i = 0; i < M; ++i)
            for (int j = 0; j < N; ++j) {
                double s = c.x[i * N + j];
                for (int k = 0; k < K; ++k) s += wmma_d(a.x[i * K + k]) * wmma_d(b.x[k * N + j]);
                w.mma[i * N + j] = (float)s;
            }
    }
    // The next mma of this warp writes the scratch only after every lane arrived there,
    // that is after every lane copied this result out.
    emu::wmma_leave("mma_sync (2)");
    std::memcpy(d.x, w.mma, sizeof(float) * M * N);
}
}  // namespace wmma
}  // namespace nvcuda
