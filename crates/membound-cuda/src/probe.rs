//! Device discovery that never panics: is there a CUDA driver, is it new enough, which devices
//! does it see and what are they ([`DeviceInfo`], the facts `machine.json` records), and what
//! are their clocks now ([`read_clocks`]).

use std::ffi::{CStr, c_char, c_int};

use cudarc::driver::{result, sys};
use serde::Serialize;

use crate::error::{CudaError, Result, catch_panic};

/// The oldest driver accepted: CUDA 12.0 (R525). cudarc's cuda-13000 bindings resolve symbols
/// at first use; the only one membound needs that older drivers lack is
/// `cuEventElapsedTime_v2` (CUDA 12.8), and timing falls back to `cuEventElapsedTime` there
/// ([`has_elapsed_v2`]). Drivers below 12.8 are accepted on that reasoning, not on a run.
pub const MIN_DRIVER_VERSION: i32 = 12000;

/// Whether the driver exports `cuEventElapsedTime_v2` (CUDA 12.8+); the library must be present.
pub(crate) fn has_elapsed_v2() -> bool {
    // SAFETY: get() only looks a symbol up in the already loaded driver library.
    unsafe { sys::culib().get::<unsafe extern "C" fn()>(b"cuEventElapsedTime_v2\0") }.is_ok()
}

/// What one CUDA device is, as read from the driver.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceInfo {
    /// CUDA device ordinal (`gpu{ordinal}` in benchmark ids).
    pub ordinal: usize,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Compute capability (major, minor), e.g. (9, 0).
    pub sm: (u32, u32),
    /// Streaming multiprocessors.
    pub sm_count: u32,
    /// Total device memory in bytes.
    pub memory_bytes: u64,
    /// Memory bus width in bits.
    pub bus_width_bits: u32,
    /// L2 cache size in bytes.
    pub l2_bytes: u64,
    /// SM clock in kHz as the driver reports it (the boost clock, not the current one).
    pub sm_clock_khz: u32,
    /// Memory clock in kHz as the driver reports it.
    pub memory_clock_khz: u32,
    /// Maximum resident threads per SM.
    pub max_threads_per_sm: u32,
    /// Driver's CUDA version, e.g. `13.0`.
    pub driver_version: String,
    /// NVRTC version, e.g. `13.0`; `None` when libnvrtc cannot be loaded.
    pub nvrtc_version: Option<String>,
    /// PCI bus id, e.g. `00000000:18:00.0`.
    pub pci_bus_id: String,
}

impl DeviceInfo {
    /// The device's own architecture as NVRTC names it, e.g. `sm_90`.
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.sm.0, self.sm.1)
    }

    /// Theoretical DRAM bandwidth in bytes/s from the reported memory clock and bus width
    /// (double data rate: 2 transfers per clock), e.g. 3.35e12 for an H100 SXM.
    pub fn peak_bandwidth_bytes_per_s(&self) -> f64 {
        2.0 * self.memory_clock_khz as f64 * 1e3 * self.bus_width_bits as f64 / 8.0
    }

    /// A label for messages: `gpu0 (NVIDIA H100 80GB HBM3, sm_90)`.
    pub fn label(&self) -> String {
        format!("gpu{} ({}, {})", self.ordinal, self.name, self.arch())
    }
}

/// The outcome of [`probe`]: devices, or the one-line reason there are none.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Probe {
    /// A usable driver and at least one device.
    Devices {
        /// Every device the driver sees, by ordinal.
        devices: Vec<DeviceInfo>,
    },
    /// No usable CUDA: e.g. `no CUDA driver library found`, `no CUDA device`.
    Unavailable {
        /// One line saying why.
        reason: String,
    },
}

impl Probe {
    /// The devices found (empty when unavailable).
    pub fn devices(&self) -> &[DeviceInfo] {
        match self {
            Probe::Devices { devices } => devices,
            Probe::Unavailable { .. } => &[],
        }
    }

    /// Why there is no device, if there is none.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Probe::Devices { .. } => None,
            Probe::Unavailable { reason } => Some(reason),
        }
    }
}

/// Looks for CUDA devices without ever panicking: checks that the driver library loads, that
/// it is CUDA 12.8 or newer, then counts devices and reads each one's facts.
pub fn probe() -> Probe {
    let outcome = catch_panic(|| -> Result<Vec<DeviceInfo>, String> {
        let driver = check_driver()?;
        let count = device_count()?;
        let nvrtc = crate::nvrtc::nvrtc_version().ok();
        (0..count)
            .map(|i| device_info(i, driver, nvrtc).map_err(|e| e.to_string()))
            .collect()
    });
    match outcome {
        Ok(Ok(devices)) => Probe::Devices { devices },
        Ok(Err(reason)) => Probe::Unavailable { reason },
        Err(panic) => Probe::Unavailable {
            reason: format!("CUDA probe panicked: {panic}"),
        },
    }
}

/// Formats a CUDA version number (`12080`) as `12.8`.
pub fn format_cuda_version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Checks the driver library is present and new enough; returns its version number.
pub(crate) fn check_driver() -> Result<i32, String> {
    // SAFETY: only tries to dlopen the library; touches no symbol.
    if !unsafe { sys::is_culib_present() } {
        return Err("no CUDA driver library found (libcuda)".to_owned());
    }
    let mut version: c_int = 0;
    // SAFETY: cuDriverGetVersion exists in every driver and needs no cuInit; the pointer is
    // to a live local.
    let rc = unsafe { sys::cuDriverGetVersion(&mut version) };
    rc.result()
        .map_err(|e| format!("cuDriverGetVersion failed: {e:?}"))?;
    if version < MIN_DRIVER_VERSION {
        return Err(format!(
            "driver too old: CUDA {} driver, needs CUDA {} or newer",
            format_cuda_version(version),
            format_cuda_version(MIN_DRIVER_VERSION)
        ));
    }
    Ok(version)
}

fn device_count() -> Result<usize, String> {
    match cudarc::driver::CudaContext::device_count() {
        Ok(0) => Err("no CUDA device".to_owned()),
        Ok(n) => Ok(n as usize),
        Err(e) if e.0 == sys::cudaError_enum::CUDA_ERROR_NO_DEVICE => {
            Err("no CUDA device (CUDA_ERROR_NO_DEVICE)".to_owned())
        }
        Err(e) => Err(format!("cuInit / cuDeviceGetCount failed: {e:?}")),
    }
}

/// Reads one device's facts (the driver must have been checked and initialised).
pub(crate) fn device_info(
    ordinal: usize,
    driver: i32,
    nvrtc: Option<(i32, i32)>,
) -> Result<DeviceInfo> {
    let who = format!("gpu{ordinal}");
    let err = |op: &str| {
        let who = who.clone();
        let op = op.to_owned();
        move |source| CudaError::Driver {
            device: who,
            op,
            source,
        }
    };
    let dev = result::device::get(ordinal as c_int).map_err(err("cuDeviceGet"))?;
    let attr = |a: sys::CUdevice_attribute| -> Result<u32> {
        // SAFETY: dev is a valid device handle from cuDeviceGet.
        unsafe { result::device::get_attribute(dev, a) }
            .map(|v| v.max(0) as u32)
            .map_err(err(&format!("cuDeviceGetAttribute({a:?})")))
    };
    use sys::CUdevice_attribute as A;
    let name = result::device::get_name(dev).map_err(err("cuDeviceGetName"))?;
    // SAFETY: as above.
    let memory_bytes =
        unsafe { result::device::total_mem(dev) }.map_err(err("cuDeviceTotalMem"))? as u64;
    let mut bus = [0 as c_char; 32];
    // SAFETY: the buffer is 32 bytes (the API needs 13) and dev is valid.
    unsafe { sys::cuDeviceGetPCIBusId(bus.as_mut_ptr(), bus.len() as c_int, dev) }
        .result()
        .map_err(err("cuDeviceGetPCIBusId"))?;
    // SAFETY: the driver wrote a NUL-terminated string into the zeroed buffer.
    let pci_bus_id = unsafe { CStr::from_ptr(bus.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok(DeviceInfo {
        ordinal,
        name,
        sm: (
            attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        ),
        sm_count: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        memory_bytes,
        bus_width_bits: attr(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)?,
        l2_bytes: attr(A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as u64,
        sm_clock_khz: attr(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?,
        memory_clock_khz: attr(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)?,
        max_threads_per_sm: attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)?,
        driver_version: format_cuda_version(driver),
        nvrtc_version: nvrtc.map(|(major, minor)| format!("{major}.{minor}")),
        pci_bus_id,
    })
}

/// Clocks of one device at the moment they were read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Clocks {
    /// Current SM clock, MHz.
    pub sm_mhz: u32,
    /// Current memory clock, MHz.
    pub memory_mhz: u32,
    /// Maximum SM clock, MHz.
    pub max_sm_mhz: u32,
    /// Maximum memory clock, MHz.
    pub max_memory_mhz: u32,
}

/// Reads the device's current clocks with `nvidia-smi` (the CUDA driver API only reports the
/// maximum). Record them before and after a run; membound never locks clocks.
pub fn read_clocks(info: &DeviceInfo) -> Result<Clocks> {
    let op = "read_clocks (nvidia-smi)";
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem",
            "--format=csv,noheader,nounits",
            &format!("--id={}", info.pci_bus_id),
        ])
        .output()
        .map_err(|e| CudaError::invalid(op, format!("cannot run nvidia-smi: {e}")))?;
    if !out.status.success() {
        return Err(CudaError::invalid(
            op,
            format!(
                "nvidia-smi failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_clocks(&text)
        .ok_or_else(|| CudaError::invalid(op, format!("unexpected nvidia-smi output {text:?}")))
}

/// Parses one `nvidia-smi --query-gpu=clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem
/// --format=csv,noheader,nounits` line.
pub(crate) fn parse_clocks(text: &str) -> Option<Clocks> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let v: Vec<u32> = line
        .split(',')
        .map(|f| f.trim().parse().ok())
        .collect::<Option<_>>()?;
    match v[..] {
        [sm_mhz, memory_mhz, max_sm_mhz, max_memory_mhz] => Some(Clocks {
            sm_mhz,
            memory_mhz,
            max_sm_mhz,
            max_memory_mhz,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100() -> DeviceInfo {
        DeviceInfo {
            ordinal: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            sm: (9, 0),
            sm_count: 132,
            memory_bytes: 85_045_379_072,
            bus_width_bits: 5120,
            l2_bytes: 52_428_800,
            sm_clock_khz: 1_980_000,
            memory_clock_khz: 2_619_000,
            max_threads_per_sm: 2048,
            driver_version: "13.0".into(),
            nvrtc_version: Some("13.0".into()),
            pci_bus_id: "00000000:18:00.0".into(),
        }
    }

    #[test]
    fn derived_facts() {
        let d = h100();
        assert_eq!(d.arch(), "sm_90");
        assert_eq!(d.label(), "gpu0 (NVIDIA H100 80GB HBM3, sm_90)");
        // 2 * 2.619 GHz * 640 bytes = 3.352 TB/s, the H100 SXM spec figure.
        assert!((d.peak_bandwidth_bytes_per_s() - 3.35232e12).abs() < 1e6);
    }

    #[test]
    fn versions_format() {
        assert_eq!(format_cuda_version(12080), "12.8");
        assert_eq!(format_cuda_version(13000), "13.0");
        assert_eq!(format_cuda_version(12090), "12.9");
    }

    #[test]
    fn clocks_parse() {
        assert_eq!(
            parse_clocks("1980, 2619, 1980, 2619\n"),
            Some(Clocks {
                sm_mhz: 1980,
                memory_mhz: 2619,
                max_sm_mhz: 1980,
                max_memory_mhz: 2619
            })
        );
        assert_eq!(parse_clocks("[N/A], 2619, 1980, 2619"), None);
        assert_eq!(parse_clocks("1, 2, 3"), None);
        assert_eq!(parse_clocks(""), None);
    }

    #[test]
    fn probe_never_panics_and_explains() {
        let p = probe();
        match &p {
            Probe::Devices { devices } => {
                assert!(!devices.is_empty());
                for (i, d) in devices.iter().enumerate() {
                    assert_eq!(d.ordinal, i);
                    assert!(d.sm_count > 0 && d.memory_bytes > 0, "{d:?}");
                }
            }
            Probe::Unavailable { reason } => {
                assert!(!reason.is_empty() && !reason.contains('\n'), "{reason:?}");
                println!("no CUDA here: {reason}");
            }
        }
        let json = serde_json::to_value(&p).expect("probe serialises");
        assert!(json.get("status").is_some());
    }

    #[test]
    fn device_info_serialises_every_field() {
        let v = serde_json::to_value(h100()).expect("serialises");
        for key in [
            "ordinal",
            "name",
            "sm",
            "sm_count",
            "memory_bytes",
            "bus_width_bits",
            "l2_bytes",
            "sm_clock_khz",
            "memory_clock_khz",
            "driver_version",
            "nvrtc_version",
            "pci_bus_id",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["sm"], serde_json::json!([9, 0]));
    }
}
