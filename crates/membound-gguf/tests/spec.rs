//! Specs from GGUF files: every embedded model survives spec → GGUF → spec, synthetic files
//! hold exactly the bytes `membound_spec::bytes` accounts for, and bad files are named errors.

use membound_gguf::spec::{SpecFromGgufError, gguf_metadata, spec_from_gguf};
use membound_gguf::synthetic::{Fill, model_writer, recipe_of_file_type, tiny, write_model_file};
use membound_gguf::{GgufFile, GgufWriter, MetaValue};
use membound_quant::ops::dequantize;
use membound_spec::bytes::weights;
use membound_spec::model::RouterScoring;
use membound_spec::registry::{embedded, find};
use membound_spec::tensors::inventory;
use membound_spec::{DType, ModelSpec, Recipe};

/// A GGUF file in memory of `spec` with `meta` as metadata and every inventory tensor
/// (zeros, F32), renamed by `rename` (`None` drops the tensor).
fn file_with(
    spec: &ModelSpec,
    meta: Vec<(String, MetaValue)>,
    rename: impl Fn(&str) -> Option<String>,
) -> GgufFile {
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.add_meta(&k, v).unwrap();
    }
    for t in inventory(spec) {
        if let Some(name) = rename(&t.name) {
            let bytes = vec![0u8; 4 * t.values() as usize];
            w.add_tensor(&name, &t.dims, DType::F32, bytes).unwrap();
        }
    }
    GgufFile::from_vec(w.to_bytes().unwrap()).unwrap()
}

fn read_back(spec: &ModelSpec, recipe: Recipe, fill: Fill) -> GgufFile {
    let bytes = model_writer(spec, recipe, fill)
        .unwrap()
        .to_bytes()
        .unwrap();
    GgufFile::from_vec(bytes).unwrap()
}

#[test]
fn every_embedded_spec_round_trips_through_gguf() {
    let all = embedded().unwrap();
    assert_eq!(all.len(), 18);
    for spec in &all {
        let small = tiny(spec, 64);
        small.validate().unwrap();
        assert_eq!(small.arch, spec.arch);
        assert_eq!(
            small.architecture().layer_pattern,
            spec.architecture().layer_pattern
        );
        let file = read_back(&small, Recipe::F16, Fill::Zeros);
        let back = spec_from_gguf(&file).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        assert_eq!(back.architecture(), small.architecture(), "{}", spec.name);
        assert_eq!(back.display_name, small.display_name);
        // The full-size spec's metadata is writable too (its layer pattern and MLA agree with
        // what the arch implies).
        let meta = gguf_metadata(spec).unwrap();
        let get = |k: &str| {
            meta.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let key = |s: &str| format!("{}.{s}", spec.arch);
        assert_eq!(
            get(&key("block_count")).and_then(|v| v.as_u64()),
            Some(spec.n_layers as u64),
            "{}",
            spec.name
        );
        assert_eq!(
            get(&key("embedding_length")).and_then(|v| v.as_u64()),
            Some(spec.hidden)
        );
    }
}

#[test]
fn metadata_follows_llama_cpp_conventions() {
    let glm = find("glm-4.7-flash").unwrap();
    let meta = gguf_metadata(&glm).unwrap();
    let u = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.as_u64())
    };
    // Absorbed-MLA layout of current conversions (model-facts.md §11).
    assert_eq!(u("deepseek2.attention.key_length"), Some(576));
    assert_eq!(u("deepseek2.attention.value_length"), Some(512));
    assert_eq!(u("deepseek2.attention.key_length_mla"), Some(256));
    assert_eq!(u("deepseek2.attention.value_length_mla"), Some(256));
    assert_eq!(u("deepseek2.attention.q_lora_rank"), Some(768));
    assert_eq!(u("deepseek2.rope.dimension_count"), Some(64));
    assert_eq!(u("deepseek2.leading_dense_block_count"), Some(1));
    assert_eq!(u("deepseek2.expert_gating_func"), Some(2));
    assert_eq!(u("deepseek2.expert_shared_count"), Some(1));
    let next = find("qwen3-coder-next").unwrap();
    let meta = gguf_metadata(&next).unwrap();
    let u = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.as_u64())
    };
    assert_eq!(u("qwen3next.full_attention_interval"), Some(4));
    assert_eq!(u("qwen3next.ssm.inner_size"), Some(4096));
    assert_eq!(u("qwen3next.ssm.state_size"), Some(128));
    assert_eq!(u("qwen3next.ssm.group_count"), Some(16));
    assert_eq!(u("qwen3next.ssm.time_step_rank"), Some(32));
    assert_eq!(u("qwen3next.expert_shared_feed_forward_length"), Some(512));
}

#[test]
fn synthetic_files_hold_the_accounted_bytes() {
    let dir = std::env::temp_dir().join(format!("membound-gguf-spec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("glm-4.7-flash", Recipe::Q4_K_M),
        ("gpt-oss-20b", Recipe::MXFP4_MOE),
        ("qwen3-coder-next", Recipe::Q4_K_M),
        ("llama-3.2-3b", Recipe::Q8_0),
        ("gemma-3-27b", Recipe::Q6_K),
        ("deepseek-v2-lite", Recipe::Q5_K_M),
        ("deepseek-r1-distill-qwen-14b", Recipe::BF16),
    ];
    for (name, recipe) in cases {
        let spec = tiny(&find(name).unwrap(), 256);
        let path = dir.join(format!("{name}-{recipe}.gguf"));
        let written = write_model_file(&spec, recipe, &path, Fill::Random { seed: 7 }).unwrap();
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.bytes().len() as u64, written);
        assert_eq!(
            spec_from_gguf(&file).unwrap().architecture(),
            spec.architecture(),
            "{name}"
        );
        let ft = file.meta_u64("general.file_type").unwrap();
        assert_eq!(recipe_of_file_type(ft), Some(recipe));
        let w = weights(&spec, recipe);
        assert_eq!(file.tensors().len(), w.tensors.len(), "{name}");
        for (t, s) in file.tensors().iter().zip(&w.tensors) {
            assert_eq!(t.name, s.desc.name);
            assert_eq!(t.dims, s.desc.dims, "{}", t.name);
            assert_eq!(t.dtype, s.dtype, "{}", t.name);
            assert_eq!(t.n_bytes, s.bytes, "{}", t.name);
        }
        assert_eq!(file.total_tensor_bytes(), w.totals(&spec).bytes, "{name}");
        // The data is real: a quantized matrix dequantizes to weight-like values.
        let big = file
            .tensors()
            .iter()
            .find(|t| t.dims.len() >= 2 && t.dtype == recipe.base())
            .unwrap_or_else(|| panic!("{name}: no tensor of the base type"));
        let values = dequantize(big.dtype, file.tensor_bytes(&big.name).unwrap()).unwrap();
        let rms = (values.iter().map(|v| v * v).sum::<f32>() / values.len() as f32).sqrt();
        assert!(
            (0.01..0.04).contains(&rms),
            "{name} {}: rms {rms}",
            big.name
        );
        let norm = file.tensor_bytes("output_norm.weight").unwrap();
        assert_eq!(&norm[..4], &1.0f32.to_le_bytes());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reads_llama_cpp_variants() {
    let glm = tiny(&find("glm-4.7-flash").unwrap(), 64);
    // Older MLA conversions: per-head sizes in key_length / value_length, no `_mla` keys.
    let mut meta = gguf_metadata(&glm).unwrap();
    meta.retain(|(k, _)| !k.ends_with("_mla"));
    for (k, v) in meta.iter_mut() {
        if k == "deepseek2.attention.key_length" {
            *v = MetaValue::U32(64);
        }
        if k == "deepseek2.attention.value_length" {
            *v = MetaValue::U32(32);
        }
    }
    // llama.cpp names the sigmoid router's selection bias `exp_probs_b.bias`.
    let file = file_with(&glm, meta, |n| {
        Some(n.replace("ffn_gate_inp.bias", "exp_probs_b.bias"))
    });
    let back = spec_from_gguf(&file).unwrap();
    assert_eq!(back.architecture(), glm.architecture());
    let moe = back.ffn.moe.as_ref().unwrap();
    assert!(moe.router_bias && moe.norm_topk);
    assert_eq!(moe.router, RouterScoring::Sigmoid);
    assert_eq!(moe.routed_scaling, 1.8);

    // No gating key: gpt-oss is top-k-then-softmax, qwen3moe softmax with renormalisation.
    let oss = tiny(&find("gpt-oss-20b").unwrap(), 64);
    let mut meta = gguf_metadata(&oss).unwrap();
    meta.retain(|(k, _)| !k.contains("expert_gating_func") && !k.contains("expert_weights"));
    let back = spec_from_gguf(&file_with(&oss, meta, |n| Some(n.into()))).unwrap();
    assert_eq!(back.architecture(), oss.architecture());
    let q3 = tiny(&find("qwen3-30b-a3b").unwrap(), 64);
    let mut meta = gguf_metadata(&q3).unwrap();
    meta.retain(|(k, _)| !k.contains("expert_gating_func") && !k.contains("expert_weights"));
    let back = spec_from_gguf(&file_with(&q3, meta, |n| Some(n.into()))).unwrap();
    assert_eq!(back.architecture(), q3.architecture());

    // An MTP block counted in block_count is not a transformer layer of the spec.
    let mut meta = gguf_metadata(&glm).unwrap();
    for (k, v) in meta.iter_mut() {
        if k == "deepseek2.block_count" {
            *v = MetaValue::U32(glm.n_layers + 1);
        }
    }
    meta.push(("deepseek2.nextn_predict_layers".into(), MetaValue::U32(1)));
    let back = spec_from_gguf(&file_with(&glm, meta, |n| Some(n.into()))).unwrap();
    assert_eq!(back.n_layers, glm.n_layers);
}

#[test]
fn errors_name_the_arch_and_the_key() {
    let llama = tiny(&find("llama-3.1-8b").unwrap(), 64);
    let mut meta = gguf_metadata(&llama).unwrap();
    meta[0].1 = MetaValue::from("mamba2");
    let err = spec_from_gguf(&file_with(&llama, meta, |n| Some(n.into()))).unwrap_err();
    assert!(matches!(err, SpecFromGgufError::UnsupportedArch { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("`mamba2`") && msg.contains("<memory>"),
        "{msg}"
    );
    assert!(
        msg.contains("qwen3next") && msg.contains("gpt-oss"),
        "{msg}"
    );

    let mut meta = gguf_metadata(&llama).unwrap();
    meta.retain(|(k, _)| k != "llama.block_count");
    let msg = spec_from_gguf(&file_with(&llama, meta, |n| Some(n.into())))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("llama.block_count"), "{msg}");

    let meta = gguf_metadata(&llama).unwrap()[1..].to_vec();
    let msg = spec_from_gguf(&file_with(&llama, meta, |n| Some(n.into())))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("general.architecture"), "{msg}");

    let meta = gguf_metadata(&llama).unwrap();
    let err = spec_from_gguf(&file_with(&llama, meta, |n| {
        (n != "token_embd.weight").then(|| n.into())
    }))
    .unwrap_err();
    assert!(err.to_string().contains("token_embd.weight"), "{err}");

    let mut meta = gguf_metadata(&llama).unwrap();
    meta.retain(|(k, _)| k != "llama.embedding_length");
    meta.push(("llama.embedding_length".into(), MetaValue::from("wide")));
    let msg = spec_from_gguf(&file_with(&llama, meta, |n| Some(n.into())))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("llama.embedding_length"), "{msg}");

    // Writing: a pattern the arch cannot express, an arch that is not supported.
    let mut odd = llama.clone();
    odd.layer_pattern = "SF".into();
    odd.sliding_window = Some(64);
    let msg = gguf_metadata(&odd).unwrap_err().to_string();
    assert!(msg.contains("`SF`") && msg.contains("llama"), "{msg}");
    let mut other = llama.clone();
    other.arch = "falcon".into();
    assert!(matches!(
        gguf_metadata(&other),
        Err(SpecFromGgufError::Unrepresentable { .. })
    ));
}

/// The spec error of `spec`'s file with `key` set to `value`, within a second.
fn error_with(spec: &ModelSpec, key: &str, value: MetaValue) -> String {
    let mut meta = gguf_metadata(spec).unwrap();
    meta.retain(|(k, _)| k != key);
    meta.push((key.into(), value));
    let file = file_with(spec, meta, |n| Some(n.into()));
    let start = std::time::Instant::now();
    let msg = spec_from_gguf(&file).expect_err(key).to_string();
    assert!(
        start.elapsed().as_secs_f64() < 1.0,
        "{key}: {:?}",
        start.elapsed()
    );
    msg
}

#[test]
fn hostile_counts_are_errors_not_panics_hangs_or_wrapped_sizes() {
    let next = tiny(&find("qwen3-coder-next").unwrap(), 64);
    for interval in [u64::MAX, 1 << 40, 0] {
        let msg = error_with(
            &next,
            "qwen3next.full_attention_interval",
            MetaValue::U64(interval),
        );
        assert!(msg.contains("full_attention_interval"), "{msg}");
    }
    let llama = tiny(&find("llama-3.1-8b").unwrap(), 64);
    for blocks in [1_000_000, 30_000_000, u64::MAX] {
        let msg = error_with(&llama, "llama.block_count", MetaValue::U64(blocks));
        assert!(msg.contains("llama.block_count"), "{msg}");
    }
    let msg = error_with(&llama, "llama.embedding_length", MetaValue::U64(1 << 40));
    assert!(msg.contains("hidden") && msg.contains("too large"), "{msg}");
}

#[test]
fn metadata_that_contradicts_the_tensors_gives_no_spec() {
    let llama = tiny(&find("llama-3.1-8b").unwrap(), 64);
    let msg = error_with(&llama, "llama.attention.head_count_kv", MetaValue::U32(1));
    assert!(
        msg.contains("blk.0.attn_k.weight") && msg.contains("the file has"),
        "{msg}"
    );
    let msg = error_with(&llama, "llama.feed_forward_length", MetaValue::U32(64));
    assert!(msg.contains("ffn_gate"), "{msg}");
}

#[test]
fn display_names_lose_control_characters() {
    let llama = tiny(&find("llama-3.1-8b").unwrap(), 64);
    let mut meta = gguf_metadata(&llama).unwrap();
    meta[1].1 = MetaValue::from("Evil\x1b[2J\nname");
    let spec = spec_from_gguf(&file_with(&llama, meta, |n| Some(n.into()))).unwrap();
    assert_eq!(spec.display_name, "Evil[2Jname");
}
