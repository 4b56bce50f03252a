//! The CPU MoE layer against the naive f64 reference, and the router against hand-worked cases.

use membound_cpu::moe::{CpuMoe, MoeWeights, Routing, reference_forward, route};
use membound_quant::data::normal_f32;
use membound_spec::DType;
use membound_spec::model::RouterScoring;
use membound_spec::moe::{Activation, MoeLayer, MoeTypes};

/// The CPU kernels' activation types.
fn cpu_act(weight: DType) -> DType {
    membound_cpu::act_dtype(weight).unwrap_or(DType::F32)
}

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

/// A small layer: hidden 256, 8 experts of width 256, top-2.
fn small(types: MoeTypes) -> MoeLayer {
    MoeLayer::new(256, 8, 2, 256, types)
}

fn routed(layer: &MoeLayer, logits: &[f32], bias: &[f32]) -> (Vec<u32>, Vec<f32>) {
    let mut ids = vec![0; layer.top_k];
    let mut w = vec![0.0; layer.top_k];
    route(layer, logits, bias, &mut ids, &mut w);
    (ids, w)
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
}

#[test]
fn router_softmax_renormalised_top_k() {
    let l = small(MoeTypes::all(DType::Q8_0));
    let logits = [0.0, 2.0, 1.0, 2.0, -1.0, 0.5, 0.0, 0.0];
    let (ids, w) = routed(&l, &logits, &[]);
    // Ties (experts 1 and 3 at 2.0) go to the lower index first; equal scores renormalise
    // to one half each.
    assert_eq!(ids, [1, 3]);
    assert!(close(&w, &[0.5, 0.5]), "{w:?}");
    let mut no_norm = l.clone();
    no_norm.norm_topk = false;
    let (_, w) = routed(&no_norm, &logits, &[]);
    let z: f32 = logits.iter().map(|v| v.exp()).sum();
    assert!(close(&w, &[2f32.exp() / z, 2f32.exp() / z]), "{w:?}");
}

#[test]
fn router_nan_counts_as_minus_infinity_and_all_minus_infinity_gives_zero_weights() {
    let mut l = small(MoeTypes::all(DType::Q8_0));
    let mut logits = [f32::NAN, 1.0, f32::NEG_INFINITY, 0.5, 0.0, 0.0, 0.0, 0.0];
    let (ids, w) = routed(&l, &logits, &[]);
    assert_eq!(ids, [1, 3]);
    assert!(w.iter().all(|v| v.is_finite()));
    // Every logit -inf or NaN: scores 0, selection by index, weights 0 (no NaN).
    logits = [f32::NEG_INFINITY; 8];
    logits[5] = f32::NAN;
    let (ids, w) = routed(&l, &logits, &[]);
    assert_eq!(ids, [0, 1]);
    assert_eq!(w, [0.0, 0.0]);
    l.router = RouterScoring::TopkSoftmax;
    let (ids, w) = routed(&l, &logits, &[]);
    assert_eq!((ids, w), (vec![0, 1], vec![0.0, 0.0]));
}

#[test]
fn router_top_k_equal_to_experts_selects_all_in_order() {
    let mut l = small(MoeTypes::all(DType::Q8_0));
    l.top_k = 8;
    l.norm_topk = false;
    let logits = [0.1, 0.7, 0.3, 0.7, -2.0, 5.0, 0.0, 0.2];
    let (ids, w) = routed(&l, &logits, &[]);
    assert_eq!(ids, [5, 1, 3, 2, 7, 0, 6, 4]);
    assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
}

#[test]
fn router_sigmoid_with_selection_bias_and_scaling() {
    let mut l = small(MoeTypes::all(DType::Q8_0));
    l.router = RouterScoring::Sigmoid;
    l.routed_scaling = 2.5;
    let logits = [0.0, 3.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0];
    // The bias moves expert 0 to the top, but its weight is its own score (sigmoid 0 = 0.5).
    let bias = [10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let (ids, w) = routed(&l, &logits, &bias);
    assert_eq!(ids, [0, 1]);
    let s = |v: f32| 1.0 / (1.0 + (-v).exp());
    let sum = s(0.0) + s(3.0);
    assert!(
        close(&w, &[2.5 * s(0.0) / sum, 2.5 * s(3.0) / sum]),
        "{w:?}"
    );
}

#[test]
fn router_topk_softmax_over_the_selected_logits() {
    let mut l = small(MoeTypes::all(DType::Q8_0));
    l.router = RouterScoring::TopkSoftmax;
    l.norm_topk = false;
    let logits = [1.0, 3.0, 2.0, -1.0, 0.0, 0.0, 0.0, 0.0];
    let (ids, w) = routed(&l, &logits, &[]);
    assert_eq!(ids, [1, 2]);
    let e = 1f32.exp();
    assert!(close(&w, &[e / (e + 1.0), 1.0 / (e + 1.0)]), "{w:?}");
}

#[test]
fn router_group_limit_keeps_the_best_groups() {
    let mut l = small(MoeTypes::all(DType::Q8_0));
    l.router = RouterScoring::Sigmoid;
    l.n_group = 4; // groups {0,1} {2,3} {4,5} {6,7}
    l.topk_group = 1;
    // Expert 6 alone is the best, but group {2,3} has the best sum of its top two.
    let logits = [0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 4.0, 0.0];
    let (ids, _) = routed(&l, &logits, &[]);
    assert_eq!(ids, [2, 3]);
    l.topk_group = 2;
    let (ids, _) = routed(&l, &logits, &[]);
    assert_eq!(ids, [6, 2]);
}

/// Runs a layer on a batch and checks every token against the f64 reference; returns the
/// routing.
fn check_layer(layer: MoeLayer, tokens: usize, steer: &[f32], tol: f32) -> Routing {
    let w = MoeWeights::generate(&layer, 42).unwrap();
    let moe = CpuMoe::new(layer.clone(), w).unwrap();
    let h = layer.hidden;
    let xs = normal_f32(9, tokens * h, 1.0);
    let mut out = vec![f32::NAN; tokens * h];
    moe.forward(&pool(), &xs, steer, &mut out).unwrap();
    let r = moe.last_routing();
    for t in 0..tokens {
        let want = reference_forward(
            moe.layer(),
            moe.weights(),
            &xs[t * h..(t + 1) * h],
            &r,
            t,
            &cpu_act,
        )
        .unwrap();
        let got = &out[t * h..(t + 1) * h];
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0);
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
        assert!(
            err <= tol * scale,
            "{:?} token {t}: error {err} vs scale {scale}",
            layer.types
        );
    }
    r
}

#[test]
fn forward_matches_the_reference_for_every_type() {
    for dtype in [
        DType::Q8_0,
        DType::Q4_K,
        DType::Q6_K,
        DType::MXFP4,
        DType::BF16,
        DType::F16,
    ] {
        check_layer(small(MoeTypes::all(dtype)), 1, &[], 1e-3);
    }
    let mixed = MoeTypes {
        gate_up: DType::Q4_K,
        down: DType::Q6_K,
        shared_gate_up: DType::Q8_0,
        shared_down: DType::Q8_0,
    };
    check_layer(small(mixed), 1, &[], 1e-3);
}

#[test]
fn forward_with_shared_expert_gate_biases_and_clamped_activation() {
    let mut l = small(MoeTypes::all(DType::Q8_0));
    l.shared_ff = 512;
    l.shared_gate = true;
    check_layer(l, 2, &[], 1e-3);
    let mut oss = small(MoeTypes::all(DType::MXFP4));
    oss.router = RouterScoring::TopkSoftmax;
    oss.norm_topk = false;
    oss.router_bias = true;
    oss.expert_bias = true;
    oss.activation = Activation::SwigluOai;
    check_layer(oss, 1, &[], 1e-3);
}

#[test]
fn a_batch_reads_each_distinct_expert_once_and_steering_picks_the_experts() {
    let l = small(MoeTypes::all(DType::Q4_K));
    let (tokens, e) = (4, l.n_experts);
    // Steer token t to experts {t, t+1}: 5 distinct over the batch.
    let mut steer = vec![0f32; tokens * e];
    for t in 0..tokens {
        steer[t * e + t] = 1e4;
        steer[t * e + t + 1] = 1e4;
    }
    let r = check_layer(l, tokens, &steer, 1e-3);
    assert_eq!(r.distinct(), 5);
    for t in 0..tokens {
        let mut ids = r.ids[2 * t..2 * t + 2].to_vec();
        ids.sort();
        assert_eq!(ids, [t as u32, t as u32 + 1]);
    }
}

#[test]
fn generated_experts_differ() {
    let l = small(MoeTypes::all(DType::Q8_0));
    let w = MoeWeights::generate(&l, 1).unwrap();
    for e in 1..l.n_experts {
        assert_ne!(w.gate.row(0, 0), w.gate.row(e, 0), "expert {e}");
    }
}

#[test]
fn bad_shapes_are_refused() {
    let l = small(MoeTypes::all(DType::Q8_0));
    let mut w = MoeWeights::generate(&l, 1).unwrap();
    w.router.pop();
    assert!(CpuMoe::new(l.clone(), w).is_err());
    let w = MoeWeights::generate(&l, 1).unwrap();
    let moe = CpuMoe::new(l, w).unwrap();
    let mut out = vec![0f32; 100];
    assert!(moe.forward(&pool(), &[0.0; 100], &[], &mut out).is_err());
}
