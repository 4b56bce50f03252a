//! The moe suite's driver, written once over [`MoeBackend`]: one MoE layer of every MoE model
//! at its real shapes, the sweeps (top-k, total experts, routing, batch), a dense GEMV chain of
//! equal bytes as the peer, the paired read, and the active-versus-total verdict.
//!
//! Every case is steered ([`Pattern`]): the router computes its scores and weights as the model
//! does, and a per-token steering vector on the selection keys picks which experts, so the
//! distinct experts read (and the bytes, `membound_spec::moe::MoeLayer::bytes`) are known. Each
//! copy of the whole layer (every expert) holds [`INPUT_SLOTS`] batches with their own routing;
//! a case allocates enough copies that the experts one rotation (every copy × batch) touches are
//! ≥ 4× the last-level cache.

use membound_cpu::moe::MoeWeights;
use membound_quant::data::{normal_f32, tiled_matrix};
use membound_spec::moe::MoeLayer;
use membound_spec::{ModelSpec, Recipe};
use serde::Serialize;

use crate::Scale;
use crate::gemv::GemvBackend;
use crate::harness::{Kind, Run};
use crate::moe::{Fit, MoeBackend, Pattern, check_moe, distinct, fit, steer_vector, steered_sets};
use crate::rotation::{LLC_FACTOR, Rotation, copies_for};
use crate::suites::PairedRead;

const GIB: f64 = (1u64 << 30) as f64;

/// Batches (input slots) each copy of a layer holds: a rotation steps through copies and slots,
/// so a layer copy is read with varying routing and fewer copies defeat the cache.
pub const INPUT_SLOTS: usize = 16;

/// What a case varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sweep {
    /// A model's layer as it is.
    Model,
    /// (a) top-k at fixed total experts.
    TopK,
    /// (b) total experts at fixed top-k.
    Experts,
    /// (c) routing pattern.
    Routing,
    /// (d) tokens per batch.
    Batch,
}

/// One planned case.
#[derive(Clone, Debug)]
pub struct MoeCase {
    /// The case part of the id.
    pub case: String,
    /// The layer.
    pub layer: MoeLayer,
    /// Routing.
    pub pattern: Pattern,
    /// Tokens per batch.
    pub tokens: usize,
    /// What it varies.
    pub sweep: Sweep,
    /// Whether the dense GEMV chain of equal bytes runs beside it.
    pub dense_peer: bool,
}

/// The recipes a model's cases use: gpt-oss ships MXFP4 experts; the others Q8_0 and Q4_K_M
/// (quick: Q8_0 only).
fn recipes(m: &ModelSpec, scale: Scale) -> Vec<Recipe> {
    if m.arch == "gpt-oss" {
        vec![Recipe::MXFP4_MOE]
    } else if scale == Scale::Quick {
        vec![Recipe::Q8_0]
    } else {
        vec![Recipe::Q8_0, Recipe::Q4_K_M]
    }
}

/// The model of the sweeps and its recipe.
pub const SWEEP_MODEL: (&str, Recipe) = ("qwen3-30b-a3b", Recipe::Q8_0);

fn case_name(model: &str, recipe: Recipe) -> String {
    format!("{model}-{}", recipe.name().to_lowercase())
}

/// The suite's cases at `scale`: every MoE model of `models` (quick: the sweep model and
/// gpt-oss-20b), then the sweeps on [`SWEEP_MODEL`].
pub fn moe_plan(models: &[ModelSpec], scale: Scale) -> Vec<MoeCase> {
    let mut v = Vec::new();
    let goal = |name: &str, r: Recipe| {
        (name, r) == SWEEP_MODEL || (name, r) == ("gpt-oss-120b", Recipe::MXFP4_MOE)
    };
    for m in models {
        let Some(moe) = &m.ffn.moe else { continue };
        if scale == Scale::Quick && m.name != SWEEP_MODEL.0 && m.name != "gpt-oss-20b" {
            continue;
        }
        for r in recipes(m, scale) {
            if let Some(layer) = MoeLayer::from_spec(m, r, moe.dense_first) {
                v.push(MoeCase {
                    case: case_name(&m.name, r),
                    layer,
                    pattern: Pattern::Uniform,
                    tokens: 1,
                    sweep: Sweep::Model,
                    dense_peer: goal(&m.name, r),
                });
            }
        }
    }
    let Some(base) = v
        .iter()
        .find(|c| c.case == case_name(SWEEP_MODEL.0, SWEEP_MODEL.1))
        .cloned()
    else {
        return v;
    };
    let (top_ks, experts, batches): (&[usize], &[usize], &[usize]) = match scale {
        Scale::Quick => (&[2], &[32], &[4]),
        Scale::Default => (&[1, 2, 4, 16], &[8, 32, 512], &[4, 16, 64]),
        Scale::Full => (
            &[1, 2, 4, 6, 10, 16],
            &[8, 16, 32, 64, 256, 512],
            &[2, 4, 8, 16, 32, 64],
        ),
    };
    let variant = |suffix: String, sweep: Sweep| MoeCase {
        case: format!("{}-{suffix}", base.case),
        sweep,
        dense_peer: false,
        ..base.clone()
    };
    for &k in top_ks {
        let mut c = variant(format!("k{k}"), Sweep::TopK);
        c.layer.top_k = k;
        v.push(c);
    }
    for &e in experts {
        let mut c = variant(format!("e{e}"), Sweep::Experts);
        c.layer.n_experts = e;
        v.push(c);
    }
    for p in [Pattern::Zipf, Pattern::Fixed] {
        let mut c = variant(p.name().to_owned(), Sweep::Routing);
        c.pattern = p;
        v.push(c);
    }
    for &t in batches {
        let mut c = variant(format!("b{t}"), Sweep::Batch);
        c.tokens = t;
        v.push(c);
    }
    v
}

/// One measured case, for the verdict.
#[derive(Clone, Debug, Serialize)]
pub struct MoePoint {
    /// The id.
    pub id: String,
    /// What it varies.
    pub sweep: Sweep,
    /// Experts and top-k of the layer.
    pub n_experts: usize,
    /// Top-k.
    pub top_k: usize,
    /// Tokens per batch.
    pub tokens: usize,
    /// Mean distinct experts read per batch.
    pub distinct_experts: f64,
    /// Bytes of one token's active parameters (router, top-k experts, shared expert, x, y).
    pub active_bytes: u64,
    /// Bytes of the whole layer (every expert).
    pub total_bytes: u64,
    /// Bytes a batch moves (the case's throughput bytes).
    pub bytes: u64,
    /// Mean time per batch (ns).
    pub ns: f64,
    /// The paired read (GB/s).
    pub paired_read_gbs: Option<f64>,
}

/// The verdict of one backend: does time per token follow active or total bytes?
#[derive(Clone, Debug, Serialize)]
pub struct MoeVerdict {
    /// Backend id.
    pub backend: String,
    /// The single-token points of the top-k and experts sweeps and the sweep model's case.
    pub points: Vec<MoePoint>,
    /// Time per token against active bytes.
    pub fit_active: Option<Fit>,
    /// Time per token against total bytes.
    pub fit_total: Option<Fit>,
    /// `active`, `total`, `inconclusive` or `not measured`.
    pub verdict: String,
    /// The dense GEMV chain of equal expert bytes against the MoE layer: (case, MoE time /
    /// chain time).
    pub dense_ratio: Vec<(String, f64)>,
}

impl MoeVerdict {
    /// One line per verdict for the summary.
    pub fn describe(&self) -> String {
        let f = |x: &Option<Fit>| {
            x.map_or("–".into(), |f| {
                let marginal = if f.slope > 0.0 && f.r2 >= 0.5 {
                    format!("{:.1} GB/s marginal", 1.0 / f.slope)
                } else {
                    "no trend".into()
                };
                format!(
                    "R² {:.3}, {marginal}, {:.1} µs intercept",
                    f.r2,
                    f.intercept / 1e3
                )
            })
        };
        let mut s = format!(
            "moe verdict on {}: time per token follows {} bytes (active: {}; total: {})",
            self.backend,
            self.verdict,
            f(&self.fit_active),
            f(&self.fit_total)
        );
        for (case, r) in &self.dense_ratio {
            s.push_str(&format!(
                "\n  {case}: MoE layer time is {:.2}x a dense GEMV chain of equal expert bytes",
                r
            ));
        }
        s
    }
}

/// Single-token points a verdict needs (the quick scale has fewer: its verdict is "not
/// measured").
pub const MIN_POINTS: usize = 5;

/// The verdict from points: a fit explains the time when its slope is positive, its R² ≥ 0.9
/// and above the other's.
pub fn verdict(
    backend: &str,
    points: Vec<MoePoint>,
    dense_ratio: Vec<(String, f64)>,
) -> MoeVerdict {
    let per_token = |p: &MoePoint, x: u64| (x as f64, p.ns / p.tokens as f64);
    let single: Vec<&MoePoint> = points
        .iter()
        .filter(|p| p.tokens == 1 && p.ns.is_finite())
        .collect();
    let fit_active = fit(&single
        .iter()
        .map(|p| per_token(p, p.active_bytes))
        .collect::<Vec<_>>());
    let fit_total = fit(&single
        .iter()
        .map(|p| per_token(p, p.total_bytes))
        .collect::<Vec<_>>());
    let explains = |f: &Fit, other: &Fit| f.r2 >= 0.9 && f.slope > 0.0 && f.r2 > other.r2;
    let verdict = match (fit_active, fit_total) {
        _ if single.len() < MIN_POINTS => "not measured",
        (Some(a), Some(t)) if explains(&a, &t) => "active",
        (Some(a), Some(t)) if explains(&t, &a) => "total",
        (Some(_), Some(_)) => "inconclusive",
        _ => "not measured",
    };
    MoeVerdict {
        backend: backend.to_owned(),
        points,
        fit_active,
        fit_total,
        verdict: verdict.to_owned(),
        dense_ratio,
    }
}

/// The moe suite on one backend with the models of `models`; returns its verdict.
pub fn moe<B: MoeBackend>(run: &mut Run, b: &B, models: &[ModelSpec]) -> MoeVerdict {
    let plan = moe_plan(models, run.scale);
    moe_cases(run, b, &plan)
}

/// The given cases on one backend (tests use small layers).
pub fn moe_cases<B: MoeBackend>(run: &mut Run, b: &B, plan: &[MoeCase]) -> MoeVerdict {
    let mut paired = PairedRead::new(run, b);
    let mut points = Vec::new();
    let mut dense_ratio = Vec::new();
    for (i, c) in plan.iter().enumerate() {
        let from = run.results.len();
        let before = paired.sample(b);
        let mut timed = Vec::new();
        if let Some(p) = moe_case(run, b, c, i as u64) {
            let moe_ns = p.ns;
            timed.push(p);
            if let Some(ns) = c.dense_peer.then(|| dense_chain(run, b, c)).flatten() {
                dense_ratio.push((c.case.clone(), moe_ns / ns));
            }
        }
        if run.results.len() > from {
            let after = paired.sample(b);
            let samples: Vec<f64> = before.into_iter().chain(after).collect();
            run.pair(from, b.id(), &samples);
            let read = run.results[from].paired_read_gbs;
            points.extend(timed.into_iter().map(|mut p| {
                p.paired_read_gbs = read;
                p
            }));
        }
    }
    let fitted = points
        .into_iter()
        .filter(|p| {
            matches!(p.sweep, Sweep::TopK | Sweep::Experts)
                || (p.sweep == Sweep::Model
                    && p.id.contains(&case_name(SWEEP_MODEL.0, SWEEP_MODEL.1)))
        })
        .collect();
    verdict(b.id(), fitted, dense_ratio)
}

/// Runs one case; returns its point when timed (`ns` is NaN in Criterion's test mode).
fn moe_case<B: MoeBackend>(run: &mut Run, b: &B, c: &MoeCase, seed: u64) -> Option<MoePoint> {
    let (case, l) = (c.case.as_str(), &c.layer);
    let peer_wanted = c.dense_peer && run.wanted(&format!("{case}-dense"), b.id());
    if !run.wanted(case, b.id()) && !peer_wanted {
        return None;
    }
    let types = [
        l.types.gate_up,
        l.types.down,
        l.types.shared_gate_up,
        l.types.shared_down,
    ];
    if let Some(t) = types.iter().find(|t| !b.moe_dtypes().contains(t)) {
        run.skip(case, b.id(), format!("{t} (llama.cpp's fallback for rows that are not whole K-quant blocks) has no MoE kernel here"));
        return None;
    }
    // Each copy of the layer holds INPUT_SLOTS batches; a rotation visits every (copy, slot)
    // once, so it touches the distinct experts of each copy's batches. Copies are added until
    // that is ≥ 4× the last-level cache (one draw of the routing for the whole case, so a Zipf
    // ranking or a fixed set is shared by every batch).
    let max_copies = ((b.memory_budget() as f64 / l.total_bytes() as f64) as usize).clamp(1, 256);
    let all = steered_sets(
        l,
        c.pattern,
        max_copies * INPUT_SLOTS * c.tokens,
        seed * 1000,
    );
    let batch = |copy: usize, slot: usize| {
        let at = (copy * INPUT_SLOTS + slot) * c.tokens;
        &all[at..at + c.tokens]
    };
    let copy_bytes = |copy: usize| {
        let sets: Vec<Vec<u32>> = (0..INPUT_SLOTS)
            .flat_map(|s| batch(copy, s).to_vec())
            .collect();
        l.router_bytes() + l.shared_bytes() + distinct(&sets) as u64 * l.expert_bytes()
    };
    let need = LLC_FACTOR * b.llc_bytes();
    let (mut copies, mut touched) = (0, 0);
    while copies < max_copies && touched < need {
        touched += copy_bytes(copies);
        copies += 1;
    }
    if touched < need {
        run.skip(
            case,
            b.id(),
            format!(
                "{copies} copies of the {:.2} GiB layer fill the {:.1} GiB budget and touch {:.0} MiB per rotation, under 4x the {:.0} MiB last-level cache",
                l.total_bytes() as f64 / GIB,
                b.memory_budget() as f64 / GIB,
                touched as f64 / (1 << 20) as f64,
                b.llc_bytes() as f64 / (1 << 20) as f64
            ),
        );
        return None;
    }
    eprintln!(
        "membound: moe/{case}/{}: {copies} copies of a {:.2} GiB layer x {INPUT_SLOTS} batches ({} experts, top-{}, {} token(s), {} routing)",
        b.id(),
        l.total_bytes() as f64 / GIB,
        l.n_experts,
        l.top_k,
        c.tokens,
        c.pattern.name()
    );
    let w = match MoeWeights::generate(l, 0x6d6f65 ^ seed) {
        Ok(w) => w,
        Err(e) => {
            run.fail(case, b.id(), format!("weights: {e}"));
            return None;
        }
    };
    let mut layers = Vec::with_capacity(copies);
    let mut first_x = Vec::new();
    for copy in 0..copies {
        let xs: Vec<Vec<f32>> = (0..INPUT_SLOTS)
            .map(|s| {
                normal_f32(
                    seed * 7919 + (copy * INPUT_SLOTS + s) as u64,
                    c.tokens * l.hidden,
                    1.0,
                )
            })
            .collect();
        let steers: Vec<Vec<f32>> = (0..INPUT_SLOTS)
            .map(|s| steer_vector(batch(copy, s), l.n_experts))
            .collect();
        let inputs: Vec<(&[f32], &[f32])> = xs
            .iter()
            .zip(&steers)
            .map(|(x, st)| (x.as_slice(), st.as_slice()))
            .collect();
        match b.moe(l, &w, &inputs) {
            Ok(m) => layers.push(m),
            Err(e) => {
                run.fail(case, b.id(), format!("set-up: {e}"));
                return None;
            }
        }
        if copy == 0 {
            first_x = xs[0].clone();
        }
    }
    let checked = b
        .moe_forward(&mut layers[0], 0)
        .and_then(|_| b.moe_result(&layers[0]))
        .and_then(|(out, r)| {
            check_moe(l, &w, &first_x, batch(0, 0), &out, &r, &|d| {
                b.moe_act_dtype(d)
            })
        });
    if let Err(e) = checked {
        run.unverified(case, b.id(), e);
        return None;
    }
    drop(w);
    // Bytes per batch: the mean over the rotation's batches.
    let batches: Vec<&[Vec<u32>]> = (0..copies)
        .flat_map(|cp| (0..INPUT_SLOTS).map(move |s| (cp, s)))
        .map(|(cp, s)| batch(cp, s))
        .collect();
    let n = batches.len() as f64;
    let bytes = (batches
        .iter()
        .map(|s| l.bytes(distinct(s), c.tokens) as f64)
        .sum::<f64>()
        / n) as u64;
    let mean_distinct = batches.iter().map(|s| distinct(s) as f64).sum::<f64>() / n;
    if !run.wanted(case, b.id()) {
        return None;
    }
    let kind = Kind::Moe {
        sweep: format!("{:?}", c.sweep).to_lowercase(),
        tokens: c.tokens,
        distinct_experts: mean_distinct,
    };
    let mut i = 0usize;
    let idx = run.bench(b, case, kind, bytes, || {
        let (copy, slot) = (i % copies, (i / copies) % INPUT_SLOTS);
        i += 1;
        b.moe_forward(&mut layers[copy], slot)
    })?;
    let r = &run.results[idx];
    Some(MoePoint {
        id: r.id.clone(),
        sweep: c.sweep,
        n_experts: l.n_experts,
        top_k: l.top_k,
        tokens: c.tokens,
        distinct_experts: mean_distinct,
        active_bytes: l.active_bytes(),
        total_bytes: l.total_bytes(),
        bytes,
        ns: r.mean_ns.unwrap_or(f64::NAN),
        paired_read_gbs: None,
    })
}

/// The dense GEMV chain of equal expert bytes (gate and up of `top_k × ff` rows, down of
/// `hidden` rows and `top_k × ff` columns) as the peer of a one-token case; returns its time.
fn dense_chain<B: MoeBackend>(run: &mut Run, b: &B, c: &MoeCase) -> Option<f64> {
    let l = &c.layer;
    let case = format!("{}-dense", c.case);
    if !run.wanted(&case, b.id()) {
        return None;
    }
    let (h, f) = (l.hidden, l.top_k * l.expert_ff);
    let shapes = [
        (l.types.gate_up, f, h),
        (l.types.gate_up, f, h),
        (l.types.down, h, f),
    ];
    let bytes: u64 = shapes
        .iter()
        .map(|&(d, r, cols)| membound_spec::traffic::gemv_bytes(d, r as u64, cols as u64))
        .sum();
    let copies = copies_for(bytes, b.llc_bytes());
    type Chain<B> = Vec<(Vec<<B as GemvBackend>::Matrix>, <B as GemvBackend>::Vectors)>;
    let set_up = || -> Result<Chain<B>, String> {
        shapes
            .iter()
            .map(|&(d, rows, cols)| {
                let w = tiled_matrix(d, rows, cols).map_err(|e| e.to_string())?;
                let ms = (0..copies)
                    .map(|_| b.matrix(d, rows, cols, &w))
                    .collect::<Result<Vec<_>, _>>()?;
                let x = normal_f32(5, cols, 1.0);
                let mut v = b.vectors(&x, rows)?;
                b.gemv(&ms[0], &mut v)?;
                b.check_gemv(d, rows, cols, &w, &x, &b.output(&v)?)?;
                Ok((ms, v))
            })
            .collect()
    };
    let mut chain = match set_up() {
        Ok(c) => c,
        Err(e) => {
            run.fail(&case, b.id(), format!("set-up or verification: {e}"));
            return None;
        }
    };
    let kind = Kind::Peer {
        peer: "dense".into(),
        of: run.id(&c.case, b.id()),
    };
    let mut rot = Rotation::new(copies);
    let idx = run.bench(b, &case, kind, bytes, || {
        let i = rot.next();
        chain.iter_mut().try_for_each(|(ms, v)| b.gemv(&ms[i], v))
    })?;
    run.results[idx].mean_ns
}

/// Writes the verdicts beside Criterion's output (`moe-verdict.json`) with the machine.
pub fn write_verdicts(verdicts: &[MoeVerdict], machine: serde_json::Value) {
    crate::machine::write_extra("moe-verdict.json", "moe", "verdicts", &verdicts, machine);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Vec<ModelSpec> {
        membound_spec::registry::embedded().unwrap()
    }

    #[test]
    fn plan_covers_every_moe_model_and_the_sweeps() {
        let plan = moe_plan(&models(), Scale::Default);
        let names: Vec<&str> = plan.iter().map(|c| c.case.as_str()).collect();
        for want in [
            "qwen3-30b-a3b-q8_0",
            "qwen3-30b-a3b-q4_k_m",
            "gpt-oss-120b-mxfp4_moe",
            "gpt-oss-20b-mxfp4_moe",
            "glm-4.7-flash-q8_0",
            "qwen3-coder-next-q4_k_m",
            "deepseek-v2-lite-q8_0",
            "qwen3-30b-a3b-q8_0-k16",
            "qwen3-30b-a3b-q8_0-e512",
            "qwen3-30b-a3b-q8_0-zipf",
            "qwen3-30b-a3b-q8_0-fixed",
            "qwen3-30b-a3b-q8_0-b64",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        let e512 = plan.iter().find(|c| c.case.ends_with("-e512")).unwrap();
        assert_eq!((e512.layer.n_experts, e512.layer.top_k), (512, 8));
        for c in &plan {
            assert!(c.layer.validate().is_ok(), "{}", c.case);
            assert!(c.tokens * c.layer.top_k <= membound_cuda::moe::MOE_MAX_CHOICES);
        }
        assert_eq!(plan.iter().filter(|c| c.dense_peer).count(), 2);
        let quick = moe_plan(&models(), Scale::Quick);
        assert!(quick.len() <= 7, "{}", quick.len());
    }

    fn point(active: u64, total: u64, ns: f64) -> MoePoint {
        MoePoint {
            id: String::new(),
            sweep: Sweep::TopK,
            n_experts: 0,
            top_k: 0,
            tokens: 1,
            distinct_experts: 0.0,
            active_bytes: active,
            total_bytes: total,
            bytes: active,
            ns,
            paired_read_gbs: None,
        }
    }

    /// Time made to follow active bytes (with the total varying independently) gives the
    /// verdict `active`; made to follow total bytes, `total`.
    #[test]
    fn the_verdict_names_the_bytes_that_explain_the_time() {
        let pts = |by_active: bool| -> Vec<MoePoint> {
            let mut v = Vec::new();
            for (a, t) in [
                (10, 100),
                (20, 100),
                (40, 100),
                (80, 100),
                (40, 50),
                (40, 200),
                (40, 400),
            ] {
                let ns = 5.0 + if by_active { a as f64 } else { t as f64 / 4.0 };
                v.push(point(a * 1000, t * 1000, ns));
            }
            v
        };
        assert_eq!(verdict("cpu", pts(true), vec![]).verdict, "active");
        assert_eq!(verdict("cpu", pts(false), vec![]).verdict, "total");
        let mut none = pts(true);
        none.iter_mut().for_each(|p| p.ns = f64::NAN);
        assert_eq!(verdict("cpu", none, vec![]).verdict, "not measured");
    }
}
