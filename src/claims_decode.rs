//! The decode suite's claims: verdicts from `decode-table.json`, one per results folder and
//! backend (a GPU machine's folder holds CPU rows too), taken from the rows' ids
//! `decode/{model}-{recipe}-d{depth}{placement}/{backend}`.

use anyhow::{Context, Result};
use membound_spec::hardware;
use membound_spec::recipe::Recipe;
use serde_json::Value;

use crate::cmd_claims::{Claim, Results, Test, Verdict, confirmed, label, verdict};

/// One row of a decode table with its id taken apart.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry<'a> {
    /// The recipe part of the id, lower case (`q4_k_m`).
    pub recipe: String,
    /// Tokens cached before the step.
    pub depth: u64,
    /// What follows the depth: `""`, `-sampled`, `-split16`, `-split16-one-gpu`, `-cpu4`.
    pub placement: String,
    /// The backend (`cpu`, `gpu0`).
    pub backend: String,
    /// The row.
    pub row: &'a Value,
}

impl Entry<'_> {
    fn num(&self, key: &str) -> Option<f64> {
        self.row[key].as_f64().filter(|x| x.is_finite() && *x > 0.0)
    }

    fn tps(&self) -> Option<f64> {
        self.num("tokens_per_s")
    }

    /// The whole model on one device (sampled estimates count as whole).
    fn whole(&self) -> bool {
        self.placement.is_empty() || self.placement == "-sampled"
    }

    fn id(&self) -> &str {
        self.row["id"].as_str().unwrap_or("?")
    }
}

/// Takes `decode/{model}-{recipe}-d{depth}{placement}/{backend}` apart into (recipe, depth,
/// placement, backend); `None` for another model's row (`qwen3-30b-a3b` does not take
/// `qwen3-coder-30b-a3b`'s rows) or a recipe membound does not know.
pub(crate) fn parse_id(id: &str, model: &str) -> Option<(String, u64, String, String)> {
    let (case, backend) = id.strip_prefix("decode/")?.rsplit_once('/')?;
    let rest = case.strip_prefix(model)?.strip_prefix('-')?;
    // The first `-d<digits>` ends the recipe (no recipe name holds one).
    let (at, digits) = rest.match_indices("-d").find_map(|(i, _)| {
        let tail = &rest[i + 2..];
        let n = tail.bytes().take_while(u8::is_ascii_digit).count();
        let next = tail.as_bytes().get(n);
        (n > 0 && matches!(next, None | Some(b'-'))).then_some((i, n))
    })?;
    let depth = rest[at + 2..at + 2 + digits].parse().ok()?;
    let recipe = &rest[..at];
    if !Recipe::all().any(|r| r.name().eq_ignore_ascii_case(recipe)) {
        return None;
    }
    Some((
        rest[..at].to_owned(),
        depth,
        rest[at + 2 + digits..].to_owned(),
        backend.to_owned(),
    ))
}

/// The rows of `model` in a decode table, in the table's order.
pub(crate) fn entries<'a>(table: &'a Value, model: &str) -> Vec<Entry<'a>> {
    table["decode"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| {
            let (recipe, depth, placement, backend) = parse_id(row["id"].as_str()?, model)?;
            Some(Entry {
                recipe,
                depth,
                placement,
                backend,
                row,
            })
        })
        .collect()
}

/// The backends of `es`, in order of first appearance.
fn backends(es: &[Entry]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for e in es {
        if !v.contains(&e.backend) {
            v.push(e.backend.clone());
        }
    }
    v
}

/// The verdicts of one decode claim (`decode_fraction`, `decode_depth`, `decode_offload`,
/// `decode_split`) over the results folders.
pub(crate) fn judge_decode(c: &Claim, results: &[Results], out: &mut Vec<Verdict>) -> Result<()> {
    let need = |what: &str| format!("claim {}: {:?} needs `{what}`", c.id, c.test);
    let model = c.model.clone().with_context(|| need("model"))?;
    let fig = c.figure.with_context(|| need("figure"))?;
    let tol = c.tolerance.unwrap_or(0.05);
    let quant = c.quant.as_deref().map(str::to_lowercase);
    let recipe_ok = |e: &Entry| quant.as_ref().is_none_or(|q| &e.recipe == q);
    let before = out.len();
    for r in results {
        let Some(table) = r.derived("decode-table.json")? else {
            continue;
        };
        let all: Vec<Entry> = entries(&table, &model)
            .into_iter()
            .filter(|e| recipe_ok(e))
            .collect();
        for backend in backends(&all) {
            let es: Vec<&Entry> = all.iter().filter(|e| e.backend == backend).collect();
            let machine = format!("{} ({backend})", label(r));
            let whole_at = |depth: u64, recipe: Option<&str>| {
                es.iter().copied().find(|e| {
                    e.whole()
                        && e.depth == depth
                        && e.tps().is_some()
                        && recipe.is_none_or(|x| e.recipe == x)
                })
            };
            match c.test {
                Test::DecodeFraction => {
                    let Some((e, f)) = es
                        .iter()
                        .filter(|e| e.whole() && e.depth == 0)
                        .find_map(|e| Some((e, e.num("fraction_of_roofline")?)))
                    else {
                        continue;
                    };
                    out.push(verdict(
                        c,
                        &machine,
                        confirmed((f - fig).abs() <= tol),
                        Some(f),
                        format!(
                            "{}: {:.1} % of the paired read ÷ bytes per token (claim {fig} ± {tol})",
                            e.id(),
                            100.0 * f
                        ),
                    ));
                }
                Test::DecodeDepth => {
                    // The first whole step at depth 0 whose recipe also has one at 4096.
                    let Some((a, b)) = es
                        .iter()
                        .filter(|e| e.whole() && e.depth == 0 && e.tps().is_some())
                        .find_map(|a| Some((*a, whole_at(4096, Some(&a.recipe))?)))
                    else {
                        continue;
                    };
                    let (ta, tb) = (a.tps().unwrap_or(f64::NAN), b.tps().unwrap_or(f64::NAN));
                    let slow = 1.0 - tb / ta;
                    out.push(verdict(
                        c,
                        &machine,
                        confirmed((slow - fig).abs() <= tol),
                        Some(slow),
                        format!(
                            "{} {ta:.2} t/s at depth 0, {tb:.2} at 4096: {:.1} % slower (claim {fig} ± {tol})",
                            a.recipe,
                            100.0 * slow
                        ),
                    ));
                }
                Test::DecodeOffload => {
                    let cpu = format!("-cpu{}", c.layers.unwrap_or(4));
                    for off in es.iter().filter(|e| e.placement == cpu) {
                        let (Some(t_off), Some(whole)) =
                            (off.tps(), whole_at(off.depth, Some(&off.recipe)))
                        else {
                            continue;
                        };
                        let t_whole = whole.tps().unwrap_or(f64::NAN);
                        let ratio = t_whole / t_off;
                        out.push(verdict(
                            c,
                            &machine,
                            confirmed((ratio - fig).abs() <= tol),
                            Some(ratio),
                            format!(
                                "{} at depth {}: {t_whole:.2} t/s on the GPU, {t_off:.2} with {} layers on the CPU: {ratio:.2}x slower (claim {fig} ± {tol})",
                                off.recipe,
                                off.depth,
                                &cpu[4..]
                            ),
                        ));
                    }
                }
                Test::DecodeSplit => {
                    for s in es.iter().filter(|e| e.placement.starts_with("-split")) {
                        if let Some(v) = split_verdict(c, r, s, fig, tol) {
                            out.push(verdict(c, &machine, v.0, Some(v.1), v.2));
                        }
                    }
                }
                _ => unreachable!("judge_decode takes the decode tests only"),
            }
        }
    }
    if out.len() == before {
        let how = match c.test {
            Test::DecodeOffload | Test::DecodeSplit => format!(
                "no results folder holds decode-table.json placement rows of {model} (cargo bench --bench decode on a GPU machine: the `-split` and `-cpu` cases)"
            ),
            _ => format!(
                "no results folder holds decode-table.json rows of {model} (cargo bench --bench decode)"
            ),
        };
        out.push(verdict(c, "all", "not measured", None, how));
    }
    Ok(())
}

/// A split row judged against a two-GPU claim: on the claim's own GPUs, by its t/s (within
/// `tol` of `fig`, relative); elsewhere, a prediction: the step's fraction of its own roofline
/// here times the roofline of the claim's GPUs at their spec-sheet bandwidth, the layers split
/// in proportion to their memory (llama.cpp's default split).
fn split_verdict(
    c: &Claim,
    r: &Results,
    s: &Entry,
    fig: f64,
    tol: f64,
) -> Option<(&'static str, f64, String)> {
    let tps = s.tps()?;
    let want = c.devices.clone().unwrap_or_default();
    let here: Vec<String> = r.facts["gpus"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| hardware::device_for_name(g["info"]["name"].as_str()?).map(|d| d.id))
        .collect();
    let own = !s.placement.ends_with("-one-gpu") && want.iter().all(|w| here.contains(w));
    if own {
        return Some((
            confirmed(((tps - fig) / fig).abs() <= tol),
            tps,
            format!(
                "{}: {tps:.2} t/s on {} (claim {fig} ± {:.0} %)",
                s.id(),
                here.join(" + "),
                100.0 * tol
            ),
        ));
    }
    let frac = s.num("fraction_of_roofline")?;
    let bytes = s.num("weight_bytes")? + s.row["kv_bytes"].as_f64().unwrap_or(0.0);
    let devs: Vec<hardware::Device> = want
        .iter()
        .filter_map(|w| hardware::device(w).ok())
        .collect();
    if devs.is_empty() || devs.len() != want.len() {
        return None;
    }
    let mem: f64 = devs.iter().map(|d| d.memory_bytes as f64).sum();
    // Seconds per token at spec bandwidth: each GPU reads its share of the bytes, in turn.
    let secs: f64 = devs
        .iter()
        .map(|d| {
            bytes * (d.memory_bytes as f64 / mem) / (d.bandwidth_gbs.unwrap_or(f64::NAN) * 1e9)
        })
        .sum();
    let roofline = 1.0 / secs;
    let predicted = frac * roofline;
    Some((
        "prediction",
        predicted,
        format!(
            "{}: {tps:.2} t/s here, {:.1} % of its roofline; {} at spec bandwidth, split by memory, read {:.2} GB per token at {roofline:.1} t/s, x {:.1} % = {predicted:.1} t/s (claim {fig})",
            s.id(),
            100.0 * frac,
            want.join(" + "),
            bytes / 1e9,
            100.0 * frac
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_apart_by_model() {
        let p = |id, m| parse_id(id, m);
        assert_eq!(
            p(
                "decode/qwen3-30b-a3b-q8_0-d0-split24-one-gpu/gpu0",
                "qwen3-30b-a3b"
            ),
            Some(("q8_0".into(), 0, "-split24-one-gpu".into(), "gpu0".into()))
        );
        assert_eq!(
            p(
                "decode/llama-3.2-3b-q4_k_m-d4096-sampled/cpu",
                "llama-3.2-3b"
            ),
            Some(("q4_k_m".into(), 4096, "-sampled".into(), "cpu".into()))
        );
        assert_eq!(
            p(
                "decode/glm-4.7-flash-q8_0-d114688-cpu4/gpu0",
                "glm-4.7-flash"
            ),
            Some(("q8_0".into(), 114688, "-cpu4".into(), "gpu0".into()))
        );
        // Another model whose name begins the same, and rows that are not decode rows.
        assert_eq!(
            p("decode/qwen3-coder-30b-a3b-q8_0-d0/cpu", "qwen3-30b-a3b"),
            None
        );
        assert_eq!(p("decode/qwen3-30b-a3b-q8_0-d0/cpu", "qwen3"), None);
        assert_eq!(p("moe/qwen3-30b-a3b-q8_0/cpu", "qwen3-30b-a3b"), None);
        assert_eq!(p("decode/llama-3.1-8b-q4_k_m-dx/cpu", "llama-3.1-8b"), None);
    }
}
