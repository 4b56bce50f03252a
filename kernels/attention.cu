// attention.cu: decode attention (one new token's queries against `end` cached tokens) over a
// KV cache in any layout of membound_spec::attention, split over the context (flash-decoding).
//
// Layouts (host: membound_cuda::attention): q [n_heads][d_k] f32; the K cache
// [kv_heads][tokens][k_row_bytes] and the V cache [kv_heads][tokens][v_row_bytes], rows of
// F16, BF16 or ggml Q8_0 (34-byte blocks of 32); with ATTN_V_IN_K the V rows are the first d_v
// values of the K rows (MLA latent: no V cache). Query head h reads cached head h / group.
//
// mb_attn_<type>: grid (kv_heads * head_groups, splits), ATTN_WARPS(p) = heads_per_block warps.
// Block (x, s) takes cached head x / head_groups, query heads of group part x % head_groups (one
// warp each) and the tokens [first + s*chunk, first + (s+1)*chunk) ∩ [first, end). The block
// copies tiles of `tile` consecutive rows (one contiguous span per cache: head-major) to shared
// memory with 16-byte words consecutive across its threads, then each warp scores the tile's
// tokens for its head (lane l holds q values l, l+32, ...; a warp sum per token), updates its
// online softmax once per tile, and accumulates V (lane l owns output values l, l+32, ...).
// Two tile buffers of ATTN_TILE_BYTES: with TILE_PIPE=1 (the default, gemv_tile.cuh) the next
// tile's copies are issued with cp.async before this tile is scored, so the cache streams while
// the warps compute; TILE_PIPE=0 copies a tile, then computes on it.
// Each block writes its partial (max, sum, accumulator) per head.
// mb_attn_reduce: one block per query head merges the splits' partials (and the sink logit,
// which joins the denominator only) and writes the output.

#include "common.cuh"
#include "params.cuh"
#include "gemv_tile.cuh"

#define ATTN_MAX_HG 8                  // query heads (warps) per block (16 spills on sm_120 at 128 registers)
#define ATTN_MAX_DK 576                // values of a K row
#define ATTN_MAX_DV 512                // values of a V row
#define ATTN_TILE_BYTES (18 * 1024)    // shared memory for one tile of K and V rows (two buffers)
#define ATTN_MAX_TILE 32               // tokens per tile (one per lane)
// Blocks per SM the registers must allow (at most 128 per thread): without it NVRTC 13.5's ptxas
// capped the F16/BF16 kernels at 80 registers and spilled.
#define ATTN_MIN_BLOCKS 2

static __device__ __forceinline__ float mb_attn_neg_inf() { return __uint_as_float(0xff800000u); }

// Element e of a row in shared memory, per cache type.
struct KvF16 {
    static __device__ __forceinline__ float at(const u8* row, u32 e) {
        return mb_f16_to_f32(reinterpret_cast<const u16*>(row)[e]);
    }
};
struct KvBF16 {
    static __device__ __forceinline__ float at(const u8* row, u32 e) {
        return mb_bf16_to_f32(reinterpret_cast<const u16*>(row)[e]);
    }
};
struct KvQ8_0 {
    static __device__ __forceinline__ float at(const u8* row, u32 e) {
        const u8* b = row + 34 * (e / 32);
        return mb_f16_to_f32(reinterpret_cast<const u16*>(b)[0]) * (float)(i8)b[2 + e % 32];
    }
};

// One warp's online softmax over a staged tile of nt tokens: scores against qv (lane t keeps
// token t's), the running max m and sum l, the accumulator rescaled and V added.
template <typename T>
static __device__ __forceinline__ void mb_attn_tile(const u8* tile, u32 v_off, u32 nt,
                                                    const float* qv, float* acc, float& m,
                                                    float& l, bool v_in_k, const AttnParams& p) {
    const u32 lane = threadIdx.x % MB_WARP_SIZE;
    float s = mb_attn_neg_inf();
    for (u32 t = 0; t < nt; ++t) {
        const u8* row = tile + t * p.k_row_bytes;
        float d = 0.0f;
#pragma unroll
        for (u32 i = 0; i < ATTN_MAX_DK / MB_WARP_SIZE; ++i) {
            const u32 e = lane + MB_WARP_SIZE * i;
            if (e < p.d_k) d += qv[i] * T::at(row, e);
        }
        d = mb_warp_sum(d);
        if (lane == t) s = d;
    }
    const float m_new = fmaxf(m, mb_warp_max(s));
    const float a = expf(m - m_new);  // 0 on the first tile (m = -inf)
    const float pr = lane < nt ? expf(s - m_new) : 0.0f;
    l = l * a + mb_warp_sum(pr);
    m = m_new;
#pragma unroll
    for (u32 i = 0; i < ATTN_MAX_DV / MB_WARP_SIZE; ++i) acc[i] *= a;
    const u8* vt = v_in_k ? tile : tile + v_off;
    const u32 vb = v_in_k ? (u32)p.k_row_bytes : (u32)p.v_row_bytes;
    for (u32 t = 0; t < nt; ++t) {
        const float pt = __shfl_sync(MB_FULL_MASK, pr, t);
        const u8* row = vt + t * vb;
#pragma unroll
        for (u32 i = 0; i < ATTN_MAX_DV / MB_WARP_SIZE; ++i) {
            const u32 e = lane + MB_WARP_SIZE * i;
            if (e < p.d_v) acc[i] += pt * T::at(row, e);
        }
    }
}

// Rows of tile k of the span [t_begin, t_end) in tiles of `tile`.
static __device__ __forceinline__ u32 mb_attn_rows(u32 k, u32 t_begin, u32 t_end, u32 tile) {
    const u32 t0 = t_begin + k * tile;
    return t_end - t0 < tile ? t_end - t0 : tile;
}

// Copies tile k's K rows (and V rows at v_off, unless V is read from the K rows) into `buf`:
// with TILE_PIPE as one cp.async group (the caller waits), else synchronously.
static __device__ __forceinline__ void mb_attn_stage(u32 k, u32 t_begin, u32 t_end, u64 head_base,
                                                     u32 v_off, bool v_in_k,
                                                     const u8* __restrict__ kc,
                                                     const u8* __restrict__ vc,
                                                     const AttnParams& p, uint4* buf) {
    const u32 t0 = t_begin + k * p.tile, nt = mb_attn_rows(k, t_begin, t_end, p.tile);
    u8* tile = reinterpret_cast<u8*>(buf);
    const u8* ks = kc + (head_base + t0) * p.k_row_bytes;
    const u8* vs = vc + (head_base + t0) * p.v_row_bytes;
#if TILE_PIPE
    mb_stage_async(tile, ks, nt * (u32)p.k_row_bytes, threadIdx.x, blockDim.x);
    if (!v_in_k) mb_stage_async(tile + v_off, vs, nt * (u32)p.v_row_bytes, threadIdx.x, blockDim.x);
    mb_cp_async_commit();
#else
    mb_stage(tile, ks, nt * (u32)p.k_row_bytes, threadIdx.x, blockDim.x);
    if (!v_in_k) mb_stage(tile + v_off, vs, nt * (u32)p.v_row_bytes, threadIdx.x, blockDim.x);
#endif
}

template <typename T>
static __device__ __forceinline__ void mb_attn_split(const float* __restrict__ q,
                                                     const u8* __restrict__ kc,
                                                     const u8* __restrict__ vc,
                                                     float* __restrict__ part_ml,
                                                     float* __restrict__ part_acc,
                                                     const AttnParams& p) {
    __shared__ uint4 tile_mem[2][ATTN_TILE_BYTES / 16];
    const u32 warp = threadIdx.x / MB_WARP_SIZE;
    const u32 lane = threadIdx.x % MB_WARP_SIZE;
    const u32 kvh = blockIdx.x / p.head_groups;
    const u32 part = blockIdx.x % p.head_groups;
    const u32 in_group = part * p.heads_per_block + warp;
    const bool active = in_group < p.group;  // warp-uniform
    const u32 head = kvh * p.group + (active ? in_group : 0);
    const u32 split = blockIdx.y;
    const bool v_in_k = (p.flags & ATTN_V_IN_K) != 0;

    float qv[ATTN_MAX_DK / MB_WARP_SIZE];
#pragma unroll
    for (u32 i = 0; i < ATTN_MAX_DK / MB_WARP_SIZE; ++i) {
        const u32 e = lane + MB_WARP_SIZE * i;
        qv[i] = e < p.d_k ? mb_ld(q + (u64)head * p.d_k + e) * p.scale : 0.0f;
    }
    float acc[ATTN_MAX_DV / MB_WARP_SIZE];
#pragma unroll
    for (u32 i = 0; i < ATTN_MAX_DV / MB_WARP_SIZE; ++i) acc[i] = 0.0f;
    float m = mb_attn_neg_inf(), l = 0.0f;

    const u32 t_begin = p.first + split * p.chunk;
    const u32 t_end = t_begin + p.chunk < p.end ? t_begin + p.chunk : p.end;
    const u64 head_base = (u64)kvh * p.tokens;
    const u32 v_off = (p.tile * (u32)p.k_row_bytes + 15) / 16 * 16;
    const u32 ntiles = t_begin < t_end ? (t_end - t_begin + p.tile - 1) / p.tile : 0;
#if TILE_PIPE
    mb_tiles_pipelined(
        ntiles,
        [&](u32 k) {
            mb_attn_stage(k, t_begin, t_end, head_base, v_off, v_in_k, kc, vc, p, tile_mem[k % 2]);
        },
        [&](u32 k) {
            if (!active) return;
            mb_attn_tile<T>(reinterpret_cast<const u8*>(tile_mem[k % 2]), v_off,
                            mb_attn_rows(k, t_begin, t_end, p.tile), qv, acc, m, l, v_in_k, p);
        });
#else
    for (u32 k = 0; k < ntiles; ++k) {
        __syncthreads();  // the previous tile is done
        mb_attn_stage(k, t_begin, t_end, head_base, v_off, v_in_k, kc, vc, p, tile_mem[0]);
        __syncthreads();
        if (active) {
            mb_attn_tile<T>(reinterpret_cast<const u8*>(tile_mem[0]), v_off,
                            mb_attn_rows(k, t_begin, t_end, p.tile), qv, acc, m, l, v_in_k, p);
        }
    }
#endif
    if (!active) return;
    const u64 at = (u64)head * p.splits + split;
    if (lane == 0) {
        part_ml[2 * at] = m;
        part_ml[2 * at + 1] = l;
    }
#pragma unroll
    for (u32 i = 0; i < ATTN_MAX_DV / MB_WARP_SIZE; ++i) {
        const u32 e = lane + MB_WARP_SIZE * i;
        if (e < p.d_v) part_acc[at * p.d_v + e] = acc[i];
    }
}

extern "C" __global__ void __launch_bounds__(ATTN_MAX_HG * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_f16(const float* __restrict__ q, const u8* __restrict__ kc, const u8* __restrict__ vc,
            float* __restrict__ part_ml, float* __restrict__ part_acc, AttnParams p) {
    mb_attn_split<KvF16>(q, kc, vc, part_ml, part_acc, p);
}

extern "C" __global__ void __launch_bounds__(ATTN_MAX_HG * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_bf16(const float* __restrict__ q, const u8* __restrict__ kc, const u8* __restrict__ vc,
             float* __restrict__ part_ml, float* __restrict__ part_acc, AttnParams p) {
    mb_attn_split<KvBF16>(q, kc, vc, part_ml, part_acc, p);
}

extern "C" __global__ void __launch_bounds__(ATTN_MAX_HG * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_q8_0(const float* __restrict__ q, const u8* __restrict__ kc, const u8* __restrict__ vc,
             float* __restrict__ part_ml, float* __restrict__ part_acc, AttnParams p) {
    mb_attn_split<KvQ8_0>(q, kc, vc, part_ml, part_acc, p);
}

// ---------------------------------------------------------------------------------------------
// One block per query head: merge the splits (and the sink) and normalise.
extern "C" __global__ void __launch_bounds__(128)
mb_attn_reduce(const float* __restrict__ part_ml, const float* __restrict__ part_acc,
               const float* __restrict__ sinks, float* __restrict__ out, AttnParams p) {
    const u32 head = blockIdx.x;
    const u64 base = (u64)head * p.splits;
    const float sink = (p.flags & ATTN_SINKS) ? mb_ld(sinks + head) : mb_attn_neg_inf();
    float m = sink;
    for (u32 s = 0; s < p.splits; ++s) m = fmaxf(m, mb_ld(part_ml + 2 * (base + s)));
    float den = m == mb_attn_neg_inf() ? 0.0f : expf(sink - m);
    for (u32 s = 0; s < p.splits; ++s) {
        const float ms = mb_ld(part_ml + 2 * (base + s));
        if (ms != mb_attn_neg_inf()) den += expf(ms - m) * mb_ld(part_ml + 2 * (base + s) + 1);
    }
    const float inv = den > 0.0f ? 1.0f / den : 0.0f;
    for (u32 e = threadIdx.x; e < p.d_v; e += blockDim.x) {
        float o = 0.0f;
        for (u32 s = 0; s < p.splits; ++s) {
            const float ms = mb_ld(part_ml + 2 * (base + s));
            if (ms != mb_attn_neg_inf()) o += expf(ms - m) * mb_ld(part_acc + (base + s) * p.d_v + e);
        }
        out[(u64)head * p.d_v + e] = o * inv;
    }
}
