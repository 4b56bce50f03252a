//! Decode attention on the CPU — one new token's queries against a KV cache in any layout of
//! `membound_spec::attention` — the reference of the CUDA attention kernels and the CPU backend
//! of the attention suite.
//!
//! [`KvCacheBuf`] holds the cache head-major (`[kv_heads][tokens][row]`, rows in F32, F16, BF16
//! or ggml Q8_0). [`attend`] splits the attended tokens of each cached head into chunks across
//! the rayon pool (flash-decoding's split-K): a chunk converts each K row once for all the query
//! heads of its group, keeps an online softmax per head, and the chunks' partial results are
//! merged in order. [`reference_attend`] is the naive f64 softmax(q·Kᵀ·scale)·V.

use half::{bf16, f16};
use membound_quant::ops;
use membound_spec::DType;
use membound_spec::attention::AttnShape;
use rayon::ThreadPool;
use rayon::prelude::*;

use crate::CpuError;

/// Distinct rows a generated cache cycles through (a prime).
pub const GENERATED_ROWS: usize = 1021;

/// A KV cache of one layer for up to `tokens` tokens.
#[derive(Debug, Clone)]
pub struct KvCacheBuf {
    shape: AttnShape,
    tokens: usize,
    k: Vec<u8>,
    v: Vec<u8>,
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
        for h in 0..s.kv_heads {
            let at = (h * self.tokens + t) * kb;
            let row = encode(s.dtype, &k[h * s.d_k..(h + 1) * s.d_k])?;
            self.k[at..at + kb].copy_from_slice(&row);
            if !s.v_in_k {
                let at = (h * self.tokens + t) * vb;
                let row = encode(s.dtype, &v[h * s.d_v..(h + 1) * s.d_v])?;
                self.v[at..at + vb].copy_from_slice(&row);
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

/// The online-softmax state of one query head over a run of tokens.
#[derive(Clone, Debug)]
struct Partial {
    m: f32,
    l: f32,
    acc: Vec<f32>,
}

impl Partial {
    fn new(d_v: usize) -> Partial {
        Partial {
            m: f32::NEG_INFINITY,
            l: 0.0,
            acc: vec![0.0; d_v],
        }
    }

    /// Merges `o` (a later run) into `self`.
    fn merge(&mut self, o: &Partial) {
        let m = self.m.max(o.m);
        if m == f32::NEG_INFINITY {
            return;
        }
        let (a, b) = ((self.m - m).exp(), (o.m - m).exp());
        self.l = self.l * a + o.l * b;
        for (x, y) in self.acc.iter_mut().zip(&o.acc) {
            *x = *x * a + y * b;
        }
        self.m = m;
    }
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

/// The partial softmax of each query head of cached head `h` over tokens `[t0, t1)`.
#[inline(always)]
fn chunk_body<const FMA: bool>(
    cache: &KvCacheBuf,
    q: &[f32],
    h: usize,
    t0: usize,
    t1: usize,
) -> Vec<Partial> {
    let s = &cache.shape;
    let (dk, dv, g) = (s.d_k, s.d_v, s.group());
    let mut st = vec![Partial::new(dv); g];
    let mut kt = vec![0f32; TILE_TOKENS * dk];
    let mut vt = vec![0f32; if s.v_in_k { 0 } else { TILE_TOKENS * dv }];
    let mut scores = vec![0f32; g * TILE_TOKENS];
    let mut t = t0;
    while t < t1 {
        let n = (t1 - t).min(TILE_TOKENS);
        for i in 0..n {
            decode_row_simd::<FMA>(
                s.dtype,
                cache.k_row(h, t + i),
                &mut kt[i * dk..(i + 1) * dk],
            );
            if !s.v_in_k {
                decode_row_simd::<FMA>(
                    s.dtype,
                    cache.v_row(h, t + i),
                    &mut vt[i * dv..(i + 1) * dv],
                );
            }
        }
        let (vrows, vstride) = if s.v_in_k { (&kt, dk) } else { (&vt, dv) };
        for (j, st) in st.iter_mut().enumerate() {
            let qh = &q[(h * g + j) * dk..(h * g + j + 1) * dk];
            let sc = &mut scores[j * TILE_TOKENS..j * TILE_TOKENS + n];
            for (i, sv) in sc.iter_mut().enumerate() {
                *sv = dot_body::<FMA>(qh, &kt[i * dk..(i + 1) * dk]) * s.scale;
            }
            let m = sc.iter().fold(st.m, |a, &b| a.max(b));
            let a = (st.m - m).exp();
            if a != 1.0 {
                st.acc.iter_mut().for_each(|x| *x *= a);
            }
            st.l *= a;
            st.m = m;
            let mut p = [0f32; TILE_TOKENS];
            p[..n]
                .iter_mut()
                .zip(sc.iter())
                .for_each(|(p, sv)| *p = (sv - m).exp());
            st.l += p[..n].iter().sum::<f32>();
            if g > 1 {
                accumulate_tile::<FMA>(&mut st.acc, &p[..n], vrows, vstride);
            } else {
                // One head per row (expanded MHA): row by row measured faster (Zen 4, 32k).
                for (i, &p) in p[..n].iter().enumerate() {
                    axpy_body::<FMA>(&mut st.acc, p, &vrows[i * vstride..i * vstride + dv]);
                }
            }
        }
        t += n;
    }
    st
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn chunk_avx2(cache: &KvCacheBuf, q: &[f32], h: usize, t0: usize, t1: usize) -> Vec<Partial> {
    chunk_body::<true>(cache, q, h, t0, t1)
}

/// [`chunk_body`] on the instruction set's kernels: AVX2 with FMA on x86-64 where `isa` is
/// AVX2 (checked by [`crate::Isa::detect`]), NEON's fused multiply-add on aarch64, else
/// portable.
fn chunk_partials(
    isa: crate::Isa,
    cache: &KvCacheBuf,
    q: &[f32],
    h: usize,
    t0: usize,
    t1: usize,
) -> Vec<Partial> {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, crate::Isa::Avx2 | crate::Isa::Avx512Vnni) {
        // SAFETY: both paths are only detected (or accepted) where the CPU has AVX2, FMA and
        // F16C.
        return unsafe { chunk_avx2(cache, q, h, t0, t1) };
    }
    let _ = isa;
    chunk_body::<{ cfg!(target_arch = "aarch64") }>(cache, q, h, t0, t1)
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
    let tasks: Vec<(usize, usize)> = (0..s.kv_heads)
        .flat_map(|h| (0..chunks).map(move |c| (h, c)))
        .collect();
    let isa = crate::Isa::detect();
    let partials: Vec<Vec<Partial>> = pool.install(|| {
        tasks
            .par_iter()
            .map(|&(h, c)| {
                let t0 = first + c * CHUNK_TOKENS;
                chunk_partials(isa, cache, q, h, t0, (t0 + CHUNK_TOKENS).min(depth))
            })
            .collect()
    });
    for h in 0..s.kv_heads {
        for j in 0..g {
            let head = h * g + j;
            let mut total = Partial::new(dv);
            for chunk in &partials[h * chunks..(h + 1) * chunks] {
                total.merge(&chunk[j]);
            }
            if s.sinks {
                // The sink joins the denominator only.
                let sink = Partial {
                    m: sinks[head],
                    l: 1.0,
                    acc: vec![0.0; dv],
                };
                total.merge(&sink);
            }
            let o = &mut out[head * dv..(head + 1) * dv];
            let inv = if total.l > 0.0 { 1.0 / total.l } else { 0.0 };
            o.iter_mut().zip(&total.acc).for_each(|(o, a)| *o = a * inv);
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
