//! AVX2 + FMA + F16C kernels (x86-64), selected at run time. The integer kernels follow the
//! shape of ggml's `arch/x86/quants.c`: `_mm256_maddubs_epi16` of unsigned weights (or
//! sign-folded bytes) by signed activations, `_mm256_madd_epi16` by the sub-block scale, one
//! float FMA per block.
//!
//! Every kernel reads only through pointers into `chunks_exact` chunks of the exact block size.

use std::arch::x86_64::*;

use super::{
    KVALUES_MXFP4, MXFP4_BYTES, Q4_K_BYTES, Q6_K_BYTES, Q8_0_BYTES, Q8_K_BYTES, e8m0_half,
};

/// Horizontal sum of 8 floats.
#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// Horizontal sum of 4 floats.
#[inline(always)]
unsafe fn hsum_ps128(v: __m128) -> f32 {
    unsafe {
        let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

/// The 8 six-bit scales (bytes 0..8) and 8 mins (bytes 8..16) of a Q4_K block whose 12 packed
/// bytes start at `p`, unpacked in one register (the 32-bit mask form of
/// [`super::q4k_scales_mins`]: lanes scales_lo, scales_hi, mins_lo, mins_hi). Reads 16 bytes at `p`.
#[inline(always)]
unsafe fn q4k_scales_mins_v(p: *const u8) -> __m128i {
    unsafe {
        let v = _mm_loadu_si128(p.cast());
        // (u0, u2, u1, u2) and (u0, u0, u1, u1).
        let a = _mm_shuffle_epi32(v, 0b10_01_10_00);
        let b = _mm_shuffle_epi32(v, 0b01_01_00_00);
        let (m1, m2, m3) = (0x3f3f_3f3f, 0x0f0f_0f0f, 0x0303_0303);
        let lo = _mm_and_si128(
            _mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
            _mm_setr_epi32(m1, m2, m1, m2),
        );
        let hi = _mm_slli_epi32(
            _mm_and_si128(_mm_srli_epi32(b, 6), _mm_setr_epi32(0, m3, 0, m3)),
            4,
        );
        _mm_or_si128(lo, hi)
    }
}

/// The f16 at `p` as f32 (F16C).
#[inline(always)]
unsafe fn f16_ptr(p: *const u8) -> f32 {
    unsafe {
        let bits = i32::from(p.cast::<u16>().read_unaligned());
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
    }
}

/// 32 unaligned bytes at `p`.
#[inline(always)]
unsafe fn load32(p: *const u8) -> __m256i {
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// Σ x·y of signed bytes in 8 i32 lanes (sign folded onto `y`, as ggml's `mul_sum_i8_pairs`).
#[inline(always)]
unsafe fn mul_sum_i8(x: __m256i, y: __m256i) -> __m256i {
    unsafe {
        let ax = _mm256_sign_epi8(x, x);
        let sy = _mm256_sign_epi8(y, x);
        _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
    }
}

/// Generates a float-weight kernel: `$load(ptr) -> __m256` decodes 8 weights at `ptr`.
macro_rules! float_kernel {
    ($name:ident, $esize:expr, $load:expr, $scalar:expr) => {
        /// Float weights · f32 activations, four 8-lane FMA accumulators.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) fn $name(w: &[u8], a: &[u8]) -> f32 {
            const STEP: usize = 32;
            let mut wc = w.chunks_exact(STEP * $esize);
            let mut ac = a.chunks_exact(STEP * 4);
            // SAFETY: every load is within a chunk of STEP values; AVX2/FMA/F16C are enabled.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 4];
                for (wb, ab) in (&mut wc).zip(&mut ac) {
                    for (k, acc) in acc.iter_mut().enumerate() {
                        let wv = $load(wb.as_ptr().add(8 * k * $esize));
                        let av = _mm256_loadu_ps(ab.as_ptr().add(32 * k).cast());
                        *acc = _mm256_fmadd_ps(wv, av, *acc);
                    }
                }
                let sum =
                    _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                let tail = ($scalar)(wc.remainder(), ac.remainder());
                hsum_ps(sum) + tail
            }
        }
    };
}

float_kernel!(
    dot_f32,
    4,
    |p: *const u8| _mm256_loadu_ps(p.cast()),
    super::scalar::dot_f32
);
float_kernel!(
    dot_f16,
    2,
    |p: *const u8| _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
    super::scalar::dot_f16
);
float_kernel!(
    dot_bf16,
    2,
    |p: *const u8| _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())),
        16
    )),
    super::scalar::dot_bf16
);

/// Folds `block(acc, w_block, a_block) -> acc` over paired blocks of `wb` and `ab` bytes with
/// four independent accumulators (so consecutive blocks' FMAs do not wait on each other) and
/// returns their sum. `block` may read `wb` bytes at `w_block` and `ab` bytes at `a_block`.
#[inline(always)]
unsafe fn fold_blocks(
    w: &[u8],
    a: &[u8],
    wb: usize,
    ab: usize,
    mut block: impl FnMut(__m256, *const u8, *const u8) -> __m256,
) -> __m256 {
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
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
        _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))
    }
}

/// Q8_0 · Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_q8_0(w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: loads stay within 34-byte blocks (2 + 32); AVX2/FMA/F16C are enabled.
    unsafe {
        let acc = fold_blocks(w, a, Q8_0_BYTES, Q8_0_BYTES, |acc, x, y| {
            let d = _mm256_set1_ps(f16_ptr(x) * f16_ptr(y));
            let s = mul_sum_i8(load32(x.add(2)), load32(y.add(2)));
            _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc)
        });
        hsum_ps(acc)
    }
}

/// Q4_K · Q8_K: per block, the min correction Σ_i mins[i] · (bsums[2i] + bsums[2i + 1]) and
/// the 8 sub-blocks' integer sums, each scaled by its six-bit scale (both unpacked in registers,
/// [`q4k_scales_mins_v`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_q4_k(w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: loads stay within the 144-byte weight and 292-byte activation blocks: each
    // 32-byte run of qs and its two 32-byte runs of q8 lie inside them; AVX2/FMA/F16C are
    // enabled.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        // Shuffles that broadcast 16-bit scale k to every lane: bytes (2k, 2k + 1) repeated.
        let pick: [__m256i; 8] =
            std::array::from_fn(|k| _mm256_set1_epi16((((2 * k + 1) << 8) | (2 * k)) as i16));
        let mut acc_min = _mm_setzero_ps();
        let acc = fold_blocks(w, a, Q4_K_BYTES, Q8_K_BYTES, |acc, x, y| {
            let yd = y.cast::<f32>().read_unaligned();
            let sm = q4k_scales_mins_v(x.add(4));
            let mins = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
            let bsums = _mm_hadd_epi16(
                _mm_loadu_si128(y.add(260).cast()),
                _mm_loadu_si128(y.add(276).cast()),
            );
            let prod = _mm_madd_epi16(mins, bsums);
            acc_min = _mm_fmadd_ps(
                _mm_set1_ps(yd * f16_ptr(x.add(2))),
                _mm_cvtepi32_ps(prod),
                acc_min,
            );
            let scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
            let (q4, q8) = (x.add(16), y.add(4));
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let bits = load32(q4.add(32 * j));
                let lo = _mm256_and_si256(bits, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                let p_lo = _mm256_maddubs_epi16(lo, load32(q8.add(64 * j)));
                let p_hi = _mm256_maddubs_epi16(hi, load32(q8.add(64 * j + 32)));
                let p_lo = _mm256_madd_epi16(p_lo, _mm256_shuffle_epi8(scales, pick[2 * j]));
                let p_hi = _mm256_madd_epi16(p_hi, _mm256_shuffle_epi8(scales, pick[2 * j + 1]));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
            }
            let d = _mm256_set1_ps(yd * f16_ptr(x));
            _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc)
        });
        hsum_ps(acc) - hsum_ps128(acc_min)
    }
}

/// Q6_K · Q8_K.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_q6_k(w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: loads stay within the 210-byte weight and 292-byte activation blocks
    // (ql 0..128, qh 128..192, scales 192..208, d 208..210).
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let m3 = _mm256_set1_epi8(0x03);
        let m30 = _mm256_set1_epi8(0x30);
        let k32 = _mm256_set1_epi8(32);
        // Shuffles giving lanes 0..8 scale 2g and lanes 8..16 scale 2g + 1 of a 16-bit
        // scale vector whose two 128-bit halves hold the same 8 scales.
        let pick: [__m256i; 4] = std::array::from_fn(|g| {
            let (a, b) = (
                (((4 * g + 1) << 8) | (4 * g)) as i16,
                (((4 * g + 3) << 8) | (4 * g + 2)) as i16,
            );
            _mm256_set_m128i(_mm_set1_epi16(b), _mm_set1_epi16(a))
        });
        let acc = fold_blocks(w, a, Q6_K_BYTES, Q8_K_BYTES, |acc, x, y| {
            let q8 = y.add(4);
            let mut sumi = _mm256_setzero_si256();
            for c in 0..2 {
                let sc8 = _mm_loadl_epi64(x.add(192 + 8 * c).cast());
                let scales = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc8));
                let l1 = load32(x.add(64 * c));
                let l2 = load32(x.add(64 * c + 32));
                let h = load32(x.add(128 + 32 * c));
                // The 6-bit values 0..64 of the chunk's four 32-value groups.
                let groups = [
                    _mm256_or_si256(
                        _mm256_and_si256(l1, m4),
                        _mm256_slli_epi16(_mm256_and_si256(h, m3), 4),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(l2, m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                        _mm256_and_si256(h, m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(l2, 4), m4),
                        _mm256_and_si256(_mm256_srli_epi16(h, 2), m30),
                    ),
                ];
                for (g, q) in groups.into_iter().enumerate() {
                    let y = load32(q8.add(128 * c + 32 * g));
                    // (q - 32)·y = q·y - 32·y, both without i16 saturation (63·127·2 < 2^15).
                    let p =
                        _mm256_sub_epi16(_mm256_maddubs_epi16(q, y), _mm256_maddubs_epi16(k32, y));
                    sumi = _mm256_add_epi32(
                        sumi,
                        _mm256_madd_epi16(p, _mm256_shuffle_epi8(scales, pick[g])),
                    );
                }
            }
            let d = _mm256_set1_ps(y.cast::<f32>().read_unaligned() * f16_ptr(x.add(208)));
            _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc)
        });
        hsum_ps(acc)
    }
}

/// MXFP4 · Q8_0: nibbles looked up in the doubled E2M1 table with `pshufb`; the scales looked
/// up, not converted per block (the weight's from [`E8M0_HALF`], the activation's appended as
/// f32 after its Q8_0 blocks by `DotKernel::extend_act`): measured on one Zen 4 core in cache,
/// the per-block scales, not the products, bound these kernels (with constant scales 1.5x
/// faster).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_mxfp4(w: &[u8], a: &[u8]) -> f32 {
    let blocks = w.len() / MXFP4_BYTES;
    let (qa, scales) = a.split_at(blocks * Q8_0_BYTES);
    debug_assert!(scales.len() >= 4 * blocks, "activation scales appended");
    // SAFETY: loads stay within the 17-byte weight (1 + 16) and 34-byte activation blocks, and
    // the scale of activation block b at 4b of `scales`; AVX2/FMA/F16C are enabled.
    unsafe {
        let lut = _mm_loadu_si128(KVALUES_MXFP4.as_ptr().cast());
        let m4 = _mm_set1_epi8(0x0F);
        let (base, sp) = (qa.as_ptr(), scales.as_ptr());
        let acc = fold_blocks(w, qa, MXFP4_BYTES, Q8_0_BYTES, |acc, x, y| {
            let q = _mm_loadu_si128(x.add(1).cast());
            let lo = _mm_shuffle_epi8(lut, _mm_and_si128(q, m4));
            let hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(q, 4), m4));
            let s = mul_sum_i8(_mm256_set_m128i(hi, lo), load32(y.add(2)));
            let b = (y.offset_from(base) as usize) / Q8_0_BYTES;
            let yd = sp.add(4 * b).cast::<f32>().read_unaligned();
            let d = _mm256_set1_ps(E8M0_HALF[usize::from(*x)] * yd);
            _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc)
        });
        hsum_ps(acc)
    }
}

/// [`e8m0_half`] of every exponent.
static E8M0_HALF: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut e = 0;
    while e < 256 {
        t[e] = e8m0_half(e as u8);
        e += 1;
    }
    t
};

// ---- AVX-512 VNNI kernels over N rows (1 or 4): each activation block loaded (and its shared
// work done) once for the N weight rows, each row's arithmetic the same whatever N, so a row's
// dot is bit-identical in the single-row and the four-row kernel (a GEMV's result does not
// depend on how its rows were grouped) ----

/// The single-row kernel `$one` and four-row kernel `$four` of the N-row kernel `$rows`.
macro_rules! vnni_rows {
    ($one:ident, $four:ident, $rows:ident) => {
        #[doc = concat!("One row of [`", stringify!($rows), "`].")]
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub(super) fn $one(w: &[u8], a: &[u8]) -> f32 {
            $rows::<1>([w], a)[0]
        }

        #[doc = concat!("Four rows of [`", stringify!($rows), "`].")]
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub(super) fn $four(w: [&[u8]; 4], a: &[u8]) -> [f32; 4] {
            $rows::<4>(w, a)
        }
    };
}

vnni_rows!(dot_q8_0_vnni, dot4_q8_0_vnni, q8_0_rows_vnni);
vnni_rows!(dot_q4_k_vnni, dot4_q4_k_vnni, q4_k_rows_vnni);
vnni_rows!(dot_q6_k_vnni, dot4_q6_k_vnni, q6_k_rows_vnni);
vnni_rows!(dot_mxfp4_vnni, dot4_mxfp4_vnni, mxfp4_rows_vnni);

/// A `pshufb` pattern that fills a 128-bit half's eight i16 lanes with word `lo[0]` four times
/// then `lo[1]` four times (the high half: `hi`), picking from a vector whose halves each hold
/// eight i16 scales.
#[inline]
#[target_feature(enable = "avx2")]
fn word_pattern(lo: [usize; 2], hi: [usize; 2]) -> __m256i {
    let half =
        |w: [usize; 2]| -> [u8; 16] { std::array::from_fn(|i| (2 * w[i / 8] + i % 2) as u8) };
    // SAFETY: an unaligned load of the 32 bytes of a local array.
    unsafe { _mm256_loadu_si256([half(lo), half(hi)].as_ptr().cast()) }
}

/// Blocks every one of `rows` holds whole (of `wb` bytes), and `a` too (of `ab` bytes).
#[inline(always)]
fn common_blocks<const N: usize>(rows: &[&[u8]; N], a: &[u8], wb: usize, ab: usize) -> usize {
    rows.iter()
        .map(|r| r.len() / wb)
        .fold(a.len() / ab, usize::min)
}

/// N Q4_K rows · one Q8_K row, AVX-512 VNNI: `vpdpbusd` sums each sub-block's products four at
/// a time (at most 4 · 15 · 128, so they pack to i16 without saturating) and `vpdpwssd` applies
/// two sub-blocks' scales and accumulates; the activation's 8 runs of 32 bytes, its `bsums` and
/// scale loaded once per block for the N rows, and each row's scales and mins unpacked in
/// registers ([`q4k_scales_mins_v`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_k_rows_vnni<const N: usize>(w: [&[u8]; N], a: &[u8]) -> [f32; N] {
    let blocks = common_blocks(&w, a, Q4_K_BYTES, Q8_K_BYTES);
    // SAFETY: block b < blocks lies inside every row and inside `a`; within a block the loads
    // stay inside its 144 (weight) and 292 (activation) bytes; the features are enabled.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        // packs(a, b) holds a's 4 lanes then b's in each 128-bit half: pair j's scale pattern
        // is scale 2j four times, then scale 2j + 1 four times (as i16 byte pairs).
        let pick: [__m256i; 4] =
            std::array::from_fn(|j| word_pattern([2 * j, 2 * j + 1], [2 * j, 2 * j + 1]));
        let zero = _mm256_setzero_si256();
        let mut acc = [_mm256_setzero_ps(); N];
        let mut acc_min = [_mm_setzero_ps(); N];
        for blk in 0..blocks {
            let y = a.as_ptr().add(blk * Q8_K_BYTES);
            let yd = _mm_set1_ps(y.cast::<f32>().read_unaligned());
            let bsums = _mm_hadd_epi16(
                _mm_loadu_si128(y.add(260).cast()),
                _mm_loadu_si128(y.add(276).cast()),
            );
            let q8: [__m256i; 8] = std::array::from_fn(|i| load32(y.add(4 + 32 * i)));
            for r in 0..N {
                let x = w[r].as_ptr().add(blk * Q4_K_BYTES);
                let sm = q4k_scales_mins_v(x.add(4));
                // (d · yd, dmin · yd) in lanes 0 and 1.
                let dd = _mm_mul_ps(
                    _mm_cvtph_ps(_mm_cvtsi32_si128(x.cast::<i32>().read_unaligned())),
                    yd,
                );
                let mins = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
                acc_min[r] = _mm_fmadd_ps(
                    _mm_permute_ps(dd, 0b01_01_01_01),
                    _mm_cvtepi32_ps(_mm_madd_epi16(mins, bsums)),
                    acc_min[r],
                );
                let scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
                let q4 = x.add(16);
                let mut sumi = zero;
                for (j, pick) in pick.iter().enumerate() {
                    let bits = load32(q4.add(32 * j));
                    let lo = _mm256_and_si256(bits, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                    let p16 = _mm256_packs_epi32(
                        _mm256_dpbusd_epi32(zero, lo, q8[2 * j]),
                        _mm256_dpbusd_epi32(zero, hi, q8[2 * j + 1]),
                    );
                    sumi = _mm256_dpwssd_epi32(sumi, p16, _mm256_shuffle_epi8(scales, *pick));
                }
                acc[r] =
                    _mm256_fmadd_ps(_mm256_broadcastss_ps(dd), _mm256_cvtepi32_ps(sumi), acc[r]);
            }
        }
        std::array::from_fn(|r| hsum_ps(acc[r]) - hsum_ps128(acc_min[r]))
    }
}

/// The block loop of the N-row kernels whose weights become unsigned bytes `u = w + c` for
/// `vpdpbusd`: `act(b)` gives activation block b's 32 bytes and scale, `weights(x)` the
/// unsigned bytes and scale of the weight block at `x` (blocks of `wb` bytes). Each block's
/// Σ w·y is `vpdpbusd(u, y)` less c · Σy per lane, computed once per block for the N rows.
///
/// # Safety
/// The features must be available; `act` and `weights` must read inside block b < `blocks` of
/// the activation and of every row.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn offset_rows<const N: usize>(
    w: [&[u8]; N],
    blocks: usize,
    wb: usize,
    c: u8,
    act: impl Fn(usize) -> (__m256i, f32),
    weights: impl Fn(*const u8) -> (__m256i, f32),
) -> [f32; N] {
    // SAFETY: the caller's contract.
    unsafe {
        let cv = _mm256_set1_epi8(c as i8);
        let zero = _mm256_setzero_si256();
        let mut acc = [_mm256_setzero_ps(); N];
        for blk in 0..blocks {
            let (yv, yd) = act(blk);
            let neg = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, cv, yv));
            for r in 0..N {
                let (u, wd) = weights(w[r].as_ptr().add(blk * wb));
                let s = _mm256_dpbusd_epi32(neg, u, yv);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wd * yd), _mm256_cvtepi32_ps(s), acc[r]);
            }
        }
        std::array::from_fn(|r| hsum_ps(acc[r]))
    }
}

/// N MXFP4 rows · one Q8_0 row (its blocks' scales appended as f32, as [`dot_mxfp4`]), AVX-512
/// VNNI ([`offset_rows`] with c = 12). Each weight block's 16 bytes are broadcast to both
/// halves, one variable shift and mask give the low nibbles in one half and the high in the
/// other, and one `pshufb` looks up E2M1 + 12.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn mxfp4_rows_vnni<const N: usize>(w: [&[u8]; N], a: &[u8]) -> [f32; N] {
    let blocks = common_blocks(&w, a, MXFP4_BYTES, Q8_0_BYTES + 4);
    let scales = &a[blocks * Q8_0_BYTES..];
    debug_assert!(scales.len() >= 4 * blocks, "activation scales appended");
    let mut lut = [0i8; 16];
    for (l, k) in lut.iter_mut().zip(KVALUES_MXFP4) {
        *l = k + 12;
    }
    // SAFETY: block b < blocks lies inside every row (17 bytes); activation block b (34
    // bytes) and its f32 scale at 4b of `scales` lie inside `a` (blocks counts 38 bytes per
    // block); the features are enabled.
    unsafe {
        let lut = _mm256_broadcastsi128_si256(_mm_loadu_si128(lut.as_ptr().cast()));
        let shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
        let m4 = _mm256_set1_epi8(0x0F);
        let (ap, sp) = (a.as_ptr(), scales.as_ptr());
        offset_rows(
            w,
            blocks,
            MXFP4_BYTES,
            12,
            |b| {
                (
                    load32(ap.add(b * Q8_0_BYTES + 2)),
                    sp.add(4 * b).cast::<f32>().read_unaligned(),
                )
            },
            |x| {
                let q = _mm256_broadcastsi128_si256(_mm_loadu_si128(x.add(1).cast()));
                let idx = _mm256_and_si256(_mm256_srlv_epi32(q, shift), m4);
                (_mm256_shuffle_epi8(lut, idx), E8M0_HALF[usize::from(*x)])
            },
        )
    }
}

/// N Q8_0 rows · one Q8_0 row, AVX-512 VNNI ([`offset_rows`] with c = 128: each weight byte
/// flipped to w + 128).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0_rows_vnni<const N: usize>(w: [&[u8]; N], a: &[u8]) -> [f32; N] {
    let blocks = common_blocks(&w, a, Q8_0_BYTES, Q8_0_BYTES);
    // SAFETY: block b < blocks lies inside every row and inside `a`, each 34 bytes (2 + 32);
    // the features are enabled.
    unsafe {
        let flip = _mm256_set1_epi8(i8::MIN);
        let ap = a.as_ptr();
        offset_rows(
            w,
            blocks,
            Q8_0_BYTES,
            128,
            |b| {
                let y = ap.add(b * Q8_0_BYTES);
                (load32(y.add(2)), f16_ptr(y))
            },
            |x| (_mm256_xor_si256(load32(x.add(2)), flip), f16_ptr(x)),
        )
    }
}

/// N Q6_K rows · one Q8_K row, AVX-512 VNNI: `vpdpbusd` of the 6-bit values (0..64) with
/// the activation, each pair of 32-value groups packed to i16 and scaled by `vpdpwssd` (as
/// [`q4_k_rows_vnni`]); the -32 offset taken off once per block as 32 · Σ scale · `bsums` (the
/// activation's 16-value sums), not per product. The activation's runs, `bsums` and scale are
/// loaded once per block for the N rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q6_k_rows_vnni<const N: usize>(w: [&[u8]; N], a: &[u8]) -> [f32; N] {
    let blocks = common_blocks(&w, a, Q6_K_BYTES, Q8_K_BYTES);
    // SAFETY: block b < blocks lies inside every row and inside `a`; within a block the loads
    // stay inside its 210 (weight: ql 0..128, qh 128..192, scales 192..208, d 208..210) and
    // 292 (activation) bytes; the features are enabled.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let m3 = _mm256_set1_epi8(0x03);
        let m30 = _mm256_set1_epi8(0x30);
        let zero = _mm256_setzero_si256();
        // For groups (2p, 2p + 1) of a chunk, packed: the low half's i16 lanes take scales 4p
        // and 4p + 2 four times each (the groups' first 16 values), the high half's 4p + 1
        // and 4p + 3 (their last 16), from the chunk's 8 scales as i16 in both halves.
        let pick: [__m256i; 2] =
            std::array::from_fn(|p| word_pattern([4 * p, 4 * p + 2], [4 * p + 1, 4 * p + 3]));
        let mut acc = [_mm256_setzero_ps(); N];
        for blk in 0..blocks {
            let y = a.as_ptr().add(blk * Q8_K_BYTES);
            let yd = y.cast::<f32>().read_unaligned();
            let bsums = load32(y.add(260));
            let q8: [__m256i; 8] = std::array::from_fn(|i| load32(y.add(4 + 32 * i)));
            for r in 0..N {
                let x = w[r].as_ptr().add(blk * Q6_K_BYTES);
                let sc = _mm_loadu_si128(x.add(192).cast());
                // 32 · Σ_k scale_k · bsums_k, in 8 lanes.
                let offset =
                    _mm256_slli_epi32(_mm256_madd_epi16(_mm256_cvtepi8_epi16(sc), bsums), 5);
                let mut sumi = _mm256_sub_epi32(zero, offset);
                let chunk_scales = [sc, _mm_srli_si128(sc, 8)];
                for (c, sc) in chunk_scales.into_iter().enumerate() {
                    let scales = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc));
                    let l1 = load32(x.add(64 * c));
                    let l2 = load32(x.add(64 * c + 32));
                    let h = load32(x.add(128 + 32 * c));
                    let h2 = _mm256_srli_epi16(h, 2);
                    let groups = [
                        _mm256_or_si256(
                            _mm256_and_si256(l1, m4),
                            _mm256_slli_epi16(_mm256_and_si256(h, m3), 4),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(l2, m4),
                            _mm256_slli_epi16(_mm256_and_si256(h2, m3), 4),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                            _mm256_and_si256(h, m30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(l2, 4), m4),
                            _mm256_and_si256(h2, m30),
                        ),
                    ];
                    for (p, pick) in pick.iter().enumerate() {
                        let p16 = _mm256_packs_epi32(
                            _mm256_dpbusd_epi32(zero, groups[2 * p], q8[4 * c + 2 * p]),
                            _mm256_dpbusd_epi32(zero, groups[2 * p + 1], q8[4 * c + 2 * p + 1]),
                        );
                        sumi = _mm256_dpwssd_epi32(sumi, p16, _mm256_shuffle_epi8(scales, *pick));
                    }
                }
                let d = _mm256_set1_ps(yd * f16_ptr(x.add(208)));
                acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[r]);
            }
        }
        std::array::from_fn(|r| hsum_ps(acc[r]))
    }
}
