//! The [`Lanes`] of each instruction set the attention passes run on: AVX-512 (16 lanes, 32
//! registers), AVX2 (8 lanes, 16 registers), NEON (4 lanes, 32 registers) and one portable
//! lane. Each `chunk_*` entry point compiles [`passes::chunk`] with its instruction set enabled.

use super::Chunk;
use super::passes::{self, Lanes, row};

/// The scale (f16 bits) of the Q8_0 block holding value `c` of the row at `p`, and a pointer
/// to value `c`.
///
/// # Safety
/// The row holds block `c / 32` whole.
#[inline(always)]
unsafe fn q8_block(p: *const u8, c: usize) -> (u16, *const u8) {
    // SAFETY: the caller's contract.
    unsafe {
        let b = p.add(c / 32 * 34);
        (b.cast::<u16>().read_unaligned(), b.add(2 + c % 32))
    }
}

/// The element-wise operations of a [`Lanes`] implementation, from its intrinsics (each is
/// `unsafe` only for the instruction set, which the trait's contract makes the caller's).
macro_rules! elementwise {
    (
        $v:ty,
        zero: $zero:expr,
        splat: $splat:path,
        load: $load:path,
        store: $store:path,
        fma: |$a:ident, $b:ident, $c:ident| $fma:expr,
        add: $add:path,
        sub: $sub:path,
        mul: $mul:path,
        max: $max:path,
        min: $min:path $(,)?
    ) => {
        #[inline(always)]
        unsafe fn zero() -> $v {
            // SAFETY: the instruction set (the trait's contract).
            unsafe { $zero }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> $v {
            // SAFETY: as above.
            unsafe { $splat(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> $v {
            // SAFETY: as above; W values at p.
            unsafe { $load(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: $v) {
            // SAFETY: as above.
            unsafe { $store(p, v) }
        }
        #[inline(always)]
        unsafe fn fma($a: $v, $b: $v, $c: $v) -> $v {
            // SAFETY: as above.
            unsafe { $fma }
        }
        #[inline(always)]
        unsafe fn add(a: $v, b: $v) -> $v {
            // SAFETY: as above.
            unsafe { $add(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: $v, b: $v) -> $v {
            // SAFETY: as above.
            unsafe { $sub(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: $v, b: $v) -> $v {
            // SAFETY: as above.
            unsafe { $mul(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: $v, b: $v) -> $v {
            // SAFETY: as above.
            unsafe { $max(a, b) }
        }
        #[inline(always)]
        unsafe fn min(a: $v, b: $v) -> $v {
            // SAFETY: as above.
            unsafe { $min(a, b) }
        }
    };
}

/// One lane, portable Rust: the path of `scalar` and of rows that are not whole vectors of the
/// SIMD path.
pub(super) struct Scalar;

impl Lanes for Scalar {
    type V = f32;
    const W: usize = 1;
    const ACC: usize = 16;
    unsafe fn zero() -> f32 {
        0.0
    }
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the trait's contract.
        unsafe { *p }
    }
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the trait's contract.
        unsafe { *p = v }
    }
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    unsafe fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    /// A NaN in either operand is the result (as `f32::clamp` keeps a NaN), so a NaN score
    /// reaches the output here too.
    unsafe fn max(a: f32, b: f32) -> f32 {
        if a.is_nan() || a >= b { a } else { b }
    }
    /// A NaN in either operand is the result, as [`Scalar::max`].
    unsafe fn min(a: f32, b: f32) -> f32 {
        if a.is_nan() || a <= b { a } else { b }
    }
    unsafe fn round(x: f32) -> f32 {
        x.round()
    }
    unsafe fn ldexp(e: f32, k: f32) -> f32 {
        e * f32::from_bits(((k as i32 + 127) as u32) << 23)
    }
    unsafe fn row<const D: u8>(p: *const u8, c: usize) -> f32 {
        // SAFETY: the trait's contract: value c of the row is inside it.
        unsafe {
            match D {
                row::F32 => p.cast::<f32>().add(c).read_unaligned(),
                row::F16 => half::f16::from_bits(p.cast::<u16>().add(c).read_unaligned()).to_f32(),
                row::BF16 => {
                    half::bf16::from_bits(p.cast::<u16>().add(c).read_unaligned()).to_f32()
                }
                _ => {
                    let (d, q) = q8_block(p, c);
                    half::f16::from_bits(d).to_f32() * f32::from(q.cast::<i8>().read())
                }
            }
        }
    }
    unsafe fn sums(acc: &[f32; 16], sums: &mut [f32; 16]) {
        *sums = *acc;
    }
    fn prefetch<const L1: bool>(_: *const u8) {}
}

/// The entry point of [`Scalar`].
pub(super) fn chunk_scalar(c: Chunk<'_>, scores: &mut [f32], out: &mut [f32]) {
    // SAFETY: Scalar needs no instruction set and fits every row width; the caller made the
    // cache (F32, F16, BF16 or Q8_0 rows).
    unsafe { passes::chunk::<Scalar>(c, scores, out) }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx2, Avx512, chunk_avx2, chunk_avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Chunk, Lanes, passes, q8_block, row};
    use std::arch::x86_64::*;

    /// AVX-512F: 16 lanes, 32 registers (the `avx512vnni` path).
    pub(in crate::attention) struct Avx512;

    impl Lanes for Avx512 {
        type V = __m512;
        const W: usize = 16;
        const ACC: usize = 16;
        elementwise!(
            __m512,
            zero: _mm512_setzero_ps(),
            splat: _mm512_set1_ps,
            load: _mm512_loadu_ps,
            store: _mm512_storeu_ps,
            fma: |a, b, c| _mm512_fmadd_ps(a, b, c),
            add: _mm512_add_ps,
            sub: _mm512_sub_ps,
            mul: _mm512_mul_ps,
            max: _mm512_max_ps,
            min: _mm512_min_ps,
        );
        #[inline(always)]
        unsafe fn round(x: __m512) -> __m512 {
            // SAFETY: AVX-512F (the trait's contract).
            unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x) }
        }
        /// By `vscalefps`.
        #[inline(always)]
        unsafe fn ldexp(e: __m512, k: __m512) -> __m512 {
            // SAFETY: as above.
            unsafe { _mm512_scalef_ps(e, k) }
        }
        #[inline(always)]
        unsafe fn row<const D: u8>(p: *const u8, c: usize) -> __m512 {
            // SAFETY: as above; values c..c + 16 inside the row.
            unsafe {
                match D {
                    row::F32 => _mm512_loadu_ps(p.cast::<f32>().add(c)),
                    row::F16 => _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2 * c).cast())),
                    row::BF16 => {
                        let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.add(2 * c).cast()));
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(h))
                    }
                    _ => {
                        let (d, q) = q8_block(p, c);
                        let q = _mm512_cvtepi8_epi32(_mm_loadu_si128(q.cast()));
                        _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(f16c_scalar(d)))
                    }
                }
            }
        }
        /// Four levels of pairwise folds: 45 shuffles and adds for 16 sums, where 16
        /// horizontal sums take about 130.
        #[inline(always)]
        unsafe fn sums(acc: &[__m512; 16], sums: &mut [f32; 16]) {
            // The folds leave sum(v[4m + k]) in lane 4k + m; taking the vectors in the
            // transposed order puts sum(v[i]) in lane i.
            let v: [__m512; 16] = std::array::from_fn(|i| acc[(i % 4) * 4 + i / 4]);
            // SAFETY: as above.
            unsafe {
                // 128-bit quarters: lanes 0-7 the first of a pair's halves summed, 8-15 the
                // second's.
                let w: [__m512; 8] = std::array::from_fn(|i| {
                    let (a, b) = (v[2 * i], v[2 * i + 1]);
                    _mm512_add_ps(
                        _mm512_shuffle_f32x4::<0x44>(a, b),
                        _mm512_shuffle_f32x4::<0xEE>(a, b),
                    )
                });
                // Each quarter: four partial sums of one vector.
                let u: [__m512; 4] = std::array::from_fn(|i| {
                    let (a, b) = (w[2 * i], w[2 * i + 1]);
                    _mm512_add_ps(
                        _mm512_shuffle_f32x4::<0x88>(a, b),
                        _mm512_shuffle_f32x4::<0xDD>(a, b),
                    )
                });
                let z: [__m512; 2] = std::array::from_fn(|i| {
                    let (a, b) = (u[2 * i], u[2 * i + 1]);
                    _mm512_add_ps(
                        _mm512_shuffle_ps::<0x44>(a, b),
                        _mm512_shuffle_ps::<0xEE>(a, b),
                    )
                });
                let r = _mm512_add_ps(
                    _mm512_shuffle_ps::<0x88>(z[0], z[1]),
                    _mm512_shuffle_ps::<0xDD>(z[0], z[1]),
                );
                _mm512_storeu_ps(sums.as_mut_ptr(), r);
            }
        }
        #[inline(always)]
        fn prefetch<const L1: bool>(p: *const u8) {
            prefetch_x86::<L1>(p)
        }
    }

    /// The f16 `bits` as f32 by F16C (`half` may test the CPU on every call).
    ///
    /// # Safety
    /// F16C.
    #[inline(always)]
    unsafe fn f16c_scalar(bits: u16) -> f32 {
        // SAFETY: F16C (the caller's contract).
        unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))) }
    }

    #[inline(always)]
    fn prefetch_x86<const L1: bool>(p: *const u8) {
        // SAFETY: a prefetch never faults, whatever the address; SSE is baseline on x86-64.
        unsafe {
            if L1 {
                _mm_prefetch::<_MM_HINT_T0>(p.cast());
            } else {
                _mm_prefetch::<_MM_HINT_T1>(p.cast());
            }
        }
    }

    /// AVX2 with FMA and F16C: 8 lanes, 16 registers.
    pub(in crate::attention) struct Avx2;

    impl Lanes for Avx2 {
        type V = __m256;
        const W: usize = 8;
        const ACC: usize = 8;
        elementwise!(
            __m256,
            zero: _mm256_setzero_ps(),
            splat: _mm256_set1_ps,
            load: _mm256_loadu_ps,
            store: _mm256_storeu_ps,
            fma: |a, b, c| _mm256_fmadd_ps(a, b, c),
            add: _mm256_add_ps,
            sub: _mm256_sub_ps,
            mul: _mm256_mul_ps,
            max: _mm256_max_ps,
            min: _mm256_min_ps,
        );
        #[inline(always)]
        unsafe fn round(x: __m256) -> __m256 {
            // SAFETY: AVX (the trait's contract).
            unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x) }
        }
        /// The power of two built in the exponent field.
        #[inline(always)]
        unsafe fn ldexp(e: __m256, k: __m256) -> __m256 {
            // SAFETY: AVX2 (the trait's contract).
            unsafe {
                let bits = _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127));
                _mm256_mul_ps(e, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(bits)))
            }
        }
        #[inline(always)]
        unsafe fn row<const D: u8>(p: *const u8, c: usize) -> __m256 {
            // SAFETY: AVX2 and F16C (the trait's contract); values c..c + 8 inside the row.
            unsafe {
                match D {
                    row::F32 => _mm256_loadu_ps(p.cast::<f32>().add(c)),
                    row::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * c).cast())),
                    row::BF16 => {
                        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.add(2 * c).cast()));
                        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
                    }
                    _ => {
                        let (d, q) = q8_block(p, c);
                        let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(q.cast()));
                        _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(f16c_scalar(d)))
                    }
                }
            }
        }
        /// Three levels of horizontal adds and one cross-half add for 8 sums.
        #[inline(always)]
        unsafe fn sums(acc: &[__m256; 16], sums: &mut [f32; 16]) {
            // SAFETY: AVX (the trait's contract).
            unsafe {
                let s01 = _mm256_hadd_ps(acc[0], acc[1]);
                let s23 = _mm256_hadd_ps(acc[2], acc[3]);
                let s45 = _mm256_hadd_ps(acc[4], acc[5]);
                let s67 = _mm256_hadd_ps(acc[6], acc[7]);
                let s0123 = _mm256_hadd_ps(s01, s23);
                let s4567 = _mm256_hadd_ps(s45, s67);
                let lo = _mm256_permute2f128_ps::<0x20>(s0123, s4567);
                let hi = _mm256_permute2f128_ps::<0x31>(s0123, s4567);
                _mm256_storeu_ps(sums.as_mut_ptr(), _mm256_add_ps(lo, hi));
            }
        }
        #[inline(always)]
        fn prefetch<const L1: bool>(p: *const u8) {
            prefetch_x86::<L1>(p)
        }
    }

    /// The entry point of [`Avx512`].
    ///
    /// # Safety
    /// AVX-512F/BW/VL, AVX2, FMA and F16C are available (the `avx512vnni` path);
    /// `passes::fits::<Avx512>` holds.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(in crate::attention) unsafe fn chunk_avx512(
        c: Chunk<'_>,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        // SAFETY: the caller's contract.
        unsafe { passes::chunk::<Avx512>(c, scores, out) }
    }

    /// The entry point of [`Avx2`].
    ///
    /// # Safety
    /// AVX2, FMA and F16C are available; `passes::fits::<Avx2>` holds.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::attention) unsafe fn chunk_avx2(
        c: Chunk<'_>,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        // SAFETY: the caller's contract.
        unsafe { passes::chunk::<Avx2>(c, scores, out) }
    }
}

#[cfg(target_arch = "aarch64")]
pub(super) use arm::{Neon, chunk_neon};

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{Chunk, Lanes, passes, q8_block, row};
    use crate::dot::arm::f16x4_to_f32;
    use std::arch::aarch64::*;

    /// NEON: 4 lanes, 32 registers. No prefetch hint (the hardware prefetcher alone).
    pub(in crate::attention) struct Neon;

    impl Lanes for Neon {
        type V = float32x4_t;
        const W: usize = 4;
        const ACC: usize = 16;
        elementwise!(
            float32x4_t,
            zero: vdupq_n_f32(0.0),
            splat: vdupq_n_f32,
            load: vld1q_f32,
            store: vst1q_f32,
            fma: |a, b, c| vfmaq_f32(c, a, b),
            add: vaddq_f32,
            sub: vsubq_f32,
            mul: vmulq_f32,
            max: vmaxq_f32,
            min: vminq_f32,
        );
        #[inline(always)]
        unsafe fn round(x: float32x4_t) -> float32x4_t {
            // SAFETY: NEON (the trait's contract).
            unsafe { vrndnq_f32(x) }
        }
        /// The power of two built in the exponent field.
        #[inline(always)]
        unsafe fn ldexp(e: float32x4_t, k: float32x4_t) -> float32x4_t {
            // SAFETY: as above.
            unsafe {
                let two_k = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(k), vdupq_n_s32(127)));
                vmulq_f32(e, vreinterpretq_f32_s32(two_k))
            }
        }
        #[inline(always)]
        unsafe fn row<const D: u8>(p: *const u8, c: usize) -> float32x4_t {
            // SAFETY: as above; values c..c + 4 inside the row.
            unsafe {
                match D {
                    row::F32 => vld1q_f32(p.cast::<f32>().add(c)),
                    row::F16 => f16x4_to_f32(vld1_u16(p.add(2 * c).cast())),
                    row::BF16 => {
                        vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p.add(2 * c).cast())))
                    }
                    _ => {
                        let (d, q) = q8_block(p, c);
                        // Eight values from the start of the 8-value group, then the half.
                        let w = vmovl_s8(vld1_s8(q.sub(c % 8).cast()));
                        let h = if c % 8 == 0 {
                            vget_low_s16(w)
                        } else {
                            vget_high_s16(w)
                        };
                        vmulq_n_f32(
                            vcvtq_f32_s32(vmovl_s16(h)),
                            half::f16::from_bits(d).to_f32(),
                        )
                    }
                }
            }
        }
        /// Pairwise adds: four vectors to one of their four sums, twice.
        #[inline(always)]
        unsafe fn sums(acc: &[float32x4_t; 16], sums: &mut [f32; 16]) {
            // SAFETY: as above; 16 floats in sums.
            unsafe {
                for i in 0..4 {
                    let a = vpaddq_f32(acc[4 * i], acc[4 * i + 1]);
                    let b = vpaddq_f32(acc[4 * i + 2], acc[4 * i + 3]);
                    vst1q_f32(sums.as_mut_ptr().add(4 * i), vpaddq_f32(a, b));
                }
            }
        }
        fn prefetch<const L1: bool>(_: *const u8) {}
    }

    /// The entry point of [`Neon`].
    ///
    /// # Safety
    /// NEON is available; `passes::fits::<Neon>` holds.
    #[target_feature(enable = "neon")]
    pub(in crate::attention) unsafe fn chunk_neon(
        c: Chunk<'_>,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        // SAFETY: the caller's contract.
        unsafe { passes::chunk::<Neon>(c, scores, out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use membound_quant::ops;
    use membound_spec::DType;

    /// What each `Lanes` must compute, run on `L` (inside a function with its instruction set).
    #[inline(always)]
    fn check<L: Lanes>(name: &str) {
        let mut lanes = [0f32; 16];
        // exp: within 1e-7 relative over the softmax's arguments (0 down to the clamp), tiny
        // past the clamp.
        let mut worst = 0f64;
        for k in 0..64_000 / L::W {
            let x: [f32; 16] = std::array::from_fn(|i| -((k * L::W + i) as f32) * 87.0 / 64_000.0);
            // SAFETY: L's instruction set (the caller's); 16 floats each.
            unsafe { L::store(lanes.as_mut_ptr(), L::exp(L::load(x.as_ptr()))) };
            for (g, x) in lanes[..L::W].iter().zip(x) {
                let w = f64::from(x).exp();
                worst = worst.max((f64::from(*g) - w).abs() / w);
            }
        }
        assert!(worst < 1e-7, "{name} exp: relative error {worst}");
        // SAFETY: as above.
        unsafe { L::store(lanes.as_mut_ptr(), L::exp(L::splat(-1000.0))) };
        assert!(
            lanes[..L::W].iter().all(|v| *v > 0.0 && *v < 2e-38),
            "{name} {lanes:?}"
        );
        // sums: slot i holds the sum of vector i (distinct values per lane and vector make any
        // other lane or vector show).
        let v: [[f32; 16]; 16] = std::array::from_fn(|i| {
            std::array::from_fn(|l| ((i * 16 + l) % 23) as f32 * 0.5 + i as f32 * 1024.0)
        });
        let mut got = [0f32; 16];
        // SAFETY: as above.
        unsafe { L::sums(&std::array::from_fn(|i| L::load(v[i].as_ptr())), &mut got) };
        for i in 0..L::ACC {
            let want: f32 = v[i][..L::W].iter().sum();
            assert_eq!(got[i], want, "{name} sum of vector {i}");
        }
        // rows: every type's values at every vector of a 64-value row as the dequantizer gives
        // them, bit for bit.
        let values = membound_quant::data::normal_f32(5, 64, 3.0);
        for (d, dtype) in [
            (row::F32, DType::F32),
            (row::F16, DType::F16),
            (row::BF16, DType::BF16),
            (row::Q8_0, DType::Q8_0),
        ] {
            let bytes = match dtype {
                DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                _ => ops::quantize(dtype, &values).expect("quantize"),
            };
            let want = match dtype {
                DType::F32 => values.clone(),
                _ => ops::dequantize(dtype, &bytes).expect("dequantize"),
            };
            for c in (0..64).step_by(L::W) {
                // SAFETY: as above; values c..c + W of a 64-value row.
                unsafe {
                    let v = match d {
                        row::F32 => L::row::<{ row::F32 }>(bytes.as_ptr(), c),
                        row::F16 => L::row::<{ row::F16 }>(bytes.as_ptr(), c),
                        row::BF16 => L::row::<{ row::BF16 }>(bytes.as_ptr(), c),
                        _ => L::row::<{ row::Q8_0 }>(bytes.as_ptr(), c),
                    };
                    L::store(lanes.as_mut_ptr(), v);
                }
                assert_eq!(&lanes[..L::W], &want[c..c + L::W], "{name} {dtype} at {c}");
            }
        }
    }

    #[test]
    fn every_instruction_sets_lanes_compute_what_the_passes_need() {
        check::<Scalar>("scalar");
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma,f16c")]
            fn avx2() {
                check::<Avx2>("avx2");
            }
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
            fn avx512() {
                check::<Avx512>("avx512");
            }
            if crate::Isa::Avx2.is_available() {
                // SAFETY: AVX2, FMA and F16C are available.
                unsafe { avx2() };
            } else {
                eprintln!("avx2 skipped: this CPU lacks it");
            }
            if crate::Isa::Avx512Vnni.is_available() {
                // SAFETY: the avx512vnni path's features are available.
                unsafe { avx512() };
            } else {
                eprintln!("avx512 skipped: this CPU lacks the avx512vnni path");
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            #[target_feature(enable = "neon")]
            fn neon() {
                check::<Neon>("neon");
            }
            // SAFETY: NEON is part of every aarch64 target Rust supports here.
            unsafe { neon() };
        }
    }
}
