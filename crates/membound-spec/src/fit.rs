//! The memory-fit planner: does a model fit on these devices at this context, where do its
//! layers go, and how fast can it decode at best?
//!
//! Placement follows llama.cpp's layer split: the token embeddings stay in host memory (one
//! row is read per token), each transformer block goes whole — weights and its KV cache — to
//! one device, the output projection counts as one more layer, and when not everything fits the
//! *first* blocks stay on the CPU (llama.cpp's `-ngl N` offloads the last N). Devices are filled
//! in the order given. Each GPU also holds a fixed `reserve` for the runtime: CUDA context,
//! cuBLAS workspace, compute buffers and what the desktop shows. Its default, 2.75 GiB per GPU,
//! is calibrated on the seed's llama.cpp runs on a 4090 + 5070 Ti (VRAM in use minus weights
//! minus KV: 5.3 GiB at 64k, 6.1 GiB at 112k, 6.7 GiB at 202k over the two cards); pass
//! another with [`FitRequest::reserve_bytes`].
//!
//! The roofline: each device streams the bytes one token reads from it (active weights of its
//! layers and their KV at full depth) at its bandwidth, one after another, so
//! `t/token = Σ bytes_d / bandwidth_d` and the best case is `1 / t`.

use serde::Serialize;

use crate::bytes::{Weights, weights};
use crate::dtype::DType;
use crate::hardware::{Device, DeviceKind};
use crate::kv::{KvCache, KvError, KvLayout, kv_cache};
use crate::model::{MAX_CONTEXT, ModelSpec};
use crate::recipe::Recipe;
use crate::tensors::TensorClass;

/// Default per-GPU runtime reserve (see the module docs for its calibration).
pub const DEFAULT_RESERVE_BYTES: u64 = 11 * (1 << 30) / 4;

/// What to plan.
#[derive(Debug, Clone)]
pub struct FitRequest {
    /// Weight recipe.
    pub recipe: Recipe,
    /// KV-cache element type.
    pub kv_dtype: DType,
    /// KV layout (`None`: the model's native one).
    pub kv_layout: Option<KvLayout>,
    /// Context length in tokens.
    pub ctx: u64,
    /// GPUs (or a unified-memory device), filled in this order.
    pub devices: Vec<Device>,
    /// Host CPU that keeps the embeddings and the layers that do not fit.
    pub host: Device,
    /// Bytes reserved on each GPU for the runtime.
    pub reserve_bytes: u64,
}

/// Why a plan could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Context zero or beyond what is sensible.
    #[error(
        "context {ctx} is out of range: give 1..={max} tokens (the model supports {supported})"
    )]
    BadContext { ctx: u64, max: u64, supported: u64 },
    /// The KV layout or type does not apply.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// No device was given.
    #[error("no devices given")]
    NoDevices,
    /// A CPU was given where a GPU was expected.
    #[error("device `{0}` is a CPU; give GPUs with --devices and the CPU with --host")]
    CpuAsDevice(String),
}

/// One device's share.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceShare {
    /// The device.
    pub device: Device,
    /// Blocks placed here (`first..end`).
    pub layers: (u32, u32),
    /// Whether the output projection is here.
    pub output: bool,
    /// Weight bytes resident.
    pub weight_bytes: u64,
    /// KV bytes resident at the planned context.
    pub kv_bytes: u64,
    /// Runtime reserve (GPUs only).
    pub reserve_bytes: u64,
    /// Weight + KV bytes one token reads here.
    pub read_per_token: u64,
    /// Seconds per token at this device's bandwidth, if known.
    pub seconds_per_token: Option<f64>,
}

impl DeviceShare {
    /// All bytes used.
    pub fn used(&self) -> u64 {
        self.weight_bytes + self.kv_bytes + self.reserve_bytes
    }
}

/// A plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Model name.
    pub model: String,
    /// Recipe.
    pub recipe: Recipe,
    /// KV cache at the planned context.
    pub kv: KvCache,
    /// Total weight bytes.
    pub weight_bytes: u64,
    /// Weight bytes read per token.
    pub weight_bytes_active: u64,
    /// Devices' shares, in order.
    pub devices: Vec<DeviceShare>,
    /// The host's share (embeddings and spilled blocks).
    pub host: DeviceShare,
    /// Blocks (and output) that did not fit on the devices.
    pub spilled_layers: u32,
    /// Whether everything fits in host + device memory at all.
    pub fits: bool,
    /// Best-case tokens per second of this placement (`None` when a bandwidth is unknown).
    pub roofline_tps: Option<f64>,
}

struct Unit {
    first: u32,
    end: u32,
    output: bool,
    bytes: u64,
    kv: u64,
    read: u64,
}

/// Plans `m` under `req`.
pub fn plan(m: &ModelSpec, req: &FitRequest) -> Result<Plan, FitError> {
    if req.ctx == 0 || req.ctx > MAX_CONTEXT {
        return Err(FitError::BadContext {
            ctx: req.ctx,
            max: MAX_CONTEXT,
            supported: m.max_context,
        });
    }
    if req.devices.is_empty() {
        return Err(FitError::NoDevices);
    }
    if let Some(d) = req.devices.iter().find(|d| d.kind == DeviceKind::Cpu) {
        return Err(FitError::CpuAsDevice(d.id.clone()));
    }
    let layout = req.kv_layout.unwrap_or_else(|| KvLayout::native(m));
    let kv = kv_cache(m, layout, req.kv_dtype, req.ctx)?;
    let w = weights(m, req.recipe);
    let units = units(m, &w, &kv);
    let n_units = units.len();

    // The largest number of trailing units that fits on the devices, filled in order.
    let mut placed = vec![None; n_units];
    for n_gpu in (0..=n_units).rev() {
        if let Some(p) = fill(&units[n_units - n_gpu..], req) {
            placed = vec![None; n_units - n_gpu];
            placed.extend(p.into_iter().map(Some));
            break;
        }
    }
    let share = |device: &Device, reserve: u64, which: &dyn Fn(usize) -> bool| {
        let mine: Vec<&Unit> = units
            .iter()
            .enumerate()
            .filter(|(i, _)| which(*i))
            .map(|(_, u)| u)
            .collect();
        let layers = mine
            .iter()
            .filter(|u| !u.output)
            .fold((u32::MAX, 0), |(a, b), u| (a.min(u.first), b.max(u.end)));
        let read: u64 = mine.iter().map(|u| u.read).sum();
        DeviceShare {
            device: device.clone(),
            layers: if layers.0 == u32::MAX { (0, 0) } else { layers },
            output: mine.iter().any(|u| u.output),
            weight_bytes: mine.iter().map(|u| u.bytes).sum(),
            kv_bytes: mine.iter().map(|u| u.kv).sum(),
            reserve_bytes: reserve,
            read_per_token: read,
            seconds_per_token: device.bandwidth_gbs.map(|gbs| read as f64 / (gbs * 1e9)),
        }
    };
    let devices: Vec<DeviceShare> = req
        .devices
        .iter()
        .enumerate()
        .map(|(d, dev)| share(dev, req.reserve_bytes, &|i| placed[i] == Some(d)))
        .collect();
    let mut host = share(&req.host, 0, &|i| placed[i].is_none());
    // The embeddings always stay with the host: add them to its share.
    let embd = w.class(m, TensorClass::TokenEmbd);
    host.weight_bytes += embd.bytes;
    host.read_per_token += embd.bytes / m.vocab;
    host.seconds_per_token = req
        .host
        .bandwidth_gbs
        .map(|gbs| host.read_per_token as f64 / (gbs * 1e9));
    let spilled_layers = placed.iter().filter(|p| p.is_none()).count() as u32;
    let host_fits = host.used() <= req.host.memory_bytes || req.host.memory_bytes == 0;
    let roofline_tps = roofline(
        devices
            .iter()
            .chain(std::iter::once(&host))
            .map(|s| (s.read_per_token, s.device.bandwidth_gbs)),
    );
    let totals = w.totals(m);
    Ok(Plan {
        model: m.name.clone(),
        recipe: req.recipe,
        kv,
        weight_bytes: totals.bytes,
        weight_bytes_active: totals.active_bytes,
        devices,
        host,
        spilled_layers,
        fits: host_fits,
        roofline_tps,
    })
}

/// Best-case tokens per second when each device streams its `(bytes per token, GB/s)` one
/// after another; `None` when a device that reads something has no known bandwidth.
fn roofline(shares: impl Iterator<Item = (u64, Option<f64>)>) -> Option<f64> {
    let seconds: Option<f64> = shares
        .map(|(read, gbs)| match (read, gbs) {
            (0, _) => Some(0.0),
            (read, gbs) => gbs.map(|g| read as f64 / (g * 1e9)),
        })
        .sum();
    seconds.filter(|s| *s > 0.0).map(|s| 1.0 / s)
}

/// The roofline of plan `p` (made for `req`) when the cache holds only `depth` tokens: the same
/// placement, memory sized for `req.ctx`, but each token reads the KV at `depth` — how a
/// measurement at a short prompt in a long context compares.
pub fn roofline_at_depth(
    m: &ModelSpec,
    req: &FitRequest,
    p: &Plan,
    depth: u64,
) -> Result<Option<f64>, FitError> {
    let kv = kv_cache(m, p.kv.layout, req.kv_dtype, depth.clamp(1, MAX_CONTEXT))?;
    let layers = |s: &DeviceShare, v: &[u64]| -> u64 {
        v[s.layers.0 as usize..s.layers.1 as usize].iter().sum()
    };
    let read = |s: &DeviceShare| {
        s.read_per_token - layers(s, &p.kv.per_layer_traffic) + layers(s, &kv.per_layer_traffic)
    };
    Ok(roofline(
        p.devices
            .iter()
            .chain(std::iter::once(&p.host))
            .map(|s| (read(s), s.device.bandwidth_gbs)),
    ))
}

/// Blocks (weights + KV) and the output layer, in order.
fn units(m: &ModelSpec, w: &Weights, kv: &KvCache) -> Vec<Unit> {
    let mut units: Vec<Unit> = (0..m.n_layers)
        .map(|i| {
            let t = w.layer(m, Some(i));
            let i_ = i as usize;
            Unit {
                first: i,
                end: i + 1,
                output: false,
                bytes: t.bytes,
                kv: kv.per_layer[i_],
                read: t.active_bytes + kv.per_layer_traffic[i_],
            }
        })
        .collect();
    // Output norm + output projection (a tied model's output is its embedding matrix, which
    // llama.cpp duplicates onto the output device).
    let mut out = w.layer(m, None);
    let embd = w.class(m, TensorClass::TokenEmbd);
    out.bytes -= embd.bytes;
    out.active_bytes -= embd.active_bytes;
    if m.tied_embeddings {
        out.bytes += embd.bytes;
        out.active_bytes += embd.bytes;
    }
    units.push(Unit {
        first: m.n_layers,
        end: m.n_layers,
        output: true,
        bytes: out.bytes,
        kv: 0,
        read: out.active_bytes,
    });
    units
}

/// Fills `units` over the devices in order; `None` if they do not all fit.
fn fill(units: &[Unit], req: &FitRequest) -> Option<Vec<usize>> {
    let mut out = Vec::with_capacity(units.len());
    let mut d = 0;
    let mut used = 0u64;
    for u in units {
        loop {
            let dev = req.devices.get(d)?;
            let cap = dev.memory_bytes.saturating_sub(req.reserve_bytes);
            if used + u.bytes + u.kv <= cap {
                used += u.bytes + u.kv;
                out.push(d);
                break;
            }
            d += 1;
            used = 0;
        }
    }
    Some(out)
}
