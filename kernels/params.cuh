// params.cuh: kernel parameter structs, passed by value as one argument. Each is mirrored by a
// #[repr(C)] struct in crates/membound-cuda/src/params.rs with the same size asserted there.
#pragma once

#include "common.cuh"

// Streaming kernels (bandwidth.cu). n: number of f32 elements of each array.
struct StreamParams {
    u64 n;
    float scalar;  // write: the value stored; triad: s in a = b + s*c
    u32 _pad;
};

// GEMV kernels (gemv.cu). W is rows x cols, each row row_bytes long.
struct GemvParams {
    u32 rows;
    u32 cols;
    u64 row_bytes;
    u32 group_rows;  // rows per input: row r takes input r / group_rows of x (grouped GEMV)
    u32 flags;       // GEMV_* bits below
};

#define GEMV_ACCUMULATE 1u  // y[row] += W[row] . x (a residual add fused into the product)

// Activation quantization (gemv.cu): n_blocks Q8_1 blocks of 32 values.
struct QuantizeParams {
    u64 n_blocks;
};

static_assert(sizeof(StreamParams) == 16, "StreamParams must be 16 bytes");
static_assert(sizeof(GemvParams) == 24, "GemvParams must be 24 bytes");
static_assert(sizeof(QuantizeParams) == 8, "QuantizeParams must be 8 bytes");

// MoE kernels (moe.cu): one MoE layer for `tokens` tokens. An expert pass (routed experts, or
// the shared expert as a stack of one) reads gate/up rows of `ff` x `hidden` and down rows of
// `hidden` x `ff`; `top_k` choices per token (1 for the shared pass).
struct MoeParams {
    u32 tokens;
    u32 n_experts;
    u32 top_k;
    u32 hidden;
    u32 ff;
    u32 router_rows;  // n_experts, +1 with a shared-expert gate (its last row)
    u32 scoring;      // MOE_SOFTMAX, MOE_SIGMOID, MOE_TOPK_SOFTMAX
    u32 flags;        // MOE_* bits below
    u32 n_group;      // expert groups (1: no group limit)
    u32 topk_group;   // groups kept
    float routed_scaling;
    u32 _pad;
    u64 gate_row_bytes;  // one gate/up row (hidden values)
    u64 down_row_bytes;  // one down row (ff values)
};

#define MOE_SOFTMAX 0u
#define MOE_SIGMOID 1u
#define MOE_TOPK_SOFTMAX 2u

#define MOE_NORM_TOPK 1u        // renormalise the selected weights
#define MOE_LOGIT_BIAS 2u       // add the router bias to the logits
#define MOE_SELECTION_BIAS 4u   // add the router bias to the selection keys only
#define MOE_STEER 8u            // add a per-token steering vector to the selection keys
#define MOE_SHARED_GATE 16u     // the router's last row gates the shared expert (sigmoid)
#define MOE_EXPERT_BIAS 32u     // per-expert gate/up/down biases
#define MOE_SWIGLU_OAI 64u      // gpt-oss's clamped SwiGLU instead of SiLU
#define MOE_SHARED_OUT 128u     // combine adds the shared expert's output
#define MOE_ACCUMULATE 256u     // combine adds into out (the residual stream) instead of writing
#define MOE_QUANT_X 512u        // router: also write x as Q8_1 (the gate/up input)
#define MOE_QUANT_ACT 1024u     // gate/up: the last block of each 32 rows writes their Q8_1
#define MOE_COMBINE 2048u       // down: the last block of each row group combines (no shared expert)

static_assert(sizeof(MoeParams) == 64, "MoeParams must be 64 bytes");

// Decode attention (attention.cu). Query head h reads cached head h / group; a block takes
// heads_per_block query heads of one cached head (head_groups blocks per cached head) and
// `chunk` tokens of [first, end); caches hold `tokens` rows per head; tiles of `tile` rows.
struct AttnParams {
    u32 n_heads;
    u32 kv_heads;
    u32 d_k;
    u32 d_v;
    u32 group;
    u32 heads_per_block;
    u32 head_groups;
    u32 tokens;
    u32 first;
    u32 end;
    u32 chunk;
    u32 splits;
    u32 tile;
    u32 flags;  // ATTN_* bits below
    float scale;
    u32 _pad;
    u64 k_row_bytes;
    u64 v_row_bytes;
};

#define ATTN_V_IN_K 1u  // V rows are the first d_v values of the K rows (MLA latent)
#define ATTN_SINKS 2u   // one sink logit per query head joins the softmax denominator
#define ATTN_QUANT 4u   // the reduction also writes the output as Q8_1 blocks (d_v % 32 == 0)

static_assert(sizeof(AttnParams) == 80, "AttnParams must be 80 bytes");

// The element-wise steps of a decode step (decode.cu); each kernel reads the fields it names.
struct DecodeParams {
    u32 n;       // values per row (rmsnorm, kv_write, copy2d), elements (add, glu, argmax);
                 // rope: the first rotated value of each head; delta_conv: channels;
                 // delta_rule: key head size
    u32 rows;    // rows (rmsnorm, copy2d), heads (rope, kv_write); delta_rule: value heads
    u32 head;    // values from one head (row) to the next in the source (rope, kv_write,
                 // copy2d); delta_rule: key heads
    u32 dims;    // rope: values rotated per head; copy2d: destination row stride;
                 // delta_conv: taps; delta_rule: value head size
    u32 pos;     // rope: position; kv_write: the token written; copy2d: source row offset
    u32 tokens;  // kv_write: cache rows per head; copy2d: destination row offset
    u32 flags;   // DEC_* bits below
    u32 dtype;   // kv_write: DEC_KV_* element type
    float eps;    // rmsnorm, delta_rule's L2 norm
    float theta;  // rope base
    // qkv_heads only (the other kernels leave them 0):
    u32 kv_heads;  // K and V heads (`rows` are the query heads, `n` values each of Q and K)
    u32 d_v;       // values per V head
    u32 q_stride;  // values from one query head to the next in q (2 * n with an output gate)
    u32 q_off;     // the first value of q, k and v in their buffers (one fused projection's
    u32 k_off;     // output holds all three)
    u32 v_off;
};

#define DEC_NEOX 1u  // rope: pairs (i, i + dims/2), else (2i, 2i + 1)
#define DEC_GELU 2u  // glu: GELU (tanh) instead of SiLU
#define DEC_SIGMOID 4u  // glu: sigmoid instead of SiLU
#define DEC_QUANT 8u    // rmsnorm, glu: also write the output as Q8_1 blocks (the next GEMV's
                        // input), so no separate quantization launch is needed
#define DEC_QK_NORM 16u  // qkv_heads: per-head RMSNorm of Q and K before RoPE
#define DEC_BIAS 32u     // qkv_heads: add the Q, K and V biases first
#define DEC_PAIRED 64u   // glu: u is the n values after g in the same buffer (stacked gate/up)

#define DEC_KV_F32 0u
#define DEC_KV_F16 1u
#define DEC_KV_BF16 2u
#define DEC_KV_Q8_0 3u

static_assert(sizeof(DecodeParams) == 64, "DecodeParams must be 64 bytes");
