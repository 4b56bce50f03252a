//! The `membound` binary: answers for good input, and a clear message with exit code 2 for bad
//! input, never a panic.

mod common;

use common::{fails_with, membound};

#[test]
fn unknown_model_lists_the_known_ones() {
    fails_with(
        &["spec", "llama-9000"],
        &[
            "unknown model `llama-9000`",
            "glm-4.7-flash",
            "gpt-oss-120b",
        ],
    );
    fails_with(&["fit", "nope", "--devices", "4090"], &["unknown model"]);
}

#[test]
fn malformed_toml_names_file_and_line() {
    let dir = std::env::temp_dir().join(format!("membound-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\nn_layers = \"many\"\n").unwrap();
    fails_with(&["spec", bad.to_str().unwrap()], &["bad.toml", "line 2"]);
    let invalid = dir.join("invalid.toml");
    let glm = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/glm-4.7-flash.toml"
    ))
    .unwrap();
    std::fs::write(&invalid, glm.replace("top_k = 4 ", "top_k = 65 ")).unwrap();
    fails_with(
        &["spec", invalid.to_str().unwrap()],
        &["invalid.toml", "ffn.moe.top_k", "exceeds n_experts"],
    );
    fails_with(
        &["spec", dir.join("missing.toml").to_str().unwrap()],
        &["missing.toml"],
    );
}

#[test]
fn bad_fit_arguments() {
    fails_with(
        &["fit", "glm-4.7-flash", "--devices", "4090", "--ctx", "0"],
        &["at least 1 token"],
    );
    fails_with(
        &[
            "fit",
            "glm-4.7-flash",
            "--devices",
            "4090",
            "--ctx",
            "100000000",
        ],
        &["too large"],
    );
    fails_with(
        &["fit", "glm-4.7-flash", "--devices", "4090", "--ctx", "lots"],
        &["not a context length"],
    );
    fails_with(
        &["fit", "glm-4.7-flash", "--devices", "4090,tpu9"],
        &["unknown device `tpu9`", "gb10"],
    );
    fails_with(
        &[
            "fit",
            "glm-4.7-flash",
            "--devices",
            "4090",
            "--quant",
            "Q3_XXL",
        ],
        &["unknown quant `Q3_XXL`", "Q4_K_M"],
    );
    fails_with(
        &[
            "fit",
            "glm-4.7-flash",
            "--devices",
            "4090",
            "--kv-type",
            "q9",
        ],
        &["unknown type `q9`"],
    );
    fails_with(
        &[
            "fit",
            "glm-4.7-flash",
            "--devices",
            "4090",
            "--kv-layout",
            "gqa",
        ],
        &["does not apply", "mla-latent"],
    );
    fails_with(
        &[
            "fit",
            "llama-3.1-8b",
            "--devices",
            "4090",
            "--kv-layout",
            "mla-split",
        ],
        &["does not apply"],
    );
    fails_with(
        &["fit", "glm-4.7-flash", "--devices", "5800x3d"],
        &["is a CPU"],
    );
    fails_with(&["fit", "glm-4.7-flash"], &["--devices"]);
}

#[test]
fn desktop_fit_shows_spill_for_split_layout_only() {
    let run = |layout: &str| {
        let out = membound(&[
            "fit",
            "glm-4.7-flash",
            "--quant",
            "Q8_0",
            "--kv-type",
            "q8_0",
            "--kv-layout",
            layout,
            "--ctx",
            "112k",
            "--devices",
            "4090,5070ti",
            "--host",
            "5800x3d",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let latent = run("mla-latent");
    let split = run("mla-split");
    assert!(latent.contains("fits: every layer on the GPUs"), "{latent}");
    assert!(split.contains("spills:"), "{split}");
    assert!(
        split.contains("published: 31.67 t/s with ollama"),
        "{split}"
    );
}

#[test]
fn qwen3_coder_next_fit_explains_its_small_kv() {
    let out = membound(&[
        "fit",
        "qwen3-coder-next",
        "--ctx",
        "256k",
        "--devices",
        "gb10",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("only the 12 full-attention layers grow with context"),
        "{text}"
    );
    assert!(
        text.contains("36 linear-attention layers keep a constant"),
        "{text}"
    );
}

#[test]
fn json_output_parses() {
    for args in [
        vec!["spec", "gpt-oss-120b", "--json"],
        vec!["fit", "llama-3.1-70b", "--devices", "gb10", "--json"],
        vec!["models", "--json"],
        vec!["hardware", "--json"],
    ] {
        let out = membound(&args);
        assert!(out.status.success(), "{args:?}");
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(!v.is_null());
    }
    let out = membound(&["fit", "llama-3.1-70b", "--devices", "gb10", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let frac = v["published_decode"][0]["fraction_of_roofline"]
        .as_f64()
        .unwrap();
    assert!(frac > 0.6 && frac < 0.8, "{frac}");
}

/// `compare` reads a committed results folder: times, GB/s, the fraction of the folder's read
/// and the fraction of the read paired with the case in the same process (machine-dense.json).
#[test]
fn compare_reads_results_with_their_paired_ratios() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/results/h200");
    let out = membound(&["compare", dir, "--filter", "q8_0-28672x8192", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &v[0]["machines"][0];
    assert_eq!(v[0]["id"], "dense/q8_0-28672x8192/gpu0");
    let paired = m["fraction_of_paired_read"].as_f64().unwrap();
    let gbs = m["gb_per_s"].as_f64().unwrap();
    assert!((0.5..1.0).contains(&paired) && gbs > 1000.0, "{m}");
    let table = membound(&["compare", dir, "--filter", "q8_0-28672"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("[1] paired") && text.contains("69 %"),
        "{text}"
    );
}

/// `spec` says what one MoE layer reads per token: for Qwen3-30B-A3B at Q8_0, 8 experts of
/// (2 × 768 × 64 + 2048 × 24) blocks of 34 bytes plus the F32 router (128 × 2048 × 4) — the
/// bytes of `moe/qwen3-30b-a3b-q8_0` less its x and y.
#[test]
fn spec_says_what_one_moe_layer_reads() {
    let out = membound(&["spec", "qwen3-30b-a3b", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let q8 = v["moe_layer_bytes_per_token"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["recipe"] == "Q8_0")
        .unwrap();
    assert_eq!(
        q8["bytes"],
        8 * (2 * 768 * 64 + 2048 * 24) * 34 + 128 * 2048 * 4
    );
    let text = String::from_utf8(membound(&["spec", "qwen3-30b-a3b"]).stdout).unwrap();
    assert!(text.contains("one MoE layer per token (layer 0"), "{text}");
    assert!(text.contains("Q8_0 39.25 MiB"), "{text}");
}

/// `spec`'s KV columns grow per token over the full layers only; sliding layers are capped and
/// linear state is constant, each shown apart.
#[test]
fn spec_kv_is_growth_per_token_and_constant_state_apart() {
    let out = membound(&["spec", "qwen3-coder-next", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kv = &v["kv_f16_bytes_per_token"][0];
    assert_eq!(kv["bytes"], 24 * 1024, "{kv}");
    assert_eq!(kv["linear_state_bytes"], 36 * 2_195_456, "{kv}");
    let out = membound(&["spec", "gemma-3-27b", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kv = &v["kv_f16_bytes_per_token"][0];
    assert_eq!(kv["bytes"], 10 * 8192, "{kv}");
    assert_eq!(kv["sliding_cap_bytes"], 52 * 1536 * 8192, "{kv}");
}

/// A published rate measured at a 49-token prompt is compared with the roofline at that depth,
/// not with one that reads the whole planned context.
#[test]
fn published_rates_are_compared_at_their_depth() {
    let args = [
        "fit",
        "glm-4.7-flash",
        "--devices",
        "4090,5070ti",
        "--quant",
        "Q8_0",
        "--ctx",
        "112k",
        "--kv-type",
        "q8_0",
        "--host",
        "5800x3d",
        "--json",
    ];
    let out = membound(&args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let planned = v["plan"]["roofline_tps"].as_f64().unwrap();
    for d in v["published_decode"].as_array().unwrap() {
        assert_eq!(d["roofline_depth"], 49, "{d}");
        let r = d["roofline_tps"].as_f64().unwrap();
        assert!(r > planned, "{d}");
        assert!(d["fraction_of_roofline"].as_f64().unwrap() < 1.0, "{d}");
    }
    let text = String::from_utf8_lossy(&membound(&args[..args.len() - 1]).stdout).to_string();
    assert!(text.contains("of the roofline at depth 49"), "{text}");
}
