//! The CUDA decode-attention kernels executed on the CPU against the f64 reference
//! (`membound_cpu::attention::reference_attend`): every layout and cache type, tiles and splits
//! that end part-way, sinks and windows, split-K equal to one split, and coalesced cache loads.

use membound_cpu::attention::{KvCacheBuf, reference_attend};
use membound_cuda_host::{HostAttn, available};
use membound_quant::data::normal_f32;
use membound_spec::DType;
use membound_spec::attention::AttnShape;
use membound_spec::kv::KvLayout;

fn skip() -> bool {
    if let Err(e) = available() {
        eprintln!("skipped: {e}");
        return true;
    }
    false
}

/// Runs the step on the host kernels and returns (kernel output, reference, runner).
fn run(
    s: &AttnShape,
    tokens: usize,
    depth: usize,
    splits: Option<u32>,
) -> (Vec<f32>, Vec<f32>, HostAttn) {
    run_with(s, tokens, depth, splits, false)
}

/// [`run`] with the tensor-core kernel where `mma` and the shape allow.
fn run_with(
    s: &AttnShape,
    tokens: usize,
    depth: usize,
    splits: Option<u32>,
    mma: bool,
) -> (Vec<f32>, Vec<f32>, HostAttn) {
    let cache = KvCacheBuf::generate(s, tokens, 11).unwrap();
    let q = normal_f32(5, s.n_heads * s.d_k, 1.0);
    let sinks = normal_f32(6, s.n_heads, 1.0);
    let mut h = HostAttn::new(
        s,
        tokens,
        cache.k_bytes(),
        cache.v_bytes(),
        &q,
        &sinks,
        depth,
        splits,
        mma,
    )
    .unwrap();
    h.forward().unwrap();
    let want = reference_attend(&cache, &q, &sinks, depth).unwrap();
    (h.output(), want, h)
}

fn max_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn every_layout_and_cache_type_matches_the_reference() {
    if skip() {
        return;
    }
    // 300 tokens: tiles (up to 32 rows) and splits end part-way. Every class, with a warp's
    // heads all used (8 of 128-wide rows; 4 in the 128-wide class of 4; expanded MLA's one),
    // partly used (the 64-wide class with groups of 4, the 128-wide of 4 with groups of 2, the
    // 256-wide with 6: a second warp with two of its four heads), and groups split over blocks
    // (16 heads of 128 values: two blocks of one warp; 20 MLA heads: two of five warps).
    let mut classes = std::collections::HashSet::new();
    for dtype in [DType::F16, DType::BF16, DType::Q8_0] {
        for s in [
            AttnShape::new(KvLayout::Gqa, 8, 2, 64, 64, dtype),
            AttnShape::new(KvLayout::Gqa, 8, 2, 128, 128, dtype),
            AttnShape::new(KvLayout::Gqa, 4, 2, 128, 128, dtype),
            AttnShape::new(KvLayout::Gqa, 16, 2, 128, 128, dtype),
            AttnShape::new(KvLayout::Gqa, 32, 2, 128, 128, dtype),
            AttnShape::new(KvLayout::Gqa, 6, 1, 256, 256, dtype),
            AttnShape::new(KvLayout::MlaLatent, 20, 1, 576, 512, dtype),
            AttnShape::new(KvLayout::MlaSplit, 4, 1, 576, 512, dtype),
            AttnShape::new(KvLayout::ExpandedMha, 3, 3, 192, 128, dtype),
        ] {
            let (got, want, h) = run(&s, 300, 300, Some(3));
            let e = max_err(&got, &want);
            assert!(
                e < 1e-4,
                "{:?} {} x {} {dtype}: {e}",
                s.layout,
                s.n_heads,
                s.d_k
            );
            let w = match h.plan().kernel {
                membound_cuda::Kernel::Attn(_, w) => w,
                k => panic!("{k:?} is not a split kernel"),
            };
            let g = w.geometry();
            assert!(s.d_k <= 64 * g.k_pairs && s.d_v <= 64 * g.v_pairs);
            classes.insert(w);
        }
    }
    assert_eq!(
        classes.len(),
        membound_cuda::attention::AttnWidth::ALL.len()
    );
}

#[test]
fn sinks_windows_and_shorter_depths() {
    if skip() {
        return;
    }
    let mut s = AttnShape::new(KvLayout::Gqa, 8, 1, 64, 64, DType::F16);
    s.sinks = true;
    s.window = Some(100);
    for (depth, splits) in [(300, Some(2)), (70, None), (1, None)] {
        let (got, want, _) = run(&s, 300, depth, splits);
        assert!(max_err(&got, &want) < 1e-4, "depth {depth}");
    }
}

#[test]
fn split_k_equals_one_split() {
    if skip() {
        return;
    }
    let s = AttnShape::new(KvLayout::MlaLatent, 4, 1, 576, 512, DType::Q8_0);
    let (one, want, h1) = run(&s, 500, 500, Some(1));
    let (many, _, h7) = run(&s, 500, 500, Some(7));
    // 7 asked: chunks of whole 32-row tiles, ceil(500 / 7) -> 96 tokens, 6 splits.
    assert_eq!((h1.plan().params.splits, h7.plan().params.splits), (1, 6));
    assert!(max_err(&one, &many) < 1e-5);
    assert!(max_err(&one, &want) < 1e-4);
}

#[test]
fn cache_loads_are_coalesced() {
    if skip() {
        return;
    }
    for dtype in [DType::F16, DType::Q8_0] {
        for s in [
            AttnShape::new(KvLayout::Gqa, 8, 2, 128, 128, dtype),
            AttnShape::new(KvLayout::MlaSplit, 4, 1, 576, 512, dtype),
        ] {
            let (_, _, mut h) = run(&s, 256, 256, Some(2));
            let [(k, split), _] = h.forward().unwrap();
            assert!(
                split.sector_ratio() <= 1.25,
                "{} {dtype}: {:.2}x the ideal sectors",
                k.name(),
                split.sector_ratio()
            );
        }
    }
}

#[test]
fn tensor_core_kernels_match_the_reference() {
    if skip() {
        return;
    }
    // Queries and probabilities are rounded to 16 bits for the tensor cores (F16 keeps 11 bits,
    // BF16 8): measured 2-3e-4 (F16) and 1.5-2.2e-3 (BF16) of the largest output here.
    for (dtype, tol) in [(DType::F16, 1e-3), (DType::BF16, 6e-3)] {
        let mut windowed = AttnShape::new(KvLayout::Gqa, 16, 2, 64, 64, dtype);
        windowed.window = Some(100);
        windowed.sinks = true;
        for (s, splits) in [
            (
                AttnShape::new(KvLayout::Gqa, 8, 2, 128, 128, dtype),
                Some(3),
            ),
            (AttnShape::new(KvLayout::Gqa, 32, 2, 128, 128, dtype), None),
            (AttnShape::new(KvLayout::Gqa, 6, 3, 64, 64, dtype), Some(2)),
            (windowed, Some(2)),
            // MLA latent: 20 heads in two blocks of 10, 16 heads in one.
            (
                AttnShape::new(KvLayout::MlaLatent, 20, 1, 576, 512, dtype),
                Some(3),
            ),
            (
                AttnShape::new(KvLayout::MlaLatent, 16, 1, 576, 512, dtype),
                None,
            ),
        ] {
            let (got, want, h) = run_with(&s, 300, 299, splits, true);
            assert!(
                matches!(h.plan().kernel, membound_cuda::Kernel::AttnMma(..)),
                "{:?}",
                h.plan().kernel
            );
            let e = max_err(&got, &want);
            eprintln!("tensor cores {} x {} {dtype}: {e:.2e}", s.n_heads, s.d_k);
            assert!(e < tol, "{} x {} {dtype}: {e}", s.n_heads, s.d_k);
        }
    }
    // Shapes the tensor-core kernels do not take plan the CUDA-core ones.
    let q8 = AttnShape::new(KvLayout::Gqa, 8, 2, 128, 128, DType::Q8_0);
    let split = AttnShape::new(KvLayout::MlaSplit, 4, 1, 576, 512, DType::F16);
    for s in [q8, split] {
        let (_, _, h) = run_with(&s, 64, 64, None, true);
        assert!(matches!(h.plan().kernel, membound_cuda::Kernel::Attn(..)));
    }
}
