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

use crate::dot::{DotKernel, RowGroup, check_len, row_bytes, spread_rows};
use crate::matmul::{OutPtr, act_rows};
use crate::scratch::{Reuse, zeroed};
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
    route_into(
        layer,
        logits,
        selection_bias,
        ids,
        weights,
        &mut RouteBufs::default(),
    );
}

/// The working vectors of [`route`], reused from token to token.
#[derive(Debug, Default)]
struct RouteBufs {
    logits: Vec<f32>,
    scores: Vec<f32>,
    keys: Vec<f32>,
    group_keys: Vec<f32>,
    chosen: Vec<usize>,
    kept: Vec<usize>,
    order: Vec<usize>,
    selected: Vec<f32>,
}

/// [`route`] through `b` (no allocation once its vectors have grown).
fn route_into(
    layer: &MoeLayer,
    logits: &[f32],
    selection_bias: &[f32],
    ids: &mut [u32],
    weights: &mut [f32],
    b: &mut RouteBufs,
) {
    let e = layer.n_experts;
    let k = layer.top_k;
    let clean = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    b.logits.clear();
    b.logits.extend(logits[..e].iter().map(|&v| clean(v)));
    let l = &b.logits;
    b.scores.clear();
    match layer.router {
        RouterScoring::Softmax => softmax_into(l, &mut b.scores),
        RouterScoring::Sigmoid => b.scores.extend(l.iter().map(|&v| sigmoid(v))),
        RouterScoring::TopkSoftmax => b.scores.extend_from_slice(l),
    }
    let scores = &b.scores;
    b.keys.clear();
    b.keys.extend(
        scores
            .iter()
            .enumerate()
            .map(|(i, &s)| clean(s + selection_bias.get(i).copied().unwrap_or(0.0))),
    );
    let keys = &mut b.keys;
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
        b.group_keys.clear();
        b.group_keys
            .extend((0..layer.n_group).map(|g| clean(group_key(g))));
        top_indices(&b.group_keys, layer.topk_group, &mut b.order, &mut b.kept);
        for g in 0..layer.n_group {
            if !b.kept.contains(&g) {
                keys[g * size..(g + 1) * size].fill(f32::NEG_INFINITY);
            }
        }
    }
    top_indices(keys, k, &mut b.order, &mut b.chosen);
    for (j, &c) in b.chosen.iter().enumerate() {
        ids[j] = c as u32;
        weights[j] = scores[c];
    }
    if layer.router == RouterScoring::TopkSoftmax {
        b.selected.clear();
        b.selected.extend(b.chosen.iter().map(|&c| l[c]));
        // The selected logits' softmax, through `keys` (no longer needed).
        keys.clear();
        softmax_into(&b.selected, keys);
        weights[..k].copy_from_slice(keys);
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

/// Indices of the `k` largest values of `v` into `out`, largest first, ties to the lower index
/// (`order`: working space).
fn top_indices(v: &[f32], k: usize, order: &mut Vec<usize>, out: &mut Vec<usize>) {
    order.clear();
    order.extend(0..v.len());
    // Keys are never NaN here; value then index is a total order, so the unstable sort (which
    // does not allocate) gives the stable order.
    order.sort_unstable_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    out.clear();
    out.extend_from_slice(&order[..k.min(order.len())]);
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// Softmax of `v` appended to `out`, the maximum subtracted; every value 0 when the maximum is
/// `-inf`.
fn softmax_into(v: &[f32], out: &mut Vec<f32>) {
    let max = v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let start = out.len();
    if max == f32::NEG_INFINITY {
        out.extend(v.iter().map(|_| 0.0));
        return;
    }
    out.extend(v.iter().map(|&x| (x - max).exp()));
    let sum: f32 = out[start..].iter().sum();
    out[start..].iter_mut().for_each(|x| *x /= sum);
}

/// A MoE layer ready to run on the CPU.
#[derive(Debug, Clone)]
pub struct CpuMoe {
    layer: MoeLayer,
    router: CpuGemv,
    w: MoeWeights,
    /// The last call's logits, routing and intermediates, refilled by the next.
    scratch: Reuse<MoeBufs>,
}

/// Everything a forward pass fills, kept for the next (a warm decode step allocates nothing).
#[derive(Debug, Default)]
struct MoeBufs {
    logits: Vec<f32>,
    routing: Routing,
    bias: Vec<f32>,
    route: RouteBufs,
    /// Each choice's output (`tokens × top_k × hidden`) and the shared expert's.
    yk: Vec<f32>,
    ysh: Vec<f32>,
    /// The shared expert's "choices": expert 0 for every token.
    zeros: Vec<u32>,
    pass: PassBufs,
}

/// One expert pass's activations (quantized x and act), intermediate and work lists.
#[derive(Debug, Default)]
struct PassBufs {
    xq: Vec<u8>,
    aq: Vec<u8>,
    act: Vec<f32>,
    plan: Plan,
    tasks: Vec<(usize, usize, usize)>,
}

/// Work lists of one expert pass: `slots[s] = (expert, first, end)` over `pairs`, each pair a
/// flat choice index `t·k + j` (token `t`'s `j`-th expert); ordered by expert, then token.
#[derive(Debug, Default)]
struct Plan {
    slots: Vec<(usize, usize, usize)>,
    pairs: Vec<usize>,
}

impl Plan {
    /// Refills the lists for `ids`.
    fn fill(&mut self, ids: &[u32]) {
        self.pairs.clear();
        self.pairs.extend(0..ids.len());
        // (expert, choice) is unique: the unstable sort (no allocation) is the stable order.
        self.pairs.sort_unstable_by_key(|&i| (ids[i], i));
        self.slots.clear();
        let pairs = &self.pairs;
        let mut s = 0;
        while s < pairs.len() {
            let e = ids[pairs[s]];
            let end = s + pairs[s..].iter().take_while(|&&i| ids[i] == e).count();
            self.slots.push((e as usize, s, end));
            s = end;
        }
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
        Ok(CpuMoe {
            layer,
            router,
            w,
            scratch: Reuse::default(),
        })
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
        let mut out = Vec::new();
        self.logits_into(pool, isa, xs, &mut out)?;
        Ok(out)
    }

    fn logits_into(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        xs: &[f32],
        out: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        let rows = self.router.rows();
        let tokens = xs.len() / self.layer.hidden;
        let out = zeroed(out, tokens * rows);
        if tokens == 1 {
            self.router.run_with(pool, isa, xs, out)?;
        } else {
            self.router.run_batch_with(pool, isa, xs, out)?;
        }
        if self.layer.logit_bias() {
            for row in out.chunks_mut(rows) {
                row.iter_mut()
                    .zip(&self.w.router_bias)
                    .for_each(|(l, b)| *l += b);
            }
        }
        Ok(())
    }

    /// Routes a batch from its logits ([`CpuMoe::logits`]); `steer` (empty or `tokens ×
    /// n_experts`) is added to the selection keys.
    pub fn route_batch(&self, logits: &[f32], steer: &[f32]) -> Routing {
        let mut r = Routing::default();
        let (mut bias, mut bufs) = (Vec::new(), RouteBufs::default());
        self.route_batch_into(logits, steer, &mut r, &mut bias, &mut bufs);
        r
    }

    fn route_batch_into(
        &self,
        logits: &[f32],
        steer: &[f32],
        r: &mut Routing,
        bias: &mut Vec<f32>,
        bufs: &mut RouteBufs,
    ) {
        let l = &self.layer;
        let rows = self.router.rows();
        let tokens = logits.len() / rows;
        let (e, k) = (l.n_experts, l.top_k);
        zeroed(&mut r.ids, tokens * k);
        zeroed(&mut r.weights, tokens * k);
        r.shared.clear();
        r.shared.resize(tokens, 1.0);
        let bias = zeroed(bias, e);
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
            route_into(
                l,
                lt,
                bias,
                &mut r.ids[t * k..(t + 1) * k],
                &mut r.weights[t * k..(t + 1) * k],
                bufs,
            );
            if l.shared_gate {
                r.shared[t] = sigmoid(lt[e]);
            }
        }
    }

    /// The layer for a batch `xs` (`tokens × hidden`) into `out` (same shape), on the
    /// [`Isa::detect`] path; [`CpuMoe::last_routing`] tells the routing it used.
    pub fn forward(
        &self,
        pool: &ThreadPool,
        xs: &[f32],
        steer: &[f32],
        out: &mut [f32],
    ) -> Result<(), CpuError> {
        self.forward_with(pool, Isa::detect(), xs, steer, out)
    }

    /// The routing of the last [`CpuMoe::forward`] (a copy).
    pub fn last_routing(&self) -> Routing {
        self.scratch.lock().routing.clone()
    }

    /// [`CpuMoe::forward`] on `isa`. The layer runs on a pool thread, so its parallel loops
    /// (router, experts, shared expert) start directly rather than each being handed to the
    /// pool from outside. Its logits, routing and intermediates go to buffers the layer keeps,
    /// so from the second call of a batch size on it allocates nothing.
    pub fn forward_with(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        xs: &[f32],
        steer: &[f32],
        out: &mut [f32],
    ) -> Result<(), CpuError> {
        pool.install(|| self.forward_here(pool, isa, xs, steer, out))
    }

    fn forward_here(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        xs: &[f32],
        steer: &[f32],
        out: &mut [f32],
    ) -> Result<(), CpuError> {
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
        let mut guard = self.scratch.lock();
        let b = &mut *guard;
        self.logits_into(pool, isa, xs, &mut b.logits)?;
        self.route_batch_into(&b.logits, steer, &mut b.routing, &mut b.bias, &mut b.route);
        let routing = &b.routing;
        let k = l.top_k;
        let yk = zeroed(&mut b.yk, tokens * k * h);
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
        routed.run(
            pool,
            isa,
            l,
            xs,
            &routing.ids,
            &routing.weights,
            yk,
            &mut b.pass,
        )?;
        b.ysh.clear();
        if let Some((g, u, d)) = &self.w.shared {
            let ysh = zeroed(&mut b.ysh, tokens * h);
            let shared = Pass {
                gate: g,
                up: u,
                down: d,
                bias: None,
                ff: l.shared_ff,
                per_token: 1,
            };
            let zeros = zeroed(&mut b.zeros, tokens);
            shared.run(pool, isa, l, xs, zeros, &routing.shared, ysh, &mut b.pass)?;
        }
        let (yk, ysh) = (&b.yk, &b.ysh);
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
        Ok(())
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
        b: &mut PassBufs,
    ) -> Result<(), CpuError> {
        let h = l.hidden;
        let f = self.ff;
        let gk = DotKernel::new(self.gate.dtype, isa)?;
        let dk = DotKernel::new(self.down.dtype, isa)?;
        let (xq, x_stride) = act_rows(&gk, xs, h, &mut b.xq)?;
        b.plan.fill(ids);
        let plan = &b.plan;
        let n = ids.len();
        let act = zeroed(&mut b.act, n * f);
        // Gate and up of each (distinct expert, row run): the expert's rows read once for all
        // the tokens that chose it.
        // (slot, first row, end row) runs of about TASK_BYTES of weights.
        let tasks = |rows: usize, row_bytes: usize, out: &mut Vec<(usize, usize, usize)>| {
            let per = (TASK_BYTES / row_bytes.max(1)).clamp(1, rows);
            out.clear();
            for s in 0..plan.slots.len() {
                out.extend((0..rows).step_by(per).map(|r| (s, r, (r + per).min(rows))));
            }
        };
        tasks(f, 2 * self.gate.row_bytes, &mut b.tasks);
        let out = OutPtr(act.as_mut_ptr());
        let pt = self.per_token;
        pool.install(|| {
            b.tasks.par_iter().for_each(|&(s, r0, r1)| {
                let (e, first, end) = plan.slots[s];
                let bias = |r: usize| {
                    self.bias
                        .map_or((0.0, 0.0), |b| (b.0[e * f + r], b.1[e * f + r]))
                };
                // Gate and up of a row from each half of the run in one four-row call (four
                // sequential streams; see `DotKernel::dot_rows_unchecked`), then the odd row.
                for rows in spread_rows::<2>(r1 - r0, gk.has_four_row_form()) {
                    for &i in &plan.pairs[first..end] {
                        let t = i / pt;
                        let x = &xq[t * x_stride..(t + 1) * x_stride];
                        let put = |r: usize, g: f32, u: f32| {
                            let (bg, bu) = bias(r);
                            // SAFETY: i < n and r < r1 <= f index inside `act` (n · f values);
                            // each (i, r) belongs to one task (one slot, one row run).
                            unsafe { out.write(i * f + r, l.activation.apply(g + bg, u + bu)) };
                        };
                        match rows {
                            RowGroup::Spread(two) => {
                                let [a, b] = two.map(|k| r0 + k);
                                let [ga, ua, gb, ub] = gk.dot4_unchecked(
                                    [
                                        self.gate.row(e, a),
                                        self.up.row(e, a),
                                        self.gate.row(e, b),
                                        self.up.row(e, b),
                                    ],
                                    x,
                                );
                                put(a, ga, ua);
                                put(b, gb, ub);
                            }
                            RowGroup::One(k) => put(
                                r0 + k,
                                gk.dot_unchecked(self.gate.row(e, r0 + k), x),
                                gk.dot_unchecked(self.up.row(e, r0 + k), x),
                            ),
                        }
                    }
                }
            })
        });
        let (aq, a_stride) = act_rows(&dk, act, f, &mut b.aq)?;
        tasks(h, self.down.row_bytes, &mut b.tasks);
        let out = OutPtr(y.as_mut_ptr());
        pool.install(|| {
            b.tasks.par_iter().for_each(|&(s, r0, r1)| {
                let (e, first, end) = plan.slots[s];
                let bd = |r: usize| self.bias.map_or(0.0, |b| b.2[e * h + r]);
                for rows in spread_rows::<4>(r1 - r0, dk.has_four_row_form()) {
                    for &i in &plan.pairs[first..end] {
                        let a = &aq[i * a_stride..(i + 1) * a_stride];
                        let put = |r: usize, d: f32| {
                            // SAFETY: i < n and r < r1 <= h index inside `y` (n · h values,
                            // checked by the caller's allocation); each (i, r) belongs to one
                            // task.
                            unsafe { out.write(i * h + r, weights[i] * (d + bd(r))) };
                        };
                        match rows {
                            RowGroup::Spread(four) => {
                                let rs = four.map(|k| r0 + k);
                                let d = dk.dot4_unchecked(rs.map(|r| self.down.row(e, r)), a);
                                rs.into_iter().zip(d).for_each(|(r, d)| put(r, d));
                            }
                            RowGroup::One(k) => {
                                put(r0 + k, dk.dot_unchecked(self.down.row(e, r0 + k), a))
                            }
                        }
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
