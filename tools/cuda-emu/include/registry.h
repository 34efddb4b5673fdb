// Registers kernels by name for the emulated driver: EMU_KERNEL(f) makes the entry of the
// `extern "C"` kernel f, its parameters deduced from f's own type (never written by hand).
#pragma once
#include <algorithm>
#include <mutex>

#include "emu_abi.h"

namespace emu {
template <auto K> struct Entry;
template <class... P, void (*K)(P...)> struct Entry<K> {
    using Args = std::tuple<std::decay_t<P>...>;
    static constexpr size_t sizes[sizeof...(P) + 1] = {sizeof(std::decay_t<P>)..., 0};
    template <size_t... I> static void* bind_pack(void* const* params, std::index_sequence<I...>) {
        auto* a = new Args;
        (std::memcpy(static_cast<void*>(&std::get<I>(*a)), params[I], sizeof(std::tuple_element_t<I, Args>)), ...);
        return a;
    }
    static void* bind(void* const* params) { return bind_pack(params, std::index_sequence_for<P...>{}); }
    static void body(void* bound) { std::apply(K, *static_cast<const Args*>(bound)); }
    // Shared arrays this kernel was seen to write: poisoned before each of its blocks. Every
    // array is poisoned before a grid's first block on a thread that last ran another kernel;
    // the kernel's 1st, 2nd, 4th, 8th... block (over all its launches) is checked for arrays
    // written that the set lacks.
    static inline std::mutex learned_m;
    static inline std::atomic<std::vector<int>*> learned{nullptr};
    static inline std::atomic<unsigned long long> blocks{0};
    static void run(const char* name, const void* bound, const unsigned b[3], const unsigned g[3],
                    const unsigned t[3], int first) {
        g_kernel = name;
        std::vector<int>* set = learned.load();
        const bool full = !set || (first && g_last_kernel != (const void*)&learned);
        g_last_kernel = &learned;
        poison_shared(full ? nullptr : set);
        run_block(&body, const_cast<void*>(bound), uint3{b[0], b[1], b[2]}, dim3(g[0], g[1], g[2]),
                  dim3(t[0], t[1], t[2]));
        const unsigned long long n = blocks.fetch_add(1) + 1;
        if (!set || (n & (n - 1)) == 0) {
            std::vector<int> w = written_shared();
            std::lock_guard<std::mutex> l(learned_m);
            std::vector<int>* cur = learned.load();
            std::vector<int> merged = cur ? *cur : std::vector<int>{};
            for (int i : w)
                if (std::find(merged.begin(), merged.end(), i) == merged.end()) merged.push_back(i);
            // The old set leaks: other threads may be reading it.
            if (!cur || merged.size() != cur->size()) learned.store(new std::vector<int>(merged));
        }
    }
    static void release(void* bound) { delete static_cast<Args*>(bound); }
};
}  // namespace emu

#define EMU_KERNEL(f)                                                                         \
    emu_kernel{#f, (int)std::tuple_size_v<emu::Entry<&f>::Args>, emu::Entry<&f>::sizes,      \
               &emu::Entry<&f>::bind, &emu::Entry<&f>::run, &emu::Entry<&f>::release}
