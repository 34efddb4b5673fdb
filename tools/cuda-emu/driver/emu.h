// The emulated driver's state: devices, their memory, primary contexts, streams (one worker
// thread each), events, modules and functions. Handles given to callers are pointers to these
// objects (CUdevice is the ordinal); none is ever freed while the process runs, so a handle
// used after destruction is caught as a dead object rather than as a dangling pointer.
#pragma once
#include <cuda.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "emu_abi.h"

#define EMU_API extern "C" __attribute__((visibility("default")))

namespace drv {

using Clock = std::chrono::steady_clock;

// Settings read once from the environment (COSIM_EMU_*; see tools/cuda-emu/README.md).
struct Config {
    int devices = 1;
    size_t memory = size_t(4) << 30;  // per device
    int sms = 132;
    int pools = 1;             // CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED
    unsigned delay_us = 0;     // random delay before each stream operation, at most this
    int threads = 2;           // OS threads that run a grid's blocks
    bool trace = false;        // every entry point on stderr
    int driver = 13000;        // cuDriverGetVersion; images with newer PTX are refused
};
const Config& config();

// Prints "cuda-emu: ..." on stderr.
void note(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// Prints "EMU FATAL ..." with the operation in progress on this thread, and aborts.
[[noreturn]] void fatal(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// The operation this thread is running (a kernel name, a copy), for fault reports.
extern thread_local const char* t_op;

struct Device;
struct Context;

// One device allocation, [ptr, ptr + size), with guard bytes in [lo, ptr) and
// [ptr + size, hi). A large one has its own mapping [base, base + map_len) with an
// inaccessible page on either side of [lo, hi); a small one (256 B guards on either side)
// lives in an arena and is reused, once freed, only after many later frees.
struct Alloc {
    char* base = nullptr;  // own mapping (null for arena allocations)
    size_t map_len = 0;
    char* lo = nullptr;
    char* hi = nullptr;
    char* ptr = nullptr;
    size_t size = 0;
    size_t span = 0;  // size rounded up to 256
    Device* dev = nullptr;
    bool live = true;
    // The whole range this allocation answers for (its mapping, or its guarded slot).
    uintptr_t first() const { return (uintptr_t)(base ? base : lo); }
    uintptr_t last() const { return base ? (uintptr_t)base + map_len : (uintptr_t)hi; }
};

struct Device {
    int ordinal = 0;
    std::mutex m;
    size_t used = 0;
    Context* primary = nullptr;
};

// Memory: every allocation of every device, live or freed (freed ones stay mapped PROT_NONE
// for a while, so a later use faults).
namespace mem {
CUresult alloc(Device* dev, size_t bytes, CUdeviceptr* out);
// Frees now; `what` names the entry point for the error message.
CUresult free(CUdeviceptr p, const char* what);
// The live allocation holding [p, p + n), or null (and an explanation in `why`).
Alloc* find(CUdeviceptr p, size_t n, std::string* why);
// Any allocation (live or freed) whose mapping holds address p.
Alloc* owner(uintptr_t p);
// Aborts if the guard bytes of `a` (if still live) were written.
void check_guards(Alloc* a, const char* after);
bool is_pinned(const void* p, size_t n);
CUresult host_alloc(void** p, size_t bytes);
CUresult host_free(void* p);
void install_fault_handler();
}  // namespace mem

struct Stream;
struct Event {
    std::mutex m;
    std::condition_variable cv;
    unsigned flags = 0;
    uint64_t recorded = 0, completed = 0;
    Clock::time_point when{};
    bool live = true;
};

// An in-order queue of operations run by its own worker thread.
struct Stream {
    Context* ctx = nullptr;
    unsigned flags = 0;
    bool null_stream = false;
    std::mutex m;
    std::condition_variable cv;
    std::deque<std::pair<uint64_t, std::function<void()>>> q;
    uint64_t enqueued = 0, done = 0;
    bool stop = false, live = true;
    std::thread worker;
    // Queues `op` and returns its sequence number (done >= it once it has run).
    uint64_t push(std::function<void()> op);
    void wait_for(uint64_t seq);
    void drain() { wait_for(tail()); }
    uint64_t tail();
    bool idle();
};
void start(Stream* s);
void destroy(Stream* s);
// Waits until every stream of `c` (its null stream too) has run all its work.
void drain(Context* c);

struct Module;
struct Function {
    const emu_kernel* k = nullptr;
    Module* mod = nullptr;
    int max_dynamic_smem = 48 * 1024;
};
struct Module {
    Context* ctx = nullptr;
    std::set<std::string> names;  // the kernels the image's PTX declares
    std::map<std::string, Function*> functions;
    bool live = true;
};

struct Context {
    Device* dev = nullptr;
    int retained = 0;
    Stream* null_stream = nullptr;
    std::mutex m;
    std::vector<Stream*> streams;  // live, created on this context
};

// Global registry of live handles (checked on every use).
struct World {
    std::mutex m;
    std::vector<Device*> devices;
    std::set<Stream*> streams;
    std::set<Event*> events;
    std::set<Module*> modules;
    std::set<Function*> functions;
    const emu_kernel* find_kernel(const std::string& name);
    std::map<std::string, const emu_kernel*> kernels;
};
World& world();
extern std::atomic<bool> g_initialized;
Context* current();
void set_current(Context* c);

// The stream a handle names in the current context (null, legacy and per-thread default
// streams are the context's null stream); null and an error if it is not live.
Stream* stream_of(CUstream h, CUresult* err);

// Runs every block of a grid on the pool (and the calling thread); returns when all are done.
void run_grid(const emu_kernel* k, const void* bound, const unsigned grid[3], const unsigned block[3]);

// The kernel names declared by a fatbin's (or PTX text's) PTX; false if the image is neither.
// The kernel names of a module image (from its PTX) and the PTX ISA it needs (10·major + minor).
bool image_kernels(const void* image, std::set<std::string>* names, int* isa, std::string* why);
// The oldest driver (cuDriverGetVersion's form, 13000 for CUDA 13.0) that JIT-compiles PTX of
// ISA `isa` (10·major + minor).
int ptx_isa_driver(int isa);

}  // namespace drv
