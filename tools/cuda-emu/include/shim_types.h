#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>
struct __half { uint16_t x; };
struct alignas(4) __half2 { __half x, y; };
struct __nv_bfloat16 { uint16_t x; };
struct alignas(4) __nv_bfloat162 { __nv_bfloat16 x, y; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
inline uint32_t __f2u(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float __u2f(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __half2float(__half h) {
    uint32_t s = (h.x >> 15) & 1, e = (h.x >> 10) & 0x1f, m = h.x & 0x3ff;
    float r;
    if (e == 0) r = std::ldexp((float)m, -24);
    else if (e == 31) r = m ? NAN : INFINITY;
    else r = std::ldexp((float)(m | 0x400), (int)e - 25);
    return s ? -r : r;
}
inline __half __float2half_rn(float f) {
    uint32_t u = __f2u(f);
    uint16_t sign = (u >> 16) & 0x8000;
    float a = std::fabs(f);
    if (std::isnan(f)) return __half{(uint16_t)(sign | 0x7e00)};
    if (a >= 65520.0f) return __half{(uint16_t)(sign | 0x7c00)};
    if (a < std::ldexp(1.0f, -14)) {  // subnormal: units of 2^-24, RNE via nearbyint
        float q = std::nearbyint(std::ldexp(a, 24));  // default rounding mode: nearest even
        return __half{(uint16_t)(sign | (uint16_t)q)};
    }
    int e; float fr = std::frexp(a, &e);  // a = fr*2^e, fr in [0.5,1)
    // mantissa with 11 significant bits
    float q = std::nearbyint(std::ldexp(fr, 11));  // in [1024, 2048]
    if (q == 2048.0f) { q = 1024.0f; e += 1; }
    int he = e - 1 + 15;  // exponent of 1.m form
    if (he >= 31) return __half{(uint16_t)(sign | 0x7c00)};
    return __half{(uint16_t)(sign | (he << 10) | ((uint32_t)q - 1024))};
}
inline float2 __half22float2(__half2 h) { return float2{__half2float(h.x), __half2float(h.y)}; }
inline float __bfloat162float(__nv_bfloat16 b) { return __u2f((uint32_t)b.x << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u = __f2u(f);
    if (std::isnan(f)) return __nv_bfloat16{(uint16_t)((u >> 16) | 0x40)};
    uint32_t r = u + 0x7fff + ((u >> 16) & 1);
    return __nv_bfloat16{(uint16_t)(r >> 16)};
}
inline float2 __bfloat1622float2(__nv_bfloat162 h) {
    return float2{__bfloat162float(h.x), __bfloat162float(h.y)};
}
