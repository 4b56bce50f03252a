//! Runs gemv.cu's per-chunk dot products on the CPU: a host C++ compiler builds
//! `kernels/gemv.cu` against a stand-in `common.cuh` (tests/emu/) and a driver that sums each
//! row's chunks as a warp would; the results must meet the same bound as on a GPU against
//! membound-quant's dequantized reference. This checks every quant format's index and bit
//! arithmetic without a GPU. Skips (with the reason) when no `c++` is installed.

use std::path::Path;
use std::process::Command;

use membound_cuda::nvrtc::{KERNEL_FILES, header_source};
use membound_quant::data::normal_f32;
use membound_quant::ops::quantize;
use membound_spec::DType;

mod common;
use common::{assert_rows, expected_rows};

fn build_harness(dir: &Path) -> Option<std::path::PathBuf> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    if Command::new(&cxx).arg("--version").output().is_err() {
        println!("skipped: no host C++ compiler ({cxx})");
        return None;
    }
    let gemv = KERNEL_FILES
        .iter()
        .find(|(f, _)| *f == "gemv.cu")
        .expect("gemv.cu embedded")
        .1;
    std::fs::write(dir.join("gemv.cu"), gemv).unwrap();
    for h in ["params.cuh", "quant_blocks.cuh"] {
        std::fs::write(dir.join(h), header_source(h).expect("embedded header")).unwrap();
    }
    std::fs::write(dir.join("common.cuh"), include_str!("emu/common.cuh")).unwrap();
    std::fs::write(dir.join("harness.cpp"), include_str!("emu/harness.cpp")).unwrap();
    let exe = dir.join("harness");
    let out = Command::new(&cxx)
        .args(["-std=c++17", "-O1", "-Wall", "-Wno-unknown-pragmas", "-o"])
        .arg(&exe)
        .arg(dir.join("harness.cpp"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "host build of gemv.cu failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(exe)
}

#[test]
fn quantized_dot_products_match_reference_on_the_host() {
    let dir = std::env::temp_dir().join(format!("membound-cuda-emu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(exe) = build_harness(&dir) else {
        return;
    };
    for dtype in [DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::MXFP4] {
        let bs = dtype.block_size() as usize;
        for (rows, cols) in [(1, bs), (5, 3 * bs), (7, 4096)] {
            let seed = (rows * 131 + cols) as u64;
            let w = quantize(dtype, &normal_f32(seed, rows * cols, 0.05)).unwrap();
            let x = normal_f32(seed + 1, cols, 1.0);
            let xq = quantize(DType::Q8_1, &x).unwrap();
            std::fs::write(dir.join("w.bin"), &w).unwrap();
            std::fs::write(dir.join("xq.bin"), &xq).unwrap();
            let status = Command::new(&exe)
                .arg(dtype.name())
                .arg(rows.to_string())
                .arg(cols.to_string())
                .args([dir.join("w.bin"), dir.join("xq.bin"), dir.join("y.bin")])
                .status()
                .unwrap();
            assert!(status.success(), "harness {dtype}: {status}");
            let y: Vec<f32> = std::fs::read(dir.join("y.bin"))
                .unwrap()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let worst = assert_rows(
                &format!("{dtype} {rows}x{cols}"),
                &y,
                &expected_rows(dtype, rows, cols, &w, &x),
            );
            println!("{dtype} {rows}x{cols}: worst error {worst:.3} of the bound");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
