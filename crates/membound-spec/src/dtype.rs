//! Storage types of tensors: every ggml type a GGUF file can hold today, plus FP8 E4M3
//! (a KV-cache and weight type of other runtimes, with no ggml id).
//!
//! Block sizes and bytes per block are exactly ggml's (`ggml/src/ggml-common.h`,
//! `ggml.c` type traits): Q8_0 is 34 bytes per 32 values, Q4_K 144 per 256, Q6_K 210 per 256,
//! MXFP4 17 per 32.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A tensor storage type with ggml's block layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[allow(non_camel_case_types)]
pub enum DType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    /// FP8 E4M3: one byte per value, no ggml type id.
    F8_E4M3,
}

/// `(type, ggml id, name, values per block, bytes per block)`; one row per type.
const TABLE: &[(DType, Option<u32>, &str, u64, u64)] = &[
    (DType::F32, Some(0), "f32", 1, 4),
    (DType::F16, Some(1), "f16", 1, 2),
    (DType::Q4_0, Some(2), "q4_0", 32, 18),
    (DType::Q4_1, Some(3), "q4_1", 32, 20),
    (DType::Q5_0, Some(6), "q5_0", 32, 22),
    (DType::Q5_1, Some(7), "q5_1", 32, 24),
    (DType::Q8_0, Some(8), "q8_0", 32, 34),
    (DType::Q8_1, Some(9), "q8_1", 32, 36),
    (DType::Q2_K, Some(10), "q2_k", 256, 84),
    (DType::Q3_K, Some(11), "q3_k", 256, 110),
    (DType::Q4_K, Some(12), "q4_k", 256, 144),
    (DType::Q5_K, Some(13), "q5_k", 256, 176),
    (DType::Q6_K, Some(14), "q6_k", 256, 210),
    (DType::Q8_K, Some(15), "q8_k", 256, 292),
    (DType::IQ2_XXS, Some(16), "iq2_xxs", 256, 66),
    (DType::IQ2_XS, Some(17), "iq2_xs", 256, 74),
    (DType::IQ3_XXS, Some(18), "iq3_xxs", 256, 98),
    (DType::IQ1_S, Some(19), "iq1_s", 256, 50),
    (DType::IQ4_NL, Some(20), "iq4_nl", 32, 18),
    (DType::IQ3_S, Some(21), "iq3_s", 256, 110),
    (DType::IQ2_S, Some(22), "iq2_s", 256, 82),
    (DType::IQ4_XS, Some(23), "iq4_xs", 256, 136),
    (DType::I8, Some(24), "i8", 1, 1),
    (DType::I16, Some(25), "i16", 1, 2),
    (DType::I32, Some(26), "i32", 1, 4),
    (DType::I64, Some(27), "i64", 1, 8),
    (DType::F64, Some(28), "f64", 1, 8),
    (DType::IQ1_M, Some(29), "iq1_m", 256, 56),
    (DType::BF16, Some(30), "bf16", 1, 2),
    (DType::TQ1_0, Some(34), "tq1_0", 256, 54),
    (DType::TQ2_0, Some(35), "tq2_0", 256, 66),
    (DType::MXFP4, Some(39), "mxfp4", 32, 17),
    (DType::NVFP4, Some(40), "nvfp4", 64, 36),
    (DType::F8_E4M3, None, "f8_e4m3", 1, 1),
];

impl DType {
    /// Every type, in ggml id order (FP8 last).
    pub fn all() -> impl Iterator<Item = DType> {
        TABLE.iter().map(|row| row.0)
    }

    fn row(self) -> &'static (DType, Option<u32>, &'static str, u64, u64) {
        TABLE
            .iter()
            .find(|row| row.0 == self)
            .expect("every DType has a row in TABLE")
    }

    /// ggml's type id (`enum ggml_type`), `None` for types ggml does not have.
    pub fn ggml_id(self) -> Option<u32> {
        self.row().1
    }

    /// The type with this ggml id, if ggml defines one that GGUF files may hold.
    pub fn from_ggml_id(id: u32) -> Option<DType> {
        TABLE.iter().find(|row| row.1 == Some(id)).map(|row| row.0)
    }

    /// Lower-case name as ggml prints it (`q4_k`, `mxfp4`).
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Values per block (1 for plain types).
    pub fn block_size(self) -> u64 {
        self.row().3
    }

    /// Bytes per block, scales included.
    pub fn block_bytes(self) -> u64 {
        self.row().4
    }

    /// Average bits per stored value.
    pub fn bits_per_value(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_size() as f64
    }

    /// Bytes that `n` values occupy; `None` when `n` is not a whole number of blocks or the
    /// size overflows `u64`.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.block_bytes())
    }

    /// Bytes that `n` values occupy, rounding a partial last block up (for estimates only;
    /// saturates instead of overflowing).
    pub fn bytes_for_ceil(self, n: u64) -> u64 {
        n.div_ceil(self.block_size())
            .saturating_mul(self.block_bytes())
    }

    /// Whether this is a block-quantized type (block size > 1).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a known type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown type `{0}` (known: {known})", known = DType::all().map(DType::name).collect::<Vec<_>>().join(", "))]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase().replace('-', "_");
        let lower = match lower.as_str() {
            "fp32" => "f32",
            "fp16" | "half" => "f16",
            "fp8" | "fp8_e4m3" | "e4m3" => "f8_e4m3",
            other => other,
        };
        TABLE
            .iter()
            .find(|row| row.2 == lower)
            .map(|row| row.0)
            .ok_or_else(|| UnknownDType(s.to_string()))
    }
}

impl TryFrom<String> for DType {
    type Error = UnknownDType;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DType> for String {
    fn from(t: DType) -> String {
        t.name().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_block_sizes() {
        assert_eq!(
            (DType::Q8_0.block_size(), DType::Q8_0.block_bytes()),
            (32, 34)
        );
        assert_eq!(
            (DType::Q4_0.block_size(), DType::Q4_0.block_bytes()),
            (32, 18)
        );
        assert_eq!(
            (DType::Q4_K.block_size(), DType::Q4_K.block_bytes()),
            (256, 144)
        );
        assert_eq!(
            (DType::Q5_K.block_size(), DType::Q5_K.block_bytes()),
            (256, 176)
        );
        assert_eq!(
            (DType::Q6_K.block_size(), DType::Q6_K.block_bytes()),
            (256, 210)
        );
        assert_eq!(
            (DType::MXFP4.block_size(), DType::MXFP4.block_bytes()),
            (32, 17)
        );
        assert_eq!(
            (DType::Q8_K.block_size(), DType::Q8_K.block_bytes()),
            (256, 292)
        );
        assert_eq!(DType::BF16.block_bytes(), 2);
        assert_eq!(DType::F8_E4M3.block_bytes(), 1);
        assert!((DType::Q4_K.bits_per_value() - 4.5).abs() < 1e-12);
        assert!((DType::MXFP4.bits_per_value() - 4.25).abs() < 1e-12);
    }

    #[test]
    fn ids_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for t in DType::all() {
            if let Some(id) = t.ggml_id() {
                assert!(seen.insert(id), "duplicate id {id}");
                assert_eq!(DType::from_ggml_id(id), Some(t));
            }
            assert_eq!(t.name().parse::<DType>().unwrap(), t);
        }
        assert_eq!(DType::from_ggml_id(39), Some(DType::MXFP4));
        assert_eq!(DType::from_ggml_id(4), None);
        assert_eq!(DType::from_ggml_id(31), None);
    }

    #[test]
    fn bytes_for_whole_blocks_only() {
        assert_eq!(DType::Q4_K.bytes_for(4096 * 256), Some(4096 * 144));
        assert_eq!(DType::Q4_K.bytes_for(100), None);
        assert_eq!(DType::Q4_K.bytes_for_ceil(100), 144);
        assert_eq!(DType::F32.bytes_for(u64::MAX), None);
        assert_eq!(DType::F32.bytes_for_ceil(u64::MAX), u64::MAX);
        assert!(
            "q9_z"
                .parse::<DType>()
                .unwrap_err()
                .to_string()
                .contains("q4_k")
        );
        assert_eq!("Q4_K".parse::<DType>().unwrap(), DType::Q4_K);
    }
}
