//! bandwidth: what memory bandwidth each backend really reaches.
//!
//! Cases (ids `bandwidth/{case}/{backend}`):
//! - `read`, `write`, `copy`, `triad`: STREAM-style passes over arrays of
//!   `max(1 GiB, 4 × LLC)` (quick scale: `max(128 MiB, 4 × LLC)`), the honest big-working-set
//!   numbers to compare with the spec sheet. GPUs add `dtod`, the driver's device-to-device copy,
//!   as the built-in peer.
//! - `read-{size}`: a read sweep from inside the cache to ≥ 1 GiB so the cache cliff shows;
//!   sizes below 4 × LLC carry a `-llc` suffix because they measure a cache-resident case.
//! - `read-t{n}`, `triad-t{n}` (CPU): the threads sweep, 1 … all cores.
//!
//! Bytes follow `membound_spec::traffic::StreamOp` (read 1, write 1, copy 2, triad 3 arrays),
//! reported in decimal GB/s. Every kernel's output is checked once before it is timed; a case
//! that fails is reported and skipped, and the run exits non-zero at the end. Each case's
//! fraction of the same run's `read` goes into `machine-bandwidth.json`.

use membound_bench::stream::arrays_held;
use membound_bench::suites::{self, StreamCase, main_array_bytes};
use membound_cuda::StreamOp;

fn main() {
    let (scale, backends, mut run) = membound_bench::start("bandwidth");
    for gpu in &backends.gpus {
        let from = run.results.len();
        suites::bandwidth(&mut run, gpu, true);
        suites::pair_with_read(&mut run, from, &gpu.id);
    }
    if let Some(cpu) = &backends.cpu {
        let from = run.results.len();
        suites::bandwidth(&mut run, cpu, false);
        let main = main_array_bytes(scale, cpu.llc_bytes());
        let mut threads: Vec<usize> = std::iter::successors(Some(1usize), |t| Some(t * 2))
            .take_while(|t| *t < cpu.threads)
            .collect();
        threads.push(cpu.threads);
        for t in threads {
            let cpu_t = cpu.with_threads(t);
            for op in [StreamOp::Read, StreamOp::Triad] {
                let case = StreamCase {
                    case: format!("{}-t{t}", op.name()),
                    op,
                    array_bytes: main,
                    alloc_bytes: arrays_held(op) * main,
                };
                suites::stream_case(&mut run, &cpu_t, &case);
            }
        }
        suites::pair_with_read(&mut run, from, "cpu");
    }
    let code = membound_bench::finish(run, &backends, scale);
    std::process::exit(code);
}
