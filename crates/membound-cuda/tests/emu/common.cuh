// Host stand-in for kernels/common.cuh, used only by tests/host_emulation.rs: it lets a host
// C++ compiler build kernels/gemv.cu so the per-chunk dot products (the index and bit
// arithmetic of every quant format) run on the CPU against membound-quant's reference.
// Device-only parts (warp shuffles, thread indices) are inert stand-ins and never called.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>

typedef std::int8_t i8;
typedef std::int16_t i16;
typedef std::int32_t i32;
typedef std::int64_t i64;
typedef std::uint8_t u8;
typedef std::uint16_t u16;
typedef std::uint32_t u32;
typedef std::uint64_t u64;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define MB_WARP_SIZE 32
#define MB_FULL_MASK 0xffffffffu

struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct Dim3 { unsigned x, y, z; };
[[maybe_unused]] static Dim3 blockIdx, threadIdx, blockDim, gridDim;

template <typename T> static T __shfl_xor_sync(unsigned, T v, int) { std::abort(); return v; }

static inline float __uint_as_float(u32 u) { float f; __builtin_memcpy(&f, &u, 4); return f; }
static inline u32 __float_as_uint(float f) { u32 u; __builtin_memcpy(&u, &f, 4); return u; }

static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) c += (int)(i8)(a >> (8 * i)) * (int)(i8)(b >> (8 * i));
    return c;
}

static inline u32 __vsub4(u32 a, u32 b) {
    u32 r = 0;
    for (int i = 0; i < 4; ++i) r |= (u32)(u8)((a >> (8 * i)) - (b >> (8 * i))) << (8 * i);
    return r;
}

static inline u32 __byte_perm(u32 x, u32 y, u32 s) {
    const u64 src = (u64)x | ((u64)y << 32);
    u32 r = 0;
    for (int n = 0; n < 4; ++n) r |= (u32)((src >> (8 * ((s >> (4 * n)) & 7))) & 0xFF) << (8 * n);
    return r;
}

static inline float mb_f16_to_f32(u16 h) {
    const u32 e = (h >> 10) & 0x1F, m = h & 0x3FF;
    float f = e == 0 ? std::ldexp((float)m, -24)
            : e == 31 ? (m ? NAN : INFINITY)
                      : std::ldexp((float)(m | 0x400), (int)e - 25);
    return (h & 0x8000) ? -f : f;
}

static inline u16 mb_f32_to_f16(float) { std::abort(); return 0; }  // device quantizer only
static inline float mb_bf16_to_f32(u16 b) { return __uint_as_float((u32)b << 16); }
static inline float mb_warp_sum(float v) { std::abort(); return v; }
static inline int mb_warp_sum_int(int v) { std::abort(); return v; }
static inline u64 mb_warp_sum_u64(u64 v) { std::abort(); return v; }
static inline float mb_warp_max(float v) { std::abort(); return v; }
