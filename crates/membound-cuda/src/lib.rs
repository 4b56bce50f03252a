//! membound-cuda: the CUDA backend of membound, on cudarc with dynamic loading, so it builds
//! and its host tests run on machines without CUDA.
//!
//! - [`probe`]: is there a usable driver (CUDA 12.8+) and which devices ([`DeviceInfo`]); never
//!   panics. [`read_clocks`] reads current clocks for run metadata.
//! - [`Gpu`]: one device: context, stream, kernels built by NVRTC from `kernels/*.cu` for the
//!   device's own `sm_XY`, buffers, CUDA-event timing ([`Gpu::time_iters`]) and NVTX ranges.
//! - [`bandwidth`]: read / write / copy / triad and the driver's device-to-device copy, with
//!   [`bytes_moved`].
//! - [`gemv`]: `y = W·x` for F16, BF16, Q8_0, Q4_K, Q6_K, MXFP4 (llama.cpp's mmvq scheme for the
//!   quantized types) and the cuBLAS peer.
//! - [`attention`]: decode attention over a KV cache in any layout, split over the context
//!   (flash-decoding) with a reduction; [`attention::attn_plan`] fixes its geometry.
//! - [`moe`]: one MoE layer for a batch of decode tokens (router, top-k, the selected experts of
//!   stacked tensors, shared expert), its launch sequence as data ([`moe::moe_launches`]).
//! - [`decode`]: the element-wise steps of a decode step (RMSNorm, RoPE, residual add, gated
//!   activation, KV-cache append, argmax): launch builders over `kernels/decode.cu`.
//! - [`nvrtc`]: the NVRTC build; [`compile_all`] checks every kernel for an architecture without
//!   a GPU (`scripts/nvrtc-check.sh`).
//!
//! Siblings: `membound-spec` ([`membound_spec::DType`]), `membound-quant` (block layouts,
//! host quantization), `membound-cpu` (the CPU reference every kernel here is tested against),
//! `membound-bench` (the harness that times these operations).

pub mod attention;
pub mod bandwidth;
pub mod decode;
mod error;
pub mod gemv;
mod gpu;
pub mod moe;
pub mod nvrtc;
pub mod nvtx;
pub mod params;
mod probe;

pub use bandwidth::{StreamOp, bytes_moved};
pub use error::{CudaError, Result};
pub use gpu::{Gpu, Kernel};
pub use nvrtc::{CompiledKernel, compile_all};
pub use probe::{
    Clocks, DeviceInfo, MIN_DRIVER_VERSION, Probe, format_cuda_version, probe, read_clocks,
};

/// Re-exported so users name buffers without depending on cudarc directly.
pub use cudarc::driver::{CudaSlice, LaunchConfig};
