//! Decode attention on the CPU — one new token's queries against a KV cache in any layout of
//! `membound_spec::attention` — the reference of the CUDA attention kernels and the CPU backend
//! of the attention suite.
//!
//! [`KvCacheBuf`] holds the cache head-major (`[kv_heads][tokens][row]`, rows in F32, F16, BF16
//! or ggml Q8_0). [`attend`] splits the attended tokens of each cached head into chunks across
//! the rayon pool (flash-decoding's split-K), and the chunks' partial results (a maximum, a sum
//! and an accumulator per query head) are merged in order. A chunk is three passes (`passes`),
//! written once over the vector operations of each instruction set (`lanes`: AVX-512, AVX2,
//! NEON, one portable lane): every score straight from the cache rows, each row converted in
//! registers once for all the query heads of its group; one softmax per head over the chunk;
//! then V. [`reference_attend`] is the naive f64 softmax(q·Kᵀ·scale)·V.

use membound_quant::ops;
use membound_spec::DType;
use membound_spec::attention::AttnShape;
use rayon::ThreadPool;
use rayon::prelude::*;

use crate::CpuError;
use crate::scratch::{Reuse, zeroed};

mod lanes;
mod passes;

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
/// step allocates nothing: the chunks' partial results, each pool thread's scores of a chunk,
/// the merge's accumulator and one encoded row.
#[derive(Debug, Default)]
struct ScratchBufs {
    /// Per task (cached head, chunk), per query head of the group: m, l, then d_v values.
    partials: Vec<f32>,
    /// A chunk's scores (`group ×` a chunk and a little), one per pool thread (a task never runs
    /// inside another on its thread).
    scores: Vec<std::sync::Mutex<Vec<f32>>>,
    /// One head's merged accumulator.
    total: Vec<f32>,
    /// An encoded row of `write_token`.
    row: Vec<u8>,
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

/// One task of [`attend`]: cached head `h` over the tokens `span` of `cache`, queries `q`.
#[derive(Clone, Copy)]
struct Chunk<'a> {
    cache: &'a KvCacheBuf,
    q: &'a [f32],
    h: usize,
    span: (usize, usize),
}

/// One chunk's partial results on the instruction set's [`passes`]: AVX-512 where `isa` is
/// `avx512vnni`, AVX2 where it is `avx2`, NEON on aarch64 (both NEON paths), and the portable
/// lane for `scalar` or rows that are not whole vectors of the path's width. `scores` is the
/// thread's buffer.
fn chunk_partials(isa: crate::Isa, c: Chunk<'_>, scores: &mut Vec<f32>, out: &mut [f32]) {
    let s = &c.cache.shape;
    let need = s.group() * passes::SCORE_STRIDE;
    if scores.len() < need {
        scores.resize(need, 0.0);
    }
    let scores = &mut scores[..need];
    let (dk, dv) = (s.d_k, s.d_v);
    use crate::Isa;
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni if passes::fits::<lanes::Avx512>(dk, dv) => {
            // SAFETY: the path is only detected (or accepted) where the CPU has AVX-512F/BW/VL,
            // AVX2, FMA and F16C; `fits` holds.
            unsafe { lanes::chunk_avx512(c, scores, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni if passes::fits::<lanes::Avx2>(dk, dv) => {
            // SAFETY: both paths are only detected (or accepted) where the CPU has AVX2, FMA and
            // F16C; `fits` holds.
            unsafe { lanes::chunk_avx2(c, scores, out) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDotprod if passes::fits::<lanes::Neon>(dk, dv) => {
            // SAFETY: both paths are only detected (or accepted) where the CPU has NEON; `fits`
            // holds.
            unsafe { lanes::chunk_neon(c, scores, out) }
        }
        _ => lanes::chunk_scalar(c, scores, out),
    }
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
    if scratch.scores.len() < threads {
        scratch.scores.resize_with(threads, Default::default);
    }
    // Every thread's scores sized now: which thread runs a task changes from step to step.
    for t in &scratch.scores {
        let mut t = t.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let more = (g * passes::SCORE_STRIDE).saturating_sub(t.len());
        t.reserve(more);
    }
    let scores = &scratch.scores;
    let partials = zeroed(&mut scratch.partials, s.kv_heads * chunks * per_task);
    pool.install(|| {
        partials
            .par_chunks_mut(per_task)
            .enumerate()
            .for_each(|(task, part)| {
                let (h, c) = (task / chunks, task % chunks);
                let t0 = first + c * CHUNK_TOKENS;
                let slot = rayon::current_thread_index().unwrap_or(0) % scores.len();
                let mut mine = scores[slot]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let span = (t0, (t0 + CHUNK_TOKENS).min(depth));
                chunk_partials(isa, Chunk { cache, q, h, span }, &mut mine, part);
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
