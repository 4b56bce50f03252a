//! membound-spec: pure data and arithmetic that a decode benchmark must know before any kernel
//! runs — tensor storage types ([`dtype`]), model architectures ([`model`], loaded by
//! [`registry`] from `models/*.toml`), the tensors a GGUF file of the model holds
//! ([`tensors`]) and the types a quantization recipe gives them ([`recipe`]), KV-cache layouts
//! ([`kv`]), per-token byte accounting and the roofline ([`bytes`]), one MoE layer as the kernels
//! run it ([`moe`]), one decode-attention layer in a KV layout ([`attention`]), the hardware table
//! ([`hardware`]) and the memory-fit planner ([`fit`]).
//!
//! Siblings: `membound-quant` (ggml block layouts and quantization), `membound-gguf` (GGUF files
//! to specs), `membound-cpu` / `membound-cuda` (kernels), `membound-bench` (the harness).
//! This crate runs no kernels; the only machine it reads is the host CPU entry of [`hardware`].

pub mod attention;
pub mod bytes;
pub mod dtype;
pub mod fit;
pub mod hardware;
pub mod kv;
pub mod model;
pub mod moe;
pub mod recipe;
pub mod registry;
pub mod tensors;
pub mod traffic;

pub use dtype::DType;
pub use kv::KvLayout;
pub use model::ModelSpec;
pub use recipe::Recipe;
