//! The tensors a model's GGUF file holds, named as llama.cpp names them, with ggml shapes
//! (`dims[0]` is the contiguous input dimension, `dims[1]` the output rows, `dims[2]` the
//! experts of a stacked expert tensor).
//!
//! The inventory is what [`crate::recipe`] assigns storage types to and what
//! [`crate::bytes`] sums, so "bytes per token" and a real file's tensor table are counted the
//! same way. Small per-layer vectors (norms, biases) are included so totals match files.

use serde::Serialize;

use crate::model::{AttentionKind, LayerKind, ModelSpec, RouterScoring};

/// What a tensor is for: decides its storage type in a recipe and how much of it a token reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorClass {
    /// Token embeddings: one row is read per token.
    TokenEmbd,
    /// Output projection (lm_head).
    Output,
    /// Norm weights (always F32).
    Norm,
    /// Biases and other 1-D parameters such as attention sinks (always F32).
    Vector,
    /// Attention projections (Q, K, V, O, MLA down/up projections).
    Attention,
    /// Linear-attention (Gated DeltaNet) projections.
    LinearAttention,
    /// MoE router (kept in F32 by llama.cpp's quantizer).
    Router,
    /// Dense FFN matrices.
    DenseFfn,
    /// Routed expert matrices, stacked over experts: only `top_k / n_experts` is read per token.
    Experts,
    /// Shared expert matrices (always active).
    SharedExpert,
    /// Per-expert biases stacked over experts (gpt-oss `ffn_*_exps.bias`, F32): llama.cpp adds
    /// them with `ggml_add_id`, so only the selected experts' rows are read.
    ExpertBias,
}

/// One tensor of the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorDesc {
    /// GGUF tensor name, e.g. `blk.3.ffn_down_exps.weight`.
    pub name: String,
    /// Name without the `blk.N.` prefix and `.weight`/`.bias` suffix, e.g. `ffn_down_exps`.
    pub base: &'static str,
    /// Layer index, `None` for model-level tensors.
    pub layer: Option<u32>,
    /// What it is for.
    pub class: TensorClass,
    /// ggml dimensions (`ne`), innermost first.
    pub dims: Vec<u64>,
}

impl TensorDesc {
    /// Number of values.
    pub fn values(&self) -> u64 {
        self.dims.iter().product()
    }
}

struct Builder {
    out: Vec<TensorDesc>,
    layer: Option<u32>,
}

impl Builder {
    /// Adds `base.suffix` (`base` alone for an empty suffix), in the current block.
    fn push(&mut self, base: &'static str, suffix: &str, class: TensorClass, dims: &[u64]) {
        let dotted = if suffix.is_empty() {
            base.to_string()
        } else {
            format!("{base}.{suffix}")
        };
        let name = match self.layer {
            Some(i) => format!("blk.{i}.{dotted}"),
            None => dotted,
        };
        self.out.push(TensorDesc {
            name,
            base,
            layer: self.layer,
            class,
            dims: dims.to_vec(),
        });
    }
    fn weight(&mut self, base: &'static str, class: TensorClass, dims: &[u64]) {
        self.push(base, "weight", class, dims);
    }
    fn bias(&mut self, base: &'static str, dims: &[u64]) {
        self.push(base, "bias", TensorClass::Vector, dims);
    }
    fn norm(&mut self, base: &'static str, n: u64) {
        self.push(base, "weight", TensorClass::Norm, &[n]);
    }
}

/// Every tensor of the model in file order (embeddings, blocks, output).
pub fn inventory(m: &ModelSpec) -> Vec<TensorDesc> {
    use TensorClass::*;
    let d = m.hidden;
    let mut b = Builder {
        out: Vec::new(),
        layer: None,
    };
    b.weight("token_embd", TokenEmbd, &[d, m.vocab]);
    for i in 0..m.n_layers {
        b.layer = Some(i);
        b.norm("attn_norm", d);
        match m.layer_kind(i) {
            LayerKind::Linear => linear_attention(&mut b, m),
            LayerKind::Full | LayerKind::Sliding => attention(&mut b, m),
        }
        // llama.cpp's names: gpt-oss and Qwen3-Next call the norm before the FFN their
        // post-attention norm; Gemma 3 norms the attention's and the FFN's outputs as well.
        match m.arch.as_str() {
            "gpt-oss" | "qwen3next" => b.norm("post_attention_norm", d),
            "gemma3" => {
                b.norm("post_attention_norm", d);
                b.norm("ffn_norm", d);
            }
            _ => b.norm("ffn_norm", d),
        }
        ffn(&mut b, m, i);
        if m.arch == "gemma3" {
            b.norm("post_ffw_norm", d);
        }
    }
    b.layer = None;
    b.norm("output_norm", d);
    if !m.tied_embeddings {
        b.weight("output", Output, &[d, m.vocab]);
    }
    b.out
}

fn attention(b: &mut Builder, m: &ModelSpec) {
    use TensorClass::*;
    let a = &m.attention;
    let d = m.hidden;
    let h = a.n_heads;
    match a.kind {
        AttentionKind::Gqa => {
            let hd = a.head_dim.unwrap_or(0);
            let vd = m.v_head_dim();
            let kv = m.kv_heads();
            let q_rows = h * hd * if a.output_gate { 2 } else { 1 };
            b.weight("attn_q", Attention, &[d, q_rows]);
            b.weight("attn_k", Attention, &[d, kv * hd]);
            b.weight("attn_v", Attention, &[d, kv * vd]);
            b.weight("attn_output", Attention, &[h * vd, d]);
            if a.bias {
                b.bias("attn_q", &[q_rows]);
                b.bias("attn_k", &[kv * hd]);
                b.bias("attn_v", &[kv * vd]);
                b.bias("attn_output", &[d]);
            }
            if a.qk_norm {
                b.norm("attn_q_norm", hd);
                b.norm("attn_k_norm", hd);
            }
        }
        AttentionKind::Mla => {
            let nope = a.qk_nope_head_dim.unwrap_or(0);
            let rope = a.qk_rope_head_dim.unwrap_or(0);
            let kvr = a.kv_lora_rank.unwrap_or(0);
            let vd = m.v_head_dim();
            match a.q_lora_rank {
                Some(qr) => {
                    b.weight("attn_q_a", Attention, &[d, qr]);
                    b.norm("attn_q_a_norm", qr);
                    b.weight("attn_q_b", Attention, &[qr, h * (nope + rope)]);
                }
                None => b.weight("attn_q", Attention, &[d, h * (nope + rope)]),
            }
            b.weight("attn_kv_a_mqa", Attention, &[d, kvr + rope]);
            b.norm("attn_kv_a_norm", kvr);
            // llama.cpp splits kv_b into per-head K and V up-projections for the absorbed path.
            b.weight("attn_k_b", Attention, &[nope, kvr, h]);
            b.weight("attn_v_b", Attention, &[kvr, vd, h]);
            b.weight("attn_output", Attention, &[h * vd, d]);
        }
    }
    if a.sinks {
        b.push("attn_sinks", "weight", Vector, &[h]);
    }
}

fn linear_attention(b: &mut Builder, m: &ModelSpec) {
    use TensorClass::*;
    let Some(la) = &m.linear_attention else {
        return;
    };
    let d = m.hidden;
    let qk = la.n_k_heads * la.k_head_dim;
    let v = la.n_v_heads * la.v_head_dim;
    let conv_channels = 2 * qk + v;
    // llama.cpp's qwen3next naming: in_proj_qkvz split into attn_qkv and attn_gate (z).
    b.weight("attn_qkv", LinearAttention, &[d, conv_channels]);
    b.weight("attn_gate", LinearAttention, &[d, v]);
    b.weight("ssm_ba", LinearAttention, &[d, 2 * la.n_v_heads]);
    b.push(
        "ssm_conv1d",
        "weight",
        Vector,
        &[la.conv_kernel, conv_channels],
    );
    b.push("ssm_dt", "bias", Vector, &[la.n_v_heads]);
    // llama.cpp's `blk.N.ssm_a` (-exp(A_log)) has no `.weight` suffix.
    b.push("ssm_a", "", Vector, &[la.n_v_heads]);
    b.norm("ssm_norm", la.v_head_dim);
    b.weight("ssm_out", LinearAttention, &[v, d]);
}

fn ffn(b: &mut Builder, m: &ModelSpec, i: u32) {
    use TensorClass::*;
    let d = m.hidden;
    match &m.ffn.moe {
        Some(moe) if m.is_moe_layer(i) => {
            let (e, ei) = (moe.n_experts, moe.expert_intermediate);
            b.weight("ffn_gate_inp", Router, &[d, e]);
            if moe.router_bias {
                // A sigmoid router's selection-only bias is llama.cpp's `exp_probs_b`; a
                // softmax router's (gpt-oss) is added to the logits.
                let base = if moe.router == RouterScoring::Sigmoid {
                    "exp_probs_b"
                } else {
                    "ffn_gate_inp"
                };
                b.bias(base, &[e]);
            }
            b.weight("ffn_gate_exps", Experts, &[d, ei, e]);
            b.weight("ffn_up_exps", Experts, &[d, ei, e]);
            b.weight("ffn_down_exps", Experts, &[ei, d, e]);
            if moe.expert_bias {
                b.push("ffn_gate_exps", "bias", ExpertBias, &[ei, e]);
                b.push("ffn_up_exps", "bias", ExpertBias, &[ei, e]);
                b.push("ffn_down_exps", "bias", ExpertBias, &[d, e]);
            }
            if moe.n_shared > 0 {
                let si = moe.n_shared * moe.shared_intermediate.unwrap_or(ei);
                if moe.shared_gate {
                    b.weight("ffn_gate_inp_shexp", Router, &[d]);
                }
                b.weight("ffn_gate_shexp", SharedExpert, &[d, si]);
                b.weight("ffn_up_shexp", SharedExpert, &[d, si]);
                b.weight("ffn_down_shexp", SharedExpert, &[si, d]);
            }
        }
        _ => {
            let f = m.ffn.intermediate.unwrap_or(0);
            b.weight("ffn_gate", DenseFfn, &[d, f]);
            b.weight("ffn_up", DenseFfn, &[d, f]);
            b.weight("ffn_down", DenseFfn, &[f, d]);
        }
    }
}

/// Total parameters (values of every tensor).
pub fn params_total(tensors: &[TensorDesc]) -> u64 {
    tensors.iter().map(TensorDesc::values).sum()
}
