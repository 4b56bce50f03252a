//! membound-gguf: a zero-copy reader (memmap2) and a writer for GGUF v2/v3 files.
//!
//! [`GgufFile`] parses and validates a file's header — metadata of every value type, the tensor
//! table with every ggml type of [`membound_spec::DType`] (MXFP4 included), alignment, bounds and
//! overlap of tensor data — and hands out tensor data as slices of the mmap. Every failure is a
//! typed [`GgufError`] naming the file and the byte offset; a hostile file never panics the reader
//! nor makes it allocate more than a small multiple of the file's size. [`GgufWriter`] writes v3
//! files (fixtures, synthetic models); candle-core's `gguf_file` is the cross-check in the tests.
//! [`spec::spec_from_gguf`] reads the [`membound_spec::ModelSpec`] a llama.cpp file describes;
//! [`synthetic`] writes a model file of a spec under a recipe.
//!
//! Siblings: `membound-spec` (the type table and model specs built from this crate's metadata),
//! `membound-quant` (the block layouts tensor data holds), `membound-bench` (loads real weights).

mod codec;
mod error;
mod reader;
pub mod reads;
pub mod spec;
pub mod synthetic;
mod value;
mod writer;

pub use error::{ErrorKind, GgufError, Result, WriteError};
pub use reader::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GgufFile, MAX_DIMS, MAX_METADATA, MAX_NAME_BYTES,
    MAX_NESTING, MAX_TENSORS, MEMORY, TensorInfo,
};
pub use value::{MetaArray, MetaValue, ValueType};
pub use writer::{GgufWriter, WRITE_VERSION};

/// Splits a tensor name into its layer index and class: `blk.N.` is stripped into the index,
/// then a `.weight` or `.bias` suffix is dropped.
///
/// `"blk.3.ffn_down_exps.weight"` → `(Some(3), "ffn_down_exps")`,
/// `"token_embd.weight"` → `(None, "token_embd")`, `"output_norm.weight"` →
/// `(None, "output_norm")`. A `blk.` prefix without a valid index is kept as part of the class.
pub fn tensor_class(name: &str) -> (Option<usize>, &str) {
    let (layer, rest) = name
        .strip_prefix("blk.")
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(idx, rest)| Some((Some(idx.parse::<usize>().ok()?), rest)))
        .unwrap_or((None, name));
    let class = rest
        .strip_suffix(".weight")
        .or_else(|| rest.strip_suffix(".bias"))
        .unwrap_or(rest);
    (layer, class)
}

#[cfg(test)]
mod tests {
    use super::tensor_class;

    #[test]
    fn tensor_classes() {
        assert_eq!(tensor_class("blk.0.attn_q.weight"), (Some(0), "attn_q"));
        assert_eq!(
            tensor_class("blk.47.ffn_down_exps.weight"),
            (Some(47), "ffn_down_exps")
        );
        assert_eq!(tensor_class("blk.12.attn_q.bias"), (Some(12), "attn_q"));
        assert_eq!(
            tensor_class("blk.5.ffn_gate_inp.weight"),
            (Some(5), "ffn_gate_inp")
        );
        assert_eq!(
            tensor_class("blk.1.exp_probs_b.bias"),
            (Some(1), "exp_probs_b")
        );
        assert_eq!(tensor_class("token_embd.weight"), (None, "token_embd"));
        assert_eq!(tensor_class("output.weight"), (None, "output"));
        assert_eq!(tensor_class("output_norm.weight"), (None, "output_norm"));
        assert_eq!(tensor_class("rope_freqs"), (None, "rope_freqs"));
        assert_eq!(tensor_class("blk.x.attn_q.weight"), (None, "blk.x.attn_q"));
        assert_eq!(
            tensor_class("blk.-1.attn_q.weight"),
            (None, "blk.-1.attn_q")
        );
        assert_eq!(tensor_class("blk.7"), (None, "blk.7"));
        assert_eq!(tensor_class("blk.7.weight"), (Some(7), "weight"));
    }
}
