// CUDA's execution model on the CPU, enough to compile kernels/*.cu unchanged as C++: every
// CUDA thread of a block is a fiber (its own stack, switched in switch.cpp), barriers and
// warp operations are collective, `__shared__` arrays are per OS thread (thread_local) and
// poisoned before every block. Blocks of one grid run on several OS threads at once (the
// driver's pool, driver/launch.cpp), each with its own fibers and shared memory.
#pragma once
#include "shim_types.h"
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One copy per OS thread: blocks that run at the same time on different threads of the pool
// must not share "shared" memory.
#define __shared__ static thread_local

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    dim3() = default;
    dim3(unsigned a, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3 { unsigned x, y, z; };
// The emulation's per-thread state is plain data (no dynamic-init wrapper on each use). The
// initial-exec TLS model would be faster still, but a dlopen'ed library's whole TLS block
// (the shared arrays too) must then fit glibc's small static surplus.
#define EMU_TLS thread_local
inline EMU_TLS uint3 threadIdx, blockIdx, blockDim, gridDim;

using std::fma; using std::fmax; using std::sqrt; using std::isnan;
#include <math.h>

namespace emu { [[noreturn]] inline void die(const char* what); }
// The GPU faults (CUDA_ERROR_MISALIGNED_ADDRESS) on an access not aligned to its size.
template <class T> inline void check_aligned(const T* p, const char* what) {
    if ((uintptr_t)p % alignof(T)) {
        char buf[160];
        snprintf(buf, sizeof buf, "misaligned %zu-byte %s at %p", sizeof(T), what, (const void*)p);
        emu::die(buf);
    }
}
template <class T> inline T __ldg(const T* p) { check_aligned(p, "load"); return *p; }
template <class T> inline T __ldcs(const T* p) { check_aligned(p, "load"); return *p; }
template <class T> inline void __stcs(T* p, T v) { check_aligned(p, "store"); *p = v; }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline unsigned __float_as_uint(float f) { return __f2u(f); }
inline float __uint_as_float(unsigned u) { return __u2f(u); }

inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
template <class F> inline F atomic_add_float(F* p, F v) {
    std::atomic_ref<F> r(*p);
    F old = r.load();
    while (!r.compare_exchange_weak(old, old + v)) {}
    return old;
}
inline float atomicAdd(float* p, float v) { return atomic_add_float(p, v); }
inline double atomicAdd(double* p, double v) { return atomic_add_float(p, v); }
template <class U> inline U atomic_max_int(U* p, U v) {
    std::atomic_ref<U> r(*p);
    U old = r.load();
    while (old < v && !r.compare_exchange_weak(old, v)) {}
    return old;
}
inline unsigned atomicMax(unsigned* p, unsigned v) { return atomic_max_int(p, v); }
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) {
    return atomic_max_int(p, v);
}

// Every `__shared__` array of the library, in the calling OS thread (the table is generated
// from the kernel objects by genshm.sh).
extern "C" int emu_shared_count();
extern "C" void emu_shared_arrays(char** p, size_t* n);

namespace emu {
struct Barrier;
struct Fiber {
    void* sp = nullptr;
    char* stack = nullptr;
    int state = 0;  // 0 runnable, 1 waiting, 2 done
    Barrier* wait_on = nullptr;
    unsigned long wait_gen = 0;
    const char* what = "";
    uint3 tid;
    int linear = 0;
};
struct Sched {
    std::vector<Fiber> f;
    void* main_sp = nullptr;
    int cur = -1;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
    unsigned long long rng = 88172645463325252ull;
    std::vector<int> runnable;  // fibers ready to run, in no particular order
    struct Block* block = nullptr;
};
inline EMU_TLS Sched* g_sched = nullptr;
inline EMU_TLS const char* g_kernel = "?";
inline EMU_TLS int g_linear = 0;
// The kernel whose block this OS thread ran last (registry.h), to skip re-poisoning.
inline EMU_TLS const void* g_last_kernel = nullptr;
// This OS thread's scheduler (made on first use).
#define g_s (*::emu::g_sched)

// The running thread's index within its block (x fastest), which decides its warp and lane.
inline int linear_tid() { return g_linear; }
}  // namespace emu
extern "C" void emu_switch(void** save_sp, void* new_sp);

namespace emu {
[[noreturn]] inline void die(const char* what) {
    fprintf(stderr,
            "EMU FATAL in kernel %s block (%u,%u,%u) thread (%u,%u,%u) of block dim (%u,%u,%u): %s\n",
            g_kernel, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z,
            blockDim.x, blockDim.y, blockDim.z, what);
    fflush(stderr);
    abort();
}
// A barrier of `expected` fibers; the one that arrives last goes on, the others wait and
// become runnable again when it arrives.
struct Barrier {
    int expected = 0, count = 0;
    unsigned long gen = 0;
    std::vector<int> waiters;
    void init(int n) { expected = n; count = 0; gen = 0; waiters.clear(); }
    void release() {
        count = 0;
        ++gen;
        for (int w : waiters) {
            g_s.f[w].state = 0;
            g_s.runnable.push_back(w);
        }
        waiters.clear();
    }
    void wait(const char* what) {
        if (++count >= expected) { release(); return; }
        Fiber& me = g_s.f[g_s.cur];
        me.state = 1; me.wait_on = this; me.wait_gen = gen; me.what = what;
        waiters.push_back(g_s.cur);
        emu_switch(&me.sp, g_s.main_sp);
    }
    void drop() {
        --expected;
        if (count > 0 && count >= expected) release();
    }
};
struct Warp {
    Barrier bar;
    // Two sets of posts, alternating from one warp op to the next (every lane runs the same
    // sequence of them): a lane may post its next op while slower lanes still read this one's.
    // Each post is stamped with the lane's count of warp ops, so a lane that exited (whose
    // posts are stale) shows.
    unsigned long long vals[2][32];
    unsigned long long ops[2][32];
    unsigned long long seq[32];
    int lanes = 32;
    int exited = 0;
    float mma[256];  // include_tc/mma.h: one warp's mma_sync result
};
struct Block {
    Barrier bar;
    Warp warps[32];
    int flag[1024];
    int nthreads;
};
inline EMU_TLS Block* g_block = nullptr;

enum { OP_SYNCWARP = 1, OP_BALLOT, OP_SHFL };
inline unsigned long long warp_op(unsigned mask, int opcode, unsigned long long mine,
                                  int src_lane_xor, bool ballot) {
    if (mask != 0xffffffffu) die("warp op with a partial mask");
    const int t = linear_tid(), lane = t % 32;
    Warp& w = g_block->warps[t / 32];
    if (w.lanes != 32) die("warp op with a full mask in a partial warp (block size not a multiple of 32)");
    if (w.exited) die("warp op after some lanes of the warp exited");
    const unsigned long long n = w.seq[lane]++, stamp = n << 8 | (unsigned)opcode;
    unsigned long long* val = w.vals[n & 1];
    unsigned long long* op = w.ops[n & 1];
    val[lane] = mine;
    op[lane] = stamp;
    w.bar.wait(opcode == OP_SYNCWARP ? "__syncwarp" : opcode == OP_BALLOT ? "__ballot_sync" : "__shfl_xor_sync");
    for (int i = 0; i < 32; ++i)
        if (op[i] != stamp) die("lanes of a warp in different warp ops (or some lanes exited)");
    unsigned long long r = 0;
    if (ballot) {
        for (int i = 0; i < 32; ++i) if (val[i]) r |= 1ull << i;
    } else {
        r = val[lane ^ src_lane_xor];
    }
    return r;
}
}  // namespace emu

inline void __syncthreads() { emu::g_block->bar.wait("__syncthreads"); }
inline int __syncthreads_or(int p) {
    auto* b = emu::g_block;
    b->flag[emu::linear_tid()] = p != 0;
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

namespace emu {
// How the fibers of a block are started and resumed: 0 in order, 1 reversed, 2 shuffled
// (COSIM_EMU_ORDER; default shuffled, so that code relying on an order shows).
inline int order_mode() {
    static int v = [] { const char* e = getenv("COSIM_EMU_ORDER"); return e ? atoi(e) : 2; }();
    return v;
}
inline int poison_byte() {
    static int v = [] { const char* e = getenv("COSIM_EMU_SHM_POISON"); return e ? (int)strtol(e, nullptr, 0) : 0xff; }();
    return v;
}
inline unsigned xr() {
    unsigned long long& r = g_s.rng;
    r ^= r << 13; r ^= r >> 7; r ^= r << 17;
    return (unsigned)r;
}
inline void trampoline() {
    Fiber& me = g_s.f[g_s.cur];
    g_s.body(g_s.body_arg);
    Block* b = g_block;
    Warp& w = b->warps[me.linear / 32];
    ++w.exited;
    w.bar.drop();
    b->bar.drop();
    me.state = 2;
    emu_switch(&me.sp, g_s.main_sp);
    abort();
}
constexpr size_t STACK = 256 * 1024;
// This thread's copies of the shared arrays.
struct SharedArrays {
    std::vector<char*> p;
    std::vector<size_t> n;
    SharedArrays() : p(emu_shared_count()), n(emu_shared_count()) { emu_shared_arrays(p.data(), n.data()); }
};
inline SharedArrays& shared_arrays() {
    static thread_local SharedArrays a;
    return a;
}
// Fills the shared arrays `which` (all with null) with the poison byte.
inline void poison_shared(const std::vector<int>* which) {
    SharedArrays& a = shared_arrays();
    if (!which) {
        for (size_t i = 0; i < a.p.size(); ++i) std::memset(a.p[i], poison_byte(), a.n[i]);
    } else {
        for (int i : *which) std::memset(a.p[i], poison_byte(), a.n[i]);
    }
}
// The shared arrays that hold anything but the poison byte.
inline std::vector<int> written_shared() {
    SharedArrays& a = shared_arrays();
    std::vector<int> w;
    const unsigned char pb = (unsigned char)poison_byte();
    for (size_t i = 0; i < a.p.size(); ++i) {
        const unsigned char* q = (const unsigned char*)a.p[i];
        for (size_t j = 0; j < a.n[i]; ++j)
            if (q[j] != pb) {
                w.push_back((int)i);
                break;
            }
    }
    return w;
}

// Runs one block of `block` threads to completion on the calling OS thread.
inline void run_block(void (*body)(void*), void* arg, uint3 bidx, dim3 grid, dim3 block) {
    const int n = (int)(block.x * block.y * block.z);
    if (!g_sched) g_sched = new Sched;
    if (!g_s.block) g_s.block = new Block;
    Block* b = g_s.block;
    b->nthreads = n;
    b->bar.init(n);
    for (int w = 0; w < (n + 31) / 32; ++w) {
        const int lanes = n - 32 * w < 32 ? n - 32 * w : 32;
        b->warps[w].bar.init(lanes);
        b->warps[w].lanes = lanes;
        b->warps[w].exited = 0;
        std::memset(b->warps[w].seq, 0, sizeof b->warps[w].seq);
    }
    g_block = b;
    if ((int)g_s.f.size() < n) g_s.f.resize(n);
    g_s.body = body; g_s.body_arg = arg;
    for (int t = 0; t < n; ++t) {
        Fiber& f = g_s.f[t];
        if (!f.stack) f.stack = (char*)aligned_alloc(64, STACK);
        uintptr_t top = ((uintptr_t)(f.stack + STACK)) & ~(uintptr_t)15;
        void** sp = (void**)top;
        *--sp = nullptr;                 // fake return address of trampoline
        *--sp = (void*)&trampoline;      // ret target
        for (int i = 0; i < 6; ++i) *--sp = nullptr;
        f.sp = sp; f.state = 0; f.wait_on = nullptr; f.linear = t;
        f.tid = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    }
    // Which runnable fiber goes next: the first (in order), the last (reversed) or any.
    std::vector<int>& run = g_s.runnable;
    run.clear();
    for (int i = 0; i < n; ++i) run.push_back(i);
    int done = 0;
    blockIdx = bidx;
    blockDim = uint3{block.x, block.y, block.z};
    gridDim = uint3{grid.x, grid.y, grid.z};
    while (done < n) {
        if (run.empty()) {
            for (int i = 0; i < n; ++i)
                if (g_s.f[i].state == 1) {
                    g_s.cur = i;
                    threadIdx = g_s.f[i].tid;
                    g_linear = g_s.f[i].linear;
                    die((std::string("hang: threads wait forever, e.g. this one at ") + g_s.f[i].what).c_str());
                }
            die("hang: no thread can run");
        }
        size_t pick = run.size() - 1;
        if (order_mode() == 2) pick = xr() % run.size();
        else if (order_mode() == 0) pick = 0;
        const int i = run[pick];
        if (order_mode() == 0) run.erase(run.begin());
        else { run[pick] = run.back(); run.pop_back(); }
        Fiber& f = g_s.f[i];
        g_s.cur = i;
        threadIdx = f.tid;
        g_linear = f.linear;
        emu_switch(&g_s.main_sp, f.sp);
        if (f.state == 2) ++done;
    }
    g_block = nullptr;
}
}  // namespace emu
