// gemv_tile.cuh: the row-dot machinery of the GEMV kernels (gemv.cu) and the MoE expert kernels
// (moe.cu): per-type chunk dot products in llama.cpp's mmvq arithmetic (quantized weights
// against Q8_1 blocks of x with __dp4a; F16/BF16 against f32 x) and mb_rows_dot, which reads a
// warp's rows in tiles staged through shared memory as consecutive 16-byte words. gemv.cu's
// header describes the scheme.
#pragma once

#include "common.cuh"
#include "quant_blocks.cuh"

// 1: tiles double-buffered with cp.async (mb_rows_dot_pipelined for block-quantized rows, and
// attention.cu's KV tiles); 0: copy a tile, then compute on it. The host passes -DTILE_PIPE=N
// (membound_cuda::gemv::tiles_pipelined).
#ifndef TILE_PIPE
#define TILE_PIPE 1
#endif

// ---------------------------------------------------------------------------------------------
// Helpers.

// 4 bytes at a 2-byte aligned address as one int (little endian).
static __device__ __forceinline__ int mb_load_int_b2(const u8* p) {
    const u16* h = reinterpret_cast<const u16*>(p);
    return (int)((u32)h[0] | ((u32)h[1] << 16));
}

// 4 bytes at any address as one int (little endian).
static __device__ __forceinline__ int mb_load_int_b1(const u8* p) {
    return (int)((u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24));
}

// The i-th int of a Q8_1 block's qs (4-byte aligned: blocks are 36 bytes, qs at offset 4).
static __device__ __forceinline__ int mb_q8_1_int(const block_q8_1* b, int i) {
    return reinterpret_cast<const int*>(b->qs)[i];
}

// Copies n words of V from global src to shared dst, thread t of nt taking words t, t+nt, ...
// with four independent loads in flight.
template <typename V>
static __device__ __forceinline__ void mb_stage_words(V* dst, const V* src, u32 n, u32 t, u32 nt) {
    u32 i = t;
    for (; i + 3 * nt < n; i += 4 * nt) {
        const V a = mb_ld(src + i);
        const V b = mb_ld(src + i + nt);
        const V c = mb_ld(src + i + 2 * nt);
        const V d = mb_ld(src + i + 3 * nt);
        dst[i] = a;
        dst[i + nt] = b;
        dst[i + 2 * nt] = c;
        dst[i + 3 * nt] = d;
    }
    for (; i < n; i += nt) dst[i] = mb_ld(src + i);
}

// Copies `bytes` bytes from global src to 16-byte aligned shared dst in the widest words that
// src's alignment and the length allow.
static __device__ __forceinline__ void mb_stage(void* dst, const u8* src, u32 bytes, u32 t, u32 nt) {
    const u64 a = reinterpret_cast<u64>(src) | bytes;
    if (a % 16 == 0) {
        mb_stage_words(static_cast<uint4*>(dst), reinterpret_cast<const uint4*>(src), bytes / 16, t, nt);
    } else if (a % 4 == 0) {
        mb_stage_words(static_cast<u32*>(dst), reinterpret_cast<const u32*>(src), bytes / 4, t, nt);
    } else if (a % 2 == 0) {
        mb_stage_words(static_cast<u16*>(dst), reinterpret_cast<const u16*>(src), bytes / 2, t, nt);
    } else {
        mb_stage_words(static_cast<u8*>(dst), src, bytes, t, nt);
    }
}

// Copies `bytes` bytes from global src to 16-byte aligned shared dst asynchronously (cp.async)
// in 16- or 4-byte words as src's alignment allows, thread t of nt taking words t, t+nt, ...;
// the bytes past the last whole word (a length that is not a word multiple: an MXFP4 row of
// 2880 values is 1530 bytes) are copied synchronously. Rows aligned to 2 or 1 bytes only are
// copied synchronously in 2- or 1-byte words, four loads in flight. The caller commits the group
// and waits for it.
static __device__ __forceinline__ void mb_stage_async(void* dst, const u8* src, u32 bytes, u32 t,
                                                      u32 nt) {
    const u64 s = reinterpret_cast<u64>(src);
    const u32 word = s % 16 == 0 ? 16 : s % 4 == 0 ? 4 : 0;
    if (word == 0) {  // four 2- or 1-byte loads in flight per thread
        if (s % 2 == 0 && bytes % 2 == 0) {
            mb_stage_words(static_cast<u16*>(dst), reinterpret_cast<const u16*>(src), bytes / 2, t, nt);
        } else {
            mb_stage_words(static_cast<u8*>(dst), src, bytes, t, nt);
        }
        return;
    }
    const u32 words = bytes / word;
    // Not unrolled: the copies are in flight without registers anyway.
    if (word == 16) {
#pragma unroll 1
        for (u32 i = t; i < words; i += nt) mb_cp_async<16>(static_cast<uint4*>(dst) + i, src + 16 * (u64)i);
    } else {
#pragma unroll 1
        for (u32 i = t; i < words; i += nt) mb_cp_async<4>(static_cast<u32*>(dst) + i, src + 4 * (u64)i);
    }
    for (u32 i = words * word + t; i < bytes; i += nt) static_cast<u8*>(dst)[i] = mb_ld(src + i);
}

// The double-buffered tile loop of the staging kernels (the GEMV and MoE rows below,
// attention.cu's KV tiles): issue(t) copies tile t into buffer t % 2 with cp.async and commits
// it as one group; compute(t) reads buffer t % 2. Per tile: issue t + 1, wait for tile t (this
// thread's copies), barrier (everyone's), compute, barrier (no one still reads the buffer tile
// t + 2 refills). Every thread of the block runs it (it holds barriers).
template <typename Issue, typename Compute>
static __device__ __forceinline__ void mb_tiles_pipelined(u32 ntiles, Issue issue,
                                                          Compute compute) {
    if (ntiles > 0) issue(0);
    for (u32 t = 0; t < ntiles; ++t) {
        if (t + 1 < ntiles) {
            issue(t + 1);
            mb_cp_async_wait<1>();
        } else {
            mb_cp_async_wait<0>();
        }
        __syncthreads();  // every thread's copies of tile t have landed
        compute(t);
        __syncthreads();  // no one still reads the buffer tile t + 2 refills
    }
}

// The dot products of this warp's row of each of NMAT matrices (wr[m]: the row's first byte)
// with one activation vector x of `cols` values, read in tiles staged through shared memory (see
// gemv.cu's header). Every warp of the block calls it with the same cols (it holds barriers); a
// warp with active == false only helps copy x. Writes the NMAT sums to out[] in every lane.
// Block-quantized types take the pipelined loop below where TILE_PIPE is 1 (the default).
// Q describes the weight type:
//   X               the activation element (block_q8_1, or float for F16/BF16)
//   BLOCK_VALUES    values per weight block, BLOCK_BYTES its bytes, X_PER_BLOCK its X elements
//   CHUNKS_PER_BLOCK the chunks one lane's dot() takes per block
//   TILE_BLOCKS     weight blocks per tile
//   STAGE_W         copy the row's tile to shared memory first (block-quantized types); else
//                   dot() reads the row from global memory itself (16-byte words, coalesced)
template <typename Q, u32 WARPS, int NMAT>
static __device__ __forceinline__ void mb_rows_dot_pipelined(const u8* const* wr, bool active,
                                                             const typename Q::X* __restrict__ x,
                                                             u32 cols, float* out);

template <typename Q, u32 WARPS, int NMAT>
static __device__ __forceinline__ void mb_rows_dot(const u8* const* wr, bool active,
                                                   const typename Q::X* __restrict__ x, u32 cols,
                                                   float* out) {
#if TILE_PIPE
    if constexpr (Q::STAGE_W) {
        mb_rows_dot_pipelined<Q, WARPS, NMAT>(wr, active, x, cols, out);
    } else
#endif
    {
        using X = typename Q::X;
        constexpr u32 W_TILE = Q::STAGE_W ? Q::TILE_BLOCKS * Q::BLOCK_BYTES : 16;
        constexpr u32 X_TILE = Q::TILE_BLOCKS * Q::X_PER_BLOCK * (u32)sizeof(X);
        static_assert(W_TILE % 16 == 0 && X_TILE % 16 == 0, "16-byte tiles");
        static_assert(NMAT * WARPS * W_TILE + X_TILE <= 48 * 1024, "static shared memory");
        __shared__ uint4 w_tile[NMAT][WARPS][W_TILE / 16];
        __shared__ uint4 x_tile[X_TILE / 16];

        const u32 warp = threadIdx.x / MB_WARP_SIZE;
        const u32 lane = threadIdx.x % MB_WARP_SIZE;
        const u32 nblocks = cols / Q::BLOCK_VALUES;
        const X* xt = reinterpret_cast<const X*>(x_tile);
        float acc[NMAT];
#pragma unroll
        for (int m = 0; m < NMAT; ++m) acc[m] = 0.0f;
        for (u32 b0 = 0; b0 < nblocks; b0 += Q::TILE_BLOCKS) {
            const u32 nb = nblocks - b0 < Q::TILE_BLOCKS ? nblocks - b0 : Q::TILE_BLOCKS;
            __syncthreads();  // every warp is done with the previous tile
            mb_stage(x_tile, reinterpret_cast<const u8*>(x + (u64)b0 * Q::X_PER_BLOCK),
                     nb * Q::X_PER_BLOCK * (u32)sizeof(X), threadIdx.x, blockDim.x);
            const u8* wt[NMAT];
#pragma unroll
            for (int m = 0; m < NMAT; ++m) {
                wt[m] = wr[m] + (u64)b0 * Q::BLOCK_BYTES;
                if (Q::STAGE_W) {
                    if (active) mb_stage(w_tile[m][warp], wt[m], nb * Q::BLOCK_BYTES, lane, MB_WARP_SIZE);
                    wt[m] = reinterpret_cast<const u8*>(w_tile[m][warp]);
                }
            }
            __syncthreads();
            if (active) {
                const u32 nchunks = nb * Q::CHUNKS_PER_BLOCK;
#pragma unroll 4
                for (u32 c = lane; c < nchunks; c += MB_WARP_SIZE) {
#pragma unroll
                    for (int m = 0; m < NMAT; ++m) acc[m] += Q::dot(wt[m], xt, c);
                }
            }
        }
#pragma unroll
        for (int m = 0; m < NMAT; ++m) out[m] = mb_warp_sum(acc[m]);
    }
}

// mb_rows_dot for block-quantized weights with the tiles double-buffered: tiles of half the
// blocks (the same shared memory as one full tile, so residency is unchanged), the next tile's
// copies issued with cp.async before this tile's dot products, so every warp keeps a tile's
// bytes in flight while it computes instead of alternating between loading and computing (on an
// H200 the single-buffered loop left under one eligible warp per scheduler, latency-bound), in
// mb_tiles_pipelined's order.
template <typename Q, u32 WARPS, int NMAT>
static __device__ __forceinline__ void mb_rows_dot_pipelined(const u8* const* wr, bool active,
                                                             const typename Q::X* __restrict__ x,
                                                             u32 cols, float* out) {
    using X = typename Q::X;
    constexpr u32 TB = Q::TILE_BLOCKS / 2;
    constexpr u32 W_TILE = TB * Q::BLOCK_BYTES;
    constexpr u32 X_TILE = TB * Q::X_PER_BLOCK * (u32)sizeof(X);
    static_assert(W_TILE % 16 == 0 && X_TILE % 16 == 0, "16-byte tiles");
    static_assert(2 * (NMAT * WARPS * W_TILE + X_TILE) <= 48 * 1024, "static shared memory");
    __shared__ uint4 w_tile[2][NMAT][WARPS][W_TILE / 16];
    __shared__ uint4 x_tile[2][X_TILE / 16];

    const u32 warp = threadIdx.x / MB_WARP_SIZE;
    const u32 lane = threadIdx.x % MB_WARP_SIZE;
    const u32 nblocks = cols / Q::BLOCK_VALUES;
    const u32 ntiles = (nblocks + TB - 1) / TB;
    // Issues tile t's copies (x by the block, each row by its warp) as one commit group.
    auto issue = [&](u32 t) {
        const u32 b0 = t * TB;
        const u32 nb = nblocks - b0 < TB ? nblocks - b0 : TB;
        mb_stage_async(x_tile[t % 2], reinterpret_cast<const u8*>(x + (u64)b0 * Q::X_PER_BLOCK),
                       nb * Q::X_PER_BLOCK * (u32)sizeof(X), threadIdx.x, blockDim.x);
        if (active) {
#pragma unroll
            for (int m = 0; m < NMAT; ++m) {
                mb_stage_async(w_tile[t % 2][m][warp], wr[m] + (u64)b0 * Q::BLOCK_BYTES,
                               nb * Q::BLOCK_BYTES, lane, MB_WARP_SIZE);
            }
        }
        mb_cp_async_commit();
    };
    float acc[NMAT];
#pragma unroll
    for (int m = 0; m < NMAT; ++m) acc[m] = 0.0f;
    mb_tiles_pipelined(ntiles, issue, [&](u32 t) {
        if (!active) return;
        const u32 nb = nblocks - t * TB < TB ? nblocks - t * TB : TB;
        const X* xt = reinterpret_cast<const X*>(x_tile[t % 2]);
        const u32 nchunks = nb * Q::CHUNKS_PER_BLOCK;
        // Two matrices (the MoE's gate and up): two dots per step, not unrolled (no spills).
#pragma unroll(NMAT == 1 ? 4 : 1)
        for (u32 c = lane; c < nchunks; c += MB_WARP_SIZE) {
#pragma unroll
            for (int m = 0; m < NMAT; ++m) {
                acc[m] += Q::dot(reinterpret_cast<const u8*>(w_tile[t % 2][m][warp]), xt, c);
            }
        }
    });
#pragma unroll
    for (int m = 0; m < NMAT; ++m) out[m] = mb_warp_sum(acc[m]);
}

// Block-quantized weights against Q8_1 blocks of x, rows staged through shared memory.
struct QuantTile {
    using X = block_q8_1;
    static constexpr bool STAGE_W = true;
};

// ---------------------------------------------------------------------------------------------
// Q8_0: chunk c = block c; sum_i d*q_i * d8*q8_i.
struct DotQ8_0 : QuantTile {
    static constexpr u32 BLOCK_VALUES = 32, BLOCK_BYTES = 34, CHUNKS_PER_BLOCK = 1;
    static constexpr u32 X_PER_BLOCK = BLOCK_VALUES / QK32, TILE_BLOCKS = 128;
    static __device__ __forceinline__ float dot(const u8* wr, const block_q8_1* xq, u32 c) {
        const block_q8_0* b = reinterpret_cast<const block_q8_0*>(wr) + c;
        const u8* qs = reinterpret_cast<const u8*>(b->qs);
        int v[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = mb_load_int_b2(qs + 4 * k);
        const block_q8_1* x = xq + c;
        int sumi = 0;
#pragma unroll
        for (int k = 0; k < 8; ++k) sumi = __dp4a(v[k], mb_q8_1_int(x, k), sumi);
        return mb_f16_to_f32(b->d) * mb_f16_to_f32(x->d) * (float)sumi;
    }
};


// ---------------------------------------------------------------------------------------------
// Q4_K: chunk c = super-block c/4, pair j = c%4: qs[32j .. 32j+32], low nibbles are sub-block
// 2j (values 64j..64j+32), high nibbles sub-block 2j+1. Value = d*sc*q - dmin*m, so
// sum = d*(sc0*d8_0*sumi0 + sc1*d8_1*sumi1) - dmin*(m0*s8_0 + m1*s8_1) with s8 = d8*sum(q8).

// ggml's get_scale_min_k4: 6-bit scale and min of sub-block j from the 12 packed bytes.
static __device__ __forceinline__ void mb_scale_min_k4(int j, const u8* s, int& sc, int& m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

struct DotQ4_K : QuantTile {
    static constexpr u32 BLOCK_VALUES = 256, BLOCK_BYTES = 144, CHUNKS_PER_BLOCK = 4;
    static constexpr u32 X_PER_BLOCK = BLOCK_VALUES / QK32, TILE_BLOCKS = 32;
    static __device__ __forceinline__ float dot(const u8* wr, const block_q8_1* xq, u32 c) {
        const u32 sb = c / 4;
        const int j = c % 4;
        const block_q4_K* b = reinterpret_cast<const block_q4_K*>(wr) + sb;
        // 144-byte blocks in a 16-byte aligned shared tile (144 = 9*16):
        // qs + 32j is 16-byte aligned.
        const int4* q4 = reinterpret_cast<const int4*>(b->qs + 32 * j);
        const int4 qa = q4[0];
        const int4 qb = q4[1];
        const int q[8] = {qa.x, qa.y, qa.z, qa.w, qb.x, qb.y, qb.z, qb.w};
        const block_q8_1* x0 = xq + (u64)sb * 8 + 2 * j;
        const block_q8_1* x1 = x0 + 1;
        int sumi0 = 0, sumi1 = 0;
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            sumi0 = __dp4a(q[k] & 0x0F0F0F0F, mb_q8_1_int(x0, k), sumi0);
            sumi1 = __dp4a((q[k] >> 4) & 0x0F0F0F0F, mb_q8_1_int(x1, k), sumi1);
        }
        int sc0, m0, sc1, m1;
        mb_scale_min_k4(2 * j, b->scales, sc0, m0);
        mb_scale_min_k4(2 * j + 1, b->scales, sc1, m1);
        const float d8_0 = mb_f16_to_f32(x0->d), d8_1 = mb_f16_to_f32(x1->d);
        const float s8_0 = mb_f16_to_f32(x0->s), s8_1 = mb_f16_to_f32(x1->s);
        const float d = mb_f16_to_f32(b->d), dmin = mb_f16_to_f32(b->dmin);
        return d * ((float)sc0 * d8_0 * (float)sumi0 + (float)sc1 * d8_1 * (float)sumi1) -
               dmin * ((float)m0 * s8_0 + (float)m1 * s8_1);
    }
};


// ---------------------------------------------------------------------------------------------
// Q6_K: chunk c = super-block c/4, half n = (c%4)/2, h = c%2. With l in 0..32, byte ql[64n+32h+l]
// and bits of qh[32n+l] give two values: group A = value 128n+32h+l (low nibble, qh bits 2h),
// group B = value 128n+64+32h+l (high nibble, qh bits 4+2h); q = 6-bit - 32. Scales (16 values
// each): A uses scales[8n+2h + l/16], B scales[8n+4+2h + l/16]. A is Q8_1 block 4n+h of the
// super-block, B block 4n+2+h.
struct DotQ6_K : QuantTile {
    static constexpr u32 BLOCK_VALUES = 256, BLOCK_BYTES = 210, CHUNKS_PER_BLOCK = 4;
    static constexpr u32 X_PER_BLOCK = BLOCK_VALUES / QK32, TILE_BLOCKS = 16;
    static __device__ __forceinline__ float dot(const u8* wr, const block_q8_1* xq, u32 c) {
        const u32 sb = c / 4;
        const int n = (c % 4) / 2;
        const int h = c % 2;
        const block_q6_K* b = reinterpret_cast<const block_q6_K*>(wr) + sb;
        const u8* ql = b->ql + 64 * n + 32 * h;
        const u8* qh = b->qh + 32 * n;
        const block_q8_1* xa = xq + (u64)sb * 8 + 4 * n + h;
        const block_q8_1* xb = xa + 2;
        int sa[2] = {0, 0}, sbm[2] = {0, 0};
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const int lo = mb_load_int_b2(ql + 4 * k);
            const int hi = mb_load_int_b2(qh + 4 * k);
            const int va = (lo & 0x0F0F0F0F) | (((hi >> (2 * h)) & 0x03030303) << 4);
            const int vb = ((lo >> 4) & 0x0F0F0F0F) | (((hi >> (4 + 2 * h)) & 0x03030303) << 4);
            // bytes are 0..63: subtract 32 per byte (no borrow across bytes).
            sa[k / 4] = __dp4a((int)__vsub4(va, 0x20202020), mb_q8_1_int(xa, k), sa[k / 4]);
            sbm[k / 4] = __dp4a((int)__vsub4(vb, 0x20202020), mb_q8_1_int(xb, k), sbm[k / 4]);
        }
        const i8* sc = b->scales + 8 * n + 2 * h;
        const float da = mb_f16_to_f32(xa->d), db = mb_f16_to_f32(xb->d);
        return mb_f16_to_f32(b->d) *
               (da * ((float)sc[0] * (float)sa[0] + (float)sc[1] * (float)sa[1]) +
                db * ((float)sc[4] * (float)sbm[0] + (float)sc[5] * (float)sbm[1]));
    }
};


// ---------------------------------------------------------------------------------------------
// MXFP4: chunk c = block c. Nibbles index ggml's kvalues_mxfp4 (E2M1 values doubled:
// 0 1 2 3 4 6 8 12, negated for 8..15) and the block scale is 2^(e-127) / 2.

// Four nibbles (one per byte, each 0..15) -> four int8 table values, via two byte permutes.
static __device__ __forceinline__ int mb_mxfp4_lookup(int v) {
    const u32 t0 = 0x03020100u;  //  0  1  2  3
    const u32 t1 = 0x0C080604u;  //  4  6  8 12
    const u32 t2 = 0xFDFEFF00u;  //  0 -1 -2 -3
    const u32 t3 = 0xF4F8FAFCu;  // -4 -6 -8 -12
    const u32 u = (u32)v;
    const u32 w = u | (u >> 4);
    const u32 sel = (w & 0xFFu) | ((w >> 8) & 0xFF00u);  // nibble k = index for byte k
    const u32 lo = __byte_perm(t0, t1, sel);            // uses the low 3 bits of each index
    const u32 hi = __byte_perm(t2, t3, sel);
    const u32 m = ((u & 0x08080808u) >> 3) * 0xFFu;     // 0xFF where the index is >= 8
    return (int)((lo & ~m) | (hi & m));
}

// ggml's GGML_E8M0_TO_FP32_HALF: 2^(e-128) as an f32 (denormal for e < 2).
static __device__ __forceinline__ float mb_e8m0_half(u8 e) {
    const u32 bits = e < 2 ? (0x00200000u << e) : ((u32)(e - 1) << 23);
    return __uint_as_float(bits);
}

struct DotMxfp4 : QuantTile {
    static constexpr u32 BLOCK_VALUES = 32, BLOCK_BYTES = 17, CHUNKS_PER_BLOCK = 1;
    static constexpr u32 X_PER_BLOCK = BLOCK_VALUES / QK32, TILE_BLOCKS = 256;
    static __device__ __forceinline__ float dot(const u8* wr, const block_q8_1* xq, u32 c) {
        const block_mxfp4* b = reinterpret_cast<const block_mxfp4*>(wr) + c;
        const block_q8_1* x = xq + c;
        int sumi = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const int q = mb_load_int_b1(b->qs + 4 * k);
            sumi = __dp4a(mb_mxfp4_lookup(q & 0x0F0F0F0F), mb_q8_1_int(x, k), sumi);
            sumi = __dp4a(mb_mxfp4_lookup((q >> 4) & 0x0F0F0F0F), mb_q8_1_int(x, k + 4), sumi);
        }
        return mb_e8m0_half(b->e) * mb_f16_to_f32(x->d) * (float)sumi;
    }
};


// ---------------------------------------------------------------------------------------------
// F16 / BF16 weights, f32 x.

struct CvtF16 {
    static __device__ __forceinline__ float cvt(u16 h) { return mb_f16_to_f32(h); }
};
struct CvtBF16 {
    static __device__ __forceinline__ float cvt(u16 h) { return mb_bf16_to_f32(h); }
};

template <typename C>
static __device__ __forceinline__ float mb_dot_pair(u32 packed, float a, float b) {
    return C::cvt((u16)(packed & 0xFFFFu)) * a + C::cvt((u16)(packed >> 16)) * b;
}

// 8 half weights (one 16-byte word of the row, read from global memory) against 8 x values
// from the shared x tile.
template <typename C>
struct DotHalf {
    using X = float;
    static constexpr bool STAGE_W = false;
    static constexpr u32 BLOCK_VALUES = 8, BLOCK_BYTES = 16, CHUNKS_PER_BLOCK = 1, X_PER_BLOCK = 8;
    static constexpr u32 TILE_BLOCKS = 256;
    static __device__ __forceinline__ float dot(const u8* wr, const float* xt, u32 c) {
        const uint4 q = mb_ld(reinterpret_cast<const uint4*>(wr) + c);
        const float4 xa = reinterpret_cast<const float4*>(xt)[2 * c];
        const float4 xb = reinterpret_cast<const float4*>(xt)[2 * c + 1];
        return mb_dot_pair<C>(q.x, xa.x, xa.y) + mb_dot_pair<C>(q.y, xa.z, xa.w) +
               mb_dot_pair<C>(q.z, xb.x, xb.y) + mb_dot_pair<C>(q.w, xb.z, xb.w);
    }
};

