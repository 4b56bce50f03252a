//! The memory-access report of every kernel, from their execution on the CPU: per kernel at a
//! decode shape, warp-wide load requests, 32-byte sectors per request, sectors against the ideal
//! (bytes requested / 32: 1.00x is perfectly coalesced), the load width, and the bytes a thread
//! loads between two synchronisations (an upper bound on what it can have in flight). These are
//! the figures Nsight Compute's memory workload analysis shows, checked without a GPU.
//!
//! `cargo run --release -p membound-cuda-host --example loads [ROWS COLS]` (default 64 4096)

use membound_cuda::gemv::GEMV_DTYPES;
use membound_cuda_host::{HostBuffer, HostGpu, LoadStats, available};
use membound_quant::data::{normal_f32, tiled_matrix};

fn row(name: &str, s: &LoadStats) {
    println!(
        "{name:<22} {:>9} {:>9.2} {:>8.2}x {:>8.1} B {:>9.0} B {:>9} B",
        s.requests,
        s.sectors_per_request(),
        s.sector_ratio(),
        s.bytes_per_lane_load(),
        s.bytes_between_syncs(),
        s.max_bytes_between_syncs
    );
}

fn main() {
    if let Err(e) = available() {
        eprintln!("loads: {e}");
        std::process::exit(2);
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (rows, cols) = match args[..] {
        [r, c] if r > 0 && c > 0 => (r, c),
        _ => (64, 4096),
    };
    let g = HostGpu::default();
    println!(
        "membound kernels executed on the CPU: {rows}x{cols} GEMV, {n} f32 streams",
        n = rows * cols
    );
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>10} {:>11} {:>11}",
        "kernel", "requests", "sect/req", "vs ideal", "per load", "per sync", "max/sync"
    );
    let x = normal_f32(1, cols, 1.0);
    for dtype in GEMV_DTYPES {
        let w = match tiled_matrix(dtype, rows, cols) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("{dtype}: {e}");
                continue;
            }
        };
        let mut y = HostBuffer::poisoned(4 * rows);
        match g.gemv(
            dtype,
            rows,
            cols,
            &HostBuffer::from_slice(&w),
            &HostBuffer::from_slice(&x),
            &mut y,
        ) {
            Ok(l) => {
                row(&format!("mb_gemv_{}", dtype.name()), &l.gemv);
                if dtype.is_quantized() && dtype == GEMV_DTYPES[2] {
                    row("mb_quantize_q8_1", &l.quantize);
                }
            }
            Err(e) => eprintln!("{dtype}: {e}"),
        }
    }
    let n = rows * cols;
    let a = HostBuffer::from_slice(&normal_f32(2, n, 1.0));
    let c = HostBuffer::from_slice(&normal_f32(3, n, 1.0));
    let mut d = HostBuffer::poisoned(4 * n);
    let report = |name: &str, r: Result<LoadStats, membound_cuda_host::HostError>| match r {
        Ok(s) => row(name, &s),
        Err(e) => eprintln!("{name}: {e}"),
    };
    report("mb_read", g.read(&a).map(|(_, s)| s));
    report("mb_copy", g.copy(&a, &mut d));
    report("mb_triad", g.triad(&mut d, &a, &c, 0.5));
}
