//! Backends: the devices a suite runs on, discovered once per bench process. GPUs come first
//! (`gpu0`, `gpu1`… in CUDA ordinal order), then the CPU (`cpu`). Without a usable CUDA driver
//! or device the reason is printed once and the suites run on the CPU alone.
//! `MEMBOUND_BACKENDS=cpu,gpu1` restricts a run to the named backends.

use std::sync::Arc;

use membound_cuda::{DeviceInfo, Gpu, Probe, probe};
use membound_spec::hardware::{Device, host_cpu};
use rayon::ThreadPool;

/// The CPU: a rayon pool over every core, and the instruction set its kernels use.
pub struct CpuBackend {
    /// Pool with one thread per available core.
    pub pool: Arc<ThreadPool>,
    /// Threads in `pool`.
    pub threads: usize,
    /// The host's facts (model name, cores, last-level cache, memory).
    pub host: Device,
}

impl CpuBackend {
    /// The backend id used in benchmark ids.
    pub fn id(&self) -> &'static str {
        "cpu"
    }

    /// This machine's CPU with a pool of every core.
    pub fn all_cores() -> CpuBackend {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a rayon pool of the machine's core count can be built");
        CpuBackend {
            pool: Arc::new(pool),
            threads,
            host: host_cpu(),
        }
    }

    /// The same CPU with a pool of `threads` threads (the threads sweep).
    pub fn with_threads(&self, threads: usize) -> CpuBackend {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .expect("a rayon pool of a few threads can always be built");
        CpuBackend {
            pool: Arc::new(pool),
            threads: threads.max(1),
            host: self.host.clone(),
        }
    }

    /// Last-level cache bytes (at least 8 MiB is assumed when `/sys` does not say).
    pub fn llc_bytes(&self) -> u64 {
        if self.host.llc_bytes == 0 {
            8 << 20
        } else {
            self.host.llc_bytes
        }
    }
}

/// One CUDA device.
pub struct GpuBackend {
    /// `gpu0`, `gpu1`…
    pub id: String,
    /// The device, with its kernels built.
    pub gpu: Gpu,
}

impl GpuBackend {
    /// The device's facts.
    pub fn info(&self) -> &DeviceInfo {
        self.gpu.info()
    }

    /// L2 bytes.
    pub fn llc_bytes(&self) -> u64 {
        self.gpu.info().l2_bytes
    }
}

/// Every backend of this machine.
pub struct Backends {
    /// CUDA devices that initialised.
    pub gpus: Vec<GpuBackend>,
    /// The CPU, unless excluded by `MEMBOUND_BACKENDS`.
    pub cpu: Option<CpuBackend>,
    /// The probe's outcome (for machine.json).
    pub probe: Probe,
}

/// The backends `MEMBOUND_BACKENDS` asks for (lower-cased, trimmed), or `None` for all.
fn requested() -> Option<Vec<String>> {
    parse_requested(&std::env::var("MEMBOUND_BACKENDS").ok()?)
}

fn parse_requested(list: &str) -> Option<Vec<String>> {
    let ids: Vec<String> = list
        .split(',')
        .map(|w| w.trim().to_ascii_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    (!ids.is_empty()).then_some(ids)
}

fn wanted(id: &str) -> bool {
    requested().is_none_or(|ids| ids.iter().any(|w| w == id))
}

/// The names in `requested` that are none of `present`, with a message saying which exist.
fn unknown_backends(requested: &[String], present: &[String]) -> Option<String> {
    let unknown: Vec<&str> = requested
        .iter()
        .filter(|r| !present.contains(r))
        .map(String::as_str)
        .collect();
    (!unknown.is_empty()).then(|| {
        format!(
            "MEMBOUND_BACKENDS names {}, which this machine does not have (it has: {})",
            unknown.join(", "),
            present.join(", ")
        )
    })
}

impl Backends {
    /// Spec-sheet read bandwidth (GB/s) of backend `id`, where the hardware table knows it.
    pub fn spec_gbs(&self, id: &str) -> Option<f64> {
        let gpu = self.gpus.iter().find(|g| g.id == id)?;
        membound_spec::hardware::device_for_name(&gpu.info().name).and_then(|d| d.bandwidth_gbs)
    }

    /// Probes CUDA and builds every backend, printing one line per backend (or why a GPU is
    /// missing) to stderr.
    pub fn discover() -> Backends {
        let probe = probe();
        if let Some(reason) = probe.reason() {
            eprintln!("membound: no GPU backend ({reason}); running on the CPU only");
        }
        let mut gpus = Vec::new();
        for info in probe.devices() {
            let id = format!("gpu{}", info.ordinal);
            if !wanted(&id) {
                continue;
            }
            match Gpu::new(info.ordinal) {
                Ok(gpu) => {
                    eprintln!(
                        "membound: {id}: {} ({}, {} SMs, {:.1} GiB)",
                        info.name,
                        info.arch(),
                        info.sm_count,
                        info.memory_bytes as f64 / (1u64 << 30) as f64
                    );
                    gpus.push(GpuBackend { id, gpu });
                }
                Err(e) => eprintln!("membound: {id} unusable, skipped: {e}"),
            }
        }
        let cpu = wanted("cpu").then(|| {
            let cpu = CpuBackend::all_cores();
            eprintln!(
                "membound: cpu: {} ({} threads, {}, LLC {} MiB)",
                cpu.host.name,
                cpu.threads,
                membound_cpu::simd_level(),
                cpu.host.llc_bytes >> 20
            );
            cpu
        });
        let backends = Backends { gpus, cpu, probe };
        if let Some(ids) = requested() {
            let mut present: Vec<String> = backends
                .probe
                .devices()
                .iter()
                .map(|d| format!("gpu{}", d.ordinal))
                .collect();
            present.push("cpu".into());
            if let Some(msg) = unknown_backends(&ids, &present) {
                eprintln!("membound: {msg}");
            }
        }
        backends
    }

    /// Whether no backend is left to run on (all filtered out or unusable): the benches then
    /// say so and exit 2 instead of running nothing silently.
    pub fn is_empty(&self) -> bool {
        self.gpus.is_empty() && self.cpu.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_lists_are_case_blind_and_unknown_names_are_reported() {
        assert_eq!(
            parse_requested(" CPU, gpu0 ,"),
            Some(vec!["cpu".into(), "gpu0".into()])
        );
        assert_eq!(parse_requested(" , "), None);
        let present = vec!["gpu0".to_string(), "cpu".to_string()];
        assert_eq!(unknown_backends(&["cpu".into()], &present), None);
        let msg = unknown_backends(&["gpu7".into(), "cpu".into()], &present).unwrap();
        assert!(
            msg.contains("gpu7") && msg.contains("it has: gpu0, cpu"),
            "{msg}"
        );
    }
}
