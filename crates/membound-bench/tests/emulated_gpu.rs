//! The dense suite's driver on the CUDA kernels executed on the CPU (membound-cuda-host): the
//! same case list, GPU-side check (`check_cuda_gemv`), rotation, Criterion registration and
//! paired read as on a real GPU, on small shapes. Skips where no host C++ compiler existed.

use std::time::Duration;

use criterion::Criterion;
use membound_bench::attention::AttnBackend;
use membound_bench::attention_suite::{self, AttnCase};
use membound_bench::gemv::{GemvBackend, check_cuda_gemv};
use membound_bench::harness::{Backend, Kind, wall_time};
use membound_bench::moe::{MoeBackend, Pattern, kernel_weights};
use membound_bench::moe_suite::{self, MoeCase, Sweep};
use membound_bench::stream::{StreamBackend, pattern};
use membound_bench::{Run, Scale, suites};
use membound_cpu::attention::KvCacheBuf;
use membound_cpu::moe::{MoeWeights, Routing};
use membound_cuda::StreamOp;
use membound_cuda::bandwidth::read_checksum;
use membound_cuda::moe::{MoeBuf, MoeInput};
use membound_cuda_host::HostAttn;
use membound_cuda_host::HostMoe;
use membound_cuda_host::{HostBuffer, HostGpu};
use membound_spec::DType;
use membound_spec::attention::AttnShape;
use membound_spec::kv::KvLayout;
use membound_spec::model::RouterScoring;
use membound_spec::moe::{Activation, MoeLayer, MoeTypes};

/// The emulated GPU as a backend (times are host times of emulated kernels: meaningless as
/// performance, exercised as a path).
struct Emulated(HostGpu);

impl Backend for Emulated {
    fn id(&self) -> &str {
        "gpu0"
    }
    fn llc_bytes(&self) -> u64 {
        64 << 10
    }
    fn memory_budget(&self) -> u64 {
        1 << 30
    }
    fn spec_gbs(&self) -> Option<f64> {
        None
    }
    fn time(
        &self,
        iters: u64,
        f: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Duration, String> {
        wall_time(iters, f)
    }
}

impl StreamBackend for Emulated {
    type Arrays = (HostBuffer, Vec<f32>);
    fn stream_ops(&self) -> Vec<StreamOp> {
        vec![StreamOp::Read]
    }
    fn arrays(&self, _op: StreamOp, _n: usize) -> Result<Self::Arrays, String> {
        // A small array whatever the plan says: emulated kernels record every load.
        let a = pattern(4099);
        Ok((HostBuffer::from_slice(&a), a))
    }
    fn run(&self, _op: StreamOp, x: &mut Self::Arrays) -> Result<(), String> {
        self.0.read(&x.0).map(|_| ()).map_err(|e| e.to_string())
    }
    fn check(&self, _op: StreamOp, x: &mut Self::Arrays) -> Result<(), String> {
        let (sum, _) = self.0.read(&x.0).map_err(|e| e.to_string())?;
        (sum == read_checksum(&x.1))
            .then_some(())
            .ok_or("read checksum differs".into())
    }
}

impl GemvBackend for Emulated {
    type Matrix = (DType, usize, usize, HostBuffer);
    type Vectors = (HostBuffer, HostBuffer);
    type PeerMatrix = ();

    fn gemv_dtypes(&self) -> Vec<DType> {
        membound_cuda::gemv::GEMV_DTYPES.to_vec()
    }
    fn matrix(
        &self,
        dtype: DType,
        rows: usize,
        cols: usize,
        w: &[u8],
    ) -> Result<Self::Matrix, String> {
        Ok((dtype, rows, cols, HostBuffer::from_slice(w)))
    }
    fn vectors(&self, x: &[f32], rows: usize) -> Result<Self::Vectors, String> {
        Ok((HostBuffer::from_slice(x), HostBuffer::poisoned(4 * rows)))
    }
    fn gemv(&self, m: &Self::Matrix, v: &mut Self::Vectors) -> Result<(), String> {
        self.0
            .gemv(m.0, m.1, m.2, &m.3, &v.0, &mut v.1)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn output(&self, v: &Self::Vectors) -> Result<Vec<f32>, String> {
        Ok(v.1.to_vec::<f32>())
    }
    fn check_gemv(
        &self,
        dtype: DType,
        rows: usize,
        cols: usize,
        w: &[u8],
        x: &[f32],
        y: &[f32],
    ) -> Result<(), String> {
        check_cuda_gemv(dtype, rows, cols, w, x, y)
    }
    fn peers(&self, _dtype: DType) -> Vec<&'static str> {
        Vec::new()
    }
    fn peer_matrix(
        &self,
        _p: &str,
        _d: DType,
        _r: usize,
        _c: usize,
        _w: &[u8],
    ) -> Result<(), String> {
        Err("no peers".into())
    }
    fn peer_gemv(&self, _p: &str, _m: &(), _v: &mut Self::Vectors) -> Result<(), String> {
        Err("no peers".into())
    }
    fn peer_tolerance(&self, _p: &str) -> f32 {
        0.0
    }
    fn gemm(&self, _m: &Self::Matrix, _xs: &[f32], _b: usize) -> Option<Result<Vec<f32>, String>> {
        None
    }
}

/// A short Criterion writing under one temporary folder (set once for the tests of this binary,
/// which run on parallel threads).
fn criterion() -> Criterion {
    static HOME: std::sync::Once = std::sync::Once::new();
    HOME.call_once(|| {
        let dir = std::env::temp_dir().join(format!("membound-emulated-{}", std::process::id()));
        // SAFETY: set once, before any test of this binary reads the environment here.
        unsafe { std::env::set_var("CRITERION_HOME", &dir) };
    });
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(10))
        .without_plots()
}

impl MoeBackend for Emulated {
    type Moe = HostMoe;
    fn moe_dtypes(&self) -> Vec<DType> {
        membound_cuda::gemv::GEMV_DTYPES.to_vec()
    }
    fn moe_act_dtype(&self, weight: DType) -> DType {
        membound_cuda::gemv::activation_dtype(weight)
    }
    fn moe(
        &self,
        layer: &MoeLayer,
        w: &MoeWeights,
        inputs: &[MoeInput<'_>],
    ) -> Result<HostMoe, String> {
        let tokens = inputs[0].0.len() / layer.hidden;
        let mut m =
            HostMoe::new(layer, &kernel_weights(w), tokens, true).map_err(|e| e.to_string())?;
        m.set_inputs(inputs).map_err(|e| e.to_string())?;
        Ok(m)
    }
    fn moe_forward(&self, m: &mut HostMoe, slot: usize) -> Result<(), String> {
        m.forward(slot).map(|_| ()).map_err(|e| e.to_string())
    }
    fn moe_result(&self, m: &HostMoe) -> Result<(Vec<f32>, Routing), String> {
        let e = |e: membound_cuda_host::HostError| e.to_string();
        Ok((
            m.read(MoeBuf::Out).map_err(e)?,
            Routing {
                ids: m.read(MoeBuf::Ids).map_err(e)?,
                weights: m.read(MoeBuf::Weights).map_err(e)?,
                shared: m.read(MoeBuf::SharedW).map_err(e)?,
            },
        ))
    }
}

/// The moe driver on the emulated kernels: a Qwen3-like and a gpt-oss-like small layer (shared
/// expert, biases, batch of 3), the GPU-side check, rotation, the dense chain peer, pairing.
#[test]
fn moe_suite_runs_on_emulated_cuda_kernels() {
    if let Err(e) = membound_cuda_host::available() {
        println!("skipped: {e}");
        return;
    }
    let mut run = Run::with_criterion("moe", Scale::Quick, criterion());
    let small = MoeLayer::new(256, 8, 2, 256, MoeTypes::all(DType::Q4_K));
    let oss = MoeLayer {
        router: RouterScoring::TopkSoftmax,
        norm_topk: false,
        router_bias: true,
        expert_bias: true,
        activation: Activation::SwigluOai,
        shared_ff: 64,
        shared_gate: true,
        types: MoeTypes::all(DType::MXFP4),
        ..small.clone()
    };
    let plan = [
        MoeCase {
            case: "small-q4_k".into(),
            layer: small,
            pattern: Pattern::Uniform,
            tokens: 1,
            sweep: Sweep::Model,
            dense_peer: true,
        },
        MoeCase {
            case: "oss-mxfp4-b3".into(),
            layer: oss,
            pattern: Pattern::Zipf,
            tokens: 3,
            sweep: Sweep::Batch,
            dense_peer: false,
        },
    ];
    let v = moe_suite::moe_cases(&mut run, &Emulated(HostGpu::default()), &plan);
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    let ran: Vec<&str> = run.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ran,
        [
            "moe/small-q4_k/gpu0",
            "moe/small-q4_k-dense/gpu0",
            "moe/oss-mxfp4-b3/gpu0"
        ]
    );
    for r in &run.results {
        assert!(r.mean_ns.is_some() && r.paired_read_gbs.is_some(), "{r:?}");
    }
    assert_eq!(v.dense_ratio.len(), 1);
    assert_eq!(v.verdict, "not measured", "two cases are no fit");
}

impl AttnBackend for Emulated {
    type Attn = HostAttn;
    fn attn_dtypes(&self) -> Vec<DType> {
        vec![DType::F16, DType::BF16, DType::Q8_0]
    }
    fn attn(
        &self,
        cache: &KvCacheBuf,
        q: &[f32],
        sinks: &[f32],
        depth: usize,
    ) -> Result<HostAttn, String> {
        HostAttn::new(
            cache.shape(),
            cache.tokens(),
            cache.k_bytes(),
            cache.v_bytes(),
            q,
            sinks,
            depth,
            None,
            false,
        )
        .map_err(|e| e.to_string())
    }
    fn attn_forward(&self, a: &mut HostAttn) -> Result<(), String> {
        a.forward().map(|_| ()).map_err(|e| e.to_string())
    }
    fn attn_output(&self, a: &HostAttn) -> Result<Vec<f32>, String> {
        Ok(a.output())
    }
    fn attn_splits(&self, a: &HostAttn) -> usize {
        a.plan().params.splits as usize
    }
}

/// The attention driver on the emulated kernels: an MLA latent and a windowed GQA layer with
/// sinks at two depths, the GPU-side check, rotation, pairing and the table.
#[test]
fn attention_suite_runs_on_emulated_cuda_kernels() {
    if let Err(e) = membound_cuda_host::available() {
        println!("skipped: {e}");
        return;
    }
    let mut run = Run::with_criterion("attention", Scale::Quick, criterion());
    let mla = AttnShape::new(KvLayout::MlaLatent, 4, 1, 576, 512, DType::Q8_0);
    let swa = AttnShape {
        window: Some(48),
        sinks: true,
        ..AttnShape::new(KvLayout::Gqa, 4, 2, 64, 64, DType::F16)
    };
    let case = |name: &str, layout: &str, shape: &AttnShape, depth: usize| AttnCase {
        case: format!("{name}-d{depth}"),
        model: name.into(),
        layout: layout.into(),
        shape: shape.clone(),
        depth,
        layer_weight_bytes: 1 << 20,
    };
    let plan = [
        case("mla", "mla-latent", &mla, 64),
        case("mla", "mla-latent", &mla, 200),
        case("swa", "gqa-swa", &swa, 100),
    ];
    let t = attention_suite::attention_cases(&mut run, &Emulated(HostGpu::default()), &plan);
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    assert_eq!(t.rows.len(), 3);
    assert!(
        t.rows
            .iter()
            .all(|r| r.ns > 0.0 && r.paired_read_gbs.is_some())
    );
    assert_eq!(t.crossovers.len(), 2);
    assert!(t.markdown().contains("| mla | mla-latent | q8_0 | 200 |"));
}

#[test]
fn dense_suite_runs_on_emulated_cuda_kernels() {
    if let Err(e) = membound_cuda_host::available() {
        println!("skipped: {e}");
        return;
    }
    let mut run = Run::with_criterion("dense", Scale::Quick, criterion());
    // Rows not a multiple of the rows per block; 512 columns fit every block size.
    suites::dense_shapes_on(&mut run, &Emulated(HostGpu::default()), &[(37, 512)]);
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    let ran: Vec<&str> = run.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ran.len(), 6, "{ran:?}");
    for r in &run.results {
        assert!(matches!(r.kind, Kind::Gemv { .. }), "{r:?}");
        assert!(r.mean_ns.is_some() && r.paired_read_gbs.is_some(), "{r:?}");
    }
    assert!(ran.contains(&"dense/q4_k-37x512/gpu0"));
}
