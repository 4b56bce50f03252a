//! dense: quantized GEMV at decode shapes (and GEMM at prefill batches) on every backend.
//!
//! Ids `dense/{case}/{backend}`:
//! - `{type}-{rows}x{cols}`: y = W·x, W stored in ggml's layout of `type` (f32, f16, bf16,
//!   q8_0, q4_k, q6_k, mxfp4), x and y f32; the activation is quantized as ggml does
//!   (Q8_0 / Q8_K on the CPU, Q8_1 on the GPU, as llama.cpp's mmvq).
//! - `candle-{type}-{rows}x{cols}` (CPU): candle-core's `QMatMul` on the same weight bytes, the
//!   peer in the same run. `cublas-{type}-{rows}x{cols}` (GPU): cuBLAS on f16/bf16.
//! - `gemm-{type}-{rows}x{cols}-b{batch}`: a prefill batch of activations (CPU).
//!
//! Shapes are the decode GEMVs of the models in `models/` (rows = outputs): 4096x4096
//! (Llama-3.1-8B attention), 14336x4096 and 4096x14336 (its FFN), 25600x5120 (Qwen3-32B FFN),
//! 28672x8192 (Llama-3.1-70B FFN). Each case rotates through enough distinct copies of W that
//! the working set is ≥ 4× the last-level cache. Bytes: `membound_spec::traffic::gemv_bytes`
//! (weights as stored, x read, y written). Every kernel's output is checked before timing; a
//! failed case is reported and skipped. A read of the main bandwidth size is sampled before and
//! after each weight type's cases, and each case's fraction of it goes into `machine-dense.json` and
//! the summary.

use membound_bench::suites;

fn main() {
    let (scale, backends, mut run) = membound_bench::start("dense");
    for gpu in &backends.gpus {
        suites::dense(&mut run, gpu);
    }
    if let Some(cpu) = &backends.cpu {
        suites::dense(&mut run, cpu);
    }
    let code = membound_bench::finish(run, &backends, scale);
    std::process::exit(code);
}
