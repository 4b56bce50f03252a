//! What a GEMV kernel must produce, row by row, and how far it may be from it: shared by the
//! GPU test and the host emulation test.

use membound_cuda::gemv::gemv_reference;
use membound_quant::blocks::{BlockQ4K, BlockQ8_1, from_bytes};
use membound_quant::fp::f16_to_f32;
use membound_quant::ops::{dequantize, quantize};
use membound_spec::DType;

/// One row's expected value (f64) and the largest error allowed.
#[derive(Clone, Copy, Debug)]
pub struct Expected {
    pub value: f64,
    pub tol: f64,
}

/// Expected rows of `W·x` as the kernels compute it.
///
/// The value is [`gemv_reference`] (dequantized W against x as the kernel sees it), except that
/// for Q4_K the min term uses each Q8_1 block's stored `s = f16(d·Σq)` as mmvq does, where the
/// dequantized reference has `f16(d)·Σq` (the two differ by up to 2^-10 relative).
///
/// The bound: chunk products are exact integers (or exact conversions) scaled with at most 4
/// f32 roundings, then summed in per-lane f32 partials and a 5-step warp tree, so the classic
/// dot-product bound |err| <= k·u·Σ|terms| holds with u = 2^-24 and k <= chunks + 9 (chunks
/// counted in full, which also covers the host emulation's sequential sum); we allow 2·(k+16).
/// For Q4_K, Σ|terms| also counts the scale and min parts of each sub-block, which cancel.
pub fn expected_rows(dtype: DType, rows: usize, cols: usize, w: &[u8], x: &[f32]) -> Vec<Expected> {
    let mut value = gemv_reference(dtype, rows, cols, w, x).unwrap();
    let w_deq = dequantize(dtype, w).unwrap();
    let xq = if dtype.is_quantized() {
        Some(quantize(DType::Q8_1, x).unwrap())
    } else {
        None
    };
    let x_ref = match &xq {
        Some(b) => dequantize(DType::Q8_1, b).unwrap(),
        None => x.to_vec(),
    };
    let chunk = match dtype {
        DType::F16 | DType::BF16 => 8,
        DType::Q4_K | DType::Q6_K => 64,
        _ => 32,
    };
    let k = (cols.div_ceil(chunk) + 16) as f64;
    let u = f64::from(f32::EPSILON) / 2.0;
    let mut abs: Vec<f64> = w_deq
        .chunks_exact(cols)
        .map(|row| {
            row.iter()
                .zip(&x_ref)
                .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                .sum()
        })
        .collect();
    if dtype == DType::Q4_K {
        let blocks = from_bytes::<BlockQ4K>(w).unwrap();
        let xb = from_bytes::<BlockQ8_1>(xq.as_deref().unwrap()).unwrap();
        let per_row = cols / 256;
        for r in 0..rows {
            for (sb, b) in blocks[r * per_row..(r + 1) * per_row].iter().enumerate() {
                let dmin = f64::from(f16_to_f32(b.dmin));
                for j in 0..8 {
                    let m = f64::from(scale_min_k4(j, &b.scales).1);
                    let q8 = &xb[sb * 8 + j];
                    let sum_q: i32 = q8.qs.iter().map(|&q| i32::from(q)).sum();
                    let (d8, s8) = (f64::from(f16_to_f32(q8.d)), f64::from(f16_to_f32(q8.s)));
                    value[r] += dmin * m * (d8 * f64::from(sum_q) - s8);
                    let base = r * cols + (sb * 8 + j) * 32;
                    let scale_part: f64 = (0..32)
                        .map(|i| {
                            (f64::from(w_deq[base + i]) + dmin * m)
                                * f64::from(x_ref[(sb * 8 + j) * 32 + i])
                        })
                        .sum();
                    abs[r] += scale_part.abs() + (dmin * m * s8).abs();
                }
            }
        }
    }
    value
        .into_iter()
        .zip(abs)
        .map(|(value, abs)| Expected {
            value,
            tol: 2.0 * k * u * abs + 1e-30,
        })
        .collect()
}

/// ggml's `get_scale_min_k4`: sub-block `j`'s 6-bit scale and min from Q4_K's 12 packed bytes.
fn scale_min_k4(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Asserts `got` (the kernel's y) meets `expected_rows`; returns the worst error as a fraction
/// of its bound.
pub fn assert_rows(what: &str, got: &[f32], expected: &[Expected]) -> f64 {
    let mut worst = 0.0f64;
    for (r, (&y, e)) in got.iter().zip(expected).enumerate() {
        let y = f64::from(y);
        assert!(y.is_finite(), "{what}: y[{r}] = {y}");
        let err = (y - e.value).abs();
        assert!(
            err <= e.tol,
            "{what}: y[{r}] = {y}, expected {}, error {err:e} > bound {:e}",
            e.value,
            e.tol
        );
        worst = worst.max(err / e.tol);
    }
    worst
}
