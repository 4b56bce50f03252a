//! Q4_0: `quantize_row_q4_0_ref`, `dequantize_row_q4_0`, `ggml_vec_dot_q4_0_q8_0_generic`.

use crate::blocks::{BlockQ4_0, BlockQ8_0, QK32};
use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ops::QuantError;
use crate::util::{abs_max, check_dot, dequantize_with, impl_quant_block, quantize_with};

fn quantize_block(x: &[f32], y: &mut BlockQ4_0) {
    // The signed value of largest magnitude maps to -8, so d may be negative.
    let (_, max) = abs_max(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y.d = f32_to_f16(d);
    // C: MIN(15, (int8_t)(x*id + 8.5f)), truncating toward zero.
    let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    for j in 0..QK32 / 2 {
        y.qs[j] = q(x[j]) | (q(x[j + QK32 / 2]) << 4);
    }
}

fn dequantize_block(b: &BlockQ4_0, y: &mut [f32]) {
    let d = f16_to_f32(b.d);
    for (j, &q) in b.qs.iter().enumerate() {
        y[j] = (i32::from(q & 0x0F) - 8) as f32 * d;
        y[j + QK32 / 2] = (i32::from(q >> 4) - 8) as f32 * d;
    }
}

/// Quantizes `src` (exactly `32 * dst.len()` values) into `dst`.
pub fn quantize_row(src: &[f32], dst: &mut [BlockQ4_0]) -> Result<(), QuantError> {
    quantize_with(src, dst, quantize_block)
}

/// Dequantizes `src` into `dst` (exactly `32 * src.len()` values).
pub fn dequantize_row(src: &[BlockQ4_0], dst: &mut [f32]) -> Result<(), QuantError> {
    dequantize_with(src, dst, dequantize_block)
}

/// Dot product with a Q8_0 activation row in ggml's generic order:
/// `sumf += sumi * dx * dy` (left to right) per block.
pub fn vec_dot(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> Result<f32, QuantError> {
    check_dot(w, a)?;
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..QK32 / 2 {
            let v0 = i32::from(x.qs[j] & 0x0F) - 8;
            let v1 = i32::from(x.qs[j] >> 4) - 8;
            sumi += v0 * i32::from(y.qs[j]) + v1 * i32::from(y.qs[j + QK32 / 2]);
        }
        sumf += sumi as f32 * f16_to_f32(x.d) * f16_to_f32(y.d);
    }
    Ok(sumf)
}

impl_quant_block!(BlockQ4_0, BlockQ8_0);
