//! The attention suite's driver, written once over [`AttnBackend`]: one layer's decode attention
//! for each model in its native KV layout and the alternatives that apply, at each depth and
//! cache type; the paired read; the seed's comparison as a table ([`AttnTable`]): KV bytes and
//! time per token per layer, latent vs split vs expanded, and the depth where attention costs
//! as much as reading the layer's weights.

use membound_cpu::attention::KvCacheBuf;
use membound_quant::data::normal_f32;
use membound_spec::attention::AttnShape;
use membound_spec::bytes::weights;
use membound_spec::kv::KvLayout;
use membound_spec::model::LayerKind;
use membound_spec::{DType, ModelSpec, Recipe};
use serde::Serialize;

use crate::Scale;
use crate::attention::{AttnBackend, check_attention};
use crate::harness::{Kind, Run};
use crate::rotation::{Rotation, copies_for};
use crate::suites::PairedRead;

const GIB: f64 = (1u64 << 30) as f64;

/// The models of the suite.
pub const MODELS: [&str; 5] = [
    "glm-4.7-flash",
    "deepseek-v2-lite",
    "qwen3-30b-a3b",
    "llama-3.1-70b",
    "gpt-oss-120b",
];

/// Depths (tokens) of a scale: 1k, 4k and 32k by default; up to 256k at `full`.
pub fn depths(scale: Scale) -> Vec<usize> {
    let k = |n: usize| n * 1024;
    match scale {
        Scale::Quick => vec![k(1)],
        Scale::Default => vec![k(1), k(4), k(32)],
        Scale::Full => vec![k(1), k(4), k(16), k(32), k(64), k(112), k(202), k(256)],
    }
}

/// `1k`, `112k`, or the token count.
pub fn depth_name(d: usize) -> String {
    if d.is_multiple_of(1024) {
        format!("{}k", d / 1024)
    } else {
        d.to_string()
    }
}

/// One planned case.
#[derive(Clone, Debug)]
pub struct AttnCase {
    /// The case part of the id.
    pub case: String,
    /// The model.
    pub model: String,
    /// `mla-latent`, `gqa-swa`, …
    pub layout: String,
    /// The attention.
    pub shape: AttnShape,
    /// Cached tokens.
    pub depth: usize,
    /// Weight bytes one token reads from one layer of the model (Q8_0 recipe).
    pub layer_weight_bytes: u64,
}

/// The suite's cases at `scale`.
pub fn attention_plan(models: &[ModelSpec], scale: Scale) -> Vec<AttnCase> {
    let dtypes: &[DType] = match scale {
        Scale::Quick => &[DType::F16],
        Scale::Default => &[DType::F16, DType::Q8_0],
        Scale::Full => &[DType::F16, DType::BF16, DType::Q8_0],
    };
    let mut v = Vec::new();
    for m in models.iter().filter(|m| MODELS.contains(&m.name.as_str())) {
        if scale == Scale::Quick && m.name != "glm-4.7-flash" && m.name != "qwen3-30b-a3b" {
            continue;
        }
        let w = weights(m, Recipe::Q8_0);
        let mut kinds = vec![(LayerKind::Full, "")];
        if m.count_layers(LayerKind::Sliding) > 0 {
            kinds.push((LayerKind::Sliding, "-swa"));
        }
        for (kind, suffix) in kinds {
            let Some(layer) = m.layer_kinds().position(|k| k == kind) else {
                continue;
            };
            let layer_weight_bytes = w.layer_active_bytes(layer as u32);
            for &layout in KvLayout::applicable(m) {
                for &dtype in dtypes {
                    let Ok(shape) = AttnShape::from_spec(m, layout, dtype, kind) else {
                        continue;
                    };
                    for &depth in &depths(scale) {
                        let layout_name = format!("{}{suffix}", layout.name());
                        v.push(AttnCase {
                            case: format!(
                                "{}-{layout_name}-{}-d{}",
                                m.name,
                                dtype.name(),
                                depth_name(depth)
                            ),
                            model: m.name.clone(),
                            layout: layout_name,
                            shape: shape.clone(),
                            depth,
                            layer_weight_bytes,
                        });
                    }
                }
            }
        }
    }
    v
}

/// One row of the table: a timed case.
#[derive(Clone, Debug, Serialize)]
pub struct AttnRow {
    /// The id.
    pub id: String,
    /// Model.
    pub model: String,
    /// Layout.
    pub layout: String,
    /// Cache type.
    pub kv_type: String,
    /// Depth (tokens).
    pub depth: usize,
    /// KV bytes the step reads (one layer).
    pub kv_bytes: u64,
    /// Bytes of the step (KV, queries, outputs).
    pub bytes: u64,
    /// Mean time per step (ns); NaN in Criterion's test mode.
    pub ns: f64,
    /// Splits of the context launched.
    pub splits: usize,
    /// The paired read (GB/s).
    pub paired_read_gbs: Option<f64>,
    /// The layer's weight bytes per token (Q8_0).
    pub layer_weight_bytes: u64,
}

/// Where attention catches up with the weights of a layer, per model, layout and cache type.
#[derive(Clone, Debug, Serialize)]
pub struct Crossover {
    /// Model.
    pub model: String,
    /// Layout.
    pub layout: String,
    /// Cache type.
    pub kv_type: String,
    /// Time to read the layer's weights at the paired read bandwidth (ns).
    pub weight_ns: f64,
    /// The depth at which attention time equals it (interpolated between measured depths, or
    /// extrapolated from the last two; `None` when not measured).
    pub depth: Option<f64>,
    /// Whether `depth` lies beyond the deepest measurement.
    pub extrapolated: bool,
    /// Whether two or more depths were timed (`depth` is `None` then because the time does not
    /// grow with depth, as in a sliding-window layer).
    pub measured: bool,
}

/// The suite's table for one backend.
#[derive(Clone, Debug, Serialize)]
pub struct AttnTable {
    /// Backend id.
    pub backend: String,
    /// Every timed case.
    pub rows: Vec<AttnRow>,
    /// Crossover depths.
    pub crossovers: Vec<Crossover>,
}

/// The depth where `t(d)` reaches `target`, from points sorted by depth (linear between
/// neighbours, extrapolated past the last two); `(depth, extrapolated)`.
pub fn crossover(points: &[(f64, f64)], target: f64) -> Option<(f64, bool)> {
    let pts: Vec<&(f64, f64)> = points.iter().filter(|p| p.1.is_finite()).collect();
    if pts.len() < 2 {
        return None;
    }
    if pts[0].1 >= target {
        return Some((pts[0].0, false));
    }
    for w in pts.windows(2) {
        let ((d0, t0), (d1, t1)) = (*w[0], *w[1]);
        if t1 >= target && t1 > t0 {
            return Some((d0 + (target - t0) / (t1 - t0) * (d1 - d0), false));
        }
    }
    let ((d0, t0), (d1, t1)) = (*pts[pts.len() - 2], *pts[pts.len() - 1]);
    (t1 > t0).then(|| (d1 + (target - t1) / (t1 - t0) * (d1 - d0), true))
}

impl AttnTable {
    fn build(backend: &str, rows: Vec<AttnRow>) -> AttnTable {
        let mut crossovers = Vec::new();
        let mut keys: Vec<(String, String, String)> = rows
            .iter()
            .map(|r| (r.model.clone(), r.layout.clone(), r.kv_type.clone()))
            .collect();
        keys.dedup();
        for (model, layout, kv_type) in keys {
            let sel: Vec<&AttnRow> = rows
                .iter()
                .filter(|r| r.model == model && r.layout == layout && r.kv_type == kv_type)
                .collect();
            let Some(read) = sel.iter().find_map(|r| r.paired_read_gbs) else {
                continue;
            };
            let weight_ns = sel[0].layer_weight_bytes as f64 / read;
            let pts: Vec<(f64, f64)> = sel.iter().map(|r| (r.depth as f64, r.ns)).collect();
            let c = crossover(&pts, weight_ns);
            crossovers.push(Crossover {
                model,
                layout,
                kv_type,
                weight_ns,
                depth: c.map(|c| c.0),
                extrapolated: c.is_some_and(|c| c.1),
                measured: pts.iter().filter(|p| p.1.is_finite()).count() >= 2,
            });
        }
        AttnTable {
            backend: backend.to_owned(),
            rows,
            crossovers,
        }
    }

    /// The table as Markdown: per model and depth, each layout's KV bytes, µs per token per
    /// layer and its time relative to the native layout; then the crossover depths.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "\n### attention on {}: one layer, one token\n\n| model | layout | kv | depth | KV MiB | µs | GB/s | vs native | splits |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n",
            self.backend
        );
        for r in &self.rows {
            let native = self.rows.iter().find(|n| {
                n.model == r.model
                    && n.kv_type == r.kv_type
                    && n.depth == r.depth
                    && (n.layout == "mla-latent" || n.layout == "gqa")
            });
            let ratio = native
                .filter(|n| n.ns > 0.0)
                .map_or("–".into(), |n| format!("{:.2}x", r.ns / n.ns));
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {ratio} | {} |\n",
                r.model,
                r.layout,
                r.kv_type,
                depth_name(r.depth),
                r.kv_bytes as f64 / (1u64 << 20) as f64,
                r.ns / 1e3,
                r.bytes as f64 / r.ns,
                r.splits
            ));
        }
        s.push_str("\nattention time = the layer's Q8_0 weight-read time at the paired read:\n");
        for c in &self.crossovers {
            let none = if c.measured {
                "never: the time does not grow with depth"
            } else {
                "not measured"
            };
            let d = c.depth.map_or(none.into(), |d| {
                format!(
                    "{:.0}k tokens{}",
                    d / 1024.0,
                    if c.extrapolated {
                        " (extrapolated)"
                    } else {
                        ""
                    }
                )
            });
            s.push_str(&format!(
                "- {} {} {}: weights {:.1} µs, at {d}\n",
                c.model,
                c.layout,
                c.kv_type,
                c.weight_ns / 1e3
            ));
        }
        s
    }
}

/// The attention suite on one backend; returns its table.
pub fn attention<B: AttnBackend>(run: &mut Run, b: &B, models: &[ModelSpec]) -> AttnTable {
    let plan = attention_plan(models, run.scale);
    attention_cases(run, b, &plan)
}

/// The given cases on one backend (tests use small shapes). A read is sampled around each
/// model's cases.
pub fn attention_cases<B: AttnBackend>(run: &mut Run, b: &B, plan: &[AttnCase]) -> AttnTable {
    let mut paired = PairedRead::new(run, b);
    let mut rows = Vec::new();
    let mut i = 0;
    while i < plan.len() {
        let model = &plan[i].model;
        let end = plan[i..]
            .iter()
            .position(|c| &c.model != model)
            .map_or(plan.len(), |n| i + n);
        let from = run.results.len();
        let before = paired.sample(b);
        let mut timed = Vec::new();
        for c in &plan[i..end] {
            timed.extend(attention_case(run, b, c));
        }
        if run.results.len() > from {
            let after = paired.sample(b);
            let samples: Vec<f64> = before.into_iter().chain(after).collect();
            run.pair(from, b.id(), &samples);
            let read = run.results[from].paired_read_gbs;
            rows.extend(timed.into_iter().map(|mut r: AttnRow| {
                r.paired_read_gbs = read;
                r
            }));
        }
        i = end;
    }
    AttnTable::build(b.id(), rows)
}

fn attention_case<B: AttnBackend>(run: &mut Run, b: &B, c: &AttnCase) -> Option<AttnRow> {
    let s = &c.shape;
    if !run.wanted(&c.case, b.id()) {
        return None;
    }
    if !b.attn_dtypes().contains(&s.dtype) {
        run.skip(&c.case, b.id(), format!("no {} cache kernel here", s.dtype));
        return None;
    }
    let kv_bytes = s.kv_bytes(c.depth);
    // A sliding layer keeps only its window (llama.cpp's ring of cells): its cache holds the
    // attended tokens, and the step attends to all of them.
    let held = s.attended(c.depth);
    let copies = copies_for(kv_bytes, b.llc_bytes());
    let alloc = copies as f64 * s.cache_bytes(held) as f64;
    if alloc > b.memory_budget() as f64 {
        run.skip(
            &c.case,
            b.id(),
            format!(
                "needs {copies} cache(s) of {:.2} GiB, the budget is {:.1} GiB",
                s.cache_bytes(held) as f64 / GIB,
                b.memory_budget() as f64 / GIB
            ),
        );
        return None;
    }
    if c.depth >= 64 * 1024 {
        eprintln!(
            "membound: attention/{}/{}: {copies} cache(s) of {:.2} GiB",
            c.case,
            b.id(),
            s.cache_bytes(held) as f64 / GIB
        );
    }
    let q = normal_f32(17, s.n_heads * s.d_k, 1.0);
    let sinks = normal_f32(18, s.n_heads, 1.0);
    let mut steps = Vec::with_capacity(copies);
    let mut first_cache = None;
    for i in 0..copies {
        let made = KvCacheBuf::generate(s, held, 0xa77e ^ i as u64)
            .map_err(|e| e.to_string())
            .and_then(|cache| {
                let a = b.attn(&cache, &q, &sinks, held)?;
                if i == 0 {
                    first_cache = Some(cache);
                }
                Ok(a)
            });
        match made {
            Ok(a) => steps.push(a),
            Err(e) => {
                run.fail(&c.case, b.id(), format!("set-up: {e}"));
                return None;
            }
        }
    }
    let cache = first_cache?;
    let checked = b
        .attn_forward(&mut steps[0])
        .and_then(|_| b.attn_output(&steps[0]))
        .and_then(|out| check_attention(&cache, &q, &sinks, held, &out));
    drop(cache);
    if let Err(e) = checked {
        run.unverified(&c.case, b.id(), e);
        return None;
    }
    let splits = b.attn_splits(&steps[0]);
    let bytes = s.bytes(c.depth);
    let kind = Kind::Attention {
        layout: c.layout.clone(),
        depth: c.depth,
        splits,
    };
    let mut rot = Rotation::new(copies);
    let idx = run.bench(b, &c.case, kind, bytes, || {
        b.attn_forward(&mut steps[rot.next()])
    })?;
    let r = &run.results[idx];
    Some(AttnRow {
        id: r.id.clone(),
        model: c.model.clone(),
        layout: c.layout.clone(),
        kv_type: s.dtype.name().to_owned(),
        depth: c.depth,
        kv_bytes,
        bytes,
        ns: r.mean_ns.unwrap_or(f64::NAN),
        splits,
        paired_read_gbs: None,
        layer_weight_bytes: c.layer_weight_bytes,
    })
}

/// Writes the tables beside Criterion's output (`attention-table.json`) with the machine.
pub fn write_tables(tables: &[AttnTable], machine: serde_json::Value) {
    crate::machine::write_extra(
        "attention-table.json",
        "attention",
        "tables",
        &tables,
        machine,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_models_layouts_depths_and_types() {
        let models = membound_spec::registry::embedded().unwrap();
        let plan = attention_plan(&models, Scale::Default);
        let names: Vec<&str> = plan.iter().map(|c| c.case.as_str()).collect();
        for want in [
            "glm-4.7-flash-mla-latent-f16-d32k",
            "glm-4.7-flash-mla-split-q8_0-d1k",
            "glm-4.7-flash-expanded-mha-f16-d4k",
            "deepseek-v2-lite-mla-latent-q8_0-d32k",
            "qwen3-30b-a3b-gqa-f16-d1k",
            "llama-3.1-70b-gqa-q8_0-d32k",
            "gpt-oss-120b-gqa-f16-d32k",
            "gpt-oss-120b-gqa-swa-f16-d32k",
        ] {
            assert!(names.contains(&want), "{want} not in {names:?}");
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        let full = attention_plan(&models, Scale::Full);
        assert!(
            full.iter()
                .any(|c| c.case == "glm-4.7-flash-mla-latent-bf16-d256k")
        );
        assert!(full.iter().any(|c| c.case.ends_with("-d112k")));
        let glm = plan.iter().find(|c| c.model == "glm-4.7-flash").unwrap();
        assert!(
            glm.layer_weight_bytes > 50_000_000,
            "{}",
            glm.layer_weight_bytes
        );
    }

    #[test]
    fn crossover_interpolates_and_extrapolates() {
        let pts = [(1024.0, 10.0), (4096.0, 40.0), (32768.0, 320.0)];
        assert_eq!(crossover(&pts, 25.0), Some((2560.0, false)));
        assert_eq!(crossover(&pts, 5.0), Some((1024.0, false)));
        let (d, ext) = crossover(&pts, 640.0).unwrap();
        assert!(ext && (d - 65536.0).abs() < 1e-6, "{d}");
        assert_eq!(crossover(&[(1.0, 1.0), (2.0, 1.0)], 5.0), None);
        assert_eq!(crossover(&[(1.0, f64::NAN), (2.0, f64::NAN)], 5.0), None);
    }
}
