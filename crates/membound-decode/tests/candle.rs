//! The decode step against candle-transformers' quantized models (an independent
//! implementation) on small generated GGUF files: the logits of every step, token after token
//! with the KV cache, agree within a stated tolerance.
//!
//! Both sides read the same file. With F16 weights both multiply f32 activations and the
//! logits agree to f32 rounding: the largest difference ≤ 1e-5 of the largest |logit|
//! (measured 2026-11-27 on the development VM: 2e-7 to 5e-7 at every step). Quantized weights
//! take quantized activations, which candle 0.11 rounds differently from ggml (and from
//! membound-quant, checked against ggml's golden blocks): its Q8_K rounds halves away from zero
//! where ggml rounds them to even, so a tie flips one value (seen: exact for three steps, then
//! 1.2 % after a flip), and its Q8_0 rounding differs more (on one 64x256 Q8_0 GEMV each side is
//! 0.6 % of max|y| from the exact product and 0.86 % from the other; through two layers 1-2 %).
//! Those cases state 3 %. candle-transformers' quantized Qwen3-MoE runs its experts only on CUDA
//! (`moe_gemm_gguf`), so the MoE layer is checked against membound's own f64 reference in the
//! MoE suite instead. Its quantized Qwen3 attends on the CPU with candle-nn's new CPU
//! flash-attention kernel, which agrees with us to 1e-7 for the first tokens and then departs
//! by 1-2 % erratically (with 4 KV heads from the second token, with 1 or 2 from the fourth;
//! its prefill path departs at the same lengths), while candle's Llama (plain softmax·V)
//! agrees with the same attention code of ours at every step: the Qwen3 case compares the
//! steps before that.

use std::path::PathBuf;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use membound_decode::source::GgufSource;
use membound_decode::{CpuDecoder, StepOptions};
use membound_gguf::GgufFile;
use membound_gguf::spec::spec_from_gguf;
use membound_gguf::synthetic::{Fill, tiny, write_model_file};
use membound_spec::registry::find;
use membound_spec::{DType, ModelSpec, Recipe};

/// The tokens fed, one step each.
const TOKENS: [u32; 6] = [1, 77, 300, 5, 511, 42];
/// Largest logit difference allowed, as a fraction of the largest |logit|: F16 weights, and
/// quantized weights (see the module's note).
const TOLERANCE: f32 = 1e-5;
const TOLERANCE_QUANTIZED: f32 = 0.03;

fn write(spec: &ModelSpec, recipe: Recipe, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("membound-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{tag}.gguf"));
    write_model_file(spec, recipe, &path, Fill::Distinct { seed: 7 }).unwrap();
    path
}

/// Our logits for each token of [`TOKENS`].
fn ours(path: &PathBuf, tokens: &[u32]) -> Vec<Vec<f32>> {
    let f = GgufFile::open(path).unwrap();
    let spec = spec_from_gguf(&f).unwrap();
    let src = GgufSource::new(&f);
    let mut opts = StepOptions::new(&spec, tokens.len());
    opts.kv_dtype = DType::F32;
    opts.numerics = src.numerics();
    let mut dec = CpuDecoder::new(&spec, &src, &opts).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    tokens
        .iter()
        .enumerate()
        .map(|(pos, &t)| {
            dec.step(&pool, t, pos).unwrap();
            dec.logits().to_vec()
        })
        .collect()
}

/// One candle model's `forward(tokens, position)`.
type Forward = Box<dyn FnMut(&Tensor, usize) -> Tensor>;

/// candle's logits for each token, from `forward(token, pos)`.
fn candle(path: &PathBuf, arch: &str, tokens: &[u32]) -> Vec<Vec<f32>> {
    use candle_transformers::models::{quantized_llama, quantized_qwen3};
    let dev = Device::Cpu;
    let mut file = std::fs::File::open(path).unwrap();
    let ct = gguf_file::Content::read(&mut file).unwrap();
    let mut forward: Forward = match arch {
        "llama" => {
            let mut m = quantized_llama::ModelWeights::from_gguf(ct, &mut file, &dev).unwrap();
            Box::new(move |x, p| m.forward(x, p).unwrap())
        }
        "qwen3" => {
            let mut m = quantized_qwen3::ModelWeights::from_gguf(ct, &mut file, &dev).unwrap();
            Box::new(move |x, p| m.forward(x, p).unwrap())
        }
        other => panic!("no candle model for {other}"),
    };
    tokens
        .iter()
        .enumerate()
        .map(|(pos, &t)| {
            let x = Tensor::new(&[t], &dev).unwrap().unsqueeze(0).unwrap();
            forward(&x, pos)
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

/// The largest difference of each step as a fraction of that step's largest |logit|.
fn compare(spec: &ModelSpec, recipe: Recipe, tokens: &[u32]) -> Vec<f32> {
    let path = write(spec, recipe, &format!("{}-{}", spec.name, recipe.name()));
    let (a, b) = (ours(&path, tokens), candle(&path, &spec.arch, tokens));
    let _ = std::fs::remove_file(&path);
    a.iter()
        .zip(&b)
        .enumerate()
        .map(|(step, (a, b))| {
            assert_eq!(a.len(), b.len(), "step {step}: vocabulary");
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(scale > 0.0, "step {step}: all-zero logits");
            diff / scale
        })
        .collect()
}

fn check(spec: &ModelSpec, recipe: Recipe, tokens: &[u32]) {
    let tolerance = if recipe == Recipe::F16 {
        TOLERANCE
    } else {
        TOLERANCE_QUANTIZED
    };
    let rel = compare(spec, recipe, tokens);
    eprintln!(
        "{} {}: relative logit differences {rel:?}",
        spec.name,
        recipe.name()
    );
    for (step, r) in rel.iter().enumerate() {
        assert!(
            *r <= tolerance,
            "{} {} step {step}: logits differ by {r} of their scale",
            spec.name,
            recipe.name()
        );
    }
}

/// candle's llama takes `head_dim = hidden / heads`: 8 heads of 32 over 256.
fn tiny_llama() -> ModelSpec {
    let mut m = tiny(&find("llama-3.1-8b").unwrap(), 256);
    m.attention.n_heads = 8;
    m.attention.n_kv_heads = Some(2);
    m
}

#[test]
fn llama_q8_0_matches_candle_token_after_token() {
    check(&tiny_llama(), Recipe::Q8_0, &TOKENS);
}

#[test]
fn llama_q4_k_m_matches_candle_token_after_token() {
    check(&tiny_llama(), Recipe::Q4_K_M, &TOKENS);
}

#[test]
fn llama_f16_matches_candle_token_after_token() {
    check(&tiny_llama(), Recipe::F16, &TOKENS);
}

#[test]
fn qwen3_matches_candle_token_after_token() {
    // QK-norm, NEOX rotation, base 1e6.
    let qwen3 = tiny(&find("qwen3-32b").unwrap(), 256);
    check(&qwen3, Recipe::Q6_K, &TOKENS[..3]);
    check(&qwen3, Recipe::Q8_0, &TOKENS[..3]);
}
