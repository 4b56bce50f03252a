//! Q6_K: `quantize_row_q6_K_ref`, `dequantize_row_q6_K`, `ggml_vec_dot_q6_K_q8_K_generic`.

use crate::blocks::{BlockQ6K, BlockQ8K, QK_K};
use crate::fp::{f16_to_f32, f32_to_f16, nearest_int};
use crate::kquant::{GROUP_MAX_EPS, KDot, lane_sums, make_qx_quants};
use crate::ops::QuantError;
use crate::util::{check_dot, dequantize_with, impl_quant_block, quantize_with};

fn quantize_block(x: &[f32], y: &mut BlockQ6K) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for ib in 0..QK_K / 16 {
        let scale = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        *y = BlockQ6K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: [0; QK_K / 16],
            d: f32_to_f16(0.0),
        };
        return;
    }
    let iscale = -128.0 / max_scale;
    y.d = f32_to_f16(1.0 / iscale);
    for (s, &sc) in y.scales.iter_mut().zip(&scales) {
        // C: int8 = MIN(127, nearest_int(...)), keeping the low byte.
        *s = nearest_int(iscale * sc).min(127) as i8;
    }
    for j in 0..QK_K / 16 {
        let d = f16_to_f32(y.d) * f32::from(y.scales[j]);
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
        }
    }
    for (c, chunk) in l.chunks_exact(128).enumerate() {
        let (ql, qh) = (
            &mut y.ql[64 * c..64 * c + 64],
            &mut y.qh[32 * c..32 * c + 32],
        );
        for i in 0..32 {
            let q = [chunk[i], chunk[i + 32], chunk[i + 64], chunk[i + 96]].map(|v| v as u8);
            ql[i] = (q[0] & 0xF) | ((q[2] & 0xF) << 4);
            ql[i + 32] = (q[1] & 0xF) | ((q[3] & 0xF) << 4);
            qh[i] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
}

/// The 256 signed 6-bit quants (`q - 32`) of a block, in value order.
fn unpack(b: &BlockQ6K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for c in 0..QK_K / 128 {
        let (ql, qh) = (&b.ql[64 * c..64 * c + 64], &b.qh[32 * c..32 * c + 32]);
        let o = &mut a[128 * c..128 * c + 128];
        for l in 0..32 {
            o[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            o[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            o[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            o[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    a
}

fn dequantize_block(b: &BlockQ6K, y: &mut [f32]) {
    let d = f16_to_f32(b.d);
    let a = unpack(b);
    for (i, (o, &q)) in y.iter_mut().zip(&a).enumerate() {
        *o = d * f32::from(b.scales[i / 16]) * f32::from(q);
    }
}

/// Quantizes `src` (exactly `256 * dst.len()` values) into `dst`.
pub fn quantize_row(src: &[f32], dst: &mut [BlockQ6K]) -> Result<(), QuantError> {
    quantize_with(src, dst, quantize_block)
}

/// Dequantizes `src` into `dst` (exactly `256 * src.len()` values).
pub fn dequantize_row(src: &[BlockQ6K], dst: &mut [f32]) -> Result<(), QuantError> {
    dequantize_with(src, dst, dequantize_block)
}

/// Dot product with a Q8_K activation row in ggml's generic order (8-lane accumulators).
pub fn vec_dot(w: &[BlockQ6K], a: &[BlockQ8K]) -> Result<f32, QuantError> {
    check_dot(w, a)?;
    let mut acc = KDot::default();
    for (x, y) in w.iter().zip(a) {
        let aux32 = lane_sums(&unpack(x), &y.qs, |idx| i32::from(x.scales[idx / 16]));
        acc.add(f16_to_f32(x.d) * y.d, &aux32, None);
    }
    Ok(acc.finish())
}

impl_quant_block!(BlockQ6K, BlockQ8K);
