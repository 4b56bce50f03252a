// moe.cu: one mixture-of-experts layer for a batch of `tokens` decode tokens, as llama.cpp's
// mul_mat_id reads it: only the selected experts' rows of the stacked tensors.
//
// Layouts (host: membound_cuda::moe): x [tokens][hidden] f32; the router [router_rows][hidden]
// f32 (experts, then the shared-expert gate); stacked experts [n_experts][rows][row bytes]
// (gate/up: ff rows of hidden values, down: hidden rows of ff values, ggml blocks); choices are
// indexed i = t * top_k + j (token t's j-th expert, best first).
//
// The launches of one layer (membound_cuda::moe::moe_launches):
//   mb_moe_router     logits[t][r] = W_r[r] . x[t] (+ logit bias): one warp per router row,
//                     the row read as float4 words consecutive across lanes, once per token
//                     (from L1/L2 after the first), MOE_ROUTE_WARPS rows per block; with
//                     MOE_QUANT_X also x -> Q8_1 (the gate/up input), a warp per Q8_1 block.
//                     The block that finishes last (mb_last_of) then routes with all its
//                     threads: scores, group limit, top-k, weights per token (one warp per
//                     token), then the plan: the distinct experts of the batch (slots, by
//                     expert id) and each slot's choices (by i). The reference is
//                     membound_cpu::moe::route (NaN logits count as -inf, ties to the lower
//                     index, all -inf: weights 0).
//   mb_moe_gate_up_T  act[i][r] = act(gate_e[r] . x_t (+bg), up_e[r] . x_t (+bu)): grid
//                     (ceil(ff / MOE_WARPS), max_slots); block y takes slot y (exits past the
//                     plan's slot count), one warp per row, the gate and up rows read together
//                     through mb_rows_dot (gemv_tile.cuh) once per choice of the slot: a batch
//                     reads each distinct expert from DRAM once (later choices hit L1/L2).
//                     With MOE_QUANT_ACT (block-quantized down, ff % 32 == 0) the last of the
//                     MOE_GROUP_BLOCKS blocks of each 32 rows writes their Q8_1 blocks (else
//                     mb_quantize_q8_1 follows as a launch of its own).
//   mb_moe_down_T     y[i][r] = w_i * (down_e[r] . act_i (+bd)): grid (ceil(hidden /
//                     MOE_WARPS), max_slots). Without a shared expert (MOE_COMBINE) the last
//                     used slot's block of each MOE_WARPS rows then combines them (below).
//   (the shared expert: gate_up and down again over a one-slot plan, weights = its gate)
//   mb_moe_combine    out[t][r] = sum_j y[t*k+j][r] (+ y_shared[t][r]), j in order (with
//                     MOE_ACCUMULATE: out[t][r] += that sum, a decode step's residual add).
//
// Plan layout (u32): [0] slot count n; [1, 1+S) slot experts; [1+S, 2+2S) slot starts (S+1,
// the last = tokens*top_k); [2+2S, 2+2S+tokens*top_k) choices. S = max slots = gridDim.y of the
// expert kernels = min(n_experts, tokens*top_k).

#include "common.cuh"
#include "params.cuh"
#include "quant_blocks.cuh"
#include "gemv_tile.cuh"

#define MOE_WARPS 4
// Blocks per SM the expert kernels' register allocation must allow (at most 128 registers per
// thread; shared memory allows about 4 blocks of 46 KB per SM on sm_90): found by the NVRTC
// check, where no cap makes ptxas spill the F16/BF16 kernels and a 64-register cap spills most.
#define MOE_MIN_BLOCKS 4
// Blocks of the gate/up kernels per 32 rows (one Q8_1 block of each choice's activations).
#define MOE_GROUP_BLOCKS (QK32 / MOE_WARPS)
#define MOE_ROUTE_THREADS 256
#define MOE_ROUTE_WARPS (MOE_ROUTE_THREADS / MB_WARP_SIZE)
// Limits of mb_moe_route's shared memory (checked by the host).
#define MOE_MAX_EXPERTS 512
#define MOE_MAX_CHOICES 1024
#define MOE_NONE 0xffffffffu

static __device__ __forceinline__ float mb_neg_inf() { return __uint_as_float(0xff800000u); }
static __device__ __forceinline__ float mb_sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

// ---------------------------------------------------------------------------------------------
// Router logits: one warp per router row. Rows are hidden f32 values; hidden % 4 == 0 (checked
// by the host).
static __device__ __forceinline__ void mb_moe_logits(const float* __restrict__ w,
                                                     const float* __restrict__ x,
                                                     const float* __restrict__ bias,
                                                     float* __restrict__ logits, const MoeParams& p) {
    const u32 row = blockIdx.x * MOE_ROUTE_WARPS + threadIdx.x / MB_WARP_SIZE;
    if (row >= p.router_rows) return;  // warp-uniform; no barriers here
    const u32 lane = threadIdx.x % MB_WARP_SIZE;
    const float4* wr = reinterpret_cast<const float4*>(w + (u64)row * p.hidden);
    const u32 n4 = p.hidden / 4;
    const float b = (p.flags & MOE_LOGIT_BIAS) && row < p.n_experts ? mb_ld(bias + row) : 0.0f;
    for (u32 t = 0; t < p.tokens; ++t) {
        const float4* xt = reinterpret_cast<const float4*>(x + (u64)t * p.hidden);
        float acc = 0.0f;
        for (u32 i = lane; i < n4; i += MB_WARP_SIZE) {
            const float4 a = mb_ld(wr + i);
            const float4 c = mb_ld(xt + i);
            acc += a.x * c.x + a.y * c.y + a.z * c.z + a.w * c.w;
        }
        acc = mb_warp_sum(acc);
        if (lane == 0) logits[(u64)t * p.router_rows + row] = acc + b;
    }
}

// ---------------------------------------------------------------------------------------------
// Routing and the plan.

// The better of two (key, index) candidates: a higher key, ties to the lower index; MOE_NONE
// loses to anything.
static __device__ __forceinline__ bool mb_better(float v, u32 i, float bv, u32 bi) {
    return i != MOE_NONE && (bi == MOE_NONE || v > bv || (v == bv && i < bi));
}

// The best of keys[0..n) not taken (NaN marks taken), over the warp: every lane gets it.
static __device__ __forceinline__ u32 mb_warp_argmax(const float* keys, u32 n, u32 lane) {
    float bv = mb_neg_inf();
    u32 bi = MOE_NONE;
    for (u32 e = lane; e < n; e += MB_WARP_SIZE) {
        const float v = keys[e];
        if (v == v && mb_better(v, e, bv, bi)) {
            bv = v;
            bi = e;
        }
    }
#pragma unroll
    for (int o = MB_WARP_SIZE / 2; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(MB_FULL_MASK, bv, o);
        const u32 oi = __shfl_xor_sync(MB_FULL_MASK, bi, o);
        if (mb_better(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
    return bi;
}

// One token's routing by one warp: keys/scores are this warp's shared rows (n_experts values).
static __device__ void mb_route_token(const float* __restrict__ lt, const float* __restrict__ sel_bias,
                                      const float* __restrict__ steer_t, float* keys, float* scores,
                                      u32* chosen, float* weights, const MoeParams& p, u32 lane) {
    const u32 e_n = p.n_experts;
    // Clean logits (NaN -> -inf) and the softmax maximum.
    float mx = mb_neg_inf();
    for (u32 e = lane; e < e_n; e += MB_WARP_SIZE) {
        float v = mb_ld_cg(lt + e);
        v = v != v ? mb_neg_inf() : v;
        scores[e] = v;
        mx = fmaxf(mx, v);
    }
    mx = mb_warp_max(mx);
    if (p.scoring == MOE_SOFTMAX) {
        float sum = 0.0f;
        for (u32 e = lane; e < e_n; e += MB_WARP_SIZE) {
            const float ex = mx == mb_neg_inf() ? 0.0f : expf(scores[e] - mx);
            scores[e] = ex;
            sum += ex;
        }
        sum = mb_warp_sum(sum);
        for (u32 e = lane; e < e_n; e += MB_WARP_SIZE) scores[e] = sum > 0.0f ? scores[e] / sum : 0.0f;
    } else if (p.scoring == MOE_SIGMOID) {
        for (u32 e = lane; e < e_n; e += MB_WARP_SIZE) scores[e] = mb_sigmoid(scores[e]);
    }
    for (u32 e = lane; e < e_n; e += MB_WARP_SIZE) {
        float k = scores[e];
        if (p.flags & MOE_SELECTION_BIAS) k += mb_ld(sel_bias + e);
        if (p.flags & MOE_STEER) k += mb_ld(steer_t + e);
        keys[e] = k != k ? mb_neg_inf() : k;
    }
    __syncwarp();
    if (p.n_group > 1) {
        // A group's key: the sum of its best two keys (its best for groups of one).
        const u32 size = e_n / p.n_group;
        float gk = mb_neg_inf();
        if (lane < p.n_group) {
            float b0 = mb_neg_inf(), b1 = mb_neg_inf();
            for (u32 e = lane * size; e < (lane + 1) * size; ++e) {
                const float v = keys[e];
                if (v > b0) {
                    b1 = b0;
                    b0 = v;
                } else if (v > b1) {
                    b1 = v;
                }
            }
            gk = size == 1 ? b0 : b0 + b1;
            gk = gk != gk ? mb_neg_inf() : gk;
        }
        u32 kept = 0;  // bit g: group g kept
        for (u32 n = 0; n < p.topk_group; ++n) {
            float bv = lane < p.n_group && !((kept >> lane) & 1u) ? gk : mb_neg_inf();
            u32 bi = lane < p.n_group && !((kept >> lane) & 1u) ? lane : MOE_NONE;
#pragma unroll
            for (int o = MB_WARP_SIZE / 2; o > 0; o >>= 1) {
                const float ov = __shfl_xor_sync(MB_FULL_MASK, bv, o);
                const u32 oi = __shfl_xor_sync(MB_FULL_MASK, bi, o);
                if (mb_better(ov, oi, bv, bi)) {
                    bv = ov;
                    bi = oi;
                }
            }
            if (bi != MOE_NONE) kept |= 1u << bi;
        }
        for (u32 e = lane; e < e_n; e += MB_WARP_SIZE)
            if (!((kept >> (e / size)) & 1u)) keys[e] = mb_neg_inf();
        __syncwarp();
    }
    for (u32 j = 0; j < p.top_k; ++j) {
        const u32 c = mb_warp_argmax(keys, e_n, lane);
        __syncwarp();
        if (lane == 0) {
            chosen[j] = c;
            keys[c] = __uint_as_float(0x7fc00000u);  // taken
        }
        __syncwarp();
    }
    if (lane == 0) {
        const u32 k = p.top_k;
        float sum = 0.0f;
        if (p.scoring == MOE_TOPK_SOFTMAX) {
            // Softmax over the selected logits (scores hold the clean logits here).
            float m = mb_neg_inf();
            for (u32 j = 0; j < k; ++j) m = fmaxf(m, scores[chosen[j]]);
            for (u32 j = 0; j < k; ++j) {
                weights[j] = m == mb_neg_inf() ? 0.0f : expf(scores[chosen[j]] - m);
                sum += weights[j];
            }
            for (u32 j = 0; j < k; ++j) weights[j] = sum > 0.0f ? weights[j] / sum : 0.0f;
            sum = 0.0f;
        }
        else {
            for (u32 j = 0; j < k; ++j) weights[j] = scores[chosen[j]];
        }
        if (p.flags & MOE_NORM_TOPK) {
            for (u32 j = 0; j < k; ++j) sum += weights[j];
            if (sum > 0.0f)
                for (u32 j = 0; j < k; ++j) weights[j] /= sum;
        }
        for (u32 j = 0; j < k; ++j) weights[j] *= p.routed_scaling;
    }
    __syncwarp();
}

// Routing and the plan of the batch by one block of MOE_ROUTE_THREADS (the logits read from L2:
// other blocks of the same launch wrote them).
static __device__ void mb_route_batch(const float* __restrict__ logits, const float* __restrict__ sel_bias,
                                      const float* __restrict__ steer, u32* __restrict__ ids,
                                      float* __restrict__ weights, float* __restrict__ shared_w,
                                      u32* __restrict__ plan, const MoeParams& p) {
    __shared__ float keys[MOE_ROUTE_WARPS][MOE_MAX_EXPERTS];
    __shared__ float scores[MOE_ROUTE_WARPS][MOE_MAX_EXPERTS];
    __shared__ u32 chosen[MOE_MAX_CHOICES];
    __shared__ float chosen_w[MOE_MAX_CHOICES];
    __shared__ u32 count[MOE_MAX_EXPERTS];
    __shared__ u32 start[MOE_MAX_EXPERTS];
    __shared__ u32 slot[MOE_MAX_EXPERTS];
    __shared__ u32 totals[2];
    const u32 warp = threadIdx.x / MB_WARP_SIZE;
    const u32 lane = threadIdx.x % MB_WARP_SIZE;
    const u32 k = p.top_k;
    const u32 n = p.tokens * k;
    for (u32 t = warp; t < p.tokens; t += MOE_ROUTE_WARPS) {
        const float* lt = logits + (u64)t * p.router_rows;
        mb_route_token(lt, sel_bias, steer + (u64)t * p.n_experts, keys[warp], scores[warp],
                       chosen + t * k, chosen_w + t * k, p, lane);
        if (lane == 0) {
            shared_w[t] = (p.flags & MOE_SHARED_GATE) ? mb_sigmoid(mb_ld_cg(lt + p.n_experts)) : 1.0f;
        }
    }
    __syncthreads();
    for (u32 i = threadIdx.x; i < n; i += MOE_ROUTE_THREADS) {
        ids[i] = chosen[i];
        weights[i] = chosen_w[i];
    }
    // The plan: choices per expert, their prefix sums (warp 0), then each expert's slot.
    for (u32 e = threadIdx.x; e < p.n_experts; e += MOE_ROUTE_THREADS) {
        u32 c = 0;
        for (u32 i = 0; i < n; ++i) c += chosen[i] == e;
        count[e] = c;
    }
    __syncthreads();
    if (warp == 0) {
        const u32 seg = (p.n_experts + MB_WARP_SIZE - 1) / MB_WARP_SIZE;
        const u32 lo = lane * seg < p.n_experts ? lane * seg : p.n_experts;
        const u32 hi = lo + seg < p.n_experts ? lo + seg : p.n_experts;
        u32 sc = 0, ss = 0;  // this lane's choices and slots
        for (u32 e = lo; e < hi; ++e) {
            sc += count[e];
            ss += count[e] > 0;
        }
        u32 ic = sc, is = ss;  // inclusive scans over the lanes
#pragma unroll
        for (int o = 1; o < MB_WARP_SIZE; o <<= 1) {
            const u32 a = __shfl_up_sync(MB_FULL_MASK, ic, o);
            const u32 b = __shfl_up_sync(MB_FULL_MASK, is, o);
            if (lane >= (u32)o) {
                ic += a;
                is += b;
            }
        }
        u32 c0 = ic - sc, s0 = is - ss;
        for (u32 e = lo; e < hi; ++e) {
            start[e] = c0;
            slot[e] = s0;
            c0 += count[e];
            s0 += count[e] > 0;
        }
        if (lane == MB_WARP_SIZE - 1) {
            totals[0] = ic;
            totals[1] = is;
        }
    }
    __syncthreads();
    const u32 max_slots = p.n_experts < n ? p.n_experts : n;
    u32* slot_expert = plan + 1;
    u32* slot_start = plan + 1 + max_slots;
    u32* pairs = plan + 2 + 2 * max_slots;
    for (u32 e = threadIdx.x; e < p.n_experts; e += MOE_ROUTE_THREADS) {
        if (count[e] == 0) continue;
        const u32 s = slot[e];
        slot_expert[s] = e;
        slot_start[s] = start[e];
        u32 at = start[e];
        for (u32 i = 0; i < n; ++i)
            if (chosen[i] == e) pairs[at++] = i;
    }
    if (threadIdx.x == 0) {
        plan[0] = totals[1];
        slot_start[totals[1]] = totals[0];
    }
}


// The router launch: every block the logits of its MOE_ROUTE_WARPS rows (and, with MOE_QUANT_X,
// its share of x's Q8_1 blocks); the block that finishes last (a counter in `sync`, back to 0
// when it is done) routes the batch and writes the plan.
extern "C" __global__ void __launch_bounds__(MOE_ROUTE_THREADS)
mb_moe_router(const float* __restrict__ w, const float* __restrict__ x,
              const float* __restrict__ bias, float* __restrict__ logits,
              const float* __restrict__ sel_bias, const float* __restrict__ steer,
              u32* __restrict__ ids, float* __restrict__ weights, float* __restrict__ shared_w,
              u32* __restrict__ plan, block_q8_1* __restrict__ xq, u32* __restrict__ sync,
              MoeParams p) {
    mb_grid_begin();
    mb_moe_logits(w, x, bias, logits, p);
    if (p.flags & MOE_QUANT_X) {
        const u32 lane = threadIdx.x % MB_WARP_SIZE;
        const u64 blocks = (u64)p.tokens * p.hidden / QK32;
        for (u64 b = (u64)blockIdx.x * MOE_ROUTE_WARPS + threadIdx.x / MB_WARP_SIZE; b < blocks;
             b += (u64)gridDim.x * MOE_ROUTE_WARPS) {
            mb_q8_1_store_warp(xq + b, mb_ld(x + b * QK32 + lane), (int)lane);
        }
    }
    if (!mb_last_of(sync, gridDim.x)) return;
    mb_route_batch(logits, sel_bias, steer, ids, weights, shared_w, plan, p);
    if (threadIdx.x == 0) *sync = 0u;
}

// ---------------------------------------------------------------------------------------------
// Expert passes.

// The slot of this block (blockIdx.y): its expert and its choices [first, end) of the plan;
// false when the plan has fewer slots (block-uniform: return before any barrier). The four words
// are read together, before the slot count is checked (every index lies inside the plan,
// whatever its count; a slot past the count leaves unused values): the expert rows' addresses
// then wait for one round trip to memory, not two.
static __device__ __forceinline__ bool mb_moe_slot(const u32* plan, u32& e, u32& first, u32& end,
                                                   const u32*& pairs) {
    const u32 s = blockIdx.y;
    const u32 max_slots = gridDim.y;
    const u32 n = mb_ld(plan);
    e = mb_ld(plan + 1 + s);
    first = mb_ld(plan + 1 + max_slots + s);
    end = mb_ld(plan + 1 + max_slots + s + 1);
    pairs = plan + 2 + 2 * max_slots;
    return s < n;
}

static __device__ __forceinline__ float mb_moe_act(float g, float u, u32 flags) {
    if (flags & MOE_SWIGLU_OAI) {
        const float gc = fminf(g, 7.0f);
        const float uc = fminf(fmaxf(u, -7.0f), 7.0f);
        return gc / (1.0f + expf(-1.702f * gc)) * (uc + 1.0f);
    }
    return g / (1.0f + expf(-g)) * u;
}

// The down product's input, by the gate/up launch: the last of the MOE_GROUP_BLOCKS blocks of
// each 32 rows (ff % 32 == 0: down rows are whole blocks) writes their Q8_1 block of every
// choice of the slot. Not inlined: kept out of the gate/up loop's register allocation (inlined,
// ptxas spilled the MXFP4 kernel for sm_90); the slot's choices are read again.
static __device__ __noinline__ void mb_moe_quantize_act(const u32* __restrict__ plan,
                                                        const float* __restrict__ act,
                                                        block_q8_1* __restrict__ actq,
                                                        u32* __restrict__ sync, const MoeParams& p) {
    const u32 group = blockIdx.x / MOE_GROUP_BLOCKS;
    u32* count = sync + (u64)blockIdx.y * (p.ff / QK32) + group;
    if (!mb_last_of(count, MOE_GROUP_BLOCKS)) return;
    u32 e, first, end;
    const u32* pairs;
    mb_moe_slot(plan, e, first, end, pairs);
    const u32 warp = threadIdx.x / MB_WARP_SIZE, lane = threadIdx.x % MB_WARP_SIZE;
    for (u32 c = first + warp; c < end; c += MOE_WARPS) {
        const u64 i = mb_ld(pairs + c);
        const float v = mb_ld_cg(act + i * p.ff + (u64)group * QK32 + lane);
        mb_q8_1_store_warp(actq + i * (p.ff / QK32) + group, v, (int)lane);
    }
    if (threadIdx.x == 0) *count = 0u;
}

template <typename Q>
static __device__ __forceinline__ void mb_moe_gate_up(const u8* __restrict__ gate,
                                                      const u8* __restrict__ up,
                                                      const typename Q::X* __restrict__ x,
                                                      const u32* __restrict__ plan,
                                                      const float* __restrict__ gate_b,
                                                      const float* __restrict__ up_b,
                                                      float* __restrict__ act,
                                                      block_q8_1* __restrict__ actq,
                                                      u32* __restrict__ sync, const MoeParams& p) {
    u32 e, first, end;
    const u32* pairs;
    if (!mb_moe_slot(plan, e, first, end, pairs)) return;
    const u32 row = blockIdx.x * MOE_WARPS + threadIdx.x / MB_WARP_SIZE;
    const bool active = row < p.ff;  // warp-uniform
    const u64 at = ((u64)e * p.ff + (active ? row : 0)) * p.gate_row_bytes;
    const u8* wr[2] = {gate + at, up + at};
    const u64 x_len = (u64)(p.hidden / Q::BLOCK_VALUES) * Q::X_PER_BLOCK;
#pragma unroll 1
    for (u32 c = first; c < end; ++c) {
        const u32 i = mb_ld(pairs + c);
        float gu[2];
        mb_rows_dot<Q, MOE_WARPS, 2>(wr, active, x + (u64)(i / p.top_k) * x_len, p.hidden, gu);
        if (active && threadIdx.x % MB_WARP_SIZE == 0) {
            if (p.flags & MOE_EXPERT_BIAS) {
                gu[0] += mb_ld(gate_b + (u64)e * p.ff + row);
                gu[1] += mb_ld(up_b + (u64)e * p.ff + row);
            }
            act[(u64)i * p.ff + row] = mb_moe_act(gu[0], gu[1], p.flags);
        }
    }
    if (p.flags & MOE_QUANT_ACT) mb_moe_quantize_act(plan, act, actq, sync, p);
}

// Token t's output value r: the sum of its choices' y in choice order (+ the shared expert's
// with MOE_SHARED_OUT), written, or added to out with MOE_ACCUMULATE. The one definition of the
// combine, for mb_moe_combine and the down launch's mb_moe_combine_rows (y is read from L2: there
// other blocks of the same launch wrote it).
static __device__ __forceinline__ void mb_moe_combine_at(const float* __restrict__ y,
                                                         const float* __restrict__ y_shared,
                                                         float* __restrict__ out, u64 t, u64 r,
                                                         const MoeParams& p) {
    float acc = 0.0f;
    for (u32 j = 0; j < p.top_k; ++j) acc += mb_ld_cg(y + ((t * p.top_k + j) * p.hidden + r));
    const u64 o = t * p.hidden + r;
    if (p.flags & MOE_SHARED_OUT) acc += mb_ld(y_shared + o);
    out[o] = (p.flags & MOE_ACCUMULATE) ? mb_ld(out + o) + acc : acc;
}

// The combine, by the down launch of a layer without a shared expert (MOE_COMBINE): the last of
// the used slots' blocks of these MOE_WARPS rows sums each token's choices for them, in choice
// order as mb_moe_combine does (out[t][r] = sum_j y[t*k+j][r], or out += that with
// MOE_ACCUMULATE). Not inlined, like mb_moe_quantize_act.
static __device__ __noinline__ void mb_moe_combine_rows(const u32* __restrict__ plan,
                                                        const float* __restrict__ y,
                                                        float* __restrict__ out,
                                                        u32* __restrict__ sync, const MoeParams& p) {
    u32* count = sync + blockIdx.x;
    if (!mb_last_of(count, mb_ld(plan))) return;
    for (u32 v = threadIdx.x; v < p.tokens * MOE_WARPS; v += blockDim.x) {
        const u32 t = v / MOE_WARPS, r = blockIdx.x * MOE_WARPS + v % MOE_WARPS;
        if (r < p.hidden) mb_moe_combine_at(y, nullptr, out, t, r, p);
    }
    if (threadIdx.x == 0) *count = 0u;
}

template <typename Q>
static __device__ __forceinline__ void mb_moe_down(const u8* __restrict__ down,
                                                   const typename Q::X* __restrict__ a,
                                                   const u32* __restrict__ plan,
                                                   const float* __restrict__ w,
                                                   const float* __restrict__ down_b,
                                                   float* __restrict__ y, float* __restrict__ out,
                                                   u32* __restrict__ sync, const MoeParams& p) {
    u32 e, first, end;
    const u32* pairs;
    if (!mb_moe_slot(plan, e, first, end, pairs)) return;
    const u32 row = blockIdx.x * MOE_WARPS + threadIdx.x / MB_WARP_SIZE;
    const bool active = row < p.hidden;  // warp-uniform
    const u8* wr[1] = {down + ((u64)e * p.hidden + (active ? row : 0)) * p.down_row_bytes};
    const u64 a_len = (u64)(p.ff / Q::BLOCK_VALUES) * Q::X_PER_BLOCK;
#pragma unroll 1
    for (u32 c = first; c < end; ++c) {
        const u32 i = mb_ld(pairs + c);
        float d[1];
        mb_rows_dot<Q, MOE_WARPS, 1>(wr, active, a + (u64)i * a_len, p.ff, d);
        if (active && threadIdx.x % MB_WARP_SIZE == 0) {
            const float b = (p.flags & MOE_EXPERT_BIAS) ? mb_ld(down_b + (u64)e * p.hidden + row) : 0.0f;
            y[(u64)i * p.hidden + row] = mb_ld(w + i) * (d[0] + b);
        }
    }
    if (p.flags & MOE_COMBINE) mb_moe_combine_rows(plan, y, out, sync, p);
}

// The expert kernels of each weight type (activations: Q8_1 blocks, or f32 for F16/BF16).

extern "C" __global__ void __launch_bounds__(MOE_WARPS * MB_WARP_SIZE, MOE_MIN_BLOCKS)
mb_moe_gate_up_q8_0(const u8* __restrict__ gate, const u8* __restrict__ up,
                    const block_q8_1* __restrict__ x, const u32* __restrict__ plan,
                    const float* __restrict__ gate_b, const float* __restrict__ up_b,
                    float* __restrict__ act, block_q8_1* __restrict__ actq,
                    u32* __restrict__ sync, MoeParams p) {
    mb_grid_begin();
    mb_moe_gate_up<DotQ8_0>(gate, up, x, plan, gate_b, up_b, act, actq, sync, p);
}

extern "C" __global__ void __launch_bounds__(MOE_WARPS * MB_WARP_SIZE, MOE_MIN_BLOCKS)
mb_moe_down_q8_0(const u8* __restrict__ down, const block_q8_1* __restrict__ a,
                 const u32* __restrict__ plan, const float* __restrict__ w,
                 const float* __restrict__ down_b, float* __restrict__ y,
                 float* __restrict__ out, u32* __restrict__ sync, MoeParams p) {
    mb_grid_begin();
    mb_moe_down<DotQ8_0>(down, a, plan, w, down_b, y, out, sync, p);
}

extern "C" __global__ void __launch_bounds__(MOE_WARPS * MB_WARP_SIZE, MOE_MIN_BLOCKS)
mb_moe_gate_up_q4_k(const u8* __restrict__ gate, const u8* __restrict__ up,
                    const block_q8_1* __restrict__ x, const u32* __restrict__ plan,
                    const float* __restrict__ gate_b, const float* __restrict__ up_b,
                    float* __restrict__ act, block_q8_1* __restrict__ actq,
                    u32* __restrict__ sync, MoeParams p) {
    mb_grid_begin();
    mb_moe_gate_up<DotQ4_K>(gate, up, x, plan, gate_b, up_b, act, actq, sync, p);
}

extern "C" __global__ void __launch_bounds__(MOE_WARPS * MB_WARP_SIZE, MOE_MIN_BLOCKS)
mb_moe_down_q4_k(const u8* __restrict__ down, const block_q8_1* __restrict__ a,
                 const u32* __restrict__ plan, const float* __restrict__ w,
                 const float* __restrict__ down_b, float* __restrict__ y,
                 float* __restrict__ out, u32* __restrict__ sync, MoeParams p) {
    mb_grid_begin();
    mb_moe_down<DotQ4_K>(down, a, plan, w, down_b, y, out, sync, p);
}

extern "C" __global__ void __launch_bounds__(MOE_WARPS * MB_WARP_SIZE, MOE_MIN_BLOCKS)
mb_moe_gate_up_q6_k(const u8* __restrict__ gate, const u8* __restrict__ up,
                    const block_q8_1* __restrict__ x, const u32* __restrict__ plan,
                    const float* __restrict__ gate_b, const float* __restrict__ up_b,
                    float* __restrict__ act, block_q8_1* __restrict__ actq,
                    u32* __restrict__ sync, MoeParams p) {
    mb_grid_begin();
    mb_moe_gate_up<DotQ6_K>(gate, up, x, plan, gate_b, up_b, act, actq, sync, p);
}

extern "C" __global__ void __launch_bounds__(MOE_WARPS * MB_WARP_SIZE, MOE_MIN_BLOCKS)
mb_moe_down_q6_k(const u8* __restrict__ down, const block_q8_1* __restrict__ a,
                 const u32* __restrict__ plan, const float* __restrict__ w,
                 const float* __restrict__ down_b, float* __restrict__ y,
                 float* __restrict__ out, u32* __restrict__ sync, MoeParams p) {
    mb_grid_begin();
    mb_moe_down<DotQ6_K>(down, a, plan, w, down_b, y, out, sync, p);
}

extern "C" __global__ void __launch_bounds__(MOE_WARPS * MB_WARP_SIZE, MOE_MIN_BLOCKS)
mb_moe_gate_up_mxfp4(const u8* __restrict__ gate, const u8* __restrict__ up,
                     const block_q8_1* __restrict__ x, const u32* __restrict__ plan,
                     const float* __restrict__ gate_b, const float* __restrict__ up_b,
                     float* __restrict__ act, block_q8_1* __restrict__ actq,
                     u32* __restrict__ sync, MoeParams p) {
    mb_grid_begin();
    mb_moe_gate_up<DotMxfp4>(gate, up, x, plan, gate_b, up_b, act, actq, sync, p);
}

extern "C" __global__ void __launch_bounds__(MOE_WARPS * MB_WARP_SIZE, MOE_MIN_BLOCKS)
mb_moe_down_mxfp4(const u8* __restrict__ down, const block_q8_1* __restrict__ a,
                  const u32* __restrict__ plan, const float* __restrict__ w,
                  const float* __restrict__ down_b, float* __restrict__ y,
                  float* __restrict__ out, u32* __restrict__ sync, MoeParams p) {
    mb_grid_begin();
    mb_moe_down<DotMxfp4>(down, a, plan, w, down_b, y, out, sync, p);
}

extern "C" __global__ void __launch_bounds__(MOE_WARPS * MB_WARP_SIZE, MOE_MIN_BLOCKS)
mb_moe_gate_up_f16(const u8* __restrict__ gate, const u8* __restrict__ up,
                   const float* __restrict__ x, const u32* __restrict__ plan,
                   const float* __restrict__ gate_b, const float* __restrict__ up_b,
                   float* __restrict__ act, block_q8_1* __restrict__ actq,
                   u32* __restrict__ sync, MoeParams p) {
    mb_grid_begin();
    mb_moe_gate_up<DotHalf<CvtF16>>(gate, up, x, plan, gate_b, up_b, act, actq, sync, p);
}

extern "C" __global__ void __launch_bounds__(MOE_WARPS * MB_WARP_SIZE, MOE_MIN_BLOCKS)
mb_moe_down_f16(const u8* __restrict__ down, const float* __restrict__ a,
                const u32* __restrict__ plan, const float* __restrict__ w,
                const float* __restrict__ down_b, float* __restrict__ y,
                float* __restrict__ out, u32* __restrict__ sync, MoeParams p) {
    mb_grid_begin();
    mb_moe_down<DotHalf<CvtF16>>(down, a, plan, w, down_b, y, out, sync, p);
}

extern "C" __global__ void __launch_bounds__(MOE_WARPS * MB_WARP_SIZE, MOE_MIN_BLOCKS)
mb_moe_gate_up_bf16(const u8* __restrict__ gate, const u8* __restrict__ up,
                    const float* __restrict__ x, const u32* __restrict__ plan,
                    const float* __restrict__ gate_b, const float* __restrict__ up_b,
                    float* __restrict__ act, block_q8_1* __restrict__ actq,
                    u32* __restrict__ sync, MoeParams p) {
    mb_grid_begin();
    mb_moe_gate_up<DotHalf<CvtBF16>>(gate, up, x, plan, gate_b, up_b, act, actq, sync, p);
}

extern "C" __global__ void __launch_bounds__(MOE_WARPS * MB_WARP_SIZE, MOE_MIN_BLOCKS)
mb_moe_down_bf16(const u8* __restrict__ down, const float* __restrict__ a,
                 const u32* __restrict__ plan, const float* __restrict__ w,
                 const float* __restrict__ down_b, float* __restrict__ y,
                 float* __restrict__ out, u32* __restrict__ sync, MoeParams p) {
    mb_grid_begin();
    mb_moe_down<DotHalf<CvtBF16>>(down, a, plan, w, down_b, y, out, sync, p);
}

// ---------------------------------------------------------------------------------------------
// out[t][r] = sum_j y[t*k + j][r] (+ y_shared[t][r]); grid-stride over tokens * hidden.
extern "C" __global__ void __launch_bounds__(256)
mb_moe_combine(const float* __restrict__ y, const float* __restrict__ y_shared,
               float* __restrict__ out, MoeParams p) {
    mb_grid_begin();
    const u64 n = (u64)p.tokens * p.hidden;
    for (u64 v = (u64)blockIdx.x * blockDim.x + threadIdx.x; v < n; v += (u64)gridDim.x * blockDim.x) {
        mb_moe_combine_at(y, y_shared, out, v / p.hidden, v % p.hidden, p);
    }
}
