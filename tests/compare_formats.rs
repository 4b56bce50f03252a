//! `membound compare`: suite and regex filters, Markdown and CSV tables; and the results
//! folders stay in Criterion's own layout, the one critcmp reads (`{group}/{function}/{baseline}/`
//! `benchmark.json` + `estimates.json` with the fields critcmp's `data.rs` deserializes).

mod common;

use std::path::Path;

use common::{fails_with, membound};
use serde::Deserialize;

const H200: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results/h200");
const H100: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results/h100-80gb-hbm3");

fn stdout(args: &[&str]) -> String {
    let o = membound(args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn ids(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn suite_and_regex_filters_select_ids() {
    let all = ids(&stdout(&["compare", H200, "--json"]));
    let dense = ids(&stdout(&["compare", H200, "--suite", "dense", "--json"]));
    assert!(!dense.is_empty() && dense.len() < all.len());
    assert!(dense.iter().all(|id| id.starts_with("dense/")));
    let q = ids(&stdout(&[
        "compare",
        H200,
        "--filter",
        r"^dense/q(8_0|4_k)-\d+x8192/",
        "--json",
    ]));
    assert_eq!(
        q,
        ["dense/q4_k-28672x8192/gpu0", "dense/q8_0-28672x8192/gpu0"],
        "{q:?}"
    );
    fails_with(
        &["compare", H200, "--filter", "("],
        &["--filter is not a valid regular expression"],
    );
}

#[test]
fn markdown_and_csv_tables() {
    let md = stdout(&[
        "compare",
        H200,
        H100,
        "--filter",
        "^bandwidth/read/",
        "--format",
        "markdown",
    ]);
    let lines: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert!(lines[0].starts_with("| id | [1] time | [1] GB/s |"), "{md}");
    assert!(lines[1].starts_with("|---|"));
    assert!(
        lines[2].starts_with("| bandwidth/read/gpu0 |") && lines[2].contains("x |"),
        "{md}"
    );
    let csv = stdout(&[
        "compare",
        H200,
        "--filter",
        "^bandwidth/read/",
        "--format",
        "csv",
    ]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "id,[1] time,[1] GB/s,[1] of read,[1] paired");
    assert!(rows[1].starts_with("bandwidth/read/gpu0,"), "{csv}");
    assert_eq!(rows[1].split(',').count(), 5);
}

/// critcmp's view of Criterion's files (critcmp 0.1 `data.rs`).
#[derive(Deserialize)]
#[allow(dead_code)]
struct CBenchmark {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    throughput: Option<serde_json::Value>,
    full_id: String,
    directory_name: String,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct CStats {
    confidence_interval: CInterval,
    point_estimate: f64,
    standard_error: f64,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct CInterval {
    confidence_level: f64,
    lower_bound: f64,
    upper_bound: f64,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct CEstimates {
    mean: CStats,
    median: CStats,
    median_abs_dev: CStats,
    slope: Option<CStats>,
    std_dev: CStats,
}

fn benchmark_dirs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.join("new/benchmark.json").is_file() {
                out.push(p);
            } else {
                benchmark_dirs(&p, out);
            }
        }
    }
}

#[test]
fn results_folders_keep_criterions_layout_for_critcmp() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    let mut checked = 0;
    for folder in std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
    {
        let mut dirs = Vec::new();
        if folder.is_dir() {
            benchmark_dirs(&folder, &mut dirs);
        }
        for d in dirs {
            let read = |f: &str| std::fs::read_to_string(d.join("new").join(f)).unwrap();
            let b: CBenchmark = serde_json::from_str(&read("benchmark.json"))
                .unwrap_or_else(|e| panic!("{}: {e}", d.display()));
            let _: CEstimates = serde_json::from_str(&read("estimates.json"))
                .unwrap_or_else(|e| panic!("{}: {e}", d.display()));
            // The folder sits where Criterion put it: its directory_name ({group}/{function}).
            let rel = d.strip_prefix(&folder).unwrap();
            assert_eq!(rel, Path::new(&b.directory_name), "{}", d.display());
            assert!(b.full_id.starts_with(&format!("{}/", b.group_id)));
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked} benchmark folders checked");
}
