//! moe: one mixture-of-experts layer per decode token on every backend — does its time follow
//! the active parameters or the total?
//!
//! Ids `moe/{case}/{backend}`:
//! - `{model}-{recipe}`: the first MoE layer of each MoE model in `models/` at its real shapes
//!   and the recipe's storage types (router F32; gpt-oss MXFP4, the others Q8_0 and Q4_K_M):
//!   router GEMV, scoring as the model does it (softmax, sigmoid with its correction bias,
//!   gpt-oss's softmax over the selected), top-k, only the selected experts' gate/up/down rows
//!   of the stacked tensors (llama.cpp's `mul_mat_id`), the activation (gpt-oss: clamped SwiGLU
//!   with biases), the weighted sum and the shared expert.
//! - `qwen3-30b-a3b-q8_0-{sweep}`: `k{n}` top-k at 128 experts, `e{n}` total experts at top-8,
//!   `zipf` / `fixed` routing, `b{n}` a batch of n tokens routed independently.
//! - `{case}-dense`: three GEMVs of the same expert bytes (the peer of the goal cases).
//!
//! Tokens are steered to experts drawn per [`membound_bench::moe::Pattern`] (uniform unless
//! the id says otherwise). Bytes: `membound_spec::moe::MoeLayer::bytes` — the distinct experts
//! read, the router, the shared expert, x and y. Every case is checked against the f64
//! reference before it is timed and rotates through enough copies of the whole layer, each
//! holding 16 batches routed differently, that the experts it touches are ≥ 4× the last-level
//! cache. A read is sampled around each case (the
//! paired reference). The verdict (time per token fitted against active and against total
//! bytes over the top-k and experts sweeps) is printed and written to `moe-verdict.json`.

use membound_bench::machine;
use membound_bench::moe_suite::{self, MoeVerdict};

fn main() {
    let (scale, backends, mut run) = membound_bench::start("moe");
    let models = membound_bench::models_or_exit();
    let mut verdicts: Vec<MoeVerdict> = Vec::new();
    for gpu in &backends.gpus {
        verdicts.push(moe_suite::moe(&mut run, gpu, &models));
    }
    if let Some(cpu) = &backends.cpu {
        verdicts.push(moe_suite::moe(&mut run, cpu, &models));
    }
    for v in &verdicts {
        println!("{}", v.describe());
    }
    moe_suite::write_verdicts(&verdicts, machine::describe(&backends, scale));
    let code = membound_bench::finish(run, &backends, scale);
    std::process::exit(code);
}
