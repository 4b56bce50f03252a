//! GEMV speed per quantized weight type against a read of the same bytes measured just
//! before it (not the benches; a profiling and A/B aid for the dot kernels).
//!
//! `cargo run --release -p membound-cpu --example dot_time [KiB] [reps] [threads] [cols]`: a
//! matrix of about `KiB` (default 768: inside a Zen 4 core's 1 MiB L2, so it times the kernels'
//! instruction rate; 1 GiB and more times the memory bus) × `cols` columns (default 4096),
//! `reps` GEMVs (default: about 1.5 GB of weights), best of five, on `threads` (default 1).
//! Each GEMV also quantizes its inputs, as every decode GEMV does. All calls run inside the
//! pool, so no call pays a hand-off between threads.

mod common;

use common::{best, weights};

use membound_cpu::bandwidth::{self, StreamOp};
use membound_cpu::{CpuGemv, Isa};
use membound_quant::data::normal_f32;
use membound_spec::DType;

/// Best of five runs (after one untimed) of `reps` calls of `f` inside `pool`, in seconds.
fn best_in(pool: &rayon::ThreadPool, reps: usize, mut f: impl FnMut() + Send) -> f64 {
    pool.install(|| {
        best(5, || {
            for _ in 0..reps {
                f();
            }
        })
    })
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let kib = args.first().copied().unwrap_or(768);
    let reps = args
        .get(1)
        .copied()
        .unwrap_or_else(|| (1_500_000 / kib).max(1));
    let threads = args.get(2).copied().unwrap_or(1);
    let cols = args.get(3).copied().unwrap_or(4096);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    let isa = Isa::detect();
    let a = normal_f32(1, (kib << 10) / 4, 1.0);
    println!("{threads} thread(s), {isa}, about {kib} KiB per matrix, {reps} calls, best of 5");
    for dtype in [DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::MXFP4] {
        let row = dtype.bytes_for(cols as u64).expect("whole blocks") as usize;
        let rows = (kib << 10) / row;
        let g = CpuGemv::new(dtype, rows, cols, weights(dtype, rows, cols)).expect("gemv");
        let x = normal_f32(4, cols, 1.0);
        let mut y = vec![0f32; rows];
        let read_s = best_in(&pool, reps, || {
            std::hint::black_box(bandwidth::read(&pool, isa, &a).expect("read"));
        });
        let read = (bandwidth::bytes_moved(StreamOp::Read, size_of_val(a.as_slice()) as u64)
            * reps as u64) as f64
            / read_s;
        let s = best_in(&pool, reps, || {
            g.run_with(&pool, isa, &x, &mut y).expect("gemv")
        });
        let gbs = (rows * row * reps) as f64 / s / 1e9;
        println!(
            "{dtype:>6} {rows:>6}x{cols}: {gbs:6.2} GB/s, {:4.0} % of the read before it ({:.2} GB/s)",
            100.0 * gbs * 1e9 / read,
            read / 1e9
        );
    }
}
