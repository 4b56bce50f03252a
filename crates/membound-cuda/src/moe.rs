//! One MoE layer for a batch of decode tokens on a GPU (`kernels/moe.cu`): the launch sequence
//! as data ([`moe_launches`]: kernels, geometry, the named buffers each reads and writes),
//! executed by [`GpuMoe`] on a device and by `membound-cuda-host` on the CPU, so both run the
//! same plan. The router follows `membound_cpu::moe::route` (the reference).

use std::borrow::Cow;
use std::collections::BTreeMap;

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use membound_spec::DType;
use membound_spec::model::RouterScoring;
use membound_spec::moe::{Activation, MoeLayer};

use crate::error::{CudaError, Result};
use crate::gemv::Q8_1_BLOCK_BYTES;
use crate::gpu::{Gpu, Kernel};
use crate::params::{MoeParams, QuantizeParams};

/// Warps (rows) per block of the expert kernels (`MOE_WARPS`).
pub const MOE_WARPS: u32 = 4;
/// Threads per block of the router launch (`MOE_ROUTE_THREADS`): a warp per router row, and
/// the last block to finish routes the batch with all of them.
pub const MOE_ROUTE_THREADS: u32 = 256;
/// Most routed experts the routing kernel takes (`MOE_MAX_EXPERTS`).
pub const MOE_MAX_EXPERTS: usize = 512;
/// Most choices (tokens × top-k) of one batch (`MOE_MAX_CHOICES`).
pub const MOE_MAX_CHOICES: usize = 1024;
/// Most expert groups (one warp lane each).
pub const MOE_MAX_GROUPS: usize = 32;

/// `MoeParams::scoring` values.
pub const MOE_SOFTMAX: u32 = 0;
/// Sigmoid scoring.
pub const MOE_SIGMOID: u32 = 1;
/// Top-k on the logits, softmax over the selected.
pub const MOE_TOPK_SOFTMAX: u32 = 2;
/// `MoeParams::flags` bits (as `kernels/params.cuh`).
pub const MOE_NORM_TOPK: u32 = 1;
/// Router bias added to the logits.
pub const MOE_LOGIT_BIAS: u32 = 2;
/// Router bias added to the selection keys only.
pub const MOE_SELECTION_BIAS: u32 = 4;
/// Per-token steering added to the selection keys.
pub const MOE_STEER: u32 = 8;
/// The router's last row gates the shared expert.
pub const MOE_SHARED_GATE: u32 = 16;
/// Per-expert biases.
pub const MOE_EXPERT_BIAS: u32 = 32;
/// gpt-oss's clamped SwiGLU.
pub const MOE_SWIGLU_OAI: u32 = 64;
/// The combine adds the shared expert's output.
pub const MOE_SHARED_OUT: u32 = 128;
/// `MoeParams::flags` of the combine: add the layer's output into `out` (the residual stream).
pub const MOE_ACCUMULATE: u32 = 256;
/// `MoeParams::flags` of the router: it also writes x as Q8_1 ([`MoeBuf::Xq`]).
pub const MOE_QUANT_X: u32 = 512;
/// `MoeParams::flags` of a gate/up pass: the last block of each 32 rows writes their Q8_1
/// activations (the down product's input), so no quantization launch follows.
pub const MOE_QUANT_ACT: u32 = 1024;
/// `MoeParams::flags` of the routed down launch of a layer without a shared expert: the last
/// block of each row group combines the choices into [`MoeBuf::Out`], so no combine launch
/// follows.
pub const MOE_COMBINE: u32 = 2048;

/// The buffers of one MoE layer's launches (weights, inputs, intermediates, output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MoeBuf {
    /// Input tokens, `tokens × hidden` f32.
    X,
    /// Their Q8_1 blocks.
    Xq,
    /// Router rows, F32.
    Router,
    /// Router bias (`n_experts` f32).
    RouterBias,
    /// Steering added to the selection keys, `tokens × n_experts` f32.
    Steer,
    /// Stacked gate, up and down experts.
    Gate,
    /// See [`MoeBuf::Gate`].
    Up,
    /// See [`MoeBuf::Gate`].
    Down,
    /// Expert biases (`n_experts × ff`, `n_experts × ff`, `n_experts × hidden` f32).
    GateBias,
    /// See [`MoeBuf::GateBias`].
    UpBias,
    /// See [`MoeBuf::GateBias`].
    DownBias,
    /// The shared expert's gate, up and down.
    SharedGate,
    /// See [`MoeBuf::SharedGate`].
    SharedUp,
    /// See [`MoeBuf::SharedGate`].
    SharedDown,
    /// Router logits, `tokens × router_rows` f32.
    Logits,
    /// Selected experts, `tokens × top_k` u32.
    Ids,
    /// Their weights, `tokens × top_k` f32.
    Weights,
    /// Shared-expert factors, `tokens` f32.
    SharedW,
    /// The routed plan (slots and choices, see moe.cu).
    Plan,
    /// The shared expert's one-slot plan ([`shared_plan`]).
    SharedPlan,
    /// Activations of the routed choices, `tokens × top_k × ff` f32, and their Q8_1 blocks.
    Act,
    /// See [`MoeBuf::Act`].
    ActQ,
    /// Weighted down outputs of the routed choices, `tokens × top_k × hidden` f32.
    Y,
    /// The shared expert's activations and their Q8_1 blocks.
    SharedAct,
    /// See [`MoeBuf::SharedAct`].
    SharedActQ,
    /// The shared expert's weighted output, `tokens × hidden` f32.
    SharedY,
    /// The layer's output, `tokens × hidden` f32.
    Out,
    /// The router launch's counter of finished blocks (one u32; the last block routes).
    RouteSync,
    /// The routed gate/up launch's counters, one per slot and 32 rows (the last block of each
    /// quantizes them), and the shared expert's.
    ActSync,
    /// See [`MoeBuf::ActSync`].
    SharedSync,
    /// The routed down launch's counters, one per row group (the last block combines it).
    DownSync,
    /// A 16-byte stand-in for an argument a kernel does not read (its flag is off).
    Dummy,
}

/// One kernel argument of a [`MoeLaunch`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MoeArg {
    /// A buffer the kernel reads.
    In(MoeBuf),
    /// A buffer the kernel writes.
    Out(MoeBuf),
    /// The MoE parameters.
    Moe(MoeParams),
    /// The Q8_1 quantization's parameters.
    Quantize(QuantizeParams),
}

/// One launch of a layer's sequence.
#[derive(Clone, Debug)]
pub struct MoeLaunch {
    /// The kernel.
    pub kernel: Kernel,
    /// Its geometry.
    pub config: LaunchConfig,
    /// Its arguments in order.
    pub args: Vec<MoeArg>,
}

/// The expert kernels (gate/up, down) of a weight type.
pub fn expert_kernels(dtype: DType) -> Result<(Kernel, Kernel)> {
    Ok(match dtype {
        DType::Q8_0 => (Kernel::MoeGateUpQ8_0, Kernel::MoeDownQ8_0),
        DType::Q4_K => (Kernel::MoeGateUpQ4K, Kernel::MoeDownQ4K),
        DType::Q6_K => (Kernel::MoeGateUpQ6K, Kernel::MoeDownQ6K),
        DType::MXFP4 => (Kernel::MoeGateUpMxfp4, Kernel::MoeDownMxfp4),
        DType::F16 => (Kernel::MoeGateUpF16, Kernel::MoeDownF16),
        DType::BF16 => (Kernel::MoeGateUpBf16, Kernel::MoeDownBf16),
        other => {
            return Err(CudaError::invalid(
                "moe",
                format!(
                    "no CUDA MoE kernel for {other} (supported: q8_0, q4_k, q6_k, mxfp4, f16, bf16)"
                ),
            ));
        }
    })
}

fn bad(reason: String) -> CudaError {
    CudaError::invalid("moe", reason)
}

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| bad(format!("{what} {v} exceeds 2^32")))
}

fn row_bytes(dtype: DType, cols: usize) -> Result<u64> {
    dtype
        .bytes_for(cols as u64)
        .ok_or_else(|| bad(format!("{cols} values are not whole {dtype} blocks")))
}

/// Checks a layer and batch against the kernels' limits and returns the routed pass's
/// parameters: at most [`MOE_MAX_EXPERTS`] experts, [`MOE_MAX_CHOICES`] choices per batch and
/// [`MOE_MAX_GROUPS`] groups; widths multiples of 32; supported types.
pub fn moe_params(layer: &MoeLayer, tokens: usize, steer: bool) -> Result<MoeParams> {
    layer.validate().map_err(bad)?;
    let l = layer;
    if l.n_experts > MOE_MAX_EXPERTS {
        return Err(bad(format!(
            "{} experts (the routing kernel takes {MOE_MAX_EXPERTS})",
            l.n_experts
        )));
    }
    if tokens == 0 || tokens * l.top_k > MOE_MAX_CHOICES {
        return Err(bad(format!(
            "{tokens} tokens x top-{} (a batch takes 1 to {MOE_MAX_CHOICES} choices)",
            l.top_k
        )));
    }
    if l.n_group > MOE_MAX_GROUPS {
        return Err(bad(format!(
            "{} expert groups (at most {MOE_MAX_GROUPS})",
            l.n_group
        )));
    }
    for (what, v) in [
        ("hidden", l.hidden),
        ("expert width", l.expert_ff),
        ("shared width", l.shared_ff),
    ] {
        if v % 32 != 0 {
            return Err(bad(format!("{what} {v} is not a multiple of 32")));
        }
    }
    let t = l.types;
    for d in [t.gate_up, t.down] {
        expert_kernels(d)?;
    }
    if l.shared_ff > 0 {
        expert_kernels(t.shared_gate_up)?;
        expert_kernels(t.shared_down)?;
    }
    let mut flags = 0;
    for (on, bit) in [
        (l.norm_topk, MOE_NORM_TOPK),
        (l.logit_bias(), MOE_LOGIT_BIAS),
        (l.selection_bias(), MOE_SELECTION_BIAS),
        (steer, MOE_STEER),
        (l.shared_gate, MOE_SHARED_GATE),
        (l.expert_bias, MOE_EXPERT_BIAS),
        (l.activation == Activation::SwigluOai, MOE_SWIGLU_OAI),
        (l.shared_ff > 0, MOE_SHARED_OUT),
    ] {
        if on {
            flags |= bit;
        }
    }
    Ok(MoeParams {
        tokens: u32_of(tokens, "tokens")?,
        n_experts: l.n_experts as u32,
        top_k: l.top_k as u32,
        hidden: u32_of(l.hidden, "hidden")?,
        ff: u32_of(l.expert_ff, "expert width")?,
        router_rows: (l.n_experts + usize::from(l.shared_gate)) as u32,
        scoring: match l.router {
            RouterScoring::Softmax => MOE_SOFTMAX,
            RouterScoring::Sigmoid => MOE_SIGMOID,
            RouterScoring::TopkSoftmax => MOE_TOPK_SOFTMAX,
        },
        flags,
        n_group: l.n_group as u32,
        topk_group: l.topk_group as u32,
        routed_scaling: l.routed_scaling,
        _pad: 0,
        gate_row_bytes: row_bytes(t.gate_up, l.hidden)?,
        down_row_bytes: row_bytes(t.down, l.expert_ff)?,
    })
}

/// Distinct-expert slots the expert kernels' grids cover: `min(n_experts, tokens × top_k)`.
pub fn max_slots(layer: &MoeLayer, tokens: usize) -> usize {
    layer.n_experts.min(tokens * layer.top_k)
}

/// The shared expert's plan: one slot (expert 0) whose choices are the tokens in order.
pub fn shared_plan(tokens: usize) -> Vec<u32> {
    let mut p = vec![1, 0, 0, tokens as u32];
    p.extend(0..tokens as u32);
    p
}

fn blocks_for(rows: u32) -> u32 {
    rows.div_ceil(MOE_WARPS)
}

fn expert_config(rows: u32, slots: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks_for(rows), slots as u32, 1),
        block_dim: (MOE_WARPS * 32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// How a decode step folds a MoE layer's first and last steps into its neighbours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MoeFusion {
    /// The norm before the layer left x as Q8_1 in [`MoeBuf::Xq`]: no quantization launch.
    pub x_quantized: bool,
    /// The combine adds the layer's output into [`MoeBuf::Out`] (the residual stream).
    pub accumulate: bool,
}

/// The launch sequence of one layer for a batch of `tokens` (with per-token steering when
/// `steer`): the router (logits, x to Q8_1 where a type needs it, and the routing and plan by
/// its last block), the routed gate/up (with the activations' Q8_1 where down reads them) and
/// down; without a shared expert down's last blocks combine the choices (three launches in
/// all), with one the shared expert's gate/up and down and the combine follow.
pub fn moe_launches(layer: &MoeLayer, tokens: usize, steer: bool) -> Result<Vec<MoeLaunch>> {
    moe_launches_fused(layer, tokens, steer, MoeFusion::default())
}

/// [`moe_launches`] with the first and last steps folded as `fuse` says.
pub fn moe_launches_fused(
    layer: &MoeLayer,
    tokens: usize,
    steer: bool,
    fuse: MoeFusion,
) -> Result<Vec<MoeLaunch>> {
    use MoeArg::{In, Out};
    use MoeBuf::*;
    let p = moe_params(layer, tokens, steer)?;
    let t = layer.types;
    let slots = max_slots(layer, tokens);
    let quant = |d: DType| d.is_quantized();
    let or_dummy = |on: bool, b: MoeBuf| In(if on { b } else { Dummy });
    let shared = layer.shared_ff > 0;
    let h = layer.hidden;
    let accumulate = if fuse.accumulate { MOE_ACCUMULATE } else { 0 };
    // The router quantizes x too where gate/up reads Q8_1 and the norm before did not.
    let quant_x = (quant(t.gate_up) || (shared && quant(t.shared_gate_up))) && !fuse.x_quantized;
    let mut v = vec![MoeLaunch {
        kernel: Kernel::MoeRouter,
        config: LaunchConfig {
            grid_dim: (p.router_rows.div_ceil(MOE_ROUTE_THREADS / 32), 1, 1),
            block_dim: (MOE_ROUTE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        },
        args: vec![
            In(Router),
            In(X),
            or_dummy(layer.router_bias, RouterBias),
            Out(Logits),
            or_dummy(layer.router_bias, RouterBias),
            or_dummy(steer, Steer),
            Out(Ids),
            Out(Weights),
            Out(SharedW),
            Out(Plan),
            if quant_x { Out(Xq) } else { In(Dummy) },
            Out(RouteSync),
            MoeArg::Moe(MoeParams {
                flags: p.flags | if quant_x { MOE_QUANT_X } else { 0 },
                ..p
            }),
        ],
    }];
    // One expert pass: gate/up (with the activations' Q8_1 where down is quantized), down.
    let mut pass =
        |bufs: [MoeBuf; 10], types: (DType, DType), pp: MoeParams, slots: usize| -> Result<()> {
            let [g, u, d, plan, act, actq, w, y, bias, sync] = bufs;
            let (gu_k, _) = expert_kernels(types.0)?;
            let (_, down_k) = expert_kernels(types.1)?;
            let has_bias = pp.flags & MOE_EXPERT_BIAS != 0;
            let bias_of = |b: MoeBuf| In(if has_bias { b } else { Dummy });
            // Down rows of a block-quantized type are whole blocks of 32 or more values, so
            // each 32 activations are one Q8_1 block, written by the gate/up launch.
            let in_launch = quant(types.1);
            v.push(MoeLaunch {
                kernel: gu_k,
                config: expert_config(pp.ff, slots),
                args: vec![
                    In(g),
                    In(u),
                    In(if quant(types.0) { Xq } else { X }),
                    In(plan),
                    bias_of(GateBias),
                    bias_of(UpBias),
                    Out(act),
                    if in_launch { Out(actq) } else { In(Dummy) },
                    if in_launch { Out(sync) } else { In(Dummy) },
                    MoeArg::Moe(MoeParams {
                        flags: pp.flags | if in_launch { MOE_QUANT_ACT } else { 0 },
                        ..pp
                    }),
                ],
            });
            // Without a shared expert the routed down launch combines too (its last blocks).
            let combine = !shared && sync == ActSync;
            v.push(MoeLaunch {
                kernel: down_k,
                config: expert_config(pp.hidden, slots),
                args: vec![
                    In(d),
                    In(if quant(types.1) { actq } else { act }),
                    In(plan),
                    In(w),
                    bias_of(bias),
                    Out(y),
                    if combine { Out(MoeBuf::Out) } else { In(Dummy) },
                    if combine { Out(DownSync) } else { In(Dummy) },
                    MoeArg::Moe(MoeParams {
                        flags: pp.flags | if combine { MOE_COMBINE | accumulate } else { 0 },
                        ..pp
                    }),
                ],
            });
            Ok(())
        };
    pass(
        [
            Gate, Up, Down, Plan, Act, ActQ, Weights, Y, DownBias, ActSync,
        ],
        (t.gate_up, t.down),
        p,
        slots,
    )?;
    if shared {
        let sp = MoeParams {
            top_k: 1,
            ff: u32_of(layer.shared_ff, "shared width")?,
            flags: p.flags & !MOE_EXPERT_BIAS,
            gate_row_bytes: row_bytes(t.shared_gate_up, h)?,
            down_row_bytes: row_bytes(t.shared_down, layer.shared_ff)?,
            ..p
        };
        pass(
            [
                SharedGate, SharedUp, SharedDown, SharedPlan, SharedAct, SharedActQ, SharedW,
                SharedY, Dummy, SharedSync,
            ],
            (t.shared_gate_up, t.shared_down),
            sp,
            1,
        )?;
    }
    if !shared {
        return Ok(v);
    }
    let n = (tokens * h) as u32;
    v.push(MoeLaunch {
        kernel: Kernel::MoeCombine,
        config: LaunchConfig {
            grid_dim: (n.div_ceil(256).min(1024), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        },
        args: vec![
            In(Y),
            In(SharedY),
            Out(MoeBuf::Out),
            MoeArg::Moe(MoeParams {
                flags: p.flags | accumulate,
                ..p
            }),
        ],
    });
    Ok(v)
}

/// Bytes buffer `b` holds for `layer` and a batch of `tokens` (0 for a buffer the layer does
/// not use).
pub fn buffer_bytes(layer: &MoeLayer, tokens: usize, b: MoeBuf) -> usize {
    use MoeBuf::*;
    let l = layer;
    let (h, e, k, f, sf) = (l.hidden, l.n_experts, l.top_k, l.expert_ff, l.shared_ff);
    let rb = |d: DType, cols: usize| d.bytes_for(cols as u64).unwrap_or(0) as usize;
    let q8 = |values: usize| values / 32 * Q8_1_BLOCK_BYTES;
    let t = l.types;
    let if_shared = |v: usize| if sf > 0 { v } else { 0 };
    let choices = tokens * k;
    match b {
        X | Out | SharedY => {
            if b == SharedY {
                if_shared(4 * tokens * h)
            } else {
                4 * tokens * h
            }
        }
        Xq => q8(tokens * h),
        Router => 4 * (e + usize::from(l.shared_gate)) * h,
        RouterBias => {
            if l.router_bias {
                4 * e
            } else {
                0
            }
        }
        Steer => 4 * tokens * e,
        Gate | Up => e * f * rb(t.gate_up, h),
        Down => e * h * rb(t.down, f),
        GateBias | UpBias => {
            if l.expert_bias {
                4 * e * f
            } else {
                0
            }
        }
        DownBias => {
            if l.expert_bias {
                4 * e * h
            } else {
                0
            }
        }
        SharedGate | SharedUp => if_shared(sf * rb(t.shared_gate_up, h)),
        SharedDown => if_shared(h * rb(t.shared_down, sf)),
        Logits => 4 * tokens * (e + usize::from(l.shared_gate)),
        Ids | Weights => 4 * choices,
        SharedW => 4 * tokens,
        Plan => 4 * (2 + 2 * max_slots(l, tokens) + choices),
        SharedPlan => if_shared(4 * (4 + tokens)),
        Act => 4 * choices * f,
        ActQ => q8(choices * f),
        Y => 4 * choices * h,
        SharedAct => if_shared(4 * tokens * sf),
        SharedActQ => if_shared(q8(tokens * sf)),
        RouteSync => 4,
        ActSync => 4 * max_slots(l, tokens) * f.div_ceil(32),
        SharedSync => if_shared(4 * sf.div_ceil(32)),
        DownSync => 4 * h.div_ceil(MOE_WARPS as usize),
        Dummy => 16,
    }
}

/// Whether buffer `b` must hold zeros before the first launch: the counters of the launches
/// whose last block finishes the work (they leave them at zero again for the next launch).
pub fn starts_zeroed(b: MoeBuf) -> bool {
    matches!(
        b,
        MoeBuf::RouteSync | MoeBuf::ActSync | MoeBuf::SharedSync | MoeBuf::DownSync
    )
}

/// Every buffer of [`MoeBuf`], in order.
pub const ALL_BUFS: [MoeBuf; 32] = {
    use MoeBuf::*;
    [
        X, Xq, Router, RouterBias, Steer, Gate, Up, Down, GateBias, UpBias, DownBias, SharedGate,
        SharedUp, SharedDown, Logits, Ids, Weights, SharedW, Plan, SharedPlan, Act, ActQ, Y,
        SharedAct, SharedActQ, SharedY, Out, RouteSync, ActSync, SharedSync, DownSync, Dummy,
    ]
};

/// One layer's weight buffers as host bytes in the kernels' layouts.
pub type WeightBufs<'a> = Vec<(MoeBuf, Cow<'a, [u8]>)>;

fn le_bytes(v: &[f32]) -> Cow<'static, [u8]> {
    Cow::Owned(f32_bytes(v))
}

/// The weights of one layer (as `membound_cpu::moe::MoeWeights` holds them) as kernel buffers:
/// stacked experts borrowed as stored, router and biases as f32 little-endian bytes; empty
/// where the layer has none.
pub fn weight_bufs<'a>(
    router: &[f32],
    router_bias: &[f32],
    stacks: [&'a [u8]; 3],
    biases: [&[f32]; 3],
    shared: Option<[&'a [u8]; 3]>,
) -> WeightBufs<'a> {
    use MoeBuf::*;
    let mut v = vec![
        (Router, le_bytes(router)),
        (RouterBias, le_bytes(router_bias)),
        (Gate, Cow::Borrowed(stacks[0])),
        (Up, Cow::Borrowed(stacks[1])),
        (Down, Cow::Borrowed(stacks[2])),
        (GateBias, le_bytes(biases[0])),
        (UpBias, le_bytes(biases[1])),
        (DownBias, le_bytes(biases[2])),
    ];
    if let Some(s) = shared {
        v.extend([
            (SharedGate, Cow::Borrowed(s[0])),
            (SharedUp, Cow::Borrowed(s[1])),
            (SharedDown, Cow::Borrowed(s[2])),
        ]);
    }
    v
}

/// Checks that every weight buffer of `weights` has the length the layer needs.
pub fn check_weights(layer: &MoeLayer, weights: &[(MoeBuf, Cow<'_, [u8]>)]) -> Result<()> {
    for (b, bytes) in weights {
        let need = buffer_bytes(layer, 1, *b);
        if bytes.len() != need {
            return Err(bad(format!(
                "{b:?} holds {} bytes, the layer needs {need}",
                bytes.len()
            )));
        }
    }
    Ok(())
}

/// One MoE layer on a GPU for batches of a fixed size: its weights, scratch and launch plan.
pub struct GpuMoe {
    layer: MoeLayer,
    tokens: usize,
    steer: bool,
    launches: Vec<MoeLaunch>,
    bufs: BTreeMap<MoeBuf, CudaSlice<u8>>,
    /// Input slots: a batch and its steering each ([`MoeBuf::X`], [`MoeBuf::Steer`]).
    inputs: Vec<(CudaSlice<u8>, Option<CudaSlice<u8>>)>,
}

/// One input slot of a layer: a batch (`tokens × hidden` f32) and its steering (`tokens ×
/// n_experts`, or empty without steering).
pub type MoeInput<'a> = (&'a [f32], &'a [f32]);

/// Checks input slots against a layer and batch size (at least one slot).
pub fn check_inputs(
    layer: &MoeLayer,
    tokens: usize,
    steer: bool,
    inputs: &[MoeInput<'_>],
) -> Result<()> {
    if inputs.is_empty() {
        return Err(bad("no input slot".into()));
    }
    for (xs, st) in inputs {
        if xs.len() != tokens * layer.hidden || (steer && st.len() != tokens * layer.n_experts) {
            return Err(bad(format!(
                "input of {} values (and steering of {}) for {tokens} tokens",
                xs.len(),
                st.len()
            )));
        }
    }
    Ok(())
}

/// f32 values as little-endian bytes.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl GpuMoe {
    /// Uploads `weights` ([`weight_bufs`]) and allocates the scratch of batches of `tokens`
    /// (with a steering input when `steer`).
    pub fn new(
        gpu: &Gpu,
        layer: &MoeLayer,
        weights: &[(MoeBuf, Cow<'_, [u8]>)],
        tokens: usize,
        steer: bool,
    ) -> Result<GpuMoe> {
        let launches = moe_launches(layer, tokens, steer)?;
        check_weights(layer, weights)?;
        let mut bufs = BTreeMap::new();
        for (b, bytes) in weights {
            if !bytes.is_empty() {
                bufs.insert(*b, gpu.upload(bytes)?);
            }
        }
        for b in ALL_BUFS {
            let n = buffer_bytes(layer, tokens, b);
            let input = matches!(b, MoeBuf::X | MoeBuf::Steer);
            if n > 0 && !input && !bufs.contains_key(&b) {
                bufs.insert(b, gpu.alloc_zeros::<u8>(n)?);
            }
        }
        if layer.shared_ff > 0 {
            let plan: Vec<u8> = shared_plan(tokens)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            bufs.insert(MoeBuf::SharedPlan, gpu.upload(&plan)?);
        }
        Ok(GpuMoe {
            layer: layer.clone(),
            tokens,
            steer,
            launches,
            bufs,
            inputs: Vec::new(),
        })
    }

    /// The layer.
    pub fn layer(&self) -> &MoeLayer {
        &self.layer
    }

    /// Uploads the input slots [`GpuMoe::forward`] chooses from.
    pub fn set_inputs(&mut self, gpu: &Gpu, inputs: &[MoeInput<'_>]) -> Result<()> {
        check_inputs(&self.layer, self.tokens, self.steer, inputs)?;
        self.inputs = inputs
            .iter()
            .map(|(xs, st)| {
                let steer = if self.steer {
                    Some(gpu.upload(&f32_bytes(st))?)
                } else {
                    None
                };
                Ok((gpu.upload(&f32_bytes(xs))?, steer))
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// Queues the layer's launches on input slot `slot` (timed).
    pub fn forward(&self, gpu: &Gpu, slot: usize) -> Result<()> {
        let input = self
            .inputs
            .get(slot)
            .ok_or_else(|| bad(format!("no input slot {slot} ({} set)", self.inputs.len())))?;
        for l in &self.launches {
            let mut args = gpu.stream.launch_builder(gpu.function(l.kernel));
            for a in &l.args {
                match a {
                    MoeArg::In(b) | MoeArg::Out(b) => {
                        let buf = match b {
                            MoeBuf::X => Some(&input.0),
                            MoeBuf::Steer => input.1.as_ref(),
                            _ => self.bufs.get(b),
                        };
                        let buf = buf.ok_or_else(|| {
                            bad(format!(
                                "{} needs {b:?}, which is not allocated",
                                l.kernel.name()
                            ))
                        })?;
                        args.arg(buf);
                    }
                    MoeArg::Moe(p) => {
                        args.arg(p);
                    }
                    MoeArg::Quantize(p) => {
                        args.arg(p);
                    }
                }
            }
            // SAFETY: the arguments follow moe.cu's parameter lists (moe_launches builds them
            // from one table); every buffer was allocated with buffer_bytes for this layer and
            // batch, which covers the launch geometry and parameters.
            unsafe { gpu.launch(l.kernel, args, l.config) }?;
        }
        Ok(())
    }

    /// Reads a buffer back as f32 (`Out`, `Weights`, `Logits`, …) or u32 bits.
    pub fn read(&self, gpu: &Gpu, b: MoeBuf) -> Result<Vec<u8>> {
        let buf = self
            .bufs
            .get(&b)
            .ok_or_else(|| bad(format!("{b:?} is not allocated")))?;
        gpu.download(buf)
    }
}

/// Little-endian bytes as f32 values.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Little-endian bytes as u32 values.
pub fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use membound_spec::Recipe;
    use membound_spec::moe::MoeTypes;

    fn qwen3() -> MoeLayer {
        let m = membound_spec::registry::find("qwen3-30b-a3b").unwrap();
        MoeLayer::from_spec(&m, Recipe::Q8_0, 0).unwrap()
    }

    #[test]
    fn every_launch_reads_allocated_buffers_of_its_kernel_file() {
        for name in [
            "qwen3-30b-a3b",
            "gpt-oss-120b",
            "glm-4.7-flash",
            "qwen3-coder-next",
        ] {
            let m = membound_spec::registry::find(name).unwrap();
            let first = m.ffn.moe.as_ref().unwrap().dense_first;
            for recipe in [
                Recipe::Q8_0,
                Recipe::MXFP4_MOE,
                Recipe::Q4_K_M,
                Recipe::BF16,
            ] {
                let l = MoeLayer::from_spec(&m, recipe, first).unwrap();
                for tokens in [1, 4] {
                    let launches = match moe_launches(&l, tokens, true) {
                        Ok(v) => v,
                        // llama.cpp's fallback types for rows that are not whole K blocks.
                        Err(e) => {
                            assert!(e.to_string().contains("no CUDA MoE kernel for q5_0"), "{e}");
                            continue;
                        }
                    };
                    for launch in &launches {
                        assert!(matches!(launch.kernel.file(), "moe.cu" | "gemv.cu"));
                        for a in &launch.args {
                            if let MoeArg::In(b) | MoeArg::Out(b) = a {
                                assert!(
                                    buffer_bytes(&l, tokens, *b) > 0,
                                    "{name} {recipe:?} {b:?}"
                                );
                            }
                        }
                    }
                    let shared = launches
                        .iter()
                        .filter(|x| x.args.contains(&MoeArg::In(MoeBuf::SharedGate)))
                        .count();
                    assert_eq!(shared, usize::from(l.shared_ff > 0), "{name}");
                }
            }
        }
    }

    #[test]
    fn geometry_and_limits() {
        let l = qwen3();
        let launches = moe_launches(&l, 1, false).unwrap();
        let kernels: Vec<Kernel> = launches.iter().map(|x| x.kernel).collect();
        assert_eq!(
            kernels,
            [
                Kernel::MoeRouter,
                Kernel::MoeGateUpQ8_0,
                Kernel::MoeDownQ8_0
            ]
        );
        // 128 router rows, 8 per block; 768 rows of gate/up in blocks of 4 warps, one grid row
        // per selected expert.
        assert_eq!(launches[0].config.grid_dim, (16, 1, 1));
        assert_eq!(launches[1].config.grid_dim, (192, 8, 1));
        assert_eq!(launches[2].config.grid_dim, (512, 8, 1));
        assert_eq!(max_slots(&l, 64), 128);
        assert!(moe_params(&l, 129, false).is_err(), "129 x 8 choices");
        let mut big = l.clone();
        big.n_experts = 1024;
        assert!(
            moe_params(&big, 1, false)
                .unwrap_err()
                .to_string()
                .contains("1024 experts")
        );
        let mut odd = l.clone();
        odd.types = MoeTypes::all(DType::Q4_0);
        assert!(moe_params(&odd, 1, false).is_err());
        let p = moe_params(&l, 2, true).unwrap();
        assert_eq!(p.flags, MOE_NORM_TOPK | MOE_STEER);
        assert_eq!((p.gate_row_bytes, p.down_row_bytes), (64 * 34, 24 * 34));
        assert_eq!(buffer_bytes(&l, 2, MoeBuf::Plan), 4 * (2 + 2 * 16 + 16));
        assert_eq!(shared_plan(3), [1, 0, 0, 3, 0, 1, 2]);
    }
}
