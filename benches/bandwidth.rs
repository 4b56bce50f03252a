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
//! reported in decimal GB/s. Every kernel's output is checked once before it is timed.

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use membound_bench::rotation::is_cache_resident;
use membound_bench::verify::require;
use membound_bench::{Backends, CpuBackend, GpuBackend, Scale, machine};
use membound_cpu::Isa;
use membound_cpu::bandwidth as cpu_bw;
use membound_cuda::{CudaSlice, StreamOp as GpuOp};
use membound_spec::traffic::StreamOp;
use rayon::ThreadPool;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn main_array_bytes(scale: Scale, llc: u64) -> u64 {
    let floor = if scale == Scale::Quick {
        128 * MIB
    } else {
        GIB
    };
    (4 * llc).next_power_of_two().max(floor)
}

fn sweep_sizes(scale: Scale) -> Vec<u64> {
    let kib = |k: u64| k << 10;
    match scale {
        Scale::Quick => vec![kib(256), 4 * MIB, 64 * MIB],
        Scale::Default => vec![kib(256), MIB, 4 * MIB, 16 * MIB, 64 * MIB, 256 * MIB, GIB],
        Scale::Full => vec![
            kib(64),
            kib(256),
            MIB,
            4 * MIB,
            16 * MIB,
            32 * MIB,
            64 * MIB,
            128 * MIB,
            256 * MIB,
            GIB,
            2 * GIB,
            4 * GIB,
        ],
    }
}

fn size_name(bytes: u64, llc: u64) -> String {
    let base = if bytes >= GIB {
        format!("{}GiB", bytes / GIB)
    } else if bytes >= MIB {
        format!("{}MiB", bytes / MIB)
    } else {
        format!("{}KiB", bytes >> 10)
    };
    if is_cache_resident(bytes, llc) {
        format!("{base}-llc")
    } else {
        base
    }
}

fn group<'a>(c: &'a mut Criterion, bytes: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group("bandwidth");
    g.throughput(Throughput::BytesDecimal(bytes));
    g.sampling_mode(SamplingMode::Flat);
    g
}

/// Values in {-1, 0, 1}: every partial sum stays tiny, so any summation order is exact and the
/// read kernel's result can be checked exactly.
fn pattern(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 3) as f32 - 1.0).collect()
}

fn pattern_sum(n: usize) -> f32 {
    (0..n % 3).map(|i| i as f32 - 1.0).sum()
}

struct CpuArrays {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl CpuArrays {
    fn new(n: usize) -> CpuArrays {
        CpuArrays {
            a: pattern(n),
            b: vec![2.0; n],
            c: vec![0.5; n],
        }
    }

    /// Runs `op` once; returns the read's sum.
    fn run(&mut self, pool: &ThreadPool, isa: Isa, op: StreamOp) -> f32 {
        let r = match op {
            StreamOp::Read => cpu_bw::read(pool, isa, &self.a),
            StreamOp::Write => {
                cpu_bw::write(pool, &mut self.b, 3.0);
                Ok(0.0)
            }
            StreamOp::Copy => cpu_bw::copy(pool, &self.a, &mut self.b).map(|_| 0.0),
            StreamOp::Triad => cpu_bw::triad(pool, &mut self.b, &self.a, &self.c, 3.0).map(|_| 0.0),
        };
        r.unwrap_or_else(|e| panic!("cpu {}: {e}", op.name()))
    }

    /// Runs `op` once and checks its output.
    fn verify(&mut self, pool: &ThreadPool, isa: Isa, op: StreamOp) -> Result<(), String> {
        let n = self.a.len();
        let sum = self.run(pool, isa, op);
        let ok = match op {
            StreamOp::Read => sum == pattern_sum(n),
            StreamOp::Write => self.b.iter().all(|v| *v == 3.0),
            StreamOp::Copy => self.b == self.a,
            StreamOp::Triad => self
                .b
                .iter()
                .zip(&self.a)
                .zip(&self.c)
                .all(|((b, a), c)| *b == a + 3.0 * c),
        };
        ok.then_some(()).ok_or_else(|| {
            format!(
                "cpu {} over {n} floats gave a wrong result (read sum {sum})",
                op.name()
            )
        })
    }
}

fn cpu_case(
    c: &mut Criterion,
    cpu: &CpuBackend,
    pool: &ThreadPool,
    op: StreamOp,
    array_bytes: u64,
    case: &str,
) {
    let isa = Isa::detect();
    let mut arrays = CpuArrays::new((array_bytes / 4) as usize);
    require(arrays.verify(pool, isa, op));
    let mut g = group(c, op.bytes_moved(array_bytes));
    g.bench_function(format!("{case}/{}", cpu.id()), |bch| {
        bch.iter(|| arrays.run(pool, isa, op))
    });
    g.finish();
}

fn cpu_suite(c: &mut Criterion, cpu: &CpuBackend, scale: Scale) {
    let llc = cpu.llc_bytes();
    let main = main_array_bytes(scale, llc);
    for op in StreamOp::ALL {
        cpu_case(c, cpu, &cpu.pool, op, main, op.name());
    }
    for size in sweep_sizes(scale) {
        cpu_case(
            c,
            cpu,
            &cpu.pool,
            StreamOp::Read,
            size,
            &format!("read-{}", size_name(size, llc)),
        );
    }
    let mut threads: Vec<usize> = std::iter::successors(Some(1usize), |t| Some(t * 2))
        .take_while(|t| *t < cpu.threads)
        .collect();
    threads.push(cpu.threads);
    for t in threads {
        let pool = cpu.pool_with(t);
        for op in [StreamOp::Read, StreamOp::Triad] {
            cpu_case(c, cpu, &pool, op, main, &format!("{}-t{t}", op.name()));
        }
    }
}

struct GpuArrays {
    a: CudaSlice<f32>,
    b: CudaSlice<f32>,
    c: CudaSlice<f32>,
    host_a: Vec<f32>,
}

fn gpu_arrays(gpu: &GpuBackend, n: usize) -> membound_cuda::Result<GpuArrays> {
    let host_a = pattern(n);
    let g = &gpu.gpu;
    Ok(GpuArrays {
        a: g.upload(&host_a)?,
        b: g.upload(&vec![2.0f32; n])?,
        c: g.upload(&vec![0.5f32; n])?,
        host_a,
    })
}

fn gpu_verify(gpu: &GpuBackend, op: GpuOp, arr: &mut GpuArrays) -> Result<(), String> {
    let g = &gpu.gpu;
    let err = |e: membound_cuda::CudaError| e.to_string();
    g.stream_op(op, &mut arr.a, &mut arr.b, &arr.c, 3.0)
        .map_err(err)?;
    let ok = match op {
        GpuOp::Read => {
            g.read_result().map_err(err)? == membound_cuda::bandwidth::read_checksum(&arr.host_a)
        }
        GpuOp::Write => g.download(&arr.a).map_err(err)?.iter().all(|v| *v == 3.0),
        GpuOp::Copy | GpuOp::DriverCopy => g.download(&arr.b).map_err(err)? == arr.host_a,
        GpuOp::Triad => {
            let (b, c) = (
                g.download(&arr.b).map_err(err)?,
                g.download(&arr.c).map_err(err)?,
            );
            let want = membound_cuda::bandwidth::triad_reference(&b, &c, 3.0);
            g.download(&arr.a).map_err(err)? == want
        }
    };
    // Restore the inputs the next op expects.
    *arr = gpu_arrays(gpu, arr.host_a.len()).map_err(err)?;
    ok.then_some(())
        .ok_or_else(|| format!("{} {} gave a wrong result", gpu.id, op.name()))
}

fn gpu_case(c: &mut Criterion, gpu: &GpuBackend, op: GpuOp, array_bytes: u64, case: &str) {
    let mut arr = match gpu_arrays(gpu, (array_bytes / 4) as usize) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("membound: {}: skipping bandwidth/{case}: {e}", gpu.id);
            return;
        }
    };
    require(gpu_verify(gpu, op, &mut arr));
    let mut g = group(c, membound_cuda::bytes_moved(op, array_bytes));
    g.bench_function(format!("{case}/{}", gpu.id), |bch| {
        bch.iter_custom(|iters| {
            gpu.time(&format!("bandwidth/{case}"), iters, || {
                gpu.gpu.stream_op(op, &mut arr.a, &mut arr.b, &arr.c, 3.0)
            })
        })
    });
    g.finish();
}

fn gpu_suite(c: &mut Criterion, gpu: &GpuBackend, scale: Scale) {
    let llc = gpu.llc_bytes();
    let main = main_array_bytes(scale, llc);
    for op in GpuOp::ALL {
        gpu_case(c, gpu, op, main, op.name());
    }
    let mut sizes = sweep_sizes(scale);
    if scale != Scale::Quick {
        sizes.push(4 * GIB);
    }
    for size in sizes
        .into_iter()
        .filter(|s| *s * 4 < gpu.info().memory_bytes)
    {
        gpu_case(
            c,
            gpu,
            GpuOp::Read,
            size,
            &format!("read-{}", size_name(size, llc)),
        );
    }
}

fn main() {
    let scale = Scale::from_env();
    let backends = Backends::discover();
    machine::write(&backends, scale, "bandwidth");
    let mut c = scale.criterion();
    for gpu in &backends.gpus {
        gpu_suite(&mut c, gpu, scale);
    }
    if let Some(cpu) = &backends.cpu {
        cpu_suite(&mut c, cpu, scale);
    }
    machine::write(&backends, scale, "bandwidth");
    c.final_summary();
}
