//! Bit-exactness against ggml itself: `tests/data/ggml_golden.txt` holds FNV-1a hashes of the
//! bytes ggml's C reference quantizers produce (`quantize_row_*_ref`), of its dequantized rows
//! (`dequantize_row_*`), and the f32 bits of its generic dot products
//! (`ggml_vec_dot_*_generic`), for the inputs in `common::cases()`. The values were produced
//! once by a small C harness linked against ggml-org/ggml@d99724f (gcc -O1 -DNDEBUG
//! -ffp-contract=off) fed the files `dump_cases` writes; that harness and any recipe to build
//! ggml are deliberately not part of this repository.
//!
//! This is the oracle for the K-quant quantizers, where candle-core 0.11 still ports older
//! ggml code (see `candle_oracle.rs`).

mod common;

use std::collections::HashMap;

use membound_quant::ops::{dequantize, quantize, vec_dot, vec_dot_type};
use membound_spec::DType;

const GOLDEN: &str = include_str!("data/ggml_golden.txt");

const TYPES: &[DType] = &[
    DType::Q8_0,
    DType::Q8_1,
    DType::Q4_0,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::Q8_K,
    DType::MXFP4,
];

fn golden() -> HashMap<String, String> {
    GOLDEN
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("golden line is `key value`");
            (key.to_string(), value.to_string())
        })
        .collect()
}

/// Writes the inputs of the golden cases (only when MEMBOUND_QUANT_DUMP names a directory).
#[test]
#[ignore = "writes the golden inputs; run by hand with MEMBOUND_QUANT_DUMP=dir"]
fn dump_cases() {
    let Ok(dir) = std::env::var("MEMBOUND_QUANT_DUMP") else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    let write = |cases: &[common::Case], list: &str| {
        for c in cases {
            let bytes: Vec<u8> = c.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(dir.join(format!("{}.f32", c.name)), bytes).unwrap();
        }
        let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
        std::fs::write(dir.join(list), names.join(" ")).unwrap();
    };
    write(&common::cases(), "weights.txt");
    write(&common::activations(), "activations.txt");
}

#[test]
fn quantize_and_dequantize_match_ggml() {
    let golden = golden();
    let mut checked = 0;
    for c in common::cases() {
        for &t in TYPES {
            let bytes = quantize(t, &c.values).unwrap();
            let key = format!("quant {t} {}", c.name);
            let want = golden
                .get(&key)
                .unwrap_or_else(|| panic!("no golden for {key}"));
            assert_eq!(&format!("{:016x}", common::fnv1a(&bytes)), want, "{key}");
            let deq = dequantize(t, &bytes).unwrap();
            let key = format!("deq {t} {}", c.name);
            assert_eq!(
                &format!("{:016x}", common::fnv1a_f32(&deq)),
                &golden[&key],
                "{key}"
            );
            checked += 2;
        }
    }
    assert_eq!(checked, common::cases().len() * TYPES.len() * 2);
}

#[test]
fn vec_dot_matches_ggml_generic() {
    let golden = golden();
    let mut checked = 0;
    for c in common::cases() {
        for &t in &[
            DType::Q8_0,
            DType::Q4_0,
            DType::Q4_K,
            DType::Q5_K,
            DType::Q6_K,
            DType::MXFP4,
        ] {
            let w = quantize(t, &c.values).unwrap();
            for a in common::activations() {
                let act = quantize(vec_dot_type(t), &a.values).unwrap();
                let got = vec_dot(t, &w, &act).unwrap();
                let key = format!("dot {t} {} {}", c.name, a.name);
                assert_eq!(
                    &format!("{:08x}", got.to_bits()),
                    &golden[&key],
                    "{key}: got {got}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100);
}
