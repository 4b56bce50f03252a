//! `membound inspect` on generated model files prints the totals `membound spec` and
//! `membound fit` print for the same model and recipe; bad files exit 2 naming the file.

mod common;

use std::path::Path;

use common::{membound, temp_dir};

use membound_gguf::synthetic::{Fill, write_model_file};
use membound_spec::bytes::weights;
use membound_spec::kv::{KvLayout, kv_cache};
use membound_spec::registry::from_file;
use membound_spec::{DType, Recipe};
use serde_json::Value;

/// A small DeepSeek-style model: MLA, a dense first layer, shared expert, sigmoid router.
const MLA_MOE: &str = r#"
name = "tiny-mla"
display_name = "Tiny MLA"
arch = "deepseek2"
n_layers = 4
hidden = 256
vocab = 512
max_context = 8192
[attention]
kind = "mla"
n_heads = 4
q_lora_rank = 128
kv_lora_rank = 64
qk_nope_head_dim = 32
qk_rope_head_dim = 32
v_head_dim = 32
[ffn]
intermediate = 512
[ffn.moe]
n_experts = 8
top_k = 2
expert_intermediate = 256
n_shared = 1
dense_first = 1
router = "sigmoid"
router_bias = true
norm_topk = true
routed_scaling = 1.8
"#;

/// A small Gemma-3-style model: tied embeddings, sliding-window layers, Q/K norms.
const SWA_TIED: &str = r#"
name = "tiny-swa"
display_name = "Tiny SWA"
arch = "gemma3"
n_layers = 6
hidden = 256
vocab = 512
tied_embeddings = true
max_context = 8192
layer_pattern = "SSSSSF"
sliding_window = 128
[attention]
kind = "gqa"
n_heads = 4
n_kv_heads = 2
head_dim = 64
qk_norm = true
[ffn]
intermediate = 512
"#;

fn json_of(args: &[&str]) -> Value {
    let out = membound(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

fn check(dir: &Path, toml: &str, recipe: Recipe) {
    let spec_path = dir.join("spec.toml");
    std::fs::write(&spec_path, toml).unwrap();
    let spec = from_file(&spec_path).unwrap();
    let gguf = dir.join(format!("{}-{recipe}.gguf", spec.name));
    write_model_file(&spec, recipe, &gguf, Fill::Random { seed: 3 }).unwrap();
    let (g, s) = (gguf.to_str().unwrap(), spec_path.to_str().unwrap());

    let w = weights(&spec, recipe);
    let totals = w.totals(&spec);
    let kv = kv_cache(&spec, KvLayout::native(&spec), DType::Q8_0, 4096).unwrap();
    let inspect = json_of(&["inspect", g, "--json", "--ctx", "4k", "--kv-type", "q8_0"]);
    assert_eq!(u(&inspect["total_bytes"]), totals.bytes, "{}", spec.name);
    assert_eq!(
        u(&inspect["weights_read_per_token"]),
        totals.active_bytes,
        "{}",
        spec.name
    );
    assert_eq!(u(&inspect["kv"]["bytes"]), kv.total);
    assert_eq!(
        u(&inspect["bytes_per_token"]),
        totals.active_bytes + kv.total
    );
    assert_eq!(inspect["file_type"], recipe.name());
    assert_eq!(inspect["spec"]["arch"], spec.arch.as_str());
    assert_eq!(
        u(&inspect["tensor_count"]),
        w.tensors.len() as u64,
        "{}",
        spec.name
    );
    for (dtype, bytes) in w.by_dtype() {
        assert_eq!(u(&inspect["by_type"][dtype.name()]["bytes"]), bytes);
    }

    // `membound spec` prints the same stored and per-token bytes for this recipe.
    let spec_out = json_of(&["spec", s, "--json"]);
    let row = spec_out["bytes_per_token"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["recipe"] == recipe.name())
        .unwrap_or_else(|| panic!("membound spec has no {recipe} row"));
    assert_eq!(u(&row["bytes"]), u(&inspect["total_bytes"]));
    assert_eq!(
        u(&row["active_bytes"]),
        u(&inspect["weights_read_per_token"])
    );

    // `membound fit` agrees class by class.
    let quant = recipe.name();
    let fit = json_of(&[
        "fit",
        s,
        "--quant",
        quant,
        "--ctx",
        "4k",
        "--kv-type",
        "q8_0",
        "--devices",
        "4090",
        "--json",
    ]);
    let classes = fit["weights_by_class"].as_object().unwrap();
    assert!(!classes.is_empty());
    for (class, t) in classes {
        let mine = &inspect["by_class"][class];
        assert_eq!(u(&mine["bytes"]), u(&t["bytes"]), "{class}");
        assert_eq!(u(&mine["active_bytes"]), u(&t["active_bytes"]), "{class}");
    }
    assert_eq!(
        inspect["by_class"].as_object().unwrap().len(),
        classes.len()
    );

    // The text report carries the same totals.
    let text = membound(&["inspect", g, "--ctx", "4k", "--kv-type", "q8_0"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    let gb = format!("{:.2} GB", totals.bytes as f64 / 1e9);
    assert!(text.contains(&gb), "{text}");
    assert!(text.contains("blk.0.attn_norm.weight"), "{text}");
    assert!(text.contains(&spec.arch), "{text}");
}

#[test]
fn inspect_matches_spec_and_fit() {
    let dir = temp_dir("totals");
    check(&dir, MLA_MOE, Recipe::Q4_K_M);
    check(&dir, MLA_MOE, Recipe::Q8_0);
    check(&dir, SWA_TIED, Recipe::Q4_K_M);
    check(&dir, SWA_TIED, Recipe::BF16);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_files_exit_2_naming_the_file() {
    let dir = temp_dir("bad");
    let missing = dir.join("missing.gguf");
    let corrupt = dir.join("corrupt.gguf");
    std::fs::write(&corrupt, b"GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\x7f").unwrap();
    let not_gguf = dir.join("text.gguf");
    std::fs::write(&not_gguf, b"hello, world").unwrap();
    for (path, needle) in [
        (&missing, "cannot open"),
        (&corrupt, "at byte"),
        (&not_gguf, "not a GGUF file"),
    ] {
        let p = path.to_str().unwrap();
        let out = membound(&["inspect", p]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{p}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains(p) && err.contains(needle), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `membound synth` writes the file `inspect` reads back as the same model (real or `--tiny`
/// shapes), with the keys llama.cpp needs to load a file without a vocabulary; it refuses to
/// overwrite without `--force` and names bad input in one line.
#[test]
fn synth_writes_a_model_file_inspect_and_llama_cpp_can_read() {
    let dir = temp_dir("synth");
    let path = dir.join("gpt-oss-tiny.gguf");
    let p = path.to_str().unwrap();
    let out = membound(&[
        "synth",
        "gpt-oss-20b",
        "--tiny",
        "256",
        "--quant",
        "MXFP4_MOE",
        "-o",
        p,
    ]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("100 %"), "progress: {err}");
    let f = membound_gguf::GgufFile::open(&path).unwrap();
    assert_eq!(f.meta_str("tokenizer.ggml.model").unwrap(), "none");
    let spec = membound_gguf::spec::spec_from_gguf(&f).unwrap();
    let want =
        membound_gguf::synthetic::tiny(&membound_spec::registry::find("gpt-oss-20b").unwrap(), 256);
    assert_eq!(
        f.meta("gpt-oss.vocab_size").and_then(|v| v.as_u64()),
        Some(want.vocab)
    );
    assert_eq!(
        (spec.n_layers, spec.hidden, spec.vocab),
        (want.n_layers, want.hidden, want.vocab)
    );
    let written: u64 = String::from_utf8_lossy(&out.stdout)
        .split('\t')
        .nth(1)
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert_eq!(written, std::fs::metadata(&path).unwrap().len());
    let js = json_of(&["inspect", p, "--json"]);
    assert_eq!(js["file_type"], "MXFP4_MOE", "{js}");
    common::fails_with(&["synth", "gpt-oss-20b", "-o", p], &["exists", "--force"]);
    common::fails_with(&["synth", "nope", "-o", p], &["unknown model"]);
    common::fails_with(
        &["synth", "gpt-oss-20b", "--fill", "ones", "-o", p],
        &["--fill ones"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
