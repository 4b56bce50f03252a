// quant_blocks.cuh: ggml's quant blocks, byte for byte the layouts of ggml-common.h and of
// crates/membound-quant/src/blocks.rs (one definition per layout, checked by static_assert).
// Half-precision scales are raw IEEE half bits (u16), converted with mb_f16_to_f32.
#pragma once

#include "common.cuh"

#define QK32 32   // values per Q8_0 / Q8_1 / Q4_0 / MXFP4 block
#define QK_K 256  // values per K-quant super-block

// Q8_0: x = d * q.
struct block_q8_0 {
    u16 d;
    i8 qs[QK32];
};

// Q8_1: x = d * q, s = d * sum(q) (the activation type of the integer dot products).
struct block_q8_1 {
    u16 d;
    u16 s;
    i8 qs[QK32];
};

// Q4_0: x = d * (q - 8); low nibbles hold values 0..16, high nibbles 16..32.
struct block_q4_0 {
    u16 d;
    u8 qs[QK32 / 2];
};

// Q4_K: 8 sub-blocks of 32; 6-bit scales and mins packed in 12 bytes; x = d*sc*q - dmin*m.
struct block_q4_K {
    u16 d;
    u16 dmin;
    u8 scales[12];
    u8 qs[QK_K / 2];
};

// Q5_K: Q4_K plus one high bit per value in qh.
struct block_q5_K {
    u16 d;
    u16 dmin;
    u8 scales[12];
    u8 qh[QK_K / 8];
    u8 qs[QK_K / 2];
};

// Q6_K: 16 sub-blocks of 16; 4 low bits in ql, 2 high bits in qh, 8-bit scales; x = d*sc*(q-32).
struct block_q6_K {
    u8 ql[QK_K / 2];
    u8 qh[QK_K / 4];
    i8 scales[QK_K / 16];
    u16 d;
};

// MXFP4: E8M0 exponent byte and 32 E2M1 nibbles (low nibbles values 0..16, high 16..32).
struct block_mxfp4 {
    u8 e;
    u8 qs[QK32 / 2];
};

static_assert(sizeof(block_q8_0) == 34, "block_q8_0 must be 34 bytes");
static_assert(sizeof(block_q8_1) == 36, "block_q8_1 must be 36 bytes");
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 must be 18 bytes");
static_assert(sizeof(block_q4_K) == 144, "block_q4_K must be 144 bytes");
static_assert(sizeof(block_q5_K) == 176, "block_q5_K must be 176 bytes");
static_assert(sizeof(block_q6_K) == 210, "block_q6_K must be 210 bytes");
static_assert(sizeof(block_mxfp4) == 17, "block_mxfp4 must be 17 bytes");
// Offsets the GEMV kernels' vector loads rely on. Checked by host compilers (the CPU execution of
// the kernels, the emulation tests); NVRTC 13.0 has no __builtin_offsetof, so it checks sizes only.
#ifndef __CUDACC_RTC__
static_assert(__builtin_offsetof(block_q8_0, qs) == 2, "q8_0 qs offset");
static_assert(__builtin_offsetof(block_q8_1, qs) == 4, "q8_1 qs offset");
static_assert(__builtin_offsetof(block_q4_K, scales) == 4, "q4_K scales offset");
static_assert(__builtin_offsetof(block_q4_K, qs) == 16, "q4_K qs offset");
static_assert(__builtin_offsetof(block_q6_K, qh) == 128, "q6_K qh offset");
static_assert(__builtin_offsetof(block_q6_K, scales) == 192, "q6_K scales offset");
static_assert(__builtin_offsetof(block_q6_K, d) == 208, "q6_K d offset");
static_assert(__builtin_offsetof(block_mxfp4, qs) == 1, "mxfp4 qs offset");
#endif

// One Q8_1 block written by a warp, lane l holding value l: bit-exact with ggml's CPU
// quantize_row_q8_1_ref (d = amax/127, q = round(x * (1/d)), s = d * sum(q), f32 throughout,
// halves rounded to nearest even). Every lane of the warp must call it.
static __device__ __forceinline__ void mb_q8_1_store_warp(block_q8_1* __restrict__ dst, float v,
                                                          int lane) {
    const float amax = mb_warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const int q = (int)roundf(v * id);
    const int sum = mb_warp_sum_int(q);
    dst->qs[lane] = (i8)q;
    if (lane == 0) {
        dst->d = mb_f32_to_f16(d);
        dst->s = mb_f32_to_f16((float)sum * d);
    }
}
