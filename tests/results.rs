//! `membound results add`: a run copied into `results/NAME/` with its provenance, readable by
//! `compare` with the same ids; runs without machine.json, with broken files, an existing
//! destination or a bad name are refused with one line and exit 2.

mod common;

use std::path::Path;

use common::{fails_with, membound, temp_dir};

const RUN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results/h200");

/// Copies a folder tree (the committed H200 run stands in for a fresh Criterion folder).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn ids(compare_json: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(compare_json).unwrap();
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str().map(String::from))
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_run_is_kept_with_its_provenance_and_compares_as_before() {
    let dir = temp_dir("results-add");
    let run = dir.join("criterion");
    copy_tree(Path::new(RUN), &run);
    std::fs::write(run.join("moe-verdict.json"), "{\"verdicts\": []}").unwrap();
    let results = dir.join("results");
    let out = membound(&[
        "results",
        "add",
        "h200-copy",
        run.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = results.join("h200-copy");
    for f in [
        "machine.json",
        "machine-dense.json",
        "moe-verdict.json",
        "provenance.json",
    ] {
        assert!(kept.join(f).is_file(), "{f}");
    }
    assert!(
        !kept.join("README.md").exists(),
        "only the run's own files are kept"
    );
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kept.join("provenance.json")).unwrap())
            .unwrap();
    let machine: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("machine.json")).unwrap()).unwrap();
    assert_eq!(p["commit"], machine["commit"]);
    assert_eq!(p["scale"], machine["scale"]);
    assert_eq!(p["benchmarks"], 37);
    assert!(p["gpus"][0].as_str().unwrap().contains("H200"), "{p}");
    let before = membound(&["compare", RUN, "--json"]);
    let after = membound(&["compare", kept.to_str().unwrap(), "--json"]);
    assert!(before.status.success() && after.status.success());
    let (a, b) = (ids(&before.stdout), ids(&after.stdout));
    assert_eq!(a.len(), 37, "{a:?}");
    assert_eq!(a, b);
    // A second add of the same name is refused; --replace overwrites it.
    let again = [
        "results",
        "add",
        "h200-copy",
        run.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
    ];
    fails_with(&again, &["exists", "--replace"]);
    let mut replace = again.to_vec();
    replace.push("--replace");
    assert!(membound(&replace).status.success());
}

#[test]
fn bad_runs_and_names_are_refused() {
    let dir = temp_dir("results-bad");
    let results = dir.join("results");
    let r = results.to_str().unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails_with(
        &[
            "results",
            "add",
            "x",
            empty.to_str().unwrap(),
            "--results",
            r,
        ],
        &["no machine.json"],
    );
    let run = dir.join("run");
    copy_tree(Path::new(RUN), &run);
    fails_with(
        &[
            "results",
            "add",
            "../up",
            run.to_str().unwrap(),
            "--results",
            r,
        ],
        &["not a results name"],
    );
    let est = run.join("dense/q8_0-4096x4096_gpu0/new/estimates.json");
    assert!(est.is_file());
    std::fs::write(&est, "{ not json").unwrap();
    fails_with(
        &["results", "add", "x", run.to_str().unwrap(), "--results", r],
        &["not valid JSON"],
    );
    // A broken machine-<suite>.json is found before anything is copied.
    std::fs::copy(
        Path::new(RUN).join("dense/q8_0-4096x4096_gpu0/new/estimates.json"),
        &est,
    )
    .unwrap();
    std::fs::write(run.join("machine-dense.json"), "[").unwrap();
    fails_with(
        &["results", "add", "x", run.to_str().unwrap(), "--results", r],
        &["machine-dense.json"],
    );
    assert!(
        !results.join("x").exists(),
        "nothing is written for a refused run"
    );
}
