//! MXFP4 (OCP microscaling FP4): `quantize_row_mxfp4_ref`, `dequantize_row_mxfp4`,
//! `ggml_vec_dot_mxfp4_q8_0_generic`. Each block is an E8M0 exponent and 32 E2M1 codes; ggml
//! stores the E2M1 values doubled ([`KVALUES`]) and halves the scale to match.

use crate::blocks::{BlockMxfp4, BlockQ8_0, QK32};
use crate::fp::{e8m0_to_f32_half, f16_to_f32};
use crate::ops::QuantError;
use crate::util::{abs_max, check_dot, dequantize_with, impl_quant_block, quantize_with};

/// ggml's `kvalues_mxfp4`: twice the E2M1 value of each 4-bit code.
pub const KVALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// The E8M0 exponent ggml picks for a block whose largest magnitude is `amax`:
/// `floor(log2(amax)) - 2 + 127`, so that `amax / 2^(e-127)` lies in `[4, 8)` (E2M1 max is 6);
/// 0 for an all-zero block. Below `2^-125` the C conversion of a negative float to `uint8_t`
/// keeps the low byte of the truncated integer (x86 `cvttss2si`), which is reproduced here.
pub fn exponent(amax: f32) -> u8 {
    if amax > 0.0 {
        ((amax.log2().floor() - 2.0 + 127.0) as i32) as u8
    } else {
        0
    }
}

/// Index into [`KVALUES`] of the code nearest to `x / d`, the first on ties (`best_index_mxfp4`).
fn best_index(x: f32, d: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (f32::from(KVALUES[0]) * d - x).abs();
    for (i, &k) in KVALUES.iter().enumerate().skip(1) {
        let err = (f32::from(k) * d - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

fn quantize_block(x: &[f32], y: &mut BlockMxfp4) {
    let (amax, _) = abs_max(x);
    let e = exponent(amax);
    let d = e8m0_to_f32_half(e);
    y.e = e;
    for j in 0..QK32 / 2 {
        y.qs[j] = best_index(x[j], d) | (best_index(x[j + QK32 / 2], d) << 4);
    }
}

fn dequantize_block(b: &BlockMxfp4, y: &mut [f32]) {
    let d = e8m0_to_f32_half(b.e);
    for (j, &q) in b.qs.iter().enumerate() {
        y[j] = f32::from(KVALUES[usize::from(q & 0x0F)]) * d;
        y[j + QK32 / 2] = f32::from(KVALUES[usize::from(q >> 4)]) * d;
    }
}

/// Quantizes `src` (exactly `32 * dst.len()` values) into `dst`.
pub fn quantize_row(src: &[f32], dst: &mut [BlockMxfp4]) -> Result<(), QuantError> {
    quantize_with(src, dst, quantize_block)
}

/// Dequantizes `src` into `dst` (exactly `32 * src.len()` values).
pub fn dequantize_row(src: &[BlockMxfp4], dst: &mut [f32]) -> Result<(), QuantError> {
    dequantize_with(src, dst, dequantize_block)
}

/// Dot product with a Q8_0 activation row in ggml's generic order:
/// `sumf += (dy * e_half) * (sumi1 + sumi2)` per block.
pub fn vec_dot(w: &[BlockMxfp4], a: &[BlockQ8_0]) -> Result<f32, QuantError> {
    check_dot(w, a)?;
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let d = f16_to_f32(y.d) * e8m0_to_f32_half(x.e);
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for j in 0..QK32 / 2 {
            sumi1 += i32::from(y.qs[j]) * i32::from(KVALUES[usize::from(x.qs[j] & 0x0F)]);
            sumi2 += i32::from(y.qs[j + QK32 / 2]) * i32::from(KVALUES[usize::from(x.qs[j] >> 4)]);
        }
        sumf += d * (sumi1 + sumi2) as f32;
    }
    Ok(sumf)
}

impl_quant_block!(BlockMxfp4, BlockQ8_0);
