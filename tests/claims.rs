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
