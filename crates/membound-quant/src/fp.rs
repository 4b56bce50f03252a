//! Scalar conversions exactly as ggml performs them (`ggml/src/ggml-impl.h`): f32 <-> f16 with
//! round-to-nearest-even and NaN forced to `0x7E00`, f32 <-> bf16 with round-to-nearest-even and
//! quieted NaN, the E8M0 exponent of MXFP4, and the `nearest_int` of the K-quant quantizers.

/// f32 to IEEE half bits, bit-exact with ggml's `ggml_compute_fp32_to_fp16` (round to nearest
/// even, overflow to infinity, every NaN to a quiet `0x7E00` with the input's sign).
pub fn f32_to_f16(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    let low = if shl1_w > 0xFF00_0000 {
        0x7E00
    } else {
        nonsign
    };
    ((sign >> 16) | low) as u16
}

/// IEEE half bits to f32 (exact for every non-NaN value), as ggml's
/// `ggml_compute_fp16_to_fp32`.
pub fn f16_to_f32(h: u16) -> f32 {
    let w = u32::from(h) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);
    let exp_offset = 0xE0u32 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
    let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;
    let magic_mask = 126u32 << 23;
    let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;
    let cutoff = 1u32 << 27;
    let body = if two_w < cutoff {
        denormalized.to_bits()
    } else {
        normalized.to_bits()
    };
    f32::from_bits(sign | body)
}

/// f32 to bfloat16 bits as ggml's `ggml_compute_fp32_to_bf16`: round to nearest even, NaN kept
/// NaN with the quiet bit forced on.
pub fn f32_to_bf16(f: f32) -> u16 {
    let i = f.to_bits();
    if (i & 0x7FFF_FFFF) > 0x7F80_0000 {
        return ((i >> 16) | 64) as u16;
    }
    (i.wrapping_add(0x7FFF + ((i >> 16) & 1)) >> 16) as u16
}

/// bfloat16 bits to f32 (exact).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Half the value of an E8M0 exponent byte, `2^(e - 128)`, as ggml's `GGML_E8M0_TO_FP32_HALF`
/// (MXFP4 stores its E2M1 values doubled, so the block scale is halved to match).
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        u32::from(e - 1) << 23
    };
    f32::from_bits(bits)
}

/// ggml's `nearest_int`: adds `1.5 * 2^23` so the f32 addition rounds to nearest even, then
/// reads the integer from the mantissa. Exact for `|v| <= 4194303`; outside that range (where
/// ggml only asserts in debug builds) it returns the same wrapped value ggml's release build does.
pub fn nearest_int(v: f32) -> i32 {
    let val = v + 12_582_912.0;
    (val.to_bits() & 0x007F_FFFF) as i32 - 0x0040_0000
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    #[test]
    fn f16_matches_half_crate_on_all_non_nan_halves() {
        for h in 0..=u16::MAX {
            let v = f16::from_bits(h);
            if v.is_nan() {
                assert!(f16_to_f32(h).is_nan());
                continue;
            }
            assert_eq!(
                f16_to_f32(h).to_bits(),
                v.to_f32().to_bits(),
                "half {h:#06x}"
            );
            // Every half round-trips exactly.
            assert_eq!(f32_to_f16(v.to_f32()), h, "half {h:#06x}");
        }
    }

    #[test]
    fn f16_rounding_ties_and_specials() {
        // 1 + 2^-11 is exactly halfway between 1.0 and the next half 1 + 2^-10: ties to even 1.0.
        assert_eq!(f32_to_f16(1.0 + f32::powi(2.0, -11)), 0x3C00);
        // 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even): rounds up.
        assert_eq!(f32_to_f16(1.0 + 3.0 * f32::powi(2.0, -11)), 0x3C02);
        // Just above the tie rounds up.
        assert_eq!(
            f32_to_f16(f32::from_bits((1.0f32 + f32::powi(2.0, -11)).to_bits() + 1)),
            0x3C01
        );
        assert_eq!(f32_to_f16(65504.0), 0x7BFF);
        assert_eq!(f32_to_f16(65520.0), 0x7C00); // halfway to 2^16 rounds to infinity
        assert_eq!(f32_to_f16(f32::INFINITY), 0x7C00);
        assert_eq!(f32_to_f16(f32::NEG_INFINITY), 0xFC00);
        assert_eq!(f32_to_f16(f32::NAN), 0x7E00);
        assert_eq!(f32_to_f16(-f32::NAN), 0xFE00);
        assert_eq!(f32_to_f16(f32::from_bits(0x7F80_0001)), 0x7E00); // signalling NaN
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        // Smallest subnormal half 2^-24; half of it ties to even zero, just above rounds up.
        assert_eq!(f32_to_f16(f32::powi(2.0, -24)), 0x0001);
        assert_eq!(f32_to_f16(f32::powi(2.0, -25)), 0x0000);
        assert_eq!(f32_to_f16(f32::powi(2.0, -25) * 1.5), 0x0001);
        assert_eq!(f32_to_f16(3.0 * f32::powi(2.0, -25)), 0x0002); // 1.5 ulp ties to even 2
    }

    #[test]
    fn f16_agrees_with_half_crate_on_random_floats() {
        let mut rng = crate::data::SplitMix64::new(11);
        for _ in 0..200_000 {
            let f = f32::from_bits(rng.next_u64() as u32);
            if f.is_nan() {
                continue;
            }
            assert_eq!(f32_to_f16(f), f16::from_f32(f).to_bits(), "{f:e}");
            assert_eq!(f32_to_bf16(f), bf16::from_f32(f).to_bits(), "{f:e}");
        }
    }

    #[test]
    fn bf16_rounding_ties_and_specials() {
        // 1 + 2^-8 is halfway between 1.0 (even) and 1 + 2^-7: stays 1.0.
        assert_eq!(f32_to_bf16(1.0 + f32::powi(2.0, -8)), 0x3F80);
        // 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even): rounds up.
        assert_eq!(f32_to_bf16(1.0 + 3.0 * f32::powi(2.0, -8)), 0x3F82);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7F80);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7F80); // rounds up to infinity, as ggml does
        assert_eq!(f32_to_bf16(f32::from_bits(0x7F80_0001)), 0x7FC0); // sNaN quieted
        assert_eq!(f32_to_bf16(f32::from_bits(0xFFC1_2345)), 0xFFC1);
        for h in 0..=u16::MAX {
            let f = bf16_to_f32(h);
            if !f.is_nan() {
                assert_eq!(f32_to_bf16(f), h);
            }
        }
    }

    #[test]
    fn e8m0_half_and_nearest_int() {
        assert_eq!(e8m0_to_f32_half(127), 0.5);
        assert_eq!(e8m0_to_f32_half(128), 1.0);
        assert_eq!(e8m0_to_f32_half(130), 4.0);
        assert_eq!(e8m0_to_f32_half(1), f32::powi(2.0, -127));
        assert_eq!(e8m0_to_f32_half(0), f32::powi(2.0, -128));
        assert_eq!(e8m0_to_f32_half(254), f32::powi(2.0, 126));
        assert_eq!(nearest_int(2.5), 2); // ties to even, unlike f32::round
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-0.4), 0);
        assert_eq!(nearest_int(1234.6), 1235);
        assert_eq!(nearest_int(-4_194_303.0), -4_194_303);
    }
}
