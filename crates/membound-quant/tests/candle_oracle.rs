//! candle-core 0.11 (CPU) as a second oracle.
//!
//! Where candle and current ggml agree, bytes must be equal: Q4_0, Q5_0, Q8_0 and Q8_K
//! quantization,
//! and every dequantizer. Known disagreements (ggml is the truth; `ggml_golden.rs` asserts it):
//! - Q4_K / Q5_K quantization: candle still uses ggml's old `make_qkx1_quants`; ggml now uses
//!   `make_qkx2_quants` (weighted fit over 21/16 trial scales), so the bytes differ.
//! - Q6_K quantization: candle ports an older `make_qx_quants` (iterative refinement); ggml now
//!   tries 18 fixed scales. candle also has no all-zero-block guard (it writes d = -0.0 and
//!   NaN-derived scales where ggml writes zeros).
//! - Q8_K: candle rounds half away from zero, ggml's `nearest_int` rounds half to even, so exact
//!   ties (the `ties` case) differ.
//! - Dot products: candle's `vec_dot_unopt` reduces the K-quant lane sums as
//!   `sumf + (s0 + s1 + ...)` and Q8_0 as `sumi * dx * dy`, where ggml adds lane by lane and
//!   computes `sumi * (dx * dy)`; its `vec_dot` uses AVX2/FMA. Those are compared with a bound.

mod common;

use candle_core::quantized::k_quants::{
    BlockQ4_0, BlockQ4K, BlockQ5_0, BlockQ5K, BlockQ6K, BlockQ8_0, GgmlType,
};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use membound_quant::ops::{dequantize, quantize, vec_dot};
use membound_spec::DType;

fn candle_type(t: DType) -> GgmlDType {
    match t {
        DType::Q4_0 => GgmlDType::Q4_0,
        DType::Q5_0 => GgmlDType::Q5_0,
        DType::Q8_0 => GgmlDType::Q8_0,
        DType::Q4_K => GgmlDType::Q4K,
        DType::Q5_K => GgmlDType::Q5K,
        DType::Q6_K => GgmlDType::Q6K,
        DType::Q8_K => GgmlDType::Q8K,
        other => panic!("candle has no {other}"),
    }
}

fn candle_quantize(t: DType, x: &[f32]) -> QTensor {
    let tensor = Tensor::from_vec(x.to_vec(), (x.len(),), &Device::Cpu).unwrap();
    QTensor::quantize(&tensor, candle_type(t)).unwrap()
}

fn candle_dequantize(q: &QTensor) -> Vec<f32> {
    q.dequantize(&Device::Cpu)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn quantized_bytes_equal_candle_where_algorithms_agree() {
    for c in common::cases() {
        for t in [DType::Q4_0, DType::Q5_0, DType::Q8_0, DType::Q8_K] {
            if t == DType::Q8_K && c.name == "ties" {
                continue; // rounding of exact ties differs, see the module comment
            }
            let ours = quantize(t, &c.values).unwrap();
            let theirs = candle_quantize(t, &c.values);
            assert_eq!(ours, theirs.data().unwrap().as_ref(), "{t} {}", c.name);
        }
    }
}

#[test]
fn q8_k_ties_round_to_even_unlike_candle() {
    // 256 values whose largest magnitude is 127, so iscale = -1 and every x.5 is an exact tie.
    let x: Vec<f32> = (0..256)
        .map(|i| if i == 0 { 127.0 } else { (i % 16) as f32 - 7.5 })
        .collect();
    let ours = quantize(DType::Q8_K, &x).unwrap();
    let theirs = candle_quantize(DType::Q8_K, &x)
        .data()
        .unwrap()
        .into_owned();
    // qs start after the 4-byte d. 0.5 * iscale = -0.5: ggml rounds to even (0), candle away
    // from zero (-1).
    let q = |b: &[u8], i: usize| b[4 + i] as i8;
    let i_half = (1..256).find(|&i| x[i] == 0.5).unwrap();
    assert_eq!(q(&ours, i_half), 0);
    assert_eq!(q(&theirs, i_half), -1);
    assert_ne!(ours, theirs);
}

#[test]
fn k_quant_fits_are_no_worse_than_candles_older_ones() {
    // Where the quantizers differ, ggml's newer search must reconstruct at least as well
    // (within 2%) as candle's older one; equality of bytes with ggml is in ggml_golden.rs.
    for c in common::cases()
        .iter()
        .filter(|c| c.name.starts_with("normal") || c.name == "outlier")
    {
        for t in [DType::Q4_K, DType::Q5_K, DType::Q6_K] {
            let sq = |y: &[f32]| {
                c.values
                    .iter()
                    .zip(y)
                    .map(|(a, b)| f64::from(a - b).powi(2))
                    .sum::<f64>()
            };
            let ours = sq(&dequantize(t, &quantize(t, &c.values).unwrap()).unwrap());
            let theirs = sq(&candle_dequantize(&candle_quantize(t, &c.values)));
            assert!(
                ours <= theirs * 1.02,
                "{t} {}: ours {ours} vs candle {theirs}",
                c.name
            );
        }
    }
}

#[test]
fn dequantize_equals_candle_on_candles_blocks() {
    for c in common::cases()
        .iter()
        .filter(|c| !matches!(c.name, "zeros" | "tiny" | "minute"))
    {
        for t in [
            DType::Q4_0,
            DType::Q5_0,
            DType::Q8_0,
            DType::Q4_K,
            DType::Q5_K,
            DType::Q6_K,
            DType::Q8_K,
        ] {
            let q = candle_quantize(t, &c.values);
            let ours = dequantize(t, &q.data().unwrap()).unwrap();
            assert_eq!(bits(&ours), bits(&candle_dequantize(&q)), "{t} {}", c.name);
        }
    }
}

/// candle blocks of type `B` for `x` (candle's own quantizer) and their bytes.
fn candle_blocks<B: GgmlType>(t: DType, x: &[f32]) -> (Vec<B>, Vec<u8>) {
    let mut blocks = vec![B::zeros(); x.len() / B::BLCK_SIZE];
    B::from_float(x, &mut blocks);
    (blocks, candle_quantize(t, x).data().unwrap().into_owned())
}

/// `sum |w_i * a_i|` of the dequantized rows: any reassociation of the dot product's float
/// additions changes it by at most `n_adds * eps` times this.
fn abs_dot(wt: DType, w: &[u8], at: DType, a: &[u8]) -> f32 {
    let (w, a) = (dequantize(wt, w).unwrap(), dequantize(at, a).unwrap());
    w.iter().zip(&a).map(|(x, y)| (x * y).abs()).sum()
}

fn check_dot<W: GgmlType>(t: DType, at: DType, exact_unopt: bool) {
    for c in common::cases()
        .iter()
        .filter(|c| !matches!(c.name, "zeros" | "tiny" | "minute"))
    {
        for act in common::activations() {
            let (wb, w) = candle_blocks::<W>(t, &c.values);
            let (ab, a) = candle_blocks::<W::VecDotType>(at, &act.values);
            let ours = vec_dot(t, &w, &a).unwrap();
            let unopt = W::vec_dot_unopt(c.values.len(), &wb, &ab);
            let simd = W::vec_dot(c.values.len(), &wb, &ab);
            let scale = abs_dot(t, &w, at, &a);
            let ctx = format!(
                "{t} {} {}: ours {ours} unopt {unopt} simd {simd}",
                c.name, act.name
            );
            if exact_unopt {
                assert_eq!(ours.to_bits(), unopt.to_bits(), "{ctx}");
            } else {
                // Only the association of <= 2048/32 + 9 final additions differs.
                assert!((ours - unopt).abs() <= 80.0 * f32::EPSILON * scale, "{ctx}");
            }
            // AVX2/FMA: different association of all partial sums, bounded by n * eps.
            assert!(
                (ours - simd).abs() <= 2048.0 * f32::EPSILON * scale,
                "{ctx}"
            );
        }
    }
}

#[test]
fn vec_dot_matches_candle() {
    check_dot::<BlockQ4_0>(DType::Q4_0, DType::Q8_0, true);
    check_dot::<BlockQ5_0>(DType::Q5_0, DType::Q8_0, false);
    check_dot::<BlockQ8_0>(DType::Q8_0, DType::Q8_0, false);
    check_dot::<BlockQ4K>(DType::Q4_K, DType::Q8_K, false);
    check_dot::<BlockQ5K>(DType::Q5_K, DType::Q8_K, false);
    check_dot::<BlockQ6K>(DType::Q6_K, DType::Q8_K, false);
}

#[test]
fn vec_dot_is_close_to_the_f32_dot_of_dequantized_rows() {
    // vec_dot computes sum(w_i * a_i) over the dequantized values exactly in integers within a
    // block, then in f32 across blocks: the only error is f32 rounding of the block scales'
    // products and the accumulation, bounded by a few eps times sum |w_i a_i| per block
    // (plus the f16 rounding of Q4_K/Q5_K's d*sc, which dequantization shares). 1e-4 is
    // ~800 eps: generous for 64 accumulated blocks, tight enough to catch any layout error.
    for c in common::cases()
        .iter()
        .filter(|c| !matches!(c.name, "zeros" | "tiny" | "minute"))
    {
        for t in [
            DType::Q8_0,
            DType::Q4_0,
            DType::Q5_0,
            DType::Q4_K,
            DType::Q5_K,
            DType::Q6_K,
            DType::MXFP4,
        ] {
            let at = membound_quant::ops::vec_dot_type(t);
            let act = &common::activations()[0].values;
            let (w, a) = (quantize(t, &c.values).unwrap(), quantize(at, act).unwrap());
            let (wd, ad) = (dequantize(t, &w).unwrap(), dequantize(at, &a).unwrap());
            let reference: f64 = wd
                .iter()
                .zip(&ad)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let scale = abs_dot(t, &w, at, &a);
            let got = vec_dot(t, &w, &a).unwrap();
            assert!(
                (f64::from(got) - reference).abs() <= 1e-4 * f64::from(scale),
                "{t} {}: {got} vs {reference} (scale {scale})",
                c.name
            );
        }
    }
}
