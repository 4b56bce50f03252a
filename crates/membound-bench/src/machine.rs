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
/// Rows (objects with an `id`) of an earlier run of the same suite, build and host in that
/// folder are kept where this run has no row of their id, as Criterion keeps the cases a run
/// filtered out: runs one file or filter at a time add up to one table.
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
    if let Some(old) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    {
        merge_rows(&mut m, &old, key);
    }
    match std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap_or_default()))
    {
        Ok(()) => println!("{suite}: {}", path.display()),
        Err(e) => eprintln!("membound: cannot write {}: {e}", path.display()),
    }
}

/// Puts `old`'s rows under `key` whose `id` `new` lacks before `new`'s rows, where both were
/// written by the same suite, commit and host (another build's or machine's rows are dropped).
fn merge_rows(new: &mut serde_json::Value, old: &serde_json::Value, key: &str) {
    let same = ["suite", "commit", "hostname"]
        .iter()
        .all(|k| old[k] == new[k] && !new[k].is_null());
    let (Some(rows), Some(old_rows)) = (new[key].as_array(), old[key].as_array()) else {
        return;
    };
    fn id(r: &serde_json::Value) -> Option<&str> {
        r["id"].as_str()
    }
    if !same || !rows.iter().chain(old_rows).all(|r| id(r).is_some()) {
        return;
    }
    let mut merged: Vec<serde_json::Value> = old_rows
        .iter()
        .filter(|o| !rows.iter().any(|r| id(r) == id(o)))
        .cloned()
        .collect();
    merged.extend(rows.iter().cloned());
    new[key] = serde_json::Value::Array(merged);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_rows_replace_their_ids_and_keep_the_others() {
        let table = |commit: &str, ids: &[(&str, f64)]| {
            json!({
                "suite": "decode", "commit": commit, "hostname": "h",
                "decode": ids.iter().map(|(i, t)| json!({"id": i, "t": t})).collect::<Vec<_>>(),
            })
        };
        let old = table("c1", &[("a", 1.0), ("b", 2.0)]);
        let mut new = table("c1", &[("b", 3.0), ("c", 4.0)]);
        merge_rows(&mut new, &old, "decode");
        let got: Vec<(String, f64)> = new["decode"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["t"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [("a".into(), 1.0), ("b".into(), 3.0), ("c".into(), 4.0)]
        );
        // Another build's rows are not kept.
        let mut other = table("c2", &[("c", 4.0)]);
        merge_rows(&mut other, &old, "decode");
        assert_eq!(other["decode"].as_array().unwrap().len(), 1);
        // Rows without ids (the MoE verdicts) are replaced whole.
        let mut verdicts = json!({"suite": "decode", "commit": "c1", "hostname": "h", "decode": [{"backend": "cpu"}]});
        merge_rows(&mut verdicts, &old, "decode");
        assert_eq!(verdicts["decode"].as_array().unwrap().len(), 1);
    }
}
