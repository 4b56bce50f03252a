//! The moe suite's operations on each backend ([`MoeBackend`]): one MoE layer for a batch of
//! decode tokens (router, top-k, the selected experts, shared expert), the routing patterns
//! the suite steers it with ([`Pattern`], [`steered_sets`]), the check every backend's output
//! passes before it is timed ([`check_moe`]) and the active-vs-total verdict ([`fit`]).

use membound_cpu::moe::{CpuMoe, MoeWeights, Routing, reference_forward, reference_logits, route};
use membound_cuda::moe::{
    GpuMoe, MoeBuf, MoeInput, WeightBufs, check_inputs, f32s, u32s, weight_bufs,
};
use membound_quant::data::SplitMix64 as Rng;
use membound_spec::DType;
use membound_spec::moe::MoeLayer;
use serde::Serialize;

use crate::gemv::GemvBackend;
use crate::{CpuBackend, GpuBackend};

/// The bonus a steered expert's selection key gets: far above any score (softmax and sigmoid
/// scores are at most 1; logits of the generated routers are a few units).
pub const STEER: f32 = 1e4;

/// MoE on one backend. A "layer" is one copy of a layer's weights with its scratch and input
/// slots (batches and their steering, set once), so timed calls only launch work.
pub trait MoeBackend: GemvBackend {
    /// One copy of a layer.
    type Moe;

    /// The expert weight types this backend's kernels take.
    fn moe_dtypes(&self) -> Vec<DType>;
    /// The type the kernels quantize a matrix's input to for weights of `weight` (F32: none),
    /// so the reference rounds its inputs alike.
    fn moe_act_dtype(&self, weight: DType) -> DType;
    /// A copy of `layer` with weights `w` and input slots `inputs`: each a batch (`tokens ×
    /// hidden`) and its steering (`tokens × n_experts`, added to the selection keys).
    fn moe(
        &self,
        layer: &MoeLayer,
        w: &MoeWeights,
        inputs: &[MoeInput<'_>],
    ) -> Result<Self::Moe, String>;
    /// Runs the layer on input slot `slot` (timed).
    fn moe_forward(&self, m: &mut Self::Moe, slot: usize) -> Result<(), String>;
    /// The last output (`tokens × hidden`) and the routing it used.
    fn moe_result(&self, m: &Self::Moe) -> Result<(Vec<f32>, Routing), String>;
}

/// The CPU's copy of a layer: the layer, its input slots and its last result.
pub struct CpuMoeCase {
    moe: CpuMoe,
    inputs: Vec<(Vec<f32>, Vec<f32>)>,
    out: Vec<f32>,
}

impl MoeBackend for CpuBackend {
    type Moe = CpuMoeCase;

    fn moe_dtypes(&self) -> Vec<DType> {
        membound_cpu::SUPPORTED_DTYPES.to_vec()
    }

    fn moe_act_dtype(&self, weight: DType) -> DType {
        membound_cpu::act_dtype(weight).unwrap_or(DType::F32)
    }

    fn moe(
        &self,
        layer: &MoeLayer,
        w: &MoeWeights,
        inputs: &[MoeInput<'_>],
    ) -> Result<CpuMoeCase, String> {
        let tokens = inputs
            .first()
            .map_or(0, |i| i.0.len() / layer.hidden.max(1));
        check_inputs(layer, tokens, true, inputs).map_err(cuda_err)?;
        Ok(CpuMoeCase {
            moe: CpuMoe::new(layer.clone(), w.clone()).map_err(|e| e.to_string())?,
            inputs: inputs
                .iter()
                .map(|(x, s)| (x.to_vec(), s.to_vec()))
                .collect(),
            out: vec![0.0; tokens * layer.hidden],
        })
    }

    fn moe_forward(&self, m: &mut CpuMoeCase, slot: usize) -> Result<(), String> {
        let (xs, steer) = m.inputs.get(slot).ok_or("no such input slot")?;
        m.moe
            .forward(&self.pool, xs, steer, &mut m.out)
            .map_err(|e| e.to_string())
    }

    fn moe_result(&self, m: &CpuMoeCase) -> Result<(Vec<f32>, Routing), String> {
        Ok((m.out.clone(), m.moe.last_routing()))
    }
}

/// A layer's weights as the CUDA kernels' buffers.
pub fn kernel_weights(w: &MoeWeights) -> WeightBufs<'_> {
    weight_bufs(
        &w.router,
        &w.router_bias,
        w.stacks(),
        w.biases(),
        w.shared_stacks(),
    )
}

fn cuda_err(e: membound_cuda::CudaError) -> String {
    e.to_string()
}

impl MoeBackend for GpuBackend {
    type Moe = GpuMoe;

    fn moe_dtypes(&self) -> Vec<DType> {
        membound_cuda::gemv::GEMV_DTYPES.to_vec()
    }

    fn moe_act_dtype(&self, weight: DType) -> DType {
        membound_cuda::gemv::activation_dtype(weight)
    }

    fn moe(
        &self,
        layer: &MoeLayer,
        w: &MoeWeights,
        inputs: &[MoeInput<'_>],
    ) -> Result<GpuMoe, String> {
        let tokens = inputs
            .first()
            .map_or(0, |i| i.0.len() / layer.hidden.max(1));
        let mut m =
            GpuMoe::new(&self.gpu, layer, &kernel_weights(w), tokens, true).map_err(cuda_err)?;
        m.set_inputs(&self.gpu, inputs).map_err(cuda_err)?;
        Ok(m)
    }

    fn moe_forward(&self, m: &mut GpuMoe, slot: usize) -> Result<(), String> {
        m.forward(&self.gpu, slot).map_err(cuda_err)
    }

    fn moe_result(&self, m: &GpuMoe) -> Result<(Vec<f32>, Routing), String> {
        let read = |b| m.read(&self.gpu, b).map_err(cuda_err);
        Ok((
            f32s(&read(MoeBuf::Out)?),
            Routing {
                ids: u32s(&read(MoeBuf::Ids)?),
                weights: f32s(&read(MoeBuf::Weights)?),
                shared: f32s(&read(MoeBuf::SharedW)?),
            },
        ))
    }
}

/// How the suite routes tokens (by steering the selection keys; the router still computes
/// every score and the weights come from the scores).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// k distinct experts drawn uniformly per token.
    Uniform,
    /// k distinct experts drawn by a Zipf law (weight 1/rank) over a random ranking.
    Zipf,
    /// The same k experts for every token.
    Fixed,
}

impl Pattern {
    /// Name in case ids.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Uniform => "uniform",
            Pattern::Zipf => "zipf",
            Pattern::Fixed => "fixed",
        }
    }
}

/// The experts each of `tokens` tokens is steered to, by `pattern` (seeded). With group-limited
/// routing the experts come from the first `topk_group` groups, so the limit keeps them.
pub fn steered_sets(layer: &MoeLayer, pattern: Pattern, tokens: usize, seed: u64) -> Vec<Vec<u32>> {
    let k = layer.top_k;
    let pool = if layer.n_group > 1 {
        layer.topk_group * (layer.n_experts / layer.n_group)
    } else {
        layer.n_experts
    };
    let mut rng = Rng::new(seed);
    // A random ranking of the experts (Fisher-Yates) for Zipf's popular ones.
    let mut ranking: Vec<u32> = (0..pool as u32).collect();
    for i in (1..pool).rev() {
        ranking.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let zipf: Vec<f64> = (0..pool).map(|r| 1.0 / (r as f64 + 1.0)).collect();
    let fixed: Vec<u32> = ranking[..k].to_vec();
    (0..tokens)
        .map(|_| {
            let mut set = match pattern {
                Pattern::Fixed => fixed.clone(),
                Pattern::Uniform | Pattern::Zipf => {
                    let mut w: Vec<f64> = match pattern {
                        Pattern::Zipf => zipf.clone(),
                        _ => vec![1.0; pool],
                    };
                    let mut set = Vec::with_capacity(k);
                    for _ in 0..k {
                        let total: f64 = w.iter().sum();
                        let mut u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
                        let mut pick = pool - 1;
                        for (r, &wr) in w.iter().enumerate() {
                            if u < wr {
                                pick = r;
                                break;
                            }
                            u -= wr;
                        }
                        w[pick] = 0.0;
                        set.push(ranking[pick]);
                    }
                    set
                }
            };
            set.sort_unstable();
            set
        })
        .collect()
}

/// The steering of a batch: [`STEER`] on each token's experts (`tokens × n_experts`).
pub fn steer_vector(sets: &[Vec<u32>], n_experts: usize) -> Vec<f32> {
    let mut v = vec![0f32; sets.len() * n_experts];
    for (t, set) in sets.iter().enumerate() {
        for &e in set {
            v[t * n_experts + e as usize] = STEER;
        }
    }
    v
}

/// Distinct experts over a batch's sets.
pub fn distinct(sets: &[Vec<u32>]) -> usize {
    let mut all: Vec<u32> = sets.iter().flatten().copied().collect();
    all.sort_unstable();
    all.dedup();
    all.len()
}

/// Checks a backend's result for a steered batch, on its first and last tokens: each token
/// routed to its steered experts with the weights the reference router gives them (f64
/// logits, within 1e-3), and its output within 1 % of the output's scale of the f64
/// reference layer on those choices, its inputs rounded as the backend's (`act`; the GPU's
/// Q4_K also rounds its Q8_1 sums to f16, which the reference does not model).
#[allow(clippy::too_many_arguments)]
pub fn check_moe(
    layer: &MoeLayer,
    w: &MoeWeights,
    xs: &[f32],
    sets: &[Vec<u32>],
    out: &[f32],
    r: &Routing,
    act: &dyn Fn(DType) -> DType,
) -> Result<(), String> {
    let (h, e, k) = (layer.hidden, layer.n_experts, layer.top_k);
    let tokens = sets.len();
    if out.len() != tokens * h || r.ids.len() != tokens * k || r.weights.len() != tokens * k {
        return Err(format!(
            "output of {} values and {} choices for {tokens} tokens",
            out.len(),
            r.ids.len()
        ));
    }
    let steer = steer_vector(sets, e);
    let mut checked = vec![0];
    if tokens > 1 {
        checked.push(tokens - 1);
    }
    for t in checked {
        let x = &xs[t * h..(t + 1) * h];
        let mut got: Vec<(u32, f32)> = (0..k)
            .map(|j| (r.ids[t * k + j], r.weights[t * k + j]))
            .collect();
        got.sort_by_key(|p| p.0);
        let ids: Vec<u32> = got.iter().map(|p| p.0).collect();
        if ids != sets[t] {
            return Err(format!(
                "token {t} routed to {ids:?}, steered to {:?}",
                sets[t]
            ));
        }
        let logits = reference_logits(layer, w, x);
        let mut bias = steer[t * e..(t + 1) * e].to_vec();
        if layer.selection_bias() {
            bias.iter_mut()
                .zip(&w.router_bias)
                .for_each(|(b, c)| *b += c);
        }
        let (mut want_ids, mut want_w) = (vec![0u32; k], vec![0f32; k]);
        route(layer, &logits, &bias, &mut want_ids, &mut want_w);
        let mut want: Vec<(u32, f32)> = want_ids.into_iter().zip(want_w).collect();
        want.sort_by_key(|p| p.0);
        for (g, wnt) in got.iter().zip(&want) {
            if (g.1 - wnt.1).abs() > 1e-3 * wnt.1.abs().max(1e-3) {
                return Err(format!(
                    "token {t}: expert {} weight {} vs reference {}",
                    g.0, g.1, wnt.1
                ));
            }
        }
        let reference = reference_forward(layer, w, x, r, t, act).map_err(|e| e.to_string())?;
        crate::verify::check_close_scaled(
            &format!("token {t}"),
            &out[t * h..(t + 1) * h],
            &reference,
            1e-2,
        )?;
    }
    Ok(())
}

/// A least-squares line `y = intercept + slope · x` and how much of y's variance it explains.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Fit {
    /// Slope (ns per byte).
    pub slope: f64,
    /// Intercept (ns).
    pub intercept: f64,
    /// Coefficient of determination (1 − residual / total sum of squares).
    pub r2: f64,
}

/// The least-squares line through `(x, y)`; `None` for fewer than 3 points or a constant x.
pub fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ss_res: f64 = points
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    let r2 = if syy > 0.0 { 1.0 - ss_res / syy } else { 1.0 };
    Some(Fit {
        slope,
        intercept,
        r2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use membound_spec::Recipe;

    fn qwen3() -> MoeLayer {
        let m = membound_spec::registry::find("qwen3-30b-a3b").unwrap();
        MoeLayer::from_spec(&m, Recipe::Q8_0, 0).unwrap()
    }

    #[test]
    fn patterns_pick_k_distinct_experts() {
        let l = qwen3();
        for p in [Pattern::Uniform, Pattern::Zipf, Pattern::Fixed] {
            let sets = steered_sets(&l, p, 64, 3);
            for s in &sets {
                let mut d = s.clone();
                d.dedup();
                assert_eq!(d.len(), 8, "{p:?}");
                assert!(s.iter().all(|&e| e < 128));
            }
            let n = distinct(&sets);
            match p {
                Pattern::Fixed => assert_eq!(n, 8),
                // 64 tokens x 8 of 128 uniformly: about 128 (1 - (120/128)^64) = 125.
                Pattern::Uniform => assert!(n > 110, "{n}"),
                // Zipf concentrates on the popular experts.
                Pattern::Zipf => assert!(n < 110 && n > 8, "{n}"),
            }
        }
        let steer = steer_vector(&steered_sets(&l, Pattern::Fixed, 2, 1), 128);
        assert_eq!(steer.iter().filter(|&&v| v == STEER).count(), 16);
    }

    #[test]
    fn fits_recover_a_line_and_say_when_it_explains_nothing() {
        let pts: Vec<(f64, f64)> = (1..6).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        let f = fit(&pts).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-12 && (f.intercept - 3.0).abs() < 1e-12);
        assert!((f.r2 - 1.0).abs() < 1e-12);
        let flat = [(1.0, 5.0), (2.0, 1.0), (3.0, 5.0), (4.0, 1.0)];
        assert!(fit(&flat).unwrap().r2 < 0.2);
        assert!(fit(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]).is_none());
        assert!(fit(&pts[..2]).is_none());
    }
}
