//! `membound results add NAME [DIR]`: a run's Criterion output (each benchmark's
//! `new/benchmark.json` and `new/estimates.json`), its `machine*.json` and the suites' derived
//! files (`moe-verdict.json`, `attention-table.json`, `decode-table.json`) copied into `results/NAME/` with a
//! `provenance.json` (the run's commit, date, scale and devices, where it came from). The folder
//! keeps Criterion's own layout, so `membound compare` and critcmp read it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cmd_compare::{read_json, walk};
use crate::units::clean;

/// Arguments of `membound results`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Copies a run into `results/NAME/` with its provenance; refuses a run without
    /// `machine.json` or with unreadable, duplicate or non-positive results.
    Add {
        /// Name of the machine (a folder name: letters, digits, `-`, `_`, `.`).
        name: String,
        /// Criterion's output folder of the run (default: `$CRITERION_HOME`, else
        /// `target/criterion`).
        dir: Option<PathBuf>,
        /// The results folder.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Replace `results/NAME` when it exists.
        #[arg(long)]
        replace: bool,
    },
}

/// Files beside the benchmark folders that a run writes and a result keeps (machine.json first:
/// it is required).
const RUN_FILES: [&str; 4] = [
    "machine.json",
    "moe-verdict.json",
    "attention-table.json",
    "decode-table.json",
];

/// A folder name that is one plain path component.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Runs `membound results`.
pub fn run(a: &Args) -> Result<()> {
    let Action::Add {
        name,
        dir,
        results,
        replace,
    } = &a.action;
    let src = dir.clone().unwrap_or_else(|| {
        std::env::var_os("CRITERION_HOME")
            .map_or_else(|| PathBuf::from("target/criterion"), PathBuf::from)
    });
    let dest = add(name, &src, results, *replace)?;
    outln!("{}", clean(&dest.display().to_string()));
    Ok(())
}

/// Copies the run in `src` into `results/name`; returns the folder written.
pub fn add(name: &str, src: &Path, results: &Path, replace: bool) -> Result<PathBuf> {
    if !valid_name(name) {
        bail!(
            "`{}` is not a results name (letters, digits, -, _, .)",
            clean(name)
        );
    }
    let machine_path = src.join("machine.json");
    if !machine_path.is_file() {
        bail!(
            "{} has no machine.json: not the output of a membound bench run",
            src.display()
        );
    }
    let machine = read_json(&machine_path)?;
    let mut cases = std::collections::BTreeMap::new();
    walk(src, "new", 0, &mut cases)?;
    if cases.is_empty() {
        bail!("{} holds no benchmark results", src.display());
    }
    // The run's own files beside the benchmarks, each checked before anything is written.
    let mut files: Vec<String> = RUN_FILES.iter().map(|s| s.to_string()).collect();
    for entry in std::fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let n = entry?.file_name().to_string_lossy().into_owned();
        if n.starts_with("machine-") && n.ends_with(".json") {
            files.push(n);
        }
    }
    files.retain(|f| src.join(f).is_file());
    for f in files.iter().filter(|f| f.as_str() != "machine.json") {
        read_json(&src.join(f))?;
    }
    let dest = results.join(name);
    if dest.exists() {
        if !replace {
            bail!("{} exists (--replace overwrites it)", dest.display());
        }
        std::fs::remove_dir_all(&dest)
            .with_context(|| format!("cannot remove {}", dest.display()))?;
    }
    let copy = |from: &Path, to: &Path| -> Result<()> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
        Ok(())
    };
    for case in cases.values() {
        let rel = case.dir.strip_prefix(src).unwrap_or(&case.dir);
        for f in ["benchmark.json", "estimates.json"] {
            copy(
                &case.dir.join("new").join(f),
                &dest.join(rel).join("new").join(f),
            )?;
        }
    }
    for f in &files {
        copy(&src.join(f), &dest.join(f))?;
    }
    let provenance = provenance(name, src, &machine, cases.len());
    std::fs::write(
        dest.join("provenance.json"),
        serde_json::to_string_pretty(&provenance)?,
    )
    .with_context(|| format!("cannot write {}", dest.join("provenance.json").display()))?;
    Ok(dest)
}

/// What a result was measured on and where it came from.
fn provenance(name: &str, src: &Path, machine: &Value, cases: usize) -> Value {
    let devices: Vec<Value> = machine["gpus"]
        .as_array()
        .map(|g| g.iter().map(|g| g["info"]["name"].clone()).collect())
        .unwrap_or_default();
    let added = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "name": name,
        "source": src.display().to_string(),
        "commit": machine["commit"],
        "run_unix_time": machine["unix_time"],
        "added_unix_time": added,
        "scale": machine["scale"],
        "hostname": machine["hostname"],
        "cpu": machine["cpu"]["model"],
        "gpus": devices,
        "benchmarks": cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_plain_components() {
        for ok in ["h200", "rtx-4090_desktop", "gb10.2026"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "x y",
            "ä",
            &"x".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
