//! `membound inspect FILE.gguf`: a GGUF file's tensors, their bytes by class and by type, the
//! model spec its metadata implies, and the bytes one decode token reads — counted from the
//! file's own tensor types and sizes, by the same rules as `membound spec` / `membound fit`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use membound_gguf::reads::{TensorRead, token_reads, top_k};
use membound_gguf::spec::spec_from_gguf;
use membound_gguf::synthetic::recipe_of_file_type;
use membound_gguf::{GgufFile, tensor_class};
use membound_spec::ModelSpec;
use membound_spec::kv::{KvCache, KvLayout, kv_cache};
use membound_spec::model::AttentionKind;
use serde::Serialize;
use serde_json::json;

use crate::cmd_fit::kv_dtype;
use crate::cmd_spec::layer_summary;
use crate::units::{clean, count, gib, human, parse_ctx, table};

/// Arguments of `membound inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file.
    pub file: PathBuf,
    /// Also count the KV cache read per token at this context depth: 4096, 64k, 112k.
    #[arg(long, value_parser = parse_ctx)]
    pub ctx: Option<u64>,
    /// KV-cache element type for `--ctx`: f16, bf16, q8_0, q4_0, f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: String,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

type Row = TensorRead;

/// Sums over a group of tensors.
#[derive(Debug, Default, Serialize)]
struct Sum {
    tensors: u64,
    params: u64,
    bytes: u64,
    active_bytes: u64,
}

impl Sum {
    fn add(&mut self, r: &Row) {
        self.tensors += 1;
        self.params += r.dims.iter().product::<u64>();
        self.bytes += r.bytes;
        self.active_bytes += r.active_bytes;
    }
}

/// A note when `expert_used_count` exceeds the experts of a stacked expert tensor, which
/// [`rows`] then counts whole.
fn top_k_note(f: &GgufFile) -> Option<String> {
    let k = top_k(f);
    let t = f.tensors().iter().find(|t| {
        tensor_class(&t.name).1.ends_with("_exps") && t.dims.get(2).is_some_and(|e| *e < k)
    })?;
    Some(format!(
        "note: expert_used_count {k} exceeds the {} experts of {}; counted as reading all of them",
        t.dims[2], t.name
    ))
}

/// The KV cache at `--ctx`, which needs the spec.
fn kv(a: &Args, spec: &Result<ModelSpec, String>) -> Result<Option<KvCache>> {
    let Some(ctx) = a.ctx else {
        return Ok(None);
    };
    let m = spec
        .as_ref()
        .map_err(|e| anyhow::anyhow!("--ctx needs the model spec, which cannot be read: {e}"))?;
    let dtype = kv_dtype(&a.kv_type)?;
    Ok(Some(kv_cache(m, KvLayout::native(m), dtype, ctx)?))
}

/// One line of architecture: layers, attention and FFN.
fn arch_line(m: &ModelSpec) -> String {
    let a = &m.attention;
    let attn = match a.kind {
        AttentionKind::Gqa => format!(
            "GQA {}/{} heads x {}",
            a.n_heads,
            m.kv_heads(),
            m.qk_head_dim()
        ),
        AttentionKind::Mla => format!(
            "MLA {} heads, kv_lora {}, qk {}+{}, v {}",
            a.n_heads,
            a.kv_lora_rank.unwrap_or(0),
            a.qk_nope_head_dim.unwrap_or(0),
            a.qk_rope_head_dim.unwrap_or(0),
            m.v_head_dim()
        ),
    };
    let ffn = match &m.ffn.moe {
        Some(e) => format!(
            "MoE {} experts top-{} x {}, {} shared, {} dense first",
            e.n_experts, e.top_k, e.expert_intermediate, e.n_shared, e.dense_first
        ),
        None => format!("dense FFN {}", m.ffn.intermediate.unwrap_or(0)),
    };
    format!(
        "{} layers ({}), hidden {}, vocab {}{}; {attn}; {ffn}",
        m.n_layers,
        layer_summary(m),
        m.hidden,
        m.vocab,
        if m.tied_embeddings { " (tied)" } else { "" }
    )
}

/// Runs `membound inspect`.
pub fn run(a: &Args) -> Result<()> {
    kv_dtype(&a.kv_type)?;
    let f = GgufFile::open(&a.file)?;
    let spec = spec_from_gguf(&f).map_err(|e| e.to_string());
    let rows = token_reads(&f, spec.as_ref().ok());
    if spec.is_err()
        && let Some(note) = top_k_note(&f)
    {
        crate::warn(&note);
    }
    let kv = kv(a, &spec)?;
    let mut by_class = BTreeMap::<String, Sum>::new();
    let mut by_type = BTreeMap::<String, Sum>::new();
    let mut total = Sum::default();
    for r in &rows {
        by_class.entry(r.class.clone()).or_default().add(r);
        by_type
            .entry(r.dtype.name().to_string())
            .or_default()
            .add(r);
        total.add(r);
    }
    let kv_bytes = kv.as_ref().map_or(0, |k| k.traffic);
    let file_type = f
        .meta_u64("general.file_type")
        .ok()
        .map(|ft| recipe_of_file_type(ft).map_or(ft.to_string(), |r| r.name().to_string()));
    let arch = f.arch().ok();
    if a.json {
        let v = json!({
            "file": f.source(),
            "gguf_version": f.version(),
            "arch": arch,
            "file_type": file_type,
            "tensor_count": rows.len(),
            "params": total.params,
            "total_bytes": total.bytes,
            "weights_read_per_token": total.active_bytes,
            "kv": kv.as_ref().map(|k| json!({"ctx": k.ctx, "type": k.dtype.name(), "layout": k.layout.name(), "bytes": k.total})),
            "bytes_per_token": total.active_bytes + kv_bytes,
            "kv_traffic_per_token": kv.as_ref().map(|k| k.traffic),
            "by_class": by_class,
            "by_type": by_type,
            "spec": spec.as_ref().ok(),
            "spec_error": spec.as_ref().err(),
            "tensors": rows,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!(
        "{}: GGUF v{}, arch {}, {} tensors, {} ({:.2} GB){}",
        clean(f.source()),
        f.version(),
        clean(arch.unwrap_or("?")),
        rows.len(),
        gib(total.bytes),
        total.bytes as f64 / 1e9,
        file_type
            .map(|t| format!(", file type {t}"))
            .unwrap_or_default()
    );
    match &spec {
        Ok(m) => outln!("  spec: {}", arch_line(m)),
        Err(e) => outln!("  spec: not derivable ({})", clean(e)),
    }
    outln!();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.dtype.name().to_string(),
                format!("{:?}", r.dims),
                human(r.bytes),
                r.class.clone(),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(&["tensor", "type", "shape", "bytes", "class"], &body)
    );
    outln!();
    let sums = |map: &BTreeMap<String, Sum>| -> Vec<Vec<String>> {
        map.iter()
            .map(|(k, s)| {
                vec![
                    k.clone(),
                    s.tensors.to_string(),
                    count(s.params),
                    gib(s.bytes),
                    format!("{:.3} GB", s.active_bytes as f64 / 1e9),
                ]
            })
            .collect()
    };
    let header = |first| [first, "tensors", "params", "stored", "read per token"];
    outln!("{}", table(&header("class"), &sums(&by_class)));
    outln!();
    outln!("{}", table(&header("type"), &sums(&by_type)));
    outln!();
    outln!(
        "total {} ({:.2} GB), {} params; weights read per token {:.3} GB",
        gib(total.bytes),
        total.bytes as f64 / 1e9,
        count(total.params),
        total.active_bytes as f64 / 1e9
    );
    if let Some(k) = &kv {
        outln!(
            "KV {} {} at {} tokens: {}; bytes per token {:.3} GB",
            k.layout,
            k.dtype,
            k.ctx,
            gib(k.total),
            (total.active_bytes + k.traffic) as f64 / 1e9
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use membound_gguf::GgufWriter;
    use membound_spec::DType;

    #[test]
    fn rows_without_a_spec_use_names() {
        // expert_used_count beyond the 4 experts: the whole tensor, and a note, not 250/4 of it.
        for (top_k, experts_read) in [(2u32, 64), (250, 128)] {
            let mut w = GgufWriter::new();
            w.add_meta("general.architecture", "mamba").unwrap();
            w.add_meta("mamba.expert_used_count", top_k).unwrap();
            w.add_tensor("token_embd.weight", &[4, 8], DType::F32, vec![0u8; 128])
                .unwrap();
            w.add_tensor(
                "blk.0.ffn_up_exps.weight",
                &[4, 2, 4],
                DType::F32,
                vec![0u8; 128],
            )
            .unwrap();
            w.add_f32("blk.0.attn_norm.weight", &[4], &[1.0; 4])
                .unwrap();
            let f = GgufFile::from_vec(w.to_bytes().unwrap()).unwrap();
            assert!(spec_from_gguf(&f).is_err());
            let r = token_reads(&f, None);
            let active: Vec<(&str, u64)> = r
                .iter()
                .map(|r| (r.class.as_str(), r.active_bytes))
                .collect();
            assert_eq!(
                active,
                [
                    ("token_embd", 16),
                    ("ffn_up_exps", experts_read),
                    ("attn_norm", 16)
                ]
            );
            assert_eq!(top_k_note(&f).is_some(), top_k > 4);
        }
    }
}
