//! `membound report [DIR...] -o report/`: the results folders as one Markdown report with SVG
//! figures (plotters) — read bandwidth against working-set size with the cache cliffs, GEMV
//! GB/s per quant type against the paired read, MoE time against active and total bytes with
//! the fitted lines, attention time against depth per KV layout, decode t/s against depth
//! beside the roofline — and the claims table. Every figure names its folder, machine, commit
//! and scale; a folder without a suite's data has no figure for it (the report says so).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use serde_json::Value;

use crate::cmd_claims::{CLAIMS, Results, default_dirs, judge, open, parse_claims};

/// Arguments of `membound report`.
#[derive(clap::Args)]
pub struct Args {
    /// Results folders (Criterion output with machine.json); default: every folder of
    /// `results/`.
    pub dirs: Vec<PathBuf>,
    /// The folder to write `report.md` and the figures into (created; files replaced).
    #[arg(short, long, default_value = "report")]
    pub out: PathBuf,
}

/// How a series is drawn.
#[derive(Clone, Copy, PartialEq)]
enum Style {
    /// Measured points joined by a line.
    Joined,
    /// Measured points alone.
    Points,
    /// A derived line (a fit) without markers.
    Line,
    /// A reference (the roofline) as a dashed line.
    Dashed,
}

/// A line or a set of points of one figure.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    style: Style,
    /// Palette index: a reference shares its measurement's color.
    color: usize,
}

/// One figure: title, axes, log scales, series.
struct Figure {
    file: String,
    title: String,
    x: String,
    y: String,
    log_x: bool,
    log_y: bool,
    series: Vec<Series>,
    legend: SeriesLabelPosition,
}

/// The range of `v` padded for a log or linear axis.
fn range(v: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let v: Vec<f64> = v.filter(|x| x.is_finite() && (!log || *x > 0.0)).collect();
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    if v.is_empty() {
        return None;
    }
    // Room above the data for the legend on linear axes.
    Some(if log {
        (lo / 1.5, hi * 1.5)
    } else {
        let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.05).max(1e-9);
        ((lo - pad).min(0.0), hi + 4.0 * pad)
    })
}

/// Draws `f` into `dir/f.file` as SVG.
fn draw(f: &Figure, dir: &Path) -> Result<()> {
    let path = dir.join(&f.file);
    let all = || f.series.iter().flat_map(|s| s.points.iter());
    let (Some((x0, x1)), Some((y0, y1))) = (
        range(all().map(|p| p.0), f.log_x),
        range(all().map(|p| p.1), f.log_y),
    ) else {
        bail!("figure {} has no points", f.file);
    };
    let root = SVGBackend::new(&path, (1000, 620)).into_drawing_area();
    let fail = |e: String| anyhow::anyhow!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut b = ChartBuilder::on(&root);
    b.caption(&f.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart.map_err(|e| fail(e.to_string()))?;
            chart
                .configure_mesh()
                .x_desc(f.x.as_str())
                .y_desc(f.y.as_str())
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .draw()
                .map_err(|e| fail(e.to_string()))?;
            for s in &f.series {
                let color = Palette99::pick(s.color).to_rgba();
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| (!f.log_x || *x > 0.0) && (!f.log_y || *y > 0.0))
                    .collect();
                let legend = move |(x, y): (i32, i32)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                };
                let drawn = match s.style {
                    Style::Joined | Style::Line => chart
                        .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                        .map_err(|e| fail(e.to_string()))?,
                    Style::Dashed => chart
                        .draw_series(DashedLineSeries::new(
                            pts.clone(),
                            8,
                            5,
                            color.stroke_width(2),
                        ))
                        .map_err(|e| fail(e.to_string()))?,
                    Style::Points => chart
                        .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                        .map_err(|e| fail(e.to_string()))?,
                };
                // A reference line shares its measurement's colour and entry.
                if s.style != Style::Dashed {
                    drawn.label(s.name.as_str()).legend(legend);
                }
                if s.style == Style::Joined {
                    chart
                        .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                        .map_err(|e| fail(e.to_string()))?;
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(f.legend.clone())
                .draw()
                .map_err(|e| fail(e.to_string()))?;
        }};
    }
    match (f.log_x, f.log_y) {
        (true, true) => body!(b.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())),
        (true, false) => body!(b.build_cartesian_2d((x0..x1).log_scale(), y0..y1)),
        (false, true) => body!(b.build_cartesian_2d(x0..x1, (y0..y1).log_scale())),
        (false, false) => body!(b.build_cartesian_2d(x0..x1, y0..y1)),
    }
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// One joined series per name, points in x order, a colour each.
fn joined(by: BTreeMap<String, Vec<(f64, f64)>>) -> Vec<Series> {
    by.into_iter()
        .enumerate()
        .map(|(i, (name, mut points))| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                name,
                points,
                style: Style::Joined,
                color: i,
            }
        })
        .collect()
}

/// A compact tick label: 1.5k, 20M, 4G, 0.25.
fn tick(v: f64) -> String {
    let a = v.abs();
    let (x, unit) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let t = if x.fract().abs() < 1e-9 || x.abs() >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}").trim_end_matches('0').to_string()
    };
    format!("{t}{unit}")
}

/// Bytes of a size token of an id: `256KiB`, `64MiB`, `4GiB`.
fn size_bytes(tok: &str) -> Option<f64> {
    let (n, unit) = tok.split_at(tok.find(|c: char| !c.is_ascii_digit())?);
    let n: f64 = n.parse().ok()?;
    let k = match unit {
        "KiB" => 1u64 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    Some(n * k as f64)
}

/// `{suite}/{case}/{backend}` split.
fn parts(id: &str) -> Option<(&str, &str, &str)> {
    let mut it = id.splitn(3, '/');
    let (s, rest) = (it.next()?, it.next()?);
    let b = it.next()?;
    Some((s, rest, b))
}

/// The folder's short name, machine and commit: the caption every figure carries.
fn provenance(r: &Results) -> String {
    let f = &r.facts;
    let gpu = f["gpus"][0]["info"]["name"].as_str();
    let cpu = f["cpu"]["model"].as_str().unwrap_or("?");
    let commit = f["commit"].as_str().unwrap_or("?");
    let scale = f["scale"].as_str().unwrap_or("?");
    let name = r.dir.file_name().map_or_else(
        || r.dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    format!(
        "{name}: {}, commit {commit}, scale {scale}",
        gpu.map_or(cpu.to_string(), |g| format!("{g} (host {cpu})"))
    )
}

/// Read bandwidth against working-set size, one series per backend.
fn bandwidth(r: &Results, tag: &str) -> Option<Figure> {
    let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (id, c) in &r.cases {
        let Some(("bandwidth", case, backend)) = parts(id) else {
            continue;
        };
        let Some(rest) = case.strip_prefix("read-") else {
            continue;
        };
        let size = rest.split('-').next().and_then(size_bytes);
        if let (Some(s), Some(g)) = (size, c.gbs()) {
            by.entry(backend.to_string()).or_default().push((s, g));
        }
    }
    (!by.is_empty()).then(|| Figure {
        file: format!("{tag}-bandwidth.svg"),
        title: "read bandwidth against working-set size".into(),
        x: "working set (bytes)".into(),
        y: "GB/s".into(),
        log_x: true,
        log_y: false,
        series: joined(
            by.into_iter()
                .map(|(b, p)| (format!("read {b}"), p))
                .collect(),
        ),
        legend: SeriesLabelPosition::UpperLeft,
    })
}

/// GEMV GB/s per quant type against matrix bytes, with the paired read where recorded.
fn gemv(r: &Results, tag: &str) -> Option<Figure> {
    let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut reads = Vec::new();
    for (id, c) in &r.cases {
        let Some(("dense", case, backend)) = parts(id) else {
            continue;
        };
        let (peer, case) = match case.split_once('-') {
            Some((p @ ("cublas" | "candle"), rest)) => (Some(p), rest),
            _ => (None, case),
        };
        let Some((dtype, shape)) = case.split_once('-') else {
            continue;
        };
        let dtype = peer.map_or(dtype.to_string(), |p| format!("{p} {dtype}"));
        let Some((rows, cols)) = shape.split_once('x') else {
            continue;
        };
        let (Ok(rows), Ok(cols), Some(g)) = (rows.parse::<f64>(), cols.parse::<f64>(), c.gbs())
        else {
            continue;
        };
        if let Some(f) = c.paired() {
            reads.push((rows * cols, g / f));
        }
        by.entry(format!("{dtype} {backend}"))
            .or_default()
            .push((rows * cols, g));
    }
    if by.is_empty() {
        return None;
    }
    let mut series = joined(by);
    if !reads.is_empty() {
        reads.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push(Series {
            name: "paired read".into(),
            points: reads,
            style: Style::Points,
            color: series.len(),
        });
    }
    Some(Figure {
        file: format!("{tag}-gemv.svg"),
        title: "GEMV bandwidth per weight type (paired read: the read around each case)".into(),
        x: "matrix values (rows x cols)".into(),
        y: "GB/s".into(),
        log_x: true,
        log_y: false,
        series,
        legend: SeriesLabelPosition::UpperLeft,
    })
}

/// MoE time per token against active and total bytes, with both fitted lines.
fn moe(r: &Results, tag: &str) -> Result<Vec<Figure>> {
    let Some(v) = r.derived("moe-verdict.json")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for b in v["verdicts"].as_array().into_iter().flatten() {
        let backend = b["backend"].as_str().unwrap_or("?");
        let pts: Vec<&Value> = b["points"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| matches!(p["sweep"].as_str(), Some("top_k" | "experts" | "model")))
            .collect();
        let get = |key: &str| -> Vec<(f64, f64)> {
            pts.iter()
                .filter_map(|p| {
                    let t = p["tokens"].as_f64().unwrap_or(1.0).max(1.0);
                    Some((p[key].as_f64()? / 1e6, p["ns"].as_f64()? / t / 1e3))
                })
                .filter(|p| p.1.is_finite())
                .collect()
        };
        let fitted = |key: &str, fit: &Value| -> Option<Series> {
            let (s, i) = (fit["slope"].as_f64()?, fit["intercept"].as_f64()?);
            let xs = get(key);
            let (lo, hi) = xs
                .iter()
                .fold((f64::INFINITY, 0f64), |(a, b), p| (a.min(p.0), b.max(p.0)));
            (lo.is_finite() && hi > lo).then(|| Series {
                name: format!(
                    "fit on {key} (R² {:.3})",
                    fit["r2"].as_f64().unwrap_or(f64::NAN)
                ),
                // Sampled along the axis so the straight fit reads right on a log axis.
                points: (0..=48)
                    .map(|j| lo * (hi / lo).powf(f64::from(j) / 48.0))
                    .map(|x| (x, (s * x * 1e6 + i) / 1e3))
                    .collect(),
                style: Style::Line,
                color: usize::from(key == "total_bytes"),
            })
        };
        let mut series = vec![
            Series {
                name: "time vs active bytes".into(),
                points: get("active_bytes"),
                style: Style::Points,
                color: 0,
            },
            Series {
                name: "time vs total bytes".into(),
                points: get("total_bytes"),
                style: Style::Points,
                color: 1,
            },
        ];
        series.extend(fitted("active_bytes", &b["fit_active"]));
        series.extend(fitted("total_bytes", &b["fit_total"]));
        if series.iter().all(|s| s.points.is_empty()) {
            continue;
        }
        out.push(Figure {
            file: format!("{tag}-moe-{backend}.svg"),
            title: format!("MoE layer time per token on {backend}: active or total bytes?"),
            x: "MB read per token (active), or held (total), by the layer".into(),
            y: "µs per token".into(),
            log_x: true,
            log_y: false,
            series,
            legend: SeriesLabelPosition::UpperLeft,
        });
    }
    Ok(out)
}

/// Attention time per layer against depth, one series per model, layout and KV type.
fn attention(r: &Results, tag: &str) -> Result<Vec<Figure>> {
    let Some(v) = r.derived("attention-table.json")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for t in v["tables"].as_array().into_iter().flatten() {
        let backend = t["backend"].as_str().unwrap_or("?");
        let mut by: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
        for row in t["rows"].as_array().into_iter().flatten() {
            let (Some(m), Some(l), Some(k), Some(d), Some(ns)) = (
                row["model"].as_str(),
                row["layout"].as_str(),
                row["kv_type"].as_str(),
                row["depth"].as_f64(),
                row["ns"].as_f64(),
            ) else {
                continue;
            };
            by.entry((k.to_string(), format!("{m} {l}")))
                .or_default()
                .push((d, ns / 1e3));
        }
        let kv_types: std::collections::BTreeSet<String> =
            by.keys().map(|(k, _)| k.clone()).collect();
        for kv in kv_types {
            let by: BTreeMap<String, Vec<(f64, f64)>> = by
                .iter()
                .filter(|((k, _), _)| *k == kv)
                .map(|((_, n), p)| (n.clone(), p.clone()))
                .collect();
            out.push(attention_figure(tag, backend, &kv, by));
        }
    }
    Ok(out)
}

/// One attention figure: a backend's layouts at one KV type.
fn attention_figure(
    tag: &str,
    backend: &str,
    kv: &str,
    by: BTreeMap<String, Vec<(f64, f64)>>,
) -> Figure {
    {
        Figure {
            file: format!("{tag}-attention-{backend}-{kv}.svg"),
            title: format!("decode attention per layer against depth on {backend}, {kv} cache"),
            x: "cached tokens".into(),
            y: "µs per layer per token".into(),
            log_x: true,
            log_y: true,
            series: joined(by),
            legend: SeriesLabelPosition::UpperLeft,
        }
    }
}

/// Decode t/s against depth per model, beside each model's roofline at the paired read.
fn decode(r: &Results, tag: &str) -> Result<Option<Figure>> {
    let Some(v) = r.derived("decode-table.json")? else {
        return Ok(None);
    };
    // Per model and backend: measured t/s and the roofline, by depth.
    type Points = Vec<(f64, f64)>;
    let mut by: BTreeMap<String, (Points, Points)> = BTreeMap::new();
    for row in v["decode"].as_array().into_iter().flatten() {
        let (Some(id), Some(d)) = (row["id"].as_str(), row["depth"].as_f64()) else {
            continue;
        };
        let Some((_, case, backend)) = parts(id) else {
            continue;
        };
        if case.ends_with("-sampled") {
            continue;
        }
        let model = case.rsplit_once("-d").map_or(case, |(m, _)| m);
        let e = by.entry(format!("{model} {backend}")).or_default();
        let x = d.max(1.0);
        if let Some(t) = row["tokens_per_s"].as_f64() {
            e.0.push((x, t));
        }
        if let Some(t) = row["roofline_tps"].as_f64() {
            e.1.push((x, t));
        }
    }
    let mut series = Vec::new();
    for (i, (name, (mut t, mut roof))) in by.into_iter().enumerate() {
        t.sort_by(|a, b| a.0.total_cmp(&b.0));
        roof.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !t.is_empty() {
            series.push(Series {
                name: name.clone(),
                points: t,
                style: Style::Joined,
                color: i,
            });
        }
        if !roof.is_empty() {
            series.push(Series {
                name: format!("{name}: roofline"),
                points: roof,
                style: Style::Dashed,
                color: i,
            });
        }
    }
    Ok((!series.is_empty()).then(|| Figure {
        file: format!("{tag}-decode.svg"),
        title: "decode t/s against depth (dashed, same colour: the roofline, paired read ÷ bytes per token)"
            .into(),
        x: "cached tokens (0 drawn at 1)".into(),
        y: "tokens per second".into(),
        log_x: true,
        log_y: true,
        series,
        legend: SeriesLabelPosition::LowerLeft,
    }))
}

/// A folder name safe as a file-name prefix.
fn tag(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "results".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Writes the report of `results` into `out`; returns the figures written.
pub(crate) fn write_report(results: &[Results], out: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut md = String::from(
        "# membound report\n\nEvery figure is measured (no figure here is quoted): each names its results folder, machine, commit and scale. Bytes follow `membound_spec::traffic`; GB/s are decimal.\n",
    );
    let mut written = Vec::new();
    for r in results {
        let t = tag(&r.dir);
        let _ = write!(md, "\n## {}\n\n", provenance(r));
        let mut figs: Vec<Figure> = Vec::new();
        figs.extend(bandwidth(r, &t));
        figs.extend(gemv(r, &t));
        figs.extend(moe(r, &t)?);
        figs.extend(attention(r, &t)?);
        figs.extend(decode(r, &t)?);
        if figs.is_empty() {
            md.push_str("No suite data to plot in this folder.\n");
        }
        for f in &figs {
            draw(f, out)?;
            let _ = write!(md, "### {}\n\n![{}]({})\n\n", f.title, f.title, f.file);
            let _ = writeln!(md, "_{}_\n", provenance(r));
            written.push(f.file.clone());
        }
    }
    let claims = parse_claims(CLAIMS)?;
    let verdicts = judge(&claims, results)?;
    md.push_str("\n## Claims of the seed report\n\n| claim | machine | verdict | figure | how |\n|---|---|---|---|---|\n");
    for v in verdicts {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            v.claim,
            v.machine.replace('|', "/"),
            v.verdict,
            v.figure.map_or("–".into(), |f| format!("{f:.3}")),
            v.detail.replace('|', "/")
        );
    }
    std::fs::write(out.join("report.md"), md)
        .with_context(|| format!("cannot write {}", out.join("report.md").display()))?;
    Ok(written)
}

/// Runs `membound report`.
pub fn run(a: &Args) -> Result<()> {
    let dirs = if a.dirs.is_empty() {
        default_dirs()
    } else {
        a.dirs.clone()
    };
    if dirs.is_empty() {
        bail!("no results folders (give folders, or run where results/ holds some)");
    }
    let results: Vec<Results> = dirs.iter().map(|d| open(d)).collect::<Result<_>>()?;
    let figs = write_report(&results, &a.out)?;
    outln!(
        "{}: report.md and {} figure(s)",
        a.out.display(),
        figs.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_sizes_parse() {
        assert_eq!(size_bytes("256KiB"), Some(262144.0));
        assert_eq!(size_bytes("4GiB"), Some(4294967296.0));
        assert_eq!(size_bytes("llc"), None);
        assert_eq!(
            parts("bandwidth/read-1GiB/gpu0"),
            Some(("bandwidth", "read-1GiB", "gpu0"))
        );
        assert_eq!(
            range([1.0, 10.0].into_iter(), true),
            Some((1.0 / 1.5, 15.0))
        );
        assert_eq!(range(std::iter::empty(), false), None);
    }
}
