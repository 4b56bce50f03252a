//! Decode attention on the CPU — one new token's queries against a KV cache in any layout of
//! `membound_spec::attention` — the reference of the CUDA attention kernels and the CPU backend
//! of the attention suite.
//!
//! [`KvCacheBuf`] holds the cache head-major (`[kv_heads][tokens][row]`, rows in F32, F16, BF16
//! or ggml Q8_0). [`attend`] splits the attended tokens of each cached head into chunks across
//! the rayon pool (flash-decoding's split-K): a chunk converts each K row once for all the query
//! heads of its group, keeps an online softmax per head, and the chunks' partial results are
//! merged in order. On the AVX-512 path (`avx512`) a chunk is three passes: every score straight
//! from the cache rows (converted in registers, 16 accumulators of heads × tokens), one softmax
//! per head over the chunk, then V. Elsewhere, tiles of 16 tokens converted to f32 with an
//! online softmax per tile: on AVX2 the scores eight tokens at a time and V 64 accumulator values
//! at a time in registers (intrinsics), else through a transposed K tile (groups of four heads
//! or more) or one dot product per token; the softmax's exp vectorised (`exp_tile`).
//! [`reference_attend`] is the naive f64 softmax(q·Kᵀ·scale)·V.

use half::{bf16, f16};
use membound_quant::ops;
use membound_spec::DType;
use membound_spec::attention::AttnShape;
use rayon::ThreadPool;
use rayon::prelude::*;

use crate::CpuError;
use crate::scratch::{Reuse, zeroed};

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Distinct rows a generated cache cycles through (a prime).
pub const GENERATED_ROWS: usize = 1021;

/// A KV cache of one layer for up to `tokens` tokens.
#[derive(Debug, Clone)]
pub struct KvCacheBuf {
    shape: AttnShape,
    tokens: usize,
    k: Vec<u8>,
    v: Vec<u8>,
    /// What [`attend`] and [`KvCacheBuf::write_token`] reuse from step to step.
    scratch: Reuse<ScratchBufs>,
}

/// What [`attend`] and [`KvCacheBuf::write_token`] reuse from step to step, so a warm decode
/// step allocates nothing: the chunks' partial results, each pool thread's tile of f32 rows,
/// the merge's accumulator and one encoded row.
#[derive(Debug, Default)]
struct ScratchBufs {
    /// Per task (cached head, chunk), per query head of the group: m, l, then d_v values.
    partials: Vec<f32>,
    /// One per pool thread (a task never runs inside another on its thread).
    tiles: Vec<std::sync::Mutex<Tiles>>,
    /// One head's merged accumulator.
    total: Vec<f32>,
    /// An encoded row of `write_token`.
    row: Vec<u8>,
}

/// A chunk's working rows: K (and V) rows as f32 of one tile, and the group's scores (of one
/// tile, or of the whole chunk on the AVX-512 path).
#[derive(Debug, Default)]
struct Tiles {
    kt: Vec<f32>,
    /// The K tile transposed: value `d` of the tile's tokens, then value `d + 1`, ...
    /// ([`TILE_TOKENS`] floats each, zeros past the tile's last token).
    ktt: Vec<f32>,
    vt: Vec<f32>,
    scores: Vec<f32>,
}

fn err(s: String) -> CpuError {
    CpuError::Shape(s)
}

/// Rows of `values` values as `dtype` bytes (F32 as little-endian bytes).
fn encode(dtype: DType, values: &[f32]) -> Result<Vec<u8>, CpuError> {
    Ok(match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 | DType::BF16 | DType::Q8_0 => ops::quantize(dtype, values)?,
        other => return Err(CpuError::Unsupported(other)),
    })
}

impl KvCacheBuf {
    /// A cache from f32 rows: `k` is `kv_heads × tokens × d_k` values, `v` `kv_heads × tokens ×
    /// d_v` (empty when V is in K).
    pub fn from_f32(
        shape: &AttnShape,
        tokens: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<Self, CpuError> {
        shape.validate().map_err(err)?;
        let (h, dk, dv) = (shape.kv_heads, shape.d_k, shape.d_v);
        if k.len() != h * tokens * dk || (!shape.v_in_k && v.len() != h * tokens * dv) {
            return Err(err(format!(
                "cache of {} K and {} V values for {tokens} tokens",
                k.len(),
                v.len()
            )));
        }
        Ok(KvCacheBuf {
            shape: shape.clone(),
            tokens,
            k: encode(shape.dtype, k)?,
            v: if shape.v_in_k {
                Vec::new()
            } else {
                encode(shape.dtype, v)?
            },
            scratch: Reuse::default(),
        })
    }

    /// A random cache of `tokens` tokens, fast at any depth: row `i` of each cache is distinct
    /// row `i mod` [`GENERATED_ROWS`] of a generated set.
    pub fn generate(shape: &AttnShape, tokens: usize, seed: u64) -> Result<Self, CpuError> {
        shape.validate().map_err(err)?;
        let rows = shape.kv_heads * tokens;
        let make = |d: usize, s: u64| -> Result<Vec<u8>, CpuError> {
            let pool_rows = GENERATED_ROWS.min(rows.max(1));
            let pool = encode(
                shape.dtype,
                &membound_quant::data::normal_f32(s, pool_rows * d, 1.0),
            )?;
            let total = rows * (pool.len() / pool_rows);
            let mut out = Vec::with_capacity(total);
            while out.len() < total {
                let take = (total - out.len()).min(pool.len());
                out.extend_from_slice(&pool[..take]);
            }
            Ok(out)
        };
        Ok(KvCacheBuf {
            shape: shape.clone(),
            tokens,
            k: make(shape.d_k, seed)?,
            v: if shape.v_in_k {
                Vec::new()
            } else {
                make(shape.d_v, seed ^ 0x5a5a)?
            },
            scratch: Reuse::default(),
        })
    }

    /// Writes token `t`'s rows: `k` holds `kv_heads × d_k` values, `v` `kv_heads × d_v` (unused
    /// when V is in K), each row stored as the cache's type (a decode step's append).
    pub fn write_token(&mut self, t: usize, k: &[f32], v: &[f32]) -> Result<(), CpuError> {
        let s = &self.shape;
        let (kb, vb) = s.row_bytes();
        crate::dot::check_len("K rows", s.kv_heads * s.d_k, k.len())?;
        if !s.v_in_k {
            crate::dot::check_len("V rows", s.kv_heads * s.d_v, v.len())?;
        }
        if t >= self.tokens {
            return Err(err(format!(
                "token {t} of a cache of {} tokens",
                self.tokens
            )));
        }
        let mut scratch = self.scratch.lock();
        let row = &mut scratch.row;
        for h in 0..s.kv_heads {
            let at = (h * self.tokens + t) * kb;
            row.clear();
            ops::quantize_extend(s.dtype, &k[h * s.d_k..(h + 1) * s.d_k], row)?;
            self.k[at..at + kb].copy_from_slice(row);
            if !s.v_in_k {
                let at = (h * self.tokens + t) * vb;
                row.clear();
                ops::quantize_extend(s.dtype, &v[h * s.d_v..(h + 1) * s.d_v], row)?;
                self.v[at..at + vb].copy_from_slice(row);
            }
        }
        Ok(())
    }

    /// The shape.
    pub fn shape(&self) -> &AttnShape {
        &self.shape
    }

    /// Tokens held.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// The K cache bytes (`[kv_heads][tokens][row]`).
    pub fn k_bytes(&self) -> &[u8] {
        &self.k
    }

    /// The V cache bytes (empty when V is in K).
    pub fn v_bytes(&self) -> &[u8] {
        &self.v
    }

    /// K row of cached head `h`, token `t`.
    pub fn k_row(&self, h: usize, t: usize) -> &[u8] {
        let (kb, _) = self.shape.row_bytes();
        let at = (h * self.tokens + t) * kb;
        &self.k[at..at + kb]
    }

    /// V row of cached head `h`, token `t` (the first `d_v` values of the K row when V is in K).
    pub fn v_row(&self, h: usize, t: usize) -> &[u8] {
        let (_, vb) = self.shape.row_bytes();
        if self.shape.v_in_k {
            let n = self
                .shape
                .dtype
                .bytes_for(self.shape.d_v as u64)
                .unwrap_or(0) as usize;
            return &self.k_row(h, t)[..n];
        }
        let at = (h * self.tokens + t) * vb;
        &self.v[at..at + vb]
    }
}

/// Row bytes as f32 values into `out` (its length is the row's values).
fn decode_row(dtype: DType, row: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ => {
            // Q8_0: 34-byte blocks, an f16 scale then 32 int8.
            for (o, b) in out.chunks_exact_mut(32).zip(row.chunks_exact(34)) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                for (v, &q) in o.iter_mut().zip(&b[2..]) {
                    *v = d * f32::from(q as i8);
                }
            }
        }
    }
}

/// Floats of one query head's partial result in a chunk's output: its running max `m`, its
/// sum `l`, then its `d_v` accumulator values.
fn partial_len(d_v: usize) -> usize {
    2 + d_v
}

/// Merges the partial `(m, l, acc)` of a later run into `(tm, tl, tacc)`.
fn merge(tm: &mut f32, tl: &mut f32, tacc: &mut [f32], m: f32, l: f32, acc: &[f32]) {
    let mx = tm.max(m);
    if mx == f32::NEG_INFINITY {
        return;
    }
    let (a, b) = ((*tm - mx).exp(), (m - mx).exp());
    *tl = *tl * a + l * b;
    if acc.is_empty() {
        tacc.iter_mut().for_each(|x| *x *= a);
    } else {
        for (x, y) in tacc.iter_mut().zip(acc) {
            *x = *x * a + y * b;
        }
    }
    *tm = mx;
}

/// Tokens per tile of a chunk: their K (and V) rows are converted to f32 once, scored for
/// every query head of the group, then accumulated head by head (the accumulator stays in L1).
const TILE_TOKENS: usize = 16;

/// `Σ a·b` with sixteen independent accumulators; fused multiply-adds where `FMA`.
#[inline(always)]
fn dot_body<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let mut tail = 0f32;
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        tail += x * y;
    }
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] = if FMA {
                x[i].mul_add(y[i], acc[i])
            } else {
                acc[i] + x[i] * y[i]
            };
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The scores of `H` query heads (`q[j]`, `dk` values each) against a tile's K rows held
/// transposed (`ktt`: [`TILE_TOKENS`] values per dimension), unscaled: one accumulator per
/// head and token summing its products in dimension order, so a tile of tokens is scored as
/// broadcast-multiply-adds across the tokens with no reduction across lanes, and each K value
/// loaded serves all `H` heads.
#[inline(always)]
fn score_tile<const H: usize, const FMA: bool>(
    q: [&[f32]; H],
    ktt: &[f32],
    out: &mut [[f32; TILE_TOKENS]; H],
) {
    let mut acc = [[0f32; TILE_TOKENS]; H];
    for (d, k) in ktt.chunks_exact(TILE_TOKENS).enumerate() {
        for j in 0..H {
            let qd = q[j][d];
            for (a, &kv) in acc[j].iter_mut().zip(k) {
                *a = if FMA {
                    qd.mul_add(kv, *a)
                } else {
                    *a + qd * kv
                };
            }
        }
    }
    *out = acc;
}

/// `x = exp(x)` for a tile's values, in arithmetic the compiler vectorises (libm's `expf` is
/// one call per value): `2^k · e^r` with `k = round(x / ln 2)`, `r = x - k ln 2` (ln 2 in two
/// parts) and Cephes' polynomial for `e^r`, within 1e-7 of `exp` relative (8e-8 measured); `x` is
/// clamped to [-87, 88] (e^-87 ≈ 1.6e-38 stands for anything smaller: the softmax arguments here
/// are `score - max ≤ 0`).
#[inline(always)]
fn exp_tile(x: &mut [f32; TILE_TOKENS]) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    for v in x.iter_mut() {
        let xc = v.clamp(-87.0, 88.0);
        let k = (xc * LOG2E).round();
        let r = k.mul_add(-LN2_LO, k.mul_add(-LN2_HI, xc));
        let mut p = 1.987_569_1e-4f32;
        p = p.mul_add(r, 1.398_199_9e-3);
        p = p.mul_add(r, 8.333_452e-3);
        p = p.mul_add(r, 4.166_579_6e-2);
        p = p.mul_add(r, 1.666_666_5e-1);
        p = p.mul_add(r, 0.5);
        let e = (p * r).mul_add(r, r) + 1.0;
        *v = e * f32::from_bits(((k as i32 + 127) as u32) << 23);
    }
}

/// `acc += Σ_i p[i] · v_i` over a tile's V rows (`vstride` apart), sixteen accumulator values
/// at a time kept in registers across the tile's tokens (rather than loaded and stored once per
/// token); each value's sum in token order, as one `axpy_body` per token would give. Measured
/// on the 2-core Zen 4 VM at 32k (F16): GLM MLA latent -16 %, GQA -7 to -12 % per layer; for
/// one query head per row (expanded MHA) it was ~10 % slower, so that case stays row by row.
#[inline(always)]
fn accumulate_tile<const FMA: bool>(acc: &mut [f32], p: &[f32], vrows: &[f32], vstride: usize) {
    let dv = acc.len();
    let full = dv / 16 * 16;
    for c in (0..full).step_by(16) {
        let mut o = [0f32; 16];
        o.copy_from_slice(&acc[c..c + 16]);
        for (i, &pi) in p.iter().enumerate() {
            let v = &vrows[i * vstride + c..i * vstride + c + 16];
            for (o, &x) in o.iter_mut().zip(v) {
                *o = if FMA { pi.mul_add(x, *o) } else { *o + pi * x };
            }
        }
        acc[c..c + 16].copy_from_slice(&o);
    }
    for (i, &pi) in p.iter().enumerate() {
        let v = &vrows[i * vstride + full..i * vstride + dv];
        axpy_body::<FMA>(&mut acc[full..], pi, v);
    }
}

/// `acc += p · v`.
#[inline(always)]
fn axpy_body<const FMA: bool>(acc: &mut [f32], p: f32, v: &[f32]) {
    for (a, x) in acc.iter_mut().zip(v) {
        *a = if FMA { p.mul_add(*x, *a) } else { *a + p * x };
    }
}

/// The partial softmax of each query head of cached head `h` over tokens `[t0, t1)` into `out`
/// (the group's heads one after the other, [`partial_len`] floats each), through `tiles`.
#[inline(always)]
fn chunk_body<const FMA: bool>(c: Chunk<'_>, tiles: &mut Tiles, out: &mut [f32]) {
    let Chunk {
        cache,
        q,
        h,
        span: (t0, t1),
    } = c;
    let s = &cache.shape;
    let (dk, dv, g) = (s.d_k, s.d_v, s.group());
    for st in out.chunks_exact_mut(partial_len(dv)) {
        st[0] = f32::NEG_INFINITY;
        st[1..].fill(0.0);
    }
    let kt = zeroed(&mut tiles.kt, TILE_TOKENS * dk);
    let ktt = zeroed(&mut tiles.ktt, TILE_TOKENS * dk);
    let vt = zeroed(&mut tiles.vt, if s.v_in_k { 0 } else { TILE_TOKENS * dv });
    let scores = zeroed(&mut tiles.scores, g * TILE_TOKENS);
    // This head's rows, sliced once (not per token: row_bytes is a call per row otherwise).
    let (kb, vb) = s.row_bytes();
    let head_rows = |bytes: &'_ [u8], b: usize| -> std::ops::Range<usize> {
        (h * cache.tokens * b).min(bytes.len())..((h + 1) * cache.tokens * b).min(bytes.len())
    };
    let (krows, vrows_b) = (
        &cache.k[head_rows(&cache.k, kb)],
        &cache.v[head_rows(&cache.v, vb)],
    );
    let mut t = t0;
    while t < t1 {
        let n = (t1 - t).min(TILE_TOKENS);
        for i in 0..n {
            let r = t + i;
            decode_row_simd::<FMA>(
                s.dtype,
                &krows[r * kb..(r + 1) * kb],
                &mut kt[i * dk..(i + 1) * dk],
            );
            if !s.v_in_k {
                decode_row_simd::<FMA>(
                    s.dtype,
                    &vrows_b[r * vb..(r + 1) * vb],
                    &mut vt[i * dv..(i + 1) * dv],
                );
            }
        }
        let (vrows, vstride): (&[f32], usize) = if s.v_in_k { (kt, dk) } else { (vt, dv) };
        // AVX2 (the only x86-64 instantiation with FMA): eight tokens' dot products at once
        // from the row-major tile, their sums gathered across lanes once per eight.
        #[cfg(target_arch = "x86_64")]
        let simd = FMA && avx2::fits(dk, dv);
        #[cfg(not(target_arch = "x86_64"))]
        let simd = false;
        if simd {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: FMA is only instantiated on x86-64 inside `chunk_avx2`, compiled with
            // AVX2, FMA and F16C (detected before it is called); `fits` checked the widths.
            unsafe {
                avx2::score_group(&q[h * g * dk..(h + 1) * g * dk], kt, dk, scores)
            };
        } else if g >= 4 {
            transpose_tile(kt, n, dk, ktt);
            score_group::<FMA>(q, h, g, dk, ktt, scores);
        } else {
            // Few heads per row: the transposition would cost more than it saves.
            for j in 0..g {
                let qh = &q[(h * g + j) * dk..(h * g + j + 1) * dk];
                for i in 0..n {
                    scores[j * TILE_TOKENS + i] = dot_body::<FMA>(qh, &kt[i * dk..(i + 1) * dk]);
                }
            }
        }
        for (j, st) in out.chunks_exact_mut(partial_len(dv)).enumerate() {
            let (ml, acc) = st.split_at_mut(2);
            let mut p = [0f32; TILE_TOKENS];
            p[..n].copy_from_slice(&scores[j * TILE_TOKENS..j * TILE_TOKENS + n]);
            p[..n].iter_mut().for_each(|v| *v *= s.scale);
            let m = p[..n].iter().fold(ml[0], |a, &b| if b > a { b } else { a });
            let a = (ml[0] - m).exp();
            if a != 1.0 {
                acc.iter_mut().for_each(|x| *x *= a);
            }
            ml[1] *= a;
            ml[0] = m;
            p.iter_mut().for_each(|v| *v -= m);
            exp_tile(&mut p);
            ml[1] += p[..n].iter().sum::<f32>();
            if simd {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as for the scores above.
                unsafe {
                    avx2::accumulate(acc, &p[..n], vrows, vstride)
                };
            } else if g > 1 {
                accumulate_tile::<FMA>(acc, &p[..n], vrows, vstride);
            } else {
                // One head per row (expanded MHA): row by row measured faster (Zen 4, 32k).
                for (i, &p) in p[..n].iter().enumerate() {
                    axpy_body::<FMA>(acc, p, &vrows[i * vstride..i * vstride + dv]);
                }
            }
        }
        t += n;
    }
}

/// The attention tile's inner loops in AVX2 intrinsics (x86-64): the group's scores eight
/// tokens at a time from the row-major K tile, and the V accumulation 64 values at a time in
/// registers, without the bounds checks the portable loops pay per token.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::TILE_TOKENS;
    use std::arch::x86_64::*;

    /// Whether rows of `dk` (K) and `dv` (V) values take these kernels: whole 8-value words.
    pub(super) fn fits(dk: usize, dv: usize) -> bool {
        dk.is_multiple_of(8) && dv.is_multiple_of(8) && dk > 0 && dv > 0
    }

    /// The unscaled scores of each query head in `q` (heads of `dk` values) against the
    /// [`TILE_TOKENS`] rows of `kt` (`dk` values each; rows past the tile's tokens hold old
    /// values, whose scores are not used) into `scores` ([`TILE_TOKENS`] per head): for eight
    /// tokens at a time, eight accumulators of eight lanes over the row, then one horizontal
    /// gather of the eight sums. Each score sums its products in lane order (products `c`, `c +
    /// 8`, ... per lane, then the lanes pairwise).
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `kt` holds `TILE_TOKENS * dk` values, `q` a multiple of
    /// `dk`, `scores` `TILE_TOKENS` per head of `q`, and `dk` is a multiple of 8 ([`fits`]).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn score_group(q: &[f32], kt: &[f32], dk: usize, scores: &mut [f32]) {
        let heads = q.len() / dk;
        assert!(kt.len() >= TILE_TOKENS * dk && scores.len() >= heads * TILE_TOKENS);
        let (qp, kp, sp) = (q.as_ptr(), kt.as_ptr(), scores.as_mut_ptr());
        for j in 0..heads {
            for b in 0..TILE_TOKENS / 8 {
                // SAFETY: every load is inside q (head j's dk values) or kt (rows b*8..b*8+8
                // of dk values), every store inside scores (checked above).
                unsafe {
                    let mut acc = [_mm256_setzero_ps(); 8];
                    let rows = kp.add(b * 8 * dk);
                    let mut c = 0;
                    while c < dk {
                        let qv = _mm256_loadu_ps(qp.add(j * dk + c));
                        for (t, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(rows.add(t * dk + c)), *a);
                        }
                        c += 8;
                    }
                    let s01 = _mm256_hadd_ps(acc[0], acc[1]);
                    let s23 = _mm256_hadd_ps(acc[2], acc[3]);
                    let s45 = _mm256_hadd_ps(acc[4], acc[5]);
                    let s67 = _mm256_hadd_ps(acc[6], acc[7]);
                    let s0123 = _mm256_hadd_ps(s01, s23);
                    let s4567 = _mm256_hadd_ps(s45, s67);
                    let lo = _mm256_permute2f128_ps(s0123, s4567, 0x20);
                    let hi = _mm256_permute2f128_ps(s0123, s4567, 0x31);
                    _mm256_storeu_ps(sp.add(j * TILE_TOKENS + b * 8), _mm256_add_ps(lo, hi));
                }
            }
        }
    }

    /// `acc += Σ_i p[i] · v_i` over the V rows `vstride` apart in `vrows`, 64 accumulator
    /// values at a time held in registers across the tokens (then 8 at a time); each value's
    /// sum in token order.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `vrows` holds `p.len()` rows `vstride` apart of at least
    /// `acc.len()` values, a multiple of 8 ([`fits`]).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn accumulate(acc: &mut [f32], p: &[f32], vrows: &[f32], vstride: usize) {
        let dv = acc.len();
        assert!(
            p.is_empty() || vrows.len() >= (p.len() - 1) * vstride + dv,
            "V rows of {dv} values"
        );
        let (ap, vp) = (acc.as_mut_ptr(), vrows.as_ptr());
        let mut c = 0;
        // SAFETY: every access is inside acc (c + 64 <= dv, then c + 8 <= dv) or inside
        // row i of vrows at the same offsets (checked above).
        unsafe {
            while c + 64 <= dv {
                let mut o = [_mm256_setzero_ps(); 8];
                for (k, o) in o.iter_mut().enumerate() {
                    *o = _mm256_loadu_ps(ap.add(c + 8 * k));
                }
                for (i, &pi) in p.iter().enumerate() {
                    let pv = _mm256_set1_ps(pi);
                    let row = vp.add(i * vstride + c);
                    for (k, o) in o.iter_mut().enumerate() {
                        *o = _mm256_fmadd_ps(pv, _mm256_loadu_ps(row.add(8 * k)), *o);
                    }
                }
                for (k, o) in o.iter().enumerate() {
                    _mm256_storeu_ps(ap.add(c + 8 * k), *o);
                }
                c += 64;
            }
            while c < dv {
                let mut o = _mm256_loadu_ps(ap.add(c));
                for (i, &pi) in p.iter().enumerate() {
                    o = _mm256_fmadd_ps(
                        _mm256_set1_ps(pi),
                        _mm256_loadu_ps(vp.add(i * vstride + c)),
                        o,
                    );
                }
                _mm256_storeu_ps(ap.add(c), o);
                c += 8;
            }
        }
    }
}

/// `kt`'s first `n` rows of `dk` values into `ktt` transposed ([`TILE_TOKENS`] values per
/// dimension, zeros past row `n`).
#[inline(always)]
fn transpose_tile(kt: &[f32], n: usize, dk: usize, ktt: &mut [f32]) {
    for (d, col) in ktt.chunks_exact_mut(TILE_TOKENS).enumerate() {
        for (i, c) in col.iter_mut().enumerate() {
            *c = if i < n { kt[i * dk + d] } else { 0.0 };
        }
    }
}

/// The unscaled scores of the `g` query heads of cached head `h` over a transposed K tile
/// into `scores` ([`TILE_TOKENS`] per head), four heads at a time.
#[inline(always)]
fn score_group<const FMA: bool>(
    q: &[f32],
    h: usize,
    g: usize,
    dk: usize,
    ktt: &[f32],
    scores: &mut [f32],
) {
    let qh = |j: usize| &q[(h * g + j) * dk..(h * g + j + 1) * dk];
    let mut j = 0;
    while j + 4 <= g {
        let mut o = [[0f32; TILE_TOKENS]; 4];
        score_tile::<4, FMA>([qh(j), qh(j + 1), qh(j + 2), qh(j + 3)], ktt, &mut o);
        for (r, row) in o.iter().enumerate() {
            scores[(j + r) * TILE_TOKENS..(j + r + 1) * TILE_TOKENS].copy_from_slice(row);
        }
        j += 4;
    }
    while j < g {
        let mut o = [[0f32; TILE_TOKENS]; 1];
        score_tile::<1, FMA>([qh(j)], ktt, &mut o);
        scores[j * TILE_TOKENS..(j + 1) * TILE_TOKENS].copy_from_slice(&o[0]);
        j += 1;
    }
}

/// [`decode_row`], with F16 rows converted eight at a time by F16C where `SIMD` on x86-64
/// (instantiated with `SIMD` only inside [`chunk_avx2`]).
#[inline(always)]
fn decode_row_simd<const SIMD: bool>(dtype: DType, row: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if SIMD && dtype == DType::F16 && row.len() == 2 * out.len() && out.len().is_multiple_of(8) {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm256_cvtph_ps, _mm256_storeu_ps};
        for (o, c) in out.chunks_exact_mut(8).zip(row.chunks_exact(16)) {
            // SAFETY: `c` holds 16 bytes and `o` 8 floats (chunks_exact); unaligned loads and
            // stores; F16C and AVX are enabled in the only caller that sets SIMD on x86-64.
            unsafe {
                let h = _mm_loadu_si128(c.as_ptr().cast::<__m128i>());
                _mm256_storeu_ps(o.as_mut_ptr(), _mm256_cvtph_ps(h));
            }
        }
        return;
    }
    decode_row(dtype, row, out)
}

/// One task of [`attend`]: cached head `h` over the tokens `span` of `cache`, queries `q`.
#[derive(Clone, Copy)]
struct Chunk<'a> {
    cache: &'a KvCacheBuf,
    q: &'a [f32],
    h: usize,
    span: (usize, usize),
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn chunk_avx2(c: Chunk<'_>, tiles: &mut Tiles, out: &mut [f32]) {
    chunk_body::<true>(c, tiles, out)
}

/// One chunk on the instruction set's kernels: the AVX-512 passes (`avx512::chunk`) where `isa`
/// is `avx512vnni` and the rows are whole 16-value words of F32, F16, BF16 or Q8_0, else
/// [`chunk_body`]: AVX2 with FMA on x86-64 where `isa` is AVX2 or `avx512vnni` (checked by
/// [`crate::Isa::detect`]), NEON's fused multiply-add on aarch64, else portable.
fn chunk_partials(isa: crate::Isa, c: Chunk<'_>, tiles: &mut Tiles, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa == crate::Isa::Avx512Vnni {
        let s = &c.cache.shape;
        if avx512::fits(s.dtype, s.d_k, s.d_v) {
            let need = s.group() * CHUNK_TOKENS;
            if tiles.scores.len() < need {
                tiles.scores.resize(need, 0.0);
            }
            // SAFETY: the path is only detected (or accepted) where the CPU has AVX-512F/BW/VL,
            // AVX2, FMA and F16C; `fits` holds.
            return unsafe { avx512::chunk(c, &mut tiles.scores[..need], out) };
        }
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, crate::Isa::Avx2 | crate::Isa::Avx512Vnni) {
        // SAFETY: both paths are only detected (or accepted) where the CPU has AVX2, FMA and
        // F16C.
        return unsafe { chunk_avx2(c, tiles, out) };
    }
    let _ = isa;
    chunk_body::<{ cfg!(target_arch = "aarch64") }>(c, tiles, out)
}

/// Tokens per chunk (one rayon task per cached head and chunk) of [`attend`].
pub const CHUNK_TOKENS: usize = 256;

/// The attention of one decode step: `q` holds `n_heads × d_k` values, `sinks` `n_heads`
/// logits (or is empty), `depth` ≤ the cache's tokens are cached; writes `n_heads × d_v`
/// outputs. Each query head attends to the last `attended(depth)` tokens.
pub fn attend(
    pool: &ThreadPool,
    cache: &KvCacheBuf,
    q: &[f32],
    sinks: &[f32],
    depth: usize,
    out: &mut [f32],
) -> Result<(), CpuError> {
    attend_on(crate::Isa::detect(), pool, cache, q, sinks, depth, out)
}

/// [`attend`] on the kernels of `isa` (which must be available here, else the portable path
/// runs): for tests and A/B runs of one path against another in one process.
pub fn attend_on(
    isa: crate::Isa,
    pool: &ThreadPool,
    cache: &KvCacheBuf,
    q: &[f32],
    sinks: &[f32],
    depth: usize,
    out: &mut [f32],
) -> Result<(), CpuError> {
    let isa = if isa.is_available() {
        isa
    } else {
        crate::Isa::Scalar
    };
    let s = &cache.shape;
    let (nh, dk, dv, g) = (s.n_heads, s.d_k, s.d_v, s.group());
    crate::dot::check_len("queries", nh * dk, q.len())?;
    crate::dot::check_len("outputs", nh * dv, out.len())?;
    if depth > cache.tokens || depth == 0 {
        return Err(err(format!(
            "depth {depth} of a cache of {} tokens",
            cache.tokens
        )));
    }
    if s.sinks {
        crate::dot::check_len("sinks", nh, sinks.len())?;
    }
    let first = depth - s.attended(depth);
    let n = depth - first;
    let chunks = n.div_ceil(CHUNK_TOKENS);
    let per_task = g * partial_len(dv);
    let mut guard = cache.scratch.lock();
    let scratch = &mut *guard;
    let threads = pool.current_num_threads().max(1);
    if scratch.tiles.len() < threads {
        scratch.tiles.resize_with(threads, Default::default);
    }
    // Every thread's tile sized now: which thread runs a task changes from step to step.
    let vt = if s.v_in_k { 0 } else { TILE_TOKENS * dv };
    for t in &scratch.tiles {
        let mut t = t.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let grow = |v: &mut Vec<f32>, n: usize| v.reserve(n.saturating_sub(v.len()));
        grow(&mut t.kt, TILE_TOKENS * dk);
        grow(&mut t.ktt, TILE_TOKENS * dk);
        grow(&mut t.vt, vt);
        grow(&mut t.scores, g * CHUNK_TOKENS);
    }
    let tiles = &scratch.tiles;
    let partials = zeroed(&mut scratch.partials, s.kv_heads * chunks * per_task);
    pool.install(|| {
        partials
            .par_chunks_mut(per_task)
            .enumerate()
            .for_each(|(task, part)| {
                let (h, c) = (task / chunks, task % chunks);
                let t0 = first + c * CHUNK_TOKENS;
                let slot = rayon::current_thread_index().unwrap_or(0) % tiles.len();
                let mut tile = tiles[slot]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let span = (t0, (t0 + CHUNK_TOKENS).min(depth));
                chunk_partials(isa, Chunk { cache, q, h, span }, &mut tile, part);
            })
    });
    let total = zeroed(&mut scratch.total, dv);
    for h in 0..s.kv_heads {
        for j in 0..g {
            let head = h * g + j;
            let (mut tm, mut tl) = (f32::NEG_INFINITY, 0f32);
            total.fill(0.0);
            for c in 0..chunks {
                let at = (h * chunks + c) * per_task + j * partial_len(dv);
                let st = &partials[at..at + partial_len(dv)];
                merge(&mut tm, &mut tl, total, st[0], st[1], &st[2..]);
            }
            if s.sinks {
                // The sink joins the denominator only (an accumulator of zeros).
                merge(&mut tm, &mut tl, total, sinks[head], 1.0, &[]);
            }
            let o = &mut out[head * dv..(head + 1) * dv];
            let inv = if tl > 0.0 { 1.0 / tl } else { 0.0 };
            o.iter_mut()
                .zip(total.iter())
                .for_each(|(o, a)| *o = a * inv);
        }
    }
    Ok(())
}

/// The naive f64 attention (every row dequantized by `membound_quant`, softmax with the sink
/// in the denominator): the definition every backend is checked against.
pub fn reference_attend(
    cache: &KvCacheBuf,
    q: &[f32],
    sinks: &[f32],
    depth: usize,
) -> Result<Vec<f32>, CpuError> {
    let heads: Vec<usize> = (0..cache.shape.n_heads).collect();
    reference_attend_heads(cache, q, sinks, depth, &heads)
}

/// [`reference_attend`] for some query heads only: their outputs, one after the other.
pub fn reference_attend_heads(
    cache: &KvCacheBuf,
    q: &[f32],
    sinks: &[f32],
    depth: usize,
    heads: &[usize],
) -> Result<Vec<f32>, CpuError> {
    let s = &cache.shape;
    let (dk, dv, g) = (s.d_k, s.d_v, s.group());
    let first = depth - s.attended(depth);
    let row = |b: &[u8], n: usize| -> Result<Vec<f64>, CpuError> {
        let v = match s.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            d => ops::dequantize(d, b)?,
        };
        Ok(v[..n].iter().map(|&x| f64::from(x)).collect())
    };
    let mut out = Vec::with_capacity(heads.len() * dv);
    for &head in heads {
        let h = head / g;
        let qh = &q[head * dk..(head + 1) * dk];
        let mut scores = Vec::with_capacity(depth - first);
        for t in first..depth {
            let k = row(cache.k_row(h, t), dk)?;
            let d: f64 = k.iter().zip(qh).map(|(a, b)| a * f64::from(*b)).sum();
            scores.push(d * f64::from(s.scale));
        }
        let sink = if s.sinks {
            f64::from(sinks[head])
        } else {
            f64::NEG_INFINITY
        };
        let m = scores.iter().fold(sink, |a, &b| a.max(b));
        let mut den = (sink - m).exp();
        let mut acc = vec![0f64; dv];
        for (i, t) in (first..depth).enumerate() {
            let p = (scores[i] - m).exp();
            den += p;
            let v = row(cache.v_row(h, t), dv)?;
            acc.iter_mut().zip(&v).for_each(|(a, x)| *a += p * x);
        }
        out.extend(acc.iter().map(|a| (a / den) as f32));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The softmax's vectorisable exp against f64's over the arguments it gets (scores minus
    /// their maximum: 0 down to the clamp), and at the clamp.
    #[test]
    fn the_tile_exp_is_within_1e_7_of_exp() {
        let mut worst = 0f64;
        for k in 0..4000 {
            let mut x = [0f32; TILE_TOKENS];
            for (i, v) in x.iter_mut().enumerate() {
                *v = -((k * TILE_TOKENS + i) as f32) * 87.0 / (4000.0 * TILE_TOKENS as f32);
            }
            let want = x.map(|v| f64::from(v).exp());
            exp_tile(&mut x);
            for (g, w) in x.iter().zip(want) {
                worst = worst.max((f64::from(*g) - w).abs() / w);
            }
        }
        assert!(worst < 1e-7, "relative error {worst}");
        let mut x = [-1000f32; TILE_TOKENS];
        exp_tile(&mut x);
        assert!(x.iter().all(|v| *v > 0.0 && *v < 2e-38), "{x:?}");
    }
}
