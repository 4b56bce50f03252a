// attention.cu: decode attention (one new token's queries against `end` cached tokens) over a
// KV cache in any layout of membound_spec::attention, split over the context (flash-decoding).
//
// Layouts (host: membound_cuda::attention): q [n_heads][d_k] f32; the K cache
// [kv_heads][tokens][k_row_bytes] and the V cache [kv_heads][tokens][v_row_bytes], rows of
// F16, BF16 or ggml Q8_0 (34-byte blocks of 32); with ATTN_V_IN_K the V rows are the first d_v
// values of the K rows (MLA latent: no V cache). Query head h reads cached head h / group.
//
// mb_attn_<type>_w<width>[h<HW>]: grid (kv_heads * head_groups, splits), ceil(heads_per_block /
// HW) warps. The class (AttnWidth below) bounds the rows (K up to 64, 128, 256 or 576 values,
// V up to 64, 128, 256 or 512) and fixes how many query heads one warp takes (HW), so the work
// per token is unrolled to the row actually read: lane l owns the value pairs 2l + 64i, 2l + 64i
// + 1 of q, of each K and V row and of the accumulators, read as one 32-bit word per pair.
// Block (x, s) takes cached head x / head_groups, query heads [part * heads_per_block, ...) of
// its group (part = x % head_groups; warp w the HW heads from w * HW) and the tokens
// [first + s*chunk, first + (s+1)*chunk) ∩ [first, end). The block copies tiles of `tile`
// consecutive rows (one contiguous span per cache: head-major) to shared memory with 16-byte
// words consecutive across its threads. Each warp scores a tile's tokens for its HW heads at
// once: every K pair is read once for all of them, and the HW per-lane partial sums are reduced
// together (halves exchanged, then summed: 2 * HW - 1 + log2(32 / HW) shuffles instead of 5 * HW),
// the scores parked in shared memory. Then per head the online softmax (once per tile) and V:
// each V pair read once, added to all HW accumulators with the tile's probabilities.
// Two tile buffers: with TILE_PIPE=1 (the default, gemv_tile.cuh) the next tile's copies are
// issued with cp.async before this tile is scored, so the cache streams while the warps
// compute; TILE_PIPE=0 copies a tile, then computes on it.
// Each block writes its partial (max, sum, accumulator) per head.
// mb_attn_reduce: one block per query head merges the splits' partials (and the sink logit,
// which joins the denominator only) and writes the output (with ATTN_QUANT as Q8_1 blocks too,
// the output projection's input, so a decode step needs no quantization launch for it).

#include "common.cuh"
#include "params.cuh"
#include "quant_blocks.cuh"
#include "gemv_tile.cuh"

#define ATTN_MAX_TILE 32  // tokens per tile (one per lane)
// Blocks per SM the registers must allow (at most 128 per thread): without it NVRTC 13.5's ptxas
// capped the widest kernels at 80 registers and spilled.
#define ATTN_MIN_BLOCKS 2

// A class: NK (NV) value pairs of K (V) per lane, so rows up to 64 * NK (64 * NV) values; HW query
// heads per warp (a group smaller than HW leaves heads idle: the common widths come with fewer),
// at most WM warps per block, TB bytes per tile buffer (two of them).
// The host's twin is membound_cuda::attention::AttnWidth (the same numbers).
template <u32 NK_, u32 NV_, u32 HW_, u32 WM_, u32 TB_>
struct AttnWidth {
    static constexpr u32 NK = NK_, NV = NV_, HW = HW_, WM = WM_, TB = TB_;
    static_assert(32 % HW_ == 0 && TB_ % 16 == 0, "heads divide the warp, 16-byte tiles");
};
typedef AttnWidth<1, 1, 8, 1, 8 * 1024> AttnW64;     // gpt-oss (64)
typedef AttnWidth<2, 2, 8, 1, 8 * 1024> AttnW128;    // Qwen3, Llama-70B (128, groups of 8)
typedef AttnWidth<2, 2, 4, 2, 8 * 1024> AttnW128h4;  // Llama-8B, Mistral (groups of 4), Gemma-3
typedef AttnWidth<4, 4, 4, 2, 12 * 1024> AttnW256;   // Qwen3-Next (256, groups of 8)
typedef AttnWidth<4, 4, 1, 8, 12 * 1024> AttnW256h1; // expanded MLA (192/128, 256; one head each)
typedef AttnWidth<9, 8, 2, 8, 18 * 1024> AttnW576;   // MLA latent and split (576/512)

static __device__ __forceinline__ float mb_attn_neg_inf() { return __uint_as_float(0xff800000u); }

// Values e and e + 1 (e even) of a row in shared memory, per cache type; one 32-bit (F16, BF16)
// or 16-bit (Q8_0, with its block's scale) read.
struct KvF16 {
    static constexpr bool BF16 = false;
    static __device__ __forceinline__ float2 at2(const u8* row, u32 e) {
        const u32 w = *reinterpret_cast<const u32*>(row + 2 * e);
        return make_float2(mb_f16_to_f32((u16)(w & 0xffffu)), mb_f16_to_f32((u16)(w >> 16)));
    }
};
struct KvBF16 {
    static constexpr bool BF16 = true;
    static __device__ __forceinline__ float2 at2(const u8* row, u32 e) {
        const u32 w = *reinterpret_cast<const u32*>(row + 2 * e);
        return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
    }
};
struct KvQ8_0 {
    static __device__ __forceinline__ float2 at2(const u8* row, u32 e) {
        const u8* b = row + 34 * (e / 32);
        const float d = mb_f16_to_f32(reinterpret_cast<const u16*>(b)[0]);
        const u16 w = *reinterpret_cast<const u16*>(b + 2 + e % 32);
        return make_float2(d * (float)(i8)(w & 0xffu), d * (float)(i8)(w >> 8));
    }
};

// Sums each of a lane's HW values d[h] over the warp. Returns, in every lane, the total of head
// lane / (32 / HW): each step keeps half the heads and adds the partner's other half (lanes with
// bit o set keep the upper half), then the lanes that share a head sum it.
template <u32 HW>
static __device__ __forceinline__ float mb_warp_sum_heads(float (&d)[HW]) {
    const u32 lane = threadIdx.x % MB_WARP_SIZE;
#pragma unroll
    for (u32 n = HW, o = MB_WARP_SIZE / 2; n > 1; n /= 2, o /= 2) {
        const bool upper = (lane & o) != 0;
#pragma unroll
        for (u32 j = 0; j < n / 2; ++j) {
            const float keep = upper ? d[j + n / 2] : d[j];
            const float send = upper ? d[j] : d[j + n / 2];
            d[j] = keep + __shfl_xor_sync(MB_FULL_MASK, send, o);
        }
    }
    float v = d[0];
#pragma unroll
    for (u32 o = MB_WARP_SIZE / (2 * HW); o > 0; o /= 2) v += __shfl_xor_sync(MB_FULL_MASK, v, o);
    return v;
}

// One warp's online softmax over a staged tile of nt tokens for its HW heads: the scores
// (through sc, this warp's [ATTN_MAX_TILE][HW] floats), the running max m and sum l per head,
// the accumulators rescaled and V added.
template <typename T, typename W>
static __device__ __forceinline__ void mb_attn_tile(const u8* tile, u32 v_off, u32 nt,
                                                    const float2 (&qv)[W::HW][W::NK],
                                                    float2 (&acc)[W::HW][W::NV], float (&m)[W::HW],
                                                    float (&l)[W::HW], float (*sc)[W::HW],
                                                    bool v_in_k, const AttnParams& p) {
    constexpr u32 HW = W::HW;
    const u32 lane = threadIdx.x % MB_WARP_SIZE;
    for (u32 t = 0; t < nt; ++t) {
        const u8* row = tile + t * p.k_row_bytes;
        float d[HW];
#pragma unroll
        for (u32 h = 0; h < HW; ++h) d[h] = 0.0f;
#pragma unroll
        for (u32 i = 0; i < W::NK; ++i) {
            const u32 e = 2 * lane + 2 * MB_WARP_SIZE * i;
            if (e < p.d_k) {
                const float2 k = T::at2(row, e);
#pragma unroll
                for (u32 h = 0; h < HW; ++h) d[h] += qv[h][i].x * k.x + qv[h][i].y * k.y;
            }
        }
        const float s = mb_warp_sum_heads<HW>(d);
        if (lane % (MB_WARP_SIZE / HW) == 0) sc[t][lane / (MB_WARP_SIZE / HW)] = s;
    }
    __syncwarp();
    float a[HW];
#pragma unroll
    for (u32 h = 0; h < HW; ++h) {
        const float s = lane < nt ? sc[lane][h] : mb_attn_neg_inf();
        const float m_new = fmaxf(m[h], mb_warp_max(s));
        a[h] = expf(m[h] - m_new);  // 0 on the first tile (m = -inf)
        const float pr = lane < nt ? expf(s - m_new) : 0.0f;
        l[h] = l[h] * a[h] + mb_warp_sum(pr);
        m[h] = m_new;
        sc[lane][h] = pr;
    }
#pragma unroll
    for (u32 h = 0; h < HW; ++h) {
#pragma unroll
        for (u32 i = 0; i < W::NV; ++i) {
            acc[h][i].x *= a[h];
            acc[h][i].y *= a[h];
        }
    }
    __syncwarp();
    const u8* vt = v_in_k ? tile : tile + v_off;
    const u32 vb = v_in_k ? (u32)p.k_row_bytes : (u32)p.v_row_bytes;
    for (u32 t = 0; t < nt; ++t) {
        float pt[HW];
#pragma unroll
        for (u32 h = 0; h < HW; ++h) pt[h] = sc[t][h];
        const u8* row = vt + t * vb;
#pragma unroll
        for (u32 i = 0; i < W::NV; ++i) {
            const u32 e = 2 * lane + 2 * MB_WARP_SIZE * i;
            if (e < p.d_v) {
                const float2 v = T::at2(row, e);
#pragma unroll
                for (u32 h = 0; h < HW; ++h) {
                    acc[h][i].x += pt[h] * v.x;
                    acc[h][i].y += pt[h] * v.y;
                }
            }
        }
    }
    __syncwarp();  // sc is rewritten by the next tile's scores
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

// A block's share of the context: the tokens [first + split * chunk, ...) of [first, end) of
// cached head kvh, in tiles of p.tile rows copied to shared memory (mb_attn_stage; the V rows at
// v_off unless V is read from the K rows) and handed to compute(tile, rows, v_off) in order.
// With TILE_PIPE the two buffers alternate and the next tile's copies are in flight while this
// one is computed (mb_tiles_pipelined); else one buffer, copied then read.
template <typename Compute>
static __device__ __forceinline__ void mb_attn_span(const AttnParams& p, u32 kvh, u32 split,
                                                    bool v_in_k, const u8* __restrict__ kc,
                                                    const u8* __restrict__ vc, uint4* b0,
                                                    uint4* b1, Compute compute) {
    const u32 t_begin = p.first + split * p.chunk;
    const u32 t_end = t_begin + p.chunk < p.end ? t_begin + p.chunk : p.end;
    const u64 head_base = (u64)kvh * p.tokens;
    const u32 v_off = (p.tile * (u32)p.k_row_bytes + 15) / 16 * 16;
    const u32 ntiles = t_begin < t_end ? (t_end - t_begin + p.tile - 1) / p.tile : 0;
    auto stage = [&](u32 k, uint4* buf) {
        mb_attn_stage(k, t_begin, t_end, head_base, v_off, v_in_k, kc, vc, p, buf);
    };
    auto run = [&](u32 k, const uint4* buf) {
        compute(reinterpret_cast<const u8*>(buf), mb_attn_rows(k, t_begin, t_end, p.tile), v_off);
    };
#if TILE_PIPE
    mb_tiles_pipelined(
        ntiles, [&](u32 k) { stage(k, k % 2 ? b1 : b0); }, [&](u32 k) { run(k, k % 2 ? b1 : b0); });
#else
    (void)b1;
    for (u32 k = 0; k < ntiles; ++k) {
        __syncthreads();  // the previous tile is done
        stage(k, b0);
        __syncthreads();
        run(k, b0);
    }
#endif
}

template <typename T, typename W>
static __device__ __forceinline__ void mb_attn_split(const float* __restrict__ q,
                                                     const u8* __restrict__ kc,
                                                     const u8* __restrict__ vc,
                                                     float* __restrict__ part_ml,
                                                     float* __restrict__ part_acc,
                                                     const AttnParams& p) {
    constexpr u32 HW = W::HW;
    static_assert(2 * W::TB + W::WM * ATTN_MAX_TILE * HW * 4 <= 48 * 1024, "static shared memory");
    __shared__ uint4 tile_mem[2][W::TB / 16];
    __shared__ float scores[W::WM][ATTN_MAX_TILE][HW];
    const u32 warp = threadIdx.x / MB_WARP_SIZE;
    const u32 lane = threadIdx.x % MB_WARP_SIZE;
    const u32 kvh = blockIdx.x / p.head_groups;
    const u32 part = blockIdx.x % p.head_groups;
    const u32 first_in_block = warp * HW;  // this warp's first head within the block's
    const u32 split = blockIdx.y;
    const bool v_in_k = (p.flags & ATTN_V_IN_K) != 0;

    // Head h of this warp: in-group index part * heads_per_block + first_in_block + h, active
    // while within the block's heads and the group (inactive heads score zeros, never written).
    float2 qv[HW][W::NK];
    float2 acc[HW][W::NV];
    float m[HW], l[HW];
#pragma unroll
    for (u32 h = 0; h < HW; ++h) {
        const u32 in_block = first_in_block + h;
        const u32 in_group = part * p.heads_per_block + in_block;
        const bool on = in_block < p.heads_per_block && in_group < p.group;
        const u32 head = kvh * p.group + in_group;
#pragma unroll
        for (u32 i = 0; i < W::NK; ++i) {
            const u32 e = 2 * lane + 2 * MB_WARP_SIZE * i;
            if (on && e < p.d_k) {
                const float2 v = mb_ld(reinterpret_cast<const float2*>(q + (u64)head * p.d_k + e));
                qv[h][i] = make_float2(v.x * p.scale, v.y * p.scale);
            } else {
                qv[h][i] = make_float2(0.0f, 0.0f);
            }
        }
#pragma unroll
        for (u32 i = 0; i < W::NV; ++i) acc[h][i] = make_float2(0.0f, 0.0f);
        m[h] = mb_attn_neg_inf();
        l[h] = 0.0f;
    }

    mb_attn_span(p, kvh, split, v_in_k, kc, vc, tile_mem[0], tile_mem[1],
                 [&](const u8* tile, u32 nt, u32 v_off) {
                     mb_attn_tile<T, W>(tile, v_off, nt, qv, acc, m, l, scores[warp], v_in_k, p);
                 });
#pragma unroll
    for (u32 h = 0; h < HW; ++h) {
        const u32 in_block = first_in_block + h;
        const u32 in_group = part * p.heads_per_block + in_block;
        if (in_block >= p.heads_per_block || in_group >= p.group) continue;  // warp-uniform
        const u64 at = (u64)(kvh * p.group + in_group) * p.splits + split;
        if (lane == 0) {
            part_ml[2 * at] = m[h];
            part_ml[2 * at + 1] = l[h];
        }
#pragma unroll
        for (u32 i = 0; i < W::NV; ++i) {
            const u32 e = 2 * lane + 2 * MB_WARP_SIZE * i;
            if (e < p.d_v) *reinterpret_cast<float2*>(part_acc + at * p.d_v + e) = acc[h][i];
        }
    }
}

// The split kernels: one per cache type and class (written out: the host build finds
// kernels by their `extern "C" __global__` lines).
#define MB_ATTN_ARGS                                                                        \
    const float *__restrict__ q, const u8 *__restrict__ kc, const u8 *__restrict__ vc,      \
        float *__restrict__ part_ml, float *__restrict__ part_acc, AttnParams p

extern "C" __global__ void __launch_bounds__(AttnW64::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_f16_w64(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvF16, AttnW64>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW128::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_f16_w128(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvF16, AttnW128>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW128h4::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_f16_w128h4(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvF16, AttnW128h4>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW256::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_f16_w256(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvF16, AttnW256>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW256h1::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_f16_w256h1(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvF16, AttnW256h1>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW576::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_f16_w576(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvF16, AttnW576>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW64::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_bf16_w64(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvBF16, AttnW64>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW128::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_bf16_w128(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvBF16, AttnW128>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW128h4::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_bf16_w128h4(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvBF16, AttnW128h4>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW256::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_bf16_w256(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvBF16, AttnW256>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW256h1::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_bf16_w256h1(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvBF16, AttnW256h1>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW576::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_bf16_w576(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvBF16, AttnW576>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW64::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_q8_0_w64(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvQ8_0, AttnW64>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW128::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_q8_0_w128(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvQ8_0, AttnW128>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW128h4::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_q8_0_w128h4(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvQ8_0, AttnW128h4>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW256::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_q8_0_w256(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvQ8_0, AttnW256>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW256h1::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_q8_0_w256h1(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvQ8_0, AttnW256h1>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnW576::WM * MB_WARP_SIZE, ATTN_MIN_BLOCKS)
mb_attn_q8_0_w576(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_split<KvQ8_0, AttnW576>(q, kc, vc, part_ml, part_acc, p); }

// ---------------------------------------------------------------------------------------------
// The tensor-core split kernels (sm_80+): mb_attn_mma_<f16|bf16>_d<D>, for F16/BF16 caches with K
// and V rows of exactly D values and groups of up to 16 query heads (the host's
// membound_cuda::attention chooses them where MEMBOUND_ATTN_MMA=1). Grid (kv_heads, blocks of
// the split), ATTN_MMA_WARPS(D) warps; tiles of 16 tokens per warp, staged as above. Warp w of
// block y takes the tokens [16w, 16w + 16) of each tile and keeps its own online softmax: it
// writes split y * W + w of the partials (p.splits counts them all), so the reduction merges the
// warps too. Per 16 tokens: S = Q Kᵀ in two 16 x 8 tiles (A = the group's queries, heads as rows,
// scaled and rounded to 16 bits once; B = K rows read as pairs straight from shared memory), the
// softmax on the accumulators (a row's four lanes share its max and sum through two shuffles),
// then O += P V with P's accumulators reused as the A operand (FlashAttention-2's layout) and V
// read as pairs of tokens. Tokens past the tile's end score -inf and their V reads as 0.
#define ATTN_MMA_TOKENS 16

template <u32 D>
struct AttnMmaWidth {
    static constexpr u32 W = D == 64 ? 4 : 2;  // warps: a tile of 16 W tokens of K and V in 16 KiB
    static constexpr u32 TB = ATTN_MMA_TOKENS * W * 4 * D;
};

// The pieces both tensor-core kernels share. A warp's scores for 16 heads (rows) x 16 tokens sit
// in two accumulator tiles s[j] (tokens 8j..8j+7): lane (g, t) holds rows g (s[j][0..1]) and
// g + 8 (s[j][2..3]), tokens 8j + 2t and + 1.

// The queries of k-steps [k0, k0 + KS) as A fragments: row r's values from qrow(r) (scaled,
// rounded to 16 bits), zero where qrow(r) is null (no head).
template <bool BF, u32 KS, typename QRow>
static __device__ __forceinline__ void mb_mma_queries(u32 (&qa)[KS][4], u32 k0, float scale,
                                                      QRow qrow) {
    const u32 lane = threadIdx.x % MB_WARP_SIZE, g = lane / 4, t = lane % 4;
#pragma unroll
    for (u32 kk = 0; kk < KS; ++kk) {
#pragma unroll
        for (u32 r = 0; r < 4; ++r) {
            const u32 col = (k0 + kk) * 16 + 2 * t + 8 * (r / 2);
            const float* qh = qrow(g + 8 * (r % 2));
            const float x0 = qh ? mb_ld(qh + col) * scale : 0.0f;
            const float x1 = qh ? mb_ld(qh + col + 1) * scale : 0.0f;
            qa[kk][r] = mb_pack_half2<BF>(x0, x1);
        }
    }
}

// The online softmax over the 16 tokens, those from `valid` on masked: each row's max and sum
// (its four lanes meet through two shuffles), the accumulators o rescaled; s becomes P.
template <u32 NT>
static __device__ __forceinline__ void mb_mma_softmax(float (&s)[2][4], u32 valid, float (&m)[2],
                                                      float (&l)[2], float (&o)[NT][4]) {
    const u32 t = threadIdx.x % 4;
    float mx[2] = {mb_attn_neg_inf(), mb_attn_neg_inf()};
#pragma unroll
    for (u32 j = 0; j < 2; ++j) {
#pragma unroll
        for (u32 i = 0; i < 4; ++i) {
            if (j * 8 + 2 * t + i % 2 >= valid) s[j][i] = mb_attn_neg_inf();
            mx[i / 2] = fmaxf(mx[i / 2], s[j][i]);
        }
    }
    float a[2];
#pragma unroll
    for (u32 r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(MB_FULL_MASK, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(MB_FULL_MASK, mx[r], 2));
        const float m_new = fmaxf(m[r], mx[r]);
        a[r] = expf(m[r] - m_new);  // 0 on the first tokens (m = -inf)
        m[r] = m_new;
        l[r] *= a[r];
    }
#pragma unroll
    for (u32 j = 0; j < 2; ++j) {
#pragma unroll
        for (u32 i = 0; i < 4; ++i) {
            s[j][i] = expf(s[j][i] - m[i / 2]);
            l[i / 2] += s[j][i];
        }
    }
#pragma unroll
    for (u32 n = 0; n < NT; ++n) {
        o[n][0] *= a[0];
        o[n][1] *= a[0];
        o[n][2] *= a[1];
        o[n][3] *= a[1];
    }
}

// o += P V: P from the probabilities s (the A operand, straight from the accumulators:
// FlashAttention-2's layout), V the 16 rows from vt, `vstride` bytes apart (tokens from `valid`
// on read as 0), this warp's NT n-tiles of output values from dim0.
template <bool BF, u32 NT>
static __device__ __forceinline__ void mb_mma_pv(const float (&s)[2][4], const u8* vt, u32 vstride,
                                                 u32 valid, u32 dim0, float (&o)[NT][4]) {
    const u32 lane = threadIdx.x % MB_WARP_SIZE, g = lane / 4, t = lane % 4;
    const u32 pa[4] = {mb_pack_half2<BF>(s[0][0], s[0][1]), mb_pack_half2<BF>(s[0][2], s[0][3]),
                       mb_pack_half2<BF>(s[1][0], s[1][1]), mb_pack_half2<BF>(s[1][2], s[1][3])};
    // Rows of tokens 2t, 2t + 1, 2t + 8, 2t + 9.
    const u8* vr[4];
    bool vin[4];
#pragma unroll
    for (u32 i = 0; i < 4; ++i) {
        const u32 tok = 2 * t + (i % 2) + 8 * (i / 2);
        vin[i] = tok < valid;
        vr[i] = vt + (vin[i] ? tok : 0) * vstride;
    }
#pragma unroll
    for (u32 n = 0; n < NT; ++n) {
        const u32 dim = dim0 + n * 8 + g;
        u32 v16[4];
#pragma unroll
        for (u32 i = 0; i < 4; ++i) v16[i] = vin[i] ? (u32) reinterpret_cast<const u16*>(vr[i])[dim] : 0u;
        const u32 b[2] = {v16[0] | (v16[1] << 16), v16[2] | (v16[3] << 16)};
        mb_mma_16816<BF>(pa, b, o[n]);
    }
}

// Each row's sum over its four lanes, then the partials of rows g and g + 8: at(row) is the
// partial's index, or ~0 where the row is no head; the max and sum written where write_ml, the
// NT n-tiles of values from dim0.
template <u32 NT, typename At>
static __device__ __forceinline__ void mb_mma_store(const float (&m)[2], float (&l)[2],
                                                    const float (&o)[NT][4], At at, bool write_ml,
                                                    u32 dim0, float* __restrict__ part_ml,
                                                    float* __restrict__ part_acc, u32 d_v) {
    const u32 lane = threadIdx.x % MB_WARP_SIZE, g = lane / 4, t = lane % 4;
#pragma unroll
    for (u32 r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(MB_FULL_MASK, l[r], 1);
        l[r] += __shfl_xor_sync(MB_FULL_MASK, l[r], 2);
        const u64 i = at(g + 8 * r);
        if (i == ~(u64)0) continue;
        if (write_ml && t == 0) {
            part_ml[2 * i] = m[r];
            part_ml[2 * i + 1] = l[r];
        }
#pragma unroll
        for (u32 n = 0; n < NT; ++n) {
            *reinterpret_cast<float2*>(part_acc + i * d_v + dim0 + n * 8 + 2 * t) =
                make_float2(o[n][2 * r], o[n][2 * r + 1]);
        }
    }
}

template <typename T, u32 D>
static __device__ __forceinline__ void mb_attn_mma(const float* __restrict__ q,
                                                   const u8* __restrict__ kc,
                                                   const u8* __restrict__ vc,
                                                   float* __restrict__ part_ml,
                                                   float* __restrict__ part_acc,
                                                   const AttnParams& p) {
    constexpr bool BF = T::BF16;
    constexpr u32 W = AttnMmaWidth<D>::W, KS = D / 16, NT = D / 8;
    __shared__ uint4 tile_mem[2][AttnMmaWidth<D>::TB / 16];
    const u32 warp = threadIdx.x / MB_WARP_SIZE, lane = threadIdx.x % MB_WARP_SIZE;
    const u32 g = lane / 4, t = lane % 4;
    const u32 kvh = blockIdx.x;

    // The group's queries as A fragments (rows past the group: zero).
    u32 qa[KS][4];
    mb_mma_queries<BF, KS>(qa, 0, p.scale, [&](u32 row) -> const float* {
        return row < p.group ? q + (u64)(kvh * p.group + row) * p.d_k : nullptr;
    });
    float o[NT][4];
#pragma unroll
    for (u32 n = 0; n < NT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {mb_attn_neg_inf(), mb_attn_neg_inf()}, l[2] = {0.0f, 0.0f};

    mb_attn_span(p, kvh, blockIdx.y, false, kc, vc, tile_mem[0], tile_mem[1],
                 [&](const u8* tile, u32 nt, u32 v_off) {
        const u32 base = warp * ATTN_MMA_TOKENS;
        if (base >= nt) return;  // warp-uniform; no collective of the block follows
        float s[2][4];
#pragma unroll
        for (u32 j = 0; j < 2; ++j) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
            const u8* krow = tile + (base + j * 8 + g) * p.k_row_bytes;
#pragma unroll
            for (u32 kk = 0; kk < KS; ++kk) {
                const u32 b[2] = {*reinterpret_cast<const u32*>(krow + 2 * (kk * 16 + 2 * t)),
                                  *reinterpret_cast<const u32*>(krow + 2 * (kk * 16 + 8 + 2 * t))};
                mb_mma_16816<BF>(qa[kk], b, s[j]);
            }
        }
        mb_mma_softmax<NT>(s, nt - base, m, l, o);
        mb_mma_pv<BF, NT>(s, tile + v_off + base * p.v_row_bytes, (u32)p.v_row_bytes, nt - base, 0, o);
                 });
    mb_mma_store<NT>(m, l, o, [&](u32 row) -> u64 {
        return row < p.group ? (u64)(kvh * p.group + row) * p.splits + blockIdx.y * W + warp : ~(u64)0;
    }, true, 0, part_ml, part_acc, p.d_v);
}

extern "C" __global__ void __launch_bounds__(AttnMmaWidth<64>::W * MB_WARP_SIZE)
mb_attn_mma_f16_d64(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_mma<KvF16, 64>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnMmaWidth<128>::W * MB_WARP_SIZE)
mb_attn_mma_f16_d128(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_mma<KvF16, 128>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnMmaWidth<64>::W * MB_WARP_SIZE)
mb_attn_mma_bf16_d64(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_mma<KvBF16, 64>(q, kc, vc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(AttnMmaWidth<128>::W * MB_WARP_SIZE)
mb_attn_mma_bf16_d128(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_mma<KvBF16, 128>(q, kc, vc, part_ml, part_acc, p); }

// MLA latent on tensor cores: mb_attn_mma_mla_<f16|bf16>, K rows of 576 values whose first 512
// are V (llama.cpp's and FlashMLA's layout), query heads in blocks of up to 16 (head_groups per
// cached head, as the CUDA-core kernels split them). Four warps share each 16-token tile: warp w
// multiplies its quarter of the 576 dimensions (9 k-steps, its queries kept in registers) into
// a partial S, the four partials meet in shared memory, every warp then holds the whole S, runs
// the same online softmax and accumulates its quarter of the 512 output values (16 n-tiles).
// One partial per block: warp w writes values [128w, 128w + 128), warp 0 the max and sum.
#define ATTN_MLA_KD 576
#define ATTN_MLA_VD 512
#define ATTN_MLA_WARPS 4
#define ATTN_MLA_TB (ATTN_MMA_TOKENS * ATTN_MLA_KD * 2)

template <typename T>
static __device__ __forceinline__ void mb_attn_mma_mla(const float* __restrict__ q,
                                                       const u8* __restrict__ kc,
                                                       float* __restrict__ part_ml,
                                                       float* __restrict__ part_acc,
                                                       const AttnParams& p) {
    constexpr bool BF = T::BF16;
    constexpr u32 KS = ATTN_MLA_KD / 16 / ATTN_MLA_WARPS;  // k-steps per warp
    constexpr u32 NT = ATTN_MLA_VD / 8 / ATTN_MLA_WARPS;   // output n-tiles per warp
    constexpr u32 DW = ATTN_MLA_VD / ATTN_MLA_WARPS;       // output values per warp
    __shared__ uint4 tile_mem[2][ATTN_MLA_TB / 16];
    __shared__ float s_part[ATTN_MLA_WARPS][2][4][MB_WARP_SIZE];
    const u32 warp = threadIdx.x / MB_WARP_SIZE, lane = threadIdx.x % MB_WARP_SIZE;
    const u32 g = lane / 4, t = lane % 4;
    const u32 kvh = blockIdx.x / p.head_groups, part = blockIdx.x % p.head_groups;
    const u32 first_row = part * p.heads_per_block;  // the block's first head in the group
    auto head = [&](u32 row) -> u32 {  // the query head of block row `row`, or ~0
        return row < p.heads_per_block && first_row + row < p.group ? kvh * p.group + first_row + row
                                                                    : ~0u;
    };

    u32 qa[KS][4];
    mb_mma_queries<BF, KS>(qa, warp * KS, p.scale, [&](u32 row) -> const float* {
        return head(row) != ~0u ? q + (u64)head(row) * p.d_k : nullptr;
    });
    float o[NT][4];
#pragma unroll
    for (u32 n = 0; n < NT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {mb_attn_neg_inf(), mb_attn_neg_inf()}, l[2] = {0.0f, 0.0f};

    // V is read from the K rows: no V cache, no V offset.
    mb_attn_span(p, kvh, blockIdx.y, true, kc, kc, tile_mem[0], tile_mem[1],
                 [&](const u8* tile, u32 nt, u32) {
        // This warp's quarter of S, into shared memory; then every warp sums the four.
        float s[2][4];
#pragma unroll
        for (u32 j = 0; j < 2; ++j) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
            const u8* krow = tile + (j * 8 + g) * p.k_row_bytes;
#pragma unroll
            for (u32 kk = 0; kk < KS; ++kk) {
                const u32 d0 = (warp * KS + kk) * 16 + 2 * t;
                const u32 b[2] = {*reinterpret_cast<const u32*>(krow + 2 * d0),
                                  *reinterpret_cast<const u32*>(krow + 2 * (d0 + 8))};
                mb_mma_16816<BF>(qa[kk], b, s[j]);
            }
#pragma unroll
            for (u32 i = 0; i < 4; ++i) s_part[warp][j][i][lane] = s[j][i];
        }
        __syncthreads();
#pragma unroll
        for (u32 j = 0; j < 2; ++j) {
#pragma unroll
            for (u32 i = 0; i < 4; ++i) {
                float v = 0.0f;
#pragma unroll
                for (u32 w = 0; w < ATTN_MLA_WARPS; ++w) v += s_part[w][j][i][lane];
                s[j][i] = v;
            }
        }
        mb_mma_softmax<NT>(s, nt, m, l, o);
        // V = the first 512 values of the K rows; this warp's quarter of them.
        mb_mma_pv<BF, NT>(s, tile, (u32)p.k_row_bytes, nt, warp * DW, o);
        // s_part is rewritten by the next tile only after the tile loop's barrier.
                 });
    mb_mma_store<NT>(m, l, o, [&](u32 row) -> u64 {
        return head(row) != ~0u ? (u64)head(row) * p.splits + blockIdx.y : ~(u64)0;
    }, warp == 0, warp * DW, part_ml, part_acc, p.d_v);
}

extern "C" __global__ void __launch_bounds__(ATTN_MLA_WARPS * MB_WARP_SIZE)
mb_attn_mma_mla_f16(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_mma_mla<KvF16>(q, kc, part_ml, part_acc, p); }

extern "C" __global__ void __launch_bounds__(ATTN_MLA_WARPS * MB_WARP_SIZE)
mb_attn_mma_mla_bf16(MB_ATTN_ARGS) { mb_grid_begin(); mb_attn_mma_mla<KvBF16>(q, kc, part_ml, part_acc, p); }

// ---------------------------------------------------------------------------------------------
// The reduction: grid (n_heads, ceil(d_v / 32)), ATTN_REDUCE_WARPS warps. Block (h, c) merges
// query head h's splits (and its sink logit, which joins the denominator only) for the output
// values [32c, 32c + 32): the largest partial max m, each split's weight exp(m_s - m) once in
// shared memory with the denominator, then warp w adds splits w, w + WARPS, ... (lane: one value,
// so each split's 32 values are one coalesced read), the warps' sums merged through shared memory.
#define ATTN_REDUCE_WARPS 8
#define ATTN_MAX_SPLITS 1024  // splits at most (checked by the host)

// The block-wide max (op 0) or sum (op 1) of v; every thread gets it. `red` holds one value per
// warp and is free again when this returns.
static __device__ __forceinline__ float mb_attn_block_reduce(float v, bool sum, float* red) {
    const u32 warp = threadIdx.x / MB_WARP_SIZE, lane = threadIdx.x % MB_WARP_SIZE;
    v = sum ? mb_warp_sum(v) : mb_warp_max(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float r = red[0];
    for (u32 w = 1; w < ATTN_REDUCE_WARPS; ++w) r = sum ? r + red[w] : fmaxf(r, red[w]);
    __syncthreads();  // red is reused
    return r;
}

extern "C" __global__ void __launch_bounds__(ATTN_REDUCE_WARPS * MB_WARP_SIZE)
mb_attn_reduce(const float* __restrict__ part_ml, const float* __restrict__ part_acc,
               const float* __restrict__ sinks, float* __restrict__ out,
               block_q8_1* __restrict__ outq, AttnParams p) {
    mb_grid_begin();
    __shared__ float weights[ATTN_MAX_SPLITS];
    __shared__ float red[ATTN_REDUCE_WARPS];
    __shared__ float sums[ATTN_REDUCE_WARPS][MB_WARP_SIZE];
    const u32 warp = threadIdx.x / MB_WARP_SIZE, lane = threadIdx.x % MB_WARP_SIZE;
    const u32 head = blockIdx.x;
    const u64 base = (u64)head * p.splits;
    const float sink = (p.flags & ATTN_SINKS) ? mb_ld(sinks + head) : mb_attn_neg_inf();
    float mx = sink;
    for (u32 s = threadIdx.x; s < p.splits; s += blockDim.x) mx = fmaxf(mx, mb_ld(part_ml + 2 * (base + s)));
    const float m = mb_attn_block_reduce(mx, false, red);
    float den = 0.0f;
    for (u32 s = threadIdx.x; s < p.splits; s += blockDim.x) {
        const float ms = mb_ld(part_ml + 2 * (base + s));
        const float w = ms == mb_attn_neg_inf() ? 0.0f : expf(ms - m);
        weights[s] = w;
        den += w * mb_ld(part_ml + 2 * (base + s) + 1);
    }
    den = mb_attn_block_reduce(den, true, red);  // its barriers also publish `weights`
    if (m != mb_attn_neg_inf()) den += expf(sink - m);
    const u32 e = blockIdx.y * MB_WARP_SIZE + lane;
    float o = 0.0f;
    if (e < p.d_v) {
        for (u32 s = warp; s < p.splits; s += ATTN_REDUCE_WARPS) {
            o += weights[s] * mb_ld(part_acc + (base + s) * p.d_v + e);
        }
    }
    sums[warp][lane] = o;
    __syncthreads();
    if (warp == 0 && e < p.d_v) {  // with ATTN_QUANT d_v % 32 == 0: the whole warp
        float t = 0.0f;
        for (u32 w = 0; w < ATTN_REDUCE_WARPS; ++w) t += sums[w][lane];
        const float r = den > 0.0f ? t / den : 0.0f;
        out[(u64)head * p.d_v + e] = r;
        if (p.flags & ATTN_QUANT) mb_q8_1_store_warp(outq + ((u64)head * p.d_v + e) / QK32, r, (int)lane);
    }
}
