//! Synthetic model files: a GGUF file of a [`ModelSpec`] stored as a [`Recipe`] would store it —
//! the metadata of [`crate::spec::gguf_metadata`] and every tensor of
//! [`membound_spec::tensors::inventory`] in [`Recipe::dtype_for`]'s type, so that reading it
//! back with [`crate::spec::spec_from_gguf`] gives the spec and its tensor bytes equal
//! [`membound_spec::bytes::weights`].
//!
//! Data ([`Fill::Random`]): deterministic normal values (`membound_quant::data::normal_f32`)
//! quantized with `membound_quant::ops::quantize`; to stay fast for large tensors only a tile of
//! up to [`TILE_ROWS`] rows is quantized and repeated. Norm weights are ones. Types that
//! membound-quant cannot quantize (the `Q5_0`/`Q5_1` fallbacks of K-quant recipes on short rows)
//! are written as zero blocks, which are valid blocks of every type. [`Fill::Zeros`] writes
//! zeros throughout (fastest). Each tensor is made as it is written, so the largest tensor, not the
//! file, bounds the memory used.

use std::io::Write;
use std::path::Path;

use membound_quant::data::normal_f32;
use membound_quant::ops::{QuantError, quantize};
use membound_spec::tensors::{TensorClass, TensorDesc, inventory};
use membound_spec::{DType, ModelSpec, Recipe};

use crate::error::WriteError;
use crate::spec::{SpecFromGgufError, gguf_metadata};
use crate::value::MetaValue;
use crate::writer::GgufWriter;

/// Rows quantized per tensor with [`Fill::Random`]; the rest repeats them.
pub const TILE_ROWS: u64 = 8;

/// Standard deviation of the random weights.
const WEIGHT_SCALE: f32 = 0.02;

/// What the tensors of a synthetic model hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Quantized normal values from `seed` (each tensor its own stream).
    Random {
        /// Base seed.
        seed: u64,
    },
    /// Quantized normal values from `seed`, every row its own (no repeated tile), norm weights
    /// near one but not one: slower, for small models whose computation is checked value by
    /// value.
    Distinct {
        /// Base seed.
        seed: u64,
    },
    /// All bytes zero.
    Zeros,
}

/// Why a synthetic model could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    /// The spec cannot be expressed as GGUF metadata.
    #[error(transparent)]
    Spec(#[from] SpecFromGgufError),
    /// Writing the file failed.
    #[error("{0}")]
    Write(#[from] WriteError),
    /// Quantizing a tensor failed.
    #[error("tensor {name}: {source}")]
    Quant {
        /// The tensor.
        name: String,
        /// Why.
        source: QuantError,
    },
    /// A tensor's size does not fit in memory on this platform.
    #[error("tensor {name}: {dims:?} of {dtype} is too large to build in memory")]
    TooLarge {
        /// The tensor.
        name: String,
        /// Its dims.
        dims: Vec<u64>,
        /// Its type.
        dtype: DType,
    },
}

/// llama.cpp's `general.file_type` (`LLAMA_FTYPE_MOSTLY_*`) of a recipe.
pub fn file_type(recipe: Recipe) -> u32 {
    match recipe {
        Recipe::F32 => 0,
        Recipe::F16 => 1,
        Recipe::Q4_0 => 2,
        Recipe::Q8_0 => 7,
        Recipe::Q4_K_S => 14,
        Recipe::Q4_K_M => 15,
        Recipe::Q5_K_M => 17,
        Recipe::Q6_K => 18,
        Recipe::BF16 => 32,
        Recipe::MXFP4_MOE => 38,
    }
}

/// The recipe of a `general.file_type` value, if it is one of [`Recipe::all`].
pub fn recipe_of_file_type(ft: u64) -> Option<Recipe> {
    Recipe::all().find(|r| u64::from(file_type(*r)) == ft)
}

/// The data of tensor `t` (number `index` in the file's inventory order) stored as `dtype`:
/// what [`model_writer`] writes for it.
pub fn tensor_data(
    t: &TensorDesc,
    dtype: DType,
    fill: Fill,
    index: u64,
) -> Result<Vec<u8>, SyntheticError> {
    let too_large = || SyntheticError::TooLarge {
        name: t.name.clone(),
        dims: t.dims.clone(),
        dtype,
    };
    let row = t.dims.first().copied().unwrap_or(1);
    let rows = t.values() / row.max(1);
    let row_bytes = dtype.bytes_for(row).ok_or_else(too_large)?;
    let total = usize::try_from(row_bytes * rows).map_err(|_| too_large())?;
    let (seed, tile_rows) = match fill {
        Fill::Zeros => return Ok(vec![0; total]),
        Fill::Random { seed } => (seed, rows.clamp(1, TILE_ROWS)),
        Fill::Distinct { seed } => (seed, rows.max(1)),
    };
    let seed = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let n = usize::try_from(row * tile_rows).map_err(|_| too_large())?;
    let values = match (t.class, fill) {
        // Distinct norms: ones with a little noise, so a norm applied to the wrong values or
        // with the wrong weights shows.
        (TensorClass::Norm, Fill::Distinct { .. }) => normal_f32(seed, n, 0.1)
            .into_iter()
            .map(|v| 1.0 + v)
            .collect(),
        (TensorClass::Norm, _) => vec![1.0; n],
        _ => normal_f32(seed, n, WEIGHT_SCALE),
    };
    let tile = match quantize(dtype, &values) {
        Ok(tile) => tile,
        Err(QuantError::Unsupported(_)) => return Ok(vec![0; total]),
        Err(source) => {
            return Err(SyntheticError::Quant {
                name: t.name.clone(),
                source,
            });
        }
    };
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let take = tile.len().min(total - out.len());
        out.extend_from_slice(&tile[..take]);
    }
    Ok(out)
}

/// A writer of the whole synthetic file of `spec` under `recipe` (metadata, then every
/// tensor in inventory order), plus `general.file_type` and the tokenizer keys llama.cpp
/// needs to load a file without a vocabulary (`tokenizer.ggml.model = "none"`). Tensor data is
/// made as the file is written, one tensor at a time.
pub fn model_writer(
    spec: &ModelSpec,
    recipe: Recipe,
    fill: Fill,
) -> Result<GgufWriter<'static>, SyntheticError> {
    let mut w = GgufWriter::new();
    for (key, value) in gguf_metadata(spec)? {
        w.add_meta(&key, value)?;
    }
    w.add_meta("general.file_type", MetaValue::U32(file_type(recipe)))?;
    w.add_meta("tokenizer.ggml.model", "none")?;
    for (i, t) in inventory(spec).into_iter().enumerate() {
        let dtype = recipe.dtype_for(spec, &t);
        let (name, dims) = (t.name.clone(), t.dims.clone());
        w.add_tensor_deferred(&name, &dims, dtype, move || {
            tensor_data(&t, dtype, fill, i as u64).map_err(|e| WriteError::Produce {
                name: t.name.clone(),
                problem: e.to_string(),
            })
        })?;
    }
    Ok(w)
}

/// Writes the synthetic file of `spec` under `recipe` to `out`; returns the bytes written.
pub fn write_model(
    spec: &ModelSpec,
    recipe: Recipe,
    out: &mut impl Write,
    fill: Fill,
) -> Result<u64, SyntheticError> {
    Ok(model_writer(spec, recipe, fill)?.write_to(out)?)
}

/// Writes the synthetic file of `spec` under `recipe` to `path`; returns the bytes written.
pub fn write_model_file(
    spec: &ModelSpec,
    recipe: Recipe,
    path: impl AsRef<Path>,
    fill: Fill,
) -> Result<u64, SyntheticError> {
    Ok(model_writer(spec, recipe, fill)?.write_file(path)?)
}

/// A small model of the same structure as `spec`: the same arch, layer pattern (two periods
/// after the dense-first layers), attention kind and flags, MoE shape (4 experts, top-2,
/// shared experts and gates kept, group-limited routing as 2 groups keeping 1) and linear
/// attention, with `hidden` as the hidden size (and
/// expert width), 4 query heads of dimension 32 and a vocabulary of `2 * hidden`. Use a
/// multiple of 256 for `hidden` to keep K-quant types on every matrix.
pub fn tiny(spec: &ModelSpec, hidden: u64) -> ModelSpec {
    let mut m = spec.architecture();
    m.name = format!("{}-tiny", spec.name);
    m.display_name = format!("{} (tiny)", spec.display_name);
    let dense_first = m.ffn.moe.as_ref().map_or(0, |e| e.dense_first.min(1));
    m.n_layers = dense_first + 2 * m.layer_pattern.len() as u32;
    m.hidden = hidden;
    m.vocab = 2 * hidden;
    let a = &mut m.attention;
    let full_mha = a.n_kv_heads == Some(a.n_heads);
    a.n_heads = 4;
    match a.kind {
        membound_spec::model::AttentionKind::Gqa => {
            a.n_kv_heads = Some(if full_mha { 4 } else { 2 });
            a.head_dim = Some(32);
            a.v_head_dim = Some(32);
        }
        membound_spec::model::AttentionKind::Mla => {
            a.q_lora_rank = a.q_lora_rank.map(|_| 64);
            a.kv_lora_rank = Some(64);
            a.qk_nope_head_dim = Some(32);
            a.qk_rope_head_dim = Some(32);
            a.v_head_dim = Some(32);
        }
    }
    if let Some(la) = m.linear_attention.as_mut() {
        la.n_k_heads = 2;
        la.n_v_heads = 4;
        la.k_head_dim = 32;
        la.v_head_dim = 32;
    }
    m.ffn.intermediate = m.ffn.intermediate.map(|_| 2 * hidden);
    if let Some(e) = m.ffn.moe.as_mut() {
        e.n_experts = 4;
        e.top_k = e.top_k.min(2);
        e.expert_intermediate = hidden;
        e.shared_intermediate = e.shared_intermediate.map(|_| hidden);
        e.dense_first = dense_first;
        // Group-limited routing stays group-limited: 2 groups of 2, the best one kept.
        if e.n_group.is_some_and(|g| g > 1) {
            e.n_group = Some(2);
            e.topk_group = Some(1);
        }
    }
    m
}
