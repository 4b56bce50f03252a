//! `membound claims [DIR...]`: each claim of `models/claims.toml` with a verdict per results
//! folder — confirmed or refuted with the measured figure, a prediction from the machines that
//! do have results where none has the hardware, or not measured here (and why).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use membound_spec::kv::{KvLayout, kv_cache};
use membound_spec::{DType, hardware, registry};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cmd_compare::{Case, read_json, read_text, walk};
use crate::units::{clean, table};

/// The claims shipped with membound.
pub(crate) const CLAIMS: &str = include_str!("../models/claims.toml");

/// Arguments of `membound claims`.
#[derive(clap::Args)]
pub struct Args {
    /// Results folders (Criterion output with machine.json); default: every folder of
    /// `results/`.
    pub dirs: Vec<PathBuf>,
    /// A claims file instead of the shipped `models/claims.toml`.
    #[arg(long)]
    pub claims: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Deserialize)]
struct ClaimsFile {
    claim: Vec<Claim>,
}

/// One claim of the seed report and the measurement that tests it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub(crate) id: String,
    statement: String,
    source: String,
    #[serde(default)]
    pub(crate) figure: Option<f64>,
    #[serde(default)]
    unit: Option<String>,
    pub(crate) test: Test,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    layout: Option<String>,
    #[serde(default)]
    versus: Option<String>,
    #[serde(default)]
    kv_type: Option<String>,
    #[serde(default)]
    ctx: Option<u64>,
    #[serde(default)]
    pub(crate) tolerance: Option<f64>,
    /// The recipe of the rows a decode claim takes (`Q8_0`); any where absent.
    #[serde(default)]
    pub(crate) quant: Option<String>,
    /// Layers a `decode_offload` claim keeps on the CPU (default 4).
    #[serde(default)]
    pub(crate) layers: Option<u32>,
    /// The GPUs of a `decode_split` claim (`hardware` ids: `4090`, `5070ti`).
    #[serde(default)]
    pub(crate) devices: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Test {
    ReadBandwidth,
    MoeActive,
    KvRatio,
    DecodeFraction,
    DecodeDepth,
    DecodeOffload,
    DecodeSplit,
}

/// A verdict on one claim for one machine (or for all: accounting, predictions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The claim.
    pub claim: String,
    /// The results folder, `accounting` or `prediction`.
    pub machine: String,
    /// `confirmed`, `refuted`, `prediction`, `inconclusive` or `not measured`.
    pub verdict: String,
    /// The measured (or predicted) figure.
    pub figure: Option<f64>,
    /// How it was reached.
    pub detail: String,
}

pub(crate) fn verdict(
    claim: &Claim,
    machine: &str,
    v: &str,
    figure: Option<f64>,
    detail: String,
) -> Verdict {
    Verdict {
        claim: claim.id.clone(),
        machine: machine.to_owned(),
        verdict: v.to_owned(),
        figure,
        detail,
    }
}

/// Parses a claims file.
pub fn parse_claims(text: &str) -> Result<Vec<Claim>> {
    let f: ClaimsFile =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("claims: {}", e.message()))?;
    Ok(f.claim)
}

/// A results folder: its Criterion cases and machine.json.
pub(crate) struct Results {
    pub(crate) dir: PathBuf,
    pub(crate) cases: std::collections::BTreeMap<String, Case>,
    pub(crate) facts: serde_json::Value,
}

impl Results {
    /// A suite's derived file of this folder (`moe-verdict.json`, `decode-table.json`, …):
    /// `None` where the folder has none, an error where it is unreadable.
    pub(crate) fn derived(&self, file: &str) -> Result<Option<serde_json::Value>> {
        let path = self.dir.join(file);
        if path.is_file() {
            read_json(&path).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The read bandwidth (GB/s) and spec-sheet bandwidth of each GPU of a results folder, with
/// its table id.
fn gpu_reads(r: &Results) -> Vec<(String, f64, Option<f64>)> {
    let mut v = Vec::new();
    for g in r.facts["gpus"].as_array().into_iter().flatten() {
        let (Some(id), Some(name)) = (g["id"].as_str(), g["info"]["name"].as_str()) else {
            continue;
        };
        let Some(read) = r
            .cases
            .get(&format!("bandwidth/read/{id}"))
            .and_then(|c| c.gbs())
        else {
            continue;
        };
        let dev = hardware::device_for_name(name);
        v.push((
            dev.as_ref().map_or(name.to_owned(), |d| d.id.clone()),
            read,
            dev.and_then(|d| d.bandwidth_gbs),
        ));
    }
    v
}

/// The verdict of a measurement that meets (or misses) its claim.
pub(crate) fn confirmed(ok: bool) -> &'static str {
    if ok { "confirmed" } else { "refuted" }
}

pub(crate) fn label(r: &Results) -> String {
    r.dir.display().to_string()
}

/// Every verdict of `claims` over the results folders.
pub(crate) fn judge(claims: &[Claim], results: &[Results]) -> Result<Vec<Verdict>> {
    let mut out = Vec::new();
    for c in claims {
        match c.test {
            Test::ReadBandwidth => {
                let (Some(dev), Some(fig)) = (&c.device, c.figure) else {
                    bail!("claim {}: read_bandwidth needs `device` and `figure`", c.id);
                };
                let threshold = c.threshold.unwrap_or(0.8);
                let mut fractions = Vec::new();
                let mut found = false;
                for r in results {
                    for (id, read, spec) in gpu_reads(r) {
                        if &id == dev {
                            found = true;
                            let f = read / fig;
                            let v = confirmed(f >= threshold);
                            out.push(verdict(c, &label(r), v, Some(read), format!("read {read:.1} GB/s = {:.1} % of {fig} GB/s (threshold {:.0} %)", 100.0 * f, 100.0 * threshold)));
                        }
                        if let Some(s) = spec {
                            fractions.push((format!("{} ({id})", label(r)), read / s));
                        }
                    }
                }
                if !found {
                    if fractions.is_empty() {
                        out.push(verdict(
                            c,
                            "prediction",
                            "not measured",
                            None,
                            "no results folder has a GPU read with a known spec sheet".into(),
                        ));
                    } else {
                        let mean =
                            fractions.iter().map(|f| f.1).sum::<f64>() / fractions.len() as f64;
                        let from: Vec<String> = fractions
                            .iter()
                            .map(|(m, f)| format!("{m} {:.1} %", 100.0 * f))
                            .collect();
                        out.push(verdict(c, "prediction", "prediction", Some(fig * mean), format!("{fig} GB/s x {:.1} % (the mean fraction of their spec sheet reached by {}); no {dev} measured", 100.0 * mean, from.join(", "))));
                    }
                }
            }
            Test::MoeActive => {
                let mut any = false;
                for r in results {
                    let Some(v) = r.derived("moe-verdict.json")? else {
                        continue;
                    };
                    for b in v["verdicts"].as_array().into_iter().flatten() {
                        any = true;
                        let backend = b["backend"].as_str().unwrap_or("?");
                        let said = b["verdict"].as_str().unwrap_or("not measured");
                        let (va, vt) = (
                            b["fit_active"]["r2"].as_f64(),
                            b["fit_total"]["r2"].as_f64(),
                        );
                        let v = match said {
                            "active" => "confirmed",
                            "total" => "refuted",
                            "inconclusive" => "inconclusive",
                            _ => "not measured",
                        };
                        let r2 = |x: Option<f64>| x.map_or("–".into(), |x| format!("{x:.3}"));
                        out.push(verdict(
                            c,
                            &format!("{} ({backend})", label(r)),
                            v,
                            va,
                            format!(
                                "R² {} against active bytes, {} against total",
                                r2(va),
                                r2(vt)
                            ),
                        ));
                    }
                }
                if !any {
                    out.push(verdict(
                        c,
                        "all",
                        "not measured",
                        None,
                        "no results folder holds moe-verdict.json (cargo bench --bench moe)".into(),
                    ));
                }
            }
            Test::KvRatio => {
                let need = |x: &Option<String>, what: &str| {
                    x.clone()
                        .with_context(|| format!("claim {}: kv_ratio needs `{what}`", c.id))
                };
                let m = registry::find(&need(&c.model, "model")?)?;
                let a: KvLayout = need(&c.layout, "layout")?.parse()?;
                let b: KvLayout = need(&c.versus, "versus")?.parse()?;
                let t: DType = need(&c.kv_type, "kv_type")?
                    .parse()
                    .map_err(|e| anyhow::anyhow!("claim {}: {e}", c.id))?;
                let ctx = c.ctx.context("kv_ratio needs `ctx`")?;
                let (ka, kb) = (
                    kv_cache(&m, a, t, ctx)?.total,
                    kv_cache(&m, b, t, ctx)?.total,
                );
                let ratio = ka as f64 / kb as f64;
                let fig = c.figure.context("kv_ratio needs `figure`")?;
                let tol = c.tolerance.unwrap_or(0.05);
                let v = confirmed((ratio - fig).abs() <= tol);
                let gib = |x: u64| x as f64 / (1u64 << 30) as f64;
                out.push(verdict(
                    c,
                    "accounting",
                    v,
                    Some(ratio),
                    format!(
                        "{a} {:.2} GiB / {b} {:.2} GiB at {ctx} tokens, {t} (claim {fig} ± {tol})",
                        gib(ka),
                        gib(kb)
                    ),
                ));
            }
            Test::DecodeFraction | Test::DecodeDepth | Test::DecodeOffload | Test::DecodeSplit => {
                crate::claims_decode::judge_decode(c, results, &mut out)?
            }
        }
    }
    Ok(out)
}

/// The folders of `results/` (those with a machine.json).
pub(crate) fn default_dirs() -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir("results") else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("machine.json").is_file())
        .collect();
    v.sort();
    v
}

/// A results folder: machine.json is required, Criterion cases and derived files are optional
/// (a folder may hold only a suite's verdict), but what is there must be readable.
pub(crate) fn open(dir: &Path) -> Result<Results> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mut cases = std::collections::BTreeMap::new();
    walk(dir, "new", 0, &mut cases)?;
    crate::cmd_compare::add_paired(dir, &mut cases);
    Ok(Results {
        cases,
        facts: read_json(&dir.join("machine.json"))
            .with_context(|| format!("{}: no readable machine.json", dir.display()))?,
        dir: dir.to_owned(),
    })
}

/// Runs `membound claims`.
pub fn run(a: &Args) -> Result<()> {
    let text = match &a.claims {
        Some(p) => read_text(p, 1 << 20)?,
        None => CLAIMS.to_owned(),
    };
    let claims = parse_claims(&text)?;
    let dirs = if a.dirs.is_empty() {
        default_dirs()
    } else {
        a.dirs.clone()
    };
    let results: Vec<Results> = dirs.iter().map(|d| open(d)).collect::<Result<_>>()?;
    let verdicts = judge(&claims, &results)?;
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"claims": claims, "verdicts": verdicts}))?
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = verdicts
        .iter()
        .map(|v| {
            vec![
                v.claim.clone(),
                clean(&v.machine).into_owned(),
                v.verdict.clone(),
                v.figure.map_or("–".into(), |f| format!("{f:.3}")),
                clean(&v.detail).into_owned(),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(&["claim", "machine", "verdict", "figure", "how"], &rows)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_claims_parse_and_name_their_tests() {
        let claims = parse_claims(CLAIMS).unwrap();
        assert!(claims.len() >= 7);
        assert!(
            claims
                .iter()
                .any(|c| c.test == Test::ReadBandwidth && c.device.as_deref() == Some("gb10"))
        );
        assert!(parse_claims("[[claim]]\nid = 1").is_err());
    }

    /// Hand-checked: GLM-4.7-Flash at 112k with a q8_0 cache, 47 MLA layers: 576 vs 1088
    /// values per token per layer, so the ratio is 576 / 1088 = 0.529 (the seed's 3.1 / 5.9).
    #[test]
    fn mla_half_kv_is_confirmed_by_accounting() {
        let claims = parse_claims(CLAIMS).unwrap();
        let mla: Vec<Claim> = claims
            .into_iter()
            .filter(|c| c.id == "mla-half-kv")
            .collect();
        let v = judge(&mla, &[]).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].verdict, "confirmed");
        assert!(
            (v[0].figure.unwrap() - 576.0 / 1088.0).abs() < 1e-9,
            "{v:?}"
        );
    }
}
