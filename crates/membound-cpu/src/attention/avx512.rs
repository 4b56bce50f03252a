//! The attention chunk on AVX-512 (the `avx512vnni` path), in three passes over a chunk of at
//! most [`CHUNK_TOKENS`] tokens instead of an online softmax per tile:
//!
//! 1. every query head's score against every token, straight from the cache rows: each row
//!    value is converted to f32 in a register once per block of heads and multiplied into 16
//!    independent (head, token) accumulators, whose sums are then gathered across lanes all at
//!    once ([`reduce16`]), not one horizontal sum each;
//! 2. one softmax per head over the whole chunk (one maximum, no rescaling of the accumulator);
//! 3. the V rows, again converted in registers, multiplied into at least eight independent
//!    accumulators (heads × 16-value blocks) held in registers across a tile of tokens.
//!
//! No f32 copy of a row is stored; the only memory traffic besides the cache rows is the chunk's
//! scores (a few KB, in L1). The partial result has the layout of the portable path.

use std::arch::x86_64::*;

use membound_spec::DType;

use super::{CHUNK_TOKENS, Chunk, partial_len};

/// Tokens whose K rows one scoring tile takes (converted once per block of heads while they
/// sit in L1).
const K_TILE: usize = 16;
/// Tokens per pass of the V accumulation: the accumulators are loaded and stored once per tile.
const V_TILE: usize = 32;

/// Whether a cache of `dtype` rows of `dk` (K) and `dv` (V) values takes these kernels: rows of
/// whole 16-value words of a type they read.
pub(super) fn fits(dtype: DType, dk: usize, dv: usize) -> bool {
    let words = |n: usize| n > 0 && n.is_multiple_of(16);
    words(dk) && words(dv) && matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::Q8_0)
}

/// How sixteen consecutive values of a cache row load as f32.
trait Row {
    /// Values `c..c + 16` of the row at `row` (`c` a multiple of 16).
    ///
    /// # Safety
    /// AVX-512F and F16C must be available; the row holds at least `c + 16` values.
    unsafe fn load(row: *const u8, c: usize) -> __m512;
}

struct F32Row;
struct F16Row;
struct Bf16Row;
/// ggml Q8_0: 34-byte blocks of an f16 scale and 32 int8 values.
struct Q8Row;

impl Row for F32Row {
    #[inline(always)]
    unsafe fn load(row: *const u8, c: usize) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { _mm512_loadu_ps(row.cast::<f32>().add(c)) }
    }
}

impl Row for F16Row {
    #[inline(always)]
    unsafe fn load(row: *const u8, c: usize) -> __m512 {
        // SAFETY: the caller's contract (32 bytes at value c).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(row.add(2 * c).cast())) }
    }
}

impl Row for Bf16Row {
    #[inline(always)]
    unsafe fn load(row: *const u8, c: usize) -> __m512 {
        // SAFETY: the caller's contract (32 bytes at value c); a bf16 is an f32's top half.
        unsafe {
            let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(row.add(2 * c).cast()));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(h))
        }
    }
}

impl Row for Q8Row {
    #[inline(always)]
    unsafe fn load(row: *const u8, c: usize) -> __m512 {
        // SAFETY: the caller's contract: block c / 32 is whole, its scale then 32 int8.
        unsafe {
            let b = row.add(c / 32 * 34);
            let bits = b.cast::<u16>().read_unaligned();
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))));
            let q = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(2 + c % 32).cast()));
            _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(d))
        }
    }
}

/// Lane `i` of the result: the sum of the lanes of `v[i]`. Four levels of pairwise folds (45
/// shuffles and adds for 16 sums, where 16 horizontal sums take about 130).
#[inline(always)]
unsafe fn reduce16(v: [__m512; 16]) -> __m512 {
    // The folds leave sum(v[4m + k]) in lane 4k + m; feeding v in the transposed order puts
    // sum(v[i]) in lane i.
    let v: [__m512; 16] = std::array::from_fn(|i| v[(i % 4) * 4 + i / 4]);
    // SAFETY: register operations only (AVX-512F is enabled in every caller).
    unsafe {
        // 128-bit quarters: lanes 0-7 the first of a pair's halves summed, 8-15 the second's.
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
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x88>(z[0], z[1]),
            _mm512_shuffle_ps::<0xDD>(z[0], z[1]),
        )
    }
}

/// The unscaled scores of `HB` query heads (`q`, `dk` values apart) against `TB` rows into
/// `s[h * stride + t]`, `HB · TB = 16` accumulators over the rows' 16-value words.
///
/// # Safety
/// AVX-512F and F16C; `q` holds `HB · dk` values, each row `dk` values of `R`, `s` the outputs.
#[inline(always)]
unsafe fn score_block<R: Row, const HB: usize, const TB: usize>(
    q: *const f32,
    dk: usize,
    rows: [*const u8; TB],
    s: *mut f32,
    stride: usize,
) {
    const { assert!(HB * TB == 16) };
    // SAFETY: the caller's contract covers every load and store.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); 16];
        let mut c = 0;
        while c < dk {
            let k: [__m512; TB] = std::array::from_fn(|t| R::load(rows[t], c));
            for h in 0..HB {
                let qv = _mm512_loadu_ps(q.add(h * dk + c));
                for t in 0..TB {
                    acc[h * TB + t] = _mm512_fmadd_ps(qv, k[t], acc[h * TB + t]);
                }
            }
            c += 16;
        }
        let mut sums = [0f32; 16];
        _mm512_storeu_ps(sums.as_mut_ptr(), reduce16(acc));
        for h in 0..HB {
            for t in 0..TB {
                *s.add(h * stride + t) = sums[h * TB + t];
            }
        }
    }
}

/// The scores of heads `q` (`dk` values each, `HB` of them at `q`) over the `n` rows
/// `krows + i · kb`, `TB` at a time, into `s` (`stride` per head); a last partial step repeats
/// the last row (its extra scores land past `n`, inside the stride).
///
/// # Safety
/// As [`score_block`]; `n` ≥ 1 and `stride` ≥ `n` rounded up to `TB`.
#[inline(always)]
unsafe fn score_heads<R: Row, const HB: usize, const TB: usize>(
    q: *const f32,
    dk: usize,
    (krows, kb): (*const u8, usize),
    (t0, n): (usize, usize),
    s: *mut f32,
    stride: usize,
    ahead: Option<Ahead<'_>>,
) {
    let mut t = t0;
    while t < n {
        if let Some(a) = ahead {
            a.rows(t..(t + TB).min(n));
        }
        let rows = std::array::from_fn(|i| {
            // SAFETY: row min(t + i, n - 1) is one of the n rows.
            unsafe { krows.add((t + i).min(n - 1) * kb) }
        });
        // SAFETY: the caller's contract; s + t + TB ≤ the head's stride.
        unsafe { score_block::<R, HB, TB>(q, dk, rows, s.add(t), stride) };
        t += TB;
    }
}

/// The operands of a V pass over `n` rows for a block of heads: weights `p` (`pstride` per
/// head, at least `n`), rows `vrows` (`vb` bytes apart, at least `dv` values of the row type
/// each), accumulators `acc` (`astride` per head, `dv` values).
#[derive(Clone, Copy)]
struct VPass {
    p: *const f32,
    pstride: usize,
    vrows: *const u8,
    vb: usize,
    n: usize,
    dv: usize,
    acc: *mut f32,
    astride: usize,
}

/// `acc[h][c..] += Σ_t p[h][t] · V_t[c..]` for `HB` heads and `CB` 16-value words from `c`:
/// `HB · CB` accumulators held in registers across the rows, each value's sum in token order.
///
/// # Safety
/// AVX-512F and F16C; `a` as [`VPass`] says, `c + 16 · CB ≤ dv`.
#[inline(always)]
unsafe fn accumulate_block<R: Row, const HB: usize, const CB: usize>(a: VPass, c: usize) {
    // SAFETY: the caller's contract covers every load and store.
    unsafe {
        let at = |h: usize, b: usize| a.acc.add(h * a.astride + c + 16 * b);
        let mut o: [[__m512; CB]; HB] =
            std::array::from_fn(|h| std::array::from_fn(|b| _mm512_loadu_ps(at(h, b))));
        for t in 0..a.n {
            let row = a.vrows.add(t * a.vb);
            let v: [__m512; CB] = std::array::from_fn(|b| R::load(row, c + 16 * b));
            for (h, o) in o.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*a.p.add(h * a.pstride + t));
                for b in 0..CB {
                    o[b] = _mm512_fmadd_ps(w, v[b], o[b]);
                }
            }
        }
        for (h, o) in o.iter().enumerate() {
            for (b, o) in o.iter().enumerate() {
                _mm512_storeu_ps(at(h, b), *o);
            }
        }
    }
}

/// [`accumulate_block`] over all `dv` values of `HB` heads: `CB` words at a time, then one.
///
/// # Safety
/// As [`accumulate_block`], with `dv` a multiple of 16.
#[inline(always)]
unsafe fn accumulate_heads<R: Row, const HB: usize, const CB: usize>(a: VPass) {
    let mut c = 0;
    // SAFETY: the caller's contract; c + 16 · CB ≤ dv, then c + 16 ≤ dv.
    unsafe {
        while c + 16 * CB <= a.dv {
            accumulate_block::<R, HB, CB>(a, c);
            c += 16 * CB;
        }
        while c < a.dv {
            accumulate_block::<R, HB, 1>(a, c);
            c += 16;
        }
    }
}

/// Asks for the cache lines of `bytes` ahead of their use (`HINT`: `_MM_HINT_T0` into L1,
/// `_MM_HINT_T1` into L2).
#[inline(always)]
fn prefetch<const HINT: i32>(bytes: &[u8]) {
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch of an address inside a live slice; it never faults.
        unsafe { _mm_prefetch::<HINT>(line.as_ptr().cast()) };
    }
}

/// `e^x` for 16 values: [`super::exp_tile`]'s arithmetic (the same clamp to [-87, 88], split of
/// ln 2 and Cephes polynomial), with the power of two applied by `vscalefps`.
///
/// # Safety
/// AVX-512F.
#[inline(always)]
unsafe fn exp16(x: __m512) -> __m512 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // SAFETY: register operations only.
    unsafe {
        let set = _mm512_set1_ps;
        let x = _mm512_max_ps(_mm512_min_ps(x, set(88.0)), set(-87.0));
        let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, set(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(
            k,
            set(-2.121_944_4e-4),
            _mm512_fnmadd_ps(k, set(0.693_359_4), x),
        );
        let mut p = set(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm512_fmadd_ps(p, r, set(c));
        }
        let e = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), set(1.0));
        _mm512_scalef_ps(e, k)
    }
}

/// Scales the first `n` scores of `s` by `scale` and turns them into softmax weights
/// `e^(x - m)`, zeros up to the next 16-value word; returns `m` (the largest scaled score) and
/// the weights' sum.
///
/// # Safety
/// AVX-512F; `1 ≤ n ≤ s.len()`, `s.len()` a multiple of 16.
#[inline(always)]
unsafe fn softmax_weights(s: &mut [f32], n: usize, scale: f32) -> (f32, f32) {
    let words = n.div_ceil(16);
    assert!(n >= 1 && words * 16 <= s.len(), "{n} scores");
    let p = s.as_mut_ptr();
    let mask = |w: usize| -> __mmask16 {
        let left = n - 16 * w;
        if left >= 16 {
            u16::MAX
        } else {
            (1u16 << left) - 1
        }
    };
    // SAFETY: words whole words inside s (asserted).
    unsafe {
        let sc = _mm512_set1_ps(scale);
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for w in 0..words {
            let x = _mm512_mul_ps(_mm512_loadu_ps(p.add(16 * w)), sc);
            _mm512_storeu_ps(p.add(16 * w), x);
            mx = _mm512_mask_max_ps(mx, mask(w), mx, x);
        }
        let m = _mm512_reduce_max_ps(mx);
        let (mv, mut sum) = (_mm512_set1_ps(m), _mm512_setzero_ps());
        for w in 0..words {
            let x = _mm512_sub_ps(_mm512_loadu_ps(p.add(16 * w)), mv);
            let e = _mm512_maskz_mov_ps(mask(w), exp16(x));
            _mm512_storeu_ps(p.add(16 * w), e);
            sum = _mm512_add_ps(sum, e);
        }
        (m, _mm512_reduce_add_ps(sum))
    }
}

/// The rows a scoring pass asks for ahead of their use, a few lines per step so that misses
/// stay in flight while it computes (asked for all at once, they fill the miss buffers and stall
/// the core; left to the hardware prefetcher, the read and the arithmetic take turns: measured
/// on Zen 4, GQA at 32k ran at compute time plus read time).
#[derive(Clone, Copy)]
struct Ahead<'a> {
    /// K rows, `kb` bytes each; the pass asks for row `t + K_TILE` into L1 when it scores `t`.
    k: (&'a [u8], usize),
    /// V rows (`None` when V is in K), asked for into L2 when K row `t` is scored.
    v: Option<(&'a [u8], usize)>,
}

impl Ahead<'_> {
    #[inline(always)]
    fn rows(&self, t: std::ops::Range<usize>) {
        let (k, kb) = self.k;
        let ahead = (t.start + K_TILE) * kb..(t.end + K_TILE) * kb;
        prefetch::<_MM_HINT_T0>(&k[ahead.start.min(k.len())..ahead.end.min(k.len())]);
        if let Some((v, vb)) = self.v {
            prefetch::<_MM_HINT_T1>(&v[t.start * vb..t.end * vb]);
        }
    }
}

/// One chunk's operands, sliced from the cache: the group's `g` queries of `dk` values, `dv`
/// output values per head, the softmax scale, the chunk's `n` K rows (`kb` bytes each) and V
/// rows (`vb` bytes each; the K rows again when V is in K).
struct ChunkRows<'a> {
    q: &'a [f32],
    g: usize,
    dk: usize,
    dv: usize,
    scale: f32,
    k: (&'a [u8], usize),
    v: (&'a [u8], usize),
    n: usize,
}

/// Scores, softmax and V accumulation of one chunk; see the module's text.
///
/// # Safety
/// AVX-512F/BW/VL, AVX2, FMA and F16C; rows of `R` of `dk` and `dv` values, whole 16-value
/// words ([`fits`]). The slices' lengths are checked.
#[inline(always)]
unsafe fn chunk_rows<R: Row>(c: &ChunkRows<'_>, scores: &mut [f32], out: &mut [f32]) {
    const S: usize = CHUNK_TOKENS;
    let ChunkRows {
        q,
        g,
        dk,
        dv,
        scale,
        k: (krows, kb),
        v: (vrows, vb),
        n,
    } = *c;
    assert!(
        (1..=S).contains(&n)
            && q.len() >= g * dk
            && scores.len() >= g * S
            && out.len() >= g * partial_len(dv)
            && krows.len() >= n * kb
            && vrows.len() >= n * vb,
        "attention chunk of {n} rows"
    );
    let (qp, kp, vp, sp) = (
        q.as_ptr(),
        krows.as_ptr(),
        vrows.as_ptr(),
        scores.as_mut_ptr(),
    );
    // 1. Scores, tile by tile of K_TILE rows, every block of heads over the tile while it is in
    //    L1. The stride (S) leaves room for a block's repeated last rows.
    let ahead = Ahead {
        k: (&krows[..n * kb], kb),
        v: (!std::ptr::eq(krows, vrows)).then_some((&vrows[..n * vb], vb)),
    };
    let mut t = 0;
    while t < n {
        let end = (t + K_TILE).min(n);
        let mut j = 0;
        while j < g {
            // SAFETY: heads j.. of q; scores of head j at sp + j·S; rows below n (fn contract).
            unsafe {
                let (qj, sj) = (qp.add(j * dk), sp.add(j * S));
                // The first block of heads asks for the rows ahead.
                let pf = (j == 0).then_some(ahead);
                j += match g - j {
                    8.. => {
                        score_heads::<R, 8, 2>(qj, dk, (kp, kb), (t, end), sj, S, pf);
                        8
                    }
                    4..=7 => {
                        score_heads::<R, 4, 4>(qj, dk, (kp, kb), (t, end), sj, S, pf);
                        4
                    }
                    2 | 3 => {
                        score_heads::<R, 2, 8>(qj, dk, (kp, kb), (t, end), sj, S, pf);
                        2
                    }
                    _ => {
                        score_heads::<R, 1, 16>(qj, dk, (kp, kb), (t, end), sj, S, pf);
                        1
                    }
                };
            }
        }
        t = end;
    }
    // 2. One softmax per head over the chunk.
    for (j, st) in out.chunks_exact_mut(partial_len(dv)).take(g).enumerate() {
        // SAFETY: the head's S scores; n ≤ S (asserted above).
        let (m, l) = unsafe { softmax_weights(&mut scores[j * S..(j + 1) * S], n, scale) };
        st[0] = m;
        st[1] = l;
        st[2..].fill(0.0);
    }
    // 3. V, tile by tile of V_TILE rows, every block of heads with its accumulators in registers.
    let (op, ostride) = (out.as_mut_ptr(), partial_len(dv));
    let mut t = 0;
    while t < n {
        let rows = (n - t).min(V_TILE);
        let mut j = 0;
        while j < g {
            // SAFETY: weights of head j from token t; rows t..t + rows (below n); head j's
            // accumulator at op + j·ostride + 2 (dv values).
            unsafe {
                let args = VPass {
                    p: sp.add(j * S + t),
                    pstride: S,
                    vrows: vp.add(t * vb),
                    vb,
                    n: rows,
                    dv,
                    acc: op.add(j * ostride + 2),
                    astride: ostride,
                };
                j += match g - j {
                    8.. => {
                        accumulate_heads::<R, 8, 1>(args);
                        8
                    }
                    4..=7 => {
                        accumulate_heads::<R, 4, 2>(args);
                        4
                    }
                    2 | 3 => {
                        accumulate_heads::<R, 2, 4>(args);
                        2
                    }
                    _ => {
                        accumulate_heads::<R, 1, 8>(args);
                        1
                    }
                };
            }
        }
        t += rows;
    }
}

/// The partial results of chunk `c` (cached head `c.h`, its span of tokens) for each query
/// head of its group into `out`; `scores` is scratch of `group ·` [`CHUNK_TOKENS`] floats.
///
/// # Safety
/// The CPU has the `avx512vnni` path's features (AVX-512F/BW/VL, AVX2, FMA, F16C) and
/// `fits(dtype, d_k, d_v)` holds for the cache.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn chunk(c: Chunk<'_>, scores: &mut [f32], out: &mut [f32]) {
    let s = &c.cache.shape;
    let (g, (t0, t1)) = (s.group(), c.span);
    let (kb, vb) = s.row_bytes();
    let first = c.h * c.cache.tokens;
    let rows = |b: usize| (first + t0) * b..(first + t1) * b;
    let k = (&c.cache.k[rows(kb)], kb);
    let rows = ChunkRows {
        q: &c.q[c.h * g * s.d_k..(c.h + 1) * g * s.d_k],
        g,
        dk: s.d_k,
        dv: s.d_v,
        scale: s.scale,
        k,
        v: if s.v_in_k {
            k
        } else {
            (&c.cache.v[rows(vb)], vb)
        },
        n: t1 - t0,
    };
    // SAFETY: the caller's contract, for the row type of the cache.
    unsafe {
        match s.dtype {
            DType::F32 => chunk_rows::<F32Row>(&rows, scores, out),
            DType::F16 => chunk_rows::<F16Row>(&rows, scores, out),
            DType::BF16 => chunk_rows::<Bf16Row>(&rows, scores, out),
            DType::Q8_0 => chunk_rows::<Q8Row>(&rows, scores, out),
            other => unreachable!("fits() admits no {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn available() -> bool {
        let ok = crate::Isa::Avx512Vnni.is_available();
        if !ok {
            eprintln!("skipped: this CPU lacks the avx512vnni path");
        }
        ok
    }

    #[target_feature(enable = "avx512f")]
    fn reduce16_of(v: &[[f32; 16]; 16]) -> [f32; 16] {
        let mut out = [0f32; 16];
        // SAFETY: AVX-512F is enabled here and checked by the caller; 16 floats each.
        unsafe {
            let r = reduce16(std::array::from_fn(|i| _mm512_loadu_ps(v[i].as_ptr())));
            _mm512_storeu_ps(out.as_mut_ptr(), r);
        }
        out
    }

    #[target_feature(enable = "avx512f")]
    fn exp16_of(x: &[f32; 16]) -> [f32; 16] {
        let mut out = [0f32; 16];
        // SAFETY: AVX-512F is enabled here and checked by the caller.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), exp16(_mm512_loadu_ps(x.as_ptr()))) };
        out
    }

    /// Lane `i` holds the sum of vector `i`: distinct powers of two per lane and vector make
    /// any other lane or vector show.
    #[test]
    fn reduce16_puts_each_vectors_sum_in_its_lane() {
        if !available() {
            return;
        }
        let v: [[f32; 16]; 16] = std::array::from_fn(|i| {
            std::array::from_fn(|l| ((i * 16 + l) % 23) as f32 * 0.5 + i as f32 * 1024.0)
        });
        // SAFETY: the path (AVX-512F) is available.
        let got = unsafe { reduce16_of(&v) };
        for (i, row) in v.iter().enumerate() {
            assert_eq!(got[i], row.iter().sum::<f32>(), "lane {i}");
        }
    }

    /// The softmax's exp against f64's over its arguments (0 down to the clamp) and past them.
    #[test]
    fn exp16_is_within_1e_7_of_exp() {
        if !available() {
            return;
        }
        let mut worst = 0f64;
        for k in 0..4000 {
            let x: [f32; 16] = std::array::from_fn(|i| -((k * 16 + i) as f32) * 87.0 / 64000.0);
            // SAFETY: the path (AVX-512F) is available.
            let got = unsafe { exp16_of(&x) };
            for (g, x) in got.iter().zip(x) {
                let w = f64::from(x).exp();
                worst = worst.max((f64::from(*g) - w).abs() / w);
            }
        }
        assert!(worst < 1e-7, "relative error {worst}");
        // SAFETY: as above.
        let low = unsafe { exp16_of(&[-1000.0; 16]) };
        assert!(low.iter().all(|v| *v > 0.0 && *v < 2e-38), "{low:?}");
    }
}
