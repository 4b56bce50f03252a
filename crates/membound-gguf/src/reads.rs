//! What one decode token reads from each tensor of a GGUF file ([`token_reads`]), counted from
//! the file's own tensor types and sizes by the rules of `membound_spec::bytes` — what
//! `membound inspect` prints and what the decode suite counts for a real file.

use std::collections::HashMap;

use membound_spec::bytes::weights;
use membound_spec::{DType, ModelSpec, Recipe};
use serde::Serialize;

use crate::{GgufFile, tensor_class};

/// One tensor of the file with its class and the bytes a decode token reads from it.
#[derive(Debug, Clone, Serialize)]
pub struct TensorRead {
    /// The tensor's name.
    pub name: String,
    /// Its storage type.
    #[serde(rename = "type")]
    pub dtype: DType,
    /// ggml dims.
    pub dims: Vec<u64>,
    /// Stored bytes.
    pub bytes: u64,
    /// Bytes one token reads.
    pub active_bytes: u64,
    /// `membound_spec` tensor class where the name is in the spec's inventory, else the name's
    /// base (`post_attention_norm`).
    pub class: String,
}

/// Class label and the fraction `(num, den)` of each inventory tensor one token reads, taken
/// from `membound_spec::bytes` (F32 storage: every tensor's bytes divide exactly).
fn spec_classes(m: &ModelSpec) -> HashMap<String, (String, u64, u64)> {
    weights(m, Recipe::F32)
        .tensors
        .into_iter()
        .map(|s| {
            let class = serde_json::to_value(s.desc.class)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{:?}", s.desc.class));
            (s.desc.name, (class, s.active_bytes, s.bytes))
        })
        .collect()
}

/// `expert_used_count` (1 when absent).
pub fn top_k(f: &GgufFile) -> u64 {
    f.arch_meta("expert_used_count")
        .and_then(|v| v.as_u64())
        .unwrap_or(1)
}

/// Classifies the file's tensors and counts what a token reads from each: tensors of the
/// spec's inventory by the spec's rule; others by name — `token_embd` one row, stacked
/// `*_exps` experts `expert_used_count` of them (at most all of them), everything else whole.
pub fn token_reads(f: &GgufFile, spec: Option<&ModelSpec>) -> Vec<TensorRead> {
    let classes = spec.map(spec_classes).unwrap_or_default();
    let top_k = top_k(f);
    f.tensors()
        .iter()
        .map(|t| {
            let base = tensor_class(&t.name).1;
            let (class, num, den) = match classes.get(&t.name) {
                Some((class, active, bytes)) => (class.clone(), *active, *bytes),
                None => {
                    let (num, den) = match (base, t.dims.as_slice()) {
                        ("token_embd", [_, rows, ..]) => (1, *rows),
                        (b, [_, _, experts]) if b.ends_with("_exps") => {
                            (top_k.min(*experts), *experts)
                        }
                        _ => (1, 1),
                    };
                    (base.to_string(), num, den)
                }
            };
            let active = (u128::from(t.n_bytes) * u128::from(num))
                .checked_div(u128::from(den))
                .unwrap_or(0) as u64;
            TensorRead {
                name: t.name.clone(),
                dtype: t.dtype,
                dims: t.dims.clone(),
                bytes: t.n_bytes,
                active_bytes: active,
                class,
            }
        })
        .collect()
}
