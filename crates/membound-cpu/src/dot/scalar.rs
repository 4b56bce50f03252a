//! Portable kernels: ggml's scalar reference (`ggml_vec_dot_*_generic`) in plain Rust, always
//! compiled. Integer sums are exact; float sums use eight independent lanes.

use super::{
    KVALUES_MXFP4, MXFP4_BYTES, Q4_K_BYTES, Q5_0_BYTES, Q5_K_BYTES, Q6_K_BYTES, Q8_0_BYTES,
    Q8_K_BYTES, e8m0_half, f16_at, f32_at, q4k_min_sum, q4k_scales_mins,
};

/// Σ w·x over a float row whose values `load(w_chunk, i)` decodes, `esize` bytes each.
#[inline(always)]
fn dot_float(w: &[u8], a: &[u8], esize: usize, load: impl Fn(&[u8]) -> f32) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let mut wc = w.chunks_exact(LANES * esize);
    let mut ac = a.chunks_exact(LANES * 4);
    for (wb, ab) in (&mut wc).zip(&mut ac) {
        for l in 0..LANES {
            acc[l] += load(&wb[l * esize..]) * f32_at(ab, 4 * l);
        }
    }
    let tail: f32 = wc
        .remainder()
        .chunks_exact(esize)
        .zip(ac.remainder().chunks_exact(4))
        .map(|(wv, av)| load(wv) * f32_at(av, 0))
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// F32 weights · f32 activations.
pub(super) fn dot_f32(w: &[u8], a: &[u8]) -> f32 {
    dot_float(w, a, 4, |b| f32_at(b, 0))
}

/// F16 weights · f32 activations.
pub(super) fn dot_f16(w: &[u8], a: &[u8]) -> f32 {
    dot_float(w, a, 2, |b| f16_at(b, 0))
}

/// BF16 weights · f32 activations.
pub(super) fn dot_bf16(w: &[u8], a: &[u8]) -> f32 {
    dot_float(w, a, 2, |b| {
        f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
    })
}

/// Q8_0 · Q8_0 (`ggml_vec_dot_q8_0_q8_0_generic`).
pub(super) fn dot_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, ab) in w.chunks_exact(Q8_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let sumi: i32 = wb[2..]
            .iter()
            .zip(&ab[2..])
            .map(|(&x, &y)| i32::from(x as i8) * i32::from(y as i8))
            .sum();
        sumf += sumi as f32 * (f16_at(wb, 0) * f16_at(ab, 0));
    }
    sumf
}

/// Q5_0 · Q8_0 (`ggml_vec_dot_q5_0_q8_0_generic`): on every instruction set (llama.cpp uses
/// Q5_0 only for small matrices whose rows are not whole K-quant blocks).
pub(super) fn dot_q5_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, ab) in w.chunks_exact(Q5_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
        let mut sumi = 0i32;
        for j in 0..16 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            let x0 = (u32::from(wb[6 + j] & 0x0F) | h0) as i32 - 16;
            let x1 = (u32::from(wb[6 + j] >> 4) | h1) as i32 - 16;
            sumi += x0 * i32::from(ab[2 + j] as i8) + x1 * i32::from(ab[18 + j] as i8);
        }
        sumf += (f16_at(wb, 0) * f16_at(ab, 0)) * sumi as f32;
    }
    sumf
}

/// The shared body of Q4_K and Q5_K · Q8_K: blocks of `block` bytes whose nibbles start at
/// `qs`; `high(block, j, l)` gives the fifth bits (low half, high half of pair `j`) of value
/// `l` as 0 or 16 (always 0 for Q4_K).
#[inline(always)]
fn dot_k4(
    w: &[u8],
    a: &[u8],
    block: usize,
    qs: usize,
    high: impl Fn(&[u8], usize, usize) -> (i32, i32),
) -> f32 {
    let mut sumf = 0f32;
    for (wb, ab) in w.chunks_exact(block).zip(a.chunks_exact(Q8_K_BYTES)) {
        let sm = q4k_scales_mins(&wb[4..16]);
        let (sc, mn) = sm.split_at(8);
        let q4 = &wb[qs..qs + 128];
        let q8 = &ab[4..260];
        let mut sumi = 0i32;
        for j in 0..4 {
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                let q = q4[32 * j + l];
                let (h0, h1) = high(wb, j, l);
                lo += (i32::from(q & 0x0F) + h0) * i32::from(q8[64 * j + l] as i8);
                hi += (i32::from(q >> 4) + h1) * i32::from(q8[64 * j + 32 + l] as i8);
            }
            sumi += lo * i32::from(sc[2 * j]) + hi * i32::from(sc[2 * j + 1]);
        }
        let yd = f32_at(ab, 0);
        sumf += yd * f16_at(wb, 0) * sumi as f32;
        sumf -= yd * f16_at(wb, 2) * q4k_min_sum(ab, mn) as f32;
    }
    sumf
}

/// Q4_K · Q8_K (`ggml_vec_dot_q4_K_q8_K_generic`).
pub(super) fn dot_q4_k(w: &[u8], a: &[u8]) -> f32 {
    dot_k4(w, a, Q4_K_BYTES, 16, |_, _, _| (0, 0))
}

/// Q5_K · Q8_K (`ggml_vec_dot_q5_K_q8_K_generic`): Q4_K with a fifth bit per value from `qh`
/// (bit 2j of byte l for value l of sub-block 2j, bit 2j+1 for sub-block 2j+1). On every
/// instruction set (llama.cpp's Q4_K_M gives Q5_K to a few `attn_v` of large GQA models).
pub(super) fn dot_q5_k(w: &[u8], a: &[u8]) -> f32 {
    dot_k4(w, a, Q5_K_BYTES, 48, |wb, j, l| {
        let h = i32::from(wb[16 + l] >> (2 * j));
        (16 * (h & 1), 16 * ((h >> 1) & 1))
    })
}

/// Q6_K · Q8_K (`ggml_vec_dot_q6_K_q8_K_generic`).
pub(super) fn dot_q6_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, ab) in w.chunks_exact(Q6_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let q8 = &ab[4..260];
        let scales = &wb[192..208];
        let mut sumi = 0i32;
        for c in 0..2 {
            let ql = &wb[64 * c..64 * c + 64];
            let qh = &wb[128 + 32 * c..128 + 32 * c + 32];
            // Four 32-value groups: (low/high nibble, ql half, qh shift); each group holds two
            // 16-value sub-blocks with their own scale.
            for (g, (nib_shift, ql_off, qh_shift)) in [(0, 0, 0), (0, 32, 2), (4, 0, 4), (4, 32, 6)]
                .into_iter()
                .enumerate()
            {
                for s in 0..2 {
                    let mut sub = 0i32;
                    for l in 16 * s..16 * s + 16 {
                        let q = ((ql[ql_off + l] >> nib_shift) & 0x0F)
                            | (((qh[l] >> qh_shift) & 3) << 4);
                        sub += (i32::from(q) - 32) * i32::from(q8[128 * c + 32 * g + l] as i8);
                    }
                    sumi += sub * i32::from(scales[8 * c + 2 * g + s] as i8);
                }
            }
        }
        sumf += f32_at(ab, 0) * f16_at(wb, 208) * sumi as f32;
    }
    sumf
}

/// MXFP4 · Q8_0 (`ggml_vec_dot_mxfp4_q8_0_generic`).
pub(super) fn dot_mxfp4(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, ab) in w.chunks_exact(MXFP4_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = wb[1 + j];
            sumi += i32::from(ab[2 + j] as i8) * i32::from(KVALUES_MXFP4[usize::from(q & 0x0F)]);
            sumi += i32::from(ab[18 + j] as i8) * i32::from(KVALUES_MXFP4[usize::from(q >> 4)]);
        }
        sumf += e8m0_half(wb[0]) * f16_at(ab, 0) * sumi as f32;
    }
    sumf
}
