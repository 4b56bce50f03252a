//! membound-decode: one whole per-token decode step of a model, composed from membound's
//! kernels — the real computation, so "t/s ≈ bandwidth ÷ bytes per token" is measured, not
//! assumed.
//!
//! - [`source`]: the weights, from a GGUF file ([`source::GgufSource`]) or a spec's synthetic
//!   weights under a recipe ([`source::SyntheticSource`]).
//! - [`CpuDecoder`]: the step on the CPU — embedding row; per layer RMSNorm, the attention
//!   projections (GQA with biases, QK-norm, sinks and Qwen3-Next's output gate and partial
//!   RoPE; or MLA with the query absorbed into the latent space), RoPE, the KV-cache append,
//!   decode attention over the cache in the chosen layout (`membound_cpu::attention`) — or a
//!   Gated DeltaNet layer ([`delta`]) —, the output projection and residual, RMSNorm, the dense
//!   FFN or the MoE layer (`membound_cpu::moe`); final norm, lm_head, argmax. Layers may be a
//!   sample of the model's ([`sample::LayerSample`]); each layer's time is kept so a sampled
//!   model's step time can be scaled to the whole model.
//! - [`sample`]: which layers a sample builds and how much each stands for.
//! - [`device`]: the same step as one launch plan of the CUDA kernels (GQA and MLA layers),
//!   run by a GPU or by the host build of the kernels; [`placement`]: a step's layers split
//!   across two devices, or its first layers on the CPU.
//!
//! Checked (tests/): token by token against candle-transformers' quantized Llama and Qwen3 on
//! generated GGUF files (K-quant and F16 weights to 1e-6 of the logits) and against its
//! DeepSeek-V2 (MLA with `kv_b_proj` fused, DeepSeek's MoE with shared experts) on F32 weights
//! (6e-7, latent and split caches alike); a sliding ring equals the window of a full cache; the
//! Gated DeltaNet token against transformers' recurrence written out in f64; the launch plan
//! (whole, split, offloaded) against the CPU step.
//!
//! Not yet: the expanded-MHA layout, Gemma 3's post-norms and soft-capping, gpt-oss's YaRN
//! scaling (none changes the bytes a step reads), Gated DeltaNet on the device path.

pub mod delta;
pub mod device;
mod model;
pub mod ops;
pub mod placement;
pub mod sample;
pub mod source;

pub use model::{CpuDecoder, StepOptions};

use membound_cpu::CpuError;

/// Why a decode step could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The model uses something the step does not implement.
    #[error("{model}: {what} is not implemented in the decode step")]
    Unsupported {
        /// The model.
        model: String,
        /// What.
        what: String,
    },
    /// A tensor the step needs is missing.
    #[error("{from}: tensor `{name}` is missing")]
    Missing {
        /// Where the tensors come from.
        from: String,
        /// The tensor.
        name: String,
    },
    /// A tensor is present but unusable.
    #[error("tensor `{name}`: {problem}")]
    Tensor {
        /// The tensor.
        name: String,
        /// Why.
        problem: String,
    },
    /// A kernel refused its inputs.
    #[error("{0}")]
    Kernel(#[from] CpuError),
    /// A bad request (token, position, layout).
    #[error("{0}")]
    Request(String),
}
