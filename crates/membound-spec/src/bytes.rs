//! Per-token byte accounting: the bytes a decode step must move across the memory bus.
//!
//! One convention everywhere (design.md): quantized weights count their stored size, scales
//! included. Per token at batch 1 a decode step reads every resident weight once, except the
//! token embeddings (one row; a model with tied embeddings also reads the whole matrix as its
//! output projection) and the routed experts (`top_k` of `n_experts` per MoE layer, the
//! expectation for one token, their biases included: llama.cpp reads only the selected rows);
//! plus the whole KV cache up to the current depth (sliding layers: the cells llama.cpp keeps,
//! window plus a micro-batch; linear layers: their state, read and written, counted twice).
//! Activations are a few
//! kilobytes per layer and are not counted.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::dtype::DType;
use crate::kv::KvCache;
use crate::model::ModelSpec;
use crate::recipe::Recipe;
use crate::tensors::{TensorClass, TensorDesc, inventory};

/// One tensor with its storage type and size under a recipe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredTensor {
    /// The tensor.
    #[serde(flatten)]
    pub desc: TensorDesc,
    /// Storage type.
    pub dtype: DType,
    /// Stored bytes (scales included).
    pub bytes: u64,
    /// Bytes one decode token reads from it.
    pub active_bytes: u64,
}

/// Every tensor of a model as a recipe stores it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Weights {
    /// Recipe used.
    pub recipe: Recipe,
    /// Tensors in file order.
    pub tensors: Vec<StoredTensor>,
}

/// Fraction of a tensor one token reads, as `(numerator, denominator)`.
fn active_fraction(m: &ModelSpec, t: &TensorDesc) -> (u64, u64) {
    match t.class {
        // One row per token; a tied model also reads the whole matrix as its output projection.
        TensorClass::TokenEmbd if m.tied_embeddings => (m.vocab + 1, m.vocab),
        TensorClass::TokenEmbd => (1, m.vocab),
        TensorClass::Experts | TensorClass::ExpertBias => m
            .ffn
            .moe
            .as_ref()
            .map_or((1, 1), |e| (e.top_k, e.n_experts)),
        _ => (1, 1),
    }
}

/// Stores every tensor of `m` as `recipe` would.
pub fn weights(m: &ModelSpec, recipe: Recipe) -> Weights {
    let tensors = inventory(m)
        .into_iter()
        .map(|desc| {
            let dtype = recipe.dtype_for(m, &desc);
            let bytes = dtype.bytes_for_ceil(desc.values());
            let (num, den) = active_fraction(m, &desc);
            // Whole rows (embeddings) or whole experts: exact integer division.
            let active_bytes = bytes / den * num;
            StoredTensor {
                desc,
                dtype,
                bytes,
                active_bytes,
            }
        })
        .collect();
    Weights { recipe, tensors }
}

/// Bytes totals of a set of tensors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Values (parameters).
    pub params: u64,
    /// Parameters one token uses (embeddings: one row; experts: top_k of n_experts).
    pub params_active: u64,
    /// Stored bytes.
    pub bytes: u64,
    /// Bytes one token reads.
    pub active_bytes: u64,
}

impl Totals {
    fn add(&mut self, m: &ModelSpec, t: &StoredTensor) {
        let (num, den) = active_fraction(m, &t.desc);
        self.params += t.desc.values();
        self.params_active += t.desc.values() / den * num;
        self.bytes += t.bytes;
        self.active_bytes += t.active_bytes;
    }
}

impl Weights {
    /// Totals over every tensor.
    pub fn totals(&self, m: &ModelSpec) -> Totals {
        let mut t = Totals::default();
        self.tensors.iter().for_each(|s| t.add(m, s));
        t
    }

    /// Totals per tensor class.
    pub fn by_class(&self, m: &ModelSpec) -> BTreeMap<TensorClass, Totals> {
        let mut map = BTreeMap::<TensorClass, Totals>::new();
        for s in &self.tensors {
            map.entry(s.desc.class).or_default().add(m, s);
        }
        map
    }

    /// Stored bytes per storage type.
    pub fn by_dtype(&self) -> BTreeMap<DType, u64> {
        let mut map = BTreeMap::new();
        for s in &self.tensors {
            *map.entry(s.dtype).or_insert(0) += s.bytes;
        }
        map
    }

    /// Totals of layer `i`'s tensors (`None`: the model-level tensors).
    pub fn layer(&self, m: &ModelSpec, i: Option<u32>) -> Totals {
        let mut t = Totals::default();
        self.tensors
            .iter()
            .filter(|s| s.desc.layer == i)
            .for_each(|s| t.add(m, s));
        t
    }

    /// Totals of the tensors of one class.
    pub fn class(&self, m: &ModelSpec, class: TensorClass) -> Totals {
        self.by_class(m).get(&class).copied().unwrap_or_default()
    }

    /// Active parameters by the published convention of model cards: every parameter a token
    /// uses, without the input embeddings (gpt-oss's card: "unembedding parameters are counted
    /// towards active, but not embeddings").
    pub fn params_active_published(&self, m: &ModelSpec) -> u64 {
        self.totals(m).params_active - m.hidden
    }

    /// Bytes one token reads from layer `layer`'s FFN (dense FFN, or router with its bias —
    /// `exp_probs_b` for a sigmoid router —, experts, their biases and the shared expert; the
    /// `ffn_norm` vector excluded).
    pub fn ffn_active_bytes(&self, layer: u32) -> u64 {
        self.tensors
            .iter()
            .filter(|t| {
                t.desc.layer == Some(layer)
                    && (t.desc.base.starts_with("ffn_") || t.desc.base == "exp_probs_b")
                    && t.desc.class != TensorClass::Norm
            })
            .map(|t| t.active_bytes)
            .sum()
    }

    /// Weight bytes one token reads from layer `layer` (attention, FFN, norms).
    pub fn layer_active_bytes(&self, layer: u32) -> u64 {
        self.tensors
            .iter()
            .filter(|t| t.desc.layer == Some(layer))
            .map(|t| t.active_bytes)
            .sum()
    }
}

/// What one decode token reads, at one context depth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenBytes {
    /// Weight bytes read per token.
    pub weights: u64,
    /// KV-cache bytes read, and recurrent-state bytes read and written, per token at this depth.
    pub kv: u64,
    /// Their sum.
    pub total: u64,
}

/// Bytes one token reads: active weights plus the KV cache at `kv.ctx` depth.
pub fn per_token(m: &ModelSpec, w: &Weights, kv: &KvCache) -> TokenBytes {
    let weights = w.totals(m).active_bytes;
    TokenBytes {
        weights,
        kv: kv.traffic,
        total: weights + kv.traffic,
    }
}

/// Best-case decode rate: bandwidth (bytes/s) divided by bytes per token.
pub fn roofline_tps(bandwidth_bytes_per_s: f64, bytes_per_token: u64) -> f64 {
    if bytes_per_token == 0 {
        f64::INFINITY
    } else {
        bandwidth_bytes_per_s / bytes_per_token as f64
    }
}
