//! Times `membound_cpu::attention::attend_on` on one generated cache on every SIMD path this CPU
//! has, each against a read of the same bytes measured just before it (a profiling and A/B aid
//! for the CPU attention kernels, not the attention suite):
//! `cargo run --release -p membound-cpu --example attend_time -- [kind] [depth] [reps] [rounds]`
//! prints, per round and path, milliseconds per call (best of five runs of `reps` calls), GB/s
//! of cache and the % of the read; the paths alternate, so a busy neighbour slows both alike.
//! Kinds: `gqa` (Llama-3.1-70B, groups of 8), `gqa3` (Llama-3.2-3B), `gqa7` (Qwen2.5-7B), `mla`
//! (GLM-4.7-Flash's latent rows), `mha` (its expanded MHA); F16 rows, or `MEMBOUND_KV_DTYPE`
//! (f32, f16, bf16, q8_0).

mod common;

use common::best;

use membound_cpu::Isa;
use membound_cpu::attention::{KvCacheBuf, attend_on};
use membound_cpu::bandwidth::{self, StreamOp};
use membound_quant::data::normal_f32;
use membound_spec::DType;
use membound_spec::attention::AttnShape;
use membound_spec::kv::KvLayout;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).map_or("gqa", String::as_str);
    let num =
        |i: usize, default: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    let (depth, reps, rounds) = (num(2, 32768), num(3, 10), num(4, 3));
    let dtype = std::env::var("MEMBOUND_KV_DTYPE")
        .ok()
        .and_then(|v| v.parse::<DType>().ok())
        .unwrap_or(DType::F16);
    let shape = match kind {
        "mla" => AttnShape::new(KvLayout::MlaLatent, 20, 1, 576, 512, dtype),
        "mha" => AttnShape::new(KvLayout::ExpandedMha, 20, 20, 256, 256, dtype),
        "gqa3" => AttnShape::new(KvLayout::Gqa, 24, 8, 128, 128, dtype),
        "gqa7" => AttnShape::new(KvLayout::Gqa, 28, 4, 128, 128, dtype),
        _ => AttnShape::new(KvLayout::Gqa, 64, 8, 128, 128, dtype),
    };
    let cache = KvCacheBuf::generate(&shape, depth, 1).expect("cache");
    let q = normal_f32(2, shape.n_heads * shape.d_k, 1.0);
    let mut out = vec![0f32; shape.n_heads * shape.d_v];
    let pool = rayon::ThreadPoolBuilder::new().build().expect("pool");
    let bytes = cache.k_bytes().len() + cache.v_bytes().len();
    let a = normal_f32(3, bytes / 4, 1.0);
    let read_isa = Isa::detect();
    println!(
        "{kind} {dtype} d{depth}: {:.1} MB of cache, {} threads, {reps} calls, best of 5",
        bytes as f64 / 1e6,
        pool.current_num_threads()
    );
    for round in 1..=rounds {
        for isa in Isa::available().into_iter().filter(|i| *i != Isa::Scalar) {
            let read_s = pool.install(|| {
                best(5, || {
                    for _ in 0..reps {
                        std::hint::black_box(bandwidth::read(&pool, read_isa, &a).expect("read"));
                    }
                })
            });
            let read = bandwidth::bytes_moved(StreamOp::Read, size_of_val(a.as_slice()) as u64)
                as f64
                * reps as f64
                / read_s;
            let s = pool.install(|| {
                best(5, || {
                    for _ in 0..reps {
                        attend_on(isa, &pool, &cache, &q, &[], depth, &mut out).expect("attend");
                    }
                })
            });
            let gbs = (bytes * reps) as f64 / s;
            println!(
                "round {round} {:>10}: {:8.3} ms per call, {:6.2} GB/s, {:4.0} % of the read before it ({:.2} GB/s)",
                isa.name(),
                s * 1e3 / reps as f64,
                gbs / 1e9,
                100.0 * gbs / read,
                read / 1e9
            );
        }
    }
}
