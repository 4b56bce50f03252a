//! The one byte-counting convention of every benchmark case (design.md, "Byte accounting"):
//! the bytes that must cross the memory bus once — weights read (stored size, scales
//! included), activations read, outputs written. Intermediate buffers a kernel makes for
//! itself (a quantized copy of the activation, partial sums) and write-allocate traffic are not
//! counted. CPU and GPU kernels report through these functions, so their GB/s compare.

use serde::Serialize;

use crate::dtype::DType;

/// A STREAM-style bandwidth operation over arrays of equal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamOp {
    /// `sum += a[i]`: one array read.
    Read,
    /// `a[i] = s`: one array written.
    Write,
    /// `b[i] = a[i]`: one read, one written.
    Copy,
    /// `a[i] = b[i] + s * c[i]`: two read, one written.
    Triad,
}

impl StreamOp {
    /// All four, in suite order.
    pub const ALL: [StreamOp; 4] = [
        StreamOp::Read,
        StreamOp::Write,
        StreamOp::Copy,
        StreamOp::Triad,
    ];

    /// Lower-case name used in benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            StreamOp::Read => "read",
            StreamOp::Write => "write",
            StreamOp::Copy => "copy",
            StreamOp::Triad => "triad",
        }
    }

    /// Arrays that cross the bus (BabelStream's weights: read 1, write 1, copy 2, triad 3).
    pub fn arrays(self) -> u64 {
        match self {
            StreamOp::Read | StreamOp::Write => 1,
            StreamOp::Copy => 2,
            StreamOp::Triad => 3,
        }
    }

    /// Bytes moved by one pass over arrays of `array_bytes` each.
    pub fn bytes_moved(self, array_bytes: u64) -> u64 {
        self.arrays() * array_bytes
    }
}

/// Bytes of one GEMV `y = W·x` (W `rows × cols` stored as `dtype`, x and y f32).
pub fn gemv_bytes(dtype: DType, rows: u64, cols: u64) -> u64 {
    gemm_bytes(dtype, rows, cols, 1)
}

/// Bytes of a batched GEMM `Y = W·X` over `batch` activations: W read once, X read, Y written.
pub fn gemm_bytes(dtype: DType, rows: u64, cols: u64, batch: u64) -> u64 {
    rows * dtype.bytes_for_ceil(cols) + batch * (cols + rows) * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventions() {
        assert_eq!(StreamOp::Triad.bytes_moved(1000), 3000);
        assert_eq!(StreamOp::Read.bytes_moved(1000), 1000);
        // 4096 x 4096 Q4_K: 4096 rows of 16 blocks of 144 bytes, plus x and y in f32.
        assert_eq!(
            gemv_bytes(DType::Q4_K, 4096, 4096),
            4096 * 16 * 144 + (4096 + 4096) * 4
        );
        assert_eq!(
            gemm_bytes(DType::Q8_0, 64, 64, 8),
            64 * 2 * 34 + 8 * 128 * 4
        );
    }
}
