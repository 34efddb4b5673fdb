// Initialisation, settings, devices, primary contexts and error strings.
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "emu.h"
#include "entry.h"

namespace drv {

thread_local const char* t_op = nullptr;
std::atomic<bool> g_initialized{false};

namespace {
size_t parse_bytes(const char* s) {
    char* end = nullptr;
    double v = strtod(s, &end);
    switch (end && *end ? *end : ' ') {
        case 'k': case 'K': v *= 1024; break;
        case 'm': case 'M': v *= 1024.0 * 1024; break;
        case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
        default: break;
    }
    return (size_t)v;
}
thread_local Context* t_current = nullptr;
}  // namespace

const Config& config() {
    static const Config c = [] {
        Config c;
        if (const char* e = getenv("COSIM_EMU_DEVICES")) c.devices = atoi(e) < 0 ? 0 : atoi(e);
        if (const char* e = getenv("COSIM_EMU_MEMORY")) c.memory = parse_bytes(e);
        if (const char* e = getenv("COSIM_EMU_SMS")) c.sms = atoi(e) > 0 ? atoi(e) : 1;
        if (const char* e = getenv("COSIM_EMU_POOLS")) c.pools = atoi(e) != 0;
        if (const char* e = getenv("COSIM_EMU_DELAY")) c.delay_us = (unsigned)atoi(e);
        const unsigned hw = std::thread::hardware_concurrency();
        c.threads = hw ? (int)hw : 2;
        if (const char* e = getenv("COSIM_EMU_THREADS")) c.threads = atoi(e) > 0 ? atoi(e) : 1;
        if (const char* e = getenv("COSIM_EMU_TRACE")) c.trace = atoi(e) != 0;
        if (const char* e = getenv("COSIM_EMU_DRIVER")) c.driver = atoi(e) > 0 ? atoi(e) : c.driver;
        return c;
    }();
    return c;
}

void note(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "cuda-emu: %s\n", buf);
}

void fatal(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "EMU FATAL in %s: %s\n", t_op ? t_op : "host code", buf);
    fflush(stderr);
    abort();
}

World& world() {
    static World* w = new World;
    return *w;
}

const emu_kernel* World::find_kernel(const std::string& name) {
    std::lock_guard<std::mutex> l(m);
    if (kernels.empty())
        for (const emu_family* f = emu_families; f->name; ++f)
            for (const emu_kernel* k = f->kernels; k->name; ++k) kernels[k->name] = k;
    auto it = kernels.find(name);
    return it == kernels.end() ? nullptr : it->second;
}

Context* current() { return t_current; }
void set_current(Context* c) { t_current = c; }

}  // namespace drv

using namespace drv;

EMU_API CUresult cuInit(unsigned flags) {
    ENTER("cuInit");
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    World& w = world();
    std::lock_guard<std::mutex> l(w.m);
    if (!g_initialized.load()) {
        for (int i = 0; i < config().devices; ++i) {
            auto* d = new Device;
            d->ordinal = i;
            auto* c = new Context;
            c->dev = d;
            c->null_stream = new Stream;
            c->null_stream->ctx = c;
            c->null_stream->null_stream = true;
            start(c->null_stream);
            d->primary = c;
            w.devices.push_back(d);
        }
        mem::install_fault_handler();
        g_initialized = true;
    }
    return CUDA_SUCCESS;
}

EMU_API CUresult cuDriverGetVersion(int* v) {
    ENTER("cuDriverGetVersion");
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    *v = config().driver;
    return CUDA_SUCCESS;
}

EMU_API CUresult cuDeviceGetCount(int* n) {
    ENTER_INIT("cuDeviceGetCount");
    if (!n) return CUDA_ERROR_INVALID_VALUE;
    *n = (int)world().devices.size();
    return CUDA_SUCCESS;
}

EMU_API CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    ENTER_INIT("cuDeviceGet");
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal < 0 || ordinal >= (int)world().devices.size()) return CUDA_ERROR_INVALID_DEVICE;
    *d = ordinal;
    return CUDA_SUCCESS;
}

static Device* device(CUdevice d) {
    return d >= 0 && d < (int)world().devices.size() ? world().devices[d] : nullptr;
}

EMU_API CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    ENTER_INIT("cuDeviceGetName");
    if (!device(d)) return CUDA_ERROR_INVALID_DEVICE;
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, (size_t)len, "cosim CUDA emulator");
    return CUDA_SUCCESS;
}

EMU_API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
    ENTER_INIT("cuDeviceTotalMem_v2");
    if (!device(d)) return CUDA_ERROR_INVALID_DEVICE;
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    *bytes = config().memory;
    return CUDA_SUCCESS;
}

EMU_API CUresult cuDeviceGetUuid_v2(CUuuid* uuid, CUdevice d) {
    ENTER_INIT("cuDeviceGetUuid_v2");
    if (!device(d)) return CUDA_ERROR_INVALID_DEVICE;
    if (!uuid) return CUDA_ERROR_INVALID_VALUE;
    std::memset(uuid->bytes, 0, sizeof uuid->bytes);
    std::memcpy(uuid->bytes, "cosim-emu", 9);
    uuid->bytes[15] = (char)d;
    return CUDA_SUCCESS;
}

EMU_API CUresult cuDeviceGetAttribute(int* v, CUdevice_attribute a, CUdevice d) {
    ENTER_INIT("cuDeviceGetAttribute");
    if (!device(d)) return CUDA_ERROR_INVALID_DEVICE;
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    // The H200's values (what a launch is checked against), the SM count settable.
    switch (a) {
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *v = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *v = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *v = 64; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *v = 2147483647; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *v = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *v = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *v = 49152; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = 232448; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *v = 233472; break;
        case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: *v = 65536; break;
        case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *v = 32; break;
        case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: *v = 65536; break;
        case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: *v = 65536; break;
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *v = 2048; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: *v = 32; break;
        case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: *v = 1980000; break;
        case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: *v = 2619000; break;
        case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: *v = 6144; break;
        case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *v = 52428800; break;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = config().sms; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 9; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
        case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: *v = config().pools; break;
        case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *v = 1; break;
        case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: *v = 1; break;
        case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: *v = 2; break;
        case CU_DEVICE_ATTRIBUTE_INTEGRATED: *v = 0; break;
        case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY: *v = 1; break;
        case CU_DEVICE_ATTRIBUTE_ECC_ENABLED: *v = 1; break;
        case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: *v = d + 1; break;
        case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: *v = 0; break;
        case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: *v = 0; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_MODE: *v = CU_COMPUTEMODE_DEFAULT; break;
        case CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT: *v = 512; break;
        case CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT: *v = 0; break;
        case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY: *v = 0; break;
        case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH: *v = 0; break;
        default:
            note("cuDeviceGetAttribute: attribute %d is not emulated", (int)a);
            return CUDA_ERROR_NOT_SUPPORTED;
    }
    return CUDA_SUCCESS;
}

EMU_API CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice d) {
    ENTER_INIT("cuDevicePrimaryCtxRetain");
    Device* dev = device(d);
    if (!dev) return CUDA_ERROR_INVALID_DEVICE;
    if (!c) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> l(dev->primary->m);
    ++dev->primary->retained;
    *c = reinterpret_cast<CUcontext>(dev->primary);
    return CUDA_SUCCESS;
}

EMU_API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    ENTER_INIT("cuDevicePrimaryCtxRelease_v2");
    Device* dev = device(d);
    if (!dev) return CUDA_ERROR_INVALID_DEVICE;
    std::lock_guard<std::mutex> l(dev->primary->m);
    if (dev->primary->retained <= 0) return CUDA_ERROR_INVALID_CONTEXT;
    // The context (its memory and streams) stays: a real driver would destroy it at zero,
    // which no cosim path relies on.
    --dev->primary->retained;
    return CUDA_SUCCESS;
}

static Context* context(CUcontext c) {
    for (Device* d : world().devices)
        if (reinterpret_cast<CUcontext>(d->primary) == c) return d->primary;
    return nullptr;
}

EMU_API CUresult cuCtxSetCurrent(CUcontext c) {
    ENTER_INIT("cuCtxSetCurrent");
    if (!c) {
        set_current(nullptr);
        return CUDA_SUCCESS;
    }
    Context* ctx = context(c);
    if (!ctx) return CUDA_ERROR_INVALID_CONTEXT;
    set_current(ctx);
    return CUDA_SUCCESS;
}

EMU_API CUresult cuCtxGetCurrent(CUcontext* c) {
    ENTER_INIT("cuCtxGetCurrent");
    if (!c) return CUDA_ERROR_INVALID_VALUE;
    *c = reinterpret_cast<CUcontext>(current());
    return CUDA_SUCCESS;
}

EMU_API CUresult cuCtxGetDevice(CUdevice* d) {
    ENTER_INIT("cuCtxGetDevice");
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    if (!current()) return CUDA_ERROR_INVALID_CONTEXT;
    *d = current()->dev->ordinal;
    return CUDA_SUCCESS;
}

EMU_API CUresult cuCtxSynchronize() {
    ENTER_INIT("cuCtxSynchronize");
    Context* c = current();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    drain(c);
    return CUDA_SUCCESS;
}

namespace {
struct ErrorText {
    CUresult code;
    const char* name;
    const char* text;
};
const ErrorText ERRORS[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_DEINITIALIZED, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
};
const ErrorText* error(CUresult e) {
    for (const auto& x : ERRORS)
        if (x.code == e) return &x;
    return nullptr;
}
}  // namespace

EMU_API CUresult cuGetErrorName(CUresult e, const char** s) {
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    const ErrorText* x = error(e);
    if (!x) return CUDA_ERROR_INVALID_VALUE;
    *s = x->name;
    return CUDA_SUCCESS;
}

EMU_API CUresult cuGetErrorString(CUresult e, const char** s) {
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    const ErrorText* x = error(e);
    if (!x) return CUDA_ERROR_INVALID_VALUE;
    *s = x->text;
    return CUDA_SUCCESS;
}
