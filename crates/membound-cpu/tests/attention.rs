//! CPU decode attention against the naive f64 softmax(q·Kᵀ)·V, every layout and cache type, with
//! sinks and windows, and the MLA identity: absorbed latent attention equals the expanded MHA it
//! stands for.

use membound_cpu::attention::{CHUNK_TOKENS, KvCacheBuf, attend, reference_attend};
use membound_quant::data::normal_f32;
use membound_spec::DType;
use membound_spec::attention::AttnShape;
use membound_spec::kv::KvLayout;

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

fn max_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn check(s: &AttnShape, tokens: usize, depth: usize, tol: f32) {
    let cache = KvCacheBuf::generate(s, tokens, 7).unwrap();
    let q = normal_f32(3, s.n_heads * s.d_k, 1.0);
    let sinks = normal_f32(4, s.n_heads, 1.0);
    let mut out = vec![f32::NAN; s.n_heads * s.d_v];
    attend(&pool(), &cache, &q, &sinks, depth, &mut out).unwrap();
    let want = reference_attend(&cache, &q, &sinks, depth).unwrap();
    let e = max_err(&out, &want);
    assert!(
        e <= tol,
        "{:?} {} depth {depth}: error {e}",
        s.layout,
        s.dtype
    );
}

#[test]
fn every_layout_and_type_matches_the_f64_softmax() {
    // Depths past one chunk, not a multiple of it: several partial softmaxes merged.
    let depth = 2 * CHUNK_TOKENS + 37;
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::Q8_0] {
        check(
            &AttnShape::new(KvLayout::Gqa, 8, 2, 64, 64, dtype),
            depth,
            depth,
            1e-4,
        );
        check(
            &AttnShape::new(KvLayout::MlaLatent, 4, 1, 576, 512, dtype),
            depth,
            depth,
            1e-4,
        );
        check(
            &AttnShape::new(KvLayout::MlaSplit, 4, 1, 576, 512, dtype),
            depth,
            depth,
            1e-4,
        );
        check(
            &AttnShape::new(KvLayout::ExpandedMha, 4, 4, 192, 128, dtype),
            depth,
            depth,
            1e-4,
        );
    }
    // Rows of whole 8-value words with a tail past the 64-value blocks (the SIMD kernels'
    // tails), and rows that are not whole words (the portable loops on every machine).
    for (dk, dv) in [(40, 72), (36, 20)] {
        for dtype in [DType::F32, DType::F16] {
            check(
                &AttnShape::new(KvLayout::Gqa, 8, 2, dk, dv, dtype),
                depth,
                depth,
                1e-4,
            );
        }
    }
    // A query at depth 1 and one shorter than the cache.
    check(
        &AttnShape::new(KvLayout::Gqa, 4, 4, 32, 32, DType::F16),
        100,
        1,
        1e-5,
    );
    check(
        &AttnShape::new(KvLayout::Gqa, 4, 4, 32, 32, DType::F16),
        1000,
        333,
        1e-4,
    );
}

#[test]
fn sinks_and_windows_as_the_reference_defines_them() {
    let mut s = AttnShape::new(KvLayout::Gqa, 8, 2, 64, 64, DType::F16);
    s.sinks = true;
    s.window = Some(128);
    check(&s, 1000, 1000, 1e-4);
    check(&s, 1000, 100, 1e-4);
    // A very large sink takes the whole softmax: the output vanishes.
    let cache = KvCacheBuf::generate(&s, 300, 1).unwrap();
    let q = normal_f32(2, 8 * 64, 1.0);
    let mut out = vec![0f32; 8 * 64];
    attend(&pool(), &cache, &q, &[80.0; 8], 300, &mut out).unwrap();
    assert!(out.iter().all(|v| v.abs() < 1e-6));
    // Without the window the output differs.
    let mut wide = s.clone();
    wide.window = None;
    let cache_w = KvCacheBuf::generate(&wide, 1000, 7).unwrap();
    let cache_n = KvCacheBuf::generate(&s, 1000, 7).unwrap();
    let q = normal_f32(3, 8 * 64, 1.0);
    let (mut a, mut b) = (vec![0f32; 512], vec![0f32; 512]);
    attend(&pool(), &cache_w, &q, &[0.0; 8], 1000, &mut a).unwrap();
    attend(&pool(), &cache_n, &q, &[0.0; 8], 1000, &mut b).unwrap();
    assert!(max_err(&a, &b) > 1e-2);
}

/// MLA: with `W_UK` (per head, qk_nope × latent) and `W_UV` (v × latent), attention over the
/// latent cache with absorbed queries `[W_UKᵀ q_nope | q_rope]`, projected by `W_UV`
/// afterwards, equals attention over the expanded per-head cache `K = [W_UK c | k_rope]`,
/// `V = W_UV c` (both in F32, so only rounding separates them).
#[test]
fn mla_absorbed_equals_expanded() {
    let (heads, latent, rope, nope, dv, depth) = (4, 64, 32, 48, 32, 300);
    let c = normal_f32(1, depth * latent, 1.0);
    let kr = normal_f32(2, depth * rope, 1.0);
    let w_uk = normal_f32(3, heads * nope * latent, 0.2);
    let w_uv = normal_f32(4, heads * dv * latent, 0.2);
    let q_nope = normal_f32(5, heads * nope, 1.0);
    let q_rope = normal_f32(6, heads * rope, 1.0);
    let scale = 1.0 / ((nope + rope) as f32).sqrt();
    let matvec = |w: &[f32], rows: usize, x: &[f32]| -> Vec<f32> {
        (0..rows)
            .map(|r| {
                w[r * x.len()..(r + 1) * x.len()]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect()
    };
    // Absorbed: one cached head of latent + rope, V the latent.
    let mut lat = AttnShape::new(
        KvLayout::MlaLatent,
        heads,
        1,
        latent + rope,
        latent,
        DType::F32,
    );
    lat.scale = scale;
    let rows: Vec<f32> = (0..depth)
        .flat_map(|t| {
            c[t * latent..(t + 1) * latent]
                .iter()
                .chain(&kr[t * rope..(t + 1) * rope])
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let cache = KvCacheBuf::from_f32(&lat, depth, &rows, &[]).unwrap();
    let mut q = Vec::new();
    for h in 0..heads {
        // W_UKᵀ q_nope: latent values.
        let wk = &w_uk[h * nope * latent..(h + 1) * nope * latent];
        let qn = &q_nope[h * nope..(h + 1) * nope];
        q.extend((0..latent).map(|j| (0..nope).map(|i| wk[i * latent + j] * qn[i]).sum::<f32>()));
        q.extend_from_slice(&q_rope[h * rope..(h + 1) * rope]);
    }
    let mut o_lat = vec![0f32; heads * latent];
    attend(&pool(), &cache, &q, &[], depth, &mut o_lat).unwrap();
    let absorbed: Vec<f32> = (0..heads)
        .flat_map(|h| {
            matvec(
                &w_uv[h * dv * latent..(h + 1) * dv * latent],
                dv,
                &o_lat[h * latent..(h + 1) * latent],
            )
        })
        .collect();
    // Expanded: per head K = [W_UK c | k_rope], V = W_UV c.
    let mut exp = AttnShape::new(
        KvLayout::ExpandedMha,
        heads,
        heads,
        nope + rope,
        dv,
        DType::F32,
    );
    exp.scale = scale;
    let (mut k, mut v) = (Vec::new(), Vec::new());
    for h in 0..heads {
        for t in 0..depth {
            let ct = &c[t * latent..(t + 1) * latent];
            k.extend(matvec(
                &w_uk[h * nope * latent..(h + 1) * nope * latent],
                nope,
                ct,
            ));
            k.extend_from_slice(&kr[t * rope..(t + 1) * rope]);
            v.extend(matvec(
                &w_uv[h * dv * latent..(h + 1) * dv * latent],
                dv,
                ct,
            ));
        }
    }
    let cache = KvCacheBuf::from_f32(&exp, depth, &k, &v).unwrap();
    let qe: Vec<f32> = (0..heads)
        .flat_map(|h| {
            q_nope[h * nope..(h + 1) * nope]
                .iter()
                .chain(&q_rope[h * rope..(h + 1) * rope])
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let mut expanded = vec![0f32; heads * dv];
    attend(&pool(), &cache, &qe, &[], depth, &mut expanded).unwrap();
    let e = max_err(&absorbed, &expanded);
    assert!(e < 1e-4, "absorbed vs expanded: {e}");
}

#[test]
fn split_k_equals_one_chunk() {
    // The same cache read as one chunk (depth ≤ CHUNK_TOKENS, a prefix) and as many: the
    // reference is shared, so compare both against it at their depths and the long one against
    // a single-threaded pool.
    let s = AttnShape::new(KvLayout::Gqa, 4, 1, 64, 64, DType::F16);
    let cache = KvCacheBuf::generate(&s, 4 * CHUNK_TOKENS, 9).unwrap();
    let q = normal_f32(1, 4 * 64, 1.0);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (mut a, mut b) = (vec![0f32; 256], vec![0f32; 256]);
    attend(&one, &cache, &q, &[], 4 * CHUNK_TOKENS, &mut a).unwrap();
    attend(&pool(), &cache, &q, &[], 4 * CHUNK_TOKENS, &mut b).unwrap();
    assert_eq!(a, b, "the merge order does not depend on the pool");
    let want = reference_attend(&cache, &q, &[], 4 * CHUNK_TOKENS).unwrap();
    assert!(max_err(&a, &want) < 1e-4);
}

#[test]
fn bad_inputs_are_refused() {
    let s = AttnShape::new(KvLayout::Gqa, 4, 2, 32, 32, DType::F16);
    let cache = KvCacheBuf::generate(&s, 10, 1).unwrap();
    let mut out = vec![0f32; 128];
    assert!(attend(&pool(), &cache, &[0.0; 128], &[], 11, &mut out).is_err());
    assert!(attend(&pool(), &cache, &[0.0; 127], &[], 5, &mut out).is_err());
    assert!(attend(&pool(), &cache, &[0.0; 128], &[], 0, &mut out).is_err());
    let mut bad = s.clone();
    bad.n_heads = 5;
    assert!(KvCacheBuf::generate(&bad, 10, 1).is_err());
}

/// Every SIMD path of this CPU against the reference, with every group size from 1 to 8 (each a
/// block of heads of its own) and 20 (8 + 8 + 4), rows of whole vectors that are not whole 32-
/// or 64-value blocks, and depths below one block of tokens and past a chunk.
#[test]
fn every_simd_path_matches_the_f64_softmax() {
    use membound_cpu::Isa;
    use membound_cpu::attention::attend_on;
    let shapes = [
        AttnShape::new(KvLayout::MlaLatent, 20, 1, 576, 512, DType::F16),
        AttnShape::new(KvLayout::Gqa, 14, 2, 64, 64, DType::BF16),
        AttnShape::new(KvLayout::Gqa, 6, 2, 48, 80, DType::F16),
        AttnShape::new(KvLayout::Gqa, 16, 2, 128, 128, DType::Q8_0),
        AttnShape::new(KvLayout::ExpandedMha, 2, 2, 160, 144, DType::F32),
        AttnShape::new(KvLayout::Gqa, 4, 2, 96, 96, DType::Q8_0),
        AttnShape::new(KvLayout::Gqa, 10, 2, 64, 64, DType::F16),
        AttnShape::new(KvLayout::Gqa, 12, 2, 32, 32, DType::BF16),
        AttnShape::new(KvLayout::Gqa, 8, 2, 64, 64, DType::F16),
    ];
    for isa in Isa::available() {
        for s in &shapes {
            for depth in [1, 5, CHUNK_TOKENS + 37] {
                let cache = KvCacheBuf::generate(s, depth, 11).unwrap();
                let q = normal_f32(12, s.n_heads * s.d_k, 1.0);
                let mut out = vec![f32::NAN; s.n_heads * s.d_v];
                attend_on(isa, &pool(), &cache, &q, &[], depth, &mut out).unwrap();
                let want = reference_attend(&cache, &q, &[], depth).unwrap();
                let e = max_err(&out, &want);
                assert!(
                    e <= 1e-4,
                    "{isa} {:?} {} {}/{} depth {depth}: error {e}",
                    s.layout,
                    s.dtype,
                    s.n_heads,
                    s.kv_heads
                );
            }
        }
    }
}
