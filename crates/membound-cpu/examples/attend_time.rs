//! Times `membound_cpu::attention::attend` on one generated cache, for profiling the CPU
//! attention kernel outside Criterion: `cargo run --release -p membound-cpu --example
//! attend_time -- [gqa|mla|mha] [depth] [reps]` prints milliseconds per call (Llama-3.1-70B's
//! GQA, GLM-4.7-Flash's MLA latent rows or its expanded MHA).

use membound_cpu::attention::{KvCacheBuf, attend};
use membound_quant::data::normal_f32;
use membound_spec::DType;
use membound_spec::attention::AttnShape;
use membound_spec::kv::KvLayout;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).map_or("gqa", String::as_str);
    let depth: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(32768);
    let reps: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(10);
    let shape = match kind {
        "mla" => AttnShape::new(KvLayout::MlaLatent, 20, 1, 576, 512, DType::F16),
        "mha" => AttnShape::new(KvLayout::ExpandedMha, 20, 20, 256, 256, DType::F16),
        _ => AttnShape::new(KvLayout::Gqa, 64, 8, 128, 128, DType::F16),
    };
    let cache = KvCacheBuf::generate(&shape, depth, 1).expect("cache");
    let q = normal_f32(2, shape.n_heads * shape.d_k, 1.0);
    let mut out = vec![0f32; shape.n_heads * shape.d_v];
    let pool = rayon::ThreadPoolBuilder::new().build().expect("pool");
    attend(&pool, &cache, &q, &[], depth, &mut out).expect("attend");
    let t = std::time::Instant::now();
    for _ in 0..reps {
        attend(&pool, &cache, &q, &[], depth, &mut out).expect("attend");
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
    let bytes = cache.k_bytes().len() + cache.v_bytes().len();
    println!(
        "{kind} d{depth}: {ms:.2} ms per call, {:.1} GB/s of {:.1} MB",
        bytes as f64 / ms / 1e6,
        bytes as f64 / 1e6
    );
}
