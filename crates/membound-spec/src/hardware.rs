//! The hardware table: spec-sheet memory bandwidth, capacity, last-level cache and SM facts of
//! the machines membound is asked about, each with its source, plus the host CPU read from this
//! machine (`/proc`, `/sys`).
//!
//! Spec bandwidth is what the fit planner's roofline uses when no measured baseline is given;
//! measured bandwidth (membound's own `bandwidth` suite) is the honest number.

use serde::Serialize;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// What kind of memory a device decodes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// A discrete GPU with its own memory.
    Gpu,
    /// A GPU sharing one memory with its CPU (DGX Spark GB10).
    UnifiedGpu,
    /// A host CPU and its DRAM.
    Cpu,
}

/// One device's memory facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    /// Short id used on the command line (`4090`, `gb10`, `h100`).
    pub id: String,
    /// Full name.
    pub name: String,
    /// GPU, unified GPU or CPU.
    pub kind: DeviceKind,
    /// Memory capacity in bytes.
    pub memory_bytes: u64,
    /// Spec-sheet memory bandwidth in GB/s (1e9 bytes/s); `None` when unknown (a host CPU whose
    /// memory configuration cannot be read: measure it with `cargo bench --bench bandwidth`).
    pub bandwidth_gbs: Option<f64>,
    /// Last-level cache in bytes (GPU L2; CPU L3).
    pub llc_bytes: u64,
    /// Streaming multiprocessors (GPUs) or cores (CPUs).
    pub units: u32,
    /// CUDA compute capability as `sm_XY` (GPUs).
    pub sm: Option<&'static str>,
    /// Where the numbers come from.
    pub source: String,
}

#[allow(clippy::too_many_arguments)]
fn gpu(
    id: &str,
    name: &str,
    kind: DeviceKind,
    mem: u64,
    gbs: f64,
    l2: u64,
    sms: u32,
    sm: &'static str,
    source: &str,
) -> Device {
    Device {
        id: id.into(),
        name: name.into(),
        kind,
        memory_bytes: mem,
        bandwidth_gbs: Some(gbs),
        llc_bytes: l2,
        units: sms,
        sm: Some(sm),
        source: source.into(),
    }
}

/// Every device of the table (the host CPU of this machine is [`host_cpu`]).
/// H100 SXM5 memory as the device reports it (`cuDeviceTotalMem`), not the marketing 80 GiB.
pub const H100_MEMORY_BYTES: u64 = 85_045_477_376;

pub fn table() -> Vec<Device> {
    use DeviceKind::*;
    vec![
        gpu("4090", "NVIDIA GeForce RTX 4090", Gpu, 24 * GIB, 1008.0, 72 * MIB, 128, "sm_89",
            "NVIDIA RTX 4090 specifications (384-bit GDDR6X at 21 Gbps = 1008 GB/s); Ada Lovelace whitepaper (72 MB L2, 128 SMs)"),
        gpu("5070ti", "NVIDIA GeForce RTX 5070 Ti", Gpu, 16 * GIB, 896.0, 48 * MIB, 70, "sm_120",
            "NVIDIA RTX 5070 Ti specifications (256-bit GDDR7 at 28 Gbps = 896 GB/s, 70 SMs); Blackwell GB203 (48 MB L2 on the 5070 Ti)"),
        gpu("5090", "NVIDIA GeForce RTX 5090", Gpu, 32 * GIB, 1792.0, 96 * MIB, 170, "sm_120",
            "NVIDIA RTX 5090 specifications (512-bit GDDR7 at 28 Gbps = 1792 GB/s, 170 SMs, 96 MB L2)"),
        gpu("gb10", "NVIDIA DGX Spark (GB10)", UnifiedGpu, 128 * GIB, 273.0, 24 * MIB, 48, "sm_121",
            "NVIDIA DGX Spark specifications (128 GB LPDDR5x unified, 273 GB/s); GB10 24 MB L2 (+16 MB system cache)"),
        gpu("h100", "NVIDIA H100 SXM5 80GB", Gpu, H100_MEMORY_BYTES, 3350.0, 50 * MIB, 132, "sm_90",
            "NVIDIA H100 datasheet (SXM: 80 GB HBM3, 3.35 TB/s, 132 SMs); Hopper whitepaper (50 MB L2); memory as the device reports it (cuDeviceTotalMem: 85,045,477,376 bytes, 79.2 GiB)"),
        gpu("h100-pcie", "NVIDIA H100 PCIe 80GB", Gpu, 80 * GIB, 2000.0, 50 * MIB, 114, "sm_90",
            "NVIDIA H100 datasheet (PCIe: 80 GB HBM2e, 2 TB/s, 114 SMs); Hopper whitepaper (50 MB L2)"),
        gpu("h200", "NVIDIA H200 SXM 141GB", Gpu, 141 * GIB, 4800.0, 50 * MIB, 132, "sm_90",
            "NVIDIA H200 datasheet (141 GB HBM3e, 4.8 TB/s, 132 SMs, 50 MB L2)"),
        gpu("a100", "NVIDIA A100 SXM4 80GB", Gpu, 80 * GIB, 2039.0, 40 * MIB, 108, "sm_80",
            "NVIDIA A100 datasheet (80 GB HBM2e, 2039 GB/s, 108 SMs); Ampere whitepaper (40 MB L2)"),
        Device {
            id: "5800x3d".into(),
            name: "AMD Ryzen 7 5800X3D, 2x DDR4-3200 (the seed's desktop host)".into(),
            kind: Cpu,
            memory_bytes: 64 * GIB,
            bandwidth_gbs: Some(51.2),
            llc_bytes: 96 * MIB,
            units: 8,
            sm: None,
            source: "AMD 5800X3D specifications (8 cores, 96 MB L3); dual-channel DDR4-3200 = 2 x 8 B x 3200 MT/s = 51.2 GB/s; the seed's 64 GB".into(),
        },
        Device {
            id: "grace-gb10".into(),
            name: "DGX Spark CPU (10 Cortex-X925 + 10 Cortex-A725), shared LPDDR5x".into(),
            kind: Cpu,
            memory_bytes: 128 * GIB,
            bandwidth_gbs: Some(273.0),
            llc_bytes: 32 * MIB,
            units: 20,
            sm: None,
            source: "NVIDIA DGX Spark specifications (20 Arm cores, 128 GB unified LPDDR5x at 273 GB/s shared with the GPU); two clusters of 16 MB L3 = 32 MB total L3, as the 5800X3D row counts its total L3 (plus a 16 MB system cache shared with the GPU, not counted)".into(),
        },
    ]
}

/// The table's entry for a device as its driver names it (`NVIDIA H100 80GB HBM3`,
/// `NVIDIA GeForce RTX 4090`, `NVIDIA GB10`), or `None` when the name does not say which entry
/// it is (e.g. an H100 NVL, whose bandwidth differs from both H100 entries).
pub fn device_for_name(name: &str) -> Option<Device> {
    let n = name.to_ascii_lowercase();
    let id = if n.contains("h100") {
        if n.contains("nvl") {
            return None;
        }
        if n.contains("pcie") {
            "h100-pcie"
        } else {
            "h100"
        }
    } else if n.contains("h200") {
        "h200"
    } else if n.contains("gb10") {
        "gb10"
    } else if n.contains("a100") && n.contains("80") && !n.contains("pcie") {
        "a100"
    } else if n.contains("5070 ti") {
        "5070ti"
    } else if n.contains("4090") {
        "4090"
    } else if n.contains("5090") {
        "5090"
    } else {
        return None;
    };
    table().into_iter().find(|d| d.id == id)
}

/// Accepted spellings of device ids.
fn normalise(id: &str) -> String {
    let s = id.trim().to_ascii_lowercase().replace(['-', '_', ' '], "");
    let s = s.strip_prefix("nvidia").unwrap_or(&s).to_string();
    let s = s.strip_prefix("geforce").unwrap_or(&s).to_string();
    let s = s.strip_prefix("rtx").unwrap_or(&s).to_string();
    match s.as_str() {
        "spark" | "dgxspark" => "gb10".into(),
        "h100sxm" | "h100sxm5" => "h100".into(),
        "grace" => "gracegb10".into(),
        "cpu" | "host" => "host".into(),
        _ => s,
    }
}

/// An id that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device `{0}` (known: {known}, host)", known = table().iter().map(|d| d.id.clone()).collect::<Vec<_>>().join(", "))]
pub struct UnknownDevice(pub String);

/// Looks a device up by id (case, dashes and an `rtx`/`nvidia` prefix ignored); `host` is this
/// machine's CPU.
pub fn device(id: &str) -> Result<Device, UnknownDevice> {
    let want = normalise(id);
    if want == "host" {
        return Ok(host_cpu());
    }
    table()
        .into_iter()
        .find(|d| normalise(&d.id) == want)
        .ok_or_else(|| UnknownDevice(id.to_string()))
}

/// This machine's CPU and memory, read from `/proc/cpuinfo`, `/proc/meminfo` and `/sys`.
/// Its bandwidth is unknown (`None`) until measured.
pub fn host_cpu() -> Device {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let units = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_bytes = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    Device {
        id: "host".into(),
        name,
        kind: DeviceKind::Cpu,
        memory_bytes,
        bandwidth_gbs: None,
        llc_bytes: last_level_cache_bytes(),
        units,
        sm: None,
        source: "this machine: /proc/cpuinfo, /proc/meminfo, /sys/devices/system/cpu/cpu0/cache"
            .into(),
    }
}

/// Size of the largest cache level of CPU 0 (`/sys/devices/system/cpu/cpu0/cache/index*/size`).
pub fn last_level_cache_bytes() -> u64 {
    let mut best = 0;
    for i in 0..8 {
        let path = format!("/sys/devices/system/cpu/cpu0/cache/index{i}/size");
        let Ok(s) = std::fs::read_to_string(path) else {
            continue;
        };
        let s = s.trim();
        let bytes = if let Some(k) = s.strip_suffix('K') {
            k.parse::<u64>().ok().map(|v| v * 1024)
        } else if let Some(m) = s.strip_suffix('M') {
            m.parse::<u64>().ok().map(|v| v * MIB)
        } else {
            s.parse().ok()
        };
        best = best.max(bytes.unwrap_or(0));
    }
    best
}

#[cfg(test)]
mod tests {

    #[test]
    fn driver_names_map_to_the_table() {
        let id = |n: &str| device_for_name(n).map(|d| d.id);
        assert_eq!(id("NVIDIA H100 80GB HBM3").as_deref(), Some("h100"));
        assert_eq!(id("NVIDIA H100 PCIe").as_deref(), Some("h100-pcie"));
        assert_eq!(id("NVIDIA H100 NVL"), None);
        assert_eq!(id("NVIDIA H200").as_deref(), Some("h200"));
        assert_eq!(id("NVIDIA GeForce RTX 4090").as_deref(), Some("4090"));
        assert_eq!(id("NVIDIA GeForce RTX 5070 Ti").as_deref(), Some("5070ti"));
        assert_eq!(id("NVIDIA GB10").as_deref(), Some("gb10"));
        assert_eq!(id("Tesla T4"), None);
    }

    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(device("RTX 4090").unwrap().id, "4090");
        assert_eq!(device("5070-ti").unwrap().id, "5070ti");
        assert_eq!(device("dgx-spark").unwrap().bandwidth_gbs, Some(273.0));
        assert_eq!(device("H100").unwrap().llc_bytes, 50 * MIB);
        assert_eq!(device("h100").unwrap().memory_bytes, 85_045_477_376);
        assert_eq!(device("grace-gb10").unwrap().llc_bytes, 32 * MIB);
        let e = device("tpu-v9").unwrap_err().to_string();
        assert!(e.contains("tpu-v9") && e.contains("gb10"), "{e}");
        let host = device("host").unwrap();
        assert!(host.units >= 1 && host.memory_bytes > 0);
        assert!(table().iter().all(|d| !d.source.is_empty()));
    }
}
