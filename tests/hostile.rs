//! The `membound` binary against hostile input: special files, huge files, closed stdout,
//! forged names and Criterion folders. Every failure is one line on stderr and exit 2; nothing
//! panics, hangs or prints a wrapped number.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{fails_with, membound, temp_dir};
use membound_gguf::GgufWriter;
use membound_gguf::synthetic::{Fill, tiny, write_model_file};
use membound_spec::kv::{KvLayout, kv_cache};
use membound_spec::model::MAX_CONTEXT;
use membound_spec::registry::find;
use membound_spec::{DType, ModelSpec, Recipe};

/// A small generated GGUF model file in `dir`.
fn tiny_gguf(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.gguf");
    write_model_file(&tiny_llama(), Recipe::Q8_0, &path, Fill::Zeros).unwrap();
    path
}

fn tiny_llama() -> ModelSpec {
    tiny(&find("llama-3.1-8b").unwrap(), 256)
}

/// Makes a FIFO at `path` (false where `mkfifo` is missing).
fn mkfifo(path: &Path) -> bool {
    Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

/// Every subcommand, as text and as JSON, with the files it needs.
fn every_subcommand(gguf: &str) -> Vec<Vec<String>> {
    let results = concat!(env!("CARGO_MANIFEST_DIR"), "/results/h200");
    let cmds: [&[&str]; 10] = [
        &["spec", "qwen3-coder-next"],
        &["fit", "glm-4.7-flash", "--devices", "4090,5070ti"],
        &["inspect", gguf, "--ctx", "4k"],
        &["compare", results],
        &["claims", results],
        &["models"],
        &["hardware"],
        &["devices"],
        &["--help"],
        &["--version"],
    ];
    let mut out = Vec::new();
    for c in cmds {
        let args: Vec<String> = c.iter().map(|s| s.to_string()).collect();
        if !c[0].starts_with("--") {
            let mut json = args.clone();
            json.push("--json".into());
            out.push(json);
        }
        out.push(args);
    }
    out
}

/// Runs `membound args` with `stdout`: no panic, and a failure is one line on stderr.
fn no_panic_writing_to(args: &[String], stdout: Stdio) {
    let out = Command::new(env!("CARGO_BIN_EXE_membound"))
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    if out.status.code() == Some(2) {
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn closed_or_full_stdout_is_no_panic() {
    let dir = temp_dir("closed-stdout");
    let gguf = tiny_gguf(&dir);
    for args in every_subcommand(gguf.to_str().unwrap()) {
        // A pipe whose reader is gone: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        no_panic_writing_to(&args, writer.into());
        // A full disk: ENOSPC, reported once.
        if let Ok(full) = std::fs::File::create("/dev/full") {
            no_panic_writing_to(&args, full.into());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn special_and_huge_files_are_refused_without_reading_them() {
    let dir = temp_dir("special-files");
    let d = dir.to_str().unwrap();
    fails_with(&["inspect", d], &["not a regular file"]);
    fails_with(&["inspect", "/dev/zero"], &["not a regular file"]);
    let fifo = dir.join("pipe.toml");
    if mkfifo(&fifo) {
        let f = fifo.to_str().unwrap();
        fails_with(&["inspect", f], &["not a regular file"]);
        fails_with(&["spec", f], &["not a regular file"]);
        fails_with(&["fit", f, "--devices", "4090"], &["not a regular file"]);
    }
    // A sparse 3 GiB file: refused after reading at most 1 MiB and a byte.
    let big = dir.join("big.toml");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(3 << 30).unwrap();
    fails_with(&["spec", big.to_str().unwrap()], &["too large for a spec"]);
    let gguf = tiny_gguf(&dir);
    fails_with(&["spec", gguf.to_str().unwrap()], &["GGUF file", "inspect"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_are_printed_once_on_one_line() {
    let dir = temp_dir("once");
    let missing = dir.join("missing.toml");
    let m = missing.to_str().unwrap();
    fails_with(&["spec", m], &["missing.toml"]);
    let err = String::from_utf8_lossy(&membound(&["spec", m]).stderr).to_string();
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\nn_layers = \"many\"\n").unwrap();
    fails_with(&["spec", bad.to_str().unwrap()], &["bad.toml", "line 2"]);
    fails_with(&["spec", "glm-4.7-flash", "--bogus"], &["--bogus"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_checks_its_arguments_and_caps_the_context() {
    let dir = temp_dir("inspect-args");
    let gguf = tiny_gguf(&dir);
    let g = gguf.to_str().unwrap();
    fails_with(&["inspect", g, "--kv-type", "bogus"], &["bogus"]);
    fails_with(
        &["inspect", g, "--kv-type", "i64"],
        &["not a KV-cache type"],
    );
    fails_with(
        &["inspect", g, "--ctx", "18014398509481984k"],
        &["too large"],
    );
    fails_with(&["inspect", g, "--ctx", "32m"], &["too large"]);
    let out = membound(&["inspect", g, "--ctx", "16m", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kv = kv_cache(&tiny_llama(), KvLayout::Gqa, DType::F16, MAX_CONTEXT).unwrap();
    assert_eq!(v["kv"]["bytes"].as_u64(), Some(kv.total));
    assert!(kv.total > 1 << 30);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn names_from_files_cannot_forge_terminal_output() {
    let dir = temp_dir("forged");
    let path = dir.join("forged.gguf");
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", "x\u{1b}[2J\nforged")
        .unwrap();
    w.add_f32("a\nforged row\u{1b}]0;", &[1], &[1.0]).unwrap();
    w.write_file(&path).unwrap();
    let out = membound(&["inspect", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("forged")), "{text}");
    assert!(text.contains("a\\u{a}forged row"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A Criterion case `id` at `dir/name/new` with mean `mean_ns`.
fn criterion_case(dir: &Path, name: &str, id: &str, mean_ns: f64) {
    let case = dir.join(name).join("new");
    std::fs::create_dir_all(&case).unwrap();
    let bench = serde_json::json!({"full_id": id, "throughput": {"BytesDecimal": 1000}});
    std::fs::write(case.join("benchmark.json"), bench.to_string()).unwrap();
    let est = serde_json::json!({"mean": {"point_estimate": mean_ns}});
    std::fs::write(case.join("estimates.json"), est.to_string()).unwrap();
}

#[test]
fn compare_refuses_bad_criterion_folders() {
    let dir = temp_dir("compare");
    for (tag, mean) in [("zero", 0.0), ("negative", -5.0)] {
        let d = dir.join(tag);
        criterion_case(&d, "a", "x/a/cpu", mean);
        fails_with(
            &["compare", d.to_str().unwrap()],
            &["not a positive number"],
        );
    }
    let twice = dir.join("twice");
    criterion_case(&twice, "a", "x/a/cpu", 10.0);
    criterion_case(&twice, "b", "x/a/cpu", 20.0);
    fails_with(
        &["compare", twice.to_str().unwrap()],
        &["appears twice", "x/a/cpu"],
    );
    // A symbolic link back to the folder is not followed: no endless walk.
    let looped = dir.join("loop");
    criterion_case(&looped, "a", "x/a/cpu", 10.0);
    std::os::unix::fs::symlink(&looped, looped.join("again")).unwrap();
    let out = membound(&["compare", looped.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
