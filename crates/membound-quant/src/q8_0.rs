//! Q8_0: `quantize_row_q8_0_ref`, `dequantize_row_q8_0`, `ggml_vec_dot_q8_0_q8_0_generic`.

use crate::blocks::{BlockQ8_0, QK32};
use crate::fp::{f16_to_f32, f32_to_f16};
use crate::ops::QuantError;
use crate::util::{c_max, check_dot, dequantize_with, impl_quant_block, quantize_with};

/// The scale `amax / 127` and the quants `round(x / d)` (half away from zero) of one block;
/// shared with Q8_1, which differs only in also storing the sum.
pub(crate) fn scale_and_quants(x: &[f32]) -> (f32, [i8; QK32]) {
    let amax = x.iter().fold(0.0f32, |m, v| c_max(m, v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK32];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    (d, qs)
}

fn quantize_block(x: &[f32], y: &mut BlockQ8_0) {
    let (d, qs) = scale_and_quants(x);
    y.d = f32_to_f16(d);
    y.qs = qs;
}

fn dequantize_block(b: &BlockQ8_0, y: &mut [f32]) {
    let d = f16_to_f32(b.d);
    for (o, &q) in y.iter_mut().zip(&b.qs) {
        *o = f32::from(q) * d;
    }
}

/// Quantizes `src` (exactly `32 * dst.len()` values) into `dst`.
pub fn quantize_row(src: &[f32], dst: &mut [BlockQ8_0]) -> Result<(), QuantError> {
    quantize_with(src, dst, quantize_block)
}

/// Dequantizes `src` into `dst` (exactly `32 * src.len()` values).
pub fn dequantize_row(src: &[BlockQ8_0], dst: &mut [f32]) -> Result<(), QuantError> {
    dequantize_with(src, dst, dequantize_block)
}

/// Dot product of a Q8_0 weight row with a Q8_0 activation row, in ggml's generic order:
/// `sumf += sumi * (dx * dy)` per block.
pub fn vec_dot(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> Result<f32, QuantError> {
    check_dot(w, a)?;
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&p, &q)| i32::from(p) * i32::from(q))
                .sum();
        sumf += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    Ok(sumf)
}

impl_quant_block!(BlockQ8_0, BlockQ8_0);
