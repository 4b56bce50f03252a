//! Shared plumbing of the typed kernels: length checks, the per-block drivers and C's `MAX`.

use crate::blocks::Block;
use crate::ops::QuantError;

/// C's `MAX(a, b)` (`a > b ? a : b`), which differs from [`f32::max`] when `a` is NaN.
pub(crate) fn c_max(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// Index and value of the element with the largest magnitude, the first one on ties
/// (ggml's `if (amax < fabsf(v))` loop); `(0.0, 0.0)` for an all-zero block.
pub(crate) fn abs_max(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

/// `values` f32s must fill exactly `blocks` blocks of `B`.
pub(crate) fn check_values<B: Block>(values: usize, blocks: usize) -> Result<(), QuantError> {
    if values == blocks * B::VALUES {
        Ok(())
    } else {
        Err(QuantError::ValueCountMismatch {
            dtype: B::DTYPE,
            values,
            blocks,
        })
    }
}

/// A weight row and an activation row must hold the same number of values.
pub(crate) fn check_dot<W: Block, A: Block>(w: &[W], a: &[A]) -> Result<(), QuantError> {
    let (weight_values, act_values) = (w.len() * W::VALUES, a.len() * A::VALUES);
    if weight_values == act_values {
        Ok(())
    } else {
        Err(QuantError::LengthMismatch {
            weight: W::DTYPE,
            act: A::DTYPE,
            weight_values,
            act_values,
        })
    }
}

/// Quantizes `src` block by block with `f` after checking the lengths.
pub(crate) fn quantize_with<B: Block>(
    src: &[f32],
    dst: &mut [B],
    f: impl Fn(&[f32], &mut B),
) -> Result<(), QuantError> {
    check_values::<B>(src.len(), dst.len())?;
    for (x, y) in src.chunks_exact(B::VALUES).zip(dst) {
        f(x, y);
    }
    Ok(())
}

/// Dequantizes `src` block by block with `f` after checking the lengths.
pub(crate) fn dequantize_with<B: Block>(
    src: &[B],
    dst: &mut [f32],
    f: impl Fn(&B, &mut [f32]),
) -> Result<(), QuantError> {
    check_values::<B>(dst.len(), src.len())?;
    for (x, y) in src.iter().zip(dst.chunks_exact_mut(B::VALUES)) {
        f(x, y);
    }
    Ok(())
}

/// Implements [`crate::ops::QuantBlock`] for a block type from its module's checked
/// `quantize_row` / `dequantize_row`, and [`crate::ops::DotBlock`] from `vec_dot` when an
/// activation type is given.
macro_rules! impl_quant_block {
    ($block:ty) => {
        impl $crate::ops::QuantBlock for $block {
            fn quantize_row(src: &[f32], dst: &mut [Self]) -> Result<(), $crate::ops::QuantError> {
                quantize_row(src, dst)
            }
            fn dequantize_row(
                src: &[Self],
                dst: &mut [f32],
            ) -> Result<(), $crate::ops::QuantError> {
                dequantize_row(src, dst)
            }
        }
    };
    ($block:ty, $act:ty) => {
        impl_quant_block!($block);
        impl $crate::ops::DotBlock for $block {
            type Act = $act;
            fn vec_dot(w: &[Self], a: &[$act]) -> Result<f32, $crate::ops::QuantError> {
                vec_dot(w, a)
            }
        }
    };
}
pub(crate) use impl_quant_block;
