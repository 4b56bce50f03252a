//! The decode step's own identities and refusals: MLA's latent and split caches give the same
//! logits, a sliding window kept as a ring equals the window read from a full cache, a sample
//! of every layer is the whole model, every architecture in models/ but the hybrid builds and
//! decodes finite logits, and bad requests are refused with a message.

use membound_decode::sample::LayerSample;
use membound_decode::source::{GgufSource, SyntheticSource};
use membound_decode::{CpuDecoder, DecodeError, StepOptions};
use membound_gguf::GgufFile;
use membound_gguf::synthetic::{Fill, tiny, write_model_file};
use membound_spec::registry::{embedded, find};
use membound_spec::{DType, KvLayout, ModelSpec, Recipe};
use rayon::ThreadPool;

fn pool() -> ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

/// The logits of `steps` steps (each step's token the last one's argmax).
fn run(m: &ModelSpec, recipe: Recipe, opts: &StepOptions, steps: usize) -> Vec<Vec<f32>> {
    let src = SyntheticSource::new(m, recipe, 5);
    let mut dec = CpuDecoder::new(m, &src, opts).unwrap();
    let p = pool();
    let mut token = 3;
    (0..steps)
        .map(|pos| {
            token = dec.step(&p, token, pos).unwrap();
            dec.logits().to_vec()
        })
        .collect()
}

fn max_rel(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
        })
        .fold(0f32, f32::max)
}

fn opts(m: &ModelSpec, capacity: usize, layout: KvLayout) -> StepOptions {
    let mut o = StepOptions::new(m, capacity);
    o.kv_dtype = DType::F32;
    o.layout = layout;
    o
}

#[test]
fn mla_latent_and_split_caches_give_the_same_logits() {
    for name in ["glm-4.7-flash", "deepseek-v2-lite"] {
        let m = tiny(&find(name).unwrap(), 256);
        let latent = run(&m, Recipe::Q8_0, &opts(&m, 6, KvLayout::MlaLatent), 6);
        let split = run(&m, Recipe::Q8_0, &opts(&m, 6, KvLayout::MlaSplit), 6);
        let r = max_rel(&latent, &split);
        assert!(r < 1e-5, "{name}: latent vs split {r}");
        // The step is not blind to its cache: a different history changes the logits.
        let mut other = opts(&m, 6, KvLayout::MlaLatent);
        other.seed = 99;
        let mut dec =
            CpuDecoder::new(&m, &SyntheticSource::new(&m, Recipe::Q8_0, 5), &other).unwrap();
        dec.step(&pool(), 3, 5).unwrap();
        let deep = dec.logits().to_vec();
        let mut dec =
            CpuDecoder::new(&m, &SyntheticSource::new(&m, Recipe::Q8_0, 5), &other).unwrap();
        dec.step(&pool(), 3, 0).unwrap();
        assert!(max_rel(&[deep], &[dec.logits().to_vec()]) > 1e-3, "{name}");
    }
}

#[test]
fn a_sliding_ring_equals_the_window_of_a_full_cache() {
    let mut m = tiny(&find("gpt-oss-20b").unwrap(), 256);
    m.sliding_window = Some(3);
    let ring = run(&m, Recipe::MXFP4_MOE, &opts(&m, 9, KvLayout::Gqa), 9);
    let mut full = opts(&m, 9, KvLayout::Gqa);
    full.sliding_ring = false;
    let full = run(&m, Recipe::MXFP4_MOE, &full, 9);
    let r = max_rel(&ring, &full);
    assert!(r < 1e-5, "ring vs full cache: {r}");
    // And the window matters: a window of the whole context gives other logits.
    m.sliding_window = Some(64);
    let wide = run(&m, Recipe::MXFP4_MOE, &opts(&m, 9, KvLayout::Gqa), 9);
    assert!(max_rel(&ring[8..], &wide[8..]) > 1e-4);
}

#[test]
fn a_sample_of_every_layer_is_the_whole_model() {
    let m = tiny(&find("qwen3-30b-a3b").unwrap(), 256);
    let whole = run(&m, Recipe::Q8_0, &opts(&m, 4, KvLayout::Gqa), 4);
    let mut o = opts(&m, 4, KvLayout::Gqa);
    o.sample = LayerSample {
        layers: (0..m.n_layers).collect(),
        weights: vec![1.0; m.n_layers as usize],
    };
    assert_eq!(whole, run(&m, Recipe::Q8_0, &o, 4));
    // A sample of one layer decodes, and its step time stands for every layer.
    o.sample = LayerSample {
        layers: vec![1],
        weights: vec![f64::from(m.n_layers)],
    };
    let src = SyntheticSource::new(&m, Recipe::Q8_0, 5);
    let mut dec = CpuDecoder::new(&m, &src, &o).unwrap();
    dec.step(&pool(), 1, 0).unwrap();
    assert_eq!(dec.layer_ns().len(), 1);
    assert!(dec.step_ns() >= f64::from(m.n_layers) * dec.layer_ns()[0]);
}

#[test]
fn every_model_decodes_finite_logits() {
    for m in embedded().unwrap() {
        let t = tiny(&m, 256);
        let recipe = if m.arch == "gpt-oss" {
            Recipe::MXFP4_MOE
        } else {
            Recipe::Q8_0
        };
        let src = SyntheticSource::new(&t, recipe, 1);
        let built = CpuDecoder::new(&t, &src, &StepOptions::new(&t, 3));
        let mut dec = built.unwrap_or_else(|e| panic!("{}: {e}", m.name));
        let p = pool();
        let mut token = 0;
        for pos in 0..3 {
            token = dec.step(&p, token, pos).unwrap();
            assert!(
                dec.logits().iter().all(|v| v.is_finite()),
                "{}: non-finite logits",
                m.name
            );
            assert!((token as u64) < t.vocab);
        }
    }
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let m = tiny(&find("llama-3.1-8b").unwrap(), 256);
    let src = SyntheticSource::new(&m, Recipe::Q8_0, 1);
    let mut dec = CpuDecoder::new(&m, &src, &StepOptions::new(&m, 2)).unwrap();
    let p = pool();
    let e = dec.step(&p, m.vocab as u32, 0).unwrap_err();
    assert!(e.to_string().contains("vocabulary"), "{e}");
    let e = dec.step(&p, 1, 2).unwrap_err();
    assert!(e.to_string().contains("past the cache"), "{e}");
    let e = CpuDecoder::new(&m, &src, &opts(&m, 2, KvLayout::MlaLatent))
        .err()
        .unwrap();
    assert!(matches!(e, DecodeError::Unsupported { .. }), "{e}");
    let mut o = StepOptions::new(&m, 2);
    o.kv_dtype = DType::Q4_K;
    assert!(CpuDecoder::new(&m, &src, &o).is_err());
    // A file without one of the tensors the step needs names it.
    let dir = std::env::temp_dir().join(format!("membound-decode-t{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("no-output-norm.gguf");
    let mut small = m.clone();
    small.n_layers = 1;
    write_model_file(&small, Recipe::Q8_0, &path, Fill::Zeros).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let mut two = small.clone();
    two.n_layers = 2;
    let e = CpuDecoder::new(&two, &GgufSource::new(&f), &StepOptions::new(&two, 2))
        .err()
        .unwrap();
    assert!(matches!(e, DecodeError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("blk.1.attn_q.weight"), "{e}");
    let mut o = StepOptions::new(&small, 2);
    o.sample = LayerSample {
        layers: vec![1],
        weights: vec![1.0],
    };
    let e = CpuDecoder::new(&small, &GgufSource::new(&f), &o)
        .err()
        .unwrap();
    assert!(e.to_string().contains("layer 1 of a model of 1"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Qwen3-Next's recurrent layers: stepping the same position again starts from the same
/// states (a benchmark's replay, as a KV cache rewrites its row), and the next position goes
/// on from the states the last one left — the replayed run equals a plain one.
#[test]
fn a_recurrent_step_replays_and_goes_on() {
    let m = tiny(&find("qwen3-coder-next").unwrap(), 256);
    let src = SyntheticSource::new(&m, Recipe::Q8_0, 4);
    let p = pool();
    let logits = |steps: &[(u32, usize)]| {
        let mut dec = CpuDecoder::new(&m, &src, &StepOptions::new(&m, 4)).unwrap();
        steps
            .iter()
            .map(|&(t, pos)| {
                dec.step(&p, t, pos).unwrap();
                dec.logits().to_vec()
            })
            .collect::<Vec<_>>()
    };
    let plain = logits(&[(3, 0), (9, 1), (4, 2)]);
    let replayed = logits(&[(3, 0), (3, 0), (9, 1), (9, 1), (4, 2)]);
    assert_eq!(replayed[0], replayed[1]);
    assert_eq!(replayed[2], replayed[3]);
    assert_eq!(
        [&plain[0], &plain[1], &plain[2]],
        [&replayed[0], &replayed[2], &replayed[4]]
    );
    assert_ne!(plain[1], plain[2], "the state carries the context");
}
