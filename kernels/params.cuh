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
