// The boundary between the emulated driver (driver/*.cpp, which includes cuda.h) and the
// kernels compiled as C++ against the shim (which must not see cuda.h): one entry per
// `extern "C"` kernel, generated from the kernel sources by build.sh.
#pragma once
#include <stddef.h>

extern "C" {
typedef struct emu_kernel {
    const char* name;
    int nparams;
    // Size of each parameter, as the kernel's own C signature declares it.
    const size_t* sizes;
    // Copies the arguments that cuLaunchKernel's `kernelParams` point at (one pointer per
    // parameter) into a new bound argument pack.
    void* (*bind)(void* const* params);
    // Runs block `block_idx` of the grid with the bound arguments, on the calling thread;
    // `first`: the first block of this grid that this thread runs.
    void (*run)(const char* name, const void* bound, const unsigned block_idx[3],
                const unsigned grid[3], const unsigned block[3], int first);
    void (*release)(void* bound);
} emu_kernel;

// Null-terminated tables, one per kernel family (kernels/<family>.cu), and their index.
typedef struct emu_family {
    const char* name;
    const emu_kernel* kernels;
} emu_family;
extern const emu_family emu_families[];
}
