//! Q8_1: `quantize_row_q8_1_ref` (the activation format of llama.cpp's CUDA mmvq). ggml's CPU
//! backend has no Q8_1 dequantizer; [`dequantize_row`] returns `d * q`.

use crate::blocks::{BlockQ8_1, QK32};
use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ops::QuantError;
use crate::q8_0::scale_and_quants;
use crate::util::{dequantize_with, impl_quant_block, quantize_with};

fn quantize_block(x: &[f32], y: &mut BlockQ8_1) {
    let (d, qs) = scale_and_quants(x);
    // ggml sums the first and second halves pairwise; integer addition makes the order moot.
    let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
    y.d = f32_to_f16(d);
    y.s = f32_to_f16(sum as f32 * d);
    y.qs = qs;
}

fn dequantize_block(b: &BlockQ8_1, y: &mut [f32]) {
    let d = f16_to_f32(b.d);
    for (o, &q) in y.iter_mut().zip(&b.qs) {
        *o = f32::from(q) * d;
    }
}

/// Quantizes `src` (exactly `32 * dst.len()` values) into `dst`.
pub fn quantize_row(src: &[f32], dst: &mut [BlockQ8_1]) -> Result<(), QuantError> {
    debug_assert_eq!(QK32, 32);
    quantize_with(src, dst, quantize_block)
}

/// Dequantizes `src` into `dst` (exactly `32 * src.len()` values): `d * q`.
pub fn dequantize_row(src: &[BlockQ8_1], dst: &mut [f32]) -> Result<(), QuantError> {
    dequantize_with(src, dst, dequantize_block)
}

impl_quant_block!(BlockQ8_1);
