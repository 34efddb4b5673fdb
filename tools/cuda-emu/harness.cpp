// Host mirror of src/cuda/pairwise.rs over the emulated kernels, plus a double reference.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>
#include "params.h"

using u64 = unsigned long long;
using bf16 = __nv_bfloat16;

#ifdef EMU_TC
#define LS(L) L##_tc
#else
#define LS(L) L
#endif
#define DECL(T, N, L) DECL_(T, N, L)
#define DECL_(T, N, L)                                                                         \
    extern "C" void cosim_pair_matrix_##N##_##L(cosim_pair_params, const T*, const T*, const float*, const float*, T*); \
    extern "C" void cosim_pair_argmax_##N##_##L(cosim_pair_params, const T*, const T*, const float*, const float*, u64*); \
    extern "C" void cosim_pair_greedy_##N##_##L(cosim_pair_params, const T*, const T*, const float*, const float*, unsigned*, unsigned*); \
    extern "C" void cosim_pair_topk_##N##_##L(cosim_pair_params, const T*, const T*, const float*, const float*, u64*, int64_t);
#define DECLT(T, N)                                                                              \
    DECL(T, N, LS(rr)) DECL(T, N, LS(rc)) DECL(T, N, LS(cr)) DECL(T, N, LS(cc))                                  \
    extern "C" void cosim_pair_keys_finish_##N(int64_t, const u64*, T*, uint32_t*);              \
    extern "C" void cosim_pair_topk_merge_##N(int64_t, int64_t, int32_t, const u64*, T*, uint32_t*); \
    extern "C" void cosim_pair_greedy_finish_##N(cosim_pair_params, const unsigned*, const unsigned*, const T*, const T*, T*, T*, T*); \
    extern "C" void cosim_pair_norms_##N(cosim_pair_set, int64_t, int64_t, double, const T*, float*); \
    extern "C" void cosim_pair_colsum_##N(cosim_pair_set, int64_t, const T*, const float*, float*); \
    extern "C" void cosim_pair_rowdot_##N(cosim_pair_params, const T*, const float*, const float*, int32_t, T*); \
    extern "C" void cosim_pair_meandot_##N(int64_t, const float*, int32_t, const float*, int32_t, T*);
DECLT(float, f32)
DECLT(__half, f16)
DECLT(bf16, bf16)

template <class T> struct K;
#define KT(T, N) KT1(T, N, LS(rr), LS(rc), LS(cr), LS(cc))
#define KT1(T, N, A, B, C, D) KT_(T, N, A, B, C, D)
#define KT_(T, N, RR, RC, CR, CC)                                                                                 \
    template <> struct K<T> {                                                                    \
        static constexpr const char* name = #N;                                                  \
        static constexpr decltype(&cosim_pair_matrix_##N##_##RR) matrix[4] = {cosim_pair_matrix_##N##_##RR, cosim_pair_matrix_##N##_##RC, cosim_pair_matrix_##N##_##CR, cosim_pair_matrix_##N##_##CC}; \
        static constexpr decltype(&cosim_pair_argmax_##N##_##RR) argmax[4] = {cosim_pair_argmax_##N##_##RR, cosim_pair_argmax_##N##_##RC, cosim_pair_argmax_##N##_##CR, cosim_pair_argmax_##N##_##CC}; \
        static constexpr decltype(&cosim_pair_greedy_##N##_##RR) greedy[4] = {cosim_pair_greedy_##N##_##RR, cosim_pair_greedy_##N##_##RC, cosim_pair_greedy_##N##_##CR, cosim_pair_greedy_##N##_##CC}; \
        static constexpr decltype(&cosim_pair_topk_##N##_##RR) topk[4] = {cosim_pair_topk_##N##_##RR, cosim_pair_topk_##N##_##RC, cosim_pair_topk_##N##_##CR, cosim_pair_topk_##N##_##CC}; \
        static constexpr auto keys_finish = cosim_pair_keys_finish_##N;                          \
        static constexpr auto topk_merge = cosim_pair_topk_merge_##N;                            \
        static constexpr auto greedy_finish = cosim_pair_greedy_finish_##N;                      \
        static constexpr auto norms = cosim_pair_norms_##N;                                      \
        static constexpr auto colsum = cosim_pair_colsum_##N;                                    \
        static constexpr auto rowdot = cosim_pair_rowdot_##N;                                    \
        static constexpr auto meandot = cosim_pair_meandot_##N;                                  \
    };
KT(float, f32)
KT(__half, f16)
KT(bf16, bf16)

static double tod(float x) { return x; }
static double tod(__half x) { return __half2float(x); }
static double tod(bf16 x) { return __bfloat162float(x); }
template <class T> T fromf(float x);
template <> float fromf<float>(float x) { return x; }
template <> __half fromf<__half>(float x) { return __float2half_rn(x); }
template <> bf16 fromf<bf16>(float x) { return __float2bfloat16_rn(x); }

// ---------------- device memory with guard zones ----------------
static const size_t GUARD = 256;
struct Alloc { char* base; size_t bytes; std::string what; };
static std::vector<Alloc> g_allocs;
static int g_fail = 0, g_checks = 0;
static std::string g_case;
static std::map<std::string, int> g_fail_by;
#define FAIL(tag, ...) do { ++g_fail; if (g_fail_by[tag]++ < 6) { fprintf(stdout, "  FAIL [%s] %s: ", tag, g_case.c_str()); fprintf(stdout, __VA_ARGS__); fputc('\n', stdout); } } while (0)

static char* dalloc(size_t bytes, int fill, const char* what) {  // fill: -1 poison, 0 zero
    size_t b = std::max<size_t>(bytes, 1);
    if (getenv("EMU_NOGUARD")) {
        void* q = nullptr; if (posix_memalign(&q, 64, b)) abort();
        char* p = (char*)q; memset(p, fill == 0 ? 0 : 0x5c, b);
        g_allocs.push_back({p, 0, what}); return p;
    }
    char* raw = (char*)aligned_alloc(256, b + 2 * GUARD + 256);
    memset(raw, 0xA5, b + 2 * GUARD + 256);
    char* p = raw + GUARD;
    if (fill == 0) memset(p, 0, b);
    else memset(p, 0x5c, b);  // overwritten by typed poison below where it matters
    g_allocs.push_back({raw, b, what});
    return p;
}
static void check_guards() {
    if (getenv("EMU_NOGUARD")) return;
    for (auto& a : g_allocs) {
        for (size_t i = 0; i < GUARD; ++i)
            if ((unsigned char)a.base[i] != 0xA5) { FAIL("oob-write", "guard before %s (%zu bytes) hit at -%zu", a.what.c_str(), a.bytes, GUARD - i); break; }
        for (size_t i = 0; i < GUARD + 256; ++i)
            if ((unsigned char)a.base[GUARD + a.bytes + i] != 0xA5) { FAIL("oob-write", "guard after %s (%zu bytes) hit at +%zu", a.what.c_str(), a.bytes, i); break; }
    }
}
static void free_all() { for (auto& a : g_allocs) free(a.base); g_allocs.clear(); }
template <class T> static T* poisoned(size_t n, const char* what) {
    T* p = (T*)dalloc(n * sizeof(T), -1, what);
    for (size_t i = 0; i < n; ++i) {
        if constexpr (sizeof(T) == 4) { uint32_t v = 0x7fc0dead; memcpy(&p[i], &v, 4); }
        else { uint16_t v = 0x7d11; memcpy(&p[i], &v, 2); }  // f16: NaN-ish/ bf16: large value
    }
    return p;
}
template <class T> static T* zeroed(size_t n, const char* what) { return (T*)dalloc(n * sizeof(T), 0, what); }

// ---------------- plan ----------------
struct Strides { size_t batch, vec, comp; };
struct Plan {
    size_t batch; bool batched; size_t n, m, d;
    Strides a, b; bool acols, bcols; double eps;
    size_t a_vectors() const { return a.batch == 0 ? n : batch * n; }
    size_t b_vectors() const { return b.batch == 0 ? m : batch * m; }
    int lay() const { return (acols ? 2 : 0) + (bcols ? 1 : 0); }
};
static Plan make_plan(long ab, size_t n, long bbn, size_t m, size_t d, bool acols, bool bcols, double eps) {
    Plan p{};
    p.n = n; p.m = m; p.d = d; p.acols = acols; p.bcols = bcols; p.eps = eps;
    p.a = acols ? Strides{n * d, 1, n} : Strides{n * d, d, 1};
    p.b = bcols ? Strides{m * d, 1, m} : Strides{m * d, d, 1};
    if (ab < 0) p.a.batch = 0;
    if (bbn < 0) p.b.batch = 0;
    p.batch = ab > 0 ? ab : (bbn > 0 ? bbn : 1);
    p.batched = ab > 0 || bbn > 0;
    return p;
}

// ---------------- host mirror ----------------
static size_t GRID_YZ = 65535, TOPK_SCRATCH = 256u << 20, SMS = 1;
static const size_t TILE = 128;
static size_t tiles(size_t n) { return (n + TILE - 1) / TILE; }
static unsigned grid_for(size_t threads) { return (unsigned)std::clamp<size_t>((threads + 255) / 256, 1, SMS * 8 * 4); }
static const dim3 BLK(256);

static cosim_pair_set set_params(const Strides& s, size_t count, bool cols, uintptr_t ptr, size_t elem) {
    bool ok = cols ? s.comp % 4 == 0 : s.vec % 4 == 0;
    cosim_pair_set r{};
    r.count = count; r.batch_stride = s.batch; r.vec_stride = s.vec; r.comp_stride = s.comp;
    r.cols = cols; r.vec = ok && ptr % (4 * elem) == 0;
    return r;
}
struct Inputs { uintptr_t a, b, inv_a, inv_b; };
template <class T> static Inputs at_batch(const Plan& p, Inputs x, size_t bb) {
    size_t ia = p.a.batch == 0 ? 0 : bb * p.n, ib = p.b.batch == 0 ? 0 : bb * p.m;
    return {x.a + bb * p.a.batch * sizeof(T), x.b + bb * p.b.batch * sizeof(T), x.inv_a + ia * 4, x.inv_b + ib * 4};
}
template <class T> static cosim_pair_params pair_params(const Plan& p, Inputs ptr, size_t batch, size_t row0, size_t rows, size_t k) {
    cosim_pair_params r{};
    r.a = set_params(p.a, p.n, p.acols, ptr.a, sizeof(T));
    r.b = set_params(p.b, p.m, p.bcols, ptr.b, sizeof(T));
    r.batch = batch; r.d = p.d; r.k = k; r.row0 = row0; r.rows = rows; r.eps = p.eps;
    return r;
}
template <class T> static std::pair<float*, float*> inverse_norms(const Plan& p, const T* a, const T* b) {
    float* inv_a = zeroed<float>(p.a_vectors(), "inv_a");
    float* inv_b = zeroed<float>(p.b_vectors(), "inv_b");
    struct S { const Strides* s; size_t count; bool cols; const T* ptr; float* inv; } sets[2] = {
        {&p.a, p.n, p.acols, a, inv_a}, {&p.b, p.m, p.bcols, b, inv_b}};
    for (auto& s : sets) {
        auto sp = set_params(*s.s, s.count, s.cols, (uintptr_t)s.ptr, sizeof(T));
        size_t batches = s.s->batch == 0 ? 1 : p.batch, vectors = batches * s.count;
        size_t threads = !s.cols ? vectors * 32 : vectors;
        emu::launch("norms", dim3(grid_for(threads)), BLK, K<T>::norms, sp, (int64_t)p.d, (int64_t)batches, p.eps, s.ptr, s.inv);
    }
    return {inv_a, inv_b};
}
template <class T> static void matrix_launch(const Plan& p, Inputs ptr, size_t batch, size_t row0, size_t rows, uintptr_t out) {
    auto pp = pair_params<T>(p, ptr, batch, row0, rows, 0);
    emu::launch("matrix", dim3(tiles(p.m), tiles(rows), batch), BLK, K<T>::matrix[p.lay()], pp,
                (const T*)ptr.a, (const T*)ptr.b, (const float*)ptr.inv_a, (const float*)ptr.inv_b, (T*)out);
}
template <class T> static void gpu_matrix(const Plan& p, const T* a, const T* b, T* out) {
    auto [ia, ib] = inverse_norms<T>(p, a, b);
    Inputs ptr{(uintptr_t)a, (uintptr_t)b, (uintptr_t)ia, (uintptr_t)ib};
    size_t row_bytes = p.m * sizeof(T);
    if (p.batch <= GRID_YZ && tiles(p.n) <= GRID_YZ) matrix_launch<T>(p, ptr, p.batch, 0, p.n, (uintptr_t)out);
    else {
        size_t chunk = GRID_YZ * TILE;
        for (size_t bb = 0; bb < p.batch; ++bb) {
            Inputs q = at_batch<T>(p, ptr, bb);
            for (size_t row0 = 0; row0 < p.n; row0 += chunk) {
                size_t rows = std::min(chunk, p.n - row0);
                matrix_launch<T>(p, q, 1, row0, rows, (uintptr_t)out + (bb * p.n + row0) * row_bytes);
            }
        }
    }
}
template <class T> static void keys_finish(size_t count, u64* keys, T* v, uint32_t* x) {
    emu::launch("keys_finish", dim3(grid_for(count)), BLK, K<T>::keys_finish, (int64_t)count, (const u64*)keys, v, x);
}
static size_t g_splits_seen = 0;
static std::pair<size_t, size_t> topk_segments(size_t blocks, size_t sms, size_t m, size_t list_bytes) {
    size_t want = std::min({sms / std::max<size_t>(blocks, 1), m / (8 * TILE), TOPK_SCRATCH / std::max<size_t>(list_bytes, 1)});
    want = std::clamp<size_t>(want, 1, 32);
    size_t span = std::max<size_t>(((m + want - 1) / want + TILE - 1) / TILE, 1) * TILE;
    return {std::max<size_t>((m + span - 1) / span, 1), span};
}
template <class T> static void topk_launch(const Plan& p, Inputs ptr, size_t batch, size_t row0, size_t rows, size_t k, T* pv, uint32_t* px) {
    size_t count = batch * rows * k;
    auto [splits, span] = topk_segments(tiles(rows) * batch, SMS, p.m, 8 * count);
    g_splits_seen = std::max(g_splits_seen, splits);
    u64* lists = zeroed<u64>(count * splits, "topk lists");
    auto pp = pair_params<T>(p, ptr, batch, row0, rows, k);
    emu::launch("topk", dim3(tiles(rows), batch, splits), BLK, K<T>::topk[p.lay()], pp,
                (const T*)ptr.a, (const T*)ptr.b, (const float*)ptr.inv_a, (const float*)ptr.inv_b, lists, (int64_t)span);
    if (splits == 1) { keys_finish<T>(count, lists, pv, px); return; }
    emu::launch("topk_merge", dim3(grid_for(batch * rows * 32)), BLK, K<T>::topk_merge, (int64_t)(batch * rows), (int64_t)k, (int32_t)splits, (const u64*)lists, pv, px);
}
template <class T> static void gpu_topk(const Plan& p, const T* a, const T* b, size_t k, T* pv, uint32_t* px) {
    auto [ia, ib] = inverse_norms<T>(p, a, b);
    Inputs ptr{(uintptr_t)a, (uintptr_t)b, (uintptr_t)ia, (uintptr_t)ib};
    size_t row_bytes = 8 * k, all = p.batch * p.n * row_bytes;
    if (all <= TOPK_SCRATCH && p.batch <= GRID_YZ) topk_launch<T>(p, ptr, p.batch, 0, p.n, k, pv, px);
    else {
        size_t chunk = std::clamp<size_t>(TOPK_SCRATCH / row_bytes, 1, p.n);
        for (size_t bb = 0; bb < p.batch; ++bb) {
            Inputs q = at_batch<T>(p, ptr, bb);
            for (size_t row0 = 0; row0 < p.n; row0 += chunk) {
                size_t rows = std::min(chunk, p.n - row0), first = (bb * p.n + row0) * k;
                topk_launch<T>(p, q, 1, row0, rows, k, pv + first, px + first);
            }
        }
    }
}
template <class T, class F> static void tiles_launch(const char* nm, F* f, const Plan& p, Inputs ptr, std::vector<uintptr_t> extra) {
    auto go = [&](const cosim_pair_params& pp, Inputs q, std::vector<uintptr_t> ex, dim3 grid) {
        if (ex.size() == 1)
            emu::launch(nm, grid, BLK, (void (*)(cosim_pair_params, const T*, const T*, const float*, const float*, u64*))f, pp, (const T*)q.a, (const T*)q.b, (const float*)q.inv_a, (const float*)q.inv_b, (u64*)ex[0]);
        else
            emu::launch(nm, grid, BLK, (void (*)(cosim_pair_params, const T*, const T*, const float*, const float*, unsigned*, unsigned*))f, pp, (const T*)q.a, (const T*)q.b, (const float*)q.inv_a, (const float*)q.inv_b, (unsigned*)ex[0], (unsigned*)ex[1]);
    };
    size_t chunk = GRID_YZ * TILE;
    if (p.batch <= GRID_YZ) {
        for (size_t row0 = 0; row0 < p.n; row0 += chunk) {
            size_t rows = std::min(chunk, p.n - row0);
            go(pair_params<T>(p, ptr, p.batch, row0, rows, 0), ptr, extra, dim3(tiles(p.m), tiles(rows), p.batch));
        }
    } else {
        for (size_t bb = 0; bb < p.batch; ++bb) {
            Inputs q = at_batch<T>(p, ptr, bb);
            std::vector<uintptr_t> keys = extra.size() == 1 ? std::vector<uintptr_t>{extra[0] + bb * p.n * 8}
                                                            : std::vector<uintptr_t>{extra[0] + bb * p.n * 4, extra[1] + bb * p.m * 4};
            for (size_t row0 = 0; row0 < p.n; row0 += chunk) {
                size_t rows = std::min(chunk, p.n - row0);
                go(pair_params<T>(p, q, 1, row0, rows, 0), q, keys, dim3(tiles(p.m), tiles(rows), 1));
            }
        }
    }
}
template <class T> static void gpu_argmax(const Plan& p, const T* a, const T* b, T* v, uint32_t* x) {
    size_t count = p.batch * p.n;
    auto [ia, ib] = inverse_norms<T>(p, a, b);
    u64* best = zeroed<u64>(count, "argmax keys");
    Inputs ptr{(uintptr_t)a, (uintptr_t)b, (uintptr_t)ia, (uintptr_t)ib};
    tiles_launch<T>("argmax", K<T>::argmax[p.lay()], p, ptr, {(uintptr_t)best});
    keys_finish<T>(count, best, v, x);
}
template <class T> static void gpu_greedy(const Plan& p, const T* a, const T* b, const T* wa, const T* wb, T* P, T* R, T* F) {
    auto [ia, ib] = inverse_norms<T>(p, a, b);
    unsigned* rowmax = zeroed<unsigned>(p.batch * p.n, "rowmax");
    unsigned* colmax = zeroed<unsigned>(p.batch * p.m, "colmax");
    Inputs ptr{(uintptr_t)a, (uintptr_t)b, (uintptr_t)ia, (uintptr_t)ib};
    tiles_launch<T>("greedy", K<T>::greedy[p.lay()], p, ptr, {(uintptr_t)rowmax, (uintptr_t)colmax});
    auto pp = pair_params<T>(p, ptr, p.batch, 0, p.n, 0);
    for (size_t b0 = 0; b0 < p.batch; b0 += GRID_YZ) {
        size_t nb = std::min(GRID_YZ, p.batch - b0);
        const T* wa0 = wa && p.a.batch ? wa + b0 * p.n : wa;
        const T* wb0 = wb && p.b.batch ? wb + b0 * p.m : wb;
        emu::launch("greedy_finish", dim3(nb), BLK, K<T>::greedy_finish, pp, (const unsigned*)rowmax + b0 * p.n, (const unsigned*)colmax + b0 * p.m, wa0, wb0, P + b0, R + b0, F + b0);
    }
}
template <class T> static float* mean_vector(const Plan& p, const Strides& s, size_t count, bool cols, const T* x, const float* inv) {
    size_t batches = s.batch == 0 ? 1 : p.batch;
    float* u = zeroed<float>(batches * p.d, "mean vector");
    if (p.d == 0) return u;
    auto sp = set_params(s, count, cols, (uintptr_t)x, sizeof(T));
    for (size_t b0 = 0; b0 < batches; b0 += GRID_YZ) {
        size_t nb = std::min(GRID_YZ, batches - b0);
        emu::launch("colsum", dim3(tiles(count), nb), BLK, K<T>::colsum, sp, (int64_t)p.d, x + b0 * s.batch, inv + b0 * count, u + b0 * p.d);
    }
    return u;
}
template <class T> static void gpu_row_mean(const Plan& p, const T* a, const T* b, T* out) {
    auto [ia, ib] = inverse_norms<T>(p, a, b);
    float* ub = mean_vector<T>(p, p.b, p.m, p.bcols, b, ib);
    Inputs ptr{(uintptr_t)a, (uintptr_t)b, (uintptr_t)ia, (uintptr_t)ib};
    auto pp = pair_params<T>(p, ptr, p.batch, 0, p.n, 0);
    size_t rows = p.batch * p.n, threads = !p.acols ? rows * 32 : rows;
    emu::launch("rowdot", dim3(grid_for(threads)), BLK, K<T>::rowdot, pp, a, (const float*)ia, (const float*)ub, (int32_t)(p.b.batch != 0), out);
}
template <class T> static void gpu_mean(const Plan& p, const T* a, const T* b, T* out) {
    auto [ia, ib] = inverse_norms<T>(p, a, b);
    float* ua = mean_vector<T>(p, p.a, p.n, p.acols, a, ia);
    float* ub = mean_vector<T>(p, p.b, p.m, p.bcols, b, ib);
    int32_t uab = p.a.batch != 0, ubb = p.b.batch != 0;
    for (size_t b0 = 0; b0 < p.batch; b0 += GRID_YZ) {
        size_t nb = std::min(GRID_YZ, p.batch - b0);
        emu::launch("meandot", dim3(nb), BLK, K<T>::meandot, (int64_t)p.d, (const float*)(ua + (uab ? b0 * p.d : 0)), uab, (const float*)(ub + (ubb ? b0 * p.d : 0)), ubb, out + b0);
    }
}

// ---------------- reference ----------------
struct Ref { std::vector<double> S; size_t B, n, m; double at(size_t b, size_t i, size_t j) const { return S[(b * n + i) * m + j]; } };
static double inv_norm(double nsq, double eps) { double n = std::max(std::sqrt(nsq), eps); return n == 0 ? 0 : 1 / n; }
static double tf32r(double x) { float f = (float)x; if (!std::isfinite(f)) return f; uint32_t u = __f2u(f); u = (u + 0x1000u) & 0xffffe000u; return __u2f(u); }
static double g_maxerr_exact = 0, g_case_maxerr = 0, g_maxerr_tf = 0;
template <class T> static Ref reference(const Plan& p, const T* a, const T* b, bool tf = false) {
    Ref r{std::vector<double>(p.batch * p.n * p.m), p.batch, p.n, p.m};
    for (size_t bb = 0; bb < p.batch; ++bb) {
        auto A = [&](size_t i, size_t k) { return tod(a[bb * p.a.batch + i * p.a.vec + k * p.a.comp]); };
        auto Bv = [&](size_t j, size_t k) { return tod(b[bb * p.b.batch + j * p.b.vec + k * p.b.comp]); };
        std::vector<double> ia(p.n), ib(p.m);
        for (size_t i = 0; i < p.n; ++i) { double s = 0; for (size_t k = 0; k < p.d; ++k) s += A(i, k) * A(i, k); ia[i] = inv_norm(s, p.eps); }
        for (size_t j = 0; j < p.m; ++j) { double s = 0; for (size_t k = 0; k < p.d; ++k) s += Bv(j, k) * Bv(j, k); ib[j] = inv_norm(s, p.eps); }
        for (size_t i = 0; i < p.n; ++i)
            for (size_t j = 0; j < p.m; ++j) {
                double dot = 0;
                for (size_t k = 0; k < p.d; ++k) dot += tf ? tf32r(A(i, k)) * tf32r(Bv(j, k)) : A(i, k) * Bv(j, k);
                double v = dot == 0 ? 0 : dot * ia[i] * ib[j];
                if (!std::isnan(v)) v = std::clamp(v, -1.0, 1.0);
                r.S[(bb * p.n + i) * p.m + j] = v;
            }
    }
    return r;
}
static bool outranks(double v, size_t i, double w, size_t j) {
    bool vn = std::isnan(v), wn = std::isnan(w);
    if (vn && wn) return i < j;
    if (vn) return true;
    if (wn) return false;
    return v > w || (v == w && i < j);
}
static bool close(double g, double r, double tol) {
    if (std::isnan(r) || std::isnan(g)) return std::isnan(r) && std::isnan(g);
    return std::fabs(g - r) <= tol;
}

template <class T> static void check_topk(const char* tag, const Ref& R, size_t k, const T* v, const uint32_t* x, double tol) {
    for (size_t bb = 0; bb < R.B; ++bb)
        for (size_t i = 0; i < R.n; ++i) {
            std::vector<size_t> ord(R.m);
            for (size_t j = 0; j < R.m; ++j) ord[j] = j;
            std::sort(ord.begin(), ord.end(), [&](size_t p, size_t q) { return outranks(R.at(bb, i, p), p, R.at(bb, i, q), q); });
            std::vector<char> seen(R.m, 0);
            for (size_t q = 0; q < k; ++q) {
                size_t o = (bb * R.n + i) * k + q;
                double gv = tod(v[o]); uint32_t gi = x[o]; double rv = R.at(bb, i, ord[q]);
                ++g_checks;
                if (!close(gv, rv, tol)) { FAIL(tag, "b%zu row %zu pos %zu: value %.7g (col %u) want %.7g (col %zu)", bb, i, q, gv, gi, rv, ord[q]); break; }
                if (gi >= R.m) { FAIL(tag, "b%zu row %zu pos %zu: index %u out of range (value %.7g)", bb, i, q, gi, gv); break; }
                if (seen[gi]++) { FAIL(tag, "b%zu row %zu pos %zu: index %u repeated", bb, i, q, gi); break; }
                if (!close(gv, R.at(bb, i, gi), tol)) { FAIL(tag, "b%zu row %zu pos %zu: value %.7g but S[col %u] = %.7g", bb, i, q, gv, gi, R.at(bb, i, gi)); break; }
                // exact unless the reference has a genuine near-tie around this value
                bool near = false;
                for (size_t j = 0; j < R.m && !near; ++j) {
                    double w = R.at(bb, i, j);
                    if (j != ord[q] && close(w, rv, 2 * tol) && !(w == rv || (std::isnan(w) && std::isnan(rv)))) near = true;
                }
                if (!near && gi != ord[q]) { FAIL(tag, "b%zu row %zu pos %zu: index %u want %zu (value %.7g, no near-tie)", bb, i, q, gi, ord[q], rv); break; }
            }
        }
}

// ---------------- cases ----------------
struct Opts { double nan_frac = 0; int dup_b = 0; int zero_vecs = 0; bool misalign_a = false, misalign_b = false; bool weights = true; };
static std::mt19937_64 rng(12345);

template <class T> static void run_case(long ab, size_t n, long bbn, size_t m, size_t d, bool acols, bool bcols, double eps,
                                        std::vector<size_t> ks, Opts o, unsigned ops = 0xff) {
    Plan p = make_plan(ab, n, bbn, m, d, acols, bcols, eps);
    char buf[256];
    snprintf(buf, sizeof buf, "%s a%s[%s%zu] b%s[%s%zu] d=%zu eps=%g%s%s%s%s%s gyz=%zu scr=%zu", K<T>::name, acols ? "C" : "R",
             ab > 0 ? (std::to_string(ab) + "x").c_str() : "", n, bcols ? "C" : "R", bbn > 0 ? (std::to_string(bbn) + "x").c_str() : "", m, d, eps,
             o.nan_frac > 0 ? " nan" : "", o.dup_b ? " dup" : "", o.zero_vecs ? " zero" : "", o.misalign_a ? " misA" : "", o.misalign_b ? " misB" : "", GRID_YZ, TOPK_SCRATCH);
    g_case = buf;
    int fail0 = g_fail;
    size_t alen = (ab > 0 ? ab : 1) * n * d, blen = (bbn > 0 ? bbn : 1) * m * d;
    T* a = (T*)dalloc((alen + 1) * sizeof(T), 0, "a") + (o.misalign_a ? 1 : 0);
    T* b = (T*)dalloc((blen + 1) * sizeof(T), 0, "b") + (o.misalign_b ? 1 : 0);
    std::uniform_real_distribution<float> U(-1, 1);
    for (size_t i = 0; i < alen; ++i) a[i] = fromf<T>(U(rng));
    for (size_t i = 0; i < blen; ++i) b[i] = fromf<T>(U(rng));
    size_t nbA = ab > 0 ? ab : 1, nbB = bbn > 0 ? bbn : 1;
    auto setA = [&](size_t bb, size_t i, size_t k, T v) { a[bb * p.a.batch + i * p.a.vec + k * p.a.comp] = v; };
    auto getB = [&](size_t bb, size_t j, size_t k) { return b[bb * p.b.batch + j * p.b.vec + k * p.b.comp]; };
    auto setB = [&](size_t bb, size_t j, size_t k, T v) { b[bb * p.b.batch + j * p.b.vec + k * p.b.comp] = v; };
    for (int t = 0; t < o.dup_b && m > 1; ++t)  // duplicate vectors in b (exact ties), later copy of earlier
        for (size_t bb = 0; bb < nbB; ++bb) {
            size_t src = rng() % m, dst = rng() % m;
            for (size_t k = 0; k < d; ++k) setB(bb, dst, k, getB(bb, src, k));
        }
    for (int t = 0; t < o.zero_vecs; ++t) {
        for (size_t bb = 0; bb < nbA; ++bb) { size_t i = rng() % n; for (size_t k = 0; k < d; ++k) setA(bb, i, k, fromf<T>(0)); }
        for (size_t bb = 0; bb < nbB; ++bb) { size_t j = rng() % m; for (size_t k = 0; k < d; ++k) setB(bb, j, k, fromf<T>(0)); }
    }
    if (o.nan_frac > 0 && d > 0) {
        for (size_t bb = 0; bb < nbB; ++bb) setB(bb, rng() % m, rng() % d, fromf<T>(NAN));
        if (n > 2) for (size_t bb = 0; bb < nbA; ++bb) setA(bb, rng() % n, rng() % d, fromf<T>(NAN));
    }
#ifdef EMU_TC
    const bool tf = sizeof(T) == 4;
#else
    const bool tf = false;
#endif
    Ref R = reference<T>(p, a, b, tf);
    Ref RX = tf ? reference<T>(p, a, b) : Ref{};
    g_case_maxerr = 0;
    const double tol = sizeof(T) == 4 ? 1e-5 : 1e-2;
    const size_t NM = p.batch * n * m;
    if (ops & 1) {  // matrix
        T* out = poisoned<T>(NM, "matrix out");
        gpu_matrix<T>(p, a, b, out);
        int shown = 0;
        for (size_t i = 0; i < NM; ++i) { if (tf && !std::isnan(R.S[i])) g_maxerr_tf = std::max(g_maxerr_tf, std::fabs(tod(out[i]) - R.S[i])); if (tf && !std::isnan(RX.S[i])) g_case_maxerr = std::max(g_case_maxerr, std::fabs(tod(out[i]) - RX.S[i])); ++g_checks; if (!close(tod(out[i]), R.S[i], tol) && shown++ < 1) FAIL("matrix", "elem b%zu r%zu c%zu: %.7g want %.7g", i / (n * m), i / m % n, i % m, tod(out[i]), R.S[i]); }
    }
    if (ops & 2) for (size_t k : ks) {  // top-k
        if (k == 0 || k > m) continue;
        T* v = poisoned<T>(p.batch * n * k, "topk values");
        uint32_t* x = poisoned<uint32_t>(p.batch * n * k, "topk indices");
        gpu_topk<T>(p, a, b, k, v, x);
        std::string tag = "topk k=" + std::to_string(k);
        check_topk<T>(tag.c_str(), R, k, v, x, tol);
    }
    if (ops & 4) {  // argmax
        T* v = poisoned<T>(p.batch * n, "argmax values");
        uint32_t* x = poisoned<uint32_t>(p.batch * n, "argmax indices");
        gpu_argmax<T>(p, a, b, v, x);
        check_topk<T>("argmax", R, 1, v, x, tol);
    }
    if (ops & 8) for (int w = 0; w < (o.weights ? 2 : 1); ++w) {  // greedy
        T *wa = nullptr, *wb = nullptr;
        if (w) {
            wa = (T*)dalloc(p.a_vectors() * sizeof(T), 0, "wa"); wb = (T*)dalloc(p.b_vectors() * sizeof(T), 0, "wb");
            for (size_t i = 0; i < p.a_vectors(); ++i) wa[i] = fromf<T>(0.25f + (rng() % 8) / 4.0f);
            for (size_t i = 0; i < p.b_vectors(); ++i) wb[i] = fromf<T>(0.25f + (rng() % 8) / 4.0f);
        }
        T* P = poisoned<T>(p.batch, "P"); T* Rc = poisoned<T>(p.batch, "R"); T* F = poisoned<T>(p.batch, "F");
        gpu_greedy<T>(p, a, b, wa, wb, P, Rc, F);
        for (size_t bb = 0; bb < p.batch; ++bb) {
            double num = 0, den = 0;
            auto better = [](double x, double y) { return std::isnan(x) ? true : (std::isnan(y) ? false : x > y); };
            for (size_t i = 0; i < n; ++i) {
                double mx = R.at(bb, i, 0);
                for (size_t j = 1; j < m; ++j) if (better(R.at(bb, i, j), mx)) mx = R.at(bb, i, j);
                double wi = wa ? tod(wa[(p.a.batch ? bb * n : 0) + i]) : 1;
                num += wi * mx; den += wi;
            }
            double Pv = num / den; num = den = 0;
            for (size_t j = 0; j < m; ++j) {
                double mx = R.at(bb, 0, j);
                for (size_t i = 1; i < n; ++i) if (better(R.at(bb, i, j), mx)) mx = R.at(bb, i, j);
                double wj = wb ? tod(wb[(p.b.batch ? bb * m : 0) + j]) : 1;
                num += wj * mx; den += wj;
            }
            double Rv = num / den, Fv = Pv + Rv == 0 ? 0 : 2 * Pv * Rv / (Pv + Rv);
            g_checks += 3;
            if (!close(tod(P[bb]), Pv, tol) || !close(tod(Rc[bb]), Rv, tol) || !close(tod(F[bb]), Fv, tol))
                FAIL(w ? "greedy(weighted)" : "greedy", "b%zu P %.7g/%.7g R %.7g/%.7g F %.7g/%.7g", bb, tod(P[bb]), Pv, tod(Rc[bb]), Rv, tod(F[bb]), Fv);
        }
    }
    const Ref& RE = tf ? RX : R;  // row mean / mean: colsum + rowdot/meandot (no tensor cores)
    if (ops & 16) {  // row mean
        T* out = poisoned<T>(p.batch * n, "row mean");
        gpu_row_mean<T>(p, a, b, out);
        int shown = 0;
        for (size_t bb = 0; bb < p.batch; ++bb)
            for (size_t i = 0; i < n; ++i) {
                double s = 0; for (size_t j = 0; j < m; ++j) s += RE.at(bb, i, j);
                s /= m; ++g_checks;
                if (!close(tod(out[bb * n + i]), s, tol) && shown++ < 2) FAIL("row_mean", "b%zu row %zu: %.7g want %.7g", bb, i, tod(out[bb * n + i]), s);
            }
    }
    if (ops & 32) {  // mean
        T* out = poisoned<T>(p.batch, "mean");
        gpu_mean<T>(p, a, b, out);
        for (size_t bb = 0; bb < p.batch; ++bb) {
            double s = 0; for (size_t i = 0; i < n * m; ++i) s += RE.S[bb * n * m + i];
            s /= n * m; ++g_checks;
            if (!close(tod(out[bb]), s, tol)) FAIL("mean", "b%zu: %.7g want %.7g", bb, tod(out[bb]), s);
        }
    }
    check_guards();
    free_all();
    g_maxerr_exact = std::max(g_maxerr_exact, g_case_maxerr);
    if (tf) printf("%s %s  [matrix max|err| vs exact %.3g]\n", g_fail == fail0 ? "ok  " : "FAIL", buf, g_case_maxerr);
    else printf("%s %s\n", g_fail == fail0 ? "ok  " : "FAIL", buf);
    fflush(stdout);
}

#include "cases.inc"

int main(int argc, char** argv) {
    run_cases(argc, argv);
    printf("\nchecks %d, failures %d\n", g_checks, g_fail);
    if (g_maxerr_exact > 0) printf("max |err| of the tf32 matrix vs the exact double reference: %.3g, vs the tf32-input reference: %.3g\n", g_maxerr_exact, g_maxerr_tf);
    for (auto& [k, v] : g_fail_by) printf("  %-20s %d\n", k.c_str(), v);
    return g_fail != 0;
}
