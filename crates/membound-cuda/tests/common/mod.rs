//! What a GEMV kernel must produce, row by row, and how far it may be from it: shared by the
//! GPU test (the library's `gemv_expected`, also used by the bench and the host execution).

pub use membound_cuda::gemv::{Expected, gemv_expected};
use membound_spec::DType;

/// [`gemv_expected`] for a valid test shape.
pub fn expected_rows(dtype: DType, rows: usize, cols: usize, w: &[u8], x: &[f32]) -> Vec<Expected> {
    gemv_expected(dtype, rows, cols, w, x).unwrap()
}

/// Asserts `got` (the kernel's y) meets `expected`; returns the worst error as a fraction of
/// its bound.
pub fn assert_rows(what: &str, got: &[f32], expected: &[Expected]) -> f64 {
    membound_cuda::gemv::check_rows(what, got, expected).unwrap_or_else(|e| panic!("{e}"))
}
