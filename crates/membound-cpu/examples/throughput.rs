//! Quick throughput check (not the benches): read bandwidth and GEMV bandwidth per type and
//! instruction set on a working set far beyond the last-level cache.
//!
//! `cargo run --release -p membound-cpu --example throughput [MiB] [threads]`

mod common;

use common::{best, weights};

use membound_cpu::bandwidth::{self, StreamOp};
use membound_cpu::{CpuGemv, Isa};
use membound_quant::data::normal_f32;
use membound_spec::DType;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mib = args.first().copied().unwrap_or(512);
    let threads = args
        .get(1)
        .copied()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    println!("threads {threads}, simd {}", membound_cpu::simd_level());

    let n = mib << 18;
    let a = normal_f32(1, n, 1.0);
    let mut b = vec![0f32; n];
    let bytes = (n * 4) as u64;
    for isa in Isa::available() {
        let t = best(5, || {
            std::hint::black_box(bandwidth::read(&pool, isa, &a).expect("read"));
        });
        println!(
            "read  {isa:>6}: {:7.2} GB/s",
            bandwidth::bytes_moved(StreamOp::Read, bytes) as f64 / t / 1e9
        );
    }
    let t = best(5, || bandwidth::write(&pool, &mut b, 1.0));
    println!(
        "write        : {:7.2} GB/s",
        bandwidth::bytes_moved(StreamOp::Write, bytes) as f64 / t / 1e9
    );
    let t = best(5, || bandwidth::copy(&pool, &a, &mut b).expect("copy"));
    println!(
        "copy         : {:7.2} GB/s",
        bandwidth::bytes_moved(StreamOp::Copy, bytes) as f64 / t / 1e9
    );
    drop((a, b));

    let cols = 8192;
    for dtype in [
        DType::Q8_0,
        DType::Q4_K,
        DType::Q6_K,
        DType::MXFP4,
        DType::BF16,
        DType::F16,
        DType::F32,
    ] {
        let rows = (mib << 20) / (dtype.bytes_for(cols as u64).expect("row") as usize);
        let g = CpuGemv::new(dtype, rows, cols, weights(dtype, rows, cols)).expect("gemv");
        let x = normal_f32(2, cols, 1.0);
        let mut y = vec![0f32; rows];
        for isa in Isa::available() {
            let t = best(5, || g.run_with(&pool, isa, &x, &mut y).expect("gemv"));
            let gbs = CpuGemv::bytes_moved(dtype, rows, cols) as f64 / t / 1e9;
            println!("gemv {dtype:>5} {rows}x{cols} {isa:>6}: {gbs:7.2} GB/s");
        }
    }
    let (rows, cols, batch) = (4096, 4096, 64);
    for dtype in [DType::Q8_0, DType::Q4_K] {
        let g = CpuGemv::new(dtype, rows, cols, weights(dtype, rows, cols)).expect("gemm");
        let xs = normal_f32(3, batch * cols, 1.0);
        let mut ys = vec![0f32; batch * rows];
        let isa = Isa::detect();
        let t = best(2, || {
            g.run_batch_with(&pool, isa, &xs, &mut ys).expect("gemm")
        });
        println!(
            "gemm {dtype:>5} {rows}x{cols} b{batch} {isa}: {:7.1} GMAC/s",
            (rows * cols * batch) as f64 / t / 1e9
        );
    }
}
