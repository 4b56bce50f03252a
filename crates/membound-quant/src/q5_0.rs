//! Q5_0: `quantize_row_q5_0_ref`, `dequantize_row_q5_0`, `ggml_vec_dot_q5_0_q8_0_generic`
//! (llama.cpp's fallback for K-quant recipes on rows that are not whole 256-value blocks, e.g.
//! GLM-4.7-Flash's per-head `attn_k_b` in Q4_K_M).

use crate::blocks::{BlockQ5_0, BlockQ8_0, QK32};
use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ops::QuantError;
use crate::util::{abs_max, check_dot, dequantize_with, impl_quant_block, quantize_with};

fn quantize_block(x: &[f32], y: &mut BlockQ5_0) {
    // The signed value of largest magnitude maps to -16, so d may be negative.
    let (_, max) = abs_max(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y.d = f32_to_f16(d);
    // C: MIN(31, (int8_t)(x*id + 16.5f)), truncating toward zero.
    let q = |v: f32| ((v * id + 16.5) as i8).min(31) as u8;
    let mut qh = 0u32;
    for j in 0..QK32 / 2 {
        let (x0, x1) = (q(x[j]), q(x[j + QK32 / 2]));
        y.qs[j] = (x0 & 0x0F) | ((x1 & 0x0F) << 4);
        qh |= u32::from((x0 & 0x10) >> 4) << j;
        qh |= u32::from((x1 & 0x10) >> 4) << (j + QK32 / 2);
    }
    y.qh = qh.to_le_bytes();
}

/// The 5-bit values (0..32) of a block, in order.
fn values(b: &BlockQ5_0) -> [i32; QK32] {
    let qh = u32::from_le_bytes(b.qh);
    let mut v = [0i32; QK32];
    for j in 0..QK32 / 2 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        v[j] = (u32::from(b.qs[j] & 0x0F) | h0) as i32 - 16;
        v[j + QK32 / 2] = (u32::from(b.qs[j] >> 4) | h1) as i32 - 16;
    }
    v
}

fn dequantize_block(b: &BlockQ5_0, y: &mut [f32]) {
    let d = f16_to_f32(b.d);
    for (o, q) in y.iter_mut().zip(values(b)) {
        *o = q as f32 * d;
    }
}

/// Quantizes `src` (exactly `32 * dst.len()` values) into `dst`.
pub fn quantize_row(src: &[f32], dst: &mut [BlockQ5_0]) -> Result<(), QuantError> {
    quantize_with(src, dst, quantize_block)
}

/// Dequantizes `src` into `dst` (exactly `32 * src.len()` values).
pub fn dequantize_row(src: &[BlockQ5_0], dst: &mut [f32]) -> Result<(), QuantError> {
    dequantize_with(src, dst, dequantize_block)
}

/// Dot product with a Q8_0 activation row in ggml's generic order:
/// `sumf += (dx * dy) * sumi` per block.
pub fn vec_dot(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> Result<f32, QuantError> {
    check_dot(w, a)?;
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi: i32 = values(x)
            .iter()
            .zip(&y.qs)
            .map(|(&q, &b)| q * i32::from(b))
            .sum();
        sumf += (f16_to_f32(x.d) * f16_to_f32(y.d)) * sumi as f32;
    }
    Ok(sumf)
}

impl_quant_block!(BlockQ5_0, BlockQ8_0);
