//! Deterministic synthetic data for tests and benches (no RNG dependency): the same seed gives
//! the same values on every machine, so CPU and GPU runs can be compared.

/// SplitMix64: a tiny, fast, well-mixed 64-bit generator.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Roughly normal (mean 0, std 1): the sum of four uniforms, rescaled.
    pub fn next_normal(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.next_f32()).sum();
        (s - 2.0) * (3.0f32).sqrt()
    }
}

/// `n` roughly normal values scaled by `scale`, from `seed`: weight- and activation-like data.
pub fn normal_f32(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.next_normal() * scale).collect()
}

/// Rows of a weight matrix the dense suite quantizes once and repeats ([`tiled_matrix`]).
pub const TILE_ROWS: usize = 256;

/// The bytes of a `rows x cols` weight matrix in `dtype`'s ggml layout as the dense suite builds
/// it: `min(rows, TILE_ROWS)` rows of normal(0, 0.02) values (seeded by the shape) quantized
/// once and repeated, so memory is distinct while quantization stays cheap at model shapes.
pub fn tiled_matrix(
    dtype: membound_spec::DType,
    rows: usize,
    cols: usize,
) -> Result<Vec<u8>, crate::ops::QuantError> {
    let tile_rows = rows.min(TILE_ROWS);
    let values = normal_f32(0x5eed ^ (rows * 31 + cols) as u64, tile_rows * cols, 0.02);
    let tile = crate::ops::quantize(dtype, &values)?;
    let row_bytes = tile.len() / tile_rows.max(1);
    let mut out = Vec::with_capacity(row_bytes * rows);
    while out.len() < row_bytes * rows {
        out.extend_from_slice(&tile);
    }
    out.truncate(row_bytes * rows);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_centred() {
        assert_eq!(normal_f32(7, 16, 1.0), normal_f32(7, 16, 1.0));
        assert_ne!(normal_f32(7, 16, 1.0), normal_f32(8, 16, 1.0));
        let v = normal_f32(1, 100_000, 1.0);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }
}
