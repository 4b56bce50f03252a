//! Row dot products of one weight row with one activation row, per storage type and
//! instruction set, over raw ggml block bytes.
//!
//! Activations are `f32` for F32/F16/BF16 weights and quantized the way ggml does for the
//! others ([`act_dtype`]): Q8_0 for Q8_0 and MXFP4, Q8_K for Q4_K and Q6_K. Every integer part
//! is exact; only the order of float summation differs between paths and from ggml's scalar
//! reference (`ggml_vec_dot_*_generic`), which [`scalar`] mirrors.
//!
//! Kernels take whole rows as byte slices and walk them with `chunks_exact`, so a kernel never
//! reads outside its slices whatever their lengths; [`DotKernel::dot`] checks the lengths.

use membound_spec::DType;

use crate::{CpuError, Isa};

mod scalar;

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
pub(crate) mod arm;

/// The storage types the GEMV/GEMM kernels accept as weights.
pub const SUPPORTED_DTYPES: &[DType] = &[
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q5_0,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::MXFP4,
];

/// The type activations take for a dot with `weight`: `F32` for float weights, else ggml's
/// `vec_dot_type` (Q8_0 for Q8_0, Q5_0 and MXFP4, Q8_K for Q4_K, Q5_K and Q6_K). `None` when
/// unsupported.
pub fn act_dtype(weight: DType) -> Option<DType> {
    match weight {
        DType::F32 | DType::F16 | DType::BF16 => Some(DType::F32),
        DType::Q8_0 | DType::Q5_0 | DType::MXFP4 => Some(DType::Q8_0),
        DType::Q4_K | DType::Q5_K | DType::Q6_K => Some(DType::Q8_K),
        _ => None,
    }
}

/// A dot kernel: `(weight row bytes, activation row bytes) -> dot`. Unsafe only because a
/// SIMD kernel needs its instruction set, which [`DotKernel::new`] checks.
type DotFn = unsafe fn(&[u8], &[u8]) -> f32;

/// A four-row kernel: the dots of four weight rows (of one length) with one activation row,
/// each activation block loaded once for the four. Unsafe as [`DotFn`].
type Dot4Fn = unsafe fn([&[u8]; 4], &[u8]) -> [f32; 4];

/// One row-dot kernel, chosen once for a weight type and an instruction set.
#[derive(Clone, Copy)]
pub struct DotKernel {
    dtype: DType,
    act: DType,
    isa: Isa,
    f: DotFn,
    f4: Option<Dot4Fn>,
    act_scales: bool,
}

impl std::fmt::Debug for DotKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DotKernel")
            .field("dtype", &self.dtype)
            .field("act", &self.act)
            .field("isa", &self.isa)
            .finish()
    }
}

impl DotKernel {
    /// The kernel for `dtype` weights on `isa`; errors when the type is unsupported or this
    /// CPU lacks the instruction set.
    pub fn new(dtype: DType, isa: Isa) -> Result<Self, CpuError> {
        let act = act_dtype(dtype).ok_or(CpuError::Unsupported(dtype))?;
        if !isa.is_available() {
            return Err(CpuError::IsaUnavailable(isa));
        }
        let f = match isa {
            Isa::Scalar => scalar_fn(dtype),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86_fn(dtype),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86_vnni_fn(dtype),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => arm_fn(dtype, false),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDotprod => arm_fn(dtype, true),
            #[allow(unreachable_patterns)]
            _ => return Err(CpuError::IsaUnavailable(isa)),
        };
        // The x86 MXFP4 kernels read each activation block's scale as an f32 appended after
        // the blocks (converted once per activation, not once per weight row).
        #[cfg(target_arch = "x86_64")]
        let act_scales = matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) && dtype == DType::MXFP4;
        #[cfg(not(target_arch = "x86_64"))]
        let act_scales = false;
        #[cfg(target_arch = "x86_64")]
        let f4 = match isa {
            Isa::Avx512Vnni => x86_vnni_fn4(dtype),
            _ => None,
        };
        #[cfg(not(target_arch = "x86_64"))]
        let f4 = None;
        Ok(Self {
            dtype,
            act,
            isa,
            f,
            f4,
            act_scales,
        })
    }

    /// Whether this kernel's activations carry, after their Q8_0 blocks, each block's scale as
    /// an f32 ([`DotKernel::extend_act`]).
    pub(crate) fn act_scales(&self) -> bool {
        self.act_scales
    }

    /// Appends each Q8_0 block's scale of `act[start..]` (the blocks' bytes) as a little-endian
    /// f32: the activation layout of a kernel with [`DotKernel::act_scales`].
    pub(crate) fn extend_act(act: &mut Vec<u8>, start: usize) {
        let blocks = (act.len() - start) / Q8_0_BYTES;
        act.reserve(4 * blocks);
        for b in 0..blocks {
            let at = start + b * Q8_0_BYTES;
            let d = half::f16::from_le_bytes([act[at], act[at + 1]]);
            act.extend_from_slice(&d.to_f32().to_le_bytes());
        }
    }

    /// The weight type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The activation type this kernel reads ([`act_dtype`]).
    pub fn act_dtype(&self) -> DType {
        self.act
    }

    /// The instruction set.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Bytes of one weight row of `cols` values; `None` when `cols` is not a whole number of
    /// blocks.
    pub fn weight_row_bytes(&self, cols: usize) -> Option<usize> {
        row_bytes(self.dtype, cols)
    }

    /// Bytes of one activation row of `cols` values.
    pub fn act_row_bytes(&self, cols: usize) -> Option<usize> {
        row_bytes(self.act, cols)
    }

    /// The dot of one weight row with one activation row of `cols` values, lengths checked.
    pub fn dot(&self, cols: usize, w_row: &[u8], act_row: &[u8]) -> Result<f32, CpuError> {
        let act = self.checked_act(cols, &[w_row], act_row)?;
        Ok(self.dot_unchecked(w_row, &act))
    }

    /// `act_row` for the kernels after checking it and `w_rows` against `cols` values: itself,
    /// or a copy with its blocks' scales appended for a kernel with [`DotKernel::act_scales`].
    fn checked_act<'a>(
        &self,
        cols: usize,
        w_rows: &[&[u8]],
        act_row: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, CpuError> {
        let w_bytes = self
            .weight_row_bytes(cols)
            .ok_or(CpuError::NotBlockMultiple {
                dtype: self.dtype,
                cols,
            })?;
        let a_bytes = self.act_row_bytes(cols).ok_or(CpuError::NotBlockMultiple {
            dtype: self.act,
            cols,
        })?;
        for w in w_rows {
            check_len("weight row", w_bytes, w.len())?;
        }
        check_len("activation row", a_bytes, act_row.len())?;
        Ok(if self.act_scales {
            let mut ext = act_row.to_vec();
            Self::extend_act(&mut ext, 0);
            ext.into()
        } else {
            act_row.into()
        })
    }

    /// The dot without length checks: rows of the wrong length give a wrong value (the kernels
    /// stop at the shorter row) but never read out of bounds.
    #[inline]
    pub(crate) fn dot_unchecked(&self, w_row: &[u8], act_row: &[u8]) -> f32 {
        // SAFETY: `new` checked that this CPU supports `self.isa`, the only precondition of
        // the kernels; they index only within their slices.
        unsafe { (self.f)(w_row, act_row) }
    }
}

impl DotKernel {
    /// The dots of four weight rows with one activation row, without length checks (as
    /// [`DotKernel::dot_unchecked`]): the four-row kernel where this type and instruction set
    /// have one, else four single dots.
    #[inline]
    pub(crate) fn dot4_unchecked(&self, w_rows: [&[u8]; 4], act_row: &[u8]) -> [f32; 4] {
        match self.f4 {
            // SAFETY: as `dot_unchecked`: `new` checked the instruction set; the four-row
            // kernels index only within their slices.
            Some(f4) => unsafe { f4(w_rows, act_row) },
            None => w_rows.map(|w| self.dot_unchecked(w, act_row)),
        }
    }

    /// Whether this kernel has a four-row form (else [`DotKernel::dot4`] makes four single
    /// dots).
    pub fn has_four_row_form(&self) -> bool {
        self.f4.is_some()
    }

    /// `out[i]` = row `i` of `w` (consecutive rows of `row_bytes`) · `act_row`, without length
    /// checks; `w` holds `out.len()` rows. The four-row kernel takes one row from each quarter
    /// of the run, so that it reads four long sequential streams: four adjacent rows would be
    /// four streams of one row each, too short for the hardware prefetcher (a Q4_K GEMV from
    /// DRAM ran at 8 GB/s that way, 20 in quarters, on one Zen 4 core).
    #[inline]
    pub(crate) fn dot_rows_unchecked(
        &self,
        w: &[u8],
        row_bytes: usize,
        act_row: &[u8],
        out: &mut [f32],
    ) {
        let rb = row_bytes.max(1);
        let row = |i: usize| w.get(i * rb..(i + 1) * rb).unwrap_or(&[]);
        for rows in spread_rows::<4>(out.len(), self.f4.is_some()) {
            match rows {
                RowGroup::Spread(four) => {
                    let d = self.dot4_unchecked(four.map(row), act_row);
                    for (i, v) in four.into_iter().zip(d) {
                        out[i] = v;
                    }
                }
                RowGroup::One(i) => out[i] = self.dot_unchecked(row(i), act_row),
            }
        }
    }

    /// The four-row dot with lengths checked as [`DotKernel::dot`] (`act_row` in the
    /// activation type; this function appends the MXFP4 kernels' scales itself).
    pub fn dot4(
        &self,
        cols: usize,
        w_rows: [&[u8]; 4],
        act_row: &[u8],
    ) -> Result<[f32; 4], CpuError> {
        let act = self.checked_act(cols, &w_rows, act_row)?;
        Ok(self.dot4_unchecked(w_rows, &act))
    }
}

/// Rows for one kernel call ([`spread_rows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowGroup<const K: usize> {
    /// One row from each of the run's K parts.
    Spread([usize; K]),
    /// One row alone.
    One(usize),
}

/// Rows `0..n` in the order the four-row kernels take them: with `spread`, groups of one row
/// from each of K equal parts of the run (K sequential streams; see
/// [`DotKernel::dot_rows_unchecked`]), then the rows left over one by one; without, every row
/// alone.
pub(crate) fn spread_rows<const K: usize>(
    n: usize,
    spread: bool,
) -> impl Iterator<Item = RowGroup<K>> {
    let q = if spread { n / K } else { 0 };
    (0..q)
        .map(move |i| RowGroup::Spread(std::array::from_fn(|k| k * q + i)))
        .chain((K * q..n).map(RowGroup::One))
}

/// Bytes of `cols` values of `dtype`, `None` when not a whole number of blocks.
pub(crate) fn row_bytes(dtype: DType, cols: usize) -> Option<usize> {
    dtype.bytes_for(cols as u64).map(|b| b as usize)
}

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), CpuError> {
    if expected == got {
        Ok(())
    } else {
        Err(CpuError::Length {
            what,
            expected,
            got,
        })
    }
}

fn scalar_fn(dtype: DType) -> DotFn {
    match dtype {
        DType::F32 => scalar::dot_f32,
        DType::F16 => scalar::dot_f16,
        DType::BF16 => scalar::dot_bf16,
        DType::Q8_0 => scalar::dot_q8_0,
        DType::Q5_0 => scalar::dot_q5_0,
        DType::Q4_K => scalar::dot_q4_k,
        DType::Q5_K => scalar::dot_q5_k,
        DType::Q6_K => scalar::dot_q6_k,
        DType::MXFP4 => scalar::dot_mxfp4,
        _ => unreachable!("act_dtype admits only the types above"),
    }
}

#[cfg(target_arch = "x86_64")]
fn x86_fn(dtype: DType) -> DotFn {
    match dtype {
        DType::F32 => x86::dot_f32,
        DType::F16 => x86::dot_f16,
        DType::BF16 => x86::dot_bf16,
        DType::Q8_0 => x86::dot_q8_0,
        DType::Q5_0 => scalar::dot_q5_0,
        DType::Q4_K => x86::dot_q4_k,
        DType::Q5_K => scalar::dot_q5_k,
        DType::Q6_K => x86::dot_q6_k,
        DType::MXFP4 => x86::dot_mxfp4,
        _ => unreachable!("act_dtype admits only the types above"),
    }
}

/// The AVX-512 VNNI path: its Q8_0, Q4_K, Q6_K and MXFP4 dots (the single-row forms of the
/// four-row kernels), the AVX2 kernel of every other type.
#[cfg(target_arch = "x86_64")]
fn x86_vnni_fn(dtype: DType) -> DotFn {
    match dtype {
        DType::Q8_0 => x86::dot_q8_0_vnni,
        DType::Q4_K => x86::dot_q4_k_vnni,
        DType::Q6_K => x86::dot_q6_k_vnni,
        DType::MXFP4 => x86::dot_mxfp4_vnni,
        other => x86_fn(other),
    }
}

/// The AVX-512 VNNI path's four-row kernels.
#[cfg(target_arch = "x86_64")]
fn x86_vnni_fn4(dtype: DType) -> Option<Dot4Fn> {
    match dtype {
        DType::Q8_0 => Some(x86::dot4_q8_0_vnni),
        DType::Q4_K => Some(x86::dot4_q4_k_vnni),
        DType::Q6_K => Some(x86::dot4_q6_k_vnni),
        DType::MXFP4 => Some(x86::dot4_mxfp4_vnni),
        _ => None,
    }
}

#[cfg(target_arch = "aarch64")]
fn arm_fn(dtype: DType, dotprod: bool) -> DotFn {
    match (dtype, dotprod) {
        (DType::F32, _) => arm::dot_f32,
        (DType::F16, _) => arm::dot_f16,
        (DType::BF16, _) => arm::dot_bf16,
        (DType::Q8_0, false) => arm::dot_q8_0,
        (DType::Q8_0, true) => arm::dot_q8_0_dotprod,
        (DType::Q5_0, _) => scalar::dot_q5_0,
        (DType::Q4_K, false) => arm::dot_q4_k,
        (DType::Q4_K, true) => arm::dot_q4_k_dotprod,
        (DType::Q5_K, _) => scalar::dot_q5_k,
        (DType::Q6_K, false) => arm::dot_q6_k,
        (DType::Q6_K, true) => arm::dot_q6_k_dotprod,
        (DType::MXFP4, false) => arm::dot_mxfp4,
        (DType::MXFP4, true) => arm::dot_mxfp4_dotprod,
        _ => unreachable!("act_dtype admits only the types above"),
    }
}

// ---- block layouts (byte offsets, ggml-common.h) and helpers every path shares ----

/// Q8_0 block: `d` f16 at 0, 32 × i8 at 2.
pub(crate) const Q8_0_BYTES: usize = 34;
/// Q5_0 block: `d` f16 at 0, `qh` (fifth bits) at 2, 16 nibble bytes at 6.
pub(crate) const Q5_0_BYTES: usize = 22;
/// Q4_K block: `d` at 0, `dmin` at 2, 12 scale bytes at 4, 128 nibble bytes at 16.
pub(crate) const Q4_K_BYTES: usize = 144;
/// Q5_K block: `d` at 0, `dmin` at 2, 12 scale bytes at 4, 32 high-bit bytes at 16, 128
/// nibble bytes at 48.
pub(crate) const Q5_K_BYTES: usize = 176;
/// Q6_K block: `ql` 128 bytes at 0, `qh` 64 at 128, 16 × i8 scales at 192, `d` at 208.
pub(crate) const Q6_K_BYTES: usize = 210;
/// Q8_K block: `d` f32 at 0, 256 × i8 at 4, 16 × i16 `bsums` at 260.
pub(crate) const Q8_K_BYTES: usize = 292;
/// MXFP4 block: E8M0 exponent at 0, 16 nibble bytes at 1.
pub(crate) const MXFP4_BYTES: usize = 17;

/// E2M1 values doubled (ggml's `kvalues_mxfp4`); the block scale is halved to match.
pub(crate) const KVALUES_MXFP4: [i8; 16] =
    [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// The f16 stored little-endian at `b[off..off + 2]`, as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// The f32 stored little-endian at `b[off..off + 4]`.
#[inline(always)]
pub(crate) fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// ggml's `GGML_E8M0_TO_FP32_HALF`: `2^(e - 128)`, exact for every byte.
#[inline(always)]
pub(crate) const fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        ((e - 1) as u32) << 23
    };
    f32::from_bits(bits)
}

/// The 8 six-bit scales (bytes 0..8) and 8 mins (bytes 8..16) of a Q4_K block from its 12
/// packed bytes, unpacked with 32-bit masks as ggml's dot kernels do (same values as
/// `get_scale_min_k4`).
#[inline(always)]
pub(crate) fn q4k_scales_mins(q: &[u8]) -> [u8; 16] {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (u0, u1, u2) = (word(0), word(1), word(2));
    let scales_lo = u0 & KMASK1;
    let scales_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let mins_lo = u1 & KMASK1;
    let mins_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    let mut out = [0u8; 16];
    for (i, w) in [scales_lo, scales_hi, mins_lo, mins_hi]
        .into_iter()
        .enumerate()
    {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// `Σ bsums[j] · mins[j / 2]` over a Q8_K block's 16 group sums: the min correction of Q4_K.
#[inline(always)]
pub(crate) fn q4k_min_sum(act_block: &[u8], mins: &[u8]) -> i32 {
    (0..16)
        .map(|j| {
            let o = 260 + 2 * j;
            i32::from(i16::from_le_bytes([act_block[o], act_block[o + 1]])) * i32::from(mins[j / 2])
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4k_unpack_matches_get_scale_min_k4() {
        // ggml's per-index form, written out independently of the 32-bit mask form.
        let mut rng = membound_quant::data::SplitMix64::new(5);
        for _ in 0..200 {
            let q: Vec<u8> = (0..12).map(|_| rng.next_u64() as u8).collect();
            let sm = q4k_scales_mins(&q);
            for j in 0..8 {
                let (sc, m) = if j < 4 {
                    (q[j] & 63, q[j + 4] & 63)
                } else {
                    (
                        (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
                        (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
                    )
                };
                assert_eq!((sm[j], sm[8 + j]), (sc, m), "j={j} q={q:?}");
            }
        }
    }

    /// Every row once; each position of a group walks its part in order, one row per call.
    fn check_spread<const K: usize>() {
        for n in 0..40 {
            for spread in [false, true] {
                let mut seen = vec![0; n];
                let groups: Vec<RowGroup<K>> = spread_rows::<K>(n, spread).collect();
                for g in &groups {
                    match *g {
                        RowGroup::Spread(rows) => rows.iter().for_each(|&r| seen[r] += 1),
                        RowGroup::One(r) => seen[r] += 1,
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "K={K} n={n}: {seen:?}");
                let spreads: Vec<[usize; K]> = groups
                    .iter()
                    .filter_map(|g| match g {
                        RowGroup::Spread(r) => Some(*r),
                        RowGroup::One(_) => None,
                    })
                    .collect();
                assert_eq!(spreads.len(), if spread { n / K } else { 0 });
                for w in spreads.windows(2) {
                    assert!((0..K).all(|k| w[1][k] == w[0][k] + 1), "K={K} n={n}: {w:?}");
                }
            }
        }
    }

    #[test]
    fn spread_rows_visit_every_row_once_in_k_streams() {
        check_spread::<2>();
        check_spread::<4>();
    }

    #[test]
    fn e8m0_half_is_a_power_of_two() {
        for e in 0..=255u8 {
            assert_eq!(
                f64::from(e8m0_half(e)),
                2f64.powi(i32::from(e) - 128),
                "e={e}"
            );
        }
    }

    #[test]
    fn layouts_match_block_structs() {
        use membound_quant::blocks::*;
        assert_eq!(size_of::<BlockQ8_0>(), Q8_0_BYTES);
        assert_eq!(size_of::<BlockQ5_0>(), Q5_0_BYTES);
        assert_eq!(std::mem::offset_of!(BlockQ5_0, qs), 6);
        assert_eq!(size_of::<BlockQ4K>(), Q4_K_BYTES);
        assert_eq!(size_of::<BlockQ5K>(), Q5_K_BYTES);
        assert_eq!(std::mem::offset_of!(BlockQ5K, qh), 16);
        assert_eq!(std::mem::offset_of!(BlockQ5K, qs), 48);
        assert_eq!(size_of::<BlockQ6K>(), Q6_K_BYTES);
        assert_eq!(size_of::<BlockQ8K>(), Q8_K_BYTES);
        assert_eq!(size_of::<BlockMxfp4>(), MXFP4_BYTES);
        assert_eq!(std::mem::offset_of!(BlockQ4K, qs), 16);
        assert_eq!(std::mem::offset_of!(BlockQ6K, scales), 192);
        assert_eq!(std::mem::offset_of!(BlockQ6K, d), 208);
        assert_eq!(std::mem::offset_of!(BlockQ8K, bsums), 260);
        for d in SUPPORTED_DTYPES {
            assert!(act_dtype(*d).is_some());
        }
    }
}
