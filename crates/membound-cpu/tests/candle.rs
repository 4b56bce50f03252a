//! Cross-check against candle-core's quantized matmul on the same weight bytes (the blocks are
//! byte-identical); MXFP4, which candle lacks, against dequantize-then-matmul. x86-64 hosts only
//! (candle is a dev-dependency there; the aarch64 run under qemu checks the NEON kernels
//! against membound's own references).
#![cfg(target_arch = "x86_64")]

mod common;

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use common::*;
use membound_cpu::Isa;
use membound_quant::data::normal_f32;
use membound_spec::DType;

fn candle_dtype(dtype: DType) -> GgmlDType {
    match dtype {
        DType::F32 => GgmlDType::F32,
        DType::F16 => GgmlDType::F16,
        DType::BF16 => GgmlDType::BF16,
        DType::Q8_0 => GgmlDType::Q8_0,
        DType::Q4_K => GgmlDType::Q4K,
        DType::Q6_K => GgmlDType::Q6K,
        other => panic!("{other} is not in candle"),
    }
}

#[test]
fn gemv_and_gemm_match_candle_qmatmul() {
    let p = pool(2);
    let (rows, cols, batch) = (19, 512, 3);
    for dtype in [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q6_K,
    ] {
        let g = gemv(dtype, rows, cols, 42);
        let storage = QStorage::from_data(
            Cow::Borrowed(g.weights()),
            &Device::Cpu,
            candle_dtype(dtype),
        )
        .unwrap();
        let qt = QTensor::new(storage, (rows, cols)).unwrap();
        let mm = QMatMul::from_qtensor(qt).unwrap();
        let xs = normal_f32(8, batch * cols, 1.0);
        let xt = Tensor::from_vec(xs.clone(), (batch, cols), &Device::Cpu).unwrap();
        let want: Vec<f32> = mm
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let refs: Vec<_> = xs.chunks_exact(cols).map(|x| reference(&g, x)).collect();
        for isa in Isa::available() {
            let mut ys = vec![0f32; batch * rows];
            g.run_batch_with(&p, isa, &xs, &mut ys).unwrap();
            let mut y0 = vec![0f32; rows];
            g.run_with(&p, isa, &xs[..cols], &mut y0).unwrap();
            for (i, (&got, &want)) in ys.iter().zip(&want).enumerate() {
                let (_, abs, _) = refs[i / rows][i % rows];
                assert_close(
                    got.into(),
                    want.into(),
                    abs,
                    1e-5,
                    &format!("{dtype} {isa} element {i}"),
                );
            }
            assert_eq!(&y0[..], &ys[..rows], "{dtype} {isa}: GEMV = first GEMM row");
        }
    }
}

#[test]
fn mxfp4_matches_dequantize_then_matmul() {
    let p = pool(2);
    let (rows, cols) = (7, 96);
    let g = gemv(DType::MXFP4, rows, cols, 3);
    let w = membound_quant::ops::dequantize(DType::MXFP4, g.weights()).unwrap();
    let x = normal_f32(4, cols, 1.0);
    let wt = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
    let xt = Tensor::from_vec(x.clone(), (cols, 1), &Device::Cpu).unwrap();
    let want: Vec<f32> = wt
        .matmul(&xt)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let refs = reference(&g, &x);
    let x_max = x.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    for isa in Isa::available() {
        let mut y = vec![0f32; rows];
        g.run_with(&p, isa, &x, &mut y).unwrap();
        for (r, (&got, &want)) in y.iter().zip(&want).enumerate() {
            // x is quantized to Q8_0 on our side only: half a step of max|x|/127 per value.
            assert_close(
                got.into(),
                want.into(),
                refs[r].2 * x_max,
                1.0 / 127.0,
                &format!("{isa} row {r}"),
            );
        }
    }
}
