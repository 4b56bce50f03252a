//! One mixture-of-experts layer as the kernels and the moe suite run it: its shape, router and
//! storage types ([`MoeLayer`], from a model spec and a recipe), and the bytes a batch of tokens
//! makes it read ([`MoeLayer::bytes`], the one convention of [`crate::traffic`]).
//!
//! The computation, per token: router logits `W_r·x` (F32, plus the gpt-oss logit bias); scores
//! by the model's [`RouterScoring`]; top-k (group-limited where the model has groups); weights
//! renormalised where `norm_topk`, times `routed_scaling`; for each selected expert
//! `down(act(gate·x, up·x))` (plus its biases on gpt-oss) weighted and summed; plus the shared
//! expert (times `sigmoid(w_sg·x)` on Qwen3-Next).

use serde::Serialize;

use crate::bytes::weights;
use crate::dtype::DType;
use crate::model::{ModelSpec, RouterScoring};
use crate::recipe::Recipe;

/// The gated activation of the experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// SwiGLU: `silu(g) · u`.
    Silu,
    /// gpt-oss's clamped SwiGLU: `g' = min(g, 7)`, `u' = clamp(u, -7, 7)`,
    /// `g' · sigmoid(1.702 g') · (u' + 1)` (llama.cpp `ggml_swiglu_oai`).
    SwigluOai,
}

/// `alpha` of [`Activation::SwigluOai`].
pub const OAI_ALPHA: f32 = 1.702;
/// `limit` of [`Activation::SwigluOai`].
pub const OAI_LIMIT: f32 = 7.0;

impl Activation {
    /// The activation of `gate` and `up` (f32, as every kernel computes it).
    pub fn apply(self, gate: f32, up: f32) -> f32 {
        match self {
            Activation::Silu => gate / (1.0 + (-gate).exp()) * up,
            Activation::SwigluOai => {
                let g = gate.min(OAI_LIMIT);
                let u = up.clamp(-OAI_LIMIT, OAI_LIMIT);
                g / (1.0 + (-OAI_ALPHA * g).exp()) * (u + 1.0)
            }
        }
    }
}

/// Storage types of a MoE layer's matrices (routers, norms and biases are F32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MoeTypes {
    /// `ffn_gate_exps` and `ffn_up_exps` (one type: the kernels read them together).
    pub gate_up: DType,
    /// `ffn_down_exps`.
    pub down: DType,
    /// `ffn_gate_shexp` and `ffn_up_shexp`.
    pub shared_gate_up: DType,
    /// `ffn_down_shexp`.
    pub shared_down: DType,
}

impl MoeTypes {
    /// Every matrix of one type.
    pub fn all(dtype: DType) -> MoeTypes {
        MoeTypes {
            gate_up: dtype,
            down: dtype,
            shared_gate_up: dtype,
            shared_down: dtype,
        }
    }
}

/// One MoE layer: shapes (values; rows are outputs), router and storage types.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeLayer {
    /// Hidden size: the input and output width.
    pub hidden: usize,
    /// Routed experts.
    pub n_experts: usize,
    /// Experts selected per token.
    pub top_k: usize,
    /// Width of one routed expert (rows of its gate and up, columns of its down).
    pub expert_ff: usize,
    /// Width of the shared expert (all shared experts fused, as llama.cpp stores them); 0: none.
    pub shared_ff: usize,
    /// A sigmoid gate `w_sg·x` scales the shared expert's output (Qwen3-Next).
    pub shared_gate: bool,
    /// Router scoring.
    pub router: RouterScoring,
    /// Selected weights renormalised to sum to one.
    pub norm_topk: bool,
    /// Factor on the routed weights.
    pub routed_scaling: f32,
    /// Expert groups (1: no group limit).
    pub n_group: usize,
    /// Groups kept when `n_group > 1`.
    pub topk_group: usize,
    /// The router carries a bias: added to the logits (gpt-oss), or for sigmoid routers the
    /// selection-only correction bias (`exp_probs_b`).
    pub router_bias: bool,
    /// Per-expert biases on gate, up and down (gpt-oss).
    pub expert_bias: bool,
    /// Expert activation.
    pub activation: Activation,
    /// Storage types.
    pub types: MoeTypes,
}

impl MoeLayer {
    /// A layer of `n_experts` experts of width `expert_ff` over `hidden`, `top_k` selected by a
    /// softmax router with renormalised weights (Qwen3's), SiLU, no shared expert, groups or
    /// biases: the base the tests vary.
    pub fn new(
        hidden: usize,
        n_experts: usize,
        top_k: usize,
        expert_ff: usize,
        types: MoeTypes,
    ) -> MoeLayer {
        MoeLayer {
            hidden,
            n_experts,
            top_k,
            expert_ff,
            shared_ff: 0,
            shared_gate: false,
            router: RouterScoring::Softmax,
            norm_topk: true,
            routed_scaling: 1.0,
            n_group: 1,
            topk_group: 1,
            router_bias: false,
            expert_bias: false,
            activation: Activation::Silu,
            types,
        }
    }

    /// Layer `layer` of `m` (a MoE layer) with the types `recipe` gives it; `None` for a
    /// dense model or layer.
    pub fn from_spec(m: &ModelSpec, recipe: Recipe, layer: u32) -> Option<MoeLayer> {
        let moe = m.ffn.moe.as_ref()?;
        if !m.is_moe_layer(layer) || layer >= m.n_layers {
            return None;
        }
        let w = weights(m, recipe);
        let ty = |base: &str, or: DType| {
            w.tensors
                .iter()
                .find(|t| {
                    t.desc.layer == Some(layer)
                        && t.desc.name.ends_with(".weight")
                        && t.desc.base == base
                })
                .map_or(or, |t| t.dtype)
        };
        let gate_up = ty("ffn_gate_exps", DType::F32);
        let shared_gate_up = ty("ffn_gate_shexp", gate_up);
        let n_group = moe.n_group.unwrap_or(1).max(1) as usize;
        Some(MoeLayer {
            hidden: m.hidden as usize,
            n_experts: moe.n_experts as usize,
            top_k: moe.top_k as usize,
            expert_ff: moe.expert_intermediate as usize,
            shared_ff: (moe.n_shared * moe.shared_intermediate.unwrap_or(moe.expert_intermediate))
                as usize,
            shared_gate: moe.shared_gate,
            router: moe.router,
            norm_topk: moe.norm_topk,
            routed_scaling: moe.routed_scaling as f32,
            n_group,
            topk_group: moe.topk_group.map_or(n_group, |g| g as usize),
            router_bias: moe.router_bias,
            expert_bias: moe.expert_bias,
            activation: if m.arch == "gpt-oss" {
                Activation::SwigluOai
            } else {
                Activation::Silu
            },
            types: MoeTypes {
                gate_up,
                down: ty("ffn_down_exps", gate_up),
                shared_gate_up,
                shared_down: ty("ffn_down_shexp", shared_gate_up),
            },
        })
    }

    /// Whether the router's bias is added to the logits (not a selection-only bias).
    pub fn logit_bias(&self) -> bool {
        self.router_bias && self.router != RouterScoring::Sigmoid
    }

    /// Whether the router's bias only steers selection (sigmoid routers' correction bias).
    pub fn selection_bias(&self) -> bool {
        self.router_bias && self.router == RouterScoring::Sigmoid
    }

    /// Stored bytes of one routed expert's gate, up and down matrices (biases excluded).
    pub fn expert_matrix_bytes(&self) -> u64 {
        let (h, f) = (self.hidden as u64, self.expert_ff as u64);
        2 * f * self.types.gate_up.bytes_for_ceil(h) + h * self.types.down.bytes_for_ceil(f)
    }

    /// Bytes one routed expert reads when selected: its matrices and, on gpt-oss, its bias rows.
    pub fn expert_bytes(&self) -> u64 {
        let bias = if self.expert_bias {
            4 * (2 * self.expert_ff + self.hidden) as u64
        } else {
            0
        };
        self.expert_matrix_bytes() + bias
    }

    /// Stored bytes of every routed expert (the layer's total expert weights).
    pub fn total_expert_bytes(&self) -> u64 {
        self.n_experts as u64 * self.expert_bytes()
    }

    /// Bytes of the router (F32 `W_r`, its bias, the shared expert's gate vector).
    pub fn router_bytes(&self) -> u64 {
        let (h, e) = (self.hidden as u64, self.n_experts as u64);
        4 * (e * h + if self.router_bias { e } else { 0 } + if self.shared_gate { h } else { 0 })
    }

    /// Stored bytes of the shared expert's matrices.
    pub fn shared_bytes(&self) -> u64 {
        let (h, f) = (self.hidden as u64, self.shared_ff as u64);
        if f == 0 {
            return 0;
        }
        2 * f * self.types.shared_gate_up.bytes_for_ceil(h)
            + h * self.types.shared_down.bytes_for_ceil(f)
    }

    /// Bytes a batch of `tokens` must move when `distinct` experts are selected in it (the one
    /// convention): the router and the shared expert once, each distinct expert once, each
    /// token's input read and output written in f32. For one token with `top_k` distinct
    /// experts this is the layer's FFN bytes per token of [`crate::bytes::Weights`] plus
    /// `2 · 4 · hidden` of activations.
    pub fn bytes(&self, distinct: usize, tokens: usize) -> u64 {
        self.router_bytes()
            + self.shared_bytes()
            + distinct as u64 * self.expert_bytes()
            + 8 * (tokens * self.hidden) as u64
    }

    /// Bytes of one token's active parameters (top-k experts, router, shared expert): the
    /// "active" of "speed follows active, not total".
    pub fn active_bytes(&self) -> u64 {
        self.bytes(self.top_k, 1)
    }

    /// Bytes of the whole layer as stored (every expert, router, shared expert).
    pub fn total_bytes(&self) -> u64 {
        self.router_bytes() + self.shared_bytes() + self.total_expert_bytes()
    }

    /// Checks that the shape is one the kernels take: non-empty, `top_k ≤ n_experts`, groups
    /// that split the experts, rows whole blocks of their types.
    pub fn validate(&self) -> Result<(), String> {
        let MoeLayer {
            hidden: h,
            n_experts: e,
            top_k: k,
            expert_ff: f,
            ..
        } = *self;
        if h == 0 || e == 0 || k == 0 || f == 0 {
            return Err(format!(
                "empty MoE layer (hidden {h}, experts {e}, top-k {k}, width {f})"
            ));
        }
        if k > e {
            return Err(format!("top-k {k} exceeds {e} experts"));
        }
        let (g, kg) = (self.n_group, self.topk_group);
        if g == 0 || e % g != 0 || kg == 0 || kg > g || k > kg * (e / g) {
            return Err(format!(
                "{g} groups keeping {kg} cannot route top-{k} of {e} experts"
            ));
        }
        let whole = |t: DType, cols: usize, what: &str| {
            t.bytes_for(cols as u64)
                .map(|_| ())
                .ok_or_else(|| format!("{what}: {cols} values are not whole {t} blocks"))
        };
        whole(self.types.gate_up, h, "gate/up rows")?;
        whole(self.types.down, f, "down rows")?;
        if self.shared_ff > 0 {
            whole(self.types.shared_gate_up, h, "shared gate/up rows")?;
            whole(self.types.shared_down, self.shared_ff, "shared down rows")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    fn layer(name: &str, recipe: Recipe) -> MoeLayer {
        let m = registry::find(name).unwrap();
        let first = m.ffn.moe.as_ref().unwrap().dense_first;
        MoeLayer::from_spec(&m, recipe, first).unwrap()
    }

    /// Qwen3-30B-A3B at Q8_0, by hand: 8 experts × (2 × 768 rows × 64 blocks + 2048 rows ×
    /// 24 blocks) × 34 bytes, the F32 router 128 × 2048 × 4, x and y 2 × 2048 × 4.
    #[test]
    fn qwen3_30b_a3b_layer_by_hand() {
        let l = layer("qwen3-30b-a3b", Recipe::Q8_0);
        let expert = (2 * 768 * 64 + 2048 * 24) * 34;
        assert_eq!(l.expert_bytes(), expert);
        assert_eq!(l.router_bytes(), 128 * 2048 * 4);
        assert_eq!(l.active_bytes(), 8 * expert + 128 * 2048 * 4 + 2 * 2048 * 4);
        assert_eq!(l.active_bytes(), 40_108_032 + 1_048_576 + 16_384);
        assert_eq!(l.total_bytes(), 128 * expert + 128 * 2048 * 4);
        assert_eq!(
            (l.activation, l.router, l.norm_topk),
            (Activation::Silu, RouterScoring::Softmax, true)
        );
    }

    /// gpt-oss-120b MXFP4_MOE, by hand: 4 experts × 3 × 2880 rows × 90 blocks × 17 bytes, their
    /// bias rows 4 × (2 × 2880 + 2880) × 4, the router 128 × 2880 × 4 plus its bias 128 × 4.
    #[test]
    fn gpt_oss_120b_layer_by_hand() {
        let l = layer("gpt-oss-120b", Recipe::MXFP4_MOE);
        assert_eq!(l.types, MoeTypes::all(DType::MXFP4));
        let expert = 3 * 2880 * 90 * 17 + 3 * 2880 * 4;
        assert_eq!(l.expert_bytes(), expert);
        assert_eq!(l.router_bytes(), 128 * 2880 * 4 + 128 * 4);
        assert_eq!(
            l.active_bytes(),
            4 * expert + 128 * 2880 * 4 + 128 * 4 + 2 * 2880 * 4
        );
        assert_eq!(l.active_bytes(), 53_015_040 + 1_475_072 + 23_040);
        assert_eq!(l.activation, Activation::SwigluOai);
        assert!(l.logit_bias() && !l.selection_bias());
    }

    /// One token's bytes are the layer's FFN bytes per token of `membound spec`'s accounting
    /// plus the activations, for every MoE model and recipe (mixed types included).
    #[test]
    fn one_token_equals_the_spec_accounting() {
        for m in registry::embedded().unwrap() {
            let Some(moe) = m.ffn.moe.as_ref() else {
                continue;
            };
            for recipe in [
                Recipe::Q8_0,
                Recipe::Q4_K_M,
                Recipe::MXFP4_MOE,
                Recipe::BF16,
            ] {
                let l = MoeLayer::from_spec(&m, recipe, moe.dense_first).unwrap();
                let spec = weights(&m, recipe).ffn_active_bytes(moe.dense_first);
                assert_eq!(
                    l.active_bytes(),
                    spec + 8 * m.hidden,
                    "{} {recipe:?}",
                    m.name
                );
                assert!(l.total_bytes() > l.active_bytes() - 8 * m.hidden);
            }
        }
    }

    #[test]
    fn glm_has_a_selection_bias_shared_expert_and_scaling() {
        let l = layer("glm-4.7-flash", Recipe::Q8_0);
        assert!(l.selection_bias() && !l.logit_bias());
        assert_eq!((l.shared_ff, l.routed_scaling, l.top_k), (1536, 1.8, 4));
        let n = layer("qwen3-coder-next", Recipe::Q4_K_M);
        assert!(n.shared_gate && n.shared_ff == 512 && n.n_experts == 512);
        assert!(n.validate().is_ok());
    }

    #[test]
    fn validation_names_the_problem() {
        let mut l = layer("qwen3-30b-a3b", Recipe::Q8_0);
        l.top_k = 129;
        assert!(l.validate().unwrap_err().contains("top-k 129"));
        l.top_k = 8;
        l.n_group = 3;
        assert!(l.validate().unwrap_err().contains("groups"));
        l.n_group = 8;
        l.topk_group = 1;
        assert!(l.validate().is_ok());
        l.top_k = 17;
        assert!(l.validate().is_err(), "one group of 16 cannot hold 17");
        l.top_k = 8;
        l.types.down = DType::Q4_K;
        l.expert_ff = 700;
        assert!(l.validate().unwrap_err().contains("down rows"));
    }

    #[test]
    fn swiglu_oai_clamps() {
        let a = Activation::SwigluOai;
        assert_eq!(a.apply(100.0, 0.0), a.apply(OAI_LIMIT, 0.0));
        assert_eq!(a.apply(1.0, 100.0), a.apply(1.0, OAI_LIMIT));
        assert_eq!(a.apply(1.0, -100.0), a.apply(1.0, -OAI_LIMIT));
        let s = Activation::Silu.apply(2.0, 3.0);
        assert!((s - 2.0 / (1.0 + (-2.0f32).exp()) * 3.0).abs() < 1e-6);
    }
}
