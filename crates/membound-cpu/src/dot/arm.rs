//! NEON kernels (aarch64), selected at run time: `sdot` where the CPU has the dot-product
//! extension (through inline assembly, as `vdotq_s32` is not yet stable), widening multiplies
//! (`smull`/`sadalp`) otherwise. Each integer kernel is written once, generic over that choice.
//!
//! Every kernel reads only through pointers into `chunks_exact` chunks of the exact block size.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{
    KVALUES_MXFP4, MXFP4_BYTES, Q4_K_BYTES, Q6_K_BYTES, Q8_0_BYTES, Q8_K_BYTES, e8m0_half, f16_at,
    f32_at, q4k_scales_mins,
};

/// `acc + Σ` of the products of 16 signed byte pairs, four per i32 lane.
#[inline(always)]
unsafe fn dot16<const DOTPROD: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    unsafe {
        if DOTPROD {
            let mut acc = acc;
            // SAFETY: only instantiated inside functions enabled for `dotprod`.
            asm!(
                ".arch_extension dotprod",
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags)
            );
            acc
        } else {
            let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let hi = vmull_high_s8(a, b);
            vpadalq_s16(vpadalq_s16(acc, lo), hi)
        }
    }
}

#[inline(always)]
unsafe fn ld_s8(p: *const u8) -> int8x16_t {
    unsafe { vld1q_s8(p.cast()) }
}

/// 4 f16 bit patterns as f32, exactly (subnormals, infinities and NaNs included), with integer
/// NEON only: move the exponent/mantissa field into place and rescale by 2^112.
#[inline(always)]
pub(crate) unsafe fn f16x4_to_f32(h: uint16x4_t) -> float32x4_t {
    unsafe {
        let h = vmovl_u16(h);
        let sign = vshlq_n_u32(vandq_u32(h, vdupq_n_u32(0x8000)), 16);
        let em = vshlq_n_u32(vandq_u32(h, vdupq_n_u32(0x7FFF)), 13);
        let scaled = vmulq_f32(
            vreinterpretq_f32_u32(em),
            vdupq_n_f32(f32::from_bits(0x7780_0000)),
        );
        let is_special = vceqq_u32(vandq_u32(h, vdupq_n_u32(0x7C00)), vdupq_n_u32(0x7C00));
        let special = vorrq_u32(em, vdupq_n_u32(0x7F80_0000));
        let mag = vbslq_u32(is_special, special, vreinterpretq_u32_f32(scaled));
        vreinterpretq_f32_u32(vorrq_u32(mag, sign))
    }
}

/// Generates a float-weight kernel: `$load(ptr) -> float32x4_t` decodes 4 weights at `ptr`.
macro_rules! float_kernel {
    ($name:ident, $esize:expr, $load:expr, $scalar:expr) => {
        /// Float weights · f32 activations, four 4-lane FMA accumulators.
        #[target_feature(enable = "neon")]
        pub(super) fn $name(w: &[u8], a: &[u8]) -> f32 {
            const STEP: usize = 16;
            let mut wc = w.chunks_exact(STEP * $esize);
            let mut ac = a.chunks_exact(STEP * 4);
            // SAFETY: every load is within a chunk of STEP values; NEON is enabled.
            unsafe {
                let mut acc = [vdupq_n_f32(0.0); 4];
                for (wb, ab) in (&mut wc).zip(&mut ac) {
                    for (k, acc) in acc.iter_mut().enumerate() {
                        let wv = $load(wb.as_ptr().add(4 * k * $esize));
                        let av = vld1q_f32(ab.as_ptr().add(16 * k).cast());
                        *acc = vfmaq_f32(*acc, wv, av);
                    }
                }
                let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
                vaddvq_f32(sum) + ($scalar)(wc.remainder(), ac.remainder())
            }
        }
    };
}

float_kernel!(
    dot_f32,
    4,
    |p: *const u8| vld1q_f32(p.cast()),
    super::scalar::dot_f32
);
float_kernel!(
    dot_f16,
    2,
    |p: *const u8| f16x4_to_f32(vld1_u16(p.cast())),
    super::scalar::dot_f16
);
float_kernel!(
    dot_bf16,
    2,
    |p: *const u8| vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p.cast()))),
    super::scalar::dot_bf16
);

/// Folds `block(acc, w_block, a_block) -> acc` over paired blocks of `wb` and `ab` bytes with
/// four independent accumulators and returns their sum. `block` may read `wb` bytes at
/// `w_block` and `ab` bytes at `a_block`.
#[inline(always)]
unsafe fn fold_blocks(
    w: &[u8],
    a: &[u8],
    wb: usize,
    ab: usize,
    mut block: impl FnMut(float32x4_t, *const u8, *const u8) -> float32x4_t,
) -> f32 {
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut wc = w.chunks_exact(4 * wb);
        let mut ac = a.chunks_exact(4 * ab);
        for (w4, a4) in (&mut wc).zip(&mut ac) {
            for (k, acc) in acc.iter_mut().enumerate() {
                *acc = block(*acc, w4.as_ptr().add(k * wb), a4.as_ptr().add(k * ab));
            }
        }
        for (w1, a1) in wc
            .remainder()
            .chunks_exact(wb)
            .zip(ac.remainder().chunks_exact(ab))
        {
            acc[0] = block(acc[0], w1.as_ptr(), a1.as_ptr());
        }
        vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ))
    }
}

/// The f16 at `p` as f32.
#[inline(always)]
unsafe fn f16_ptr(p: *const u8) -> f32 {
    unsafe { half::f16::from_bits(p.cast::<u16>().read_unaligned()).to_f32() }
}

/// Q8_0 · Q8_0.
#[inline(always)]
unsafe fn q8_0<const DP: bool>(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        fold_blocks(w, a, Q8_0_BYTES, Q8_0_BYTES, |acc, x, y| {
            let s = dot16::<DP>(vdupq_n_s32(0), ld_s8(x.add(2)), ld_s8(y.add(2)));
            let s = dot16::<DP>(s, ld_s8(x.add(18)), ld_s8(y.add(18)));
            vfmaq_n_f32(acc, vcvtq_f32_s32(s), f16_ptr(x) * f16_ptr(y))
        })
    }
}

/// `Σ_i mins[i] · (bsums[2i] + bsums[2i + 1])` of a Q8_K block at `y` and 8 Q4_K mins at `mn`
/// (the vector form of `q4k_min_sum`).
#[inline(always)]
unsafe fn min_sum(y: *const u8, mn: *const u8) -> i32 {
    unsafe {
        let pairs = vpaddq_s16(vld1q_s16(y.add(260).cast()), vld1q_s16(y.add(276).cast()));
        let mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mn)));
        let prod = vmull_s16(vget_low_s16(pairs), vget_low_s16(mins));
        vaddvq_s32(vmlal_high_s16(prod, pairs, mins))
    }
}

/// Q4_K · Q8_K.
#[inline(always)]
unsafe fn q4_k<const DP: bool>(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        let mut sumf = 0f32;
        for (wb, ab) in w.chunks_exact(Q4_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
            let sm = q4k_scales_mins(&wb[4..16]);
            let (sc, mn) = sm.split_at(8);
            let q4 = wb.as_ptr().add(16);
            let q8 = ab.as_ptr().add(4);
            let mut sumi = vdupq_n_s32(0);
            for j in 0..4 {
                let b0 = vld1q_u8(q4.add(32 * j));
                let b1 = vld1q_u8(q4.add(32 * j + 16));
                let y = q8.add(64 * j);
                let lo = dot16::<DP>(
                    vdupq_n_s32(0),
                    vreinterpretq_s8_u8(vandq_u8(b0, m4)),
                    ld_s8(y),
                );
                let lo = dot16::<DP>(lo, vreinterpretq_s8_u8(vandq_u8(b1, m4)), ld_s8(y.add(16)));
                let hi = dot16::<DP>(
                    vdupq_n_s32(0),
                    vreinterpretq_s8_u8(vshrq_n_u8(b0, 4)),
                    ld_s8(y.add(32)),
                );
                let hi = dot16::<DP>(hi, vreinterpretq_s8_u8(vshrq_n_u8(b1, 4)), ld_s8(y.add(48)));
                sumi = vmlaq_n_s32(sumi, lo, i32::from(sc[2 * j]));
                sumi = vmlaq_n_s32(sumi, hi, i32::from(sc[2 * j + 1]));
            }
            let yd = f32_at(ab, 0);
            sumf += yd * f16_at(wb, 0) * vaddvq_s32(sumi) as f32;
            sumf -= yd * f16_at(wb, 2) * min_sum(ab.as_ptr(), mn.as_ptr()) as f32;
        }
        sumf
    }
}

/// Q6_K · Q8_K.
#[inline(always)]
unsafe fn q6_k<const DP: bool>(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        let m3 = vdupq_n_u8(0x03);
        let m30 = vdupq_n_u8(0x30);
        let k32 = vdupq_n_s8(32);
        let mut sumf = 0f32;
        for (wb, ab) in w.chunks_exact(Q6_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
            let scales = &wb[192..208];
            let q8 = ab.as_ptr().add(4);
            let mut sumi = vdupq_n_s32(0);
            for c in 0..2 {
                for half in 0..2 {
                    let l1 = vld1q_u8(wb.as_ptr().add(64 * c + 16 * half));
                    let l2 = vld1q_u8(wb.as_ptr().add(64 * c + 32 + 16 * half));
                    let h = vld1q_u8(wb.as_ptr().add(128 + 32 * c + 16 * half));
                    // One 16-value sub-block (one scale) per group and half.
                    let groups = [
                        vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(h, m3), 4)),
                        vorrq_u8(
                            vandq_u8(l2, m4),
                            vshlq_n_u8(vandq_u8(vshrq_n_u8(h, 2), m3), 4),
                        ),
                        vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(h, m30)),
                        vorrq_u8(vshrq_n_u8(l2, 4), vandq_u8(vshrq_n_u8(h, 2), m30)),
                    ];
                    for (g, q) in groups.into_iter().enumerate() {
                        let q = vsubq_s8(vreinterpretq_s8_u8(q), k32);
                        let y = ld_s8(q8.add(128 * c + 32 * g + 16 * half));
                        let s = dot16::<DP>(vdupq_n_s32(0), q, y);
                        sumi = vmlaq_n_s32(sumi, s, i32::from(scales[8 * c + 2 * g + half] as i8));
                    }
                }
            }
            sumf += f32_at(ab, 0) * f16_at(wb, 208) * vaddvq_s32(sumi) as f32;
        }
        sumf
    }
}

/// MXFP4 · Q8_0: nibbles looked up in the doubled E2M1 table with `tbl`.
#[inline(always)]
unsafe fn mxfp4<const DP: bool>(w: &[u8], a: &[u8]) -> f32 {
    unsafe {
        let lut = vld1q_s8(KVALUES_MXFP4.as_ptr());
        let m4 = vdupq_n_u8(0x0F);
        fold_blocks(w, a, MXFP4_BYTES, Q8_0_BYTES, |acc, x, y| {
            let q = vld1q_u8(x.add(1));
            let lo = vqtbl1q_s8(lut, vandq_u8(q, m4));
            let hi = vqtbl1q_s8(lut, vshrq_n_u8(q, 4));
            let s = dot16::<DP>(vdupq_n_s32(0), lo, ld_s8(y.add(2)));
            let s = dot16::<DP>(s, hi, ld_s8(y.add(18)));
            vfmaq_n_f32(acc, vcvtq_f32_s32(s), e8m0_half(*x) * f16_ptr(y))
        })
    }
}

/// Generates the NEON and NEON+dotprod entry points of a generic integer kernel.
macro_rules! int_kernels {
    ($generic:ident, $neon:ident, $dotprod:ident) => {
        /// NEON (widening multiplies).
        #[target_feature(enable = "neon")]
        pub(super) fn $neon(w: &[u8], a: &[u8]) -> f32 {
            // SAFETY: NEON is enabled; loads stay within `chunks_exact` blocks.
            unsafe { $generic::<false>(w, a) }
        }
        /// NEON with `sdot`.
        #[target_feature(enable = "neon,dotprod")]
        pub(super) fn $dotprod(w: &[u8], a: &[u8]) -> f32 {
            // SAFETY: NEON and dotprod are enabled; loads stay within `chunks_exact` blocks.
            unsafe { $generic::<true>(w, a) }
        }
    };
}

int_kernels!(q8_0, dot_q8_0, dot_q8_0_dotprod);
int_kernels!(q4_k, dot_q4_k, dot_q4_k_dotprod);
int_kernels!(q6_k, dot_q6_k, dot_q6_k_dotprod);
int_kernels!(mxfp4, dot_mxfp4, dot_mxfp4_dotprod);
