//! membound-cpu: rayon CPU kernels — the reference every GPU kernel of `membound-cuda` is
//! checked against, and the CPU backend of the benches (`membound-bench`).
//!
//! - [`bandwidth`]: STREAM-style `read`, `write`, `copy`, `triad` on an explicit
//!   [`rayon::ThreadPool`], with one byte convention ([`bandwidth::bytes_moved`]).
//! - [`CpuGemv`]: GEMV and GEMM over ggml-layout weights (F32, F16, BF16, Q8_0, Q4_K, Q6_K,
//!   MXFP4 with SIMD paths; Q5_0 and Q5_K, llama.cpp's fallbacks, portable only; blocks from
//!   `membound-quant`), activations quantized as ggml does.
//! - [`attention`]: decode attention over a KV cache in any layout (GQA, MLA latent / split,
//!   expanded MHA; F32, F16, BF16, Q8_0 rows), split-K across the pool, and its f64 reference.
//! - [`moe`]: one MoE layer (router, top-k, the selected experts of stacked tensors, shared
//!   expert) for a batch of decode tokens, and the router every backend follows.
//! - [`DotKernel`]: the row dot products, AVX2 on x86-64, NEON (with `sdot` where present) on
//!   aarch64, portable scalar everywhere; [`Isa`] picks one at run time
//!   (`MEMBOUND_CPU_ISA=scalar` forces the portable path), [`simd_level`] names it.

pub mod attention;
pub mod bandwidth;
mod dot;
mod isa;
mod matmul;
pub mod moe;
mod scratch;

pub use dot::{DotKernel, SUPPORTED_DTYPES, act_dtype};
pub use isa::{ISA_ENV, Isa, simd_level};
pub use matmul::CpuGemv;

use membound_quant::ops::QuantError;
use membound_spec::DType;

/// Why a kernel call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuError {
    /// The weight type has no CPU kernel here.
    #[error(
        "{0} has no membound-cpu kernel (supported: f32, f16, bf16, q8_0, q5_0, q4_k, q5_k, q6_k, mxfp4)"
    )]
    Unsupported(DType),
    /// The requested instruction set is not available on this CPU.
    #[error("instruction set {0} is not available on this CPU")]
    IsaUnavailable(Isa),
    /// A row length is not a whole number of blocks.
    #[error("{cols} columns is not a whole number of {dtype} blocks")]
    NotBlockMultiple {
        /// The block type.
        dtype: DType,
        /// The row length in values.
        cols: usize,
    },
    /// A buffer has the wrong length.
    #[error("{what}: expected {expected} elements, got {got}")]
    Length {
        /// Which buffer.
        what: &'static str,
        /// Elements (values or bytes) it must hold.
        expected: usize,
        /// Elements it holds.
        got: usize,
    },
    /// Weights that do not match the layer shape they are given for.
    #[error("{0}")]
    Shape(String),
    /// Quantizing weights or activations failed.
    #[error("quantization failed: {0}")]
    Quant(#[from] QuantError),
}
