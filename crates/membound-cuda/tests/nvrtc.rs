//! The GPU-less kernel check: with `MEMBOUND_NVRTC_CHECK=1` (set by scripts/nvrtc-check.sh),
//! compiles every kernel file for every architecture membound targets through the same code path
//! as `Gpu::new` and fails on any NVRTC error, printing the log. Also compiles once with the
//! built-in `<cuda/std/cstdint>` stand-in, the fallback for machines with no CUDA headers.
//! Without the variable it says why it skipped.

use membound_cuda::nvrtc::{self, CudaHeaders, KERNEL_FILES, Target};

/// The architectures CI compiles for: Ampere (A100, RTX 30), Ada (RTX 40), Hopper (H100/H200),
/// Blackwell consumer (RTX 50) and GB10 (DGX Spark).
const ARCHS: [&str; 6] = ["sm_80", "sm_86", "sm_89", "sm_90", "sm_120", "sm_121"];

/// The architectures of this run: [`ARCHS`], or those of `MEMBOUND_NVRTC_ARCHS` (comma-separated,
/// each one of [`ARCHS`]; scripts/nvrtc-check.sh gives an older NVRTC only `sm_90`).
fn archs() -> Vec<&'static str> {
    let Ok(list) = std::env::var("MEMBOUND_NVRTC_ARCHS") else {
        return ARCHS.to_vec();
    };
    let picked: Vec<&'static str> = ARCHS
        .iter()
        .copied()
        .filter(|a| list.split(',').any(|x| x.trim() == *a))
        .collect();
    assert!(
        !picked.is_empty() && list.split(',').all(|x| ARCHS.contains(&x.trim())),
        "MEMBOUND_NVRTC_ARCHS={list}: each must be one of {ARCHS:?}"
    );
    picked
}

fn enabled() -> bool {
    match std::env::var("MEMBOUND_NVRTC_CHECK") {
        Ok(v) if v == "1" => true,
        _ => {
            println!(
                "skipped: set MEMBOUND_NVRTC_CHECK=1 (scripts/nvrtc-check.sh) to compile the kernels with NVRTC"
            );
            if let Err(e) = nvrtc::nvrtc_version() {
                println!("(and libnvrtc cannot be loaded here: {e})");
            }
            false
        }
    }
}

fn check(arch: &str, headers: &CudaHeaders) {
    let compiled = nvrtc::compile_all_with(arch, headers).unwrap_or_else(|e| panic!("{arch}: {e}"));
    assert_eq!(compiled.len(), KERNEL_FILES.len());
    for ck in &compiled {
        assert_eq!(ck.target, Target::parse(arch).expect("valid arch"));
        assert!(
            !ck.log.contains("spill"),
            "{} for {arch} spills registers:\n{}",
            ck.file,
            ck.log
        );
        // A CUBIN is an ELF file.
        assert_eq!(
            &ck.image[..4],
            b"\x7fELF",
            "{} for {arch} is not a CUBIN",
            ck.file
        );
        println!(
            "{arch} {}: {} bytes of CUBIN{}",
            ck.file,
            ck.image.len(),
            if ck.log.is_empty() {
                String::new()
            } else {
                format!("; log:\n{}", ck.log)
            }
        );
    }
}

#[test]
fn every_kernel_compiles_for_every_arch() {
    if !enabled() {
        return;
    }
    let (major, minor) =
        nvrtc::nvrtc_version().expect("MEMBOUND_NVRTC_CHECK=1 needs a loadable libnvrtc");
    let supported = nvrtc::supported_archs().expect("supported archs");
    let headers = CudaHeaders::resolve();
    println!(
        "NVRTC {major}.{minor}, supports {supported:?}; headers: {}",
        headers.describe()
    );
    // One thread per architecture (NVRTC compiles independent programs concurrently): CI's
    // two cores take the ten compiles of this file's tests in about half the time.
    std::thread::scope(|scope| {
        for arch in archs() {
            let headers = &headers;
            scope.spawn(move || check(arch, headers));
        }
        // The same path Gpu::new takes.
        scope.spawn(|| {
            let compiled = nvrtc::compile_all("sm_90").expect("compile_all sm_90");
            assert_eq!(compiled.len(), KERNEL_FILES.len());
        });
    });
}

#[test]
fn kernels_compile_with_the_header_stand_in() {
    if !enabled() {
        return;
    }
    if matches!(CudaHeaders::resolve(), CudaHeaders::Shim) {
        // This NVRTC has no headers: every_kernel_compiles_for_every_arch already compiled
        // every architecture with the stand-in.
        println!("the stand-in is this NVRTC's only headers: checked with every arch");
        return;
    }
    std::thread::scope(|scope| {
        for arch in ["sm_80", "sm_121"] {
            scope.spawn(move || check(arch, &CudaHeaders::Shim));
        }
    });
}

#[test]
fn ptx_fallback_compiles() {
    if !enabled() {
        return;
    }
    let compiled = nvrtc::compile_all("compute_80").expect("compute_80 PTX");
    for ck in compiled {
        let text = String::from_utf8_lossy(&ck.image);
        assert!(
            text.contains(".target sm_80"),
            "{} PTX lacks its target",
            ck.file
        );
        assert_eq!(
            ck.image.last(),
            Some(&0),
            "PTX must be NUL-terminated for cuModuleLoadData"
        );
    }
}
