//! Compiles every `kernels/*.cu` with the host C++ compiler, force-including `host/cuda_host.h`,
//! plus a registration unit per file (the `extern "C" __global__` kernels it defines, found the
//! way NVRTC's callers name them) and the runtime. Without a C++ compiler the crate builds a
//! stub whose launches fail with the reason (`cfg(mb_host_missing)`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn kernel_names(src: &str) -> Vec<String> {
    // `extern "C" __global__ void <attributes>` then `name(` at the start of the next line.
    let lines: Vec<&str> = src.lines().collect();
    let mut names = Vec::new();
    for w in lines.windows(2) {
        if w[0].starts_with("extern \"C\" __global__ void") {
            let name: String = w[1]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    names
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(mb_host_missing)");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let kernels = manifest
        .join("../../kernels")
        .canonicalize()
        .expect("kernels/ beside crates/");
    let host = manifest.join("host");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo::rerun-if-changed={}", kernels.display());
    println!("cargo::rerun-if-changed={}", host.display());

    let mut files: Vec<PathBuf> = std::fs::read_dir(&kernels)
        .expect("read kernels/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    // Kernels wrong on purpose, for the runtime's own tests (host build only).
    files.push(host.join("faults.cu"));
    let mut units = Vec::new();
    let mut all = String::from("extern \"C\" {\n");
    let mut calls = String::new();
    for f in &files {
        let stem = f.file_stem().unwrap().to_string_lossy().replace('-', "_");
        let src = std::fs::read_to_string(f).expect("read kernel file");
        let mut unit = format!("#include \"{}\"\n#include \"trampoline.h\"\n", f.display());
        writeln!(unit, "extern \"C\" void mb_host_register_{stem}() {{").unwrap();
        for name in kernel_names(&src) {
            writeln!(unit, "    MB_HOST_REGISTER({name});").unwrap();
        }
        unit.push_str("}\n");
        let path = out.join(format!("register_{stem}.cpp"));
        std::fs::write(&path, unit).unwrap();
        units.push(path);
        writeln!(all, "void mb_host_register_{stem}();").unwrap();
        writeln!(calls, "    mb_host_register_{stem}();").unwrap();
    }
    all.push_str("}\nextern \"C\" void mb_host_register_all() {\n");
    all.push_str(&calls);
    all.push_str("}\n");
    let reg_all = out.join("register_all.cpp");
    std::fs::write(&reg_all, all).unwrap();

    let shim = host.join("cuda_host.h");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .debug(false)
        .warnings(false)
        .include(host.join("include"))
        .include(&host)
        .include(&kernels)
        .flag("-fno-strict-aliasing")
        .flag_if_supported("-Wno-unknown-pragmas")
        .file(host.join("runtime.cpp"))
        .file(&reg_all);
    for u in &units {
        build.file(u);
    }
    // The shim goes first into every unit (kernels include only <cuda/std/cstdint>).
    build.flag("-include").flag(path_str(&shim));
    // No C++ compiler: a stub whose launches say so. A compiler that rejects a kernel fails the
    // build (a kernel that does not compile on the host is a defect, not a reason to skip).
    let compiler = build.get_compiler();
    let present = std::process::Command::new(compiler.path())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        build.compile("membound_cuda_host");
    } else {
        println!(
            "cargo::warning=membound-cuda-host: no host C++ compiler ({}); kernels will not run on the CPU",
            compiler.path().display()
        );
        println!("cargo::rustc-cfg=mb_host_missing");
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
