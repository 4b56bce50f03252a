//! Q8_K, the activation type of the K-quant dot products: `quantize_row_q8_K_ref` (with the
//! 16-value group sums `bsums`) and `dequantize_row_q8_K`.

use crate::blocks::{BlockQ8K, QK_K};
use crate::fp::nearest_int;
use crate::ops::QuantError;
use crate::util::{abs_max, dequantize_with, impl_quant_block, quantize_with};

fn quantize_block(x: &[f32], y: &mut BlockQ8K) {
    let (amax, max) = abs_max(x);
    if amax == 0.0 {
        // ggml zeroes d and qs and leaves bsums unwritten; they are zero here (and unused,
        // since every dot product multiplies them by d = 0).
        *y = BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        };
        return;
    }
    let iscale = -127.0 / max;
    for (q, &v) in y.qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (s, g) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
        *s = g.iter().map(|&q| i32::from(q)).sum::<i32>() as i16;
    }
    y.d = 1.0 / iscale;
}

fn dequantize_block(b: &BlockQ8K, y: &mut [f32]) {
    for (o, &q) in y.iter_mut().zip(&b.qs) {
        *o = b.d * f32::from(q);
    }
}

/// Quantizes `src` (exactly `256 * dst.len()` values) into `dst`.
pub fn quantize_row(src: &[f32], dst: &mut [BlockQ8K]) -> Result<(), QuantError> {
    quantize_with(src, dst, quantize_block)
}

/// Dequantizes `src` into `dst` (exactly `256 * src.len()` values).
pub fn dequantize_row(src: &[BlockQ8K], dst: &mut [f32]) -> Result<(), QuantError> {
    dequantize_with(src, dst, dequantize_block)
}

impl_quant_block!(BlockQ8K);
