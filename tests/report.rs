//! `membound report`: a Markdown report with SVG figures from committed results folders.

mod common;

use common::{fails_with, membound, temp_dir};

const H200: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results/h200");
const CPU_DECODE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results/dev-vm-epyc-2c-decode");
const CPU_MOE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results/dev-vm-epyc-2c-moe");

#[test]
fn the_report_has_a_figure_per_suite_with_its_provenance_and_the_claims() {
    let dir = temp_dir("report");
    let out = dir.join("report");
    let o = membound(&[
        "report",
        H200,
        CPU_DECODE,
        CPU_MOE,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for (file, texts) in [
        ("h200-bandwidth.svg", &["read gpu0"][..]),
        (
            "h200-gemv.svg",
            &["q4_k gpu0", "cublas f16 gpu0", "paired read"][..],
        ),
        (
            "dev-vm-epyc-2c-decode-decode.svg",
            &["llama-3.1-8b-q4_k_m cpu"][..],
        ),
        (
            "dev-vm-epyc-2c-moe-moe-cpu.svg",
            &[
                "fit on active_bytes (R² 0.991)",
                "fit on total_bytes (R² 0.003)",
            ][..],
        ),
    ] {
        let svg = std::fs::read_to_string(out.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(svg.starts_with("<svg"), "{file}");
        for t in texts {
            assert!(svg.contains(t), "{file} lacks {t}");
        }
        assert!(md.contains(&format!("]({file})")), "report.md links {file}");
    }
    // The rooflines: dashed lines, one short polyline per dash (hundreds), beside one polyline
    // per measured series.
    let decode = std::fs::read_to_string(out.join("dev-vm-epyc-2c-decode-decode.svg")).unwrap();
    assert!(
        decode.matches("<polyline").count() > 200,
        "no dashed rooflines"
    );
    // Every folder's machine, commit and scale, and the claims table with a decode verdict.
    assert!(md.contains("h200: NVIDIA H200"), "{md}");
    assert!(md.contains("dev-vm-epyc-2c-decode: AMD EPYC, commit 0e3327ccea0e, scale default"));
    assert!(md.contains("| dense-50-60 |") && md.contains("refuted"));
}

#[test]
fn a_bad_folder_is_a_one_line_error() {
    let dir = temp_dir("report-bad");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails_with(
        &[
            "report",
            empty.to_str().unwrap(),
            "-o",
            dir.join("r").to_str().unwrap(),
        ],
        &["machine.json"],
    );
    fails_with(&["report", "/no/such/folder"], &["not a directory"]);
}
