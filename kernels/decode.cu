// decode.cu: the small steps between a decode step's matrix products (membound-decode's
// ops.rs is their CPU reference):
//   mb_dec_rmsnorm   out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, rows r of n values (the
//                    hidden state: 1 row; per-head QK-norm: heads rows); in place allowed; with
//                    DEC_QUANT also as Q8_1 blocks (the next GEMV's input)
//   mb_dec_rope      rotates `dims` values from value `n` of each of `rows` heads (`head` apart)
//                    for position `pos`: pairs (i, i + dims/2) with DEC_NEOX, else (2i, 2i + 1),
//                    angle pos * theta^(-2i/dims) in f64 reduced modulo 2*pi, sine in f32
//   mb_dec_copy2d    dst[r * dims + tokens + i] = src[r * head + pos + i], rows r of n values
//                    (MLA: a head's parts gathered into its query, the latent row assembled)
//   mb_dec_add       x[i] += y[i]
//   mb_dec_glu       g[i] = silu(g[i]) * u[i] (DEC_GELU: gelu_tanh(g[i]) * u[i], DEC_SIGMOID:
//                    sigmoid(g[i]) * u[i], Qwen3-Next's gated attention output); with
//                    DEC_QUANT also as Q8_1 blocks
//   mb_dec_kv_write  token `pos` of a head-major cache ([rows][tokens][n] of `dtype`): head h's
//                    n values from src + h * head, stored as f32, f16, bf16 or ggml Q8_0
//   mb_dec_qkv_heads a GQA layer's heads after the Q/K/V projections in one launch: biases,
//                    per-head QK-norm, RoPE of the query and K heads, the K and V cache rows of
//                    token `pos` (what bias adds, rmsnorm, rope and kv_write do in six launches)
//   mb_dec_argmax    the index of the largest of n values (the first of equals; NaN never wins)
//   mb_dec_delta_conv Gated DeltaNet's causal depthwise convolution of `dims` taps over n
//                    channels, then SiLU: x[c] = silu(w[c][dims-1] * in[c] + sum_t w[c][t] *
//                    hist[t][c]); hist_out holds the last dims - 1 inputs (oldest first)
//   mb_dec_delta_rule the gated delta rule of one token (membound_decode::delta is the CPU
//                    reference): value head j (of rows) uses key head j / (rows / head); q and
//                    k (n values per head) L2-normed, q scaled by 1/sqrt(n); the state of each
//                    head (dims rows of n) decayed, updated with (v - S k) beta along k, and
//                    o = S q; reads s_in, writes s_out (read once, written once)
//
// Launch geometry (host: membound_cuda::decode): rmsnorm one block of DEC_BLOCK threads per
// row; argmax one block; kv_write one warp per 32 values of each head (a Q8_0 block); qkv_heads
// one warp per head (query, K, V heads in turn); the
// element-wise kernels one thread per element (rope: per pair), grid = ceil(count / DEC_BLOCK);
// delta_conv one thread per channel; delta_rule grid (ceil(dims / DELTA_ROWS), value heads),
// one warp per state row (its lanes on consecutive values: coalesced), DELTA_WARPS warps.

#include "common.cuh"
#include "params.cuh"
#include "quant_blocks.cuh"

#define DEC_BLOCK 256

static __device__ __forceinline__ u64 mb_dec_tid() {
    return (u64)blockIdx.x * blockDim.x + threadIdx.x;
}

// The sum of v over the block (every thread gets it); `scratch` holds 32 floats.
static __device__ __forceinline__ float mb_dec_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % MB_WARP_SIZE;
    const int warp = threadIdx.x / MB_WARP_SIZE;
    v = mb_warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < (int)(blockDim.x / MB_WARP_SIZE) ? scratch[lane] : 0.0f;
        s = mb_warp_sum(s);
        if (lane == 0) scratch[0] = s;
    }
    __syncthreads();
    return scratch[0];
}

extern "C" __global__ void __launch_bounds__(DEC_BLOCK)
mb_dec_rmsnorm(const float* x, const float* __restrict__ w, float* out,
               block_q8_1* __restrict__ outq, DecodeParams p) {
    mb_grid_begin();
    __shared__ float scratch[32];
    const u64 row = blockIdx.x;
    const float* xr = x + row * p.n;
    float ss = 0.0f;
    for (u32 i = threadIdx.x; i < p.n; i += blockDim.x) {
        const float v = mb_ld(xr + i);
        ss += v * v;
    }
    const float inv = 1.0f / sqrtf(mb_dec_block_sum(ss, scratch) / (float)p.n + p.eps);
    if (p.flags & DEC_QUANT) {
        // A warp per 32 values: each writes its values and their Q8_1 block.
        const u32 lane = threadIdx.x % MB_WARP_SIZE, warps = blockDim.x / MB_WARP_SIZE;
        const u32 blocks = p.n / QK32;
        for (u32 b = threadIdx.x / MB_WARP_SIZE; b < blocks; b += warps) {
            const u32 i = b * QK32 + lane;
            const float h = mb_ld(xr + i) * inv * mb_ld(w + i);
            out[row * p.n + i] = h;
            mb_q8_1_store_warp(outq + row * blocks + b, h, (int)lane);
        }
        return;
    }
    for (u32 i = threadIdx.x; i < p.n; i += blockDim.x) {
        out[row * p.n + i] = mb_ld(xr + i) * inv * mb_ld(w + i);
    }
}

// The angle of RoPE pair i of `dims` rotated values at position pos, as its sine and cosine:
// the angle in f64, reduced modulo 2*pi before the f32 sine (an f32 product loses 1e-4 rad by
// position 4096 and 1e-2 by 256k; llama.cpp's CUDA rope keeps that error).
static __device__ __forceinline__ void mb_rope_sincos(u32 pos, float theta, u32 i, u32 dims,
                                                      float* s, float* c) {
    const double turn = (double)pos * pow((double)theta, -2.0 * (double)i / (double)dims);
    const float angle = (float)fmod(turn, 6.283185307179586);
    *s = sinf(angle);
    *c = cosf(angle);
}

// The two values of RoPE pair i of `dims`: (i, i + dims/2) with DEC_NEOX, else (2i, 2i + 1).
static __device__ __forceinline__ void mb_rope_pair(u32 i, u32 dims, u32 flags, u32* a, u32* b) {
    *a = (flags & DEC_NEOX) ? i : 2 * i;
    *b = (flags & DEC_NEOX) ? i + dims / 2 : 2 * i + 1;
}

extern "C" __global__ void __launch_bounds__(DEC_BLOCK)
mb_dec_rope(float* x, DecodeParams p) {
    mb_grid_begin();
    const u32 half = p.dims / 2;
    const u64 t = mb_dec_tid();
    if (t >= (u64)p.rows * half) return;
    const u32 h = (u32)(t / half), i = (u32)(t % half);
    float* xh = x + (u64)h * p.head + p.n;
    float s, c;
    mb_rope_sincos(p.pos, p.theta, i, p.dims, &s, &c);
    u32 a, b;
    mb_rope_pair(i, p.dims, p.flags, &a, &b);
    const float x0 = mb_ld(xh + a), x1 = mb_ld(xh + b);
    xh[a] = x0 * c - x1 * s;
    xh[b] = x0 * s + x1 * c;
}

extern "C" __global__ void __launch_bounds__(DEC_BLOCK)
mb_dec_copy2d(const float* __restrict__ src, float* __restrict__ dst, DecodeParams p) {
    mb_grid_begin();
    const u64 t = mb_dec_tid();
    if (t >= (u64)p.rows * p.n) return;
    const u64 r = t / p.n, i = t % p.n;
    dst[r * p.dims + p.tokens + i] = mb_ld(src + r * p.head + p.pos + i);
}

extern "C" __global__ void __launch_bounds__(DEC_BLOCK)
mb_dec_add(float* __restrict__ x, const float* __restrict__ y, DecodeParams p) {
    mb_grid_begin();
    const u64 t = mb_dec_tid();
    if (t < p.n) x[t] = mb_ld(x + t) + mb_ld(y + t);
}

extern "C" __global__ void __launch_bounds__(DEC_BLOCK)
mb_dec_glu(float* __restrict__ g, const float* __restrict__ u, block_q8_1* __restrict__ gq,
           DecodeParams p) {
    mb_grid_begin();
    const u64 t = mb_dec_tid();
    // With DEC_QUANT n is a multiple of 32, so a warp is wholly in or out.
    if (t >= p.n) return;
    const float v = mb_ld(g + t);
    float a;
    if (p.flags & DEC_GELU) {
        const float c = 0.7978846f;  // sqrt(2/pi)
        a = 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
    } else if (p.flags & DEC_SIGMOID) {
        a = 1.0f / (1.0f + expf(-v));
    } else {
        a = v / (1.0f + expf(-v));
    }
    // DEC_PAIRED: up follows gate in the same buffer (a stacked product).
    const float out = a * mb_ld(((p.flags & DEC_PAIRED) ? g + p.n : u) + t);
    g[t] = out;
    if (p.flags & DEC_QUANT) mb_q8_1_store_warp(gq + t / QK32, out, (int)(t % QK32));
}

// Value `lane` of 32-value block `blk` of cache row `row` (rows of n values of `dtype`):
// v stored as f32, f16, bf16 (round to nearest even, NaN kept quiet, as half::bf16::from_f32)
// or in ggml Q8_0 (d = amax / 127 stored as f16, q = round(x / d) half away from zero; the warp
// finds the block's largest magnitude, lane 0 writes the scale). Every lane of the warp calls it.
static __device__ __forceinline__ void mb_kv_store(u8* __restrict__ cache, u64 row, u32 n, u32 blk,
                                                   u32 lane, float v, u32 dtype) {
    switch (dtype) {
        case DEC_KV_F32:
            reinterpret_cast<float*>(cache)[row * n + blk * 32 + lane] = v;
            break;
        case DEC_KV_F16:
            reinterpret_cast<u16*>(cache)[row * n + blk * 32 + lane] = mb_f32_to_f16(v);
            break;
        case DEC_KV_BF16:
            reinterpret_cast<u16*>(cache)[row * n + blk * 32 + lane] = mb_f32_to_bf16(v);
            break;
        default: {
            u8* b = cache + row * (u64)(n / 32 * 34) + (u64)blk * 34;
            const float amax = mb_warp_max(fabsf(v));
            const float d = amax / 127.0f;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            b[2 + lane] = (u8)(i8)roundf(v * id);
            if (lane == 0) {
                const u16 dh = mb_f32_to_f16(d);
                b[0] = (u8)(dh & 0xff);
                b[1] = (u8)(dh >> 8);
            }
            break;
        }
    }
}

// One warp per 32 values of one head: lane j converts value j of the block.
extern "C" __global__ void __launch_bounds__(DEC_BLOCK)
mb_dec_kv_write(const float* __restrict__ src, u8* __restrict__ cache, DecodeParams p) {
    mb_grid_begin();
    const u64 warp = mb_dec_tid() / MB_WARP_SIZE;
    const u32 lane = threadIdx.x % MB_WARP_SIZE;
    const u32 blocks = p.n / 32;
    if (warp >= (u64)p.rows * blocks) return;
    const u32 h = (u32)(warp / blocks), blk = (u32)(warp % blocks);
    const float v = mb_ld(src + (u64)h * p.head + blk * 32 + lane);
    mb_kv_store(cache, (u64)h * p.tokens + p.pos, p.n, blk, lane, v, p.dtype);
}

// A GQA layer's heads after its projections, one warp per head (DEC_BLOCK / 32 per block): query
// heads 0..rows, then the K heads, then the V heads. A query or K head's n values (biased with
// DEC_BIAS, per-head RMS-normed with DEC_QK_NORM) are staged in this warp's shared row, their
// first `dims` values rotated for position `pos`; a query head goes to q_out (heads packed), a K
// head into its cache row `pos`; a V head's d_v values (biased) straight into its cache row.
// The same arithmetic as mb_dec_rmsnorm (its sum order aside), mb_dec_rope and mb_dec_kv_write.
#define DEC_HEAD_MAX 256
extern "C" __global__ void __launch_bounds__(DEC_BLOCK)
mb_dec_qkv_heads(const float* __restrict__ q, const float* __restrict__ k,
                 const float* __restrict__ v, const float* __restrict__ bq,
                 const float* __restrict__ bk, const float* __restrict__ bv,
                 const float* __restrict__ qw, const float* __restrict__ kw,
                 float* __restrict__ q_out, u8* __restrict__ kcache, u8* __restrict__ vcache,
                 DecodeParams p) {
    mb_grid_begin();
    __shared__ float rows[DEC_BLOCK / MB_WARP_SIZE][DEC_HEAD_MAX];
    const u64 task = mb_dec_tid() / MB_WARP_SIZE;
    const u32 lane = threadIdx.x % MB_WARP_SIZE;
    const u32 nq = p.rows, nkv = p.kv_heads, n = p.n;
    if (task >= (u64)nq + 2 * nkv) return;  // warp-uniform; no barriers below
    const bool bias = (p.flags & DEC_BIAS) != 0;
    if (task >= (u64)nq + nkv) {
        const u32 h = (u32)(task - nq - nkv);
        const float* src = v + p.v_off + (u64)h * p.d_v;
        for (u32 blk = 0; blk < p.d_v / 32; ++blk) {
            const u32 i = blk * 32 + lane;
            float x = mb_ld(src + i);
            if (bias) x = x + mb_ld(bv + (u64)h * p.d_v + i);
            mb_kv_store(vcache, (u64)h * p.tokens + p.pos, p.d_v, blk, lane, x, p.dtype);
        }
        return;
    }
    const bool is_q = task < nq;
    const u32 h = is_q ? (u32)task : (u32)(task - nq);
    const float* src = is_q ? q + p.q_off + (u64)h * p.q_stride : k + p.k_off + (u64)h * n;
    const float* b = is_q ? bq : bk;
    float* row = rows[threadIdx.x / MB_WARP_SIZE];
    float ss = 0.0f;
    for (u32 i = lane; i < n; i += MB_WARP_SIZE) {
        float x = mb_ld(src + i);
        if (bias) x = x + mb_ld(b + (u64)h * n + i);
        row[i] = x;
        ss += x * x;
    }
    if (p.flags & DEC_QK_NORM) {
        const float inv = 1.0f / sqrtf(mb_warp_sum(ss) / (float)n + p.eps);
        const float* nw = is_q ? qw : kw;
        for (u32 i = lane; i < n; i += MB_WARP_SIZE) row[i] = row[i] * inv * mb_ld(nw + i);
    }
    __syncwarp();
    for (u32 i = lane; i < p.dims / 2; i += MB_WARP_SIZE) {
        float s, c;
        mb_rope_sincos(p.pos, p.theta, i, p.dims, &s, &c);
        u32 a, bi;
        mb_rope_pair(i, p.dims, p.flags, &a, &bi);
        const float x0 = row[a], x1 = row[bi];
        row[a] = x0 * c - x1 * s;
        row[bi] = x0 * s + x1 * c;
    }
    __syncwarp();
    if (is_q) {
        for (u32 i = lane; i < n; i += MB_WARP_SIZE) q_out[(u64)h * n + i] = row[i];
    } else {
        for (u32 blk = 0; blk < n / 32; ++blk) {
            mb_kv_store(kcache, (u64)h * p.tokens + p.pos, n, blk, lane, row[blk * 32 + lane], p.dtype);
        }
    }
}

extern "C" __global__ void __launch_bounds__(DEC_BLOCK)
mb_dec_argmax(const float* __restrict__ x, u32* __restrict__ out, DecodeParams p) {
    mb_grid_begin();
    __shared__ float best_v[DEC_BLOCK];
    __shared__ u32 best_i[DEC_BLOCK];
    float bv = __uint_as_float(0xff800000u);  // -inf
    u32 bi = 0xffffffffu;
    for (u32 i = threadIdx.x; i < p.n; i += blockDim.x) {
        const float v = mb_ld(x + i);
        if (v > bv) {  // NaN never compares greater; the first of equals stays (i ascends)
            bv = v;
            bi = i;
        }
    }
    best_v[threadIdx.x] = bv;
    best_i[threadIdx.x] = bi;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            const float ov = best_v[threadIdx.x + s];
            const u32 oi = best_i[threadIdx.x + s];
            if (ov > best_v[threadIdx.x] || (ov == best_v[threadIdx.x] && oi < best_i[threadIdx.x])) {
                best_v[threadIdx.x] = ov;
                best_i[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = best_i[0] == 0xffffffffu ? 0u : best_i[0];
}

extern "C" __global__ void __launch_bounds__(DEC_BLOCK)
mb_dec_delta_conv(const float* __restrict__ in, const float* __restrict__ w,
                  const float* __restrict__ hist, float* __restrict__ hist_out,
                  float* __restrict__ x, DecodeParams p) {
    mb_grid_begin();
    const u64 c = mb_dec_tid();
    const u32 ch = p.n, taps = p.dims;
    if (c >= ch) return;
    const float* wc = w + c * taps;
    const float cur = mb_ld(in + c);
    float acc = mb_ld(wc + taps - 1) * cur;
    for (u32 t = 0; t + 1 < taps; ++t) acc += mb_ld(wc + t) * mb_ld(hist + (u64)t * ch + c);
    x[c] = acc / (1.0f + expf(-acc));
    if (taps < 2) return;
    for (u32 t = 0; t + 2 < taps; ++t) hist_out[(u64)t * ch + c] = mb_ld(hist + (u64)(t + 1) * ch + c);
    hist_out[(u64)(taps - 2) * ch + c] = cur;
}

#define DELTA_WARPS 4
#define DELTA_ROWS 16
#define DELTA_MAX_DK 256

// `ln(1 + e^x)`, exact for large x.
static __device__ __forceinline__ float mb_softplus(float x) {
    return x > 20.0f ? x : log1pf(expf(x));
}

// x: the convolution's output (q of every key head, then k, then v of every value head);
// ba: per key head rows/head betas then as many alphas; dt_bias and a: per value head.
extern "C" __global__ void __launch_bounds__(DELTA_WARPS * MB_WARP_SIZE)
mb_dec_delta_rule(const float* __restrict__ x, const float* __restrict__ ba,
                  const float* __restrict__ dt_bias, const float* __restrict__ a,
                  const float* __restrict__ s_in, float* __restrict__ s_out,
                  float* __restrict__ o, DecodeParams p) {
    mb_grid_begin();
    __shared__ float qk[2][DELTA_MAX_DK];
    __shared__ float scratch[2][32];
    const u32 dk = p.n, dv = p.dims, nk = p.head, nv = p.rows;
    const u32 j = blockIdx.y;
    const u32 rf = nv / nk, g = j / rf, r = j % rf;
    const float* q = x + (u64)g * dk;
    const float* k = x + (u64)(nk + g) * dk;
    float sq = 0.0f, sk = 0.0f;
    for (u32 i = threadIdx.x; i < dk; i += blockDim.x) {
        const float qv = mb_ld(q + i), kv = mb_ld(k + i);
        sq += qv * qv;
        sk += kv * kv;
    }
    const float nq = sqrtf(mb_dec_block_sum(sq, scratch[0]));
    const float nkn = sqrtf(mb_dec_block_sum(sk, scratch[1]));
    const float fq = 1.0f / sqrtf((float)dk) / fmaxf(nq, p.eps), fk = 1.0f / fmaxf(nkn, p.eps);
    for (u32 i = threadIdx.x; i < dk; i += blockDim.x) {
        qk[0][i] = mb_ld(q + i) * fq;
        qk[1][i] = mb_ld(k + i) * fk;
    }
    __syncthreads();
    const float b = mb_ld(ba + (u64)g * 2 * rf + r);
    const float al = mb_ld(ba + (u64)g * 2 * rf + rf + r);
    const float beta = 1.0f / (1.0f + expf(-b));
    const float decay = expf(mb_softplus(al + mb_ld(dt_bias + j)) * mb_ld(a + j));
    const float* v = x + 2 * (u64)nk * dk + (u64)j * dv;
    const u32 warp = threadIdx.x / MB_WARP_SIZE, lane = threadIdx.x % MB_WARP_SIZE;
    const u32 end = (blockIdx.x + 1) * DELTA_ROWS < dv ? (blockIdx.x + 1) * DELTA_ROWS : dv;
    for (u32 i = blockIdx.x * DELTA_ROWS + warp; i < end; i += DELTA_WARPS) {
        const u64 row = ((u64)j * dv + i) * dk;
        float sv[DELTA_MAX_DK / MB_WARP_SIZE];
        float acc = 0.0f;
#pragma unroll
        for (u32 t = 0; t < DELTA_MAX_DK / MB_WARP_SIZE; ++t) {
            const u32 c = lane + t * MB_WARP_SIZE;
            sv[t] = c < dk ? mb_ld(s_in + row + c) * decay : 0.0f;
            acc += c < dk ? sv[t] * qk[1][c] : 0.0f;
        }
        const float d = (mb_ld(v + i) - mb_warp_sum(acc)) * beta;
        float out = 0.0f;
#pragma unroll
        for (u32 t = 0; t < DELTA_MAX_DK / MB_WARP_SIZE; ++t) {
            const u32 c = lane + t * MB_WARP_SIZE;
            if (c < dk) {
                sv[t] += d * qk[1][c];
                s_out[row + c] = sv[t];
                out += sv[t] * qk[0][c];
            }
        }
        out = mb_warp_sum(out);
        if (lane == 0) o[(u64)j * dv + i] = out;
    }
}
