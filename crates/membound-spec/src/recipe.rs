//! Quantization recipes: which storage type a GGUF file of a given kind (`Q4_K_M`, `Q8_0`,
//! `MXFP4_MOE`, …) gives each tensor, following llama.cpp's `llama-quant.cpp`
//! (`llama_tensor_get_type_impl`) for its standard, non-imatrix mixtures.
//!
//! Rules implemented (Q4_K_M): output (and tied embeddings) Q6_K; attention-V-like tensors
//! (`attn_v`, fused `attn_qkv`; `category_is_attn_v` in llama.cpp) Q6_K on the layers where
//! `use_more_bits` holds, else the base type (Q5_K for 80-layer llama "70B" models, Q8_0 when a
//! model has exactly 8 experts); every `ffn_down*` likewise by its layer index; everything else the
//! base type. Q4_K_S: Q5_K for the first four attention-V-like tensors and for `ffn_down*` in
//! the first eighth of the layers. Norms, biases, routers and `ssm_conv1d` are never quantized
//! (F32). A tensor whose row length is not a multiple of the type's block falls back as
//! llama.cpp does (Q2_K/Q3_K→Q4_0, Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0, then F16).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::dtype::DType;
use crate::model::ModelSpec;
use crate::tensors::{TensorClass, TensorDesc};

/// A GGUF file kind, named as llama.cpp's `llama-quantize` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[allow(non_camel_case_types)]
pub enum Recipe {
    /// Every matrix F32.
    F32,
    /// Every matrix F16.
    F16,
    /// Every matrix BF16.
    BF16,
    /// Every matrix Q8_0.
    Q8_0,
    /// Q4_0 with a Q6_K output.
    Q4_0,
    /// Q4_K with Q6_K output and Q6_K attn_v / ffn_down on `use_more_bits` layers.
    Q4_K_M,
    /// Q4_K with a Q6_K output.
    Q4_K_S,
    /// Q5_K with Q6_K output and Q6_K attn_v / ffn_down on `use_more_bits` layers.
    Q5_K_M,
    /// Every matrix Q6_K.
    Q6_K,
    /// Stacked expert tensors MXFP4, every other matrix Q8_0 (gpt-oss GGUFs).
    MXFP4_MOE,
}

const NAMES: &[(Recipe, &str)] = &[
    (Recipe::F32, "F32"),
    (Recipe::F16, "F16"),
    (Recipe::BF16, "BF16"),
    (Recipe::Q8_0, "Q8_0"),
    (Recipe::Q4_0, "Q4_0"),
    (Recipe::Q4_K_M, "Q4_K_M"),
    (Recipe::Q4_K_S, "Q4_K_S"),
    (Recipe::Q5_K_M, "Q5_K_M"),
    (Recipe::Q6_K, "Q6_K"),
    (Recipe::MXFP4_MOE, "MXFP4_MOE"),
];

impl Recipe {
    /// Every recipe.
    pub fn all() -> impl Iterator<Item = Recipe> {
        NAMES.iter().map(|(r, _)| *r)
    }

    /// Name as llama-quantize prints it.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(r, _)| *r == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    /// The base type of the recipe (llama.cpp's `llama_ftype_get_default_type`).
    pub fn base(self) -> DType {
        match self {
            Recipe::F32 => DType::F32,
            Recipe::F16 => DType::F16,
            Recipe::BF16 => DType::BF16,
            Recipe::Q8_0 | Recipe::MXFP4_MOE => DType::Q8_0,
            Recipe::Q4_0 => DType::Q4_0,
            Recipe::Q4_K_M | Recipe::Q4_K_S => DType::Q4_K,
            Recipe::Q5_K_M => DType::Q5_K,
            Recipe::Q6_K => DType::Q6_K,
        }
    }

    /// The storage type this recipe gives `t` in model `m`.
    pub fn dtype_for(self, m: &ModelSpec, t: &TensorDesc) -> DType {
        if !quantizable(t) {
            return DType::F32;
        }
        let float = matches!(self, Recipe::F32 | Recipe::F16 | Recipe::BF16);
        let chosen = if float {
            self.base()
        } else if self == Recipe::MXFP4_MOE {
            if t.dims.len() == 3 && t.dims[2] > 1 {
                DType::MXFP4
            } else {
                DType::Q8_0
            }
        } else {
            self.mixture(m, t)
        };
        fallback(chosen, t.dims[0])
    }

    fn mixture(self, m: &ModelSpec, t: &TensorDesc) -> DType {
        let base = self.base();
        let output_like = t.class == TensorClass::Output
            || (t.class == TensorClass::TokenEmbd && m.tied_embeddings);
        if output_like {
            return if self == Recipe::Q8_0 {
                DType::Q8_0
            } else {
                DType::Q6_K
            };
        }
        let more_bits_recipe = matches!(self, Recipe::Q4_K_M | Recipe::Q5_K_M);
        let layer = t.layer.unwrap_or(0);
        let n = m.n_layers;
        if is_attn_v_like(t) {
            let n_experts = m.ffn.moe.as_ref().map_or(0, |e| e.n_experts);
            // Every layer has one attention-V-like tensor (attn_v or, on linear layers,
            // attn_qkv): llama.cpp's `i_attention_wv` is the layer index.
            let mut ty = if more_bits_recipe && use_more_bits(layer, n) {
                DType::Q6_K
            } else if self == Recipe::Q4_K_S && layer < 4 {
                DType::Q5_K
            } else {
                base
            };
            if is_70b_type(m) && matches!(ty, DType::Q3_K | DType::Q4_K) {
                ty = DType::Q5_K;
            }
            if n_experts == 8 && base != DType::Q8_0 {
                ty = DType::Q8_0;
            }
            return ty;
        }
        if t.base.starts_with("ffn_down") && more_bits_recipe && use_more_bits(layer, n) {
            return DType::Q6_K;
        }
        if t.base.starts_with("ffn_down") && self == Recipe::Q4_K_S && layer < n / 8 {
            return DType::Q5_K;
        }
        base
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third layer
/// in between.
pub fn use_more_bits(i: u32, n: u32) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

fn is_attn_v_like(t: &TensorDesc) -> bool {
    matches!(t.base, "attn_v" | "attn_qkv" | "attn_kv_b")
}

fn is_70b_type(m: &ModelSpec) -> bool {
    m.arch == "llama" && m.n_layers == 80
}

/// llama.cpp's `tensor_allows_quantization`: only matrices named `*.weight`, never norms,
/// routers, or the short convolution of linear-attention layers.
fn quantizable(t: &TensorDesc) -> bool {
    t.dims.len() >= 2
        && t.name.ends_with(".weight")
        && !matches!(
            t.class,
            TensorClass::Norm | TensorClass::Vector | TensorClass::Router | TensorClass::ExpertBias
        )
}

/// llama.cpp's fallback when a row is not a whole number of blocks.
fn fallback(ty: DType, row: u64) -> DType {
    if row.is_multiple_of(ty.block_size()) {
        return ty;
    }
    let next = match ty {
        DType::Q2_K | DType::Q3_K => DType::Q4_0,
        DType::Q4_K => DType::Q5_0,
        DType::Q5_K => DType::Q5_1,
        DType::Q6_K => DType::Q8_0,
        _ => DType::F16,
    };
    if row.is_multiple_of(next.block_size()) {
        next
    } else {
        DType::F16
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A recipe name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown quant `{0}` (known: {known})", known = NAMES.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", "))]
pub struct UnknownRecipe(pub String);

impl FromStr for Recipe {
    type Err = UnknownRecipe;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let want = s.trim().to_ascii_uppercase().replace('-', "_");
        NAMES
            .iter()
            .find(|(_, n)| *n == want)
            .map(|(r, _)| *r)
            .ok_or_else(|| UnknownRecipe(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_matches_llama_cpp_layer_lists() {
        let layers = |n| (0..n).filter(|&i| use_more_bits(i, n)).collect::<Vec<_>>();
        assert_eq!(layers(24), vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
        assert_eq!(layers(47).len(), 23);
        assert_eq!(layers(48).len(), 24);
        assert_eq!(layers(80).len(), 40);
        assert_eq!(&layers(47)[..7], &[0, 1, 2, 3, 4, 7, 10]);
    }

    #[test]
    fn fallback_rules() {
        assert_eq!(fallback(DType::Q4_K, 2880), DType::Q5_0);
        assert_eq!(fallback(DType::Q6_K, 2880), DType::Q8_0);
        assert_eq!(fallback(DType::Q5_K, 192), DType::Q5_1);
        assert_eq!(fallback(DType::Q4_K, 4096), DType::Q4_K);
        assert_eq!(fallback(DType::Q8_0, 100), DType::F16);
        assert_eq!(fallback(DType::Q3_K, 2880), DType::Q4_0);
        assert_eq!(fallback(DType::Q2_K, 2880), DType::Q4_0);
        assert_eq!("q4_k_m".parse::<Recipe>().unwrap(), Recipe::Q4_K_M);
        assert!(
            "Q3_XL"
                .parse::<Recipe>()
                .unwrap_err()
                .to_string()
                .contains("Q4_K_M")
        );
    }
}
