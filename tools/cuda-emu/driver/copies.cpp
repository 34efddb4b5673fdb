// Memory entry points: allocation (plain and stream-ordered), pinned host memory, copies and
// memsets, with the driver's rules on when each returns: a copy from pageable host memory is
// staged at the call; a copy to pageable host memory has completed when it returns; copies
// involving pinned memory run when the stream reaches them, so a host that touches the buffer
// too early sees it.
#include <cstring>

#include "emu.h"
#include "entry.h"

using namespace drv;

namespace {

// The live allocation holding [p, p + n) at call time, or an error and a note naming `what`.
CUresult check_range(const char* what, CUdeviceptr p, size_t n) {
    if (n == 0) return CUDA_SUCCESS;
    std::string why;
    if (!mem::find(p, n, &why)) {
        note("%s of %zu bytes: %s", what, n, why.c_str());
        return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

// At execution: the range must still be live (a stream-ordered free may have come first).
Alloc* at_run(const char* what, CUdeviceptr p, size_t n) {
    std::string why;
    Alloc* a = mem::find(p, n, &why);
    if (!a) fatal("%s of %zu bytes: %s", what, n, why.c_str());
    return a;
}

CUresult enqueue(const char* what, CUstream h, std::function<void()> op, bool host_waits) {
    CUresult err;
    Stream* s = stream_of(h, &err);
    if (!s) return err;
    const uint64_t seq = s->push([what, op = std::move(op)] {
        t_op = what;
        op();
    });
    if (host_waits) s->wait_for(seq);
    return CUDA_SUCCESS;
}

CUresult htod(const char* what, CUdeviceptr dst, const void* src, size_t n, CUstream h, bool sync) {
    if (CUresult e = check_range(what, dst, n)) return e;
    if (n == 0) return CUDA_SUCCESS;
    if (!src) return CUDA_ERROR_INVALID_VALUE;
    if (mem::is_pinned(src, n)) {
        return enqueue(what, h, [=] {
            Alloc* a = at_run(what, dst, n);
            std::memcpy((void*)(uintptr_t)dst, src, n);
            mem::check_guards(a, what);
        }, sync);
    }
    // Pageable: staged now, so the caller may reuse its buffer at once.
    auto staged = std::make_shared<std::vector<char>>((const char*)src, (const char*)src + n);
    return enqueue(what, h, [=] {
        Alloc* a = at_run(what, dst, n);
        std::memcpy((void*)(uintptr_t)dst, staged->data(), n);
        mem::check_guards(a, what);
    }, sync);
}

CUresult dtoh(const char* what, void* dst, CUdeviceptr src, size_t n, CUstream h, bool sync) {
    if (CUresult e = check_range(what, src, n)) return e;
    if (n == 0) return CUDA_SUCCESS;
    if (!dst) return CUDA_ERROR_INVALID_VALUE;
    const bool pinned = mem::is_pinned(dst, n);
    return enqueue(what, h, [=] {
        at_run(what, src, n);
        std::memcpy(dst, (const void*)(uintptr_t)src, n);
    }, sync || !pinned);
}

CUresult dtod(const char* what, CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream h, bool sync) {
    if (CUresult e = check_range(what, dst, n)) return e;
    if (CUresult e = check_range(what, src, n)) return e;
    if (n == 0) return CUDA_SUCCESS;
    return enqueue(what, h, [=] {
        at_run(what, src, n);
        Alloc* a = at_run(what, dst, n);
        std::memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n);
        mem::check_guards(a, what);
    }, sync);
}

CUresult memset8(const char* what, CUdeviceptr dst, unsigned char v, size_t n, CUstream h, bool sync) {
    if (CUresult e = check_range(what, dst, n)) return e;
    if (n == 0) return CUDA_SUCCESS;
    return enqueue(what, h, [=] {
        Alloc* a = at_run(what, dst, n);
        std::memset((void*)(uintptr_t)dst, v, n);
        mem::check_guards(a, what);
    }, sync);
}

}  // namespace

EMU_API CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
    ENTER_CTX("cuMemGetInfo_v2");
    if (!free || !total) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> l(ctx->dev->m);
    *total = config().memory;
    *free = config().memory - ctx->dev->used;
    return CUDA_SUCCESS;
}

EMU_API CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    ENTER_CTX("cuMemAlloc_v2");
    return mem::alloc(ctx->dev, bytes, p);
}

EMU_API CUresult cuMemFree_v2(CUdeviceptr p) {
    ENTER_CTX("cuMemFree_v2");
    if (p == 0) return CUDA_SUCCESS;
    // Synchronous: waits for the device's work, as the real call does.
    drain(ctx);
    return mem::free(p, "cuMemFree_v2");
}

EMU_API CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, CUstream h) {
    ENTER_CTX("cuMemAllocAsync");
    if (!config().pools) {
        note("cuMemAllocAsync on a device whose MEMORY_POOLS_SUPPORTED is 0");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    CUresult err;
    Stream* s = stream_of(h, &err);
    if (!s) return err;
    // The memory exists from now on (its contents are undefined until the stream gets here).
    return mem::alloc(s->ctx->dev, bytes, p);
}

EMU_API CUresult cuMemFreeAsync(CUdeviceptr p, CUstream h) {
    ENTER_CTX("cuMemFreeAsync");
    if (!config().pools) return CUDA_ERROR_NOT_SUPPORTED;
    std::string why;
    if (!mem::find(p, 1, &why)) {
        note("cuMemFreeAsync: %s", why.c_str());
        return CUDA_ERROR_INVALID_VALUE;
    }
    // Freed when the stream reaches it: work queued earlier on this stream may still use it.
    return enqueue("cuMemFreeAsync", h, [p] {
        if (mem::free(p, "cuMemFreeAsync") != CUDA_SUCCESS) fatal("stream-ordered free of %p failed", (void*)(uintptr_t)p);
    }, false);
}

EMU_API CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned flags) {
    ENTER_CTX("cuMemHostAlloc");
    (void)ctx;
    if (flags & ~(unsigned)(CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED))
        return CUDA_ERROR_INVALID_VALUE;
    return mem::host_alloc(p, bytes);
}

EMU_API CUresult cuMemAllocHost_v2(void** p, size_t bytes) {
    ENTER_CTX("cuMemAllocHost_v2");
    (void)ctx;
    return mem::host_alloc(p, bytes);
}

EMU_API CUresult cuMemFreeHost(void* p) {
    ENTER_INIT("cuMemFreeHost");
    return mem::host_free(p);
}

EMU_API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    ENTER_CTX("cuMemcpyHtoD_v2");
    (void)ctx;
    return htod("cuMemcpyHtoD_v2", dst, src, n, nullptr, true);
}
EMU_API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, CUstream h) {
    ENTER_CTX("cuMemcpyHtoDAsync_v2");
    (void)ctx;
    return htod("cuMemcpyHtoDAsync_v2", dst, src, n, h, false);
}
EMU_API CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    ENTER_CTX("cuMemcpyDtoH_v2");
    (void)ctx;
    return dtoh("cuMemcpyDtoH_v2", dst, src, n, nullptr, true);
}
EMU_API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, CUstream h) {
    ENTER_CTX("cuMemcpyDtoHAsync_v2");
    (void)ctx;
    return dtoh("cuMemcpyDtoHAsync_v2", dst, src, n, h, false);
}
EMU_API CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    ENTER_CTX("cuMemcpyDtoD_v2");
    (void)ctx;
    return dtod("cuMemcpyDtoD_v2", dst, src, n, nullptr, true);
}
EMU_API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream h) {
    ENTER_CTX("cuMemcpyDtoDAsync_v2");
    (void)ctx;
    return dtod("cuMemcpyDtoDAsync_v2", dst, src, n, h, false);
}
EMU_API CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
    ENTER_CTX("cuMemsetD8_v2");
    (void)ctx;
    return memset8("cuMemsetD8_v2", dst, v, n, nullptr, true);
}
EMU_API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream h) {
    ENTER_CTX("cuMemsetD8Async");
    (void)ctx;
    return memset8("cuMemsetD8Async", dst, v, n, h, false);
}
