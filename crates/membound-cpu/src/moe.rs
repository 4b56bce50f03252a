//! One MoE layer for a batch of decode tokens on the CPU — the reference of the CUDA MoE
//! kernels and the CPU backend of the moe suite.
//!
//! [`route`] is the documented router (scores, group limit, top-k, weights); [`CpuMoe::forward`]
//! runs the layer: router GEMV (F32), routing, then only the selected experts' rows of the
//! stacked gate/up/down tensors ([`ExpertStack`], llama.cpp's `mul_mat_id` layout), grouped by
//! expert so a batch reads each distinct expert once, the activation, the weighted sum and the
//! shared expert. Rows are split across the rayon pool; activations are quantized as ggml does
//! ([`crate::act_dtype`]). [`reference_forward`] is the naive f64 version tests check against.

use membound_quant::ops;
use membound_spec::DType;
use membound_spec::model::RouterScoring;
use membound_spec::moe::MoeLayer;
use rayon::ThreadPool;
use rayon::prelude::*;

use crate::dot::{DotKernel, check_len, row_bytes};
use crate::matmul::{Activations, OutPtr};
use crate::{CpuError, CpuGemv, Isa};

/// `n` matrices of `rows × cols` values of one type, stacked: expert `e`'s row `r` is row
/// `e · rows + r` (a GGUF `*_exps` tensor of shape `[cols, rows, n]`).
#[derive(Debug, Clone)]
pub struct ExpertStack {
    dtype: DType,
    n: usize,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    bytes: Vec<u8>,
}

impl ExpertStack {
    /// Wraps stored bytes; checks the type and that they hold `n · rows` rows of `cols` values.
    pub fn new(
        dtype: DType,
        n: usize,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    ) -> Result<Self, CpuError> {
        crate::act_dtype(dtype).ok_or(CpuError::Unsupported(dtype))?;
        let row_bytes = row_bytes(dtype, cols).ok_or(CpuError::NotBlockMultiple { dtype, cols })?;
        check_len("expert stack", n * rows * row_bytes, bytes.len())?;
        Ok(ExpertStack {
            dtype,
            n,
            rows,
            cols,
            row_bytes,
            bytes,
        })
    }

    /// The storage type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The stored bytes, expert after expert.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Row `r` of expert `e`.
    pub fn row(&self, e: usize, r: usize) -> &[u8] {
        let at = (e * self.rows + r) * self.row_bytes;
        &self.bytes[at..at + self.row_bytes]
    }
}

/// The weights of one MoE layer in ggml layouts: F32 router (with the shared expert's gate
/// vector as an extra last row where the layer has one), stacked experts, F32 biases.
#[derive(Debug, Clone)]
pub struct MoeWeights {
    /// Router rows: `n_experts` (+1 with a shared gate) × `hidden`, F32.
    pub router: Vec<f32>,
    /// Router bias (`n_experts`): logit bias, or the sigmoid routers' selection bias; empty
    /// when the layer has none.
    pub router_bias: Vec<f32>,
    /// `ffn_gate_exps`: `n_experts × expert_ff × hidden`.
    pub gate: ExpertStack,
    /// `ffn_up_exps`: same shape as `gate`.
    pub up: ExpertStack,
    /// `ffn_down_exps`: `n_experts × hidden × expert_ff`.
    pub down: ExpertStack,
    /// Expert biases `(gate, up, down)`: `n_experts × expert_ff` twice and `n_experts ×
    /// hidden` (gpt-oss); empty vectors when the layer has none.
    pub bias: (Vec<f32>, Vec<f32>, Vec<f32>),
    /// The shared expert's gate, up and down as stacks of one; `None` without one.
    pub shared: Option<(ExpertStack, ExpertStack, ExpertStack)>,
}

/// Selected experts and weights of a batch: `ids[t·k + j]`, `weights[t·k + j]` for token `t`'s
/// `j`-th choice (best first), `shared[t]` the shared expert's factor (1 without a gate).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    /// Expert ids.
    pub ids: Vec<u32>,
    /// Their weights.
    pub weights: Vec<f32>,
    /// Shared-expert factors.
    pub shared: Vec<f32>,
}

impl Routing {
    /// Distinct experts selected in the batch.
    pub fn distinct(&self) -> usize {
        let mut v = self.ids.clone();
        v.sort_unstable();
        v.dedup();
        v.len()
    }
}

/// The router of one token, the reference every backend follows. `logits` are the router's
/// outputs with any logit bias added (`n_experts` values); `selection_bias` (empty or
/// `n_experts`) is added to the scores for choosing only — the sigmoid routers' correction bias,
/// plus any steering a benchmark adds. Writes `top_k` ids and weights:
///
/// 1. A NaN logit counts as `-inf`.
/// 2. Scores: softmax over all experts (max subtracted; all `-inf`: every score 0), sigmoid,
///    or the logits themselves (`topk_softmax`).
/// 3. Keys = scores + selection bias. With `n_group > 1`, a group's key is the sum of its best
///    two keys (its best one for groups of one); the best `topk_group` groups stay, the others'
///    keys become `-inf`.
/// 4. Top-k by key, higher first; ties go to the lower expert index (a stable sort), so
///    `top_k = n_experts` selects every expert in key order.
/// 5. Weights: the selected scores; `topk_softmax` takes the softmax of the selected logits
///    (all `-inf`: 0). With `norm_topk` they are divided by their sum where it is positive.
///    Then times `routed_scaling`.
pub fn route(
    layer: &MoeLayer,
    logits: &[f32],
    selection_bias: &[f32],
    ids: &mut [u32],
    weights: &mut [f32],
) {
    let e = layer.n_experts;
    let k = layer.top_k;
    let clean = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    let l: Vec<f32> = logits[..e].iter().map(|&v| clean(v)).collect();
    let scores: Vec<f32> = match layer.router {
        RouterScoring::Softmax => softmax(&l),
        RouterScoring::Sigmoid => l.iter().map(|&v| sigmoid(v)).collect(),
        RouterScoring::TopkSoftmax => l.clone(),
    };
    let mut keys: Vec<f32> = scores
        .iter()
        .enumerate()
        .map(|(i, &s)| clean(s + selection_bias.get(i).copied().unwrap_or(0.0)))
        .collect();
    if layer.n_group > 1 {
        let size = e / layer.n_group;
        let group_key = |g: usize| {
            let mut best = [f32::NEG_INFINITY; 2];
            for &v in &keys[g * size..(g + 1) * size] {
                if v > best[0] {
                    best = [v, best[0]];
                } else if v > best[1] {
                    best[1] = v;
                }
            }
            if size == 1 {
                best[0]
            } else {
                best[0] + best[1]
            }
        };
        let gk: Vec<f32> = (0..layer.n_group).map(|g| clean(group_key(g))).collect();
        let kept = top_indices(&gk, layer.topk_group);
        for g in 0..layer.n_group {
            if !kept.contains(&g) {
                keys[g * size..(g + 1) * size].fill(f32::NEG_INFINITY);
            }
        }
    }
    let chosen = top_indices(&keys, k);
    for (j, &c) in chosen.iter().enumerate() {
        ids[j] = c as u32;
        weights[j] = scores[c];
    }
    if layer.router == RouterScoring::TopkSoftmax {
        let sel: Vec<f32> = chosen.iter().map(|&c| l[c]).collect();
        weights[..k].copy_from_slice(&softmax(&sel));
    }
    if layer.norm_topk {
        let sum: f32 = weights[..k].iter().sum();
        if sum > 0.0 {
            weights[..k].iter_mut().for_each(|w| *w /= sum);
        }
    }
    weights[..k]
        .iter_mut()
        .for_each(|w| *w *= layer.routed_scaling);
}

/// Indices of the `k` largest values, largest first, ties to the lower index.
fn top_indices(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    // Keys are never NaN here; total order with -inf last among equals keeps it stable.
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(k);
    idx
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// Softmax with the maximum subtracted; every value 0 when the maximum is `-inf`.
fn softmax(v: &[f32]) -> Vec<f32> {
    let max = v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    if max == f32::NEG_INFINITY {
        return vec![0.0; v.len()];
    }
    let ex: Vec<f32> = v.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = ex.iter().sum();
    ex.iter().map(|&x| x / sum).collect()
}

/// A MoE layer ready to run on the CPU.
#[derive(Debug, Clone)]
pub struct CpuMoe {
    layer: MoeLayer,
    router: CpuGemv,
    w: MoeWeights,
}

/// Work lists of one expert pass: `slots[s] = (expert, first, end)` over `pairs`, each pair a
/// flat choice index `t·k + j` (token `t`'s `j`-th expert); ordered by expert, then token.
struct Plan {
    slots: Vec<(usize, usize, usize)>,
    pairs: Vec<usize>,
}

impl Plan {
    fn new(ids: &[u32]) -> Plan {
        let mut pairs: Vec<usize> = (0..ids.len()).collect();
        pairs.sort_by_key(|&i| (ids[i], i));
        let mut slots = Vec::new();
        let mut s = 0;
        while s < pairs.len() {
            let e = ids[pairs[s]];
            let end = s + pairs[s..].iter().take_while(|&&i| ids[i] == e).count();
            slots.push((e as usize, s, end));
            s = end;
        }
        Plan { slots, pairs }
    }
}

/// Weight bytes per task of the expert passes (a task takes whole rows of one expert): large
/// enough that the pool's per-task cost vanishes, small enough for several tasks per thread.
const TASK_BYTES: usize = 128 << 10;

impl CpuMoe {
    /// Checks the weights against the layer's shape and types.
    pub fn new(layer: MoeLayer, w: MoeWeights) -> Result<CpuMoe, CpuError> {
        let bad = |what: &'static str, expected: usize, got: usize| {
            Err(CpuError::Length {
                what,
                expected,
                got,
            })
        };
        layer.validate().map_err(CpuError::Shape)?;
        let (h, e, f) = (layer.hidden, layer.n_experts, layer.expert_ff);
        let rows = e + usize::from(layer.shared_gate);
        let router = CpuGemv::new(DType::F32, rows, h, f32_bytes(&w.router))?;
        let stack_ok =
            |s: &ExpertStack, n, r, c, t| s.n == n && s.rows == r && s.cols == c && s.dtype == t;
        let t = layer.types;
        if !stack_ok(&w.gate, e, f, h, t.gate_up)
            || !stack_ok(&w.up, e, f, h, t.gate_up)
            || !stack_ok(&w.down, e, h, f, t.down)
        {
            return Err(CpuError::Shape(format!(
                "expert stacks do not match {e} experts of {f}x{h} ({:?})",
                t
            )));
        }
        if layer.router_bias && w.router_bias.len() != e {
            return bad("router bias", e, w.router_bias.len());
        }
        if layer.expert_bias
            && (w.bias.0.len() != e * f || w.bias.1.len() != e * f || w.bias.2.len() != e * h)
        {
            return bad("expert biases (gate)", e * f, w.bias.0.len());
        }
        let sf = layer.shared_ff;
        match &w.shared {
            Some((g, u, d))
                if sf > 0
                    && stack_ok(g, 1, sf, h, t.shared_gate_up)
                    && stack_ok(u, 1, sf, h, t.shared_gate_up)
                    && stack_ok(d, 1, h, sf, t.shared_down) => {}
            None if sf == 0 => {}
            _ => {
                return Err(CpuError::Shape(format!(
                    "shared expert does not match width {sf}"
                )));
            }
        }
        Ok(CpuMoe { layer, router, w })
    }

    /// The layer.
    pub fn layer(&self) -> &MoeLayer {
        &self.layer
    }

    /// The weights.
    pub fn weights(&self) -> &MoeWeights {
        &self.w
    }

    /// Router logits of a batch (`tokens × rows`, rows = experts + 1 with a shared gate), the
    /// logit bias added.
    pub fn logits(&self, pool: &ThreadPool, isa: Isa, xs: &[f32]) -> Result<Vec<f32>, CpuError> {
        let rows = self.router.rows();
        let tokens = xs.len() / self.layer.hidden;
        let mut out = vec![0f32; tokens * rows];
        if tokens == 1 {
            self.router.run_with(pool, isa, xs, &mut out)?;
        } else {
            self.router.run_batch_with(pool, isa, xs, &mut out)?;
        }
        if self.layer.logit_bias() {
            for row in out.chunks_mut(rows) {
                row.iter_mut()
                    .zip(&self.w.router_bias)
                    .for_each(|(l, b)| *l += b);
            }
        }
        Ok(out)
    }

    /// Routes a batch from its logits ([`CpuMoe::logits`]); `steer` (empty or `tokens ×
    /// n_experts`) is added to the selection keys.
    pub fn route_batch(&self, logits: &[f32], steer: &[f32]) -> Routing {
        let l = &self.layer;
        let rows = self.router.rows();
        let tokens = logits.len() / rows;
        let (e, k) = (l.n_experts, l.top_k);
        let mut r = Routing {
            ids: vec![0; tokens * k],
            weights: vec![0.0; tokens * k],
            shared: vec![1.0; tokens],
        };
        let mut bias = vec![0f32; e];
        for t in 0..tokens {
            bias.fill(0.0);
            if l.selection_bias() {
                bias.copy_from_slice(&self.w.router_bias);
            }
            if !steer.is_empty() {
                bias.iter_mut()
                    .zip(&steer[t * e..(t + 1) * e])
                    .for_each(|(b, s)| *b += s);
            }
            let lt = &logits[t * rows..(t + 1) * rows];
            route(
                l,
                lt,
                &bias,
                &mut r.ids[t * k..(t + 1) * k],
                &mut r.weights[t * k..(t + 1) * k],
            );
            if l.shared_gate {
                r.shared[t] = sigmoid(lt[e]);
            }
        }
        r
    }

    /// The layer for a batch `xs` (`tokens × hidden`) into `out` (same shape), on the
    /// [`Isa::detect`] path; returns the routing it used.
    pub fn forward(
        &self,
        pool: &ThreadPool,
        xs: &[f32],
        steer: &[f32],
        out: &mut [f32],
    ) -> Result<Routing, CpuError> {
        self.forward_with(pool, Isa::detect(), xs, steer, out)
    }

    /// [`CpuMoe::forward`] on `isa`. The layer runs on a pool thread, so its parallel loops
    /// (router, experts, shared expert) start directly rather than each being handed to the
    /// pool from outside.
    pub fn forward_with(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        xs: &[f32],
        steer: &[f32],
        out: &mut [f32],
    ) -> Result<Routing, CpuError> {
        pool.install(|| self.forward_here(pool, isa, xs, steer, out))
    }

    fn forward_here(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        xs: &[f32],
        steer: &[f32],
        out: &mut [f32],
    ) -> Result<Routing, CpuError> {
        let l = &self.layer;
        let h = l.hidden;
        if xs.is_empty() || !xs.len().is_multiple_of(h) {
            return bad_len("MoE input (a multiple of hidden)", h, xs.len());
        }
        let tokens = xs.len() / h;
        check_len("MoE output", xs.len(), out.len())?;
        if !steer.is_empty() {
            check_len("MoE steering", tokens * l.n_experts, steer.len())?;
        }
        let logits = self.logits(pool, isa, xs)?;
        let routing = self.route_batch(&logits, steer);
        let k = l.top_k;
        let mut yk = vec![0f32; tokens * k * h];
        let (gb, ub, db) = &self.w.bias;
        let routed = Pass {
            gate: &self.w.gate,
            up: &self.w.up,
            down: &self.w.down,
            bias: l
                .expert_bias
                .then_some((gb.as_slice(), ub.as_slice(), db.as_slice())),
            ff: l.expert_ff,
            per_token: k,
        };
        routed.run(pool, isa, l, xs, &routing.ids, &routing.weights, &mut yk)?;
        let mut ysh = Vec::new();
        if let Some((g, u, d)) = &self.w.shared {
            ysh = vec![0f32; tokens * h];
            let shared = Pass {
                gate: g,
                up: u,
                down: d,
                bias: None,
                ff: l.shared_ff,
                per_token: 1,
            };
            let zeros = vec![0u32; tokens];
            shared.run(pool, isa, l, xs, &zeros, &routing.shared, &mut ysh)?;
        }
        pool.install(|| {
            out.par_chunks_mut(h).enumerate().for_each(|(t, o)| {
                for (r, v) in o.iter_mut().enumerate() {
                    let mut acc = 0f32;
                    for j in 0..k {
                        acc += yk[(t * k + j) * h + r];
                    }
                    if !ysh.is_empty() {
                        acc += ysh[t * h + r];
                    }
                    *v = acc;
                }
            })
        });
        Ok(routing)
    }
}

fn bad_len<T>(what: &'static str, expected: usize, got: usize) -> Result<T, CpuError> {
    Err(CpuError::Length {
        what,
        expected,
        got,
    })
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One expert pass (routed experts, or the shared expert as a stack of one): for each choice
/// `i = t·per_token + j` with expert `ids[i]` and weight `weights[i]`,
/// `y[i] = weights[i] · (down·act(gate·x_t + bg, up·x_t + bu) + bd)`.
struct Pass<'a> {
    gate: &'a ExpertStack,
    up: &'a ExpertStack,
    down: &'a ExpertStack,
    bias: Option<(&'a [f32], &'a [f32], &'a [f32])>,
    ff: usize,
    per_token: usize,
}

impl Pass<'_> {
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        l: &MoeLayer,
        xs: &[f32],
        ids: &[u32],
        weights: &[f32],
        y: &mut [f32],
    ) -> Result<(), CpuError> {
        let h = l.hidden;
        let f = self.ff;
        let gk = DotKernel::new(self.gate.dtype, isa)?;
        let dk = DotKernel::new(self.down.dtype, isa)?;
        let xq: Vec<Activations<'_>> = pool.install(|| {
            xs.par_chunks(h)
                .map(|x| Activations::new(&gk, x))
                .collect::<Result<_, _>>()
        })?;
        let plan = Plan::new(ids);
        let n = ids.len();
        let mut act = vec![0f32; n * f];
        // Gate and up of each (distinct expert, row run): the expert's rows read once for all
        // the tokens that chose it.
        // (slot, first row, end row) runs of about TASK_BYTES of weights.
        let tasks = |rows: usize, row_bytes: usize| -> Vec<(usize, usize, usize)> {
            let per = (TASK_BYTES / row_bytes.max(1)).clamp(1, rows);
            (0..plan.slots.len())
                .flat_map(|s| {
                    (0..rows)
                        .step_by(per)
                        .map(move |r| (s, r, (r + per).min(rows)))
                })
                .collect()
        };
        let out = OutPtr(act.as_mut_ptr());
        let pt = self.per_token;
        pool.install(|| {
            tasks(f, 2 * self.gate.row_bytes)
                .into_par_iter()
                .for_each(|(s, r0, r1)| {
                    let (e, first, end) = plan.slots[s];
                    for r in r0..r1 {
                        let (g_row, u_row) = (self.gate.row(e, r), self.up.row(e, r));
                        let (bg, bu) = self
                            .bias
                            .map_or((0.0, 0.0), |b| (b.0[e * f + r], b.1[e * f + r]));
                        for &i in &plan.pairs[first..end] {
                            let x = xq[i / pt].bytes();
                            let g = gk.dot_unchecked(g_row, x) + bg;
                            let u = gk.dot_unchecked(u_row, x) + bu;
                            // SAFETY: i < n and r < f index inside `act` (n · f values); each
                            // (i, r) belongs to one task (one slot, one row run).
                            unsafe { out.write(i * f + r, l.activation.apply(g, u)) };
                        }
                    }
                })
        });
        let aq: Vec<Activations<'_>> = pool.install(|| {
            act.par_chunks(f)
                .map(|a| Activations::new(&dk, a))
                .collect::<Result<_, _>>()
        })?;
        let out = OutPtr(y.as_mut_ptr());
        pool.install(|| {
            tasks(h, self.down.row_bytes)
                .into_par_iter()
                .for_each(|(s, r0, r1)| {
                    let (e, first, end) = plan.slots[s];
                    for r in r0..r1 {
                        let d_row = self.down.row(e, r);
                        let bd = self.bias.map_or(0.0, |b| b.2[e * h + r]);
                        for &i in &plan.pairs[first..end] {
                            let v = weights[i] * (dk.dot_unchecked(d_row, aq[i].bytes()) + bd);
                            // SAFETY: i < n and r < h index inside `y` (n · h values, checked by
                            // the caller's allocation); each (i, r) belongs to one task.
                            unsafe { out.write(i * h + r, v) };
                        }
                    }
                })
        });
        Ok(())
    }
}

/// The naive f64 layer for one token `x` with a given routing's ids and weights (token `t` of
/// `r`): every selected row dequantized and dotted in f64. The inputs of each matrix (x, and
/// the activation before down) are first rounded through the type a backend's kernels quantize
/// them to for that weight type (`act`: `F32` for none; [`crate::act_dtype`] on the CPU, Q8_1 on
/// a GPU), so the reference differs from a correct backend by f32 summation order only. Tests
/// and the benches' checks compare every backend's output against it.
pub fn reference_forward(
    l: &MoeLayer,
    w: &MoeWeights,
    x: &[f32],
    r: &Routing,
    t: usize,
    act: &dyn Fn(DType) -> DType,
) -> Result<Vec<f32>, CpuError> {
    let (h, k) = (l.hidden, l.top_k);
    let rounded = |weight: DType, v: &[f32]| -> Result<Vec<f64>, CpuError> {
        let a = act(weight);
        let v = if a == DType::F32 {
            v.to_vec()
        } else {
            ops::dequantize(a, &ops::quantize(a, v)?)?
        };
        Ok(v.iter().map(|&x| f64::from(x)).collect())
    };
    let dot = |s: &ExpertStack, e: usize, row: usize, v: &[f64]| -> Result<f64, CpuError> {
        let wr = ops::dequantize(s.dtype, s.row(e, row))?;
        Ok(wr.iter().zip(v).map(|(a, b)| f64::from(*a) * b).sum())
    };
    let expert = |g: &ExpertStack,
                  u: &ExpertStack,
                  d: &ExpertStack,
                  e: usize,
                  ff: usize,
                  bias: bool|
     -> Result<Vec<f64>, CpuError> {
        let x64 = rounded(g.dtype, x)?;
        let mut a = vec![0f32; ff];
        for (row, av) in a.iter_mut().enumerate() {
            let (bg, bu) = if bias {
                (w.bias.0[e * ff + row], w.bias.1[e * ff + row])
            } else {
                (0.0, 0.0)
            };
            let gv = dot(g, e, row, &x64)? + f64::from(bg);
            let uv = dot(u, e, row, &x64)? + f64::from(bu);
            *av = l.activation.apply(gv as f32, uv as f32);
        }
        let a = rounded(d.dtype, &a)?;
        (0..h)
            .map(|row| {
                let bd = if bias {
                    f64::from(w.bias.2[e * h + row])
                } else {
                    0.0
                };
                Ok(dot(d, e, row, &a)? + bd)
            })
            .collect()
    };
    let mut out = vec![0f64; h];
    for j in 0..k {
        let e = r.ids[t * k + j] as usize;
        let y = expert(&w.gate, &w.up, &w.down, e, l.expert_ff, l.expert_bias)?;
        let wt = f64::from(r.weights[t * k + j]);
        out.iter_mut().zip(&y).for_each(|(o, v)| *o += wt * v);
    }
    if let Some((g, u, d)) = &w.shared {
        let y = expert(g, u, d, 0, l.shared_ff, false)?;
        let wt = f64::from(r.shared[t]);
        out.iter_mut().zip(&y).for_each(|(o, v)| *o += wt * v);
    }
    Ok(out.iter().map(|&v| v as f32).collect())
}

/// Distinct rows a generated stack cycles through (a prime: see [`MoeWeights::generate`]).
pub const GENERATED_ROWS: usize = 251;

/// A stack of `n · rows` rows cycling through [`GENERATED_ROWS`] distinct quantized rows.
fn generated_stack(
    dtype: DType,
    n: usize,
    rows: usize,
    cols: usize,
    seed: u64,
) -> Result<ExpertStack, CpuError> {
    let pool_rows = GENERATED_ROWS.min(n * rows);
    let values = membound_quant::data::normal_f32(seed, pool_rows * cols, 0.05);
    let pool = ops::quantize(dtype, &values)?;
    let total = n * rows * (pool.len() / pool_rows);
    let mut bytes = Vec::with_capacity(total);
    while bytes.len() < total {
        let take = (total - bytes.len()).min(pool.len());
        bytes.extend_from_slice(&pool[..take]);
    }
    ExpertStack::new(dtype, n, rows, cols, bytes)
}

impl MoeWeights {
    /// The stacked gate, up and down bytes.
    pub fn stacks(&self) -> [&[u8]; 3] {
        [self.gate.bytes(), self.up.bytes(), self.down.bytes()]
    }

    /// The expert biases (gate, up, down; empty without).
    pub fn biases(&self) -> [&[f32]; 3] {
        [&self.bias.0, &self.bias.1, &self.bias.2]
    }

    /// The shared expert's gate, up and down bytes.
    pub fn shared_stacks(&self) -> Option<[&[u8]; 3]> {
        self.shared
            .as_ref()
            .map(|(g, u, d)| [g.bytes(), u.bytes(), d.bytes()])
    }

    /// Random weights for `layer` from `seed`, fast at real sizes: each stack's row `g`
    /// (expert `g / rows`, row `g % rows`) is distinct row `g mod 251` of a generated set, so
    /// two experts hold the same rows only where their indices differ by a multiple of 251
    /// (not in any shape the suites use below 251 experts); router and biases are normal.
    pub fn generate(layer: &MoeLayer, seed: u64) -> Result<MoeWeights, CpuError> {
        layer.validate().map_err(CpuError::Shape)?;
        let (h, e, f, t) = (layer.hidden, layer.n_experts, layer.expert_ff, layer.types);
        let normal =
            |s: u64, n: usize, scale: f32| membound_quant::data::normal_f32(seed ^ s, n, scale);
        let router_rows = e + usize::from(layer.shared_gate);
        let vec_if = |on: bool, s: u64, n: usize| if on { normal(s, n, 0.1) } else { Vec::new() };
        let shared = if layer.shared_ff > 0 {
            let sf = layer.shared_ff;
            Some((
                generated_stack(t.shared_gate_up, 1, sf, h, seed ^ 11)?,
                generated_stack(t.shared_gate_up, 1, sf, h, seed ^ 12)?,
                generated_stack(t.shared_down, 1, h, sf, seed ^ 13)?,
            ))
        } else {
            None
        };
        Ok(MoeWeights {
            router: normal(1, router_rows * h, 1.0 / (h as f32).sqrt()),
            router_bias: vec_if(layer.router_bias, 2, e),
            gate: generated_stack(t.gate_up, e, f, h, seed ^ 3)?,
            up: generated_stack(t.gate_up, e, f, h, seed ^ 4)?,
            down: generated_stack(t.down, e, h, f, seed ^ 5)?,
            bias: (
                vec_if(layer.expert_bias, 6, e * f),
                vec_if(layer.expert_bias, 7, e * f),
                vec_if(layer.expert_bias, 8, e * h),
            ),
            shared,
        })
    }
}

/// The router logits of one token in f64 (rounded to f32), the logit bias added: the
/// reference a backend's routing is checked against. Rows: experts, then the shared gate.
pub fn reference_logits(l: &MoeLayer, w: &MoeWeights, x: &[f32]) -> Vec<f32> {
    w.router
        .chunks_exact(l.hidden)
        .enumerate()
        .map(|(r, row)| {
            let dot: f64 = row
                .iter()
                .zip(x)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let bias = if l.logit_bias() && r < l.n_experts {
                f64::from(w.router_bias[r])
            } else {
                0.0
            };
            (dot + bias) as f32
        })
        .collect()
}
