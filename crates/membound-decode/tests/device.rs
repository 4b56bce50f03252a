//! The decode step as the CUDA kernels run it (`membound_cuda::decode::step_launches`, the plan
//! a GPU runs), executed on the CPU by the host build of the kernels, against the CPU step:
//! the logits of every step, token after token with the caches, agree.
//!
//! F16 weights: both sides multiply f32 activations (the kernels' F16 GEMV takes x as f32).
//! Q8_0 and MXFP4 weights: the kernels quantize a matrix's input to Q8_1 and the CPU to Q8_0,
//! which hold the same quants and f16 scale (Q8_1 adds their sum), so the products agree too.
//! What remains is f32 summation order: measured 2026-11-28 under emulation with every weight
//! row distinct (`SyntheticSource::distinct`, so a kernel reading another head's or group's
//! rows shows), at most 6e-5 of the largest logit at every step of every case here; tolerance
//! 1e-4, and the argmax agrees.
//! (K-quant weights take Q8_K on the CPU and Q8_1 on the kernels, different blocks: not
//! compared here; the dense suite checks those GEMVs against their own arithmetic.)
//! The same comparison runs on a GPU where there is one (skipped with the reason otherwise).

use membound_cuda::decode::{Buf, GpuStep, OnGpu, StepExec, step_launches};
use membound_cuda::moe::{f32s, u32s};
use membound_cuda::{CudaError, Gpu, Probe, probe};
use membound_cuda_host::{HostStep, available};
use membound_decode::device::DeviceStep;
use membound_decode::placement::{PlacedStep, Placement};
use membound_decode::source::SyntheticSource;
use membound_decode::{CpuDecoder, DecodeError, StepOptions};
use membound_gguf::synthetic::tiny;
use membound_spec::registry::find;
use membound_spec::{DType, KvLayout, ModelSpec, Recipe};

/// The steps of each comparison: position 0 (attention over the new token alone) and two
/// steps that attend over the cache.
const TOKENS: [u32; 3] = [5, 100, 17];

fn skip() -> bool {
    if let Err(e) = available() {
        eprintln!("skipped: {e}");
        return true;
    }
    false
}

/// Runs one step of a built [`DeviceStep`] on some executor: `(step, position, token)` →
/// (logits, argmax).
type Exec<'a> = dyn FnMut(&DeviceStep, usize, u32) -> (Vec<f32>, u32) + 'a;

/// Largest relative logit difference of each step (kernels vs CPU) and whether the argmax
/// agreed; `make` builds the executor for the step.
fn compare(
    m: &ModelSpec,
    recipe: Recipe,
    layout: KvLayout,
    make: &mut dyn FnMut(&DeviceStep) -> Box<Exec<'static>>,
) -> Vec<(f32, bool)> {
    let src = SyntheticSource::distinct(m, recipe, 9);
    let mut opts = StepOptions::new(m, TOKENS.len());
    opts.layout = layout;
    opts.kv_dtype = DType::F16;
    opts.sliding_ring = false;
    let dev = DeviceStep::new(m, &src, &opts, 4).unwrap();
    let mut exec = make(&dev);
    against_cpu(m, &src, &opts, &mut |pos, t| exec(&dev, pos, t))
}

/// Largest relative logit difference of each step of `run(position, token) -> (logits,
/// argmax)` against the CPU step of `m` over `src`, and whether the argmax agreed.
fn against_cpu(
    m: &ModelSpec,
    src: &SyntheticSource,
    opts: &StepOptions,
    run: &mut dyn FnMut(usize, u32) -> (Vec<f32>, u32),
) -> Vec<(f32, bool)> {
    let mut cpu = CpuDecoder::new(m, src, opts).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    TOKENS
        .iter()
        .enumerate()
        .map(|(pos, &t)| {
            let want_token = cpu.step(&pool, t, pos).unwrap();
            let want = cpu.logits().to_vec();
            let (got, token) = run(pos, t);
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            let diff = got
                .iter()
                .zip(&want)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            (diff / scale, token == want_token)
        })
        .collect()
}

/// The host build of the kernels as the executor.
fn host(dev: &DeviceStep) -> Box<Exec<'static>> {
    let first = step_launches(&dev.desc, 0).unwrap();
    let mut host = HostStep::new(&dev.desc, &dev.weights, &first).unwrap();
    Box::new(move |dev, pos, t| {
        host.write(Buf::Embd, &dev.embed(t).unwrap()).unwrap();
        host.run(&step_launches(&dev.desc, pos).unwrap()).unwrap();
        let token: Vec<u32> = host.read(Buf::Token).unwrap();
        (host.read(Buf::Logits).unwrap(), token[0])
    })
}

fn check(
    name: &str,
    recipe: Recipe,
    tol: f32,
    make: &mut dyn FnMut(&DeviceStep) -> Box<Exec<'static>>,
) {
    let m = tiny(&find(name).unwrap(), 256);
    check_model(&m, recipe, KvLayout::native(&m), tol, make);
}

/// [`check`] of `name` in F16 with its cache in `layout`.
fn check_layout(
    name: &str,
    layout: KvLayout,
    make: &mut dyn FnMut(&DeviceStep) -> Box<Exec<'static>>,
) {
    let m = tiny(&find(name).unwrap(), 256);
    check_model(&m, Recipe::F16, layout, 1e-4, make);
}

fn check_model(
    m: &ModelSpec,
    recipe: Recipe,
    layout: KvLayout,
    tol: f32,
    make: &mut dyn FnMut(&DeviceStep) -> Box<Exec<'static>>,
) {
    let name = &m.name;
    let r = compare(m, recipe, layout, make);
    eprintln!("{name} {} {layout}: {r:?}", recipe.name());
    for (step, (d, _)) in r.iter().enumerate() {
        assert!(
            *d <= tol,
            "{name} {} step {step}: logits differ by {d}",
            recipe.name()
        );
    }
    assert!(r.iter().all(|x| x.1), "{name}: argmax differs: {r:?}");
}

#[test]
fn dense_gqa_models_run_the_same_step_on_the_kernels() {
    if skip() {
        return;
    }
    // Llama (interleaved RoPE), Qwen3 (QK-norm, NEOX), Gemma 3 (sliding layers, GELU).
    for name in ["llama-3.1-8b", "qwen3-32b", "gemma-3-27b"] {
        check(name, Recipe::F16, 1e-4, &mut host);
    }
}

#[test]
fn moe_models_run_the_same_step_on_the_kernels() {
    if skip() {
        return;
    }
    // Qwen3-MoE (softmax top-k, renormalised) and gpt-oss (biases, sinks, sliding layers,
    // MXFP4 experts with its clamped SwiGLU).
    check("qwen3-30b-a3b", Recipe::F16, 1e-4, &mut host);
    check("qwen3-30b-a3b", Recipe::Q8_0, 1e-4, &mut host);
    check("gpt-oss-20b", Recipe::MXFP4_MOE, 1e-4, &mut host);
}

/// Largest relative logit difference of each step of `m` placed as `placement` (device stages
/// on executors from `exec`) against the whole step on the CPU, and whether the argmax agreed.
fn compare_placed<E: StepExec>(
    m: &ModelSpec,
    recipe: Recipe,
    placement: Placement,
    exec: &mut dyn FnMut(usize, &DeviceStep) -> Result<E, DecodeError>,
) -> Vec<(f32, bool)> {
    let src = SyntheticSource::distinct(m, recipe, 9);
    let mut opts = StepOptions::new(m, TOKENS.len());
    opts.sliding_ring = false;
    let mut placed = PlacedStep::new(m, &src, &opts, 4, placement, exec).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    against_cpu(m, &src, &opts, &mut |pos, t| {
        let token = placed.step(&pool, t, pos).unwrap();
        (placed.logits().unwrap(), token)
    })
}

/// Every placement case: (model, recipe, placement).
const PLACED: [(&str, Recipe, Placement); 5] = [
    ("llama-3.1-8b", Recipe::F16, Placement::Split { at: 1 }),
    (
        "llama-3.1-8b",
        Recipe::F16,
        Placement::Offload { cpu_layers: 1 },
    ),
    (
        "qwen3-30b-a3b",
        Recipe::Q8_0,
        Placement::Offload { cpu_layers: 1 },
    ),
    ("gpt-oss-20b", Recipe::MXFP4_MOE, Placement::Split { at: 3 }),
    // GLM-4.7-Flash (the seed's offload case): its dense first layer and an MLA MoE layer on
    // the CPU.
    (
        "glm-4.7-flash",
        Recipe::Q8_0,
        Placement::Offload { cpu_layers: 2 },
    ),
];

fn check_placed<E: StepExec>(exec: &mut dyn FnMut(usize, &DeviceStep) -> Result<E, DecodeError>) {
    for (name, recipe, placement) in PLACED {
        let m = tiny(&find(name).unwrap(), 256);
        let r = compare_placed(&m, recipe, placement, exec);
        eprintln!("{name} {} {placement}: {r:?}", recipe.name());
        for (step, (d, same)) in r.iter().enumerate() {
            assert!(
                *d <= 1e-4 && *same,
                "{name} {placement} step {step}: logits differ by {d}, argmax equal: {same}"
            );
        }
    }
}

/// The host build of the kernels as a stage's executor.
fn host_stage(_: usize, dev: &DeviceStep) -> Result<HostStep, DecodeError> {
    let first = step_launches(&dev.desc, 0).unwrap();
    Ok(HostStep::new(&dev.desc, &dev.weights, &first).unwrap())
}

#[test]
fn a_step_split_across_devices_or_offloaded_equals_the_whole_step() {
    if skip() {
        return;
    }
    check_placed(&mut host_stage);
}

#[test]
fn placements_that_leave_a_device_empty_are_refused() {
    let m = tiny(&find("llama-3.1-8b").unwrap(), 256);
    let n = m.n_layers;
    for p in [
        Placement::Split { at: 0 },
        Placement::Split { at: n },
        Placement::Offload { cpu_layers: 0 },
        Placement::Offload { cpu_layers: n },
    ] {
        let e = p.check(&m).err().unwrap();
        assert!(e.to_string().contains("without layers"), "{p}: {e}");
    }
    assert!(Placement::Split { at: 1 }.check(&m).is_ok());
    assert_eq!(Placement::Split { at: 1 }.to_string(), "split1");
    assert_eq!(Placement::Offload { cpu_layers: 4 }.to_string(), "cpu4");
}

#[test]
fn mla_models_run_the_same_step_on_the_kernels() {
    if skip() {
        return;
    }
    // DeepSeek-V2-Lite (no q_lora, a dense first layer, shared experts; Q8_0: W_UK and W_UV
    // take Q8_1 inputs quantized per head) and GLM-4.7-Flash (q_lora, F16), latent cache (V
    // read from the K rows) and split cache. (GLM in Q8_0 differs by 1.4-1.8 %, measured: the f32
    // sums before an activation quantization differ in their last bits — 7e-8 after W_UV —
    // and a quant that rounds the other way moves the next product by ~0.2 %; traced launch by
    // launch, not a defect.)
    check("deepseek-v2-lite", Recipe::Q8_0, 1e-4, &mut host);
    check_layout("glm-4.7-flash", KvLayout::MlaLatent, &mut host);
    check_layout("glm-4.7-flash", KvLayout::MlaSplit, &mut host);
}

#[test]
fn qwen3_next_runs_the_same_step_on_the_kernels() {
    if skip() {
        return;
    }
    // Gated DeltaNet layers (convolution, delta rule over double-buffered states: each step
    // starts from the states the last one left) and full-attention layers with the output gate
    // and a quarter of each head rotated; a MoE FFN with a shared expert.
    check("qwen3-coder-next", Recipe::F16, 1e-4, &mut host);
}

/// A step's plan splits into its layers and the embedding and head: every launch in one part,
/// each layer from its first norm (reading the residual stream) to its FFN's residual add (a
/// launch of its own, or the last product adding into the stream), quantizing its own GEMV
/// inputs, so a layer replays alone (as the GPU times a sample's
/// layers) and the parts in order are the step.
#[test]
fn a_plan_splits_into_layers_that_run_alone() {
    use membound_cuda::Kernel;
    use membound_cuda::decode::{StepArg, step_plan};
    if skip() {
        return;
    }
    for name in ["qwen3-coder-next", "llama-3.1-8b", "glm-4.7-flash"] {
        let recipe = Recipe::Q8_0;
        let m = tiny(&find(name).unwrap(), 256);
        let src = SyntheticSource::distinct(&m, recipe, 3);
        let dev = DeviceStep::new(&m, &src, &StepOptions::new(&m, 4), 4).unwrap();
        let plan = step_plan(&dev.desc, 2).unwrap();
        assert_eq!(plan.layers.len(), m.n_layers as usize, "{name}");
        let inside: usize = plan.layers.iter().map(|r| r.len()).sum();
        assert_eq!(inside + plan.fixed().len(), plan.launches.len(), "{name}");
        assert!(plan.layers.windows(2).all(|w| w[0].end == w[1].start));
        for k in 0..plan.layers.len() {
            let l = plan.layer(k);
            assert!(
                matches!(l[0].args[0], StepArg::In(Buf::X)) && l[0].kernel == Kernel::DecRmsNorm,
                "{name} layer {k} starts from the residual stream"
            );
            let last = l.last().unwrap();
            assert!(
                last.args.iter().any(|a| matches!(a, StepArg::Out(Buf::X))),
                "{name} layer {k} ends with its residual add"
            );
            let first_quant = l
                .iter()
                .position(|x| x.args.iter().any(|a| matches!(a, StepArg::Out(Buf::Xq))));
            let first_xq = l.iter().position(|x| {
                x.kernel != Kernel::QuantizeQ8_1
                    && x.args.iter().any(|a| matches!(a, StepArg::In(Buf::Xq)))
            });
            if let Some(x) = first_xq {
                assert!(
                    first_quant.is_some_and(|q| q < x),
                    "{name} layer {k} quantizes its input"
                );
            }
        }
        let mut host = HostStep::new(&dev.desc, &dev.weights, &plan.launches).unwrap();
        host.write(Buf::Embd, &dev.embed(7).unwrap()).unwrap();
        host.run(&plan.launches).unwrap();
        let whole: Vec<f32> = host.read(Buf::Logits).unwrap();
        // The step again in parts: the embedding's copy, each layer alone, the head.
        let (first, last) = (plan.layers[0].start, plan.layers.last().unwrap().end);
        host.run(&plan.launches[..first]).unwrap();
        for k in 0..plan.layers.len() {
            host.run(plan.layer(k)).unwrap();
        }
        host.run(&plan.launches[last..]).unwrap();
        assert_eq!(plan.fixed().len(), plan.launches.len() - (last - first));
        let parts: Vec<f32> = host.read(Buf::Logits).unwrap();
        assert_eq!(whole, parts, "{name}: the parts in order are the step");
    }
}

#[test]
fn expanded_mla_is_refused_with_a_reason() {
    let m = tiny(&find("glm-4.7-flash").unwrap(), 256);
    let src = SyntheticSource::new(&m, Recipe::Q8_0, 1);
    let mut opts = StepOptions::new(&m, 2);
    opts.layout = KvLayout::ExpandedMha;
    let e = DeviceStep::new(&m, &src, &opts, 4).err().unwrap();
    assert!(e.to_string().contains("expanded"), "{e}");
}

/// GPU 0, or `None` (with the reason printed) where there is none or it cannot build kernels.
fn gpu() -> Option<std::sync::Arc<Gpu>> {
    match probe() {
        Probe::Unavailable { reason } => {
            println!("skipped, no GPU: {reason}");
            None
        }
        Probe::Devices { devices } => match Gpu::new(0) {
            Ok(g) => Some(std::sync::Arc::new(g)),
            Err(e @ (CudaError::NvrtcUnavailable(_) | CudaError::Unavailable(_))) => {
                println!("skipped, {} found but unusable: {e}", devices[0].label());
                None
            }
            Err(e) => panic!("{} found but Gpu::new(0) failed: {e}", devices[0].label()),
        },
    }
}

#[test]
fn gpu_decode_equals_cpu_decode() {
    let Some(g) = gpu() else {
        return;
    };
    let mut on_gpu = |dev: &DeviceStep| -> Box<Exec<'static>> {
        let g = g.clone();
        let first = step_launches(&dev.desc, 0).unwrap();
        let mut step = GpuStep::new(&g, &dev.desc, &dev.weights, &first).unwrap();
        Box::new(move |dev, pos, t| {
            step.write(&g, Buf::Embd, &dev.embed(t).unwrap()).unwrap();
            step.run(&g, &step_launches(&dev.desc, pos).unwrap())
                .unwrap();
            g.synchronize().unwrap();
            let logits = f32s(&step.read(&g, Buf::Logits).unwrap());
            let token = u32s(&step.read(&g, Buf::Token).unwrap())[0];
            (logits, token)
        })
    };
    check("llama-3.1-8b", Recipe::F16, 1e-4, &mut on_gpu);
    check("qwen3-32b", Recipe::F16, 1e-4, &mut on_gpu);
    check("deepseek-v2-lite", Recipe::F16, 1e-4, &mut on_gpu);
    check_layout("glm-4.7-flash", KvLayout::MlaSplit, &mut on_gpu);
    // Quantized activations: the GPU's f32 sums (FMA contraction, order) may round a quant the
    // other way, which moves the logits by up to ~2 % (seen under emulation with GLM Q8_0).
    check("qwen3-coder-next", Recipe::F16, 1e-4, &mut on_gpu);
    check("qwen3-30b-a3b", Recipe::Q8_0, 3e-2, &mut on_gpu);
    check("gpt-oss-20b", Recipe::MXFP4_MOE, 3e-2, &mut on_gpu);
}

#[test]
fn gpu_placements_equal_the_whole_cpu_step() {
    let Some(g) = gpu() else {
        return;
    };
    // One GPU holds both stages of a split (each its own buffers), as the decode suite's
    // split case does on a machine with one GPU.
    check_placed(&mut |_, dev: &DeviceStep| {
        let first = step_launches(&dev.desc, 0).unwrap();
        let step = GpuStep::new(&g, &dev.desc, &dev.weights, &first).unwrap();
        Ok(OnGpu { gpu: &g, step })
    });
}

/// The fused step (`MEMBOUND_FUSE`, on by default: norms and the gated activation quantize the
/// next GEMV's input, one launch takes a GQA layer's heads from the projections into the caches,
/// the output projections and MoE combines add into the residual stream) computes the same
/// logits as one launch per operation, in fewer launches per layer. The fused kernels repeat the
/// same arithmetic (QK-norm sums a head's squares in another order), so the logits agree within
/// 1e-5 of the largest (measured 2026-11-28: identical in every case here).
#[test]
fn fused_steps_take_fewer_launches_and_compute_the_same() {
    use membound_cuda::decode::step_plan;
    if skip() {
        return;
    }
    // (model, weights, cache type, launches of the last layer one per operation and fused,
    // both run and compared). The others' fused steps run against the CPU step in the tests
    // above; here only their launch counts are checked (the test's time in CI).
    let cases = [
        ("llama-3.1-8b", Recipe::Q8_0, DType::Q8_0, (22, 10), false),
        // Q4_K_M: the last layer's attn_v is Q6_K, so Q and K stack without it.
        ("llama-3.1-8b", Recipe::Q4_K_M, DType::F16, (22, 11), true),
        (
            "qwen2.5-coder-7b",
            Recipe::Q8_0,
            DType::BF16,
            (26, 12),
            true,
        ),
        ("qwen3-32b", Recipe::Q8_0, DType::F16, (24, 10), false),
        ("gemma-3-4b", Recipe::Q8_0, DType::F16, (26, 14), false),
        ("qwen3-30b-a3b", Recipe::Q8_0, DType::Q8_0, (21, 10), true),
        ("gpt-oss-20b", Recipe::Q8_0, DType::F16, (23, 12), false),
        ("glm-4.7-flash", Recipe::Q8_0, DType::F16, (33, 28), false),
        (
            "qwen3-coder-next",
            Recipe::Q8_0,
            DType::F16,
            (27, 15),
            false,
        ),
    ];
    for (name, recipe, kv, (plain_n, fused_n), run) in cases {
        let mut m = tiny(&find(name).unwrap(), 256);
        if recipe == Recipe::Q4_K_M {
            // K-quant rows are whole 256-value blocks: heads of 64 make attn_output's 256.
            m.attention.head_dim = Some(64);
            m.attention.v_head_dim = Some(64);
        }
        let src = SyntheticSource::distinct(&m, recipe, 5);
        let mut opts = StepOptions::new(&m, TOKENS.len());
        opts.kv_dtype = kv;
        opts.sliding_ring = false;
        let mut logits = Vec::new();
        let mut per_layer = Vec::new();
        for fuse in [false, true] {
            opts.fuse = fuse;
            let dev = DeviceStep::new(&m, &src, &opts, 4).unwrap();
            let plan = step_plan(&dev.desc, 0).unwrap();
            per_layer.push(plan.layer(plan.layers.len() - 1).len());
            if !run {
                continue;
            }
            let first = step_launches(&dev.desc, 0).unwrap();
            let mut host = HostStep::new(&dev.desc, &dev.weights, &first).unwrap();
            let mut steps = Vec::new();
            // Position 0 and one over the cache.
            for (pos, &t) in TOKENS[..2].iter().enumerate() {
                let plan = step_plan(&dev.desc, pos).unwrap();
                host.write(Buf::Embd, &dev.embed(t).unwrap()).unwrap();
                host.run(&plan.launches).unwrap();
                steps.push(host.read::<f32>(Buf::Logits).unwrap());
            }
            logits.push(steps);
        }
        eprintln!("{name}: launches of the last layer {per_layer:?}");
        assert_eq!(
            per_layer,
            [plain_n, fused_n],
            "{name} {}: one per operation, fused",
            recipe.name()
        );
        if !run {
            continue;
        }
        for (pos, (a, b)) in logits[0].iter().zip(&logits[1]).enumerate() {
            let top = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            eprintln!("{name} step {pos}: fused differs by {d:e} of {top:e}");
            assert!(d <= 1e-5 * top, "{name} step {pos}: {d} of {top}");
        }
    }
}

/// The bytes each launch must read (`launch_read_bytes`, the decode suite's launch-by-launch
/// figures) add up to the layer's weights as uploaded and the cache rows attended: a dense
/// layer's matrices (stacked or not), a MoE layer's router and its top-k experts' rows.
#[test]
fn launch_bytes_add_up_to_the_layers_weights_and_cache() {
    use membound_cuda::decode::{Wt, launch_read_bytes, step_plan};
    use membound_cuda::moe::MoeBuf;
    for (name, fuse) in [
        ("llama-3.1-8b", true),
        ("llama-3.1-8b", false),
        ("qwen3-30b-a3b", true),
    ] {
        let m = tiny(&find(name).unwrap(), 256);
        let src = SyntheticSource::new(&m, Recipe::Q8_0, 1);
        let mut opts = StepOptions::new(&m, 8);
        opts.fuse = fuse;
        opts.kv_dtype = DType::Q8_0;
        let dev = DeviceStep::new(&m, &src, &opts, 4).unwrap();
        let pos = 5;
        let plan = step_plan(&dev.desc, pos).unwrap();
        let got: u64 = plan.layer(0).iter().filter_map(launch_read_bytes).sum();
        let size = |b: Buf| {
            dev.weights
                .iter()
                .find(|(w, _)| *w == b)
                .map_or(0, |(_, v)| v.len() as u64)
        };
        let mats = [
            Wt::Qkv,
            Wt::Q,
            Wt::K,
            Wt::V,
            Wt::O,
            Wt::GateUp,
            Wt::Gate,
            Wt::Up,
            Wt::Down,
        ];
        let mut want: u64 = mats.iter().map(|&t| size(Buf::W(0, t))).sum();
        let s = dev.desc.layers[0].attn.as_ref().unwrap();
        let (kb, vb) = s.row_bytes();
        want += (s.kv_heads * (pos + 1) * (kb + vb)) as u64;
        if let membound_cuda::decode::FfnDesc::Moe(l) = &dev.desc.layers[0].ffn {
            let per_expert = |mb: MoeBuf| size(Buf::Moe(0, mb)) / l.n_experts as u64;
            want += size(Buf::Moe(0, MoeBuf::Router));
            want += l.top_k as u64
                * [MoeBuf::Gate, MoeBuf::Up, MoeBuf::Down]
                    .map(per_expert)
                    .iter()
                    .sum::<u64>();
        }
        assert_eq!(got, want, "{name} fused {fuse}");
    }
}
