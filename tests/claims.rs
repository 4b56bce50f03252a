//! `membound claims`: verdicts from the committed results folders, one hand-checked.

mod common;

use common::{fails_with, membound, temp_dir};

const H100: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results/h100-80gb-hbm3");
const H200: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results/h200");
const CPU_MOE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results/dev-vm-epyc-2c-moe");

fn verdicts(args: &[&str]) -> Vec<serde_json::Value> {
    let out = membound(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["verdicts"].as_array().unwrap().clone()
}

fn find<'a>(v: &'a [serde_json::Value], claim: &str) -> &'a serde_json::Value {
    v.iter().find(|x| x["claim"] == claim).unwrap()
}

/// By hand: the H100 read 3068.8 GB/s of its 3350 (91.6 %), the H200 4596.1 of 4800 (95.8 %);
/// with no GB10 measured, 273 GB/s × their mean fraction (93.68 %) = 255.7 GB/s, a prediction.
#[test]
fn gb10_bandwidth_is_predicted_from_the_measured_gpus() {
    let v = verdicts(&["claims", H100, H200, "--json"]);
    let gb10 = find(&v, "gb10-bandwidth");
    assert_eq!(gb10["verdict"], "prediction");
    let hand = 273.0 * (3068.8 / 3350.0 + 4596.1 / 4800.0) / 2.0;
    let got = gb10["figure"].as_f64().unwrap();
    assert!((got - hand).abs() < 0.05, "{got} vs {hand}");
    assert!(gb10["detail"].as_str().unwrap().contains("h100"));
    assert_eq!(find(&v, "dense-50-60")["verdict"], "not measured");
    assert_eq!(find(&v, "mla-half-kv")["verdict"], "confirmed");
}

/// A claim about a measured GPU is confirmed or refuted by its read; the moe suite's verdict
/// confirms "follows active".
#[test]
fn measured_claims_get_confirmed_or_refuted() {
    let dir = temp_dir("claims");
    let file = dir.join("claims.toml");
    std::fs::write(
        &file,
        r#"
[[claim]]
id = "h200-4800"
statement = "H200 reads 4.8 TB/s"
source = "spec sheet"
figure = 4800.0
test = "read_bandwidth"
device = "h200"
threshold = 0.9

[[claim]]
id = "h200-6000"
statement = "H200 reads 6 TB/s"
source = "made up"
figure = 6000.0
test = "read_bandwidth"
device = "h200"
threshold = 0.9

[[claim]]
id = "moe"
statement = "MoE follows active"
source = "seed"
test = "moe_active"
"#,
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let v = verdicts(&["claims", H200, CPU_MOE, "--claims", f, "--json"]);
    let ok = find(&v, "h200-4800");
    assert_eq!(ok["verdict"], "confirmed");
    assert!(
        (ok["figure"].as_f64().unwrap() - 4596.1).abs() < 0.1,
        "{ok}"
    );
    assert_eq!(find(&v, "h200-6000")["verdict"], "refuted");
    let moe = find(&v, "moe");
    assert_eq!(moe["verdict"], "confirmed");
    assert!(moe["machine"].as_str().unwrap().contains("(cpu)"));
}

#[test]
fn bad_claims_and_folders_are_one_line_errors() {
    let dir = temp_dir("claims-bad");
    let file = dir.join("claims.toml");
    std::fs::write(
        &file,
        "[[claim]]\nid = \"x\"\nstatement = \"s\"\nsource = \"s\"\ntest = \"guess\"\n",
    )
    .unwrap();
    fails_with(
        &["claims", H200, "--claims", file.to_str().unwrap()],
        &["claims"],
    );
    fails_with(
        &["claims", dir.join("nowhere").to_str().unwrap()],
        &["not a directory"],
    );
    let broken = dir.join("run");
    std::fs::create_dir_all(broken.join("x/new")).unwrap();
    std::fs::write(broken.join("x/new/benchmark.json"), "{").unwrap();
    std::fs::write(broken.join("machine.json"), "{}").unwrap();
    fails_with(&["claims", broken.to_str().unwrap()], &["not valid JSON"]);
}

const CPU_DECODE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results/dev-vm-epyc-2c-decode");

#[test]
fn decode_claims_are_judged_from_the_decode_table() {
    let v = verdicts(&["claims", CPU_DECODE, "--json"]);
    // Hand-checked from results/dev-vm-epyc-2c-decode/decode-table.json: llama-3.1-8b Q4_K_M at
    // depth 0 decoded 6.2278 t/s; the read sampled around it was 32.6142 GB/s and a token reads
    // 4,617,398,528 weight + 131,072 KV bytes, so the roofline is 32.6142e9 / 4,617,529,600 =
    // 7.0631 t/s and the fraction 6.2278 / 7.0631 = 0.882: outside 0.55 ± 0.05, refuted.
    let dense = find(&v, "dense-50-60");
    assert_eq!(dense["verdict"], "refuted");
    let f = dense["figure"].as_f64().unwrap();
    assert!(
        (f - 6.2278 / (32.6142e9 / 4_617_529_600.0)).abs() < 1e-3,
        "{f}"
    );
    // Qwen3-Coder-30B-A3B: 7.375 t/s at depth 0, 4.610 at 4096 on this CPU (attention is
    // compute-bound here): 1 - 4.610 / 7.375 = 37.5 % slower, not 11 %.
    let depth = find(&v, "depth-11pct");
    assert_eq!(depth["verdict"], "refuted");
    let s = depth["figure"].as_f64().unwrap();
    assert!((s - (1.0 - 4.610 / 7.375)).abs() < 1e-3, "{s}");
    // Placements membound does not measure stay "not measured".
    assert_eq!(find(&v, "split-109-tps")["verdict"], "not measured");
}

/// A results folder holding only `machine.json` (GPUs named `gpus`) and a decode table.
fn decode_folder(name: &str, gpus: &[&str], rows: serde_json::Value) -> std::path::PathBuf {
    let dir = temp_dir(name);
    let gpus: Vec<serde_json::Value> = gpus
        .iter()
        .enumerate()
        .map(|(i, n)| serde_json::json!({"id": format!("gpu{i}"), "info": {"name": n}}))
        .collect();
    std::fs::write(
        dir.join("machine.json"),
        serde_json::json!({"cpu": "test", "gpus": gpus}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("decode-table.json"),
        serde_json::json!({ "decode": rows }).to_string(),
    )
    .unwrap();
    dir
}

fn row(id: &str, tps: f64, fraction: Option<f64>) -> serde_json::Value {
    serde_json::json!({
        "id": id, "tokens_per_s": tps, "fraction_of_roofline": fraction,
        "weight_bytes": 3_000_000_000u64, "kv_bytes": 0,
    })
}

/// The placement claims from the decode suite's `-cpu4` and `-split` rows, by hand:
/// - offload: 100 t/s whole against 30 with 4 layers on the CPU is 3.33x, within 3.4 ± 0.5;
/// - split on one H200 at 40 % of its roofline, predicted for a 4090 (24 GiB, 1008 GB/s) and a
///   5070 Ti (16 GiB, 896 GB/s) split 0.6 / 0.4 by memory: 3 GB x (0.6 / 1008 + 0.4 / 896) per
///   GB/s = 3.125 ms, 320 t/s at spec bandwidth, x 0.4 = 128 t/s;
/// - split on the claim's own two GPUs at 105 t/s: within 15 % of 108.83, confirmed.
#[test]
fn placement_claims_are_judged_from_the_placement_rows() {
    let h200 = decode_folder(
        "claims-placed-h200",
        &["NVIDIA H200"],
        serde_json::json!([
            row("decode/glm-4.7-flash-q8_0-d0/cpu", 5.0, Some(0.8)),
            row("decode/glm-4.7-flash-q8_0-d0/gpu0", 100.0, Some(0.5)),
            row("decode/glm-4.7-flash-q8_0-d0-cpu4/gpu0", 30.0, None),
            row(
                "decode/glm-4.7-flash-q8_0-d0-split23-one-gpu/gpu0",
                95.0,
                Some(0.4)
            ),
            // Another recipe's rows are not the claim's.
            row("decode/glm-4.7-flash-q4_k_m-d0-cpu4/gpu0", 1.0, None),
        ]),
    );
    let desktop = decode_folder(
        "claims-placed-desktop",
        &["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 5070 Ti"],
        serde_json::json!([row(
            "decode/glm-4.7-flash-q8_0-d0-split23/gpu0",
            105.0,
            Some(0.3)
        )]),
    );
    let v = verdicts(&[
        "claims",
        h200.to_str().unwrap(),
        desktop.to_str().unwrap(),
        "--json",
    ]);
    let of = |claim: &str| -> Vec<&serde_json::Value> {
        v.iter().filter(|x| x["claim"] == claim).collect()
    };
    let off = of("cpu-offload-3.4x");
    assert_eq!(off.len(), 1, "{off:?}");
    assert_eq!(off[0]["verdict"], "confirmed");
    assert!((off[0]["figure"].as_f64().unwrap() - 100.0 / 30.0).abs() < 1e-9);
    assert!(off[0]["machine"].as_str().unwrap().ends_with("(gpu0)"));
    let split = of("split-109-tps");
    assert_eq!(split.len(), 2, "{split:?}");
    assert_eq!(split[0]["verdict"], "prediction");
    let p = split[0]["figure"].as_f64().unwrap();
    assert!((p - 128.0).abs() < 1e-6, "{p}");
    assert_eq!(split[1]["verdict"], "confirmed");
    assert_eq!(split[1]["figure"].as_f64().unwrap(), 105.0);
    // The dense claim is Llama's: no rows here, so "not measured".
    assert_eq!(of("dense-50-60")[0]["verdict"], "not measured");
}
