//! Helpers shared by the K-quant quantizers (`ggml-quants.c`): `make_qkx2_quants` (Q4_K,
//! Q5_K), `make_qx_quants` (Q6_K), the 6-bit scale/min packing of Q4_K/Q5_K and the dot
//! product accumulation shared by the `*_K_q8_K` kernels. Every f32 operation follows the C
//! source's order (no fused multiply-add), so the results are bit-exact.

use crate::blocks::QK_K;
use crate::fp::{f16_to_f32, f32_to_f16, nearest_int};

/// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below this is all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Parameters of one `make_qkx2_quants` call.
pub(crate) struct Qkx2 {
    pub nmax: i32,
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
}

/// ggml's `make_qkx2_quants` with `use_mad = false`: fits `x ~ scale * L - min` with
/// `L in 0..=nmax` by weighted least squares over `nstep + 1` trial scales. Writes `l`, returns
/// `(scale, min)` where `min` is already negated (ggml's `the_min`).
pub(crate) fn make_qkx2_quants(p: &Qkx2, x: &[f32], weights: &[f32], l: &mut [u8]) -> (f32, f32) {
    let n = x.len();
    let nmax = p.nmax;
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = li as u8;
        let diff = scale * li as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = li as u8;
            let w = weights[i];
            let lf = li as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * f32::from(laux[i]) + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights (weights `x^2`):
/// a symmetric fit `x ~ scale * (L - nmax)`, `L in 0..2*nmax`, trying 18 scales around
/// `-nmax / max`. Writes `l` and returns the scale (0 for an all-zero group).
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (amax, max) = crate::util::abs_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    // Sums of w*x*l and w*l*l with w = x^2, as C evaluates them: ((w*x)*l) and ((w*l)*l).
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let lf = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        (sumlx, suml2)
    };
    let write = |iscale: f32, l: &mut [i8]| {
        for (q, &v) in l.iter_mut().zip(x) {
            *q = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
        }
    };
    let iscale = -(nmax as f32) / max;
    write(iscale, l);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            write(iscale, l);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Scale and min (6 bits each) of sub-block `j` from the 12 packed bytes (`get_scale_min_k4`).
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The first half of `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref`: fits each 32-value
/// sub-block with `make_qkx2_quants`, quantizes the 8 scales and mins to 6 bits, then
/// re-quantizes every value against the rounded scales. Returns `(d, dmin, scales, L)`.
pub(crate) fn quantize_scale_min_block(x: &[f32], p: &Qkx2) -> (u16, u16, [u8; 12], [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 32];
    let mut mins = [0f32; QK_K / 32];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2 = xs.iter().fold(0.0f32, |s, &v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut weights = [0f32; 32];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(p, xs, &weights, &mut l[32 * j..32 * j + 32]);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..QK_K / 32 {
        // C: `uint8_t ls = nearest_int(...)` keeps the low byte, then MIN(63, ls).
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = f32_to_f16(max_scale / 63.0);
    let dmin = f32_to_f16(max_min / 63.0);
    let nmax = p.nmax;
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dj = f16_to_f32(d) * f32::from(sc);
        if dj == 0.0 {
            continue;
        }
        let dm = f16_to_f32(dmin) * f32::from(m);
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

/// ggml's 8-lane accumulator of the `*_K_q8_K` generic dot products: `aux32[l]` collects
/// `scale * q8 * a` for every value whose index is `l` mod 8.
pub(crate) fn lane_sums(
    a: &[i8; QK_K],
    q8: &[i8; QK_K],
    scale_of: impl Fn(usize) -> i32,
) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for (g, (ag, qg)) in a.chunks_exact(8).zip(q8.chunks_exact(8)).enumerate() {
        let scale = scale_of(g * 8);
        for l in 0..8 {
            aux32[l] += scale * (i32::from(qg[l]) * i32::from(ag[l]));
        }
    }
    aux32
}

/// The final reduction of the `*_K_q8_K` generic dot products: `sums[l] += d * aux32[l]` per
/// block, `sumf -= dmin * sumi` per block, then `sumf += sums[l]` for the 8 lanes.
#[derive(Default)]
pub(crate) struct KDot {
    sums: [f32; 8],
    sumf: f32,
}

impl KDot {
    /// Adds one block's lane sums scaled by `d`, and subtracts `dmin * sumi`.
    pub(crate) fn add(&mut self, d: f32, aux32: &[i32; 8], dmin_sumi: Option<(f32, i32)>) {
        for (s, &a) in self.sums.iter_mut().zip(aux32) {
            *s += d * a as f32;
        }
        if let Some((dmin, sumi)) = dmin_sumi {
            self.sumf -= dmin * sumi as f32;
        }
    }

    /// The dot product.
    pub(crate) fn finish(self) -> f32 {
        self.sums.iter().fold(self.sumf, |s, &v| s + v)
    }
}
