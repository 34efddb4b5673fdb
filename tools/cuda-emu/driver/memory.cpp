// Device and pinned host memory. A device pointer is a host address: kernels, compiled as C++,
// dereference it directly. Each allocation gets its own mapping with an inaccessible page on
// both sides and guard bytes in the slack up to them, is poisoned (0xff: NaN in every float
// type) when made, and is made inaccessible when freed, staying reserved for a while so that
// a use after free faults instead of reading someone else's data.
#include <errno.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "emu.h"

namespace drv {
namespace mem {
namespace {

constexpr unsigned char GUARD = 0xa5, FREED = 0xdd;
constexpr size_t ALIGN = 256;
// Allocations up to this size come from arenas (a mapping each would exhaust the process's
// vm.max_map_count, ~65k, when thousands are queued on a stream before it frees them).
constexpr size_t SMALL = 64 << 10;
constexpr size_t ARENA = 64 << 20;
// Freed large mappings stay reserved (inaccessible) and freed small slots stay poisoned and
// unused, oldest released first past these.
constexpr size_t QUARANTINE = size_t(64) << 30;
constexpr size_t QUARANTINE_COUNT = 4096;
constexpr size_t SMALL_QUARANTINE = 16384;

// Never destroyed: stream workers may still free memory while the process exits.
struct Heap {
    std::mutex m;
    std::map<uintptr_t, Alloc*> by_ptr;  // by first(): every allocation still mapped
    std::deque<Alloc*> freed, freed_small;
    size_t freed_bytes = 0;
    std::map<size_t, std::vector<Alloc*>> reuse;  // small slots by span, ready again
    char* arena = nullptr;
    size_t arena_left = 0;
    std::map<uintptr_t, size_t> pinned;
};
Heap& heap() {
    static Heap* h = new Heap;
    return *h;
}
#define g_m (heap().m)
#define g_by_ptr (heap().by_ptr)
#define g_freed (heap().freed)
#define g_freed_small (heap().freed_small)
#define g_freed_bytes (heap().freed_bytes)
#define g_reuse (heap().reuse)
#define g_arena (heap().arena)
#define g_arena_left (heap().arena_left)
#define g_pinned (heap().pinned)

size_t page() {
    static size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
}

Alloc* containing(uintptr_t p) {
    auto it = g_by_ptr.upper_bound(p);
    if (it == g_by_ptr.begin()) return nullptr;
    --it;
    Alloc* a = it->second;
    return p >= a->first() && p < a->last() ? a : nullptr;
}

void check_one(Alloc* a, const char* after) {
    for (const char* q = a->lo; q < a->ptr; ++q)
        if ((unsigned char)*q != GUARD)
            fatal("after %s: %zu bytes before the start of a %zu-byte allocation at %p were written",
                  after, (size_t)(a->ptr - q), a->size, (void*)a->ptr);
    for (const char* q = a->ptr + a->size; q < a->hi; ++q)
        if ((unsigned char)*q != GUARD)
            fatal("after %s: byte %zu past the end of a %zu-byte allocation at %p was written",
                  after, (size_t)(q - a->ptr - a->size), a->size, (void*)a->ptr);
}

// A small slot of `span` bytes between 256-byte guards (g_m held).
Alloc* small_slot(size_t span) {
    auto& v = g_reuse[span];
    if (!v.empty()) {
        Alloc* a = v.back();
        v.pop_back();
        return a;
    }
    const size_t need = span + 2 * ALIGN;
    if (g_arena_left < need) {
        void* m = mmap(nullptr, ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) return nullptr;
        g_arena = (char*)m;
        g_arena_left = ARENA;
    }
    auto* a = new Alloc;
    a->lo = g_arena;
    a->ptr = g_arena + ALIGN;
    a->hi = a->ptr + span + ALIGN;
    a->span = span;
    g_arena += need;
    g_arena_left -= need;
    g_by_ptr[a->first()] = a;
    return a;
}

// Takes a freed small slot out of quarantine: its poison must be intact (g_m held).
void release_small(Alloc* a) {
    for (const char* q = a->ptr; q < a->ptr + a->span; ++q)
        if ((unsigned char)*q != FREED)
            fatal("freed device memory at %p (byte %zu of a freed %zu-byte allocation) was written after its free",
                  (void*)q, (size_t)(q - a->ptr), a->size);
    g_reuse[a->span].push_back(a);
}

}  // namespace

CUresult alloc(Device* dev, size_t bytes, CUdeviceptr* out) {
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    {
        std::lock_guard<std::mutex> l(dev->m);
        if (bytes > config().memory || dev->used + bytes > config().memory) return CUDA_ERROR_OUT_OF_MEMORY;
        dev->used += bytes;
    }
    const size_t span = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    Alloc* a = nullptr;
    if (span <= SMALL) {
        std::lock_guard<std::mutex> l(g_m);
        a = small_slot(span);
    } else {
        a = new Alloc;
        a->span = span;
        const size_t data = (span + page() - 1) / page() * page();
        a->map_len = data + 2 * page();
        void* m = mmap(nullptr, a->map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m != MAP_FAILED && mprotect((char*)m + page(), data, PROT_READ | PROT_WRITE) != 0) {
            note("cuMemAlloc of %zu bytes: mprotect failed (%s)", bytes, strerror(errno));
            munmap(m, a->map_len);
            m = MAP_FAILED;
        }
        if (m == MAP_FAILED) {
            delete a;
            a = nullptr;
        } else {
            a->base = (char*)m;
            a->lo = a->base + page();
            a->ptr = a->base + page() + (data - span);
            a->hi = a->ptr + span;
            std::lock_guard<std::mutex> l(g_m);
            g_by_ptr[a->first()] = a;
        }
    }
    if (!a) {
        std::lock_guard<std::mutex> l(dev->m);
        dev->used -= bytes;
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    a->size = bytes;
    a->dev = dev;
    std::memset(a->lo, GUARD, (size_t)(a->hi - a->lo));
    std::memset(a->ptr, 0xff, bytes);
    a->live = true;
    *out = (CUdeviceptr)(uintptr_t)a->ptr;
    return CUDA_SUCCESS;
}

CUresult free(CUdeviceptr p, const char* what) {
    Alloc* a;
    {
        std::lock_guard<std::mutex> l(g_m);
        a = containing((uintptr_t)p);
        if (!a || a->ptr != (char*)(uintptr_t)p) {
            note("%s of %p: not the start of a device allocation", what, (void*)(uintptr_t)p);
            return CUDA_ERROR_INVALID_VALUE;
        }
        if (!a->live) {
            note("%s of %p: already freed", what, (void*)(uintptr_t)p);
            return CUDA_ERROR_INVALID_VALUE;
        }
        check_one(a, what);
        a->live = false;
        if (!a->base) {
            std::memset(a->ptr, FREED, a->span);
            g_freed_small.push_back(a);
            if (g_freed_small.size() > SMALL_QUARANTINE) {
                release_small(g_freed_small.front());
                g_freed_small.pop_front();
            }
        } else {
            // Keep the addresses reserved but give the memory back.
            if (mmap(a->base, a->map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1,
                     0) == MAP_FAILED)
                fatal("%s of %p: could not unmap it (%s)", what, (void*)(uintptr_t)p, strerror(errno));
            g_freed.push_back(a);
            g_freed_bytes += a->map_len;
            while (g_freed_bytes > QUARANTINE || g_freed.size() > QUARANTINE_COUNT) {
                Alloc* old = g_freed.front();
                g_freed.pop_front();
                g_freed_bytes -= old->map_len;
                g_by_ptr.erase(old->first());
                munmap(old->base, old->map_len);
                delete old;
            }
        }
    }
    std::lock_guard<std::mutex> l(a->dev->m);
    a->dev->used -= a->size;
    return CUDA_SUCCESS;
}

Alloc* find(CUdeviceptr p, size_t n, std::string* why) {
    std::lock_guard<std::mutex> l(g_m);
    Alloc* a = containing((uintptr_t)p);
    char buf[200];
    if (!a || (uintptr_t)p < (uintptr_t)a->ptr || (uintptr_t)p >= (uintptr_t)(a->ptr + a->size)) {
        if (a && a->live)
            snprintf(buf, sizeof buf, "%p is outside the %zu-byte allocation at %p", (void*)(uintptr_t)p,
                     a->size, (void*)a->ptr);
        else
            snprintf(buf, sizeof buf, "%p is not in any device allocation", (void*)(uintptr_t)p);
        if (why) *why = buf;
        return nullptr;
    }
    if (!a->live) {
        snprintf(buf, sizeof buf, "%p is in a freed allocation", (void*)(uintptr_t)p);
        if (why) *why = buf;
        return nullptr;
    }
    if (n > (size_t)(a->ptr + a->size - (char*)(uintptr_t)p)) {
        snprintf(buf, sizeof buf, "[%p, +%zu) runs %zu bytes past the end of the %zu-byte allocation at %p",
                 (void*)(uintptr_t)p, n, n - (size_t)(a->ptr + a->size - (char*)(uintptr_t)p), a->size,
                 (void*)a->ptr);
        if (why) *why = buf;
        return nullptr;
    }
    return a;
}

Alloc* owner(uintptr_t p) {
    std::lock_guard<std::mutex> l(g_m);
    return containing(p);
}

void check_guards(Alloc* a, const char* after) {
    std::lock_guard<std::mutex> l(g_m);
    if (a->live) check_one(a, after);
}

bool is_pinned(const void* p, size_t n) {
    std::lock_guard<std::mutex> l(g_m);
    auto it = g_pinned.upper_bound((uintptr_t)p);
    if (it == g_pinned.begin()) return false;
    --it;
    return (uintptr_t)p >= it->first && (uintptr_t)p + n <= it->first + it->second;
}

CUresult host_alloc(void** p, size_t bytes) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    const size_t len = bytes == 0 ? page() : (bytes + page() - 1) / page() * page();
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    std::memset(m, 0xff, len);
    std::lock_guard<std::mutex> l(g_m);
    g_pinned[(uintptr_t)m] = len;
    *p = m;
    return CUDA_SUCCESS;
}

CUresult host_free(void* p) {
    std::lock_guard<std::mutex> l(g_m);
    auto it = g_pinned.find((uintptr_t)p);
    if (it == g_pinned.end()) return CUDA_ERROR_INVALID_VALUE;
    munmap(p, it->second);
    g_pinned.erase(it);
    return CUDA_SUCCESS;
}

namespace {
struct sigaction g_old_segv, g_old_bus;

void on_fault(int sig, siginfo_t* info, void* uc) {
    const uintptr_t addr = (uintptr_t)info->si_addr;
    // No lock: the process is about to end, and the faulting thread may hold it.
    Alloc* a = containing(addr);
    if (a) {
        char buf[400];
        const char* op = t_op ? t_op : "host code";
        int n;
        if (!a->live)
            n = snprintf(buf, sizeof buf, "EMU FATAL in %s: access to %p, in a freed %zu-byte device allocation at %p\n",
                         op, (void*)addr, a->size, (void*)a->ptr);
        else if (addr < (uintptr_t)a->ptr)
            n = snprintf(buf, sizeof buf, "EMU FATAL in %s: access to %p, %zu bytes before the %zu-byte device allocation at %p\n",
                         op, (void*)addr, (size_t)((uintptr_t)a->ptr - addr), a->size, (void*)a->ptr);
        else
            n = snprintf(buf, sizeof buf, "EMU FATAL in %s: access to %p, %zu bytes past the end of the %zu-byte device allocation at %p\n",
                         op, (void*)addr, (size_t)(addr - (uintptr_t)a->ptr - a->size), a->size, (void*)a->ptr);
        if (write(2, buf, (size_t)n) < 0) {}
        abort();
    }
    if (t_op) {
        char buf[400];
        const int n = addr == 0
            ? snprintf(buf, sizeof buf, "EMU FATAL in %s: a protection fault with no address (on x86, "
                       "most likely a misaligned 16-byte vector access; a GPU would report "
                       "CUDA_ERROR_MISALIGNED_ADDRESS)\n", t_op)
            : snprintf(buf, sizeof buf, "EMU FATAL in %s: access to %p, outside any device allocation\n",
                       t_op, (void*)addr);
        if (write(2, buf, (size_t)n) < 0) {}
        abort();
    }
    struct sigaction* old = sig == SIGSEGV ? &g_old_segv : &g_old_bus;
    if (old->sa_flags & SA_SIGINFO) {
        old->sa_sigaction(sig, info, uc);
    } else if (old->sa_handler != SIG_IGN && old->sa_handler != SIG_DFL) {
        old->sa_handler(sig);
    } else {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}
}  // namespace

void install_fault_handler() {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_old_segv);
    sigaction(SIGBUS, &sa, &g_old_bus);
}

}  // namespace mem
}  // namespace drv
