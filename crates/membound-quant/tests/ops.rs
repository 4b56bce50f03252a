//! The type-erased API: hand-computed MXFP4 encodings, F16/BF16 rows, error handling, and
//! property tests of round-trip error bounds.

use membound_quant::blocks::{BlockMxfp4, BlockQ8_0, as_bytes};
use membound_quant::fp::e8m0_to_f32_half;
use membound_quant::mxfp4;
use membound_quant::ops::{
    QuantError, SUPPORTED, dequantize, dequantize_extend, quantize, quantize_extend, vec_dot,
    vec_dot_type,
};
use membound_spec::DType;
use proptest::prelude::*;

#[test]
fn mxfp4_exact_grid_maps_to_known_codes() {
    let grid = [0.0f32, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
    for k in [-6i32, 0, 3, 20] {
        // Values 0..8 positive, 8..16 negative, then the same again for the high nibbles.
        let x: Vec<f32> = (0..32)
            .map(|j| if j % 16 < 8 { 1.0 } else { -1.0 } * grid[j % 8] * 2f32.powi(k))
            .collect();
        let bytes = quantize(DType::MXFP4, &x).unwrap();
        // amax = 6 * 2^k, floor(log2) = k + 2, e = k + 2 - 2 + 127.
        assert_eq!(bytes[0], (127 + k) as u8, "k = {k}");
        for j in 0..16 {
            // Code i for +grid[i]; 8 + i for -grid[i], except -0.0 which keeps code 0.
            let code = |v: usize| {
                if v % 16 < 8 || v.is_multiple_of(8) {
                    (v % 8) as u8
                } else {
                    8 + (v % 8) as u8
                }
            };
            assert_eq!(
                bytes[1 + j],
                code(j) | (code(j + 16) << 4),
                "k = {k}, byte {j}"
            );
        }
        // The grid is exactly representable, so the round trip is exact.
        assert_eq!(dequantize(DType::MXFP4, &bytes).unwrap(), x);
    }
}

#[test]
fn mxfp4_rounds_to_nearest_code_and_dequantizes_hand_built_block() {
    // e = 128: d = 1, so doubled codes are the values: {0,1,2,3,4,6,8,12} (x0.5 = E2M1).
    let mut qs = [0u8; 16];
    qs[0] = 0x7F; // value 0: code 0xF = -12, value 16: code 7 = 12
    qs[1] = 0x95; // value 1: code 5 = 6, value 17: code 9 = -1
    let block = BlockMxfp4 { e: 128, qs };
    let y = dequantize(DType::MXFP4, as_bytes(&[block])).unwrap();
    assert_eq!(
        (y[0], y[16], y[1], y[17], y[2]),
        (-12.0, 12.0, 6.0, -1.0, 0.0)
    );
    // e = 130 doubles d twice: 4x the values.
    let y = dequantize(DType::MXFP4, as_bytes(&[BlockMxfp4 { e: 130, qs }])).unwrap();
    assert_eq!((y[0], y[1]), (-48.0, 24.0));
    // Quantizing: amax 6 -> e 127, d = 0.5, so the representable magnitudes are
    // {0, 0.5, 1, 1.5, 2, 3, 4, 6}.
    let mut x = vec![0.0f32; 32];
    x[0] = 6.0;
    x[1] = 2.4; // between 2 and 3: nearer 2 (code 4)
    x[2] = 2.6; // nearer 3 (code 5)
    x[3] = 5.0; // tie between 4 and 6: the first (lower) code wins, 4 (code 6)
    x[4] = -0.2; // nearer 0 than -0.5: code 0
    let b = quantize(DType::MXFP4, &x).unwrap();
    assert_eq!(b[0], 127);
    assert_eq!(&b[1..6], &[7, 4, 5, 6, 0]);
    // Below 2^-125 the exponent wraps like the C conversion (x86 low byte).
    assert_eq!(mxfp4::exponent(2f32.powi(-130)), (-5i32) as u8);
    assert_eq!(mxfp4::exponent(0.0), 0);
}

#[test]
fn f16_and_bf16_rows_round_trip_with_ggml_rounding() {
    let x = [
        1.0f32,
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        65520.0,
        f32::NEG_INFINITY,
        -0.0,
    ];
    let h = quantize(DType::F16, &x).unwrap();
    let back = dequantize(DType::F16, &h).unwrap();
    assert_eq!(
        back,
        vec![
            1.0,
            1.0,
            1.0 + 2.0 * 2f32.powi(-10),
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0
        ]
    );
    assert!(back[5].is_sign_negative());
    let nan = quantize(DType::F16, &[f32::NAN]).unwrap();
    assert_eq!(nan, 0x7E00u16.to_le_bytes());
    let b = quantize(
        DType::BF16,
        &[1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8), f32::NAN],
    )
    .unwrap();
    let back = dequantize(DType::BF16, &b).unwrap();
    assert_eq!(&back[..2], &[1.0, 1.0 + 2f32.powi(-6)]);
    assert!(back[2].is_nan());
    assert_eq!(quantize(DType::F32, &[1.5]).unwrap(), 1.5f32.to_le_bytes());
}

#[test]
fn plain_vec_dot_sums_f32_products_in_f64() {
    let w = membound_quant::data::normal_f32(21, 1000, 1.0);
    let a = membound_quant::data::normal_f32(22, 1000, 1.0);
    for t in [DType::F32, DType::F16, DType::BF16] {
        assert_eq!(vec_dot_type(t), t);
        let (wb, ab) = (quantize(t, &w).unwrap(), quantize(t, &a).unwrap());
        let (wd, ad) = (dequantize(t, &wb).unwrap(), dequantize(t, &ab).unwrap());
        let want = wd
            .iter()
            .zip(&ad)
            .fold(0.0f64, |s, (x, y)| s + f64::from(x * y)) as f32;
        assert_eq!(vec_dot(t, &wb, &ab).unwrap(), want, "{t}");
    }
}

#[test]
fn vec_dot_types_follow_ggml() {
    assert_eq!(vec_dot_type(DType::Q8_0), DType::Q8_0);
    assert_eq!(vec_dot_type(DType::Q4_0), DType::Q8_0);
    assert_eq!(vec_dot_type(DType::MXFP4), DType::Q8_0);
    for t in [DType::Q4_K, DType::Q5_K, DType::Q6_K] {
        assert_eq!(vec_dot_type(t), DType::Q8_K);
    }
    assert_eq!(vec_dot_type(DType::Q4_1), DType::Q8_1);
    assert_eq!(vec_dot_type(DType::Q8_K), DType::F32);
}

#[test]
fn wrong_lengths_are_errors_not_panics() {
    let x = vec![0.5f32; 300];
    assert_eq!(
        quantize(DType::Q4_K, &x),
        Err(QuantError::NotBlockMultiple {
            dtype: DType::Q4_K,
            len: 300,
            block: 256
        })
    );
    assert!(matches!(
        quantize(DType::Q8_0, &x[..33]),
        Err(QuantError::NotBlockMultiple { .. })
    ));
    assert_eq!(
        dequantize(DType::Q8_0, &[0u8; 35]),
        Err(QuantError::BadByteLength {
            dtype: DType::Q8_0,
            len: 35,
            block_bytes: 34
        })
    );
    assert!(matches!(
        dequantize(DType::F16, &[0u8; 3]),
        Err(QuantError::BadByteLength { .. })
    ));
    assert!(matches!(
        dequantize(DType::F32, &[0u8; 6]),
        Err(QuantError::BadByteLength { .. })
    ));
    assert_eq!(
        quantize(DType::Q2_K, &x[..256]),
        Err(QuantError::Unsupported(DType::Q2_K))
    );
    assert_eq!(
        dequantize(DType::IQ4_XS, &[]),
        Err(QuantError::Unsupported(DType::IQ4_XS))
    );
    assert_eq!(
        vec_dot(DType::Q8_K, &[], &[]),
        Err(QuantError::Unsupported(DType::Q8_K))
    );
    let w = quantize(DType::Q4_0, &x[..64]).unwrap();
    let a = quantize(DType::Q8_0, &x[..32]).unwrap();
    assert_eq!(
        vec_dot(DType::Q4_0, &w, &a),
        Err(QuantError::LengthMismatch {
            weight: DType::Q4_0,
            act: DType::Q8_0,
            weight_values: 64,
            act_values: 32
        })
    );
    assert!(matches!(
        vec_dot(DType::Q4_K, &[0u8; 144], &[0u8; 100]),
        Err(QuantError::BadByteLength { .. })
    ));
    assert!(matches!(
        vec_dot(DType::F32, &[0u8; 8], &[0u8; 4]),
        Err(QuantError::LengthMismatch { .. })
    ));
    let mut blocks = [BlockQ8_0::default(); 2];
    assert_eq!(
        membound_quant::q8_0::quantize_row(&x[..32], &mut blocks),
        Err(QuantError::ValueCountMismatch {
            dtype: DType::Q8_0,
            values: 32,
            blocks: 2
        })
    );
    let mut out = [0.0f32; 10];
    assert!(membound_quant::q8_0::dequantize_row(&blocks, &mut out).is_err());
    // Empty rows are fine: zero blocks.
    for &t in SUPPORTED {
        assert_eq!(quantize(t, &[]).unwrap(), Vec::<u8>::new(), "{t}");
        assert_eq!(dequantize(t, &[]).unwrap(), Vec::<f32>::new(), "{t}");
    }
}

/// The largest reconstruction error allowed for a value in a block (or K super-block) whose
/// largest magnitude is `amax`, from each format's construction:
/// Q8: `d/2` plus the f16 rounding of `d = amax/127` (`127 * d * 2^-11`);
/// Q4_0: `|d|` (the value `-max` maps to 16, clipped to 15), `|d| = amax/8`;
/// MXFP4: `4 * d` with `d = 2^(e-128) <= amax/8` (half the widest gap 8..12 is 2d; values above
/// `12 d` clip by less than 4d);
/// Q6_K: `d_j/2 <= 127 D/2` with `D = max_scale/128 ~ amax/(32*128)`, i.e. ~`amax/64`, doubled;
/// Q4_K/Q5_K: half a step of 15 or 31 levels over the range (<= 2 amax), plus 6-bit scale and
/// min rounding; `amax/6` and `amax/12` leave a safety factor of ~2.
fn bound(t: DType, amax: f32) -> f32 {
    let rel = match t {
        DType::Q8_0 | DType::Q8_1 => 0.6 / 127.0,
        DType::Q8_K => 0.5001 / 127.0,
        DType::Q4_0 => 1.01 / 8.0,
        DType::MXFP4 => 0.5,
        DType::Q6_K => 1.0 / 32.0,
        DType::Q5_K => 1.0 / 12.0,
        DType::Q4_K => 1.0 / 6.0,
        // Relative half-ulp; below 2^-14 f16 is subnormal with a fixed half-step of 2^-25.
        DType::F16 => return (2f32.powi(-11) * amax).max(2f32.powi(-25)),
        DType::BF16 => 2f32.powi(-8),
        _ => 0.0,
    };
    rel * amax
}

fn blocks_input() -> impl Strategy<Value = Vec<f32>> {
    // 1..=3 super-blocks; each 32-block gets its own scale in 2^[-6, 8], values uniform in it.
    (1usize..=3, any::<u64>()).prop_map(|(n, seed)| {
        let mut rng = membound_quant::data::SplitMix64::new(seed);
        let mut v = Vec::with_capacity(n * 256);
        for _ in 0..n * 8 {
            let scale = 2f32.powi((rng.next_u64() % 15) as i32 - 6);
            for _ in 0..32 {
                v.push((rng.next_f32() * 2.0 - 1.0) * scale);
            }
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_error_is_bounded(x in blocks_input()) {
        for &t in SUPPORTED {
            let back = dequantize(t, &quantize(t, &x).unwrap()).unwrap();
            prop_assert_eq!(back.len(), x.len());
            if t == DType::F32 {
                prop_assert_eq!(&back, &x);
                continue;
            }
            let group = match t { DType::F16 | DType::BF16 => 1, _ => t.block_size() as usize };
            for (xs, ys) in x.chunks(group).zip(back.chunks(group)) {
                let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (a, b) in xs.iter().zip(ys) {
                    prop_assert!((a - b).abs() <= bound(t, amax), "{} {} -> {} (amax {})", t, a, b, amax);
                }
            }
        }
    }

    #[test]
    fn quantize_never_panics_on_any_bits(bits in proptest::collection::vec(any::<u32>(), 256)) {
        let x: Vec<f32> = bits.into_iter().map(f32::from_bits).collect();
        for &t in SUPPORTED {
            let q = quantize(t, &x).unwrap();
            prop_assert_eq!(dequantize(t, &q).unwrap().len(), 256);
        }
    }
}

#[test]
fn e8m0_scale_of_quantized_blocks_bounds_their_values() {
    let x = membound_quant::data::normal_f32(31, 1024, 3.0);
    let bytes = quantize(DType::MXFP4, &x).unwrap();
    for (xs, b) in x.chunks(32).zip(bytes.chunks(17)) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = e8m0_to_f32_half(b[0]);
        // amax / d in [8, 16): the E2M1 max (12 doubled) covers amax up to clipping.
        assert!((8.0..16.0).contains(&(amax / d)), "amax {amax} d {d}");
    }
}

#[test]
fn quantize_extend_appends_what_quantize_returns_without_reallocating() {
    let x: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    for &t in SUPPORTED {
        let mut out = vec![7u8; 3];
        quantize_extend(t, &x, &mut out).unwrap();
        assert_eq!(out[..3], [7, 7, 7], "{t}");
        assert_eq!(out[3..], quantize(t, &x).unwrap()[..], "{t}");
        // Reused: cleared and refilled within its capacity, the buffer stays where it was.
        let (ptr, cap) = (out.as_ptr(), out.capacity());
        out.clear();
        quantize_extend(t, &x, &mut out).unwrap();
        assert_eq!((out.as_ptr(), out.capacity()), (ptr, cap), "{t}");
    }
    assert!(matches!(
        quantize_extend(DType::Q8_0, &x[..40], &mut Vec::new()),
        Err(QuantError::NotBlockMultiple { .. })
    ));
}

#[test]
fn dequantize_extend_appends_what_dequantize_returns() {
    let x: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    for &t in SUPPORTED {
        let bytes = quantize(t, &x).unwrap();
        let mut out = vec![7.0f32];
        dequantize_extend(t, &bytes, &mut out).unwrap();
        assert_eq!(out[0], 7.0, "{t}");
        assert_eq!(out[1..], dequantize(t, &bytes).unwrap()[..], "{t}");
    }
    assert!(matches!(
        dequantize_extend(DType::Q8_0, &[0u8; 35], &mut Vec::new()),
        Err(QuantError::BadByteLength { .. })
    ));
}
