//! `membound compare DIR...`: Criterion baselines side by side.
//!
//! Each DIR is a Criterion output folder (`target/criterion`, or a copy under `results/<machine>/`).
//! Per benchmark id it prints the mean time and GB/s on each machine, the fraction of that
//! machine's own measured read bandwidth (`bandwidth/read/<backend>` of the folder, possibly
//! another minute's), the fraction of the read paired with the case in the same process (from
//! `machine-<suite>.json`, where the bench recorded it), and the ratio of each machine's time to
//! the first's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::units::{clean, table};

/// Arguments of `membound compare`.
#[derive(clap::Args)]
pub struct Args {
    /// Criterion output folders, one per machine (e.g. results/h100 target/criterion).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Read this saved baseline (`--save-baseline NAME`) instead of the latest run (`new`).
    #[arg(long, default_value = "new")]
    pub baseline: String,
    /// Only ids matching this regular expression (plain text matches ids containing it).
    #[arg(long)]
    pub filter: Option<String>,
    /// Only this suite's ids (`bandwidth`, `dense`, `moe`, `attention`, `decode`).
    #[arg(long)]
    pub suite: Option<String>,
    /// Table layout: `text` (aligned columns), `markdown` or `csv`.
    #[arg(long, default_value = "text", value_parser = ["text", "markdown", "csv"])]
    pub format: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One measured case.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Case {
    /// Where it was read from (duplicate ids are named by their folders).
    #[serde(skip)]
    pub(crate) dir: PathBuf,
    mean_ns: f64,
    bytes: Option<u64>,
    /// GB/s as a fraction of the read measured around it in the same process.
    paired: Option<f64>,
}

impl Case {
    /// Decimal GB/s of the mean, where the case has a byte throughput.
    pub(crate) fn gbs(&self) -> Option<f64> {
        self.bytes.map(|b| b as f64 / self.mean_ns)
    }

    /// GB/s as a fraction of the read measured around it (where the bench recorded one).
    pub(crate) fn paired(&self) -> Option<f64> {
        self.paired
    }
}

/// A machine's cases by id, and its label.
pub(crate) struct Machine {
    label: String,
    pub(crate) cases: BTreeMap<String, Case>,
}

/// The largest JSON file read (Criterion's are a few KiB).
const MAX_JSON_BYTES: u64 = 16 << 20;
/// The deepest folder nesting walked below a Criterion folder.
const MAX_DEPTH: usize = 16;

/// A regular file of at most `max` bytes of UTF-8 text (never a FIFO or device, which could block
/// or never end).
pub(crate) fn read_text(path: &Path, max: u64) -> Result<String> {
    use std::io::Read as _;
    let cannot = || format!("cannot read {}", path.display());
    let meta = std::fs::metadata(path).with_context(cannot)?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .with_context(cannot)?
        .take(max + 1)
        .read_to_string(&mut text)
        .with_context(cannot)?;
    if text.len() as u64 > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(text)
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = read_text(path, MAX_JSON_BYTES)?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// Reads the cases below `dir`, not following symbolic links (a link loop would never end),
/// at most [`MAX_DEPTH`] folders deep; the same id twice is an error naming both folders.
pub(crate) fn walk(
    dir: &Path,
    baseline: &str,
    depth: usize,
    out: &mut BTreeMap<String, Case>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("{}: folders nested deeper than {MAX_DEPTH}", dir.display());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let bench = path.join(baseline).join("benchmark.json");
        if bench.is_file() {
            let b = read_json(&bench)?;
            let e = read_json(&path.join(baseline).join("estimates.json"))?;
            let id = b["full_id"]
                .as_str()
                .with_context(|| format!("{}: no full_id", bench.display()))?
                .to_string();
            let mean_ns = e["mean"]["point_estimate"]
                .as_f64()
                .with_context(|| format!("{}: no mean", path.display()))?;
            if !(mean_ns.is_finite() && mean_ns > 0.0) {
                bail!(
                    "{}: mean time {mean_ns} ns is not a positive number",
                    path.display()
                );
            }
            let t = &b["throughput"];
            let bytes = t["BytesDecimal"].as_u64().or_else(|| t["Bytes"].as_u64());
            if let Some(first) = out.get(&id) {
                bail!(
                    "benchmark id `{id}` appears twice: in {} and in {}",
                    first.dir.display(),
                    path.display()
                );
            }
            let case = Case {
                dir: path.clone(),
                mean_ns,
                bytes,
                paired: None,
            };
            out.insert(id, case);
        } else if path.file_name().is_some_and(|n| n != "report") {
            walk(&path, baseline, depth + 1, out)?;
        }
    }
    Ok(())
}

fn label(dir: &Path) -> String {
    let name = dir.display().to_string();
    let Ok(m) = read_json(&dir.join("machine.json")) else {
        return name;
    };
    let gpu = m["gpus"][0]["info"]["name"].as_str().map(str::to_string);
    let cpu = m["cpu"]["model"].as_str().unwrap_or("?").to_string();
    format!("{name} ({})", gpu.unwrap_or(cpu))
}

pub(crate) fn load(dir: &Path, baseline: &str) -> Result<Machine> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mut cases = BTreeMap::new();
    walk(dir, baseline, 0, &mut cases)?;
    add_paired(dir, &mut cases);
    if cases.is_empty() {
        bail!(
            "{}: no Criterion results for baseline `{baseline}` (looked for */{baseline}/benchmark.json)",
            dir.display()
        );
    }
    Ok(Machine {
        label: label(dir),
        cases,
    })
}

/// Adds the paired fractions the benches recorded in `machine-<suite>.json` (`cases[]`) to the
/// cases of the latest run; files that are missing or unreadable add nothing.
pub(crate) fn add_paired(dir: &Path, cases: &mut BTreeMap<String, Case>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("machine-") && name.ends_with(".json")) {
            continue;
        }
        let Ok(m) = read_json(&e.path()) else {
            continue;
        };
        for c in m["cases"].as_array().into_iter().flatten() {
            let (Some(id), Some(f)) = (c["id"].as_str(), c["fraction_of_paired_read"].as_f64())
            else {
                continue;
            };
            if let Some(case) = cases.get_mut(id)
                && f.is_finite()
                && f > 0.0
            {
                case.paired = Some(f);
            }
        }
    }
}

/// The backend of an id `{suite}/{case}/{backend}`.
fn backend(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// Runs `membound compare`.
pub fn run(a: &Args) -> Result<()> {
    let machines: Vec<Machine> = a
        .dirs
        .iter()
        .map(|d| load(d, &a.baseline))
        .collect::<Result<_>>()?;
    let mut ids: Vec<&String> = machines.iter().flat_map(|m| m.cases.keys()).collect();
    ids.sort();
    ids.dedup();
    let filter = a
        .filter
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--filter is not a valid regular expression")?;
    ids.retain(|id| {
        filter.as_ref().is_none_or(|f| f.is_match(id))
            && a.suite
                .as_ref()
                .is_none_or(|s| id.split('/').next() == Some(s.as_str()))
    });
    let read_bw = |m: &Machine, id: &str| {
        m.cases
            .get(&format!("bandwidth/read/{}", backend(id)))
            .and_then(Case::gbs)
    };
    if a.json {
        let rows: Vec<Value> = ids
            .iter()
            .map(|id| {
                let per: Vec<Value> = machines
                    .iter()
                    .map(|m| match m.cases.get(*id) {
                        Some(c) => json!({"machine": m.label, "mean_ns": c.mean_ns, "gb_per_s": c.gbs(), "fraction_of_read": c.gbs().zip(read_bw(m, id)).map(|(g, r)| g / r), "fraction_of_paired_read": c.paired}),
                        None => json!({"machine": m.label, "missing": true}),
                    })
                    .collect();
                json!({"id": id, "machines": per})
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    // CSV is data only: its header names the machines by number, in the order given.
    if a.format != "csv" {
        for (i, m) in machines.iter().enumerate() {
            outln!("[{}] {}", i + 1, clean(&m.label));
        }
        outln!();
    }
    let mut header = vec!["id".to_string()];
    for i in 1..=machines.len() {
        header.push(format!("[{i}] time"));
        header.push(format!("[{i}] GB/s"));
        header.push(format!("[{i}] of read"));
        header.push(format!("[{i}] paired"));
        if i > 1 {
            header.push(format!("[{i}]/[1]"));
        }
    }
    let first = &machines[0];
    let rows: Vec<Vec<String>> = ids
        .iter()
        .map(|id| {
            let mut row = vec![id.to_string()];
            for (i, m) in machines.iter().enumerate() {
                let c = m.cases.get(*id);
                row.push(c.map_or("-".into(), |c| fmt_time(c.mean_ns)));
                row.push(
                    c.and_then(Case::gbs)
                        .map_or("-".into(), |g| format!("{g:.1}")),
                );
                row.push(
                    c.and_then(Case::gbs)
                        .zip(read_bw(m, id))
                        .map_or("-".into(), |(g, r)| format!("{:.0} %", 100.0 * g / r)),
                );
                row.push(
                    c.and_then(|c| c.paired)
                        .map_or("-".into(), |f| format!("{:.0} %", 100.0 * f)),
                );
                if i > 0 {
                    let ratio = c
                        .zip(first.cases.get(*id))
                        .map(|(c, f)| c.mean_ns / f.mean_ns);
                    row.push(ratio.map_or("-".into(), |r| format!("{r:.2}x")));
                }
            }
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    match a.format.as_str() {
        "markdown" => outln!("{}", markdown(&header, &rows)),
        "csv" => outln!("{}", csv(&header, &rows)),
        _ => outln!("{}", table(&header, &rows)),
    }
    Ok(())
}

/// A Markdown table (`|` in cells escaped).
fn markdown(header: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| clean(s).replace('|', "\\|");
    let mut out = format!(
        "| {} |\n|{}|\n",
        header
            .iter()
            .map(|h| cell(h))
            .collect::<Vec<_>>()
            .join(" | "),
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for r in rows {
        out.push_str(&format!(
            "| {} |\n",
            r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
        ));
    }
    out.trim_end().to_string()
}

/// CSV (RFC 4180 quoting where a cell holds a comma, quote or line break).
fn csv(header: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    std::iter::once(header.iter().map(|h| cell(h)).collect::<Vec<_>>().join(","))
        .chain(
            rows.iter()
                .map(|r| r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(",")),
        )
        .collect::<Vec<_>>()
        .join("\n")
}

fn fmt_time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
