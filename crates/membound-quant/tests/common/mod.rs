//! Deterministic test inputs shared by the integration tests, and the hash the golden file uses.

#![allow(dead_code)]

use membound_quant::data::normal_f32;

/// Values per case: 8 K-quant super-blocks, 64 blocks of 32.
pub const N: usize = 2048;

/// One named input row.
pub struct Case {
    /// Name used in the golden file.
    pub name: &'static str,
    /// The values.
    pub values: Vec<f32>,
}

fn case(name: &'static str, values: Vec<f32>) -> Case {
    assert_eq!(values.len(), N);
    Case { name, values }
}

/// The inputs: several seeds and scales, zero blocks, tiny values, one huge outlier, one-signed
/// blocks, exact rounding ties and MXFP4's exactly representable grid.
pub fn cases() -> Vec<Case> {
    let mut zeros = normal_f32(4, N, 1.0);
    zeros[..256].fill(0.0); // a whole K super-block
    zeros[512..544].fill(0.0); // one 32-block inside a super-block
    zeros[1024..1040].fill(0.0); // one Q6_K 16-group
    let mut outlier = normal_f32(6, N, 0.02);
    outlier[100] = 50.0;
    outlier[1000] = -80.0;
    let grid = [0.0f32, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
    vec![
        case("normal1", normal_f32(1, N, 1.0)),
        case("small", normal_f32(2, N, 1e-3)),
        case("large", normal_f32(3, N, 300.0)),
        case("zeros", zeros),
        case("tiny", normal_f32(5, N, 1e-7)),
        case("minute", normal_f32(10, N, 1e-36)),
        case("outlier", outlier),
        case(
            "negative",
            normal_f32(7, N, 1.0)
                .into_iter()
                .map(|v| -v.abs() - 0.1)
                .collect(),
        ),
        case(
            "positive",
            normal_f32(8, N, 1.0)
                .into_iter()
                .map(|v| v.abs() + 0.5)
                .collect(),
        ),
        case(
            "ties",
            (0..N).map(|i| ((i * 7) % 33) as f32 * 0.25 - 4.0).collect(),
        ),
        case(
            "mxgrid",
            (0..N)
                .map(|i| {
                    let sign = if (i / 8) % 2 == 0 { 1.0 } else { -1.0 };
                    sign * grid[i % 8] * f32::powi(2.0, (i / 32 % 9) as i32 - 4)
                })
                .collect(),
        ),
    ]
}

/// Activation rows dotted with every weight case.
pub fn activations() -> Vec<Case> {
    let mut spiky = normal_f32(12, N, 0.5);
    spiky[7] = 40.0;
    vec![case("act1", normal_f32(9, N, 1.0)), case("act2", spiky)]
}

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// FNV-1a of the little-endian bits of a float row.
pub fn fnv1a_f32(values: &[f32]) -> u64 {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    fnv1a(&bytes)
}
