//! One chunk of decode attention in three passes, written once over the vector operations of
//! [`Lanes`] (one implementation per instruction set), instead of an online softmax per tile:
//!
//! 1. every query head's score against every token, straight from the cache rows: each row
//!    value is converted to f32 in a register once per block of heads and multiplied into
//!    [`Lanes::ACC`] independent (head, token) accumulators, whose sums are then folded across
//!    lanes all at once ([`Lanes::sums`]), not one horizontal sum each;
//! 2. one softmax per head over the whole chunk (one maximum, no rescaling of an accumulator);
//! 3. the V rows, again converted in registers, multiplied into up to eight independent
//!    accumulators (heads × words) held in registers across a tile of tokens.
//!
//! No f32 copy of a row is stored: the only memory traffic besides the cache rows is the chunk's
//! scores (a few KB, in L1). The partial result has the layout [`super::attend`] merges.

use super::{CHUNK_TOKENS, Chunk, partial_len};
use membound_spec::DType;

/// Tokens whose K rows one scoring tile takes (converted once per block of heads while they
/// sit in L1).
const K_TILE: usize = 16;
/// Tokens per pass of the V accumulation: the accumulators are loaded and stored once per tile.
const V_TILE: usize = 32;
/// Floats of a head's scores in the chunk's scratch: a chunk's tokens and room for the scores of
/// a block's repeated last rows (fewer than 16).
pub(super) const SCORE_STRIDE: usize = CHUNK_TOKENS + 16;

/// Row types, as the `D` parameter of [`Lanes::row`].
pub(super) mod row {
    /// f32, little-endian.
    pub const F32: u8 = 0;
    /// IEEE half.
    pub const F16: u8 = 1;
    /// bfloat16.
    pub const BF16: u8 = 2;
    /// ggml Q8_0: 34-byte blocks of an f16 scale and 32 int8 values.
    pub const Q8_0: u8 = 3;
}

/// The vector operations the passes are written in. Every method is `unsafe` because an
/// implementation may need its instruction set, which the caller must have checked; pointer
/// arguments must be valid for the values read or written.
pub(super) trait Lanes {
    /// `W` f32 values.
    type V: Copy;
    /// Lanes of a vector.
    const W: usize;
    /// Accumulators a scoring block keeps (heads × tokens, at most 16): 16 where there are 32
    /// vector registers, 8 where there are 16.
    const ACC: usize;
    /// All zeros.
    unsafe fn zero() -> Self::V;
    /// `x` in every lane.
    unsafe fn splat(x: f32) -> Self::V;
    /// `W` values from `p`.
    unsafe fn load(p: *const f32) -> Self::V;
    /// `W` values to `p`.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a · b + c`.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// The larger of `a` and `b`, lane by lane.
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// The smaller of `a` and `b`, lane by lane.
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// Each lane rounded to an integer, a tie either way (as the instruction set rounds).
    unsafe fn round(x: Self::V) -> Self::V;
    /// `e · 2^k`, for `k` whole numbers in [-126, 127].
    unsafe fn ldexp(e: Self::V, k: Self::V) -> Self::V;
    /// `e^x` in these operations (libm's `expf` is a call per value): `2^k · e^r` with
    /// `k = round(x / ln 2)`, `r = x - k ln 2` (ln 2 in two parts) and Cephes' polynomial for
    /// `e^r`, within 1e-7 of `exp` relative (8e-8 measured); `x` is clamped to [-87, 88]
    /// (e^-87 ≈ 1.6e-38 stands for anything smaller: the softmax's arguments are
    /// `score - max ≤ 0`).
    #[inline(always)]
    unsafe fn exp(x: Self::V) -> Self::V {
        /// ln 2 in two parts, then Cephes' coefficients of `e^r`, highest first.
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        const POLY: [f32; 6] = [
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ];
        // SAFETY: the instruction set (the trait's contract).
        unsafe {
            let x = Self::max(Self::min(x, Self::splat(88.0)), Self::splat(-87.0));
            let k = Self::round(Self::mul(x, Self::splat(std::f32::consts::LOG2_E)));
            let r = Self::fma(k, Self::splat(-LN2_HI), x);
            let r = Self::fma(k, Self::splat(-LN2_LO), r);
            let mut p = Self::splat(POLY[0]);
            for c in &POLY[1..] {
                p = Self::fma(p, r, Self::splat(*c));
            }
            let e = Self::add(Self::fma(Self::mul(p, r), r, r), Self::splat(1.0));
            Self::ldexp(e, k)
        }
    }
    /// Values `c..c + W` (`c` a multiple of `W`) of the row of type `D` ([`row`]) at `p`.
    unsafe fn row<const D: u8>(p: *const u8, c: usize) -> Self::V;
    /// The lane sums of `acc[..ACC]` into `sums[..ACC]`.
    unsafe fn sums(acc: &[Self::V; 16], sums: &mut [f32; 16]);
    /// Asks for the cache line at `p` ahead of its use: into L1 where `L1`, else into L2. A hint;
    /// it never faults (a no-op where the instruction set has no such hint here).
    fn prefetch<const L1: bool>(p: *const u8);
}

/// Whether rows of `dk` (K) and `dv` (V) values take [`Lanes`] `L`: whole vectors.
pub(super) fn fits<L: Lanes>(dk: usize, dv: usize) -> bool {
    let whole = |n: usize| n > 0 && n.is_multiple_of(L::W);
    whole(dk) && whole(dv)
}

/// The unscaled scores of `HB` query heads (`q`, `dk` values apart) against `TB` rows into
/// `s[h * stride + t]`: `HB · TB` accumulators over the rows' vectors, summed across lanes at
/// the end all at once.
///
/// # Safety
/// `L`'s instruction set; `q` holds `HB · dk` values, each row `dk` values of `D`, `s` the
/// outputs; `HB · TB ≤ L::ACC`.
#[inline(always)]
unsafe fn score_block<L: Lanes, const D: u8, const HB: usize, const TB: usize>(
    q: *const f32,
    dk: usize,
    rows: [*const u8; TB],
    s: *mut f32,
    stride: usize,
) {
    // SAFETY: the caller's contract covers every load and store.
    unsafe {
        let mut acc = [L::zero(); 16];
        let mut c = 0;
        while c < dk {
            let k: [L::V; TB] = std::array::from_fn(|t| L::row::<D>(rows[t], c));
            for h in 0..HB {
                let qv = L::load(q.add(h * dk + c));
                for t in 0..TB {
                    acc[h * TB + t] = L::fma(qv, k[t], acc[h * TB + t]);
                }
            }
            c += L::W;
        }
        let mut sums = [0f32; 16];
        L::sums(&acc, &mut sums);
        for h in 0..HB {
            for t in 0..TB {
                *s.add(h * stride + t) = sums[h * TB + t];
            }
        }
    }
}

/// The rows a scoring pass asks for ahead of their use, a few lines per step so that misses
/// stay in flight while it computes. Asked for all at once, they fill the miss buffers and stall
/// the core; left to the hardware prefetcher, the read and the arithmetic take turns (measured on
/// Zen 4: GQA at 32k ran at compute time plus read time).
#[derive(Clone, Copy)]
struct Ahead<'a> {
    /// K rows, `kb` bytes each; the pass asks for row `t + K_TILE` into L1 when it scores `t`.
    k: (&'a [u8], usize),
    /// V rows (`None` when V is in K), asked for into L2 when K row `t` is scored.
    v: Option<(&'a [u8], usize)>,
}

impl Ahead<'_> {
    #[inline(always)]
    fn rows<L: Lanes>(&self, t: std::ops::Range<usize>) {
        let lines = |b: &[u8], r: std::ops::Range<usize>, l1: bool| {
            for line in b[r.start.min(b.len())..r.end.min(b.len())].chunks(64) {
                if l1 {
                    L::prefetch::<true>(line.as_ptr());
                } else {
                    L::prefetch::<false>(line.as_ptr());
                }
            }
        };
        let (k, kb) = self.k;
        lines(k, (t.start + K_TILE) * kb..(t.end + K_TILE) * kb, true);
        if let Some((v, vb)) = self.v {
            lines(v, t.start * vb..t.end * vb, false);
        }
    }
}

/// The scores of `HB` heads (`q`, `dk` values each) over rows `t0..n` of `krows` (`kb` bytes
/// apart), `TB` at a time, into `s` (`stride` per head); a last partial step repeats the last
/// row (its extra scores land past `n`, inside the stride).
///
/// # Safety
/// As [`score_block`]; `n` ≥ 1 and `stride` ≥ `n` rounded up to `TB`.
#[inline(always)]
unsafe fn score_heads<L: Lanes, const D: u8, const HB: usize, const TB: usize>(
    (q, dk): (*const f32, usize),
    (krows, kb): (*const u8, usize),
    (t0, n): (usize, usize),
    (s, stride): (*mut f32, usize),
    ahead: Option<Ahead<'_>>,
) {
    let mut t = t0;
    while t < n {
        if let Some(a) = ahead {
            a.rows::<L>(t..(t + TB).min(n));
        }
        let rows = std::array::from_fn(|i| {
            // SAFETY: row min(t + i, n - 1) is one of the n rows.
            unsafe { krows.add((t + i).min(n - 1) * kb) }
        });
        // SAFETY: the caller's contract; s + t + TB ≤ the head's stride.
        unsafe { score_block::<L, D, HB, TB>(q, dk, rows, s.add(t), stride) };
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

/// `acc[h][c..] += Σ_t p[h][t] · V_t[c..]` for `HB` heads and `CB` vectors from `c`: `HB · CB`
/// accumulators held in registers across the rows, each value's sum in token order.
///
/// # Safety
/// `L`'s instruction set; `a` as [`VPass`] says, `c + W · CB ≤ dv`.
#[inline(always)]
unsafe fn accumulate_block<L: Lanes, const D: u8, const HB: usize, const CB: usize>(
    a: VPass,
    c: usize,
) {
    // SAFETY: the caller's contract covers every load and store.
    unsafe {
        let at = |h: usize, b: usize| a.acc.add(h * a.astride + c + L::W * b);
        let mut o: [[L::V; CB]; HB] =
            std::array::from_fn(|h| std::array::from_fn(|b| L::load(at(h, b))));
        for t in 0..a.n {
            let row = a.vrows.add(t * a.vb);
            let v: [L::V; CB] = std::array::from_fn(|b| L::row::<D>(row, c + L::W * b));
            for (h, o) in o.iter_mut().enumerate() {
                let w = L::splat(*a.p.add(h * a.pstride + t));
                for b in 0..CB {
                    o[b] = L::fma(w, v[b], o[b]);
                }
            }
        }
        for (h, o) in o.iter().enumerate() {
            for (b, o) in o.iter().enumerate() {
                L::store(at(h, b), *o);
            }
        }
    }
}

/// [`accumulate_block`] over all `dv` values of `HB` heads: `CB` vectors at a time, then one.
///
/// # Safety
/// As [`accumulate_block`], with `dv` a multiple of `W`.
#[inline(always)]
unsafe fn accumulate_heads<L: Lanes, const D: u8, const HB: usize, const CB: usize>(a: VPass) {
    let mut c = 0;
    // SAFETY: the caller's contract; c + W · CB ≤ dv, then c + W ≤ dv.
    unsafe {
        while c + L::W * CB <= a.dv {
            accumulate_block::<L, D, HB, CB>(a, c);
            c += L::W * CB;
        }
        while c < a.dv {
            accumulate_block::<L, D, HB, 1>(a, c);
            c += L::W;
        }
    }
}

/// Scales the first `n` scores of `s` by `scale` and turns them into softmax weights
/// `e^(x - m)`; returns `m` (the largest scaled score) and the weights' sum. The rest of the
/// last vector is set to -∞ first, so it takes no part in the maximum and its weights are e^-87
/// (the exp's clamp), about 1.6e-38 each: less than the sum (at least 1) can show.
///
/// # Safety
/// `L`'s instruction set.
#[inline(always)]
unsafe fn softmax_weights<L: Lanes>(s: &mut [f32], n: usize, scale: f32) -> (f32, f32) {
    let end = n.div_ceil(L::W) * L::W;
    assert!(n >= 1 && end <= s.len(), "{n} scores");
    s[n..end].fill(f32::NEG_INFINITY);
    let p = s.as_mut_ptr();
    let mut lanes = [0f32; 16];
    // SAFETY: whole vectors inside s[..end] (asserted); `lanes` holds W ≤ 16 values.
    unsafe {
        let sc = L::splat(scale);
        let mut mx = L::splat(f32::NEG_INFINITY);
        for w in (0..end).step_by(L::W) {
            let x = L::mul(L::load(p.add(w)), sc);
            L::store(p.add(w), x);
            mx = L::max(mx, x);
        }
        L::store(lanes.as_mut_ptr(), mx);
        let m = lanes[..L::W]
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let (mv, mut sum) = (L::splat(m), L::zero());
        for w in (0..end).step_by(L::W) {
            let e = L::exp(L::sub(L::load(p.add(w)), mv));
            L::store(p.add(w), e);
            sum = L::add(sum, e);
        }
        L::store(lanes.as_mut_ptr(), sum);
        (m, lanes[..L::W].iter().sum())
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
/// `L`'s instruction set; rows of `D` of `dk` and `dv` values, whole vectors ([`fits`]). The
/// slices' lengths are checked.
#[inline(always)]
unsafe fn chunk_rows<L: Lanes, const D: u8>(
    c: &ChunkRows<'_>,
    scores: &mut [f32],
    out: &mut [f32],
) {
    const S: usize = SCORE_STRIDE;
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
        (1..=CHUNK_TOKENS).contains(&n)
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
    //    L1; the first block asks for the rows ahead. The stride (S) leaves room for a block's
    //    repeated last rows (their scores are overwritten by the next tile's, or unused).
    let ahead = Ahead {
        k: (&krows[..n * kb], kb),
        v: (!std::ptr::eq(krows, vrows)).then_some((&vrows[..n * vb], vb)),
    };
    let mut t = 0;
    while t < n {
        let end = (t + K_TILE).min(n);
        let mut j = 0;
        while j < g {
            let hb = (g - j).min(8);
            // SAFETY: heads j..j + hb of q; scores of head j at sp + j·S; rows below n (fn
            // contract); HB · TB ≤ ACC.
            unsafe {
                let (qa, sa) = ((qp.add(j * dk), dk), (sp.add(j * S), S));
                let pf = (j == 0).then_some(ahead);
                macro_rules! heads {
                    ($hb:literal, $tb:literal) => {
                        score_heads::<L, D, $hb, $tb>(qa, (kp, kb), (t, end), sa, pf)
                    };
                }
                // Every head of the block in one pass over the rows; as many tokens as the
                // accumulators allow.
                match (hb, L::ACC) {
                    (1, 16) => heads!(1, 16),
                    (2, 16) => heads!(2, 8),
                    (3, 16) => heads!(3, 5),
                    (4, 16) => heads!(4, 4),
                    (5, 16) => heads!(5, 3),
                    (6, 16) => heads!(6, 2),
                    (7, 16) => heads!(7, 2),
                    (_, 16) => heads!(8, 2),
                    (1, _) => heads!(1, 8),
                    (2, _) => heads!(2, 4),
                    (3, _) => heads!(3, 2),
                    (4, _) => heads!(4, 2),
                    (5, _) => heads!(5, 1),
                    (6, _) => heads!(6, 1),
                    (7, _) => heads!(7, 1),
                    _ => heads!(8, 1),
                }
            }
            j += hb;
        }
        t = end;
    }
    // 2. One softmax per head over the chunk.
    for (j, st) in out.chunks_exact_mut(partial_len(dv)).take(g).enumerate() {
        // SAFETY: `L`'s instruction set (fn contract).
        let (m, l) = unsafe { softmax_weights::<L>(&mut scores[j * S..(j + 1) * S], n, scale) };
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
                let a = VPass {
                    p: sp.add(j * S + t),
                    pstride: S,
                    vrows: vp.add(t * vb),
                    vb,
                    n: rows,
                    dv,
                    acc: op.add(j * ostride + 2),
                    astride: ostride,
                };
                let hb = (g - j).min(8);
                // HB · CB ≤ 8 accumulators.
                match hb {
                    1 => accumulate_heads::<L, D, 1, 8>(a),
                    2 => accumulate_heads::<L, D, 2, 4>(a),
                    3 => accumulate_heads::<L, D, 3, 2>(a),
                    4 => accumulate_heads::<L, D, 4, 2>(a),
                    5 => accumulate_heads::<L, D, 5, 1>(a),
                    6 => accumulate_heads::<L, D, 6, 1>(a),
                    7 => accumulate_heads::<L, D, 7, 1>(a),
                    _ => accumulate_heads::<L, D, 8, 1>(a),
                }
                j += hb;
            }
        }
        t += rows;
    }
}

/// The partial results of chunk `c` (cached head `c.h`, its span of tokens) for each query
/// head of its group into `out`, on `L`; `scores` is scratch of `group ·` [`SCORE_STRIDE`]
/// floats.
///
/// # Safety
/// `L`'s instruction set is available; `fits::<L>(d_k, d_v)` holds for the cache, whose type
/// is F32, F16, BF16 or Q8_0.
#[inline(always)]
pub(super) unsafe fn chunk<L: Lanes>(c: Chunk<'_>, scores: &mut [f32], out: &mut [f32]) {
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
            DType::F32 => chunk_rows::<L, { row::F32 }>(&rows, scores, out),
            DType::F16 => chunk_rows::<L, { row::F16 }>(&rows, scores, out),
            DType::BF16 => chunk_rows::<L, { row::BF16 }>(&rows, scores, out),
            DType::Q8_0 => chunk_rows::<L, { row::Q8_0 }>(&rows, scores, out),
            other => unreachable!("a cache of {other} rows is never made"),
        }
    }
}
