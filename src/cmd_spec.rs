//! `membound spec` and `membound models`.

use anyhow::Result;
use membound_spec::bytes::weights;
use membound_spec::kv::{KvLayout, kv_cache, linear_state_bytes, swa_cells};
use membound_spec::model::LayerKind;
use membound_spec::registry::{embedded, find};
use membound_spec::{DType, ModelSpec, Recipe};
use serde_json::json;

use crate::units::{count, gib, human, table};

/// Arguments of `membound spec`.
#[derive(clap::Args)]
pub struct Args {
    /// Model name (see `membound models`) or path to a spec `.toml`.
    pub model: String,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Layer-kind counts as text, e.g. `12 full, 36 linear`.
pub fn layer_summary(m: &ModelSpec) -> String {
    [
        (LayerKind::Full, "full"),
        (LayerKind::Sliding, "sliding"),
        (LayerKind::Linear, "linear"),
    ]
    .iter()
    .filter_map(|(k, n)| {
        let c = m.count_layers(*k);
        (c > 0).then(|| format!("{c} {n}"))
    })
    .collect::<Vec<_>>()
    .join(", ")
}

/// Bytes one token reads from the first MoE layer's FFN under each recipe (none for a dense
/// model): the bytes of the moe suite's model cases, less x and y.
fn moe_layer_bytes(m: &ModelSpec, recipes: &[Recipe]) -> Vec<(Recipe, u64)> {
    let Some(e) = &m.ffn.moe else {
        return Vec::new();
    };
    recipes
        .iter()
        .map(|r| (*r, weights(m, *r).ffn_active_bytes(e.dense_first)))
        .collect()
}

/// A KV layout's cost as it grows: bytes per token per full layer, per token over all the
/// full layers, the sliding layers' cap and the linear layers' constant state.
struct KvGrowth {
    layout: KvLayout,
    per_token_layer: u64,
    per_token: u64,
    sliding_cap: u64,
    state: u64,
}

fn kv_growth(m: &ModelSpec, layout: KvLayout) -> Result<KvGrowth> {
    let per_token_layer = kv_cache(m, layout, DType::F16, 1)?.bytes_per_token_layer;
    let count = |k| u64::from(m.count_layers(k));
    let cells = m
        .sliding_window
        .map_or(0, |w| swa_cells(w, membound_spec::model::MAX_CONTEXT));
    Ok(KvGrowth {
        layout,
        per_token_layer,
        per_token: per_token_layer * count(LayerKind::Full),
        sliding_cap: per_token_layer * cells * count(LayerKind::Sliding),
        state: linear_state_bytes(m) * count(LayerKind::Linear),
    })
}

/// Runs `membound spec`.
pub fn run(a: &Args) -> Result<()> {
    let m = find(&a.model)?;
    let recipes: Vec<Recipe> = Recipe::all().filter(|r| *r != Recipe::F32).collect();
    let rows: Vec<_> = recipes
        .iter()
        .map(|r| {
            let w = weights(&m, *r);
            let t = w.totals(&m);
            (r, t)
        })
        .collect();
    let kv: Vec<KvGrowth> = KvLayout::applicable(&m)
        .iter()
        .map(|l| kv_growth(&m, *l))
        .collect::<Result<_>>()?;
    let w16 = weights(&m, Recipe::BF16);
    let totals = w16.totals(&m);
    if a.json {
        let v = json!({
            "spec": m,
            "params_total": totals.params,
            "params_active": w16.params_active_published(&m),
            "bytes_per_token": rows.iter().map(|(r, t)| json!({"recipe": r.name(), "bytes": t.bytes, "active_bytes": t.active_bytes})).collect::<Vec<_>>(),
            "moe_layer_bytes_per_token": moe_layer_bytes(&m, &recipes).iter().map(|(r, b)| json!({"recipe": r.name(), "bytes": b})).collect::<Vec<_>>(),
            "kv_f16_bytes_per_token": kv.iter().map(|k| json!({"layout": k.layout.name(), "bytes": k.per_token, "per_full_layer": k.per_token_layer, "sliding_cap_bytes": k.sliding_cap, "linear_state_bytes": k.state})).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!("{} ({}, arch {})", m.display_name, m.name, m.arch);
    outln!(
        "  layers {} ({}), hidden {}, vocab {}, max context {}",
        m.n_layers,
        layer_summary(&m),
        m.hidden,
        m.vocab,
        m.max_context
    );
    let at = &m.attention;
    match at.kind {
        membound_spec::model::AttentionKind::Gqa => outln!(
            "  attention: GQA, {} heads, {} KV heads, head dim {}{}",
            at.n_heads,
            m.kv_heads(),
            m.qk_head_dim(),
            m.sliding_window
                .map(|w| format!(", sliding window {w}"))
                .unwrap_or_default()
        ),
        membound_spec::model::AttentionKind::Mla => outln!(
            "  attention: MLA, {} heads, q_lora {}, kv_lora {}, qk nope {} + rope {}, v {}",
            at.n_heads,
            at.q_lora_rank.map_or("-".into(), |v| v.to_string()),
            at.kv_lora_rank.unwrap_or(0),
            at.qk_nope_head_dim.unwrap_or(0),
            at.qk_rope_head_dim.unwrap_or(0),
            m.v_head_dim()
        ),
    }
    match &m.ffn.moe {
        Some(e) => outln!(
            "  FFN: MoE, {} experts, top-{}, expert width {}, {} shared, first {} layers dense ({}), router {:?}",
            e.n_experts,
            e.top_k,
            e.expert_intermediate,
            e.n_shared,
            e.dense_first,
            m.ffn.intermediate.unwrap_or(0),
            e.router
        ),
        None => outln!("  FFN: dense, width {}", m.ffn.intermediate.unwrap_or(0)),
    }
    if let Some(e) = &m.ffn.moe {
        // What the moe suite's `moe/{model}-{recipe}` case reads per token, less x and y.
        let per_recipe: Vec<String> = moe_layer_bytes(&m, &recipes)
            .iter()
            .map(|(r, b)| format!("{} {}", r.name(), human(*b)))
            .collect();
        outln!(
            "  one MoE layer per token (layer {}: router, top-{} experts and their biases, shared expert): {}",
            e.dense_first,
            e.top_k,
            per_recipe.join(", ")
        );
    }
    if m.count_layers(LayerKind::Linear) > 0 {
        outln!(
            "  linear-attention state: {} per layer (constant)",
            human(linear_state_bytes(&m))
        );
    }
    let pub_total = m
        .published
        .params_total
        .map(|p| format!(" (published {})", count(p as u64)))
        .unwrap_or_default();
    let pub_active = m
        .published
        .params_active
        .map(|p| format!(" (published {})", count(p as u64)))
        .unwrap_or_default();
    outln!(
        "  parameters: {} total{pub_total}, {} active per token{pub_active}",
        count(totals.params),
        count(w16.params_active_published(&m))
    );
    outln!();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|(r, t)| {
            let published = m
                .published
                .gguf_bytes
                .get(r.name())
                .map(|b| format!("{:.2} GB", *b as f64 / 1e9))
                .unwrap_or_default();
            vec![
                r.name().to_string(),
                format!("{:.2} GB", t.bytes as f64 / 1e9),
                gib(t.bytes),
                format!("{:.3} GB", t.active_bytes as f64 / 1e9),
                published,
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &[
                "recipe",
                "weights",
                "(GiB)",
                "read per token",
                "published file"
            ],
            &body
        )
    );
    outln!();
    let body: Vec<Vec<String>> = kv
        .iter()
        .map(|k| {
            vec![
                k.layout.name().to_string(),
                human(k.per_token_layer),
                human(k.per_token),
                human(k.sliding_cap),
                human(k.state),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &[
                "KV layout (f16)",
                "per token per full layer",
                "per token, full layers",
                "sliding layers (capped)",
                "linear state (constant)"
            ],
            &body
        )
    );
    Ok(())
}

/// Runs `membound models`.
pub fn models(json_out: bool) -> Result<()> {
    let all = embedded()?;
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|m| {
            let w = weights(m, Recipe::BF16);
            let kind = if m.ffn.moe.is_some() { "MoE" } else { "dense" };
            vec![
                m.name.clone(),
                m.display_name.clone(),
                m.arch.clone(),
                kind.into(),
                count(w.totals(m).params),
                count(w.params_active_published(m)),
                layer_summary(m),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &["name", "model", "arch", "ffn", "params", "active", "layers"],
            &rows
        )
    );
    Ok(())
}
