// The prologue of every entry point: an optional trace line (COSIM_EMU_TRACE=1) and, past
// cuInit, the real driver's refusal before initialisation.
#pragma once
#include "emu.h"

#define ENTER(name)                                   \
    do {                                              \
        if (drv::config().trace) drv::note("%s", name); \
    } while (0)
#define ENTER_INIT(name)                                            \
    ENTER(name);                                                    \
    if (!drv::g_initialized.load()) return CUDA_ERROR_NOT_INITIALIZED
// ENTER_INIT, and the current context in `ctx` (CUDA_ERROR_INVALID_CONTEXT without one).
#define ENTER_CTX(name)                             \
    ENTER_INIT(name);                               \
    drv::Context* ctx = drv::current();             \
    if (!ctx) return CUDA_ERROR_INVALID_CONTEXT
