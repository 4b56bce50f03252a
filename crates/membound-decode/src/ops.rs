//! The small element-wise steps between a decode step's matrix products: RMSNorm, rotary
//! position embedding, the gated activations and argmax. They touch kilobytes per token; the
//! bytes that matter are the weights and the cache.

/// `v` as `n` zeros, within its capacity once it has held `n` values (a step's reused buffers).
pub(crate) fn zeroed(v: &mut Vec<f32>, n: usize) -> &mut Vec<f32> {
    v.clear();
    v.resize(n, 0.0);
    v
}

/// `out = x / sqrt(mean(x²) + eps) · w` (llama.cpp's `rms_norm` then `mul`), sums in f64.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let inv = rms_inv(x, eps);
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * inv * g;
    }
}

/// `1 / sqrt(mean(x²) + eps)`, the sum in f64.
pub(crate) fn rms_inv(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len().max(1) as f64;
    (1.0 / (ms + f64::from(eps)).sqrt()) as f32
}

/// [`rms_norm`] in place, over each of the `x.len() / w.len()` heads of `x`.
pub fn rms_norm_heads(x: &mut [f32], w: &[f32], eps: f32) {
    for head in x.chunks_exact_mut(w.len()) {
        let inv = rms_inv(head, eps);
        head.iter_mut().zip(w).for_each(|(v, &g)| *v = *v * inv * g);
    }
}

/// Rotates the first `dims` values of each head (`x.len() / head` heads of `head` values) for
/// position `pos`: pair `(i, i + dims/2)` (NEOX) or `(2i, 2i + 1)` turned by
/// `pos · theta^(-2i/dims)`.
pub fn rope(x: &mut [f32], head: usize, dims: usize, pos: usize, theta: f32, neox: bool) {
    let half = dims / 2;
    for h in x.chunks_exact_mut(head) {
        for i in 0..half {
            let freq = 1.0 / f64::from(theta).powf(2.0 * i as f64 / dims as f64);
            let (sin, cos) = (pos as f64 * freq).sin_cos();
            let (a, b) = if neox {
                (i, i + half)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x0, x1) = (f64::from(h[a]), f64::from(h[b]));
            h[a] = (x0 * cos - x1 * sin) as f32;
            h[b] = (x0 * sin + x1 * cos) as f32;
        }
    }
}

/// `silu(g) · u`.
pub fn swiglu(g: f32, u: f32) -> f32 {
    g / (1.0 + (-g).exp()) * u
}

/// `gelu(g) · u` with GELU's tanh approximation (Gemma's GeGLU).
pub fn geglu(g: f32, u: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * g * (1.0 + (C * (g + 0.044_715 * g * g * g)).tanh()) * u
}

/// `x += y`.
pub fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// Index of the largest value (the first of equals; NaN never wins).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || x[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_scales_to_unit_rms() {
        let x = [3.0f32, 4.0];
        let mut out = [0f32; 2];
        rms_norm(&x, &[1.0, 2.0], 0.0, &mut out);
        let rms = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6 && (out[1] - 8.0 / rms).abs() < 1e-6);
    }

    #[test]
    fn rope_rotates_the_pairs_each_style_names() {
        // Position 1, dims 4, theta 1: every pair turns by 1 radian.
        let (s, c) = 1f32.sin_cos();
        let mut neox = [1.0f32, 0.0, 0.0, 0.0];
        rope(&mut neox, 4, 4, 1, 1.0, true);
        assert!((neox[0] - c).abs() < 1e-6 && (neox[2] - s).abs() < 1e-6 && neox[1] == 0.0);
        let mut inter = [1.0f32, 0.0, 0.0, 0.0];
        rope(&mut inter, 4, 4, 1, 1.0, false);
        assert!((inter[0] - c).abs() < 1e-6 && (inter[1] - s).abs() < 1e-6 && inter[2] == 0.0);
        // Position 0 is the identity; values past `dims` are never touched.
        let mut x = [0.5f32, -1.0, 2.0];
        rope(&mut x, 3, 2, 0, 10_000.0, false);
        assert_eq!(x, [0.5, -1.0, 2.0]);
    }

    #[test]
    fn argmax_takes_the_first_of_equals_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 2.0, 1.0]), 1);
    }

    #[test]
    fn activations() {
        assert!((swiglu(0.0, 5.0)).abs() < 1e-7);
        assert!((swiglu(20.0, 2.0) - 40.0).abs() < 1e-4);
        assert!((geglu(20.0, 2.0) - 40.0).abs() < 1e-4);
        assert!(geglu(-20.0, 2.0).abs() < 1e-4);
    }
}
