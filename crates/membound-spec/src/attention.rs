//! One decode-attention layer as the kernels and the attention suite run it ([`AttnShape`]):
//! one new token's queries against `depth` cached tokens in one KV layout, and the bytes it
//! reads ([`AttnShape::bytes`], the convention of [`crate::kv`]: what `membound fit` counts).
//!
//! Every layout is the same computation over a K cache and a V cache of `kv_heads` heads
//! stored head-major (`[kv_heads][tokens][row]`), each query head `h` reading kv head
//! `h / group`:
//! - GQA: K and V per KV head (`head_dim`, `v_head_dim`), `group = n_heads / n_kv_heads`.
//! - MLA latent (llama.cpp, FlashMLA): one "head" of 576 values (`kv_lora_rank` latent +
//!   `qk_rope_head_dim` rope key); the queries are absorbed into latent space (576 each), V is
//!   the first 512 values of the same rows (`v_in_k`), outputs stay in latent space and are
//!   projected by `W_UV` afterwards.
//! - MLA split (Ollama-like): the same math with V stored again as a separate 512-value cache.
//! - Expanded MHA: the latent up-projected, K (`qk_nope + qk_rope`) and V (`v_head_dim`) per
//!   query head, `group = 1`.

use serde::Serialize;

use crate::dtype::DType;
use crate::kv::{KvError, KvLayout};
use crate::model::{LayerKind, ModelSpec};

/// One attention layer's cache geometry and query heads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttnShape {
    /// The layout.
    pub layout: KvLayout,
    /// Query heads.
    pub n_heads: usize,
    /// Cached heads (GQA: KV heads; MLA latent/split: 1; expanded: `n_heads`).
    pub kv_heads: usize,
    /// Values of a K row (and of a query).
    pub d_k: usize,
    /// Values of a V row (and of an output).
    pub d_v: usize,
    /// V is the first `d_v` values of each K row (MLA latent): no V cache.
    pub v_in_k: bool,
    /// Softmax scale (`1 / sqrt(qk_head_dim)` of the model).
    pub scale: f32,
    /// Sliding window (the last `window` tokens are attended), or `None`.
    pub window: Option<usize>,
    /// One learned sink logit per query head joins each softmax (gpt-oss).
    pub sinks: bool,
    /// Cache element type (F16, BF16, Q8_0).
    pub dtype: DType,
}

impl AttnShape {
    /// A shape of `n_heads` query heads over `kv_heads` cached heads with rows of `d_k` and
    /// `d_v` values of `dtype` (V inside K for [`KvLayout::MlaLatent`]), softmax scale
    /// `1 / sqrt(d_k)`, no window, no sinks.
    pub fn new(
        layout: KvLayout,
        n_heads: usize,
        kv_heads: usize,
        d_k: usize,
        d_v: usize,
        dtype: DType,
    ) -> AttnShape {
        AttnShape {
            layout,
            n_heads,
            kv_heads,
            d_k,
            d_v,
            v_in_k: layout == KvLayout::MlaLatent,
            scale: 1.0 / (d_k as f32).sqrt(),
            window: None,
            sinks: false,
            dtype,
        }
    }

    /// The attention of `m`'s layers of `kind` (full or sliding) in `layout` with a cache of
    /// `dtype`.
    pub fn from_spec(
        m: &ModelSpec,
        layout: KvLayout,
        dtype: DType,
        kind: LayerKind,
    ) -> Result<AttnShape, KvError> {
        let (k, v) = layout.values_per_token_layer(m)?;
        let a = &m.attention;
        let n_heads = a.n_heads as usize;
        let (kv_heads, v_in_k) = match layout {
            KvLayout::Gqa => (m.kv_heads() as usize, false),
            KvLayout::MlaLatent => (1, true),
            KvLayout::MlaSplit => (1, false),
            KvLayout::ExpandedMha => (n_heads, false),
        };
        let d_k = k as usize / kv_heads;
        let d_v = if v_in_k {
            a.kv_lora_rank.unwrap_or(0) as usize
        } else {
            v as usize / kv_heads
        };
        for values in [d_k, d_v] {
            if dtype.bytes_for(values as u64).is_none() {
                return Err(KvError::BadRow {
                    dtype,
                    block: dtype.block_size(),
                    values: values as u64,
                    model: m.name.clone(),
                });
            }
        }
        Ok(AttnShape {
            layout,
            n_heads,
            kv_heads,
            d_k,
            d_v,
            v_in_k,
            scale: 1.0 / (m.qk_head_dim() as f32).sqrt(),
            window: (kind == LayerKind::Sliding)
                .then_some(m.sliding_window.map(|w| w as usize))
                .flatten(),
            sinks: a.sinks,
            dtype,
        })
    }

    /// Query heads per cached head.
    pub fn group(&self) -> usize {
        self.n_heads / self.kv_heads.max(1)
    }

    /// Bytes of one cached K row (one head, one token) and of one V row (0 when V is in K).
    pub fn row_bytes(&self) -> (usize, usize) {
        let b = |n: usize| self.dtype.bytes_for(n as u64).unwrap_or(0) as usize;
        (b(self.d_k), if self.v_in_k { 0 } else { b(self.d_v) })
    }

    /// Tokens a query attends to at `depth` cached tokens (its window where it has one).
    pub fn attended(&self, depth: usize) -> usize {
        self.window.map_or(depth, |w| w.min(depth))
    }

    /// Bytes of the cache a layer holds at `depth` tokens (every head).
    pub fn cache_bytes(&self, depth: usize) -> u64 {
        let (k, v) = self.row_bytes();
        ((k + v) * self.kv_heads * depth) as u64
    }

    /// KV bytes one query step reads at `depth`: the attended K and V rows of every cached head.
    pub fn kv_bytes(&self, depth: usize) -> u64 {
        self.cache_bytes(self.attended(depth))
    }

    /// Bytes one query step moves at `depth`: [`AttnShape::kv_bytes`], the queries read and
    /// the outputs written in f32 (and the sinks).
    pub fn bytes(&self, depth: usize) -> u64 {
        let act = 4 * (self.n_heads * (self.d_k + self.d_v)) as u64;
        let sinks = if self.sinks {
            4 * self.n_heads as u64
        } else {
            0
        };
        self.kv_bytes(depth) + act + sinks
    }

    /// Checks that the shape is one the kernels take: heads a multiple of the cached heads,
    /// rows whole blocks of the cache type, V within K where it is a view.
    pub fn validate(&self) -> Result<(), String> {
        if self.n_heads == 0 || self.kv_heads == 0 || !self.n_heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "{} query heads over {} cached heads",
                self.n_heads, self.kv_heads
            ));
        }
        if self.d_k == 0 || self.d_v == 0 || (self.v_in_k && self.d_v > self.d_k) {
            return Err(format!(
                "rows of {} (K) and {} (V) values",
                self.d_k, self.d_v
            ));
        }
        for n in [self.d_k, self.d_v] {
            if self.dtype.bytes_for(n as u64).is_none() {
                return Err(format!("{n} values are not whole {} blocks", self.dtype));
            }
        }
        if self.window == Some(0) {
            return Err("a window of 0 tokens".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::kv_cache;
    use crate::registry::find;

    /// A full layer's cache bytes at depth d are what `membound fit` counts for that layer, for
    /// every model and layout that applies, and the step reads them plus its activations.
    #[test]
    fn bytes_match_the_fit_accounting() {
        for name in [
            "glm-4.7-flash",
            "deepseek-v2-lite",
            "qwen3-30b-a3b",
            "llama-3.1-70b",
            "gpt-oss-120b",
        ] {
            let m = find(name).unwrap();
            let full = m.layer_kinds().position(|k| k == LayerKind::Full).unwrap();
            for &layout in KvLayout::applicable(&m) {
                for dtype in [DType::F16, DType::Q8_0] {
                    let s = AttnShape::from_spec(&m, layout, dtype, LayerKind::Full).unwrap();
                    assert!(s.validate().is_ok(), "{name} {layout}");
                    let d = 4096;
                    let fit = kv_cache(&m, layout, dtype, d as u64).unwrap().per_layer[full];
                    assert_eq!(s.cache_bytes(d), fit, "{name} {layout} {dtype}");
                    assert_eq!(
                        s.bytes(d) - s.cache_bytes(d),
                        4 * (s.n_heads * (s.d_k + s.d_v) + if s.sinks { s.n_heads } else { 0 })
                            as u64
                    );
                }
            }
        }
    }

    #[test]
    fn glm_layouts_as_the_seed_describes_them() {
        let m = find("glm-4.7-flash").unwrap();
        let shape = |l| AttnShape::from_spec(&m, l, DType::F16, LayerKind::Full).unwrap();
        let latent = shape(KvLayout::MlaLatent);
        assert_eq!(
            (latent.kv_heads, latent.d_k, latent.d_v, latent.v_in_k),
            (1, 576, 512, true)
        );
        assert_eq!(latent.row_bytes(), (1152, 0));
        let split = shape(KvLayout::MlaSplit);
        assert_eq!(split.row_bytes(), (1152, 1024));
        let mha = shape(KvLayout::ExpandedMha);
        assert_eq!(
            (mha.kv_heads, mha.d_k, mha.d_v, mha.group()),
            (20, 256, 256, 1)
        );
        assert!((latent.scale - 1.0 / 256f32.sqrt()).abs() < 1e-9);
        let oss = find("gpt-oss-120b").unwrap();
        let swa =
            AttnShape::from_spec(&oss, KvLayout::Gqa, DType::F16, LayerKind::Sliding).unwrap();
        assert_eq!((swa.window, swa.sinks, swa.group()), (Some(128), true, 8));
        assert_eq!(swa.attended(4096), 128);
        assert_eq!(swa.bytes(4096), swa.bytes(128));
    }
}
