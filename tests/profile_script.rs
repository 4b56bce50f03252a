//! `scripts/profile.sh` says why it cannot profile, in one line with exit 2, before building
//! anything: a missing tool, a machine without an NVIDIA GPU, an unknown tool.

use std::path::PathBuf;
use std::process::Command;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/profile.sh")
}

/// Runs the script with `path` as PATH (plus the system's); returns (code, stderr).
fn run(args: &[&str], extra_path: Option<&std::path::Path>) -> (i32, String) {
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(p) = extra_path {
        path = format!("{}:{path}", p.display());
    }
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .env("PATH", path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn has(cmd: &str) -> bool {
    Command::new("bash")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn missing_tools_and_gpus_are_named() {
    let (code, err) = run(&["perf", "dense"], None);
    assert_eq!(code, 2);
    assert!(err.contains("tool must be nsys or ncu"), "{err}");
    if !has("ncu") {
        let (code, err) = run(&["ncu", "dense"], None);
        assert_eq!(code, 2);
        assert!(
            err.contains("ncu (Nsight Compute) is not installed"),
            "{err}"
        );
    }
    if !has("nvidia-smi") && !std::path::Path::new("/dev/nvidia0").exists() {
        // A stand-in ncu: the GPU check must still stop it.
        let dir = std::env::temp_dir().join(format!("membound-fake-ncu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ncu = dir.join("ncu");
        std::fs::write(&ncu, "#!/bin/sh\nexit 0\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ncu, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (code, err) = run(&["ncu", "dense"], Some(&dir));
        assert_eq!(code, 2);
        assert!(err.contains("no NVIDIA GPU here"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
