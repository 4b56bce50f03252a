//! KV-cache layouts and their sizes.
//!
//! Per token and per full-attention layer, in values:
//! - [`KvLayout::Gqa`]: `n_kv_heads × (head_dim + v_head_dim)` (K and V per KV head).
//! - [`KvLayout::MlaLatent`] (llama.cpp): `kv_lora_rank + qk_rope_head_dim` — one shared latent
//!   and the rotary key; V is read as a view of the first `kv_lora_rank` values of each K row,
//!   so nothing else is stored (576 for DeepSeek-V2/V3 and GLM-4.7-Flash).
//! - [`KvLayout::MlaSplit`] (Ollama-like): K = latent + rope key (576) and a separate V = the
//!   latent again (512): 1088 values.
//! - [`KvLayout::ExpandedMha`]: K and V per head after the up-projection, what an engine
//!   without MLA support stores: `n_heads × (qk_nope + qk_rope + v_head_dim)`.
//!
//! Sliding-window layers keep, as llama.cpp's `llama_kv_cache_iswa` sizes them,
//! `window + n_ubatch` cells rounded up to 256 ([`swa_cells`]: gemma-3's 1024 → 1536, gpt-oss's
//! 128 → 768), or the context if it is shorter, and a decode step reads every cell it keeps;
//! linear-attention layers keep a constant recurrent state (`n_v_heads × k_head_dim ×
//! v_head_dim` plus the short-convolution tail, in F32 as llama.cpp stores it) however long the
//! context, which each token reads and writes back.
//!
//! **Why the seed saw ~2× more KV in Ollama than in llama.cpp for GLM-4.7-Flash.**
//! GLM-4.7-Flash has 47 MLA layers with `kv_lora_rank` 512 and `qk_rope_head_dim` 64.
//! llama.cpp caches 512 + 64 = 576 values per token per layer; Ollama's `glm4moelite` puts the
//! same 576-value key *and* a separate 512-value value tensor into its cache: 1088 values,
//! 1088 / 576 = 1.89×. With a q8_0 cache (34 bytes per 32 values) at 112k (114,688) tokens:
//! 576 × 47 × 34/32 × 114,688 B = 3.07 GiB (the seed: "~3.1 GiB" in llama.cpp) against
//! 1088 × 47 × 34/32 × 114,688 B = 5.80 GiB (the seed: "~5.9 GiB" in Ollama). Those 2.7 GiB
//! are what pushed Ollama past the desktop's 40 GB and four layers onto the CPU.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::dtype::DType;
use crate::model::{AttentionKind, LayerKind, MAX_CONTEXT, ModelSpec};

/// How the softmax-attention layers' keys and values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvLayout {
    /// K and V per KV head (GQA models).
    Gqa,
    /// MLA: latent + rope key only, V a view of the latent (llama.cpp).
    MlaLatent,
    /// MLA: latent + rope key, and a separate latent V (Ollama-like).
    MlaSplit,
    /// MLA up-projected to per-head K and V (engines without MLA support).
    ExpandedMha,
}

const NAMES: &[(KvLayout, &str)] = &[
    (KvLayout::Gqa, "gqa"),
    (KvLayout::MlaLatent, "mla-latent"),
    (KvLayout::MlaSplit, "mla-split"),
    (KvLayout::ExpandedMha, "expanded-mha"),
];

impl KvLayout {
    /// The layout an engine with native support uses for this model (llama.cpp's).
    pub fn native(m: &ModelSpec) -> KvLayout {
        match m.attention.kind {
            AttentionKind::Gqa => KvLayout::Gqa,
            AttentionKind::Mla => KvLayout::MlaLatent,
        }
    }

    /// The layouts that apply to this model.
    pub fn applicable(m: &ModelSpec) -> &'static [KvLayout] {
        match m.attention.kind {
            AttentionKind::Gqa => &[KvLayout::Gqa],
            AttentionKind::Mla => &[
                KvLayout::MlaLatent,
                KvLayout::MlaSplit,
                KvLayout::ExpandedMha,
            ],
        }
    }

    /// Name as the CLI takes it.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(l, _)| *l == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    /// Values stored per token per softmax-attention layer, as `(k, v)`.
    /// `Err` names why the layout does not apply to this model.
    pub fn values_per_token_layer(self, m: &ModelSpec) -> Result<(u64, u64), KvError> {
        let a = &m.attention;
        match (a.kind, self) {
            (AttentionKind::Gqa, KvLayout::Gqa) => {
                let kv = m.kv_heads();
                Ok((kv * m.qk_head_dim(), kv * m.v_head_dim()))
            }
            (AttentionKind::Mla, KvLayout::MlaLatent) => Ok((
                a.kv_lora_rank.unwrap_or(0) + a.qk_rope_head_dim.unwrap_or(0),
                0,
            )),
            (AttentionKind::Mla, KvLayout::MlaSplit) => {
                let latent = a.kv_lora_rank.unwrap_or(0);
                Ok((latent + a.qk_rope_head_dim.unwrap_or(0), latent))
            }
            (AttentionKind::Mla, KvLayout::ExpandedMha) => {
                Ok((a.n_heads * m.qk_head_dim(), a.n_heads * m.v_head_dim()))
            }
            _ => Err(KvError::NotApplicable {
                layout: self,
                model: m.name.clone(),
                applicable: KvLayout::applicable(m)
                    .iter()
                    .map(|l| l.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// A KV layout or type that does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The layout belongs to another attention kind.
    #[error("KV layout `{}` does not apply to {model} (use: {applicable})", layout.name())]
    NotApplicable {
        layout: KvLayout,
        model: String,
        applicable: String,
    },
    /// The row length is not a whole number of the cache type's blocks.
    #[error("KV type {dtype} needs rows of a multiple of {block} values; {model} has {values}")]
    BadRow {
        dtype: DType,
        block: u64,
        values: u64,
        model: String,
    },
    /// The context is zero or longer than [`MAX_CONTEXT`], or the cache's size does not fit in
    /// 64 bits.
    #[error("KV cache of {model} at {ctx} tokens is out of range (1..={max} tokens, under 2^64 bytes)", max = MAX_CONTEXT)]
    TooLarge { model: String, ctx: u64 },
}

/// The KV cache of one sequence at one context length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvCache {
    /// Layout used.
    pub layout: KvLayout,
    /// Cache element type.
    pub dtype: DType,
    /// Context length (tokens).
    pub ctx: u64,
    /// Bytes per token of one full-attention layer.
    pub bytes_per_token_layer: u64,
    /// Bytes of each layer's cache (softmax: grows with context; sliding: capped; linear: constant state).
    pub per_layer: Vec<u64>,
    /// Sum over layers: the memory the cache holds.
    pub total: u64,
    /// Bytes of each layer's cache one decode token moves: the cache read, and a linear
    /// layer's state read and written back.
    pub per_layer_traffic: Vec<u64>,
    /// Sum over layers: the cache bytes one token moves.
    pub traffic: u64,
}

/// llama.cpp's default micro-batch (`n_ubatch`), which sliding-window caches hold on top of
/// the window.
pub const UBATCH: u64 = 512;
/// llama.cpp's cache-size padding, in cells.
pub const CELL_PAD: u64 = 256;

/// Cells a sliding-window layer keeps at context `ctx`: `window + UBATCH` rounded up to
/// [`CELL_PAD`], at most `ctx` (llama.cpp's `llama_kv_cache_iswa`).
pub fn swa_cells(window: u64, ctx: u64) -> u64 {
    window
        .saturating_add(UBATCH)
        .div_ceil(CELL_PAD)
        .saturating_mul(CELL_PAD)
        .min(ctx)
}

/// Bytes of `values` cache elements of `dtype`, requiring whole blocks.
fn row_bytes(dtype: DType, values: u64, m: &ModelSpec) -> Result<u64, KvError> {
    dtype.bytes_for(values).ok_or(KvError::BadRow {
        dtype,
        block: dtype.block_size(),
        values,
        model: m.name.clone(),
    })
}

/// Constant recurrent state of one linear-attention layer, in bytes (F32, as llama.cpp keeps
/// it); `None` if it does not fit in 64 bits (never for a validated spec).
fn checked_linear_state(m: &ModelSpec) -> Option<u64> {
    let Some(la) = m.linear_attention.as_ref() else {
        return Some(0);
    };
    let ssm = la
        .n_v_heads
        .checked_mul(la.k_head_dim)?
        .checked_mul(la.v_head_dim)?;
    let qk = la.n_k_heads.checked_mul(la.k_head_dim)?.checked_mul(2)?;
    let channels = qk.checked_add(la.n_v_heads.checked_mul(la.v_head_dim)?)?;
    let conv = la.conv_kernel.saturating_sub(1).checked_mul(channels)?;
    ssm.checked_add(conv)?.checked_mul(4)
}

/// Constant recurrent state of one linear-attention layer, in bytes (F32, as llama.cpp keeps
/// it); saturates at `u64::MAX` for specs that did not validate.
pub fn linear_state_bytes(m: &ModelSpec) -> u64 {
    checked_linear_state(m).unwrap_or(u64::MAX)
}

/// The cache of `m` at `ctx` tokens in `layout` with elements of `dtype`. Every size is
/// computed with checked arithmetic: a context of 0 or past [`MAX_CONTEXT`], or a size past
/// 64 bits, is [`KvError::TooLarge`].
pub fn kv_cache(
    m: &ModelSpec,
    layout: KvLayout,
    dtype: DType,
    ctx: u64,
) -> Result<KvCache, KvError> {
    let too_large = || KvError::TooLarge {
        model: m.name.clone(),
        ctx,
    };
    if ctx == 0 || ctx > MAX_CONTEXT {
        return Err(too_large());
    }
    let (k, v) = layout.values_per_token_layer(m)?;
    let v_bytes = if v > 0 { row_bytes(dtype, v, m)? } else { 0 };
    let per_token = row_bytes(dtype, k, m)?
        .checked_add(v_bytes)
        .ok_or_else(too_large)?;
    let window = m.sliding_window.map_or(ctx, |w| swa_cells(w, ctx));
    let state = checked_linear_state(m).ok_or_else(too_large)?;
    let per_layer: Vec<u64> = m
        .layer_kinds()
        .map(|kind| match kind {
            LayerKind::Full => per_token.checked_mul(ctx),
            LayerKind::Sliding => per_token.checked_mul(window),
            LayerKind::Linear => Some(state),
        })
        .collect::<Option<_>>()
        .ok_or_else(too_large)?;
    let per_layer_traffic: Vec<u64> = m
        .layer_kinds()
        .zip(&per_layer)
        .map(|(kind, b)| match kind {
            LayerKind::Linear => b.checked_mul(2),
            _ => Some(*b),
        })
        .collect::<Option<_>>()
        .ok_or_else(too_large)?;
    let sum = |v: &[u64]| v.iter().try_fold(0u64, |a, b| a.checked_add(*b));
    let total = sum(&per_layer).ok_or_else(too_large)?;
    let traffic = sum(&per_layer_traffic).ok_or_else(too_large)?;
    Ok(KvCache {
        layout,
        dtype,
        ctx,
        bytes_per_token_layer: per_token,
        per_layer,
        total,
        per_layer_traffic,
        traffic,
    })
}

impl fmt::Display for KvLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A layout name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown KV layout `{0}` (known: gqa, mla-latent, mla-split, expanded-mha)")]
pub struct UnknownLayout(pub String);

impl FromStr for KvLayout {
    type Err = UnknownLayout;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let want = s.trim().to_ascii_lowercase().replace('_', "-");
        let want = match want.as_str() {
            "latent" | "mla" | "llama.cpp" => "mla-latent",
            "split" | "ollama" => "mla-split",
            "mha" | "expanded" => "expanded-mha",
            other => other,
        };
        NAMES
            .iter()
            .find(|(_, n)| *n == want)
            .map(|(l, _)| *l)
            .ok_or_else(|| UnknownLayout(s.to_string()))
    }
}
