//! The largest `dense` bench GEMVs (Q8_0 and Q4_K at 28672x8192 and 14336x4096) next to the
//! read bandwidth, measured the way the bench does (weights rotated through enough copies to
//! exceed 4× a 32 MiB last-level cache), in interleaved rounds so drift hits every case alike.
//!
//! `cargo run --release -p membound-cpu --example gemv_cases [rounds] [iters]`

use std::time::Instant;

use membound_cpu::bandwidth::{self, StreamOp};
use membound_cpu::{CpuGemv, Isa};
use membound_quant::data::normal_f32;
use membound_spec::DType;

/// Working-set floor: 4 × a 32 MiB last-level cache.
const WORKING_SET: usize = 128 << 20;

/// Median of the times of `iters` calls of `f` (after one warm-up call), in seconds.
fn median(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Weight bytes like the bench's: 256 rows of weight-like values quantized once, repeated.
fn weight_bytes(dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
    let tile_rows = rows.min(256);
    let tile = membound_quant::ops::quantize(dtype, &normal_f32(9, tile_rows * cols, 0.02))
        .expect("quantize");
    let row_bytes = tile.len() / tile_rows;
    let mut out = Vec::with_capacity(row_bytes * rows);
    while out.len() < row_bytes * rows {
        out.extend_from_slice(&tile);
    }
    out.truncate(row_bytes * rows);
    out
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(3);
    let iters = args.get(1).copied().unwrap_or(40);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    let isa = Isa::detect();
    println!("threads {threads}, simd {isa}");

    let a = normal_f32(1, 256 << 20, 1.0);
    let cases: Vec<(DType, usize, usize)> = [(28672, 8192), (14336, 4096)]
        .into_iter()
        .flat_map(|(r, c)| [(DType::Q8_0, r, c), (DType::Q4_K, r, c)])
        .collect();
    let gemvs: Vec<Vec<CpuGemv>> = cases
        .iter()
        .map(|&(dtype, rows, cols)| {
            let w = weight_bytes(dtype, rows, cols);
            let n = WORKING_SET.div_ceil(w.len()).max(1);
            (0..n)
                .map(|_| CpuGemv::new(dtype, rows, cols, w.clone()).expect("gemv"))
                .collect()
        })
        .collect();
    for round in 0..rounds {
        let t = median(iters / 4 + 1, || {
            std::hint::black_box(bandwidth::read(&pool, isa, &a).expect("read"));
        });
        let read = bandwidth::bytes_moved(StreamOp::Read, (a.len() * 4) as u64) as f64 / t / 1e9;
        let mut line = format!("round {round}: read {read:5.1} GB/s");
        for (&(dtype, rows, cols), gs) in cases.iter().zip(&gemvs) {
            let x = normal_f32(7, cols, 1.0);
            let mut y = vec![0f32; rows];
            let mut k = 0;
            let t = median(iters, || {
                gs[k % gs.len()].run(&pool, &x, &mut y).expect("gemv");
                k += 1;
            });
            let gbs = CpuGemv::bytes_moved(dtype, rows, cols) as f64 / t / 1e9;
            line += &format!(
                " | {dtype} {rows}x{cols} {gbs:5.1} ({:3.0}%)",
                100.0 * gbs / read
            );
        }
        println!("{line}");
    }
}
