// Module images: the kernel names a module holds are read from the PTX inside the image (a
// fatbin as nvcc writes it, entries zstd-compressed or not, or PTX text), so that
// cuModuleGetFunction of a name the real module lacks fails here as on a GPU. The code that
// runs is the C++ build of the same sources, found by name in the kernel registry.
#include <cstdio>
#include <cstring>

#include "emu.h"

extern "C" {
// libzstd.so.1's stable API (declared here so that no -dev package is needed).
size_t ZSTD_decompress(void* dst, size_t dst_capacity, const void* src, size_t src_size);
unsigned long long ZSTD_getFrameContentSize(const void* src, size_t src_size);
size_t ZSTD_findFrameCompressedSize(const void* src, size_t src_size);
unsigned ZSTD_isError(size_t code);
}

namespace drv {
namespace {

constexpr uint32_t FATBIN_MAGIC = 0xBA55ED50u;
constexpr uint32_t ZSTD_MAGIC = 0xFD2FB528u;
constexpr uint16_t KIND_PTX = 1;

template <class T> T read(const unsigned char* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// `.entry NAME(` declarations of a PTX text, and its `.version X.Y` (as 10·X + Y, the largest
// of the image's PTX entries).
void ptx_entries(const char* text, size_t n, std::set<std::string>* names, int* isa) {
    const std::string s(text, strnlen(text, n));
    const size_t v = s.find(".version");
    if (v != std::string::npos) {
        int major = 0, minor = 0;
        if (sscanf(s.c_str() + v + 8, " %d.%d", &major, &minor) == 2 && 10 * major + minor > *isa)
            *isa = 10 * major + minor;
    }
    for (size_t at = s.find(".entry"); at != std::string::npos; at = s.find(".entry", at + 6)) {
        size_t b = at + 6;
        while (b < s.size() && (s[b] == ' ' || s[b] == '\t')) ++b;
        size_t e = b;
        while (e < s.size() && (isalnum((unsigned char)s[e]) || s[e] == '_' || s[e] == '$')) ++e;
        if (e > b) names->insert(s.substr(b, e - b));
    }
}

}  // namespace

bool image_kernels(const void* image, std::set<std::string>* names, int* isa, std::string* why) {
    const auto* p = static_cast<const unsigned char*>(image);
    if (read<uint32_t>(p) != FATBIN_MAGIC) {
        // PTX text (NUL-terminated, as cuModuleLoadData takes it).
        const char* t = static_cast<const char*>(image);
        if (strncmp(t, "//", 2) == 0 || strncmp(t, ".version", 8) == 0 || strstr(t, ".entry")) {
            ptx_entries(t, strlen(t), names, isa);
            return true;
        }
        *why = "the image is neither a fatbin nor PTX text (the emulator reads kernel names from PTX)";
        return false;
    }
    const uint16_t header = read<uint16_t>(p + 6);
    const uint64_t size = read<uint64_t>(p + 8);
    bool any_ptx = false;
    for (uint64_t at = header; at + 16 <= header + size;) {
        const unsigned char* e = p + at;
        const uint16_t kind = read<uint16_t>(e);
        const uint32_t eh = read<uint32_t>(e + 4);
        const uint64_t payload = read<uint64_t>(e + 8);
        if (eh == 0) break;
        const unsigned char* body = e + eh;
        if (kind == KIND_PTX) {
            any_ptx = true;
            if (payload >= 4 && read<uint32_t>(body) == ZSTD_MAGIC) {
                const size_t frame = ZSTD_findFrameCompressedSize(body, payload);
                const unsigned long long n = ZSTD_getFrameContentSize(body, payload);
                if (ZSTD_isError(frame) || n == 0 || n > (1ull << 34)) {
                    *why = "a compressed PTX entry of the fatbin could not be read";
                    return false;
                }
                std::vector<char> text(n);
                const size_t got = ZSTD_decompress(text.data(), n, body, frame);
                if (ZSTD_isError(got)) {
                    *why = "a compressed PTX entry of the fatbin did not decompress";
                    return false;
                }
                ptx_entries(text.data(), got, names, isa);
            } else {
                ptx_entries(reinterpret_cast<const char*>(body), payload, names, isa);
            }
        }
        at += eh + payload;
    }
    if (!any_ptx) {
        *why = "the fatbin holds no PTX (build with a compute_XX PTX entry: the emulator reads kernel names from it)";
        return false;
    }
    return true;
}

int ptx_isa_driver(int isa) {
    const int major = isa / 10, minor = isa % 10;
    if (major <= 7) return 11000 + 10 * minor;  // PTX 7.x: CUDA 11.x
    if (major == 8) return 12000 + 10 * (minor >= 6 ? minor + 1 : minor);  // 8.6 is CUDA 12.7
    return (major + 4) * 1000 + 10 * minor;     // PTX 9.x: CUDA 13.x
}

}  // namespace drv
