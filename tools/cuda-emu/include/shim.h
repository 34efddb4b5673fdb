// Minimal CUDA emulation for running kernels as plain C++ on the CPU (one block at a time,
// one std::thread per CUDA thread).
#pragma once
#include "shim_types.h"
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>
#include <string>
#include <cmath>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    dim3() = default;
    dim3(unsigned a, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3 { unsigned x, y, z; };
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

using std::fma; using std::fmax; using std::sqrt; using std::isnan;
#include <math.h>

template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline unsigned __float_as_uint(float f) { return __f2u(f); }
inline float __uint_as_float(unsigned u) { return __u2f(u); }

inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline float atomicAdd(float* p, float v) {
    std::atomic_ref<float> r(*p);
    float old = r.load();
    while (!r.compare_exchange_weak(old, old + v)) {}
    return old;
}
inline unsigned atomicMax(unsigned* p, unsigned v) {
    std::atomic_ref<unsigned> r(*p);
    unsigned old = r.load();
    while (old < v && !r.compare_exchange_weak(old, v)) {}
    return old;
}
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) {
    std::atomic_ref<unsigned long long> r(*p);
    unsigned long long old = r.load();
    while (old < v && !r.compare_exchange_weak(old, v)) {}
    return old;
}

namespace emu {
inline const char* g_kernel = "?";
struct Barrier;
struct Fiber {
    void* sp = nullptr;
    char* stack = nullptr;
    int state = 0;  // 0 runnable, 1 waiting, 2 done
    Barrier* wait_on = nullptr;
    unsigned long wait_gen = 0;
    const char* what = "";
    uint3 tid;
};
struct Sched {
    std::vector<Fiber> f;
    void* main_sp = nullptr;
    int cur = -1;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
};
inline Sched g_s;
}  // namespace emu
extern "C" void emu_switch(void** save_sp, void* new_sp);

namespace emu {
[[noreturn]] inline void die(const char* what) {
    fprintf(stderr, "EMU FATAL in kernel %s block (%u,%u,%u) thread %u: %s\n", g_kernel,
            blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, what);
    fflush(stderr);
    abort();
}
struct Barrier {
    int expected = 0, count = 0;
    unsigned long gen = 0;
    void init(int n) { expected = n; count = 0; gen = 0; }
    void release() { count = 0; ++gen; }
    void wait(const char* what) {
        if (++count >= expected) { release(); return; }
        Fiber& me = g_s.f[g_s.cur];
        me.state = 1; me.wait_on = this; me.wait_gen = gen; me.what = what;
        emu_switch(&me.sp, g_s.main_sp);
    }
    void drop() {
        --expected;
        if (count > 0 && count >= expected) release();
    }
};
struct Warp {
    Barrier bar;
    unsigned long long val[32];
    int op[32];
    int exited = 0;
};
struct Block {
    Barrier bar;
    Warp warps[32];
    int flag[1024];
    int nthreads;
    int exited = 0;
};
inline Block* g_block = nullptr;

enum { OP_SYNCWARP = 1, OP_BALLOT, OP_SHFL };
inline unsigned long long warp_op(unsigned mask, int opcode, unsigned long long mine,
                                  int src_lane_xor, bool ballot) {
    if (mask != 0xffffffffu) die("warp op with a partial mask");
    if (blockDim.x % 32) die("block not a multiple of 32");
    const int t = threadIdx.x, lane = t % 32;
    Warp& w = g_block->warps[t / 32];
    w.val[lane] = mine;
    w.op[lane] = opcode;
    w.bar.wait(opcode == OP_SYNCWARP ? "__syncwarp" : opcode == OP_BALLOT ? "__ballot_sync" : "__shfl_xor_sync");
    if (w.exited) die("warp op after some lanes of the warp exited");
    for (int i = 0; i < 32; ++i)
        if (w.op[i] != opcode) die("lanes of a warp in different warp ops");
    unsigned long long r = 0;
    if (ballot) {
        for (int i = 0; i < 32; ++i) if (w.val[i]) r |= 1ull << i;
    } else {
        r = w.val[lane ^ src_lane_xor];
    }
    w.bar.wait("warp op (second phase)");
    return r;
}
}  // namespace emu

inline void __syncthreads() { emu::g_block->bar.wait("__syncthreads"); }
inline int __syncthreads_or(int p) {
    auto* b = emu::g_block;
    b->flag[threadIdx.x] = p != 0;
    b->bar.wait("__syncthreads_or");
    int r = 0;
    for (int i = 0; i < b->nthreads; ++i) r |= b->flag[i];
    b->bar.wait("__syncthreads_or (2)");
    return r;
}
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::warp_op(mask, emu::OP_SYNCWARP, 0, 0, false); }
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)emu::warp_op(mask, emu::OP_BALLOT, pred != 0, 0, true);
}
template <class V> inline V __shfl_xor_sync(unsigned mask, V v, int lm) {
    static_assert(sizeof(V) <= 8 && std::is_trivially_copyable_v<V>);
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(V));
    if (lm < 0 || lm >= 32) emu::die("shfl lane mask out of range");
    unsigned long long r = emu::warp_op(mask, emu::OP_SHFL, bits, lm, false);
    V out;
    std::memcpy(&out, &r, sizeof(V));
    return out;
}

namespace emu { struct ShmRange { char* p; unsigned long n; }; extern const ShmRange g_shm[]; extern const int g_shm_count; }
namespace emu {
inline int poison_byte() { static int v = [] { const char* e = getenv("EMU_SHM_POISON"); return e ? (int)strtol(e, nullptr, 0) : 0xff; }(); return v; }
inline int order_mode() { static int v = [] { const char* e = getenv("EMU_ORDER"); return e ? atoi(e) : 0; }(); return v; }
inline unsigned long long g_rng = 88172645463325252ull;
inline unsigned xr() { g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17; return (unsigned)g_rng; }
inline void trampoline() {
    Fiber& me = g_s.f[g_s.cur];
    g_s.body(g_s.body_arg);
    Block* b = g_block;
    Warp& w = b->warps[me.tid.x / 32];
    ++w.exited;
    w.bar.drop();
    b->bar.drop();
    me.state = 2;
    emu_switch(&me.sp, g_s.main_sp);
    abort();
}
constexpr size_t STACK = 256 * 1024;
inline void run_block(int n, void (*body)(void*), void* arg, uint3 bidx, dim3 grid, dim3 block) {
    g_s.f.resize(n);
    g_s.body = body; g_s.body_arg = arg;
    for (int t = 0; t < n; ++t) {
        Fiber& f = g_s.f[t];
        if (!f.stack) f.stack = (char*)aligned_alloc(64, STACK);
        uintptr_t top = ((uintptr_t)(f.stack + STACK)) & ~(uintptr_t)15;
        void** sp = (void**)top;
        *--sp = nullptr;                 // fake return address of trampoline
        *--sp = (void*)&trampoline;      // ret target
        for (int i = 0; i < 6; ++i) *--sp = nullptr;
        f.sp = sp; f.state = 0; f.wait_on = nullptr; f.tid = uint3{(unsigned)t, 0, 0};
    }
    std::vector<int> order(n);
    for (int i = 0; i < n; ++i) order[i] = order_mode() == 1 ? n - 1 - i : i;
    int done = 0;
    while (done < n) {
        if (order_mode() == 2)
            for (int i = n - 1; i > 0; --i) std::swap(order[i], order[xr() % (i + 1)]);
        bool progress = false;
        for (int oi = 0; oi < n; ++oi) {
            int i = order[oi];
            Fiber& f = g_s.f[i];
            if (f.state == 2) continue;
            if (f.state == 1) {
                if (f.wait_on->gen == f.wait_gen) continue;
                f.state = 0;
            }
            g_s.cur = i;
            threadIdx = f.tid; blockIdx = bidx; blockDim = block; gridDim = grid;
            emu_switch(&g_s.main_sp, f.sp);
            progress = true;
            if (f.state == 2) ++done;
        }
        if (!progress && done < n) {
            for (int i = 0; i < n; ++i)
                if (g_s.f[i].state == 1) { threadIdx = g_s.f[i].tid; blockIdx = bidx; die((std::string("hang: threads wait forever, e.g. this one at ") + g_s.f[i].what).c_str()); }
        }
    }
}
template <class... P, class... A>
inline void launch(const char* name, dim3 grid, dim3 block, void (*kernel)(P...), A... args) {
    g_kernel = name;
    if (block.y != 1 || block.z != 1) die("only 1-d blocks emulated");
    const int n = block.x;
    auto call = [&] { kernel(args...); };
    using C = decltype(call);
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                for (int i = 0; i < g_shm_count; ++i) std::memset(g_shm[i].p, poison_byte(), g_shm[i].n);
                Block* b = new Block;
                b->nthreads = n;
                b->bar.init(n);
                for (int w = 0; w < (n + 31) / 32; ++w) b->warps[w].bar.init(32);
                g_block = b;
                run_block(n, [](void* c) { (*(C*)c)(); }, &call, uint3{bx, by, bz}, grid, block);
                g_block = nullptr;
                delete b;
            }
}
}  // namespace emu
