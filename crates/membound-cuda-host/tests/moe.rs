//! The CUDA MoE kernels executed on the CPU, through the launch plan a GPU runs, against the CPU
//! reference (`membound_cpu::moe`): routing (ties, NaN, -inf, top-k = experts, groups, every
//! scoring), outputs for every weight type with tile tails, batches, the shared expert, gpt-oss's
//! biases and clamped activation, and the coalescing of the expert kernels' loads.

use membound_cpu::moe::{CpuMoe, MoeWeights, Routing, reference_forward, route};
use membound_cuda::Kernel;
use membound_cuda::moe::{MoeBuf, WeightBufs, weight_bufs};
use membound_cuda_host::{HostMoe, available};
use membound_quant::data::normal_f32;
use membound_spec::DType;
use membound_spec::model::RouterScoring;
use membound_spec::moe::{Activation, MoeLayer, MoeTypes};

fn bufs(w: &MoeWeights) -> WeightBufs<'_> {
    weight_bufs(
        &w.router,
        &w.router_bias,
        w.stacks(),
        w.biases(),
        w.shared_stacks(),
    )
}

/// hidden 288 (9 Q8_1 blocks: Q8_0/MXFP4 tiles end part-way), experts of width 96.
fn layer(types: MoeTypes) -> MoeLayer {
    let k_quant = matches!(types.gate_up, DType::Q4_K | DType::Q6_K);
    let (hidden, ff) = if k_quant { (512, 256) } else { (288, 96) };
    MoeLayer::new(hidden, 8, 2, ff, types)
}

fn skip() -> bool {
    if let Err(e) = available() {
        eprintln!("skipped: {e}");
        return true;
    }
    false
}

/// Runs the layer on the host kernels and checks ids and weights against the CPU router on
/// the kernels' own logits, then every token's output against the f64 reference; twice, on two
/// inputs through the same buffers, so a launch that finishes in its last block (routing, the
/// activations' Q8_1) must have left its counter at zero for the next launch. Returns the
/// layer (holding the second input's results) and the second input's routing.
fn check(l: MoeLayer, tokens: usize, steer: &[f32]) -> (HostMoe, Routing) {
    let w = MoeWeights::generate(&l, 5).unwrap();
    let mut host = HostMoe::new(&l, &bufs(&w), tokens, !steer.is_empty()).unwrap();
    let inputs = [3, 4].map(|seed| normal_f32(seed, tokens * l.hidden, 1.0));
    host.set_inputs(&[(&inputs[0], steer), (&inputs[1], steer)])
        .unwrap();
    let moe = CpuMoe::new(l.clone(), w).unwrap();
    let mut last = None;
    for (slot, xs) in inputs.iter().enumerate() {
        host.forward(slot).unwrap();
        last = Some(check_forward(&host, &moe, xs, tokens, steer));
    }
    (host, last.expect("two inputs"))
}

/// [`check`] of the launch just run on input `xs`.
fn check_forward(
    host: &HostMoe,
    moe: &CpuMoe,
    xs: &[f32],
    tokens: usize,
    steer: &[f32],
) -> Routing {
    let l = moe.layer();
    let logits: Vec<f32> = host.read(MoeBuf::Logits).unwrap();
    let want = moe.route_batch(&logits, steer);
    let got = Routing {
        ids: host.read(MoeBuf::Ids).unwrap(),
        weights: host.read(MoeBuf::Weights).unwrap(),
        shared: host.read(MoeBuf::SharedW).unwrap(),
    };
    assert_eq!(got.ids, want.ids, "{:?}", l.types);
    for (a, b) in got
        .weights
        .iter()
        .chain(&got.shared)
        .zip(want.weights.iter().chain(&want.shared))
    {
        assert!(
            (a - b).abs() <= 1e-6 * b.abs().max(1.0),
            "weight {a} vs {b}"
        );
    }
    let out: Vec<f32> = host.read(MoeBuf::Out).unwrap();
    let h = l.hidden;
    for t in 0..tokens {
        let r = reference_forward(
            l,
            moe.weights(),
            &xs[t * h..(t + 1) * h],
            &got,
            t,
            &membound_cuda::gemv::activation_dtype,
        )
        .unwrap();
        let scale = r.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = out[t * h..(t + 1) * h]
            .iter()
            .zip(&r)
            .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
        assert!(
            err <= 2e-2 * scale,
            "{:?} token {t}: error {err}, scale {scale}",
            l.types
        );
    }
    got
}

#[test]
fn every_weight_type_matches_the_reference() {
    if skip() {
        return;
    }
    for d in [
        DType::Q8_0,
        DType::Q4_K,
        DType::Q6_K,
        DType::MXFP4,
        DType::F16,
        DType::BF16,
    ] {
        check(layer(MoeTypes::all(d)), 1, &[]);
    }
    let mixed = MoeTypes {
        gate_up: DType::Q4_K,
        down: DType::Q6_K,
        shared_gate_up: DType::BF16,
        shared_down: DType::Q8_0,
    };
    let mut l = layer(mixed);
    l.shared_ff = 64;
    l.shared_gate = true;
    check(l, 3, &[]);
}

#[test]
fn gpt_oss_biases_clamped_activation_and_sigmoid_groups() {
    if skip() {
        return;
    }
    let mut oss = layer(MoeTypes::all(DType::MXFP4));
    oss.router = RouterScoring::TopkSoftmax;
    oss.norm_topk = false;
    oss.router_bias = true;
    oss.expert_bias = true;
    oss.activation = Activation::SwigluOai;
    check(oss, 2, &[]);
    let mut glm = layer(MoeTypes::all(DType::Q8_0));
    glm.router = RouterScoring::Sigmoid;
    glm.router_bias = true;
    glm.routed_scaling = 1.8;
    glm.n_group = 4;
    glm.topk_group = 2;
    glm.shared_ff = 96;
    check(glm, 2, &[]);
}

#[test]
fn a_steered_batch_plans_each_distinct_expert_once() {
    if skip() {
        return;
    }
    let l = layer(MoeTypes::all(DType::Q8_0));
    let (tokens, e) = (5, l.n_experts);
    let mut steer = vec![0f32; tokens * e];
    for t in 0..tokens {
        steer[t * e + (t % 3)] = 1e4;
        steer[t * e + 7] = 1e4;
    }
    let (host, r) = check(l.clone(), tokens, &steer);
    assert_eq!(r.distinct(), 4);
    // The plan: 4 slots (experts 0, 1, 2, 7 in order), choices grouped by expert.
    let plan: Vec<u32> = host.read(MoeBuf::Plan).unwrap();
    let s = 8; // min(8 experts, 10 choices)
    assert_eq!(plan[0], 4);
    assert_eq!(&plan[1..5], [0, 1, 2, 7]);
    assert_eq!(&plan[1 + s..1 + s + 5], [0, 2, 4, 5, 10]);
    let mut choices = plan[2 + 2 * s..2 + 2 * s + 10].to_vec();
    let expert_of = |i: u32| r.ids[i as usize];
    assert!(
        choices
            .windows(2)
            .all(|p| expert_of(p[0]) <= expert_of(p[1]))
    );
    choices.sort();
    assert_eq!(choices, (0..10).collect::<Vec<u32>>());
}

/// Logits set exactly through a one-hot token: each router row holds its logit in column 0.
fn routed_on_host(l: &MoeLayer, logits: &[f32], bias: &[f32]) -> (Vec<u32>, Vec<f32>) {
    let mut w = MoeWeights::generate(l, 1).unwrap();
    w.router.fill(0.0);
    for (r, &v) in logits.iter().enumerate() {
        w.router[r * l.hidden] = v;
    }
    w.router_bias = bias.to_vec();
    let mut host = HostMoe::new(l, &bufs(&w), 1, false).unwrap();
    let mut x = vec![0f32; l.hidden];
    x[0] = 1.0;
    host.set_inputs(&[(&x, &[])]).unwrap();
    host.forward(0).unwrap();
    (
        host.read(MoeBuf::Ids).unwrap(),
        host.read(MoeBuf::Weights).unwrap(),
    )
}

#[test]
fn routing_edge_cases_follow_the_reference() {
    if skip() {
        return;
    }
    let nan = f32::NAN;
    let ninf = f32::NEG_INFINITY;
    let cases: Vec<(RouterScoring, usize, usize, [f32; 8])> = vec![
        (
            RouterScoring::Softmax,
            2,
            1,
            [0.0, 2.0, 1.0, 2.0, -1.0, 0.5, 0.0, 0.0],
        ), // a tie
        (
            RouterScoring::Softmax,
            2,
            1,
            [nan, 1.0, ninf, 0.5, 0.0, 0.0, 0.0, 0.0],
        ),
        (
            RouterScoring::Softmax,
            2,
            1,
            [ninf, ninf, ninf, ninf, nan, ninf, ninf, ninf],
        ),
        (RouterScoring::TopkSoftmax, 2, 1, [ninf; 8]),
        (
            RouterScoring::Softmax,
            8,
            1,
            [0.1, 0.7, 0.3, 0.7, -2.0, 5.0, 0.0, 0.2],
        ), // k = E
        (
            RouterScoring::Sigmoid,
            2,
            4,
            [0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 4.0, 0.0],
        ), // groups
        (
            RouterScoring::TopkSoftmax,
            3,
            1,
            [1.0, 3.0, 2.0, -1.0, 3.0, 0.0, 0.0, 0.0],
        ),
    ];
    for (scoring, k, groups, logits) in cases {
        let mut l = layer(MoeTypes::all(DType::Q8_0));
        (l.router, l.top_k, l.n_group, l.topk_group) = (scoring, k, groups, 1);
        if scoring == RouterScoring::Sigmoid {
            l.router_bias = true;
        }
        let bias: Vec<f32> = if l.router_bias {
            (0..8).map(|i| 0.01 * i as f32).collect()
        } else {
            Vec::new()
        };
        let (ids, w) = routed_on_host(&l, &logits, &bias);
        let mut want_ids = vec![0; k];
        let mut want_w = vec![0.0; k];
        route(&l, &logits, &bias, &mut want_ids, &mut want_w);
        assert_eq!(ids, want_ids, "{scoring:?} {logits:?}");
        for (a, b) in w.iter().zip(&want_w) {
            assert!(
                (a - b).abs() <= 1e-6,
                "{scoring:?} {logits:?}: {w:?} vs {want_w:?}"
            );
        }
    }
}

#[test]
fn expert_kernels_read_coalesced_rows() {
    if skip() {
        return;
    }
    for d in [
        DType::Q8_0,
        DType::Q4_K,
        DType::Q6_K,
        DType::MXFP4,
        DType::BF16,
    ] {
        let (mut host, _) = check(layer(MoeTypes::all(d)), 1, &[]);
        let stats = host.forward(0).unwrap();
        for (k, s) in stats {
            let expert =
                k.name().starts_with("mb_moe_gate_up") || k.name().starts_with("mb_moe_down");
            if expert || k == Kernel::MoeRouter {
                assert!(
                    s.sector_ratio() <= 1.25,
                    "{d} {}: {:.2}x the ideal sectors",
                    k.name(),
                    s.sector_ratio()
                );
            }
        }
    }
}
