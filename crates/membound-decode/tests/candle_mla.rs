//! MLA (and DeepSeek's MoE) against candle-transformers' DeepSeek-V2 (`models::deepseek2`), an
//! independent implementation in Hugging Face's layout: the same random F32 weights go to
//! candle by their Hugging Face names (`kv_b_proj` fused, experts one by one) and to a GGUF
//! file by llama.cpp's (`attn_k_b` = each head's `W_UK` transposed, `attn_v_b` = `W_UV`,
//! stacked experts), and the logits of every step agree. candle expands the latent into
//! per-head K and V and caches those; we cache the 576-value latent rows (or K and V split)
//! and absorb `W_UK` into the query — the identity the attention suite relies on.
//! Tolerance: 1e-4 of the largest |logit| (measured 2026-11-27: ≤ 1e-6).

use std::collections::HashMap;

use candle_core::{DType as CDType, Device, Tensor};
use candle_transformers::models::deepseek2::{DeepSeekV2, DeepSeekV2Config};
use membound_decode::source::GgufSource;
use membound_decode::{CpuDecoder, StepOptions};
use membound_gguf::spec::{gguf_metadata, spec_from_gguf};
use membound_gguf::{GgufFile, GgufWriter};
use membound_quant::data::normal_f32;
use membound_spec::model::Numerics;
use membound_spec::registry::find;
use membound_spec::{DType, KvLayout, ModelSpec};

const TOKENS: [u32; 5] = [3, 200, 17, 99, 251];

/// A tiny DeepSeek-V2-Lite: 3 layers (one dense, two MoE with 4 experts, top-2, 2 shared).
fn spec() -> ModelSpec {
    let mut m = membound_gguf::synthetic::tiny(&find("deepseek-v2-lite").unwrap(), 128);
    m.n_layers = 3;
    m
}

/// Random weights by Hugging Face name, row-major as PyTorch stores them.
fn hf_weights(m: &ModelSpec) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let a = &m.attention;
    let (d, h) = (m.hidden as usize, a.n_heads as usize);
    let (nope, rope) = (
        a.qk_nope_head_dim.unwrap() as usize,
        a.qk_rope_head_dim.unwrap() as usize,
    );
    let (kvr, vd) = (a.kv_lora_rank.unwrap() as usize, m.v_head_dim() as usize);
    let e = m.ffn.moe.as_ref().unwrap();
    let (ne, ef) = (e.n_experts as usize, e.expert_intermediate as usize);
    let sf = e.n_shared as usize * ef;
    let ff = m.ffn.intermediate.unwrap() as usize;
    let mut seed = 0u64;
    let mut out = Vec::new();
    let mut put = |name: String, shape: Vec<usize>, scale: f32| {
        seed += 1;
        let n = shape.iter().product();
        out.push((name, shape, normal_f32(seed, n, scale)));
    };
    let vocab = m.vocab as usize;
    put("model.embed_tokens.weight".into(), vec![vocab, d], 1.0);
    for i in 0..m.n_layers as usize {
        let p = format!("model.layers.{i}");
        let s = |n: usize| 1.0 / (n as f32).sqrt();
        put(format!("{p}.input_layernorm.weight"), vec![d], 0.2);
        put(format!("{p}.post_attention_layernorm.weight"), vec![d], 0.2);
        put(
            format!("{p}.self_attn.q_proj.weight"),
            vec![h * (nope + rope), d],
            s(d),
        );
        put(
            format!("{p}.self_attn.kv_a_proj_with_mqa.weight"),
            vec![kvr + rope, d],
            s(d),
        );
        put(
            format!("{p}.self_attn.kv_a_layernorm.weight"),
            vec![kvr],
            0.2,
        );
        put(
            format!("{p}.self_attn.kv_b_proj.weight"),
            vec![h * (nope + vd), kvr],
            s(kvr),
        );
        put(
            format!("{p}.self_attn.o_proj.weight"),
            vec![d, h * vd],
            s(h * vd),
        );
        if i == 0 {
            put(format!("{p}.mlp.gate_proj.weight"), vec![ff, d], s(d));
            put(format!("{p}.mlp.up_proj.weight"), vec![ff, d], s(d));
            put(format!("{p}.mlp.down_proj.weight"), vec![d, ff], s(ff));
        } else {
            put(format!("{p}.mlp.gate.weight"), vec![ne, d], 3.0 * s(d));
            for x in 0..ne {
                put(
                    format!("{p}.mlp.experts.{x}.gate_proj.weight"),
                    vec![ef, d],
                    s(d),
                );
                put(
                    format!("{p}.mlp.experts.{x}.up_proj.weight"),
                    vec![ef, d],
                    s(d),
                );
                put(
                    format!("{p}.mlp.experts.{x}.down_proj.weight"),
                    vec![d, ef],
                    s(ef),
                );
            }
            put(
                format!("{p}.mlp.shared_experts.gate_proj.weight"),
                vec![sf, d],
                s(d),
            );
            put(
                format!("{p}.mlp.shared_experts.up_proj.weight"),
                vec![sf, d],
                s(d),
            );
            put(
                format!("{p}.mlp.shared_experts.down_proj.weight"),
                vec![d, sf],
                s(sf),
            );
        }
    }
    put("model.norm.weight".into(), vec![d], 0.2);
    put(
        "lm_head.weight".into(),
        vec![vocab, d],
        1.0 / (d as f32).sqrt(),
    );
    // Norm weights near one, not near zero.
    for (name, _, v) in out.iter_mut() {
        if name.ends_with("norm.weight") || name.ends_with("layernorm.weight") {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
    }
    out
}

/// Adds one F32 tensor (name, values, ggml dims) to the file being written.
type Add<'a> = dyn FnMut(&str, &[f32], &[u64]) + 'a;

/// The same weights under llama.cpp's names and layouts, as an F32 GGUF file.
fn gguf(m: &ModelSpec, hf: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let a = &m.attention;
    let h = a.n_heads as usize;
    let (nope, kvr, vd) = (
        a.qk_nope_head_dim.unwrap() as usize,
        a.kv_lora_rank.unwrap() as usize,
        m.v_head_dim() as usize,
    );
    let get = |n: &str| -> &Vec<f32> { &hf.iter().find(|w| w.0 == n).unwrap().2 };
    let shape = |n: &str| -> &Vec<usize> { &hf.iter().find(|w| w.0 == n).unwrap().1 };
    let mut w = GgufWriter::new();
    for (k, v) in gguf_metadata(m).unwrap() {
        w.add_meta(&k, v).unwrap();
    }
    let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut add = |name: &str, v: &[f32], dims: &[u64]| {
        w.add_tensor(name, dims, DType::F32, bytes(v)).unwrap();
    };
    // A PyTorch [rows, cols] matrix is ggml dims [cols, rows], the same bytes.
    let mat = |n: &str| -> Vec<u64> { shape(n).iter().rev().map(|&x| x as u64).collect() };
    let e = m.ffn.moe.as_ref().unwrap();
    let ne = e.n_experts as usize;
    add(
        "token_embd.weight",
        get("model.embed_tokens.weight"),
        &mat("model.embed_tokens.weight"),
    );
    for i in 0..m.n_layers as usize {
        let p = format!("model.layers.{i}");
        let b = format!("blk.{i}");
        let one = |add: &mut Add<'_>, ours: &str, hfn: &str| {
            let hfn = format!("{p}.{hfn}");
            add(&format!("{b}.{ours}"), get(&hfn), &mat(&hfn));
        };
        one(&mut add, "attn_norm.weight", "input_layernorm.weight");
        one(
            &mut add,
            "ffn_norm.weight",
            "post_attention_layernorm.weight",
        );
        one(&mut add, "attn_q.weight", "self_attn.q_proj.weight");
        one(
            &mut add,
            "attn_kv_a_mqa.weight",
            "self_attn.kv_a_proj_with_mqa.weight",
        );
        one(
            &mut add,
            "attn_kv_a_norm.weight",
            "self_attn.kv_a_layernorm.weight",
        );
        one(&mut add, "attn_output.weight", "self_attn.o_proj.weight");
        // kv_b_proj [h·(nope + vd), kvr]: per head nope rows of W_UK, then vd rows of W_UV.
        let kvb = get(&format!("{p}.self_attn.kv_b_proj.weight"));
        let (mut kb, mut vb) = (Vec::new(), Vec::new());
        for hd in 0..h {
            let head = &kvb[hd * (nope + vd) * kvr..(hd + 1) * (nope + vd) * kvr];
            // attn_k_b: per head kvr rows of nope values (W_UK transposed).
            for r in 0..kvr {
                for j in 0..nope {
                    kb.push(head[j * kvr + r]);
                }
            }
            vb.extend_from_slice(&head[nope * kvr..]);
        }
        add(
            &format!("{b}.attn_k_b.weight"),
            &kb,
            &[nope as u64, kvr as u64, h as u64],
        );
        add(
            &format!("{b}.attn_v_b.weight"),
            &vb,
            &[kvr as u64, vd as u64, h as u64],
        );
        if i == 0 {
            one(&mut add, "ffn_gate.weight", "mlp.gate_proj.weight");
            one(&mut add, "ffn_up.weight", "mlp.up_proj.weight");
            one(&mut add, "ffn_down.weight", "mlp.down_proj.weight");
        } else {
            one(&mut add, "ffn_gate_inp.weight", "mlp.gate.weight");
            for (ours, hfn) in [
                ("gate", "gate_proj"),
                ("up", "up_proj"),
                ("down", "down_proj"),
            ] {
                let first = format!("{p}.mlp.experts.0.{hfn}.weight");
                let mut dims = mat(&first);
                dims.push(ne as u64);
                let all: Vec<f32> = (0..ne)
                    .flat_map(|x| get(&format!("{p}.mlp.experts.{x}.{hfn}.weight")).clone())
                    .collect();
                add(&format!("{b}.ffn_{ours}_exps.weight"), &all, &dims);
                one(
                    &mut add,
                    &format!("ffn_{ours}_shexp.weight"),
                    &format!("mlp.shared_experts.{hfn}.weight"),
                );
            }
        }
    }
    add(
        "output_norm.weight",
        get("model.norm.weight"),
        &mat("model.norm.weight"),
    );
    add(
        "output.weight",
        get("lm_head.weight"),
        &mat("lm_head.weight"),
    );
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    out
}

fn candle_model(m: &ModelSpec, hf: &[(String, Vec<usize>, Vec<f32>)]) -> DeepSeekV2 {
    let a = &m.attention;
    let e = m.ffn.moe.as_ref().unwrap();
    let n = Numerics::for_arch(&m.arch);
    let cfg: DeepSeekV2Config = serde_json::from_value(serde_json::json!({
        "vocab_size": m.vocab, "hidden_size": m.hidden,
        "intermediate_size": m.ffn.intermediate, "moe_intermediate_size": e.expert_intermediate,
        "num_hidden_layers": m.n_layers, "num_attention_heads": a.n_heads,
        "n_shared_experts": e.n_shared, "n_routed_experts": e.n_experts,
        "routed_scaling_factor": e.routed_scaling, "topk_method": "greedy",
        "num_experts_per_tok": e.top_k, "moe_layer_freq": 1, "first_k_dense_replace": e.dense_first,
        "norm_topk_prob": e.norm_topk, "scoring_func": "softmax", "hidden_act": "silu",
        "max_position_embeddings": 4096, "rms_norm_eps": n.norm_eps, "tie_word_embeddings": false,
        "rope_theta": n.rope_theta, "rope_scaling": null, "attention_bias": false,
        "q_lora_rank": a.q_lora_rank, "qk_rope_head_dim": a.qk_rope_head_dim,
        "kv_lora_rank": a.kv_lora_rank, "v_head_dim": m.v_head_dim(),
        "qk_nope_head_dim": a.qk_nope_head_dim, "n_group": 1, "topk_group": 1,
    }))
    .unwrap();
    let dev = Device::Cpu;
    let ts: HashMap<String, Tensor> = hf
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                Tensor::from_vec(v.clone(), s.clone(), &dev).unwrap(),
            )
        })
        .collect();
    let vb = candle_nn::VarBuilder::from_tensors(ts, CDType::F32, &dev);
    DeepSeekV2::new(&cfg, vb).unwrap()
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn mla_and_deepseek_moe_match_candle_deepseek2() {
    let m = spec();
    let hf = hf_weights(&m);
    let f = GgufFile::from_vec(gguf(&m, &hf)).unwrap();
    let spec = spec_from_gguf(&f).unwrap();
    let mut cm = candle_model(&m, &hf);
    let dev = Device::Cpu;
    let want: Vec<Vec<f32>> = TOKENS
        .iter()
        .enumerate()
        .map(|(pos, &t)| {
            let x = Tensor::new(&[t], &dev).unwrap().unsqueeze(0).unwrap();
            cm.forward(&x, pos)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for layout in [KvLayout::MlaLatent, KvLayout::MlaSplit] {
        let src = GgufSource::new(&f);
        let mut o = StepOptions::new(&spec, TOKENS.len());
        o.kv_dtype = DType::F32;
        o.layout = layout;
        o.numerics = src.numerics();
        let mut dec = CpuDecoder::new(&spec, &src, &o).unwrap();
        let r: Vec<f32> = TOKENS
            .iter()
            .enumerate()
            .map(|(pos, &t)| {
                dec.step(&pool, t, pos).unwrap();
                rel(dec.logits(), &want[pos])
            })
            .collect();
        eprintln!("{layout}: relative logit differences {r:?}");
        assert!(r.iter().all(|&x| x <= 1e-4), "{layout}: {r:?}");
    }
}
