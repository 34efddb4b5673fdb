// Stream, event, module and launch entry points.
#include <cstring>

#include "emu.h"
#include "entry.h"

using namespace drv;

namespace drv {
Stream* stream_of(CUstream h, CUresult* err) {
    Context* c = current();
    if (h == nullptr || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) {
        if (!c) {
            *err = CUDA_ERROR_INVALID_CONTEXT;
            return nullptr;
        }
        return c->null_stream;
    }
    Stream* s = reinterpret_cast<Stream*>(h);
    std::lock_guard<std::mutex> l(world().m);
    if (!world().streams.count(s) || !s->live) {
        note("a stream handle %p that is not a live stream", (void*)h);
        *err = CUDA_ERROR_INVALID_HANDLE;
        return nullptr;
    }
    return s;
}
}  // namespace drv

namespace {
Event* event_of(CUevent h) {
    Event* e = reinterpret_cast<Event*>(h);
    std::lock_guard<std::mutex> l(world().m);
    return world().events.count(e) && e->live ? e : nullptr;
}
Function* function_of(CUfunction h) {
    Function* f = reinterpret_cast<Function*>(h);
    std::lock_guard<std::mutex> l(world().m);
    return world().functions.count(f) && f->mod->live ? f : nullptr;
}
Module* module_of(CUmodule h) {
    Module* m = reinterpret_cast<Module*>(h);
    std::lock_guard<std::mutex> l(world().m);
    return world().modules.count(m) && m->live ? m : nullptr;
}
}  // namespace

// ---- streams

EMU_API CUresult cuStreamCreate(CUstream* out, unsigned flags) {
    ENTER_CTX("cuStreamCreate");
    if (!out || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING)) return CUDA_ERROR_INVALID_VALUE;
    auto* s = new Stream;
    s->ctx = ctx;
    s->flags = flags;
    start(s);
    {
        std::lock_guard<std::mutex> l(world().m);
        world().streams.insert(s);
    }
    std::lock_guard<std::mutex> l(ctx->m);
    ctx->streams.push_back(s);
    *out = reinterpret_cast<CUstream>(s);
    return CUDA_SUCCESS;
}

EMU_API CUresult cuStreamCreateWithPriority(CUstream* out, unsigned flags, int priority) {
    (void)priority;
    return cuStreamCreate(out, flags);
}

EMU_API CUresult cuStreamDestroy_v2(CUstream h) {
    ENTER_CTX("cuStreamDestroy_v2");
    (void)ctx;
    if (h == nullptr || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) return CUDA_ERROR_INVALID_HANDLE;
    CUresult err;
    Stream* s = stream_of(h, &err);
    if (!s) return err;
    // Work already queued still runs (the worker drains the queue before it stops).
    destroy(s);
    std::lock_guard<std::mutex> l(s->ctx->m);
    auto& v = s->ctx->streams;
    for (auto it = v.begin(); it != v.end(); ++it)
        if (*it == s) {
            v.erase(it);
            break;
        }
    return CUDA_SUCCESS;
}

EMU_API CUresult cuStreamSynchronize(CUstream h) {
    ENTER_CTX("cuStreamSynchronize");
    (void)ctx;
    CUresult err;
    Stream* s = stream_of(h, &err);
    if (!s) return err;
    s->drain();
    return CUDA_SUCCESS;
}

EMU_API CUresult cuStreamQuery(CUstream h) {
    ENTER_CTX("cuStreamQuery");
    (void)ctx;
    CUresult err;
    Stream* s = stream_of(h, &err);
    if (!s) return err;
    return s->idle() ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

EMU_API CUresult cuStreamWaitEvent(CUstream h, CUevent he, unsigned flags) {
    ENTER_CTX("cuStreamWaitEvent");
    (void)ctx;
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    CUresult err;
    Stream* s = stream_of(h, &err);
    if (!s) return err;
    Event* e = event_of(he);
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    uint64_t target;
    {
        std::lock_guard<std::mutex> l(e->m);
        target = e->recorded;  // 0: never recorded, nothing to wait for
    }
    if (target == 0) return CUDA_SUCCESS;
    s->push([e, target] {
        t_op = "cuStreamWaitEvent";
        std::unique_lock<std::mutex> l(e->m);
        e->cv.wait(l, [&] { return e->completed >= target; });
    });
    return CUDA_SUCCESS;
}

// ---- events

EMU_API CUresult cuEventCreate(CUevent* out, unsigned flags) {
    ENTER_CTX("cuEventCreate");
    (void)ctx;
    if (!out || (flags & ~(unsigned)(CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS)))
        return CUDA_ERROR_INVALID_VALUE;
    auto* e = new Event;
    e->flags = flags;
    std::lock_guard<std::mutex> l(world().m);
    world().events.insert(e);
    *out = reinterpret_cast<CUevent>(e);
    return CUDA_SUCCESS;
}

EMU_API CUresult cuEventDestroy_v2(CUevent h) {
    ENTER_INIT("cuEventDestroy_v2");
    Event* e = event_of(h);
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    // Streams still waiting on it keep the object (never freed); the handle is dead.
    std::lock_guard<std::mutex> l(world().m);
    e->live = false;
    world().events.erase(e);
    return CUDA_SUCCESS;
}

EMU_API CUresult cuEventRecord(CUevent h, CUstream hs) {
    ENTER_CTX("cuEventRecord");
    (void)ctx;
    Event* e = event_of(h);
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    CUresult err;
    Stream* s = stream_of(hs, &err);
    if (!s) return err;
    uint64_t gen;
    {
        std::lock_guard<std::mutex> l(e->m);
        gen = ++e->recorded;
    }
    s->push([e, gen] {
        t_op = "cuEventRecord";
        std::lock_guard<std::mutex> l(e->m);
        if (gen > e->completed) {
            e->completed = gen;
            e->when = Clock::now();
        }
        e->cv.notify_all();
    });
    return CUDA_SUCCESS;
}

EMU_API CUresult cuEventSynchronize(CUevent h) {
    ENTER_INIT("cuEventSynchronize");
    Event* e = event_of(h);
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    std::unique_lock<std::mutex> l(e->m);
    const uint64_t target = e->recorded;
    e->cv.wait(l, [&] { return e->completed >= target; });
    return CUDA_SUCCESS;
}

EMU_API CUresult cuEventQuery(CUevent h) {
    ENTER_INIT("cuEventQuery");
    Event* e = event_of(h);
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    std::lock_guard<std::mutex> l(e->m);
    return e->completed >= e->recorded ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

EMU_API CUresult cuEventElapsedTime_v2(float* ms, CUevent a, CUevent b) {
    ENTER_INIT("cuEventElapsedTime_v2");
    if (!ms) return CUDA_ERROR_INVALID_VALUE;
    Event* x = event_of(a);
    Event* y = event_of(b);
    if (!x || !y) return CUDA_ERROR_INVALID_HANDLE;
    if ((x->flags | y->flags) & CU_EVENT_DISABLE_TIMING) return CUDA_ERROR_INVALID_HANDLE;
    std::scoped_lock l(x->m, y->m);
    if (x->recorded == 0 || y->recorded == 0) return CUDA_ERROR_INVALID_HANDLE;
    if (x->completed < x->recorded || y->completed < y->recorded) return CUDA_ERROR_NOT_READY;
    *ms = std::chrono::duration<float, std::milli>(y->when - x->when).count();
    return CUDA_SUCCESS;
}

// The name cudarc's bindings for CUDA before 12.8 call.
#undef cuEventElapsedTime
EMU_API CUresult cuEventElapsedTime(float* ms, CUevent a, CUevent b) { return cuEventElapsedTime_v2(ms, a, b); }

// ---- modules

EMU_API CUresult cuModuleLoadData(CUmodule* out, const void* image) {
    ENTER_CTX("cuModuleLoadData");
    if (!out || !image) return CUDA_ERROR_INVALID_VALUE;
    auto* m = new Module;
    m->ctx = ctx;
    std::string why;
    int isa = 0;
    if (!image_kernels(image, &m->names, &isa, &why)) {
        note("cuModuleLoadData: %s", why.c_str());
        delete m;
        return CUDA_ERROR_INVALID_IMAGE;
    }
    // Code from a newer major CUDA than the driver's does not load: its cubins are past the
    // driver's ABI and its PTX past what the driver's JIT knows (COSIM_EMU_DRIVER sets the
    // driver; within one major, minor-version compatibility lets the cubins load).
    if (ptx_isa_driver(isa) / 1000 > config().driver / 1000) {
        note("cuModuleLoadData: the image's PTX %d.%d is from CUDA %d.%d; this driver is for CUDA %d.%d",
             isa / 10, isa % 10, ptx_isa_driver(isa) / 1000, ptx_isa_driver(isa) % 1000 / 10,
             config().driver / 1000, config().driver % 1000 / 10);
        delete m;
        return CUDA_ERROR_UNSUPPORTED_PTX_VERSION;
    }
    for (const std::string& n : m->names)
        if (!world().find_kernel(n)) {
            note("cuModuleLoadData: the image's kernel %s has no emulated build (rebuild tools/cuda-emu "
                 "from the same kernels/ sources)", n.c_str());
            delete m;
            return CUDA_ERROR_INVALID_IMAGE;
        }
    std::lock_guard<std::mutex> l(world().m);
    world().modules.insert(m);
    *out = reinterpret_cast<CUmodule>(m);
    return CUDA_SUCCESS;
}

EMU_API CUresult cuModuleUnload(CUmodule h) {
    ENTER_INIT("cuModuleUnload");
    Module* m = module_of(h);
    if (!m) return CUDA_ERROR_INVALID_HANDLE;
    std::lock_guard<std::mutex> l(world().m);
    m->live = false;
    world().modules.erase(m);
    return CUDA_SUCCESS;
}

EMU_API CUresult cuModuleGetFunction(CUfunction* out, CUmodule h, const char* name) {
    ENTER_INIT("cuModuleGetFunction");
    if (!out || !name) return CUDA_ERROR_INVALID_VALUE;
    Module* m = module_of(h);
    if (!m) return CUDA_ERROR_INVALID_HANDLE;
    if (!m->names.count(name)) return CUDA_ERROR_NOT_FOUND;
    const emu_kernel* k = world().find_kernel(name);
    if (!k) return CUDA_ERROR_NOT_FOUND;
    std::lock_guard<std::mutex> l(world().m);
    auto it = m->functions.find(name);
    if (it == m->functions.end()) {
        auto* f = new Function;
        f->mod = m;
        f->k = k;
        it = m->functions.emplace(name, f).first;
        world().functions.insert(f);
    }
    *out = reinterpret_cast<CUfunction>(it->second);
    return CUDA_SUCCESS;
}

EMU_API CUresult cuFuncGetAttribute(int* v, CUfunction_attribute a, CUfunction h) {
    ENTER_INIT("cuFuncGetAttribute");
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    Function* f = function_of(h);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    switch (a) {
        case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
        case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *v = f->max_dynamic_smem; break;
        case CU_FUNC_ATTRIBUTE_PTX_VERSION: *v = 80; break;
        case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *v = 90; break;
        default:
            note("cuFuncGetAttribute: attribute %d is not emulated", (int)a);
            return CUDA_ERROR_NOT_SUPPORTED;
    }
    return CUDA_SUCCESS;
}

EMU_API CUresult cuFuncSetAttribute(CUfunction h, CUfunction_attribute a, int v) {
    ENTER_INIT("cuFuncSetAttribute");
    Function* f = function_of(h);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (a != CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
        note("cuFuncSetAttribute: attribute %d is not emulated", (int)a);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (v < 0 || v > 232448) return CUDA_ERROR_INVALID_VALUE;
    f->max_dynamic_smem = v;
    return CUDA_SUCCESS;
}

// ---- launch

EMU_API CUresult cuLaunchKernel(CUfunction h, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                unsigned bz, unsigned smem, CUstream hs, void** params, void** extra) {
    ENTER_CTX("cuLaunchKernel");
    Function* f = function_of(h);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    const emu_kernel* k = f->k;
    if (f->mod->ctx != ctx) {
        note("cuLaunchKernel of %s: the function belongs to another context", k->name);
        return CUDA_ERROR_INVALID_HANDLE;
    }
    // The H200's limits, with the codes the real driver returns.
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0) return CUDA_ERROR_INVALID_VALUE;
    if (gx > 2147483647u || gy > 65535u || gz > 65535u) {
        note("cuLaunchKernel of %s: grid (%u, %u, %u) past the limits (2^31-1, 65535, 65535)", k->name, gx, gy, gz);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (bx > 1024 || by > 1024 || bz > 64 || (uint64_t)bx * by * bz > 1024) {
        note("cuLaunchKernel of %s: block (%u, %u, %u) past the limits", k->name, bx, by, bz);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if ((int)smem > f->max_dynamic_smem) {
        note("cuLaunchKernel of %s: %u bytes of dynamic shared memory, more than the %d allowed", k->name, smem,
             f->max_dynamic_smem);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (extra) {
        note("cuLaunchKernel of %s: `extra` is not emulated (pass kernelParams)", k->name);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (k->nparams > 0 && !params) return CUDA_ERROR_INVALID_VALUE;
    size_t bytes = 0;
    for (int i = 0; i < k->nparams; ++i) {
        const size_t s = k->sizes[i], align = s >= 8 ? 8 : s;
        bytes = (bytes + align - 1) / align * align + s;
    }
    if (bytes > 4096) {
        note("cuLaunchKernel of %s: %zu bytes of parameters, more than 4096", k->name, bytes);
        return CUDA_ERROR_INVALID_VALUE;
    }
    CUresult err;
    Stream* s = stream_of(hs, &err);
    if (!s) return err;
    // Pointer arguments into device memory must be live and on this device; their guards are
    // checked after the kernel (every allocation's are checked again when it is freed).
    std::vector<uintptr_t> args;
    for (int i = 0; i < k->nparams; ++i) {
        if (k->sizes[i] != 8) continue;
        uint64_t v;
        std::memcpy(&v, params[i], 8);
        Alloc* a = mem::owner((uintptr_t)v);
        if (!a) continue;
        if (!a->live) fatal("cuLaunchKernel of %s: argument %d points into freed device memory", k->name, i);
        if (a->dev != s->ctx->dev)
            fatal("cuLaunchKernel of %s: argument %d points into device %d's memory, the launch is on device %d",
                  k->name, i, a->dev->ordinal, s->ctx->dev->ordinal);
        args.push_back((uintptr_t)v);
    }
    // The values are copied now: kernelParams points at the caller's temporaries.
    void* bound = k->bind(params);
    s->push([k, bound, grid0 = gx, grid1 = gy, grid2 = gz, b0 = bx, b1 = by, b2 = bz, args = std::move(args)] {
        t_op = k->name;
        const unsigned g[3] = {grid0, grid1, grid2}, t[3] = {b0, b1, b2};
        run_grid(k, bound, g, t);
        k->release(bound);
        for (uintptr_t v : args)
            if (Alloc* a = mem::owner(v)) mem::check_guards(a, k->name);
    });
    return CUDA_SUCCESS;
}
