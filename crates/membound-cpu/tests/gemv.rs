//! GEMV/GEMM against ggml's scalar reference (`membound_quant::ops::vec_dot`), against an f64
//! dot of the dequantized weights, and every SIMD path against the scalar one.

mod common;

use common::*;
use membound_cpu::{CpuError, CpuGemv, DotKernel, Isa, act_dtype};
use membound_quant::data::normal_f32;
use membound_quant::ops;
use membound_spec::DType;

/// Float-summation-order bound, relative to Σ|w·x|.
const ORDER_REL: f64 = 2e-6;

#[test]
fn act_types_are_ggml_vec_dot_types() {
    for dtype in QUANT {
        assert_eq!(act_dtype(dtype), Some(ops::vec_dot_type(dtype)), "{dtype}");
    }
    for dtype in FLOAT {
        assert_eq!(act_dtype(dtype), Some(DType::F32));
    }
    assert_eq!(act_dtype(DType::Q4_0), None);
    // These tests' type lists are every type the kernels accept, no more, no fewer.
    let mut listed: Vec<DType> = FLOAT.into_iter().chain(QUANT).collect();
    let mut supported = membound_cpu::SUPPORTED_DTYPES.to_vec();
    listed.sort_by_key(|d| d.name());
    supported.sort_by_key(|d| d.name());
    assert_eq!(listed, supported);
}

/// Checks every row of `g` on every ISA against ggml's reference dot and the f64 reference.
fn check_gemv(g: &CpuGemv, x: &[f32], what: &str) {
    let p = pool(2);
    let act_type = act_dtype(g.dtype()).unwrap();
    let act = ops::quantize(act_type, x).unwrap();
    let rows_ref = reference(g, x);
    let x_max = x.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let mut y_scalar = vec![0f32; g.rows()];
    g.run_with(&p, Isa::Scalar, x, &mut y_scalar).unwrap();
    for isa in Isa::available() {
        let mut y = vec![f32::NAN; g.rows()];
        g.run_with(&p, isa, x, &mut y).unwrap();
        for (r, (&yv, &(exact, abs, w_abs))) in y.iter().zip(&rows_ref).enumerate() {
            let what = format!("{what} {isa} row {r}");
            if act_type == DType::F32 {
                // The weights' stored values dotted with f32 x: only summation order differs.
                assert_close(yv.into(), exact, abs, ORDER_REL, &what);
            } else {
                // ggml's scalar dot over the same quantized x: integer parts equal exactly.
                let w_row = &g.weights()[r * g.row_bytes()..(r + 1) * g.row_bytes()];
                let want = ops::vec_dot(g.dtype(), w_row, &act).unwrap();
                assert_close(
                    yv.into(),
                    want.into(),
                    abs,
                    ORDER_REL,
                    &format!("{what} vs vec_dot"),
                );
                // Activation rounding is at most half a step, max|x| / 254, per value.
                assert_close(
                    yv.into(),
                    exact,
                    w_abs * x_max,
                    1.0 / 127.0,
                    &format!("{what} vs f64"),
                );
            }
            assert_close(
                yv.into(),
                y_scalar[r].into(),
                abs,
                ORDER_REL,
                &format!("{what} vs scalar"),
            );
        }
    }
}

#[test]
fn gemv_matches_references_on_odd_shapes() {
    for dtype in FLOAT.into_iter().chain(QUANT) {
        for cols in col_cases(dtype) {
            for rows in [1, 3, 17] {
                let g = gemv(dtype, rows, cols, 11 + rows as u64);
                let x = normal_f32(5 + cols as u64, cols, 1.0);
                check_gemv(&g, &x, &format!("{dtype} {rows}x{cols}"));
            }
        }
    }
}

#[test]
fn gemv_matches_references_on_random_block_bytes() {
    // Raw random blocks reach every nibble, 6-bit scale/min and signed Q6_K scale.
    for dtype in QUANT {
        let cols = 4 * dtype.block_size() as usize;
        let g = random_blocks(dtype, 9, cols, 99);
        let x = normal_f32(7, cols, 2.0);
        check_gemv(&g, &x, &format!("{dtype} random bytes"));
    }
}

/// `DotKernel::dot` takes an activation row of its activation type on every ISA (the VNNI
/// MXFP4 kernel, which reads the scales as f32 appended after the blocks, gets them there).
#[test]
fn dot_kernel_rows_agree_on_every_isa() {
    for dtype in QUANT {
        let cols = 8 * dtype.block_size() as usize;
        let g = random_blocks(dtype, 1, cols, 5);
        let x = normal_f32(3, cols, 1.0);
        let act = ops::quantize(act_dtype(dtype).unwrap(), &x).unwrap();
        let scalar = DotKernel::new(dtype, Isa::Scalar).unwrap();
        let want = scalar.dot(cols, g.weights(), &act).unwrap();
        for isa in Isa::available() {
            let got = DotKernel::new(dtype, isa)
                .unwrap()
                .dot(cols, g.weights(), &act)
                .unwrap();
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{dtype} {isa}: {got} vs {want}"
            );
        }
    }
}

/// The four-row kernels (`DotKernel::dot4`) give each row's single-row dot bit for bit on every
/// ISA, for four different rows of random block bytes (so a GEMV's result does not depend on
/// how its rows fall into groups of four, nor on the threads); the GEMV that calls them covers
/// every row once (17 rows: four groups of four and one left over, checked in `check_gemv`).
#[test]
fn four_row_dots_equal_single_row_dots() {
    for dtype in QUANT {
        let cols = 8 * dtype.block_size() as usize;
        let g = random_blocks(dtype, 4, cols, 21);
        let x = normal_f32(8, cols, 1.0);
        let act = ops::quantize(act_dtype(dtype).unwrap(), &x).unwrap();
        let rows: [&[u8]; 4] =
            std::array::from_fn(|r| &g.weights()[r * g.row_bytes()..(r + 1) * g.row_bytes()]);
        for isa in Isa::available() {
            let k = DotKernel::new(dtype, isa).unwrap();
            let four = k.dot4(cols, rows, &act).unwrap();
            for (r, (&got, row)) in four.iter().zip(rows).enumerate() {
                let want = k.dot(cols, row, &act).unwrap();
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{dtype} {isa} row {r}: four-row {got} vs single {want}"
                );
            }
        }
    }
}

/// A GEMV's output does not depend on the pool: its rows fall into other tasks and other
/// groups of four with 1, 2 or 3 threads, and every row's dot is the same bits.
#[test]
fn gemv_is_the_same_on_any_number_of_threads() {
    for dtype in FLOAT.into_iter().chain(QUANT) {
        let cols = 3 * dtype.block_size().max(32) as usize;
        let g = gemv(dtype, 61, cols, 33);
        let x = normal_f32(9, cols, 1.0);
        for isa in Isa::available() {
            let runs: Vec<Vec<u32>> = (1..=3)
                .map(|threads| {
                    let mut y = vec![0f32; g.rows()];
                    g.run_with(&pool(threads), isa, &x, &mut y).unwrap();
                    y.iter().map(|v| v.to_bits()).collect()
                })
                .collect();
            assert!(runs.windows(2).all(|w| w[0] == w[1]), "{dtype} {isa}");
        }
    }
}

#[test]
fn dot_kernel_checks_lengths_and_support() {
    let k = DotKernel::new(DType::Q8_0, Isa::Scalar).unwrap();
    assert_eq!(k.act_dtype(), DType::Q8_0);
    assert!(matches!(
        k.dot(64, &[0; 68], &[0; 67]),
        Err(CpuError::Length { .. })
    ));
    assert!(matches!(
        k.dot(65, &[0; 68], &[0; 68]),
        Err(CpuError::NotBlockMultiple { .. })
    ));
    assert_eq!(k.dot(32, &[0; 34], &[0; 34]), Ok(0.0));
    assert!(matches!(
        DotKernel::new(DType::Q4_0, Isa::Scalar),
        Err(CpuError::Unsupported(_))
    ));
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        assert_eq!(
            DotKernel::new(DType::F32, isa).unwrap_err(),
            CpuError::IsaUnavailable(isa)
        );
    }
}

#[test]
fn gemv_rejects_bad_shapes() {
    let p = pool(1);
    assert!(matches!(
        CpuGemv::new(DType::Q4_K, 2, 256, vec![0; 287]),
        Err(CpuError::Length { .. })
    ));
    assert!(matches!(
        CpuGemv::new(DType::Q4_K, 2, 100, vec![]),
        Err(CpuError::NotBlockMultiple { .. })
    ));
    assert!(matches!(
        CpuGemv::new(DType::Q4_0, 1, 256, vec![0; 144]),
        Err(CpuError::Unsupported(_))
    ));
    let g = gemv(DType::Q8_0, 4, 64, 1);
    let mut y = vec![0f32; 4];
    assert!(g.run(&p, &[0.0; 63], &mut y).is_err());
    assert!(g.run(&p, &[0.0; 64], &mut y[..3]).is_err());
    assert!(g.run_batch(&p, &[0.0; 130], &mut [0.0; 8]).is_err());
    assert!(g.run_batch(&p, &[0.0; 128], &mut [0.0; 7]).is_err());
}

#[test]
fn gemm_equals_gemv_per_activation() {
    // Same kernel, same quantized activations: GEMM must equal GEMV bit for bit, across
    // several row and batch tiles (row tiles hold at most 64 rows, batch tiles 64 activations).
    // GEMV's four-row kernels give each row what the single-row kernels give.
    let p = pool(3);
    for dtype in FLOAT.into_iter().chain(QUANT) {
        let cols = 2 * dtype.block_size().max(32) as usize;
        let rows = 130;
        let g = gemv(dtype, rows, cols, 21);
        for batch in [1, 2, 5, 70] {
            let xs = normal_f32(batch as u64, batch * cols, 1.0);
            for isa in Isa::available() {
                let mut ys = vec![f32::NAN; batch * rows];
                g.run_batch_with(&p, isa, &xs, &mut ys).unwrap();
                for (b, x) in xs.chunks_exact(cols).enumerate() {
                    let mut y = vec![0f32; rows];
                    g.run_with(&p, isa, x, &mut y).unwrap();
                    assert_eq!(
                        &ys[b * rows..(b + 1) * rows],
                        &y[..],
                        "{dtype} {isa} batch {batch} b {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn bytes_moved_convention() {
    // Q4_K 4096x4096: 144 bytes per 256 weights, plus x and y as f32.
    let w = 4096u64 * 4096 / 256 * 144;
    assert_eq!(
        CpuGemv::bytes_moved(DType::Q4_K, 4096, 4096),
        w + 4 * 4096 + 4 * 4096
    );
    assert_eq!(
        CpuGemv::bytes_moved(DType::MXFP4, 2, 64),
        2 * 2 * 17 + 4 * 64 + 4 * 2
    );
    assert_eq!(
        CpuGemv::gemm_bytes_moved(DType::BF16, 8, 16, 3),
        8 * 16 * 2 + 4 * 3 * (16 + 8)
    );
    assert_eq!(
        CpuGemv::bytes_moved(DType::Q8_0, 1, 32),
        CpuGemv::gemm_bytes_moved(DType::Q8_0, 1, 32, 1)
    );
}

#[test]
fn simd_level_names_an_available_path() {
    let level = membound_cpu::simd_level();
    let isa = Isa::from_name(level).unwrap();
    assert!(isa.is_available());
    // MEMBOUND_CPU_ISA=scalar (or another available path) forces that path.
    match std::env::var(membound_cpu::ISA_ENV)
        .ok()
        .and_then(|v| Isa::from_name(&v))
    {
        Some(forced) if forced.is_available() => assert_eq!(isa, forced),
        _ => assert_eq!(isa, Isa::best_available()),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Random shapes and data: every path agrees with ggml's reference dot row by row.
    #[test]
    fn prop_every_path_matches_vec_dot(t in 0usize..6, rows in 1usize..6, blocks in 1usize..4, seed in 0u64..1000) {
        let dtype = QUANT[t];
        let cols = blocks * dtype.block_size() as usize;
        let g = random_blocks(dtype, rows, cols, seed);
        let x = normal_f32(seed ^ 0xabc, cols, 1.5);
        check_gemv(&g, &x, &format!("prop {dtype} {rows}x{cols} seed {seed}"));
    }
}
