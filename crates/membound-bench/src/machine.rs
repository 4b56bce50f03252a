//! `machine.json`: what a baseline was measured on, written beside Criterion's output
//! (`$CRITERION_HOME`, else `<target>/criterion`) by every bench run.

use std::path::PathBuf;

use serde_json::json;

use crate::{Backends, Scale};

/// Criterion's output directory for this run.
pub fn criterion_home() -> PathBuf {
    if let Ok(h) = std::env::var("CRITERION_HOME") {
        return PathBuf::from(h);
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(target).join("criterion")
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The run's facts as JSON: host, CPU, GPUs (with clocks as read now), build, scale.
pub fn describe(backends: &Backends, scale: Scale) -> serde_json::Value {
    let gpus: Vec<serde_json::Value> = backends
        .gpus
        .iter()
        .map(|g| {
            json!({
                "id": g.id,
                "info": g.info(),
                "clocks_now": membound_cuda::read_clocks(g.info()).ok(),
                "kernels": g.gpu.build_description(),
            })
        })
        .collect();
    let host = membound_spec::hardware::host_cpu();
    json!({
        "hostname": read_trimmed("/proc/sys/kernel/hostname").or_else(|| std::env::var("HOSTNAME").ok()),
        "os": std::env::consts::OS,
        "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
        "arch": std::env::consts::ARCH,
        "cpu": {
            "model": host.name,
            "cores": host.units,
            "llc_bytes": host.llc_bytes,
            "memory_bytes": host.memory_bytes,
            "simd": membound_cpu::simd_level(),
        },
        "cuda": backends.probe,
        "gpus": gpus,
        "commit": env!("MEMBOUND_COMMIT"),
        "crate_version": env!("CARGO_PKG_VERSION"),
        "scale": scale,
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    })
}

/// Writes `machine.json` (and `machine-<suite>.json`, so suites run one by one keep theirs)
/// into [`criterion_home`]; a failure to write is reported, not fatal.
pub fn write(backends: &Backends, scale: Scale, suite: &str) {
    let dir = criterion_home();
    let value = describe(backends, scale);
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    let result = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join("machine.json"), &text))
        .and_then(|_| std::fs::write(dir.join(format!("machine-{suite}.json")), &text));
    if let Err(e) = result {
        eprintln!("membound: cannot write {}/machine.json: {e}", dir.display());
    }
}

/// Writes a suite's derived results (`value` under `key`, with the machine's facts and the
/// suite's name) as `file` into [`criterion_home`] and says where; a failure is reported.
pub fn write_extra<T: serde::Serialize>(
    file: &str,
    suite: &str,
    key: &str,
    value: &T,
    machine: serde_json::Value,
) {
    let mut m = machine;
    m["suite"] = suite.into();
    m[key] = serde_json::to_value(value).unwrap_or_default();
    let dir = criterion_home();
    let path = dir.join(file);
    match std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap_or_default()))
    {
        Ok(()) => println!("{suite}: {}", path.display()),
        Err(e) => eprintln!("membound: cannot write {}: {e}", path.display()),
    }
}
