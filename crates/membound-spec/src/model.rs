//! Model architectures as loaded from `models/*.toml`: the numbers a decode step depends on.
//!
//! A spec names its layers' attention kinds with a repeating `layer_pattern` (`F` full
//! attention, `S` sliding-window attention, `L` linear attention such as Gated DeltaNet), its
//! attention (GQA or MLA), its FFN (dense, MoE with shared experts and dense-first layers) and
//! the published facts it is checked against. [`ModelSpec::validate`] rejects inconsistent specs
//! with a message that names the field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One model's architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Short id used on the command line and in benchmark ids, e.g. `glm-4.7-flash`.
    pub name: String,
    /// Human name, e.g. `GLM-4.7-Flash`.
    pub display_name: String,
    /// GGUF `general.architecture` of llama.cpp's conversion (`deepseek2`, `qwen3moe`, …).
    pub arch: String,
    /// Where the numbers come from (config.json URLs, papers, model cards).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Transformer blocks (excluding any MTP / next-token-prediction layer).
    pub n_layers: u32,
    /// Hidden size (`hidden_size`, GGUF `embedding_length`).
    pub hidden: u64,
    /// Vocabulary size.
    pub vocab: u64,
    /// Whether the output projection reuses the token embeddings.
    #[serde(default)]
    pub tied_embeddings: bool,
    /// Longest supported context (`max_position_embeddings`).
    pub max_context: u64,
    /// Attention kind of each layer, repeated over the layers: `F` full, `S` sliding window,
    /// `L` linear attention. `"F"` (the default) makes every layer full attention; gpt-oss is
    /// `"SF"`, Gemma 3 `"SSSSSF"`, Qwen3-Next `"LLLF"`.
    #[serde(default = "default_pattern")]
    pub layer_pattern: String,
    /// Window of the `S` layers, in tokens.
    #[serde(default)]
    pub sliding_window: Option<u64>,
    /// Softmax attention of the `F` and `S` layers.
    pub attention: Attention,
    /// Linear-attention mixer of the `L` layers.
    #[serde(default)]
    pub linear_attention: Option<LinearAttention>,
    /// Feed-forward network.
    pub ffn: Ffn,
    /// Published figures this spec is checked against.
    #[serde(default)]
    pub published: Published,
}

fn default_pattern() -> String {
    "F".to_string()
}

/// How the softmax-attention layers store and read keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// Grouped-query attention (MHA and MQA are its extremes).
    Gqa,
    /// DeepSeek-style multi-head latent attention.
    Mla,
}

/// Softmax attention. GQA fields: `n_kv_heads`, `head_dim`, optional `v_head_dim`.
/// MLA fields: `q_lora_rank` (absent: Q is projected directly), `kv_lora_rank`,
/// `qk_nope_head_dim`, `qk_rope_head_dim`, `v_head_dim`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attention {
    /// GQA or MLA.
    pub kind: AttentionKind,
    /// Query heads.
    pub n_heads: u64,
    /// GQA: key/value heads.
    #[serde(default)]
    pub n_kv_heads: Option<u64>,
    /// GQA: query/key head dimension.
    #[serde(default)]
    pub head_dim: Option<u64>,
    /// Value head dimension (GQA: defaults to `head_dim`; MLA: required).
    #[serde(default)]
    pub v_head_dim: Option<u64>,
    /// MLA: rank of the query compression (absent when Q is projected directly).
    #[serde(default)]
    pub q_lora_rank: Option<u64>,
    /// MLA: rank of the shared key/value latent (512 for DeepSeek-V2/V3 and GLM-4.7-Flash).
    #[serde(default)]
    pub kv_lora_rank: Option<u64>,
    /// MLA: per-head query/key dimension without rotary embedding.
    #[serde(default)]
    pub qk_nope_head_dim: Option<u64>,
    /// MLA: rotary query/key dimension (shared across heads for the key).
    #[serde(default)]
    pub qk_rope_head_dim: Option<u64>,
    /// Biases on the Q/K/V/O projections (gpt-oss, Qwen2).
    #[serde(default)]
    pub bias: bool,
    /// Learned attention-sink logits, one per query head (gpt-oss).
    #[serde(default)]
    pub sinks: bool,
    /// Gated attention: Q projection doubled to produce an output gate (Qwen3-Next).
    #[serde(default)]
    pub output_gate: bool,
    /// RMS norms on Q and K per head (Qwen3, Gemma 3).
    #[serde(default)]
    pub qk_norm: bool,
}

/// Linear attention with a constant-size recurrent state (Gated DeltaNet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearAttention {
    /// Query/key heads.
    pub n_k_heads: u64,
    /// Value heads.
    pub n_v_heads: u64,
    /// Query/key head dimension.
    pub k_head_dim: u64,
    /// Value head dimension.
    pub v_head_dim: u64,
    /// Width of the causal short convolution.
    pub conv_kernel: u64,
}

/// The shape of one Gated DeltaNet layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaShape {
    /// Key (and query) heads.
    pub n_k: usize,
    /// Value heads (a multiple of `n_k`).
    pub n_v: usize,
    /// Key head size.
    pub d_k: usize,
    /// Value head size.
    pub d_v: usize,
    /// Convolution taps.
    pub conv: usize,
}

impl DeltaShape {
    /// The shape of `la`.
    pub fn of(la: &LinearAttention) -> DeltaShape {
        DeltaShape {
            n_k: la.n_k_heads as usize,
            n_v: la.n_v_heads as usize,
            d_k: la.k_head_dim as usize,
            d_v: la.v_head_dim as usize,
            conv: la.conv_kernel as usize,
        }
    }

    /// Channels of the convolution: q, k and v.
    pub fn channels(&self) -> usize {
        2 * self.n_k * self.d_k + self.n_v * self.d_v
    }

    /// Values of the recurrent state.
    pub fn state_len(&self) -> usize {
        self.n_v * self.d_v * self.d_k
    }
}

/// Feed-forward network: dense (gated SwiGLU/GeGLU, three matrices) or mixture-of-experts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ffn {
    /// Width of the dense FFN (dense models, and the dense-first layers of MoE models).
    #[serde(default)]
    pub intermediate: Option<u64>,
    /// Mixture-of-experts parameters; absent for dense models.
    #[serde(default)]
    pub moe: Option<Moe>,
}

/// How router logits become expert weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterScoring {
    /// Softmax over all experts, then top-k (Qwen3-MoE, DeepSeek-V2).
    Softmax,
    /// Sigmoid scores (plus a selection bias), then top-k (DeepSeek-V3, GLM-4.7-Flash).
    Sigmoid,
    /// Top-k on the logits, then softmax over the k selected (gpt-oss).
    TopkSoftmax,
}

/// Mixture-of-experts FFN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moe {
    /// Routed experts per layer.
    pub n_experts: u64,
    /// Experts selected per token.
    pub top_k: u64,
    /// Width of one routed expert.
    pub expert_intermediate: u64,
    /// Shared experts, always active.
    #[serde(default)]
    pub n_shared: u64,
    /// Width of one shared expert (defaults to `expert_intermediate`).
    #[serde(default)]
    pub shared_intermediate: Option<u64>,
    /// A sigmoid gate scales the shared expert's output (Qwen3-Next).
    #[serde(default)]
    pub shared_gate: bool,
    /// The first this-many layers use the dense FFN (`first_k_dense_replace`).
    #[serde(default)]
    pub dense_first: u32,
    /// Router scoring function.
    pub router: RouterScoring,
    /// Selected weights renormalised to sum to one.
    #[serde(default)]
    pub norm_topk: bool,
    /// Factor applied to the routed output (`routed_scaling_factor`).
    #[serde(default = "one")]
    pub routed_scaling: f64,
    /// Expert projections carry biases (gpt-oss).
    #[serde(default)]
    pub expert_bias: bool,
    /// Router carries a bias (gpt-oss) or a selection-correction bias (sigmoid routers).
    #[serde(default)]
    pub router_bias: bool,
    /// Group-limited routing (`n_group`, DeepSeek-V3: 8): the experts form this many equal
    /// groups and only the best `topk_group` groups are eligible. Absent or 1: no groups.
    #[serde(default)]
    pub n_group: Option<u64>,
    /// Groups kept by group-limited routing (`topk_group`).
    #[serde(default)]
    pub topk_group: Option<u64>,
}

fn one() -> f64 {
    1.0
}

/// Published figures, each with its source in [`ModelSpec::sources`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    /// Total parameters as published.
    #[serde(default)]
    pub params_total: Option<f64>,
    /// Active parameters per token as published.
    #[serde(default)]
    pub params_active: Option<f64>,
    /// Published GGUF file sizes in bytes, by recipe name (`Q4_K_M`, `Q8_0`, `MXFP4_MOE`).
    #[serde(default)]
    pub gguf_bytes: BTreeMap<String, u64>,
    /// Published decode measurements (tokens per second) on named machines.
    #[serde(default)]
    pub decode: Vec<DecodeMeasurement>,
}

/// A published decode rate: what a runtime measured on a machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeMeasurement {
    /// Device ids of the hardware table the model ran on (`["gb10"]`, `["4090", "5070ti"]`).
    pub devices: Vec<String>,
    /// GGUF recipe (`Q4_K_M`) or other weight format.
    pub recipe: String,
    /// Context depth of the measurement, when stated.
    #[serde(default)]
    pub ctx: Option<u64>,
    /// Runtime (`llama.cpp`, `ollama`, `sglang`).
    pub runtime: String,
    /// Tokens per second as published.
    pub tps: f64,
    /// Where it was published.
    pub source: String,
}

/// The attention kind of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// Softmax attention over the whole context.
    Full,
    /// Softmax attention over the last `sliding_window` tokens.
    Sliding,
    /// Linear attention with a constant recurrent state.
    Linear,
}

/// A spec that does not hold together, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model `{model}`: {field}: {problem}")]
pub struct SpecError {
    /// The spec's name.
    pub model: String,
    /// The offending field, dotted (`attention.kv_lora_rank`).
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// The most transformer blocks a spec may have (real models: at most a few hundred).
pub const MAX_LAYERS: u32 = 1024;
/// The largest hidden size, FFN, expert or latent width a spec may give.
pub const MAX_WIDTH: u64 = 1 << 18;
/// The largest vocabulary.
pub const MAX_VOCAB: u64 = 1 << 22;
/// The most attention (or linear-attention) heads, and the largest head dimension.
pub const MAX_HEADS: u64 = 1 << 12;
/// The most routed (or shared) experts per layer.
pub const MAX_EXPERTS: u64 = 1 << 12;
/// The longest context any spec, sliding window or planned context may have (16 Mi tokens).
pub const MAX_CONTEXT: u64 = 16 << 20;
/// The most parameters a spec may add up to (about 17.6 trillion): keeps every byte count in `u64`.
pub const MAX_PARAMS: u64 = 1 << 44;
/// The longest name, architecture, display name or source string.
const MAX_TEXT: usize = 256;
/// The most entries of a list (sources, published sizes and measurements).
const MAX_ENTRIES: usize = 256;

/// The numbers of a decode step that do not change its bytes: RMSNorm epsilon, RoPE base and
/// rotation style. llama.cpp reads them from GGUF metadata; these are each architecture's
/// usual values (what a synthetic file records), and a real file's keys override them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Numerics {
    /// `attention.layer_norm_rms_epsilon`.
    pub norm_eps: f32,
    /// `rope.freq_base`.
    pub rope_theta: f32,
    /// The RoPE base of sliding-window layers (Gemma 3's local layers: 10,000; llama.cpp's
    /// `rope_freq_base_train_swa`), else `rope_theta`.
    pub rope_theta_sliding: f32,
    /// NEOX rotation (pairs `i`, `i + n/2`) rather than interleaved pairs `2i`, `2i + 1`
    /// (llama.cpp's `llama_model_rope_type`).
    pub rope_neox: bool,
    /// The part of each head RoPE rotates (`rope.dimension_count` ÷ head size; Qwen3-Next's
    /// `partial_rotary_factor` 0.25), the first values of the head.
    pub rope_fraction: f32,
}

impl Numerics {
    /// The usual values of GGUF architecture `arch` (llama, mistral and deepseek2 rotate
    /// interleaved pairs; the Qwen, gpt-oss and Gemma families NEOX pairs).
    pub fn for_arch(arch: &str) -> Numerics {
        let (norm_eps, rope_theta) = match arch {
            "llama" => (1e-5, 500_000.0),
            "qwen2" => (1e-6, 1_000_000.0),
            "qwen3" | "qwen3moe" | "gemma3" => (1e-6, 1_000_000.0),
            "qwen3next" => (1e-6, 10_000_000.0),
            "gpt-oss" => (1e-5, 150_000.0),
            "deepseek2" => (1e-6, 10_000.0),
            _ => (1e-5, 10_000.0),
        };
        Numerics {
            norm_eps,
            rope_theta,
            rope_theta_sliding: if arch == "gemma3" {
                10_000.0
            } else {
                rope_theta
            },
            rope_neox: !matches!(arch, "llama" | "deepseek2"),
            rope_fraction: if arch == "qwen3next" { 0.25 } else { 1.0 },
        }
    }

    /// The RoPE base of a layer of `kind`.
    pub fn theta(&self, kind: LayerKind) -> f32 {
        if kind == LayerKind::Sliding {
            self.rope_theta_sliding
        } else {
            self.rope_theta
        }
    }

    /// The values RoPE rotates in a head of `head` values (even, at least 2).
    pub fn rope_dims(&self, head: usize) -> usize {
        let dims = (head as f32 * self.rope_fraction).round() as usize;
        (dims & !1).clamp(2.min(head), head)
    }
}

impl ModelSpec {
    /// The attention kind of layer `i`.
    pub fn layer_kind(&self, i: u32) -> LayerKind {
        let p = self.layer_pattern.as_bytes();
        match p[i as usize % p.len()] {
            b'S' => LayerKind::Sliding,
            b'L' => LayerKind::Linear,
            _ => LayerKind::Full,
        }
    }

    /// Layer kinds of all layers in order.
    pub fn layer_kinds(&self) -> impl Iterator<Item = LayerKind> + '_ {
        (0..self.n_layers).map(|i| self.layer_kind(i))
    }

    /// Number of layers of the given kind.
    pub fn count_layers(&self, kind: LayerKind) -> u32 {
        self.layer_kinds().filter(|k| *k == kind).count() as u32
    }

    /// Whether layer `i` uses the mixture-of-experts FFN.
    pub fn is_moe_layer(&self, i: u32) -> bool {
        self.ffn.moe.as_ref().is_some_and(|m| i >= m.dense_first)
    }

    /// GQA key/value heads (MLA: 1 latent "head").
    pub fn kv_heads(&self) -> u64 {
        self.attention.n_kv_heads.unwrap_or(1)
    }

    /// Query/key head dimension (MLA: nope + rope).
    pub fn qk_head_dim(&self) -> u64 {
        let a = &self.attention;
        match a.kind {
            AttentionKind::Gqa => a.head_dim.unwrap_or(0),
            AttentionKind::Mla => a.qk_nope_head_dim.unwrap_or(0) + a.qk_rope_head_dim.unwrap_or(0),
        }
    }

    /// Value head dimension.
    pub fn v_head_dim(&self) -> u64 {
        let a = &self.attention;
        a.v_head_dim.or(a.head_dim).unwrap_or(0)
    }

    /// The architecture alone, in a canonical form: names, sources and published figures
    /// dropped, defaults made explicit (GQA `v_head_dim`, shared-expert width), a dense width
    /// that no layer uses dropped, the layer pattern cut to its shortest period. Two specs of
    /// the same model — hand-written and read from a GGUF file — have equal architectures.
    pub fn architecture(&self) -> ModelSpec {
        let mut a = self.clone();
        a.name = String::new();
        a.display_name = String::new();
        a.sources = Vec::new();
        a.published = Published::default();
        if a.attention.kind == AttentionKind::Gqa && a.attention.v_head_dim.is_none() {
            a.attention.v_head_dim = a.attention.head_dim;
        }
        if let Some(m) = a.ffn.moe.as_mut() {
            if m.n_shared > 0 && m.shared_intermediate.is_none() {
                m.shared_intermediate = Some(m.expert_intermediate);
            }
            if m.n_shared == 0 {
                m.shared_intermediate = None;
            }
            if m.dense_first == 0 {
                a.ffn.intermediate = None;
            }
            if m.n_group.unwrap_or(1) == 1 {
                m.n_group = None;
                m.topk_group = None;
            }
        }
        let p = a.layer_pattern.clone();
        let n = p.len();
        a.layer_pattern = (1..=n)
            .filter(|k| n.is_multiple_of(*k))
            .map(|k| p[..k].to_string())
            .find(|head| head.repeat(n / head.len()) == p)
            .unwrap_or(p);
        if !a.layer_pattern.contains('S') {
            a.sliding_window = None;
        }
        if !a.layer_pattern.contains('L') {
            a.linear_attention = None;
        }
        a
    }

    /// Checks every count, width and text against its upper bound (before anything iterates
    /// over the layers), the published figures for finite positive values, and the total
    /// parameter count against [`MAX_PARAMS`], so that no byte count can wrap.
    fn check_bounds(&self) -> Result<(), SpecError> {
        let err = |field: &'static str, problem: String| SpecError {
            model: self.name.chars().take(MAX_TEXT).collect(),
            field,
            problem,
        };
        let at_most = |field: &'static str, v: u64, max: u64| {
            if v > max {
                Err(err(field, format!("{v} is too large (at most {max})")))
            } else {
                Ok(())
            }
        };
        let long_text = |field: &'static str, s: &str, max: usize| {
            if s.len() > max || s.chars().any(char::is_control) {
                Err(err(
                    field,
                    format!("must be at most {max} bytes without control characters"),
                ))
            } else {
                Ok(())
            }
        };
        let text = |field: &'static str, s: &str| long_text(field, s, MAX_TEXT);
        let entries = |field: &'static str, n: usize| at_most(field, n as u64, MAX_ENTRIES as u64);
        text("name", &self.name)?;
        text("display_name", &self.display_name)?;
        text("arch", &self.arch)?;
        entries("sources", self.sources.len())?;
        for s in &self.sources {
            long_text("sources", s, 16 * MAX_TEXT)?;
        }
        at_most("n_layers", self.n_layers.into(), MAX_LAYERS.into())?;
        at_most("hidden", self.hidden, MAX_WIDTH)?;
        at_most("vocab", self.vocab, MAX_VOCAB)?;
        at_most("max_context", self.max_context, MAX_CONTEXT)?;
        at_most(
            "layer_pattern",
            self.layer_pattern.len() as u64,
            MAX_LAYERS.into(),
        )?;
        at_most(
            "sliding_window",
            self.sliding_window.unwrap_or(0),
            MAX_CONTEXT,
        )?;
        let a = &self.attention;
        for (field, v, max) in [
            ("attention.n_heads", Some(a.n_heads), MAX_HEADS),
            ("attention.n_kv_heads", a.n_kv_heads, MAX_HEADS),
            ("attention.head_dim", a.head_dim, MAX_HEADS),
            ("attention.v_head_dim", a.v_head_dim, MAX_HEADS),
            ("attention.qk_nope_head_dim", a.qk_nope_head_dim, MAX_HEADS),
            ("attention.qk_rope_head_dim", a.qk_rope_head_dim, MAX_HEADS),
            ("attention.q_lora_rank", a.q_lora_rank, MAX_WIDTH),
            ("attention.kv_lora_rank", a.kv_lora_rank, MAX_WIDTH),
            ("ffn.intermediate", self.ffn.intermediate, MAX_WIDTH),
        ] {
            at_most(field, v.unwrap_or(0), max)?;
        }
        if let Some(la) = &self.linear_attention {
            at_most("linear_attention.n_k_heads", la.n_k_heads, MAX_HEADS)?;
            at_most("linear_attention.n_v_heads", la.n_v_heads, MAX_HEADS)?;
            at_most("linear_attention.k_head_dim", la.k_head_dim, MAX_HEADS)?;
            at_most("linear_attention.v_head_dim", la.v_head_dim, MAX_HEADS)?;
            at_most("linear_attention.conv_kernel", la.conv_kernel, MAX_HEADS)?;
        }
        if let Some(m) = &self.ffn.moe {
            at_most("ffn.moe.n_experts", m.n_experts, MAX_EXPERTS)?;
            at_most("ffn.moe.n_shared", m.n_shared, MAX_EXPERTS)?;
            at_most(
                "ffn.moe.expert_intermediate",
                m.expert_intermediate,
                MAX_WIDTH,
            )?;
            let shared = m.shared_intermediate.unwrap_or(0);
            at_most("ffn.moe.shared_intermediate", shared, MAX_WIDTH)?;
            if !(m.routed_scaling.is_finite() && m.routed_scaling > 0.0) {
                return Err(err(
                    "ffn.moe.routed_scaling",
                    format!("{} must be a finite positive number", m.routed_scaling),
                ));
            }
        }
        let p = &self.published;
        for (field, v) in [
            ("published.params_total", p.params_total),
            ("published.params_active", p.params_active),
        ] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0 && *v <= MAX_PARAMS as f64)) {
                return Err(err(
                    field,
                    format!("{v} must be a positive number of parameters"),
                ));
            }
        }
        entries("published.gguf_bytes", p.gguf_bytes.len())?;
        entries("published.decode", p.decode.len())?;
        for recipe in p.gguf_bytes.keys() {
            text("published.gguf_bytes", recipe)?;
        }
        for d in &p.decode {
            if !(d.tps.is_finite() && d.tps > 0.0) {
                return Err(err(
                    "published.decode.tps",
                    format!("{} must be a finite positive rate", d.tps),
                ));
            }
            at_most("published.decode.ctx", d.ctx.unwrap_or(0), MAX_CONTEXT)?;
            entries("published.decode.devices", d.devices.len())?;
            for s in d.devices.iter().chain([&d.recipe, &d.runtime]) {
                text("published.decode", s)?;
            }
            long_text("published.decode.source", &d.source, 16 * MAX_TEXT)?;
        }
        Ok(())
    }

    /// Checks the total parameter count against [`MAX_PARAMS`] (after [`Self::check_bounds`]
    /// and the layer pattern are checked): every dimension is bounded, so each tensor's product
    /// fits in `u64`, and the sum is taken in `u128`.
    fn check_size(&self) -> Result<(), SpecError> {
        let params: u128 = crate::tensors::inventory(self)
            .iter()
            .map(|t| u128::from(t.values()))
            .sum();
        if params > u128::from(MAX_PARAMS) {
            return Err(SpecError {
                model: self.name.clone(),
                field: "hidden",
                problem: format!(
                    "the architecture adds up to {params} parameters (at most {MAX_PARAMS})"
                ),
            });
        }
        Ok(())
    }

    /// Checks that the fields hold together.
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |field: &'static str, problem: String| SpecError {
            model: self.name.clone(),
            field,
            problem,
        };
        let positive = |field: &'static str, v: u64| {
            if v == 0 {
                Err(err(field, "must be > 0".into()))
            } else {
                Ok(())
            }
        };
        self.check_bounds()?;
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c))
        {
            return Err(err(
                "name",
                format!(
                    "`{}` must be lower-case letters, digits, `-`, `.` or `_`",
                    self.name
                ),
            ));
        }
        positive("n_layers", self.n_layers as u64)?;
        positive("hidden", self.hidden)?;
        positive("vocab", self.vocab)?;
        positive("max_context", self.max_context)?;
        if self.layer_pattern.is_empty()
            || !self
                .layer_pattern
                .bytes()
                .all(|b| matches!(b, b'F' | b'S' | b'L'))
        {
            return Err(err(
                "layer_pattern",
                format!(
                    "`{}` must be a non-empty string of F, S and L",
                    self.layer_pattern
                ),
            ));
        }
        if self.count_layers(LayerKind::Sliding) > 0 {
            positive("sliding_window", self.sliding_window.unwrap_or(0))?;
        }
        if self.count_layers(LayerKind::Linear) > 0 {
            let la = self.linear_attention.as_ref().ok_or_else(|| {
                err(
                    "linear_attention",
                    "required by the `L` layers of layer_pattern".into(),
                )
            })?;
            positive("linear_attention.n_k_heads", la.n_k_heads)?;
            positive("linear_attention.n_v_heads", la.n_v_heads)?;
            positive("linear_attention.k_head_dim", la.k_head_dim)?;
            positive("linear_attention.v_head_dim", la.v_head_dim)?;
            positive("linear_attention.conv_kernel", la.conv_kernel)?;
        }
        let a = &self.attention;
        positive("attention.n_heads", a.n_heads)?;
        let need = |field: &'static str, v: Option<u64>| {
            v.filter(|v| *v > 0)
                .ok_or_else(|| err(field, "required (> 0) for this attention kind".into()))
        };
        match a.kind {
            AttentionKind::Gqa => {
                let kv = need("attention.n_kv_heads", a.n_kv_heads)?;
                need("attention.head_dim", a.head_dim)?;
                if !a.n_heads.is_multiple_of(kv) {
                    return Err(err(
                        "attention.n_kv_heads",
                        format!("{kv} does not divide n_heads {}", a.n_heads),
                    ));
                }
                for (field, v) in [
                    ("attention.kv_lora_rank", a.kv_lora_rank),
                    ("attention.q_lora_rank", a.q_lora_rank),
                    ("attention.qk_nope_head_dim", a.qk_nope_head_dim),
                    ("attention.qk_rope_head_dim", a.qk_rope_head_dim),
                ] {
                    if v.is_some() {
                        return Err(err(field, "only valid for kind = \"mla\"".into()));
                    }
                }
            }
            AttentionKind::Mla => {
                need("attention.kv_lora_rank", a.kv_lora_rank)?;
                need("attention.qk_nope_head_dim", a.qk_nope_head_dim)?;
                need("attention.qk_rope_head_dim", a.qk_rope_head_dim)?;
                need("attention.v_head_dim", a.v_head_dim)?;
                if a.n_kv_heads.is_some() || a.head_dim.is_some() {
                    return Err(err(
                        "attention.n_kv_heads",
                        "MLA specs give kv_lora_rank and head dims, not n_kv_heads/head_dim".into(),
                    ));
                }
            }
        }
        let dense_layers = match &self.ffn.moe {
            None => self.n_layers,
            Some(m) => {
                positive("ffn.moe.n_experts", m.n_experts)?;
                positive("ffn.moe.top_k", m.top_k)?;
                positive("ffn.moe.expert_intermediate", m.expert_intermediate)?;
                if m.top_k > m.n_experts {
                    return Err(err(
                        "ffn.moe.top_k",
                        format!("{} exceeds n_experts {}", m.top_k, m.n_experts),
                    ));
                }
                let groups = m.n_group.unwrap_or(1);
                let kept = m.topk_group.unwrap_or(groups);
                positive("ffn.moe.n_group", groups)?;
                if !m.n_experts.is_multiple_of(groups) || kept == 0 || kept > groups {
                    return Err(err(
                        "ffn.moe.n_group",
                        format!(
                            "{groups} groups (keeping {kept}) do not split {} experts evenly",
                            m.n_experts
                        ),
                    ));
                }
                if m.top_k > kept * (m.n_experts / groups) {
                    return Err(err(
                        "ffn.moe.topk_group",
                        format!(
                            "{kept} groups of {} experts cannot hold top_k {}",
                            m.n_experts / groups,
                            m.top_k
                        ),
                    ));
                }
                if m.dense_first > self.n_layers {
                    return Err(err(
                        "ffn.moe.dense_first",
                        format!("{} exceeds n_layers {}", m.dense_first, self.n_layers),
                    ));
                }
                m.dense_first
            }
        };
        if dense_layers > 0 {
            need("ffn.intermediate", self.ffn.intermediate)?;
        }
        self.check_size()
    }
}
