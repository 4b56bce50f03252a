//! The driver every suite runs on: [`Backend`] (one device: its facts and how to time work on
//! it) and [`Run`] (Criterion, the cases' outcomes, failures, the paired read reference and the
//! summary printed at the end).
//!
//! A case never ends the run: a failed set-up, check or timed call is reported once with its id
//! and reason ([`Run::fail`]), the run goes on with the next case and backend, and
//! [`Run::finish`] lists the failures and returns a non-zero exit code.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use serde::Serialize;

use crate::Scale;
use crate::machine::criterion_home;

/// One device as the suites see it: its facts, and how to time `iters` calls of an operation.
pub trait Backend {
    /// `cpu`, `gpu0`, …: the last part of every benchmark id.
    fn id(&self) -> &str;
    /// Last-level cache bytes (working sets are ≥ 4× this or named `-llc`).
    fn llc_bytes(&self) -> u64;
    /// Bytes a suite may allocate on this device (the allocation plans stay below this).
    fn memory_budget(&self) -> u64;
    /// Spec-sheet read bandwidth in GB/s, where the hardware table knows the device.
    fn spec_gbs(&self) -> Option<f64>;
    /// Time of `iters` calls of `f`: wall time on the CPU; on a GPU the kernels' time (CUDA
    /// graph of the calls replayed between CUDA events), not the CPU's launch rate.
    fn time(
        &self,
        iters: u64,
        f: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Duration, String>;
}

/// Wall time of `iters` calls of `f` (the CPU's [`Backend::time`]).
pub fn wall_time(
    iters: u64,
    f: &mut dyn FnMut() -> Result<(), String>,
) -> Result<Duration, String> {
    let start = std::time::Instant::now();
    for _ in 0..iters {
        f()?;
    }
    Ok(start.elapsed())
}

/// What a case measures, for the summary and the paired ratios.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The backend's read bandwidth at its main array size (the reference of every ratio).
    Read,
    /// Another streaming or sweep case.
    Stream,
    /// One of membound's GEMV kernels (`dtype`, `shape` as in the id).
    Gemv { dtype: String, shape: String },
    /// One MoE layer (`sweep`: model, top_k, experts, routing, batch) on `tokens` tokens that
    /// read `distinct_experts` experts on average.
    Moe {
        sweep: String,
        tokens: usize,
        distinct_experts: f64,
    },
    /// One layer's decode attention in `layout` at `depth` tokens over `splits` splits.
    Attention {
        layout: String,
        depth: usize,
        splits: usize,
    },
    /// One whole decode step at `depth` cached tokens; `layers_built` of the model's layers
    /// were built and timed (fewer than all: a sample scaled to the whole model).
    Decode {
        depth: usize,
        layers_built: usize,
        sampled: bool,
    },
    /// A peer (candle, cuBLAS, a dense GEMV chain) of the case `of`.
    Peer { peer: String, of: String },
    /// Anything else (GEMM).
    Other,
}

/// The outcome of one timed case.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    /// `{suite}/{case}/{backend}`.
    pub id: String,
    /// The backend id.
    pub backend: String,
    /// What it measures.
    pub kind: Kind,
    /// Bytes per call (`membound_spec::traffic`).
    pub bytes: u64,
    /// Criterion's mean time per call in ns (absent in Criterion's test mode).
    pub mean_ns: Option<f64>,
    /// The read bandwidth (GB/s) measured on the same backend around this case, in this process.
    pub paired_read_gbs: Option<f64>,
}

impl CaseResult {
    /// Decimal GB/s of the mean.
    pub fn gbs(&self) -> Option<f64> {
        self.mean_ns
            .filter(|t| *t > 0.0)
            .map(|t| self.bytes as f64 / t)
    }

    /// GB/s as a fraction of the paired read.
    pub fn fraction_of_read(&self) -> Option<f64> {
        self.gbs()
            .zip(self.paired_read_gbs)
            .filter(|(_, r)| *r > 0.0)
            .map(|(g, r)| g / r)
    }
}

/// A case that did not run: the id, the backend and why.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// Benchmark id.
    pub id: String,
    /// Backend id.
    pub backend: String,
    /// What went wrong.
    pub reason: String,
}

/// One suite's run: Criterion, and every case's outcome.
pub struct Run {
    /// The suite (`bandwidth`, `dense`…): the Criterion group and the first part of every id.
    pub suite: String,
    /// Sweep size and sampling.
    pub scale: Scale,
    c: Criterion,
    /// Timed cases.
    pub results: Vec<CaseResult>,
    /// Cases that failed (the run's exit code is non-zero when any did).
    pub failures: Vec<Failure>,
    /// Cases skipped on purpose (too large for the device…), with the reason.
    pub skipped: Vec<Failure>,
}

/// Criterion's folder for one benchmark (`{group}/{function}` with `/` made `_`, as Criterion
/// names it).
pub fn criterion_dir(suite: &str, case_and_backend: &str) -> PathBuf {
    criterion_home()
        .join(suite)
        .join(case_and_backend.replace('/', "_"))
}

/// Criterion's mean (ns) for a benchmark, if it wrote one at or after `since` (in test mode it
/// writes none, and an older file belongs to another run).
fn read_mean_ns(dir: &std::path::Path, since: std::time::SystemTime) -> Option<f64> {
    let path = dir.join("new/estimates.json");
    if std::fs::metadata(&path).and_then(|m| m.modified()).ok()? < since {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

impl Run {
    /// A run of `suite` at `scale` with Criterion configured for it.
    pub fn new(suite: &str, scale: Scale) -> Run {
        Run::with_criterion(suite, scale, scale.criterion())
    }

    /// A run with a given Criterion (tests use a fast one).
    pub fn with_criterion(suite: &str, scale: Scale, c: Criterion) -> Run {
        Run {
            suite: suite.to_owned(),
            scale,
            c,
            results: Vec::new(),
            failures: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// The full id of `case` on `backend`.
    pub fn id(&self, case: &str, backend: &str) -> String {
        format!("{}/{case}/{backend}", self.suite)
    }

    fn outcome(&self, case: &str, backend: &str, reason: String, word: &str) -> Failure {
        let f = Failure {
            id: self.id(case, backend),
            backend: backend.to_owned(),
            reason,
        };
        eprintln!("membound: {word} {}: {}", f.id, f.reason);
        f
    }

    /// Reports a failed case once and records it.
    pub fn fail(&mut self, case: &str, backend: &str, reason: impl Into<String>) {
        let f = self.outcome(case, backend, reason.into(), "FAILED");
        self.failures.push(f);
    }

    /// Reports a case whose output did not match its reference, so it was not timed.
    pub fn unverified(&mut self, case: &str, backend: &str, reason: impl std::fmt::Display) {
        self.fail(
            case,
            backend,
            format!("verification failed, not timed: {reason}"),
        );
    }

    /// Reports a case skipped on purpose (it cannot run on this device) and records it.
    pub fn skip(&mut self, case: &str, backend: &str, reason: impl Into<String>) {
        let f = self.outcome(case, backend, reason.into(), "skipped");
        self.skipped.push(f);
    }

    /// Whether Criterion's filter (the bench's command line) selects this case, so cases it
    /// would skip need no set-up.
    pub fn wanted(&self, case: &str, backend: &str) -> bool {
        criterion_filter().matches(&self.id(case, backend))
    }

    /// Times `f` as case `case` of `backend` (Criterion `iter_custom` over
    /// [`Backend::time`]), with `bytes` per call as decimal throughput. A failure inside the
    /// timed calls is recorded once, the case's Criterion output is removed (no bogus
    /// baseline) and `None` returned; otherwise the recorded result's index.
    pub fn bench<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        case: &str,
        kind: Kind,
        bytes: u64,
        mut f: impl FnMut() -> Result<(), String>,
    ) -> Option<usize> {
        self.bench_timed(backend, case, kind, bytes, |iters| {
            backend.time(iters, &mut f)
        })
    }

    /// [`Run::bench`] with the time of `iters` calls given by `time` itself (a decode step
    /// of a sampled model reports its time scaled to the whole model).
    pub fn bench_timed<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        case: &str,
        kind: Kind,
        bytes: u64,
        mut time: impl FnMut(u64) -> Result<Duration, String>,
    ) -> Option<usize> {
        let failed: RefCell<Option<String>> = RefCell::new(None);
        let function = format!("{case}/{}", backend.id());
        // File times may be coarser than the clock: allow a second.
        let started = std::time::SystemTime::now() - Duration::from_secs(1);
        let mut g = self.c.benchmark_group(self.suite.clone());
        g.throughput(Throughput::BytesDecimal(bytes));
        g.sampling_mode(SamplingMode::Flat);
        // After a failure the remaining calls only wait 1 ms per iteration: Criterion plans its
        // warm-up and sampling on wall time (a call that returns at once would make it double
        // `iters` until it overflows), so this ends the case in about warm-up + measurement
        // time. The case's output is discarded below.
        let give_up = |iters: u64| {
            let d = Duration::from_millis(iters.min(10_000));
            std::thread::sleep(d);
            d
        };
        g.bench_function(&function, |b| {
            b.iter_custom(|iters| {
                if failed.borrow().is_some() {
                    return give_up(iters);
                }
                match time(iters) {
                    Ok(d) => d,
                    Err(e) => {
                        *failed.borrow_mut() = Some(e);
                        give_up(iters)
                    }
                }
            })
        });
        g.finish();
        let dir = criterion_dir(&self.suite, &function);
        if let Some(e) = failed.into_inner() {
            let _ = std::fs::remove_dir_all(&dir);
            self.fail(case, backend.id(), e);
            return None;
        }
        self.results.push(CaseResult {
            id: self.id(case, backend.id()),
            backend: backend.id().to_owned(),
            kind,
            bytes,
            mean_ns: read_mean_ns(&dir, started),
            paired_read_gbs: None,
        });
        Some(self.results.len() - 1)
    }

    /// Sets the paired read bandwidth of results `from..` of `backend` (those measured between
    /// two read samples) to the mean of the samples.
    pub fn pair(&mut self, from: usize, backend: &str, samples: &[f64]) {
        let valid: Vec<f64> = samples.iter().copied().filter(|s| *s > 0.0).collect();
        if valid.is_empty() {
            return;
        }
        let mean = valid.iter().sum::<f64>() / valid.len() as f64;
        let from = from.min(self.results.len());
        for r in self.results[from..]
            .iter_mut()
            .filter(|r| r.backend == backend)
        {
            r.paired_read_gbs = Some(mean);
        }
    }

    /// The summary as Markdown: per backend its read bandwidth (and % of spec), then each case
    /// with GB/s and % of the paired read, the peers' ratios, and the failures.
    pub fn summary(&self, spec: &dyn Fn(&str) -> Option<f64>) -> String {
        let mut out = String::new();
        let mut backends: Vec<&str> = self.results.iter().map(|r| r.backend.as_str()).collect();
        backends.extend(self.failures.iter().map(|f| f.backend.as_str()));
        let mut seen = std::collections::HashSet::new();
        backends.retain(|b| seen.insert(*b));
        for b in backends {
            out.push_str(&format!("\n### {} on {b}\n\n", self.suite));
            if let Some(read) = self
                .results
                .iter()
                .find(|r| r.backend == b && r.kind == Kind::Read)
                .and_then(CaseResult::gbs)
            {
                let pct = spec(b)
                    .map(|s| {
                        format!(
                            " = {:.1} % of the spec sheet's {s:.0} GB/s",
                            100.0 * read / s
                        )
                    })
                    .unwrap_or_default();
                out.push_str(&format!("read: {read:.1} GB/s{pct}\n\n"));
            }
            out.push_str("| case | GB/s | % of paired read | note |\n|---|---:|---:|---|\n");
            for r in self.results.iter().filter(|r| r.backend == b) {
                let case =
                    r.id.strip_prefix(&format!("{}/", self.suite))
                        .and_then(|s| s.strip_suffix(&format!("/{b}")))
                        .unwrap_or(&r.id);
                let gbs = r.gbs().map_or("–".into(), |g| format!("{g:.1}"));
                let pct = r
                    .fraction_of_read()
                    .map_or("–".into(), |f| format!("{:.0} %", 100.0 * f));
                let note = match &r.kind {
                    Kind::Peer { peer, of } => self
                        .results
                        .iter()
                        .find(|o| &o.id == of)
                        .and_then(|o| o.gbs().zip(r.gbs()))
                        .map(|(ours, theirs)| format!("{peer}: ours is {:.2}x", ours / theirs))
                        .unwrap_or_default(),
                    Kind::Read => "paired reference".into(),
                    _ => String::new(),
                };
                out.push_str(&format!("| {case} | {gbs} | {pct} | {note} |\n"));
            }
            for f in self.failures.iter().filter(|f| f.backend == b) {
                out.push_str(&format!("| {} | FAILED | | {} |\n", f.id, f.reason));
            }
        }
        if !self.skipped.is_empty() {
            out.push_str("\nskipped:\n");
            for s in &self.skipped {
                out.push_str(&format!("- {}: {}\n", s.id, s.reason));
            }
        }
        out
    }

    /// Ends the run: Criterion's summary, the suite's results (with every case's fraction of
    /// the paired read) into `machine-<suite>.json`'s `cases`, the Markdown summary on stdout,
    /// the failures listed; returns the process exit code (1 when any case failed).
    pub fn finish(self, spec: &dyn Fn(&str) -> Option<f64>, machine: serde_json::Value) -> i32 {
        self.c.final_summary();
        let run = self;
        let summary = run.summary(spec);
        println!("\n## membound {} summary{summary}", run.suite);
        let dir = criterion_home();
        let cases: Vec<serde_json::Value> = run
            .results
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["gb_per_s"] = r.gbs().into();
                v["fraction_of_paired_read"] = r.fraction_of_read().into();
                v
            })
            .collect();
        let mut m = machine;
        m["suite"] = run.suite.clone().into();
        m["cases"] = cases.into();
        m["failures"] = serde_json::to_value(&run.failures).unwrap_or_default();
        m["skipped"] = serde_json::to_value(&run.skipped).unwrap_or_default();
        let path = dir.join(format!("machine-{}.json", run.suite));
        match std::fs::create_dir_all(&dir).and_then(|_| {
            std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap_or_default())
        }) {
            Ok(()) => println!(
                "\nCriterion output: {}/{}; machine and per-case ratios: {}",
                dir.display(),
                run.suite,
                path.display()
            ),
            Err(e) => eprintln!("membound: cannot write {}: {e}", path.display()),
        }
        if run.failures.is_empty() {
            0
        } else {
            eprintln!("membound: {} case(s) failed:", run.failures.len());
            for f in &run.failures {
                eprintln!("  {}: {}", f.id, f.reason);
            }
            1
        }
    }
}

/// Criterion's benchmark filter, read from the command line as Criterion reads it: one
/// positional FILTER, a regex unless `--exact`; `--ignored` selects nothing.
#[derive(Debug)]
pub enum Filter {
    /// No filter.
    All,
    /// `--ignored`.
    Nothing,
    /// `--exact FILTER`.
    Exact(String),
    /// FILTER as a regular expression (searched in the id).
    Regex(regex::Regex),
}

impl Filter {
    /// Parses Criterion's arguments (those after the bench name).
    pub fn parse(args: &[String]) -> Filter {
        // Options of Criterion's command line that take a value.
        const VALUED: &[&str] = &[
            "--save-baseline",
            "--baseline",
            "--baseline-lenient",
            "--load-baseline",
            "--profile-time",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--output-format",
            "--color",
            "--plotting-backend",
            "--format",
            "-s",
            "-b",
            "-c",
        ];
        let mut positional = None;
        let (mut exact, mut ignored) = (false, false);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--exact" => exact = true,
                "--ignored" => ignored = true,
                v if VALUED.contains(&v) => {
                    it.next();
                }
                v if v.starts_with('-') => {}
                v => positional = positional.or(Some(v.to_owned())),
            }
        }
        match (ignored, positional) {
            (true, _) => Filter::Nothing,
            (false, None) => Filter::All,
            (false, Some(f)) if exact => Filter::Exact(f),
            // A filter Criterion cannot parse makes it stop anyway: set everything up.
            (false, Some(f)) => regex::Regex::new(&f).map_or(Filter::All, Filter::Regex),
        }
    }

    /// Whether the benchmark `id` is selected.
    pub fn matches(&self, id: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Nothing => false,
            Filter::Exact(f) => id == f,
            Filter::Regex(r) => r.is_match(id),
        }
    }
}

/// This process's [`Filter`].
pub fn criterion_filter() -> &'static Filter {
    static FILTER: std::sync::OnceLock<Filter> = std::sync::OnceLock::new();
    FILTER.get_or_init(|| Filter::parse(&std::env::args().skip(1).collect::<Vec<_>>()))
}

/// Best read bandwidth (GB/s) of `read` (one pass over `bytes`) on `backend`: batches of calls
/// long enough to time (≥ 20 ms), best of three, so a reference costs well under a second.
pub fn sample_read<B: Backend + ?Sized>(
    backend: &B,
    bytes: u64,
    read: &mut dyn FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    let mut iters = 1u64;
    let mut best = 0f64;
    let mut batches = 0;
    while batches < 3 {
        let t = backend.time(iters, read)?.as_secs_f64();
        if t < 0.02 && iters < (1 << 20) {
            iters *= 2;
            continue;
        }
        best = best.max(bytes as f64 * iters as f64 / t.max(1e-12) / 1e9);
        batches += 1;
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Filter {
        Filter::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn filters_read_as_criterion_reads_them() {
        let id = "dense/q4_k-4096x4096/gpu0";
        assert!(parse(&["--bench"]).matches(id));
        assert!(parse(&["--bench", "q4_k"]).matches(id));
        assert!(parse(&["--bench", "q8_0|q4_k"]).matches(id));
        assert!(!parse(&["--bench", "^dense/q8_0"]).matches(id));
        assert!(parse(&["--bench", "--save-baseline", "h100", "q4_k-4096"]).matches(id));
        // The baseline name is not the filter.
        assert!(parse(&["--save-baseline", "q8_0", "--bench"]).matches(id));
        assert!(parse(&["--exact", id]).matches(id));
        assert!(!parse(&["--exact", "q4_k"]).matches(id));
        assert!(!parse(&["--ignored"]).matches(id));
        assert!(parse(&["--bench", "(unclosed"]).matches(id));
    }
}
