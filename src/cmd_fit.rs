//! `membound fit` and `membound hardware`.

use anyhow::{Context, Result, bail};
use membound_spec::bytes::weights;
use membound_spec::fit::{
    DEFAULT_RESERVE_BYTES, DeviceShare, FitRequest, Plan, plan, roofline_at_depth,
};
use membound_spec::hardware::{Device, DeviceKind, device, host_cpu, table as hw_table};
use membound_spec::kv::{KvLayout, kv_cache, linear_state_bytes, swa_cells};
use membound_spec::model::LayerKind;
use membound_spec::registry::find;
use membound_spec::{DType, ModelSpec, Recipe};
use serde_json::json;

use crate::cmd_spec::layer_summary;
use crate::units::{count, gib, human, parse_ctx, table};

/// Arguments of `membound fit`.
#[derive(clap::Args)]
pub struct Args {
    /// Model name (see `membound models`) or path to a spec `.toml`.
    pub model: String,
    /// Weight recipe: Q4_K_M, Q8_0, MXFP4_MOE, BF16, …
    #[arg(long, default_value = "Q4_K_M")]
    pub quant: String,
    /// KV-cache element type: f16, bf16, q8_0, q4_0, f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: String,
    /// KV layout: gqa, mla-latent (llama.cpp), mla-split (Ollama-like), expanded-mha. Default:
    /// the model's native one.
    #[arg(long)]
    pub kv_layout: Option<String>,
    /// Context length: 4096, 64k, 112k, 1m.
    #[arg(long, default_value = "4096", value_parser = parse_ctx)]
    pub ctx: u64,
    /// GPUs in fill order, comma-separated: 4090,5070ti | gb10 | h100 | 5090 … (see `membound hardware`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub devices: Vec<String>,
    /// Host CPU holding the embeddings and spilled layers: `host` (this machine), 5800x3d, grace-gb10.
    /// Default: grace-gb10 with a gb10, else this machine.
    #[arg(long)]
    pub host: Option<String>,
    /// Host memory bandwidth in GB/s (overrides the table; this machine's is unknown unless given).
    #[arg(long)]
    pub host_bw: Option<f64>,
    /// Memory reserved on each GPU for the runtime (CUDA context, compute buffers, display), GiB.
    #[arg(long)]
    pub reserve_gib: Option<f64>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Parses a KV-cache element type, refusing types no runtime caches KV in.
pub fn kv_dtype(s: &str) -> Result<DType> {
    let kv_dtype: DType = s.parse()?;
    if !matches!(
        kv_dtype,
        DType::F32
            | DType::F16
            | DType::BF16
            | DType::Q8_0
            | DType::Q4_0
            | DType::Q4_1
            | DType::Q5_0
            | DType::Q5_1
            | DType::IQ4_NL
            | DType::F8_E4M3
    ) {
        bail!(
            "KV type {kv_dtype} is not a KV-cache type (use f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, f32, f8_e4m3)"
        );
    }
    Ok(kv_dtype)
}

fn request(a: &Args, m: &ModelSpec) -> Result<FitRequest> {
    let recipe: Recipe = a.quant.parse()?;
    let kv_dtype = kv_dtype(&a.kv_type)?;
    let kv_layout = a
        .kv_layout
        .as_deref()
        .map(str::parse::<KvLayout>)
        .transpose()?;
    let devices = a
        .devices
        .iter()
        .map(|d| device(d))
        .collect::<Result<Vec<_>, _>>()?;
    let host_id = a.host.clone().unwrap_or_else(|| {
        if devices.iter().any(|d| d.id == "gb10") {
            "grace-gb10".into()
        } else {
            "host".into()
        }
    });
    let mut host = device(&host_id)?;
    if host.kind != DeviceKind::Cpu {
        bail!("--host `{host_id}` is a GPU; give a CPU (host, 5800x3d, grace-gb10)");
    }
    if let Some(bw) = a.host_bw {
        if !(bw.is_finite() && bw > 0.0) {
            bail!("--host-bw must be a positive number of GB/s");
        }
        host.bandwidth_gbs = Some(bw);
    }
    let reserve_bytes = match a.reserve_gib {
        None => DEFAULT_RESERVE_BYTES,
        Some(g) if g.is_finite() && (0.0..1024.0).contains(&g) => (g * (1u64 << 30) as f64) as u64,
        Some(g) => bail!("--reserve-gib {g} is out of range (0..1024)"),
    };
    if a.ctx > m.max_context {
        crate::warn(&format!(
            "note: context {} exceeds {}'s max_position_embeddings {}",
            a.ctx, m.name, m.max_context
        ));
    }
    Ok(FitRequest {
        recipe,
        kv_dtype,
        kv_layout,
        ctx: a.ctx,
        devices,
        host,
        reserve_bytes,
    })
}

fn share_row(s: &DeviceShare) -> Vec<String> {
    let layers = match (s.layers.1 > s.layers.0, s.output) {
        (true, true) => format!("{}..{} + output", s.layers.0, s.layers.1 - 1),
        (true, false) => format!("{}..{}", s.layers.0, s.layers.1 - 1),
        (false, true) => "output".into(),
        (false, false) => "-".into(),
    };
    let free = s.device.memory_bytes as i128 - s.used() as i128;
    vec![
        s.device.id.clone(),
        layers,
        gib(s.weight_bytes),
        gib(s.kv_bytes),
        gib(s.reserve_bytes),
        format!("{} / {}", gib(s.used()), gib(s.device.memory_bytes)),
        if free < 0 {
            "OVER".into()
        } else {
            gib(free as u64)
        },
        s.device
            .bandwidth_gbs
            .map_or("unknown".into(), |b| format!("{b:.0} GB/s")),
        format!("{:.3} GB", s.read_per_token as f64 / 1e9),
    ]
}

/// Runs `membound fit`.
pub fn run(a: &Args) -> Result<()> {
    let m = find(&a.model)?;
    let req = request(a, &m)?;
    let p = plan(&m, &req).with_context(|| format!("planning {}", m.name))?;
    let w = weights(&m, req.recipe);
    let layouts: Vec<_> = KvLayout::applicable(&m)
        .iter()
        .map(|l| kv_cache(&m, *l, req.kv_dtype, req.ctx).map(|k| (*l, k)))
        .collect::<Result<_, _>>()?;
    let device_ids: Vec<&str> = req.devices.iter().map(|d| d.id.as_str()).collect();
    let published: Vec<_> = m
        .published
        .decode
        .iter()
        .filter(|d| {
            d.recipe.eq_ignore_ascii_case(req.recipe.name())
                && d.devices
                    .iter()
                    .map(|x| device(x).map(|d| d.id).unwrap_or_default())
                    .eq(device_ids.iter().map(|s| s.to_string()))
        })
        .collect();
    // Each measurement against the roofline at its own depth (the planned context when the
    // depth is not published).
    let against: Vec<_> = published
        .iter()
        .map(|d| {
            let depth = d.ctx.unwrap_or(req.ctx);
            roofline_at_depth(&m, &req, &p, depth).map(|r| (d, depth, r))
        })
        .collect::<Result<_, _>>()?;
    if a.json {
        let v = json!({
            "plan": p,
            "weights_by_class": w.by_class(&m),
            "weights_by_type": w.by_dtype().iter().map(|(k, v)| (k.name().to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            "kv_by_layout": layouts.iter().map(|(l, k)| json!({"layout": l.name(), "bytes": k.total, "bytes_per_token_layer": k.bytes_per_token_layer})).collect::<Vec<_>>(),
            "published_decode": against.iter().map(|(d, depth, r)| json!({"measurement": d, "roofline_depth": depth, "roofline_tps": r, "fraction_of_roofline": r.map(|r| d.tps / r)})).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print_plan(&m, &p, &req, &w, &layouts)?;
    for (d, depth, r) in against {
        let frac = r
            .map(|r| {
                format!(
                    " = {:.0} % of the roofline at depth {depth} ({r:.1} t/s)",
                    100.0 * d.tps / r
                )
            })
            .unwrap_or_default();
        let at = match d.ctx {
            Some(c) => format!(" at depth {c}"),
            None => ", depth not published".into(),
        };
        outln!(
            "published: {:.2} t/s with {}{at} ({}){frac}",
            d.tps,
            d.runtime,
            d.source
        );
    }
    Ok(())
}

fn print_plan(
    m: &ModelSpec,
    p: &Plan,
    req: &FitRequest,
    w: &membound_spec::bytes::Weights,
    layouts: &[(KvLayout, membound_spec::kv::KvCache)],
) -> Result<()> {
    outln!(
        "{} {} — KV {} {} at {} tokens ({} layers: {})",
        m.display_name,
        req.recipe,
        p.kv.layout,
        req.kv_dtype,
        req.ctx,
        m.n_layers,
        layer_summary(m)
    );
    outln!();
    let rows: Vec<Vec<String>> = w
        .by_class(m)
        .iter()
        .map(|(c, t)| {
            vec![
                format!("{c:?}"),
                count(t.params),
                gib(t.bytes),
                format!("{:.3} GB", t.active_bytes as f64 / 1e9),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &["weights by class", "params", "stored", "read per token"],
            &rows
        )
    );
    let types: Vec<String> = w
        .by_dtype()
        .iter()
        .map(|(t, b)| format!("{t} {}", gib(*b)))
        .collect();
    let t = w.totals(m);
    outln!(
        "total {} ({:.2} GB) = {}; read per token {:.3} GB",
        gib(t.bytes),
        t.bytes as f64 / 1e9,
        types.join(", "),
        t.active_bytes as f64 / 1e9
    );
    outln!();
    let rows: Vec<Vec<String>> = layouts
        .iter()
        .map(|(l, k)| {
            vec![
                format!("{}{}", l.name(), if *l == p.kv.layout { " *" } else { "" }),
                human(k.bytes_per_token_layer),
                gib(k.total),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &[
                &format!("KV layout ({})", req.kv_dtype),
                "per token per full layer",
                &format!("at {} tokens", req.ctx)
            ],
            &rows
        )
    );
    let full = m.count_layers(LayerKind::Full);
    let sliding = m.count_layers(LayerKind::Sliding);
    let linear = m.count_layers(LayerKind::Linear);
    if sliding + linear > 0 {
        let mut why = format!("only the {full} full-attention layers grow with context");
        if sliding > 0 {
            let window = m.sliding_window.unwrap_or(0);
            why += &format!(
                "; {sliding} sliding-window layers keep at most {} cells (window {window} + a 512-token micro-batch, as llama.cpp)",
                swa_cells(window, u64::MAX)
            );
        }
        if linear > 0 {
            why += &format!(
                "; {linear} linear-attention layers keep a constant {} state each, read and written every token",
                human(linear_state_bytes(m))
            );
        }
        outln!("{why}");
    }
    outln!();
    let header = [
        "device",
        "layers",
        "weights",
        "KV",
        "reserve",
        "used / memory",
        "free",
        "bandwidth",
        "read/token",
    ];
    let rows: Vec<Vec<String>> = p
        .devices
        .iter()
        .chain(std::iter::once(&p.host))
        .map(share_row)
        .collect();
    outln!("{}", table(&header, &rows));
    outln!();
    if p.spilled_layers == 0 {
        outln!(
            "fits: every layer on the GPUs (the token embeddings stay in host memory, as in llama.cpp)"
        );
    } else {
        outln!(
            "spills: {} of {} layers (output counted as one) stay in host memory",
            p.spilled_layers,
            m.n_layers + 1
        );
    }
    if !p.fits {
        outln!(
            "does NOT fit: host memory {} is too small for its share",
            gib(p.host.device.memory_bytes)
        );
    }
    match p.roofline_tps {
        Some(t) => outln!(
            "roofline: {t:.1} t/s best case (each device streams its bytes per token at spec bandwidth)"
        ),
        None => outln!(
            "roofline: unknown — the host's bandwidth is not known; pass --host-bw GB/s or --host 5800x3d"
        ),
    }
    Ok(())
}

/// Runs `membound hardware`.
pub fn hardware(json_out: bool) -> Result<()> {
    let mut all: Vec<Device> = hw_table();
    all.push(host_cpu());
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.name.clone(),
                gib(d.memory_bytes),
                d.bandwidth_gbs
                    .map_or("unknown".into(), |b| format!("{b:.0} GB/s")),
                human(d.llc_bytes),
                d.units.to_string(),
                d.sm.unwrap_or("-").to_string(),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &[
                "id",
                "name",
                "memory",
                "bandwidth",
                "LLC",
                "SMs/cores",
                "arch"
            ],
            &rows
        )
    );
    Ok(())
}
