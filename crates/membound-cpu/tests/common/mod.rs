//! Shared test helpers: pools, generated weights, f64 references.

#![allow(dead_code)]

use membound_cpu::CpuGemv;
use membound_quant::data::{SplitMix64, normal_f32};
use membound_quant::ops;
use membound_spec::DType;

/// The quantized weight types.
pub const QUANT: [DType; 6] = [
    DType::Q8_0,
    DType::Q5_0,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::MXFP4,
];
/// The float weight types.
pub const FLOAT: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

/// Column counts for a type: 1 and 3 blocks, plus a ragged length for float types.
pub fn col_cases(dtype: DType) -> Vec<usize> {
    let b = dtype.block_size() as usize;
    if b == 1 {
        vec![1, 3, 37, 261]
    } else {
        vec![b, 3 * b]
    }
}

/// A generated `rows × cols` matrix of `dtype`, from `seed`.
pub fn gemv(dtype: DType, rows: usize, cols: usize, seed: u64) -> CpuGemv {
    let w = normal_f32(seed, rows * cols, 0.5);
    CpuGemv::quantize(dtype, rows, cols, &w).expect("quantize weights")
}

/// Random block bytes with sane scale fields: every nibble, 6-bit scale and min is reachable.
pub fn random_blocks(dtype: DType, rows: usize, cols: usize, seed: u64) -> CpuGemv {
    let mut rng = SplitMix64::new(seed);
    let n_bytes = dtype.bytes_for((rows * cols) as u64).expect("whole blocks") as usize;
    let mut bytes: Vec<u8> = (0..n_bytes).map(|_| rng.next_u64() as u8).collect();
    let bb = dtype.block_bytes() as usize;
    let scale = |rng: &mut SplitMix64| {
        half::f16::from_f32(0.001 + 0.01 * rng.next_f32())
            .to_bits()
            .to_le_bytes()
    };
    for block in bytes.chunks_exact_mut(bb) {
        match dtype {
            DType::Q8_0 | DType::Q5_0 => block[0..2].copy_from_slice(&scale(&mut rng)),
            DType::Q4_K | DType::Q5_K => {
                block[0..2].copy_from_slice(&scale(&mut rng));
                block[2..4].copy_from_slice(&scale(&mut rng));
            }
            DType::Q6_K => block[208..210].copy_from_slice(&scale(&mut rng)),
            DType::MXFP4 => block[0] = 110 + (rng.next_u64() % 30) as u8,
            _ => unreachable!("random_blocks is for quantized types"),
        }
    }
    CpuGemv::new(dtype, rows, cols, bytes).expect("weights")
}

/// f64 dot of two f32 slices, and Σ|w·x| (the scale float-order error is measured against).
pub fn dot_f64(w: &[f32], x: &[f32]) -> (f64, f64) {
    w.iter().zip(x).fold((0.0, 0.0), |(s, a), (&w, &x)| {
        let p = f64::from(w) * f64::from(x);
        (s + p, a + p.abs())
    })
}

/// Each row's f64 dot of the dequantized weights with `x`, with its Σ|w·x| and Σ|w|.
pub fn reference(g: &CpuGemv, x: &[f32]) -> Vec<(f64, f64, f64)> {
    let w = ops::dequantize(g.dtype(), g.weights()).expect("dequantize");
    w.chunks_exact(g.cols())
        .map(|row| {
            let (s, a) = dot_f64(row, x);
            (s, a, row.iter().map(|v| f64::from(v.abs())).sum())
        })
        .collect()
}

/// Asserts `got` is within `rel × scale` of `want`.
pub fn assert_close(got: f64, want: f64, scale: f64, rel: f64, what: &str) {
    let tol = rel * scale + 1e-30;
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want}, |diff| {} > tol {tol}",
        (got - want).abs()
    );
}
