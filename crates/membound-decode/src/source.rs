//! Where a decode step's weights come from ([`TensorSource`]): a GGUF file read through
//! membound-gguf ([`GgufSource`], llama.cpp's tensor names and stored types as they are), or a
//! model spec's synthetic weights ([`SyntheticSource`]: each tensor of
//! `membound_spec::tensors::inventory` in the type its recipe gives it, made on request so a
//! sample of layers never builds the rest).

use std::collections::HashMap;

use membound_gguf::GgufFile;
use membound_gguf::synthetic::{Fill, tensor_data};
use membound_spec::model::Numerics;
use membound_spec::tensors::{TensorClass, TensorDesc, inventory};
use membound_spec::{DType, ModelSpec, Recipe};

use crate::DecodeError;

/// One stored tensor: ggml dims (innermost first), storage type and bytes.
#[derive(Debug, Clone)]
pub struct Tensor {
    /// ggml `ne`: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    /// Storage type.
    pub dtype: DType,
    /// The stored blocks.
    pub bytes: Vec<u8>,
}

impl Tensor {
    /// The values as f32 (norms, biases, sinks, routers).
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>, DecodeError> {
        membound_quant::ops::dequantize(self.dtype, &self.bytes).map_err(|e| DecodeError::Tensor {
            name: name.to_string(),
            problem: e.to_string(),
        })
    }

    /// Rows (`dims[1..]` multiplied) and columns (`dims[0]`).
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = self.dims.first().copied().unwrap_or(1) as usize;
        let rows = self.dims.iter().skip(1).product::<u64>() as usize;
        (rows, cols)
    }
}

/// Tensors by llama.cpp name.
pub trait TensorSource {
    /// Tensor `name` (a copy of its bytes), or `None` where the model has none.
    fn tensor(&self, name: &str) -> Result<Option<Tensor>, DecodeError>;
    /// Where the tensors come from, for messages.
    fn describe(&self) -> String;
}

/// The tensors of a GGUF file.
pub struct GgufSource<'a> {
    file: &'a GgufFile,
}

impl<'a> GgufSource<'a> {
    /// Reads tensors of `file`.
    pub fn new(file: &'a GgufFile) -> GgufSource<'a> {
        GgufSource { file }
    }

    /// The file's RMSNorm epsilon and RoPE base where its metadata holds them, the
    /// architecture's usual values otherwise; the rotation style of its architecture.
    pub fn numerics(&self) -> Numerics {
        let mut n = Numerics::for_arch(self.file.arch().unwrap_or_default());
        if let Ok(eps) = self.file.arch_f32("attention.layer_norm_rms_epsilon") {
            n.norm_eps = eps;
        }
        if let Ok(theta) = self.file.arch_f32("rope.freq_base") {
            if n.rope_theta_sliding == n.rope_theta {
                n.rope_theta_sliding = theta;
            }
            n.rope_theta = theta;
        }
        let rope = self.file.arch_u64("rope.dimension_count");
        let head = self.file.arch_u64("attention.key_length");
        if let (Ok(rope), Ok(head)) = (rope, head)
            && head > 0
            && self.file.arch().unwrap_or_default() != "deepseek2"
        {
            n.rope_fraction = rope as f32 / head as f32;
        }
        n
    }
}

impl TensorSource for GgufSource<'_> {
    fn tensor(&self, name: &str) -> Result<Option<Tensor>, DecodeError> {
        let Some(info) = self.file.tensor(name) else {
            return Ok(None);
        };
        let bytes = self
            .file
            .tensor_bytes(name)
            .map_err(|e| DecodeError::Tensor {
                name: name.to_string(),
                problem: e.to_string(),
            })?;
        Ok(Some(Tensor {
            dims: info.dims.clone(),
            dtype: info.dtype,
            bytes: bytes.to_vec(),
        }))
    }

    fn describe(&self) -> String {
        self.file.source().to_string()
    }
}

/// The synthetic weights of a spec under a recipe: what `membound_gguf::synthetic` would
/// write for the same seed. Large matrices repeat a quantized tile of rows (fast at any size);
/// routers, norms and vectors are distinct values throughout, so routing varies from expert to
/// expert as a trained router's does.
pub struct SyntheticSource {
    spec: ModelSpec,
    recipe: Recipe,
    seed: u64,
    /// Every row of every tensor distinct (no repeated tiles): slower, for small models whose
    /// computation is checked value by value.
    distinct: bool,
    index: HashMap<String, (usize, TensorDesc)>,
}

impl SyntheticSource {
    /// The weights of `spec` stored as `recipe` stores them, from `seed`.
    pub fn new(spec: &ModelSpec, recipe: Recipe, seed: u64) -> SyntheticSource {
        let index = inventory(spec)
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), (i, t)))
            .collect();
        SyntheticSource {
            spec: spec.clone(),
            recipe,
            seed,
            distinct: false,
            index,
        }
    }

    /// [`SyntheticSource::new`] with every row of every matrix distinct, so that a kernel
    /// reading the wrong head's, expert's or group's rows shows in its output.
    pub fn distinct(spec: &ModelSpec, recipe: Recipe, seed: u64) -> SyntheticSource {
        SyntheticSource {
            distinct: true,
            ..SyntheticSource::new(spec, recipe, seed)
        }
    }
}

impl TensorSource for SyntheticSource {
    fn tensor(&self, name: &str) -> Result<Option<Tensor>, DecodeError> {
        let Some((i, t)) = self.index.get(name) else {
            return Ok(None);
        };
        let dtype = self.recipe.dtype_for(&self.spec, t);
        let fill = match t.class {
            TensorClass::Router | TensorClass::Norm | TensorClass::Vector => {
                Fill::Distinct { seed: self.seed }
            }
            _ if self.distinct => Fill::Distinct { seed: self.seed },
            _ => Fill::Random { seed: self.seed },
        };
        let bytes = tensor_data(t, dtype, fill, *i as u64).map_err(|e| DecodeError::Tensor {
            name: name.to_string(),
            problem: e.to_string(),
        })?;
        Ok(Some(Tensor {
            dims: t.dims.clone(),
            dtype,
            bytes,
        }))
    }

    fn describe(&self) -> String {
        format!(
            "synthetic {} {}",
            self.spec.name,
            self.recipe.name().to_lowercase()
        )
    }
}
