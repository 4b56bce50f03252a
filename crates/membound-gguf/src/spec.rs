//! Model specs from GGUF files, and back: [`spec_from_gguf`] reads a [`ModelSpec`] from the
//! metadata and tensor table of a llama.cpp conversion; [`gguf_metadata`] writes the metadata
//! a spec implies (the inverse, used by [`crate::synthetic`]).
//!
//! Metadata keys follow llama.cpp (`src/llama-arch.cpp` `LLM_KV_*`, `gguf-py` `Keys`), prefixed
//! by the architecture: `{arch}.block_count`, `.embedding_length`, `.attention.head_count`, …
//! What llama.cpp reads from tensors rather than keys is read the same way here: the vocabulary
//! from `token_embd.weight`'s rows, tied embeddings from a missing `output.weight`, biases,
//! sinks, Q/K norms, shared-expert gate and router/expert biases from the tensors that exist,
//! the attention output gate from the doubled rows of `attn_q`. Layer patterns llama.cpp
//! hard-codes per architecture are hard-coded here: gpt-oss `SF`, gemma3 `SSSSSF`, qwen3next
//! `L…LF` from `full_attention_interval`.
//!
//! MLA (`deepseek2`): current conversions store the absorbed layout, `attention.key_length` =
//! `kv_lora_rank + rope` (576) and `value_length` = `kv_lora_rank`, with the per-head sizes in
//! `key_length_mla` / `value_length_mla`; older conversions have no `_mla` keys and store the
//! per-head sizes in `key_length` / `value_length`. Both are read.

use membound_spec::ModelSpec;
use membound_spec::model::{
    Attention, AttentionKind, Ffn, LinearAttention, MAX_LAYERS, Moe, Numerics, Published,
    RouterScoring, SpecError,
};
use membound_spec::tensors::inventory;

use crate::error::GgufError;
use crate::reader::GgufFile;
use crate::value::MetaValue;

/// The `general.architecture` values [`spec_from_gguf`] understands.
pub const SUPPORTED_ARCHS: &[&str] = &[
    "llama",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "qwen3next",
    "deepseek2",
    "gpt-oss",
    "gemma3",
];

/// llama.cpp's `LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX`.
const GATING_SOFTMAX: u64 = 1;
/// llama.cpp's `LLAMA_EXPERT_GATING_FUNC_TYPE_SIGMOID`.
const GATING_SIGMOID: u64 = 2;
/// llama.cpp's `LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX_WEIGHT` (softmax over the selected k).
const GATING_SOFTMAX_WEIGHT: u64 = 3;

/// Why no spec could be read from a file (or no metadata written for a spec).
#[derive(Debug, thiserror::Error)]
pub enum SpecFromGgufError {
    /// A key is missing or of the wrong type, or the file has no architecture.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The architecture is not one of [`SUPPORTED_ARCHS`].
    #[error("{file}: architecture `{arch}` is not supported (supported: {supported})", supported = SUPPORTED_ARCHS.join(", "))]
    UnsupportedArch {
        /// The file.
        file: String,
        /// Its `general.architecture`.
        arch: String,
    },
    /// A tensor the spec is read from is missing.
    #[error("{file}: no tensor `{name}` (needed for {what})")]
    MissingTensor {
        /// The file.
        file: String,
        /// The tensor's name.
        name: String,
        /// What it was needed for.
        what: &'static str,
    },
    /// Keys or tensors contradict each other.
    #[error("{file}: {problem}")]
    Inconsistent {
        /// The file.
        file: String,
        /// What does not add up.
        problem: String,
    },
    /// The spec read from the file does not validate.
    #[error("{file}: the spec read from it is invalid: {source}")]
    Invalid {
        /// The file.
        file: String,
        /// Why.
        source: SpecError,
    },
    /// A spec's architecture cannot be expressed in GGUF metadata (writing).
    #[error("model `{model}`: {problem}")]
    Unrepresentable {
        /// The spec's name.
        model: String,
        /// What cannot be written.
        problem: String,
    },
}

type Result<T, E = SpecFromGgufError> = std::result::Result<T, E>;

/// The layer pattern llama.cpp hard-codes for `arch` (`interval`: qwen3next's
/// `full_attention_interval`), or `None` for all-full-attention archs.
fn arch_pattern(arch: &str, interval: u64) -> String {
    match arch {
        "gpt-oss" => "SF".into(),
        "gemma3" => "SSSSSF".into(),
        "qwen3next" => format!("{}F", "L".repeat(interval.saturating_sub(1) as usize)),
        _ => "F".into(),
    }
}

/// Whether llama.cpp renormalises the selected expert weights for `arch` when the file has no
/// `expert_weights_norm` key.
fn default_norm_topk(arch: &str) -> bool {
    matches!(arch, "qwen3moe" | "qwen3next")
}

/// An `f32` metadata value as the `f64` its shortest decimal form denotes (1.8f32 → 1.8).
fn f32_to_decimal_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// Reads keys and tensors of one file, naming it in errors.
struct Reader<'a> {
    f: &'a GgufFile,
    arch: &'a str,
}

impl Reader<'_> {
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    fn u64(&self, suffix: &str) -> Result<u64> {
        Ok(self.f.meta_u64(&self.key(suffix))?)
    }

    /// `None` when absent; an error when present with another type.
    fn opt_u64(&self, suffix: &str) -> Result<Option<u64>> {
        let key = self.key(suffix);
        match self.f.meta(&key) {
            None => Ok(None),
            Some(_) => Ok(Some(self.f.meta_u64(&key)?)),
        }
    }

    fn opt_f32(&self, suffix: &str) -> Result<Option<f32>> {
        let key = self.key(suffix);
        match self.f.meta(&key) {
            None => Ok(None),
            Some(_) => Ok(Some(self.f.meta_f32(&key)?)),
        }
    }

    fn opt_bool(&self, suffix: &str) -> Result<Option<bool>> {
        let key = self.key(suffix);
        match self.f.meta(&key) {
            None => Ok(None),
            Some(_) => Ok(Some(self.f.meta_bool(&key)?)),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.f.tensor(name).is_some()
    }

    fn dims(&self, name: &str, what: &'static str) -> Result<&[u64]> {
        self.f
            .tensor(name)
            .map(|t| t.dims.as_slice())
            .ok_or_else(|| SpecFromGgufError::MissingTensor {
                file: self.f.source().to_string(),
                name: name.to_string(),
                what,
            })
    }

    fn inconsistent(&self, problem: String) -> SpecFromGgufError {
        SpecFromGgufError::Inconsistent {
            file: self.f.source().to_string(),
            problem,
        }
    }
}

/// A lower-case id for `ModelSpec::name` from a display name (`Qwen3 30B` → `qwen3-30b`).
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c) {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Reads the model spec a llama.cpp GGUF file describes (see the module docs for the keys).
///
/// `name` is `general.name` made lower-case (or the architecture), `sources` names the file;
/// compare specs with [`ModelSpec::architecture`].
pub fn spec_from_gguf(f: &GgufFile) -> Result<ModelSpec> {
    let arch = f.arch()?;
    if !SUPPORTED_ARCHS.contains(&arch) {
        return Err(SpecFromGgufError::UnsupportedArch {
            file: f.source().to_string(),
            arch: arch.to_string(),
        });
    }
    let r = Reader { f, arch };
    let n_blocks = r.u64("block_count")?;
    let nextn = r.opt_u64("nextn_predict_layers")?.unwrap_or(0);
    let n_layers = u32::try_from(n_blocks.saturating_sub(nextn))
        .ok()
        .filter(|n| *n <= MAX_LAYERS)
        .ok_or_else(|| {
            r.inconsistent(format!(
                "{} {n_blocks} is too large (at most {MAX_LAYERS})",
                r.key("block_count")
            ))
        })?;
    let hidden = r.u64("embedding_length")?;
    let max_context = r.u64("context_length")?;
    let vocab = *r
        .dims("token_embd.weight", "the vocabulary")?
        .get(1)
        .ok_or_else(|| r.inconsistent("token_embd.weight is not 2-D".into()))?;
    let tied_embeddings = !r.has("output.weight");

    let interval = r.opt_u64("full_attention_interval")?.unwrap_or(4);
    if arch == "qwen3next" && !(1..=u64::from(MAX_LAYERS)).contains(&interval) {
        return Err(r.inconsistent(format!(
            "{} {interval} is out of range (1..={MAX_LAYERS})",
            r.key("full_attention_interval")
        )));
    }
    let layer_pattern = arch_pattern(arch, interval);
    let sliding_window = if layer_pattern.contains('S') {
        Some(r.u64("attention.sliding_window")?)
    } else {
        None
    };
    // Probe tensors on the first softmax-attention layer.
    let attn_layer = layer_pattern.find(['F', 'S']).unwrap_or(0);
    let blk = |i: usize, name: &str| format!("blk.{i}.{name}");

    let n_heads = r.u64("attention.head_count")?;
    let mut attention = match arch {
        "deepseek2" => mla_attention(&r, n_heads)?,
        _ => {
            let n_kv_heads = r.opt_u64("attention.head_count_kv")?.unwrap_or(n_heads);
            let head_dim = match r.opt_u64("attention.key_length")? {
                Some(k) => k,
                None if n_heads > 0 => hidden / n_heads,
                None => 0,
            };
            let v_head_dim = r.opt_u64("attention.value_length")?.unwrap_or(head_dim);
            let q_rows = r.dims(&blk(attn_layer, "attn_q.weight"), "the query projection")?;
            let output_gate = q_rows.get(1) == Some(&(2 * n_heads * head_dim));
            Attention {
                kind: AttentionKind::Gqa,
                n_heads,
                n_kv_heads: Some(n_kv_heads),
                head_dim: Some(head_dim),
                v_head_dim: Some(v_head_dim),
                q_lora_rank: None,
                kv_lora_rank: None,
                qk_nope_head_dim: None,
                qk_rope_head_dim: None,
                bias: false,
                sinks: false,
                output_gate,
                qk_norm: false,
            }
        }
    };
    attention.bias = r.has(&blk(attn_layer, "attn_q.bias"));
    attention.sinks = r.has(&blk(attn_layer, "attn_sinks.weight"));
    attention.qk_norm = r.has(&blk(attn_layer, "attn_q_norm.weight"));

    let linear_attention = if layer_pattern.contains('L') {
        let n_v_heads = r.u64("ssm.time_step_rank")?;
        let inner = r.u64("ssm.inner_size")?;
        if n_v_heads == 0 || !inner.is_multiple_of(n_v_heads) {
            return Err(r.inconsistent(format!(
                "ssm.inner_size {inner} is not a multiple of ssm.time_step_rank {n_v_heads}"
            )));
        }
        Some(LinearAttention {
            n_k_heads: r.u64("ssm.group_count")?,
            n_v_heads,
            k_head_dim: r.u64("ssm.state_size")?,
            v_head_dim: inner / n_v_heads,
            conv_kernel: r.u64("ssm.conv_kernel")?,
        })
    } else {
        None
    };

    let ffn = read_ffn(&r)?;
    let general_name = f.meta("general.name").and_then(MetaValue::as_str);
    // Shown on terminals: control characters dropped, length bounded.
    let display_name: String = general_name
        .unwrap_or(arch)
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect();
    let name = Some(slug(&display_name))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| slug(arch));
    let spec = ModelSpec {
        name,
        display_name,
        arch: arch.to_string(),
        sources: vec![format!("GGUF file {}", f.source())],
        n_layers,
        hidden,
        vocab,
        tied_embeddings,
        max_context,
        layer_pattern,
        sliding_window,
        attention,
        linear_attention,
        ffn,
        published: Published::default(),
    };
    spec.validate()
        .map_err(|source| SpecFromGgufError::Invalid {
            file: f.source().to_string(),
            source,
        })?;
    check_shapes(f, &spec)?;
    Ok(spec)
}

/// Every tensor of the spec's inventory that the file holds must have the values the metadata
/// implies: a file whose keys contradict its tensors gives no spec.
fn check_shapes(f: &GgufFile, spec: &ModelSpec) -> Result<()> {
    for t in inventory(spec) {
        if let Some(have) = f.tensor(&t.name)
            && have.n_elements() != t.values()
        {
            return Err(SpecFromGgufError::Inconsistent {
                file: f.source().to_string(),
                problem: format!(
                    "the metadata implies {} of shape {:?}, the file has {:?}",
                    t.name, t.dims, have.dims
                ),
            });
        }
    }
    Ok(())
}

/// DeepSeek-style MLA attention from `deepseek2` keys (new and old conversions).
fn mla_attention(r: &Reader<'_>, n_heads: u64) -> Result<Attention> {
    let rope = r.u64("rope.dimension_count")?;
    let kv_lora = r.u64("attention.kv_lora_rank")?;
    let q_lora = r.opt_u64("attention.q_lora_rank")?.filter(|&q| q > 0);
    let (k_len, v_len) = match r.opt_u64("attention.key_length_mla")? {
        Some(k) => (k, r.u64("attention.value_length_mla")?),
        None => (
            r.u64("attention.key_length")?,
            r.u64("attention.value_length")?,
        ),
    };
    let nope = k_len
        .checked_sub(rope)
        .ok_or_else(|| r.inconsistent(format!("MLA key length {k_len} < rope dims {rope}")))?;
    Ok(Attention {
        kind: AttentionKind::Mla,
        n_heads,
        n_kv_heads: None,
        head_dim: None,
        v_head_dim: Some(v_len),
        q_lora_rank: q_lora,
        kv_lora_rank: Some(kv_lora),
        qk_nope_head_dim: Some(nope),
        qk_rope_head_dim: Some(rope),
        bias: false,
        sinks: false,
        output_gate: false,
        qk_norm: false,
    })
}

/// The feed-forward network: dense, or MoE from the `expert_*` keys and the tensors of the
/// first MoE layer.
fn read_ffn(r: &Reader<'_>) -> Result<Ffn> {
    let n_experts = r.opt_u64("expert_count")?.unwrap_or(0);
    if n_experts == 0 {
        return Ok(Ffn {
            intermediate: Some(r.u64("feed_forward_length")?),
            moe: None,
        });
    }
    let dense_first = r.opt_u64("leading_dense_block_count")?.unwrap_or(0);
    let dense_first = u32::try_from(dense_first)
        .map_err(|_| r.inconsistent(format!("leading_dense_block_count {dense_first}")))?;
    let intermediate = if dense_first > 0 {
        Some(r.u64("feed_forward_length")?)
    } else {
        r.opt_u64("feed_forward_length")?
    };
    let l = dense_first;
    let blk = |name: &str| format!("blk.{l}.{name}");
    let shexp = blk("ffn_gate_shexp.weight");
    let n_shared = match r.opt_u64("expert_shared_count")? {
        Some(n) => n,
        None => u64::from(r.has(&shexp)),
    };
    let shared_intermediate = match r.opt_u64("expert_shared_feed_forward_length")? {
        _ if n_shared == 0 => None,
        Some(w) => Some(w),
        None => {
            let width = r.dims(&shexp, "the shared expert's width")?;
            width.get(1).copied().unwrap_or(0).checked_div(n_shared)
        }
    };
    let router = match (r.arch, r.opt_u64("expert_gating_func")?) {
        (_, Some(GATING_SIGMOID)) => RouterScoring::Sigmoid,
        (_, Some(GATING_SOFTMAX_WEIGHT)) | ("gpt-oss", None) => RouterScoring::TopkSoftmax,
        (_, Some(GATING_SOFTMAX) | None) => RouterScoring::Softmax,
        (_, Some(other)) => {
            return Err(r.inconsistent(format!(
                "{}: unknown expert gating function {other}",
                r.key("expert_gating_func")
            )));
        }
    };
    Ok(Ffn {
        intermediate,
        moe: Some(Moe {
            n_experts,
            top_k: r.u64("expert_used_count")?,
            expert_intermediate: r.u64("expert_feed_forward_length")?,
            n_shared,
            shared_intermediate,
            shared_gate: r.has(&blk("ffn_gate_inp_shexp.weight")),
            dense_first,
            router,
            norm_topk: r
                .opt_bool("expert_weights_norm")?
                .unwrap_or_else(|| default_norm_topk(r.arch)),
            routed_scaling: r
                .opt_f32("expert_weights_scale")?
                .map_or(1.0, f32_to_decimal_f64),
            expert_bias: r.has(&blk("ffn_gate_exps.bias")) || r.has(&blk("ffn_up_exps.bias")),
            router_bias: r.has(&blk("ffn_gate_inp.bias")) || r.has(&blk("exp_probs_b.bias")),
            n_group: r.opt_u64("expert_group_count")?,
            topk_group: r.opt_u64("expert_group_used_count")?,
        }),
    })
}

/// The metadata a llama.cpp conversion of `spec` holds: `general.architecture`,
/// `general.name` and the `{arch}.*` keys [`spec_from_gguf`] reads. Errors when the arch is not
/// supported or its hard-coded layer pattern differs from the spec's.
pub fn gguf_metadata(spec: &ModelSpec) -> Result<Vec<(String, MetaValue)>> {
    let unrepresentable = |problem: String| SpecFromGgufError::Unrepresentable {
        model: spec.name.clone(),
        problem,
    };
    let arch = spec.arch.as_str();
    if !SUPPORTED_ARCHS.contains(&arch) {
        return Err(unrepresentable(format!(
            "architecture `{arch}` is not supported (supported: {})",
            SUPPORTED_ARCHS.join(", ")
        )));
    }
    let canonical = spec.architecture();
    let interval = canonical.layer_pattern.len() as u64;
    let implied = arch_pattern(arch, interval);
    if implied != canonical.layer_pattern {
        return Err(unrepresentable(format!(
            "layer pattern `{}` is not what llama.cpp's `{arch}` implies (`{implied}`)",
            canonical.layer_pattern
        )));
    }
    if arch == "deepseek2" && spec.attention.kind != AttentionKind::Mla {
        return Err(unrepresentable("deepseek2 needs MLA attention".into()));
    }
    if arch != "deepseek2" && spec.attention.kind == AttentionKind::Mla {
        return Err(unrepresentable(format!(
            "MLA attention is read only for deepseek2, not `{arch}`"
        )));
    }
    let u32_of = |field: &str, v: u64| {
        u32::try_from(v).map_err(|_| unrepresentable(format!("{field} {v} exceeds u32")))
    };
    let mut m: Vec<(String, MetaValue)> = vec![
        ("general.architecture".into(), arch.into()),
        ("general.name".into(), spec.display_name.as_str().into()),
    ];
    let mut put = |suffix: &str, v: MetaValue| m.push((format!("{arch}.{suffix}"), v));
    put("block_count", MetaValue::U32(spec.n_layers));
    put(
        "context_length",
        MetaValue::U32(u32_of("max_context", spec.max_context)?),
    );
    put(
        "embedding_length",
        MetaValue::U32(u32_of("hidden", spec.hidden)?),
    );
    put("vocab_size", MetaValue::U32(u32_of("vocab", spec.vocab)?));
    if let Some(ff) = spec.ffn.intermediate {
        put(
            "feed_forward_length",
            MetaValue::U32(u32_of("intermediate", ff)?),
        );
    }
    let a = &spec.attention;
    put(
        "attention.head_count",
        MetaValue::U32(u32_of("n_heads", a.n_heads)?),
    );
    match a.kind {
        AttentionKind::Gqa => {
            let hd = u32_of("head_dim", spec.qk_head_dim())?;
            put(
                "attention.head_count_kv",
                MetaValue::U32(u32_of("n_kv_heads", spec.kv_heads())?),
            );
            put("attention.key_length", MetaValue::U32(hd));
            put(
                "attention.value_length",
                MetaValue::U32(u32_of("v_head_dim", spec.v_head_dim())?),
            );
            let rope = Numerics::for_arch(arch).rope_dims(hd as usize);
            put("rope.dimension_count", MetaValue::U32(rope as u32));
        }
        AttentionKind::Mla => {
            let kvr = a.kv_lora_rank.unwrap_or(0);
            let rope = a.qk_rope_head_dim.unwrap_or(0);
            put("attention.head_count_kv", MetaValue::U32(1));
            // llama.cpp reads the key always (0: the query is projected directly).
            put(
                "attention.q_lora_rank",
                MetaValue::U32(u32_of("q_lora", a.q_lora_rank.unwrap_or(0))?),
            );
            put(
                "attention.kv_lora_rank",
                MetaValue::U32(u32_of("kv_lora", kvr)?),
            );
            put(
                "attention.key_length",
                MetaValue::U32(u32_of("kv_lora + rope", kvr + rope)?),
            );
            put(
                "attention.value_length",
                MetaValue::U32(u32_of("kv_lora", kvr)?),
            );
            put(
                "attention.key_length_mla",
                MetaValue::U32(u32_of("qk head dim", spec.qk_head_dim())?),
            );
            put(
                "attention.value_length_mla",
                MetaValue::U32(u32_of("v_head_dim", spec.v_head_dim())?),
            );
            put(
                "rope.dimension_count",
                MetaValue::U32(u32_of("rope", rope)?),
            );
        }
    }
    let numerics = Numerics::for_arch(arch);
    put(
        "attention.layer_norm_rms_epsilon",
        MetaValue::F32(numerics.norm_eps),
    );
    put("rope.freq_base", MetaValue::F32(numerics.rope_theta));
    if let Some(w) = canonical.sliding_window {
        put(
            "attention.sliding_window",
            MetaValue::U32(u32_of("sliding_window", w)?),
        );
    }
    if let Some(la) = &canonical.linear_attention {
        put("full_attention_interval", MetaValue::U32(interval as u32));
        put(
            "ssm.conv_kernel",
            MetaValue::U32(u32_of("conv_kernel", la.conv_kernel)?),
        );
        put(
            "ssm.state_size",
            MetaValue::U32(u32_of("k_head_dim", la.k_head_dim)?),
        );
        put(
            "ssm.group_count",
            MetaValue::U32(u32_of("n_k_heads", la.n_k_heads)?),
        );
        put(
            "ssm.time_step_rank",
            MetaValue::U32(u32_of("n_v_heads", la.n_v_heads)?),
        );
        put(
            "ssm.inner_size",
            MetaValue::U32(u32_of("inner size", la.n_v_heads * la.v_head_dim)?),
        );
    }
    if let Some(e) = &spec.ffn.moe {
        put(
            "expert_count",
            MetaValue::U32(u32_of("n_experts", e.n_experts)?),
        );
        put(
            "expert_used_count",
            MetaValue::U32(u32_of("top_k", e.top_k)?),
        );
        put(
            "expert_feed_forward_length",
            MetaValue::U32(u32_of("expert_intermediate", e.expert_intermediate)?),
        );
        if e.n_shared > 0 {
            put(
                "expert_shared_count",
                MetaValue::U32(u32_of("n_shared", e.n_shared)?),
            );
            if let Some(w) = e.shared_intermediate {
                put(
                    "expert_shared_feed_forward_length",
                    MetaValue::U32(u32_of("shared_intermediate", w)?),
                );
            }
        }
        if e.dense_first > 0 {
            put("leading_dense_block_count", MetaValue::U32(e.dense_first));
        }
        let gating = match e.router {
            RouterScoring::Softmax => GATING_SOFTMAX,
            RouterScoring::Sigmoid => GATING_SIGMOID,
            RouterScoring::TopkSoftmax => GATING_SOFTMAX_WEIGHT,
        };
        put("expert_gating_func", MetaValue::U32(gating as u32));
        put("expert_weights_norm", MetaValue::Bool(e.norm_topk));
        put(
            "expert_weights_scale",
            MetaValue::F32(e.routed_scaling as f32),
        );
        if let Some(g) = e.n_group.filter(|g| *g > 1) {
            put("expert_group_count", MetaValue::U32(u32_of("n_group", g)?));
            put(
                "expert_group_used_count",
                MetaValue::U32(u32_of("topk_group", e.topk_group.unwrap_or(g))?),
            );
        }
    }
    Ok(m)
}
