//! Q5_K: `quantize_row_q5_K_ref`, `dequantize_row_q5_K`, `ggml_vec_dot_q5_K_q8_K_generic`.

use crate::blocks::{BlockQ5K, BlockQ8K, QK_K};
use crate::kquant::{KDot, Qkx2, quantize_scale_min_block};
use crate::ops::QuantError;
use crate::q4_k::dot_scale_min;
use crate::util::{check_dot, dequantize_with, impl_quant_block, quantize_with};

const PARAMS: Qkx2 = Qkx2 {
    nmax: 31,
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
};

fn quantize_block(x: &[f32], y: &mut BlockQ5K) {
    let (d, dmin, scales, l) = quantize_scale_min_block(x, &PARAMS);
    y.d = d;
    y.dmin = dmin;
    y.scales = scales;
    y.qh = [0; QK_K / 8];
    for (c, chunk) in l.chunks_exact(64).enumerate() {
        let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
        for i in 0..32 {
            let (mut l1, mut l2) = (chunk[i], chunk[i + 32]);
            if l1 > 15 {
                l1 -= 16;
                y.qh[i] |= m1;
            }
            if l2 > 15 {
                l2 -= 16;
                y.qh[i] |= m2;
            }
            y.qs[32 * c + i] = l1 | (l2 << 4);
        }
    }
}

/// The 256 unsigned 5-bit quants of a block, in value order.
fn unpack(b: &BlockQ5K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (c, q) in b.qs.chunks_exact(32).enumerate() {
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        for (i, &v) in q.iter().enumerate() {
            let h1 = if b.qh[i] & u1 != 0 { 16 } else { 0 };
            let h2 = if b.qh[i] & u2 != 0 { 16 } else { 0 };
            a[64 * c + i] = ((v & 0xF) + h1) as i8;
            a[64 * c + 32 + i] = ((v >> 4) + h2) as i8;
        }
    }
    a
}

fn dequantize_block(b: &BlockQ5K, y: &mut [f32]) {
    crate::q4_k::dequantize_scale_min(b.d, b.dmin, &b.scales, &unpack(b), y);
}

/// Quantizes `src` (exactly `256 * dst.len()` values) into `dst`.
pub fn quantize_row(src: &[f32], dst: &mut [BlockQ5K]) -> Result<(), QuantError> {
    quantize_with(src, dst, quantize_block)
}

/// Dequantizes `src` into `dst` (exactly `256 * src.len()` values).
pub fn dequantize_row(src: &[BlockQ5K], dst: &mut [f32]) -> Result<(), QuantError> {
    dequantize_with(src, dst, dequantize_block)
}

/// Dot product with a Q8_K activation row in ggml's generic order (8-lane accumulators).
pub fn vec_dot(w: &[BlockQ5K], a: &[BlockQ8K]) -> Result<f32, QuantError> {
    check_dot(w, a)?;
    let mut acc = KDot::default();
    for (x, y) in w.iter().zip(a) {
        dot_scale_min(x.d, x.dmin, &x.scales, &unpack(x), y, &mut acc);
    }
    Ok(acc.finish())
}

impl_quant_block!(BlockQ5K, BlockQ8K);
