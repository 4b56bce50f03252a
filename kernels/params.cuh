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
};

// Activation quantization (gemv.cu): n_blocks Q8_1 blocks of 32 values.
struct QuantizeParams {
    u64 n_blocks;
};

static_assert(sizeof(StreamParams) == 16, "StreamParams must be 16 bytes");
static_assert(sizeof(GemvParams) == 16, "GemvParams must be 16 bytes");
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

static_assert(sizeof(MoeParams) == 64, "MoeParams must be 64 bytes");
