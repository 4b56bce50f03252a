//! The decode step on the CPU ([`CpuDecoder`]).

use std::time::Instant;

use membound_cpu::attention::{KvCacheBuf, attend};
use membound_cpu::moe::{CpuMoe, ExpertStack, MoeWeights};
use membound_cpu::{CpuGemv, Isa};
use membound_spec::attention::AttnShape;
use membound_spec::model::{AttentionKind, LayerKind, Numerics};
use membound_spec::moe::{MoeLayer, MoeTypes};
use membound_spec::{DType, KvLayout, ModelSpec, Recipe};
use rayon::ThreadPool;

use crate::DecodeError;
use crate::delta::{DeltaNet, DeltaParams, DeltaShape, DeltaState};
use crate::ops::{add, argmax, geglu, rms_norm, rms_norm_heads, rope, swiglu, zeroed};
use crate::sample::LayerSample;
use crate::source::{Tensor, TensorSource};

/// How a step is built.
#[derive(Debug, Clone)]
pub struct StepOptions {
    /// KV layout (GQA models: `gqa`; MLA models: `mla-latent` or `mla-split`).
    pub layout: KvLayout,
    /// Cache element type (F32, F16, BF16, Q8_0).
    pub kv_dtype: DType,
    /// Tokens each cache holds: the deepest position a step may write is `capacity - 1`.
    pub capacity: usize,
    /// The layers to build (the whole model, or a sample).
    pub sample: LayerSample,
    /// Norm epsilon, RoPE base and style.
    pub numerics: Numerics,
    /// Seed of the generated cache contents (the tokens before the first step).
    pub seed: u64,
    /// Sliding-window layers keep only their window, as a ring (`false`: a cache of
    /// `capacity` tokens of which the window is attended, as the attention suite does).
    pub sliding_ring: bool,
    /// Build the final norm and lm_head (`false`: a stage that hands its residual stream to
    /// another device, [`CpuDecoder::hidden`]).
    pub head: bool,
    /// A GPU step folds small launches into their neighbours and stacks the projections that
    /// read the same input (`MEMBOUND_FUSE`, default on; `membound_cuda::decode::fusion_enabled`).
    pub fuse: bool,
}

impl StepOptions {
    /// The whole model in its native layout with an F16 cache of `capacity` tokens and the
    /// architecture's usual numerics.
    pub fn new(m: &ModelSpec, capacity: usize) -> StepOptions {
        StepOptions {
            layout: KvLayout::native(m),
            kv_dtype: DType::F16,
            capacity,
            sample: LayerSample::whole(m),
            numerics: Numerics::for_arch(&m.arch),
            seed: 1,
            sliding_ring: true,
            head: true,
            fuse: membound_cuda::decode::fusion_enabled(),
        }
    }
}

/// A GQA attention layer's weights and cache.
struct Gqa {
    q: CpuGemv,
    k: CpuGemv,
    v: CpuGemv,
    o: CpuGemv,
    /// Q, K, V, O biases (empty without).
    bias: [Vec<f32>; 4],
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    /// Qwen3-Next's output gate: Q's projection holds each head's query then its gate, and
    /// the attention output is multiplied by `sigmoid(gate)`.
    gated: bool,
}

/// An MLA attention layer's weights: the query path, the latent projection and the per-head
/// `W_UK` (absorbed into the query) and `W_UV` (applied to the latent output).
struct Mla {
    q_a: Option<(CpuGemv, Vec<f32>)>,
    q: CpuGemv,
    kv_a: CpuGemv,
    kv_norm: Vec<f32>,
    k_b: CpuGemv,
    v_b: CpuGemv,
    o: CpuGemv,
}

enum Mixer {
    Gqa(Gqa),
    Mla(Mla),
    Linear(Box<DeltaNet>),
}

// One per layer, built once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Ffn {
    Dense {
        gate: CpuGemv,
        up: CpuGemv,
        down: CpuGemv,
        gelu: bool,
    },
    Moe(Box<CpuMoe>),
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Gemma 3's norms of the attention's and the FFN's outputs (empty without).
    post_attn_norm: Vec<f32>,
    post_ffn_norm: Vec<f32>,
    /// The layer's RoPE base.
    theta: f32,
    mixer: Mixer,
    sinks: Vec<f32>,
    /// The KV cache (none for a linear-attention layer, whose state is its mixer's).
    cache: Option<KvCacheBuf>,
    /// A sliding layer keeps only its window, as a ring: token `t` in cell `t % cells`.
    ring: bool,
    ffn_norm: Vec<f32>,
    ffn: Ffn,
    /// The step's temporaries, kept from token to token.
    bufs: StepBufs,
}

/// A layer's temporaries of one step (projections, queries, activations), reused by the next
/// token so a warm step does not allocate them.
#[derive(Default)]
struct StepBufs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    gate: Vec<f32>,
    attn: Vec<f32>,
    c: Vec<f32>,
    cn: Vec<f32>,
    row: Vec<f32>,
    q_lat: Vec<f32>,
    query: Vec<f32>,
    heads: Vec<f32>,
}

/// One model's decode step on the CPU: built layers, caches and scratch.
pub struct CpuDecoder {
    spec: ModelSpec,
    num: Numerics,
    embd: Tensor,
    embd_scale: f32,
    layers: Vec<Layer>,
    sample: LayerSample,
    out_norm: Vec<f32>,
    /// The lm_head (none in a stage without the head).
    output: Option<CpuGemv>,
    isa: Isa,
    logits: Vec<f32>,
    /// The residual stream, the normed state and a sub-layer's output (`hidden` each).
    x: Vec<f32>,
    h: Vec<f32>,
    y: Vec<f32>,
    layer_ns: Vec<f64>,
    fixed_ns: f64,
}

/// Row `token` of the token embeddings (`hidden` values) times `scale`, into `x` (within its
/// capacity once warm).
pub(crate) fn embed_row(
    embd: &Tensor,
    hidden: u64,
    token: u32,
    scale: f32,
    x: &mut Vec<f32>,
) -> Result<(), DecodeError> {
    let row = embd.dtype.bytes_for(hidden).unwrap_or(0) as usize;
    let at = token as usize * row;
    let bytes = embd
        .bytes
        .get(at..at + row)
        .ok_or_else(|| DecodeError::Request(format!("token {token} past the embeddings")))?;
    x.clear();
    membound_quant::ops::dequantize_extend(embd.dtype, bytes, x).map_err(|e| {
        DecodeError::Tensor {
            name: "token_embd.weight".into(),
            problem: e.to_string(),
        }
    })?;
    x.iter_mut().for_each(|v| *v *= scale);
    Ok(())
}

/// The factor on the embedding row (Gemma multiplies it by √hidden).
pub(crate) fn embedding_scale(m: &ModelSpec) -> f32 {
    if m.arch == "gemma3" {
        (m.hidden as f32).sqrt()
    } else {
        1.0
    }
}

/// Weight matrix `name` as a GEMV (rows = `dims[1..]`, columns `dims[0]`).
fn matrix(src: &dyn TensorSource, name: &str) -> Result<CpuGemv, DecodeError> {
    let t = need(src, name)?;
    let (rows, cols) = t.rows_cols();
    CpuGemv::new(t.dtype, rows, cols, t.bytes).map_err(|e| DecodeError::Tensor {
        name: name.to_string(),
        problem: e.to_string(),
    })
}

pub(crate) fn need(src: &dyn TensorSource, name: &str) -> Result<Tensor, DecodeError> {
    src.tensor(name)?.ok_or_else(|| DecodeError::Missing {
        from: src.describe(),
        name: name.to_string(),
    })
}

pub(crate) fn vector(src: &dyn TensorSource, name: &str) -> Result<Vec<f32>, DecodeError> {
    need(src, name)?.to_f32(name)
}

pub(crate) fn vector_opt(src: &dyn TensorSource, name: &str) -> Result<Vec<f32>, DecodeError> {
    match src.tensor(name)? {
        Some(t) => t.to_f32(name),
        None => Ok(Vec::new()),
    }
}

fn stack(src: &dyn TensorSource, name: &str) -> Result<ExpertStack, DecodeError> {
    let t = need(src, name)?;
    let cols = t.dims.first().copied().unwrap_or(1) as usize;
    let rows = t.dims.get(1).copied().unwrap_or(1) as usize;
    let n = t.dims.get(2).copied().unwrap_or(1) as usize;
    ExpertStack::new(t.dtype, n, rows, cols, t.bytes).map_err(|e| DecodeError::Tensor {
        name: name.to_string(),
        problem: e.to_string(),
    })
}

impl CpuDecoder {
    /// Builds the layers `opts.sample` names of `m` from `src`.
    pub fn new(
        m: &ModelSpec,
        src: &dyn TensorSource,
        opts: &StepOptions,
    ) -> Result<CpuDecoder, DecodeError> {
        let unsupported = |what: String| DecodeError::Unsupported {
            model: m.name.clone(),
            what,
        };
        let native = KvLayout::native(m);
        let layout_ok = match m.attention.kind {
            AttentionKind::Gqa => opts.layout == KvLayout::Gqa,
            AttentionKind::Mla => matches!(opts.layout, KvLayout::MlaLatent | KvLayout::MlaSplit),
        };
        if !layout_ok {
            return Err(unsupported(format!(
                "the {} layout (this model: {native}{})",
                opts.layout,
                if native == KvLayout::MlaLatent {
                    " or mla-split"
                } else {
                    ""
                }
            )));
        }
        if !matches!(
            opts.kv_dtype,
            DType::F32 | DType::F16 | DType::BF16 | DType::Q8_0
        ) {
            return Err(unsupported(format!("a {} KV cache", opts.kv_dtype)));
        }
        if opts.capacity == 0 {
            return Err(DecodeError::Request("a cache of 0 tokens".into()));
        }
        let embd = need(src, "token_embd.weight")?;
        let output = if !opts.head {
            None
        } else if m.tied_embeddings || src.tensor("output.weight")?.is_none() {
            Some(matrix(src, "token_embd.weight")?)
        } else {
            Some(matrix(src, "output.weight")?)
        };
        let mut layers = Vec::with_capacity(opts.sample.layers.len());
        for (n, &i) in opts.sample.layers.iter().enumerate() {
            if i >= m.n_layers {
                return Err(DecodeError::Request(format!(
                    "layer {i} of a model of {} layers",
                    m.n_layers
                )));
            }
            layers.push(build_layer(m, src, opts, i, opts.seed ^ (n as u64) << 8)?);
        }
        Ok(CpuDecoder {
            spec: m.clone(),
            num: opts.numerics,
            embd_scale: embedding_scale(m),
            embd,
            layer_ns: vec![0.0; layers.len()],
            layers,
            sample: opts.sample.clone(),
            out_norm: if opts.head {
                vector(src, "output_norm.weight")?
            } else {
                Vec::new()
            },
            logits: vec![0.0; output.as_ref().map_or(0, CpuGemv::rows)],
            output,
            x: Vec::new(),
            h: vec![0.0; m.hidden as usize],
            y: vec![0.0; m.hidden as usize],
            isa: Isa::detect(),
            fixed_ns: 0.0,
        })
    }

    /// Positions the caches can hold (sliding layers keep a ring of their window).
    pub fn capacity(&self) -> usize {
        self.layers
            .iter()
            .map(Layer::capacity)
            .min()
            .unwrap_or(usize::MAX)
    }

    /// The layers built and what each stands for.
    pub fn sample(&self) -> &LayerSample {
        &self.sample
    }

    /// Logits of the last step.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// One decode step: token `token` at position `pos` (the caches hold positions `< pos`;
    /// this step writes position `pos` and attends to it). Returns the argmax of the logits.
    pub fn step(&mut self, pool: &ThreadPool, token: u32, pos: usize) -> Result<u32, DecodeError> {
        let output = self.output.take().ok_or_else(|| {
            DecodeError::Request(
                "this decoder was built without its head (StepOptions::head)".into(),
            )
        })?;
        let next = self.run_layers(pool, token, pos).and_then(|fixed| {
            let t = Instant::now();
            rms_norm(&self.x, &self.out_norm, self.num.norm_eps, &mut self.h);
            let (isa, h, logits) = (self.isa, &self.h, &mut self.logits);
            pool.install(|| output.run_with(pool, isa, h, logits))?;
            let next = argmax(&self.logits) as u32;
            self.fixed_ns = (fixed + t.elapsed().as_secs_f64()) * 1e9;
            Ok(next)
        });
        self.output = Some(output);
        next
    }

    /// The residual stream after the built layers for token `token` at `pos` (the embedding
    /// row through every built layer): what a stage on another device continues from.
    pub fn hidden(
        &mut self,
        pool: &ThreadPool,
        token: u32,
        pos: usize,
    ) -> Result<&[f32], DecodeError> {
        self.fixed_ns = self.run_layers(pool, token, pos)? * 1e9;
        Ok(&self.x)
    }

    /// The embedding row of `token` through every built layer into `self.x`; returns the
    /// seconds spent outside the layers.
    fn run_layers(
        &mut self,
        pool: &ThreadPool,
        token: u32,
        pos: usize,
    ) -> Result<f64, DecodeError> {
        // On a pool thread every kernel's parallel loop starts directly; from outside, each
        // of the step's hundreds of loops would be handed to the pool and waited for (two
        // thread wake-ups: 10-20 µs each on the 2-vCPU VM, measured).
        pool.install(|| self.run_layers_here(pool, token, pos))
    }

    fn run_layers_here(
        &mut self,
        pool: &ThreadPool,
        token: u32,
        pos: usize,
    ) -> Result<f64, DecodeError> {
        let m = &self.spec;
        if u64::from(token) >= m.vocab {
            return Err(DecodeError::Request(format!(
                "token {token} of a vocabulary of {}",
                m.vocab
            )));
        }
        let capacity = self.capacity();
        if pos >= capacity {
            return Err(DecodeError::Request(format!(
                "position {pos} past the cache's {capacity} tokens"
            )));
        }
        let t0 = Instant::now();
        embed_row(&self.embd, m.hidden, token, self.embd_scale, &mut self.x)?;
        let (x, h, y) = (&mut self.x, &mut self.h, &mut self.y);
        let fixed = t0.elapsed().as_secs_f64();
        for (layer, ns) in self.layers.iter_mut().zip(&mut self.layer_ns) {
            let t = Instant::now();
            rms_norm(x, &layer.attn_norm, self.num.norm_eps, h);
            layer.attention(pool, self.isa, &self.num, h, pos, y)?;
            post_norm(y, &layer.post_attn_norm, self.num.norm_eps, h);
            add(x, y);
            rms_norm(x, &layer.ffn_norm, self.num.norm_eps, h);
            layer.ffn(pool, self.isa, h, y)?;
            post_norm(y, &layer.post_ffn_norm, self.num.norm_eps, h);
            add(x, y);
            *ns = t.elapsed().as_secs_f64() * 1e9;
        }
        Ok(fixed)
    }

    /// The last step's time in ns: measured when every layer is built; else the embedding
    /// and lm_head time plus each sampled layer's time times the layers it stands for.
    pub fn step_ns(&self) -> f64 {
        self.sample.scale(self.fixed_ns, &self.layer_ns)
    }

    /// Each built layer's time in the last step (ns).
    pub fn layer_ns(&self) -> &[f64] {
        &self.layer_ns
    }
}

/// Layer `i`'s norms around its FFN, each tensor read once.
pub(crate) struct FfnNorms {
    /// The norm before the FFN: `ffn_norm`, or `post_attention_norm` where the file has no
    /// `ffn_norm` (gpt-oss's and Qwen3-Next's name for it in llama.cpp's files).
    pub(crate) pre: Vec<f32>,
    /// Gemma 3's norms of the attention's and the FFN's outputs (`post_attention_norm` beside
    /// an `ffn_norm`, and `post_ffw_norm`); empty without.
    pub(crate) post_attn: Vec<f32>,
    pub(crate) post_ffn: Vec<f32>,
}

impl FfnNorms {
    /// Layer `i`'s norms from `src`.
    pub(crate) fn of(src: &dyn TensorSource, i: u32) -> Result<FfnNorms, DecodeError> {
        let p = |base: &str| format!("blk.{i}.{base}");
        let pre = vector_opt(src, &p("ffn_norm.weight"))?;
        Ok(if pre.is_empty() {
            FfnNorms {
                pre: vector(src, &p("post_attention_norm.weight"))?,
                post_attn: Vec::new(),
                post_ffn: Vec::new(),
            }
        } else {
            FfnNorms {
                pre,
                post_attn: vector_opt(src, &p("post_attention_norm.weight"))?,
                post_ffn: vector_opt(src, &p("post_ffw_norm.weight"))?,
            }
        })
    }
}

/// `y = rms_norm(y) · w` where `w` is not empty (`tmp`: scratch of `y`'s length).
fn post_norm(y: &mut [f32], w: &[f32], eps: f32, tmp: &mut [f32]) {
    if !w.is_empty() {
        rms_norm(y, w, eps, tmp);
        y.copy_from_slice(tmp);
    }
}

/// Layer `i`'s FFN.
fn ffn_of(m: &ModelSpec, src: &dyn TensorSource, i: u32) -> Result<Ffn, DecodeError> {
    let p = |base: &str| format!("blk.{i}.{base}");
    Ok(if m.is_moe_layer(i) {
        Ffn::Moe(Box::new(moe_layer(m, src, i)?))
    } else {
        Ffn::Dense {
            gate: matrix(src, &p("ffn_gate.weight"))?,
            up: matrix(src, &p("ffn_up.weight"))?,
            down: matrix(src, &p("ffn_down.weight"))?,
            gelu: m.arch == "gemma3",
        }
    })
}

/// Builds layer `i`.
fn build_layer(
    m: &ModelSpec,
    src: &dyn TensorSource,
    opts: &StepOptions,
    i: u32,
    seed: u64,
) -> Result<Layer, DecodeError> {
    let p = |base: &str| format!("blk.{i}.{base}");
    let kind = m.layer_kind(i);
    if kind == LayerKind::Linear {
        let mixer = Mixer::Linear(Box::new(delta_net(m, src, opts, i)?));
        let norms = FfnNorms::of(src, i)?;
        return Ok(Layer {
            attn_norm: vector(src, &p("attn_norm.weight"))?,
            post_attn_norm: norms.post_attn,
            post_ffn_norm: norms.post_ffn,
            theta: opts.numerics.theta(kind),
            mixer,
            sinks: Vec::new(),
            cache: None,
            ring: false,
            ffn_norm: norms.pre,
            ffn: ffn_of(m, src, i)?,
            bufs: StepBufs::default(),
        });
    }
    let mut shape = AttnShape::from_spec(m, opts.layout, opts.kv_dtype, kind)
        .map_err(|e| DecodeError::Request(e.to_string()))?;
    let (cells, ring) = match shape.window {
        Some(w) if opts.sliding_ring && w < opts.capacity => (w, true),
        _ => (opts.capacity, false),
    };
    if ring {
        shape.window = None;
    }
    let cache = Some(KvCacheBuf::generate(&shape, cells, seed)?);
    let a = &m.attention;
    let mixer = match a.kind {
        AttentionKind::Gqa => Mixer::Gqa(Gqa {
            q: matrix(src, &p("attn_q.weight"))?,
            k: matrix(src, &p("attn_k.weight"))?,
            v: matrix(src, &p("attn_v.weight"))?,
            o: matrix(src, &p("attn_output.weight"))?,
            bias: [
                vector_opt(src, &p("attn_q.bias"))?,
                vector_opt(src, &p("attn_k.bias"))?,
                vector_opt(src, &p("attn_v.bias"))?,
                vector_opt(src, &p("attn_output.bias"))?,
            ],
            q_norm: vector_opt(src, &p("attn_q_norm.weight"))?,
            k_norm: vector_opt(src, &p("attn_k_norm.weight"))?,
            gated: a.output_gate,
        }),
        AttentionKind::Mla => {
            if src.tensor(&p("attn_k_b.weight"))?.is_none()
                && src.tensor(&p("attn_kv_b.weight"))?.is_some()
            {
                return Err(DecodeError::Unsupported {
                    model: m.name.clone(),
                    what: "a fused attn_kv_b (files converted before llama.cpp split it into attn_k_b and attn_v_b)".into(),
                });
            }
            let q_a = match src.tensor(&p("attn_q_a.weight"))? {
                Some(_) => Some((
                    matrix(src, &p("attn_q_a.weight"))?,
                    vector(src, &p("attn_q_a_norm.weight"))?,
                )),
                None => None,
            };
            Mixer::Mla(Mla {
                q: matrix(
                    src,
                    &p(if q_a.is_some() {
                        "attn_q_b.weight"
                    } else {
                        "attn_q.weight"
                    }),
                )?,
                q_a,
                kv_a: matrix(src, &p("attn_kv_a_mqa.weight"))?,
                kv_norm: vector(src, &p("attn_kv_a_norm.weight"))?,
                k_b: matrix(src, &p("attn_k_b.weight"))?,
                v_b: matrix(src, &p("attn_v_b.weight"))?,
                o: matrix(src, &p("attn_output.weight"))?,
            })
        }
    };
    let norms = FfnNorms::of(src, i)?;
    Ok(Layer {
        attn_norm: vector(src, &p("attn_norm.weight"))?,
        post_attn_norm: norms.post_attn,
        post_ffn_norm: norms.post_ffn,
        theta: opts.numerics.theta(kind),
        mixer,
        sinks: if a.sinks {
            vector(src, &p("attn_sinks.weight"))?
        } else {
            Vec::new()
        },
        cache,
        ring,
        ffn_norm: norms.pre,
        ffn: ffn_of(m, src, i)?,
        bufs: StepBufs::default(),
    })
}

/// Layer `i`'s Gated DeltaNet shape and small parameters (f32), checked.
pub(crate) fn delta_params(
    m: &ModelSpec,
    src: &dyn TensorSource,
    i: u32,
    eps: f32,
) -> Result<(DeltaShape, DeltaParams), DecodeError> {
    let p = |base: &str| format!("blk.{i}.{base}");
    let la = m
        .linear_attention
        .as_ref()
        .ok_or_else(|| DecodeError::Unsupported {
            model: m.name.clone(),
            what: format!("layer {i}: a linear layer without linear-attention shapes"),
        })?;
    let shape = DeltaShape::of(la);
    if shape.n_k == 0 || !shape.n_v.is_multiple_of(shape.n_k) || shape.conv == 0 {
        return Err(DecodeError::Request(format!(
            "Gated DeltaNet of {} key and {} value heads, {} taps",
            shape.n_k, shape.n_v, shape.conv
        )));
    }
    let ch = shape.channels();
    let conv_w = vector(src, &p("ssm_conv1d.weight"))?;
    if conv_w.len() != ch * shape.conv {
        return Err(DecodeError::Tensor {
            name: p("ssm_conv1d.weight"),
            problem: format!("{} values, expected {ch} x {}", conv_w.len(), shape.conv),
        });
    }
    let params = DeltaParams {
        conv_w,
        dt_bias: vector(src, &p("ssm_dt.bias"))?,
        a: vector(src, &p("ssm_a"))?,
        norm: vector(src, &p("ssm_norm.weight"))?,
        eps,
    };
    Ok((shape, params))
}

/// Layer `i`'s Gated DeltaNet, its states those of a fresh sequence.
fn delta_net(
    m: &ModelSpec,
    src: &dyn TensorSource,
    opts: &StepOptions,
    i: u32,
) -> Result<DeltaNet, DecodeError> {
    let p = |base: &str| format!("blk.{i}.{base}");
    let (shape, params) = delta_params(m, src, i, opts.numerics.norm_eps)?;
    let gemv = |name: &str, rows: usize, cols: usize| -> Result<CpuGemv, DecodeError> {
        let g = matrix(src, &p(name))?;
        if (g.rows(), g.cols()) != (rows, cols) {
            return Err(DecodeError::Tensor {
                name: p(name),
                problem: format!("{} x {}, expected {rows} x {cols}", g.rows(), g.cols()),
            });
        }
        Ok(g)
    };
    let (d, v) = (m.hidden as usize, shape.n_v * shape.d_v);
    // A fresh sequence's states, as llama.cpp starts one: zeros (a state's values do not
    // change the bytes or the work of a step).
    let state = DeltaState {
        conv: vec![0.0; (shape.conv - 1) * shape.channels()],
        s: vec![0.0; shape.state_len()],
    };
    Ok(DeltaNet {
        shape,
        qkv: gemv("attn_qkv.weight", shape.channels(), d)?,
        gate: gemv("attn_gate.weight", v, d)?,
        ba: gemv("ssm_ba.weight", 2 * shape.n_v, d)?,
        out: gemv("ssm_out.weight", d, v)?,
        params,
        states: [state.clone(), state],
        at: None,
        bufs: Default::default(),
    })
}

/// Layer `i`'s MoE FFN with the types its tensors are stored in.
pub(crate) fn moe_layer(
    m: &ModelSpec,
    src: &dyn TensorSource,
    i: u32,
) -> Result<CpuMoe, DecodeError> {
    let p = |base: &str| format!("blk.{i}.{base}");
    let mut l = MoeLayer::from_spec(m, Recipe::Q8_0, i).ok_or_else(|| {
        DecodeError::Request(format!("layer {i} of {} is not a MoE layer", m.name))
    })?;
    let (gate, up, down) = (
        stack(src, &p("ffn_gate_exps.weight"))?,
        stack(src, &p("ffn_up_exps.weight"))?,
        stack(src, &p("ffn_down_exps.weight"))?,
    );
    let shared = if l.shared_ff > 0 {
        Some((
            stack(src, &p("ffn_gate_shexp.weight"))?,
            stack(src, &p("ffn_up_shexp.weight"))?,
            stack(src, &p("ffn_down_shexp.weight"))?,
        ))
    } else {
        None
    };
    l.types = MoeTypes {
        gate_up: gate.dtype(),
        down: down.dtype(),
        shared_gate_up: shared.as_ref().map_or(gate.dtype(), |s| s.0.dtype()),
        shared_down: shared.as_ref().map_or(down.dtype(), |s| s.2.dtype()),
    };
    let mut router = vector(src, &p("ffn_gate_inp.weight"))?;
    if l.shared_gate {
        router.extend(vector(src, &p("ffn_gate_inp_shexp.weight"))?);
    }
    let mut router_bias = vector_opt(src, &p("ffn_gate_inp.bias"))?;
    if router_bias.is_empty() {
        router_bias = vector_opt(src, &p("exp_probs_b.bias"))?;
    }
    let bias = if l.expert_bias {
        (
            vector(src, &p("ffn_gate_exps.bias"))?,
            vector(src, &p("ffn_up_exps.bias"))?,
            vector(src, &p("ffn_down_exps.bias"))?,
        )
    } else {
        Default::default()
    };
    let w = MoeWeights {
        router,
        router_bias,
        gate,
        up,
        down,
        bias,
        shared,
    };
    Ok(CpuMoe::new(l, w)?)
}

impl Layer {
    fn capacity(&self) -> usize {
        match &self.cache {
            Some(c) if !self.ring => c.tokens(),
            _ => usize::MAX,
        }
    }

    /// The attention of one token at `pos` into `out` (`hidden` values).
    fn attention(
        &mut self,
        pool: &ThreadPool,
        isa: Isa,
        num: &Numerics,
        h: &[f32],
        pos: usize,
        out: &mut [f32],
    ) -> Result<(), DecodeError> {
        let cache = match (&mut self.mixer, &mut self.cache) {
            (Mixer::Linear(d), _) => return d.forward(pool, isa, h, pos, out),
            (_, Some(c)) => c,
            (_, None) => {
                return Err(DecodeError::Request(
                    "an attention layer without a cache".into(),
                ));
            }
        };
        let cells = cache.tokens();
        let (cell, depth) = if self.ring {
            (pos % cells, (pos + 1).min(cells))
        } else {
            (pos, pos + 1)
        };
        let s = cache.shape().clone();
        let b = &mut self.bufs;
        let attn = zeroed(&mut b.attn, s.n_heads * s.d_v);
        match &self.mixer {
            Mixer::Linear(_) => {}
            Mixer::Gqa(g) => {
                let run =
                    |w: &CpuGemv, bias: &[f32], y: &mut Vec<f32>| -> Result<(), DecodeError> {
                        w.run_with(pool, isa, h, zeroed(y, w.rows()))?;
                        add(y, bias);
                        Ok(())
                    };
                run(&g.q, &g.bias[0], &mut b.q)?;
                run(&g.k, &g.bias[1], &mut b.k)?;
                run(&g.v, &g.bias[2], &mut b.v)?;
                let (q, k, v) = (&mut b.q, &mut b.k, &b.v);
                // A gated Q projection holds each head's query, then its gate: the gates move
                // out, the queries close up (each moves to a lower index: copy_within is safe).
                b.gate.clear();
                if g.gated {
                    let dk = s.d_k;
                    for hd in 0..q.len() / (2 * dk) {
                        b.gate
                            .extend_from_slice(&q[(2 * hd + 1) * dk..(2 * hd + 2) * dk]);
                        q.copy_within(2 * hd * dk..(2 * hd + 1) * dk, hd * dk);
                    }
                    q.truncate(q.len() / 2);
                }
                if !g.q_norm.is_empty() {
                    rms_norm_heads(q, &g.q_norm, num.norm_eps);
                    rms_norm_heads(k, &g.k_norm, num.norm_eps);
                }
                let dims = num.rope_dims(s.d_k);
                rope(q, s.d_k, dims, pos, self.theta, num.rope_neox);
                rope(k, s.d_k, dims, pos, self.theta, num.rope_neox);
                cache.write_token(cell, k, v)?;
                attend(pool, cache, q, &self.sinks, depth, attn)?;
                for (a, g) in attn.iter_mut().zip(&b.gate) {
                    *a /= 1.0 + (-g).exp();
                }
                g.o.run_with(pool, isa, attn, out)?;
                add(out, &g.bias[3]);
            }
            Mixer::Mla(a) => {
                let nh = s.n_heads;
                let kvr = a.kv_norm.len();
                let rope_d = s.d_k - kvr;
                let q = zeroed(&mut b.q, a.q.rows());
                match &a.q_a {
                    Some((qa, norm)) => {
                        let c = zeroed(&mut b.c, qa.rows());
                        qa.run_with(pool, isa, h, c)?;
                        let cn = zeroed(&mut b.cn, c.len());
                        rms_norm(c, norm, num.norm_eps, cn);
                        a.q.run_with(pool, isa, cn, q)?;
                    }
                    None => a.q.run_with(pool, isa, h, q)?,
                }
                let qk = q.len() / nh;
                let nope = qk - rope_d;
                let kv = zeroed(&mut b.k, a.kv_a.rows());
                a.kv_a.run_with(pool, isa, h, kv)?;
                let row = zeroed(&mut b.row, s.d_k);
                rms_norm(&kv[..kvr], &a.kv_norm, num.norm_eps, &mut row[..kvr]);
                row[kvr..].copy_from_slice(&kv[kvr..]);
                rope(
                    &mut row[kvr..],
                    rope_d,
                    rope_d,
                    pos,
                    num.rope_theta,
                    num.rope_neox,
                );
                cache.write_token(cell, row, &row[..kvr])?;
                // Absorb W_UK: each head's query in latent space, its rope part appended.
                let q_nope = zeroed(&mut b.v, nh * nope);
                for (dst, src) in q_nope.chunks_exact_mut(nope).zip(q.chunks_exact(qk)) {
                    dst.copy_from_slice(&src[..nope]);
                }
                let q_lat = zeroed(&mut b.q_lat, nh * kvr);
                a.k_b.run_grouped_with(pool, isa, nh, q_nope, q_lat)?;
                let query = zeroed(&mut b.query, nh * s.d_k);
                for hd in 0..nh {
                    let dst = &mut query[hd * s.d_k..(hd + 1) * s.d_k];
                    dst[..kvr].copy_from_slice(&q_lat[hd * kvr..(hd + 1) * kvr]);
                    dst[kvr..].copy_from_slice(&q[hd * qk + nope..(hd + 1) * qk]);
                    rope(
                        &mut dst[kvr..],
                        rope_d,
                        rope_d,
                        pos,
                        num.rope_theta,
                        num.rope_neox,
                    );
                }
                attend(pool, cache, query, &self.sinks, depth, attn)?;
                // W_UV per head, then the output projection.
                let heads = zeroed(&mut b.heads, a.v_b.rows());
                a.v_b.run_grouped_with(pool, isa, nh, attn, heads)?;
                a.o.run_with(pool, isa, heads, out)?;
            }
        }
        Ok(())
    }

    /// The FFN of one token into `out`.
    fn ffn(
        &mut self,
        pool: &ThreadPool,
        isa: Isa,
        h: &[f32],
        out: &mut [f32],
    ) -> Result<(), DecodeError> {
        match &self.ffn {
            Ffn::Dense {
                gate,
                up,
                down,
                gelu,
            } => {
                let b = &mut self.bufs;
                let g = zeroed(&mut b.q, gate.rows());
                let u = zeroed(&mut b.k, up.rows());
                gate.run_with(pool, isa, h, g)?;
                up.run_with(pool, isa, h, u)?;
                let act = if *gelu { geglu } else { swiglu };
                g.iter_mut()
                    .zip(u.iter())
                    .for_each(|(g, &u)| *g = act(*g, u));
                down.run_with(pool, isa, g, out)?;
            }
            Ffn::Moe(moe) => {
                moe.forward_with(pool, isa, h, &[], out)?;
            }
        }
        Ok(())
    }
}
