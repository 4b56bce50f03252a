//! decode: one whole per-token decode step of a model — is t/s bandwidth ÷ bytes per token?
//!
//! Ids `decode/{model}-{recipe}-d{depth}[-sampled]/{backend}`: every listed model of `models/`
//! at its common quantizations (GLM-4.7-Flash Q8_0 and Q4_K_M, Qwen3-Coder-30B-A3B Q8_0,
//! gpt-oss-20b/120b MXFP4_MOE, Qwen3-Coder-Next, Llama-3.1-8B/70B, Qwen3-32B, Gemma-3-27B,
//! Mistral-Small-24B, Llama-3.2-3B, Qwen2.5-Coder-7B, Gemma-3-4B, Llama-3.3-70B and
//! DeepSeek-V3 at Q4_K_M; `quick`: Llama-3.2-3B, Qwen3-Coder-30B-A3B
//! and GLM-4.7-Flash), at depths 0, 4096 and 32768 (`full`: to 256k within each model's
//! context). The step is the real computation (`membound_decode::CpuDecoder`) over synthetic
//! weights stored as the recipe stores them, the KV cache in F16 in the model's native layout.
//! A model that does not fit the memory budget is built as a sample of its layers, scaled by
//! layer counts to the whole model (`sampled` in the id); one model that fits also runs as a
//! forced sample, and the table gives the estimate's error. Bytes per token:
//! `membound_spec::bytes::per_token` (`membound spec`'s weights + the KV read at the depth).
//! A read is sampled around each case; the table (t/s, ms/token, GiB/token, roofline at the
//! paired read) is printed and written to `decode-table.json`. `MEMBOUND_GGUF=file` adds the
//! file's cases (candle-transformers' model of it as the depth-0 peer), and
//! `MEMBOUND_LLAMA_BENCH=/path/to/llama-bench` runs llama.cpp's CPU backend on the same file
//! with the same threads (its tg32 rate in the table, and membound's ratio to it).
//!
//! GPUs: the same step as one launch plan of membound's kernels (GEMV, attention, MoE and the
//! element-wise kernels of `kernels/decode.cu`), replayed as a CUDA graph between events; GQA,
//! MLA and Gated DeltaNet models; one that does not fit the device is sampled as on the CPU
//! (the sampled step timed whole, its layer time shared out by each layer's time alone). Types
//! without a CUDA GEMV (Q5_0/Q5_K) are skipped with the reason.
//!
//! Placements (`membound_decode::placement`), on the first GPU: Llama-3.1-8B Q4_K_M,
//! Qwen3-30B-A3B Q8_0 and GLM-4.7-Flash Q8_0 split in half across two GPUs (`…-split{at}`,
//! llama.cpp's layer split; `…-split{at}-one-gpu` where there is one GPU, which then holds both
//! halves) and with their first 4 layers on the CPU (`…-cpu4`, the seed's Ollama case; 112k at
//! `full`), timed as wall time of whole steps; the residual stream crosses through host memory.

use membound_bench::{decode_suite, machine};

fn main() {
    let (scale, backends, mut run) = membound_bench::start("decode");
    let models = membound_bench::models_or_exit();
    let mut rows = Vec::new();
    for gpu in &backends.gpus {
        rows.extend(decode_suite::decode_gpu(&mut run, gpu, &models));
    }
    if let Some(first) = backends.gpus.first() {
        rows.extend(decode_suite::decode_placed(
            &mut run,
            first,
            backends.gpus.get(1),
            backends.cpu.as_ref(),
            &models,
        ));
    }
    if let Some(cpu) = &backends.cpu {
        rows.extend(decode_suite::decode(&mut run, cpu, &models));
    }
    println!("{}", decode_suite::describe(&rows));
    machine::write_extra(
        "decode-table.json",
        "decode",
        "decode",
        &rows,
        machine::describe(&backends, scale),
    );
    let code = membound_bench::finish(run, &backends, scale);
    std::process::exit(code);
}
