//! Q4_K: `quantize_row_q4_K_ref`, `dequantize_row_q4_K`, `ggml_vec_dot_q4_K_q8_K_generic`.

use crate::blocks::{BlockQ4K, BlockQ8K, QK_K};
use crate::fp::f16_to_f32;
use crate::kquant::{KDot, Qkx2, get_scale_min_k4, lane_sums, quantize_scale_min_block};
use crate::ops::QuantError;
use crate::util::{check_dot, dequantize_with, impl_quant_block, quantize_with};

const PARAMS: Qkx2 = Qkx2 {
    nmax: 15,
    rmin: -1.0,
    rdelta: 0.1,
    nstep: 20,
};

fn quantize_block(x: &[f32], y: &mut BlockQ4K) {
    let (d, dmin, scales, l) = quantize_scale_min_block(x, &PARAMS);
    y.d = d;
    y.dmin = dmin;
    y.scales = scales;
    for (c, chunk) in l.chunks_exact(64).enumerate() {
        for i in 0..32 {
            y.qs[32 * c + i] = chunk[i] | (chunk[i + 32] << 4);
        }
    }
}

/// The 256 unsigned 4-bit quants of a block, in value order.
fn unpack(b: &BlockQ4K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (c, q) in b.qs.chunks_exact(32).enumerate() {
        for (i, &v) in q.iter().enumerate() {
            a[64 * c + i] = (v & 0xF) as i8;
            a[64 * c + 32 + i] = (v >> 4) as i8;
        }
    }
    a
}

fn dequantize_block(b: &BlockQ4K, y: &mut [f32]) {
    dequantize_scale_min(b.d, b.dmin, &b.scales, &unpack(b), y);
}

/// `y = d·scale·q − dmin·min` per 32-value sub-block, from unpacked quants `q` (shared by Q5_K,
/// which passes its 5-bit quants).
pub(crate) fn dequantize_scale_min(
    d: u16,
    dmin: u16,
    scales: &[u8; 12],
    a: &[i8; QK_K],
    y: &mut [f32],
) {
    let d = f16_to_f32(d);
    let min = f16_to_f32(dmin);
    for (j, (ys, qs)) in y.chunks_exact_mut(32).zip(a.chunks_exact(32)).enumerate() {
        let (sc, m) = get_scale_min_k4(j, scales);
        let (dj, mj) = (d * f32::from(sc), min * f32::from(m));
        for (o, &q) in ys.iter_mut().zip(qs) {
            *o = dj * f32::from(q) - mj;
        }
    }
}

/// Quantizes `src` (exactly `256 * dst.len()` values) into `dst`.
pub fn quantize_row(src: &[f32], dst: &mut [BlockQ4K]) -> Result<(), QuantError> {
    quantize_with(src, dst, quantize_block)
}

/// Dequantizes `src` into `dst` (exactly `256 * src.len()` values).
pub fn dequantize_row(src: &[BlockQ4K], dst: &mut [f32]) -> Result<(), QuantError> {
    dequantize_with(src, dst, dequantize_block)
}

/// Dot product of a Q4_K row with a Q8_K row (shared by Q5_K, which passes its 5-bit quants).
pub(crate) fn dot_scale_min(
    d: u16,
    dmin: u16,
    scales: &[u8; 12],
    a: &[i8; QK_K],
    y: &BlockQ8K,
    acc: &mut KDot,
) {
    let sm: [(u8, u8); 8] = std::array::from_fn(|j| get_scale_min_k4(j, scales));
    let sumi: i32 = y
        .bsums
        .iter()
        .enumerate()
        .map(|(j, &b)| i32::from(b) * i32::from(sm[j / 2].1))
        .sum();
    let aux32 = lane_sums(a, &y.qs, |idx| i32::from(sm[idx / 32].0));
    acc.add(
        f16_to_f32(d) * y.d,
        &aux32,
        Some((f16_to_f32(dmin) * y.d, sumi)),
    );
}

/// Dot product with a Q8_K activation row in ggml's generic order (8-lane accumulators).
pub fn vec_dot(w: &[BlockQ4K], a: &[BlockQ8K]) -> Result<f32, QuantError> {
    check_dot(w, a)?;
    let mut acc = KDot::default();
    for (x, y) in w.iter().zip(a) {
        dot_scale_min(x.d, x.dmin, &x.scales, &unpack(x), y, &mut acc);
    }
    Ok(acc.finish())
}

impl_quant_block!(BlockQ4K, BlockQ8K);
