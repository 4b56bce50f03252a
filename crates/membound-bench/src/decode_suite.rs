//! The decode suite's driver: one whole per-token decode step of each model in models/ at its
//! common quantizations and several context depths (`membound_decode::CpuDecoder`: the real
//! computation over synthetic weights quantized per the recipe), the paired read, and the
//! table of t/s against the bandwidth roofline (`decode-table.json`).
//!
//! A model whose layers (weights and cache) do not fit the backend's memory budget is built
//! as a sample of its layers ([`membound_decode::sample::LayerSample`]) that reads at least
//! 4× the last-level cache per token, timed layer by layer (on a GPU: the sampled step whole,
//! shared out by each layer's time alone) and scaled by layer counts to the whole model; its
//! id says `sampled`. For the first model that fits whole, the suite also
//! times a forced sample of it (`…-sampled`), and the table gives the estimate's error.
//!
//! Bytes per token: `membound_spec::bytes::per_token` at the step's depth — active weights and
//! the KV cache the step reads (`membound spec` / `membound fit`'s convention).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use membound_cuda::decode::{Buf, GpuStep, OnGpu, StepLaunch, step_launches, step_plan};
use membound_cuda::moe::f32s;
use membound_decode::device::{DeviceStep, Stage};
use membound_decode::placement::{PlacedStep, Placement};
use membound_decode::sample::LayerSample;
use membound_decode::source::{GgufSource, SyntheticSource, TensorSource};
use membound_decode::{CpuDecoder, StepOptions};
use membound_gguf::reads::token_reads;
use membound_gguf::spec::spec_from_gguf;
use membound_gguf::{GgufFile, tensor_class};
use membound_spec::bytes::weights;
use membound_spec::kv::kv_cache;
use membound_spec::tensors::TensorClass;
use membound_spec::{DType, KvLayout, ModelSpec, Recipe};
use serde::Serialize;

use crate::harness::{Kind, Run};
use crate::rotation::LLC_FACTOR;
use crate::stream::StreamBackend;
use crate::suites::PairedRead;
use crate::{Backend, CpuBackend, GpuBackend, Scale};

const GIB: f64 = (1u64 << 30) as f64;

/// One planned case.
#[derive(Clone, Debug)]
pub struct DecodeCase {
    /// The case part of the id (`{model}-{recipe}-d{depth}[-sampled]`).
    pub case: String,
    /// The model.
    pub model: ModelSpec,
    /// Where the weights come from.
    pub weights: Weights,
    /// Tokens in the cache before the step.
    pub depth: usize,
    /// Force a sample even where the whole model fits (the estimate's check).
    pub force_sample: bool,
    /// Where the layers run (GPU cases).
    pub placement: Placement,
}

/// Where a case's weights come from.
#[derive(Clone, Debug)]
pub enum Weights {
    /// Synthetic weights stored as the recipe stores them.
    Synthetic(Recipe),
    /// A GGUF file (`MEMBOUND_GGUF`).
    Gguf(PathBuf),
}

/// The environment variable naming a GGUF file whose model the suite also decodes.
pub const GGUF_ENV: &str = "MEMBOUND_GGUF";

/// The models and recipes of the suite (`quick`: one dense, one MoE and one MLA model).
fn model_recipes(scale: Scale) -> Vec<(&'static str, Recipe)> {
    let mut v = vec![
        ("llama-3.2-3b", Recipe::Q4_K_M),
        ("qwen3-coder-30b-a3b", Recipe::Q8_0),
        ("glm-4.7-flash", Recipe::Q8_0),
    ];
    if scale != Scale::Quick {
        v.extend([
            ("glm-4.7-flash", Recipe::Q4_K_M),
            ("gpt-oss-20b", Recipe::MXFP4_MOE),
            ("gpt-oss-120b", Recipe::MXFP4_MOE),
            ("qwen3-coder-next", Recipe::Q4_K_M),
            ("llama-3.1-8b", Recipe::Q4_K_M),
            ("llama-3.1-70b", Recipe::Q4_K_M),
            ("qwen3-32b", Recipe::Q4_K_M),
            ("gemma-3-27b", Recipe::Q4_K_M),
            ("mistral-small-24b", Recipe::Q4_K_M),
            ("qwen2.5-coder-7b", Recipe::Q4_K_M),
            ("gemma-3-4b", Recipe::Q4_K_M),
            ("llama-3.3-70b", Recipe::Q4_K_M),
            ("deepseek-v3", Recipe::Q4_K_M),
        ]);
    }
    v
}

/// Depths of each model (those below its context are run): `full` adds 112k (the seed's GLM
/// case), and the last positions of a 202,752-token (GLM-4.7-Flash) and a 256k context.
fn depths(scale: Scale) -> Vec<usize> {
    match scale {
        Scale::Quick => vec![0, 4096],
        Scale::Default => vec![0, 4096, 32768],
        Scale::Full => vec![0, 4096, 32768, 112 << 10, 202_751, (256 << 10) - 1],
    }
}

/// The suite's cases for `models` (those of [`model_recipes`] found there).
pub fn decode_plan(models: &[ModelSpec], scale: Scale) -> Vec<DecodeCase> {
    let mut plan = Vec::new();
    for (name, recipe) in model_recipes(scale) {
        let Some(m) = models.iter().find(|m| m.name == name) else {
            continue;
        };
        for depth in depths(scale) {
            if depth as u64 >= m.max_context {
                continue;
            }
            let case = format!("{name}-{}-d{depth}", recipe.name().to_lowercase());
            plan.push(DecodeCase {
                case: case.clone(),
                model: m.clone(),
                weights: Weights::Synthetic(recipe),
                depth,
                force_sample: false,
                placement: Placement::Whole,
            });
            if name == "llama-3.2-3b" && scale != Scale::Quick && depth == 4096 {
                plan.push(DecodeCase {
                    case: format!("{case}-sampled"),
                    model: m.clone(),
                    weights: Weights::Synthetic(recipe),
                    depth,
                    force_sample: true,
                    placement: Placement::Whole,
                });
            }
        }
    }
    plan
}

/// The cases of a GGUF file: `gguf-{file stem}-d{depth}` at the suite's depths within the
/// model's context (the spec is the one `spec_from_gguf` derives). An unreadable file is
/// one case that fails with the reason.
pub fn gguf_plan(path: &Path, scale: Scale) -> Result<Vec<DecodeCase>, String> {
    let f = GgufFile::open(path).map_err(|e| e.to_string())?;
    let m = spec_from_gguf(&f).map_err(|e| e.to_string())?;
    let stem: String = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    Ok(depths(scale)
        .into_iter()
        .filter(|&d| (d as u64) < m.max_context)
        .map(|depth| DecodeCase {
            case: format!("gguf-{stem}-d{depth}"),
            model: m.clone(),
            weights: Weights::Gguf(path.to_owned()),
            depth,
            force_sample: false,
            placement: Placement::Whole,
        })
        .collect())
}

/// One row of the decode table.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeRow {
    /// The benchmark id.
    pub id: String,
    /// Tokens cached before the step.
    pub depth: usize,
    /// Layers built and timed (of `layers`).
    pub layers_built: usize,
    /// The model's layers.
    pub layers: u32,
    /// Bytes one token reads: weights and KV.
    pub weight_bytes: u64,
    /// KV bytes read at this depth.
    pub kv_bytes: u64,
    /// Mean step time (ms); absent in Criterion's test mode.
    pub ms_per_token: Option<f64>,
    /// Tokens per second.
    pub tokens_per_s: Option<f64>,
    /// The paired read (GB/s) and the roofline it gives (t/s).
    pub paired_read_gbs: Option<f64>,
    /// `bandwidth ÷ bytes per token` at the paired read.
    pub roofline_tps: Option<f64>,
    /// Measured t/s as a fraction of the roofline (the seed's "50-60 % of theoretical").
    pub fraction_of_roofline: Option<f64>,
    /// llama.cpp's CPU backend on the same GGUF file and threads (`MEMBOUND_LLAMA_BENCH`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llama_cpp: Option<LlamaCppPeer>,
    /// On a GPU: the first built layer's launches, each timed alone ([`layer_by_launch`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_launches: Option<Vec<LaunchTime>>,
}

/// One launch of a GPU step timed alone: a graph of [`ALONE_ITERS`] replays of it, so the time
/// holds the kernel and the gap to the next launch in a graph.
#[derive(Clone, Debug, Serialize)]
pub struct LaunchTime {
    /// The kernel.
    pub kernel: String,
    /// Its grid (blocks in x, y, z).
    pub grid: (u32, u32, u32),
    /// Microseconds per launch.
    pub us: f64,
    /// Weight or cache bytes it must read (`membound_cuda::decode::launch_read_bytes`), where
    /// it reads any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// Replays of one launch (or one sampled layer) when timed alone.
const ALONE_ITERS: u64 = 20;

/// The environment variable naming a `llama-bench` executable: GGUF cases at depth 0 then
/// also run llama.cpp's CPU backend on the same file with the same threads (`-p 0 -n 32`: 32
/// generated tokens from an empty context, 3 repetitions).
pub const LLAMA_BENCH_ENV: &str = "MEMBOUND_LLAMA_BENCH";

/// llama-bench's token-generation rate on a case's file.
#[derive(Clone, Debug, Serialize)]
pub struct LlamaCppPeer {
    /// Mean tokens per second (`avg_ts`).
    pub tokens_per_s: f64,
    /// Their standard deviation (`stddev_ts`).
    pub stddev: f64,
    /// llama.cpp's commit (`build_commit`) and backends (`backends`).
    pub build: String,
    /// The command run.
    pub command: String,
}

/// Runs llama-bench `exe` on `path` with `threads` threads; its JSON `tg32` result.
fn llama_bench(exe: &Path, path: &Path, threads: usize) -> Result<LlamaCppPeer, String> {
    let args = [
        "-m".to_string(),
        path.display().to_string(),
        "-p".into(),
        "0".into(),
        "-n".into(),
        "32".into(),
        "-t".into(),
        threads.to_string(),
        "-r".into(),
        "3".into(),
        "-o".into(),
        "json".into(),
    ];
    let out = std::process::Command::new(exe)
        .args(&args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!(
            "{} exited with {}: {last}",
            exe.display(),
            out.status
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("llama-bench's output is not JSON: {e}"))?;
    let r = v
        .as_array()
        .and_then(|a| a.iter().find(|r| r["n_gen"] == 32))
        .ok_or("llama-bench printed no tg32 result")?;
    let num = |k: &str| {
        r[k].as_f64()
            .ok_or(format!("llama-bench's result has no `{k}`"))
    };
    Ok(LlamaCppPeer {
        tokens_per_s: num("avg_ts")?,
        stddev: num("stddev_ts")?,
        build: format!(
            "{} ({})",
            r["build_commit"].as_str().unwrap_or("?"),
            r["backends"].as_str().unwrap_or("?")
        ),
        command: format!("{} {}", exe.display(), args.join(" ")),
    })
}

/// Runs the decode cases on the CPU; returns the table.
pub fn decode(run: &mut Run, b: &CpuBackend, models: &[ModelSpec]) -> Vec<DecodeRow> {
    let plan = full_plan(run, b.id(), models);
    paired_cases(run, b, &plan, &mut decode_case)
}

/// The suite's cases and, with [`GGUF_ENV`] set, the file's (an unreadable file is one failure).
fn full_plan(run: &mut Run, backend: &str, models: &[ModelSpec]) -> Vec<DecodeCase> {
    let mut plan = decode_plan(models, run.scale);
    if let Some(path) = std::env::var_os(GGUF_ENV) {
        let path = PathBuf::from(path);
        match gguf_plan(&path, run.scale) {
            Ok(cases) => plan.extend(cases),
            Err(e) => run.fail(
                "gguf",
                backend,
                format!("{GGUF_ENV}={}: {e}", path.display()),
            ),
        }
    }
    plan
}

/// Runs `case` for each of `plan` with a read sampled before and after it (the paired read)
/// and fills each row's roofline from it.
fn paired_cases<B: StreamBackend>(
    run: &mut Run,
    b: &B,
    plan: &[DecodeCase],
    case: &mut dyn FnMut(&mut Run, &B, &DecodeCase) -> Option<DecodeRow>,
) -> Vec<DecodeRow> {
    // Only the cases the filter selects: no read arrays and no read samples for the others.
    let plan: Vec<&DecodeCase> = plan
        .iter()
        .filter(|c| run.wanted(&c.case, b.id()))
        .collect();
    if plan.is_empty() {
        return Vec::new();
    }
    let mut paired = PairedRead::new(run, b);
    let mut rows = Vec::new();
    for c in plan {
        let from = run.results.len();
        let before = paired.sample(b);
        if let Some(mut row) = case(run, b, c) {
            let after = paired.sample(b);
            let samples: Vec<f64> = before.into_iter().chain(after).collect();
            run.pair(from, b.id(), &samples);
            row.paired_read_gbs = run.results[from].paired_read_gbs;
            if let Some(gbs) = row.paired_read_gbs {
                let roof = gbs * 1e9 / (row.weight_bytes + row.kv_bytes) as f64;
                row.roofline_tps = Some(roof);
                row.fraction_of_roofline = row.tokens_per_s.map(|t| t / roof);
            }
            rows.push(row);
        }
    }
    rows
}

/// What a case needs before it builds anything: the cache it reads, its weights' source and
/// their bytes.
struct Prepared {
    kv: membound_spec::kv::KvCache,
    loaded: Loaded,
    acc: Accounting,
}

/// A case's weights: a recipe's synthetic ones, or an opened GGUF file.
enum Loaded {
    Synthetic(Recipe),
    File(Box<GgufFile>),
}

impl Prepared {
    /// `None` (the reason recorded) when the cache is out of range or the file unreadable.
    fn new(run: &mut Run, backend: &str, c: &DecodeCase) -> Option<Prepared> {
        let (m, case) = (&c.model, c.case.as_str());
        // The cache the step reads: the depth and the token it appends.
        let kv = match kv_cache(m, KvLayout::native(m), DType::F16, (c.depth + 1) as u64) {
            Ok(kv) => kv,
            Err(e) => {
                run.skip(case, backend, e.to_string());
                return None;
            }
        };
        let (loaded, acc) = match &c.weights {
            Weights::Synthetic(recipe) => (
                Loaded::Synthetic(*recipe),
                Accounting::of_recipe(m, *recipe),
            ),
            Weights::Gguf(path) => match GgufFile::open(path) {
                Ok(f) => {
                    let acc = Accounting::of_file(m, &f);
                    (Loaded::File(Box::new(f)), acc)
                }
                Err(e) => {
                    run.fail(case, backend, e.to_string());
                    return None;
                }
            },
        };
        Some(Prepared { kv, loaded, acc })
    }

    /// The case's tensors (a file's numerics into `opts`).
    fn source<'a>(&'a self, m: &ModelSpec, opts: &mut StepOptions) -> Box<dyn TensorSource + 'a> {
        match &self.loaded {
            Loaded::File(f) => {
                let g = GgufSource::new(f);
                opts.numerics = g.numerics();
                Box::new(g)
            }
            Loaded::Synthetic(recipe) => Box::new(SyntheticSource::new(m, *recipe, 0x6465636f)),
        }
    }
}

/// candle-transformers' quantized model of the same file (llama and qwen3 architectures) as
/// the peer of a depth-0 GGUF case: `forward` of one token at position 0 (its cache reset each
/// call), timed on candle's own CPU threads.
fn candle_peer(run: &mut Run, b: &CpuBackend, c: &DecodeCase, path: &Path, bytes: u64) {
    use candle_core::{Device, Tensor};
    use candle_transformers::models::{quantized_llama, quantized_qwen3};
    let case = format!("candle-{}", c.case);
    if !run.wanted(&case, b.id()) {
        return;
    }
    let arch = c.model.arch.as_str();
    if !matches!(arch, "llama" | "qwen3") {
        run.skip(
            &case,
            b.id(),
            format!(
                "candle-transformers has no CPU model of `{arch}` here (llama and qwen3 are wired)"
            ),
        );
        return;
    }
    let loaded = (|| -> candle_core::Result<Box<dyn FnMut() -> candle_core::Result<()>>> {
        let dev = Device::Cpu;
        let mut file = std::fs::File::open(path)?;
        let ct = candle_core::quantized::gguf_file::Content::read(&mut file)?;
        let x = Tensor::new(&[1u32], &dev)?.unsqueeze(0)?;
        Ok(if arch == "llama" {
            let mut m = quantized_llama::ModelWeights::from_gguf(ct, &mut file, &dev)?;
            Box::new(move || m.forward(&x, 0).map(|_| ()))
        } else {
            let mut m = quantized_qwen3::ModelWeights::from_gguf(ct, &mut file, &dev)?;
            Box::new(move || {
                m.clear_kv_cache();
                m.forward(&x, 0).map(|_| ())
            })
        })
    })();
    let mut forward = match loaded {
        Ok(f) => f,
        Err(e) => {
            run.fail(
                &case,
                b.id(),
                format!("candle could not load the file: {e}"),
            );
            return;
        }
    };
    let kind = Kind::Peer {
        peer: "candle".into(),
        of: run.id(&c.case, b.id()),
    };
    run.bench(b, &case, kind, bytes, || {
        forward().map_err(|e| e.to_string())
    });
}

/// The weight bytes of a case: what a token reads, the embedding and output matrices held,
/// and each layer's stored and read bytes.
struct Accounting {
    token_bytes: u64,
    fixed: u64,
    layer_bytes: Vec<u64>,
    layer_reads: Vec<u64>,
}

impl Accounting {
    /// `membound_spec::bytes` under a recipe (what `membound spec` reports).
    fn of_recipe(m: &ModelSpec, recipe: Recipe) -> Accounting {
        let w = weights(m, recipe);
        Accounting {
            token_bytes: w.totals(m).active_bytes,
            fixed: w
                .tensors
                .iter()
                .filter(|t| matches!(t.desc.class, TensorClass::TokenEmbd | TensorClass::Output))
                .map(|t| t.bytes)
                .sum(),
            layer_bytes: (0..m.n_layers).map(|i| w.layer(m, Some(i)).bytes).collect(),
            layer_reads: (0..m.n_layers).map(|i| w.layer_active_bytes(i)).collect(),
        }
    }

    /// A file's own tensor types and sizes (`membound inspect`'s count).
    fn of_file(m: &ModelSpec, f: &GgufFile) -> Accounting {
        let reads = token_reads(f, Some(m));
        let n = m.n_layers as usize;
        let mut a = Accounting {
            token_bytes: reads.iter().map(|r| r.active_bytes).sum(),
            fixed: 0,
            layer_bytes: vec![0; n],
            layer_reads: vec![0; n],
        };
        for r in &reads {
            match tensor_class(&r.name).0 {
                Some(i) if i < n => {
                    a.layer_bytes[i] += r.bytes;
                    a.layer_reads[i] += r.active_bytes;
                }
                _ => a.fixed += r.bytes,
            }
        }
        a
    }
}

/// Runs the decode cases on one GPU: the whole step as one launch plan
/// (`membound_cuda::decode::step_launches`) over weights uploaded once, timed as a CUDA graph
/// of the step replayed between events (the harness's GPU timing). GQA, MLA and Gated DeltaNet
/// models (what the plan cannot run is skipped with the reason). A model that does not fit the
/// device is built as a sample of its layers, as on the CPU; its step, one graph, is timed
/// whole, and its layer time shared out by each sampled layer's time alone
/// ([`LayerSample::scale_shared`]). Checked before timing as the CPU cases are (finite logits,
/// the same step twice gives the same ones); the plan's results equal the CPU step's in
/// membound-decode's tests, where the host build of the kernels runs it.
pub fn decode_gpu(run: &mut Run, b: &GpuBackend, models: &[ModelSpec]) -> Vec<DecodeRow> {
    let plan = full_plan(run, b.id(), models);
    paired_cases(run, b, &plan, &mut decode_gpu_case)
}

/// Models and recipes of the placement cases: the issue's two GPU goal models, and the seed's
/// split and offload model (GLM-4.7-Flash Q8_0, claims `split-109-tps` and `cpu-offload-3.4x`).
const PLACED_MODELS: [(&str, Recipe); 3] = [
    ("llama-3.1-8b", Recipe::Q4_K_M),
    ("qwen3-30b-a3b", Recipe::Q8_0),
    ("glm-4.7-flash", Recipe::Q8_0),
];

/// Layers the offload cases keep on the CPU (the seed's Ollama run: 4).
pub const OFFLOAD_LAYERS: u32 = 4;

/// The placement cases of `models` on a machine with `gpus` GPUs: each model split in half
/// across two GPUs (`-split{at}`; `-split{at}-one-gpu` where there is one GPU, which then
/// holds both halves) and with its first [`OFFLOAD_LAYERS`] layers on the CPU (`-cpu{n}`), at
/// depth 0 (and 32768 and the seed's 112k at `full`, within the model's context).
pub fn placement_plan(models: &[ModelSpec], scale: Scale, gpus: usize) -> Vec<DecodeCase> {
    let depths: &[usize] = if scale == Scale::Full {
        &[0, 32768, 112 << 10]
    } else {
        &[0]
    };
    let mut plan = Vec::new();
    for (name, recipe) in PLACED_MODELS {
        let Some(m) = models.iter().find(|m| m.name == name) else {
            continue;
        };
        for &depth in depths.iter().filter(|&&d| (d as u64) < m.max_context) {
            let base = format!("{name}-{}-d{depth}", recipe.name().to_lowercase());
            let at = m.n_layers / 2;
            for (placement, suffix) in [
                (
                    Placement::Split { at },
                    if gpus > 1 { "" } else { "-one-gpu" },
                ),
                (
                    Placement::Offload {
                        cpu_layers: OFFLOAD_LAYERS,
                    },
                    "",
                ),
            ] {
                plan.push(DecodeCase {
                    case: format!("{base}-{placement}{suffix}"),
                    model: m.clone(),
                    weights: Weights::Synthetic(recipe),
                    depth,
                    force_sample: false,
                    placement,
                });
            }
        }
    }
    plan
}

/// Runs the placement cases on GPU `b` (and `second`, the next GPU, for a split; `b` again
/// where there is none) with `cpu`'s pool for offloaded layers.
pub fn decode_placed(
    run: &mut Run,
    b: &GpuBackend,
    second: Option<&GpuBackend>,
    cpu: Option<&CpuBackend>,
    models: &[ModelSpec],
) -> Vec<DecodeRow> {
    let plan = placement_plan(models, run.scale, if second.is_some() { 2 } else { 1 });
    if !plan.iter().any(|c| run.wanted(&c.case, b.id())) {
        return Vec::new();
    }
    // Offloaded layers run on the CPU backend's pool, or on a pool of every core where
    // MEMBOUND_BACKENDS left the CPU out (its cases are not run; its threads still are).
    let own;
    let cpu = match cpu {
        Some(cpu) => cpu,
        None => {
            own = CpuBackend::all_cores();
            &own
        }
    };
    let mut rows = paired_cases(run, b, &plan, &mut |run, b, c| {
        decode_placed_case(run, b, second.unwrap_or(b), cpu, c)
    });
    // The GPU's read is no roofline for a step whose first layers stream from host memory.
    let offloaded = format!("-cpu{OFFLOAD_LAYERS}/");
    for r in rows.iter_mut().filter(|r| r.id.contains(&offloaded)) {
        r.roofline_tps = None;
        r.fraction_of_roofline = None;
    }
    rows
}

/// One placement case: the step built across the devices, checked (finite logits, the same
/// step twice alike), timed as wall time of whole steps (each stage waits for the one before,
/// so no graph: the residual stream crosses through host memory as llama.cpp's and Ollama's do
/// at batch 1).
fn decode_placed_case(
    run: &mut Run,
    b: &GpuBackend,
    second: &GpuBackend,
    cpu: &CpuBackend,
    c: &DecodeCase,
) -> Option<DecodeRow> {
    let (m, case) = (&c.model, c.case.as_str());
    if !run.wanted(case, b.id()) {
        return None;
    }
    let pre = Prepared::new(run, b.id(), c)?;
    let (kv, acc) = (&pre.kv, &pre.acc);
    let on_cpu = match c.placement {
        Placement::Offload { cpu_layers } => cpu_layers as usize,
        _ => 0,
    };
    let device_need: u64 = acc.fixed
        + acc
            .layer_bytes
            .get(on_cpu..)
            .unwrap_or(&[])
            .iter()
            .sum::<u64>()
        + (on_cpu as u32..m.n_layers)
            .map(|i| layer_cache(kv, i))
            .sum::<u64>();
    if !fits(run, b, case, device_need) {
        return None;
    }
    let mut opts = StepOptions::new(m, c.depth + 1);
    let src = pre.source(m, &mut opts);
    let gpus = [b, second];
    let built = PlacedStep::new(
        m,
        src.as_ref(),
        &opts,
        b.gpu.info().sm_count.min(second.gpu.info().sm_count),
        c.placement,
        &mut |i, dev| {
            let gpu = &gpus[i.min(1)].gpu;
            let first = step_launches(&dev.desc, 0).map_err(device_error)?;
            let step = GpuStep::new(gpu, &dev.desc, &dev.weights, &first).map_err(device_error)?;
            Ok(OnGpu { gpu, step })
        },
    );
    let placed = match built {
        Ok(p) => p,
        Err(e) if not_built(&e.to_string()) => {
            run.skip(case, b.id(), e.to_string());
            return None;
        }
        Err(e) => {
            run.fail(case, b.id(), format!("set-up: {e}"));
            return None;
        }
    };
    let pool = &*cpu.pool;
    let devices = match c.placement {
        Placement::Split { .. } if second.id() == b.id() => {
            format!("both halves on {} (one GPU)", b.id())
        }
        Placement::Split { .. } => format!("{} then {}", b.id(), second.id()),
        _ => format!("{on_cpu} layers on the CPU, the rest on {}", b.id()),
    };
    eprintln!(
        "membound: decode/{case}/{}: {devices}; {:?} launches per step",
        b.id(),
        placed.launch_counts(c.depth).unwrap_or_default()
    );
    let placed = std::cell::RefCell::new(placed);
    let step = || {
        placed
            .borrow_mut()
            .step(pool, 1, c.depth)
            .map_err(|e| e.to_string())
    };
    checked_and_timed(
        run,
        b,
        c,
        (acc, kv),
        c.model.n_layers as usize,
        &mut || {
            step()?;
            placed.borrow_mut().logits().map_err(|e| e.to_string())
        },
        &mut |iters| crate::harness::wall_time(iters, &mut || step().map(|_| ())),
    )
}

/// A GPU case's check and timing: `logits()` twice must give the same finite logits (else the
/// case fails, untimed), then `time(iters)` is the case's time, `layers_built` of the model's
/// layers built (fewer: a sample).
fn checked_and_timed(
    run: &mut Run,
    b: &GpuBackend,
    c: &DecodeCase,
    (acc, kv): (&Accounting, &membound_spec::kv::KvCache),
    layers_built: usize,
    logits: &mut dyn FnMut() -> Result<Vec<f32>, String>,
    time: &mut dyn FnMut(u64) -> Result<Duration, String>,
) -> Option<DecodeRow> {
    let checked = logits().and_then(|first| check_logits(&first, &logits()?));
    if let Err(e) = checked {
        run.unverified(&c.case, b.id(), e);
        return None;
    }
    let kind = Kind::Decode {
        depth: c.depth,
        layers_built,
        sampled: layers_built < c.model.n_layers as usize,
    };
    let bytes = acc.token_bytes + kv.traffic;
    let idx = run.bench_timed(b, &c.case, kind, bytes, time)?;
    Some(row_of(run, idx, c, acc, kv, layers_built))
}

/// The layers case `c` builds on a backend of `budget` bytes (after the embedding and head) and
/// a last-level cache of `llc` bytes: the whole model where it fits, else a sample reading
/// at least [`LLC_FACTOR`] caches per token (a forced sample: within a third of the model).
/// `None` (the case skipped with the reason) when not one layer of each kind fits.
fn choose_sample(
    run: &mut Run,
    backend: &str,
    c: &DecodeCase,
    pre: &Prepared,
    budget: u64,
    llc: u64,
) -> Option<LayerSample> {
    let (m, kv, acc) = (&c.model, &pre.kv, &pre.acc);
    let memory = |i: u32| acc.layer_bytes[i as usize] + layer_cache(kv, i);
    let reads = |i: u32| {
        acc.layer_reads[i as usize] + kv.per_layer_traffic.get(i as usize).copied().unwrap_or(0)
    };
    let budget = if c.force_sample {
        (0..m.n_layers).map(memory).sum::<u64>() / 3
    } else {
        budget
    };
    let sample = LayerSample::choose(m, budget, LLC_FACTOR * llc, memory, reads);
    if sample.is_none() {
        run.skip(
            &c.case,
            backend,
            format!(
                "not one layer of each kind fits the {:.1} GiB budget",
                budget as f64 / GIB
            ),
        );
    }
    sample
}

/// Prints what case `c` builds: its layers and their bytes, and what a token reads.
fn announce(backend: &str, c: &DecodeCase, pre: &Prepared, sample: &LayerSample, what: &str) {
    let (m, kv, acc) = (&c.model, &pre.kv, &pre.acc);
    let built: u64 = sample
        .layers
        .iter()
        .map(|&i| acc.layer_bytes[i as usize] + layer_cache(kv, i))
        .sum();
    eprintln!(
        "membound: decode/{}/{backend}: building {} of {} layers ({:.2} GiB of weights and cache){what}, {:.2} GiB read per token",
        c.case,
        sample.layers.len(),
        m.n_layers,
        (built + acc.fixed) as f64 / GIB,
        (acc.token_bytes + kv.traffic) as f64 / GIB
    );
}

fn device_error(e: membound_cuda::CudaError) -> membound_decode::DecodeError {
    membound_decode::DecodeError::Request(format!("device: {e}"))
}

/// The table row of result `idx`, a case of every layer.
fn row_of(
    run: &Run,
    idx: usize,
    c: &DecodeCase,
    acc: &Accounting,
    kv: &membound_spec::kv::KvCache,
    layers_built: usize,
) -> DecodeRow {
    let r = &run.results[idx];
    let ms = r.mean_ns.map(|ns| ns / 1e6);
    DecodeRow {
        id: r.id.clone(),
        depth: c.depth,
        layers_built,
        layers: c.model.n_layers,
        weight_bytes: acc.token_bytes,
        kv_bytes: kv.traffic,
        ms_per_token: ms,
        tokens_per_s: ms.map(|ms| 1e3 / ms),
        paired_read_gbs: None,
        roofline_tps: None,
        fraction_of_roofline: None,
        llama_cpp: None,
        layer_launches: None,
    }
}

fn decode_gpu_case(run: &mut Run, b: &GpuBackend, c: &DecodeCase) -> Option<DecodeRow> {
    let (m, case) = (&c.model, c.case.as_str());
    if !run.wanted(case, b.id()) {
        return None;
    }
    let capacity = c.depth + 1;
    let pre = Prepared::new(run, b.id(), c)?;
    let (kv, acc) = (&pre.kv, &pre.acc);
    let budget = b.memory_budget().saturating_sub(acc.fixed);
    let sample = choose_sample(run, b.id(), c, &pre, budget, b.llc_bytes())?;
    let mut opts = StepOptions::new(m, capacity);
    let src = pre.source(m, &mut opts);
    let gpu = &b.gpu;
    let stage = Stage {
        layers: sample.layers.clone(),
        embed: true,
        head: true,
    };
    let built = DeviceStep::stage(m, src.as_ref(), &opts, gpu.info().sm_count, &stage)
        .map_err(|e| e.to_string())
        .and_then(|dev| {
            let plan = step_plan(&dev.desc, c.depth).map_err(|e| e.to_string())?;
            let mut step = GpuStep::new(gpu, &dev.desc, &dev.weights, &plan.launches)
                .map_err(|e| e.to_string())?;
            step.write(gpu, Buf::Embd, &dev.embed(1).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            Ok((step, plan))
        });
    let (step, plan) = match built {
        Ok(s) => s,
        Err(e) if not_built(&e) => {
            run.skip(case, b.id(), e);
            return None;
        }
        Err(e) => {
            run.fail(case, b.id(), format!("set-up: {e}"));
            return None;
        }
    };
    let launches = &plan.launches;
    announce(
        b.id(),
        c,
        &pre,
        &sample,
        &format!(
            ", {} launches per step ({})",
            launches.len(),
            if opts.fuse {
                "fused; MEMBOUND_FUSE=0 for one per operation"
            } else {
                "one per operation: MEMBOUND_FUSE=0"
            }
        ),
    );
    let timed = |iters: u64, l: &[StepLaunch]| -> Result<Duration, String> {
        b.time(iters, &mut || step.run(gpu, l).map_err(|e| e.to_string()))
    };
    // A sample's step is one graph: its layer time is shared out by each sampled layer's time
    // alone (and the embedding and head timed alone), then scaled by layer counts.
    let mut shares = None;
    let per =
        |l: &[StepLaunch]| timed(ALONE_ITERS, l).map(|t| t.as_secs_f64() / ALONE_ITERS as f64);
    if !sample.is_whole(m) {
        let measured = per(&plan.fixed()).and_then(|fixed| {
            let alone = (0..plan.layers.len())
                .map(|k| per(plan.layer(k)))
                .collect::<Result<Vec<f64>, String>>()?;
            Ok((fixed, alone))
        });
        match measured {
            Ok(s) => shares = Some(s),
            Err(e) => {
                run.fail(
                    case,
                    b.id(),
                    format!("timing the sampled layers alone: {e}"),
                );
                return None;
            }
        }
    }
    let mut row = checked_and_timed(
        run,
        b,
        c,
        (acc, kv),
        sample.layers.len(),
        &mut || {
            step.run(gpu, launches).map_err(|e| e.to_string())?;
            gpu.synchronize().map_err(|e| e.to_string())?;
            Ok(f32s(
                &step.read(gpu, Buf::Logits).map_err(|e| e.to_string())?,
            ))
        },
        &mut |iters| {
            let t = timed(iters, launches)?;
            Ok(match &shares {
                None => t,
                Some((fixed, alone)) => {
                    let per = t.as_secs_f64() / iters.max(1) as f64;
                    Duration::from_secs_f64(sample.scale_shared(*fixed, per, alone) * iters as f64)
                }
            })
        },
    )?;
    if let Some(ms) = row.ms_per_token
        && !plan.layers.is_empty()
    {
        match layer_by_launch(plan.layer(0), &per) {
            Ok(times) => {
                print_layer_by_launch(&row.id, sample.layers[0], &times, ms, m.n_layers);
                row.layer_launches = Some(times);
            }
            Err(e) => eprintln!("membound: {}: timing layer 0 launch by launch: {e}", row.id),
        }
    }
    Some(row)
}

/// Each of a layer's launches timed alone (`per`: seconds per launch of a slice of launches):
/// where a layer's time goes, and how much of it is the launches' own fixed cost (the sum of
/// the times alone against the layer's share of the step).
fn layer_by_launch(
    layer: &[StepLaunch],
    per: &dyn Fn(&[StepLaunch]) -> Result<f64, String>,
) -> Result<Vec<LaunchTime>, String> {
    layer
        .iter()
        .map(|l| {
            Ok(LaunchTime {
                kernel: l.kernel.name().to_string(),
                grid: l.config.grid_dim,
                us: per(std::slice::from_ref(l))? * 1e6,
                bytes: membound_cuda::decode::launch_read_bytes(l),
            })
        })
        .collect()
}

/// Prints [`layer_by_launch`]'s times: each launch (with GB/s where it reads weights or cache),
/// their sum, and the step's time per layer.
fn print_layer_by_launch(id: &str, layer: u32, times: &[LaunchTime], ms: f64, layers: u32) {
    let sum: f64 = times.iter().map(|t| t.us).sum();
    eprintln!(
        "membound: {id}: layer {layer} launch by launch, each alone ({ALONE_ITERS} replays in a \
         graph): {sum:.1} µs in {} launches; the step takes {:.1} µs per layer",
        times.len(),
        ms * 1e3 / f64::from(layers.max(1))
    );
    for t in times {
        let rate = t
            .bytes
            .map(|b| {
                format!(
                    ", {:.0} GB/s of {:.2} MB",
                    b as f64 / t.us / 1e3,
                    b as f64 / 1e6
                )
            })
            .unwrap_or_default();
        eprintln!("    {:>8.2} µs  {} {:?}{rate}", t.us, t.kernel, t.grid);
    }
}

/// Whether the `need` bytes of a placement's device part fit GPU `b`'s memory budget; if not,
/// the case is skipped with the sizes.
fn fits(run: &mut Run, b: &GpuBackend, case: &str, need: u64) -> bool {
    let budget = b.memory_budget();
    if need > budget {
        run.skip(
            case,
            b.id(),
            format!(
                "the device part needs {:.1} GiB of the {:.1} GiB budget",
                need as f64 / GIB,
                budget as f64 / GIB
            ),
        );
    }
    need <= budget
}

/// Whether a set-up error says the step is not built for this case (a layer kind, a layout,
/// a weight or cache type without a kernel): the case is skipped with the reason, not failed.
fn not_built(e: &str) -> bool {
    e.contains("not implemented") || e.contains("no CUDA")
}

/// The check before timing: finite logits, and the same step again gave the same ones.
fn check_logits(first: &[f32], again: &[f32]) -> Result<(), String> {
    if !first.iter().all(|v| v.is_finite()) {
        return Err("non-finite logits".into());
    }
    if first != again {
        return Err("the same step twice gave different logits".into());
    }
    Ok(())
}

/// Bytes layer `i`'s cache holds.
fn layer_cache(kv: &membound_spec::kv::KvCache, i: u32) -> u64 {
    kv.per_layer.get(i as usize).copied().unwrap_or(0)
}

fn decode_case(run: &mut Run, b: &CpuBackend, c: &DecodeCase) -> Option<DecodeRow> {
    let (m, case) = (&c.model, c.case.as_str());
    if !run.wanted(case, b.id()) {
        return None;
    }
    let layout = KvLayout::native(m);
    let kv_dtype = DType::F16;
    let capacity = c.depth + 1;
    let pre = Prepared::new(run, b.id(), c)?;
    let (kv, acc) = (&pre.kv, &pre.acc);
    let (weight_bytes, kv_bytes) = (acc.token_bytes, kv.traffic);
    let mut budget = b.memory_budget().saturating_sub(acc.fixed);
    if run.scale == Scale::Quick {
        budget = budget.min(2 << 30);
    }
    let sample = choose_sample(run, b.id(), c, &pre, budget, b.llc_bytes())?;
    let whole = sample.is_whole(m);
    announce(b.id(), c, &pre, &sample, "");
    let mut opts = StepOptions::new(m, capacity);
    opts.kv_dtype = kv_dtype;
    opts.layout = layout;
    opts.sample = sample.clone();
    let src = pre.source(m, &mut opts);
    let mut dec = match CpuDecoder::new(m, src.as_ref(), &opts) {
        Ok(d) => d,
        Err(e) => {
            run.skip(case, b.id(), e.to_string());
            return None;
        }
    };
    // Checked before timing: the step at this depth gives finite logits, and the same step
    // again gives the same ones (the kernels' results are compared with their references in
    // their own suites and in membound-decode's tests against candle-transformers).
    let pool = &b.pool;
    let mut token = 1u32;
    let checked = (|| -> Result<(), String> {
        token = dec.step(pool, token, c.depth).map_err(|e| e.to_string())?;
        let first = dec.logits().to_vec();
        dec.step(pool, 1, c.depth).map_err(|e| e.to_string())?;
        check_logits(&first, dec.logits())
    })();
    if let Err(e) = checked {
        run.unverified(case, b.id(), e);
        return None;
    }
    let kind = Kind::Decode {
        depth: c.depth,
        layers_built: sample.layers.len(),
        sampled: !whole,
    };
    let idx = run.bench_timed(b, case, kind, weight_bytes + kv_bytes, |iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let t = Instant::now();
            token = dec.step(pool, token, c.depth).map_err(|e| e.to_string())?;
            total += if whole {
                t.elapsed()
            } else {
                Duration::from_secs_f64(dec.step_ns() * 1e-9)
            };
        }
        Ok(total)
    })?;
    let mut llama_cpp = None;
    if let (Weights::Gguf(path), 0) = (&c.weights, c.depth) {
        candle_peer(run, b, c, path, weight_bytes + kv_bytes);
        if let Some(exe) = std::env::var_os(LLAMA_BENCH_ENV) {
            match llama_bench(Path::new(&exe), path, b.threads) {
                Ok(p) => {
                    eprintln!(
                        "membound: decode/{case}/{}: llama.cpp (llama-bench tg32, {} threads) {:.2} ± {:.2} t/s",
                        b.id(),
                        b.threads,
                        p.tokens_per_s,
                        p.stddev
                    );
                    llama_cpp = Some(p);
                }
                Err(e) => eprintln!("membound: {LLAMA_BENCH_ENV}: {e}"),
            }
        }
    }
    let r = &run.results[idx];
    let ms = r.mean_ns.map(|ns| ns / 1e6);
    Some(DecodeRow {
        id: r.id.clone(),
        depth: c.depth,
        layers_built: sample.layers.len(),
        layers: m.n_layers,
        weight_bytes,
        kv_bytes,
        ms_per_token: ms,
        tokens_per_s: ms.map(|ms| 1e3 / ms),
        paired_read_gbs: None,
        roofline_tps: None,
        fraction_of_roofline: None,
        llama_cpp,
        layer_launches: None,
    })
}

/// The table as text: per case t/s, ms per token, GiB per token and the fraction of the
/// paired read's roofline; and the sampled estimate's error where a model ran both ways.
pub fn describe(rows: &[DecodeRow]) -> String {
    let mut out = String::from(
        "decode: t/s against the roofline (paired read ÷ bytes per token)\n\n| case | layers | GiB/token | ms/token | t/s | roofline t/s | of roofline |\n|---|---|---|---|---|---|---|\n",
    );
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
    for r in rows {
        out.push_str(&format!(
            "| {} | {}/{} | {:.2} | {} | {} | {} | {} |\n",
            r.id,
            r.layers_built,
            r.layers,
            (r.weight_bytes + r.kv_bytes) as f64 / GIB,
            opt(r.ms_per_token, 1),
            opt(r.tokens_per_s, 2),
            opt(r.roofline_tps, 2),
            opt(r.fraction_of_roofline.map(|f| 100.0 * f), 0) + "%",
        ));
    }
    for r in rows {
        if let (Some(p), Some(t)) = (&r.llama_cpp, r.tokens_per_s) {
            out.push_str(&format!(
                "\n{}: llama.cpp {:.2} ± {:.2} t/s on the same file (build {}); membound {t:.2} t/s = {:.2}x llama.cpp\n",
                r.id,
                p.tokens_per_s,
                p.stddev,
                p.build,
                t / p.tokens_per_s
            ));
        }
    }
    for s in rows.iter().filter(|r| r.id.contains("-sampled/")) {
        let whole_id = s.id.replace("-sampled/", "/");
        if let (Some(w), Some(e)) = (
            rows.iter()
                .find(|r| r.id == whole_id)
                .and_then(|r| r.ms_per_token),
            s.ms_per_token,
        ) {
            out.push_str(&format!(
                "\nsampled estimate {} vs whole model: {:+.1} %\n",
                s.id,
                100.0 * (e / w - 1.0)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_the_issue_models_at_their_depths() {
        let models = membound_spec::registry::embedded().unwrap();
        let plan = decode_plan(&models, Scale::Default);
        for want in [
            "glm-4.7-flash-q8_0-d0",
            "glm-4.7-flash-q4_k_m-d32768",
            "qwen3-coder-30b-a3b-q8_0-d4096",
            "gpt-oss-120b-mxfp4_moe-d4096",
            "llama-3.1-70b-q4_k_m-d0",
            "llama-3.2-3b-q4_k_m-d4096-sampled",
        ] {
            assert!(plan.iter().any(|c| c.case == want), "{want}");
        }
        let quick = decode_plan(&models, Scale::Quick);
        assert!(quick.len() <= 6 && quick.iter().all(|c| c.depth <= 4096));
        let full = decode_plan(&models, Scale::Full);
        for want in [
            "glm-4.7-flash-q8_0-d114688",
            "glm-4.7-flash-q8_0-d202751",
            "qwen3-coder-30b-a3b-q8_0-d262143",
        ] {
            assert!(full.iter().any(|c| c.case == want), "{want}");
        }
        assert!(!full.iter().any(|c| c.case == "glm-4.7-flash-q8_0-d262143"));
    }

    #[test]
    fn placement_cases_name_their_devices() {
        let models = membound_spec::registry::embedded().unwrap();
        let one: Vec<String> = placement_plan(&models, Scale::Default, 1)
            .into_iter()
            .map(|c| c.case)
            .collect();
        assert_eq!(
            one,
            [
                "llama-3.1-8b-q4_k_m-d0-split16-one-gpu",
                "llama-3.1-8b-q4_k_m-d0-cpu4",
                "qwen3-30b-a3b-q8_0-d0-split24-one-gpu",
                "qwen3-30b-a3b-q8_0-d0-cpu4",
                "glm-4.7-flash-q8_0-d0-split23-one-gpu",
                "glm-4.7-flash-q8_0-d0-cpu4",
            ]
        );
        let two: Vec<DecodeCase> = placement_plan(&models, Scale::Full, 2);
        let has = |case: &str| two.iter().any(|c| c.case == case);
        assert!(has("qwen3-30b-a3b-q8_0-d32768-split24"));
        assert!(has("glm-4.7-flash-q8_0-d114688-cpu4"));
        // Qwen3-30B-A3B's context is 40,960 tokens: no 112k case.
        assert!(!has("qwen3-30b-a3b-q8_0-d114688-cpu4"));
        for c in &two {
            assert!(c.placement.check(&c.model).is_ok(), "{}", c.case);
        }
    }
}
