//! Type-erased quantization, dequantization and the ggml reference dot products over raw
//! block bytes (the layout a GGUF file and a GPU buffer hold).
//!
//! Every function here is bit-exact with ggml's scalar reference (`quantize_row_*_ref`,
//! `dequantize_row_*`, `ggml_vec_dot_*_generic`); candle-core is the oracle in the tests.

use membound_spec::DType;

use crate::blocks::{
    Block, BlockMxfp4, BlockQ4_0, BlockQ4K, BlockQ5_0, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8_1,
    BlockQ8K, as_bytes, from_bytes,
};
use crate::fp::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

/// Why a quantization call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The type has no CPU implementation here.
    #[error("{0} is not supported by membound-quant")]
    Unsupported(DType),
    /// The number of values is not a whole number of blocks.
    #[error("{len} values is not a whole number of {dtype} blocks of {block}")]
    NotBlockMultiple {
        dtype: DType,
        len: usize,
        block: u64,
    },
    /// The byte length is not a whole number of blocks.
    #[error("{len} bytes is not a whole number of {dtype} blocks of {block_bytes} bytes")]
    BadByteLength {
        dtype: DType,
        len: usize,
        block_bytes: u64,
    },
    /// A typed call got a value slice that does not fill its block slice exactly.
    #[error("{values} values do not fill {blocks} {dtype} blocks exactly")]
    ValueCountMismatch {
        dtype: DType,
        values: usize,
        blocks: usize,
    },
    /// The activation row is not of the weight's [`vec_dot_type`].
    #[error("a {weight} weight row is dotted with {expected} activations, not {got}")]
    WrongActivationType {
        weight: DType,
        expected: DType,
        got: DType,
    },
    /// Weight and activation rows hold different numbers of values.
    #[error(
        "dot product of {weight} and {act}: {weight_values} weight values vs {act_values} activation values"
    )]
    LengthMismatch {
        weight: DType,
        act: DType,
        weight_values: usize,
        act_values: usize,
    },
}

/// The types this crate quantizes and dequantizes.
pub const SUPPORTED: &[DType] = &[
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q8_1,
    DType::Q4_0,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::Q8_K,
    DType::MXFP4,
];

/// A block type with ggml's reference quantizer and dequantizer (checked lengths).
pub trait QuantBlock: Block {
    /// Quantizes `src` (exactly `VALUES * dst.len()` values) into `dst`.
    fn quantize_row(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError>;
    /// Dequantizes `src` into `dst` (exactly `VALUES * src.len()` values).
    fn dequantize_row(src: &[Self], dst: &mut [f32]) -> Result<(), QuantError>;
}

/// A weight block type with ggml's generic (scalar) dot product against its activation type.
pub trait DotBlock: QuantBlock {
    /// ggml's `vec_dot_type` of this weight type.
    type Act: QuantBlock;
    /// One row dot product; the rows must hold the same number of values.
    fn vec_dot(w: &[Self], a: &[Self::Act]) -> Result<f32, QuantError>;
}

/// Quantizes `src` into a fresh vector of blocks.
pub fn quantize_blocks<B: QuantBlock>(src: &[f32]) -> Result<Vec<B>, QuantError> {
    if !src.len().is_multiple_of(B::VALUES) {
        return Err(QuantError::NotBlockMultiple {
            dtype: B::DTYPE,
            len: src.len(),
            block: B::VALUES as u64,
        });
    }
    let mut blocks = zeroed_blocks::<B>(src.len() / B::VALUES);
    B::quantize_row(src, &mut blocks)?;
    Ok(blocks)
}

/// Dequantizes blocks into a fresh vector of values.
pub fn dequantize_blocks<B: QuantBlock>(blocks: &[B]) -> Vec<f32> {
    let mut out = vec![0.0f32; blocks.len() * B::VALUES];
    // The output is sized from the blocks, so the length check cannot fail.
    if let Err(e) = B::dequantize_row(blocks, &mut out) {
        unreachable!("dequantize_blocks sized its own output: {e}");
    }
    out
}

fn zeroed_blocks<B: Block>(n: usize) -> Vec<B> {
    match from_bytes::<B>(&vec![0u8; n * std::mem::size_of::<B>()]) {
        Some(blocks) => blocks,
        None => unreachable!("a whole number of blocks"),
    }
}

fn blocks_of<B: Block>(bytes: &[u8]) -> Result<Vec<B>, QuantError> {
    from_bytes::<B>(bytes).ok_or(QuantError::BadByteLength {
        dtype: B::DTYPE,
        len: bytes.len(),
        block_bytes: std::mem::size_of::<B>() as u64,
    })
}

fn quantize_as<B: QuantBlock>(src: &[f32]) -> Result<Vec<u8>, QuantError> {
    Ok(as_bytes(&quantize_blocks::<B>(src)?).to_vec())
}

fn dequantize_as<B: QuantBlock>(bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
    Ok(dequantize_blocks(&blocks_of::<B>(bytes)?))
}

fn vec_dot_as<B: DotBlock>(w: &[u8], a: &[u8]) -> Result<f32, QuantError> {
    B::vec_dot(&blocks_of::<B>(w)?, &blocks_of::<B::Act>(a)?)
}

/// Bytes of a plain (one value per element) type, or the error for a ragged byte length.
fn plain_units<const N: usize>(
    dtype: DType,
    bytes: &[u8],
) -> Result<impl Iterator<Item = [u8; N]> + '_, QuantError> {
    if !bytes.len().is_multiple_of(N) {
        return Err(QuantError::BadByteLength {
            dtype,
            len: bytes.len(),
            block_bytes: N as u64,
        });
    }
    Ok(bytes.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    }))
}

/// Decodes a row of a plain float type (F32, F16, BF16) into f32 values.
fn plain_values(dtype: DType, bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
    Ok(match dtype {
        DType::F32 => plain_units::<4>(dtype, bytes)?
            .map(f32::from_le_bytes)
            .collect(),
        DType::F16 => plain_units::<2>(dtype, bytes)?
            .map(|b| f16_to_f32(u16::from_le_bytes(b)))
            .collect(),
        DType::BF16 => plain_units::<2>(dtype, bytes)?
            .map(|b| bf16_to_f32(u16::from_le_bytes(b)))
            .collect(),
        other => return Err(QuantError::Unsupported(other)),
    })
}

/// Quantizes `src` into ggml block bytes of `dtype` (for F32/F16/BF16: little-endian values,
/// rounded to nearest even as ggml does).
pub fn quantize(dtype: DType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    match dtype {
        DType::F32 => Ok(src.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DType::F16 => Ok(src
            .iter()
            .flat_map(|&v| f32_to_f16(v).to_le_bytes())
            .collect()),
        DType::BF16 => Ok(src
            .iter()
            .flat_map(|&v| f32_to_bf16(v).to_le_bytes())
            .collect()),
        DType::Q8_0 => quantize_as::<BlockQ8_0>(src),
        DType::Q8_1 => quantize_as::<BlockQ8_1>(src),
        DType::Q4_0 => quantize_as::<BlockQ4_0>(src),
        DType::Q5_0 => quantize_as::<BlockQ5_0>(src),
        DType::Q4_K => quantize_as::<BlockQ4K>(src),
        DType::Q5_K => quantize_as::<BlockQ5K>(src),
        DType::Q6_K => quantize_as::<BlockQ6K>(src),
        DType::Q8_K => quantize_as::<BlockQ8K>(src),
        DType::MXFP4 => quantize_as::<BlockMxfp4>(src),
        other => Err(QuantError::Unsupported(other)),
    }
}

/// Dequantizes ggml block bytes of `dtype` into f32 values.
pub fn dequantize(dtype: DType, bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => plain_values(dtype, bytes),
        DType::Q8_0 => dequantize_as::<BlockQ8_0>(bytes),
        DType::Q8_1 => dequantize_as::<BlockQ8_1>(bytes),
        DType::Q4_0 => dequantize_as::<BlockQ4_0>(bytes),
        DType::Q5_0 => dequantize_as::<BlockQ5_0>(bytes),
        DType::Q4_K => dequantize_as::<BlockQ4K>(bytes),
        DType::Q5_K => dequantize_as::<BlockQ5K>(bytes),
        DType::Q6_K => dequantize_as::<BlockQ6K>(bytes),
        DType::Q8_K => dequantize_as::<BlockQ8K>(bytes),
        DType::MXFP4 => dequantize_as::<BlockMxfp4>(bytes),
        other => Err(QuantError::Unsupported(other)),
    }
}

/// Appends `src` quantized to `dtype` to `out`, block by block: the same bytes as
/// [`quantize`], with no allocation once `out` has the capacity (a buffer reused from call to
/// call, as a decode step does).
pub fn quantize_extend(dtype: DType, src: &[f32], out: &mut Vec<u8>) -> Result<(), QuantError> {
    match dtype {
        DType::F32 => out.extend(src.iter().flat_map(|v| v.to_le_bytes())),
        DType::F16 => out.extend(src.iter().flat_map(|&v| f32_to_f16(v).to_le_bytes())),
        DType::BF16 => out.extend(src.iter().flat_map(|&v| f32_to_bf16(v).to_le_bytes())),
        DType::Q8_0 => extend_as::<BlockQ8_0>(src, out)?,
        DType::Q8_1 => extend_as::<BlockQ8_1>(src, out)?,
        DType::Q4_0 => extend_as::<BlockQ4_0>(src, out)?,
        DType::Q5_0 => extend_as::<BlockQ5_0>(src, out)?,
        DType::Q4_K => extend_as::<BlockQ4K>(src, out)?,
        DType::Q5_K => extend_as::<BlockQ5K>(src, out)?,
        DType::Q6_K => extend_as::<BlockQ6K>(src, out)?,
        DType::Q8_K => extend_as::<BlockQ8K>(src, out)?,
        DType::MXFP4 => extend_as::<BlockMxfp4>(src, out)?,
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

fn extend_as<B: QuantBlock>(src: &[f32], out: &mut Vec<u8>) -> Result<(), QuantError> {
    if !src.len().is_multiple_of(B::VALUES) {
        return Err(QuantError::NotBlockMultiple {
            dtype: B::DTYPE,
            len: src.len(),
            block: B::VALUES as u64,
        });
    }
    out.reserve(src.len() / B::VALUES * std::mem::size_of::<B>());
    let mut one = [zeroed_block::<B>()];
    for chunk in src.chunks_exact(B::VALUES) {
        B::quantize_row(chunk, &mut one)?;
        out.extend_from_slice(as_bytes(&one));
    }
    Ok(())
}

/// Appends the values of `bytes` (ggml blocks of `dtype`) to `out`, block by block: the same
/// values as [`dequantize`], with no allocation once `out` has the capacity.
pub fn dequantize_extend(dtype: DType, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), QuantError> {
    match dtype {
        DType::F32 => out.extend(plain_units::<4>(dtype, bytes)?.map(f32::from_le_bytes)),
        DType::F16 => {
            out.extend(plain_units::<2>(dtype, bytes)?.map(|b| f16_to_f32(u16::from_le_bytes(b))))
        }
        DType::BF16 => {
            out.extend(plain_units::<2>(dtype, bytes)?.map(|b| bf16_to_f32(u16::from_le_bytes(b))))
        }
        DType::Q8_0 => dequantize_extend_as::<BlockQ8_0>(bytes, out)?,
        DType::Q8_1 => dequantize_extend_as::<BlockQ8_1>(bytes, out)?,
        DType::Q4_0 => dequantize_extend_as::<BlockQ4_0>(bytes, out)?,
        DType::Q5_0 => dequantize_extend_as::<BlockQ5_0>(bytes, out)?,
        DType::Q4_K => dequantize_extend_as::<BlockQ4K>(bytes, out)?,
        DType::Q5_K => dequantize_extend_as::<BlockQ5K>(bytes, out)?,
        DType::Q6_K => dequantize_extend_as::<BlockQ6K>(bytes, out)?,
        DType::Q8_K => dequantize_extend_as::<BlockQ8K>(bytes, out)?,
        DType::MXFP4 => dequantize_extend_as::<BlockMxfp4>(bytes, out)?,
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

fn dequantize_extend_as<B: QuantBlock>(bytes: &[u8], out: &mut Vec<f32>) -> Result<(), QuantError> {
    let size = std::mem::size_of::<B>();
    if !bytes.len().is_multiple_of(size) {
        return Err(QuantError::BadByteLength {
            dtype: B::DTYPE,
            len: bytes.len(),
            block_bytes: size as u64,
        });
    }
    out.reserve(bytes.len() / size * B::VALUES);
    let mut one = [zeroed_block::<B>()];
    let mut vals = [0f32; 256];
    for chunk in bytes.chunks_exact(size) {
        // SAFETY: `one` is one block of `size` bytes, B accepts every bit pattern (Block's
        // contract) and the source chunk holds exactly `size` bytes (alignment-free copy).
        unsafe {
            std::ptr::copy_nonoverlapping(chunk.as_ptr(), one.as_mut_ptr().cast::<u8>(), size);
        }
        B::dequantize_row(&one, &mut vals[..B::VALUES])?;
        out.extend_from_slice(&vals[..B::VALUES]);
    }
    Ok(())
}

fn zeroed_block<B: Block>() -> B {
    // SAFETY: every Block accepts the all-zero bit pattern (Block's contract: any bits).
    unsafe { std::mem::zeroed() }
}

/// ggml's `vec_dot_type` (`ggml-cpu.c`, `type_traits_cpu`): the type activations are quantized
/// to before a dot product with a `weight` row. Types without a CPU dot product (Q8_K, the
/// integer types, FP8) get ggml's zero-initialised default, F32.
pub fn vec_dot_type(weight: DType) -> DType {
    use DType::*;
    match weight {
        F16 => F16,
        BF16 => BF16,
        Q4_0 | Q5_0 | Q8_0 | MXFP4 | NVFP4 | IQ4_NL => Q8_0,
        Q4_1 | Q5_1 | Q8_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ2_XXS | IQ2_XS | IQ3_XXS | IQ3_S | IQ2_S | IQ1_S
        | IQ1_M | IQ4_XS | TQ1_0 | TQ2_0 => Q8_K,
        F32 | Q8_K | I8 | I16 | I32 | I64 | F64 | F8_E4M3 => F32,
    }
}

/// Dot product of one `weight` row with one activation row already in
/// [`vec_dot_type`]`(weight)` bytes, in ggml's generic scalar order of operations
/// (`ggml_vec_dot_*_generic`; for F32/F16/BF16 the scalar `ggml_vec_dot_f32/f16/bf16`: f32
/// products summed in f64).
pub fn vec_dot(weight: DType, w_row: &[u8], act_row: &[u8]) -> Result<f32, QuantError> {
    match weight {
        DType::F32 | DType::F16 | DType::BF16 => {
            let (w, a) = (plain_values(weight, w_row)?, plain_values(weight, act_row)?);
            if w.len() != a.len() {
                return Err(QuantError::LengthMismatch {
                    weight,
                    act: weight,
                    weight_values: w.len(),
                    act_values: a.len(),
                });
            }
            Ok(w.iter()
                .zip(&a)
                .fold(0.0f64, |s, (&x, &y)| s + f64::from(x * y)) as f32)
        }
        DType::Q8_0 => vec_dot_as::<BlockQ8_0>(w_row, act_row),
        DType::Q4_0 => vec_dot_as::<BlockQ4_0>(w_row, act_row),
        DType::Q5_0 => vec_dot_as::<BlockQ5_0>(w_row, act_row),
        DType::MXFP4 => vec_dot_as::<BlockMxfp4>(w_row, act_row),
        DType::Q4_K => vec_dot_as::<BlockQ4K>(w_row, act_row),
        DType::Q5_K => vec_dot_as::<BlockQ5K>(w_row, act_row),
        DType::Q6_K => vec_dot_as::<BlockQ6K>(w_row, act_row),
        other => Err(QuantError::Unsupported(other)),
    }
}
