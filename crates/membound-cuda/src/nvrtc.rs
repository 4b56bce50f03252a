//! The NVRTC build of `kernels/*.cu`: sources embedded with `include_str!`, compiled at run
//! time for one target, a CUBIN for a real `sm_XY` (so ptxas runs and its errors surface) or
//! PTX for a `compute_XY` when this NVRTC does not know the device's architecture.
//!
//! The same code path serves [`crate::Gpu`] and the GPU-less check [`compile_all`].
//!
//! Kernels include `<cuda/std/cstdint>`. Where that header comes from ([`CudaHeaders`]), in
//! order: `MEMBOUND_CUDA_INCLUDE` (directories separated by `:`); NVRTC's own bundled headers
//! (NVRTC 13.3 and later ship them and `nvrtcInstallBundledHeaders` extracts them once into a
//! cache folder, `MEMBOUND_NVRTC_HEADERS` or `~/.cache/membound/nvrtc-headers-X.Y`); a CUDA
//! toolkit (`CUDA_PATH`, `CUDA_HOME`, `/usr/local/cuda`, with CUDA 13's `include/cccl`); and
//! failing all of those a built-in stand-in that defines the fixed-width integer types only,
//! which is all the kernels use.

use std::collections::HashMap;
use std::ffi::{CString, c_char, c_int, c_uint};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::nvrtc::{result, sys};

use crate::error::{CudaError, Result, catch_panic};

/// Headers the kernel files include with `#include "..."`, embedded.
const HEADERS: &[(&str, &str)] = &[
    ("common.cuh", include_str!("../../../kernels/common.cuh")),
    ("params.cuh", include_str!("../../../kernels/params.cuh")),
    (
        "quant_blocks.cuh",
        include_str!("../../../kernels/quant_blocks.cuh"),
    ),
    (
        "gemv_tile.cuh",
        include_str!("../../../kernels/gemv_tile.cuh"),
    ),
];

/// Every kernel file (name, source), each compiled as one NVRTC program and loaded as one
/// module.
pub const KERNEL_FILES: &[(&str, &str)] = &[
    (
        "bandwidth.cu",
        include_str!("../../../kernels/bandwidth.cu"),
    ),
    ("gemv.cu", include_str!("../../../kernels/gemv.cu")),
    ("moe.cu", include_str!("../../../kernels/moe.cu")),
    (
        "attention.cu",
        include_str!("../../../kernels/attention.cu"),
    ),
    ("decode.cu", include_str!("../../../kernels/decode.cu")),
];

/// The stand-in for `<cuda/std/cstdint>` when no CUDA headers are found (LP64 and LLP64 agree
/// on these types for device code).
const CSTDINT_SHIM: &str = "#pragma once\n\
namespace cuda { namespace std {\n\
typedef signed char int8_t; typedef short int16_t; typedef int int32_t; typedef long long int64_t;\n\
typedef unsigned char uint8_t; typedef unsigned short uint16_t; typedef unsigned int uint32_t;\n\
typedef unsigned long long uint64_t;\n\
} }\n";

/// The embedded text of one of the kernels' own headers (`common.cuh`, `params.cuh`,
/// `quant_blocks.cuh`).
pub fn header_source(name: &str) -> Option<&'static str> {
    HEADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// What NVRTC produces for one program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A CUBIN for a real architecture, `sm_{major}{minor}`.
    Cubin {
        /// Compute capability major.
        major: u32,
        /// Compute capability minor.
        minor: u32,
    },
    /// PTX for a virtual architecture, `compute_{major}{minor}`, JIT-compiled by the driver.
    Ptx {
        /// Compute capability major.
        major: u32,
        /// Compute capability minor.
        minor: u32,
    },
}

impl Target {
    /// Parses `sm_90`, `sm_121`, `compute_89`.
    pub fn parse(arch: &str) -> Result<Target> {
        let bad = || {
            CudaError::invalid(
                "Target::parse",
                format!("{arch:?} is not sm_XY or compute_XY"),
            )
        };
        let (cubin, digits) = if let Some(d) = arch.strip_prefix("sm_") {
            (true, d)
        } else if let Some(d) = arch.strip_prefix("compute_") {
            (false, d)
        } else {
            return Err(bad());
        };
        if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (maj, min) = digits.split_at(digits.len() - 1);
        let (major, minor) = (
            maj.parse().map_err(|_| bad())?,
            min.parse().map_err(|_| bad())?,
        );
        Ok(if cubin {
            Target::Cubin { major, minor }
        } else {
            Target::Ptx { major, minor }
        })
    }

    /// The `--gpu-architecture` value: `sm_90` or `compute_90`.
    pub fn arch(&self) -> String {
        match *self {
            Target::Cubin { major, minor } => format!("sm_{major}{minor}"),
            Target::Ptx { major, minor } => format!("compute_{major}{minor}"),
        }
    }
}

/// Picks the target for a device of compute capability `sm` given the architectures this
/// NVRTC supports (`nvrtcGetSupportedArchs`, e.g. `[75, 80, ..., 121]`): a CUBIN for the
/// device's own `sm_XY` when supported, else PTX for the newest supported architecture below
/// it (forward compatible, JIT-compiled by the driver).
pub fn choose_target(sm: (u32, u32), supported: &[i32]) -> Result<Target> {
    let want = (sm.0 * 10 + sm.1) as i32;
    if supported.contains(&want) {
        return Ok(Target::Cubin {
            major: sm.0,
            minor: sm.1,
        });
    }
    supported
        .iter()
        .copied()
        .filter(|&a| a < want && a > 0)
        .max()
        .map(|a| Target::Ptx {
            major: (a / 10) as u32,
            minor: (a % 10) as u32,
        })
        .ok_or_else(|| {
            CudaError::invalid(
                "choose_target",
                format!(
                    "this NVRTC supports {supported:?}, nothing at or below sm_{}{}",
                    sm.0, sm.1
                ),
            )
        })
}

/// One compiled kernel file.
#[derive(Clone, Debug)]
pub struct CompiledKernel {
    /// The kernel file, e.g. `gemv.cu`.
    pub file: &'static str,
    /// What was produced.
    pub target: Target,
    /// The CUBIN, or the NUL-terminated PTX text.
    pub image: Vec<u8>,
    /// NVRTC's log (warnings; empty when clean).
    pub log: String,
    /// Where `<cuda/std/cstdint>` came from ([`CudaHeaders::describe`]).
    pub headers: String,
}

/// Where the CUDA headers the kernels include come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaHeaders {
    /// Include directories, with where they were found.
    Dirs {
        /// `MEMBOUND_CUDA_INCLUDE`, `NVRTC 13.5 bundled headers`, `CUDA toolkit /usr/local/cuda`.
        origin: String,
        /// Passed as `--include-path`.
        dirs: Vec<PathBuf>,
    },
    /// No CUDA headers: a built-in `<cuda/std/cstdint>` with the fixed-width types only.
    Shim,
}

impl CudaHeaders {
    /// Finds headers as the module documentation says, once per process.
    pub fn resolve() -> CudaHeaders {
        static RESOLVED: OnceLock<CudaHeaders> = OnceLock::new();
        RESOLVED.get_or_init(resolve_headers).clone()
    }

    /// One line: where the headers come from.
    pub fn describe(&self) -> String {
        match self {
            CudaHeaders::Dirs { origin, dirs } => format!("{origin} ({})", join_paths(dirs)),
            CudaHeaders::Shim => {
                "built-in <cuda/std/cstdint> stand-in (no CUDA headers found)".to_owned()
            }
        }
    }
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn has_cstdint(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| d.join("cuda/std/cstdint").is_file())
}

/// `root/include` plus `root/include/cccl` (CUDA 13 moved CCCL there), if they hold the header.
fn toolkit_dirs(root: &Path) -> Option<Vec<PathBuf>> {
    let inc = root.join("include");
    let mut dirs = vec![inc.clone()];
    if inc.join("cccl").is_dir() {
        dirs.push(inc.join("cccl"));
    }
    has_cstdint(&dirs).then_some(dirs)
}

fn resolve_headers() -> CudaHeaders {
    if let Some(v) = std::env::var_os("MEMBOUND_CUDA_INCLUDE") {
        let dirs: Vec<PathBuf> = std::env::split_paths(&v).collect();
        return CudaHeaders::Dirs {
            origin: "MEMBOUND_CUDA_INCLUDE".into(),
            dirs,
        };
    }
    if let Some(h) = bundled_headers() {
        return h;
    }
    let roots = ["CUDA_PATH", "CUDA_HOME", "CUDA_ROOT"]
        .iter()
        .filter_map(|v| std::env::var_os(v).map(PathBuf::from))
        .chain(["/usr/local/cuda", "/opt/cuda"].map(PathBuf::from));
    for root in roots {
        if let Some(dirs) = toolkit_dirs(&root) {
            return CudaHeaders::Dirs {
                origin: format!("CUDA toolkit {}", root.display()),
                dirs,
            };
        }
    }
    CudaHeaders::Shim
}

/// Extracts NVRTC's bundled headers (NVRTC 13.3+) into the cache folder, if this NVRTC has them.
fn bundled_headers() -> Option<CudaHeaders> {
    let (major, minor) = nvrtc_version().ok()?;
    type Install =
        unsafe extern "C" fn(*const c_char, c_uint, *mut *const c_char) -> sys::nvrtcResult;
    // SAFETY: libnvrtc is loaded (nvrtc_version succeeded); get() only looks a symbol up, and
    // the signature is nvrtc.h's for nvrtcInstallBundledHeaders.
    let install: Install = unsafe {
        *sys::culib()
            .get::<Install>(b"nvrtcInstallBundledHeaders\0")
            .ok()?
    };
    let dir = std::env::var_os("MEMBOUND_NVRTC_HEADERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir);
            cache
                .join("membound")
                .join(format!("nvrtc-headers-{major}.{minor}"))
        });
    let c_dir = CString::new(dir.to_string_lossy().as_bytes()).ok()?;
    let mut log: *const c_char = std::ptr::null();
    // SAFETY: a NUL-terminated path, flags 0 (skip if already installed, wait for a concurrent
    // installer), and a pointer to a local for the error message.
    let rc = unsafe { install(c_dir.as_ptr(), 0, &mut log) };
    let dirs = vec![dir.clone(), dir.join("cccl")];
    (rc == sys::nvrtcResult::NVRTC_SUCCESS && has_cstdint(&dirs)).then(|| CudaHeaders::Dirs {
        origin: format!("NVRTC {major}.{minor} bundled headers"),
        dirs,
    })
}

/// Checks that libnvrtc loads and returns its version; never panics.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { sys::is_culib_present() } {
        return Err(CudaError::NvrtcUnavailable(
            "libnvrtc not found: install the CUDA toolkit or the nvidia-cuda-nvrtc wheel and put its \
             lib folder on LD_LIBRARY_PATH (see scripts/nvrtc-check.sh)"
                .to_owned(),
        ));
    }
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: pointers to live locals; nvrtcVersion exists in every NVRTC.
    let rc = catch_panic(|| unsafe { sys::nvrtcVersion(&mut major, &mut minor) })
        .map_err(CudaError::NvrtcUnavailable)?;
    rc.result()
        .map_err(|e| CudaError::NvrtcUnavailable(format!("nvrtcVersion failed: {e:?}")))?;
    Ok((major, minor))
}

/// The architectures this NVRTC can compile for, e.g. `[75, 80, 86, 87, 89, 90, 100, ..., 121]`.
pub fn supported_archs() -> Result<Vec<i32>> {
    nvrtc_version()?;
    let mut n: c_int = 0;
    // SAFETY: pointer to a live local.
    unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }
        .result()
        .map_err(|e| CudaError::NvrtcUnavailable(format!("nvrtcGetNumSupportedArchs: {e:?}")))?;
    let mut archs = vec![0 as c_int; n.max(0) as usize];
    // SAFETY: the buffer holds exactly the n entries NVRTC reported.
    unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
        .result()
        .map_err(|e| CudaError::NvrtcUnavailable(format!("nvrtcGetSupportedArchs: {e:?}")))?;
    Ok(archs)
}

/// Compiles every kernel file for `arch` (`sm_90`: CUBIN, `compute_90`: PTX) with the headers
/// [`CudaHeaders::resolve`] finds: the code path [`crate::Gpu::new`] uses, minus the driver.
/// Needs libnvrtc only; fails with NVRTC's log on any error.
pub fn compile_all(arch: &str) -> Result<Vec<CompiledKernel>> {
    compile_all_with(arch, &CudaHeaders::resolve())
}

/// [`compile_all`] with explicit headers (e.g. [`CudaHeaders::Shim`], to check the fallback).
pub fn compile_all_with(arch: &str, headers: &CudaHeaders) -> Result<Vec<CompiledKernel>> {
    let target = Target::parse(arch)?;
    nvrtc_version()?;
    KERNEL_FILES
        .iter()
        .map(|&(file, src)| compile_file(file, src, target, headers))
        .collect()
}

/// The kernels for `target`, compiled once per process.
pub(crate) fn compile_cached(target: Target) -> Result<Arc<Vec<CompiledKernel>>> {
    static CACHE: OnceLock<Mutex<HashMap<Target, Arc<Vec<CompiledKernel>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&target) {
        return Ok(hit.clone());
    }
    let compiled = Arc::new(compile_all_with(&target.arch(), &CudaHeaders::resolve())?);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(target, compiled.clone());
    Ok(compiled)
}

/// NVRTC options for one target.
pub(crate) fn options(target: Target, headers: &CudaHeaders) -> Vec<String> {
    let mut opts = vec![
        format!("--gpu-architecture={}", target.arch()),
        "-std=c++17".to_owned(),
        "-lineinfo".to_owned(),
        "--ptxas-options=--warn-on-spills".to_owned(),
        format!("-DGEMV_WARPS={}", crate::gemv::gemv_warps()),
        format!("-DTILE_PIPE={}", u8::from(crate::gemv::tiles_pipelined())),
    ];
    if let CudaHeaders::Dirs { dirs, .. } = headers {
        opts.extend(
            dirs.iter()
                .map(|d| format!("--include-path={}", d.display())),
        );
    }
    opts
}

/// Destroys an NVRTC program on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed only here.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

fn c_string(file: &str, arch: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| CudaError::Nvrtc {
        op: "source",
        file: file.to_owned(),
        arch: arch.to_owned(),
        code: "embedded NUL byte".to_owned(),
    })
}

fn compile_file(
    file: &'static str,
    src: &str,
    target: Target,
    headers: &CudaHeaders,
) -> Result<CompiledKernel> {
    let arch = target.arch();
    let nv_err = |op: &'static str| {
        let arch = arch.clone();
        move |code: sys::nvrtcResult| CudaError::Nvrtc {
            op,
            file: file.to_owned(),
            arch,
            code: format!("{code:?}"),
        }
    };
    let mut header_list: Vec<(&str, &str)> = HEADERS.to_vec();
    if *headers == CudaHeaders::Shim {
        header_list.push(("cuda/std/cstdint", CSTDINT_SHIM));
    }
    let names: Vec<CString> = header_list
        .iter()
        .map(|(n, _)| c_string(file, &arch, n))
        .collect::<Result<_>>()?;
    let texts: Vec<CString> = header_list
        .iter()
        .map(|(_, t)| c_string(file, &arch, t))
        .collect::<Result<_>>()?;
    let name_ptrs: Vec<*const c_char> = names.iter().map(|c| c.as_ptr()).collect();
    let text_ptrs: Vec<*const c_char> = texts.iter().map(|c| c.as_ptr()).collect();
    let c_src = c_string(file, &arch, src)?;
    let c_name = c_string(file, &arch, file)?;

    let mut raw: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer is to a live NUL-terminated string owned above, the arrays hold
    // exactly header_list.len() entries, and NVRTC copies what it needs.
    unsafe {
        sys::nvrtcCreateProgram(
            &mut raw,
            c_src.as_ptr(),
            c_name.as_ptr(),
            header_list.len() as c_int,
            text_ptrs.as_ptr(),
            name_ptrs.as_ptr(),
        )
    }
    .result()
    .map_err(|e| nv_err("nvrtcCreateProgram")(e.0))?;
    let prog = Program(raw);

    let opts = options(target, headers);
    // SAFETY: prog is a live program.
    let compiled = unsafe { result::compile_program(prog.0, &opts) };
    // SAFETY: prog is a live program.
    let log = unsafe { result::get_program_log(prog.0) }
        .map_err(|e| nv_err("nvrtcGetProgramLog")(e.0))?;
    let log: String = log
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    if let Err(e) = compiled {
        return Err(CudaError::Compile {
            file: file.to_owned(),
            arch,
            code: format!("{:?}", e.0),
            options: opts,
            log,
        });
    }
    let image = match target {
        Target::Cubin { .. } => {
            let mut size = 0usize;
            // SAFETY: prog compiled for a real architecture, so it has a CUBIN.
            unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) }
                .result()
                .map_err(|e| nv_err("nvrtcGetCUBINSize")(e.0))?;
            let mut bin = vec![0u8; size];
            // SAFETY: the buffer is exactly the size NVRTC reported.
            unsafe { sys::nvrtcGetCUBIN(prog.0, bin.as_mut_ptr().cast()) }
                .result()
                .map_err(|e| nv_err("nvrtcGetCUBIN")(e.0))?;
            bin
        }
        Target::Ptx { .. } => {
            // SAFETY: prog is compiled.
            let ptx = unsafe { result::get_ptx(prog.0) }.map_err(|e| nv_err("nvrtcGetPTX")(e.0))?;
            ptx.into_iter().map(|c| c as u8).collect()
        }
    };
    Ok(CompiledKernel {
        file,
        target,
        image,
        log,
        headers: headers.describe(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print() {
        assert_eq!(
            Target::parse("sm_90").unwrap(),
            Target::Cubin { major: 9, minor: 0 }
        );
        assert_eq!(
            Target::parse("sm_121").unwrap(),
            Target::Cubin {
                major: 12,
                minor: 1
            }
        );
        assert_eq!(
            Target::parse("compute_89").unwrap(),
            Target::Ptx { major: 8, minor: 9 }
        );
        for a in [
            "sm_80",
            "sm_86",
            "sm_89",
            "sm_90",
            "sm_120",
            "sm_121",
            "compute_75",
        ] {
            assert_eq!(Target::parse(a).unwrap().arch(), a);
        }
        for bad in ["sm90", "sm_", "sm_9", "sm_9a", "gfx90a", ""] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn target_choice_prefers_cubin_then_older_ptx() {
        let nvrtc_12_4 = [50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90];
        assert_eq!(
            choose_target((9, 0), &nvrtc_12_4).unwrap(),
            Target::Cubin { major: 9, minor: 0 }
        );
        // An NVRTC older than the GPU: PTX for the newest architecture it knows.
        assert_eq!(
            choose_target((12, 0), &nvrtc_12_4).unwrap(),
            Target::Ptx { major: 9, minor: 0 }
        );
        assert_eq!(
            choose_target((8, 8), &nvrtc_12_4).unwrap(),
            Target::Ptx { major: 8, minor: 7 }
        );
        assert!(choose_target((3, 5), &nvrtc_12_4).is_err());
    }

    #[test]
    fn options_name_arch_and_includes() {
        let t = Target::Cubin {
            major: 12,
            minor: 1,
        };
        assert_eq!(
            options(t, &CudaHeaders::Shim),
            [
                "--gpu-architecture=sm_121",
                "-std=c++17",
                "-lineinfo",
                "--ptxas-options=--warn-on-spills",
                "-DGEMV_WARPS=4",
                "-DTILE_PIPE=1"
            ]
        );
        let h = CudaHeaders::Dirs {
            origin: "x".into(),
            dirs: vec!["/a".into(), "/a/cccl".into()],
        };
        let o = options(t, &h);
        assert_eq!(&o[6..], ["--include-path=/a", "--include-path=/a/cccl"]);
    }

    #[test]
    fn sources_include_only_embedded_or_cuda_headers() {
        for (file, src) in KERNEL_FILES.iter().chain(HEADERS) {
            for line in src
                .lines()
                .filter(|l| l.trim_start().starts_with("#include"))
            {
                let inc = line.trim_start().trim_start_matches("#include").trim();
                let name = inc.trim_matches(|c| c == '"' || c == '<' || c == '>');
                let ok = header_source(name).is_some() || name == "cuda/std/cstdint";
                assert!(ok, "{file} includes {inc}, which NVRTC will not find");
            }
        }
    }

    #[test]
    fn quant_blocks_cuh_mirrors_membound_quant() {
        use membound_quant::blocks::*;
        use std::mem::size_of;
        let cuh = header_source("quant_blocks.cuh").unwrap();
        for (name, size) in [
            ("block_q8_0", size_of::<BlockQ8_0>()),
            ("block_q8_1", size_of::<BlockQ8_1>()),
            ("block_q4_0", size_of::<BlockQ4_0>()),
            ("block_q4_K", size_of::<BlockQ4K>()),
            ("block_q5_K", size_of::<BlockQ5K>()),
            ("block_q6_K", size_of::<BlockQ6K>()),
            ("block_mxfp4", size_of::<BlockMxfp4>()),
        ] {
            let assert = format!("static_assert(sizeof({name}) == {size},");
            assert!(cuh.contains(&assert), "quant_blocks.cuh lacks `{assert}`");
        }
        // Field offsets the kernels' vector loads rely on.
        assert_eq!(std::mem::offset_of!(BlockQ4K, qs), 16);
        assert_eq!(std::mem::offset_of!(BlockQ6K, d), 208);
        assert_eq!(std::mem::offset_of!(BlockQ8_1, qs), 4);
    }

    #[test]
    fn toolkit_dirs_need_the_header() {
        let root = std::env::temp_dir().join(format!("membound-cuda-tk-{}", std::process::id()));
        let std_dir = root.join("include/cccl/cuda/std");
        std::fs::create_dir_all(&std_dir).unwrap();
        assert_eq!(toolkit_dirs(&root), None);
        std::fs::write(std_dir.join("cstdint"), "").unwrap();
        assert_eq!(
            toolkit_dirs(&root),
            Some(vec![root.join("include"), root.join("include/cccl")])
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
