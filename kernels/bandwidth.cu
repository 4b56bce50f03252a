// bandwidth.cu: the four streaming kernels of the bandwidth suite (BabelStream's shape):
//   mb_read   sum of every 32-bit word of src, one u64 partial per block (result checkable:
//             wrapping integer addition is exact and order-independent)
//   mb_write  dst[i] = scalar
//   mb_copy   dst[i] = src[i]
//   mb_triad  a[i] = fmaf(s, c[i], b[i])  (explicit fma, so the CPU check with mul_add is exact)
// Bytes moved per call: read 1x, write 1x, copy 2x, triad 3x the array bytes.
//
// Layout: arrays of p.n f32 values from cuMemAlloc (256-byte aligned). The first n/4*4 values
// are moved as 128-bit vectors (float4 / uint4); the last n%4 values by the first threads.
//
// Launch geometry (host: membound_cuda::bandwidth::stream_grid): 1-D blocks of
// STREAM_BLOCK = 256 threads; grid = min(SM count x resident blocks per SM (occupancy API),
// ceil(n/4 / 256)), at least 1. Each thread walks the vectors with a grid-stride loop, four
// (read) or two (copy, triad) independent 16-byte loads per iteration. Loads go through mb_ld.
// Indices are 64-bit.

#include "common.cuh"
#include "params.cuh"

#define STREAM_BLOCK 256

static __device__ __forceinline__ u64 mb_tid() {
    return (u64)blockIdx.x * blockDim.x + threadIdx.x;
}

static __device__ __forceinline__ u64 mb_stride() {
    return (u64)gridDim.x * blockDim.x;
}

static __device__ __forceinline__ u64 mb_word_sum(uint4 w) {
    return (u64)w.x + (u64)w.y + (u64)w.z + (u64)w.w;
}

extern "C" __global__ void __launch_bounds__(STREAM_BLOCK)
mb_read(const float* __restrict__ src, u64* __restrict__ partials, StreamParams p) {
    mb_grid_begin();
    const uint4* v = reinterpret_cast<const uint4*>(src);
    const u64 nv = p.n / 4;
    const u64 stride = mb_stride();
    u64 acc = 0;
    u64 i = mb_tid();
    // Four independent 16-byte loads in flight per thread.
    for (; i + 3 * stride < nv; i += 4 * stride) {
        const uint4 a = mb_ld(v + i);
        const uint4 b = mb_ld(v + i + stride);
        const uint4 c = mb_ld(v + i + 2 * stride);
        const uint4 d = mb_ld(v + i + 3 * stride);
        acc += mb_word_sum(a) + mb_word_sum(b) + mb_word_sum(c) + mb_word_sum(d);
    }
    for (; i < nv; i += stride) acc += mb_word_sum(mb_ld(v + i));
    const u64 t = mb_tid();
    if (t < p.n - nv * 4) acc += __float_as_uint(mb_ld(src + nv * 4 + t));

    __shared__ u64 warp_sums[32];
    acc = mb_warp_sum_u64(acc);
    const int lane = threadIdx.x % MB_WARP_SIZE;
    const int warp = threadIdx.x / MB_WARP_SIZE;
    if (lane == 0) warp_sums[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        const int nwarps = blockDim.x / MB_WARP_SIZE;
        u64 s = lane < nwarps ? warp_sums[lane] : 0;
        s = mb_warp_sum_u64(s);
        if (lane == 0) partials[blockIdx.x] = s;
    }
}

extern "C" __global__ void __launch_bounds__(STREAM_BLOCK)
mb_write(float* __restrict__ dst, StreamParams p) {
    mb_grid_begin();
    float4* v = reinterpret_cast<float4*>(dst);
    const u64 nv = p.n / 4;
    const u64 stride = mb_stride();
    const float4 x = make_float4(p.scalar, p.scalar, p.scalar, p.scalar);
    u64 i = mb_tid();
    for (; i + stride < nv; i += 2 * stride) {
        v[i] = x;
        v[i + stride] = x;
    }
    if (i < nv) v[i] = x;
    const u64 t = mb_tid();
    if (t < p.n - nv * 4) dst[nv * 4 + t] = p.scalar;
}

extern "C" __global__ void __launch_bounds__(STREAM_BLOCK)
mb_copy(const float* __restrict__ src, float* __restrict__ dst, StreamParams p) {
    mb_grid_begin();
    const float4* s = reinterpret_cast<const float4*>(src);
    float4* d = reinterpret_cast<float4*>(dst);
    const u64 nv = p.n / 4;
    const u64 stride = mb_stride();
    u64 i = mb_tid();
    for (; i + stride < nv; i += 2 * stride) {
        const float4 a = mb_ld(s + i);
        const float4 b = mb_ld(s + i + stride);
        d[i] = a;
        d[i + stride] = b;
    }
    if (i < nv) d[i] = mb_ld(s + i);
    const u64 t = mb_tid();
    if (t < p.n - nv * 4) dst[nv * 4 + t] = mb_ld(src + nv * 4 + t);
}

static __device__ __forceinline__ float4 mb_triad4(float s, float4 b, float4 c) {
    return make_float4(fmaf(s, c.x, b.x), fmaf(s, c.y, b.y), fmaf(s, c.z, b.z), fmaf(s, c.w, b.w));
}

extern "C" __global__ void __launch_bounds__(STREAM_BLOCK)
mb_triad(float* __restrict__ a, const float* __restrict__ b, const float* __restrict__ c,
         StreamParams p) {
    mb_grid_begin();
    float4* a4 = reinterpret_cast<float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    const float4* c4 = reinterpret_cast<const float4*>(c);
    const u64 nv = p.n / 4;
    const u64 stride = mb_stride();
    const float s = p.scalar;
    u64 i = mb_tid();
    for (; i + stride < nv; i += 2 * stride) {
        const float4 b0 = mb_ld(b4 + i), c0 = mb_ld(c4 + i);
        const float4 b1 = mb_ld(b4 + i + stride), c1 = mb_ld(c4 + i + stride);
        a4[i] = mb_triad4(s, b0, c0);
        a4[i + stride] = mb_triad4(s, b1, c1);
    }
    if (i < nv) a4[i] = mb_triad4(s, mb_ld(b4 + i), mb_ld(c4 + i));
    const u64 t = mb_tid();
    if (t < p.n - nv * 4) a[nv * 4 + t] = fmaf(s, mb_ld(c + nv * 4 + t), mb_ld(b + nv * 4 + t));
}
