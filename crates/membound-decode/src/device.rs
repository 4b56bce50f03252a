//! The decode step as the CUDA kernels run it: a `membound_cuda::decode::StepDesc` (shapes,
//! types, numerics) and its weight buffers, built from a spec and a tensor source as
//! [`crate::CpuDecoder`] builds its layers, so a GPU (`GpuStep`) and the host execution of the
//! kernels (`membound_cuda_host::HostStep`) run the same step the CPU does.
//!
//! Covered: GQA layers (biases, QK-norm, sinks, sliding windows read from a full cache, Qwen3-Next's
//! gated output and partial RoPE), MLA layers (latent or split cache; `W_UK` and `W_UV` as
//! grouped GEMVs) and Gated DeltaNet layers (double-buffered states), with a dense FFN or a MoE
//! layer. Not yet: the expanded-MHA layout. The embedding
//! row is looked up on the host ([`DeviceStep::embed`]) and written into `Buf::Embd` before the
//! launches.

use membound_cuda::decode::{
    Buf, DeltaDesc, FfnDesc, LayerDesc, Mat, MixerDesc, MlaDesc, StepDesc, Wt, stack_weights,
};
use membound_cuda::moe::weight_bufs;
use membound_spec::attention::AttnShape;
use membound_spec::model::{AttentionKind, LayerKind};
use membound_spec::{KvLayout, ModelSpec};

use crate::model::{
    FfnNorms, delta_params, embed_row, embedding_scale, moe_layer, need, vector, vector_opt,
};
use crate::source::{Tensor, TensorSource};
use crate::{DecodeError, StepOptions};

/// A step's description, its weights as kernel buffers, and the token embeddings.
pub struct DeviceStep {
    /// Shapes, types and numerics.
    pub desc: StepDesc,
    /// Every weight buffer.
    pub weights: Vec<(Buf, Vec<u8>)>,
    /// The token embeddings (a stage that starts from the embedding).
    embd: Option<Tensor>,
    embd_scale: f32,
    hidden: u64,
}

/// `v` as little-endian bytes (a kernel buffer's contents).
pub(crate) fn le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Matrix `name` and its bytes.
fn mat(src: &dyn TensorSource, name: &str) -> Result<(Mat, Vec<u8>), DecodeError> {
    let t = need(src, name)?;
    let (rows, cols) = t.rows_cols();
    Ok((
        Mat {
            dtype: t.dtype,
            rows,
            cols,
        },
        t.bytes,
    ))
}

/// A GQA layer's projections (Q/K/V/O, their biases, QK-norm, the output gate, the values
/// RoPE rotates per head); weights go to `w`.
fn gqa_mixer(
    m: &ModelSpec,
    opts: &StepOptions,
    src: &dyn TensorSource,
    p: &dyn Fn(&str) -> String,
    w: &mut dyn FnMut(Wt, Vec<u8>),
) -> Result<MixerDesc, DecodeError> {
    let mut mats = Vec::new();
    for (t, name) in [
        (Wt::Q, "attn_q.weight"),
        (Wt::K, "attn_k.weight"),
        (Wt::V, "attn_v.weight"),
        (Wt::O, "attn_output.weight"),
    ] {
        let (mt, bytes) = mat(src, &p(name))?;
        w(t, bytes);
        mats.push(mt);
    }
    let mut bias = [false; 4];
    for (k, (t, name)) in [
        (Wt::BQ, "attn_q.bias"),
        (Wt::BK, "attn_k.bias"),
        (Wt::BV, "attn_v.bias"),
        (Wt::BO, "attn_output.bias"),
    ]
    .into_iter()
    .enumerate()
    {
        let b = vector_opt(src, &p(name))?;
        bias[k] = !b.is_empty();
        if bias[k] {
            w(t, le(&b));
        }
    }
    let q_norm = vector_opt(src, &p("attn_q_norm.weight"))?;
    let qk_norm = !q_norm.is_empty();
    if qk_norm {
        w(Wt::QNorm, le(&q_norm));
        w(Wt::KNorm, le(&vector(src, &p("attn_k_norm.weight"))?));
    }
    let head = m.qk_head_dim() as usize;
    Ok(MixerDesc::Gqa {
        q: mats[0],
        k: mats[1],
        v: mats[2],
        o: mats[3],
        bias,
        qk_norm,
        gated: m.attention.output_gate,
        rope_dims: opts.numerics.rope_dims(head),
        stacked: 1,
    })
}

/// A Gated DeltaNet layer's projections and small parameters (checked as the CPU step checks
/// them; the projections' shapes by the launch plan); weights go to `w`.
fn delta_mixer(
    m: &ModelSpec,
    src: &dyn TensorSource,
    i: u32,
    eps: f32,
    w: &mut dyn FnMut(Wt, Vec<u8>),
) -> Result<MixerDesc, DecodeError> {
    let (shape, pr) = delta_params(m, src, i, eps)?;
    let p = |base: &str| format!("blk.{i}.{base}");
    let mut take = |t: Wt, name: &str| -> Result<Mat, DecodeError> {
        let (mt, bytes) = mat(src, &p(name))?;
        w(t, bytes);
        Ok(mt)
    };
    let desc = DeltaDesc {
        qkv: take(Wt::SsmQkv, "attn_qkv.weight")?,
        gate: take(Wt::SsmGate, "attn_gate.weight")?,
        ba: take(Wt::SsmBa, "ssm_ba.weight")?,
        out: take(Wt::SsmOut, "ssm_out.weight")?,
        shape,
    };
    for (t, v) in [
        (Wt::SsmConv, &pr.conv_w),
        (Wt::SsmDtBias, &pr.dt_bias),
        (Wt::SsmA, &pr.a),
        (Wt::SsmNorm, &pr.norm),
    ] {
        w(t, le(v));
    }
    Ok(MixerDesc::Delta(desc))
}

/// An MLA layer's projections (the tensors the CPU step reads); weights go to `w`.
fn mla_mixer(
    m: &ModelSpec,
    src: &dyn TensorSource,
    p: &dyn Fn(&str) -> String,
    w: &mut dyn FnMut(Wt, Vec<u8>),
) -> Result<MixerDesc, DecodeError> {
    if src.tensor(&p("attn_k_b.weight"))?.is_none() && src.tensor(&p("attn_kv_b.weight"))?.is_some()
    {
        return Err(DecodeError::Unsupported {
            model: m.name.clone(),
            what: "a fused attn_kv_b (files converted before llama.cpp split it into attn_k_b and attn_v_b)".into(),
        });
    }
    let mut take = |t: Wt, name: &str| -> Result<Mat, DecodeError> {
        let (mt, bytes) = mat(src, &p(name))?;
        w(t, bytes);
        Ok(mt)
    };
    let (q_a, q) = if src.tensor(&p("attn_q_a.weight"))?.is_some() {
        let q_a = take(Wt::QA, "attn_q_a.weight")?;
        (Some(q_a), take(Wt::Q, "attn_q_b.weight")?)
    } else {
        (None, take(Wt::Q, "attn_q.weight")?)
    };
    let desc = MlaDesc {
        q_a,
        q,
        kv_a: take(Wt::KvA, "attn_kv_a_mqa.weight")?,
        k_b: take(Wt::KB, "attn_k_b.weight")?,
        v_b: take(Wt::VB, "attn_v_b.weight")?,
        o: take(Wt::O, "attn_output.weight")?,
    };
    if desc.q_a.is_some() {
        w(Wt::QANorm, le(&vector(src, &p("attn_q_a_norm.weight"))?));
    }
    w(Wt::KvNorm, le(&vector(src, &p("attn_kv_a_norm.weight"))?));
    Ok(MixerDesc::Mla(desc))
}

/// Which part of a model's step a [`DeviceStep`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Model layer indices, in order.
    pub layers: Vec<u32>,
    /// Starts from the embedded token (else from the residual stream of an earlier stage).
    pub embed: bool,
    /// Ends with the final norm, lm_head and argmax (else with the residual stream).
    pub head: bool,
}

impl Stage {
    /// The whole step of `m`.
    pub fn whole(m: &ModelSpec) -> Stage {
        Stage::range(m, 0..m.n_layers)
    }

    /// Layers `layers` of `m`: with the embedding when they start at layer 0, with the head
    /// when they end at the last layer.
    pub fn range(m: &ModelSpec, layers: std::ops::Range<u32>) -> Stage {
        Stage {
            embed: layers.start == 0,
            head: layers.end == m.n_layers,
            layers: layers.collect(),
        }
    }
}

impl DeviceStep {
    /// The whole step of `m` over `opts.capacity` cache rows, the attention split for
    /// `sm_count` SMs.
    pub fn new(
        m: &ModelSpec,
        src: &dyn TensorSource,
        opts: &StepOptions,
        sm_count: u32,
    ) -> Result<DeviceStep, DecodeError> {
        DeviceStep::stage(m, src, opts, sm_count, &Stage::whole(m))
    }

    /// Stage `stage` of the step of `m` (its layers' buffers numbered from 0).
    pub fn stage(
        m: &ModelSpec,
        src: &dyn TensorSource,
        opts: &StepOptions,
        sm_count: u32,
        stage: &Stage,
    ) -> Result<DeviceStep, DecodeError> {
        let unsupported = |what: &str| DecodeError::Unsupported {
            model: m.name.clone(),
            what: what.to_string(),
        };
        let mut weights = Vec::new();
        let mut layers = Vec::new();
        for (local, &i) in stage.layers.iter().enumerate() {
            if i >= m.n_layers {
                return Err(DecodeError::Request(format!(
                    "layer {i} of a model of {} layers",
                    m.n_layers
                )));
            }
            let local = local as u32;
            let p = |base: &str| format!("blk.{i}.{base}");
            let kind = m.layer_kind(i);
            let layout = match m.attention.kind {
                AttentionKind::Gqa => KvLayout::Gqa,
                AttentionKind::Mla => opts.layout,
            };
            let attn = (kind != LayerKind::Linear)
                .then(|| AttnShape::from_spec(m, layout, opts.kv_dtype, kind))
                .transpose()
                .map_err(|e| DecodeError::Request(e.to_string()))?;
            let mut w = |t: Wt, bytes: Vec<u8>| weights.push((Buf::W(local, t), bytes));
            let mixer = match m.attention.kind {
                _ if kind == LayerKind::Linear => {
                    delta_mixer(m, src, i, opts.numerics.norm_eps, &mut w)?
                }
                AttentionKind::Gqa => gqa_mixer(m, opts, src, &p, &mut w)?,
                AttentionKind::Mla => {
                    if layout == KvLayout::ExpandedMha || layout == KvLayout::Gqa {
                        return Err(unsupported(&format!("the {layout} layout of an MLA model")));
                    }
                    mla_mixer(m, src, &p, &mut w)?
                }
            };
            if attn.as_ref().is_some_and(|a| a.sinks) {
                w(Wt::Sinks, le(&vector(src, &p("attn_sinks.weight"))?));
            }
            w(Wt::AttnNorm, le(&vector(src, &p("attn_norm.weight"))?));
            let norms = FfnNorms::of(src, i)?;
            w(Wt::FfnNorm, le(&norms.pre));
            let post = !norms.post_attn.is_empty() && !norms.post_ffn.is_empty();
            if post {
                w(Wt::PostAttnNorm, le(&norms.post_attn));
                w(Wt::PostFfnNorm, le(&norms.post_ffn));
            }
            let ffn = if m.is_moe_layer(i) {
                let moe = moe_layer(m, src, i)?;
                let mw = moe.weights();
                for (mb, bytes) in weight_bufs(
                    &mw.router,
                    &mw.router_bias,
                    mw.stacks(),
                    mw.biases(),
                    mw.shared_stacks(),
                ) {
                    if !bytes.is_empty() {
                        weights.push((Buf::Moe(local, mb), bytes.into_owned()));
                    }
                }
                FfnDesc::Moe(moe.layer().clone())
            } else {
                let (gate, g) = mat(src, &p("ffn_gate.weight"))?;
                let (up, u) = mat(src, &p("ffn_up.weight"))?;
                let (down, d) = mat(src, &p("ffn_down.weight"))?;
                weights.push((Buf::W(local, Wt::Gate), g));
                weights.push((Buf::W(local, Wt::Up), u));
                weights.push((Buf::W(local, Wt::Down), d));
                FfnDesc::Dense {
                    gate,
                    up,
                    down,
                    gelu: m.arch == "gemma3",
                    stacked: false,
                }
            };
            layers.push(LayerDesc {
                attn,
                mixer,
                ffn,
                theta: opts.numerics.theta(kind),
                post_norms: post,
            });
        }
        let output = if stage.head {
            let out_name = if m.tied_embeddings || src.tensor("output.weight")?.is_none() {
                "token_embd.weight"
            } else {
                "output.weight"
            };
            let (output, out_bytes) = mat(src, out_name)?;
            weights.push((Buf::Output, out_bytes));
            weights.push((Buf::OutNorm, le(&vector(src, "output_norm.weight")?)));
            Some(output)
        } else {
            None
        };
        let mut desc = StepDesc {
            hidden: m.hidden as usize,
            layers,
            embed: stage.embed,
            output,
            tokens: opts.capacity,
            eps: opts.numerics.norm_eps,
            neox: opts.numerics.rope_neox,
            sm_count,
            fuse: opts.fuse,
        };
        if opts.fuse {
            stack_weights(&mut desc, &mut weights);
        }
        Ok(DeviceStep {
            desc,
            weights,
            embd: if stage.embed {
                Some(need(src, "token_embd.weight")?)
            } else {
                None
            },
            embd_scale: embedding_scale(m),
            hidden: m.hidden,
        })
    }

    /// Token `token`'s embedding row as the bytes of [`Buf::Embd`] (f32).
    pub fn embed(&self, token: u32) -> Result<Vec<u8>, DecodeError> {
        let embd = self.embd.as_ref().ok_or_else(|| {
            DecodeError::Request("this stage starts from the residual stream".into())
        })?;
        let mut x = Vec::new();
        embed_row(embd, self.hidden, token, self.embd_scale, &mut x)?;
        Ok(le(&x))
    }
}
