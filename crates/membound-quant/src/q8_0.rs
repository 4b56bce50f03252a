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
        *q = round_i8(v * id);
    }
    (d, qs)
}

/// `x.round() as i8` (half away from zero, as C's `roundf`, saturating; NaN gives 0) without
/// the libm call `f32::round` makes on baseline x86-64: clamp to the i8 range (where the
/// saturation lands anyway), truncate, then step by the exact fraction (every float below 2^23
/// has a representable fraction). Branch-free, so the block's loop vectorises.
#[inline]
fn round_i8(x: f32) -> i8 {
    let x = x.clamp(-128.0, 127.0);
    let t = x as i32;
    let frac = x - t as f32;
    (t + i32::from(frac >= 0.5) - i32::from(frac <= -0.5)) as i8
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_i8_equals_roundf() {
        let check = |x: f32| assert_eq!(round_i8(x), x.round() as i8, "{x:e} ({:#x})", x.to_bits());
        // Every half-way point and its neighbours one ulp away, past the i8 range both sides.
        for k in -300..=300 {
            let h = k as f32 + 0.5;
            for x in [
                h,
                f32::from_bits(h.to_bits() - 1),
                f32::from_bits(h.to_bits() + 1),
                k as f32,
            ] {
                check(x);
            }
        }
        // Every 61st float in [-256, 256] (18.5 million each side), and the specials.
        for bits in (0..0x4380_0000u32).step_by(61) {
            check(f32::from_bits(bits));
            check(-f32::from_bits(bits));
        }
        for x in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            4.2e6,
            -4.2e6,
            1e30,
            -0.0,
            f32::MIN_POSITIVE,
        ] {
            check(x);
        }
    }
}
