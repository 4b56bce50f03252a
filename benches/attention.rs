//! attention: one layer's decode attention (one new token against d cached tokens) in each KV
//! layout, on every backend.
//!
//! Ids `attention/{model}-{layout}-{kv type}-d{depth}/{backend}`: GLM-4.7-Flash and
//! DeepSeek-V2-Lite in `mla-latent` (llama.cpp / FlashMLA: one 576-value row per token, V a
//! view of its 512-value latent, queries absorbed into latent space), `mla-split` (Ollama-like:
//! the latent stored again as V) and `expanded-mha` (per-head K and V after the
//! up-projection); Qwen3-30B-A3B, Llama-3.1-70B and gpt-oss-120b in `gqa` (gpt-oss with its
//! sinks, and `gqa-swa` for its 128-token sliding layers). Cache types f16 and q8_0 (bf16 at
//! `full`); depths 1k, 4k, 32k (to 256k at `MEMBOUND_SCALE=full`; a case that does not fit
//! says so). Bytes: `membound_spec::attention::AttnShape::bytes` — the attended K and V rows
//! (the layer's cache as `membound fit` counts it), queries and outputs. The GPU kernel splits
//! the context over the SMs and reduces (flash-decoding); at 1k the reduction's launch is part
//! of the time. Every case is checked against the f64 reference before it is timed, and
//! rotates through enough caches to be ≥ 4× the last-level cache. A read is sampled around
//! each model's cases (the paired reference). The comparison table (KV bytes, µs per token
//! per layer, each layout against the native one, the depth where attention costs as much as
//! reading the layer's Q8_0 weights) is printed and written to `attention-table.json`.

use membound_bench::attention_suite::{self, AttnTable};
use membound_bench::machine;

fn main() {
    let (scale, backends, mut run) = membound_bench::start("attention");
    let models = membound_bench::models_or_exit();
    let mut tables: Vec<AttnTable> = Vec::new();
    for gpu in &backends.gpus {
        tables.push(attention_suite::attention(&mut run, gpu, &models));
    }
    if let Some(cpu) = &backends.cpu {
        tables.push(attention_suite::attention(&mut run, cpu, &models));
    }
    for t in &tables {
        println!("{}", t.markdown());
    }
    attention_suite::write_tables(&tables, machine::describe(&backends, scale));
    let code = membound_bench::finish(run, &backends, scale);
    std::process::exit(code);
}
