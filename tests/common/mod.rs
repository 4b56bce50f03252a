//! Running the `membound` binary in the CLI tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs `membound` with `args`, capturing its output.
pub fn membound(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_membound"))
        .args(args)
        .output()
        .expect("runs membound")
}

/// Asserts that `membound args` exits 2 without a panic, with one line on stderr that holds
/// every needle.
pub fn fails_with(args: &[&str], needles: &[&str]) {
    let out = membound(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: exit {:?}, stderr {err}",
        out.status.code()
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks `{n}`: {err}");
    }
}

/// A fresh folder under the system's temporary folder, unique to this process and `tag`.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("membound-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creates the temp dir");
    dir
}
