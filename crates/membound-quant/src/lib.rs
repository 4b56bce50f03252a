//! membound-quant: ggml's quant block layouts ([`blocks`]) and bit-exact CPU quantization and
//! dequantization for Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K, MXFP4, the Q8_1 / Q8_K activation types
//! and F16 / BF16, plus ggml's generic scalar dot products ([`ops::vec_dot`]).
//! Quantizers are ggml's `quantize_row_*_ref` (no importance matrix).
//!
//! Siblings: `membound-spec` (the [`membound_spec::DType`] table), `membound-gguf` (reads and
//! writes these blocks in files), `membound-cpu` / `membound-cuda` (kernels over them).

pub mod blocks;
pub mod data;
pub mod fp;
mod kquant;
pub mod mxfp4;
pub mod ops;
pub mod q4_0;
pub mod q4_k;
pub mod q5_0;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;
mod util;
