// cuda_host.h: the part of the CUDA execution model that kernels/*.cu use, for a host C++
// compiler. Force-included (-include) before each kernel file, so the same sources NVRTC builds
// run on the CPU:
//   - grids and blocks: blocks run one after another; every thread of a block is a fiber
//     (ucontext) with its own threadIdx, scheduled lowest thread first, switching only at
//     collectives, so a missing __syncthreads or a read of shared memory before it is written
//     shows up (shared memory is poisoned at every block start);
//   - warps of 32 lanes that meet in lockstep for __shfl_*_sync / __syncwarp; a collective whose
//     mask names a lane that has exited, or two different masks at once, stops the launch;
//   - __shared__ (static, in one linker section that is poisoned per block), atomics, __dp4a,
//     __vsub4, __byte_perm, bit casts, vector types;
//   - global loads through mb_ld() (common.cuh): each is bounds-checked against the launch's
//     buffers and recorded per lane, and the k-th loads of a warp's lanes form one warp-wide
//     request whose 32-byte sectors are counted (the figures ncu's memory workload analysis shows);
//   - asynchronous copies to shared memory (cp.async through mb_cp_async, common.cuh): recorded
//     as loads when issued, their destination poisoned from the issue and landed only at the
//     cp.async.wait_group that covers them, so a tile read before its wait, or a buffer refilled
//     while another warp still reads it, shows up.
// Not modelled: memory ordering between blocks, timing, occupancy, registers, FMA contraction
// (NVRTC contracts a*b+c by default; judge float results with tolerances).
#pragma once

#define MB_HOST 1

#include <cmath>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __restrict__ __restrict
// Every __shared__ variable lives in one section, which the runtime poisons at each block start.
#define __shared__ __attribute__((section("mb_shared"), aligned(16))) static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(8) float2 { float x, y; };

static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

namespace mbh {
// The fiber running now and the launch's grid (set by the runtime, host/runtime.cpp).
const dim3& thread_idx();
extern dim3 block_idx, block_dim, grid_dim;
// A block-wide barrier (__syncthreads).
void sync_block();
// Lane `lane` of the current warp publishes `bytes` of `v` and, once every lane of `mask` has,
// copies lane `src`'s value into `out` (src outside `mask` or out of range: own value).
void warp_exchange(unsigned mask, const void* v, void* out, unsigned size, int src);
// Every lane of the full warp publishes `size` (<= 16) bytes of `v`; each gets all 32 lanes'
// values, lane i's at `all + i * size` (the tensor-core model below gathers fragments with it).
void warp_allgather(unsigned mask, const void* v, void* all, unsigned size);
// The current lane within its warp.
int lane();
// __syncwarp(mask).
void sync_warp(unsigned mask);
// Records one global load of `size` bytes at `p` by the current lane (bounds-checked).
void record_load(const void* p, unsigned size);
// cp.async: `size` (4, 8 or 16) bytes from global `src` to shared `dst`, recorded as a load at
// issue and landed in shared memory only by a cp_async_wait that covers its commit group.
void cp_async(void* dst, const void* src, unsigned size);
// cp.async.commit_group: closes the current lane's open group of copies.
void cp_async_commit();
// cp.async.wait_group n: lands the current lane's copies of all but the n most recent groups.
void cp_async_wait(unsigned n);
// Stops the launch with a message (a kernel fault: the launch returns it as its error).
[[noreturn]] void fault(const char* what);
}  // namespace mbh

#define threadIdx (::mbh::thread_idx())
#define blockIdx (::mbh::block_idx)
#define blockDim (::mbh::block_dim)
#define gridDim (::mbh::grid_dim)
#define warpSize 32

static inline void __syncthreads() { ::mbh::sync_block(); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { ::mbh::sync_warp(mask); }
// Blocks run one after another here, so a fence orders nothing a later block could miss.
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <typename T>
static inline T mbh_shfl(unsigned mask, T v, int src) {
    static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 16, "shuffle of a plain value");
    T out;
    ::mbh::warp_exchange(mask, &v, &out, sizeof(T), src);
    return out;
}
template <typename T>
static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int l = ::mbh::lane();
    return mbh_shfl(mask, v, (l & ~(width - 1)) + (src & (width - 1)));
}
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
    const int l = ::mbh::lane();
    const int s = l ^ m;
    return mbh_shfl(mask, v, (s & ~(width - 1)) == (l & ~(width - 1)) ? s : l);
}
template <typename T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
    const int l = ::mbh::lane();
    const int s = l + (int)d;
    return mbh_shfl(mask, v, (s & ~(width - 1)) == (l & ~(width - 1)) ? s : l);
}
template <typename T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
    const int l = ::mbh::lane();
    const int s = l - (int)d;
    return mbh_shfl(mask, v, s >= (l & ~(width - 1)) ? s : l);
}

static inline float __uint_as_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline uint32_t __float_as_uint(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
static inline int __float_as_int(float f) { int u; std::memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }

static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
}
static inline unsigned __dp4a(unsigned a, unsigned b, unsigned c) {
    for (int i = 0; i < 4; ++i) c += ((a >> (8 * i)) & 0xFF) * ((b >> (8 * i)) & 0xFF);
    return c;
}
static inline uint32_t __vsub4(uint32_t a, uint32_t b) {
    uint32_t r = 0;
    for (int i = 0; i < 4; ++i) r |= (uint32_t)(uint8_t)((a >> (8 * i)) - (b >> (8 * i))) << (8 * i);
    return r;
}
static inline uint32_t __byte_perm(uint32_t x, uint32_t y, uint32_t s) {
    const uint64_t src = (uint64_t)x | ((uint64_t)y << 32);
    uint32_t r = 0;
    for (int n = 0; n < 4; ++n) r |= (uint32_t)((src >> (8 * ((s >> (4 * n)) & 7))) & 0xFF) << (8 * n);
    return r;
}
template <typename T> static inline T __ldg(const T* p) { return *p; }

template <typename T> static inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline float atomicAdd(float* p, float v) { const float old = *p; *p = old + v; return old; }
template <typename T> static inline T atomicMax(T* p, T v) { const T old = *p; if (v > old) *p = v; return old; }
template <typename T> static inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }

namespace mbh {
// IEEE half bits -> f32 (exact) and f32 -> half, round to nearest even (PTX cvt.rn.f16.f32).
static inline float f16_to_f32(uint16_t h) {
    const uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF;
    const float f = e == 0    ? std::ldexp((float)m, -24)
                    : e == 31 ? (m ? NAN : INFINITY)
                              : std::ldexp((float)(m | 0x400), (int)e - 25);
    return (h & 0x8000) ? -f : f;
}
static inline uint16_t f32_to_f16(float f) {
    const uint32_t x = __float_as_uint(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) return sign | (ax > 0x7F800000u ? 0x7E00 : 0x7C00);
    if (ax >= 0x477FF000u) return sign | 0x7C00;  // rounds to >= 65520: infinity
    if (ax < 0x38800000u) {                       // below 2^-14: subnormal half (or zero)
        const float a = __uint_as_float(ax);
        const float q = std::nearbyint(a * 16777216.0f);  // units of 2^-24, ties to even
        return sign | (uint16_t)q;
    }
    uint32_t r = ax - 0x38000000u;  // rebias exponent (127 -> 15)
    const uint32_t mant = r >> 13, rest = r & 0x1FFF;
    uint32_t h = mant + (rest > 0x1000 || (rest == 0x1000 && (mant & 1)));
    return sign | (uint16_t)h;
}
}  // namespace mbh

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32, d = a * b + c for the warp,
// fragments laid out as PTX defines them (groupID g = lane / 4, t = lane % 4): a[r] holds two
// 16-bit values of A (16 x 16, row-major) at row g + 8 * (r % 2), columns 2t + 8 * (r / 2) and
// + 1; b[r] two of B (16 x 8) at rows 2t + 8r and + 1, column g; c and d rows g (c0, c1) and g + 8
// (c2, c3), columns 2t and 2t + 1. Products summed in f32 in k order (the tensor cores' order
// and rounding differ in the last bits: compare with tolerances).
static inline void mbh_mma_m16n8k16(bool bf16, const uint32_t a[4], const uint32_t b[2],
                                    const float c[4], float d[4]) {
    uint32_t A[32][4], B[32][2];
    ::mbh::warp_allgather(0xffffffffu, a, A, 16);
    ::mbh::warp_allgather(0xffffffffu, b, B, 8);
    auto val = [bf16](uint32_t w, int hi) -> float {
        const uint16_t h = (uint16_t)(hi ? w >> 16 : w & 0xffffu);
        if (bf16) {
            const uint32_t u = (uint32_t)h << 16;
            float f;
            std::memcpy(&f, &u, 4);
            return f;
        }
        return ::mbh::f16_to_f32(h);
    };
    auto at_a = [&](int row, int k) {
        return val(A[(row % 8) * 4 + (k % 8) / 2][row / 8 + 2 * (k / 8)], k % 2);
    };
    auto at_b = [&](int k, int n) { return val(B[n * 4 + (k % 8) / 2][k / 8], k % 2); };
    const int lane = ::mbh::lane(), g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
        float sum = c[i];
        for (int k = 0; k < 16; ++k) sum += at_a(row, k) * at_b(k, col);
        d[i] = sum;
    }
}
