// common.cuh: fixed-width types, f16/bf16 conversions, global loads and warp reductions shared
// by every kernel. Built by NVRTC (no CUDA runtime headers: conversions use PTX `cvt` so the
// kernels need nothing but <cuda/std/cstdint>) and by a host C++ compiler for the CPU execution
// of the kernels (crates/membound-cuda-host, where MB_HOST is defined): the only host branches
// are the two PTX conversions, the load helper and the asynchronous copy helpers.
#pragma once

#include <cuda/std/cstdint>

typedef cuda::std::int8_t i8;
typedef cuda::std::int16_t i16;
typedef cuda::std::int32_t i32;
typedef cuda::std::int64_t i64;
typedef cuda::std::uint8_t u8;
typedef cuda::std::uint16_t u16;
typedef cuda::std::uint32_t u32;
typedef cuda::std::uint64_t u64;

#define MB_WARP_SIZE 32
#define MB_FULL_MASK 0xffffffffu

// IEEE half bits -> f32 (exact).
static __device__ __forceinline__ float mb_f16_to_f32(u16 h) {
#ifdef MB_HOST
    return mbh::f16_to_f32(h);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

// f32 -> IEEE half bits, round to nearest even (as the CPU's half::f16::from_f32).
static __device__ __forceinline__ u16 mb_f32_to_f16(float f) {
#ifdef MB_HOST
    return mbh::f32_to_f16(f);
#else
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#endif
}

// A global load of one T (1, 2, 4, 8 or 16 bytes, naturally aligned). Kernels read global memory
// through this helper only: on the GPU it is a plain load; on the host every load is
// bounds-checked and counted in 32-byte sectors per warp-wide request (coalescing tests).
template <typename T>
static __device__ __forceinline__ T mb_ld(const T* p) {
#ifdef MB_HOST
    mbh::record_load(p, sizeof(T));
#endif
    return *p;
}

// The first statement of every kernel. Programmatic dependent launch (sm_90+; a decode step
// launched with MEMBOUND_PDL=1): a kernel may then be launched while the one before it still
// runs, so its launch and block scheduling overlap that kernel's tail. `griddepcontrol.wait`
// holds the kernel here until the kernel before it has finished and its writes are visible;
// `launch_dependents` then lets the next kernel launch early in its turn. Launched without the
// attribute, and on other architectures and the host, this does nothing.
static __device__ __forceinline__ void mb_grid_begin() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// A global load from L2, past this SM's L1 (ld.global.cg): for values other blocks of the same
// launch wrote (after mb_last_of), which an L1 line of this SM must not stand in for.
template <typename T>
static __device__ __forceinline__ T mb_ld_cg(const T* p) {
#ifdef MB_HOST
    return mb_ld(p);
#else
    return __ldcg(p);
#endif
}

// Whether this block is the n-th to arrive at `counter` (every thread of the block calls it, at
// most once per launch): each thread's writes are made visible device-wide, then thread 0 takes
// a ticket. The last block then sees the others' writes (read them with mb_ld_cg) and resets
// the counter to 0 for the next launch once it is done with it. How one launch does what would
// otherwise need a second launch after it (a decode step's launch count is its fixed cost).
static __device__ __forceinline__ bool mb_last_of(u32* counter, u32 n) {
    __shared__ u32 last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == n - 1 ? 1u : 0u;
    __syncthreads();
    const bool is_last = last != 0u;
    if (is_last) __threadfence();
    return is_last;
}

// Asynchronous copy of N (4, 8 or 16) bytes from global `src` to shared `dst`, both N-byte
// aligned (cp.async, sm_80+: the bytes travel without passing through registers, so a warp can
// keep a whole tile in flight while it computes on the previous one; older GPUs copy through
// registers). On the host the copy is recorded as a load and lands at the mb_cp_async_wait that
// covers it.
template <int N>
static __device__ __forceinline__ void mb_cp_async(void* dst, const void* src) {
    static_assert(N == 4 || N == 8 || N == 16, "cp.async copies 4, 8 or 16 bytes");
#ifdef MB_HOST
    mbh::cp_async(dst, src, N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    // No cp.async before sm_80: a plain copy (complete before the barrier that follows).
    if (N == 16) {
        *static_cast<uint4*>(dst) = *static_cast<const uint4*>(src);
    } else if (N == 8) {
        *static_cast<uint2*>(dst) = *static_cast<const uint2*>(src);
    } else {
        *static_cast<u32*>(dst) = *static_cast<const u32*>(src);
    }
#else
    u32 s;
    asm volatile("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(s) : "l"(dst));
    if (N == 16) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(src) : "memory");
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(s), "l"(src), "n"(N) : "memory");
    }
#endif
}

// Closes this thread's group of asynchronous copies (cp.async.commit_group).
static __device__ __forceinline__ void mb_cp_async_commit() {
#ifdef MB_HOST
    mbh::cp_async_commit();
#elif !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Waits until at most N of this thread's most recent groups are in flight (cp.async.wait_group);
// other threads' copies are visible after a barrier that follows their waits.
template <int N>
static __device__ __forceinline__ void mb_cp_async_wait() {
#ifdef MB_HOST
    mbh::cp_async_wait(N);
#elif !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// f32 -> bfloat16 bits, round to nearest even (NaN stays a quiet NaN).
static __device__ __forceinline__ u16 mb_f32_to_bf16(float f) {
    const u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Two f32 as one 32-bit word of two 16-bit values (lo in the low half), f16 or bf16, rounded to
// nearest even: the operand pairs of the tensor-core multiply below.
template <bool BF16>
static __device__ __forceinline__ u32 mb_pack_half2(float lo, float hi) {
    const u16 a = BF16 ? mb_f32_to_bf16(lo) : mb_f32_to_f16(lo);
    const u16 b = BF16 ? mb_f32_to_bf16(hi) : mb_f32_to_f16(hi);
    return (u32)a | ((u32)b << 16);
}

// d += a * b on the warp's tensor cores: mma.sync.aligned.m16n8k16.row.col.f32 with f16 (or
// bf16) operands, A 16 x 16 and B 16 x 8, fragments as PTX lays them out (groupID g = lane / 4,
// t = lane % 4: a[r] = A rows g + 8 (r % 2), columns 2t + 8 (r / 2), + 1; b[r] = B rows 2t + 8r,
// + 1, column g; d rows g (d0, d1) and g + 8 (d2, d3), columns 2t, 2t + 1). sm_80 and later; the
// host build computes the same products in f32 (cuda_host.h).
template <bool BF16>
static __device__ __forceinline__ void mb_mma_16816(const u32 (&a)[4], const u32 (&b)[2], float (&d)[4]) {
#ifdef MB_HOST
    mbh_mma_m16n8k16(BF16, a, b, d, d);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    // No m16n8k16 before sm_80: the file still builds there; the plans take these kernels only
    // where MEMBOUND_ATTN_MMA=1 asks, which such a GPU must not.
    (void)a;
    (void)b;
    (void)d;
    __trap();
#else
    if (BF16) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
#endif
}

// bfloat16 bits -> f32 (exact: the top half of an f32).
static __device__ __forceinline__ float mb_bf16_to_f32(u16 b) {
    return __uint_as_float(((u32)b) << 16);
}

static __device__ __forceinline__ float mb_warp_sum(float v) {
#pragma unroll
    for (int o = MB_WARP_SIZE / 2; o > 0; o >>= 1) v += __shfl_xor_sync(MB_FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ int mb_warp_sum_int(int v) {
#pragma unroll
    for (int o = MB_WARP_SIZE / 2; o > 0; o >>= 1) v += __shfl_xor_sync(MB_FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ u64 mb_warp_sum_u64(u64 v) {
#pragma unroll
    for (int o = MB_WARP_SIZE / 2; o > 0; o >>= 1) v += __shfl_xor_sync(MB_FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float mb_warp_max(float v) {
#pragma unroll
    for (int o = MB_WARP_SIZE / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(MB_FULL_MASK, v, o));
    return v;
}
